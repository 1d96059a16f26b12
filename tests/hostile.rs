//! Hostile input: mutated and forged tokens against the verifiers, and
//! arbitrary paths and bodies through HTTP. Never a panic, never a 5xx (the
//! store is up throughout), never an accepted forgery.

mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bigtap::auth::{KeyRing, TicketClaims};
use bigtap::{SaleId, TicketId, UserId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::{Method, StatusCode};
use support::*;

const NOW_S: u64 = 1_800_000_000;

/// One edit of a token.
#[derive(Debug, Clone)]
enum Edit {
    /// Flip one bit of the byte at (position mod length).
    Flip(usize, u8),
    /// Replace the byte at a position.
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Swap two dot-separated fields.
    SwapFields(usize, usize),
    /// Replace a field with another string (keeping the signature).
    ReplaceField(usize, String),
    /// Append a field.
    Append(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p, 1 << b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapFields(a, b)),
        (any::<usize>(), "[A-Za-z0-9_.-]{0,20}|[0-9]{1,20}|s1|t1|v1")
            .prop_map(|(f, s)| Edit::ReplaceField(f, s)),
        "[A-Za-z0-9_=-]{0,10}".prop_map(Edit::Append),
    ]
}

fn apply(token: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut t = token.to_vec();
    for e in edits {
        let len = t.len().max(1);
        match e {
            Edit::Flip(p, bit) => {
                if !t.is_empty() {
                    t[p % len] ^= bit;
                }
            }
            Edit::Set(p, b) => {
                if !t.is_empty() {
                    t[p % len] = *b;
                }
            }
            Edit::Insert(p, b) => t.insert(p % (t.len() + 1), *b),
            Edit::Delete(p) => {
                if !t.is_empty() {
                    t.remove(p % len);
                }
            }
            Edit::Truncate(p) => t.truncate(p % len),
            Edit::SwapFields(a, b) => {
                let mut f: Vec<Vec<u8>> = t.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
                let n = f.len();
                f.swap(a % n, b % n);
                t = f.join(&b'.');
            }
            Edit::ReplaceField(i, s) => {
                let mut f: Vec<Vec<u8>> = t.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
                let n = f.len();
                f[i % n] = s.as_bytes().to_vec();
                t = f.join(&b'.');
            }
            Edit::Append(s) => {
                t.push(b'.');
                t.extend_from_slice(s.as_bytes());
            }
        }
    }
    t
}

/// Runs `cases` cases of `strategy` through `test`, which returns
/// (tried, accepted) for its case; prints and returns the totals.
fn count<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> (u64, u64),
) -> (u64, u64) {
    let tried = AtomicU64::new(0);
    let accepted = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |v| {
        let (t, a) = test(v);
        tried.fetch_add(t, Relaxed);
        accepted.fetch_add(a, Relaxed);
        if a > 0 {
            return Err(TestCaseError::fail("a mutated token was accepted"));
        }
        Ok(())
    });
    let (t, a) = (tried.load(Relaxed), accepted.load(Relaxed));
    println!("{name}: {t} verified, {a} accepted");
    result.unwrap();
    (t, a)
}

#[test]
fn no_mutation_of_a_session_token_is_accepted() {
    let ring = session_keys();
    let valid = ring.mint_session(&UserId::parse("alice").unwrap(), NOW_S + 3600);
    assert!(ring.verify_session(valid.as_bytes(), NOW_S).is_ok());
    let (tried, accepted) = count(
        "session tokens",
        6000,
        proptest::collection::vec(edit(), 1..4),
        |edits| {
            let t = apply(valid.as_bytes(), &edits);
            if t == valid.as_bytes() {
                return (0, 0);
            }
            (1, ring.verify_session(&t, NOW_S).is_ok() as u64)
        },
    );
    assert!(tried >= 5000 && accepted == 0);
}

