//! The order-stream consumer: reads winners from every sale's stream in
//! consumer group `orders`, delivers each to the [`Sink`], and acknowledges
//! it only after the sink said 2xx.
//!
//! Tasks of one consumer:
//!
//! - **reader**: discovers sales (and creates their group), then
//!   `XREADGROUP ... >` over all their streams on a connection of its own,
//!   because a blocking read stalls every other command multiplexed on the
//!   same connection.
//! - **claimer**: `XAUTOCLAIM`s entries left pending longer than
//!   `claim_idle` by consumers that died.
//! - **deliveries**: one task per entry: attempt; on a 2xx hand the entry to
//!   the acknowledger; otherwise record the failure (`lua/fail.lua`), back
//!   off and try again, until the entry is delivered, dead-lettered, or
//!   taken over by another consumer.
//! - **acknowledger**: XACKs delivered entries in batches (whatever finished
//!   during the previous round trip), one command per sale instead of one
//!   per entry.
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

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::{AsyncCommands, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::ConsumerConfig;
use super::metrics::{self, OrdersMetrics};
use super::scripts::{FailMode, FailOutcome, Scripts};
use super::sink::Sink;
use super::stream::{Keys, Order, GROUP};
use super::OrdersError;
use crate::id::SaleId;

/// How long one XREADGROUP waits for new entries. Short enough that new
/// sales and shutdown are noticed promptly, long enough to cost nothing
/// when idle.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Redis commands other than the blocking read must answer within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
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
    id: String,
    fields: HashMap<String, Value>,
    /// Taken over from another consumer, so it may have recorded attempts.
    claimed: bool,
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// A delivered entry waiting for its XACK. It keeps the delivery's permit
/// and in-flight mark until acknowledged, so unacknowledged entries count
/// against `concurrency` and are not claimed again meanwhile.
struct Ack {
    sale: SaleId,
    id: String,
    clear_attempts: bool,
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
    keys: Keys,
    sink: Arc<dyn Sink>,
    metrics: Arc<OrdersMetrics>,
    /// Multiplexed connection for everything but the blocking read.
    conn: ConnectionManager,
    scripts: Scripts,
    permits: Arc<Semaphore>,
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
    reader: ConnectionManager,
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
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(OrdersError::Redis)?;
        let base = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_max_delay(REDIS_RETRY_MAX);
        let conn = ConnectionManager::new_with_config(
            client.clone(),
            base.clone().set_response_timeout(Some(COMMAND_TIMEOUT)),
        )
        .await
        .map_err(OrdersError::Redis)?;
        let reader = ConnectionManager::new_with_config(
            client,
            base.set_response_timeout(Some(READ_BLOCK + COMMAND_TIMEOUT)),
        )
        .await
        .map_err(OrdersError::Redis)?;
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
            keys: Keys::new(&cfg.prefix),
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            acks: acks_tx,
            cfg,
            sink,
            metrics: OrdersMetrics::new(),
            conn,
            scripts: Scripts::default(),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            sales: watch::Sender::new(Arc::new(Vec::new())),
        });
        shared.discover().await.map_err(OrdersError::Redis)?;
        Ok(Consumer {
            shared,
            reader,
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
            reader,
            acks,
            listener,
        } = self;
        tracing::info!(consumer = %shared.cfg.consumer, "order consumer running");
        let (jobs_tx, mut jobs) = mpsc::channel::<Job>(shared.cfg.concurrency);
        // Background tasks outlive the deliveries (metrics stay scrapable
        // while draining), so they stop on their own token.
        let background = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(read_loop(
            shared.clone(),
            reader,
            jobs_tx.clone(),
            shutdown.clone(),
        ));
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
    async fn discover(&self) -> redis::RedisResult<()> {
        let wanted: Vec<SaleId> = match &self.cfg.sales {
            Some(list) => list.clone(),
            None => {
                let mut conn = self.conn.clone();
                let members: Vec<String> = conn.smembers(self.keys.sales()).await?;
                let mut sales: Vec<SaleId> = members
                    .iter()
                    .filter_map(|m| match SaleId::parse(m) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::warn!(member = %m, error = %e, "ignoring malformed sale id in the sales set");
                            None
                        }
                    })
                    .collect();
                sales.sort();
                sales
            }
        };
        let known = self.sales();
        let mut added = false;
        for sale in &wanted {
            if !known.contains(sale) {
                self.ensure_group(sale).await?;
                tracing::info!(sale = %sale, "consuming orders of sale");
                added = true;
            }
        }
        if added || wanted.len() != known.len() {
            self.sales.send_replace(Arc::new(wanted));
        }
        Ok(())
    }

    /// `XGROUP CREATE key orders 0 MKSTREAM`; an existing group is fine.
    /// Starting at 0 means entries written before the first consumer ran
    /// are delivered too.
    async fn ensure_group(&self, sale: &SaleId) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.orders(sale))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Takes up to `want` permits, waiting for the first one. `None` on
    /// shutdown.
    async fn permits(
        &self,
        want: usize,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.ok()?,
            _ = shutdown.cancelled() => return None,
        };
        let mut got = vec![first];
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
        entries: Vec<StreamId>,
        claimed: bool,
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
                id: e.id,
                fields: e.map,
                claimed,
                _permit: permit,
                _in_flight: in_flight,
            };
            if jobs.send(job).await.is_err() {
                return false;
            }
        }
        true
    }

    /// XACKs a batch of delivered entries, retried while Redis fails: the
    /// deliveries happened, so giving up would only cause repeats. After
    /// `stop` it tries a few more times and then leaves them pending (the
    /// repeat is then the lesser evil).
    async fn ack_batch(&self, batch: &[Ack], stop: &CancellationToken) {
        // One XACK per sale. Where attempts were counted, XACK and the
        // counter cleanup go together in MULTI/EXEC (one sale = one slot).
        let mut by_sale: HashMap<SaleId, (Vec<&str>, Vec<&str>)> = HashMap::new();
        for a in batch {
            let (ids, clear) = by_sale.entry(a.sale).or_default();
            ids.push(&a.id);
            if a.clear_attempts {
                clear.push(&a.id);
            }
        }
        let mut pipe = redis::pipe();
        for (sale, (ids, clear)) in &by_sale {
            if clear.is_empty() {
                pipe.xack(self.keys.orders(sale), GROUP, ids).ignore();
            } else {
                pipe.cmd("MULTI").ignore();
                pipe.xack(self.keys.orders(sale), GROUP, ids).ignore();
                pipe.hdel(self.keys.attempts(sale), clear).ignore();
                pipe.cmd("EXEC").ignore();
            }
        }
        let mut failures = 0u32;
        loop {
            let mut conn = self.conn.clone();
            let e = match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => return,
                Err(e) => e,
            };
            failures += 1;
            if stop.is_cancelled() && failures >= ACK_TRIES_AFTER_STOP {
                tracing::warn!(count = batch.len(), error = %e, "could not acknowledge delivered entries; they will be delivered again");
                return;
            }
            tracing::warn!(count = batch.len(), error = %e, "acknowledgement failed; retrying");
            tokio::time::sleep(redis_backoff(failures)).await;
        }
    }

    async fn fail(
        &self,
        sale: &SaleId,
        id: &str,
        mode: FailMode,
        error: &str,
    ) -> redis::RedisResult<FailOutcome> {
        let mut conn = self.conn.clone();
        self.scripts
            .fail(
                &mut conn,
                &self.keys,
                sale,
                self.consumer(),
                id,
                self.cfg.max_deliveries,
                error,
                mode,
            )
            .await
    }

    /// Removes this consumer's name from every group where it holds nothing.
    async fn retire(&self) {
        let mut conn = self.conn.clone();
        for sale in self.sales().iter() {
            if let Err(e) = self
                .scripts
                .retire(&mut conn, &self.keys, sale, self.consumer())
                .await
            {
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

/// Discovers sales and reads new entries until shutdown.
async fn read_loop(
    shared: Arc<Shared>,
    mut reader: ConnectionManager,
    jobs: mpsc::Sender<Job>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut next_discovery = Instant::now() + shared.cfg.discover_interval;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if Instant::now() >= next_discovery {
            if let Err(e) = shared.discover().await {
                tracing::warn!(error = %e, "could not refresh the set of sales");
            }
            next_discovery = Instant::now() + shared.cfg.discover_interval;
        }
        let sales = shared.sales();
        if sales.is_empty() {
            if !sleep_or_cancel(shared.cfg.discover_interval.min(READ_BLOCK), &shutdown).await {
                return;
            }
            // Nothing to read; look for sales right away.
            next_discovery = Instant::now();
            continue;
        }
        // Hold a single permit while blocked in XREADGROUP (so there is room
        // for what it returns) and take the rest after the read: permits held
        // through an idle BLOCK would starve the claimer.
        let Some(mut permits) = shared.permits(1, &shutdown).await else {
            return;
        };
        let want = (1 + shared.permits.available_permits()).min(shared.cfg.batch);
        // COUNT applies per stream; spread the wanted entries over the sales.
        let per_stream = want.div_ceil(sales.len()).max(1);
        let keys: Vec<String> = sales.iter().map(|s| shared.keys.orders(s)).collect();
        let block = READ_BLOCK
            .min(shared.cfg.discover_interval)
            .max(Duration::from_millis(1));
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(shared.consumer())
            .arg("COUNT")
            .arg(per_stream)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&keys);
        for _ in &keys {
            cmd.arg(">");
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            r = cmd.query_async(&mut reader) => r,
            // Entries this read returns stay pending under our name and are
            // claimed after `claim_idle`.
            _ = shutdown.cancelled() => return,
        };
        match reply {
            Ok(reply) => {
                failures = 0;
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    let Some(i) = keys.iter().position(|k| *k == stream.key) else {
                        continue;
                    };
                    if !shared
                        .dispatch(sales[i], stream.ids, false, &mut permits, &jobs, &shutdown)
                        .await
                    {
                        return;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if e.code() == Some("NOGROUP") {
                    // A stream (and its group) was deleted under us: make the
                    // groups again before the next read.
                    tracing::warn!(error = %e, "consumer group missing; recreating");
                    for s in sales.iter() {
                        if let Err(e) = shared.ensure_group(s).await {
                            tracing::warn!(sale = %s, error = %e, "could not recreate consumer group");
                        }
                    }
                } else {
                    tracing::warn!(error = %e, "reading the order streams failed; retrying");
                }
                drop(permits);
                if !sleep_or_cancel(redis_backoff(failures), &shutdown).await {
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
            let key = shared.keys.orders(sale);
            let mut cursor = "0-0".to_owned();
            loop {
                // Claim only as many as can start now; the rest stay with
                // their owner (or another consumer) instead of aging under us.
                let Some(mut permits) = shared.permits(shared.cfg.batch, &shutdown).await else {
                    return;
                };
                let mut conn = shared.conn.clone();
                let mut cmd = redis::cmd("XAUTOCLAIM");
                cmd.arg(&key)
                    .arg(GROUP)
                    .arg(shared.consumer())
                    .arg(idle_ms)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(permits.len());
                let r: redis::RedisResult<StreamAutoClaimReply> = tokio::select! {
                    r = cmd.query_async(&mut conn) => r,
                    _ = shutdown.cancelled() => return,
                };
                let reply = match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(sale = %sale, error = %e, "claiming idle entries failed");
                        continue 'sales;
                    }
                };
                if !reply.claimed.is_empty() {
                    tracing::info!(sale = %sale, count = reply.claimed.len(), "took over idle entries");
                }
                if !shared
                    .dispatch(*sale, reply.claimed, true, &mut permits, &jobs, &shutdown)
                    .await
                {
                    return;
                }
                if reply.next_stream_id == "0-0" || reply.next_stream_id.is_empty() {
                    break;
                }
                cursor = reply.next_stream_id;
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
        id,
        fields,
        claimed,
        _permit: permit,
        _in_flight: in_flight,
    } = job;
    let id = id.as_str();
    let order = match Order::from_fields(&sale, &fields) {
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
    // Whether the attempts hash may hold a counter for this entry.
    let mut counted = claimed;
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
                    clear_attempts: counted,
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
        counted = true;
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

async fn refresh_sale(shared: &Shared, sale: &SaleId) -> redis::RedisResult<()> {
    let mut conn = shared.conn.clone();
    let (groups, dead): (StreamInfoGroupsReply, u64) = redis::pipe()
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(shared.keys.orders(sale))
        .cmd("XLEN")
        .arg(shared.keys.dead(sale))
        .query_async(&mut conn)
        .await?;
    let gauges = shared.metrics.sale(sale);
    gauges.dead_letters.set(dead as f64);
    if let Some(g) = groups.groups.iter().find(|g| g.name == GROUP) {
        gauges.pending.set(g.pending as f64);
        // Redis cannot compute the lag after deletions in the middle of the
        // stream; the gauge then keeps its last known value.
        if let Some(lag) = g.lag {
            gauges.lag.set(lag as f64);
        }
    }
    if shared.cfg.trim {
        let removed = shared.scripts.trim(&mut conn, &shared.keys, sale).await?;
        if removed > 0 {
            tracing::debug!(sale = %sale, removed, "trimmed consumed order entries");
        }
    }
    Ok(())
}
