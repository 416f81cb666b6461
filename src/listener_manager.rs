//! The listener manager: turns listener configs (bootstrap and LDS) into running listeners on
//! every worker, updates them in place when only their filters change, and drains the ones
//! removed or moved. Also rebuilds the redis_proxy filters when the clusters they name change,
//! so a config push reaches existing connections on their next request.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redvoy_config::model;
use redvoy_proxy::{
    bind_listener, ChainFilter, ChainSet, DrainStrategy, FilterConfigError, GlobalConnectionLimit,
    LimitExemptions, ListenerLimit, ListenerRuntime, WorkerCommand,
};
use redvoy_runtime::Runtime;
use redvoy_stats::{Counter, Gauge, Store};
use redvoy_tls::ServerTls;
use redvoy_upstream::ClusterManager;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Why a listener was not added or updated: Envoy's reason text (callers prefix the name).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Filter(#[from] FilterConfigError),
    #[error("cannot update static listener '{0}' through LDS")]
    StaticThroughLds(String),
    #[error(
        "error adding listener '{address}': listener '{other}' has duplicate address \
         '{address}' as existing listener"
    )]
    DuplicateAddress {
        address: model::SocketAddress,
        other: String,
    },
    #[error("malformed IP address: {0}")]
    MalformedIp(String),
    /// The OS error as Envoy prints it (`Address already in use`).
    #[error("cannot bind '{address}': {reason}")]
    Bind { address: SocketAddr, reason: String },
}

/// How often a warming listener's wait looks whether its version is still the warming one.
const WARM_RECHECK: Duration = Duration::from_secs(1);

/// How removed listeners drain: `--drain-time-s` and `--drain-strategy`.
#[derive(Clone, Copy)]
pub struct Drain {
    pub time: Duration,
    pub strategy: DrainStrategy,
}

/// A listener as the manager keeps it.
pub struct ManagedListener {
    pub config: model::Listener,
    pub runtime: Arc<ListenerRuntime>,
    /// From the bootstrap: LDS may not change or remove it.
    pub is_static: bool,
    /// LDS version that last changed it, the resource as received, and when.
    pub version: String,
    pub raw: Bytes,
    pub last_updated: SystemTime,
}

/// A listener redvoy does not run (filters it does not implement), kept for `/listeners` and
/// `/config_dump`.
#[derive(Clone)]
pub struct SkippedListener {
    pub reason: String,
    pub version: String,
    pub raw: Bytes,
    pub last_updated: SystemTime,
}

/// A listener LDS sent that failed (the last attempt), for `/config_dump`'s error_state.
#[derive(Clone)]
pub struct FailedListener {
    pub details: String,
    pub version: String,
    pub raw: Bytes,
    pub last_update_attempt: SystemTime,
}

/// A listener waiting for its TLS secrets (Envoy's warming listener); a previous version of
/// it, if any, keeps serving meanwhile.
#[derive(Clone)]
pub struct WarmingListener {
    pub config: model::Listener,
    /// Added before the workers started: Envoy counts it active, and the server's
    /// initialization waits for it.
    pub before_workers: bool,
    pub is_static: bool,
    pub version: String,
    pub raw: Bytes,
}

#[derive(Default)]
pub struct ListenerState {
    pub active: BTreeMap<String, ManagedListener>,
    pub warming: BTreeMap<String, WarmingListener>,
    pub skipped: BTreeMap<String, SkippedListener>,
    pub failed: BTreeMap<String, FailedListener>,
    pub lds_version: String,
}

struct Stats {
    added: Counter,
    modified: Counter,
    removed: Counter,
    in_place_updated: Counter,
    create_success: Counter,
    create_failure: Counter,
    active: Gauge,
    warming: Gauge,
    draining: Gauge,
}

pub struct ListenerManager {
    store: Store,
    runtime: Runtime,
    clusters: Arc<ClusterManager>,
    /// One per worker. Unbounded: a few commands per config change, never per request, and a
    /// push must not wait on a busy worker (see `App::build`).
    workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    connection_limit: Arc<GlobalConnectionLimit>,
    drain: Drain,
    /// `--reject-unsupported`: NACK listeners redvoy cannot run instead of skipping them.
    pub reject_unsupported: bool,
    state: Arc<Mutex<ListenerState>>,
    stats: Stats,
    /// The number of warming listeners, for whoever waits until none is.
    warming_count: tokio::sync::watch::Sender<usize>,
    /// The server is live (its workers started): listeners added from now on warm visibly.
    workers_started: std::sync::atomic::AtomicBool,
}

