//! One upstream cluster: its configuration, stats and current host set, and which of its
//! endpoints become routable hosts (health status, panic mode, transport socket matches).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use redvoy_config::model::{self, DiscoveryType};
use redvoy_stats::Store;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use crate::host::{CoarseHealth, EdsInfo, HealthFlag, Host};
use crate::lb::{validate_policy, HostSet};
use crate::outlier::{OutlierDetector, OutlierResult};
use crate::redis_cluster::{RefreshTrigger, SlotMap};
use crate::stats::ClusterStats;
use crate::UpstreamError;

/// One upstream cluster: its configuration, its stats, and the current host set.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub config: model::Cluster,
    pub stats: Arc<ClusterStats>,
    host_set: ArcSwap<HostSet>,
    /// Every host of the last update, healthy or not (the host set holds the routable ones).
    pub(crate) all_hosts: ArcSwap<Vec<Arc<Host>>>,
    /// Endpoints of the last update left out because their `transport_socket_matches` entry
    /// asks for a socket redvoy does not run (`membership_excluded`).
    pub(crate) excluded: std::sync::atomic::AtomicU64,
    /// Connections held under the circuit breaker (see `connection.rs`).
    pub(crate) breaker_connections: std::sync::atomic::AtomicU64,
    /// redis_proxy requests in flight and waiting for a connection, counted only when the
    /// cluster's circuit breakers set the limit (beyond Envoy, see `connection.rs`).
    pub(crate) redis_requests: std::sync::atomic::AtomicU64,
    /// Serialises read-modify-install of the host list: an outlier ejection on a worker thread
    /// must not store a list read before an EDS or DNS update installed on another thread.
    host_update: std::sync::Mutex<()>,
    pub(crate) redis_pending: std::sync::atomic::AtomicU64,
    installed: std::sync::atomic::AtomicBool,
    /// `envoy.clusters.redis` only: the refresh manager workers report to.
    refresh: Option<RefreshTrigger>,
    /// `outlier_detection`: the cluster's detector.
    outlier: Option<Box<OutlierDetector>>,
    /// `envoy.clusters.redis` only: true once the first discovery round completed (a topology,
    /// or seeds that resolve to nothing), which ends the cluster's initialisation.
    pub(crate) initialized: Option<watch::Sender<bool>>,
    /// Wakes the health checker when the hosts change (it starts sessions for new ones).
    pub(crate) hosts_changed: Notify,
    /// Wakes whoever waits for the first health checks (see
    /// [`Cluster::first_health_checks_done`]) after a host's first check.
    pub(crate) first_checks: Notify,
    /// `transport_socket` TLS: every connection to a host is a TLS connection made by this
    /// (rebuilt when its secrets change).
    tls: Option<Arc<redvoy_tls::ClientTls>>,
    /// A task already waits for this version's first health checks and TLS secrets (one is
    /// enough, however many assignments arrive while it warms).
    pub(crate) warm_wait_spawned: std::sync::atomic::AtomicBool,
    /// Per `transport_socket_matches` entry: its TLS (`None`: plaintext), and its
    /// `<name>.total_match_count`.
    matches: Vec<(Option<Arc<redvoy_tls::ClientTls>>, redvoy_stats::Counter)>,
}

// === impl Cluster ===

impl Cluster {
    /// A plaintext cluster with no hosts yet; see [`Cluster::set_hosts`]. A config with TLS
    /// goes through [`Cluster::build`], which reads its certificates.
    pub fn new(config: model::Cluster, store: &Store) -> Self {
        // A TLS setting here would be dropped: never plaintext where TLS is configured.
        assert!(
            config.upstream_tls.is_none()
                && config
                    .transport_socket_matches
                    .0
                    .iter()
                    .all(|m| !matches!(m.socket, model::MatchSocket::Tls(_))),
            "cluster '{}' has TLS settings: use Cluster::build",
            config.name
        );
        let matches = config
            .transport_socket_matches
            .0
            .iter()
            .map(|m| (None, match_counter(store, &config.name, &m.name)))
            .collect();
        Self::assemble(config, store, None, matches)
    }

