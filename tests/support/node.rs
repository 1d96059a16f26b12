//! A bigtap node in process, on port 0 with the test settings, and typed
//! HTTP requests to it.

use std::sync::Arc;
use std::time::Duration;

use bigtap::store::Store;
use bigtap::{App, AppHandle, ServeConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{now_ms, session, ADMIN_KEY, BACKEND_KEY, SESSION_KEYS, TICKET_KEYS};

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

/// A node with the test settings on the Redis at `redis_url`.
pub async fn node(redis_url: &str) -> Node {
    spawn_node(redis_url, |_| {}).await
}

/// A node with the test settings, changed by `tweak`.
pub async fn spawn_node(redis_url: &str, tweak: impl FnOnce(&mut ServeConfig)) -> Node {
    let mut c = config(redis_url);
    tweak(&mut c);
    Node::serve(App::build(c).await.expect("node builds"))
}

/// A node that talks to `store` (a double, say) instead of opening its own;
/// `redis_url` is still where it reads the winners' stream.
pub async fn spawn_node_on(
    store: Arc<dyn Store>,
    redis_url: &str,
    tweak: impl FnOnce(&mut ServeConfig),
) -> Node {
    let mut c = config(redis_url);
    tweak(&mut c);
    Node::serve(
        App::build_with_store(c, store, redis_url)
            .await
            .expect("node builds"),
    )
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
    /// Serves `app` on its port and makes a client for it.
    pub fn serve(app: App) -> Node {
        let handle = app.spawn();
        let base = handle.url();
        Node {
            handle,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            base,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn take(&self, sale: &str, user: &str) -> Answer {
        self.take_with(sale, &format!("Bearer {}", session(user)))
            .await
    }

    /// Takes as `user` and returns the ticket won; fails the test when the
    /// answer holds none.
    pub async fn ticket(&self, sale: &str, user: &str) -> String {
        let a = self.take(sale, user).await;
        a.body["ticket"]
            .as_str()
            .unwrap_or_else(|| panic!("{user} won no ticket of {sale}: {:?}", a.body))
            .to_owned()
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
