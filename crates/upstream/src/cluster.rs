//! Clusters and the cluster manager: STATIC, STRICT_DNS and LOGICAL_DNS discovery, and the
//! swap of a whole new `HostSet` whenever membership changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use redvoy_config::model::{self, DiscoveryType, DnsLookupFamily};
use redvoy_stats::{Counter, Gauge, Store};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::host::{EdsInfo, Host};
use crate::lb::{validate_policy, HostSet};
use crate::redis_cluster::{Discovery, RefreshTrigger, RoundOutcome, SlotMap};
use crate::stats::ClusterStats;
use crate::UpstreamError;

/// Upper bound on one DNS resolution (the initial one is awaited by `ClusterManager::new`).
/// A name that does not answer in time counts as a failed resolution (`update_failure`).
pub const DNS_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Floor for `dns_refresh_rate` (Envoy's proto requires more than 1 ms), so a zero value cannot
/// turn the refresh task into a busy loop.
pub const MIN_DNS_REFRESH_RATE: Duration = Duration::from_millis(1);

/// One DNS answer: the addresses (lookup family applied), or why the resolution failed.
type Answer = Result<Vec<SocketAddr>, String>;

/// One upstream cluster: its configuration, its stats, and the current host set.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub config: model::Cluster,
    pub stats: ClusterStats,
    host_set: ArcSwap<HostSet>,
    /// Every host of the last update, healthy or not (the host set holds the routable ones).
    all_hosts: ArcSwap<Vec<Arc<Host>>>,
    /// Endpoints of the last update left out because their `transport_socket_matches` entry
    /// asks for a socket redvoy does not run (`membership_excluded`).
    excluded: std::sync::atomic::AtomicU64,
    /// Connections held under the circuit breaker (see `connection.rs`).
    pub(crate) breaker_connections: std::sync::atomic::AtomicU64,
    installed: std::sync::atomic::AtomicBool,
    /// `envoy.clusters.redis` only: the refresh manager workers report to.
    refresh: Option<RefreshTrigger>,
    /// `envoy.clusters.redis` only: true once the first discovery round completed (a topology,
    /// or seeds that resolve to nothing), which ends the cluster's initialisation.
    initialized: watch::Sender<bool>,
}

// === impl Cluster ===

impl Cluster {
    /// A cluster with no hosts yet; see [`Cluster::set_hosts`].
    pub fn new(config: model::Cluster, store: &Store) -> Self {
        let stats = ClusterStats::new(store, &config.name, &config.lb_policy);
        Self {
            name: config.name.clone(),
            stats,
            host_set: ArcSwap::from_pointee(HostSet::empty()),
            all_hosts: ArcSwap::from_pointee(Vec::new()),
            excluded: std::sync::atomic::AtomicU64::new(0),
            breaker_connections: std::sync::atomic::AtomicU64::new(0),
            installed: std::sync::atomic::AtomicBool::new(false),
            refresh: config.redis_cluster.as_ref().map(RefreshTrigger::new),
            initialized: watch::channel(false).0,
            config,
        }
    }

    pub fn is_redis_cluster(&self) -> bool {
        self.config.discovery == DiscoveryType::RedisCluster
    }

    /// Envoy's cluster refresh manager for this cluster (None for other cluster types).
    pub fn refresh_trigger(&self) -> Option<&RefreshTrigger> {
        self.refresh.as_ref()
    }

    /// Installs a Redis Cluster topology: every discovered node and the slot map.
    pub(crate) fn set_redis_topology(&self, hosts: Vec<Arc<Host>>, map: SlotMap) {
        let old = self.host_set.load();
        let before: HashSet<SocketAddr> = old.hosts().iter().map(|h| h.address).collect();
        let after: HashSet<SocketAddr> = hosts.iter().map(|h| h.address).collect();
        if before != after {
            self.stats.membership_change.inc();
        }
        let total = hosts.len() as u64;
        let degraded = hosts
            .iter()
            .filter(|h| h.eds.health_status == model::HealthStatus::Degraded)
            .count() as u64;
        let healthy = hosts
            .iter()
            .filter(|h| h.eds.health_status.is_healthy())
            .count() as u64;
        self.stats.membership_total.set(total);
        self.stats.membership_healthy.set(healthy);
        self.stats.membership_degraded.set(degraded);
        self.stats.membership_excluded.set(0);
        let max_weight = hosts.iter().map(|h| h.weight).max().unwrap_or(0);
        self.stats.max_host_weight.set(u64::from(max_weight));
        // Envoy builds every host of a changed topology anew, each through the transport
        // socket matcher.
        self.stats.default_total_match_count.add(total);
        debug!(cluster = %self.name, hosts = total, shards = map.shards().len(), "Redis Cluster topology installed");
        self.host_set
            .store(Arc::new(HostSet::redis_cluster(hosts, map)));
        self.installed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn mark_initialized(&self) {
        self.initialized.send_replace(true);
    }

    /// Whether any host set was ever installed (a first empty assignment still counts).
    fn host_set_installed(&self) -> bool {
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
        let before: HashSet<SocketAddr> = self.all_hosts().iter().map(|h| h.address).collect();
        let after: HashSet<SocketAddr> = hosts.iter().map(|h| h.address).collect();
        if before != after {
            self.stats.membership_change.inc();
        }
        self.install(hosts);
    }

    /// Builds the load balancer over the routable hosts (see [`routable`]) of `hosts`.
    fn install(&self, hosts: Vec<Arc<Host>>) {
        let routable = routable(&hosts, self.config.healthy_panic_threshold);
        let set = HostSet::new(
            routable,
            &self.config.lb_policy,
            self.config.use_hostname_for_hashing,
        );
        let count = |status: model::HealthStatus| {
            hosts
                .iter()
                .filter(|h| h.eds.health_status == status)
                .count() as u64
        };
        let healthy = hosts
            .iter()
            .filter(|h| h.eds.health_status.is_healthy())
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
    }

    /// Leaves out the endpoints whose transport socket redvoy does not run (never connecting
    /// to them in plaintext instead), warning once per update that has any, and records how
    /// many for `membership_excluded`.
    fn usable_endpoints<'a>(&self, endpoints: &'a [model::Endpoint]) -> Vec<&'a model::Endpoint> {
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
                 socket redvoy does not run (TLS); never connecting to them in plaintext"
            );
        }
        self.excluded
            .store(excluded.len() as u64, std::sync::atomic::Ordering::Relaxed);
        usable
    }
}

