//! The client task: owns every subscription's protocol state (names, versions, nonces, Delta
//! per-resource versions, initial-fetch timers), drives the CDS → EDS → LDS start order, calls
//! the handler and answers each response with its ACK or NACK.
//!
//! One task for all types keeps the cross-type ordering Envoy shows trivially sequential:
//! a CDS update's EDS (un)subscription goes out before the CDS ACK, and LDS starts (before
//! the EDS ACK) once the clusters' initial endpoints arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{BuildVersion, Node};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as PbResource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::file::{self, DiscoveryFile};
use crate::stats::{ControlPlaneStats, SubscriptionStats};
use crate::transport::{self, Event, Service, Tx, REQUEST_QUEUE};
use crate::{
    ApiType, ClientConfig, Command, Handler, Resource, Source, StreamConfig, Update, XdsError,
    TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_SECRET,
};

/// Events queued from stream and file tasks; they wait (and so stop reading their streams)
/// while the client task is busy applying an update.
const EVENT_QUEUE: usize = 64;
/// Envoy's `kProtobufErrMsgLen`: NACK messages travel in gRPC trailers (8 KiB by default).
const MAX_ERROR_MESSAGE: usize = 4096;
/// `google.rpc.Code.INTERNAL`, what Envoy puts in every NACK.
const NACK_CODE: i32 = 13;
const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";
/// Envoy's default `user_agent_name`.
const USER_AGENT_NAME: &str = "envoy";

const CDS: usize = 0;
const EDS: usize = 1;
const LDS: usize = 2;
/// Secrets asked for on ADS: by name, subscribed whenever a name is needed (not part of the
/// CDS → EDS → LDS start order; clusters and listeners warm until theirs arrive).
const SDS: usize = 3;

/// Every xDS resource carries its name in field 1 (`Listener.name`, `Cluster.name`,
/// `ClusterLoadAssignment.cluster_name`); prost skips the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name of an encoded xDS resource (empty when it does not decode).
pub(crate) fn resource_name(value: &[u8]) -> String {
    NameOnly::decode(value).map(|n| n.name).unwrap_or_default()
}

/// Envoy's `truncateGrpcStatusMessage`.
fn truncate_message(message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let mut cut = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...(truncated)", &message[..cut])
}

pub(crate) fn nack_status(message: String) -> RpcStatus {
    RpcStatus {
        code: NACK_CODE,
        message: truncate_message(message),
        details: Vec::new(),
    }
}

enum Origin {
    Grpc(usize),
    File {
        path: std::path::PathBuf,
        dir: Option<std::path::PathBuf>,
    },
    None,
}

struct TypeState {
    type_url: &'static str,
    origin: Origin,
    initial_fetch_timeout: Duration,
    /// LDS and CDS only; EDS stats are per cluster and belong to the handler.
    stats: Option<SubscriptionStats>,
    started: bool,
    /// LDS/CDS: the legacy wildcard (no names). EDS: by name.
    wildcard: bool,
    names: BTreeSet<String>,
    /// Last accepted `version_info` (kept on NACK).
    version: String,
    /// Nonce of the last response on the current stream.
    nonce: String,
    /// Delta: name → version of what we hold (sent as `initial_resource_versions`).
    known: BTreeMap<String, String>,
    /// Delta: the names the server has from us on the current stream.
    sent_names: BTreeSet<String>,
    initial_done: bool,
    deadline: Option<Instant>,
    /// EDS: names of the initial subscription not answered yet.
    awaiting: BTreeSet<String>,
    /// File sources: the last good contents (EDS re-filters them when names change).
    last_file: Option<DiscoveryFile>,
}

