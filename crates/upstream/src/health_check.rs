//! Active health checking with Envoy's Redis health checker (`envoy.health_checkers.redis`):
//! one session per host sends PING (or `EXISTS key`) every interval, and the host's
//! `FAILED_ACTIVE_HC` / `ACTIVE_HC_TIMEOUT` flags follow Envoy's session state machine
//! (`HealthCheckerImplBase::ActiveHealthCheckSession`):
//!
//! - a host the cluster adds starts failed; its first check decides at once (a success makes
//!   it healthy whatever `healthy_threshold` says, as Envoy does for a faster start);
//! - then `healthy_threshold` successes in a row make it healthy, and `unhealthy_threshold`
//!   network failures (refused, closed, timed out) in a row make it unhealthy; a wrong reply
//!   (not PONG, the key exists, an error) makes it unhealthy at once;
//! - a timeout while failed adds `ACTIVE_HC_TIMEOUT`; any other failure clears it;
//! - the next check is due an interval after this one ended: `no_traffic_interval` until the
//!   cluster has ever opened a data-path connection, then `interval` or `unhealthy_interval`,
//!   or their edge variants while a change is pending, plus jitter.
//!
//! The checker's connections and requests count in the cluster's and host's traffic stats
//! (`upstream_cx_*`, `upstream_rq_total`), as Envoy's Redis health checker client counts them;
//! so the first check already counts as traffic and `no_traffic_interval` applies only to a
//! cluster whose checker never connected, as in Envoy. A change of health rebuilds the
//! cluster's load balancer (`Cluster::refresh_health`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use redvoy_config::model::{self, HealthChecker};
use redvoy_resp::{encode, Decoder, DecoderMode, Limits, RespValue};
use redvoy_stats::{Counter, Gauge, Store};
use redvoy_tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::cluster::Cluster;
use crate::event_log::{EventLog, HealthEvent};
use crate::host::{HealthFlag, Host};
use crate::stats::ClusterStats;

/// How often the checker looks for hosts the cluster added or removed (DNS, EDS).
const HOST_SYNC_PERIOD: Duration = Duration::from_millis(500);
/// Read buffer of a checking connection (replies are a few bytes).
const READ_CHUNK: usize = 256;

/// `cluster.<name>.health_check.*` (Envoy's `ALL_HEALTH_CHECKER_STATS`) and the Redis
/// checker's `health_check.redis.exists_failure`.
#[derive(Clone, Debug)]
pub(crate) struct HealthCheckStats {
    attempt: Counter,
    success: Counter,
    failure: Counter,
    network_failure: Counter,
    healthy: Gauge,
    exists_failure: Counter,
}

impl HealthCheckStats {
    pub(crate) fn new(store: &Store, cluster: &str) -> Self {
        let p = format!("cluster.{cluster}.health_check.");
        // Created for `/stats` at zero, as Envoy creates them; redvoy runs no passive checks
        // and no degraded results, and never verifies the cluster.
        for unused in ["passive_failure", "verify_cluster"] {
            store.counter(&format!("{p}{unused}"));
        }
        store.gauge(&format!("{p}degraded"));
        Self {
            attempt: store.counter(&format!("{p}attempt")),
            success: store.counter(&format!("{p}success")),
            failure: store.counter(&format!("{p}failure")),
            network_failure: store.counter(&format!("{p}network_failure")),
            healthy: store.gauge(&format!("{p}healthy")),
            exists_failure: store.counter(&format!("{p}redis.exists_failure")),
        }
    }
}

/// Runs the cluster's health checker until the cluster is gone or the handle is aborted.
pub(crate) fn spawn(
    cluster: &Arc<Cluster>,
    config: model::HealthCheck,
    store: &Store,
) -> JoinHandle<()> {
    let stats = HealthCheckStats::new(store, &cluster.name);
    let event_log = config
        .event_log_path
        .as_deref()
        .map(|path| Arc::new(EventLog::new(path)));
    tokio::spawn(supervise(
        Arc::downgrade(cluster),
        Arc::new(config),
        stats,
        event_log,
    ))
}

