//! Outlier detection (Envoy's `Outlier::DetectorImpl`), the consecutive-failure kinds: the data
//! path reports each upstream result; `consecutive_5xx`, `consecutive_gateway_failure` and
//! (with `split_external_local_origin_errors`) `consecutive_local_origin_failure` failures in a
//! row eject the host (`FAILED_OUTLIER_CHECK`) when `max_ejection_percent` allows and the
//! enforcing percentage draws it; every `interval` ejected hosts whose time is up come back.
//!
//! What a redis_proxy upstream reports, as Envoy's Redis client does: every reply, error
//! replies included, is a success; a connection closed (or refused) with requests pending is a
//! connect failure, a connect or op timeout a timeout, a reply that is not RESP a failure.
//! Without the split, connect failures and timeouts count as gateway errors (503/504) and so
//! towards both `consecutive_5xx` and `consecutive_gateway_failure`.
//!
//! The success path is one relaxed load per counter when nothing failed; the detector's lock is
//! taken only when a threshold is reached and on the interval timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use redvoy_config::model;
use redvoy_stats::{Counter, Gauge, Store};
use tracing::{debug, info};

use crate::cluster::Cluster;
use crate::event_log::EventLog;
use crate::host::{HealthFlag, Host};

/// What a request to a host came to (Envoy's `Outlier::Result`, the kinds redis_proxy uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierResult {
    /// A reply, whatever it says.
    ExtOriginRequestSuccess,
    /// A reply that could not be decoded.
    ExtOriginRequestFailed,
    /// Connection refused, or closed with requests pending.
    LocalOriginConnectFailed,
    /// Connect or op timeout.
    LocalOriginTimeout,
}

/// A host's consecutive-failure counters (Envoy's `DetectorHostMonitorImpl`).
#[derive(Debug, Default)]
pub struct OutlierCounters {
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    consecutive_local_origin_failure: AtomicU32,
}

impl OutlierCounters {
    fn reset(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        self.consecutive_local_origin_failure
            .store(0, Ordering::Relaxed);
    }
}

/// Zeroes a counter without a write when it already is zero (the common success path).
fn clear(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

/// Which consecutive-failure kind reached its threshold (Envoy's `OutlierEjectionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
}

impl Kind {
    fn stat_suffix(self) -> &'static str {
        match self {
            Kind::Consecutive5xx => "consecutive_5xx",
            Kind::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Kind::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
        }
    }

    fn event_name(self) -> &'static str {
        match self {
            Kind::Consecutive5xx => "CONSECUTIVE_5XX",
            Kind::ConsecutiveGatewayFailure => "CONSECUTIVE_GATEWAY_FAILURE",
            Kind::ConsecutiveLocalOriginFailure => "CONSECUTIVE_LOCAL_ORIGIN_FAILURE",
        }
    }
}

/// `cluster.<name>.outlier_detection.*` (Envoy's `ALL_OUTLIER_DETECTION_STATS`).
#[derive(Debug, Clone)]
struct OutlierStats {
    ejections_active: Gauge,
    ejections_overflow: Counter,
    ejections_enforced_total: Counter,
    /// Deprecated in Envoy, still counted: consecutive-5xx detections that `max_ejection_percent`
    /// let through, enforced or not.
    ejections_total: Counter,
    /// Deprecated in Envoy, still counted: consecutive-5xx detections.
    ejections_consecutive_5xx: Counter,
    /// Per kind: (detected, enforced).
    per_kind: HashMap<&'static str, (Counter, Counter)>,
}

