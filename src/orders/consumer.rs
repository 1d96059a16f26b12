//! The order-stream consumer: reads winners from every sale's stream in
//! consumer group `orders`, delivers each to the [`Sink`], and acknowledges
//! it only after the sink said 2xx. Every Redis call goes through the store
//! seam ([`RedisStore`]) and names one sale, hence one hash slot: the same
//! consumer runs on a single Redis and on a Redis Cluster.
//!
//! Tasks of one consumer:
//!
//! - **discovery**: re-reads the set of sales, creates the group of each new
//!   one and starts its reader; stops the readers of sales that are gone.
//! - **readers**: one per sale. Each reads its own stream without blocking
//!   (`XREADGROUP ... >`): again at once while it finds entries, and after a
//!   pause that doubles up to `poll_max` while it finds none. At most
//!   [`MAX_CONCURRENT_READS`] reads are in flight at once, so 500 idle sales
//!   cost about `500 / poll_max` cheap reads per second and a single busy
//!   sale reads back to back.
//! - **claimer**: `XAUTOCLAIM`s entries left pending longer than
//!   `claim_idle` by consumers that died.
//! - **deliveries**: one task per entry: attempt; on a 2xx hand the entry to
//!   the acknowledger; otherwise record the failure (`orders_fail.lua`), back
//!   off and try again, until the entry is delivered, dead-lettered, or
//!   taken over by another consumer.
//! - **acknowledger**: acknowledges delivered entries in batches (whatever
//!   finished during the previous round trip), one script call per sale
//!   (in parallel) instead of one per entry.
//! - **stats**: refreshes the per-sale gauges, runs metric upkeep, and trims
//!   streams when asked to.
//!
//! Invariants:
//!
//! - An entry is acknowledged only after a 2xx from the sink, or together
//!   with its move to the dead-letter stream. So whatever happens to the
//!   process, no entry is acknowledged undelivered; the price is that a
//!   consumer dying between the 2xx and the XACK causes one repeat, which
//!   the backend dedupes by the idempotency key.
//! - Every delivery holds one of `concurrency` permits, and the reader and
//!   claimer fetch only about as many entries as there are free permits, so
//!   a slow or dead sink makes a consumer read less, not pile entries up.
//! - A failed entry keeps its owner's claim fresh (the fail script resets its
//!   idle time), and one sink call plus the backoff ceiling stay below
//!   `claim_idle` (checked at startup), so live consumers do not steal each
//!   other's entries; an owner that finds its entry claimed by someone else
//!   stops working on it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::ConsumerConfig;
use super::metrics::{self, OrdersMetrics};
use super::sink::Sink;
use super::OrdersError;
use crate::id::SaleId;
use crate::store::redis::RedisStore;
use crate::store::{FailMode, FailOutcome, Failure, Order, StoreError, StreamEntry};

/// Every Redis call must answer within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads in flight at once over all sales: enough to keep many busy sales
/// fed, few enough that 500 idle sales polling at once queue briefly
/// instead of flooding Redis.
pub const MAX_CONCURRENT_READS: usize = 16;
/// First pause of a reader that found nothing; it doubles up to `poll_max`.
const POLL_MIN: Duration = Duration::from_millis(2);
/// Entries asked for by a read of a sale that was idle: its first read
/// after a quiet spell; the next one asks for a full batch.
const IDLE_READ: usize = 8;
/// Backoff of the reader, claimer and acknowledgements while Redis fails.
const REDIS_RETRY_BASE: Duration = Duration::from_millis(50);
const REDIS_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long background tasks get to stop after the deliveries drained.
const TASK_STOP: Duration = Duration::from_secs(2);
/// Most acknowledgements sent in one round trip.
const ACK_BATCH: usize = 1024;
/// Attempts at a failing acknowledgement once the consumer is stopping.
const ACK_TRIES_AFTER_STOP: u32 = 3;