/// Keeps one session per host of the cluster, starting and stopping them as hosts come and go.
async fn supervise(
    cluster: Weak<Cluster>,
    config: Arc<model::HealthCheck>,
    stats: HealthCheckStats,
    event_log: Option<Arc<EventLog>>,
) {
    let mut sessions: HashMap<usize, (Weak<Host>, AbortOnDrop)> = HashMap::new();
    loop {
        let Some(c) = cluster.upgrade() else {
            return;
        };
        let hosts = c.all_hosts();
        let cluster_stats = Arc::clone(&c.stats);
        drop(c);
        let current: HashMap<usize, &Arc<Host>> =
            hosts.iter().map(|h| (Arc::as_ptr(h) as usize, h)).collect();
        sessions.retain(|key, (host, _)| {
            let keep = current.contains_key(key) && host.strong_count() > 0;
            if !keep
                && host
                    .upgrade()
                    .is_some_and(|h| !h.health.has(HealthFlag::FailedActiveHc))
            {
                // Envoy's session teardown: a healthy host leaves the `healthy` gauge.
                stats.healthy.dec();
            }
            keep
        });
        for (key, host) in current {
            if sessions.contains_key(&key) {
                continue;
            }
            let session = Session {
                cluster: cluster.clone(),
                cluster_stats: cluster_stats.clone(),
                host: Arc::downgrade(host),
                address: host.address,
                config: Arc::clone(&config),
                stats: stats.clone(),
                event_log: event_log.clone(),
                conn: None,
                first_check: true,
                num_healthy: 0,
                num_unhealthy: 0,
            };
            if !host.health.has(HealthFlag::FailedActiveHc) {
                stats.healthy.inc();
            }
            let task = AbortOnDrop(tokio::spawn(session.run()));
            sessions.insert(key, (Arc::downgrade(host), task));
        }
        drop(hosts);
        // Woken early when the cluster's hosts change, so new hosts are checked (and a
        // warming cluster initialised) at once; the cluster is held for one period at most.
        let Some(c) = cluster.upgrade() else {
            return;
        };
        let _ = tokio::time::timeout(HOST_SYNC_PERIOD, c.hosts_changed.notified()).await;
    }
}

/// Aborts the task when dropped: a session ends with its host or its checker.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a check failed (Envoy's `HealthCheckFailureType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Connect refused, connection closed or reset.
    Network,
    /// No reply within `timeout`.
    NetworkTimeout,
    /// A reply that is not PONG (or, with a key, not 0).
    Active,
}

impl Failure {
    /// Envoy's `HealthCheckFailureType` name, as the event log writes it.
    fn name(self) -> &'static str {
        match self {
            Failure::Network => "NETWORK",
            Failure::NetworkTimeout => "NETWORK_TIMEOUT",
            Failure::Active => "ACTIVE",
        }
    }
}

/// Who closed a checking connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Local,
    Remote,
}

/// Whether a check result changed the host's health (Envoy's `HealthTransition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Unchanged,
    Changed,
    ChangePending,
}

struct CheckConn {
    stream: Stream,
    decoder: Decoder,
    buf: BytesMut,
}

struct Session {
    cluster: Weak<Cluster>,
    /// The checker's connections and requests count in the cluster's traffic stats, as
    /// Envoy's Redis health checker client counts them.
    cluster_stats: Arc<ClusterStats>,
    host: Weak<Host>,
    address: SocketAddr,
    config: Arc<model::HealthCheck>,
    stats: HealthCheckStats,
    /// `event_log_path`: the checker's events as JSON lines.
    event_log: Option<Arc<EventLog>>,
    conn: Option<CheckConn>,
    first_check: bool,
    num_healthy: u32,
    num_unhealthy: u32,
}

