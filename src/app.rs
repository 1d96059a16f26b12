//! The application: the state one server owns, how it is built, and how it
//! runs until stopped.
//!
//! There is no global state: everything a request needs hangs off
//! [`Shared`], owned by one [`App`]. Tests build several apps against one
//! Redis to run a fleet in one process.
//!
//! Start-up order: store (embedded or given) → safety check of its
//! settings → scripts loaded → sales discovered → listener bound. Stop
//! order: stop accepting → drain requests (`--drain-ms`) → stop background
//! tasks (each sale's lease is returned after its commits settle) → stop
//! the embedded redis-server.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::commit::CommitCtx;
use crate::admission::lease::LeaseCtx;
use crate::admission::sales::{Sales, SalesCtx};
use crate::auth::{KeyError, KeyRing};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ServeConfig};
use crate::http::{Health, Shared};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::embedded::{EmbeddedError, RedisProcess};
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};

/// How long start-up waits for Redis.
const STORE_WAIT: Duration = Duration::from_secs(10);
/// Failed restarts of the embedded redis-server in a row (half a second
/// apart) after which the node reports it cannot recover by itself.
const GIVE_UP_AFTER: u32 = 10;
/// How often rate-limiter memory is trimmed.
const RETAIN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("embedded redis-server: {0}")]
    Embedded(#[from] EmbeddedError),
    #[error("redis: {0}")]
    Store(#[from] StoreError),
    #[error(
        "refusing to run on this Redis: {0}. Fix the settings, or pass --allow-unsafe-redis \
         if the store guarantees them another way (e.g. a managed parameter group)"
    )]
    UnsafeStore(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// Secrets given to, or generated for, a server.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub session_keys: String,
    pub ticket_keys: String,
    pub admin_key: String,
    pub backend_key: String,
}

impl Secrets {
    /// The configured secrets; with `--demo`, missing ones are generated.
    pub fn from_config(c: &ServeConfig) -> Result<Secrets, ConfigError> {
        let gen_ring = |kid: &str| KeyRing::generate(kid).1;
        let gen_key = || {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
        };
        let pick = |v: &Option<String>, name: &'static str, make: &dyn Fn() -> String| match v {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ if c.demo => Ok(make()),
            _ => Err(ConfigError::Missing(name)),
        };
        Ok(Secrets {
            session_keys: pick(&c.session_keys, "BIGTAP_SESSION_KEYS", &|| gen_ring("s1"))?,
            ticket_keys: pick(&c.ticket_keys, "BIGTAP_TICKET_KEYS", &|| gen_ring("t1"))?,
            admin_key: pick(&c.admin_key, "BIGTAP_ADMIN_KEY", &gen_key)?,
            backend_key: pick(&c.backend_key, "BIGTAP_BACKEND_KEY", &gen_key)?,
        })
    }
}

/// A built server, ready to run.
pub struct App {
    shared: Arc<Shared>,
    listener: TcpListener,
    addr: SocketAddr,
    secrets: Secrets,
    redis_url: String,
    background: CancellationToken,
    tasks: TaskTracker,
    embedded: Option<RedisProcess>,
}

impl App {
    /// Builds a server from its configuration: starts or connects to Redis,
    /// checks it, loads the sales and binds the listener (port 0 picks one).
    pub async fn build(config: ServeConfig) -> Result<App, AppError> {
        config.validate()?;
        let (embedded, redis_url) = match &config.redis {
            Some(url) => (None, url.clone()),
            None => {
                let p = RedisProcess::start_in(&config.data_dir)?;
                tracing::info!(url = %p.url(), dir = %config.data_dir.display(), "started embedded redis-server (AOF always, noeviction)");
                let url = p.url();
                (Some(p), url)
            }
        };
        let node: Arc<str> = config.node_id().into();
        let metrics = Metrics::new(&node);
        let redis = RedisStore::open(
            &redis_url,
            &config.prefix,
            config.redis_timeout(),
            Some(metrics.clone()),
        )?;
        redis.wait_ready(STORE_WAIT).await?;
        let store: Arc<dyn Store> = Arc::new(redis);
        check_safety(&*store, config.allow_unsafe_redis).await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut app = Self::assemble(config, node, metrics, store, redis_url, clock).await?;
        app.embedded = embedded;
        Ok(app)
    }

    /// Builds a server on a store of the caller's choosing (tests wrap the
    /// Redis store to inject faults; `redis_url` is only reported).
    pub async fn build_with_store(
        config: ServeConfig,
        store: Arc<dyn Store>,
        redis_url: &str,
    ) -> Result<App, AppError> {
        Self::build_with_clock(config, store, redis_url, Arc::new(SystemClock)).await
    }

