//! Metric names, descriptions and the Prometheus exporter.
//!
//! Each server owns its own [`PrometheusRecorder`] (no global recorder), so
//! several nodes in one test process keep separate figures. Handles are
//! registered once and kept in plain structs: recording a request is an
//! atomic add on a handle, with no label lookup or allocation on the hot
//! path. Labels name routes, outcomes, scripts and sales, never users.

use std::sync::{Arc, OnceLock};

use crate::id::WarehouseId;
use crate::sale::WarehouseAccount;
use crate::store::scripts::Op;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Latency buckets, 50 µs to 1 s: the rejected path lives in the first few,
/// commits in the middle, timeouts at the end.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0,
];

pub const REQUESTS: &str = "bigtap_http_requests_total";
pub const REQUEST_DURATION: &str = "bigtap_http_request_duration_seconds";
pub const SCRIPT_DURATION: &str = "bigtap_redis_script_duration_seconds";
pub const COMMIT_BATCH: &str = "bigtap_commit_batch_size";

static METADATA: Metadata<'static> = Metadata::new("bigtap", metrics::Level::INFO, None);

/// How many request-counter slots one route has (see [`Metrics::request`]).
pub const ANSWER_SLOTS: usize = 32;
/// The route label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Take,
    SaleStatus,
    Admin,
    Backend,
    Probe,
    Metrics,
    Unknown,
    Mine,
}

impl Route {
    /// Every route, in the order of the request tables.
    pub const ALL: [Route; 8] = [
        Route::Take,
        Route::SaleStatus,
        Route::Admin,
        Route::Backend,
        Route::Probe,
        Route::Metrics,
        Route::Unknown,
        Route::Mine,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Take => "take",
            Route::SaleStatus => "sale_status",
            Route::Admin => "admin",
            Route::Backend => "backend",
            Route::Probe => "probe",
            Route::Metrics => "metrics",
            Route::Unknown => "unknown",
            Route::Mine => "mine",
        }
    }

    /// The route's row in the request tables (its place in [`Route::ALL`]).
    fn row(self) -> usize {
        self as usize
    }
}

/// Lease calls to Redis, by result (`bigtap_leases_total`).
pub struct LeaseCounters {
    pub granted: Counter,
    pub empty: Counter,
    pub error: Counter,
}

/// Commit verdicts of one sale, by result (`bigtap_commits_total`).
#[derive(Clone)]
pub struct CommitCounters {
    pub won: Counter,
    pub replay: Counter,
    pub not_eligible: Counter,
    pub fenced: Counter,
    pub no_units: Counter,
    /// Refused by the script: the sale closed, ended or is unknown.
    pub closed: Counter,
    pub error: Counter,
}

/// Store operations, in label order (scripts plus plain commands).
pub const STORE_OPS: [&str; 18] = [
    "lease",
    "admit",
    "renew",
    "return",
    "reclaim",
    "confirm",
    "release",
    "sweep",
    "put_sale",
    "add_stock",
    "add_eligible",
    "close",
    "account",
    "command",
    "read_orders",
    "ping",
    "transfer",
    "move",
];

/// The registry of one server.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    requests: Box<[OnceLock<Counter>]>,
    /// route x answered_by (memory, store)
    latency: Vec<[Histogram; 2]>,
    pub shed: Counter,
    pub inflight: Gauge,
    pub open_connections: Gauge,
    pub leases: LeaseCounters,
    pub lease_units: Counter,
    pub commit_batch: Histogram,
    store_latency: Vec<Histogram>,
    store_errors: Vec<Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Gauges of one sale, as last read from Redis plus this node's lease.
#[derive(Clone)]
pub struct SaleGauges {
    pub total: Gauge,
    pub available: Gauge,
    pub leased: Gauge,
    pub pending: Gauge,
    pub confirmed: Gauge,
    pub local_units: Gauge,
    pub balanced: Gauge,
    pub ends_at: Gauge,
    pub open: Gauge,
    /// Commit verdicts of this sale: per sale, so a dashboard can show one
    /// sale's winners per second (sales are few; users never become labels).
    pub commits: CommitCounters,
}

