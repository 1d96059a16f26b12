//! `bigtap orders`: flags and environment (DESIGN §6), turned into a
//! [`ConsumerConfig`] and an [`HttpSink`], and the `dead` subcommands.
//!
//! Every flag also reads the environment variable shown in `--help`; a flag
//! wins over its variable. Variables specific to this command are named
//! `BIGTAP_ORDERS_*` so one environment file can serve every command.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::config::{unique_consumer_name, Backoff, ConsumerConfig};
use super::dead;
use super::sink::HttpSink;
use super::OrdersError;
use crate::id::SaleId;
use crate::store::redis::RedisStore;

/// Consume the order streams and deliver every winner to the order backend.
#[derive(Debug, Clone, clap::Args)]
pub struct OrdersArgs {
    /// Redis URL: redis://, rediss:// (TLS), redis+cluster:// or
    /// rediss+cluster:// (a seed node of a Redis Cluster). A private CA for
    /// TLS: BIGTAP_REDIS_CA_FILE=ca.pem.
    #[arg(long, env = "BIGTAP_REDIS_URL", global = true, hide_env_values = true)]
    pub redis: Option<String>,

    /// Prefix of every Redis key.
    #[arg(long, env = "BIGTAP_PREFIX", default_value = "bigtap", global = true)]
    pub prefix: String,

    /// The order backend's endpoint: each winner is POSTed here (http:// or https://).
    #[arg(long, env = "BIGTAP_SINK_URL", hide_env_values = true)]
    pub sink: Option<String>,

    /// PEM file of CA certificates trusted for an https:// sink, besides the
    /// system's and Mozilla's roots (for a backend behind a private CA).
    #[arg(long, env = "BIGTAP_SINK_CA_FILE")]
    pub sink_ca_file: Option<std::path::PathBuf>,

    /// Consume only this sale (repeatable); default: every sale, including
    /// sales created while running.
    #[arg(long = "sale", env = "BIGTAP_ORDERS_SALES", value_delimiter = ',')]
    pub sales: Vec<SaleId>,

    /// This consumer's name in group `orders`; default hostname-pid-random.
    /// Must differ between consumers running at the same time.
    #[arg(long, env = "BIGTAP_ORDERS_CONSUMER")]
    pub consumer: Option<String>,

    /// Deliveries in flight at once (sink calls plus entries waiting to retry).
    #[arg(long, env = "BIGTAP_ORDERS_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Most entries fetched by one read.
    #[arg(long, env = "BIGTAP_ORDERS_BATCH", default_value_t = 256)]
    pub batch: usize,

    /// First retry waits about this long (then doubling, with jitter).
    #[arg(long, env = "BIGTAP_ORDERS_RETRY_BASE_MS", default_value_t = 100)]
    pub retry_base_ms: u64,

    /// Longest wait between retries; must be below --claim-idle-ms.
    #[arg(long, env = "BIGTAP_ORDERS_RETRY_MAX_MS", default_value_t = 10_000)]
    pub retry_max_ms: u64,

    /// Timeout of one sink call, from connect to the end of the answer.
    #[arg(long, env = "BIGTAP_ORDERS_SINK_TIMEOUT_MS", default_value_t = 5_000)]
    pub sink_timeout_ms: u64,

    /// Entries pending this long under another consumer are taken over.
    #[arg(long, env = "BIGTAP_ORDERS_CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub claim_idle_ms: u64,

    /// Failed attempts that reached the sink before an entry is dead-lettered.
    #[arg(long, env = "BIGTAP_ORDERS_MAX_DELIVERIES", default_value_t = 10)]
    pub max_deliveries: u32,

    /// At shutdown, how long in-flight deliveries may take to finish.
    #[arg(long, env = "BIGTAP_ORDERS_DRAIN_MS", default_value_t = 10_000)]
    pub drain_ms: u64,

    /// How often the set of sales is re-read.
    #[arg(long, env = "BIGTAP_ORDERS_DISCOVER_MS", default_value_t = 2_000)]
    pub discover_ms: u64,

    /// Longest pause between reads of a sale with no new winners (each sale
    /// is read on its own; a quiet sale's pause doubles from 2 ms to this).
    #[arg(long, env = "BIGTAP_ORDERS_POLL_MAX_MS", default_value_t = 250)]
    pub poll_max_ms: u64,

