//! `bigtap relay`: the alarm policy `limit(n)` between Alertmanager and the
//! pager.
//!
//! Alertmanager bounds how *often* an alert notifies (group and repeat
//! intervals, the `snooze(m)` of the alarm strategy); nothing in it bounds
//! how *many times* one anomaly notifies. The relay does: Alertmanager posts
//! its webhook notifications to `/{route}`, the relay forwards each to the
//! route's upstream URL after removing every alert that has already been
//! notified `n` times in its current anomaly period.
//!
//! What it owns, and its invariants:
//! - The ledger: per route and alert (Alertmanager's fingerprint), the
//!   anomaly period (the alert's `startsAt`) and how many notifications of
//!   it the upstream has acknowledged. A firing alert is forwarded while
//!   `sent < n`; `n` is the alert's `limit` annotation (the rule says it),
//!   else `--default-limit`; `0` means no limit.
//! - A new `startsAt` is a new anomaly period with a fresh count. A resolved
//!   alert ends its period: the resolution is forwarded once, so the pager
//!   can close what it opened.
//! - Only acknowledged deliveries count: when the upstream fails, the
//!   reservation is returned and Alertmanager is answered 502, so it retries
//!   and the retry is judged like the first try.
//! - The ledger is bounded: periods not heard of for `--forget-after-s` are
//!   dropped, and past `--max-alerts` entries the least recently seen goes
//!   first. Forgetting can only cause an extra notification, never a lost one.
//! - A notification whose every alert is over its limit is answered 200 and
//!   not forwarded at all.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};

/// Largest notification accepted from Alertmanager. A group of a few
/// hundred alerts with their annotations stays far below it.
const MAX_BODY_BYTES: usize = 1 << 20;

/// How long open connections may take to finish once the relay stops.
const DRAIN: Duration = Duration::from_secs(2);

/// `bigtap relay` flags; each also reads the environment variable shown.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Address Alertmanager posts to (`http://ADDR/{route}`).
    #[arg(long, env = "BIGTAP_RELAY_LISTEN", default_value = "127.0.0.1:9097")]
    pub listen: SocketAddr,
    /// A route and its upstream webhook, `NAME=http://host:port/path`; repeat
    /// for each receiver (e.g. pager, chat).
    #[arg(
        long = "forward",
        env = "BIGTAP_RELAY_FORWARD",
        value_delimiter = ',',
        required = true
    )]
    pub forward: Vec<String>,
    /// limit(n) of alerts without a `limit` annotation; 0 = no limit.
    #[arg(long, env = "BIGTAP_RELAY_DEFAULT_LIMIT", default_value_t = 0)]
    pub default_limit: u32,
    /// Forget an anomaly period not heard of for this long.
    #[arg(long, env = "BIGTAP_RELAY_FORGET_AFTER_S", default_value_t = 86_400)]
    pub forget_after_s: u64,
    /// Most alerts the ledger tracks at once.
    #[arg(long, env = "BIGTAP_RELAY_MAX_ALERTS", default_value_t = 10_000)]
    pub max_alerts: usize,
    /// Timeout of one upstream call, from connect to the end of the answer.
    #[arg(long, env = "BIGTAP_RELAY_TIMEOUT_MS", default_value_t = 5_000)]
    pub timeout_ms: u64,
}

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("--forward {0:?} must be NAME=http://host:port/path")]
    Forward(String),
    #[error("--forward {0:?}: the route name must be letters, digits, '-' or '_'")]
    RouteName(String),
    #[error("--forward {0:?}: route given twice")]
    DuplicateRoute(String),
    #[error("--max-alerts must be at least 1")]
    MaxAlerts,
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// One anomaly period of one alert on one route.
#[derive(Debug)]
struct Period {
    starts_at: String,
    /// Firing notifications the upstream acknowledged (or that are in flight).
    sent: u32,
    /// The resolution was forwarded: nothing more of this period goes out.
    resolved: bool,
    last_seen_ms: u64,
}

/// What was reserved for one forwarded alert, to undo it if delivery fails.
#[derive(Debug)]
enum Reservation {
    Firing {
        key: (String, String),
        starts_at: String,
    },
    Resolved {
        key: (String, String),
        starts_at: String,
    },
}

#[derive(Debug, Default)]
struct Ledger {
    periods: HashMap<(String, String), Period>,
}

