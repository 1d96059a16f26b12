//! DESIGN §7 (virtual inventory) through HTTP against a real redis-server:
//! sale specs with warehouses and regions, assignment at commit, the
//! warehouse in every win answer and stream entry, units returning to
//! their own warehouse, stock per warehouse, transfers, and the accounting
//! per warehouse, including a race across two nodes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;

/// Creates `sale` open from now for an hour with the given warehouse spec
/// fields merged into the body; returns the answer.
async fn put(n: &Node, sale: &str, extra: Value) -> Answer {
    let now = now_ms();
    let mut body = json!({"starts_at_ms": now - 1000, "ends_at_ms": now + 3_600_000, "ticket_ttl_ms": 600_000});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    n.admin(Method::PUT, sale, Some(body)).await
}

/// A phone launch: north 3, south 2, west 1; eu prefers north then south,
/// us prefers west then south; others get south first.
async fn phone(n: &Node) {
    let a = put(
        n,
        "phone",
        json!({"warehouses": {"north": 3, "south": 2, "west": 1},
               "regions": {"eu": ["north", "south"], "us": ["west", "south"]},
               "default_order": ["south", "north", "west"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
}

/// `POST …/tickets` as `user` with a raw body.
async fn take_body(n: &Node, sale: &str, user: &str, body: &str) -> Answer {
    let r = n
        .http
        .post(n.url(&format!("/v1/sales/{sale}/tickets")))
        .header("authorization", format!("Bearer {}", session(user)))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn ship_to(n: &Node, sale: &str, user: &str, region: &str) -> Answer {
    take_body(n, sale, user, &format!("{{\"ship_to\":\"{region}\"}}")).await
}

fn unsold(acct: &Value, w: &str) -> u64 {
    acct["warehouses"][w]["unsold"].as_u64().unwrap_or(u64::MAX)
}

async fn stream_warehouses(redis_url: &str, sale: &str) -> HashMap<String, String> {
    let mut con = redis_con(redis_url).await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("bigtap:{{{sale}}}:orders"))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, f)| (f["ticket"].clone(), f["warehouse"].clone()))
        .collect()
}

#[tokio::test]
async fn a_sale_with_warehouses_reports_each_one_and_its_stock_is_their_sum() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    let acct = n.accounting("phone").await;
    assert_eq!(acct["stock_total"], 6);
    assert_eq!(acct["balanced"], true);
    assert_eq!(
        acct["warehouses"]["north"],
        json!({"total": 3, "unsold": 3, "pending": 0, "confirmed": 0})
    );
    assert_eq!(acct["warehouses"]["west"]["total"], 1);
    // Stock given as well must agree with the warehouses.
    let same = put(
        &n,
        "tablet",
        json!({"stock": 5, "warehouses": {"a": 2, "b": 3}}),
    )
    .await;
    assert_eq!(same.status, StatusCode::CREATED, "{:?}", same.body);
}

#[tokio::test]
async fn a_spec_that_contradicts_itself_is_refused_with_400_and_creates_nothing() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("w{i}"), json!(1))).collect();
    for bad in [
        json!({"stock": 4, "warehouses": {"a": 2, "b": 3}}),
        json!({"warehouses": {"a": 2}, "regions": {"eu": ["b"]}}),
        json!({"warehouses": {"a": 2}, "default_order": ["a", "zz"]}),
        json!({"warehouses": {"a": 2}, "regions": {"eu": []}}),
        json!({"warehouses": {"a": 2}, "regions": {"eu": ["a", "a"]}}),
        json!({"warehouses": {}}),
        json!({"warehouses": {"a/b": 2}}),
        json!({"warehouses": many}),
        json!({"stock": 2, "regions": {"eu": ["north"]}}),
    ] {
        let a = put(&n, "phone", bad.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", a.body);
        assert_eq!(a.body["error"], "invalid_request");
    }
    let gone = n.admin(Method::GET, "phone", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_sale_without_warehouses_ships_every_win_from_default() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("cup", 2).await;
    let a = n.take("cup", "alice").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["warehouse"], "default");
    let ticket = a.body["ticket"].as_str().unwrap().to_string();
    let mine = n.mine("cup", "alice").await;
    assert_eq!(mine.body["warehouse"], "default");
    let back = n.backend(Method::GET, "cup", &ticket).await;
    assert_eq!(back.body["warehouse"], "default");
    let acct = n.accounting("cup").await;
    assert_eq!(
        acct["warehouses"],
        json!({"default": {"total": 2, "unsold": 1, "pending": 1, "confirmed": 0}})
    );
    assert_eq!(acct["balanced"], true);
    // Stock without a warehouse goes to the only one.
    let s = n
        .admin(Method::POST, "cup/stock", Some(json!({"add": 3})))
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        n.accounting("cup").await["warehouses"]["default"]["total"],
        5
    );
}