#[test]
fn no_mutation_of_a_purchase_token_is_accepted() {
    let ring = ticket_keys();
    let claims = TicketClaims {
        sale: SaleId::parse("phone").unwrap(),
        ticket: TicketId::random(),
        user: UserId::parse("alice").unwrap(),
        expires_at_ms: 1_800_000_000_000,
    };
    let valid = ring.sign_ticket(&claims);
    assert_eq!(ring.verify_ticket(&valid), Ok(claims));
    let (tried, accepted) = count(
        "purchase tokens",
        8000,
        proptest::collection::vec(edit(), 1..4),
        |edits| {
            let t = apply(valid.as_bytes(), &edits);
            if t == valid.as_bytes() {
                return (0, 0);
            }
            // A purchase token is text; bytes that are not UTF-8 cannot
            // even reach the verifier, so they are not counted as tried.
            let Ok(s) = std::str::from_utf8(&t) else {
                return (0, 0);
            };
            (1, ring.verify_ticket(s).is_ok() as u64)
        },
    );
    assert!(tried >= 4000 && accepted == 0, "{tried} verified");
}

#[test]
fn tokens_signed_with_another_key_are_refused() {
    let sessions = session_keys();
    let (tried, accepted) = count(
        "well-formed sessions signed with another key",
        2000,
        ("[A-Za-z0-9_-]{1,64}", any::<u64>(), any::<[u8; 32]>()),
        |(user, exp, key)| {
            use base64::Engine;
            // The attacker knows the format and the kid, not the key.
            let spec = format!(
                "s1:{}",
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            let forged = KeyRing::parse(&spec)
                .unwrap()
                .mint_session(&UserId::parse(&user).unwrap(), exp);
            (
                1,
                sessions.verify_session(forged.as_bytes(), 0).is_ok() as u64,
            )
        },
    );
    assert!(tried >= 2000 && accepted == 0);
}

#[test]
fn arbitrary_bytes_are_refused_as_sessions_and_as_purchase_tokens() {
    let (sessions, tickets) = (session_keys(), ticket_keys());
    let (tried, accepted) = count(
        "arbitrary bytes as sessions",
        1000,
        proptest::collection::vec(any::<u8>(), 0..600),
        |junk| (1, sessions.verify_session(&junk, 0).is_ok() as u64),
    );
    assert!(tried >= 1000 && accepted == 0);
    let (tried, accepted) = count(
        "arbitrary text as purchase tokens",
        1000,
        ".{0,300}",
        |junk: String| (1, tickets.verify_ticket(&junk).is_ok() as u64),
    );
    assert!(tried >= 1000 && accepted == 0);
}

// ---------------------------------------------------------------------------
// Through HTTP.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A status the hostile input may get: anything but a server error.
fn acceptable(status: StatusCode) -> bool {
    !status.is_server_error()
}

/// Sends and returns the status; a transport error (a dropped connection,
/// e.g. after a panic) fails the case.
async fn send(rb: reqwest::RequestBuilder) -> Result<(StatusCode, String), TestCaseError> {
    let r = rb
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    Ok((status, body))
}

#[test]
fn arbitrary_paths_methods_and_bodies_never_get_a_server_error() {
    let rt = runtime();
    let redis = redis();
    let n = rt.block_on(async {
        let n = node(&redis.url()).await;
        n.open_sale("h", 1_000_000).await;
        n
    });
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ];
    let segment = "[A-Za-z0-9_~.-]{0,10}|%[0-9A-F]{2}|\\.\\.|h|v1|sales|admin|tickets|stock|eligible|close|confirm|release|metrics|readyz";
    let tried = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                0..methods.len(),
                proptest::collection::vec(segment, 0..7),
                proptest::collection::vec(any::<u8>(), 0..200),
                any::<bool>(),
            ),
            |(m, segs, body, admin)| {
                let path = format!("/{}", segs.join("/"));
                let mut rb = n.http.request(methods[m].clone(), n.url(&path)).body(body);
                if admin {
                    rb = rb.header("authorization", format!("Bearer {ADMIN_KEY}"));
                }
                let (status, text) = rt.block_on(send(rb))?;
                tried.fetch_add(1, Relaxed);
                prop_assert!(
                    acceptable(status),
                    "{} {path} -> {status} {text}",
                    methods[m]
                );
                Ok(())
            },
        )
        .unwrap();
    println!("paths: {} requests, no server error", tried.load(Relaxed));
    rt.block_on(async {
        assert_eq!(n.get("/healthz").await.status, StatusCode::OK);
    });
}

