//! A worker's side of its listeners: the accept loop, Envoy's original-destination hand-off,
//! filter-chain selection for each connection, and the worker's own filters (pools, clients)
//! built for a chain on first use and rebuilt after a config push.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redvoy_tls::Stream;
use redvoy_upstream::ClusterManager;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::chains::{ChainFilter, ChainSet, Detected};
use super::runtime::ListenerRuntime;
use crate::client::{ClientConfig, CommandStatsCache};
use crate::conn_limit::Admission;
use crate::filter::FilterConfig;
use crate::pending::SessionShared;
use crate::pool::{ClusterPool, RedirectSettings};
use crate::session::{self, FilterUpdates};
use crate::session_state::WorkerFilter;
use crate::tcp_proxy;

/// Pause after an accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One worker's view of a listener: the shared runtime and this worker's compiled filters.
pub(crate) struct WorkerListener {
    runtime: Arc<ListenerRuntime>,
    /// Per chain index of `chains`, the worker filter built for it (pools, clients).
    cache: RefCell<FilterCache>,
    /// This worker's redis_proxy sessions on the listener, to wake when its drain ends.
    sessions: RefCell<Vec<Weak<SessionShared>>>,
}

/// The chain set the cached worker filters were built from, and those filters by chain index.
type FilterCache = (Arc<ChainSet>, Vec<Option<Rc<WorkerFilter>>>);

impl WorkerListener {
    fn new(runtime: Arc<ListenerRuntime>) -> Self {
        let chains = runtime.chains();
        Self {
            runtime,
            cache: RefCell::new((chains, Vec::new())),
            sessions: RefCell::new(Vec::new()),
        }
    }

    /// Wakes every live session (drain over: they see the closed flag and close).
    fn wake_sessions(&self) {
        for session in self.sessions.borrow_mut().drain(..) {
            if let Some(s) = session.upgrade() {
                s.notify.notify_one();
            }
        }
    }

    /// The current worker filter of a redis_proxy chain, rebuilt after a config push.
    fn redis_filter(&self, chain: usize) -> Option<Rc<WorkerFilter>> {
        let current = self.runtime.chains.load();
        let mut cache = self.cache.borrow_mut();
        if !Arc::ptr_eq(&cache.0, &current) {
            cache.0 = Arc::clone(&current);
            cache.1.clear();
        }
        let ChainFilter::Redis(config) = &current.get(chain)?.filter else {
            return None;
        };
        if cache.1.len() <= chain {
            cache.1.resize(chain + 1, None);
        }
        if let Some(built) = &cache.1[chain] {
            return Some(Rc::clone(built));
        }
        let built = Rc::new(worker_filter(Arc::clone(config)));
        cache.1[chain] = Some(Rc::clone(&built));
        Some(built)
    }
}

/// Where a session finds the newest filter of its chain.
struct FilterSource {
    listener: Rc<WorkerListener>,
    chain: usize,
    /// The listener generation the session's filter comes from.
    seen: u64,
}

impl FilterUpdates for FilterSource {
    /// The chain's current filter if the listener's chains changed since the last call;
    /// `None` when they did not, or when the chain is no longer a redis_proxy chain (the
    /// session keeps the filter it has).
    fn changed(&mut self) -> Option<Rc<WorkerFilter>> {
        let now = self.listener.runtime.generation.load(Ordering::Acquire);
        if now == self.seen {
            return None;
        }
        self.seen = now;
        self.listener.redis_filter(self.chain)
    }

    fn register(&self, session: &Rc<SessionShared>) {
        let mut sessions = self.listener.sessions.borrow_mut();
        // Drop closed sessions whenever the list would grow, so it stays proportional to the
        // live ones (amortized O(1) per session).
        if sessions.len() == sessions.capacity() {
            sessions.retain(|s| s.strong_count() > 0);
        }
        sessions.push(Rc::downgrade(session));
    }
}

/// One worker's listeners, shared by its accept loops.
pub(crate) struct WorkerListeners {
    id: usize,
    clusters: Arc<ClusterManager>,
    /// Every listener this worker runs or drains, for `CloseConnections`.
    all: RefCell<Vec<Rc<WorkerListener>>>,
    /// Every listener by address, for original-destination hand-offs.
    by_address: RefCell<HashMap<SocketAddr, Rc<WorkerListener>>>,
}