/// The hosts a load balancer uses: the healthy ones, or all of them when the healthy and
/// degraded ones are below `healthy_panic_threshold` (Envoy's panic mode,
/// `LoadBalancerBase::isHostSetInPanic`). Degraded hosts get no traffic outside panic, as with
/// Envoy's ring hash and Maglev (Envoy's other policies may also send to degraded hosts when
/// too few are healthy; redvoy does not yet).
fn routable(hosts: &[Arc<Host>], threshold: model::PanicThreshold) -> Vec<Arc<Host>> {
    let healthy: Vec<Arc<Host>> = hosts
        .iter()
        .filter(|h| h.eds.health_status.is_healthy())
        .cloned()
        .collect();
    let degraded = hosts
        .iter()
        .filter(|h| h.eds.health_status == model::HealthStatus::Degraded)
        .count();
    if threshold.in_panic(healthy.len() + degraded, hosts.len()) {
        hosts.to_vec()
    } else {
        healthy
    }
}

/// A DNS name of a STRICT_DNS / LOGICAL_DNS cluster (Envoy's `ResolveTarget`).
#[derive(Debug)]
struct DnsTarget {
    dns_address: String,
    port: u16,
    /// `endpoint.hostname`, else the DNS name.
    hostname: String,
    weight: u32,
    /// The endpoint's `health_status`, given to every address it resolves to.
    health_status: model::HealthStatus,
    /// This target's hosts in the order of the last successful answer.
    hosts: Vec<Arc<Host>>,
}

/// What the refresh task of one DNS cluster keeps between rounds.
#[derive(Debug)]
struct DnsCluster {
    cluster: Weak<Cluster>,
    targets: Vec<DnsTarget>,
    logical: bool,
    family: DnsLookupFamily,
    refresh_rate: Duration,
}

/// The active clusters, as readers see them: replaced whole (copy-on-write) on every change so
/// that a lookup is one ArcSwap load and a hash probe, with no lock.
#[derive(Debug, Default)]
struct ClusterMap {
    /// Static clusters first (bootstrap order), then dynamic ones in the order they warmed.
    order: Vec<Arc<Cluster>>,
    by_name: HashMap<String, Arc<Cluster>>,
}

/// What [`ClusterManager::add_or_update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterChange {
    /// A new name; active at once, or warming until its hosts are known.
    Added,
    /// A new version of a known name; the old version serves until the new one is warm.
    Modified,
    /// Same configuration as the version already known: nothing to do (Envoy's hash check).
    Unchanged,
}

/// The writer side: warming clusters, refresh tasks, the EDS cache.
#[derive(Debug, Default)]
struct ManagerState {
    /// Clusters waiting for their first hosts (EDS assignment, first DNS answer).
    warming: BTreeMap<String, Arc<Cluster>>,
    /// Bootstrap clusters: CDS may neither change nor remove them.
    static_names: HashSet<String>,
    /// Bootstrap DNS clusters, handed to their refresh tasks by `spawn_dns_refresh`.
    static_dns: Vec<DnsCluster>,
    /// Bootstrap Redis Clusters, whose discovery tasks `spawn_dns_refresh` starts.
    static_redis: Vec<Arc<Cluster>>,
    dns_started: bool,
    /// One refresh task per DNS cluster, by cluster name.
    tasks: HashMap<String, JoinHandle<()>>,
    /// The last assignment per EDS service name: a modified EDS cluster warms from it at once
    /// (Envoy's EDS resource cache, `assignment_use_cached`).
    assignments: HashMap<String, Arc<model::ClusterLoadAssignment>>,
}

/// Owns every cluster by name: the bootstrap's, and those CDS adds, modifies and removes.
pub struct ClusterManager {
    store: Store,
    stats: ManagerStats,
    active: ArcSwap<ClusterMap>,
    state: Mutex<ManagerState>,
}

/// `cluster_manager.*` stats.
#[derive(Debug)]
struct ManagerStats {
    active_clusters: Gauge,
    warming_clusters: Gauge,
    cluster_added: Counter,
    cluster_modified: Counter,
    cluster_removed: Counter,
    cluster_updated: Counter,
}

impl ManagerStats {
    fn new(store: &Store) -> Self {
        for name in [
            "cluster_updated_via_merge",
            "update_merge_cancelled",
            "update_out_of_merge_window",
        ] {
            store.counter(&format!("cluster_manager.{name}"));
        }
        let stats = Self {
            active_clusters: store.gauge("cluster_manager.active_clusters"),
            warming_clusters: store.gauge("cluster_manager.warming_clusters"),
            cluster_added: store.counter("cluster_manager.cluster_added"),
            cluster_modified: store.counter("cluster_manager.cluster_modified"),
            cluster_removed: store.counter("cluster_manager.cluster_removed"),
            cluster_updated: store.counter("cluster_manager.cluster_updated"),
        };
        // Envoy writes it (0 once every static cluster is warm).
        stats.warming_clusters.set(0);
        stats
    }
}

// === impl ClusterManager ===

impl ClusterManager {
    /// Builds the bootstrap's clusters, resolving DNS names once (Envoy's cluster warming) before
    /// returning. A name that fails to resolve leaves its cluster without those hosts (a warning
    /// and `update_failure`, as in Envoy); configuration errors fail the whole call. Static EDS
    /// clusters warm until their first assignment.
    pub async fn new(clusters: &[model::Cluster], stats: &Store) -> Result<Self, UpstreamError> {
        let mut names = HashSet::with_capacity(clusters.len());
        for c in clusters {
            if !names.insert(c.name.clone()) {
                return Err(UpstreamError::DuplicateCluster(c.name.clone()));
            }
            validate_cluster(c)?;
        }

        let mut map = ClusterMap::default();
        let mut state = ManagerState {
            static_names: names,
            ..ManagerState::default()
        };
        let mut dns = Vec::new();
        for config in clusters {
            let cluster = Arc::new(Cluster::new(config.clone(), stats));
            match config.discovery {
                DiscoveryType::Static => {
                    let hosts = static_hosts(&cluster)?;
                    cluster
                        .stats
                        .default_total_match_count
                        .add(hosts.len() as u64);
                    cluster.set_hosts(hosts);
                }
                DiscoveryType::OriginalDst => {}
                // Active at once with no hosts; `spawn_dns_refresh` starts discovery and
                // `wait_redis_clusters` waits for the first topology.
                DiscoveryType::RedisCluster => state.static_redis.push(Arc::clone(&cluster)),
                DiscoveryType::Eds => {
                    cluster.stats.warming_state.set(1);
                    state.warming.insert(config.name.clone(), cluster);
                    continue;
                }
                DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                    dns.push(DnsCluster::new(&cluster));
                }
            }
            map.by_name
                .insert(config.name.clone(), Arc::clone(&cluster));
            map.order.push(cluster);
        }

