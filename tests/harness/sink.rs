//! A stand-in order backend: records every ticket delivered to it (by its
//! `Idempotency-Key`, or the body's `ticket`) and acknowledges with 200.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// Deliveries by ticket id.
pub type Deliveries = Arc<Mutex<HashMap<String, u32>>>;

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Records every delivery and acknowledges it.
    Record,
    /// Acknowledges every delivery but forgets every nth one: a delivery
    /// path that loses orders (negative control).
    LoseEvery(u32),
    /// Answers every request 410 `sold_out`: a front tier that never sells
    /// (negative control; it stands in for the nodes).
    SoldOutFront,
}

pub struct Sink {
    pub port: u16,
    pub deliveries: Deliveries,
    accept: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> std::io::Result<Sink> {
        Self::start_as(Behaviour::Record).await
    }

    pub async fn start_as(behaviour: Behaviour) -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let deliveries: Deliveries = Arc::default();
        let d = deliveries.clone();
        let seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let d = d.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (d, seen) = (d.clone(), seen.clone());
                        async move {
                            let r = match behaviour {
                                Behaviour::Record => record(&d, req).await,
                                Behaviour::LoseEvery(n) => {
                                    let k = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    if k % n.max(1) == 0 {
                                        Response::new(Full::new(Bytes::from_static(b"{}")))
                                    } else {
                                        record(&d, req).await
                                    }
                                }
                                Behaviour::SoldOutFront => {
                                    let mut r = Response::new(Full::new(Bytes::from_static(
                                        b"{\"outcome\":\"sold_out\"}",
                                    )));
                                    *r.status_mut() = hyper::StatusCode::GONE;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Sink {
            port,
            deliveries,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/orders", self.port)
    }

    /// The stand-in's root, when it plays a front node.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Distinct tickets delivered so far.
    pub fn tickets(&self) -> std::collections::HashSet<String> {
        self.deliveries.lock().keys().cloned().collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn record(d: &Deliveries, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let ticket = key.or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()?
            .get("ticket")?
            .as_str()
            .map(str::to_owned)
    });
    if let Some(t) = ticket {
        *d.lock().entry(t).or_default() += 1;
    }
    Response::new(Full::new(Bytes::from_static(b"{}")))
}
