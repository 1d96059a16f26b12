//! DESIGN §3 through HTTP against a real redis-server: every row of the
//! buyer table, the admin, backend and probe routes.

mod support;

use bigtap::auth::KeyRing;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_buyer_wins_a_ticket_whose_token_the_backend_can_verify() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let a = n.take("phone", "alice").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["outcome"], "won");
    assert_eq!(a.body["sale"], "phone");
    assert!(a.body.get("replay").is_none());
    let claims = ticket_keys()
        .verify_ticket(a.body["token"].as_str().unwrap())
        .expect("token verifies");
    assert_eq!(claims.ticket.as_str(), a.body["ticket"].as_str().unwrap());
    assert_eq!(claims.user.as_str(), "alice");
    assert_eq!(
        claims.expires_at_ms,
        a.body["expires_at_ms"].as_u64().unwrap()
    );
    assert_eq!(a.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_buyer_who_asks_again_gets_the_same_ticket_as_a_replay() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let first = n.take("phone", "alice").await;
    let again = n.take("phone", "alice").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["replay"], true);
    assert_eq!(again.body["ticket"], first.body["ticket"]);
    assert_eq!(n.accounting("phone").await["pending"], 1);
}

#[tokio::test]
async fn a_store_that_forgot_its_scripts_still_admits_buyers_once_each() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    assert_eq!(n.take("phone", "alice").await.status, StatusCode::CREATED);
    // As after a restart or a failover to a replica that never saw them.
    let mut con = redis_con(&redis.url()).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    let bob = n.take("phone", "bob").await;
    assert_eq!(bob.status, StatusCode::CREATED, "{:?}", bob.body);
    assert_eq!(n.take("phone", "bob").await.status, StatusCode::OK);
    let acct = n.accounting("phone").await;
    assert_eq!(acct["pending"], 2, "{acct}");
}

#[tokio::test]
async fn when_the_units_are_gone_buyers_hear_sold_out_and_winners_still_get_their_ticket() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 2).await;
    assert_eq!(n.take("phone", "a").await.status, StatusCode::CREATED);
    let b = n.take("phone", "b").await;
    assert_eq!(b.status, StatusCode::CREATED);
    let c = n.take("phone", "c").await;
    assert_eq!(c.status, StatusCode::GONE);
    assert_eq!(c.body, json!({"outcome": "sold_out"}));
    let again = n.take("phone", "b").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["ticket"], b.body["ticket"]);
    let acct = n.accounting("phone").await;
    assert_eq!(acct["pending"], 2);
    assert_eq!(acct["balanced"], true);
}

#[tokio::test]
async fn a_closed_sale_answers_ended() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 5).await;
    let closed = n.admin(Method::POST, "phone/close", None).await;
    assert_eq!(closed.status, StatusCode::OK);
    assert_eq!(closed.body["state"], "closed");
    let a = n.take("phone", "alice").await;
    assert_eq!(a.status, StatusCode::GONE);
    assert_eq!(a.body, json!({"outcome": "ended"}));
    assert_eq!(n.get("/v1/sales/phone").await.body["state"], "closed");
}

#[tokio::test]
async fn a_sale_whose_window_has_passed_answers_ended() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let now = now_ms();
    let put = n
        .admin(
            Method::PUT,
            "late",
            Some(json!({"stock": 5, "starts_at_ms": now - 10_000, "ends_at_ms": now - 1})),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    let a = n.take("late", "alice").await;
    assert_eq!(a.status, StatusCode::GONE);
    assert_eq!(a.body["outcome"], "ended");
    assert_eq!(n.get("/v1/sales/late").await.body["state"], "ended");
}

#[tokio::test]
async fn too_early_a_buyer_hears_when_the_sale_starts() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let starts = now_ms() + 60_000;
    n.admin(
        Method::PUT,
        "soon",
        Some(json!({"stock": 5, "starts_at_ms": starts, "ends_at_ms": starts + 60_000})),
    )
    .await;
    let a = n.take("soon", "alice").await;
    assert_eq!(a.status.as_u16(), 425);
    assert_eq!(
        a.body,
        json!({"outcome": "not_started", "starts_at_ms": starts})
    );
    // Cheapest check first: the window is judged before the session.
    assert_eq!(
        n.take_with("soon", "Bearer forged").await.status.as_u16(),
        425
    );
    assert_eq!(n.get("/v1/sales/soon").await.body["state"], "scheduled");
}

