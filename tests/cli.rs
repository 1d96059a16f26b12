//! The `bigtap` command line: sale administration, token minting and
//! purchase-token verification, run as a real process.

mod support;

use reqwest::StatusCode;
use support::*;

#[tokio::test]
async fn ops_create_stock_load_close_and_inspect_a_sale_from_the_command_line() {
    let redis = redis();
    let url = redis.url();
    assert!(ok_stdout(&bigtap(
        &[
            "sale",
            "create",
            "cli",
            "--stock",
            "5",
            "--eligibility",
            "list"
        ],
        &url
    ))
    .contains("created"));
    assert!(
        ok_stdout(&bigtap(&["sale", "stock", "cli", "--add", "3"], &url)).contains("stock_total 8")
    );
    assert!(
        ok_stdout(&bigtap(&["sale", "stock", "cli", "--add", "-2"], &url))
            .contains("stock_total 6")
    );
    let too_much = bigtap(&["sale", "stock", "cli", "--add", "-100"], &url);
    assert!(!too_much.status.success());

    let users = tempfile::NamedTempFile::new().unwrap();
    let eligible = || {
        bigtap(
            &[
                "sale",
                "eligible",
                "cli",
                "--file",
                users.path().to_str().unwrap(),
            ],
            &url,
        )
    };
    std::fs::write(users.path(), "u0000001\nu0000002\n\n").unwrap();
    let out = ok_stdout(&eligible());
    assert!(out.contains("2 users added"), "{out}");
    std::fs::write(users.path(), "ok\nnot ok\n").unwrap();
    let bad = eligible();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("line 2"));

    let n = node(&url).await;
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            n.get("/v1/sales/cli").await.status == StatusCode::OK
        })
        .await
    );
    assert_eq!(n.take("cli", "u0000001").await.status, StatusCode::CREATED);
    assert_eq!(
        n.take("cli", "u0000003").await.status,
        StatusCode::FORBIDDEN
    );

    let show: serde_json::Value =
        serde_json::from_str(&ok_stdout(&bigtap(&["sale", "show", "cli"], &url))).unwrap();
    assert_eq!(
        (show["stock_total"].as_u64(), show["pending"].as_u64()),
        (Some(6), Some(1))
    );
    assert_eq!(show["balanced"], true);
    let huge = bigtap(&["sale", "stock", "cli", "--add", "9007199254740993"], &url);
    assert!(!huge.status.success() && String::from_utf8_lossy(&huge.stderr).contains("too large"));

    let audit = ok_stdout(&bigtap(&["sale", "audit", "cli"], &url));
    assert!(!audit.is_empty(), "the audit prints its report");
    let delivered = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(delivered.path(), "0123456789abcdef0123456789abcdef\n").unwrap();
    let unknown = bigtap(
        &[
            "sale",
            "audit",
            "cli",
            "--delivered",
            delivered.path().to_str().unwrap(),
        ],
        &url,
    );
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "a delivered id nobody issued is a discrepancy"
    );
    assert!(ok_stdout(&bigtap(&["sale", "close", "cli"], &url)).contains("closed"));
    assert!(!bigtap(&["sale", "show", "nosuch"], &url).status.success());
}

#[tokio::test]
async fn minted_session_tokens_buy_and_the_purchase_token_verifies_from_the_command_line() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("mint", 10).await;
    let tokens = ok_stdout(&bigtap(
        &["users", "mint", "--count", "3", "--prefix", "lt"],
        &redis.url(),
    ));
    let tokens: Vec<&str> = tokens.lines().collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens[0].starts_with("v1.s1.lt0000001."));
    let won = n.take_with("mint", &format!("Bearer {}", tokens[2])).await;
    assert_eq!(won.status, StatusCode::CREATED);
    let token = won.body["token"].as_str().unwrap();

    let ok: serde_json::Value = serde_json::from_str(&ok_stdout(&bigtap(
        &["ticket", "verify", token],
        &redis.url(),
    )))
    .unwrap();
    assert_eq!(
        (ok["valid"].as_bool(), ok["user"].as_str()),
        (Some(true), Some("lt0000003"))
    );
    assert_eq!(ok["ticket"], won.body["ticket"]);

    let mut forged = token.to_owned();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    assert_ne!(forged, token);
    let bad = bigtap(&["ticket", "verify", &forged], &redis.url());
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("\"valid\":false"));
}