/// An entry fetched for delivery, with the permit it holds.
struct Job {
    sale: SaleId,
    entry: StreamEntry,
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// A delivered entry waiting for its XACK. It keeps the delivery's permit
/// and in-flight mark until acknowledged, so unacknowledged entries count
/// against `concurrency` and are not claimed again meanwhile.
struct Ack {
    sale: SaleId,
    id: String,
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// Marks an entry as being worked on in this process, so the claimer does
/// not fetch it a second time; unmarked on drop.
struct InFlight {
    set: Arc<Mutex<HashSet<(SaleId, String)>>>,
    key: (SaleId, String),
}

impl InFlight {
    /// `None` if the entry is already in flight here.
    fn mark(
        set: &Arc<Mutex<HashSet<(SaleId, String)>>>,
        sale: SaleId,
        id: &str,
    ) -> Option<InFlight> {
        let key = (sale, id.to_owned());
        let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
        if !s.insert(key.clone()) {
            return None;
        }
        Some(InFlight {
            set: set.clone(),
            key,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.set.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.key);
    }
}

/// What every task of one consumer shares.
struct Shared {
    cfg: ConsumerConfig,
    sink: Arc<dyn Sink>,
    metrics: Arc<OrdersMetrics>,
    store: RedisStore,
    permits: Arc<Semaphore>,
    /// Bounds the reads in flight over all sales.
    reads: Arc<Semaphore>,
    /// Delivered entries to the acknowledger. Unbounded, but each message
    /// holds a permit, so there are never more than `concurrency`.
    acks: mpsc::UnboundedSender<Ack>,
    in_flight: Arc<Mutex<HashSet<(SaleId, String)>>>,
    /// The sales being consumed (their groups exist).
    sales: watch::Sender<Arc<Vec<SaleId>>>,
}

/// A consumer of the order streams, connected and ready to [`run`](Self::run).
pub struct Consumer {
    shared: Arc<Shared>,
    acks: mpsc::UnboundedReceiver<Ack>,
    listener: Option<TcpListener>,
}

impl Consumer {
    /// Connects to Redis, binds the metrics listener and creates the groups
    /// of the sales known now. Fails on bad settings, an unreachable Redis or
    /// a busy metrics port, so a misconfigured process stops at once.
    pub async fn connect(
        cfg: ConsumerConfig,
        sink: Arc<dyn Sink>,
    ) -> Result<Consumer, OrdersError> {
        cfg.validate().map_err(OrdersError::Config)?;
        let store = RedisStore::open(&cfg.redis_url, &cfg.prefix, COMMAND_TIMEOUT, None)?;
        store.load_scripts().await?;
        let listener = match cfg.metrics_listen {
            Some(addr) => Some(
                metrics::bind(addr)
                    .await
                    .map_err(|e| OrdersError::MetricsListen(addr, e))?,
            ),
            None => None,
        };
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
            acks: acks_tx,
            cfg,
            sink,
            metrics: OrdersMetrics::new(),
            store,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            sales: watch::Sender::new(Arc::new(Vec::new())),
        });
        shared.discover().await?;
        Ok(Consumer {
            shared,
            acks,
            listener,
        })
    }

    /// The consumer's metrics (also served on `metrics_listen`).
    pub fn metrics(&self) -> Arc<OrdersMetrics> {
        self.shared.metrics.clone()
    }

    /// The bound metrics address, when one was asked for (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// This consumer's name in the group.
    pub fn name(&self) -> &str {
        &self.shared.cfg.consumer
    }

    /// Consumes until `shutdown` is cancelled, then lets in-flight
    /// deliveries finish for up to `drain` and returns. Redis and sink
    /// failures while running are retried, never returned.
    ///
    /// Dropping the returned future (or aborting its task) stops everything
    /// at once, like a crash: entries in flight stay pending and another
    /// consumer takes them over after `claim_idle`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), OrdersError> {
        let Consumer {
            shared,
            acks,
            listener,
        } = self;
        tracing::info!(consumer = %shared.cfg.consumer, redis = %shared.store.url(), "order consumer running");
        let (jobs_tx, mut jobs) = mpsc::channel::<Job>(shared.cfg.concurrency);
        // Background tasks outlive the deliveries (metrics stay scrapable
        // while draining), so they stop on their own token.
        let background = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(read_loop(shared.clone(), jobs_tx.clone(), shutdown.clone()));
        tasks.spawn(claim_loop(shared.clone(), jobs_tx, shutdown.clone()));
        tasks.spawn(stats_loop(shared.clone(), background.clone()));
        if let Some(l) = listener {
            tasks.spawn(metrics::serve(
                l,
                shared.metrics.clone(),
                background.clone(),
            ));
        }
        // The acknowledger stops after the deliveries, flushing what they
        // left it; a set of its own, so it can be awaited on its own.
        let acks_stop = CancellationToken::new();
        let mut acker = JoinSet::new();
        acker.spawn(ack_loop(shared.clone(), acks, acks_stop.clone()));