    /// Trim each order stream below the oldest entry any consumer group still
    /// needs (XTRIM MINID). Off by default: the stream is the sale's record.
    #[arg(long, env = "BIGTAP_ORDERS_TRIM")]
    pub trim: bool,

    /// Where to serve GET /metrics.
    #[arg(
        long,
        env = "BIGTAP_ORDERS_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: SocketAddr,

    #[command(subcommand)]
    pub command: Option<OrdersCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OrdersCommand {
    /// Inspect or replay dead letters.
    #[command(subcommand)]
    Dead(DeadCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadCommand {
    /// Print a sale's dead letters, one JSON object per line.
    List {
        #[arg(long, env = "BIGTAP_ORDERS_DEAD_SALE")]
        sale: SaleId,
    },
    /// Move dead letters back into the order stream (all, or one by --id).
    Replay {
        #[arg(long, env = "BIGTAP_ORDERS_DEAD_SALE")]
        sale: SaleId,
        /// A dead letter's id, as printed by `list`.
        #[arg(long)]
        id: Option<String>,
    },
}

impl OrdersArgs {
    fn redis_url(&self) -> Result<&str, OrdersError> {
        self.redis
            .as_deref()
            .ok_or_else(|| OrdersError::Config("--redis (BIGTAP_REDIS_URL) is required".into()))
    }

    /// The consumer settings and sink these flags describe.
    pub fn consumer_config(&self) -> Result<(ConsumerConfig, HttpSink), OrdersError> {
        let sink_url = self
            .sink
            .as_deref()
            .ok_or_else(|| OrdersError::Config("--sink (BIGTAP_SINK_URL) is required".into()))?;
        let sink = HttpSink::with_ca_file(
            sink_url,
            Duration::from_millis(self.sink_timeout_ms),
            self.sink_ca_file.as_deref(),
        )?;
        let mut cfg = ConsumerConfig::new(self.redis_url()?);
        cfg.prefix = self.prefix.clone();
        cfg.sales = (!self.sales.is_empty()).then(|| self.sales.clone());
        cfg.consumer = self.consumer.clone().unwrap_or_else(unique_consumer_name);
        cfg.concurrency = self.concurrency;
        cfg.batch = self.batch;
        cfg.retry = Backoff {
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms),
        };
        cfg.claim_idle = Duration::from_millis(self.claim_idle_ms);
        cfg.max_deliveries = self.max_deliveries;
        cfg.drain = Duration::from_millis(self.drain_ms);
        cfg.discover_interval = Duration::from_millis(self.discover_ms.max(1));
        cfg.poll_max = Duration::from_millis(self.poll_max_ms.max(1));
        cfg.trim = self.trim;
        cfg.metrics_listen = Some(self.metrics_listen);
        cfg.validate().map_err(OrdersError::Config)?;
        // An owner is silent for at most one sink call plus one backoff
        // sleep; longer than claim-idle and others would take over entries
        // it is still working on.
        if self.sink_timeout_ms.saturating_add(self.retry_max_ms) >= self.claim_idle_ms {
            return Err(OrdersError::Config(
                "--sink-timeout-ms plus --retry-max-ms must be below --claim-idle-ms".into(),
            ));
        }
        Ok((cfg, sink))
    }

    /// Runs a `dead` subcommand, printing to `out`.
    pub async fn run_dead(
        &self,
        cmd: &DeadCommand,
        out: &mut impl Write,
    ) -> Result<(), OrdersError> {
        let store = RedisStore::open(
            self.redis_url()?,
            &self.prefix,
            Duration::from_secs(5),
            None,
        )?;
        match cmd {
            DeadCommand::List { sale } => {
                for d in dead::list(&store, sale).await? {
                    let line = serde_json::json!({ "id": d.id, "fields": d.fields });
                    writeln!(out, "{line}").map_err(OrdersError::Output)?;
                }
            }
            DeadCommand::Replay { sale, id } => {
                let done = dead::replay(&store, sale, id.as_deref()).await?;
                if let (Some(id), true) = (id, done.is_empty()) {
                    return Err(OrdersError::NoDeadLetter {
                        sale: *sale,
                        id: id.clone(),
                    });
                }
                for (dead_id, new_id) in &done {
                    writeln!(out, "replayed {dead_id} as {new_id}").map_err(OrdersError::Output)?;
                }
                writeln!(out, "replayed {} dead letter(s) of sale {sale}", done.len())
                    .map_err(OrdersError::Output)?;
            }
        }
        Ok(())
    }
}
