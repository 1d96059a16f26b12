//! Shutdown signalling.
//!
//! One [`CancellationToken`] per server is the "stop" broadcast: SIGTERM or
//! SIGINT cancels it, and every task holding a child token sees it. Tests
//! cancel it by hand instead of sending signals, so several servers can live
//! and die in one process.

pub use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process receives SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
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
}