impl TypeState {
    fn new(type_url: &'static str, origin: Origin, timeout: Duration) -> Self {
        Self {
            type_url,
            origin,
            initial_fetch_timeout: timeout,
            stats: None,
            started: false,
            wildcard: type_url != TYPE_ENDPOINT && type_url != TYPE_SECRET,
            names: BTreeSet::new(),
            version: String::new(),
            nonce: String::new(),
            known: BTreeMap::new(),
            sent_names: BTreeSet::new(),
            initial_done: false,
            deadline: None,
            awaiting: BTreeSet::new(),
            last_file: None,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct TransportState {
    config: StreamConfig,
    service: Service,
    stats: ControlPlaneStats,
    running: bool,
    tx: Option<Tx>,
    /// The current stream has carried its first request (node-on-first-message).
    first_sent: bool,
    /// Types in subscription order (the order a reconnect resends them in).
    types: Vec<usize>,
}

struct Client {
    node: Node,
    handler: Arc<dyn Handler>,
    types: Vec<TypeState>,
    transports: Vec<TransportState>,
    events: mpsc::Sender<Event>,
    channels: Vec<tonic::transport::Channel>,
}

pub(crate) fn start(
    config: ClientConfig,
    handler: Arc<dyn Handler>,
    store: &redvoy_stats::Store,
    commands: mpsc::Receiver<Command>,
) -> Result<tokio::task::JoinHandle<()>, XdsError> {
    let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
    let mut transports = Vec::new();
    let mut channels = Vec::new();
    let ads = match &config.ads {
        Some(ads) => {
            channels.push(transport::channel(&ads.target, &ads.connection)?);
            transports.push(TransportState {
                config: ads.clone(),
                service: Service::Aggregated,
                stats: ControlPlaneStats::new(store, ""),
                running: false,
                tx: None,
                first_sent: false,
                types: Vec::new(),
            });
            Some(0)
        }
        None => None,
    };
    let sources = [
        (TYPE_CLUSTER, &config.cds, config.cds_initial_fetch_timeout),
        (TYPE_ENDPOINT, &config.eds, config.eds_initial_fetch_timeout),
        (TYPE_LISTENER, &config.lds, config.lds_initial_fetch_timeout),
        // Each secret's wait is its context's (see redvoy-tls); none here.
        (TYPE_SECRET, &config.sds, Duration::ZERO),
    ];
    let mut types = Vec::new();
    for (type_url, source, timeout) in sources {
        let prefix = match type_url {
            TYPE_CLUSTER => Some("cluster_manager.cds"),
            TYPE_LISTENER => Some("listener_manager.lds"),
            _ => None,
        };
        let origin = match source {
            Source::Ads => Origin::Grpc(ads.ok_or(XdsError::NoAdsConfig)?),
            Source::Stream(stream) => {
                channels.push(transport::channel(&stream.target, &stream.connection)?);
                transports.push(TransportState {
                    config: stream.clone(),
                    service: match type_url {
                        TYPE_CLUSTER => Service::Clusters,
                        TYPE_LISTENER => Service::Listeners,
                        _ => Service::Endpoints,
                    },
                    stats: ControlPlaneStats::new(store, prefix.unwrap_or("cluster.eds")),
                    running: false,
                    tx: None,
                    first_sent: false,
                    types: Vec::new(),
                });
                Origin::Grpc(transports.len() - 1)
            }
            Source::Path(path, dir) => Origin::File {
                path: path.clone(),
                dir: dir.clone(),
            },
            Source::None => Origin::None,
        };
        let mut state = TypeState::new(type_url, origin, timeout);
        if !matches!(state.origin, Origin::None) {
            state.stats = prefix.map(|p| SubscriptionStats::new(store, p));
        }
        types.push(state);
    }
    let client = Client {
        node: envoy_node(&config.node),
        handler,
        types,
        transports,
        events,
        channels,
    };
    Ok(tokio::spawn(client.run(event_rx, commands)))
}

/// The node as sent: the bootstrap's, with Envoy's own defaults for the user agent fields
/// (what `/config_dump` shows too). Everything else, metadata included, goes out unchanged.
pub(crate) fn envoy_node(encoded: &Bytes) -> Node {
    let mut node = Node::decode(encoded.as_ref()).unwrap_or_else(|e| {
        warn!("xDS: the encoded node does not decode ({e}); sending an empty node");
        Node::default()
    });
    if node.user_agent_name.is_empty() {
        node.user_agent_name = USER_AGENT_NAME.to_string();
    }
    if node.user_agent_version_type.is_none() {
        let (major_number, minor_number, patch) = redvoy_config::ENVOY_COMPAT_VERSION;
        node.user_agent_version_type =
            Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
                version: Some(SemanticVersion {
                    major_number,
                    minor_number,
                    patch,
                }),
                metadata: None,
            }));
    }
    node
}

