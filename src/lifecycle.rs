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

use tokio_util::sync::CancellationToken;

use crate::admission::stock::Sale;
use crate::store::Store;

/// Most tickets one sweep call releases; a larger backlog takes more calls.
const SWEEP_BATCH: u64 = 1000;

/// Sweeps expired tickets of `sale` every `period` until `stop`.
pub async fn sweep_loop(
    store: Arc<dyn Store>,
    sale: Arc<Sale>,
    period: Duration,
    stop: CancellationToken,
) {
    loop {
        sale.while_retired(&stop).await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        loop {
            match store.sweep(&sale.id, SWEEP_BATCH).await {
                Ok(n) if n == SWEEP_BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(sale = %sale.id, released = n, "released expired tickets");
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(sale = %sale.id, error = %e, "sweep failed");
                    break;
                }
            }
        }
    }
}
