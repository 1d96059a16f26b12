//! Test support: a real redis-server per test, bigtap nodes on port 0, and
//! typed request helpers.
#![allow(dead_code)]

use std::time::Duration;

use bigtap::auth::KeyRing;
use bigtap::store::embedded::RedisProcess;
use bigtap::{App, AppHandle, ServeConfig, UserId};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const SESSION_KEYS: &str = "s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const TICKET_KEYS: &str = "t1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
pub const ADMIN_KEY: &str = "test-admin-key";
pub const BACKEND_KEY: &str = "test-backend-key";

pub fn redis() -> RedisProcess {
    RedisProcess::start_temporary().expect("redis-server must be installed to run the tests")
}

pub fn config(redis_url: &str) -> ServeConfig {
    let mut c = ServeConfig::defaults();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.redis = Some(redis_url.to_owned());
    c.session_keys = Some(SESSION_KEYS.into());
    c.ticket_keys = Some(TICKET_KEYS.into());
    c.admin_key = Some(ADMIN_KEY.into());
    c.backend_key = Some(BACKEND_KEY.into());
    c.user_rate = 0;
    c.lease_ttl_ms = 1000;
    c.refresh_ms = 50;
    c.sweep_ms = 100;
    c.redis_timeout_ms = 500;
    c
}

pub struct Node {
    pub handle: AppHandle,
    pub http: reqwest::Client,
    pub base: String,
}

pub async fn node(redis_url: &str) -> Node {
    node_with(redis_url, |_| {}).await
}

pub async fn node_with(redis_url: &str, tweak: impl FnOnce(&mut ServeConfig)) -> Node {
    let mut c = config(redis_url);
    tweak(&mut c);
    let app = App::build(c).await.expect("node builds");
    let handle = app.spawn();
    let base = handle.url();
    Node {
        handle,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base,
    }
}

pub fn now_ms() -> u64 {
    bigtap::clock::unix_ms()
}

pub fn session(user: &str) -> String {
    KeyRing::parse(SESSION_KEYS)
        .unwrap()
        .mint_session(&UserId::parse(user).unwrap(), now_ms() / 1000 + 3600)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn take(&self, sale: &str, user: &str) -> Answer {
        self.take_with(sale, &format!("Bearer {}", session(user)))
            .await
    }

    pub async fn take_with(&self, sale: &str, authorization: &str) -> Answer {
        let r = self
            .http
            .post(self.url(&format!("/v1/sales/{sale}/tickets")))
            .header("authorization", authorization)
            .send()
            .await
            .expect("request sent");
        answer(r).await
    }

    /// `GET …/tickets/mine` as `user`.
    pub async fn mine(&self, sale: &str, user: &str) -> Answer {
        let r = self
            .http
            .get(self.url(&format!("/v1/sales/{sale}/tickets/mine")))
            .header("authorization", format!("Bearer {}", session(user)))
            .send()
            .await
            .expect("request sent");
        answer(r).await
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut rb = self
            .http
            .request(method, self.url(&format!("/v1/admin/sales/{path}")))
            .header("authorization", format!("Bearer {ADMIN_KEY}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        answer(rb.send().await.expect("request sent")).await
    }

    /// A sale open from now for an hour.
    pub async fn open_sale(&self, sale: &str, stock: u64) -> Answer {
        let now = now_ms();
        let a = self
            .admin(
                reqwest::Method::PUT,
                sale,
                Some(json!({"stock": stock, "starts_at_ms": now - 1000, "ends_at_ms": now + 3_600_000, "ticket_ttl_ms": 600_000})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a
    }

    pub async fn accounting(&self, sale: &str) -> Value {
        let a = self.admin(reqwest::Method::GET, sale, None).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        a.body
    }

    pub async fn backend(&self, method: reqwest::Method, sale: &str, rest: &str) -> Answer {
        let r = self
            .http
            .request(
                method,
                self.url(&format!("/v1/sales/{sale}/tickets/{rest}")),
            )
            .header("authorization", format!("Bearer {BACKEND_KEY}"))
            .send()
            .await
            .expect("request sent");
        answer(r).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        answer(
            self.http
                .get(self.url(path))
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }
}

/// How long an eventual condition may take before the test fails. Generous:
/// it bounds a hang, it does not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it holds or `limit` passes; returns whether it held.
/// The one way the tests wait for a condition: a test asserts the answer
/// (or, to show that something does not happen, its negation).
#[must_use = "a wait whose answer is not asserted cannot fail"]
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
pub mod cluster;
pub mod consumer;
pub mod procs;
pub mod proxy;
pub mod store;
