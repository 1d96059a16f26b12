//! `bigtap sale move` (DESIGN §7 channels) as a real process against a real
//! redis-server, killed (abort, like kill -9) after every step and run
//! again: no unit is ever counted in both sales, and once the re-run
//! completes, none is counted in neither.

mod support;

use std::process::Output;

use serde_json::Value;
use support::*;

fn bigtap(args: &[&str], redis_url: &str, abort_after: Option<u32>) -> Output {
    let mut c = bigtap_command(redis_url);
    c.args(args);
    if let Some(k) = abort_after {
        c.env("BIGTAP_TEST_MOVE_ABORT_AFTER", k.to_string());
    }
    c.output().expect("bigtap runs")
}

fn show(url: &str, sale: &str) -> Value {
    serde_json::from_str(&ok_stdout(&bigtap(&["sale", "show", sale], url, None))).unwrap()
}

/// web: north 5, south 5; shop: north 2.
fn two_channels(url: &str) {
    ok_stdout(&bigtap(
        &[
            "sale",
            "create",
            "web",
            "--warehouses",
            r#"{"north":5,"south":5}"#,
        ],
        url,
        None,
    ));
    ok_stdout(&bigtap(
        &["sale", "create", "shop", "--warehouses", r#"{"north":2}"#],
        url,
        None,
    ));
}

fn totals(url: &str) -> (u64, u64, Value, Value) {
    let (web, shop) = (show(url, "web"), show(url, "shop"));
    assert_eq!(web["balanced"], true, "{web}");
    assert_eq!(shop["balanced"], true, "{shop}");
    (
        web["stock_total"].as_u64().unwrap(),
        shop["stock_total"].as_u64().unwrap(),
        web["warehouses"].clone(),
        shop["warehouses"].clone(),
    )
}

const MOVE: &[&str] = &[
    "sale",
    "move",
    "web",
    "shop",
    "--units",
    "3",
    "--warehouse",
    "north",
    "--id",
    "m1",
];

#[tokio::test]
async fn a_move_killed_after_any_step_completes_exactly_once_when_run_again() {
    for step in 0..=3 {
        let redis = redis();
        let url = redis.url();
        two_channels(&url);
        let killed = bigtap(MOVE, &url, Some(step));
        assert!(
            !killed.status.success(),
            "step {step}: the process was aborted"
        );
        let (web, shop, _, _) = totals(&url);
        // Never in both: at most the 12 units that exist, and only a move
        // still owed by the journal (after step 1) may leave fewer.
        assert!(web + shop <= 12, "step {step}: {web} + {shop}");
        let owed = if step == 1 { 3 } else { 0 };
        assert_eq!(web + shop + owed, 12, "step {step}");
        let out = ok_stdout(&bigtap(MOVE, &url, None));
        assert!(out.contains("m1"), "step {step}: {out}");
        let (web, shop, ww, sw) = totals(&url);
        assert_eq!((web, shop), (7, 5), "step {step}");
        assert_eq!(ww["north"]["total"], 2, "step {step}");
        assert_eq!(ww["south"]["total"], 5, "step {step}");
        assert_eq!(sw["north"]["total"], 5, "step {step}");
        // Once more: nothing moves twice.
        let again = ok_stdout(&bigtap(MOVE, &url, None));
        assert!(again.contains("already"), "step {step}: {again}");
        assert_eq!(totals(&url).0 + totals(&url).1, 12);
        assert_eq!(totals(&url).0, 7, "step {step}");
    }
}

#[tokio::test]
async fn without_an_id_a_rerun_finishes_the_interrupted_move_instead_of_starting_another() {
    let redis = redis();
    let url = redis.url();
    two_channels(&url);
    let plain = [
        "sale",
        "move",
        "web",
        "shop",
        "--units",
        "4",
        "--warehouse",
        "south",
    ];
    assert!(!bigtap(&plain, &url, Some(1)).status.success());
    let out = ok_stdout(&bigtap(&plain, &url, None));
    assert!(out.contains("finishing interrupted move"), "{out}");
    let (web, shop, ww, sw) = totals(&url);
    assert_eq!((web, shop), (6, 6));
    assert_eq!(ww["south"]["total"], 1);
    assert_eq!(
        sw["south"]["total"], 4,
        "a new warehouse arrives in the destination"
    );
}

#[tokio::test]
async fn a_move_the_destination_cannot_take_is_undone_back_to_its_warehouse() {
    let redis = redis();
    let url = redis.url();
    two_channels(&url);
    assert!(!bigtap(MOVE, &url, Some(1)).status.success());
    // The destination disappears before the credit.
    let mut con = redis_con(url.as_str()).await;
    let _: i64 = redis::cmd("DEL")
        .arg("bigtap:{shop}:cfg")
        .query_async(&mut con)
        .await
        .unwrap();
    let o = bigtap(MOVE, &url, None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("undone"));
    let web = show(&url, "web");
    assert_eq!(web["stock_total"], 10);
    assert_eq!(web["warehouses"]["north"]["total"], 5);
    assert_eq!(web["balanced"], true);
}

#[tokio::test]
async fn a_move_of_more_than_the_unleased_units_or_to_no_sale_changes_nothing() {
    let redis = redis();
    let url = redis.url();
    two_channels(&url);
    let much = [
        "sale",
        "move",
        "web",
        "shop",
        "--units",
        "6",
        "--warehouse",
        "north",
    ];
    assert!(!bigtap(&much, &url, None).status.success());
    let nowhere = [
        "sale",
        "move",
        "web",
        "nope",
        "--units",
        "1",
        "--warehouse",
        "north",
    ];
    assert!(!bigtap(&nowhere, &url, None).status.success());
    let unnamed = ["sale", "move", "web", "shop", "--units", "1"];
    assert!(!bigtap(&unnamed, &url, None).status.success());
    let (web, shop, _, _) = totals(&url);
    assert_eq!((web, shop), (10, 2));
}

#[tokio::test]
async fn a_move_between_sales_on_two_cluster_shards_survives_an_abort_after_every_step() {
    let cluster = support::cluster::RedisCluster::start();
    let url = cluster.url();
    let shard = |s: &str| cluster.shard_of(&format!("bigtap:{{{s}}}:cfg"));
    let to = (0..100)
        .map(|i| format!("app{i}"))
        .find(|s| shard(s) != shard("web"))
        .expect("some name hashes to another shard");
    ok_stdout(&bigtap(
        &[
            "sale",
            "create",
            "web",
            "--warehouses",
            r#"{"north":5,"south":5}"#,
        ],
        &url,
        None,
    ));
    ok_stdout(&bigtap(
        &["sale", "create", &to, "--stock", "2"],
        &url,
        None,
    ));
    for step in 0..=3 {
        let id = format!("c{step}");
        let args = [
            "sale",
            "move",
            "web",
            &to,
            "--units",
            "1",
            "--warehouse",
            "north",
            "--id",
            &id,
        ];
        assert!(!bigtap(&args, &url, Some(step)).status.success());
        ok_stdout(&bigtap(&args, &url, None));
        let (web, app) = (show(&url, "web"), show(&url, &to));
        assert_eq!(web["balanced"], true, "{web}");
        assert_eq!(app["balanced"], true, "{app}");
        let moved = u64::from(step) + 1;
        assert_eq!(web["stock_total"], 10 - moved, "step {step}");
        assert_eq!(app["stock_total"], 2 + moved, "step {step}");
        assert_eq!(app["warehouses"]["north"]["total"], moved, "step {step}");
    }
}

#[tokio::test]
async fn the_command_line_creates_regions_adds_stock_and_transfers_between_warehouses() {
    let redis = redis();
    let url = redis.url();
    ok_stdout(&bigtap(
        &[
            "sale",
            "create",
            "tv",
            "--warehouses",
            r#"{"a":2,"b":3}"#,
            "--regions",
            r#"{"eu":["b","a"]}"#,
            "--default-order",
            "a,b",
        ],
        &url,
        None,
    ));
    let bad = bigtap(
        &[
            "sale",
            "create",
            "tv2",
            "--warehouses",
            r#"{"a":2}"#,
            "--default-order",
            "z",
        ],
        &url,
        None,
    );
    assert!(
        !bad.status.success(),
        "an order naming an unknown warehouse is refused"
    );
    ok_stdout(&bigtap(
        &["sale", "stock", "tv", "--add", "4", "--warehouse", "a"],
        &url,
        None,
    ));
    assert!(!bigtap(&["sale", "stock", "tv", "--add", "1"], &url, None)
        .status
        .success());
    let out = ok_stdout(&bigtap(
        &[
            "sale", "transfer", "tv", "--from", "b", "--to", "c", "--units", "2",
        ],
        &url,
        None,
    ));
    assert!(out.contains("c has 2 unsold"), "{out}");
    assert!(!bigtap(
        &["sale", "transfer", "tv", "--from", "b", "--to", "c", "--units", "2"],
        &url,
        None
    )
    .status
    .success());
    let tv = show(&url, "tv");
    assert_eq!(tv["stock_total"], 9);
    assert_eq!(tv["balanced"], true);
    assert_eq!(
        (
            tv["warehouses"]["a"]["total"].as_u64(),
            tv["warehouses"]["b"]["total"].as_u64(),
            tv["warehouses"]["c"]["total"].as_u64()
        ),
        (Some(6), Some(1), Some(2))
    );
}
