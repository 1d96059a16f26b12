//! The sales this node serves, and the tasks that keep its view of each
//! sale current.
//!
//! The registry is a lock-free skip list keyed by sale id: the request
//! path looks a sale up without locking or asking Redis. New sales are
//! discovered from Redis every second (and at once when created through
//! this node); each sale then gets:
//! - a refresher (settings, accounting and eligibility, every `--refresh-ms`),
//! - a tailer of the order stream feeding the winners replica,
//! - a committer, a lease keeper, a reclaimer and a sweeper.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_skiplist::SkipMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commit::{CommitCtx, Committer};
use crate::id::SaleId;
use crate::lease::{self, LeaseCtx};
use crate::lifecycle;
use crate::stock::Sale;
use crate::store::{SaleState, Store, StoreError};

/// Entries read from the order stream per call.
const TAIL_BATCH: usize = 1000;
/// Pause between stream reads once caught up: bounds how long a winner from
/// another node is unknown here.
const TAIL_IDLE: Duration = Duration::from_millis(50);
/// How often a sale past its window is refreshed and tailed: it can only
/// change by releases, sweeps and admin actions, none of them urgent.
const ENDED_PERIOD: Duration = Duration::from_secs(2);
/// How often a retired sale (over and settled) is refreshed, to notice an
/// update that opens its window again.
const RETIRED_PERIOD: Duration = Duration::from_secs(30);
/// Caught-up polls in a row that find the replica short of the wins Redis
/// counted before it is bootstrapped again.
const REBOOT_AFTER_SHORT_POLLS: u32 = 20;
/// How often the list of sales is re-read.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// A sale being served, with its committer.
pub struct LiveSale {
    pub sale: Arc<Sale>,
    pub committer: Committer,
}

/// Everything the per-sale tasks need.
#[derive(Clone)]
pub struct SalesCtx {
    pub store: Arc<dyn Store>,
    pub lease: Arc<LeaseCtx>,
    pub commit: CommitCtx,
    pub refresh: Duration,
    pub sweep: Duration,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

/// The node's sales.
pub struct Sales {
    map: SkipMap<SaleId, Arc<LiveSale>>,
    ctx: SalesCtx,
}

impl Sales {
    pub fn new(ctx: SalesCtx) -> Self {
        Sales {
            map: SkipMap::new(),
            ctx,
        }
    }

    #[inline]
    pub fn get(&self, id: &SaleId) -> Option<Arc<LiveSale>> {
        self.map.get(id).map(|e| e.value().clone())
    }

    pub fn ids(&self) -> Vec<SaleId> {
        self.map.iter().map(|e| *e.key()).collect()
    }

    /// Loads every listed sale not yet served; returns how many were added.
    pub async fn discover(&self) -> Result<usize, StoreError> {
        let mut added = 0;
        for id in self.ctx.store.sales().await? {
            if self.map.contains_key(&id) {
                continue;
            }
            // One unreadable sale must not keep the others (or the node)
            // from being served; it is retried at the next discovery.
            match self.load(id).await {
                Ok(Some(_)) => added += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(sale = %id, error = %e, "cannot load sale; skipping it for now")
                }
            }
        }
        Ok(added)
    }

