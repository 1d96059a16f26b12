//! CORS on the buyer routes (DESIGN §3) through HTTP against a real
//! redis-server: preflights, the headers of buyer answers for listed and
//! unlisted origins, routes that never speak CORS, and refused preflights.

mod support;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use support::*;

const SHOP: &str = "https://shop.example";
const OTHER: &str = "https://elsewhere.example";

async fn shop_node(redis_url: &str) -> Node {
    spawn_node(redis_url, |c| {
        c.cors_origins = format!("{SHOP}, http://127.0.0.1:9").parse().unwrap();
    })
    .await
}

/// Sends `method path` with the given headers and no body.
async fn send(n: &Node, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut rb = n.http.request(method, n.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request sent");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

fn preflight_from<'a>(origin: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", method),
        (
            "access-control-request-headers",
            "authorization,content-type",
        ),
    ]
}

fn has_no_cors_header(h: &HeaderMap) -> bool {
    !h.keys().any(|k| k.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_is_allowed_on_both_buyer_routes() {
    let redis = redis();
    let n = shop_node(&redis.url()).await;
    for (path, method) in [
        ("/v1/sales/phone/tickets", "POST"),
        ("/v1/sales/phone", "GET"),
    ] {
        let a = send(&n, Method::OPTIONS, path, &preflight_from(SHOP, method)).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{path}");
        let h = &a.headers;
        assert_eq!(h["access-control-allow-origin"], SHOP);
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, content-type"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
    }
}

#[tokio::test]
async fn buyer_answers_to_a_listed_origin_carry_the_origin_and_expose_retry_after() {
    let redis = redis();
    let n = spawn_node(&redis.url(), |c| {
        c.cors_origins = SHOP.parse().unwrap();
        c.user_rate = 1;
    })
    .await;
    n.open_sale("phone", 1).await;
    let take = |user: &'static str| {
        let n = &n;
        async move {
            let auth = format!("Bearer {}", session(user));
            send(
                n,
                Method::POST,
                "/v1/sales/phone/tickets",
                &[("origin", SHOP), ("authorization", &auth)],
            )
            .await
        }
    };
    let won = take("alice").await;
    assert_eq!(won.status, StatusCode::CREATED);
    let sold_out = take("bob").await;
    assert_eq!(sold_out.status, StatusCode::GONE);
    let status = send(&n, Method::GET, "/v1/sales/phone", &[("origin", SHOP)]).await;
    assert_eq!(status.status, StatusCode::OK);
    for a in [&won, &sold_out, &status] {
        assert_eq!(a.headers["access-control-allow-origin"], SHOP);
        assert_eq!(a.headers["access-control-expose-headers"], "Retry-After");
    }
    // The cacheable answer varies by origin; answers to POST are never cached.
    assert_eq!(status.headers["vary"], "Origin");
    assert!(!won.headers.contains_key("vary"));
    // A buyer told to wait: the page must be able to read for how long.
    let mut limited = None;
    for _ in 0..20 {
        let a = take("bob").await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(a);
            break;
        }
    }
    let limited = limited.expect("the per-user limit answers 429 within 20 requests");
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(limited.headers["access-control-allow-origin"], SHOP);
    assert_eq!(
        limited.headers["access-control-expose-headers"],
        "Retry-After"
    );
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_cors_header_and_no_error() {
    let redis = redis();
    let n = shop_node(&redis.url()).await;
    n.open_sale("phone", 5).await;
    let pre = send(
        &n,
        Method::OPTIONS,
        "/v1/sales/phone/tickets",
        &preflight_from(OTHER, "POST"),
    )
    .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT);
    assert!(has_no_cors_header(&pre.headers), "{:?}", pre.headers);
    // An origin is compared whole: a listed host on another scheme or port
    // is another origin.
    for origin in ["http://shop.example", "https://shop.example:8443", "null"] {
        let a = send(
            &n,
            Method::OPTIONS,
            "/v1/sales/phone/tickets",
            &preflight_from(origin, "POST"),
        )
        .await;
        assert!(has_no_cors_header(&a.headers), "{origin}: {:?}", a.headers);
    }
    let auth = format!("Bearer {}", session("alice"));
    let a = send(
        &n,
        Method::POST,
        "/v1/sales/phone/tickets",
        &[("origin", OTHER), ("authorization", &auth)],
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(has_no_cors_header(&a.headers), "{:?}", a.headers);
    let status = send(&n, Method::GET, "/v1/sales/phone", &[("origin", OTHER)]).await;
    assert_eq!(status.status, StatusCode::OK);
    assert!(has_no_cors_header(&status.headers));
    assert_eq!(status.headers["vary"], "Origin");
}

#[tokio::test]
async fn admin_backend_and_probe_routes_never_answer_cors() {
    let redis = redis();
    let n = shop_node(&redis.url()).await;
    n.open_sale("phone", 5).await;
    let won = n.take("phone", "alice").await;
    let ticket = won.body["ticket"].as_str().unwrap().to_owned();
    let admin = format!("Bearer {ADMIN_KEY}");
    let backend = format!("Bearer {BACKEND_KEY}");
    let ticket_path = format!("/v1/sales/phone/tickets/{ticket}");
    let routes: Vec<(Method, &str, &str)> = vec![
        (Method::GET, "/v1/admin/sales/phone", admin.as_str()),
        (Method::GET, ticket_path.as_str(), backend.as_str()),
        (Method::GET, "/healthz", ""),
        (Method::GET, "/readyz", ""),
        (Method::GET, "/metrics", ""),
    ];
    for (method, path, auth) in routes {
        let mut headers = vec![("origin", SHOP)];
        if !auth.is_empty() {
            headers.push(("authorization", auth));
        }
        let a = send(&n, method, path, &headers).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {:?}", a.body);
        assert!(has_no_cors_header(&a.headers), "{path}: {:?}", a.headers);
        let pre = send(&n, Method::OPTIONS, path, &preflight_from(SHOP, "GET")).await;
        assert_ne!(pre.status, StatusCode::NO_CONTENT, "{path}");
        assert!(
            has_no_cors_header(&pre.headers),
            "{path}: {:?}",
            pre.headers
        );
    }
}

#[tokio::test]
async fn bad_preflights_are_refused_from_memory_even_while_redis_is_frozen() {
    let redis = redis();
    let n = shop_node(&redis.url()).await;
    n.open_sale("phone", 5).await;
    // Every Redis call would now hang until the store timeout and answer
    // 503: a preflight answered 204 or 403 never asked Redis.
    redis.pause();
    let long = ["authorization"; 12].join(",");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (preflight_from(SHOP, "DELETE"), "cors_method_not_allowed"),
        (
            vec![
                ("origin", SHOP),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization,x-trace"),
            ],
            "cors_header_not_allowed",
        ),
        (
            vec![
                ("origin", SHOP),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", long.as_str()),
            ],
            "cors_request_headers_too_long",
        ),
    ];
    for (headers, reason) in cases {
        let a = send(&n, Method::OPTIONS, "/v1/sales/phone/tickets", &headers).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{reason}");
        assert_eq!(a.body["error"], reason);
        assert!(has_no_cors_header(&a.headers), "{reason}: {:?}", a.headers);
    }
    let good = send(
        &n,
        Method::OPTIONS,
        "/v1/sales/phone/tickets",
        &preflight_from(SHOP, "POST"),
    )
    .await;
    assert_eq!(good.status, StatusCode::NO_CONTENT);
    assert_eq!(good.headers["access-control-allow-origin"], SHOP);
    redis.resume();
}

