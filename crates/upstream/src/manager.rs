//! The cluster manager: owns every cluster by name (the bootstrap's, and those CDS adds,
//! modifies and removes), warms new ones (EDS assignment, first DNS answer, first Redis
//! Cluster topology), swaps them in, and runs their refresh tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use redvoy_config::model::{self, DiscoveryType};
use redvoy_stats::{Counter, Gauge, Store};
use tokio::task::JoinHandle;

use crate::cluster::{static_hosts, validate_cluster, Cluster};
use crate::dns::{DnsCluster, MIN_DNS_REFRESH_RATE};
use crate::event_log::EventLog;
use crate::health_check;
use crate::host::{EdsInfo, HealthFlag, Host};
use crate::outlier;
use crate::redis_cluster::{Discovery, RoundOutcome};
use crate::UpstreamError;

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
    /// One refresh task per DNS cluster or Redis Cluster (discovery), by cluster name.
    tasks: HashMap<String, JoinHandle<()>>,
    /// `cluster_manager.outlier_detection.event_log_path`, once set.
    outlier_event_log: Option<Arc<EventLog>>,
    /// The active health checker and the outlier detector's timer of each cluster that
    /// configures them, by cluster name.
    health_checkers: HashMap<String, Vec<JoinHandle<()>>>,
    /// The last assignment per EDS service name: a modified EDS cluster warms from it at once
    /// (Envoy's EDS resource cache, `assignment_use_cached`).
    assignments: HashMap<String, Arc<model::ClusterLoadAssignment>>,
}

/// Owns every cluster by name: the bootstrap's, and those CDS adds, modifies and removes.
pub struct ClusterManager {
    store: Store,
    /// The secrets clusters' TLS contexts name.
    secrets: Arc<redvoy_tls::SecretManager>,
    stats: ManagerStats,
    active: ArcSwap<ClusterMap>,
    state: Mutex<ManagerState>,
    /// The number of warming clusters, for whoever must notice a cluster that finished
    /// warming on its own (DNS answer, Redis Cluster topology, first health checks).
    warming_count: tokio::sync::watch::Sender<usize>,
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
    /// Logs outlier ejections of every cluster, present and future, to `path`
    /// (`cluster_manager.outlier_detection.event_log_path`).
    pub fn set_outlier_event_log(&self, path: &str) {
        let log = Arc::new(EventLog::new(path));
        let mut state = self.lock();
        for cluster in self
            .active
            .load()
            .order
            .iter()
            .chain(state.warming.values())
        {
            if let Some(detector) = cluster.outlier_detector() {
                detector.set_event_log(&log);
            }
        }
        state.outlier_event_log = Some(log);
    }