#[tokio::test]
async fn buyers_ship_from_their_regions_first_warehouse_until_it_runs_out() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    let mut got = Vec::new();
    for user in ["e1", "e2", "e3", "e4"] {
        let a = ship_to(&n, "phone", user, "eu").await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        got.push(a.body["warehouse"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["north", "north", "north", "south"]);
    let us = ship_to(&n, "phone", "u1", "us").await;
    assert_eq!(us.body["warehouse"], "west");
    // us prefers west, then south: west is out, south has one left.
    let us2 = ship_to(&n, "phone", "u2", "us").await;
    assert_eq!(us2.body["warehouse"], "south");
    // Everything is sold: the next buyer hears sold out.
    let late = ship_to(&n, "phone", "u3", "us").await;
    assert_eq!(late.status, StatusCode::GONE);

    // The replay, tickets/mine, the backend and the stream all agree.
    let again = ship_to(&n, "phone", "e4", "us").await;
    assert_eq!(again.status, StatusCode::OK);
    let ticket = again.body["ticket"].as_str().unwrap().to_string();
    assert_eq!(n.mine("phone", "e4").await.body["warehouse"], "south");
    let back = n.backend(Method::GET, "phone", &ticket).await;
    assert_eq!(back.body["warehouse"], "south");
    let stream = stream_warehouses(&redis.url(), "phone").await;
    assert_eq!(stream.len(), 6);
    assert_eq!(stream[&ticket], "south");

    let acct = n.accounting("phone").await;
    assert_eq!(acct["balanced"], true);
    for (w, total) in [("north", 3), ("south", 2), ("west", 1)] {
        assert_eq!(
            acct["warehouses"][w],
            json!({"total": total, "unsold": 0, "pending": total, "confirmed": 0}),
            "{w}"
        );
    }
    let metrics = n.get("/metrics").await.body;
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains("bigtap_warehouse_cross_wins_total{sale=\"phone\",warehouse=\"south\"} 2"),
        "e4 and u2 were shipped from their second choice:\n{text}"
    );
}

#[tokio::test]
async fn a_buyer_of_no_or_an_unknown_region_gets_the_default_order() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    assert_eq!(n.take("phone", "a").await.body["warehouse"], "south");
    assert_eq!(
        ship_to(&n, "phone", "b", "mars").await.body["warehouse"],
        "south"
    );
    assert_eq!(
        take_body(&n, "phone", "c", "{}").await.body["warehouse"],
        "north"
    );
    // Without a default order the warehouse with most unsold units serves.
    let a = put(&n, "mug", json!({"warehouses": {"a": 1, "b": 4}})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(n.take("mug", "x").await.body["warehouse"], "b");
}