        // Warm every DNS cluster concurrently: startup waits for the slowest name only.
        let mut lookups = JoinSet::new();
        for (ci, d) in dns.iter().enumerate() {
            for (ti, t) in d.targets.iter().enumerate() {
                let (name, port, family) = (t.dns_address.clone(), t.port, d.family);
                lookups.spawn(async move { (ci, ti, resolve(&name, port, family).await) });
            }
        }
        let mut answers: Vec<Vec<Option<Answer>>> = dns
            .iter()
            .map(|d| d.targets.iter().map(|_| None).collect())
            .collect();
        while let Some(joined) = lookups.join_next().await {
            if let Ok((ci, ti, answer)) = joined {
                if let Some(slot) = answers.get_mut(ci).and_then(|a| a.get_mut(ti)) {
                    *slot = Some(answer);
                }
            }
        }
        for (d, answers) in dns.iter_mut().zip(answers) {
            if let Some(cluster) = d.cluster.upgrade() {
                let answers = answers
                    .into_iter()
                    .map(|a| a.unwrap_or_else(|| Err("resolver task failed".to_owned())))
                    .collect();
                d.apply(&cluster, answers);
            }
        }
        state.static_dns = dns;

        let manager_stats = ManagerStats::new(stats);
        manager_stats.active_clusters.set(map.order.len() as u64);
        manager_stats
            .warming_clusters
            .set(state.warming.len() as u64);
        manager_stats.cluster_added.add(clusters.len() as u64);