    fn assemble(
        config: model::Cluster,
        store: &Store,
        tls: Option<Arc<redvoy_tls::ClientTls>>,
        matches: Vec<(Option<Arc<redvoy_tls::ClientTls>>, redvoy_stats::Counter)>,
    ) -> Self {
        let stats = Arc::new(ClusterStats::new(
            store,
            &config.name,
            &config.lb_policy,
            &config.circuit_breakers,
        ));
        Self {
            name: config.name.clone(),
            stats,
            host_set: ArcSwap::from_pointee(HostSet::empty()),
            all_hosts: ArcSwap::from_pointee(Vec::new()),
            excluded: std::sync::atomic::AtomicU64::new(0),
            breaker_connections: std::sync::atomic::AtomicU64::new(0),
            redis_requests: std::sync::atomic::AtomicU64::new(0),
            host_update: std::sync::Mutex::new(()),
            redis_pending: std::sync::atomic::AtomicU64::new(0),
            installed: std::sync::atomic::AtomicBool::new(false),
            refresh: config.redis_cluster.as_ref().map(RefreshTrigger::new),
            outlier: config
                .outlier_detection
                .as_deref()
                .map(|o| Box::new(OutlierDetector::new(o.clone(), store, &config.name))),
            // Only a Redis Cluster initialises (a few hundred bytes other clusters skip).
            initialized: (config.discovery == DiscoveryType::RedisCluster)
                .then(|| watch::channel(false).0),
            hosts_changed: Notify::new(),
            first_checks: Notify::new(),
            tls,
            matches,
            warm_wait_spawned: std::sync::atomic::AtomicBool::new(false),
            config,
        }
    }

    /// A cluster for `config`, its TLS settings read (certificate files included; secrets
    /// from `secrets`, or once they arrive).
    pub fn build(
        config: model::Cluster,
        store: &Store,
        secrets: &Arc<redvoy_tls::SecretManager>,
    ) -> Result<Self, crate::UpstreamError> {
        let scope = format!("cluster.{}.", config.name);
        let tls_error = |e: redvoy_tls::TlsError| crate::UpstreamError::Tls {
            cluster: config.name.clone(),
            reason: e.to_string(),
        };
        let context = |tls: &model::UpstreamTls| {
            let stats = redvoy_tls::TlsStats::new(store, &scope);
            redvoy_tls::ClientTls::new(tls, Some(stats), secrets)
        };
        let tls = config
            .upstream_tls
            .as_deref()
            .map(context)
            .transpose()
            .map_err(tls_error)?;
        let mut matches = Vec::with_capacity(config.transport_socket_matches.0.len());
        for m in &config.transport_socket_matches.0 {
            let tls = match &m.socket {
                model::MatchSocket::Tls(tls) => Some(context(tls).map_err(tls_error)?),
                model::MatchSocket::Plaintext | model::MatchSocket::Unsupported => None,
            };
            matches.push((tls, match_counter(store, &config.name, &m.name)));
        }
        Ok(Self::assemble(config, store, tls, matches))
    }

    /// How connections to `host` are secured (its `transport_socket_matches` entry, else
    /// the cluster's `transport_socket`): `None` for plaintext.
    pub fn tls_for(&self, host: &Host) -> Option<&Arc<redvoy_tls::ClientTls>> {
        self.tls_for_match(host.transport_match)
    }

    /// The TLS of `transport_socket_matches[m]`, or of the cluster's own socket (`None`).
    pub fn tls_for_match(&self, m: Option<usize>) -> Option<&Arc<redvoy_tls::ClientTls>> {
        match m {
            None => self.tls.as_ref(),
            Some(i) => self.matches.get(i).and_then(|(tls, _)| tls.as_ref()),
        }
    }

    /// The entry a Redis Cluster's discovered nodes and discovery connections select: its
    /// first endpoint's, as Envoy's redis cluster builds its hosts from that endpoint.
    pub fn seed_transport_match(&self) -> Option<usize> {
        match self.config.endpoints.first() {
            Some(e) => self.transport_match(e),
            None => self.unlabelled_transport_match(),
        }
    }

