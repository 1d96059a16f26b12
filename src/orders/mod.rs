//! The order-stream consumer: `bigtap orders` (DESIGN §1 Queue, §2 "No lost
//! winner", §5, §6).
//!
//! The admission script appends every winner to its sale's stream
//! `P:{S}:orders`. This module delivers each entry to the order backend at
//! least once, with the ticket as idempotency key, and acknowledges an
//! entry only after the backend answered 2xx, so "acknowledged" always
//! implies "delivered". Entries that keep failing move, atomically with
//! their acknowledgement, to `P:{S}:orders:dead`, from where they can be
//! replayed.
//!
//! Every Redis call goes through the store seam ([`crate::store`]): the
//! consumer, like every other bigtap process, runs unchanged on a single
//! Redis and on a Redis Cluster, plain or TLS.
//!
//! - [`stream`]   the [`Order`] an entry holds, and key names (from the store).
//! - [`sink`]     the [`Sink`] trait and [`HttpSink`].
//! - [`config`]   [`ConsumerConfig`] and the retry [`Backoff`].
//! - [`consumer`] [`Consumer`]: reading, claiming, delivering, acknowledging.
//! - [`dead`]     listing and replaying dead letters.
//! - [`metrics`]  the consumer's own Prometheus recorder and `/metrics`.
//! - [`cli`]      the `bigtap orders` flags.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead;
pub mod metrics;
pub mod sink;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use cli::{DeadCommand, OrdersArgs, OrdersCommand};
pub use config::{Backoff, ConsumerConfig};
pub use consumer::Consumer;
pub use dead::DeadLetter;
pub use metrics::OrdersMetrics;
pub use sink::{HttpSink, Sink, SinkError, SinkUrlError};
pub use stream::{Keys, Order, GROUP};

/// Why `bigtap orders` could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("invalid settings: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("invalid sink")]
    SinkUrl(#[from] SinkUrlError),
    #[error("could not listen for metrics on {0}")]
    MetricsListen(SocketAddr, #[source] std::io::Error),
    #[error("sale {sale} has no dead letter {id}")]
    NoDeadLetter { sale: crate::id::SaleId, id: String },
    #[error("could not write output")]
    Output(#[source] std::io::Error),
}

/// `bigtap orders [dead ...]`: consumes until `shutdown`, or runs a `dead`
/// subcommand and returns.
pub async fn run(args: OrdersArgs, shutdown: CancellationToken) -> Result<(), OrdersError> {
    if let Some(OrdersCommand::Dead(cmd)) = &args.command {
        let mut out = std::io::stdout().lock();
        return args.run_dead(cmd, &mut out).await;
    }
    let (cfg, sink) = args.consumer_config()?;
    if let Some(addr) = cfg.metrics_listen {
        tracing::info!(%addr, "serving order consumer metrics");
    }
    Consumer::connect(cfg, Arc::new(sink))
        .await?
        .run(shutdown)
        .await
}