impl Client {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        self.advance().await;
        loop {
            let deadline = self.types.iter().filter_map(|t| t.deadline).min();
            tokio::select! {
                Some(event) = events.recv() => self.on_event(event).await,
                Some(command) = commands.recv() => match command {
                    Command::EdsNamesChanged => self.refresh_eds_names().await,
                    Command::SdsNamesChanged => self.refresh_sds_names().await,
                    Command::ClustersWarmed => self.advance().await,
                },
                _ = sleep_until(deadline), if deadline.is_some() => self.on_timeouts().await,
            }
        }
    }

    // --- start order -------------------------------------------------------------------

    /// Starts what the order allows: CDS first; EDS (if any name is needed) once CDS's
    /// initial fetch is done; LDS once EDS's is done and the clusters are warm. A type without a
    /// source is done at once.
    async fn advance(&mut self) {
        if !self.types[SDS].started {
            self.refresh_sds_names().await;
        }
        if !self.types[CDS].started {
            self.start_type(CDS).await;
        }
        if !self.types[CDS].initial_done {
            return;
        }
        if !self.types[EDS].started && !self.types[EDS].initial_done {
            let names: BTreeSet<String> = self.handler.eds_names().into_iter().collect();
            if names.is_empty() || matches!(self.types[EDS].origin, Origin::None) {
                self.initial_fetch_done(EDS, false);
            } else {
                self.types[EDS].names = names.clone();
                self.types[EDS].awaiting = names;
                self.start_type(EDS).await;
            }
        }
        if self.types[EDS].initial_done && !self.types[LDS].started && self.handler.clusters_warm()
        {
            self.start_type(LDS).await;
        }
    }

    async fn start_type(&mut self, ti: usize) {
        let t = &mut self.types[ti];
        t.started = true;
        // A gRPC subscription counts its start as an attempt; Envoy's filesystem subscription
        // counts only its reads.
        if !matches!(t.origin, Origin::File { .. }) {
            if let Some(stats) = &t.stats {
                stats.update_attempt.inc();
            }
        }
        match &t.origin {
            Origin::None => self.initial_fetch_done(ti, false),
            Origin::File { path, dir } => {
                tokio::spawn(file::watch(
                    ti,
                    path.clone(),
                    dir.clone(),
                    self.events.clone(),
                ));
            }
            Origin::Grpc(tr) => {
                let tr = *tr;
                if !t.initial_fetch_timeout.is_zero() {
                    t.deadline = Some(Instant::now() + t.initial_fetch_timeout);
                }
                self.transports[tr].types.push(ti);
                if self.transports[tr].running {
                    self.send_initial(tr, ti).await;
                } else {
                    self.spawn_transport(tr);
                }
            }
        }
    }

    fn spawn_transport(&mut self, tr: usize) {
        let transport = &mut self.transports[tr];
        transport.running = true;
        let channel = self.channels[tr].clone();
        let events = self.events.clone();
        let service = transport.service;
        match transport.config.api_type {
            ApiType::Grpc => {
                tokio::spawn(transport::run::<transport::Sotw>(
                    tr, channel, service, events,
                ));
            }
            ApiType::DeltaGrpc => {
                tokio::spawn(transport::run::<transport::Delta>(
                    tr, channel, service, events,
                ));
            }
        }
    }

    fn initial_fetch_done(&mut self, ti: usize, timed_out: bool) {
        let t = &mut self.types[ti];
        t.deadline = None;
        if t.initial_done {
            return;
        }
        t.initial_done = true;
        t.awaiting.clear();
        self.handler.on_initial_fetch_done(t.type_url, timed_out);
    }

    async fn on_timeouts(&mut self) {
        let now = Instant::now();
        for ti in 0..self.types.len() {
            let t = &mut self.types[ti];
            if t.deadline.is_some_and(|d| d <= now) {
                warn!("xDS: initial fetch timed out for {}", t.type_url);
                if let Some(stats) = &t.stats {
                    stats.init_fetch_timeout.inc();
                    stats.update_attempt.inc();
                }
                self.initial_fetch_done(ti, true);
            }
        }
        self.advance().await;
    }

    /// Subscribes SDS on ADS to the secrets now needed (any time: secrets do not wait for
    /// the start order).
    async fn refresh_sds_names(&mut self) {
        let names: BTreeSet<String> = self.handler.sds_names().into_iter().collect();
        let t = &mut self.types[SDS];
        if matches!(t.origin, Origin::None) || t.names == names {
            return;
        }
        t.known.retain(|n, _| names.contains(n));
        t.names = names;
        if !t.started {
            if t.names.is_empty() {
                return;
            }
            self.start_type(SDS).await;
            return;
        }
        if let Origin::Grpc(tr) = &self.types[SDS].origin {
            let tr = *tr;
            self.send_names(tr, SDS).await;
        }
    }

    /// After a CDS update (or on request): subscribe EDS to the names now needed.
    async fn refresh_eds_names(&mut self) {
        let names: BTreeSet<String> = self.handler.eds_names().into_iter().collect();
        let t = &mut self.types[EDS];
        if matches!(t.origin, Origin::None) || (t.started && t.names == names) {
            return;
        }
        if !t.started {
            // Before CDS finished its initial fetch EDS waits for `advance`; after it, the
            // first names start the subscription.
            if !self.types[CDS].initial_done || names.is_empty() {
                return;
            }
            self.types[EDS].names = names;
            self.start_type(EDS).await;
            return;
        }
        t.awaiting.retain(|n| names.contains(n));
        t.known.retain(|n, _| names.contains(n));
        t.names = names;
        let awaiting_done = !t.initial_done && t.awaiting.is_empty();
        match &t.origin {
            Origin::Grpc(tr) => {
                let tr = *tr;
                self.send_names(tr, EDS).await;
            }
            Origin::File { .. } => {
                if let Some(file) = self.types[EDS].last_file.clone() {
                    self.apply_file(EDS, file);
                }
            }
            Origin::None => {}
        }
        if awaiting_done {
            self.initial_fetch_done(EDS, false);
            self.advance().await;
        }
    }

    // --- events ------------------------------------------------------------------------

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Opening { transport, tx } => self.on_opening(transport, tx).await,
            Event::Up { transport } => {
                debug!("xDS: stream {transport} established");
                self.transports[transport].stats.connected_state.set(1);
            }
            Event::Down { transport, reason } => self.on_down(transport, &reason),
            Event::Sotw {
                transport,
                response,
            } => self.on_sotw(transport, *response).await,
            Event::Delta {
                transport,
                response,
            } => self.on_delta(transport, *response).await,
            Event::File { type_index, result } => self.on_file(type_index, *result).await,
        }
    }

    /// A new stream: nonces are gone; resend every subscription in subscription order, with
    /// the versions we hold.
    async fn on_opening(&mut self, tr: usize, tx: Tx) {
        let transport = &mut self.transports[tr];
        transport.tx = Some(tx);
        transport.first_sent = false;
        transport.stats.pending_requests.set(0);
        let order = transport.types.clone();
        for &ti in &order {
            let t = &mut self.types[ti];
            t.nonce.clear();
            t.sent_names.clear();
        }
        for ti in order {
            self.send_initial(tr, ti).await;
        }
    }

    fn on_down(&mut self, tr: usize, reason: &str) {
        let transport = &mut self.transports[tr];
        let was_connected = transport.stats.connected_state.value() == 1;
        transport.tx = None;
        transport.stats.connected_state.set(0);
        if was_connected {
            info!("xDS: config stream closed: {reason}");
        } else {
            debug!("xDS: config stream failed: {reason}");
        }
        for &ti in &transport.types {
            if let Some(stats) = &self.types[ti].stats {
                stats.update_failure.inc();
                stats.update_attempt.inc();
            }
        }
    }

    // --- SotW --------------------------------------------------------------------------

    async fn on_sotw(&mut self, tr: usize, response: DiscoveryResponse) {
        let Some(ti) = self.type_on(tr, &response.type_url) else {
            warn!(
                "xDS: ignoring a response for type URL {} without subscription",
                response.type_url
            );
            return;
        };
        self.note_control_plane(tr, response.control_plane.as_ref().map(|c| &c.identifier));
        let t = &mut self.types[ti];
        t.nonce = response.nonce.clone();
        if !t.wildcard && t.names.is_empty() {
            // Nothing watched (every EDS name was dropped): an empty response is accepted
            // silently; resources are refused by re-sending the old version, as Envoy does.
            if response.resources.is_empty() {
                t.version = response.version_info;
            } else {
                warn!("xDS: ignoring unwatched type URL {}", t.type_url);
                let request = self.sotw_request(tr, ti, None);
                self.send_sotw(tr, request).await;
            }
            return;
        }
        let version_info = response.version_info.clone();
        let result = match self.sotw_update(ti, response) {
            Ok(update) => {
                let delivered: Vec<String> =
                    update.resources.iter().map(|r| r.name.clone()).collect();
                let result = self.apply(ti, update, false);
                self.note_delivered(ti, &delivered);
                result
            }
            Err(e) => {
                self.rejected(ti, &e);
                if ti == EDS {
                    // Envoy's clusters finish warming on a rejected EDS response too.
                    self.types[EDS].awaiting.clear();
                }
                Err(e)
            }
        };
        if result.is_ok() {
            self.types[ti].version = version_info;
        }
        self.after_update(ti).await;
        let request = self.sotw_request(tr, ti, result.err());
        self.send_sotw(tr, request).await;
    }

    /// The response as an update: resources unwrapped from `Resource` wrappers, heartbeats
    /// dropped, EDS narrowed to the names we asked for.
    fn sotw_update(&self, ti: usize, response: DiscoveryResponse) -> Result<Update, String> {
        let t = &self.types[ti];
        let mut resources = Vec::with_capacity(response.resources.len());
        for any in response.resources {
            let (name, value) = if any.type_url == RESOURCE_WRAPPER {
                let wrapper = PbResource::decode(any.value.as_slice())
                    .map_err(|e| format!("invalid Resource wrapper: {e}"))?;
                match wrapper.resource {
                    // A TTL heartbeat: nothing to apply.
                    None => continue,
                    Some(inner) => (wrapper.name, inner.value),
                }
            } else if any.type_url != t.type_url {
                return Err(mismatch(&any, t.type_url));
            } else {
                (resource_name(&any.value), any.value)
            };
            if t.wildcard || t.names.contains(&name) {
                resources.push(Resource {
                    name,
                    version: response.version_info.clone(),
                    value: Bytes::from(value),
                });
            }
        }
        Ok(Update {
            type_url: t.type_url.to_string(),
            version_info: response.version_info,
            state_of_the_world: t.wildcard,
            resources,
            removed: Vec::new(),
        })
    }

    fn sotw_request(&mut self, tr: usize, ti: usize, error: Option<String>) -> DiscoveryRequest {
        let node = self.node_for(tr);
        let t = &self.types[ti];
        DiscoveryRequest {
            version_info: t.version.clone(),
            node,
            resource_names: if t.wildcard {
                Vec::new()
            } else {
                t.names.iter().cloned().collect()
            },
            type_url: t.type_url.to_string(),
            response_nonce: t.nonce.clone(),
            error_detail: error.map(nack_status),
            ..Default::default()
        }
    }

    async fn send_sotw(&mut self, tr: usize, request: DiscoveryRequest) {
        let transport = &mut self.transports[tr];
        let Some(Tx::Sotw(tx)) = &transport.tx else {
            return; // no stream: the next one resends everything
        };
        if tx.send(request).await.is_err() {
            transport.tx = None;
            return;
        }
        transport
            .stats
            .pending_requests
            .set((REQUEST_QUEUE - tx.capacity()) as u64);
    }

    // --- Delta -------------------------------------------------------------------------

    async fn on_delta(&mut self, tr: usize, response: DeltaDiscoveryResponse) {
        let Some(ti) = self.type_on(tr, &response.type_url) else {
            warn!(
                "xDS: ignoring a delta response for type URL {} without subscription",
                response.type_url
            );
            return;
        };
        self.note_control_plane(tr, response.control_plane.as_ref().map(|c| &c.identifier));
        let nonce = response.nonce.clone();
        if let Some(stats) = &self.types[ti].stats {
            stats.update_attempt.inc();
        }
        let result = match self.delta_update(ti, response) {
            Ok((update, versions)) => {
                let mut delivered: Vec<String> =
                    update.resources.iter().map(|r| r.name.clone()).collect();
                delivered.extend(update.removed.iter().cloned());
                let removed = update.removed.clone();
                let version_info = update.version_info.clone();
                let result = self.apply(ti, update, true);
                self.note_delivered(ti, &delivered);
                if result.is_ok() {
                    let t = &mut self.types[ti];
                    t.version = version_info;
                    for name in removed {
                        t.known.remove(&name);
                    }
                    t.known.extend(versions);
                }
                result
            }
            Err(e) => {
                self.rejected(ti, &e);
                Err(e)
            }
        };
        self.after_update(ti).await;
        let node = self.node_for(tr);
        let request = DeltaDiscoveryRequest {
            node,
            type_url: self.types[ti].type_url.to_string(),
            response_nonce: nonce,
            error_detail: result.err().map(nack_status),
            ..Default::default()
        };
        self.send_delta(tr, request).await;
    }

    #[allow(clippy::type_complexity)]
    fn delta_update(
        &self,
        ti: usize,
        response: DeltaDiscoveryResponse,
    ) -> Result<(Update, Vec<(String, String)>), String> {
        let t = &self.types[ti];
        let mut resources = Vec::with_capacity(response.resources.len());
        let mut versions = Vec::with_capacity(response.resources.len());
        for r in response.resources {
            let Some(any) = r.resource else {
                continue; // a TTL heartbeat
            };
            if any.type_url != t.type_url {
                return Err(mismatch(&any, t.type_url));
            }
            let name = if r.name.is_empty() {
                resource_name(&any.value)
            } else {
                r.name
            };
            if !t.wants(&name) {
                continue;
            }
            versions.push((name.clone(), r.version.clone()));
            resources.push(Resource {
                name,
                version: r.version,
                value: Bytes::from(any.value),
            });
        }
        let removed: Vec<String> = response
            .removed_resources
            .into_iter()
            .chain(response.removed_resource_names.into_iter().map(|n| n.name))
            .filter(|n| t.wants(n) || t.known.contains_key(n))
            .collect();
        Ok((
            Update {
                type_url: t.type_url.to_string(),
                version_info: response.system_version_info,
                state_of_the_world: false,
                resources,
                removed,
            },
            versions,
        ))
    }

    async fn send_delta(&mut self, tr: usize, request: DeltaDiscoveryRequest) {
        let transport = &mut self.transports[tr];
        let Some(Tx::Delta(tx)) = &transport.tx else {
            return;
        };
        if tx.send(request).await.is_err() {
            transport.tx = None;
            return;
        }
        transport
            .stats
            .pending_requests
            .set((REQUEST_QUEUE - tx.capacity()) as u64);
    }

    // --- requests ----------------------------------------------------------------------

    /// The first request of a type on a stream (or when the type starts on an open one).
    async fn send_initial(&mut self, tr: usize, ti: usize) {
        if self.transports[tr].tx.is_none() {
            return;
        }
        match self.transports[tr].config.api_type {
            ApiType::Grpc => {
                let request = self.sotw_request(tr, ti, None);
                self.send_sotw(tr, request).await;
            }
            ApiType::DeltaGrpc => {
                let t = &self.types[ti];
                if !t.wildcard && t.names.is_empty() {
                    // An empty first request would read as the legacy wildcard.
                    return;
                }
                let subscribe: Vec<String> = if t.wildcard {
                    Vec::new()
                } else {
                    t.names.iter().cloned().collect()
                };
                let initial_resource_versions = t
                    .known
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let type_url = t.type_url.to_string();
                self.types[ti].sent_names = self.types[ti].names.clone();
                let node = self.node_for(tr);
                let request = DeltaDiscoveryRequest {
                    node,
                    type_url,
                    resource_names_subscribe: subscribe,
                    initial_resource_versions,
                    ..Default::default()
                };
                self.send_delta(tr, request).await;
            }
        }
    }

    /// A change of names: SotW resends the full list (empty = unsubscribe), Delta the
    /// difference.
    async fn send_names(&mut self, tr: usize, ti: usize) {
        match self.transports[tr].config.api_type {
            ApiType::Grpc => {
                let request = self.sotw_request(tr, ti, None);
                self.send_sotw(tr, request).await;
            }
            ApiType::DeltaGrpc => {
                let t = &self.types[ti];
                if t.sent_names.is_empty() && !t.names.is_empty() {
                    // Nothing subscribed on this stream yet: a first request (never an
                    // empty one, which would be a wildcard).
                    self.send_initial(tr, ti).await;
                    return;
                }
                let subscribe: Vec<String> = t.names.difference(&t.sent_names).cloned().collect();
                let unsubscribe: Vec<String> = t.sent_names.difference(&t.names).cloned().collect();
                if subscribe.is_empty() && unsubscribe.is_empty() {
                    return;
                }
                let type_url = t.type_url.to_string();
                self.types[ti].sent_names = self.types[ti].names.clone();
                let node = self.node_for(tr);
                let request = DeltaDiscoveryRequest {
                    node,
                    type_url,
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                };
                self.send_delta(tr, request).await;
            }
        }
    }

    /// The node, when this request must carry it.
    fn node_for(&mut self, tr: usize) -> Option<Node> {
        let transport = &mut self.transports[tr];
        let first = !transport.first_sent;
        if transport.tx.is_some() {
            transport.first_sent = true;
        }
        (first || !transport.config.set_node_on_first_message_only).then(|| self.node.clone())
    }

    // --- applying ----------------------------------------------------------------------

    /// Hands an update to the handler and keeps the stats.
    fn apply(&mut self, ti: usize, update: Update, delta: bool) -> Result<(), String> {
        let version_info = update.version_info.clone();
        let count = update.resources.len();
        let started = Instant::now();
        let result = self.handler.on_update(update);
        let t = &self.types[ti];
        match &result {
            Ok(()) => {
                debug!(
                    "xDS: config for {} accepted with {count} resources with version {version_info}",
                    t.type_url
                );
                if let Some(stats) = &t.stats {
                    stats.accepted(&version_info, started.elapsed());
                    if !delta {
                        stats.update_attempt.inc();
                    }
                }
            }
            Err(e) => self.rejected(ti, e),
        }
        result
    }

    fn rejected(&self, ti: usize, error: &str) {
        let t = &self.types[ti];
        warn!("xDS: config for {} rejected: {error}", t.type_url);
        if let Some(stats) = &t.stats {
            stats.update_rejected.inc();
            stats.update_attempt.inc();
        }
    }

    /// EDS initial fetch: done once every name of the initial subscription was answered.
    fn note_delivered(&mut self, ti: usize, names: &[String]) {
        if ti != EDS {
            return;
        }
        let t = &mut self.types[EDS];
        for n in names {
            t.awaiting.remove(n);
        }
    }

    /// What follows any update (accepted or not), before its ACK/NACK: a CDS update's EDS
    /// request (Envoy pauses EDS while applying CDS, then sends one combined request), then
    /// the end of the type's initial fetch and whatever it unblocks.
    async fn after_update(&mut self, ti: usize) {
        if ti == CDS && self.types[CDS].initial_done {
            self.refresh_eds_names().await;
        }
        if ti == CDS || ti == LDS {
            // The clusters and listeners just built may name new secrets.
            self.refresh_sds_names().await;
        }
        let t = &self.types[ti];
        let done = ti != EDS || t.awaiting.is_empty();
        if !t.initial_done && done {
            self.initial_fetch_done(ti, false);
            self.advance().await;
        }
    }

    async fn on_file(&mut self, ti: usize, result: Result<DiscoveryFile, String>) {
        if let Some(stats) = &self.types[ti].stats {
            stats.update_attempt.inc();
        }
        match result {
            Err(e) => {
                warn!("xDS: filesystem config update failure: {e}");
                if let Some(stats) = &self.types[ti].stats {
                    stats.update_failure.inc();
                }
            }
            Ok(file) => {
                if self.apply_file(ti, file.clone()) {
                    self.types[ti].last_file = Some(file);
                }
            }
        }
        self.after_update(ti).await;
    }

    /// Applies a file's contents; false when rejected (the last good contents stay).
    fn apply_file(&mut self, ti: usize, file: DiscoveryFile) -> bool {
        let t = &self.types[ti];
        let mut resources = Vec::with_capacity(file.resources.len());
        for r in file.resources {
            if r.type_url != t.type_url {
                let e = format!(
                    "{} does not match the message-wide type URL {} in DiscoveryResponse",
                    r.type_url, t.type_url
                );
                warn!("xDS: filesystem config for {} rejected: {e}", t.type_url);
                if let Some(stats) = &t.stats {
                    stats.update_rejected.inc();
                }
                return false;
            }
            if t.wants(&r.name) {
                resources.push(Resource {
                    name: r.name,
                    version: file.version_info.clone(),
                    value: r.value,
                });
            }
        }
        let delivered: Vec<String> = resources.iter().map(|r| r.name.clone()).collect();
        let update = Update {
            type_url: t.type_url.to_string(),
            version_info: file.version_info.clone(),
            state_of_the_world: t.wildcard,
            resources,
            removed: Vec::new(),
        };
        let started = Instant::now();
        let result = self.handler.on_update(update);
        self.note_delivered(ti, &delivered);
        let t = &mut self.types[ti];
        match result {
            Ok(()) => {
                t.version = file.version_info.clone();
                if let Some(stats) = &t.stats {
                    stats.accepted(&file.version_info, started.elapsed());
                }
                true
            }
            Err(e) => {
                warn!("xDS: filesystem config for {} rejected: {e}", t.type_url);
                if let Some(stats) = &t.stats {
                    stats.update_rejected.inc();
                }
                false
            }
        }
    }

    // --- helpers -----------------------------------------------------------------------

    /// The started type with this URL on this transport.
    fn type_on(&self, tr: usize, type_url: &str) -> Option<usize> {
        self.transports[tr]
            .types
            .iter()
            .copied()
            .find(|&ti| self.types[ti].type_url == type_url)
    }

    fn note_control_plane(&self, tr: usize, identifier: Option<&String>) {
        if let Some(id) = identifier {
            self.transports[tr].stats.identifier.set(id.clone());
        }
    }
}

fn mismatch(any: &Any, type_url: &str) -> String {
    format!(
        "{} does not match the message-wide type URL {type_url} in DiscoveryResponse",
        any.type_url
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_nack_messages_are_truncated_like_envoy() {
        let short = "x".repeat(MAX_ERROR_MESSAGE);
        assert_eq!(truncate_message(short.clone()), short);
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let t = truncate_message(long);
        assert!(t.ends_with("...(truncated)"));
        assert_eq!(t.len(), MAX_ERROR_MESSAGE + "...(truncated)".len());
    }

    #[test]
    fn node_gets_envoy_user_agent_defaults_only_when_unset() {
        let mut n = Node {
            id: "sidecar~1.2.3.4~p.ns~ns.svc.cluster.local".into(),
            ..Default::default()
        };
        let sent = envoy_node(&Bytes::from(n.encode_to_vec()));
        assert_eq!(sent.user_agent_name, "envoy");
        assert_eq!(sent.id, n.id);
        n.user_agent_name = "custom".into();
        n.user_agent_version_type = Some(UserAgentVersionType::UserAgentVersion("9".into()));
        let sent = envoy_node(&Bytes::from(n.encode_to_vec()));
        assert_eq!(sent, n);
    }
}