        // The JoinSet aborts every delivery when dropped: that is what makes
        // a dropped `run` behave like a crash rather than a detached drain.
        let mut deliveries = JoinSet::new();
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => {
                        deliveries.spawn(deliver(shared.clone(), job, shutdown.clone()));
                    }
                    None => break,
                },
                Some(done) = deliveries.join_next(), if !deliveries.is_empty() => log_join(done),
                _ = shutdown.cancelled() => break,
            }
        }

        // Entries fetched just before the stop are in flight too: start them.
        jobs.close();
        while let Some(job) = jobs.recv().await {
            deliveries.spawn(deliver(shared.clone(), job, shutdown.clone()));
        }
        let deadline = tokio::time::Instant::now() + shared.cfg.drain;
        loop {
            tokio::select! {
                done = deliveries.join_next() => match done {
                    Some(done) => log_join(done),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    // Their entries stay pending (never acknowledged
                    // undelivered); another consumer claims them later.
                    tracing::warn!(left = deliveries.len(), "drain deadline passed; leaving deliveries pending");
                    deliveries.shutdown().await;
                    break;
                }
            }
        }

        acks_stop.cancel();
        while let Some(done) = acker.join_next().await {
            log_join(done);
        }
        background.cancel();
        let stop = tokio::time::Instant::now() + TASK_STOP;
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => log_join(done),
                    None => break,
                },
                _ = tokio::time::sleep_until(stop) => {
                    tasks.shutdown().await;
                    break;
                }
            }
        }
        shared.retire().await;
        tracing::info!(consumer = %shared.cfg.consumer, "order consumer stopped");
        Ok(())
    }
}

fn log_join(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            tracing::error!(error = %e, "order consumer task panicked");
        }
    }
}

impl Shared {
    fn consumer(&self) -> &str {
        &self.cfg.consumer
    }

    fn sales(&self) -> Arc<Vec<SaleId>> {
        self.sales.borrow().clone()
    }

    /// Re-reads the set of sales, creates the group of every new one, and
    /// publishes the list. A sale's group is created before the sale is
    /// read from, so XREADGROUP never meets a missing group.
    async fn discover(&self) -> Result<(), StoreError> {
        let wanted: Vec<SaleId> = match &self.cfg.sales {
            Some(list) => list.clone(),
            None => crate::store::Store::sales(&self.store).await?,
        };
        let known = self.sales();
        let mut ready = Vec::with_capacity(wanted.len());
        for sale in wanted {
            if known.contains(&sale) {
                ready.push(sale);
                continue;
            }
            // One sale whose group cannot be made yet (a store out of
            // memory refuses a new one) waits for the next discovery; the
            // others are consumed meanwhile.
            match self.store.ensure_group(&sale).await {
                Ok(()) => {
                    tracing::info!(sale = %sale, "consuming orders of sale");
                    ready.push(sale);
                }
                Err(e) => tracing::warn!(
                    sale = %sale, error = %e,
                    "cannot consume orders of sale yet; trying again at the next discovery"
                ),
            }
        }
        // The store lists sales in no fixed order: publish only a change of
        // the set.
        if ready.len() != known.len() || ready.iter().any(|s| !known.contains(s)) {
            self.sales.send_replace(Arc::new(ready));
        }
        Ok(())
    }

    /// Takes up to `want` permits, waiting for the first one. `None` on
    /// shutdown.
    async fn permits(
        &self,
        want: usize,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        self.permits_at_least(1, want, shutdown).await
    }