/// The stat name prefixes a listener owns: its address scope and its filters' scopes.
fn stat_scopes(config: &model::Listener, address: &SocketAddr) -> Vec<String> {
    let mut scopes = vec![format!(
        "listener.{}.",
        redvoy_proxy::listener_stat_prefix(address)
    )];
    for chain in config
        .filter_chains
        .iter()
        .chain(config.default_filter_chain.as_ref())
    {
        scopes.push(match &chain.filter {
            model::NetworkFilter::RedisProxy(rp) => format!("redis.{}.", rp.stat_prefix),
            model::NetworkFilter::TcpProxy(tp) => format!("tcp.{}.", tp.stat_prefix),
            model::NetworkFilter::HttpConnectionManager(h) => format!("http.{}.", h.stat_prefix),
        });
    }
    scopes
}

impl ListenerManager {
    pub fn new(
        store: &Store,
        runtime: &Runtime,
        clusters: Arc<ClusterManager>,
        workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
        connection_limit: Arc<GlobalConnectionLimit>,
        drain: Drain,
        reject_unsupported: bool,
    ) -> Self {
        let c = |n: &str| store.counter(&format!("listener_manager.{n}"));
        let g = |n: &str| store.gauge(&format!("listener_manager.{n}"));
        // Registered as Envoy registers them; redvoy never moves them here.
        c("listener_stopped");
        g("total_filter_chains_draining");
        g("workers_pinned");
        let stats = Stats {
            added: c("listener_added"),
            modified: c("listener_modified"),
            removed: c("listener_removed"),
            in_place_updated: c("listener_in_place_updated"),
            create_success: c("listener_create_success"),
            create_failure: c("listener_create_failure"),
            active: g("total_listeners_active"),
            warming: g("total_listeners_warming"),
            draining: g("total_listeners_draining"),
        };
        // Envoy writes these two at startup; `total_listeners_draining` only when one drains.
        stats.warming.set(0);
        stats.active.set(0);
        Self {
            store: store.clone(),
            runtime: runtime.clone(),
            clusters,
            workers,
            connection_limit,
            drain,
            reject_unsupported,
            state: Arc::new(Mutex::new(ListenerState::default())),
            stats,
            warming_count: tokio::sync::watch::channel(0).0,
            workers_started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, ListenerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn compile(&self, listener: &model::Listener) -> Result<ChainSet, FilterConfigError> {
        redvoy_proxy::compile_chains(listener, &self.clusters, &self.store, &self.runtime)
    }

    /// Adds or updates one listener. `Err` displays as Envoy's reason text (the caller
    /// prefixes the name). A listener whose address stays is updated in place: its connections stay open
    /// and use the new filters from their next request.
    pub fn add_or_update(
        self: &Arc<Self>,
        config: model::Listener,
        is_static: bool,
        version: &str,
        raw: Bytes,
    ) -> Result<bool, ListenerError> {
        let mut state = self.lock();
        let name = config.name.clone();
        state.skipped.remove(&name);
        if let Some(warming) = state.warming.get(&name) {
            if warming.config == config {
                return Ok(false);
            }
        }
        if let Some(existing) = state.active.get(&config.name) {
            if existing.is_static && !is_static {
                return Err(ListenerError::StaticThroughLds(config.name));
            }
            if existing.config == config {
                // A warming newer version is superseded by this (the running one).
                if state.warming.remove(&name).is_some() {
                    self.publish(&state);
                }
                return Ok(false);
            }
        }
        let chains = self.compile(&config)?;
        let contexts = chains.tls_contexts();
        if contexts.iter().any(|c| !c.is_ready()) {
            // Envoy warms a listener until its secrets arrive (or their initial fetch times
            // out); a running version keeps serving meanwhile. An address another listener
            // holds is refused now, as it would be at start.
            Self::check_address(&state, &config)?;
            let warming = WarmingListener {
                before_workers: !self
                    .workers_started
                    .load(std::sync::atomic::Ordering::Relaxed),
                config,
                is_static,
                version: version.to_owned(),
                raw,
            };
            let first = state
                .warming
                .insert(name.clone(), warming.clone())
                .is_none();
            if first && !state.active.contains_key(&name) {
                self.stats.added.inc();
            }
            self.publish(&state);
            drop(state);
            self.spawn_warm_wait(contexts, warming);
            return Ok(true);
        }
        if state.warming.remove(&name).is_some() {
            self.publish(&state);
        }
        let changed = self.install(&mut state, config, chains, is_static, version, raw)?;
        Ok(changed)
    }

    /// Refuses an address another listener (running or warming) binds: SO_REUSEPORT would let
    /// a second listener share the port, and Envoy refuses it.
    fn check_address(state: &ListenerState, config: &model::Listener) -> Result<(), ListenerError> {
        if !config.bind_to_port || config.address.port == 0 {
            return Ok(());
        }
        let running = state
            .active
            .iter()
            .map(|(n, l)| (n, &l.config))
            .chain(state.warming.iter().map(|(n, w)| (n, &w.config)));
        for (other, c) in running {
            if *other != config.name && c.bind_to_port && c.address == config.address {
                return Err(ListenerError::DuplicateAddress {
                    address: config.address.clone(),
                    other: other.clone(),
                });
            }
        }
        Ok(())
    }

    /// Starts a listener, or updates its running version (in place when its address and
    /// socket settings stay), under the state lock.
    fn install(
        &self,
        state: &mut ListenerState,
        config: model::Listener,
        chains: ChainSet,
        is_static: bool,
        version: &str,
        raw: Bytes,
    ) -> Result<bool, ListenerError> {
        let name = config.name.clone();
        let now = SystemTime::now();
        // What the accept loops hold fixed; a change of anything else swaps the chains only.
        let same_place = state.active.get(&config.name).is_some_and(|e| {
            e.config.address == config.address
                && e.config.bind_to_port == config.bind_to_port
                && e.config.use_original_dst == config.use_original_dst
                && LimitExemptions::from(&e.config) == LimitExemptions::from(&config)
        });
        if same_place {
            if let Some(existing) = state.active.get_mut(&config.name) {
                existing.runtime.set_chains(chains);
                existing.config = config;
                existing.version = version.to_owned();
                existing.raw = raw;
                existing.last_updated = now;
            }
            state.failed.remove(&name);
            self.stats.modified.inc();
            self.stats.in_place_updated.inc();
            return Ok(true);
        }
        Self::check_address(state, &config)?;
        let runtime = self.start(&config, chains)?;
        state.failed.remove(&name);
        let replaced = state.active.insert(
            config.name.clone(),
            ManagedListener {
                config,
                runtime,
                is_static,
                version: version.to_owned(),
                raw,
                last_updated: now,
            },
        );
        match replaced {
            Some(old) => {
                self.stats.modified.inc();
                self.drain(old);
            }
            None => self.stats.added.inc(),
        }
        self.publish(state);
        Ok(true)
    }

    /// Waits (in a task) until a warming listener's secrets have all arrived, or the longest
    /// of their initial fetch timeouts ran out, then starts it; ends early when this version
    /// stops warming (replaced or removed).
    fn spawn_warm_wait(self: &Arc<Self>, contexts: Vec<Arc<ServerTls>>, warming: WarmingListener) {
        let limit = contexts
            .iter()
            .map(|c| c.warm_limit())
            .try_fold(Duration::ZERO, |max, l| l.map(|l| max.max(l)));
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let pending = contexts.iter().find(|c| !c.is_ready());
                let Some(pending) = pending else { break };
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                let _ = tokio::time::timeout(WARM_RECHECK, pending.wait_ready()).await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                if !manager.is_warming(&warming) {
                    return;
                }
            }
            if let Some(manager) = manager.upgrade() {
                manager.warmed(warming);
            }
        });
    }

    fn is_warming(&self, warming: &WarmingListener) -> bool {
        self.lock()
            .warming
            .get(&warming.config.name)
            .is_some_and(|w| w.config == warming.config && w.version == warming.version)
    }

    /// Binds the listener's sockets (one per worker) and hands them to the workers.
    fn start(
        &self,
        config: &model::Listener,
        chains: ChainSet,
    ) -> Result<Arc<ListenerRuntime>, ListenerError> {
        let ip: IpAddr = config
            .address
            .address
            .parse()
            .map_err(|_| ListenerError::MalformedIp(config.address.address.clone()))?;
        let addr = SocketAddr::new(ip, config.address.port);
        let mut sockets = Vec::with_capacity(self.workers.len());
        let mut bound = addr;
        if config.bind_to_port {
            for _ in 0..self.workers.len() {
                match bind_listener(bound) {
                    Ok(socket) => {
                        // Port 0: every worker shares the port the first one got.
                        bound = socket.local_addr().unwrap_or(bound);
                        sockets.push(Some(socket));
                    }
                    Err(e) => {
                        self.stats.create_failure.inc();
                        return Err(ListenerError::Bind {
                            address: addr,
                            reason: strerror(&e),
                        });
                    }
                }
            }
        } else {
            sockets.resize_with(self.workers.len(), || None);
        }
        let runtime = Arc::new(ListenerRuntime::new(
            config.name.clone(),
            bound,
            config.use_original_dst,
            ListenerLimit {
                limit: Arc::clone(&self.connection_limit),
                exemptions: LimitExemptions::from(config),
            },
            chains,
            &self.store,
            self.workers.len(),
        ));
        for (worker, socket) in self.workers.iter().zip(sockets) {
            let _ = worker.send(WorkerCommand::Add {
                listener: Arc::clone(&runtime),
                socket,
            });
            self.stats.create_success.inc();
        }
        info!(listener = %config.name, address = %bound, "listener started");
        Ok(runtime)
    }

    /// A warming listener's secrets arrived (or their wait ended): it starts, or replaces its
    /// running version, unless a newer version or a removal came meanwhile (checked under the
    /// same lock that installs it).
    fn warmed(self: &Arc<Self>, warming: WarmingListener) {
        let name = warming.config.name.clone();
        // Compiled anew: the secrets are known now (or the wait gave up, and the chains refuse
        // connections until they come).
        let chains = match self.compile(&warming.config) {
            Ok(chains) => chains,
            Err(e) => {
                warn!(listener = %name, error = %e, "warmed listener could not start");
                return;
            }
        };
        let mut state = self.lock();
        let current = state
            .warming
            .get(&name)
            .is_some_and(|w| w.config == warming.config && w.version == warming.version);
        if !current {
            return;
        }
        state.warming.remove(&name);
        let WarmingListener {
            config,
            is_static,
            version,
            raw,
            before_workers: _,
        } = warming;
        if let Err(e) = self.install(&mut state, config, chains, is_static, &version, raw.clone()) {
            warn!(listener = %name, error = %e, "warmed listener could not start");
            state.failed.insert(
                name,
                FailedListener {
                    details: e.to_string(),
                    version,
                    raw,
                    last_update_attempt: SystemTime::now(),
                },
            );
        }
        self.publish(&state);
    }

    /// The server is live: listeners warming from now on are counted as warming.
    pub fn set_workers_started(&self) {
        self.workers_started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let state = self.lock();
        self.publish(&state);
    }

    /// Completes once no listener is warming (Envoy's initialization waits for them).
    pub async fn wait_warmed(&self) {
        let mut rx = self.warming_count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Removes a dynamic listener: it stops accepting at once and its connections drain.
    pub fn remove(&self, name: &str) -> bool {
        let mut state = self.lock();
        state.skipped.remove(name);
        state.failed.remove(name);
        if state.warming.get(name).is_some_and(|w| !w.is_static)
            && state.warming.remove(name).is_some()
        {
            self.publish(&state);
            if !state.active.contains_key(name) {
                self.stats.removed.inc();
                return true;
            }
        }
        if state.active.get(name).is_some_and(|l| l.is_static) {
            return false;
        }
        let Some(old) = state.active.remove(name) else {
            return false;
        };
        self.stats.removed.inc();
        self.drain(old);
        self.publish(&state);
        true
    }

    fn drain(&self, old: ManagedListener) {
        let runtime = old.runtime;
        for worker in &self.workers {
            let _ = worker.send(WorkerCommand::Remove(Arc::clone(&runtime)));
        }
        self.stats.draining.inc();
        let Drain {
            time: drain_time,
            strategy,
        } = self.drain;
        let draining = self.stats.draining.clone();
        let state = Arc::clone(&self.state);
        let store = self.store.clone();
        let scopes = stat_scopes(&old.config, &runtime.address);
        let workers = self.workers.clone();
        tokio::spawn(async move {
            runtime.control.remove(strategy, drain_time).await;
            for worker in &workers {
                let _ = worker.send(WorkerCommand::CloseConnections(Arc::clone(&runtime)));
            }
            draining.dec();
            // Envoy destroys the drained listener and its stats scopes; a scope another
            // listener still uses (same stat_prefix or address) stays.
            let in_use: Vec<String> = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .active
                .values()
                .flat_map(|l| stat_scopes(&l.config, &l.runtime.address))
                .collect();
            for scope in scopes.iter().filter(|s| !in_use.contains(s)) {
                store.remove_prefix(scope, &in_use);
            }
        });
    }

    /// Whether `name` is a running listener LDS may change (an update of it that redvoy
    /// cannot run must be NACKed, not skipped: skipping would take the listener down).
    pub fn is_running_dynamic(&self, name: &str) -> bool {
        self.lock().active.get(name).is_some_and(|l| !l.is_static)
    }

    /// Records a new listener redvoy skips (filters it does not run). Never called for a
    /// running one (see [`Self::is_running_dynamic`]).
    pub fn skip(&self, name: &str, reason: String, version: &str, raw: Bytes) {
        warn!(listener = %name, %reason, "listener skipped: redvoy does not implement its filters");
        // redvoy's own counter, created on first use so that a proxy that skips nothing shows
        // exactly Envoy's stats.
        self.store
            .counter("listener_manager.redvoy_listener_skipped")
            .inc();
        let mut state = self.lock();
        state.skipped.insert(
            name.to_owned(),
            SkippedListener {
                reason,
                version: version.to_owned(),
                raw,
                last_updated: SystemTime::now(),
            },
        );
        self.publish(&state);
    }

    pub fn record_failure(&self, name: &str, details: String, version: &str, raw: Bytes) {
        self.lock().failed.insert(
            name.to_owned(),
            FailedListener {
                details,
                version: version.to_owned(),
                raw,
                last_update_attempt: SystemTime::now(),
            },
        );
    }

    /// Rebuilds the redis_proxy filters whose clusters changed (added, replaced, removed), so
    /// that routes to them work from the next request of every connection.
    pub fn refresh_filters(&self) {
        let state = self.lock();
        for listener in state.active.values() {
            let chains = listener.runtime.chains();
            let stale = chains
                .chains
                .iter()
                .chain(chains.default.as_ref())
                .any(|c| match &c.filter {
                    ChainFilter::Redis(f) => !f.clusters_current(&self.clusters),
                    // tcp_proxy and HTTP look their cluster up per connection / request.
                    ChainFilter::TcpProxy(_) | ChainFilter::Http(_) => false,
                });
            if !stale {
                continue;
            }
            match self.compile(&listener.config) {
                Ok(new) => listener.runtime.set_chains(new),
                Err(e) => {
                    warn!(listener = %listener.config.name, error = %e, "cannot rebuild filters")
                }
            }
        }
    }

    /// Names of the dynamic listeners (LDS may remove these).
    pub fn dynamic_names(&self) -> Vec<String> {
        let state = self.lock();
        state
            .active
            .iter()
            .filter(|(_, l)| !l.is_static)
            .map(|(n, _)| n.clone())
            .chain(state.skipped.keys().cloned())
            .chain(state.failed.keys().cloned())
            .chain(
                state
                    .warming
                    .iter()
                    .filter(|(_, w)| !w.is_static)
                    .map(|(n, _)| n.clone()),
            )
            .collect()
    }

    fn publish(&self, state: &ListenerState) {
        // Envoy puts a listener added before its workers start among the active ones (the
        // server's initialization, not the listener, waits for its secrets).
        let early = state
            .warming
            .iter()
            .filter(|(name, w)| w.before_workers && !state.active.contains_key(*name))
            .count();
        self.stats.active.set((state.active.len() + early) as u64);
        self.stats
            .warming
            .set(state.warming.values().filter(|w| !w.before_workers).count() as u64);
        self.warming_count.send_replace(state.warming.len());
    }

    /// Every running listener: config, bound address, control (admin `/listeners`, drains).
    pub fn running(&self) -> Vec<(model::Listener, Arc<ListenerRuntime>)> {
        self.lock()
            .active
            .values()
            .map(|l| (l.config.clone(), Arc::clone(&l.runtime)))
            .collect()
    }

    /// Stops every listener (shutdown).
    pub fn stop_all(&self) {
        for l in self.lock().active.values() {
            l.runtime.control.stop();
        }
    }
}

/// The OS error text as Envoy prints it (`Address already in use`), without Rust's
/// `(os error N)` suffix.
fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}