impl Session {
    async fn run(mut self) {
        let initial = jitter(Duration::ZERO, self.config.initial_jitter, 0);
        if !initial.is_zero() {
            tokio::time::sleep(initial).await;
        }
        loop {
            self.stats.attempt.inc();
            let Some(host) = self.host.upgrade() else {
                return;
            };
            let result = match tokio::time::timeout(self.config.timeout, self.check(&host)).await {
                Ok(result) => result,
                Err(_) => {
                    // Envoy closes the checking connection, the check still pending.
                    if self.conn.take().is_some() {
                        self.closed(&host, Close::Local, true);
                    }
                    Err(Failure::NetworkTimeout)
                }
            };
            if result.is_ok() && !self.config.reuse_connection && self.conn.take().is_some() {
                self.closed(&host, Close::Local, false);
            }
            let first_check = self.first_check;
            let (healthy, transition) = match result {
                Ok(()) => (true, self.on_success(&host)),
                Err(failure) => (false, self.on_failure(&host, failure)),
            };
            if healthy {
                // `successful_active_health_check_uneject_host`: a passing check returns a
                // host outlier detection ejected.
                if let Some(cluster) = self.cluster.upgrade() {
                    if let Some(detector) = cluster.outlier_detector() {
                        detector.on_health_check_success(&cluster, &host);
                    }
                }
            }
            if transition == Transition::Changed {
                debug!(host = %self.address, healthy, "health check changed the host's health");
                match self.cluster.upgrade() {
                    Some(cluster) => cluster.refresh_health(Some(&host)),
                    None => return,
                }
            }
            // After the routable set reflects it: a cluster waiting for its first checks
            // starts serving with the result in place.
            if first_check {
                host.health.mark_first_check_done();
                if let Some(cluster) = self.cluster.upgrade() {
                    cluster.first_checks.notify_waiters();
                }
            }
            let traffic = self
                .cluster
                .upgrade()
                .is_some_and(|c| c.stats.upstream_cx_total.value() > 0);
            drop(host);
            tokio::time::sleep(self.next_interval(healthy, transition, traffic)).await;
        }
    }

    /// Envoy's `handleSuccess`.
    fn on_success(&mut self, host: &Host) -> Transition {
        self.num_unhealthy = 0;
        let mut transition = Transition::Unchanged;
        if host.health.has(HealthFlag::FailedActiveHc) {
            // Counted only after the first check, as Envoy's short-circuit does.
            let enough = self.first_check || {
                self.num_healthy += 1;
                self.num_healthy == self.config.healthy_threshold
            };
            if enough {
                host.health.clear(HealthFlag::ActiveHcTimeout);
                host.health.clear(HealthFlag::FailedActiveHc);
                self.stats.healthy.inc();
                transition = Transition::Changed;
                self.log(
                    host,
                    HealthEvent::AddHealthy {
                        first_check: self.first_check,
                    },
                );
            } else {
                transition = Transition::ChangePending;
            }
        }
        if host.health.clear(HealthFlag::PendingActiveHc) {
            transition = Transition::Changed;
        }
        if transition != Transition::Changed && self.config.always_log_health_check_success {
            self.log(host, HealthEvent::Success);
        }
        self.stats.success.inc();
        self.first_check = false;
        transition
    }

    /// Envoy's `setUnhealthy`.
    fn on_failure(&mut self, host: &Host, failure: Failure) -> Transition {
        self.num_healthy = 0;
        let network = matches!(failure, Failure::Network | Failure::NetworkTimeout);
        let mut transition = Transition::Unchanged;
        if !host.health.has(HealthFlag::FailedActiveHc) {
            let enough = !network || {
                self.num_unhealthy += 1;
                self.num_unhealthy == self.config.unhealthy_threshold
            };
            if enough {
                host.health.set(HealthFlag::FailedActiveHc);
                self.stats.healthy.dec();
                transition = Transition::Changed;
                self.log(
                    host,
                    HealthEvent::EjectUnhealthy {
                        failure_type: failure.name(),
                    },
                );
            } else {
                transition = Transition::ChangePending;
            }
        }
        // Envoy's toggle: a timeout while failed shows as `active_hc_timeout`, any other
        // failure clears it.
        if failure == Failure::NetworkTimeout && host.health.has(HealthFlag::FailedActiveHc) {
            host.health.set(HealthFlag::ActiveHcTimeout);
        } else {
            host.health.clear(HealthFlag::ActiveHcTimeout);
        }
        if host.health.clear(HealthFlag::PendingActiveHc) {
            transition = Transition::Changed;
        }
        if self.first_check || self.config.always_log_health_check_failures {
            self.log(
                host,
                HealthEvent::Failure {
                    failure_type: failure.name(),
                    first_check: self.first_check,
                },
            );
        }
        self.stats.failure.inc();
        if network {
            self.stats.network_failure.inc();
        }
        self.first_check = false;
        transition
    }

