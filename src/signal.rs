//! What ends the process: SIGTERM, SIGINT or `POST /quitquitquit`.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::error;

/// Resolves on SIGTERM, SIGINT (Ctrl-C), or once `quit` becomes `true`; at once (so the server
/// shuts down) when SIGTERM cannot be watched.
pub async fn shutdown(mut quit: watch::Receiver<bool>) {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = async { while quit.changed().await.is_ok() { if *quit.borrow() { break; } } } => {}
    }
}