    /// Starts serving `id` if Redis knows it (idempotent).
    pub async fn load(&self, id: SaleId) -> Result<Option<Arc<LiveSale>>, StoreError> {
        if let Some(live) = self.get(&id) {
            return Ok(Some(live));
        }
        let Some(snap) = self.ctx.store.snapshot(&id).await? else {
            return Ok(None);
        };
        let ctx = &self.ctx;
        let sale = Arc::new(Sale::new(
            id,
            &snap,
            ctx.commit.metrics.sale_gauges(id.as_str()),
        ));
        if snap.list_only {
            let users = ctx.store.eligible_users(&id).await?;
            sale.load_eligible(snap.eligibility_version, users);
        }
        let committer = Committer::spawn(
            ctx.commit.clone(),
            sale.clone(),
            ctx.stop.clone(),
            &ctx.tasks,
        );
        let live = Arc::new(LiveSale {
            sale: sale.clone(),
            committer,
        });
        let entry = self.map.get_or_insert(id, live);
        if !Arc::ptr_eq(&entry.value().sale, &sale) {
            // Another caller won the race; its tasks serve the sale.
            return Ok(Some(entry.value().clone()));
        }
        let t = &ctx.tasks;
        t.spawn(refresh_loop(
            ctx.store.clone(),
            sale.clone(),
            ctx.refresh,
            ctx.stop.clone(),
        ));
        t.spawn(tail_loop(ctx.store.clone(), sale.clone(), ctx.stop.clone()));
        t.spawn(lease::keep(
            ctx.lease.clone(),
            sale.clone(),
            ctx.stop.clone(),
        ));
        t.spawn(lease::reclaim_loop(
            ctx.lease.clone(),
            sale.clone(),
            ctx.stop.clone(),
        ));
        t.spawn(lifecycle::sweep_loop(
            ctx.store.clone(),
            sale.clone(),
            ctx.sweep,
            ctx.stop.clone(),
        ));
        tracing::info!(sale = %id, stock = snap.stock_total, "serving sale");
        Ok(Some(entry.value().clone()))
    }

    /// Re-reads the list of sales every second until `stop`.
    pub async fn discover_loop(self: Arc<Self>) {
        let stop = self.ctx.stop.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DISCOVER_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.discover().await {
                tracing::debug!(error = %e, "sale discovery failed");
            }
        }
    }
}