    /// The entry a host without metadata selects (redirection targets, original
    /// destinations).
    pub fn unlabelled_transport_match(&self) -> Option<usize> {
        let none = std::collections::BTreeMap::new();
        self.config.transport_socket_matches.resolve(&none, &none)
    }

    /// The entry an endpoint selects.
    pub fn transport_match(&self, e: &model::Endpoint) -> Option<usize> {
        self.config.transport_socket_matches.resolve_endpoint(e)
    }

    /// Counts `n` hosts built for entry `m` (Envoy's `<match>.total_match_count`, or
    /// `default.total_match_count` for the cluster's own socket).
    pub(crate) fn count_transport_match(&self, m: Option<usize>, n: u64) {
        match m.and_then(|i| self.matches.get(i)) {
            Some((_, counter)) => counter.add(n),
            None => self.stats.default_total_match_count.add(n),
        }
    }

    /// The `total_match_count` of entry `m` (`None` for the cluster's own socket).
    pub(crate) fn transport_match_counter(
        &self,
        m: Option<usize>,
    ) -> Option<redvoy_stats::Counter> {
        m.and_then(|i| self.matches.get(i)).map(|(_, c)| c.clone())
    }

    /// Whether any connection of the cluster may be TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some() || self.matches.iter().any(|(tls, _)| tls.is_some())
    }

    /// Every TLS context of the cluster (its own socket's and its matches').
    pub fn tls_contexts(&self) -> Vec<Arc<redvoy_tls::ClientTls>> {
        self.tls
            .iter()
            .chain(self.matches.iter().filter_map(|(tls, _)| tls.as_ref()))
            .cloned()
            .collect()
    }

    /// Whether the cluster's TLS secrets have all arrived (a plaintext cluster has none).
    pub fn tls_ready(&self) -> bool {
        self.tls_contexts().iter().all(|t| t.is_ready())
    }

    pub fn is_redis_cluster(&self) -> bool {
        self.config.discovery == DiscoveryType::RedisCluster
    }

    /// The cluster's outlier detector, when it configures `outlier_detection`.
    pub fn outlier_detector(&self) -> Option<&OutlierDetector> {
        self.outlier.as_deref()
    }

    /// Reports what a request to `host` came to, for outlier detection (nothing when the
    /// cluster has none).
    #[inline]
    pub fn put_outlier_result(&self, host: &Arc<Host>, result: OutlierResult) {
        if let Some(detector) = &self.outlier {
            detector.put_result(self, host, result);
        }
    }

    /// Envoy's cluster refresh manager for this cluster (None for other cluster types).
    pub fn refresh_trigger(&self) -> Option<&RefreshTrigger> {
        self.refresh.as_ref()
    }

    /// Installs a Redis Cluster topology: every discovered node and the slot map.
    pub(crate) fn set_redis_topology(&self, hosts: Vec<Arc<Host>>, map: SlotMap) {
        self.mark_new_hosts_unchecked(&hosts);
        let old = self.host_set.load();
        let before: HashSet<SocketAddr> = old.hosts().iter().map(|h| h.address).collect();
        let after: HashSet<SocketAddr> = hosts.iter().map(|h| h.address).collect();
        if before != after {
            self.stats.membership_change.inc();
        }
        let total = hosts.len() as u64;
        let degraded = hosts
            .iter()
            .filter(|h| h.eds_health() == model::HealthStatus::Degraded)
            .count() as u64;
        let healthy = hosts
            .iter()
            .filter(|h| h.coarse_health() == CoarseHealth::Healthy)
            .count() as u64;
        self.stats.membership_total.set(total);
        self.stats.membership_healthy.set(healthy);
        self.stats.membership_degraded.set(degraded);
        self.stats.membership_excluded.set(0);
        let max_weight = hosts.iter().map(|h| h.weight).max().unwrap_or(0);
        self.stats.max_host_weight.set(u64::from(max_weight));
        // Envoy builds every host of a changed topology anew, each through the transport
        // socket matcher.
        self.count_transport_match(self.seed_transport_match(), total);
        debug!(cluster = %self.name, hosts = total, shards = map.shards().len(), "Redis Cluster topology installed");
        self.host_set
            .store(Arc::new(HostSet::redis_cluster(hosts, map)));
        self.installed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.hosts_changed.notify_one();
    }

    /// Whether every current host has had its first active health check (true at once
    /// without a health checker, or without hosts): the end of Envoy's cluster
    /// initialisation when the cluster is health checked.
    pub fn first_health_checks_done(&self) -> bool {
        self.config.health_check.is_none()
            || self.all_hosts().iter().all(|h| h.health.first_check_done())
    }

    /// Resolves once [`Self::first_health_checks_done`] holds. Each first check is bounded by
    /// the check's `timeout` (plus `initial_jitter`), so this is too, while the checker runs.
    pub async fn wait_first_health_checks(&self) {
        loop {
            let notified = self.first_checks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.first_health_checks_done() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn mark_initialized(&self) {
        if let Some(initialized) = &self.initialized {
            initialized.send_replace(true);
        }
    }

    /// Whether any host set was ever installed (a first empty assignment still counts).
    pub(crate) fn host_set_installed(&self) -> bool {
        self.installed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every host of the last update, unhealthy ones included (for `/clusters`); the routable
    /// host set for a Redis Cluster.
    pub fn all_hosts(&self) -> Vec<Arc<Host>> {
        let all = self.all_hosts.load();
        if all.is_empty() {
            self.host_set().hosts().to_vec()
        } else {
            all.to_vec()
        }
    }

    /// The current host set; changes when DNS answers change (cheap: an ArcSwap load).
    pub fn host_set(&self) -> Arc<HostSet> {
        self.host_set.load_full()
    }

    /// The current host set without touching the reference count (for per-request use).
    pub fn host_set_guard(&self) -> Guard<Arc<HostSet>> {
        self.host_set.load()
    }

    /// Replaces the hosts (in priority-set order) and rebuilds the load balancer.
    /// `membership_change` moves only if an address was added or removed; callers that want
    /// `Arc<Host>` identity (and so per-host stats) kept must pass the existing `Arc`s.
    pub fn set_hosts(&self, hosts: Vec<Arc<Host>>) {
        let _update = self.lock_host_update();
        self.mark_new_hosts_unchecked(&hosts);
        let before: HashSet<SocketAddr> = self.all_hosts().iter().map(|h| h.address).collect();
        let after: HashSet<SocketAddr> = hosts.iter().map(|h| h.address).collect();
        if before != after {
            self.stats.membership_change.inc();
        }
        self.install_locked(hosts);
    }

    fn lock_host_update(&self) -> std::sync::MutexGuard<'_, ()> {
        self.host_update
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// With active health checking, a host the cluster did not have starts failed until its
    /// first check (Envoy initialises new hosts to unhealthy when a health checker runs).
    pub(crate) fn mark_new_hosts_unchecked(&self, hosts: &[Arc<Host>]) {
        if self.config.health_check.is_none() {
            return;
        }
        let known = self.all_hosts();
        for h in hosts {
            // A rebuilt host that took over its predecessor's checks is not new.
            if !known.iter().any(|k| Arc::ptr_eq(k, h)) && !h.health.first_check_done() {
                h.health.set(HealthFlag::FailedActiveHc);
            }
        }
    }

    /// Rebuilds the load balancer after a host's health changed (active health checking,
    /// outlier detection; `changed` is the host, when one host changed): the same hosts, a new
    /// routable set. A Redis Cluster's slot map reads host health per request, so only its
    /// gauges change; a host that became unhealthy or degraded there counts towards the
    /// `host_degraded_refresh_threshold` trigger (Envoy's `reloadHealthyHostsHelper`).
    pub(crate) fn refresh_health(&self, changed: Option<&Host>) {
        if self.is_redis_cluster() {
            let hosts = self.host_set.load();
            let healthy = hosts
                .hosts()
                .iter()
                .filter(|h| h.coarse_health() == CoarseHealth::Healthy)
                .count();
            self.stats.membership_healthy.set(healthy as u64);
            if let (Some(host), Some(trigger)) = (changed, &self.refresh) {
                if host.coarse_health() != CoarseHealth::Healthy {
                    trigger.on_host_degraded();
                }
            }
            return;
        }
        let _update = self.lock_host_update();
        let mut hosts = self.all_hosts.load().to_vec();
        // A host EDS removed stayed while it passed its checks; failing one removes it
        // (Envoy's `EdsClusterImpl::reloadHealthyHostsHelper`).
        let before = hosts.len();
        hosts.retain(|h| {
            !(h.health.has(HealthFlag::PendingDynamicRemoval)
                && h.health.has(HealthFlag::FailedActiveHc))
        });
        if hosts.len() != before {
            self.stats.membership_change.inc();
        }
        self.install_locked(hosts);
    }

    /// Builds the load balancer over the routable hosts (see [`routable`]) of `hosts`.
    pub(crate) fn install(&self, hosts: Vec<Arc<Host>>) {
        let _update = self.lock_host_update();
        self.install_locked(hosts);
    }

    /// [`Cluster::install`] with the host-update lock already held.
    fn install_locked(&self, hosts: Vec<Arc<Host>>) {
        let (routable, in_panic) = routable(&hosts, self.config.healthy_panic_threshold);
        let set = HostSet::new(
            routable,
            &self.config.lb_policy,
            self.config.use_hostname_for_hashing,
        )
        .in_panic_mode(in_panic);
        let count = |status: model::HealthStatus| {
            hosts.iter().filter(|h| h.eds_health() == status).count() as u64
        };
        let healthy = hosts
            .iter()
            .filter(|h| h.coarse_health() == CoarseHealth::Healthy)
            .count() as u64;
        let excluded = self.excluded.load(std::sync::atomic::Ordering::Relaxed);
        // Envoy counts excluded hosts in the total.
        self.stats
            .membership_total
            .set(hosts.len() as u64 + excluded);
        self.stats.membership_healthy.set(healthy);
        self.stats
            .membership_degraded
            .set(count(model::HealthStatus::Degraded));
        self.stats.membership_excluded.set(excluded);
        // Envoy sets max_host_weight only from its dynamic-host path (STRICT_DNS here).
        if self.config.discovery == DiscoveryType::StrictDns {
            let max = hosts.iter().map(|h| h.weight).max().unwrap_or(0);
            self.stats.max_host_weight.set(u64::from(max));
        }
        self.stats.record_table(set.table_stats());
        debug!(cluster = %self.name, hosts = hosts.len(), routable = set.hosts().len(), "host set updated");
        self.all_hosts.store(Arc::new(hosts));
        self.host_set.store(Arc::new(set));
        self.installed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.hosts_changed.notify_one();
    }

    /// Leaves out the endpoints whose transport socket redvoy does not run (never connecting
    /// to them in plaintext instead), warning once per update that has any, and records how
    /// many for `membership_excluded`.
    pub(crate) fn usable_endpoints<'a>(
        &self,
        endpoints: &'a [model::Endpoint],
    ) -> Vec<&'a model::Endpoint> {
        let matches = &self.config.transport_socket_matches;
        let (usable, excluded): (Vec<_>, Vec<_>) = endpoints
            .iter()
            .partition(|e| matches.unsupported_for_endpoint(e).is_none());
        if !excluded.is_empty() {
            let which: Vec<String> = excluded
                .iter()
                .map(|e| {
                    let entry = matches
                        .unsupported_for_endpoint(e)
                        .map_or("", |m| m.name.as_str());
                    format!("{}:{} ({entry})", e.address.address, e.address.port)
                })
                .collect();
            warn!(
                cluster = %self.name,
                endpoints = ?which,
                "endpoints left out: their transport_socket_matches entry asks for a transport \
                 socket redvoy does not run; never connecting to them in plaintext"
            );
        }
        self.excluded
            .store(excluded.len() as u64, std::sync::atomic::Ordering::Relaxed);
        usable
    }
}

