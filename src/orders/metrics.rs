//! The consumer's metrics and their `/metrics` endpoint.
//!
//! Each consumer owns its recorder rather than installing a global one, so
//! several consumers (and servers) can live in one process, as they do in
//! the tests. Handles are registered once and kept here; the hot path only
//! touches atomics. Labels carry sale ids and outcomes, never user ids.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::id::SaleId;

pub const DELIVERIES: &str = "bigtap_orders_deliveries_total";
pub const DELIVERY_DURATION: &str = "bigtap_orders_delivery_duration_seconds";
pub const PENDING: &str = "bigtap_orders_pending";
pub const LAG: &str = "bigtap_orders_lag";
pub const DEAD_LETTERS: &str = "bigtap_orders_dead_letters";

/// Histogram buckets of one sink call: from a same-host backend (0.5 ms) to
/// the longest sensible timeout (5 s).
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How long open scrapes may take to finish once the consumer stops.
const SCRAPE_DRAIN: Duration = Duration::from_secs(2);

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One sale's gauges, refreshed by the consumer's stats task.
#[derive(Clone)]
pub struct SaleGauges {
    pub pending: Gauge,
    pub lag: Gauge,
    pub dead_letters: Gauge,
}

/// Handles of every metric the consumer writes.
pub struct OrdersMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub ok: Counter,
    pub retry: Counter,
    pub dead: Counter,
    pub duration: Histogram,
    sales: Mutex<HashMap<SaleId, SaleGauges>>,
}

impl OrdersMetrics {
    pub fn new() -> Arc<Self> {
        // `set_buckets` only fails on an empty slice.
        let recorder = PrometheusBuilder::new()
            .set_buckets(DURATION_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        recorder.describe_counter(
            DELIVERIES.into(),
            None,
            "Delivery attempts to the order sink by outcome: ok (acknowledged), retry (failed, will retry), dead (dead-lettered).".into(),
        );
        recorder.describe_histogram(
            DELIVERY_DURATION.into(),
            Some(Unit::Seconds),
            "Duration of one sink call.".into(),
        );
        recorder.describe_gauge(
            PENDING.into(),
            None,
            "Entries read by a consumer of group orders and not yet acknowledged.".into(),
        );
        recorder.describe_gauge(
            LAG.into(),
            None,
            "Entries of the order stream not yet read by group orders.".into(),
        );
        recorder.describe_gauge(
            DEAD_LETTERS.into(),
            None,
            "Entries in the sale's dead-letter stream.".into(),
        );
        let outcome = |o: &'static str| {
            recorder.register_counter(
                &Key::from_parts(DELIVERIES, vec![Label::new("outcome", o)]),
                &METADATA,
            )
        };
        let (ok, retry, dead) = (outcome("ok"), outcome("retry"), outcome("dead"));
        let duration = recorder.register_histogram(&Key::from_name(DELIVERY_DURATION), &METADATA);
        Arc::new(OrdersMetrics {
            handle: recorder.handle(),
            recorder,
            ok,
            retry,
            dead,
            duration,
            sales: Mutex::new(HashMap::new()),
        })
    }

    /// The gauges of `sale`, registered on first use.
    pub fn sale(&self, sale: &SaleId) -> SaleGauges {
        let mut map = self.sales.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(*sale)
            .or_insert_with(|| {
                let g = |name: &'static str| {
                    self.recorder.register_gauge(
                        &Key::from_parts(name, vec![Label::new("sale", sale.to_string())]),
                        &METADATA,
                    )
                };
                SaleGauges {
                    pending: g(PENDING),
                    lag: g(LAG),
                    dead_letters: g(DEAD_LETTERS),
                }
            })
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buckets; call it periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<OrdersMetrics>,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let m = metrics.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let m = m.clone();
            async move { Ok::<_, Infallible>(answer(&req, &m)) }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(SCRAPE_DRAIN, graceful.shutdown()).await;
}

fn answer(req: &Request<Incoming>, m: &OrdersMetrics) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, m.render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, String::new()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Binds the metrics listener (at startup, so a busy port fails loudly).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_contract_names() {
        let m = OrdersMetrics::new();
        m.ok.increment(2);
        m.duration.record(0.001);
        m.sale(&SaleId::parse("s1").unwrap()).pending.set(3.0);
        let text = m.render();
        assert!(
            text.contains("bigtap_orders_deliveries_total{outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bigtap_orders_pending{sale=\"s1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("bigtap_orders_delivery_duration_seconds_bucket{le=\"0.0005\"}"),
            "{text}"
        );
    }
}