impl Ledger {
    /// Makes room for one more entry: forgets stale periods, then the least
    /// recently seen one.
    fn make_room(&mut self, now_ms: u64, forget_after_ms: u64, max: usize) {
        if self.periods.len() < max {
            return;
        }
        self.periods
            .retain(|_, p| now_ms.saturating_sub(p.last_seen_ms) < forget_after_ms);
        while self.periods.len() >= max {
            let oldest = self
                .periods
                .iter()
                .min_by_key(|(_, p)| p.last_seen_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.periods.remove(&k);
                }
                None => break,
            }
        }
    }
}

/// The relay's state: routes, ledger, upstream client.
pub struct Relay {
    routes: HashMap<String, Uri>,
    ledger: Mutex<Ledger>,
    default_limit: u32,
    forget_after_ms: u64,
    max_alerts: usize,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A relay bound to its port, not yet serving.
pub struct BoundRelay {
    relay: Arc<Relay>,
    listener: TcpListener,
}

impl Relay {
    /// Checks the arguments and binds the listener (so a busy port fails at
    /// start-up), with the system clock.
    pub async fn bind(args: &RelayArgs) -> Result<BoundRelay, RelayError> {
        Self::bind_with_clock(args, Arc::new(SystemClock)).await
    }

    /// As [`Relay::bind`], with the clock given (tests move time by hand).
    pub async fn bind_with_clock(
        args: &RelayArgs,
        clock: Arc<dyn Clock>,
    ) -> Result<BoundRelay, RelayError> {
        let mut routes = HashMap::new();
        for f in &args.forward {
            let (name, url) = f
                .split_once('=')
                .ok_or_else(|| RelayError::Forward(f.clone()))?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(RelayError::RouteName(f.clone()));
            }
            let uri: Uri = url.parse().map_err(|_| RelayError::Forward(f.clone()))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(RelayError::Forward(f.clone()));
            }
            if routes.insert(name.to_string(), uri).is_some() {
                return Err(RelayError::DuplicateRoute(f.clone()));
            }
        }
        if args.max_alerts == 0 {
            return Err(RelayError::MaxAlerts);
        }
        let timeout = Duration::from_millis(args.timeout_ms);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| RelayError::Bind(args.listen, e))?;
        let relay = Relay {
            routes,
            ledger: Mutex::new(Ledger::default()),
            default_limit: args.default_limit,
            forget_after_ms: args.forget_after_s.saturating_mul(1000),
            max_alerts: args.max_alerts,
            timeout,
            clock,
            client,
        };
        Ok(BoundRelay {
            relay: Arc::new(relay),
            listener,
        })
    }

    /// Decides which alerts of one notification go out, and reserves them
    /// in the ledger. Returns the kept alerts and their reservations.
    fn admit(&self, route: &str, alerts: Vec<Value>) -> (Vec<Value>, Vec<Reservation>) {
        let now = self.clock.now_ms();
        let mut kept = Vec::new();
        let mut reserved = Vec::new();
        let mut ledger = self.ledger.lock();
        for alert in alerts {
            let key = (route.to_string(), alert_key(&alert));
            let starts_at = str_field(&alert, "startsAt").to_string();
            let firing = str_field(&alert, "status") != "resolved";
            let limit = alert_limit(&alert).unwrap_or(self.default_limit);
            if !ledger.periods.contains_key(&key) {
                ledger.make_room(now, self.forget_after_ms, self.max_alerts);
            }
            let period = ledger.periods.entry(key.clone()).or_insert_with(|| Period {
                starts_at: starts_at.clone(),
                sent: 0,
                resolved: false,
                last_seen_ms: now,
            });
            period.last_seen_ms = now;
            if period.starts_at != starts_at {
                // The alert resolved and fired again: a new anomaly period.
                *period = Period {
                    starts_at: starts_at.clone(),
                    sent: 0,
                    resolved: false,
                    last_seen_ms: now,
                };
            }
            if firing {
                if period.resolved {
                    // A late duplicate of a period already closed.
                    continue;
                }
                if limit == 0 || period.sent < limit {
                    period.sent += 1;
                    reserved.push(Reservation::Firing { key, starts_at });
                    kept.push(alert);
                } else {
                    tracing::info!(
                        route,
                        alert = %label(&alert, "alertname"),
                        sale = %label(&alert, "sale"),
                        limit,
                        "notification over the alert's limit for this anomaly period: not forwarded"
                    );
                }
            } else if !period.resolved {
                period.resolved = true;
                reserved.push(Reservation::Resolved { key, starts_at });
                kept.push(alert);
            }
        }
        (kept, reserved)
    }

    /// Gives back what a failed delivery reserved.
    fn refund(&self, reserved: Vec<Reservation>) {
        let mut ledger = self.ledger.lock();
        for r in reserved {
            match r {
                Reservation::Firing { key, starts_at } => {
                    if let Some(p) = ledger.periods.get_mut(&key) {
                        if p.starts_at == starts_at {
                            p.sent = p.sent.saturating_sub(1);
                        }
                    }
                }
                Reservation::Resolved { key, starts_at } => {
                    if let Some(p) = ledger.periods.get_mut(&key) {
                        if p.starts_at == starts_at {
                            p.resolved = false;
                        }
                    }
                }
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_start_matches('/').to_string();
        if req.method() == Method::GET && path == "healthz" {
            return reply(StatusCode::OK, "ok");
        }
        let Some(upstream) = self.routes.get(&path).cloned() else {
            return reply(StatusCode::NOT_FOUND, "unknown route");
        };
        if req.method() != Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "notification too large"),
        };
        let mut doc: Map<String, Value> = match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => m,
            _ => return reply(StatusCode::BAD_REQUEST, "not an Alertmanager notification"),
        };
        let alerts = match doc.remove("alerts") {
            Some(Value::Array(a)) => a,
            _ => return reply(StatusCode::BAD_REQUEST, "no alerts array"),
        };
        let (kept, reserved) = self.admit(&path, alerts);
        if kept.is_empty() {
            return reply(StatusCode::OK, "nothing to forward");
        }
        let any_firing = kept.iter().any(|a| str_field(a, "status") != "resolved");
        doc.insert(
            "status".into(),
            Value::from(if any_firing { "firing" } else { "resolved" }),
        );
        doc.insert("alerts".into(), Value::Array(kept));
        let out = Value::Object(doc).to_string();
        match self.forward(&upstream, out).await {
            Ok(()) => reply(StatusCode::OK, "forwarded"),
            Err(why) => {
                self.refund(reserved);
                tracing::warn!(route = %path, %why, "upstream failed; Alertmanager will retry");
                reply(StatusCode::BAD_GATEWAY, "upstream failed")
            }
        }
    }

    async fn forward(&self, upstream: &Uri, body: String) -> Result<(), String> {
        let req = Request::post(upstream.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // Read the answer in full so the connection can be reused.
            let _ = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("upstream answered {status}"))
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

impl BoundRelay {
    /// The address the relay listens on (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown`, then lets open requests finish briefly.
    pub async fn run(self, shutdown: CancellationToken) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let stream = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, do not spin.
                        tracing::warn!(error = %e, "relay accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let relay = self.relay.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let relay = relay.clone();
                async move { Ok::<_, Infallible>(relay.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    }
}

/// `bigtap relay`: binds, serves until SIGINT or SIGTERM.
pub async fn run_until_signalled(args: RelayArgs) -> Result<(), RelayError> {
    let token = CancellationToken::new();
    crate::shutdown::cancel_on_signals(token.clone());
    run(args, token).await
}

/// Binds, serves until `shutdown`.
pub async fn run(args: RelayArgs, shutdown: CancellationToken) -> Result<(), RelayError> {
    let bound = Relay::bind(&args).await?;
    tracing::info!(addr = %bound.local_addr(), routes = ?args.forward.len(), "bigtap relay listening");
    bound.run(shutdown).await;
    Ok(())
}

/// The alert's identity: Alertmanager's fingerprint, else its labels (a
/// JSON object with sorted keys, so the same labels give the same key).
fn alert_key(alert: &Value) -> String {
    match alert.get("fingerprint").and_then(Value::as_str) {
        Some(f) if !f.is_empty() => f.to_string(),
        _ => alert
            .get("labels")
            .map(Value::to_string)
            .unwrap_or_default(),
    }
}

/// The `limit` annotation, when present and a whole number.
fn alert_limit(alert: &Value) -> Option<u32> {
    alert
        .get("annotations")?
        .get("limit")?
        .as_str()?
        .trim()
        .parse()
        .ok()
}

fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert
        .get("labels")
        .and_then(|l| l.get(name))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn reply(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp
}
