//! An in-process ADS control plane for xDS tests (SotW and Delta, over TCP or a Unix socket).
//! The same server also answers the per-type services a bootstrap's `api_config_source` uses
//! (`ListenerDiscoveryService`, `ClusterDiscoveryService`, `EndpointDiscoveryService`, their
//! Stream and Delta methods), from the same state and into the same recording
//! ([`RecordedRequest::api`] tells the services apart).
//!
//! The server runs on its own tokio runtime so sync tests can drive it: the test scripts the
//! resources ([`AdsServer::set_resources`]), every connected stream that subscribed to that type
//! gets a push, and every request the client sends is recorded ([`AdsServer::requests`]) so a
//! test can assert the exact request → response → ACK/NACK sequence (versions and nonces).
//!
//! Server behaviour (modelled on istiod, see spec/xds-istio-spec.md §1.3):
//! - Wildcard: LDS/CDS-like types subscribe everything with an empty first request (legacy
//!   form) or `*`; EDS/RDS/SDS/ECDS never do, and an empty SotW list there means "none".
//! - SotW: answers a request with an empty nonce or changed `resource_names`; an ACK or NACK of
//!   the last nonce gets no answer; a request echoing an older nonce is ignored. Responses hold
//!   the full state of the type, filtered by name unless the subscription is wildcard.
//! - Delta: answers the first request of a type (even with nothing to send, so the client's
//!   initial fetch completes) and any request that subscribes names; pushes only what each
//!   stream does not already hold at the same version (`initial_resource_versions` counts), and
//!   `removed_resources` for what it holds that is gone.
//! - Nothing is sent for a type the test never set, which is how initial-fetch timeouts are
//!   tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const TYPE_LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const TYPE_CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const TYPE_ENDPOINT: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const TYPE_ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// Types whose subscriptions are always by name: an empty name list means "none", never the
/// legacy wildcard (spec §1.4).
const NAMED_ONLY_TYPES: [&str; 4] = [
    TYPE_ENDPOINT,
    TYPE_ROUTE,
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
];

/// Responses queued per stream before the stream counts as stuck and is closed.
const RESPONSE_QUEUE: usize = 64;
/// How long `stop` waits for the runtime's tasks (and so its sockets) to go away.
const STOP_GRACE: Duration = Duration::from_secs(2);
const WORKER_THREADS: usize = 1;
/// Largest request accepted (Envoy's own gRPC default is 4 MiB; large-response tests need more
/// only on the response side, which tonic does not limit).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Which ADS method a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Sotw,
    Delta,
}

/// Which gRPC service a stream was opened on: the aggregated one, or a per-type service
/// (`api_config_source` of `lds_config` / `cds_config` / `eds_config`). All share one state
/// and one recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Ads,
    /// `envoy.service.listener.v3.ListenerDiscoveryService`
    Listeners,
    /// `envoy.service.cluster.v3.ClusterDiscoveryService`
    Clusters,
    /// `envoy.service.endpoint.v3.EndpointDiscoveryService`
    Endpoints,
    /// `envoy.service.secret.v3.SecretDiscoveryService` (Istio's agent serves it)
    Secrets,
}

impl Api {
    /// `ADS`, `LDS`, `CDS` or `EDS`.
    pub fn name(self) -> &'static str {
        match self {
            Api::Ads => "ADS",
            Api::Listeners => "LDS",
            Api::Clusters => "CDS",
            Api::Endpoints => "EDS",
            Api::Secrets => "SDS",
        }
    }
}

/// `google.rpc.Status` of a NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: i32,
    pub message: String,
}

/// One request as the server received it. SotW fills `version_info` and `resource_names`; Delta
/// fills `subscribe`, `unsubscribe` and `initial_resource_versions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Server-assigned stream number, counting from 1 across restarts.
    pub stream: u64,
    /// The service the stream was opened on.
    pub api: Api,
    pub variant: Variant,
    pub type_url: String,
    pub version_info: String,
    pub response_nonce: String,
    pub resource_names: Vec<String>,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    pub initial_resource_versions: BTreeMap<String, String>,
    pub error_detail: Option<ErrorDetail>,
    pub has_node: bool,
    pub node_id: String,
    pub node_cluster: String,
}

impl RecordedRequest {
    pub fn is_nack(&self) -> bool {
        self.error_detail.is_some()
    }

    /// `LDS`, `CDS`, `EDS`, `RDS`, or the message name for other types.
    pub fn short_type(&self) -> &str {
        short_type(&self.type_url)
    }