/// The hosts a load balancer uses: the healthy ones, or all of them when the healthy and
/// degraded ones are below `healthy_panic_threshold` (Envoy's panic mode,
/// `LoadBalancerBase::isHostSetInPanic`; the bool says whether it is). Health is Envoy's coarse
/// health: EDS status, active health checking and outlier detection together. Degraded hosts
/// get no traffic outside panic, as with Envoy's ring hash and Maglev (Envoy's other policies
/// may also send to degraded hosts when too few are healthy; redvoy does not yet).
fn routable(hosts: &[Arc<Host>], threshold: model::PanicThreshold) -> (Vec<Arc<Host>>, bool) {
    let healthy: Vec<Arc<Host>> = hosts
        .iter()
        .filter(|h| h.coarse_health() == CoarseHealth::Healthy)
        .cloned()
        .collect();
    let degraded = hosts
        .iter()
        .filter(|h| h.coarse_health() == CoarseHealth::Degraded)
        .count();
    if threshold.in_panic(healthy.len() + degraded, hosts.len()) {
        (hosts.to_vec(), true)
    } else {
        (healthy, false)
    }
}

pub(crate) fn validate_cluster(c: &model::Cluster) -> Result<(), UpstreamError> {
    validate_policy(&c.lb_policy)?;
    if c.use_hostname_for_hashing && c.discovery != DiscoveryType::StrictDns {
        let kind = match c.discovery {
            DiscoveryType::Static => "envoy.cluster.static",
            DiscoveryType::LogicalDns => "envoy.cluster.logical_dns",
            DiscoveryType::StrictDns => "envoy.cluster.strict_dns",
            DiscoveryType::Eds => "envoy.cluster.eds",
            DiscoveryType::OriginalDst => "envoy.cluster.original_dst",
            DiscoveryType::RedisCluster => "envoy.clusters.redis",
        };
        return Err(UpstreamError::HostnameHashing(kind));
    }
    if c.discovery == DiscoveryType::LogicalDns && c.endpoints.len() != 1 {
        return Err(UpstreamError::LogicalDnsEndpoints);
    }
    let sum: u64 = c.endpoints.iter().map(|e| u64::from(e.weight)).sum();
    if sum > u64::from(u32::MAX) {
        return Err(UpstreamError::WeightSumOverflow);
    }
    Ok(())
}

