//! Ticket lifecycle: pending until the order backend confirms (paid) or
//! releases (payment failed); a pending ticket past its TTL is released by
//! the sweeper and its unit returns to the pool.
//!
//! Confirm and release are single scripts (`lua/confirm.lua`,
//! `lua/release.lua`), idempotent, and mutually exclusive: whichever lands
//! first wins, and the other answers 409 with the state it found. A confirm
//! that arrives after the TTL finds the ticket released (the backend
//! refunds), even if the sweeper has not run yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::stock::Sale;
use crate::store::{NextSweep, Store};

/// Most tickets one sweep call releases; a larger backlog takes more calls.
const SWEEP_BATCH: u64 = 1000;

/// Sweeps expired tickets of `sale` until `stop`: checks every `period`
/// (with no store call) whether a sweep is due, and sweeps when one is.
///
/// Each sweep says when the next pending ticket falls due, so a node calls
/// the store only then: a sale whose tickets are all paid or far from due
/// costs the store no sweep, where a call every `period` from every node
/// would cost it the size of the fleet each `period`. A ticket falls due at
/// most `period` before a node sweeps it. When the sweep found no pending
/// ticket, the next is due one TTL after it at the earliest, the TTL being
/// the sale's as this node sees it now (an update that shortens it applies
/// to tickets issued after it). After a failed sweep, the next comes after
/// `period`.
///
/// A confirm or release through this node asks for a sweep at the next
/// check too: the sweep cursor then passes the settled entries, and the
/// order consumer's trim, which keeps every entry after the cursor, can
/// remove them instead of holding them until the next ticket falls due.
pub async fn sweep_loop(
    store: Arc<dyn Store>,
    sale: Arc<Sale>,
    period: Duration,
    stop: CancellationToken,
) {
    let mut due = Due::Now;
    loop {
        sale.while_retired(&stop).await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let asked = sale.sweep_was_asked();
        let ready = asked
            || match due {
                Due::Now => true,
                Due::At(at) => now >= at,
                Due::TtlAfter(swept) => now >= swept + Duration::from_millis(sale.ticket_ttl_ms()),
            };
        if !ready {
            continue;
        }
        loop {
            let swept_at = Instant::now();
            match store.sweep(&sale.id, SWEEP_BATCH).await {
                Ok(s) => {
                    if s.released > 0 {
                        tracing::info!(sale = %sale.id, released = s.released, "released expired tickets");
                    }
                    due = match s.next {
                        NextSweep::Now => continue,
                        NextSweep::In(wait) => Due::At(swept_at + wait),
                        NextSweep::AfterTtl => Due::TtlAfter(swept_at),
                    };
                }
                Err(e) => {
                    tracing::debug!(sale = %sale.id, error = %e, "sweep failed");
                    due = Due::Now;
                }
            }
            break;
        }
    }
}

/// When a sale's next sweep is due.
#[derive(Debug, Clone, Copy)]
enum Due {
    Now,
    At(Instant),
    /// One TTL after this sweep, which found no pending ticket.
    TtlAfter(Instant),
}