    /// A compact one-line form for sequence assertions and failure messages, e.g.
    /// `CDS{node v=c1 n=n1}` or `EDS{+[a] n=n2 NACK(13)}`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.has_node {
            parts.push("node".to_string());
        }
        if !self.version_info.is_empty() {
            parts.push(format!("v={}", self.version_info));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("[{}]", self.resource_names.join(",")));
        }
        if !self.subscribe.is_empty() {
            parts.push(format!("+[{}]", self.subscribe.join(",")));
        }
        if !self.unsubscribe.is_empty() {
            parts.push(format!("-[{}]", self.unsubscribe.join(",")));
        }
        if !self.initial_resource_versions.is_empty() {
            let known: Vec<String> = self
                .initial_resource_versions
                .iter()
                .map(|(n, v)| format!("{n}@{v}"))
                .collect();
            parts.push(format!("known[{}]", known.join(",")));
        }
        if !self.response_nonce.is_empty() {
            parts.push(format!("n={}", self.response_nonce));
        }
        if let Some(e) = &self.error_detail {
            parts.push(format!("NACK({})", e.code));
        }
        format!("{}{{{}}}", self.short_type(), parts.join(" "))
    }
}

/// One response the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentResponse {
    pub stream: u64,
    pub variant: Variant,
    pub type_url: String,
    /// SotW `version_info`, Delta `system_version_info`.
    pub version: String,
    pub nonce: String,
    /// Names of the resources carried (SotW: the full state; Delta: added or changed).
    pub resources: Vec<String>,
    /// Delta `removed_resources`.
    pub removed: Vec<String>,
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// `LDS`/`CDS`/`EDS`/`RDS` for the usual type URLs, else the message name.
pub fn short_type(type_url: &str) -> &str {
    match type_url {
        TYPE_LISTENER => "LDS",
        TYPE_CLUSTER => "CDS",
        TYPE_ENDPOINT => "EDS",
        TYPE_ROUTE => "RDS",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

/// Packs a generated xDS message into an `Any` with its type URL.
pub fn pack<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Every xDS resource type carries its name in field 1 (`Listener.name`, `Cluster.name`,
/// `ClusterLoadAssignment.cluster_name`, `RouteConfiguration.name`, `Secret.name`), so one
/// decoder finds the name of any of them; prost skips the other fields.
#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name of a packed xDS resource (empty when its bytes do not decode).
pub fn resource_name(any: &Any) -> String {
    NameOnly::decode(any.value.as_slice())
        .map(|n| n.name)
        .unwrap_or_default()
}

struct Versioned {
    version: String,
    any: Any,
}

struct TypeState {
    version: String,
    resources: BTreeMap<String, Versioned>,
}

enum Tx {
    Sotw(mpsc::Sender<Result<DiscoveryResponse, Status>>),
    Delta(mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>),
}

#[derive(Default)]
struct Subscription {
    subscribed: bool,
    wildcard: bool,
    /// The client named something (or `*`) on this type: from then on, an empty SotW list means
    /// "unsubscribe all" rather than the legacy wildcard.
    named_ever: bool,
    names: BTreeSet<String>,
    last_nonce: String,
    /// Delta: what the client holds, name → version.
    known: BTreeMap<String, String>,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct StreamState {
    api: Api,
    tx: Tx,
    reader: Option<tokio::task::AbortHandle>,
    types: HashMap<String, Subscription>,
}

#[derive(Default)]
struct State {
    types: HashMap<String, TypeState>,
    streams: BTreeMap<u64, StreamState>,
    requests: Vec<RecordedRequest>,
    responses: Vec<SentResponse>,
    streams_opened: u64,
    next_nonce: u64,
}

impl State {
    fn send_sotw(&mut self, id: u64, type_url: &str) {
        let State {
            types,
            streams,
            responses,
            next_nonce,
            ..
        } = self;
        let (Some(ts), Some(stream)) = (types.get(type_url), streams.get_mut(&id)) else {
            return;
        };
        let Tx::Sotw(tx) = &stream.tx else {
            return;
        };
        let sub = stream.types.entry(type_url.to_string()).or_default();
        let chosen: Vec<(&String, &Versioned)> =
            ts.resources.iter().filter(|(n, _)| sub.wants(n)).collect();
        *next_nonce += 1;
        let nonce = format!("n{next_nonce}");
        let response = DiscoveryResponse {
            version_info: ts.version.clone(),
            resources: chosen.iter().map(|(_, v)| v.any.clone()).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        if tx.try_send(Ok(response)).is_err() {
            return;
        }
        sub.last_nonce = nonce.clone();
        responses.push(SentResponse {
            stream: id,
            variant: Variant::Sotw,
            type_url: type_url.to_string(),
            version: ts.version.clone(),
            nonce,
            resources: chosen.iter().map(|(n, _)| n.to_string()).collect(),
            removed: Vec::new(),
        });
    }

    fn send_delta(&mut self, id: u64, type_url: &str, even_if_empty: bool) {
        let State {
            types,
            streams,
            responses,
            next_nonce,
            ..
        } = self;
        let (Some(ts), Some(stream)) = (types.get(type_url), streams.get_mut(&id)) else {
            return;
        };
        let Tx::Delta(tx) = &stream.tx else {
            return;
        };
        let sub = stream.types.entry(type_url.to_string()).or_default();
        let added: Vec<(&String, &Versioned)> = ts
            .resources
            .iter()
            .filter(|(n, v)| sub.wants(n) && sub.known.get(*n) != Some(&v.version))
            .collect();
        let removed: Vec<String> = sub
            .known
            .keys()
            .filter(|n| !ts.resources.contains_key(*n))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() && !even_if_empty {
            return;
        }
        *next_nonce += 1;
        let nonce = format!("n{next_nonce}");
        let response = DeltaDiscoveryResponse {
            system_version_info: ts.version.clone(),
            resources: added
                .iter()
                .map(|(n, v)| Resource {
                    name: n.to_string(),
                    version: v.version.clone(),
                    resource: Some(v.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_string(),
            removed_resources: removed.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        if tx.try_send(Ok(response)).is_err() {
            return;
        }
        for (n, v) in &added {
            sub.known.insert(n.to_string(), v.version.clone());
        }
        for n in &removed {
            sub.known.remove(n);
        }
        sub.last_nonce = nonce.clone();
        responses.push(SentResponse {
            stream: id,
            variant: Variant::Delta,
            type_url: type_url.to_string(),
            version: ts.version.clone(),
            nonce,
            resources: added.iter().map(|(n, _)| n.to_string()).collect(),
            removed,
        });
    }

    fn api_of(&self, id: u64) -> Api {
        self.streams.get(&id).map_or(Api::Ads, |s| s.api)
    }

    fn on_sotw(&mut self, id: u64, req: DiscoveryRequest) {
        let node = req.node.as_ref();
        let api = self.api_of(id);
        self.requests.push(RecordedRequest {
            stream: id,
            api,
            variant: Variant::Sotw,
            type_url: req.type_url.clone(),
            version_info: req.version_info.clone(),
            response_nonce: req.response_nonce.clone(),
            resource_names: req.resource_names.clone(),
            subscribe: Vec::new(),
            unsubscribe: Vec::new(),
            initial_resource_versions: BTreeMap::new(),
            error_detail: req.error_detail.as_ref().map(|e| ErrorDetail {
                code: e.code,
                message: e.message.clone(),
            }),
            has_node: node.is_some(),
            node_id: node.map(|n| n.id.clone()).unwrap_or_default(),
            node_cluster: node.map(|n| n.cluster.clone()).unwrap_or_default(),
        });
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let sub = stream.types.entry(req.type_url.clone()).or_default();
        let names: BTreeSet<String> = req
            .resource_names
            .iter()
            .filter(|n| *n != "*")
            .cloned()
            .collect();
        let wildcard = req.resource_names.iter().any(|n| n == "*")
            || (req.resource_names.is_empty()
                && !sub.named_ever
                && !NAMED_ONLY_TYPES.contains(&req.type_url.as_str()));
        sub.named_ever |= !req.resource_names.is_empty();
        let changed = !sub.subscribed || wildcard != sub.wildcard || names != sub.names;
        sub.subscribed = true;
        sub.wildcard = wildcard;
        sub.names = names;
        if !req.response_nonce.is_empty() && req.response_nonce != sub.last_nonce {
            return; // stale: a newer response is in flight
        }
        if !sub.wildcard && sub.names.is_empty() {
            return; // unsubscribed from the whole type: istiod does not answer either
        }
        if req.response_nonce.is_empty() || changed {
            self.send_sotw(id, &req.type_url);
        }
    }

    fn on_delta(&mut self, id: u64, req: DeltaDiscoveryRequest) {
        let node = req.node.as_ref();
        let api = self.api_of(id);
        self.requests.push(RecordedRequest {
            stream: id,
            api,
            variant: Variant::Delta,
            type_url: req.type_url.clone(),
            version_info: String::new(),
            response_nonce: req.response_nonce.clone(),
            resource_names: Vec::new(),
            subscribe: req.resource_names_subscribe.clone(),
            unsubscribe: req.resource_names_unsubscribe.clone(),
            initial_resource_versions: req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            error_detail: req.error_detail.as_ref().map(|e| ErrorDetail {
                code: e.code,
                message: e.message.clone(),
            }),
            has_node: node.is_some(),
            node_id: node.map(|n| n.id.clone()).unwrap_or_default(),
            node_cluster: node.map(|n| n.cluster.clone()).unwrap_or_default(),
        });
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let sub = stream.types.entry(req.type_url.clone()).or_default();
        let first = !sub.subscribed;
        if first {
            sub.subscribed = true;
            // Legacy wildcard: a first request naming nothing subscribes to everything.
            sub.wildcard = req.resource_names_subscribe.is_empty()
                && !NAMED_ONLY_TYPES.contains(&req.type_url.as_str());
            sub.known = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(n);
                sub.known.remove(n);
            }
        }
        if first || !req.resource_names_subscribe.is_empty() {
            self.send_delta(id, &req.type_url, first);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the recorded requests from the others.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_stream(&self, api: Api, tx: Tx) -> u64 {
        let mut state = self.lock();
        state.streams_opened += 1;
        let id = state.streams_opened;
        state.streams.insert(
            id,
            StreamState {
                api,
                tx,
                reader: None,
                types: HashMap::new(),
            },
        );
        id
    }

    fn set_reader(&self, id: u64, reader: tokio::task::AbortHandle) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.reader = Some(reader);
        }
    }

    fn close_stream(&self, id: u64) {
        self.lock().streams.remove(&id);
        self.changed.notify_all();
    }

    fn record<F: FnOnce(&mut State)>(&self, f: F) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

type SotwStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

/// Serves every discovery service (ADS and the per-type ones) from one shared state.
#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
}

impl Service {
    fn sotw(
        &self,
        api: Api,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let id = self.shared.open_stream(api, Tx::Sotw(tx));
        let shared = self.shared.clone();
        let mut inbound = request.into_inner();
        let reader = tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                shared.record(|s| s.on_sotw(id, req));
            }
            shared.close_stream(id);
        });
        self.shared.set_reader(id, reader.abort_handle());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    fn delta(
        &self,
        api: Api,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let id = self.shared.open_stream(api, Tx::Delta(tx));
        let shared = self.shared.clone();
        let mut inbound = request.into_inner();
        let reader = tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                shared.record(|s| s.on_delta(id, req));
            }
            shared.close_stream(id);
        });
        self.shared.set_reader(id, reader.abort_handle());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// REST-style fetches are not something Envoy's gRPC config sources use.
fn no_fetch() -> Status {
    Status::unimplemented("the test control plane serves streams only")
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(Api::Ads, request)
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        self.delta(Api::Ads, request)
    }
}

#[tonic::async_trait]
impl ListenerDiscoveryService for Service {
    type StreamListenersStream = SotwStream;
    type DeltaListenersStream = DeltaStream;

    async fn stream_listeners(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(Api::Listeners, request)
    }

    async fn delta_listeners(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        self.delta(Api::Listeners, request)
    }

    async fn fetch_listeners(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(no_fetch())
    }
}

#[tonic::async_trait]
impl ClusterDiscoveryService for Service {
    type StreamClustersStream = SotwStream;
    type DeltaClustersStream = DeltaStream;

    async fn stream_clusters(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(Api::Clusters, request)
    }

    async fn delta_clusters(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        self.delta(Api::Clusters, request)
    }

    async fn fetch_clusters(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(no_fetch())
    }
}

#[tonic::async_trait]
impl EndpointDiscoveryService for Service {
    type StreamEndpointsStream = SotwStream;
    type DeltaEndpointsStream = DeltaStream;

    async fn stream_endpoints(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(Api::Endpoints, request)
    }

    async fn delta_endpoints(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        self.delta(Api::Endpoints, request)
    }

    async fn fetch_endpoints(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(no_fetch())
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Service {
    type StreamSecretsStream = SotwStream;
    type DeltaSecretsStream = DeltaStream;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(Api::Secrets, request)
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        self.delta(Api::Secrets, request)
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(no_fetch())
    }
}

/// The in-process ADS server. Dropping it stops it.
pub struct AdsServer {
    shared: Arc<Shared>,
    address: Address,
    runtime: Option<tokio::runtime::Runtime>,
}

impl AdsServer {
    /// Listens on a free loopback TCP port.
    pub fn start_tcp() -> io::Result<Self> {
        Self::start(Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    /// Listens on a Unix socket at `path` (replacing a stale socket file).
    pub fn start_unix(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::start(Address::Unix(path.as_ref().to_path_buf()))
    }

    fn start(address: Address) -> io::Result<Self> {
        let mut server = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            address,
            runtime: None,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("test-ads")
            .enable_all()
            .build()?;
        let service = Service {
            shared: self.shared.clone(),
        };
        let router = tonic::transport::Server::builder()
            .add_service(
                AggregatedDiscoveryServiceServer::new(service.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                ListenerDiscoveryServiceServer::new(service.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                ClusterDiscoveryServiceServer::new(service.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                EndpointDiscoveryServiceServer::new(service.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                SecretDiscoveryServiceServer::new(service)
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            );
        let _guard = runtime.enter();
        match &self.address {
            Address::Tcp(addr) => {
                // std's bind sets SO_REUSEADDR, so a restart can take the same port again.
                let listener = std::net::TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                self.address = Address::Tcp(listener.local_addr()?);
                runtime.spawn(async move {
                    if let Err(e) = router
                        .serve_with_incoming(tokio_stream::StreamExt::map(
                            TcpListenerStream::new(listener),
                            // Without TCP_NODELAY small responses stall on Nagle and delayed
                            // ACKs (~40 ms per push).
                            |accepted| {
                                accepted.inspect(|s| {
                                    let _ = s.set_nodelay(true);
                                })
                            },
                        ))
                        .await
                    {
                        eprintln!("test ADS server (tcp) failed: {e}");
                    }
                });
            }
            Address::Unix(path) => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                let listener = tokio::net::UnixListener::bind(path)?;
                runtime.spawn(async move {
                    if let Err(e) = router
                        .serve_with_incoming(UnixListenerStream::new(listener))
                        .await
                    {
                        eprintln!("test ADS server (unix) failed: {e}");
                    }
                });
            }
        }
        drop(_guard);
        self.runtime = Some(runtime);
        Ok(())
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The TCP port, or `None` for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        match &self.address {
            Address::Tcp(a) => Some(a.port()),
            Address::Unix(_) => None,
        }
    }

    /// The `address:` of a static cluster pointing at this server, as bootstrap YAML (flow
    /// style): `{socket_address: {address: 127.0.0.1, port_value: N}}` or `{pipe: {path: P}}`.
    pub fn envoy_address_yaml(&self) -> String {
        match &self.address {
            Address::Tcp(a) => format!(
                "{{socket_address: {{address: {}, port_value: {}}}}}",
                a.ip(),
                a.port()
            ),
            Address::Unix(p) => format!("{{pipe: {{path: {}}}}}", p.display()),
        }
    }

    /// Replaces the whole state of `type_url` with `resources` at `version` and pushes it to
    /// every stream subscribed to that type (SotW: full state, fresh nonce; Delta: what changed,
    /// per-resource version = `version` for resources whose bytes changed).
    /// Returns the nonces of the responses this sent (one per subscribed stream).
    pub fn set_resources(&self, type_url: &str, version: &str, resources: Vec<Any>) -> Vec<String> {
        let mut nonces = Vec::new();
        self.shared.record(|state| {
            let sent_before = state.responses.len();
            let old = state.types.remove(type_url);
            let mut old = old.map(|t| t.resources).unwrap_or_default();
            let resources = resources
                .into_iter()
                .map(|any| {
                    let name = resource_name(&any);
                    let version = match old.remove(&name) {
                        Some(prev) if prev.any == any => prev.version,
                        _ => version.to_string(),
                    };
                    (name, Versioned { version, any })
                })
                .collect();
            state.types.insert(
                type_url.to_string(),
                TypeState {
                    version: version.to_string(),
                    resources,
                },
            );
            let subscribed: Vec<(u64, bool)> = state
                .streams
                .iter()
                .filter(|(_, s)| {
                    s.types
                        .get(type_url)
                        .is_some_and(|t| t.subscribed && (t.wildcard || !t.names.is_empty()))
                })
                .map(|(id, s)| (*id, matches!(s.tx, Tx::Sotw(_))))
                .collect();
            for (id, sotw) in subscribed {
                if sotw {
                    state.send_sotw(id, type_url);
                } else {
                    state.send_delta(id, type_url, false);
                }
            }
            nonces = state.responses[sent_before..]
                .iter()
                .map(|r| r.nonce.clone())
                .collect();
        });
        nonces
    }

    /// [`set_resources`](Self::set_resources) for typed messages.
    pub fn set_messages<M: prost::Name>(&self, version: &str, messages: &[M]) -> Vec<String> {
        let resources = messages.iter().map(pack).collect();
        self.set_resources(&M::type_url(), version, resources)
    }

    /// Waits until a request matching `pred` has been received (at index `from` or later) and
    /// returns it; `None` on timeout.
    pub fn try_wait_for_request(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&RecordedRequest) -> bool,
    ) -> Option<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = state.requests.iter().skip(from).find(|r| pred(r)) {
                return Some(found.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// [`try_wait_for_request`](Self::try_wait_for_request) that panics on timeout, listing
    /// what came, with `what` awaited.
    pub fn wait_for_request(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&RecordedRequest) -> bool,
    ) -> RecordedRequest {
        self.try_wait_for_request(from, timeout, pred)
            .unwrap_or_else(|| {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; xDS requests: {:?}",
                    self.summaries()
                )
            })
    }

    /// Waits for the ACK or NACK of the response with `nonce`; `None` on timeout.
    pub fn try_wait_for_reply_to(&self, nonce: &str, timeout: Duration) -> Option<RecordedRequest> {
        self.try_wait_for_request(0, timeout, |r| r.response_nonce == nonce)
    }

    /// Waits for the ACK or NACK of the response with `nonce` and returns it.
    pub fn wait_for_reply_to(&self, nonce: &str, timeout: Duration) -> RecordedRequest {
        self.wait_for_request(0, timeout, &format!("the (N)ACK of {nonce}"), |r| {
            r.response_nonce == nonce
        })
    }

    /// [`set_messages`](Self::set_messages) and wait for the (N)ACK of every response it sent;
    /// returns them (empty when no stream was subscribed).
    pub fn push<M: prost::Name>(
        &self,
        version: &str,
        messages: &[M],
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        self.set_messages(version, messages)
            .iter()
            .map(|nonce| self.wait_for_reply_to(nonce, timeout))
            .collect()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// The version of the response that carried `nonce` (SotW `version_info`, Delta
    /// `system_version_info`).
    pub fn version_of_nonce(&self, nonce: &str) -> Option<String> {
        self.shared
            .lock()
            .responses
            .iter()
            .find(|r| r.nonce == nonce)
            .map(|r| r.version.clone())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every response sent so far, in order.
    pub fn responses(&self) -> Vec<SentResponse> {
        self.shared.lock().responses.clone()
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// Streams opened since start (across restarts).
    pub fn streams_opened(&self) -> u64 {
        self.shared.lock().streams_opened
    }

    /// Waits until at least `n` requests were received; `None` on timeout.
    pub fn try_wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Option<Vec<RecordedRequest>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.requests.len() >= n {
                return Some(state.requests.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until at least `n` requests were received; panics on timeout listing what came.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        self.try_wait_for_requests(n, timeout).unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {n} xDS requests; got: {:?}",
                self.summaries()
            )
        })
    }

    /// [`RecordedRequest::summary`] of every request so far.
    pub fn summaries(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.summary()).collect()
    }

    /// Ends every open stream with `UNAVAILABLE` (the connections stay up), as a control
    /// plane that drops its streams does; clients are expected to reopen one.
    pub fn close_streams(&self) {
        let mut state = self.shared.lock();
        for (_, stream) in std::mem::take(&mut state.streams) {
            let status = Status::unavailable("stream closed by the test control plane");
            // A full queue means the stream is stuck anyway; dropping the sender ends it.
            let _ = match &stream.tx {
                Tx::Sotw(tx) => tx.try_send(Err(status)).is_ok(),
                Tx::Delta(tx) => tx.try_send(Err(status)).is_ok(),
            };
            if let Some(reader) = stream.reader {
                reader.abort();
            }
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Closes every stream and connection and stops listening. Resources and recordings stay.
    pub fn stop(&mut self) {
        self.close_streams();
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking shutdown is not allowed inside a runtime.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(STOP_GRACE);
            }
        }
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }

    /// [`stop`](Self::stop), then listen again on the same address, as a restarted control
    /// plane that kept its state.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Channel, Endpoint, Uri};

    const WAIT: Duration = Duration::from_secs(5);

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn cla(name: &str) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: name.to_string(),
            ..Default::default()
        }
    }

    fn node() -> Option<Node> {
        Some(Node {
            id: "test-node".into(),
            cluster: "test-cluster".into(),
            ..Default::default()
        })
    }

    /// Multi-threaded so the client's connection keeps running while the test thread blocks in
    /// `wait_for_requests`.
    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    async fn connect(address: &Address) -> AggregatedDiscoveryServiceClient<Channel> {
        let channel = match address {
            Address::Tcp(a) => Endpoint::from_shared(format!("http://{a}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
            Address::Unix(p) => {
                let p = p.clone();
                Endpoint::try_from("http://[::]:50051")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = p.clone();
                        async move {
                            Ok::<_, io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(p).await?,
                            ))
                        }
                    }))
                    .await
                    .unwrap()
            }
        };
        AggregatedDiscoveryServiceClient::new(channel)
    }

    async fn next<T>(stream: &mut Streaming<T>) -> T {
        tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    fn names(r: &DiscoveryResponse) -> Vec<String> {
        r.resources.iter().map(resource_name).collect()
    }

    fn sotw_exchange(server: AdsServer) {
        server.set_messages("c1", &[cluster("a")]);
        let rt = rt();
        rt.block_on(async {
            let mut client = connect(server.address()).await;
            let (tx, rx) = mpsc::channel(16);
            tx.send(DiscoveryRequest {
                node: node(),
                type_url: TYPE_CLUSTER.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut inbound = client
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let r1 = next(&mut inbound).await;
            assert_eq!(
                (r1.version_info.as_str(), names(&r1)),
                ("c1", vec!["a".into()])
            );
            assert_eq!(r1.type_url, TYPE_CLUSTER);
            let ack = |v: &str, n: &str| DiscoveryRequest {
                version_info: v.into(),
                response_nonce: n.into(),
                type_url: TYPE_CLUSTER.into(),
                ..Default::default()
            };
            tx.send(ack("c1", &r1.nonce)).await.unwrap();
            // EDS for a name the server has no state for yet: no answer until it is set.
            tx.send(DiscoveryRequest {
                type_url: TYPE_ENDPOINT.into(),
                resource_names: vec!["a".into()],
                ..Default::default()
            })
            .await
            .unwrap();
            server.wait_for_requests(3, WAIT);
            server.set_messages("e1", &[cla("a"), cla("b")]);
            let r2 = next(&mut inbound).await;
            assert_eq!(
                (r2.version_info.as_str(), names(&r2)),
                ("e1", vec!["a".into()])
            );
            tx.send(DiscoveryRequest {
                type_url: TYPE_ENDPOINT.into(),
                resource_names: vec!["a".into()],
                version_info: "e1".into(),
                response_nonce: r2.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            server.set_messages("c2", &[cluster("a"), cluster("b")]);
            let r3 = next(&mut inbound).await;
            assert_eq!(names(&r3), vec!["a".to_string(), "b".into()]);
            let mut nack = ack("c1", &r3.nonce);
            nack.error_detail = Some(RpcStatus {
                code: 13,
                message: "bad cluster b".into(),
                ..Default::default()
            });
            tx.send(nack).await.unwrap();
            let reqs = server.wait_for_requests(5, WAIT);
            let nonces: Vec<&str> = [&r1, &r2, &r3].iter().map(|r| r.nonce.as_str()).collect();
            assert_eq!(nonces, ["n1", "n2", "n3"]);
            assert_eq!(
                server.summaries(),
                [
                    "CDS{node}",
                    "CDS{v=c1 n=n1}",
                    "EDS{[a]}",
                    "EDS{v=e1 [a] n=n2}",
                    "CDS{v=c1 n=n3 NACK(13)}"
                ]
            );
            assert_eq!(reqs[0].node_id, "test-node");
            assert_eq!(
                reqs[4].error_detail.as_ref().unwrap().message,
                "bad cluster b"
            );
            // EDS with no names after naming some = unsubscribe (not a wildcard): nothing sent,
            // not even on a later EDS change.
            tx.send(DiscoveryRequest {
                type_url: TYPE_ENDPOINT.into(),
                version_info: "e1".into(),
                response_nonce: r2.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            server.wait_for_requests(6, WAIT);
            server.set_messages("e2", &[cla("a")]);
            // NACK, ACKs and the unsubscribe get no answer.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(server.responses().len(), 3);
        });
    }

    fn delta_exchange(server: AdsServer) {
        server.set_messages("d1", &[cluster("a"), cluster("b")]);
        let rt = rt();
        rt.block_on(async {
            let mut client = connect(server.address()).await;
            let (tx, rx) = mpsc::channel(16);
            tx.send(DeltaDiscoveryRequest {
                node: node(),
                type_url: TYPE_CLUSTER.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut inbound = client
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let r1 = next(&mut inbound).await;
            let added: Vec<(&str, &str)> = r1
                .resources
                .iter()
                .map(|r| (r.name.as_str(), r.version.as_str()))
                .collect();
            assert_eq!(added, [("a", "d1"), ("b", "d1")]);
            assert_eq!(r1.system_version_info, "d1");
            tx.send(DeltaDiscoveryRequest {
                type_url: TYPE_CLUSTER.into(),
                response_nonce: r1.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            server.wait_for_requests(2, WAIT);
            // a unchanged, b removed, c added.
            server.set_messages("d2", &[cluster("a"), cluster("c")]);
            let r2 = next(&mut inbound).await;
            let added: Vec<(&str, &str)> = r2
                .resources
                .iter()
                .map(|r| (r.name.as_str(), r.version.as_str()))
                .collect();
            assert_eq!(added, [("c", "d2")]);
            assert_eq!(r2.removed_resources, ["b"]);
            tx.send(DeltaDiscoveryRequest {
                type_url: TYPE_CLUSTER.into(),
                response_nonce: r2.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            server.wait_for_requests(3, WAIT);

            // Control plane drops the stream; the client resubscribes with what it holds.
            server.close_streams();
            let status = tokio::time::timeout(WAIT, inbound.message())
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            let (tx, rx) = mpsc::channel(16);
            tx.send(DeltaDiscoveryRequest {
                node: node(),
                type_url: TYPE_CLUSTER.into(),
                initial_resource_versions: [("a", "d1"), ("c", "d2"), ("gone", "d0")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut inbound = client
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let r3 = next(&mut inbound).await;
            assert!(r3.resources.is_empty());
            assert_eq!(r3.removed_resources, ["gone"]);
            tx.send(DeltaDiscoveryRequest {
                type_url: TYPE_CLUSTER.into(),
                response_nonce: r3.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            server.wait_for_requests(5, WAIT);
            assert_eq!(
                server.summaries(),
                [
                    "CDS{node}",
                    "CDS{n=n1}",
                    "CDS{n=n2}",
                    "CDS{node known[a@d1,c@d2,gone@d0]}",
                    "CDS{n=n3}"
                ]
            );
            let streams: Vec<u64> = server.requests().iter().map(|r| r.stream).collect();
            assert_eq!(streams, [1, 1, 1, 2, 2]);
        });
    }

    #[test]
    fn sotw_over_tcp() {
        sotw_exchange(AdsServer::start_tcp().unwrap());
    }

    #[test]
    fn sotw_over_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        sotw_exchange(AdsServer::start_unix(dir.path().join("xds.sock")).unwrap());
    }

    #[test]
    fn delta_over_tcp() {
        delta_exchange(AdsServer::start_tcp().unwrap());
    }

    #[test]
    fn delta_over_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        delta_exchange(AdsServer::start_unix(dir.path().join("xds.sock")).unwrap());
    }

    /// The per-type services share the state and the recording, each stream tagged with its
    /// service.
    #[test]
    fn per_type_services_share_state() {
        use envoy_types::pb::envoy::config::listener::v3::Listener;
        use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
        use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;

        let server = AdsServer::start_tcp().unwrap();
        server.set_messages("c1", &[cluster("a")]);
        server.set_messages(
            "l1",
            &[Listener {
                name: "l".into(),
                ..Default::default()
            }],
        );
        let Address::Tcp(addr) = server.address().clone() else {
            unreachable!()
        };
        let rt = rt();
        rt.block_on(async {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let (ctx, crx) = mpsc::channel(4);
            ctx.send(DiscoveryRequest {
                node: node(),
                type_url: TYPE_CLUSTER.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut clusters = ClusterDiscoveryServiceClient::new(channel.clone())
                .stream_clusters(ReceiverStream::new(crx))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(names(&next(&mut clusters).await), ["a"]);
            let (ltx, lrx) = mpsc::channel(4);
            ltx.send(DeltaDiscoveryRequest {
                node: node(),
                type_url: TYPE_LISTENER.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut listeners = ListenerDiscoveryServiceClient::new(channel)
                .delta_listeners(ReceiverStream::new(lrx))
                .await
                .unwrap()
                .into_inner();
            let r = next(&mut listeners).await;
            assert_eq!(r.resources[0].name, "l");
        });
        let apis: Vec<(Api, Variant, String)> = server
            .requests()
            .iter()
            .map(|r| (r.api, r.variant, r.summary()))
            .collect();
        assert_eq!(
            apis,
            [
                (Api::Clusters, Variant::Sotw, "CDS{node}".to_string()),
                (Api::Listeners, Variant::Delta, "LDS{node}".to_string()),
            ]
        );
    }

    #[test]
    fn restart_keeps_address_and_state() {
        let mut server = AdsServer::start_tcp().unwrap();
        server.set_messages("c1", &[cluster("a")]);
        let before = server.address().clone();
        let rt = rt();
        let request = || DiscoveryRequest {
            node: node(),
            type_url: TYPE_CLUSTER.into(),
            version_info: "c1".into(),
            ..Default::default()
        };
        let (_client, _tx, mut inbound) = rt.block_on(async {
            let mut client = connect(server.address()).await;
            let (tx, rx) = mpsc::channel(16);
            tx.send(request()).await.unwrap();
            let mut inbound = client
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(next(&mut inbound).await.version_info, "c1");
            (client, tx, inbound)
        });
        // Outside the client's runtime, so `stop` waits for the old sockets to close.
        server.restart().unwrap();
        rt.block_on(async {
            let end = tokio::time::timeout(WAIT, inbound.message()).await.unwrap();
            assert!(end.is_err_or_end());
        });
        assert_eq!(server.address(), &before);
        rt.block_on(async {
            let mut client = connect(server.address()).await;
            let (tx, rx) = mpsc::channel(16);
            tx.send(request()).await.unwrap();
            let mut inbound = client
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let r = next(&mut inbound).await;
            assert_eq!(
                (r.version_info.as_str(), names(&r)),
                ("c1", vec!["a".into()])
            );
        });
        assert_eq!(server.streams_opened(), 2);
        assert_eq!(server.summaries(), ["CDS{node v=c1}", "CDS{node v=c1}"]);
    }

    trait ErrOrEnd {
        fn is_err_or_end(&self) -> bool;
    }

    impl<T> ErrOrEnd for Result<Option<T>, Status> {
        fn is_err_or_end(&self) -> bool {
            !matches!(self, Ok(Some(_)))
        }
    }
}