impl OutlierStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let p = format!("cluster.{cluster}.outlier_detection.");
        let c = |name: &str| store.counter(&format!("{p}{name}"));
        let mut per_kind = HashMap::new();
        for kind in [
            Kind::Consecutive5xx,
            Kind::ConsecutiveGatewayFailure,
            Kind::ConsecutiveLocalOriginFailure,
        ] {
            let s = kind.stat_suffix();
            per_kind.insert(
                s,
                (
                    c(&format!("ejections_detected_{s}")),
                    c(&format!("ejections_enforced_{s}")),
                ),
            );
        }
        // The kinds redvoy does not detect, listed at zero as Envoy lists them.
        for s in [
            "success_rate",
            "local_origin_success_rate",
            "failure_percentage",
            "local_origin_failure_percentage",
        ] {
            c(&format!("ejections_detected_{s}"));
            c(&format!("ejections_enforced_{s}"));
        }
        c("ejections_detected_degradation");
        c("ejections_success_rate");
        Self {
            ejections_active: store.gauge(&format!("{p}ejections_active")),
            ejections_overflow: c("ejections_overflow"),
            ejections_enforced_total: c("ejections_enforced_total"),
            ejections_total: c("ejections_total"),
            ejections_consecutive_5xx: c("ejections_consecutive_5xx"),
            per_kind,
        }
    }
}

/// One host's ejection history.
#[derive(Debug, Clone, Copy)]
struct Ejection {
    /// When the host was last ejected (it is ejected while its flag is set).
    at: Instant,
    /// Multiplies `base_ejection_time`: grows with each ejection, shrinks with each interval
    /// the host stays in (Envoy's `eject_time_backoff`).
    backoff: u32,
    /// When the host last came back.
    returned: Option<Instant>,
    /// Times ejected (enforced ejections only, as Envoy's `numEjections`).
    count: u32,
    /// Ejected now (counted in `ejections_active`).
    ejected: bool,
}

/// A cluster's outlier detector.
#[derive(Debug)]
pub struct OutlierDetector {
    config: model::OutlierDetection,
    stats: OutlierStats,
    ejections: Mutex<HashMap<usize, Ejection>>,
    /// `cluster_manager.outlier_detection.event_log_path`: ejections as JSON lines (set by
    /// the cluster manager once the cluster exists).
    event_log: OnceLock<Arc<EventLog>>,
    cluster_name: String,
}

impl OutlierDetector {
    pub(crate) fn new(config: model::OutlierDetection, store: &Store, cluster: &str) -> Self {
        Self {
            config,
            stats: OutlierStats::new(store, cluster),
            ejections: Mutex::new(HashMap::new()),
            event_log: OnceLock::new(),
            cluster_name: cluster.to_owned(),
        }
    }

    /// Envoy's `putResult` (with or without the external/local split).
    pub(crate) fn put_result(&self, cluster: &Cluster, host: &Arc<Host>, result: OutlierResult) {
        let c = &host.outlier;
        let cfg = &self.config;
        match (result, cfg.split_external_local_origin_errors) {
            (OutlierResult::ExtOriginRequestSuccess, split) => {
                clear(&c.consecutive_5xx);
                clear(&c.consecutive_gateway_failure);
                if split {
                    clear(&c.consecutive_local_origin_failure);
                }
            }
            (OutlierResult::ExtOriginRequestFailed, _) => {
                // 500: a 5xx, not a gateway error.
                clear(&c.consecutive_gateway_failure);
                if c.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 == cfg.consecutive_5xx {
                    self.on_consecutive(cluster, host, Kind::Consecutive5xx);
                }
            }
            (OutlierResult::LocalOriginConnectFailed | OutlierResult::LocalOriginTimeout, true) => {
                let n = c
                    .consecutive_local_origin_failure
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if n == cfg.consecutive_local_origin_failure {
                    self.on_consecutive(cluster, host, Kind::ConsecutiveLocalOriginFailure);
                }
            }
            (
                OutlierResult::LocalOriginConnectFailed | OutlierResult::LocalOriginTimeout,
                false,
            ) => {
                // 503 / 504: gateway errors, so both counters move.
                let gateway = c
                    .consecutive_gateway_failure
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if gateway == cfg.consecutive_gateway_failure {
                    self.on_consecutive(cluster, host, Kind::ConsecutiveGatewayFailure);
                }
                if c.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 == cfg.consecutive_5xx {
                    self.on_consecutive(cluster, host, Kind::Consecutive5xx);
                }
            }
        }
    }