impl WorkerListeners {
    /// Envoy's hand-off target: the listener at exactly `dst`, else the wildcard one on its
    /// port; stopped listeners are skipped.
    fn listener_for(&self, dst: SocketAddr) -> Option<Rc<WorkerListener>> {
        let map = self.by_address.borrow();
        let wildcard = match dst {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst.port()),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), dst.port()),
        };
        [dst, wildcard]
            .iter()
            .filter_map(|a| map.get(a))
            .find(|l| !l.runtime.control.is_stopped())
            .cloned()
    }

    pub(crate) fn new(id: usize, clusters: Arc<ClusterManager>) -> Self {
        Self {
            id,
            clusters,
            all: RefCell::new(Vec::new()),
            by_address: RefCell::new(HashMap::new()),
        }
    }

    /// Runs a listener on this worker: accepts on `socket` (this worker's SO_REUSEPORT share),
    /// or, without a socket, only takes connections handed off by `use_original_dst`
    /// listeners.
    pub(crate) fn add(
        self: &Rc<Self>,
        listener: Arc<ListenerRuntime>,
        socket: Option<std::net::TcpListener>,
    ) -> io::Result<()> {
        let state = Rc::new(WorkerListener::new(Arc::clone(&listener)));
        self.by_address
            .borrow_mut()
            .insert(listener.address, Rc::clone(&state));
        self.all.borrow_mut().push(Rc::clone(&state));
        if let Some(socket) = socket {
            let socket = TcpListener::from_std(socket)?;
            tokio::task::spawn_local(accept_loop(Rc::clone(self), socket, state));
        }
        Ok(())
    }

    /// Forgets a removed listener for hand-offs (its accept loop ends on its own stop signal).
    pub(crate) fn remove(&self, listener: &Arc<ListenerRuntime>) {
        let mut map = self.by_address.borrow_mut();
        if map
            .get(&listener.address)
            .is_some_and(|l| Arc::ptr_eq(&l.runtime, listener))
        {
            map.remove(&listener.address);
        }
    }

    /// The listener's drain time is over: wakes its sessions so that they close.
    pub(crate) fn close_connections(&self, listener: &Arc<ListenerRuntime>) {
        let mut all = self.all.borrow_mut();
        if let Some(i) = all.iter().position(|l| Arc::ptr_eq(&l.runtime, listener)) {
            all.swap_remove(i).wake_sessions();
        }
    }
}

pub(crate) fn worker_filter(config: Arc<FilterConfig>) -> WorkerFilter {
    let settings = &config.settings;
    let pools = config
        .pools
        .iter()
        .map(|spec| {
            let spec = spec.as_ref()?;
            let client_config = Rc::new(ClientConfig {
                connect_timeout: spec.connect_timeout,
                op_timeout: settings.op_timeout,
                tcp_keepalive: spec.cluster.config.tcp_keepalive,
                prelude: spec.prelude.clone(),
                prelude_replies: spec.prelude_replies,
                max_buffer_size_before_flush: settings.max_buffer_size_before_flush as usize,
                buffer_flush_timeout: settings.buffer_flush_timeout,
                cluster_stats: Arc::clone(&spec.cluster.stats),
                upstream_rq_time: spec.upstream_rq_time.clone(),
                command_stats: spec
                    .command_stats
                    .as_ref()
                    .map(|(store, cluster)| CommandStatsCache::new(store.clone(), cluster)),
                outlier: spec
                    .cluster
                    .outlier_detector()
                    .is_some()
                    .then(|| Arc::clone(&spec.cluster)),
                limits: spec
                    .cluster
                    .enforces_redis_limits()
                    .then(|| Arc::clone(&spec.cluster)),
                tls: spec.cluster.has_tls().then(|| Arc::clone(&spec.cluster)),
            });
            let redirect = settings.enable_redirection.then(|| RedirectSettings {
                max_unknown_connections: settings.max_upstream_unknown_connections,
                dns_cache: settings.dns_cache.clone(),
                unknown_limit_reached: spec.unknown_limit_reached.clone(),
            });
            Some(ClusterPool::new(
                Arc::clone(&spec.cluster),
                client_config,
                settings.enable_hashtagging,
                settings.read_policy,
                redirect,
                spec.cx_drained.clone(),
            ))
        })
        .collect();
    WorkerFilter { config, pools }
}