/// JSON values that probe the admin bodies: the right field names with
/// values of every type and edge, and arbitrary JSON.
fn admin_body() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!(i64::MAX)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-0.5)),
        Just(serde_json::json!(9_007_199_254_740_993u64)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u32>().prop_map(|n| serde_json::json!(n)),
    ];
    let value = prop_oneof![
        number.clone(),
        Just(serde_json::json!(null)),
        Just(serde_json::json!("open")),
        Just(serde_json::json!("list")),
        "[^\"]{0,12}".prop_map(|s| serde_json::json!(s)),
        proptest::collection::vec("[A-Za-z0-9_-]{1,70}|.{0,5}", 0..5)
            .prop_map(|v| serde_json::json!(v)),
    ];
    let field = prop_oneof![
        Just("stock"),
        Just("starts_at_ms"),
        Just("ends_at_ms"),
        Just("ticket_ttl_ms"),
        Just("eligibility"),
        Just("add"),
        Just("users"),
        Just("other"),
    ];
    let object = proptest::collection::btree_map(field, value, 0..6)
        .prop_map(|m| serde_json::to_vec(&m).unwrap());
    prop_oneof![
        6 => object,
        1 => proptest::collection::vec(any::<u8>(), 0..100),
        1 => Just(b"{\"stock\":1,\"starts_at_ms\":0,\"ends_at_ms\":1".to_vec()),
    ]
}

