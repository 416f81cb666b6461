//! The ADS server: State-of-the-World and Delta streams over one gRPC service, for any number
//! of proxies. Each stream learns its proxy from the first request's node, is answered from
//! that proxy's snapshot of the current world, and is pushed what changed when a new world is
//! taken. Types served: LDS, CDS, EDS; requests for other types are counted and left pending,
//! as a server without them would.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::proxy::ProxyIdentity;
use crate::snapshot::{ProxySnapshot, World, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER};
use crate::stats::Stats;

/// Responses queued per stream before the stream task waits for the proxy to read.
const STREAM_QUEUE: usize = 16;

/// State shared by the server, the watcher and the admin endpoints.
#[derive(Debug)]
pub struct Shared {
    world: RwLock<Arc<World>>,
    changes: watch::Sender<u64>,
    pub stats: Stats,
    /// Connected streams: id → the proxy.
    proxies: Mutex<BTreeMap<u64, ProxyIdentity>>,
    next_stream: std::sync::atomic::AtomicU64,
    /// The errors of the last reading that was refused (empty after a good one).
    pub last_errors: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(world: World) -> Arc<Self> {
        let (changes, _) = watch::channel(world.generation);
        Arc::new(Self {
            world: RwLock::new(Arc::new(world)),
            changes,
            stats: Stats::default(),
            proxies: Mutex::new(BTreeMap::new()),
            next_stream: std::sync::atomic::AtomicU64::new(1),
            last_errors: Mutex::new(Vec::new()),
        })
    }

