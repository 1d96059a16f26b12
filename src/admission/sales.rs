//! The sales this node serves, and the tasks that keep its view of each
//! sale current.
//!
//! The registry is a lock-free skip list keyed by sale id: the request
//! path looks a sale up without locking or asking Redis. New sales are
//! discovered from Redis every second (and at once when created through
//! this node); each sale then gets:
//! - a watcher, which reads its settings, accounting and eligibility
//!   (every `--refresh-ms`) and the winners digest feeding the winners
//!   replica, in one round trip per poll, and polls seldom while no buyer
//!   asks about the sale (dormant, see `watch_loop`),
//! - a committer, a lease keeper, a reclaimer and a sweeper.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_skiplist::SkipMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::commit::{CommitCtx, Committer};
use super::lease::{self, LeaseCtx};
use super::stock::Sale;
use super::Admission;
use crate::clock::Clock;
use crate::id::SaleId;
use crate::lifecycle;
use crate::sale::{SaleState, Snapshot};
use crate::store::{Head, PollHead, Store, StoreError};

/// Bytes of the winners digest read per call (8 per win).
const TAIL_BYTES: u64 = 64 * 1024;
/// Pause between digest reads once caught up, while wins keep coming:
/// bounds how long a winner from another node is unknown here.
const TAIL_IDLE: Duration = Duration::from_millis(50);
/// Longest pause between digest reads that find nothing new while the sale
/// may be sold out: each read renews the sold-out proof, which answers a
/// replica miss from memory only while under
/// [`PROOF_FRESH_MS`](super::stock::PROOF_FRESH_MS) old, so
/// this leaves a read more than half of that to come back in.
const TAIL_QUIET_SOLD_OUT: Duration = Duration::from_millis(100);
/// Longest pause between digest reads that find nothing new while units
/// remain. A winner from another node unknown here meanwhile costs a store
/// call, never a wrong answer: the buyer's commit finds the win and
/// answers it (`admit` replays it).
const TAIL_QUIET: Duration = Duration::from_millis(200);
/// How often a sale no buyer has asked this node about for
/// [`DORMANT_AFTER_MS`](super::stock::DORMANT_AFTER_MS) is polled (view,
/// digest and, if it may be sold out, pool, in one round trip). Nothing
/// read then is needed before a buyer comes, and the first one wakes the
/// watcher for a poll at once; under a second, so the sale's state a
/// status request reads is never older than DESIGN §3 allows.
const DORMANT_PERIOD: Duration = Duration::from_millis(800);
/// How often a sale past its window is refreshed and tailed: it can only
/// change by releases, sweeps and admin actions, none of them urgent.
const ENDED_PERIOD: Duration = Duration::from_secs(2);
/// Every how many refreshes a node runs the full accounting cross-check
/// (the `balanced` gauge); the others read settings and counters only.
const CHECK_EVERY: u64 = 25;
/// Lease holders up to which every node runs the cross-check every
/// [`CHECK_EVERY`] refreshes; see [`views_between_checks`].
const CHECKS_PER_ROUND: u64 = 20;
/// How often a retired sale (over and settled) is refreshed, to notice an
/// update that opens its window again.
const RETIRED_PERIOD: Duration = Duration::from_secs(30);
/// Pause before polling again after a poll failed.
const POLL_RETRY: Duration = Duration::from_millis(250);
/// How often the list of sales is re-read.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);

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
    map: SkipMap<SaleId, Arc<Admission>>,
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
    pub fn get(&self, id: &SaleId) -> Option<Arc<Admission>> {
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
    pub async fn load(&self, id: SaleId) -> Result<Option<Arc<Admission>>, StoreError> {
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
        let live = Arc::new(Admission::new(sale.clone(), committer, ctx.lease.clone()));
        let entry = self.map.get_or_insert(id, live);
        if !Arc::ptr_eq(&entry.value().sale, &sale) {
            // Another caller won the race; its tasks serve the sale.
            return Ok(Some(entry.value().clone()));
        }
        let t = &ctx.tasks;
        t.spawn(watch_loop(
            ctx.store.clone(),
            ctx.lease.clock.clone(),
            sale.clone(),
            ctx.refresh,
            ctx.stop.clone(),
        ));
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

/// Views between two of this node's full cross-checks, given how many
/// lease records the last one read: [`CHECK_EVERY`], stretched once more
/// than [`CHECKS_PER_ROUND`] nodes hold a lease so that the whole fleet
/// runs about that many checks per [`CHECK_EVERY`] refreshes, whatever its
/// size. A check reads every lease record: one per node per round would
/// cost the store the square of the selling fleet. The `balanced` alert
/// takes the lowest value over the nodes, so the fleet still tells within
/// a round (each node keeps the value of its own last check).
fn views_between_checks(lease_records: u64) -> u64 {
    CHECK_EVERY * lease_records.div_ceil(CHECKS_PER_ROUND).max(1)
}

/// True when the sale no longer admits buyers (by this node's clock).
fn ended(sale: &Sale, clock: &dyn Clock) -> bool {
    sale.window(clock.now_ms()) == super::stock::Window::Ended
}

/// One refresh: settings, accounting, and the eligibility list if it
/// changed. It also retires a sale that is over and settled (window past,
/// no unit in any lease, no pending ticket, every win in the replica): its
/// lease keeper, reclaimer and sweeper then sleep, and its watcher only
/// views it, every `RETIRED_PERIOD`, so old sales cost the store next to
/// nothing. A refresh that finds it open again (its window moved) revives
/// them.
pub async fn refresh(store: &dyn Store, sale: &Sale) -> Result<(), StoreError> {
    let snap = store.snapshot(&sale.id).await?;
    after_view(store, sale, snap).await
}

/// Takes in a view or snapshot of `sale` (`None`: the store does not
/// know it): applies it, retires or revives the sale's upkeep, and reloads
/// the eligibility list if it changed.
async fn after_view(
    store: &dyn Store,
    sale: &Sale,
    snap: Option<Snapshot>,
) -> Result<(), StoreError> {
    if let Some(snap) = snap {
        sale.apply(&snap);
        if snap.checked && !snap.balanced {
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

/// Keeps this node's picture of `sale` current: its settings and
/// counters (the view, every `refresh`), and its winners replica (the
/// winners digest, tailed). Both are read in one poll, one round trip:
/// what a node costs the store while a sale is quiet is its round trips,
/// and a large fleet spends most of a sale's life quiet.
///
/// The digest is a Redis string to which `admit` appends 8 bytes per win in
/// the order wins are counted; it is never trimmed, so reading it from
/// offset 0 bootstraps a node, and reading on from its offset tails it. A
/// node learns a winner for 8 bytes of reply, not a stream entry: a larger
/// fleet costs the store next to nothing more per winner.
///
/// Reads that find nothing new space out, doubling from [`TAIL_IDLE`] up
/// to [`TAIL_QUIET`] ([`TAIL_QUIET_SOLD_OUT`] while the sale may be sold
/// out), and the first new win brings them back to [`TAIL_IDLE`]. The view
/// rides on the first read due at or after its time, and both times are
/// then counted from that poll, so once a sale is quiet (digest every 200
/// ms, view every 200 ms) each poll carries both.
///
/// While the sale may be sold out, every poll reads the pool before the
/// digest (in the view when one is due, else alone): a pool with no unit
/// anywhere, plus every win counted with it read, proves a miss is a loser
/// (see [`Sale::replica_complete`]).
///
/// A sale no buyer has asked this node about for two seconds is dormant
/// here ([`Sale::dormant`]): view and digest every [`DORMANT_PERIOD`],
/// whatever they find, since nothing they bring is needed before a buyer
/// comes. The first buyer wakes the watcher for a poll at once; until it
/// returns, the replica's misses wait for it rather than ask the store
/// (`Admission::proven_loser_after_renewal`). An idle fleet then costs
/// the store a round trip per node every 0.8 s, a sold-out one no more.
///
/// Past its window a sale is polled every [`ENDED_PERIOD`]; retired (over
/// and settled), only viewed, every [`RETIRED_PERIOD`], to notice an update
/// that opens it again. Every [`CHECK_EVERY`]th view (fewer once many
/// nodes hold a lease: [`views_between_checks`]) is the full accounting
/// with its cross-checks, a script of its own.
async fn watch_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sale: Arc<Sale>,
    refresh: Duration,
    stop: CancellationToken,
) {
    let mut quiet = TAIL_IDLE;
    // Views left before the next full cross-check.
    let mut to_check = CHECK_EVERY;
    // The sale was just loaded from a full snapshot: first the digest.
    let mut view_at = Instant::now() + refresh;
    let mut tail_at = Instant::now();
    loop {
        let retired = sale.is_retired();
        let next = if retired {
            view_at
        } else {
            view_at.min(tail_at)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            // A revival by another path (an admin update through this
            // node) resumes the tail at once.
            _ = sale.while_retired(&stop), if retired => {
                tail_at = Instant::now();
                continue;
            }
            // A buyer came back to a dormant sale: view, digest and pool
            // now, so the buyer's checks from memory have fresh facts.
            _ = sale.demand_returned(), if !retired => {
                tail_at = Instant::now();
                view_at = view_at.min(tail_at);
                continue;
            }
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let retired = sale.is_retired();
        let mut head = if !retired && sale.may_be_sold_out() {
            PollHead::Pool
        } else {
            PollHead::Nothing
        };
        let view_due = now >= view_at;
        if view_due {
            to_check = to_check.saturating_sub(1);
            if to_check == 0 {
                to_check = CHECK_EVERY;
                let checked = async {
                    let snap = store.snapshot(&sale.id).await?;
                    if let Some(s) = &snap {
                        to_check = views_between_checks(s.lease_records);
                    }
                    after_view(&*store, &sale, snap).await
                };
                let r = tokio::select! {
                    r = checked => r,
                    _ = stop.cancelled() => return,
                };
                if let Err(e) = r {
                    tracing::debug!(sale = %sale.id, error = %e, "refresh failed");
                }
            } else {
                head = PollHead::View;
            }
        }
        if retired && head != PollHead::View {
            if view_due {
                view_at = now + RETIRED_PERIOD;
            }
            continue;
        }
        let poll = async {
            let read_at_ms = clock.now_ms();
            let offset = sale.digests_offset();
            let (head, bytes) = store.poll(&sale.id, head, offset, TAIL_BYTES).await?;
            Ok::<_, StoreError>((read_at_ms, head, offset, bytes))
        };
        let read = tokio::select! {
            r = poll => r,
            _ = stop.cancelled() => return,
        };
        let (read_at_ms, polled, offset, bytes) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(sale = %sale.id, error = %e, "sale poll failed");
                let again = Instant::now() + POLL_RETRY;
                tail_at = again;
                if view_due {
                    view_at = again;
                }
                continue;
            }
        };
        // The digest first, then the pool read before it: the proof needs
        // every win the pool counted in the replica.
        let full = bytes.len() as u64 >= TAIL_BYTES;
        let fresh = !bytes.is_empty();
        sale.read_digests(offset, &bytes);
        if let Some(p) = polled.pool() {
            sale.observe_pool(p.available, p.leased, p.orders_enqueued, read_at_ms);
        }
        if let Head::View(snap) = polled {
            if let Err(e) = after_view(&*store, &sale, snap).await {
                tracing::debug!(sale = %sale.id, error = %e, "refresh failed");
            }
        }
        let now = Instant::now();
        let ended = ended(&sale, &*clock);
        let dormant = sale.dormant(clock.now_ms());
        if view_due {
            view_at = now
                + if sale.is_retired() {
                    RETIRED_PERIOD
                } else if ended {
                    ENDED_PERIOD
                } else if dormant {
                    DORMANT_PERIOD.max(refresh)
                } else {
                    refresh
                };
        }
        let pause = if dormant {
            DORMANT_PERIOD
        } else if fresh {
            quiet = TAIL_IDLE;
            TAIL_IDLE
        } else {
            let cap = if sale.may_be_sold_out() {
                TAIL_QUIET_SOLD_OUT
            } else {
                TAIL_QUIET
            };
            let pause = quiet.min(cap);
            quiet = (pause * 2).min(cap);
            pause
        };
        tail_at = now
            + if full {
                Duration::ZERO
            } else if ended {
                ENDED_PERIOD
            } else {
                pause
            };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_fleet_checks_every_round_and_a_large_one_about_twenty_times_a_round_in_all() {
        for holders in [0, 1, 20] {
            assert_eq!(views_between_checks(holders), CHECK_EVERY);
        }
        assert_eq!(views_between_checks(21), 2 * CHECK_EVERY);
        // 1,000 selling nodes: each checks once in 50 rounds, the fleet 20
        // times a round.
        let every = views_between_checks(1_000);
        assert_eq!(every, 50 * CHECK_EVERY);
        assert_eq!(1_000 * CHECK_EVERY / every, CHECKS_PER_ROUND);
    }
}