impl Metrics {
    pub fn new(node: &str) -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS)
            })
            .map(|b| b.build_recorder())
            // Both bucket lists are non-empty constants, so building cannot
            // fail; fall back to defaults rather than panic if that changes.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        describe(&recorder);

        let c =
            |name: &'static str, labels: &[(&'static str, &str)]| counter(&recorder, name, labels);
        let g =
            |name: &'static str, labels: &[(&'static str, &str)]| gauge(&recorder, name, labels);
        let h = |name: &'static str, labels: &[(&'static str, &str)]| {
            histogram(&recorder, name, labels)
        };

        let latency = Route::ALL
            .iter()
            .map(|r| {
                [
                    h(
                        REQUEST_DURATION,
                        &[("route", r.label()), ("answered_by", "memory")],
                    ),
                    h(
                        REQUEST_DURATION,
                        &[("route", r.label()), ("answered_by", "store")],
                    ),
                ]
            })
            .collect();
        let info = g(
            "bigtap_node_info",
            &[("node", node), ("version", env!("CARGO_PKG_VERSION"))],
        );
        info.set(1.0);
        let m = Metrics {
            requests: (0..Route::ALL.len() * ANSWER_SLOTS)
                .map(|_| OnceLock::new())
                .collect(),
            latency,
            shed: c("bigtap_http_shed_total", &[]),
            inflight: g("bigtap_http_inflight_requests", &[]),
            open_connections: g("bigtap_http_open_connections", &[]),
            leases: LeaseCounters {
                granted: c("bigtap_leases_total", &[("result", "granted")]),
                empty: c("bigtap_leases_total", &[("result", "empty")]),
                error: c("bigtap_leases_total", &[("result", "error")]),
            },
            lease_units: c("bigtap_lease_units_total", &[]),
            commit_batch: h(COMMIT_BATCH, &[]),
            store_latency: STORE_OPS
                .iter()
                .map(|s| h(SCRIPT_DURATION, &[("script", s)]))
                .collect(),
            store_errors: STORE_OPS
                .iter()
                .map(|s| c("bigtap_redis_errors_total", &[("op", s)]))
                .collect(),
            recorder,
            handle,
        };
        Arc::new(m)
    }

    /// Counts one answered request. `slot` identifies the (status, outcome)
    /// pair within the route; the counter is registered on first use only,
    /// so the exposition lists the series that happened.
    pub fn request(&self, route: Route, slot: usize, status: &'static str, outcome: &'static str) {
        let i = route.row() * ANSWER_SLOTS + slot;
        if let Some(cell) = self.requests.get(i) {
            cell.get_or_init(|| {
                counter(
                    &self.recorder,
                    REQUESTS,
                    &[
                        ("route", route.label()),
                        ("status", status),
                        ("outcome", outcome),
                    ],
                )
            })
            .increment(1);
        }
    }

    pub fn latency(&self, route: Route, from_memory: bool, seconds: f64) {
        if let Some(pair) = self.latency.get(route.row()) {
            pair[usize::from(!from_memory)].record(seconds);
        }
    }

    /// Times one store call of `op`, and counts it when it failed.
    pub fn store_call(&self, op: Op, seconds: f64, failed: bool) {
        // `Op` numbers its variants in `STORE_OPS` order, the order these
        // tables were built in.
        let i = op as usize;
        if let Some(h) = self.store_latency.get(i) {
            h.record(seconds);
        }
        if failed {
            if let Some(c) = self.store_errors.get(i) {
                c.increment(1);
            }
        }
    }

    pub fn sale_gauges(&self, sale: &str) -> SaleGauges {
        let g = |name: &'static str| gauge(&self.recorder, name, &[("sale", sale)]);
        SaleGauges {
            total: g("bigtap_stock_total"),
            available: g("bigtap_stock_available"),
            leased: g("bigtap_stock_leased"),
            pending: g("bigtap_stock_pending"),
            confirmed: g("bigtap_stock_confirmed"),
            local_units: g("bigtap_stock_local_units"),
            balanced: g("bigtap_sale_balanced"),
            ends_at: g("bigtap_sale_ends_at_seconds"),
            open: g("bigtap_sale_open"),
            commits: {
                let c = |r: &str| {
                    counter(
                        &self.recorder,
                        "bigtap_commits_total",
                        &[("result", r), ("sale", sale)],
                    )
                };
                CommitCounters {
                    won: c("won"),
                    replay: c("replay"),
                    not_eligible: c("not_eligible"),
                    fenced: c("fenced"),
                    no_units: c("no_units"),
                    closed: c("closed"),
                    error: c("error"),
                }
            },
        }
    }

    /// `wins` committed from `warehouse` (DESIGN §7); `cross` when it was
    /// not the buyers' first choice. Warehouses are few and named by the
    /// admin, so they may be labels.
    pub fn warehouse_wins(
        &self,
        sale: &crate::id::SaleId,
        warehouse: WarehouseId,
        cross: bool,
        wins: u64,
    ) {
        let labels = [("sale", sale.as_str()), ("warehouse", warehouse.as_str())];
        counter(&self.recorder, "bigtap_warehouse_wins_total", &labels).increment(wins);
        if cross {
            counter(&self.recorder, "bigtap_warehouse_cross_wins_total", &labels).increment(wins);
        }
    }

    /// Per-warehouse stock gauges from one accounting read.
    pub fn warehouse_stock(&self, sale: &crate::id::SaleId, accounts: &[WarehouseAccount]) {
        for a in accounts {
            for (kind, n) in [
                ("total", a.total),
                ("unsold", a.unsold),
                ("pending", a.pending),
                ("confirmed", a.confirmed),
            ] {
                let labels = [
                    ("sale", sale.as_str()),
                    ("warehouse", a.warehouse.as_str()),
                    ("kind", kind),
                ];
                gauge(&self.recorder, "bigtap_warehouse_stock", &labels).set(n as f64);
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buffers; run periodically so they stay small.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

fn counter(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
    r.register_counter(&key(name, labels), &METADATA)
}

fn gauge(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
    r.register_gauge(&key(name, labels), &METADATA)
}

fn histogram(
    r: &PrometheusRecorder,
    name: &'static str,
    labels: &[(&'static str, &str)],
) -> Histogram {
    r.register_histogram(&key(name, labels), &METADATA)
}

fn describe(r: &PrometheusRecorder) {
    let d = |name: &'static str, text: &'static str| -> (KeyName, SharedString) {
        (KeyName::from_const_str(name), SharedString::const_str(text))
    };
    for (name, text) in [
        d(
            REQUESTS,
            "HTTP requests answered, by route, status and outcome.",
        ),
        d(
            "bigtap_http_shed_total",
            "Requests answered 503 at once because the node was past its concurrency limit.",
        ),
        d("bigtap_leases_total", "Lease requests to Redis, by result."),
        d(
            "bigtap_lease_units_total",
            "Units granted to this node by leases.",
        ),
        d(
            "bigtap_commits_total",
            "Buyers judged by the admit script, by result.",
        ),
        d(
            "bigtap_warehouse_wins_total",
            "Wins committed, by the warehouse they ship from.",
        ),
        d(
            "bigtap_warehouse_cross_wins_total",
            "Wins shipped from a warehouse that was not the buyer's first choice.",
        ),
        d(
            "bigtap_redis_errors_total",
            "Redis calls that failed or timed out, by operation.",
        ),
    ] {
        r.describe_counter(name, None, text);
    }
    for (name, text) in [
        d("bigtap_http_inflight_requests", "Requests in progress."),
        d("bigtap_http_open_connections", "Open client connections."),
        d("bigtap_stock_total", "Units of the sale in all (Redis)."),
        d(
            "bigtap_stock_available",
            "Units in the sale's pool (Redis).",
        ),
        d(
            "bigtap_stock_leased",
            "Units leased to nodes and not yet sold (Redis).",
        ),
        d(
            "bigtap_stock_pending",
            "Tickets issued and not yet confirmed or released (Redis).",
        ),
        d(
            "bigtap_stock_confirmed",
            "Tickets confirmed by the order backend (Redis).",
        ),
        d(
            "bigtap_stock_local_units",
            "Units of this node's lease not yet taken.",
        ),
        d(
            "bigtap_sale_balanced",
            "1 when the sale's accounting invariant holds.",
        ),
        d(
            "bigtap_sale_ends_at_seconds",
            "End of the sale window, Unix seconds.",
        ),
        d("bigtap_sale_open", "1 while the sale admits buyers."),
        d(
            "bigtap_warehouse_stock",
            "Units of one warehouse by kind: total, unsold, pending, confirmed (Redis).",
        ),
        d(
            "bigtap_node_info",
            "Always 1; labels name the node and version.",
        ),
    ] {
        r.describe_gauge(name, None, text);
    }
    for (name, text) in [
        d(
            REQUEST_DURATION,
            "Time to answer a request; answered_by=memory never reached Redis.",
        ),
        d(
            SCRIPT_DURATION,
            "Round trip of one Redis script or command, by script.",
        ),
        d(COMMIT_BATCH, "Buyers committed by one admit call."),
    ] {
        r.describe_histogram(name, None, text);
    }
}
