//! One seeded fault run: a cluster of real processes, buyers, the nemesis,
//! then settling, checking and auditing.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigtap::store::embedded::{free_port, RedisProcess};
use bigtap::store::redis::RedisStore;
use bigtap::store::Store;
use bigtap::SaleId;
use futures::stream::{self, StreamExt};
use parking_lot::Mutex;
use serde_json::json;

use super::checker::{check, check_warehouses, RedisView, Report, WarehouseView};
use super::history::{buyer_client, take, take_or_hang_up, Call, Log, Outcome};
use super::nemesis::{self, Fault, Step};
use super::rng::Rng;
use crate::support::consumer::{always, Behaviour, Reply, TestSink};
use crate::support::procs::{orders_available, NodeProc, OrdersProc, LEASE_TTL_MS};
use crate::support::proxy::{Mode, Proxy};
use crate::support::{now_ms, ADMIN_KEY};

const SALE: &str = "flash";
const NODES: usize = 2;
/// Client timeout of a buyer: longer than a pause, so requests queued at a
/// paused node are served (late) when it resumes.
const BUYER_TIMEOUT: Duration = Duration::from_secs(3);
/// Takes sent at a node while it is paused, to have commits in flight
/// when its lease expires.
const PAUSE_BURST: usize = 16;

/// Takes sent at a node just before it is paused, whose commits its link
/// holds past the lease's expiry.
const IN_FLIGHT_AT_PAUSE: usize = 4;
/// Time for those takes to reach the node and leave it as commits.
const SENT_BEFORE_PAUSE: Duration = Duration::from_millis(150);

/// Added latency on a paused node's link while it wakes up.
const RESUME_LAG_MS: u64 = 200;
/// How soon after a fault heals every node must sell again (or answer
/// sold out once no unit is left): the liveness bound. Two lease TTLs
/// cover a paused node's lease being reclaimed and leased anew.
pub const LIVE_WITHIN: Duration = Duration::from_secs(8);
/// Timeouts of impatient buyers, shorter than the nodes' store timeout
/// (500 ms): they hang up at every stage of a request.
const IMPATIENT_MS: [u64; 4] = [40, 120, 250, 400];
/// Buyers sent every 50 ms at a node whose store replies are held, all
/// hanging up.
const HANG_UP_WAVE: usize = 6;
/// Share of all buyers (percent) who are impatient.
const IMPATIENT_SHARE: u64 = 15;

/// How a run is set up. The default is the real system; the switches make
/// negative controls that the checker must catch, each for its reason.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra flags for every node.
    pub node_flags: Vec<String>,
    /// Replaces the seeded fault plan.
    pub plan: Option<Vec<Step>>,
    /// Runs without the order consumer.
    pub no_consumer: bool,
    /// The order backend acknowledges but loses every nth delivery.
    pub lossy_backend: Option<u32>,
    /// Buyers meet a stand-in front tier that answers sold out to all.
    pub fake_front: bool,
    /// Before the check, Redis gets one ticket record past the stock, as an
    /// admit that ignored the counters would write, counters untouched.
    pub oversell_behind_counters: bool,
    /// The store is a three-shard Redis Cluster (store faults hit the
    /// sale's shard; proxy faults become store stalls).
    pub cluster: bool,
    /// The sale ships from three warehouses, and the checker judges each.
    pub warehouses: bool,
}

/// How one node came back after one fault healed.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    pub fault: Fault,
    pub node: usize,
    /// Time from the heal to the node's first sale (or sold-out answer once
    /// no unit was left); `None`: it never did within [`LIVE_WITHIN`].
    pub ms: Option<u64>,
    /// `/readyz` said ready while the node could not sell, or not ready
    /// while it sold.
    pub ready_disagrees: bool,
}

/// A pause of a node past its lease TTL.
#[derive(Debug, Clone, Copy)]
pub struct Pause {
    /// Units the node held when it was paused (in Redis and locally).
    pub held: u64,
    /// Commits of the node refused as fenced after it resumed.
    pub fenced: u64,
}

