//! Leases: how a node gets units from the pool, keeps them, and gives them
//! back.
//!
//! - **Refill** is single-flight per sale: one caller leases, the others
//!   wait for it. The size adapts: an eighth of the pool, capped by
//!   `--lease-max`, so leases are large while stock is plentiful and shrink
//!   to one unit at the end, where no node may sit on the last units.
//!   A node prefetches when its lease runs below a quarter of the last grant.
//! - **Renewal** runs every third of the TTL while the node holds units.
//!   When no commit is in flight it also repairs drift: units that a failed
//!   commit of unknown outcome left out locally come back if Redis still
//!   has them.
//! - **Return**: an idle node (no unit taken for a TTL), a closed or ended
//!   sale, and a shutting-down node give their units back.
//! - **Reclaim**: every node periodically returns expired leases of any
//!   node to the pool; a paused or dead node's later commits are fenced by
//!   epoch in the `admit` script.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::stock::{Epoch, QuietPoint, Sale, Window};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{LeaseReply, Refusal, RenewReply, ReturnReply, Store};

/// Share of the pool one lease takes at most (1/8): with up to eight busy
/// nodes, none starves while another holds stock.
const POOL_SHARE: u64 = 8;

/// What a refill achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refill {
    /// Units may be available locally now: try to take again.
    Ready,
    /// The pool is empty and this node's lease is spent.
    SoldOut,
    Refused(Refusal),
    /// Redis failed; nothing changed.
    Failed,
}

/// What lease management needs from the server.
#[derive(Clone)]
pub struct LeaseCtx {
    pub store: Arc<dyn Store>,
    pub node: Arc<str>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub ttl_ms: u64,
    pub lease_max: u64,
}

/// Units to ask for, given the pool as last seen.
pub fn lease_size(available: u64, lease_max: u64) -> u64 {
    (available / POOL_SHARE).clamp(1, lease_max.max(1))
}

/// Leases more units for `sale`, or waits for the refill already running.
///
/// The lease call runs in a task of its own: a buyer who hangs up or times
/// out drops this future, but the call still completes, its grant is still
/// applied, and the single-flight flag is still cleared (by a guard, even if
/// the task panics). Before, a dropped leader left the flag set and the node
/// never leased that sale again.
pub async fn refill(ctx: &Arc<LeaseCtx>, sale: &Arc<Sale>) -> Refill {
    // Register interest before trying to lead, so the leader's wake-up
    // cannot slip between our failed attempt and our wait.
    let notified = sale.refilled.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let Some(lead) = RefillLead::begin(sale) else {
        let _ = tokio::time::timeout(Duration::from_millis(ctx.ttl_ms), notified).await;
        return Refill::Ready;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let outcome = lease_once(&ctx, &lead.0).await;
        drop(lead);
        outcome
    })
    .await
    .unwrap_or(Refill::Failed)
}

/// Starts a background refill when the lease runs low.
pub fn maybe_prefetch(ctx: &Arc<LeaseCtx>, sale: &Arc<Sale>) {
    let units = u64::from(sale.stock.units());
    // Relaxed: a sizing hint; a stale one prefetches a little early or late.
    let low = sale.last_grant.load(Relaxed) / 4;
    if units <= low && !sale.is_sold_out() && sale.available_hint() > 0 {
        if let Some(lead) = RefillLead::begin(sale) {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                lease_once(&ctx, &lead.0).await;
            });
        }
    }
}

/// The single-flight lead of a refill; ends it (and wakes the waiters)
/// when dropped, however the refill ends.
struct RefillLead(Arc<Sale>);

impl RefillLead {
    fn begin(sale: &Arc<Sale>) -> Option<Self> {
        sale.begin_refill().then(|| RefillLead(sale.clone()))
    }
}

impl Drop for RefillLead {
    fn drop(&mut self) {
        self.0.end_refill();
    }
}

async fn lease_once(ctx: &LeaseCtx, sale: &Sale) -> Refill {
    let want = lease_size(sale.available_hint(), ctx.lease_max);
    let q = sale.quiet_point();
    let read_at_ms = ctx.clock.now_ms();
    let m = &ctx.metrics;
    match ctx.store.lease(&sale.id, &ctx.node, want, ctx.ttl_ms).await {
        Ok(LeaseReply::Granted {
            granted,
            epoch,
            lease_units,
            available,
            leased,
            orders_enqueued,
            ..
        }) => {
            sale.observe_pool(available, leased, orders_enqueued, read_at_ms);
            let Some(epoch) = epoch_of(epoch) else {
                // Never in practice (see `epoch_of`); the lease's units are
                // left to expire and be reclaimed.
                m.leases.error.increment(1);
                tracing::error!(sale = %sale.id, epoch, "lease epoch beyond 32 bits; not used");
                return Refill::Failed;
            };
            if granted > 0 {
                m.leases.granted.increment(1);
                m.lease_units.increment(granted);
                sale.stock.grant(epoch, units_of(granted));
                // Relaxed: see `maybe_prefetch`.
                sale.last_grant.store(granted, Relaxed);
                sale.gauges.local_units.set(f64::from(sale.stock.units()));
                Refill::Ready
            } else {
                m.leases.empty.increment(1);
                if sale.stock.units() > 0 {
                    Refill::Ready
                } else if epoch > 0 && lease_units > 0 {
                    // The pool is empty but Redis still holds units of this
                    // node's live lease that the counter lost track of (a
                    // commit of unknown outcome, a grant whose reply was
                    // lost). They are this node's to sell: not sold out.
                    adopt(sale, q, epoch, lease_units).await;
                    Refill::Ready
                } else {
                    sale.mark_sold_out();
                    Refill::SoldOut
                }
            }
        }
        Ok(LeaseReply::Refused(r)) => Refill::Refused(r),
        Err(e) => {
            m.leases.error.increment(1);
            tracing::warn!(sale = %sale.id, error = %e, "lease failed");
            Refill::Failed
        }
    }
}