#[test]
fn arbitrary_admin_and_take_bodies_never_get_a_server_error() {
    let rt = runtime();
    let redis = redis();
    let n = rt.block_on(async {
        let n = node(&redis.url()).await;
        n.open_sale("h", 1_000_000).await;
        n
    });
    let tried = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(0..5usize, "h|g[a-z]{0,3}", admin_body(), "[a-z0-9]{1,8}"),
            |(route, sale, body, user)| {
                let (method, path) = match route {
                    0 => (Method::PUT, format!("/v1/admin/sales/{sale}")),
                    1 => (Method::POST, format!("/v1/admin/sales/{sale}/stock")),
                    2 => (Method::POST, format!("/v1/admin/sales/{sale}/eligible")),
                    3 => (Method::GET, format!("/v1/admin/sales/{sale}")),
                    _ => (Method::POST, format!("/v1/sales/{sale}/tickets")),
                };
                let auth = if route == 4 {
                    format!("Bearer {}", session(&user))
                } else {
                    format!("Bearer {ADMIN_KEY}")
                };
                let rb = n
                    .http
                    .request(method.clone(), n.url(&path))
                    .header("authorization", auth)
                    .header("content-type", "application/json")
                    .body(body.clone());
                let (status, text) = rt.block_on(send(rb))?;
                tried.fetch_add(1, Relaxed);
                prop_assert!(
                    acceptable(status),
                    "{method} {path} {} -> {status} {text}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            },
        )
        .unwrap();
    println!("bodies: {} requests, no server error", tried.load(Relaxed));
}

#[test]
fn forged_sessions_through_http_are_refused_with_401() {
    let rt = runtime();
    let redis = redis();
    let n = rt.block_on(async {
        let n = node(&redis.url()).await;
        n.open_sale("h", 1_000).await;
        n
    });
    let valid = session("mallory");
    let accepted = AtomicU64::new(0);
    count(
        "forged sessions over http",
        500,
        proptest::collection::vec(edit(), 1..4),
        |edits| {
            let t = apply(valid.as_bytes(), &edits);
            if t == valid.as_bytes() {
                return (0, 0);
            }
            let Ok(header) = reqwest::header::HeaderValue::from_bytes(
                &[b"Bearer ".as_slice(), t.as_slice()].concat(),
            ) else {
                return (0, 0);
            };
            // A header equal to the valid one after trimming is no forgery.
            if t.trim_ascii() == valid.as_bytes() {
                return (0, 0);
            }
            let status = rt.block_on(async {
                n.http
                    .post(n.url("/v1/sales/h/tickets"))
                    .header("authorization", header)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map(|r| r.status())
            });
            match status {
                Ok(StatusCode::UNAUTHORIZED) => (1, 0),
                Ok(s) if s.is_success() => {
                    accepted.fetch_add(1, Relaxed);
                    (1, 1)
                }
                Ok(s) => panic!("forged session answered {s}"),
                Err(e) => panic!("no answer: {e}"),
            }
        },
    );
    assert_eq!(accepted.load(Relaxed), 0);
}

#[tokio::test]
async fn extreme_numbers_in_admin_bodies_are_refused_cleanly() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("x", 10).await;
    let now = now_ms();
    let bodies: Vec<(Method, &str, serde_json::Value)> = vec![
        (
            Method::POST,
            "x/stock",
            serde_json::json!({"add": i64::MAX}),
        ),
        (
            Method::POST,
            "x/stock",
            serde_json::json!({"add": i64::MAX}),
        ),
        (
            Method::POST,
            "x/stock",
            serde_json::json!({"add": i64::MIN}),
        ),
        (Method::POST, "x/stock", serde_json::json!({"add": -11})),
        (
            Method::PUT,
            "y",
            serde_json::json!({"stock": i64::MAX as u64 / 2, "starts_at_ms": 0, "ends_at_ms": u64::MAX}),
        ),
        (
            Method::PUT,
            "z",
            serde_json::json!({"stock": 1, "starts_at_ms": u64::MAX - 1, "ends_at_ms": u64::MAX}),
        ),
        (
            Method::PUT,
            "w",
            serde_json::json!({"stock": 9_007_199_254_740_993u64, "starts_at_ms": now, "ends_at_ms": now + 1000, "ticket_ttl_ms": u64::MAX}),
        ),
        (
            Method::PUT,
            "x",
            serde_json::json!({"starts_at_ms": 0, "ends_at_ms": 1, "ticket_ttl_ms": 1}),
        ),
    ];
    let mut failed = Vec::new();
    for (method, path, body) in bodies {
        let a = n.admin(method.clone(), path, Some(body.clone())).await;
        // A window moved into the past is a legal update (200); every other
        // body is refused with a 4xx that says why.
        let legal = path == "x" && method == Method::PUT;
        let fine = if legal {
            a.status == StatusCode::OK
        } else {
            a.status.is_client_error() && a.body.get("error").is_some()
        };
        if !fine {
            failed.push(format!("{method} {path} {body} -> {} {}", a.status, a.body));
        }
    }
    for sale in ["y", "z", "w"] {
        let a = n.admin(Method::GET, sale, None).await;
        if a.status != StatusCode::NOT_FOUND {
            failed.push(format!(
                "refused sale {sale} exists: {} {}",
                a.status, a.body
            ));
        }
    }
    // The refused stock changes left the sale as it was.
    let x = n.admin(Method::GET, "x", None).await;
    if (
        x.body["stock_total"].as_u64(),
        x.body["available"].as_u64(),
        x.body["balanced"].as_bool(),
    ) != (Some(10), Some(10), Some(true))
    {
        failed.push(format!("sale x changed: {}", x.body));
    }
    assert!(
        failed.is_empty(),
        "not refused cleanly:\n{}",
        failed.join("\n")
    );
}