    fn log(&self, host: &Host, event: HealthEvent<'_>) {
        if let (Some(log), Some(cluster)) = (&self.event_log, self.cluster.upgrade()) {
            log.health_check(&cluster.name, host, event);
        }
    }

    /// Envoy's `interval(state, transition)` with jitter.
    fn next_interval(&self, healthy: bool, transition: Transition, traffic: bool) -> Duration {
        let c = &self.config;
        let pending = transition == Transition::ChangePending;
        let base = match (traffic, healthy, pending) {
            (false, true, false) => c.no_traffic_healthy_interval,
            (false, _, _) => c.no_traffic_interval,
            (true, false, true) => c.unhealthy_edge_interval,
            (true, false, false) => c.unhealthy_interval,
            (true, true, true) => c.healthy_edge_interval,
            (true, true, false) => c.interval,
        };
        jitter(base, c.interval_jitter, c.interval_jitter_percent).max(Duration::from_millis(1))
    }

    /// One check on the kept connection (opened first if needed): PING, or EXISTS key.
    async fn check(&mut self, host: &Host) -> Result<(), Failure> {
        // A kept connection the server closed since the last check: Envoy saw that close when
        // it happened, so it is not this check's connection.
        if let Some(conn) = &self.conn {
            if conn.stream.closed_while_idle() {
                self.conn = None;
                self.closed(host, Close::Remote, false);
            }
        }
        if self.conn.is_none() {
            self.opened(host);
            // The cluster's transport socket: a TLS cluster is checked over TLS.
            // A cluster that is gone is not checked (and never in plaintext instead).
            let Some(cluster) = self.cluster.upgrade() else {
                return Err(Failure::Network);
            };
            let tls = cluster.tls_for(host).cloned();
            drop(cluster);
            let stream = match Stream::connect(self.address, tls.as_deref()).await {
                Ok(stream) => stream,
                Err(_) => {
                    self.cluster_stats.upstream_cx_connect_fail.inc();
                    host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                    self.closed(host, Close::Remote, true);
                    return Err(Failure::Network);
                }
            };
            let mut conn = CheckConn {
                stream,
                decoder: Decoder::new(DecoderMode::Reply, Limits::default()),
                buf: BytesMut::with_capacity(READ_CHUNK),
            };
            if let Some(auth) = self.auth() {
                let parts: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
                let sent = send(&mut conn, &parts).await;
                // As on data-path connections, the AUTH reply is not checked: a wrong password
                // shows as NOAUTH to the check itself.
                if sent.is_err() || read_reply(&mut conn).await.is_err() {
                    self.closed(host, Close::Remote, true);
                    return Err(Failure::Network);
                }
            }
            self.conn = Some(conn);
        }
        self.cluster_stats.upstream_rq_total.inc();
        host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        let HealthChecker::Redis { key } = &self.config.checker;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Network);
        };
        let exchanged = match key {
            Some(key) => match send(conn, &[b"EXISTS", key]).await {
                Ok(()) => read_reply(conn).await,
                Err(f) => Err(f),
            },
            None => match send(conn, &[b"PING"]).await {
                Ok(()) => read_reply(conn).await,
                Err(f) => Err(f),
            },
        };
        let reply = match exchanged {
            Ok(reply) => reply,
            Err(failure) => {
                self.conn = None;
                self.closed(host, Close::Remote, true);
                return Err(failure);
            }
        };
        match (key, reply) {
            (None, RespValue::Simple(s)) if &s[..] == b"PONG" => Ok(()),
            (Some(_), RespValue::Integer(0)) => Ok(()),
            (Some(_), RespValue::Integer(_)) => {
                self.stats.exists_failure.inc();
                Err(Failure::Active)
            }
            _ => Err(Failure::Active),
        }
    }

    /// A checking connection is created: Envoy counts it from then on.
    fn opened(&self, host: &Host) {
        let cs = &self.cluster_stats;
        cs.upstream_cx_total.inc();
        cs.upstream_cx_active.inc();
        host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        host.stats.cx_active.fetch_add(1, Ordering::Relaxed);
    }

    /// A checking connection is gone: Envoy's `upstream_cx_destroy*` accounting.
    fn closed(&self, host: &Host, how: Close, active_rq: bool) {
        let cs = &self.cluster_stats;
        cs.upstream_cx_active.dec();
        host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        cs.upstream_cx_destroy.inc();
        match how {
            Close::Local => cs.upstream_cx_destroy_local.inc(),
            Close::Remote => cs.upstream_cx_destroy_remote.inc(),
        }
        if active_rq {
            cs.upstream_cx_destroy_with_active_rq.inc();
            match how {
                Close::Local => cs.upstream_cx_destroy_local_with_active_rq.inc(),
                Close::Remote => cs.upstream_cx_destroy_remote_with_active_rq.inc(),
            }
        }
    }

    /// `auth` (and user) from the cluster's redis protocol options.
    fn auth(&self) -> Option<Vec<Vec<u8>>> {
        let cluster = self.cluster.upgrade()?;
        let options = cluster.config.redis_protocol_options.as_ref()?;
        match (&options.auth_username, &options.auth_password) {
            (Some(u), Some(p)) if !u.is_empty() => {
                Some(vec![b"auth".to_vec(), u.to_vec(), p.to_vec()])
            }
            (_, Some(p)) if !p.is_empty() => Some(vec![b"auth".to_vec(), p.to_vec()]),
            _ => None,
        }
    }
}