    pub fn world(&self) -> Arc<World> {
        self.world
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes a new world and wakes every stream.
    pub fn swap(&self, world: World) {
        let generation = world.generation;
        *self.world.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(world);
        self.changes.send_replace(generation);
    }

    /// The proxies connected now (one entry per stream).
    pub fn connected(&self) -> Vec<ProxyIdentity> {
        self.proxies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn register(&self, id: u64, proxy: ProxyIdentity) {
        self.proxies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, proxy);
        self.stats.connected.fetch_add(1, Relaxed);
    }

    fn unregister(&self, id: u64) {
        if self
            .proxies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .is_some()
        {
            self.stats.connected.fetch_sub(1, Relaxed);
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AdsService {
    shared: Arc<Shared>,
}

impl AdsService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let shared = self.shared.clone();
        tokio::spawn(stream::<SotwType>(shared, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let shared = self.shared.clone();
        tokio::spawn(stream::<DeltaType>(shared, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn is_served(type_url: &str) -> bool {
    matches!(type_url, TYPE_LISTENER | TYPE_CLUSTER | TYPE_ENDPOINT)
}

/// The snapshot of `proxy` in the current world, or the error that keeps it from being served.
fn snapshot(shared: &Shared, proxy: &ProxyIdentity) -> Option<Arc<ProxySnapshot>> {
    let world = shared.world();
    if world.generation == 0 {
        // No reading has succeeded since start: answering with the empty world would remove
        // every listener and cluster of a reconnecting proxy. Nothing is sent; the proxy keeps
        // what it has until the files are fixed.
        return None;
    }
    match world.snapshot_for(proxy) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(proxy = %proxy.id, "no configuration for this proxy: {e}");
            None
        }
    }
}

/// Learns a stream's proxy from its first request's node (later requests may omit it:
/// `set_node_on_first_message_only`). False when the first request has none.
fn identify(
    shared: &Shared,
    id: u64,
    proxy: &mut Option<ProxyIdentity>,
    node: Option<&Node>,
    api: &str,
) -> bool {
    if proxy.is_some() {
        return true;
    }
    let Some(node) = node else {
        return false;
    };
    let p = ProxyIdentity::from_node(node);
    info!(stream = id, proxy = %p.id, namespace = %p.namespace, api, "proxy connected");
    shared.register(id, p.clone());
    *proxy = Some(p);
    true
}

/// Counts an ACK or a NACK (a request carrying the nonce of the last response).
fn count_reply(shared: &Shared, type_url: &str, proxy: &str, error: Option<&str>) {
    let Some(t) = shared.stats.of_type(type_url) else {
        return;
    };
    match error {
        Some(e) => {
            t.rejects.fetch_add(1, Relaxed);
            warn!(proxy, type_url, "proxy rejected the configuration: {e}");
        }
        None => {
            t.acks.fetch_add(1, Relaxed);
        }
    }
}

// === State of the World ===

#[derive(Debug, Default)]
struct SotwType {
    names: BTreeSet<String>,
    sent_version: Option<String>,
    nonce: String,
}

impl SotwType {
    /// Takes a request; false when it is a stale one (answering an earlier response).
    fn take(
        &mut self,
        first: bool,
        req: &DiscoveryRequest,
        shared: &Shared,
        proxy: &ProxyIdentity,
    ) -> bool {
        // The first request of a type on this stream is answered whatever nonce it carries (a
        // proxy reconnecting may echo the last stream's).
        let initial = first || self.nonce.is_empty() || req.response_nonce.is_empty();
        if !initial {
            if req.response_nonce != self.nonce {
                return false;
            }
            count_reply(
                shared,
                &req.type_url,
                &proxy.id,
                req.error_detail.as_ref().map(|e| e.message.as_str()),
            );
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let names_changed = names != self.names;
        self.names = names;
        if initial || names_changed {
            self.sent_version = None;
        }
        true
    }
}

/// What a send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    /// The proxy has this version already.
    No,
    /// The stream is gone.
    Closed,
}

/// A stream's state for one type, SotW or Delta: it knows what the proxy has and sends what
/// it lacks.
trait TypeState: Default + Send {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// For the logs.
    const API: &'static str;

    fn node(req: &Self::Request) -> Option<&Node>;
    fn type_url(req: &Self::Request) -> &str;

    /// Takes a request for this type (`first`: the stream's first for it); false when it asks
    /// for nothing.
    fn take(
        &mut self,
        first: bool,
        req: &Self::Request,
        shared: &Shared,
        proxy: &ProxyIdentity,
    ) -> bool;

    /// Sends what the proxy lacks of `type_url` (nothing when it has it all).
    fn send(
        &mut self,
        shared: &Shared,
        proxy: &ProxyIdentity,
        type_url: &str,
        nonce: &mut u64,
        tx: &mpsc::Sender<Result<Self::Response, Status>>,
    ) -> impl std::future::Future<Output = Sent> + Send;

    /// Forgets what the proxy has, so the next send sends everything.
    fn resend_all(&mut self);
}

/// Sends `type_url` to the stream. After a CDS response the EDS answer follows, sent whatever
/// its version: a changed cluster warms in Envoy until it receives its ClusterLoadAssignment
/// again, even an unchanged one (istiod's "always respond" to EDS after CDS).
async fn send_type<S: TypeState>(
    shared: &Shared,
    proxy: &ProxyIdentity,
    types: &mut BTreeMap<String, S>,
    type_url: &str,
    nonce: &mut u64,
    tx: &mpsc::Sender<Result<S::Response, Status>>,
) -> Sent {
    let Some(state) = types.get_mut(type_url) else {
        return Sent::No;
    };
    let sent = state.send(shared, proxy, type_url, nonce, tx).await;
    if sent != Sent::Yes || type_url != TYPE_CLUSTER {
        return sent;
    }
    match types.get_mut(TYPE_ENDPOINT) {
        Some(eds) => {
            eds.resend_all();
            match eds.send(shared, proxy, TYPE_ENDPOINT, nonce, tx).await {
                Sent::Closed => Sent::Closed,
                _ => sent,
            }
        }
        None => sent,
    }
}

/// After a new world: every type the stream asked for, in type order (clusters, endpoints,
/// listeners). False when the stream is gone.
async fn push_all<S: TypeState>(
    shared: &Shared,
    proxy: &ProxyIdentity,
    types: &mut BTreeMap<String, S>,
    nonce: &mut u64,
    tx: &mpsc::Sender<Result<S::Response, Status>>,
) -> bool {
    let order: Vec<String> = types.keys().cloned().collect();
    for type_url in order {
        if send_type(shared, proxy, types, &type_url, nonce, tx).await == Sent::Closed {
            return false;
        }
    }
    true
}

/// One ADS stream, SotW or Delta: the proxy from the first request's node, each request taken
/// by its type's state and answered with what the proxy lacks, every new world pushed.
async fn stream<S: TypeState>(
    shared: Arc<Shared>,
    mut requests: Streaming<S::Request>,
    tx: mpsc::Sender<Result<S::Response, Status>>,
) {
    let id = shared.next_stream.fetch_add(1, Relaxed);
    let mut changes = shared.changes.subscribe();
    let mut proxy: Option<ProxyIdentity> = None;
    let mut types: BTreeMap<String, S> = BTreeMap::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            req = requests.message() => {
                let req = match req {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => { debug!(stream = id, "stream ended: {e}"); break; }
                };
                if !identify(&shared, id, &mut proxy, S::node(&req), S::API) {
                    let _ = tx.send(Err(Status::invalid_argument("the first request must carry a node"))).await;
                    break;
                }
                let Some(p) = proxy.as_ref() else { break };
                let type_url = S::type_url(&req).to_owned();
                if !is_served(&type_url) {
                    debug!(stream = id, type_url = %type_url, "type not served");
                    continue;
                }
                let first = !types.contains_key(&type_url);
                let state = types.entry(type_url.clone()).or_default();
                if !state.take(first, &req, &shared, p) {
                    continue;
                }
                if send_type(&shared, p, &mut types, &type_url, &mut nonce, &tx).await == Sent::Closed {
                    break;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() { break; }
                let Some(p) = proxy.as_ref() else { continue };
                if !push_all(&shared, p, &mut types, &mut nonce, &tx).await { break; }
            }
        }
    }
    shared.unregister(id);
    if let Some(p) = proxy {
        info!(stream = id, proxy = %p.id, "proxy disconnected");
    }
}

impl TypeState for SotwType {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const API: &'static str = "SotW";

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }

    fn take(
        &mut self,
        first: bool,
        req: &DiscoveryRequest,
        shared: &Shared,
        proxy: &ProxyIdentity,
    ) -> bool {
        SotwType::take(self, first, req, shared, proxy)
    }

    fn send(
        &mut self,
        shared: &Shared,
        proxy: &ProxyIdentity,
        type_url: &str,
        nonce: &mut u64,
        tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> impl std::future::Future<Output = Sent> + Send {
        send_sotw(shared, proxy, type_url, self, nonce, tx)
    }

    fn resend_all(&mut self) {
        self.sent_version = None;
    }
}

/// Sends the type's resources unless the proxy already has this version.
async fn send_sotw(
    shared: &Shared,
    proxy: &ProxyIdentity,
    type_url: &str,
    state: &mut SotwType,
    nonce: &mut u64,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> Sent {
    let Some(snap) = snapshot(shared, proxy) else {
        return Sent::No;
    };
    let version = snap.version(type_url, &state.names);
    if state.sent_version.as_deref() == Some(version.as_str()) {
        return Sent::No;
    }
    *nonce += 1;
    state.nonce = nonce.to_string();
    state.sent_version = Some(version.clone());
    let resources = snap
        .resources(type_url, &state.names)
        .into_iter()
        .map(|r| r.any.clone())
        .collect();
    if let Some(t) = shared.stats.of_type(type_url) {
        t.pushes.fetch_add(1, Relaxed);
    }
    let sent = tx
        .send(Ok(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: type_url.to_owned(),
            nonce: state.nonce.clone(),
            ..Default::default()
        }))
        .await;
    if sent.is_ok() {
        Sent::Yes
    } else {
        Sent::Closed
    }
}

// === Delta ===

#[derive(Debug, Default)]
struct DeltaType {
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the proxy has: name → version.
    sent: BTreeMap<String, String>,
    nonce: String,
    answered: bool,
}

impl DeltaType {
    /// Takes a request: its subscription changes always (Envoy folds pending ones into its
    /// ACKs, so a request with a stale nonce carries them too); an ACK or NACK only when it
    /// answers the last response.
    fn take(
        &mut self,
        first: bool,
        req: &DeltaDiscoveryRequest,
        shared: &Shared,
        proxy: &ProxyIdentity,
    ) -> bool {
        if first {
            self.wildcard = req.type_url != TYPE_ENDPOINT
                && (req.resource_names_subscribe.is_empty()
                    || req.resource_names_subscribe.iter().any(|n| n == "*"));
            // A reconnecting proxy says what it has; unchanged resources are not resent.
            self.sent = req.initial_resource_versions.clone().into_iter().collect();
        }
        if !req.response_nonce.is_empty()
            && !self.nonce.is_empty()
            && req.response_nonce == self.nonce
        {
            count_reply(
                shared,
                &req.type_url,
                &proxy.id,
                req.error_detail.as_ref().map(|e| e.message.as_str()),
            );
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                self.wildcard = true;
            } else {
                self.subscribed.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                self.wildcard = false;
            }
            self.subscribed.remove(n);
            self.sent.remove(n);
        }
        true
    }
}

impl TypeState for DeltaType {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const API: &'static str = "Delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn take(
        &mut self,
        first: bool,
        req: &DeltaDiscoveryRequest,
        shared: &Shared,
        proxy: &ProxyIdentity,
    ) -> bool {
        DeltaType::take(self, first, req, shared, proxy)
    }

    fn send(
        &mut self,
        shared: &Shared,
        proxy: &ProxyIdentity,
        type_url: &str,
        nonce: &mut u64,
        tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> impl std::future::Future<Output = Sent> + Send {
        send_delta(shared, proxy, type_url, self, nonce, tx)
    }

    fn resend_all(&mut self) {
        self.sent.clear();
    }
}

/// Sends what changed for the proxy's subscription (and an empty answer to the first request
/// of a type, which a proxy waits for before it is initialized).
async fn send_delta(
    shared: &Shared,
    proxy: &ProxyIdentity,
    type_url: &str,
    state: &mut DeltaType,
    nonce: &mut u64,
    tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) -> Sent {
    let Some(snap) = snapshot(shared, proxy) else {
        return Sent::No;
    };
    let current: Vec<_> = snap
        .resources(type_url, &state.subscribed)
        .into_iter()
        .filter(|r| state.wildcard || state.subscribed.contains(&r.name))
        .collect();
    let names: BTreeSet<&str> = current.iter().map(|r| r.name.as_str()).collect();
    let removed: Vec<String> = state
        .sent
        .keys()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    let changed: Vec<_> = current
        .into_iter()
        .filter(|r| state.sent.get(&r.name) != Some(&r.version))
        .collect();
    if changed.is_empty() && removed.is_empty() && state.answered {
        return Sent::No;
    }
    for n in &removed {
        state.sent.remove(n);
    }
    for r in &changed {
        state.sent.insert(r.name.clone(), r.version.clone());
    }
    state.answered = true;
    *nonce += 1;
    state.nonce = nonce.to_string();
    if let Some(t) = shared.stats.of_type(type_url) {
        t.pushes.fetch_add(1, Relaxed);
    }
    let sent = tx
        .send(Ok(DeltaDiscoveryResponse {
            system_version_info: snap.version(type_url, &state.subscribed),
            resources: changed
                .into_iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce: state.nonce.clone(),
            ..Default::default()
        }))
        .await;
    if sent.is_ok() {
        Sent::Yes
    } else {
        Sent::Closed
    }
}