    /// Envoy's `onConsecutiveErrorWorker`: counted as detected, ejected if allowed, and the
    /// kind's counter starts again.
    fn on_consecutive(&self, cluster: &Cluster, host: &Arc<Host>, kind: Kind) {
        if host.health.has(HealthFlag::FailedOutlierCheck) {
            return;
        }
        let Some((detected, _)) = self.stats.per_kind.get(kind.stat_suffix()) else {
            return;
        };
        detected.inc();
        self.eject(cluster, host, kind);
        if kind == Kind::Consecutive5xx {
            self.stats.ejections_consecutive_5xx.inc();
        }
        let counter = match kind {
            Kind::Consecutive5xx => &host.outlier.consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => &host.outlier.consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => &host.outlier.consecutive_local_origin_failure,
        };
        counter.store(0, Ordering::Relaxed);
    }

    /// Envoy's `ejectHost`: `max_ejection_percent` (or `always_eject_one_host`) decides whether
    /// the host may go, the enforcing percentage whether it does. A detection that is not
    /// enforced is still logged (`"enforced":false`), as Envoy logs it.
    fn eject(&self, cluster: &Cluster, host: &Arc<Host>, kind: Kind) {
        let cfg = &self.config;
        let hosts = cluster.all_hosts().len().max(1);
        let active = self.stats.ejections_active.value();
        let percent = 100.0 * (active + 1) as f64 / hosts as f64;
        let allowed = percent <= f64::from(cfg.max_ejection_percent)
            || (cfg.always_eject_one_host && active == 0);
        if !allowed {
            self.stats.ejections_overflow.inc();
            return;
        }
        if kind == Kind::Consecutive5xx {
            self.stats.ejections_total.inc();
        }
        let enforcing = match kind {
            Kind::Consecutive5xx => cfg.enforcing_consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => cfg.enforcing_consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => cfg.enforcing_consecutive_local_origin_failure,
        };
        let now = Instant::now();
        if (rand::random::<u32>() % 100) >= enforcing {
            if let Some(log) = self.event_log.get() {
                let (count, returned) = self
                    .ejections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&(Arc::as_ptr(host) as usize))
                    .map_or((0, None), |e| (e.count, e.returned));
                let since = returned.map(|r| now.duration_since(r).as_secs());
                log.outlier_eject(
                    &self.cluster_name,
                    host,
                    kind.event_name(),
                    count,
                    false,
                    since,
                );
            }
            return;
        }
        if !host.health.set(HealthFlag::FailedOutlierCheck) {
            return;
        }
        let num_ejections;
        let since_returned;
        {
            let mut ejections = self
                .ejections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = ejections
                .entry(Arc::as_ptr(host) as usize)
                .or_insert(Ejection {
                    at: now,
                    count: 0,
                    backoff: 0,
                    returned: None,
                    ejected: false,
                });
            entry.at = now;
            entry.ejected = true;
            entry.count += 1;
            num_ejections = entry.count;
            since_returned = entry.returned.map(|r| now.duration_since(r).as_secs());
            // The multiplier grows while the ejection time stays within the maximum.
            let base = cfg.base_ejection_time.as_millis().max(1);
            if base * u128::from(entry.backoff + 1) <= cfg.max_ejection_time.as_millis() {
                entry.backoff += 1;
            }
        }
        self.stats.ejections_active.inc();
        self.stats.ejections_enforced_total.inc();
        if let Some((_, enforced)) = self.stats.per_kind.get(kind.stat_suffix()) {
            enforced.inc();
        }
        info!(cluster = %self.cluster_name, host = %host.address_string(), kind = kind.event_name(), "outlier detection ejected a host");
        if let Some(log) = self.event_log.get() {
            log.outlier_eject(
                &self.cluster_name,
                host,
                kind.event_name(),
                num_ejections,
                true,
                since_returned,
            );
        }
        cluster.refresh_health(Some(host));
    }

    /// Envoy's interval timer: hosts whose ejection time is up come back; hosts that stayed in
    /// for a whole interval since they came back lower their backoff.
    pub(crate) fn on_interval(&self, cluster: &Cluster) {
        let cfg = &self.config;
        let now = Instant::now();
        let mut returned = Vec::new();
        {
            let hosts = cluster.all_hosts();
            let mut ejections = self
                .ejections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A host that left the cluster while ejected is no longer an active ejection.
            ejections.retain(|key, e| {
                let kept = hosts.iter().any(|h| Arc::as_ptr(h) as usize == *key);
                if !kept && e.ejected {
                    self.stats.ejections_active.dec();
                }
                kept
            });
            for host in &hosts {
                let Some(e) = ejections.get_mut(&(Arc::as_ptr(host) as usize)) else {
                    continue;
                };
                if !host.health.has(HealthFlag::FailedOutlierCheck) {
                    if e.returned
                        .is_some_and(|r| now.duration_since(r) >= cfg.interval)
                        && e.backoff > 0
                    {
                        e.backoff -= 1;
                    }
                    continue;
                }
                let time = (cfg.base_ejection_time * e.backoff).min(cfg.max_ejection_time)
                    + jitter(cfg.max_ejection_time_jitter);
                if now.duration_since(e.at) >= time {
                    host.health.clear(HealthFlag::FailedOutlierCheck);
                    host.outlier.reset();
                    e.returned = Some(now);
                    e.ejected = false;
                    let since = now.duration_since(e.at).as_secs();
                    returned.push((Arc::clone(host), e.count, since));
                }
            }
        }
        if returned.is_empty() {
            return;
        }
        for (host, count, since) in &returned {
            self.stats.ejections_active.dec();
            debug!(cluster = %self.cluster_name, host = %host.address_string(), "outlier detection returned a host");
            if let Some(log) = self.event_log.get() {
                log.outlier_uneject(&self.cluster_name, host, *count, *since);
            }
        }
        cluster.refresh_health(None);
    }

    /// An ejected host passed an active health check: it returns at once
    /// (`successful_active_health_check_uneject_host`).
    pub(crate) fn on_health_check_success(&self, cluster: &Cluster, host: &Arc<Host>) {
        if !self.config.successful_active_health_check_uneject_host
            || !host.health.clear(HealthFlag::FailedOutlierCheck)
        {
            return;
        }
        host.outlier.reset();
        let (mut count, mut since) = (0, 0);
        let now = Instant::now();
        if let Some(e) = self
            .ejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&(Arc::as_ptr(host) as usize))
        {
            e.returned = Some(now);
            e.ejected = false;
            count = e.count;
            since = now.duration_since(e.at).as_secs();
        }
        self.stats.ejections_active.dec();
        if let Some(log) = self.event_log.get() {
            log.outlier_uneject(&self.cluster_name, host, count, since);
        }
        cluster.refresh_health(None);
    }

    /// `new` replaces `old` (the same endpoint, rebuilt by an update): its ejection history
    /// moves with it, so an ejected host still comes back.
    pub(crate) fn rekey(&self, old: &Arc<Host>, new: &Arc<Host>) {
        let mut ejections = self
            .ejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = ejections.remove(&(Arc::as_ptr(old) as usize)) {
            ejections.insert(Arc::as_ptr(new) as usize, e);
        }
    }

    /// Where ejections are logged; the first call wins.
    pub(crate) fn set_event_log(&self, log: &Arc<EventLog>) {
        let _ = self.event_log.set(Arc::clone(log));
    }

    pub(crate) fn interval(&self) -> Duration {
        self.config.interval
    }
}

/// Runs the detector's interval timer until the cluster is gone.
pub(crate) async fn run_interval(cluster: Weak<Cluster>) {
    loop {
        let Some(period) = cluster
            .upgrade()
            .and_then(|c| c.outlier_detector().map(OutlierDetector::interval))
        else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        if let Some(detector) = c.outlier_detector() {
            detector.on_interval(&c);
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis() as u64;
    if ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random::<u64>() % ms)
    }
}