#[tokio::test]
async fn only_listed_buyers_may_buy_from_a_list_sale() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let now = now_ms();
    n.admin(
        Method::PUT,
        "vip",
        Some(json!({"stock": 5, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "eligibility": "list"})),
    )
    .await;
    let added = n
        .admin(
            Method::POST,
            "vip/eligible",
            Some(json!({"users": ["alice", "bob"]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK);
    assert_eq!(added.body["added"], 2);
    let carol = n.take("vip", "carol").await;
    assert_eq!(carol.status, StatusCode::FORBIDDEN);
    assert_eq!(carol.body, json!({"outcome": "not_eligible"}));
    assert_eq!(n.take("vip", "alice").await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_buyer_who_clicks_too_fast_is_told_to_retry_later() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| c.user_rate = 1).await;
    n.open_sale("phone", 100).await;
    let mut limited = None;
    for _ in 0..10 {
        let a = n.take("phone", "alice").await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(a);
            break;
        }
    }
    let a = limited.expect("the sixth request in a burst is limited");
    assert_eq!(a.body, json!({"outcome": "rate_limited"}));
    assert!(
        a.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Another buyer is not affected.
    assert_eq!(n.take("phone", "bob").await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_address_past_its_rate_is_limited_before_its_session_is_checked() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| c.address_rate = 1).await;
    n.open_sale("phone", 100).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(n.take_with("phone", "Bearer forged").await.status.as_u16());
    }
    assert_eq!(&statuses[..2], &[401, 401]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_sessions_are_refused() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let ring = session_keys();
    let alice = bigtap::UserId::parse("alice").unwrap();
    let expired = ring.mint_session(&alice, now_ms() / 1000 - 1);
    let (other, _) = KeyRing::generate("s1");
    let forged = other.mint_session(&alice, now_ms() / 1000 + 60);
    for auth in [
        "",
        "Bearer",
        "Basic abc",
        "Bearer v1.s1.alice",
        &format!("Bearer {expired}"),
        &format!("Bearer {forged}"),
    ] {
        let a = n.take_with("phone", auth).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(a.body, json!({"error": "invalid_session"}));
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(n.accounting("phone").await["pending"], 0);
}

#[tokio::test]
async fn an_unknown_sale_is_404_even_with_a_bad_session() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let a = n.take_with("nosuch", "Bearer forged").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body, json!({"error": "unknown_sale"}));
    assert_eq!(
        n.get("/v1/sales/nosuch").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn malformed_requests_get_400_405_413_and_431() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let auth = format!("Bearer {}", session("alice"));
    let post = |body: &'static str| {
        n.http
            .post(n.url("/v1/sales/phone/tickets"))
            .header("authorization", &auth)
            .body(body)
            .send()
    };
    assert_eq!(
        post("[1,2]").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post("{not json").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(post("{}").await.unwrap().status(), StatusCode::CREATED);
    let big = n
        .http
        .post(n.url("/v1/sales/phone/tickets"))
        .header("authorization", &auth)
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let wrong = n
        .http
        .get(n.url("/v1/sales/phone/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "POST");
    let bad_id = n.take("bad.sale", "alice").await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let huge = n
        .http
        .post(n.url("/v1/sales/phone/tickets"))
        .header("authorization", &auth)
        .header("x-padding", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 431);
    let mut many = n
        .http
        .post(n.url("/v1/sales/phone/tickets"))
        .header("authorization", &auth);
    for i in 0..100 {
        many = many.header(format!("x-h{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status().as_u16(), 431);
    // Nothing was taken by any of them beyond the one good request.
    assert_eq!(n.accounting("phone").await["pending"], 1);
}

#[tokio::test]
async fn the_sale_status_reports_state_window_and_remaining_units() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 3).await;
    let s = n.get("/v1/sales/phone").await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["sale"], "phone");
    assert_eq!(s.body["state"], "open");
    assert_eq!(s.body["stock_total"], 3);
    assert!(s.body["starts_at_ms"].as_u64().is_some() && s.body["ends_at_ms"].as_u64().is_some());
    for u in ["a", "b", "c"] {
        n.take("phone", u).await;
    }
    assert_eq!(n.take("phone", "d").await.status, StatusCode::GONE);
    let sold = eventually(std::time::Duration::from_secs(3), || async {
        n.get("/v1/sales/phone").await.body["state"] == "sold_out"
    })
    .await;
    assert!(sold);
    assert_eq!(n.get("/v1/sales/phone").await.body["remaining_hint"], 0);
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_key() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let r = n
        .http
        .get(n.url("/v1/admin/sales/phone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = n
        .http
        .put(n.url("/v1/admin/sales/phone"))
        .header("authorization", format!("Bearer {BACKEND_KEY}"))
        .json(&json!({"stock": 1, "starts_at_ms": 1, "ends_at_ms": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_update_changes_the_window_but_never_the_stock() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let now = now_ms();
    let up = n
        .admin(Method::PUT, "phone", Some(json!({"stock": 999, "starts_at_ms": now - 5, "ends_at_ms": now + 99_000, "ticket_ttl_ms": 1234})))
        .await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(up.body["stock_total"], 10);
    assert_eq!(up.body["ticket_ttl_ms"], 1234);
    assert_eq!(up.body["ends_at_ms"], now + 99_000);
    // What is stored, not only what the reply said.
    let stored = n.accounting("phone").await;
    assert_eq!(
        (stored["stock_total"].as_u64(), stored["available"].as_u64()),
        (Some(10), Some(10)),
        "{stored}"
    );
    let status = n.get("/v1/sales/phone").await;
    assert_eq!(status.body["stock_total"], 10);
    assert_eq!(status.body["ends_at_ms"], now + 99_000);
}

#[tokio::test]
async fn bad_admin_bodies_are_explained_and_change_nothing() {
    let redis = redis();
    let n = node(&redis.url()).await;
    let now = now_ms();
    for body in [
        json!({"starts_at_ms": now, "ends_at_ms": now + 1}),
        json!({"stock": 5, "starts_at_ms": now, "ends_at_ms": now}),
        json!({"stock": 5, "starts_at_ms": now, "ends_at_ms": now + 1, "eligibility": "vip"}),
        json!({"stock": -5, "starts_at_ms": now, "ends_at_ms": now + 1}),
        json!({"stock": 5, "starts_at_ms": now, "ends_at_ms": now + 1, "surprise": true}),
    ] {
        let a = n.admin(Method::PUT, "x", Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.body["error"], "invalid_request");
    }
    assert_eq!(
        n.admin(Method::GET, "x", None).await.status,
        StatusCode::NOT_FOUND
    );
    n.open_sale("phone", 5).await;
    let bad = n
        .admin(
            Method::POST,
            "phone/eligible",
            Some(json!({"users": ["ok", "not ok"]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        n.admin(Method::POST, "phone/stock", Some(json!({"add": 0})))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // The partly valid list was refused whole: not even "ok" was added.
    let mut con = redis_con(&redis.url()).await;
    let listed: u64 = redis::cmd("SCARD")
        .arg("bigtap:{phone}:eligible")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(listed, 0, "a refused list left users behind");
    let acct = n.accounting("phone").await;
    assert_eq!(
        (acct["stock_total"].as_u64(), acct["balanced"].as_bool()),
        (Some(5), Some(true)),
        "{acct}"
    );
}

#[tokio::test]
async fn stock_can_be_added_and_unleased_units_withdrawn() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let add = n
        .admin(Method::POST, "phone/stock", Some(json!({"add": 5})))
        .await;
    assert_eq!(add.status, StatusCode::OK);
    assert_eq!(add.body, json!({"stock_total": 15, "available": 15}));
    let take = n
        .admin(Method::POST, "phone/stock", Some(json!({"add": -15})))
        .await;
    assert_eq!(take.body, json!({"stock_total": 0, "available": 0}));
    let too_much = n
        .admin(Method::POST, "phone/stock", Some(json!({"add": -1})))
        .await;
    assert_eq!(too_much.status, StatusCode::CONFLICT);
    assert_eq!(too_much.body["error"], "insufficient_available");
    assert_eq!(n.take("phone", "alice").await.status, StatusCode::GONE);
    let back = n
        .admin(Method::POST, "phone/stock", Some(json!({"add": 1})))
        .await;
    assert_eq!(back.status, StatusCode::OK);
    let won = eventually(std::time::Duration::from_secs(3), || async {
        n.take("phone", "alice").await.status == StatusCode::CREATED
    })
    .await;
    assert!(won, "added stock sells");
    assert_eq!(n.accounting("phone").await["balanced"], true);
}

#[tokio::test]
async fn the_accounting_reports_every_counter_and_balance() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    n.take("phone", "alice").await;
    let a = n.accounting("phone").await;
    for k in [
        "stock_total",
        "available",
        "leased",
        "pending",
        "confirmed",
        "released_total",
        "orders_enqueued",
        "balanced",
    ] {
        assert!(a.get(k).is_some(), "{k} missing from {a}");
    }
    let sum = ["available", "leased", "pending", "confirmed"]
        .iter()
        .map(|k| a[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(sum, 10);
    assert_eq!(a["orders_enqueued"], 1);
    assert_eq!(a["balanced"], true);
}

#[tokio::test]
async fn the_backend_reads_confirms_and_releases_tickets_idempotently() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 10).await;
    let a = n.ticket("phone", "alice").await;
    let b = n.ticket("phone", "bob").await;

    let read = n.backend(Method::GET, "phone", &a).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["user"], "alice");
    assert_eq!(read.body["state"], "pending");
    assert!(read.body["expires_at_ms"].as_u64().is_some());

    for _ in 0..2 {
        let c = n
            .backend(Method::POST, "phone", &format!("{a}/confirm"))
            .await;
        assert_eq!(
            (c.status, c.body.clone()),
            (StatusCode::OK, json!({"state": "confirmed"}))
        );
    }
    let late = n
        .backend(Method::POST, "phone", &format!("{a}/release"))
        .await;
    assert_eq!(
        (late.status, late.body),
        (StatusCode::CONFLICT, json!({"state": "confirmed"}))
    );

    for _ in 0..2 {
        let r = n
            .backend(Method::POST, "phone", &format!("{b}/release"))
            .await;
        assert_eq!(
            (r.status, r.body.clone()),
            (StatusCode::OK, json!({"state": "released"}))
        );
    }
    let late = n
        .backend(Method::POST, "phone", &format!("{b}/confirm"))
        .await;
    assert_eq!(
        (late.status, late.body),
        (StatusCode::CONFLICT, json!({"state": "released"}))
    );

    let unknown = n
        .backend(
            Method::POST,
            "phone",
            "0123456789abcdef0123456789abcdef/confirm",
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let acct = n.accounting("phone").await;
    assert_eq!(
        (acct["confirmed"].as_u64(), acct["released_total"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(acct["balanced"], true);
}

#[tokio::test]
async fn backend_routes_refuse_the_admin_key() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 1).await;
    let r = n
        .http
        .post(n.url("/v1/sales/phone/tickets/0123456789abcdef0123456789abcdef/confirm"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn probes_report_liveness_readiness_and_metrics() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 1).await;
    n.take("phone", "alice").await;
    n.take("phone", "bob").await;
    assert_eq!(n.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(n.get("/readyz").await.status, StatusCode::OK);
    let m = n.get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.body.as_str().unwrap();
    for needle in [
        r#"bigtap_http_requests_total{route="take",status="201",outcome="won"} 1"#,
        r#"bigtap_http_requests_total{route="take",status="410",outcome="sold_out"} 1"#,
        "bigtap_http_request_duration_seconds_bucket{route=\"take\",answered_by=\"memory\",le=\"0.0001\"}",
        r#"bigtap_commits_total{result="won",sale="phone"} 1"#,
        r#"bigtap_stock_total{sale="phone"} 1"#,
        "bigtap_redis_script_duration_seconds_bucket{script=\"admit\"",
        "bigtap_node_info{",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}\n{text}");
    }
    assert!(!text.contains("alice"), "no user ids in metrics");
}

#[tokio::test]
async fn an_eligibility_list_loaded_through_one_node_reaches_the_others() {
    let redis = redis();
    let a = node(&redis.url()).await;
    let b = node(&redis.url()).await;
    let now = now_ms();
    a.admin(
        Method::PUT,
        "vip",
        Some(json!({"stock": 5, "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000, "eligibility": "list"})),
    )
    .await;
    for chunk in [["u1", "u2"], ["u3", "u4"]] {
        a.admin(
            Method::POST,
            "vip/eligible",
            Some(json!({ "users": chunk })),
        )
        .await;
    }
    let loaded = eventually(std::time::Duration::from_secs(5), || async {
        b.take("vip", "u4").await.status == StatusCode::CREATED
    })
    .await;
    assert!(loaded, "node b learnt the list");
    assert_eq!(
        b.take("vip", "stranger").await.status,
        StatusCode::FORBIDDEN
    );
}