    /// Waits until `least` permits are free at once (the semaphore is
    /// first-come first-served, so waiters do not starve each other), then
    /// takes up to `want` without waiting. Readers of many busy sales thus
    /// each read a useful number of entries instead of one or two per
    /// round trip. `None` on shutdown.
    async fn permits_at_least(
        &self,
        least: usize,
        want: usize,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let least = least.clamp(1, want.max(1)) as u32;
        let mut first = tokio::select! {
            p = self.permits.clone().acquire_many_owned(least) => p.ok()?,
            _ = shutdown.cancelled() => return None,
        };
        let mut got = Vec::with_capacity(want);
        while first.num_permits() > 1 {
            match first.split(1) {
                Some(p) => got.push(p),
                None => break,
            }
        }
        got.push(first);
        while got.len() < want {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => got.push(p),
                Err(_) => break,
            }
        }
        Some(got)
    }

    /// Turns fetched entries into jobs, one permit each. Entries beyond the
    /// permits in hand wait for more (XREADGROUP's COUNT is per stream, so a
    /// read may return a few more than asked).
    async fn dispatch(
        &self,
        sale: SaleId,
        entries: Vec<StreamEntry>,
        permits: &mut Vec<OwnedSemaphorePermit>,
        jobs: &mpsc::Sender<Job>,
        shutdown: &CancellationToken,
    ) -> bool {
        for e in entries {
            let Some(in_flight) = InFlight::mark(&self.in_flight, sale, &e.id) else {
                // Already being delivered here (its idle time ran out during
                // a slow attempt): the claim only refreshed it.
                continue;
            };
            let permit = match permits.pop() {
                Some(p) => p,
                None => tokio::select! {
                    p = self.permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return false,
                    },
                    // The remaining entries stay pending under our name and
                    // are claimed after `claim_idle`.
                    _ = shutdown.cancelled() => return false,
                },
            };
            let job = Job {
                sale,
                entry: e,
                _permit: permit,
                _in_flight: in_flight,
            };
            if jobs.send(job).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Acknowledges a batch of delivered entries, retried while Redis
    /// fails: the deliveries happened, so giving up would only cause
    /// repeats. After `stop` it tries a few more times and then leaves them
    /// pending (the repeat is then the lesser evil).
    async fn ack_batch(self: &Arc<Self>, batch: &[Ack], stop: &CancellationToken) {
        // One call per sale (one slot each), the sales in parallel.
        let mut by_sale: HashMap<SaleId, Vec<String>> = HashMap::new();
        for a in batch {
            by_sale.entry(a.sale).or_default().push(a.id.clone());
        }
        let mut calls = JoinSet::new();
        for (sale, ids) in by_sale {
            let shared = self.clone();
            let stop = stop.clone();
            calls.spawn(async move { shared.ack_sale(sale, ids, &stop).await });
        }
        while let Some(done) = calls.join_next().await {
            log_join(done);
        }
    }

    async fn ack_sale(&self, sale: SaleId, ids: Vec<String>, stop: &CancellationToken) {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut failures = 0u32;
        loop {
            let e = match self.store.ack(&sale, &ids).await {
                Ok(_) => return,
                Err(e) => e,
            };
            failures += 1;
            if stop.is_cancelled() && failures >= ACK_TRIES_AFTER_STOP {
                tracing::warn!(sale = %sale, count = ids.len(), error = %e, "could not acknowledge delivered entries; they will be delivered again");
                return;
            }
            tracing::warn!(sale = %sale, count = ids.len(), error = %e, "acknowledgement failed; retrying");
            tokio::time::sleep(redis_backoff(failures)).await;
        }
    }

    async fn fail(
        &self,
        sale: &SaleId,
        id: &str,
        mode: FailMode,
        error: &str,
    ) -> Result<FailOutcome, StoreError> {
        let failure = Failure {
            consumer: self.consumer(),
            id,
            max_attempts: self.cfg.max_deliveries,
            error,
            mode,
        };
        self.store.fail(sale, &failure).await
    }

    /// Removes this consumer's name from every group where it holds nothing.
    async fn retire(&self) {
        for sale in self.sales().iter() {
            if let Err(e) = self.store.retire(sale, self.consumer()).await {
                tracing::debug!(sale = %sale, error = %e, "could not retire consumer name");
            }
        }
    }
}

/// Sleeps `d`; false if `shutdown` came first.
async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

fn redis_backoff(failures: u32) -> Duration {
    super::config::Backoff {
        base: REDIS_RETRY_BASE,
        max: REDIS_RETRY_MAX,
    }
    .delay(failures, rand::random::<f64>())
}

