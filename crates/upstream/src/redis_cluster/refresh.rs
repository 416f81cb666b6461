//! Envoy's cluster refresh manager: redirection, failure and degraded-host events from every
//! worker that trigger an early discovery round.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redvoy_config::model::RedisClusterConfig;
use tokio::sync::Notify;
use tracing::debug;

/// Envoy's cluster refresh manager for one cluster: counts redirections, failures and
/// degraded-host events from every worker, and wakes the discovery task when one reaches its
/// threshold. Lock-free; an event counts only if no refresh was triggered within
/// `redirect_refresh_interval`.
#[derive(Debug)]
pub struct RefreshTrigger {
    pub(super) redirects: AtomicU32,
    pub(super) failures: AtomicU32,
    degraded: AtomicU32,
    redirect_threshold: u32,
    failure_threshold: u32,
    degraded_threshold: u32,
    interval: Duration,
    /// Milliseconds since `epoch` of the last triggered refresh, plus one (0: never).
    pub(super) last_triggered: AtomicU64,
    epoch: Instant,
    pub(crate) wake: Notify,
}

impl RefreshTrigger {
    pub(crate) fn new(config: &RedisClusterConfig) -> Self {
        Self {
            redirects: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            degraded: AtomicU32::new(0),
            redirect_threshold: config.redirect_refresh_threshold,
            failure_threshold: config.failure_refresh_threshold,
            degraded_threshold: config.host_degraded_refresh_threshold,
            interval: config.redirect_refresh_interval,
            last_triggered: AtomicU64::new(0),
            epoch: Instant::now(),
            wake: Notify::new(),
        }
    }

    pub fn on_redirection(&self) {
        self.on_event(&self.redirects, self.redirect_threshold);
    }

    pub fn on_failure(&self) {
        self.on_event(&self.failures, self.failure_threshold);
    }

    pub fn on_host_degraded(&self) {
        self.on_event(&self.degraded, self.degraded_threshold);
    }

    fn on_event(&self, counter: &AtomicU32, threshold: u32) {
        if threshold == 0 {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_triggered.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval.as_millis() as u64 {
            return;
        }
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if count < threshold {
            return;
        }
        // One winner per trigger: the thread that moves `last_triggered` resets and wakes.
        if self
            .last_triggered
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.redirects.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.degraded.store(0, Ordering::Relaxed);
            debug!("Redis Cluster refresh triggered");
            self.wake.notify_one();
        }
    }
}
