//! A reference order backend: the other side of `bigtap orders`.
//!
//! - `POST /orders` is the sink: `bigtap orders --sink http://HOST:PORT/orders`
//!   posts every winner here. Deliveries are at least once, so an order is
//!   recorded once per `Idempotency-Key` (the ticket) and a repeat answers
//!   200 again without recording anything new.
//! - `POST /pay` with `{"token": "<purchase token>", "ok": true|false}` is
//!   where the shop reports the payment outcome. The purchase token is
//!   verified (DESIGN §4) and bigtap is told to confirm (paid) or release
//!   (payment failed) the ticket.
//!
//! ```text
//! BIGTAP_TICKET_KEYS=k1:... BIGTAP_BACKEND_KEY=... \
//!   cargo run --example order_backend -- --listen 127.0.0.1:8081 --bigtap http://127.0.0.1:8080
//! ```
//!
//! Orders live in memory: this shows the protocol, it is not a database.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigtap::auth::KeyRing;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::json;

/// Request bodies above this are refused.
const MAX_BODY: usize = 16 * 1024;
/// A call to bigtap must answer within this.
const BIGTAP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
struct Args {
    /// Address to serve /orders and /pay on.
    #[arg(long, env = "BACKEND_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// bigtap's base URL, for confirm and release.
    #[arg(long, env = "BIGTAP_URL", default_value = "http://127.0.0.1:8080")]
    bigtap: String,
    /// The backend key bigtap expects as bearer token.
    #[arg(long, env = "BIGTAP_BACKEND_KEY")]
    backend_key: String,
    /// Purchase-token keys, KID:BASE64KEY[,...].
    #[arg(long, env = "BIGTAP_TICKET_KEYS")]
    ticket_keys: String,
}

/// One winner as the sink delivers it.
#[derive(Debug, Clone, Deserialize)]
struct Order {
    ticket: String,
    sale: String,
    user: String,
    issued_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Deserialize)]
struct Payment {
    token: String,
    ok: bool,
}

struct Backend {
    keys: KeyRing,
    bigtap: String,
    backend_key: String,
    /// Ticket (idempotency key) -> order.
    orders: Mutex<HashMap<String, Order>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Backend {
    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "body too large"}),
                )
            }
        };
        match (&parts.method, parts.uri.path()) {
            (&Method::POST, "/orders") => {
                let key = parts
                    .headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok());
                self.record(key, &body)
            }
            (&Method::POST, "/pay") => self.pay(&body).await,
            (&Method::GET, "/healthz") => reply(StatusCode::OK, json!({"status": "ok"})),
            _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }

    /// The sink: records an order once per idempotency key.
    fn record(&self, key: Option<&str>, body: &[u8]) -> Reply {
        let order: Order = match serde_json::from_slice(body) {
            Ok(o) => o,
            Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        };
        if key != Some(order.ticket.as_str()) {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "Idempotency-Key must be the ticket"}),
            );
        }
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        if orders.contains_key(&order.ticket) {
            return reply(StatusCode::OK, json!({"status": "duplicate"}));
        }
        tracing::info!(
            ticket = %order.ticket, sale = %order.sale, user = %order.user,
            issued_at_ms = order.issued_at_ms, expires_at_ms = order.expires_at_ms, "order recorded"
        );
        orders.insert(order.ticket.clone(), order);
        reply(StatusCode::OK, json!({"status": "recorded"}))
    }

    /// The payment outcome: verify the purchase token, then confirm or
    /// release the ticket at bigtap.
    async fn pay(&self, body: &[u8]) -> Reply {
        let pay: Payment = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        };
        let claims = match self.keys.verify_ticket(&pay.token) {
            Ok(c) => c,
            Err(e) => return reply(StatusCode::UNAUTHORIZED, json!({"error": e.to_string()})),
        };
        let action = if pay.ok { "confirm" } else { "release" };
        let url = format!(
            "{}/v1/sales/{}/tickets/{}/{action}",
            self.bigtap.trim_end_matches('/'),
            claims.sale,
            claims.ticket
        );
        match self.call_bigtap(&url).await {
            // bigtap's answer is the outcome: 200 done (idempotent), 409 when
            // the ticket already went the other way (paid too late: refund).
            // Anything else is bigtap's problem, not the shop's: 502.
            Ok((status, answer)) => {
                tracing::info!(ticket = %claims.ticket, action, status = status.as_u16(), "payment reported to bigtap");
                let ours = match status {
                    StatusCode::OK | StatusCode::CONFLICT => status,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let body = json!({
                    "ticket": claims.ticket.as_str(),
                    "bigtap_status": status.as_u16(),
                    "bigtap": answer,
                });
                reply(ours, body)
            }
            Err(e) => {
                tracing::warn!(ticket = %claims.ticket, error = %e, "bigtap unreachable");
                reply(StatusCode::BAD_GATEWAY, json!({"error": e}))
            }
        }
    }

    async fn call_bigtap(&self, url: &str) -> Result<(StatusCode, serde_json::Value), String> {
        let req = Request::post(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.backend_key))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((
                status,
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            ))
        };
        tokio::time::timeout(BIGTAP_TIMEOUT, exchange)
            .await
            .map_err(|_| "bigtap did not answer in time".to_owned())?
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let backend = Arc::new(Backend {
        keys: KeyRing::parse(&args.ticket_keys)?,
        bigtap: args.bigtap,
        backend_key: args.backend_key,
        orders: Mutex::new(HashMap::new()),
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "order backend listening");
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(backend.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