        Ok(Self {
            store: stats.clone(),
            stats: manager_stats,
            active: ArcSwap::from_pointee(map),
            state: Mutex::new(state),
        })
    }

    /// An active cluster by name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.active.load().by_name.get(name).cloned()
    }

    /// Active clusters: the bootstrap's in configuration order, then dynamic ones.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        self.active.load().order.clone()
    }

    /// Clusters still warming, by name.
    pub fn warming_clusters(&self) -> Vec<Arc<Cluster>> {
        self.lock().warming.values().cloned().collect()
    }

    /// Whether `name` was defined by the bootstrap.
    pub fn is_static(&self, name: &str) -> bool {
        self.lock().static_names.contains(name)
    }

    /// The EDS resource names every EDS cluster (active or warming) needs, sorted.
    pub fn eds_service_names(&self) -> Vec<String> {
        let state = self.lock();
        let map = self.active.load();
        let mut names: Vec<String> = map
            .order
            .iter()
            .chain(state.warming.values())
            .filter_map(|c| c.config.eds.as_ref().map(|e| e.service_name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManagerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `cluster_added` or `cluster_modified` for a cluster CDS sent, whether or not it loads.
    fn count_add_attempt(&self, known: bool) -> ClusterChange {
        if known {
            self.stats.cluster_modified.inc();
            ClusterChange::Modified
        } else {
            self.stats.cluster_added.inc();
            ClusterChange::Added
        }
    }

    /// Counts a CDS cluster refused before it reached [`Self::add_or_update`] for a reason
    /// Envoy's cluster manager raises while loading it (after counting the add).
    pub fn count_refused(&self, name: &str) {
        let state = self.lock();
        if state.static_names.contains(name) {
            return;
        }
        let known =
            state.warming.contains_key(name) || self.active.load().by_name.contains_key(name);
        self.count_add_attempt(known);
    }

    /// Adds or replaces a dynamic (CDS) cluster. STATIC and ORIGINAL_DST clusters are active at
    /// once; EDS clusters warm until an assignment for their service name is known (a cached
    /// one counts); DNS clusters warm until their first answer. A modified cluster's previous
    /// version keeps serving until the new one is warm. Must run on a tokio runtime (DNS).
    pub fn add_or_update(
        self: &Arc<Self>,
        config: model::Cluster,
    ) -> Result<ClusterChange, UpstreamError> {
        let mut state = self.lock();
        if state.static_names.contains(&config.name) {
            return Err(UpstreamError::StaticCluster(config.name));
        }
        let known_active = self.active.load().by_name.get(&config.name).cloned();
        let known = state
            .warming
            .get(&config.name)
            .cloned()
            .or(known_active.clone());
        if known.as_ref().is_some_and(|k| k.config == config) {
            return Ok(ClusterChange::Unchanged);
        }
        let change = self.count_add_attempt(known.is_some());
        // After counting, as Envoy's cluster manager counts a cluster it then fails to load.
        validate_cluster(&config)?;
        if let Some(task) = state.tasks.remove(&config.name) {
            task.abort();
        }
        let cluster = Arc::new(Cluster::new(config.clone(), &self.store));
        match config.discovery {
            DiscoveryType::Static => {
                let hosts = static_hosts(&cluster)?;
                cluster
                    .stats
                    .default_total_match_count
                    .add(hosts.len() as u64);
                cluster.set_hosts(hosts);
                self.activate(&mut state, cluster);
            }
            DiscoveryType::OriginalDst => self.activate(&mut state, cluster),
            DiscoveryType::RedisCluster => {
                // Warms until the first topology, as Envoy's redis cluster initialises.
                self.warm(&mut state, Arc::clone(&cluster));
                let manager = Arc::downgrade(self);
                let name = config.name.clone();
                let discovery = Discovery::new(&cluster, &self.store);
                let task = tokio::spawn(run_discovery(
                    Arc::downgrade(&cluster),
                    discovery,
                    move |cluster: Arc<Cluster>| {
                        let Some(manager) = manager.upgrade() else {
                            return;
                        };
                        let mut state = manager.lock();
                        let still_ours = state
                            .warming
                            .get(&name)
                            .is_some_and(|w| Arc::ptr_eq(w, &cluster));
                        if still_ours {
                            state.warming.remove(&name);
                            manager.activate(&mut state, cluster);
                        }
                    },
                ));
                state.tasks.insert(config.name.clone(), task);
            }
            DiscoveryType::Eds => {
                let cached = config
                    .eds
                    .as_ref()
                    .and_then(|e| state.assignments.get(&e.service_name))
                    .cloned();
                match cached {
                    Some(cla) => {
                        self.store
                            .counter(&format!("cluster.{}.assignment_use_cached", config.name))
                            .inc();
                        apply_assignment(&cluster, &cla);
                        self.activate(&mut state, cluster);
                    }
                    None => self.warm(&mut state, cluster),
                }
            }
            DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                self.warm(&mut state, Arc::clone(&cluster));
                let mut dns = DnsCluster::new(&cluster);
                let manager = Arc::downgrade(self);
                let name = config.name.clone();
                let task = tokio::spawn(async move {
                    let mut first = true;
                    loop {
                        if !first {
                            tokio::time::sleep(dns.refresh_rate).await;
                        }
                        let answers = dns.resolve_all().await;
                        let Some(cluster) = dns.cluster.upgrade() else {
                            break;
                        };
                        dns.apply(&cluster, answers);
                        if first {
                            first = false;
                            let Some(manager) = manager.upgrade() else {
                                break;
                            };
                            let mut state = manager.lock();
                            let still_ours = state
                                .warming
                                .get(&name)
                                .is_some_and(|w| Arc::ptr_eq(w, &cluster));
                            if still_ours {
                                state.warming.remove(&name);
                                manager.activate(&mut state, cluster);
                            }
                        }
                    }
                });
                state.tasks.insert(config.name.clone(), task);
            }
        }
        Ok(change)
    }

    /// Removes a dynamic cluster (active or warming). Returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, UpstreamError> {
        let mut state = self.lock();
        if state.static_names.contains(name) {
            return Err(UpstreamError::StaticCluster(name.to_owned()));
        }
        if let Some(task) = state.tasks.remove(name) {
            task.abort();
        }
        let warmed_out = state.warming.remove(name).is_some();
        let map = self.active.load();
        let was_active = map.by_name.contains_key(name);
        if was_active {
            let mut next = ClusterMap {
                order: map
                    .order
                    .iter()
                    .filter(|c| c.name != name)
                    .cloned()
                    .collect(),
                by_name: map.by_name.clone(),
            };
            next.by_name.remove(name);
            self.active.store(Arc::new(next));
        }
        let existed = warmed_out || was_active;
        if existed {
            self.stats.cluster_removed.inc();
            // Envoy destroys the cluster's stats scope with it. Clusters whose names extend
            // this one (`a` and `a.b`) keep theirs.
            let scope = format!("cluster.{name}.");
            let keep: Vec<String> = self
                .active
                .load()
                .order
                .iter()
                .chain(state.warming.values())
                .map(|c| format!("cluster.{}.", c.name))
                .filter(|k| k.starts_with(&scope) && *k != scope)
                .collect();
            self.store.remove_prefix(&scope, &keep);
        }
        self.publish_counts(&state);
        Ok(existed)
    }

    /// Applies an EDS assignment to every cluster (active or warming) whose service name it
    /// names; warming ones become active. Returns the names of the clusters that took it.
    pub fn apply_load_assignment(&self, cla: model::ClusterLoadAssignment) -> Vec<String> {
        let cla = Arc::new(cla);
        let mut state = self.lock();
        state
            .assignments
            .insert(cla.cluster_name.clone(), Arc::clone(&cla));
        let wants = |c: &Arc<Cluster>| {
            c.config
                .eds
                .as_ref()
                .is_some_and(|e| e.service_name == cla.cluster_name)
        };
        let mut taken = Vec::new();
        for cluster in self.active.load().order.iter().filter(|c| wants(c)) {
            apply_assignment(cluster, &cla);
            taken.push(cluster.name.clone());
        }
        let warm: Vec<String> = state
            .warming
            .iter()
            .filter(|(_, c)| wants(c))
            .map(|(n, _)| n.clone())
            .collect();
        for name in warm {
            if let Some(cluster) = state.warming.remove(&name) {
                apply_assignment(&cluster, &cla);
                self.activate(&mut state, cluster);
                taken.push(name);
            }
        }
        taken
    }

    /// Forgets the cached assignment of an EDS service name (Delta removal); clusters keep
    /// their hosts, as in Envoy.
    pub fn forget_load_assignment(&self, service_name: &str) {
        self.lock().assignments.remove(service_name);
    }

    /// Ends warming of every warming cluster without hosts (EDS `initial_fetch_timeout`):
    /// they become active with no hosts, as Envoy's init target does on expiry.
    pub fn finish_warming(&self) {
        let mut state = self.lock();
        let names: Vec<String> = state
            .warming
            .iter()
            .filter(|(_, c)| c.config.discovery == DiscoveryType::Eds)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Some(cluster) = state.warming.remove(&name) {
                self.activate(&mut state, cluster);
            }
        }
    }

    fn warm(&self, state: &mut ManagerState, cluster: Arc<Cluster>) {
        cluster.stats.warming_state.set(1);
        state.warming.insert(cluster.name.clone(), cluster);
        self.publish_counts(state);
    }

    /// Makes `cluster` the active version of its name (replacing any previous one in place).
    fn activate(&self, state: &mut ManagerState, cluster: Arc<Cluster>) {
        cluster.stats.warming_state.set(0);
        let map = self.active.load();
        let mut next = ClusterMap {
            order: map.order.clone(),
            by_name: map.by_name.clone(),
        };
        match next.order.iter_mut().find(|c| c.name == cluster.name) {
            Some(slot) => {
                *slot = Arc::clone(&cluster);
                self.stats.cluster_updated.inc();
            }
            None => next.order.push(Arc::clone(&cluster)),
        }
        next.by_name.insert(cluster.name.clone(), cluster);
        self.active.store(Arc::new(next));
        self.publish_counts(state);
    }

    fn publish_counts(&self, state: &ManagerState) {
        self.stats
            .active_clusters
            .set(self.active.load().order.len() as u64);
        self.stats.warming_clusters.set(state.warming.len() as u64);
    }

    /// Spawns, on the current tokio runtime, one task per bootstrap DNS cluster that
    /// re-resolves every `dns_refresh_rate` and swaps in a new HostSet when the answer changed.
    /// Later calls do nothing; the tasks end when the manager is dropped.
    pub fn spawn_dns_refresh(&self) {
        let mut state = self.lock();
        if state.dns_started {
            return;
        }
        state.dns_started = true;
        for cluster in std::mem::take(&mut state.static_redis) {
            let discovery = Discovery::new(&cluster, &self.store);
            let name = cluster.name.clone();
            let task = tokio::spawn(run_discovery(Arc::downgrade(&cluster), discovery, |_| {}));
            state.tasks.insert(name, task);
        }
        for mut d in std::mem::take(&mut state.static_dns) {
            let Some(name) = d.cluster.upgrade().map(|c| c.name.clone()) else {
                continue;
            };
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(d.refresh_rate).await;
                    if d.cluster.strong_count() == 0 {
                        break;
                    }
                    let answers = d.resolve_all().await;
                    let Some(cluster) = d.cluster.upgrade() else {
                        break;
                    };
                    d.apply(&cluster, answers);
                }
            });
            state.tasks.insert(name, task);
        }
    }
}

