//! Listener draining (`/drain_listeners`, shutdown): the main thread flips the state, workers
//! read it. Sessions check one relaxed atomic after each burst of replies; accept loops wait on a
//! watch channel, so nothing on the request path takes a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// `--drain-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainStrategy {
    /// Envoy's default: the chance that a connection is closed after a reply grows linearly
    /// from 0 to 1 over the drain time.
    #[default]
    Gradual,
    /// Every connection closes after its next reply.
    Immediate,
}

/// Shared by the main thread and every worker running one listener.
pub struct ListenerControl {
    /// Connections close after their next complete reply (Envoy's drain close).
    draining: AtomicBool,
    /// True once the listener must stop accepting.
    stop_tx: watch::Sender<bool>,
    /// True once the drain time is over: every connection closes now (the workers wake
    /// their sessions, which check this flag; see `WorkerCommand::CloseConnections`).
    closed: AtomicBool,
    /// Gradual drain: when it started (nanoseconds after `epoch()`) and how long it lasts.
    gradual_since_ns: AtomicU64,
    gradual_span_ns: AtomicU64,
}

/// A process-wide origin for the drain timestamps kept in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
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
            closed: AtomicBool::new(false),
            gradual_since_ns: AtomicU64::new(0),
            gradual_span_ns: AtomicU64::new(0),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a connection that just finished a reply should close now: always when
    /// draining immediately, with a chance growing over the drain time when gradual.
    pub fn should_drain_close(&self) -> bool {
        if !self.is_draining() {
            return false;
        }
        let span = self.gradual_span_ns.load(Ordering::Relaxed);
        if span == 0 {
            return true;
        }
        let since = self.gradual_since_ns.load(Ordering::Relaxed);
        let now = epoch().elapsed().as_nanos() as u64;
        let elapsed = now.saturating_sub(since);
        elapsed >= span || rand::random::<u64>() % span < elapsed
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stops accepting at once and drains the connections over `drain_time` with `strategy`;
    /// when it is over, every connection still open must close: the caller then asks the
    /// workers to wake them (`WorkerCommand::CloseConnections`).
    pub async fn remove(&self, strategy: DrainStrategy, drain_time: Duration) {
        if strategy == DrainStrategy::Gradual && !drain_time.is_zero() {
            let now = epoch().elapsed().as_nanos() as u64;
            self.gradual_since_ns.store(now, Ordering::Relaxed);
            self.gradual_span_ns
                .store(drain_time.as_nanos().max(1) as u64, Ordering::Relaxed);
        }
        self.stop();
        tokio::time::sleep(drain_time).await;
        self.closed.store(true, Ordering::Relaxed);
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