/// What one run found.
pub struct RunResult {
    pub seed: u64,
    pub plan: Vec<Step>,
    pub report: Report,
    /// Fenced commits seen on all node processes.
    pub fenced: u64,
    /// Fenced verdicts Redis sent back, counted on the wire by the proxies
    /// (includes late commits whose node had already timed out).
    pub fenced_wire: u64,
    /// Each pause past the TTL.
    pub pauses: Vec<Pause>,
    pub audit: String,
    pub audit_clean: bool,
    pub consumer: bool,
    pub stock: u64,
    pub buyers: usize,
    pub settle_ms: u128,
    pub elapsed: Duration,
    /// Each node after each healed fault.
    pub recoveries: Vec<Recovery>,
    /// A disruptive fault started while units were still unsold.
    pub disrupted_selling: bool,
    /// Why the run failed beyond the checker's promises.
    pub problems: Vec<String>,
    /// The store was a three-shard Redis Cluster.
    pub cluster: bool,
    /// The sale shipped from three warehouses.
    pub warehouses: bool,
    /// Where a failed run's process logs were kept (a clean run's are
    /// removed).
    pub kept_logs: Option<PathBuf>,
}

impl RunResult {
    pub fn ok(&self) -> bool {
        self.report.ok() && self.audit_clean && self.problems.is_empty()
    }

    pub fn wedged(&self) -> usize {
        self.recoveries.iter().filter(|r| r.ms.is_none()).count()
    }

    pub fn line(&self) -> String {
        let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
        for s in &self.plan {
            *kinds.entry(s.fault.kind()).or_default() += 1;
        }
        let faults: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        let g = &self.report.figures;
        let pauses: Vec<String> = self
            .pauses
            .iter()
            .map(|p| format!("held {} fenced {}", p.held, p.fenced))
            .collect();
        format!(
            "seed={}{} faults=[{}] pauses=[{}] stock={} buyers={} winners={} oversold={} lost={} double={} stranded={} fenced={}/{} unknown={} resolved(won={} new={} lost={}) undelivered={} consumer={} settle_ms={} audit={} recovered_ms={:?} wedged={} {:.1}s{}",
            self.seed,
            match (self.cluster, self.warehouses) {
                (true, true) => " store=cluster warehouses=3",
                (true, false) => " store=cluster",
                (false, true) => " warehouses=3",
                (false, false) => "",
            },
            faults.join(" "),
            pauses.join(", "),
            self.stock,
            self.buyers,
            g.winners,
            g.oversold,
            g.lost,
            g.double,
            g.stranded,
            self.fenced,
            self.fenced_wire,
            g.unknown,
            g.resolved_won,
            g.resolved_new,
            g.resolved_lost,
            if self.consumer { g.undelivered.to_string() } else { "-".into() },
            if self.consumer { "on" } else { "off" },
            self.settle_ms,
            if self.audit_clean { "clean" } else { "DIRTY" },
            self.recoveries.iter().map(|r| r.ms).collect::<Vec<_>>(),
            self.wedged(),
            self.elapsed.as_secs_f64(),
            self.problems
                .iter()
                .map(|p| format!("\n  PROBLEM {p}"))
                .collect::<String>()
        )
    }
}

/// The store a run uses: one redis-server, or the shard of a three-shard
/// Redis Cluster that serves the sale (its kill -9, stall and restart are
/// the store faults of a cluster run).
enum Backing {
    Single(RedisProcess),
    Cluster {
        cluster: crate::support::cluster::RedisCluster,
        shard: usize,
    },
}

impl Backing {
    fn process(&mut self) -> &mut RedisProcess {
        match self {
            Backing::Single(p) => p,
            Backing::Cluster { cluster, shard } => &mut cluster.shards[*shard],
        }
    }

    fn kill(&mut self) {
        self.process().kill();
    }

    fn pause(&mut self) {
        self.process().pause();
    }

    fn resume(&mut self) {
        self.process().resume();
    }

    fn is_running(&mut self) -> bool {
        self.process().is_running()
    }

    /// Same port, same data (AOF); on a cluster, waits until it is up.
    fn restart(&mut self) -> Result<(), String> {
        match self {
            Backing::Single(p) => p.restart().map_err(|e| e.to_string()),
            Backing::Cluster { cluster, shard } => {
                cluster.restart_shard(*shard);
                Ok(())
            }
        }
    }
}

struct Slot {
    proc: tokio::sync::Mutex<NodeProc>,
    url: String,
    /// Between the node and Redis (single-server runs only: a cluster
    /// client talks to every shard directly).
    proxy: Option<Proxy>,
    /// Fenced commits of earlier (killed) incarnations.
    fenced_before: Mutex<u64>,
    generation: Mutex<u32>,
}