/// Discovers sales and keeps one reader running per sale, until shutdown.
async fn read_loop(shared: Arc<Shared>, jobs: mpsc::Sender<Job>, shutdown: CancellationToken) {
    let mut readers: HashMap<SaleId, CancellationToken> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let sales = shared.sales();
        readers.retain(|sale, stop| {
            let keep = sales.contains(sale);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for sale in sales.iter() {
            if !readers.contains_key(sale) {
                let stop = shutdown.child_token();
                readers.insert(*sale, stop.clone());
                tasks.spawn(sale_reader(shared.clone(), *sale, jobs.clone(), stop));
            }
        }
        while let Some(done) = tasks.try_join_next() {
            log_join(done);
        }
        if !sleep_or_cancel(shared.cfg.discover_interval, &shutdown).await {
            break;
        }
        if let Err(e) = shared.discover().await {
            tracing::warn!(error = %e, "could not refresh the set of sales");
        }
    }
    // The readers stop on the same token; wait for them so none is left
    // holding permits.
    while let Some(done) = tasks.join_next().await {
        log_join(done);
    }
}

/// Reads one sale's new entries until `stop`: at once again while entries
/// come, with a doubling pause up to `poll_max` while none do.
async fn sale_reader(
    shared: Arc<Shared>,
    sale: SaleId,
    jobs: mpsc::Sender<Job>,
    stop: CancellationToken,
) {
    let mut idle = POLL_MIN;
    let mut failures = 0u32;
    loop {
        let read = tokio::select! {
            r = shared.reads.clone().acquire_owned() => match r {
                Ok(r) => r,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        // Wait for room for at least one delivery, then take as many more
        // as are free: up to a batch while the sale is busy, a few while it
        // is idle, so idle sales polling do not hold the permits a busy
        // sale needs.
        let want = if idle > POLL_MIN {
            IDLE_READ.min(shared.cfg.batch)
        } else {
            shared.cfg.batch
        };
        let least = (shared.cfg.concurrency / 4).min(want);
        let Some(mut permits) = shared.permits_at_least(least, want, &stop).await else {
            return;
        };
        let reply = tokio::select! {
            r = shared.store.read_new(&sale, shared.consumer(), permits.len()) => r,
            // Entries this read returns stay pending under our name and are
            // claimed after `claim_idle`.
            _ = stop.cancelled() => return,
        };
        drop(read);
        match reply {
            Ok(entries) if entries.is_empty() => {
                failures = 0;
                drop(permits);
                if !sleep_or_cancel(idle, &stop).await {
                    return;
                }
                idle = (idle * 2).min(shared.cfg.poll_max.max(POLL_MIN));
            }
            Ok(entries) => {
                failures = 0;
                idle = POLL_MIN;
                if !shared
                    .dispatch(sale, entries, &mut permits, &jobs, &stop)
                    .await
                {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                drop(permits);
                if matches!(&e, StoreError::Io(re) if re.code() == Some("NOGROUP")) {
                    // The stream (and its group) was deleted under us: make
                    // the group again before the next read.
                    tracing::warn!(sale = %sale, error = %e, "consumer group missing; recreating");
                    if let Err(e) = shared.store.ensure_group(&sale).await {
                        tracing::warn!(sale = %sale, error = %e, "could not recreate consumer group");
                    }
                } else {
                    tracing::warn!(sale = %sale, error = %e, "reading the order stream failed; retrying");
                }
                if !sleep_or_cancel(redis_backoff(failures), &stop).await {
                    return;
                }
            }
        }
    }
}

/// Takes over entries idle longer than `claim_idle`, whoever owns them.
async fn claim_loop(shared: Arc<Shared>, jobs: mpsc::Sender<Job>, shutdown: CancellationToken) {
    // Often enough that an orphan waits at most ~1.5 x claim_idle.
    let every =
        (shared.cfg.claim_idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(5));
    let idle_ms = shared.cfg.claim_idle.as_millis() as u64;
    loop {
        if !sleep_or_cancel(every, &shutdown).await {
            return;
        }
        let sales = shared.sales();
        'sales: for sale in sales.iter() {
            let mut cursor = "0-0".to_owned();
            loop {
                // Claim only as many as can start now; the rest stay with
                // their owner (or another consumer) instead of aging under us.
                let Some(mut permits) = shared.permits(shared.cfg.batch, &shutdown).await else {
                    return;
                };
                let r = tokio::select! {
                    r = shared.store.claim_idle(sale, shared.consumer(), idle_ms, &cursor, permits.len()) => r,
                    _ = shutdown.cancelled() => return,
                };
                let (next, claimed) = match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(sale = %sale, error = %e, "claiming idle entries failed");
                        continue 'sales;
                    }
                };
                if !claimed.is_empty() {
                    tracing::info!(sale = %sale, count = claimed.len(), "took over idle entries");
                }
                if !shared
                    .dispatch(*sale, claimed, &mut permits, &jobs, &shutdown)
                    .await
                {
                    return;
                }
                if next == "0-0" || next.is_empty() {
                    break;
                }
                cursor = next;
            }
        }
    }
}

/// Sends XACKs in batches: whatever deliveries finished while the previous
/// batch was in flight goes in the next round trip. On `stop`, flushes the
/// queue and returns.
async fn ack_loop(
    shared: Arc<Shared>,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            a = acks.recv() => a,
            _ = stop.cancelled() => None,
        };
        match first {
            Some(a) => batch.push(a),
            // Stopping (or every sender gone): drain without waiting.
            None => match acks.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => return,
            },
        }
        while batch.len() < ACK_BATCH {
            match acks.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        shared.ack_batch(&batch, &stop).await;
        // Dropping the acks releases their permits and in-flight marks.
        batch.clear();
    }
}