impl ClusterManager {
    /// Waits until every active Redis Cluster has completed its first discovery round, or
    /// `timeout` passes (Envoy holds listeners back until then; redvoy starts them anyway
    /// after the timeout, with the cluster answering `no upstream host`). Returns the names
    /// still without a topology.
    pub async fn wait_redis_clusters(&self, timeout: Duration) -> Vec<String> {
        let clusters: Vec<Arc<Cluster>> = self
            .clusters()
            .into_iter()
            .filter(|c| c.is_redis_cluster())
            .collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending = Vec::new();
        for c in clusters {
            let mut rx = c.initialized.subscribe();
            let done = tokio::time::timeout_at(deadline, rx.wait_for(|v| *v)).await;
            if !matches!(done, Ok(Ok(_))) {
                pending.push(c.name.clone());
            }
        }
        pending
    }
}

/// The discovery loop of one Redis Cluster: a round every `cluster_refresh_rate`, or at once
/// when the refresh manager triggers. `on_first` runs after the first round that ends the
/// cluster's initialisation (a topology, or seeds that resolve to nothing). Ends when the
/// cluster is gone.
async fn run_discovery(
    cluster: Weak<Cluster>,
    mut discovery: Discovery,
    on_first: impl FnOnce(Arc<Cluster>) + Send + 'static,
) {
    let mut on_first = Some(on_first);
    loop {
        let Some(c) = cluster.upgrade() else {
            break;
        };
        let outcome = discovery.round(&c).await;
        if outcome != RoundOutcome::Failed {
            if let Some(f) = on_first.take() {
                c.mark_initialized();
                f(Arc::clone(&c));
            }
        }
        let rate = c
            .config
            .redis_cluster
            .as_ref()
            .map_or(Duration::from_secs(5), |r| r.cluster_refresh_rate)
            .max(MIN_DNS_REFRESH_RATE);
        let Some(trigger) = c.refresh_trigger() else {
            break;
        };
        tokio::select! {
            _ = tokio::time::sleep(rate) => {}
            _ = trigger.wake.notified() => {}
        }
    }
}

impl std::fmt::Debug for ClusterManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterManager")
            .field("active", &self.active.load().order.len())
            .field("warming", &self.lock().warming.len())
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterManager {
    fn drop(&mut self) {
        for (_, task) in self.lock().tasks.drain() {
            task.abort();
        }
    }
}

/// Installs an EDS assignment's hosts, with Envoy's per-update accounting. Hosts keep their
/// `Arc` (and so their stats) across updates when their address stays.
fn apply_assignment(cluster: &Cluster, cla: &model::ClusterLoadAssignment) {
    let stats = &cluster.stats;
    stats.update_attempt.inc();
    if cla.endpoints.is_empty() {
        stats.update_empty.inc();
    }
    let old = cluster.all_hosts();
    let excluded_before = cluster.excluded.load(std::sync::atomic::Ordering::Relaxed);
    let mut hosts = Vec::new();
    for e in cluster.usable_endpoints(&cla.endpoints) {
        let Ok(ip) = e.address.address.parse::<IpAddr>() else {
            // EDS addresses are IP literals (the config crate checks); skip anything else.
            continue;
        };
        let addr = SocketAddr::new(ip, e.address.port);
        let eds = EdsInfo {
            health_status: e.health_status,
            locality: e.locality.clone(),
            priority: e.priority,
        };
        let host = old
            .iter()
            .find(|h| {
                h.address == addr
                    && h.weight == e.weight
                    && h.hostname == e.hostname
                    && h.eds == eds
            })
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(Host::new(addr, e.hostname.clone(), e.weight).with_eds(eds))
            });
        hosts.push(host);
    }
    stats.update_success.inc();
    let unchanged = hosts.len() == old.len()
        && hosts.iter().zip(&old).all(|(a, b)| Arc::ptr_eq(a, b))
        && cluster.excluded.load(std::sync::atomic::Ordering::Relaxed) == excluded_before;
    if unchanged && cluster.host_set_installed() {
        stats.update_no_rebuild.inc();
        return;
    }
    cluster.set_hosts(hosts);
}

fn validate_cluster(c: &model::Cluster) -> Result<(), UpstreamError> {
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

/// A STATIC cluster's hosts, with their configured `health_status`; endpoints needing a
/// transport socket redvoy does not run are left out (see [`Cluster::usable_endpoints`]).
fn static_hosts(cluster: &Cluster) -> Result<Vec<Arc<Host>>, UpstreamError> {
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
                health_status: e.health_status,
                locality: e.locality.clone(),
                priority: e.priority,
            };
            Ok(Arc::new(
                Host::new(addr, e.hostname.clone(), e.weight).with_eds(eds),
            ))
        })
        .collect()
}

/// Resolves `name`, bounded by [`DNS_RESOLVE_TIMEOUT`], and applies the lookup family the way
/// Envoy's c-ares resolver does (AUTO: IPv6 if there is any, else IPv4; V4_PREFERRED: the
/// reverse; ALL: IPv4 then IPv6). The system resolver (getaddrinfo) orders the answer.
pub(crate) async fn resolve(name: &str, port: u16, family: DnsLookupFamily) -> Answer {
    let lookup = tokio::time::timeout(DNS_RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
    let mut all: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) | Err(_) if is_localhost(name) => Vec::new(),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("timed out after {DNS_RESOLVE_TIMEOUT:?}")),
    };
    if is_localhost(name) {
        // c-ares answers `localhost` with the loopback address of a family the hosts file does
        // not list (RFC 6761): Envoy resolves it to [::1] under AUTO even when /etc/hosts has
        // only 127.0.0.1. The address is hashed for placement, so follow it.
        if !all.iter().any(SocketAddr::is_ipv4) {
            all.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
        }
        if !all.iter().any(SocketAddr::is_ipv6) {
            all.push(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port));
        }
    }
    Ok(filter_family(&all, family))
}

fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .len()
            .checked_sub(".localhost".len())
            .and_then(|i| name.get(i..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
}

fn filter_family(all: &[SocketAddr], family: DnsLookupFamily) -> Vec<SocketAddr> {
    let v4 = all.iter().filter(|a| a.is_ipv4()).copied();
    let v6 = all.iter().filter(|a| a.is_ipv6()).copied();
    let has_v4 = all.iter().any(SocketAddr::is_ipv4);
    let has_v6 = all.iter().any(SocketAddr::is_ipv6);
    match family {
        DnsLookupFamily::V4Only => v4.collect(),
        DnsLookupFamily::V6Only => v6.collect(),
        DnsLookupFamily::Auto if has_v6 => v6.collect(),
        DnsLookupFamily::Auto => v4.collect(),
        DnsLookupFamily::V4Preferred if has_v4 => v4.collect(),
        DnsLookupFamily::V4Preferred => v6.collect(),
        DnsLookupFamily::All => v4.chain(v6).collect(),
    }
}

// === impl DnsCluster ===

impl DnsCluster {
    fn new(cluster: &Arc<Cluster>) -> Self {
        let config = &cluster.config;
        Self {
            cluster: Arc::downgrade(cluster),
            targets: cluster
                .usable_endpoints(&config.endpoints)
                .into_iter()
                .map(|e| DnsTarget {
                    dns_address: e.address.address.clone(),
                    port: e.address.port,
                    hostname: if e.hostname.is_empty() {
                        e.address.address.clone()
                    } else {
                        e.hostname.clone()
                    },
                    weight: e.weight,
                    health_status: e.health_status,
                    hosts: Vec::new(),
                })
                .collect(),
            logical: config.discovery == DiscoveryType::LogicalDns,
            family: config.dns_lookup_family,
            refresh_rate: config.dns_refresh_rate.max(MIN_DNS_REFRESH_RATE),
        }
    }

    async fn resolve_all(&self) -> Vec<Answer> {
        let mut set = JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let (name, port, family) = (t.dns_address.clone(), t.port, self.family);
            set.spawn(async move { (i, resolve(&name, port, family).await) });
        }
        let mut out: Vec<Answer> = self
            .targets
            .iter()
            .map(|_| Err("resolver task failed".to_owned()))
            .collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, answer)) = joined {
                if let Some(slot) = out.get_mut(i) {
                    *slot = answer;
                }
            }
        }
        out
    }

    /// Applies one round of answers (one per target, in target order) with Envoy's per-target
    /// accounting, then rebuilds the host set once if any target's address set changed.
    fn apply(&mut self, cluster: &Cluster, answers: Vec<Answer>) {
        let stats = &cluster.stats;
        let mut changed = false;
        for (target, answer) in self.targets.iter_mut().zip(answers) {
            stats.update_attempt.inc();
            let addrs = match answer {
                // LOGICAL_DNS ignores an empty answer (keeps its last address) and counts it
                // as a failure.
                Ok(addrs) if self.logical && addrs.is_empty() => Err("empty answer".to_owned()),
                other => other,
            };
            let mut addrs = match addrs {
                Ok(addrs) => addrs,
                Err(e) => {
                    stats.update_failure.inc();
                    warn!(
                        cluster = %cluster.name,
                        name = %target.dns_address,
                        error = %e,
                        "DNS resolution failed; keeping the previous hosts"
                    );
                    continue;
                }
            };
            stats.update_success.inc();
            if self.logical {
                addrs.truncate(1);
            }
            if target.update(addrs, stats) {
                stats.membership_change.inc();
                changed = true;
            } else {
                stats.update_no_rebuild.inc();
            }
        }
        if changed {
            let hosts = self
                .targets
                .iter()
                .flat_map(|t| t.hosts.iter().cloned())
                .collect();
            cluster.install(hosts);
        }
    }
}

// === impl DnsTarget ===

impl DnsTarget {
    /// Takes a new answer; returns whether the set of addresses changed. The host list always
    /// follows the latest answer order, reusing the `Arc<Host>` of addresses already known.
    fn update(&mut self, addrs: Vec<SocketAddr>, stats: &ClusterStats) -> bool {
        let mut seen = HashSet::with_capacity(addrs.len());
        let mut hosts = Vec::with_capacity(addrs.len());
        let mut added = false;
        for addr in addrs {
            if !seen.insert(addr) {
                continue;
            }
            match self.hosts.iter().find(|h| h.address == addr) {
                Some(existing) => hosts.push(existing.clone()),
                None => {
                    added = true;
                    hosts.push(Arc::new(
                        Host::new(addr, self.hostname.clone(), self.weight).with_eds(EdsInfo {
                            health_status: self.health_status,
                            ..EdsInfo::default()
                        }),
                    ));
                }
            }
            // Envoy builds a fresh host object (and runs the transport socket matcher) for
            // every address of every answer.
            stats.default_total_match_count.inc();
        }
        let removed = self.hosts.iter().any(|h| !seen.contains(&h.address));
        self.hosts = hosts;
        added || removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redvoy_config::model::{Endpoint, LbPolicy, SocketAddress};

    fn cluster(name: &str, discovery: DiscoveryType, endpoints: &[(&str, u16)]) -> model::Cluster {
        model::Cluster {
            name: name.to_owned(),
            discovery,
            lb_policy: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            dns_refresh_rate: Duration::from_millis(50),
            dns_lookup_family: DnsLookupFamily::V4Only,
            endpoints: endpoints
                .iter()
                .map(|(a, p)| Endpoint {
                    address: SocketAddress {
                        address: (*a).to_owned(),
                        port: *p,
                    },
                    pipe: None,
                    weight: 1,
                    hostname: String::new(),
                    health_status: Default::default(),
                    locality: Default::default(),
                    priority: 0,
                    transport_socket_labels: Default::default(),
                    locality_transport_socket_labels: Default::default(),
                })
                .collect(),
            redis_protocol_options: None,
            use_hostname_for_hashing: false,
            eds: None,
            redis_cluster: None,
            circuit_breakers: Default::default(),
            healthy_panic_threshold: Default::default(),
            tcp_keepalive: None,
            transport_socket_matches: Default::default(),
        }
    }

    #[tokio::test]
    async fn static_cluster_hosts_and_stats() {
        let store = Store::new();
        let c = cluster("s", DiscoveryType::Static, &[("127.0.0.1", 1), ("::1", 2)]);
        let cm = ClusterManager::new(&[c], &store).await.unwrap();
        let s = cm.get("s").unwrap();
        let set = s.host_set();
        let addrs: Vec<&str> = set.hosts().iter().map(|h| h.address_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:1", "[::1]:2"]);
        assert_eq!(store.value_of("cluster.s.membership_change"), Some(1));
        assert_eq!(store.value_of("cluster.s.membership_total"), Some(2));
        assert_eq!(store.value_of("cluster.s.membership_healthy"), Some(2));
        assert_eq!(store.value_of("cluster.s.update_attempt"), Some(0));
        // Envoy leaves max_host_weight at 0 for STATIC clusters.
        assert_eq!(store.value_of("cluster.s.max_host_weight"), Some(0));
        assert_eq!(store.value_of("cluster.s.upstream_rq_retry"), Some(0));
        assert_eq!(
            store.value_of("cluster.s.circuit_breakers.default.cx_open"),
            Some(0)
        );
        assert_eq!(store.value_of("cluster_manager.active_clusters"), Some(1));
        assert!(cm.get("nope").is_none());
        assert_eq!(cm.clusters().len(), 1);
    }

    #[tokio::test]
    async fn static_cluster_rejects_names() {
        let c = cluster("s", DiscoveryType::Static, &[("localhost", 1)]);
        let err = ClusterManager::new(&[c], &Store::new()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed IP address: localhost. Consider setting resolver_name or setting cluster \
             type to 'STRICT_DNS' or 'LOGICAL_DNS'"
        );
    }

    #[tokio::test]
    async fn config_errors() {
        let store = Store::new();
        let a = cluster("a", DiscoveryType::Static, &[]);
        let err = ClusterManager::new(&[a.clone(), a.clone()], &store)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "cluster manager: duplicate cluster 'a'");

        let mut h = cluster("h", DiscoveryType::Static, &[("127.0.0.1", 1)]);
        h.use_hostname_for_hashing = true;
        let err = ClusterManager::new(&[h], &store).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot use hostname for consistent hashing loadbalancing for cluster of type: \
             'envoy.cluster.static'"
        );

        let l = cluster(
            "l",
            DiscoveryType::LogicalDns,
            &[("localhost", 1), ("localhost", 2)],
        );
        let err = ClusterManager::new(&[l], &store).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint"
        );

