//! Listener draining (`/drain_listeners`, shutdown): the main thread flips the state, workers
//! read it. Sessions check one relaxed atomic after each burst of replies; accept loops wait on a
//! watch channel, so nothing on the request path takes a lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Shared by the main thread and every worker running one listener.
pub struct ListenerControl {
    /// Connections close after their next complete reply (Envoy's drain close).
    draining: AtomicBool,
    /// True once the listener must stop accepting.
    stop_tx: watch::Sender<bool>,
}

impl Default for ListenerControl {
    fn default() -> Self {
        Self::new()
    }
}

impl ListenerControl {
    pub fn new() -> Self {
        Self {
            draining: AtomicBool::new(false),
            stop_tx: watch::channel(false).0,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn is_stopped(&self) -> bool {
        *self.stop_tx.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Starts draining. Graceful: keep accepting for `drain_time` while connections close as
    /// they go idle, then stop; otherwise stop accepting at once.
    pub async fn drain(&self, graceful: bool, drain_time: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        if graceful {
            tokio::time::sleep(drain_time).await;
        }
        self.stop_tx.send_replace(true);
    }

    /// Closes connections after their replies but keeps accepting (`?skip_exit`).
    pub fn start_drain_close(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Stops accepting now (shutdown, listener removal).
    pub fn stop(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.stop_tx.send_replace(true);
    }
}