#[tokio::test]
async fn an_options_request_that_is_no_preflight_is_told_the_allowed_methods() {
    let redis = redis();
    let n = shop_node(&redis.url()).await;
    let a = send(&n, Method::OPTIONS, "/v1/sales/phone/tickets", &[]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.headers["allow"], "GET, POST");
    assert!(has_no_cors_header(&a.headers));
}

#[tokio::test]
async fn without_cors_origins_nothing_changes_for_browsers() {
    let redis = redis();
    let n = node(&redis.url()).await;
    n.open_sale("phone", 5).await;
    let pre = send(
        &n,
        Method::OPTIONS,
        "/v1/sales/phone/tickets",
        &preflight_from(SHOP, "POST"),
    )
    .await;
    assert_eq!(pre.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(has_no_cors_header(&pre.headers));
    let auth = format!("Bearer {}", session("alice"));
    let a = send(
        &n,
        Method::POST,
        "/v1/sales/phone/tickets",
        &[("origin", SHOP), ("authorization", &auth)],
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(has_no_cors_header(&a.headers));
    assert!(!a.headers.contains_key("vary"));
}

#[test]
fn a_malformed_origin_is_refused_at_start_up() {
    for bad in ["*", "https://shop.example/", "shop.example"] {
        assert!(
            bad.parse::<bigtap::http::cors::Origins>().is_err(),
            "{bad} accepted"
        );
    }
}