        let mut m = cluster("m", DiscoveryType::Static, &[]);
        m.lb_policy = LbPolicy::Maglev { table_size: 8 };
        let err = ClusterManager::new(&[m], &store).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "The table size of maglev must be prime number"
        );
    }

    #[tokio::test]
    async fn strict_dns_localhost() {
        let store = Store::new();
        let mut c = cluster(
            "d",
            DiscoveryType::StrictDns,
            &[("localhost", 7000), ("127.0.0.2", 7001)],
        );
        c.endpoints[1].hostname = "second".to_owned();
        c.endpoints[1].weight = 3;
        let cm = ClusterManager::new(&[c], &store).await.unwrap();
        let d = cm.get("d").unwrap();
        let set = d.host_set();
        let addrs: Vec<&str> = set.hosts().iter().map(|h| h.address_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:7000", "127.0.0.2:7001"]);
        assert_eq!(set.hosts()[0].hostname, "localhost");
        assert_eq!(set.hosts()[1].hostname, "second");
        // Two targets, each one attempt, one success, one membership change (Envoy counts per
        // target).
        assert_eq!(store.value_of("cluster.d.update_attempt"), Some(2));
        assert_eq!(store.value_of("cluster.d.update_success"), Some(2));
        assert_eq!(store.value_of("cluster.d.membership_change"), Some(2));
        assert_eq!(store.value_of("cluster.d.max_host_weight"), Some(3));

        // A refresh with the same answer keeps the same Arc<Host> and does not rebuild.
        set.hosts()[0]
            .stats
            .rq_total
            .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        cm.spawn_dns_refresh();
        cm.spawn_dns_refresh(); // idempotent
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.value_of("cluster.d.update_attempt") < Some(4) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(store.value_of("cluster.d.update_no_rebuild"), Some(2));
        assert_eq!(store.value_of("cluster.d.membership_change"), Some(2));
        assert!(Arc::ptr_eq(&d.host_set(), &set));
    }

    #[tokio::test]
    async fn failed_resolution_leaves_cluster_empty() {
        let store = Store::new();
        let c = cluster(
            "f",
            DiscoveryType::StrictDns,
            &[("does-not-exist.invalid", 1)],
        );
        let cm = ClusterManager::new(&[c], &store).await.unwrap();
        let f = cm.get("f").unwrap();
        assert!(f.host_set().hosts().is_empty());
        assert_eq!(f.host_set().choose(0), None);
        assert_eq!(store.value_of("cluster.f.update_failure"), Some(1));
        assert_eq!(store.value_of("cluster.f.membership_change"), Some(0));
    }

    #[tokio::test]
    async fn logical_dns_takes_first_address() {
        let store = Store::new();
        let c = cluster("l", DiscoveryType::LogicalDns, &[("localhost", 7002)]);
        let cm = ClusterManager::new(&[c], &store).await.unwrap();
        let hosts = cm.get("l").unwrap().host_set();
        assert_eq!(hosts.hosts().len(), 1);
        assert_eq!(hosts.hosts()[0].address_string(), "127.0.0.1:7002");
        assert_eq!(store.value_of("cluster.l.max_host_weight"), Some(0));
    }

    #[tokio::test]
    async fn localhost_follows_c_ares() {
        // Observed on Envoy 1.40 with an /etc/hosts that lists only 127.0.0.1 localhost.
        let auto = resolve("localhost", 1, DnsLookupFamily::Auto)
            .await
            .unwrap();
        assert_eq!(auto, ["[::1]:1".parse::<SocketAddr>().unwrap()]);
        let all = resolve("localhost", 1, DnsLookupFamily::All).await.unwrap();
        let all: Vec<String> = all.iter().map(crate::envoy_address_string).collect();
        assert_eq!(all, ["127.0.0.1:1", "[::1]:1"]);
        let v4 = resolve("LocalHost.", 1, DnsLookupFamily::V4Preferred)
            .await
            .unwrap();
        assert_eq!(v4, ["127.0.0.1:1".parse::<SocketAddr>().unwrap()]);
        assert!(is_localhost("redis.localhost"));
        assert!(!is_localhost("notlocalhost"));
    }

    #[test]
    fn lookup_families() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let c: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let all = [a, b, c];
        assert_eq!(filter_family(&all, DnsLookupFamily::V4Only), [a, c]);
        assert_eq!(filter_family(&all, DnsLookupFamily::V6Only), [b]);
        assert_eq!(filter_family(&all, DnsLookupFamily::Auto), [b]);
        assert_eq!(filter_family(&[a, c], DnsLookupFamily::Auto), [a, c]);
        assert_eq!(filter_family(&all, DnsLookupFamily::V4Preferred), [a, c]);
        assert_eq!(filter_family(&[b], DnsLookupFamily::V4Preferred), [b]);
        assert_eq!(filter_family(&all, DnsLookupFamily::All), [a, c, b]);
    }

    #[test]
    fn target_update_tracks_changes_and_reuses_hosts() {
        let store = Store::new();
        let stats = ClusterStats::new(&store, "t", &LbPolicy::RoundRobin);
        let mut t = DnsTarget {
            dns_address: "x".into(),
            port: 1,
            hostname: "x".into(),
            weight: 1,
            health_status: model::HealthStatus::Unknown,
            hosts: Vec::new(),
        };
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        assert!(t.update(vec![a, b, a], &stats));
        assert_eq!(t.hosts.len(), 2);
        let first = t.hosts[0].clone();
        // Same set, new order: no change, but the order follows the answer.
        assert!(!t.update(vec![b, a], &stats));
        assert_eq!(t.hosts[0].address, b);
        assert!(Arc::ptr_eq(&t.hosts[1], &first));
        assert!(t.update(vec![b], &stats));
        assert!(t.update(vec![], &stats));
        assert!(t.hosts.is_empty());
    }

    #[test]
    fn set_hosts_counts_membership_changes() {
        let store = Store::new();
        let c = Cluster::new(cluster("x", DiscoveryType::Static, &[]), &store);
        let h = Arc::new(Host::new("10.0.0.1:1".parse().unwrap(), "", 1));
        c.set_hosts(vec![h.clone()]);
        c.set_hosts(vec![h]);
        assert_eq!(c.stats.membership_change.value(), 1);
        assert_eq!(c.host_set_guard().hosts().len(), 1);
    }

    fn eds_cluster(name: &str, service: &str) -> model::Cluster {
        let mut c = cluster(name, DiscoveryType::Eds, &[]);
        c.eds = Some(model::EdsConfig {
            service_name: service.to_owned(),
            eds_config: model::ConfigSource {
                kind: model::ConfigSourceKind::Ads,
                initial_fetch_timeout: Duration::ZERO,
            },
        });
        c
    }

    fn cla(
        service: &str,
        endpoints: &[(&str, u16, model::HealthStatus)],
    ) -> model::ClusterLoadAssignment {
        model::ClusterLoadAssignment {
            cluster_name: service.to_owned(),
            endpoints: endpoints
                .iter()
                .map(|(a, p, h)| Endpoint {
                    address: SocketAddress {
                        address: (*a).to_owned(),
                        port: *p,
                    },
                    pipe: None,
                    weight: 1,
                    hostname: String::new(),
                    health_status: *h,
                    locality: Default::default(),
                    priority: 0,
                    transport_socket_labels: Default::default(),
                    locality_transport_socket_labels: Default::default(),
                })
                .collect(),
        }
    }

    fn ports(c: &Cluster) -> Vec<u16> {
        c.host_set()
            .hosts()
            .iter()
            .map(|h| h.address.port())
            .collect()
    }

    #[tokio::test]
    async fn eds_cluster_warms_until_its_assignment() {
        use model::HealthStatus::Healthy;
        let store = Store::new();
        let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
        assert_eq!(
            cm.add_or_update(eds_cluster("a", "svc-a")).unwrap(),
            ClusterChange::Added
        );
        assert!(cm.get("a").is_none(), "warming clusters are not visible");
        assert_eq!(store.value_of("cluster_manager.warming_clusters"), Some(1));
        assert_eq!(cm.eds_service_names(), vec!["svc-a".to_owned()]);
        let took = cm.apply_load_assignment(cla("svc-a", &[("127.0.0.1", 7001, Healthy)]));
        assert_eq!(took, vec!["a".to_owned()]);
        let a = cm.get("a").unwrap();
        assert_eq!(ports(&a), vec![7001]);
        assert_eq!(store.value_of("cluster_manager.warming_clusters"), Some(0));
        assert_eq!(store.value_of("cluster_manager.active_clusters"), Some(1));

        // The same config again is no change; a modified one warms from the cached assignment.
        assert_eq!(
            cm.add_or_update(eds_cluster("a", "svc-a")).unwrap(),
            ClusterChange::Unchanged
        );
        let mut modified = eds_cluster("a", "svc-a");
        modified.connect_timeout = Duration::from_secs(3);
        assert_eq!(cm.add_or_update(modified).unwrap(), ClusterChange::Modified);
        let a2 = cm.get("a").unwrap();
        assert!(!Arc::ptr_eq(&a, &a2));
        assert_eq!(ports(&a2), vec![7001]);

        // Endpoint changes reach the active cluster in place.
        cm.apply_load_assignment(cla("svc-a", &[("127.0.0.1", 7002, Healthy)]));
        assert_eq!(ports(&cm.get("a").unwrap()), vec![7002]);

        cm.add_or_update(eds_cluster("a.b", "svc-ab")).unwrap();
        assert!(store.value_of("cluster.a.update_attempt").is_some());
        assert!(cm.remove("a").unwrap());
        assert!(cm.get("a").is_none());
        // Its stats go with it (Envoy destroys the scope); `a.b`'s stay.
        assert!(store.value_of("cluster.a.update_attempt").is_none());
        assert!(store.value_of("cluster.a.b.warming_state").is_some());
        assert_eq!(store.value_of("cluster_manager.cluster_removed"), Some(1));
        assert!(!cm.remove("a").unwrap());
    }

    #[tokio::test]
    async fn unhealthy_endpoints_are_not_routed_unless_most_are() {
        use model::HealthStatus::{Healthy, Unhealthy};
        let store = Store::new();
        let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
        cm.add_or_update(eds_cluster("a", "a")).unwrap();
        cm.apply_load_assignment(cla(
            "a",
            &[
                ("127.0.0.1", 1, Healthy),
                ("127.0.0.1", 2, Unhealthy),
                ("127.0.0.1", 3, Healthy),
            ],
        ));
        let a = cm.get("a").unwrap();
        assert_eq!(ports(&a), vec![1, 3]);
        assert_eq!(a.all_hosts().len(), 3);
        // Below 50% healthy: Envoy's panic mode routes to every host.
        cm.apply_load_assignment(cla(
            "a",
            &[
                ("127.0.0.1", 1, Unhealthy),
                ("127.0.0.1", 2, Unhealthy),
                ("127.0.0.1", 3, Healthy),
            ],
        ));
        assert_eq!(ports(&cm.get("a").unwrap()), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn cds_cannot_touch_static_clusters() {
        let store = Store::new();
        let statics = [cluster("s", DiscoveryType::Static, &[("127.0.0.1", 1)])];
        let cm = Arc::new(ClusterManager::new(&statics, &store).await.unwrap());
        assert!(matches!(
            cm.add_or_update(cluster("s", DiscoveryType::Static, &[("127.0.0.1", 2)])),
            Err(UpstreamError::StaticCluster(_))
        ));
        assert!(cm.remove("s").is_err());
        cm.add_or_update(cluster("d", DiscoveryType::Static, &[("127.0.0.1", 3)]))
            .unwrap();
        let names: Vec<String> = cm.clusters().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, vec!["s".to_owned(), "d".to_owned()]);
        assert!(cm.is_static("s") && !cm.is_static("d"));
    }

    #[tokio::test]
    async fn dns_cluster_added_by_cds_warms_until_resolved() {
        let store = Store::new();
        let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
        cm.add_or_update(cluster(
            "dns",
            DiscoveryType::StrictDns,
            &[("127.0.0.1", 6379)],
        ))
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cm.get("dns").is_none() {
            assert!(std::time::Instant::now() < deadline, "never warmed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ports(&cm.get("dns").unwrap()), vec![6379]);
    }
}