/// Takes back units of this node's live lease `epoch` that Redis holds and
/// the local counter lost. A lease the counter never learnt of (its grant's
/// reply was lost) replaces the dead one; the units of the known lease are
/// raised only when no commit moved since `q`, else the commits in flight
/// may spend them and the buyer simply tries again.
async fn adopt(sale: &Sale, q: Option<QuietPoint>, epoch: Epoch, lease_units: u64) {
    let units = units_of(lease_units);
    if sale.stock.epoch() != epoch {
        if sale.inflight() == 0 {
            sale.stock.grant(epoch, units);
            return;
        }
    } else if q.is_some_and(|q| sale.reconcile(q, epoch, units)) {
        return;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// A lease epoch as the local counter keeps it (32 bits beside the units
/// in one word), or `None` past that. Redis counts a sale's leases from 1;
/// 2^32 of them would take a century at one new lease a second. Checked,
/// not saturated: two epochs past the limit must never look like one.
fn epoch_of(epoch: u64) -> Option<Epoch> {
    Epoch::try_from(epoch).ok()
}

/// Units as the local counter keeps them (saturating).
fn units_of(units: u64) -> u32 {
    units.min(u64::from(u32::MAX)) as u32
}

/// Renews, repairs or returns `sale`'s lease every third of the TTL until
/// `stop`; then returns the lease (after in-flight commits settle).
pub async fn keep(ctx: Arc<LeaseCtx>, sale: Arc<Sale>, stop: CancellationToken) {
    let period = Duration::from_millis((ctx.ttl_ms / 3).max(10));
    loop {
        sale.while_retired(&stop).await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => break,
        }
        sale.gauges.local_units.set(f64::from(sale.stock.units()));
        let epoch = sale.stock.epoch();
        if epoch == 0 || (sale.stock.units() == 0 && sale.inflight() == 0) {
            continue;
        }
        let now = ctx.clock.now_ms();
        // Relaxed: an idleness hint; returning also waits for no flight.
        let idle = now.saturating_sub(sale.last_take_ms.load(Relaxed)) > ctx.ttl_ms;
        let over = sale.window(now) == Window::Ended;
        if (idle || over) && sale.inflight() == 0 {
            give_back(&ctx, &sale).await;
            continue;
        }
        let quiet = sale.quiet_point();
        match ctx
            .store
            .renew(&sale.id, &ctx.node, u64::from(epoch), ctx.ttl_ms)
            .await
        {
            Ok(RenewReply::Renewed { lease_units, .. }) => {
                if let Some(q) = quiet {
                    sale.reconcile(q, epoch, units_of(lease_units));
                }
            }
            Ok(RenewReply::Fenced) => {
                tracing::warn!(sale = %sale.id, epoch, "lease lost (expired or reclaimed); leasing anew on demand");
                sale.stock.clear(epoch);
            }
            Err(e) => tracing::warn!(sale = %sale.id, error = %e, "lease renewal failed"),
        }
    }
    // Shutdown: wait briefly for commits in flight, then return the lease.
    for _ in 0..100 {
        if sale.inflight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    give_back(&ctx, &sale).await;
}

/// Returns the node's lease of `sale` to the pool.
pub async fn give_back(ctx: &LeaseCtx, sale: &Sale) {
    let epoch = sale.stock.epoch();
    if epoch == 0 {
        return;
    }
    // Clear first: a buyer racing with the return takes nothing that would
    // then be fenced.
    sale.stock.clear(epoch);
    match ctx
        .store
        .return_lease(&sale.id, &ctx.node, u64::from(epoch))
        .await
    {
        Ok(ReturnReply::Returned(units)) if units > 0 => {
            tracing::info!(sale = %sale.id, units, "lease returned");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(sale = %sale.id, error = %e, "lease return failed; it will expire and be reclaimed")
        }
    }
}

/// Reclaims expired leases of any node, every half TTL, until `stop`.
///
/// Skipped while the node's last view showed no unit in any lease: there
/// is nothing to reclaim, and an idle fleet's nodes would otherwise each
/// pay a round trip a period for every sale. A lease taken since is seen
/// by the next view, at most a refresh period later (0.8 s while the sale
/// is dormant here), which delays its reclaim by no more than that.
pub async fn reclaim_loop(ctx: Arc<LeaseCtx>, sale: Arc<Sale>, stop: CancellationToken) {
    let period = Duration::from_millis((ctx.ttl_ms / 2).max(10));
    loop {
        sale.while_retired(&stop).await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        if sale.leased_hint() == 0 {
            continue;
        }
        // One scan per interval across the fleet, a little shorter than
        // this node's own interval (see `lua/reclaim.lua`).
        match ctx.store.reclaim(&sale.id, period - period / 4).await {
            Ok((leases, units)) if leases > 0 => {
                tracing::info!(sale = %sale.id, leases, units, "reclaimed expired leases");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(sale = %sale.id, error = %e, "reclaim failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_large_while_stock_is_plentiful_and_shrink_to_one_at_the_end() {
        assert_eq!(lease_size(100_000, 512), 512);
        assert_eq!(lease_size(800, 512), 100);
        assert_eq!(lease_size(7, 512), 1);
        assert_eq!(lease_size(0, 512), 1);
    }

    #[test]
    fn an_epoch_beyond_32_bits_is_refused_rather_than_squeezed() {
        assert_eq!(epoch_of(7), Some(7));
        assert_eq!(epoch_of(u64::from(u32::MAX)), Some(u32::MAX));
        assert_eq!(epoch_of(u64::from(u32::MAX) + 1), None);
    }
}
