//! Shutdown signalling.
//!
//! One [`CancellationToken`] per server is the "stop" broadcast: SIGTERM or
//! SIGINT cancels it, and every task holding a child token sees it. Tests
//! cancel it by hand instead of sending signals, so several servers can live
//! and die in one process.

pub use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process receives SIGTERM or SIGINT. The
/// handlers are installed before this returns (not lazily in the spawned
/// task), so a signal that arrives right after start-up is not lost to the
/// default action.
pub fn cancel_on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // Without signal handlers we can still stop on Ctrl-C.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}