/// Applies a fresh snapshot of `sale` every `period`.
async fn refresh_loop(
    store: Arc<dyn Store>,
    sale: Arc<Sale>,
    period: Duration,
    stop: CancellationToken,
) {
    loop {
        let wait = if sale.is_retired() {
            RETIRED_PERIOD
        } else if ended(&sale) {
            ENDED_PERIOD
        } else {
            period
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = refresh(&*store, &sale).await {
            tracing::debug!(sale = %sale.id, error = %e, "refresh failed");
        }
    }
}

/// True when the sale no longer admits buyers (by this node's clock).
fn ended(sale: &Sale) -> bool {
    sale.window(crate::clock::unix_ms()) == crate::stock::Window::Ended
}

/// One refresh: settings, accounting, and the eligibility list if it
/// changed. It also retires a sale that is over and settled (window past,
/// no unit in any lease, no pending ticket, every win in the replica): its
/// tailer, lease keeper, reclaimer and sweeper then sleep, and only this
/// refresh runs, every [`RETIRED_PERIOD`], so old sales cost the store
/// next to nothing. A refresh that finds it open again (its window moved)
/// revives them.
pub async fn refresh(store: &dyn Store, sale: &Sale) -> Result<(), StoreError> {
    if let Some(snap) = store.snapshot(&sale.id).await? {
        sale.apply(&snap);
        if !snap.balanced {
            tracing::error!(sale = %sale.id, ?snap, "accounting is NOT balanced");
        }
        let over = matches!(snap.state(), SaleState::Ended | SaleState::Closed);
        let settled = snap.leased == 0
            && snap.pending == 0
            && sale.stock.units() == 0
            && sale.winners_known() >= snap.orders_enqueued;
        if sale.set_retired(over && settled) {
            tracing::info!(sale = %sale.id, retired = over && settled, "sale upkeep {}", if over && settled { "retired" } else { "revived" });
        }
        if let Some(version) = sale.eligibility_stale() {
            let users = store.eligible_users(&sale.id).await?;
            sale.load_eligible(version, users);
        }
    }
    Ok(())
}

/// Loads the eligibility list now, whatever its version.
pub async fn reload_eligible(store: &dyn Store, sale: &Sale) -> Result<(), StoreError> {
    if let Some(snap) = store.snapshot(&sale.id).await? {
        let users = store.eligible_users(&sale.id).await?;
        sale.load_eligible(snap.eligibility_version, users);
    }
    Ok(())
}

/// Feeds the winners replica from the sale's order stream.
///
/// It starts from the winners hash rather than the stream's beginning,
/// because the order consumer may have trimmed delivered entries: the
/// stream's newest id is read first, then every winner from the hash, then
/// the stream is tailed from that id, so no win falls between the two.
///
/// While the sale may be sold out, each poll first reads the pool (one
/// `HMGET`), then the stream: a pool with no unit anywhere, plus a replica
/// holding every win counted with it, proves a miss is a loser (see
/// [`Sale::replica_complete`]). An unreadable entry is skipped, not read
/// forever; a replica that stays short of the wins Redis counted (entries
/// trimmed before this node read them, skipped entries) is bootstrapped
/// again from the winners hash.
async fn tail_loop(store: Arc<dyn Store>, sale: Arc<Sale>, stop: CancellationToken) {
    let Some(mut after) = bootstrap(&*store, &sale, &stop).await else {
        return;
    };
    let mut short_polls = 0u32;
    loop {
        sale.while_retired(&stop).await;
        let poll = async {
            let read_at_ms = crate::clock::unix_ms();
            let pool = if sale.may_be_sold_out() {
                store.pool(&sale.id).await?
            } else {
                None
            };
            let page = store.read_orders(&sale.id, &after, TAIL_BATCH).await?;
            Ok::<_, StoreError>((read_at_ms, pool, page))
        };
        let read = tokio::select! {
            r = poll => r,
            _ = stop.cancelled() => return,
        };
        let pause = match read {
            Ok((read_at_ms, pool, page)) => {
                for e in &page.entries {
                    sale.remember_winner(e.user, e.issued);
                }
                if let Some(last) = page.last_id {
                    after = last;
                }
                if let Some(p) = pool {
                    sale.observe_pool(p.available, p.leased, p.orders_enqueued, read_at_ms);
                }
                // Caught up, yet fewer wins known than Redis counted: some
                // were never read here. Two polls in a row, because a win
                // counted between the pool read and the stream read shows
                // up short once.
                if !page.full && sale.winners_known() < sale.orders_enqueued_hint() {
                    short_polls += 1;
                } else {
                    short_polls = 0;
                }
                if short_polls >= REBOOT_AFTER_SHORT_POLLS {
                    short_polls = 0;
                    tracing::warn!(sale = %sale.id, known = sale.winners_known(), counted = sale.orders_enqueued_hint(), "winners replica behind the store; reloading it");
                    match bootstrap(&*store, &sale, &stop).await {
                        Some(id) => after = id,
                        None => return,
                    }
                }
                if page.full {
                    Duration::ZERO
                } else if ended(&sale) {
                    ENDED_PERIOD
                } else {
                    TAIL_IDLE
                }
            }
            Err(e) => {
                tracing::debug!(sale = %sale.id, error = %e, "order stream read failed");
                Duration::from_millis(250)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Loads every winner from the winners hash and returns the stream id to
/// tail from; retries until it succeeds or `stop` (then `None`).
async fn bootstrap(store: &dyn Store, sale: &Sale, stop: &CancellationToken) -> Option<String> {
    loop {
        let boot = async {
            let last = store.last_order_id(&sale.id).await?;
            for (user, issued) in store.winners(&sale.id).await? {
                sale.remember_winner(user, issued);
            }
            Ok::<_, StoreError>(last.unwrap_or_else(|| "0".into()))
        };
        let r = tokio::select! {
            r = boot => r,
            _ = stop.cancelled() => return None,
        };
        match r {
            Ok(id) => return Some(id),
            Err(e) => {
                tracing::debug!(sale = %sale.id, error = %e, "winners bootstrap failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    }
}