#[tokio::test]
async fn a_ship_to_that_is_not_a_region_id_is_refused_with_400() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    for body in [
        r#"{"ship_to":"e u"}"#,
        r#"{"ship_to":5}"#,
        r#"{"ship_to":""}"#,
        r#"{"ship_to":"eu","ship_to":"us"}"#,
    ] {
        let a = take_body(&n, "phone", "alice", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {:?}", a.body);
    }
    for body in ["[]", "\"eu\"", "{"] {
        let a = take_body(&n, "phone", "alice", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.body["error"], "body_must_be_empty_or_an_object");
    }
    // Other fields are ignored, as before.
    let a = take_body(&n, "phone", "alice", r#"{"note":{"x":[1]},"ship_to":"eu"}"#).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(n.accounting("phone").await["pending"], 1);
}

#[tokio::test]
async fn a_released_unit_returns_to_its_own_warehouse_and_a_confirmed_one_stays_sold() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    let w = ship_to(&n, "phone", "u1", "us").await;
    assert_eq!(w.body["warehouse"], "west");
    let e = ship_to(&n, "phone", "e1", "eu").await;
    assert_eq!(e.body["warehouse"], "north");
    let tw = w.body["ticket"].as_str().unwrap().to_string();
    let te = e.body["ticket"].as_str().unwrap().to_string();
    let r = n
        .backend(Method::POST, "phone", &format!("{tw}/release"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let c = n
        .backend(Method::POST, "phone", &format!("{te}/confirm"))
        .await;
    assert_eq!(c.status, StatusCode::OK);
    let acct = n.accounting("phone").await;
    assert_eq!(
        acct["warehouses"]["west"],
        json!({"total": 1, "unsold": 1, "pending": 0, "confirmed": 0})
    );
    assert_eq!(
        acct["warehouses"]["north"],
        json!({"total": 3, "unsold": 2, "pending": 0, "confirmed": 1})
    );
    assert_eq!(acct["balanced"], true);
    // The released unit is sold again from west.
    assert_eq!(
        ship_to(&n, "phone", "u2", "us").await.body["warehouse"],
        "west"
    );
}

#[tokio::test]
async fn an_expired_ticket_returns_its_unit_to_its_own_warehouse() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| c.sweep_ms = 50).await;
    let now = now_ms();
    let a = n
        .admin(
            Method::PUT,
            "flash",
            Some(
                json!({"starts_at_ms": now - 1000, "ends_at_ms": now + 3_600_000,
                "ticket_ttl_ms": 100, "warehouses": {"x": 1, "y": 1},
                "regions": {"r": ["y"]}}),
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(ship_to(&n, "flash", "b", "r").await.body["warehouse"], "y");
    let swept = eventually(Duration::from_secs(5), || async {
        let acct = n.accounting("flash").await;
        acct["warehouses"]["y"]["unsold"] == 1 && acct["pending"] == 0
    })
    .await;
    assert!(swept, "the expired ticket's unit came back to y");
    let acct = n.accounting("flash").await;
    assert_eq!(acct["balanced"], true);
    assert_eq!(unsold(&acct, "x"), 1);
}

#[tokio::test]
async fn stock_goes_to_the_named_warehouse_and_a_sale_of_several_needs_a_name() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    let s = n
        .admin(
            Method::POST,
            "phone/stock",
            Some(json!({"add": 4, "warehouse": "west"})),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    assert_eq!(s.body["stock_total"], 10);
    let acct = n.accounting("phone").await;
    assert_eq!(acct["warehouses"]["west"]["total"], 5);
    assert_eq!(acct["balanced"], true);

    let nameless = n
        .admin(Method::POST, "phone/stock", Some(json!({"add": 1})))
        .await;
    assert_eq!(nameless.status, StatusCode::BAD_REQUEST);
    let unknown = n
        .admin(
            Method::POST,
            "phone/stock",
            Some(json!({"add": 1, "warehouse": "east"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let bad = n
        .admin(
            Method::POST,
            "phone/stock",
            Some(json!({"add": 1, "warehouse": "e st"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Withdrawing more than the warehouse holds unsold: 409, nothing changes.
    let over = n
        .admin(
            Method::POST,
            "phone/stock",
            Some(json!({"add": -3, "warehouse": "south"})),
        )
        .await;
    assert_eq!(over.status, StatusCode::CONFLICT, "{:?}", over.body);
    let w = n
        .admin(
            Method::POST,
            "phone/stock",
            Some(json!({"add": -2, "warehouse": "south"})),
        )
        .await;
    assert_eq!(w.status, StatusCode::OK);
    let acct = n.accounting("phone").await;
    assert_eq!(acct["stock_total"], 8);
    assert_eq!(acct["warehouses"]["south"]["total"], 0);
    assert_eq!(acct["balanced"], true);
}

#[tokio::test]
async fn a_transfer_moves_unsold_units_including_leased_ones_and_refuses_more() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    // A win makes this node lease units: they still count as unsold.
    assert_eq!(
        ship_to(&n, "phone", "e1", "eu").await.body["warehouse"],
        "north"
    );
    let before = n.accounting("phone").await;
    assert!(before["leased"].as_u64().unwrap() > 0, "{before}");
    let t = n
        .admin(
            Method::POST,
            "phone/transfer",
            Some(json!({"from": "north", "to": "south", "units": 2})),
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{:?}", t.body);
    assert_eq!(t.body["from_unsold"], 0);
    assert_eq!(t.body["to_unsold"], 4);
    let acct = n.accounting("phone").await;
    assert_eq!(acct["balanced"], true);
    assert_eq!(
        acct["warehouses"]["north"],
        json!({"total": 1, "unsold": 0, "pending": 1, "confirmed": 0})
    );
    assert_eq!(acct["warehouses"]["south"]["total"], 4);
    assert_eq!(
        (acct["available"].clone(), acct["leased"].clone()),
        (before["available"].clone(), before["leased"].clone()),
        "a transfer moves no pool unit"
    );
    // eu buyers now ship from south.
    assert_eq!(
        ship_to(&n, "phone", "e2", "eu").await.body["warehouse"],
        "south"
    );

    let short = n
        .admin(
            Method::POST,
            "phone/transfer",
            Some(json!({"from": "west", "to": "north", "units": 2})),
        )
        .await;
    assert_eq!(short.status, StatusCode::CONFLICT);
    assert_eq!(short.body, json!({"error": "insufficient", "unsold": 1}));

    // A new warehouse may receive units.
    let new = n
        .admin(
            Method::POST,
            "phone/transfer",
            Some(json!({"from": "south", "to": "east", "units": 1})),
        )
        .await;
    assert_eq!(new.status, StatusCode::OK);
    let acct = n.accounting("phone").await;
    assert_eq!(acct["warehouses"]["east"]["unsold"], 1);
    assert_eq!(acct["balanced"], true);

    for bad in [
        json!({"from": "nowhere", "to": "north", "units": 1}),
        json!({"from": "north", "to": "north", "units": 1}),
        json!({"from": "north", "to": "south", "units": 0}),
        json!({"from": "north", "to": "so uth", "units": 1}),
        json!({"from": "north", "units": 1}),
    ] {
        let a = n
            .admin(Method::POST, "phone/transfer", Some(bad.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let missing = n
        .admin(
            Method::POST,
            "nosuch/transfer",
            Some(json!({"from": "a", "to": "b", "units": 1})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let get = n.admin(Method::GET, "phone/transfer", None).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_racing_sell_exactly_each_warehouses_units() {
    let redis = redis();
    let slow_ok = |c: &mut bigtap::ServeConfig| {
        c.redis_timeout_ms = 5000;
        c.request_timeout_ms = 10_000;
    };
    let a = spawn_node(&redis.url(), slow_ok).await;
    let b = spawn_node(&redis.url(), slow_ok).await;
    let spec = json!({"warehouses": {"north": 40, "south": 25, "west": 15},
        "regions": {"eu": ["north", "south"], "us": ["west", "south"]}});
    assert_eq!(put(&a, "race", spec).await.status, StatusCode::CREATED);
    // b learns the sale on its next refresh; wait until it serves it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.get("/v1/sales/race").await.status == StatusCode::OK
        })
        .await
    );
    let regions = ["eu", "us", "asia"];
    let mut tasks = Vec::new();
    for i in 0..300 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (http, url) = (node.http.clone(), node.url("/v1/sales/race/tickets"));
        let region = regions[i % 3];
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header(
                    "authorization",
                    format!("Bearer {}", session(&format!("b{i}"))),
                )
                .body(format!("{{\"ship_to\":\"{region}\"}}"))
                .send()
                .await
                .expect("sent");
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }));
    }
    let mut by_wh: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => {
                *by_wh
                    .entry(body["warehouse"].as_str().unwrap().to_string())
                    .or_default() += 1
            }
            StatusCode::GONE => assert_eq!(body["outcome"], "sold_out"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let acct = a.accounting("race").await;
    assert_eq!(acct["balanced"], true, "{acct}");
    assert_eq!(acct["pending"], 80);
    for (w, total) in [("north", 40), ("south", 25), ("west", 15)] {
        assert_eq!(by_wh.get(w).copied(), Some(total), "{w}: {by_wh:?}");
        assert_eq!(
            acct["warehouses"][w],
            json!({"total": total, "unsold": 0, "pending": total, "confirmed": 0}),
            "{w}"
        );
    }
    let stream = stream_warehouses(&redis.url(), "race").await;
    let mut counted: HashMap<&str, u64> = HashMap::new();
    for w in stream.values() {
        *counted.entry(w.as_str()).or_default() += 1;
    }
    assert_eq!(counted.get("north"), Some(&40));
    assert_eq!(counted.get("south"), Some(&25));
    assert_eq!(counted.get("west"), Some(&15));
}

#[tokio::test]
async fn the_audit_reconciles_each_warehouse_and_names_a_damaged_one() {
    let redis = redis();
    let n = node(&redis.url()).await;
    phone(&n).await;
    let a = ship_to(&n, "phone", "e1", "eu").await;
    ship_to(&n, "phone", "u1", "us").await;
    let t = a.body["ticket"].as_str().unwrap().to_string();
    n.backend(Method::POST, "phone", &format!("{t}/confirm"))
        .await;
    let sale = bigtap::SaleId::parse("phone").unwrap();
    let report = bigtap::audit::audit(&redis.url(), "bigtap", &sale, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");

    let mut con = redis_con(&redis.url()).await;
    let _: i64 = redis::cmd("HINCRBY")
        .arg("bigtap:{phone}:wh")
        .arg("west:sold")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    let report = bigtap::audit::audit(&redis.url(), "bigtap", &sale, None)
        .await
        .unwrap();
    let text = report.to_string();
    assert!(
        text.contains("warehouse west: pending is 2 but the records say 1"),
        "{text}"
    );
    assert_eq!(n.accounting("phone").await["balanced"], false);
}

#[tokio::test]
async fn a_sale_created_before_warehouses_existed_sells_from_default_and_stays_balanced() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("old", 3).await;
    // What an older version left: no warehouse keys at all.
    let mut con = redis_con(&redis.url()).await;
    let _: i64 = redis::cmd("DEL")
        .arg("bigtap:{old}:wh")
        .arg("bigtap:{old}:wcfg")
        .query_async(&mut con)
        .await
        .unwrap();
    let a = ship_to(&n, "old", "alice", "eu").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["warehouse"], "default");
    let t = a.body["ticket"].as_str().unwrap().to_string();
    n.backend(Method::POST, "old", &format!("{t}/release"))
        .await;
    let s = n
        .admin(Method::POST, "old/stock", Some(json!({"add": 2})))
        .await;
    assert_eq!(s.status, StatusCode::OK);
    let acct = n.accounting("old").await;
    assert_eq!(acct["balanced"], true, "{acct}");
    assert_eq!(acct["warehouses"]["default"]["total"], 5);
    assert_eq!(acct["warehouses"]["default"]["unsold"], 5);
}

#[tokio::test]
async fn a_winner_replayed_by_another_node_hears_the_same_warehouse() {
    let redis = redis();
    let a = node(&redis.url()).await;
    let b = node(&redis.url()).await;
    phone(&a).await;
    let won = ship_to(&a, "phone", "u1", "us").await;
    assert_eq!(won.status, StatusCode::CREATED, "{:?}", won.body);
    assert_eq!(won.body["warehouse"], "west");
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.get("/v1/sales/phone").await.status == StatusCode::OK
        })
        .await
    );
    // First at b through one lookup, then from b's memory: the same
    // ticket and warehouse both times, and again at a from its memory.
    for n in [&b, &b, &a] {
        let again = n.take("phone", "u1").await;
        assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
        assert_eq!(again.body["ticket"], won.body["ticket"]);
        assert_eq!(again.body["warehouse"], "west", "{:?}", again.body);
    }
}
