//! The one home of the integration tests' support code. Each test binary
//! declares `mod support;` and takes what it needs; a helper unused in one
//! binary is not dead code in another, hence `allow(dead_code)`.
//!
//! - this file: a real redis-server per test ([`redis`], random loopback
//!   port, killed on drop), a connection to it ([`redis_con`]), a store
//!   that filled up ([`fill_memory`]), the settings of an open sale
//!   ([`open_sale_spec`]),
//!   [`eventually`] (the one way a test waits for a condition) and
//!   [`metric`] (one series read off a Prometheus page).
//! - [`node`]:     a bigtap node in process ([`spawn_node`], [`node`]) and
//!   typed HTTP requests to it ([`Node::take`], [`Node::admin`], …).
//! - [`tokens`]:   the test keys and session tokens.
//! - [`cli`]:      the `bigtap` binary run as a command.
//! - [`procs`]:    `bigtap serve` and `bigtap orders` as child processes
//!   (kill -9, SIGSTOP, SIGTERM).
//! - [`proxy`]:    a TCP proxy that delays, blackholes or resets the
//!   connections between a node and Redis.
//! - [`cluster`]:  a three-shard Redis Cluster (plain or behind TLS), and a
//!   proxy that loses one answer.
//! - [`tls`]:      a CA of the test's own and a certificate it signed.
//! - [`consumer`]: the order consumer's fixtures: streams, a recording sink,
//!   [`consumer::spawn_consumer`].
//! - [`store`]:    [`store::Forward`], the store double that forwards to
//!   Redis except where a test injects faults.
#![allow(dead_code)]

use std::time::Duration;

use bigtap::store::embedded::RedisProcess;

pub mod cli;
pub mod cluster;
pub mod consumer;
pub mod node;
pub mod procs;
pub mod proxy;
pub mod store;
pub mod tls;
pub mod tokens;

// Not every binary uses each of these.
#[allow(unused_imports)]
pub use cli::*;
#[allow(unused_imports)]
pub use node::*;
#[allow(unused_imports)]
pub use tokens::*;

/// A redis-server of the test's own on a random loopback port, killed when
/// dropped.
/// The settings of a sale of `stock` units, open from a second ago for an
/// hour, whose tickets live ten minutes (for tests that create sales
/// through the store itself).
pub fn open_sale_spec(stock: u64) -> bigtap::sale::SaleSpec {
    let now = tokens::now_ms();
    bigtap::sale::SaleSpec {
        stock: Some(stock),
        starts_at_ms: now - 1000,
        ends_at_ms: now + 3_600_000,
        ticket_ttl_ms: 600_000,
        eligibility: bigtap::sale::Eligibility::Open,
    }
}

pub fn redis() -> RedisProcess {
    RedisProcess::start_temporary().expect("redis-server must be installed to run the tests")
}

/// A connection to the Redis at `url`, for reading or doctoring what bigtap
/// wrote.
pub async fn redis_con(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Caps the memory of the Redis behind `con` at half of what it uses now:
/// under `noeviction` it then refuses every command that may take memory
/// (`-OOM`), as a store that filled up does, until [`set_maxmemory`] lifts
/// the cap (0: none).
pub async fn fill_memory(con: &mut redis::aio::MultiplexedConnection) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .expect("INFO memory");
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("INFO memory has used_memory");
    set_maxmemory(con, used / 2).await;
}

/// `CONFIG SET maxmemory bytes`.
pub async fn set_maxmemory(con: &mut redis::aio::MultiplexedConnection, bytes: u64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query_async(con)
        .await
        .expect("CONFIG SET maxmemory");
}

/// The value of one series (its name and labels as exported) on a
/// Prometheus text page; 0 when the page lacks it.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
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