/// `cluster.<cluster>.<match>.total_match_count`.
fn match_counter(store: &Store, cluster: &str, name: &str) -> redvoy_stats::Counter {
    store.counter(&format!("cluster.{cluster}.{name}.total_match_count"))
}

/// A STATIC cluster's hosts, with their configured `health_status`; endpoints needing a
/// transport socket redvoy does not run are left out (see [`Cluster::usable_endpoints`]).
pub(crate) fn static_hosts(cluster: &Cluster) -> Result<Vec<Arc<Host>>, UpstreamError> {
    // Unix-socket endpoints (Istio's `xds-grpc`, `sds-grpc`) are only dialled by the xDS
    // client; they are not hosts the data path connects to.
    cluster
        .usable_endpoints(&cluster.config.endpoints)
        .into_iter()
        .filter(|e| e.pipe.is_none())
        .map(|e| {
            let ip: IpAddr = e
                .address
                .address
                .parse()
                .map_err(|_| UpstreamError::MalformedIp(e.address.address.clone()))?;
            let addr = SocketAddr::new(ip, e.address.port);
            let eds = EdsInfo {
                locality: e.locality.clone(),
                priority: e.priority,
            };
            Ok(Arc::new(
                Host::new(addr, e.hostname.clone(), e.weight)
                    .with_eds(eds)
                    .with_eds_health(e.health_status)
                    .with_transport_match(cluster.transport_match(e)),
            ))
        })
        .collect()
}