    /// An active cluster by name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.active.load().by_name.get(name).cloned()
    }

    /// Active clusters: the bootstrap's in configuration order, then dynamic ones.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        self.active.load().order.clone()
    }

    /// The secrets TLS contexts name (clusters' and listeners').
    pub fn secrets(&self) -> &Arc<redvoy_tls::SecretManager> {
        &self.secrets
    }

    /// Changes whenever the number of warming clusters does.
    pub fn warming_changes(&self) -> tokio::sync::watch::Receiver<usize> {
        self.warming_count.subscribe()
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
        for task in state
            .health_checkers
            .remove(&config.name)
            .unwrap_or_default()
        {
            task.abort();
        }
        let cluster = Arc::new(Cluster::build(config.clone(), &self.store, &self.secrets)?);
        if let (Some(log), Some(detector)) = (&state.outlier_event_log, cluster.outlier_detector())
        {
            detector.set_event_log(log);
        }
        let tasks = health_tasks(&cluster, &self.store);
        if !tasks.is_empty() {
            state.health_checkers.insert(config.name.clone(), tasks);
        }
        match config.discovery {
            DiscoveryType::Static => {
                let hosts = static_hosts(&cluster)?;
                for h in &hosts {
                    cluster.count_transport_match(h.transport_match, 1);
                }
                cluster.set_hosts(hosts);
                self.activate_when_checked(&mut state, cluster);
            }
            DiscoveryType::OriginalDst => self.activate(&mut state, cluster),
            DiscoveryType::RedisCluster => {
                // Warms until the first topology, as Envoy's redis cluster initialises.
                self.warm(&mut state, Arc::clone(&cluster));
                let manager = Arc::downgrade(self);
                let discovery = Discovery::new(&cluster, &self.store);
                let task = tokio::spawn(run_discovery(
                    Arc::downgrade(&cluster),
                    discovery,
                    move |cluster| {
                        activate_warmed(&manager, cluster);
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
                        self.activate_when_checked(&mut state, cluster);
                    }
                    None => self.warm(&mut state, cluster),
                }
            }
            DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                self.warm(&mut state, Arc::clone(&cluster));
                let manager = Arc::downgrade(self);
                let task = tokio::spawn(run_dns(
                    DnsCluster::new(&cluster),
                    Resolve::AtOnce,
                    move |cluster| activate_warmed(&manager, cluster),
                ));
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
        for task in state.health_checkers.remove(name).unwrap_or_default() {
            task.abort();
        }
        let warming = state.warming.remove(name);
        let warmed_out = warming.is_some();
        let map = self.active.load();
        let active = map.by_name.get(name).cloned();
        let was_active = active.is_some();
        // Its stats go below; connections still open write into cells of their own from now on.
        for gone in warming.iter().chain(active.iter()) {
            gone.stats.retire();
        }
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
    pub fn apply_load_assignment(
        self: &Arc<Self>,
        cla: model::ClusterLoadAssignment,
    ) -> Vec<String> {
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
                self.activate_when_checked(&mut state, cluster);
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

    /// Activates a cluster whose hosts are known, or, when it is health checked and some host
    /// has not had its first check, keeps it warming until each has (Envoy initialises a
    /// health-checked cluster after the first round).
    fn activate_when_checked(self: &Arc<Self>, state: &mut ManagerState, cluster: Arc<Cluster>) {
        if cluster.first_health_checks_done() && cluster.tls_ready() {
            self.activate(state, cluster);
        } else {
            self.warm(state, Arc::clone(&cluster));
            if !cluster
                .warm_wait_spawned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                spawn_first_checks_wait(Arc::downgrade(self), &cluster);
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
        self.warming_count.send_replace(state.warming.len());
    }

    /// Spawns, on the current tokio runtime, the refresh tasks of the bootstrap's clusters:
    /// DNS clusters re-resolve every `dns_refresh_rate` (swapping in a new HostSet when the
    /// answer changed), Redis Clusters run their discovery. Later calls do nothing; a task ends
    /// when its cluster is gone, and every task when the manager is dropped.
    pub fn spawn_dns_refresh(&self) {
        let mut state = self.lock();
        if state.dns_started {
            return;
        }
        state.dns_started = true;
        let bootstrap: Vec<Arc<Cluster>> = (self.active.load().order.iter())
            .chain(state.warming.values())
            .filter(|c| c.config.health_check.is_some() || c.outlier_detector().is_some())
            .cloned()
            .collect();
        for cluster in bootstrap {
            let tasks = health_tasks(&cluster, &self.store);
            state.health_checkers.insert(cluster.name.clone(), tasks);
        }
        for cluster in std::mem::take(&mut state.static_redis) {
            let discovery = Discovery::new(&cluster, &self.store);
            let name = cluster.name.clone();
            let task = tokio::spawn(run_discovery(Arc::downgrade(&cluster), discovery, |_| {}));
            state.tasks.insert(name, task);
        }
        for d in std::mem::take(&mut state.static_dns) {
            let Some(name) = d.cluster.upgrade().map(|c| c.name.clone()) else {
                continue;
            };
            // Resolved once already by `new`: the loop starts with a refresh period.
            let task = tokio::spawn(run_dns(d, Resolve::AfterRefreshPeriod, |_| true));
            state.tasks.insert(name, task);
        }
    }
}

impl ClusterManager {
    /// Waits until every active bootstrap cluster has initialised: each Redis Cluster has
    /// completed its first discovery round and each health-checked cluster has checked every
    /// host once; or until `timeout` passes (Envoy holds listeners back until then, without a
    /// bound; redvoy starts them anyway after the timeout, a Redis Cluster answering
    /// `no upstream host`). Returns the names of the clusters not initialised yet.
    pub async fn wait_initialized(&self, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending = Vec::new();
        for c in self.clusters() {
            if let Some(initialized) = &c.initialized {
                let mut rx = initialized.subscribe();
                let done = tokio::time::timeout_at(deadline, rx.wait_for(|v| *v)).await;
                if !matches!(done, Ok(Ok(_))) {
                    pending.push(c.name.clone());
                    continue;
                }
            }
            if tokio::time::timeout_at(deadline, c.wait_first_health_checks())
                .await
                .is_err()
            {
                pending.push(c.name.clone());
                continue;
            }
            for tls in c.tls_contexts() {
                if tokio::time::timeout_at(deadline, tls.wait_warm())
                    .await
                    .is_err()
                {
                    pending.push(c.name.clone());
                    break;
                }
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
        let done = !matches!(outcome, RoundOutcome::Failed);
        if let RoundOutcome::Topology(hosts, map) = outcome {
            c.set_redis_topology(hosts, map);
        }
        if done {
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

/// When a DNS refresh loop resolves first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resolve {
    /// A cluster CDS added: it warms until its first answers.
    AtOnce,
    /// A bootstrap cluster, already resolved once by `ClusterManager::new`.
    AfterRefreshPeriod,
}

/// The refresh loop of one STRICT_DNS or LOGICAL_DNS cluster: resolves every name, applies
/// the answers, then again every `dns_refresh_rate`. `on_first` runs after the first answers
/// are applied; the loop ends when it returns false (the manager is gone) or when the cluster
/// is gone.
async fn run_dns(
    mut dns: DnsCluster,
    first: Resolve,
    on_first: impl FnOnce(Arc<Cluster>) -> bool + Send + 'static,
) {
    let mut on_first = Some(on_first);
    let mut wait = first == Resolve::AfterRefreshPeriod;
    loop {
        if wait {
            tokio::time::sleep(dns.refresh_rate).await;
        }
        wait = true;
        if dns.cluster.strong_count() == 0 {
            break;
        }
        let answers = dns.resolve_all().await;
        let Some(cluster) = dns.cluster.upgrade() else {
            break;
        };
        dns.apply(&cluster, answers);
        if let Some(f) = on_first.take() {
            if !f(cluster) {
                break;
            }
        }
    }
}

/// Activates a cluster whose first hosts just arrived, unless a newer version of it replaced
/// it while it warmed (it may still wait for its first health checks and TLS secrets). False
/// when the manager is gone.
fn activate_warmed(manager: &Weak<ClusterManager>, cluster: Arc<Cluster>) -> bool {
    take_warmed(manager, cluster, true)
}

/// Activates a cluster whose wait for first health checks and TLS secrets is over (the
/// secrets' initial fetch may have timed out: the cluster then starts without them, and its
/// connections fail until they come, as in Envoy).
fn activate_checked(manager: &Weak<ClusterManager>, cluster: Arc<Cluster>) {
    take_warmed(manager, cluster, false);
}

fn take_warmed(manager: &Weak<ClusterManager>, cluster: Arc<Cluster>, check: bool) -> bool {
    let Some(manager) = manager.upgrade() else {
        return false;
    };
    let mut state = manager.lock();
    let still_ours = state
        .warming
        .get(&cluster.name)
        .is_some_and(|w| Arc::ptr_eq(w, &cluster));
    if still_ours {
        state.warming.remove(&cluster.name);
        if check {
            manager.activate_when_checked(&mut state, cluster);
        } else {
            manager.activate(&mut state, cluster);
        }
    }
    true
}

/// Activates `cluster` (if it is still the warming version of its name) once every host has
/// had its first health check.
fn spawn_first_checks_wait(manager: Weak<ClusterManager>, cluster: &Arc<Cluster>) {
    let contexts = cluster.tls_contexts();
    let cluster = Arc::downgrade(cluster);
    tokio::spawn(async move {
        // The TLS secrets first (only the contexts are held meanwhile, not the cluster), until
        // their initial fetch times out or this version stops warming.
        // One deadline for all: the longest initial fetch timeout (none if one waits forever).
        let deadline = contexts
            .iter()
            .map(|c| c.warm_limit())
            .try_fold(Duration::ZERO, |max, l| l.map(|l| max.max(l)))
            .map(|l| tokio::time::Instant::now() + l);
        for tls in contexts {
            while !tls.is_ready() && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
                let _ = tokio::time::timeout(FIRST_CHECKS_RECHECK, tls.wait_ready()).await;
                let Some(m) = manager.upgrade() else {
                    return;
                };
                let still_ours = m
                    .lock()
                    .warming
                    .iter()
                    .any(|(_, w)| Weak::ptr_eq(&Arc::downgrade(w), &cluster));
                if !still_ours {
                    return;
                }
            }
        }
        loop {
            let Some(c) = cluster.upgrade() else {
                return;
            };
            // Bounded so a replaced or removed version does not keep this task (and the
            // cluster) alive.
            if tokio::time::timeout(FIRST_CHECKS_RECHECK, c.wait_first_health_checks())
                .await
                .is_ok()
            {
                activate_checked(&manager, c);
                return;
            }
            let Some(m) = manager.upgrade() else {
                return;
            };
            let still_ours = m
                .lock()
                .warming
                .get(&c.name)
                .is_some_and(|w| Arc::ptr_eq(w, &c));
            if !still_ours {
                return;
            }
        }
    });
}

/// How often a wait for first health checks looks whether its cluster is still warming.
const FIRST_CHECKS_RECHECK: Duration = Duration::from_secs(1);

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
        let mut state = self.lock();
        let ManagerState {
            tasks,
            health_checkers,
            ..
        } = &mut *state;
        let health = health_checkers.drain().flat_map(|(_, t)| t);
        for task in tasks.drain().map(|(_, t)| t).chain(health) {
            task.abort();
        }
    }
}

/// The tasks that watch a cluster's hosts: its active health checker and its outlier
/// detector's interval timer, for the clusters that configure them.
fn health_tasks(cluster: &Arc<Cluster>, store: &Store) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(hc) = &cluster.config.health_check {
        tasks.push(health_check::spawn(cluster, (**hc).clone(), store));
    }
    if cluster.outlier_detector().is_some() {
        tasks.push(tokio::spawn(outlier::run_interval(Arc::downgrade(cluster))));
    }
    tasks
}

/// Installs an EDS assignment's hosts, with Envoy's per-update accounting
/// (`updateDynamicHostList`). A host whose address, weight, hostname, locality and priority
/// stay keeps its `Arc` (stats, pooled connections, health checking state); a changed
/// `health_status` is applied to it in place. With active health checking (and without
/// `ignore_health_on_host_removal`), a host EDS removes stays while it passes its checks and
/// is not failed by EDS, flagged `/pending_dynamic_removal`; it goes when a check fails it.
fn apply_assignment(cluster: &Cluster, cla: &model::ClusterLoadAssignment) {
    let stats = &cluster.stats;
    stats.update_attempt.inc();
    if cla.endpoints.is_empty() {
        stats.update_empty.inc();
    }
    let old = cluster.all_hosts();
    let excluded_before = cluster.excluded.load(std::sync::atomic::Ordering::Relaxed);
    let mut hosts: Vec<Arc<Host>> = Vec::new();
    let mut health_changed = false;
    for e in cluster.usable_endpoints(&cla.endpoints) {
        let Ok(ip) = e.address.address.parse::<IpAddr>() else {
            // EDS addresses are IP literals (the config crate checks); skip anything else.
            continue;
        };
        let addr = SocketAddr::new(ip, e.address.port);
        let eds = EdsInfo {
            locality: e.locality.clone(),
            priority: e.priority,
        };
        let transport_match = cluster.transport_match(e);
        let kept = old.iter().find(|h| {
            h.address == addr
                && h.weight == e.weight
                && h.hostname == e.hostname
                && h.eds == eds
                && h.transport_match == transport_match
        });
        let host = match kept {
            Some(h) => {
                health_changed |= h.set_eds_health(e.health_status);
                if h.health.clear(HealthFlag::PendingDynamicRemoval) {
                    health_changed = true;
                }
                Arc::clone(h)
            }
            None => {
                let host = Host::new(addr, e.hostname.clone(), e.weight)
                    .with_eds(eds)
                    .with_eds_health(e.health_status)
                    .with_transport_match(cluster.transport_match(e));
                // The same address with another weight, hostname or place: Envoy updates its
                // host in place, so what health checking and outlier detection found carries
                // over.
                let host = Arc::new(host);
                if let Some(previous) = old.iter().find(|h| h.address == addr) {
                    host.health.copy_from(&previous.health);
                    // EDS lists it: not pending removal, whatever its predecessor was.
                    host.health.clear(HealthFlag::PendingDynamicRemoval);
                    if let Some(detector) = cluster.outlier_detector() {
                        detector.rekey(previous, &host);
                    }
                }
                host
            }
        };
        hosts.push(host);
    }
    let keep_removed =
        cluster.config.health_check.is_some() && !cluster.config.ignore_health_on_host_removal;
    if keep_removed {
        for h in &old {
            if hosts.iter().any(|n| n.address == h.address) {
                continue;
            }
            if h.health.has(HealthFlag::FailedActiveHc) || h.eds_failed() {
                continue;
            }
            if h.health.set(HealthFlag::PendingDynamicRemoval) {
                health_changed = true;
            }
            hosts.push(Arc::clone(h));
        }
    }
    stats.update_success.inc();
    let unchanged = hosts.len() == old.len()
        && hosts.iter().zip(&old).all(|(a, b)| Arc::ptr_eq(a, b))
        && cluster.excluded.load(std::sync::atomic::Ordering::Relaxed) == excluded_before;
    if unchanged && cluster.host_set_installed() {
        if health_changed {
            cluster.refresh_health(None);
        } else {
            stats.update_no_rebuild.inc();
        }
        return;
    }
    cluster.set_hosts(hosts);
}

mod bootstrap;
#[cfg(test)]
mod tests;