async fn accept_loop(
    worker: Rc<WorkerListeners>,
    socket: TcpListener,
    listener: Rc<WorkerListener>,
) {
    let name = listener.runtime.name.clone();
    let mut stop = listener.runtime.control.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => {
                debug!(worker = worker.id, listener = %name, "listener stopped accepting");
                // Dropping the socket closes this worker's share of the port.
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let runtime = &listener.runtime;
                let Some(admission) = runtime.limit.admit() else {
                    // Over the global limit: closed before any filter sees it, as Envoy does.
                    debug!(worker = worker.id, listener = %name, %peer, "global connection limit reached: closing");
                    runtime.stats.downstream_global_cx_overflow.inc();
                    drop(stream);
                    continue;
                };
                debug!(worker = worker.id, listener = %name, %peer, "accepted");
                let worker = Rc::clone(&worker);
                let listener = Rc::clone(&listener);
                // The connection's polls share clock readings (see `clock`).
                tokio::task::spawn_local(crate::clock::Fresh::new(async move {
                    on_connection(worker, listener, stream, peer, admission).await;
                }));
            }
            Err(e) => {
                warn!(worker = worker.id, listener = %name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// One accepted connection: the original-destination hand-off, filter-chain selection, then
/// the chain's filter until the connection ends.
async fn on_connection(
    worker: Rc<WorkerListeners>,
    accepted_on: Rc<WorkerListener>,
    stream: TcpStream,
    peer: SocketAddr,
    // Held for the connection's life: its place under the global connection limit.
    _admission: Admission,
) {
    let local = stream.local_addr().unwrap_or(accepted_on.runtime.address);
    let mut destination = local;
    let mut listener = accepted_on;
    if listener.runtime.use_original_dst {
        if let Some(original) = original_destination(&stream) {
            destination = original;
            if let Some(target) = worker.listener_for(original) {
                listener = target;
            }
        }
    }
    let runtime = Arc::clone(&listener.runtime);
    // The generation before the chains: a push in between is then seen as a change later.
    let generation = runtime.generation.load(Ordering::Acquire);
    let chains = runtime.chains();
    let detected = match &chains.inspectors {
        None => Detected::plain(),
        // Boxed, as the handshake and the other filters below: the connection task is sized by
        // its largest state, and an idle redis connection should pay only for its session.
        Some(inspectors) => match Box::pin(inspectors.inspect(&stream, &runtime.pre_cx)).await {
            Ok(detected) => detected,
            Err(_) => {
                debug!(listener = %runtime.name, %peer, "closed by the listener filters");
                return;
            }
        },
    };
    let Some(chain) = chains.select(destination, peer, &detected) else {
        debug!(listener = %runtime.name, %destination, ?detected, "no filter chain match");
        runtime.no_filter_chain_match.inc();
        return;
    };
    let stats = Arc::clone(&runtime.stats);
    let opened = std::time::Instant::now();
    let per_worker = stats.workers.get(worker.id);
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    stats.connections_accepted_per_socket_event.record(1);
    if let Some(w) = per_worker {
        w.downstream_cx_total.inc();
        w.downstream_cx_active.inc();
    }
    let tls = chains.get(chain).and_then(|c| c.tls.clone());
    let stream = match tls {
        None => Some(Stream::Plain(stream)),
        // No handshake timeout unless the chain sets one, as in Envoy; a failed handshake is
        // counted in the listener's `ssl.*` stats and closes the connection.
        Some(context) => match context.acceptor() {
            // Its secrets have not arrived (`downstream_context_secrets_not_ready`): closed,
            // never served in plaintext.
            None => None,
            Some(acceptor) => match Box::pin(acceptor.accept(stream)).await {
                Ok(tls) => Some(Stream::Server(Box::new(tls))),
                Err(e) => {
                    debug!(listener = %runtime.name, %peer, error = %e, "TLS handshake failed");
                    // Envoy starts a chain's filters with the connection, before its handshake:
                    // redis_proxy has counted it.
                    if let Some(ChainFilter::Redis(config)) = chains.get(chain).map(|c| &c.filter) {
                        config.stats.downstream_cx_total.inc();
                    }
                    None
                }
            },
        },
    };
    if let Some(stream) = stream {
        match chains.get(chain).map(|c| &c.filter) {
            Some(ChainFilter::Redis(_)) => {
                if let Some(filter) = listener.redis_filter(chain) {
                    let source = FilterSource {
                        seen: generation,
                        listener: Rc::clone(&listener),
                        chain,
                    };
                    drop(chains);
                    session::run(stream, filter, source, Arc::clone(&runtime.control)).await;
                }
            }
            Some(ChainFilter::TcpProxy(config)) => {
                let config = Arc::clone(config);
                drop(chains);
                let cluster = worker.clusters.get(config.pick_cluster(rand::random()));
                // ORIGINAL_DST clusters connect to the pre-NAT address (else the local one).
                // Boxed: the spawned connection task is sized by its largest branch, and idle
                // redis connections should not pay for the TCP/HTTP proxies' state.
                Box::pin(tcp_proxy::run(stream, &config, cluster, Some(destination))).await;
            }
            Some(ChainFilter::Http(hcm)) => {
                let hcm = Arc::clone(hcm);
                drop(chains);
                let clusters = Arc::clone(&worker.clusters);
                Box::pin(redvoy_http::serve_connection(stream, hcm, move |name| {
                    clusters.get(name)
                }))
                .await;
            }
            None => {}
        }
    }
    stats.downstream_cx_active.dec();
    stats.downstream_cx_destroy.inc();
    stats
        .downstream_cx_length_ms
        .record(opened.elapsed().as_millis() as u64);
    if let Some(w) = per_worker {
        w.downstream_cx_active.dec();
    }
}

/// The pre-NAT destination of a redirected connection (`SO_ORIGINAL_DST`), when it differs
/// from the local address.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let original = match stream.local_addr() {
        Ok(SocketAddr::V6(_)) => sock.original_dst_ipv6().ok()?,
        _ => sock.original_dst().ok()?,
    };
    original.as_socket()
}