/// Delivers one entry until it is acknowledged, dead-lettered, taken over,
/// or the consumer stops.
async fn deliver(shared: Arc<Shared>, job: Job, shutdown: CancellationToken) {
    let Job {
        sale,
        entry,
        _permit: permit,
        _in_flight: in_flight,
    } = job;
    let id = entry.id.as_str();
    let order = match Order::from_entry(&sale, &entry) {
        Ok(o) => o,
        Err(why) => {
            // Retrying cannot fix a malformed entry.
            let error = format!("malformed entry: {why}");
            match shared.fail(&sale, id, FailMode::Dead, &error).await {
                Ok(FailOutcome::Dead { dead_id, .. }) => {
                    shared.metrics.dead.increment(1);
                    tracing::warn!(sale = %sale, id, dead_id, error, "dead-lettered a malformed entry");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(sale = %sale, id, error = %e, "could not dead-letter a malformed entry")
                }
            }
            return;
        }
    };
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = shared.sink.deliver(&order).await;
        shared
            .metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        let err = match result {
            Ok(()) => {
                shared.metrics.ok.increment(1);
                let ack = Ack {
                    sale,
                    id: id.to_owned(),
                    _permit: permit,
                    _in_flight: in_flight,
                };
                if shared.acks.send(ack).is_err() {
                    // Only when the consumer is being torn down; the entry
                    // stays pending and is delivered again later.
                    tracing::debug!(sale = %sale, id, "acknowledger gone; entry stays pending");
                }
                return;
            }
            Err(e) => e,
        };
        failures += 1;
        let mode = if err.counts_as_attempt() {
            FailMode::Count
        } else {
            FailMode::Free
        };
        let text = err.to_string();
        match shared.fail(&sale, id, mode, &text).await {
            Ok(FailOutcome::Retry { attempts }) => {
                shared.metrics.retry.increment(1);
                tracing::debug!(sale = %sale, id, attempts, error = %text, "delivery failed; will retry");
            }
            Ok(FailOutcome::Dead { attempts, dead_id }) => {
                shared.metrics.dead.increment(1);
                tracing::warn!(sale = %sale, id, ticket = %order.ticket, attempts, dead_id, error = %text, "dead-lettered an order");
                return;
            }
            Ok(FailOutcome::Gone) => return,
            Ok(FailOutcome::Lost { owner }) => {
                tracing::info!(sale = %sale, id, owner, "entry taken over by another consumer");
                return;
            }
            Err(e) => {
                // Not recorded, but the entry is still ours: keep trying.
                shared.metrics.retry.increment(1);
                tracing::warn!(sale = %sale, id, error = %e, "could not record a failed delivery");
            }
        }
        let wait = shared.cfg.retry.delay(failures, rand::random::<f64>());
        if !sleep_or_cancel(wait, &shutdown).await {
            return;
        }
    }
}

/// Refreshes gauges, runs metric upkeep and trims, until `stop`.
async fn stats_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let sales = shared.sales();
        for sale in sales.iter() {
            if stop.is_cancelled() {
                return;
            }
            if let Err(e) = refresh_sale(&shared, sale).await {
                tracing::debug!(sale = %sale, error = %e, "could not refresh order gauges");
            }
        }
        shared.metrics.upkeep();
        if !sleep_or_cancel(shared.cfg.stats_interval, &stop).await {
            return;
        }
    }
}

async fn refresh_sale(shared: &Shared, sale: &SaleId) -> Result<(), StoreError> {
    let stats = shared.store.queue_stats(sale).await?;
    let gauges = shared.metrics.sale(sale);
    gauges.dead_letters.set(stats.dead_letters as f64);
    gauges.pending.set(stats.pending as f64);
    // Redis cannot compute the lag after deletions in the middle of the
    // stream; the gauge then keeps its last known value.
    if let Some(lag) = stats.lag {
        gauges.lag.set(lag as f64);
    }
    if shared.cfg.trim {
        let removed = shared.store.trim(sale).await?;
        if removed > 0 {
            tracing::debug!(sale = %sale, removed, "trimmed consumed order entries");
        }
    }
    Ok(())
}