struct Cluster {
    redis: Arc<Mutex<Backing>>,
    /// What nodes, the consumer and the audit use.
    redis_url: String,
    /// One plain connection to the sale's keys (on a cluster, its shard).
    direct_url: String,
    slots: Vec<Slot>,
    consumer: Option<tokio::sync::Mutex<OrdersProc>>,
    sink: Option<TestSink>,
    http: reqwest::Client,
    log: Arc<Log>,
    store: RedisStore,
    /// Stands in for the nodes (negative control).
    fake_front: Option<TestSink>,
    /// The sale ships from several warehouses (DESIGN §7).
    warehouses: bool,
    /// Process logs; removed after a run that kept every promise.
    dir: PathBuf,
}

impl Slot {
    fn set_mode(&self, m: Mode) {
        if let Some(p) = &self.proxy {
            p.set(m);
        }
    }

    fn reset(&self) {
        if let Some(p) = &self.proxy {
            p.reset();
        }
    }

    fn fenced_verdicts(&self) -> u64 {
        self.proxy.as_ref().map_or(0, Proxy::fenced_verdicts)
    }
}

impl Cluster {
    async fn start(seed: u64, with_consumer: bool, opts: &RunOptions) -> Result<Cluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "bigtap-faults-{seed}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (redis, redis_url, direct_url) = if opts.cluster {
            let cluster = tokio::task::spawn_blocking(crate::support::cluster::RedisCluster::start)
                .await
                .map_err(|e| format!("cluster start: {e}"))?;
            let shard = cluster.shard_of(&format!("bigtap:{{{SALE}}}:cfg"));
            let (url, direct) = (cluster.url(), cluster.shards[shard].url());
            (Backing::Cluster { cluster, shard }, url, direct)
        } else {
            let redis = RedisProcess::start_temporary().map_err(|e| e.to_string())?;
            let url = redis.url();
            (Backing::Single(redis), url.clone(), url)
        };
        let upstream: Option<std::net::SocketAddr> = match &redis {
            Backing::Single(p) => Some(([127, 0, 0, 1], p.port()).into()),
            Backing::Cluster { .. } => None,
        };
        let mut starting = Vec::new();
        for i in 0..NODES {
            let proxy = match upstream {
                Some(up) => Some(Proxy::start(up).await.map_err(|e| e.to_string())?),
                None => None,
            };
            let port = free_port().map_err(|e| e.to_string())?;
            let url = proxy.as_ref().map_or_else(|| redis_url.clone(), Proxy::url);
            let path: PathBuf = dir.clone();
            let flags = opts.node_flags.clone();
            starting.push(async move {
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let p = NodeProc::start(&format!("node{i}"), &url, port, &flags, &path).await?;
                Ok::<_, String>(Slot {
                    url: p.url(),
                    proc: tokio::sync::Mutex::new(p),
                    proxy,
                    fenced_before: Mutex::new(0),
                    generation: Mutex::new(0),
                })
            });
        }
        let slots = futures::future::try_join_all(starting).await?;
        let (consumer, sink) = if with_consumer {
            let behaviour: Behaviour = match opts.lossy_backend {
                // Acknowledges every delivery but forgets every nth one: a
                // delivery path that loses orders (negative control).
                Some(n) => Arc::new(move |i: usize, _: &str| {
                    if i.is_multiple_of(n.max(1) as usize) {
                        Reply::Forget(200)
                    } else {
                        Reply::Status(200)
                    }
                }),
                None => always(200),
            };
            let sink = TestSink::start(behaviour).await;
            let c = OrdersProc::start(&redis_url, &sink.url(), &dir)?;
            (Some(tokio::sync::Mutex::new(c)), Some(sink))
        } else {
            (None, None)
        };
        let store = RedisStore::open(&redis_url, "bigtap", Duration::from_secs(2), None)
            .map_err(|e| e.to_string())?;
        let fake_front = if opts.fake_front {
            // Answers every request 410 `sold_out`: a front tier that never
            // sells (negative control; it stands in for the nodes).
            Some(
                TestSink::start(Arc::new(|_, _| {
                    Reply::Json(410, r#"{"outcome":"sold_out"}"#)
                }))
                .await,
            )
        } else {
            None
        };
        Ok(Cluster {
            redis: Arc::new(Mutex::new(redis)),
            redis_url,
            direct_url,
            slots,
            consumer,
            sink,
            http: buyer_client(BUYER_TIMEOUT),
            log: Arc::new(Log::default()),
            store,
            fake_front,
            warehouses: opts.warehouses,
            dir,
        })
    }

    async fn open_sale(&self, stock: u64) -> Result<(), String> {
        let now = now_ms();
        let mut spec = json!({"stock": stock, "starts_at_ms": now - 1000, "ends_at_ms": now + 3_600_000, "ticket_ttl_ms": 3_600_000});
        if self.warehouses {
            // Three warehouses of uneven size; buyers name no region, so
            // each win takes the warehouse with the most unsold units.
            let (a, b) = (stock / 2, stock / 3);
            spec["warehouses"] = json!({"w1": a, "w2": b, "w3": stock - a - b});
            spec["regions"] = json!({"eu": ["w1", "w2"], "us": ["w3", "w2"]});
        }
        // An operator retries a 503 (the store was slow to answer under a
        // loaded machine); a retry of a created sale answers 200.
        let mut created = None;
        for _ in 0..10 {
            let r = self
                .http
                .put(format!("{}/v1/admin/sales/{SALE}", self.slots[0].url))
                .header("authorization", format!("Bearer {ADMIN_KEY}"))
                .json(&spec)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            created = Some(r.status());
            if r.status() != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !matches!(created.map(|s| s.as_u16()), Some(200 | 201)) {
            return Err(format!("sale not created: {created:?}"));
        }
        // Every node serves the sale before the first buyer arrives.
        for s in &self.slots {
            let ok = crate::support::eventually(Duration::from_secs(5), || async {
                self.http
                    .get(format!("{}/v1/sales/{SALE}", s.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await;
            if !ok {
                return Err(format!("{} never discovered the sale", s.url));
            }
        }
        Ok(())
    }

    /// Where buyers of `node` send their takes.
    fn front(&self, node: usize) -> String {
        match &self.fake_front {
            Some(f) => f.base(),
            None => self.slots[node].url.clone(),
        }
    }

    /// One buyer's take, logged.
    async fn buy(&self, node: usize, user: &str, resolution: bool) -> Outcome {
        self.buy_with(&self.http, node, user, resolution).await
    }

    /// A take by an impatient buyer, who closes the socket after a short
    /// timeout (a pooled HTTP client may keep the connection open after
    /// giving up, which the server never notices; a closed socket it does).
    async fn buy_impatient(&self, pick: u64, node: usize, user: &str) -> Outcome {
        let patience = Duration::from_millis(IMPATIENT_MS[pick as usize % IMPATIENT_MS.len()]);
        let outcome = take_or_hang_up(&self.front(node), SALE, user, patience).await;
        self.log.push(Call {
            user: user.to_owned(),
            node,
            outcome: outcome.clone(),
            resolution: false,
        });
        outcome
    }

    async fn buy_with(
        &self,
        client: &reqwest::Client,
        node: usize,
        user: &str,
        resolution: bool,
    ) -> Outcome {
        let outcome = take(client, &self.front(node), SALE, user).await;
        self.log.push(Call {
            user: user.to_owned(),
            node,
            outcome: outcome.clone(),
            resolution,
        });
        outcome
    }

    async fn fenced_now(&self, i: usize) -> u64 {
        let p = self.slots[i].proc.lock().await;
        p.fenced_commits().await.unwrap_or(0)
    }

    /// Applies one fault, holds it, heals it.
    async fn apply(
        self: &Arc<Self>,
        step: &Step,
        burst_id: usize,
    ) -> Result<Option<Pause>, String> {
        let hold = Duration::from_millis(step.hold_ms);
        match step.fault {
            Fault::KillNode(i) => {
                let s = &self.slots[i];
                let mut p = s.proc.lock().await;
                // What this incarnation fenced dies with it: keep the count.
                *s.fenced_before.lock() += p.fenced_commits().await.unwrap_or(0);
                p.kill().await;
                tokio::time::sleep(hold).await;
                let generation = {
                    let mut g = s.generation.lock();
                    *g += 1;
                    *g
                };
                p.restart_as(&format!("node{i}-g{generation}")).await?;
            }
            Fault::KillConsumer => {
                if let Some(c) = &self.consumer {
                    let mut c = c.lock().await;
                    c.kill().await;
                    tokio::time::sleep(hold).await;
                    c.restart().await?;
                }
            }
            Fault::KillRedis => {
                self.redis.lock().kill();
                tokio::time::sleep(hold).await;
                let r = self.redis.clone();
                tokio::task::spawn_blocking(move || r.lock().restart())
                    .await
                    .map_err(|e| e.to_string())??;
            }
            Fault::PauseNode(i) => {
                let before = self.fenced_now(i).await;
                let wire_before = self.slots[i].fenced_verdicts();
                let p = self.slots[i].proc.lock().await;
                // Units the node holds, in Redis and in its own counter.
                let held = self
                    .lease_units(&p.node_id)
                    .await
                    .min(p.local_units().await.unwrap_or(0));
                // Commits on their way as the node stops: its link holds
                // them for as long as the pause, past the lease's expiry,
                // so they reach Redis under a lapsed lease whatever the
                // node does first when it resumes (a renewal, an idle
                // return, or a sale from its queue). Without them, a pause
                // fences a commit only when the queued buyers win that race.
                self.slots[i].set_mode(Mode::Delay(hold));
                let mut burst = Vec::new();
                for j in 0..IN_FLIGHT_AT_PAUSE {
                    let c = self.clone();
                    burst.push(tokio::spawn(async move {
                        c.buy(i, &format!("q{burst_id}x{j}"), false).await;
                    }));
                }
                tokio::time::sleep(SENT_BEFORE_PAUSE).await;
                p.pause();
                // Buyers keep arriving at the paused node; their requests
                // wait in its socket buffers and are served when it resumes,
                // with units of a lease that has expired meanwhile.
                for j in 0..PAUSE_BURST {
                    let c = self.clone();
                    burst.push(tokio::spawn(async move {
                        c.buy(i, &format!("p{burst_id}x{j}"), false).await;
                    }));
                }
                tokio::time::sleep(hold).await;
                // A slow link as it wakes: the node learns that its lease
                // is gone only a round trip after it resumes serving, so
                // the queued buyers commit under the expired lease first.
                self.slots[i].set_mode(Mode::Delay(Duration::from_millis(RESUME_LAG_MS)));
                p.resume();
                drop(p);
                for b in burst {
                    let _ = b.await;
                }
                self.slots[i].set_mode(Mode::Pass);
                let after = self.fenced_now(i).await;
                // Fenced verdicts the node saw, or that Redis sent back to
                // commits the node had already given up on.
                let wire = self.slots[i].fenced_verdicts() - wire_before;
                return Ok(Some(Pause {
                    held,
                    fenced: after.saturating_sub(before).max(wire),
                }));
            }
            Fault::Delay(i, ms) => {
                self.slots[i].set_mode(Mode::Delay(Duration::from_millis(ms)));
                tokio::time::sleep(hold).await;
                self.slots[i].set_mode(Mode::Pass);
            }
            Fault::Blackhole(i) => {
                self.slots[i].set_mode(Mode::Blackhole);
                tokio::time::sleep(hold).await;
                self.slots[i].set_mode(Mode::Pass);
            }
            Fault::Reset(i) => {
                self.slots[i].reset();
                tokio::time::sleep(Duration::from_millis(150)).await;
                self.slots[i].reset();
            }
            Fault::StallRedis => {
                self.redis.lock().pause();
                tokio::time::sleep(hold).await;
                self.redis.lock().resume();
            }
            Fault::HangUps(i) => {
                // The node's store replies are held: by its proxy, or on a
                // cluster (no proxy in the path) by stalling the sale's shard.
                let stall = self.slots[i].proxy.is_none();
                if stall {
                    self.redis.lock().pause();
                }
                self.slots[i].set_mode(Mode::Blackhole);
                // The crowd arrives in waves while the replies are held, so
                // hang-ups keep meeting requests that got in.
                let mut crowd = Vec::new();
                let held = Instant::now();
                let mut j = 0;
                while held.elapsed() < hold {
                    for _ in 0..HANG_UP_WAVE {
                        let c = self.clone();
                        crowd.push(tokio::spawn(async move {
                            c.buy_impatient(j as u64, i, &format!("h{burst_id}x{j}"))
                                .await;
                        }));
                        j += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.slots[i].set_mode(Mode::Pass);
                if stall {
                    self.redis.lock().resume();
                }
                for c in crowd {
                    c.await
                        .map_err(|e| format!("a hang-up buyer task failed: {e}"))?;
                }
            }
        }
        Ok(None)
    }

    /// The sale's accounting from the admin route (with retries: a node
    /// may just have been restarted).
    async fn accounting(&self) -> Result<serde_json::Value, String> {
        let mut last = String::new();
        for _ in 0..20 {
            for s in &self.slots {
                match self
                    .http
                    .get(format!("{}/v1/admin/sales/{SALE}", s.url))
                    .header("authorization", format!("Bearer {ADMIN_KEY}"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        return r.json().await.map_err(|e| e.to_string());
                    }
                    Ok(r) => last = r.status().to_string(),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no accounting: {last}"))
    }

    /// Units not yet sold (pool plus leases), if the store answers.
    async fn unsold(&self) -> Option<u64> {
        let sale = SaleId::parse(SALE).ok()?;
        let snap = self.store.snapshot(&sale).await.ok()??;
        Some(snap.available + snap.leased)
    }

    /// After fault `k` healed: every node must sell to a fresh buyer
    /// within [`LIVE_WITHIN`] (or answer sold out once nothing is left),
    /// and `/readyz` must agree with what it does.
    async fn liveness(self: &Arc<Self>, k: usize, fault: Fault) -> Vec<Recovery> {
        let checks = (0..self.slots.len()).map(|i| {
            let c = self.clone();
            async move {
                let healed = Instant::now();
                let mut ms = None;
                let mut j = 0;
                while healed.elapsed() < LIVE_WITHIN {
                    let user = format!("live{k}n{i}x{j}");
                    j += 1;
                    match c.buy(i, &user, false).await {
                        Outcome::Won { .. } => {
                            ms = Some(healed.elapsed().as_millis() as u64);
                            break;
                        }
                        Outcome::SoldOut if c.unsold().await == Some(0) => {
                            ms = Some(healed.elapsed().as_millis() as u64);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                let ready = || async {
                    c.http
                        .get(format!("{}/readyz", c.front(i)))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                };
                let ready_disagrees = match ms {
                    // A node that sells must say ready (soon: a probe may
                    // race a retry of the store connection).
                    Some(_) => !crate::support::eventually(Duration::from_secs(2), ready).await,
                    None => ready().await,
                };
                Recovery {
                    fault,
                    node: i,
                    ms,
                    ready_disagrees,
                }
            }
        });
        futures::future::join_all(checks).await
    }

    /// Brings every part back (a heal that a failed step may have skipped).
    async fn heal(&self) -> Result<(), String> {
        {
            let mut r = self.redis.lock();
            r.resume();
            if !r.is_running() {
                r.restart()?;
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            s.set_mode(Mode::Pass);
            let mut p = s.proc.lock().await;
            p.resume();
            if !p.is_running() {
                let g = {
                    let mut g = s.generation.lock();
                    *g += 1;
                    *g
                };
                p.restart_as(&format!("node{i}-g{g}")).await?;
            }
        }
        if let Some(c) = &self.consumer {
            let mut c = c.lock().await;
            if !c.is_running() {
                c.restart().await?;
            }
        }
        Ok(())
    }

    /// Units of `node`'s lease as Redis records them (0 when it has none).
    async fn lease_units(&self, node: &str) -> u64 {
        let Ok(client) = redis::Client::open(self.direct_url.as_str()) else {
            return 0;
        };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            return 0;
        };
        let rec: Option<String> = redis::cmd("HGET")
            .arg(format!("bigtap:{{{SALE}}}:leases"))
            .arg(node)
            .query_async(&mut con)
            .await
            .unwrap_or(None);
        rec.and_then(|r| r.split(':').next()?.parse().ok())
            .unwrap_or(0)
    }

    async fn fenced_total(&self) -> u64 {
        let mut n = 0;
        for i in 0..self.slots.len() {
            let before = *self.slots[i].fenced_before.lock();
            n += before + self.fenced_now(i).await;
        }
        n
    }
}

/// Every how many seeds one runs on a three-shard Redis Cluster.
pub const CLUSTER_EVERY: u64 = 5;
/// Every how many seeds one sells from three warehouses.
pub const WAREHOUSES_EVERY: u64 = 3;

/// Runs seed `seed` end to end, on the real system: one seed in
/// [`CLUSTER_EVERY`] on a Redis Cluster, the others on one redis-server.
pub async fn run(seed: u64) -> Result<RunResult, String> {
    run_with(
        seed,
        RunOptions {
            cluster: seed.is_multiple_of(CLUSTER_EVERY),
            warehouses: seed.is_multiple_of(WAREHOUSES_EVERY),
            ..RunOptions::default()
        },
    )
    .await
}

/// Runs seed `seed` end to end with `opts`.
pub async fn run_with(seed: u64, opts: RunOptions) -> Result<RunResult, String> {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut problems = Vec::new();
    // The delivery check is part of every run: a binary without a working
    // consumer fails the run instead of switching the check off.
    let with_consumer = !opts.no_consumer;
    if with_consumer && !orders_available() {
        return Err("`bigtap orders --help` does not offer --sink: the consumer cannot run".into());
    }
    if !with_consumer {
        problems.push("the order consumer did not run: delivery was not checked".to_owned());
    }
    let seeded = nemesis::plan(&mut rng.fork(), NODES, with_consumer, !opts.cluster);
    let plan = opts.plan.clone().unwrap_or(seeded);
    let stock = rng.range(50, 200);
    let buyers = (stock + rng.range(60, 200)) as usize;
    let cluster = Arc::new(Cluster::start(seed, with_consumer, &opts).await?);
    cluster.open_sale(stock).await?;

    // Buyers arrive over the whole fault schedule, so faults meet a sale
    // that is still selling. Some are impatient and hang up early.
    let load_ms = nemesis::duration_ms(&plan).max(1500) + 300;
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let mut buyer_rng = rng.fork();
    for b in 0..buyers {
        let at = Duration::from_millis(buyer_rng.below(load_ms));
        let node = buyer_rng.below(NODES as u64) as usize;
        let double = buyer_rng.chance(25);
        let impatient = buyer_rng
            .chance(IMPATIENT_SHARE)
            .then(|| buyer_rng.below(64));
        let c = cluster.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(t0 + at).await;
            let user = format!("b{b}");
            if let Some(pick) = impatient {
                // Hangs up once; the settling phase retries it like any
                // unknown outcome.
                c.buy_impatient(pick, node, &user).await;
                return;
            }
            for attempt in 0..3 {
                let n = (node + attempt) % NODES;
                let outcomes = if double && attempt == 0 {
                    // A double click: the same buyer on two nodes at once.
                    let (x, y) =
                        tokio::join!(c.buy(n, &user, false), c.buy((n + 1) % NODES, &user, false));
                    vec![x, y]
                } else {
                    vec![c.buy(n, &user, false).await]
                };
                if outcomes.iter().any(|o| !matches!(o, Outcome::Unknown(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }

    let mut pauses = Vec::new();
    let mut recoveries = Vec::new();
    let mut disrupted_selling = false;
    for (k, step) in plan.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(step.after_ms)).await;
        if step.fault.disruptive() && cluster.unsold().await.is_some_and(|n| n > 0) {
            disrupted_selling = true;
        }
        if let Some(f) = cluster.apply(step, k).await? {
            pauses.push(f);
        }
        recoveries.extend(cluster.liveness(k, step.fault).await);
    }
    for t in tasks {
        // A buyer task that panicked lost its calls from the log: the run
        // cannot be judged.
        t.await.map_err(|e| format!("a buyer task failed: {e}"))?;
    }
    cluster.heal().await?;
    if !disrupted_selling {
        problems.push("no disruptive fault met the sale while units were unsold".to_owned());
    }
    for r in &recoveries {
        match r.ms {
            None => problems.push(format!(
                "node{} never sold again within {LIVE_WITHIN:?} after {} healed (wedged)",
                r.node, r.fault
            )),
            Some(_) if r.ready_disagrees => problems.push(format!(
                "node{} sold after {} healed but /readyz said not ready",
                r.node, r.fault
            )),
            Some(_) => {}
        }
        if r.ms.is_none() && r.ready_disagrees {
            problems.push(format!(
                "node{} could not sell after {} healed but /readyz said ready",
                r.node, r.fault
            ));
        }
    }

    // Settle every unknown outcome: a retry must return the ticket if the
    // win was recorded.
    let sale = SaleId::parse(SALE).unwrap();
    let view = RedisView::read(&cluster.direct_url, SALE)
        .await
        .map_err(|e| e.to_string())?;
    let calls = cluster.log.calls();
    let mut unsettled: HashSet<String> = HashSet::new();
    let won: HashSet<&str> = calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Won { .. }))
        .map(|c| c.user.as_str())
        .collect();
    for c in &calls {
        if matches!(c.outcome, Outcome::Unknown(_)) && !won.contains(c.user.as_str()) {
            unsettled.insert(c.user.clone());
        }
    }
    for u in view.winners.keys() {
        if !won.contains(u.as_str()) {
            unsettled.insert(u.clone());
        }
    }
    let mut unsettled: Vec<String> = unsettled.into_iter().collect();
    unsettled.sort();
    // And every winner asks again: a retry of a won take returns the same ticket.
    let mut again: Vec<&str> = won.iter().copied().collect();
    again.sort();
    stream::iter(again)
        .enumerate()
        .map(|(k, user)| {
            let c = cluster.clone();
            async move {
                c.buy(k % NODES, user, true).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    for (k, user) in unsettled.iter().enumerate() {
        for attempt in 0..20 {
            let o = cluster.buy((k + attempt) % NODES, user, true).await;
            if !matches!(o, Outcome::Unknown(_)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Progress: fresh buyers until the sale is sold out, on every node.
    let sellout_by = Instant::now() + Duration::from_millis(3 * LEASE_TTL_MS) + LIVE_WITHIN;
    let mut f = 0;
    while cluster.unsold().await != Some(0) && Instant::now() < sellout_by {
        for i in 0..NODES {
            cluster.buy(i, &format!("final{f}"), false).await;
            f += 1;
        }
    }

    // Bounded undersell: idle nodes return their leases, and expired leases
    // of dead incarnations are reclaimed, within TTL plus an interval.
    let store = &cluster.store;
    let quiet = Instant::now();
    let limit = Duration::from_millis(3 * LEASE_TTL_MS);
    loop {
        let leased = store
            .snapshot(&sale)
            .await
            .ok()
            .flatten()
            .map_or(u64::MAX, |s| s.leased);
        if leased == 0 || quiet.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settle_ms = quiet.elapsed().as_millis();
    let fenced = cluster.fenced_total().await;
    let fenced_wire = cluster.slots.iter().map(Slot::fenced_verdicts).sum();

    // Every stream entry reaches the order backend.
    let mut delivered = None;
    let mut delivered_file = None;
    if let Some(sink) = &cluster.sink {
        let view = RedisView::read(&cluster.direct_url, SALE)
            .await
            .map_err(|e| e.to_string())?;
        let want: HashSet<String> = view.stream.iter().map(|(t, _)| t.clone()).collect();
        // The answer is not asserted here: the checker judges what arrived
        // (a missing delivery is its "lost winner"), after this bounded wait.
        let _all_arrived = crate::support::eventually(Duration::from_secs(20), || async {
            want.is_subset(&sink.delivered())
        })
        .await;
        let got = sink.delivered();
        let path = cluster.dir.join("delivered.txt");
        let mut ids: Vec<&String> = got.iter().collect();
        ids.sort();
        let text: String = ids.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        delivered = Some(got);
        delivered_file = Some(path);
    }

    if opts.oversell_behind_counters {
        oversell_behind_counters(&cluster.direct_url).await?;
    }
    let view = RedisView::read(&cluster.direct_url, SALE)
        .await
        .map_err(|e| e.to_string())?;
    let report = check(&cluster.log.calls(), &view, delivered.as_ref());
    if opts.warehouses {
        let accounting = cluster.accounting().await?;
        let w = WarehouseView::read(&accounting, &cluster.direct_url, SALE)
            .await
            .map_err(|e| e.to_string())?;
        problems.extend(check_warehouses(&view, &w));
    }
    let audit = bigtap::audit::audit(
        &cluster.redis_url,
        "bigtap",
        &sale,
        delivered_file.as_deref(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let audit_clean = audit.is_clean();
    let kept_logs = if report.ok() && audit_clean && problems.is_empty() {
        let _ = std::fs::remove_dir_all(&cluster.dir);
        None
    } else {
        println!(
            "seed={seed}: process logs kept in {}",
            cluster.dir.display()
        );
        Some(cluster.dir.clone())
    };
    Ok(RunResult {
        seed,
        plan,
        report,
        fenced,
        fenced_wire,
        pauses,
        audit_clean,
        audit: audit.to_string(),
        consumer: with_consumer,
        stock,
        buyers,
        settle_ms,
        elapsed: started.elapsed(),
        recoveries,
        disrupted_selling,
        problems,
        cluster: opts.cluster,
        warehouses: opts.warehouses,
        kept_logs,
    })
}

/// What an admit that ignores the counters would leave: one more live
/// ticket, its winner and its stream entry, with every counter untouched.
async fn oversell_behind_counters(redis_url: &str) -> Result<(), String> {
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let key = |s: &str| format!("bigtap:{{{SALE}}}:{s}");
    let ticket = bigtap::TicketId::random().to_string();
    let now = now_ms();
    redis::pipe()
        .cmd("HSET")
        .arg(key("tickets"))
        .arg(&ticket)
        .arg(format!("p:ghost:{now}:{}", now + 3_600_000))
        .cmd("HSET")
        .arg(key("winners"))
        .arg("ghost")
        .arg(&ticket)
        .cmd("XADD")
        .arg(key("orders"))
        .arg("*")
        .arg("ticket")
        .arg(&ticket)
        .arg("user")
        .arg("ghost")
        .query_async::<()>(&mut con)
        .await
        .map_err(|e| e.to_string())
}
