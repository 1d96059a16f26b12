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

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::stock::{Sale, Window};
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
pub async fn refill(ctx: &LeaseCtx, sale: &Sale) -> Refill {
    // Register interest before trying to lead, so the leader's wake-up
    // cannot slip between our failed attempt and our wait.
    let notified = sale.refilled.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if !sale.begin_refill() {
        let _ = tokio::time::timeout(Duration::from_millis(ctx.ttl_ms), notified).await;
        return Refill::Ready;
    }
    let outcome = lease_once(ctx, sale).await;
    sale.end_refill();
    outcome
}

/// Starts a background refill when the lease runs low.
pub fn maybe_prefetch(ctx: &Arc<LeaseCtx>, sale: &Arc<Sale>) {
    let units = u64::from(sale.stock.units());
    let low = sale.last_grant.load(Relaxed) / 4;
    if units <= low && !sale.is_sold_out() && sale.available_hint() > 0 {
        let (ctx, sale) = (ctx.clone(), sale.clone());
        tokio::spawn(async move {
            if sale.begin_refill() {
                lease_once(&ctx, &sale).await;
                sale.end_refill();
            }
        });
    }
}

async fn lease_once(ctx: &LeaseCtx, sale: &Sale) -> Refill {
    let want = lease_size(sale.available_hint(), ctx.lease_max);
    let m = &ctx.metrics;
    match ctx.store.lease(&sale.id, &ctx.node, want, ctx.ttl_ms).await {
        Ok(LeaseReply::Granted {
            granted,
            epoch,
            available,
            leased,
            orders_enqueued,
            ..
        }) => {
            sale.observe_pool(available, leased, orders_enqueued);
            if granted > 0 {
                m.leases[0].increment(1);
                m.lease_units.increment(granted);
                sale.stock
                    .grant(epoch as u32, granted.min(u64::from(u32::MAX)) as u32);
                sale.last_grant.store(granted, Relaxed);
                sale.gauges.local_units.set(f64::from(sale.stock.units()));
                Refill::Ready
            } else {
                m.leases[1].increment(1);
                if sale.stock.units() > 0 {
                    Refill::Ready
                } else {
                    sale.mark_sold_out();
                    Refill::SoldOut
                }
            }
        }
        Ok(LeaseReply::Refused(r)) => Refill::Refused(r),
        Err(e) => {
            m.leases[2].increment(1);
            tracing::warn!(sale = %sale.id, error = %e, "lease failed");
            Refill::Failed
        }
    }
}

/// Renews, repairs or returns `sale`'s lease every third of the TTL until
/// `stop`; then returns the lease (after in-flight commits settle).
pub async fn keep(ctx: Arc<LeaseCtx>, sale: Arc<Sale>, stop: CancellationToken) {
    let period = Duration::from_millis((ctx.ttl_ms / 3).max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => break,
        }
        sale.gauges.local_units.set(f64::from(sale.stock.units()));
        let epoch = sale.stock.epoch();
        if epoch == 0 || (sale.stock.units() == 0 && sale.inflight.load(Relaxed) == 0) {
            continue;
        }
        let now = ctx.clock.now_ms();
        let idle = now.saturating_sub(sale.last_take_ms.load(Relaxed)) > ctx.ttl_ms;
        let over = sale.window(now) == Window::Ended;
        if (idle || over) && sale.inflight.load(Relaxed) == 0 {
            give_back(&ctx, &sale).await;
            continue;
        }
        let quiet = (sale.inflight.load(Relaxed), sale.settled.load(Relaxed));
        match ctx
            .store
            .renew(&sale.id, &ctx.node, u64::from(epoch), ctx.ttl_ms)
            .await
        {
            Ok(RenewReply::Renewed { lease_units, .. }) => {
                if quiet.0 == 0
                    && (sale.inflight.load(Relaxed), sale.settled.load(Relaxed)) == quiet
                {
                    sale.stock
                        .raise_to(epoch, lease_units.min(u64::from(u32::MAX)) as u32);
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
        if sale.inflight.load(Relaxed) == 0 {
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
pub async fn reclaim_loop(ctx: Arc<LeaseCtx>, sale: Arc<Sale>, stop: CancellationToken) {
    let period = Duration::from_millis((ctx.ttl_ms / 2).max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        match ctx.store.reclaim(&sale.id).await {
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
}