async fn send(conn: &mut CheckConn, parts: &[&[u8]]) -> Result<(), Failure> {
    let mut out = BytesMut::new();
    encode::command(&mut out, parts);
    // A TLS stream may keep records buffered until flushed.
    conn.stream
        .write_all(&out)
        .await
        .map_err(|_| Failure::Network)?;
    conn.stream.flush().await.map_err(|_| Failure::Network)
}

async fn read_reply(conn: &mut CheckConn) -> Result<RespValue, Failure> {
    loop {
        match conn.decoder.decode(&mut conn.buf) {
            Ok(Some(frame)) => return Ok(frame.value),
            Ok(None) => {}
            // Not RESP: the host answers, but not as Redis does.
            Err(_) => return Err(Failure::Active),
        }
        if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 2 {
            conn.buf.reserve(READ_CHUNK);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) | Err(_) => return Err(Failure::Network),
            Ok(_) => {}
        }
    }
}

/// Envoy's `intervalWithJitter`: `base` plus up to `percent` % of it, plus up to `jitter`.
fn jitter(base: Duration, jitter: Duration, percent: u32) -> Duration {
    let base_ms = base.as_millis() as u64;
    let mut ms = base_ms;
    let percent_mod = u64::from(percent) * base_ms / 100;
    if percent_mod > 0 {
        ms += rand::random::<u64>() % percent_mod;
    }
    let jitter_ms = jitter.as_millis() as u64;
    if jitter_ms > 0 {
        ms += rand::random::<u64>() % jitter_ms;
    }
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds() {
        let base = Duration::from_millis(1000);
        for _ in 0..100 {
            let d = jitter(base, Duration::from_millis(50), 10);
            assert!(d >= base && d < base + Duration::from_millis(150), "{d:?}");
        }
        assert_eq!(jitter(base, Duration::ZERO, 0), base);
    }
}