    /// As [`App::build_with_store`], on a clock of the caller's choosing:
    /// every node-side reading of time (sale window, tokens, leases, the
    /// sold-out proof) goes through it.
    pub async fn build_with_clock(
        config: ServeConfig,
        store: Arc<dyn Store>,
        redis_url: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<App, AppError> {
        config.validate()?;
        let node: Arc<str> = config.node_id().into();
        let metrics = Metrics::new(&node);
        Self::assemble(config, node, metrics, store, redis_url.to_owned(), clock).await
    }

    async fn assemble(
        config: ServeConfig,
        node: Arc<str>,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        redis_url: String,
        clock: Arc<dyn Clock>,
    ) -> Result<App, AppError> {
        let secrets = Secrets::from_config(&config)?;
        let ring = |name: &'static str, spec: &str| {
            KeyRing::parse(spec).map_err(|e: KeyError| ConfigError::Keys(name, e))
        };
        let session_keys = ring("BIGTAP_SESSION_KEYS", &secrets.session_keys)?;
        let ticket_keys = ring("BIGTAP_TICKET_KEYS", &secrets.ticket_keys)?;
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        let lease = Arc::new(LeaseCtx {
            store: store.clone(),
            node: node.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            ttl_ms: config.lease_ttl_ms,
            lease_max: u64::from(config.lease_max),
        });
        let sales = Arc::new(Sales::new(SalesCtx {
            store: store.clone(),
            lease,
            commit: CommitCtx {
                store: store.clone(),
                node: node.clone(),
                metrics: metrics.clone(),
                batch: config.commit_batch,
                concurrency: config.commit_concurrency,
                overlap_after: Duration::from_millis(config.commit_overlap_ms),
            },
            refresh: Duration::from_millis(config.refresh_ms.max(10)),
            sweep: Duration::from_millis(config.sweep_ms.max(10)),
            stop: background.clone(),
            tasks: tasks.clone(),
        }));
        sales.discover().await?;

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| AppError::Bind(config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AppError::Bind(config.listen, e))?;

        let shared = Arc::new(Shared {
            limits: Limits::new(config.user_rate, config.address_rate),
            admin_key: secrets.admin_key.as_bytes().to_vec(),
            backend_key: secrets.backend_key.as_bytes().to_vec(),
            config,
            node,
            store,
            metrics,
            session_keys,
            ticket_keys,
            sales,
            clock,
            inflight: AtomicUsize::new(0),
            health: Health::default(),
        });
        Ok(App {
            shared,
            listener,
            addr,
            secrets,
            redis_url,
            background,
            tasks,
            embedded: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` is cancelled, then drains and cleans up.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let App {
            shared,
            listener,
            background,
            tasks,
            mut embedded,
            ..
        } = self;
        tasks.spawn(shared.sales.clone().discover_loop());
        tasks.spawn(upkeep(shared.clone(), background.clone()));
        let embedded = embedded
            .take()
            .map(|p| Arc::new(parking_lot::Mutex::new(p)));
        if let Some(p) = &embedded {
            tasks.spawn(supervise(p.clone(), shared.clone(), background.clone()));
        }
        crate::http::serve(listener, shared.clone(), shutdown).await;
        background.cancel();
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within 5s");
        }
        // Last: leases were returned through it.
        if let Some(p) = embedded {
            p.lock().kill();
        }
        tracing::info!(node = %shared.node, "stopped");
    }

    /// Runs the server on the current runtime; the handle stops it.
    pub fn spawn(self) -> AppHandle {
        let addr = self.addr;
        let node = self.shared.node.to_string();
        let shared = self.shared.clone();
        let token = CancellationToken::new();
        let join = tokio::spawn(self.run_until_stopped(token.clone()));
        AppHandle {
            addr,
            node,
            token,
            join,
            shared,
        }
    }
}

/// A running server.
pub struct AppHandle {
    pub addr: SocketAddr,
    pub node: String,
    pub shared: Arc<Shared>,
    token: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl AppHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: drain, return leases, wait for the end.
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.join.await;
    }
}

async fn check_safety(store: &dyn Store, allow_unsafe: bool) -> Result<(), AppError> {
    let report = store.safety().await?;
    for w in report.warnings() {
        tracing::warn!("{w}");
    }
    let problems = report.problems();
    if problems.is_empty() {
        return Ok(());
    }
    let text = problems.join("; ");
    if allow_unsafe {
        tracing::warn!("running on an unsafe Redis (--allow-unsafe-redis): {text}");
        Ok(())
    } else {
        Err(AppError::UnsafeStore(text))
    }
}

/// Periodic housekeeping: rate-limiter memory and metric buffers.
async fn upkeep(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RETAIN_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        shared.limits.retain();
        shared.metrics.upkeep();
    }
}

/// Restarts the embedded redis-server if it dies. After
/// [`GIVE_UP_AFTER`] failed restarts in a row the node reports that it
/// cannot recover by itself (`/healthz` 503), and keeps trying.
async fn supervise(
    p: Arc<parking_lot::Mutex<RedisProcess>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
        let p = p.clone();
        let restarted = tokio::task::spawn_blocking(move || {
            let mut p = p.lock();
            if p.is_running() {
                return None;
            }
            tracing::error!("embedded redis-server exited; restarting it with the same data");
            Some(p.restart())
        })
        .await;
        match restarted {
            Ok(None) | Ok(Some(Ok(()))) => failures = 0,
            Ok(Some(Err(e))) => {
                failures += 1;
                tracing::error!(error = %e, failures, "embedded redis-server could not be restarted");
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "embedded redis-server supervisor failed");
            }
        }
        shared.health.set_store_lost(failures >= GIVE_UP_AFTER);
    }
}
