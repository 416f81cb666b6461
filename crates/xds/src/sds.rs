//! One secret from a `SecretDiscoveryService` stream of its own, as Envoy subscribes to a
//! secret whose `sds_config` is an `api_config_source` (Istio's agent serves them on a Unix
//! socket, cluster `sds-grpc`): one stream per secret name, State of the World or Delta, the
//! secret's `sds.<name>.*` stats, ACK/NACK with versions and nonces, reconnect with backoff.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::client::{envoy_node, nack_status, resource_name};
use crate::stats::{ControlPlaneStats, SubscriptionStats};
use crate::transport::{self, Event, Service, Tx};
use crate::{ApiType, StreamConfig, XdsError, TYPE_SECRET};

/// Takes the secret's new value (the bytes of an `envoy.extensions.transport_sockets.tls.v3.
/// Secret`); `Err(text)` makes the update a NACK.
pub trait SecretHandler: Send + Sync + 'static {
    fn on_secret(&self, name: &str, value: Bytes, version: &str) -> Result<(), String>;
}

/// A running subscription; dropping it closes its stream.
pub struct SecretSubscription {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SecretSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to secret `name` on `stream`. Fails only on a bad target; connection problems
/// are retried forever.
pub fn subscribe_secret(
    stream: &StreamConfig,
    node: &Bytes,
    name: &str,
    handler: Arc<dyn SecretHandler>,
    store: &redvoy_stats::Store,
) -> Result<SecretSubscription, XdsError> {
    let channel = transport::channel(&stream.target, &stream.connection)?;
    let (events_tx, events) = mpsc::channel(transport::REQUEST_QUEUE);
    let prefix = format!("sds.{name}");
    let stats = SubscriptionStats::new(store, &prefix);
    stats.update_attempt.inc();
    let state = Subscription {
        name: name.to_owned(),
        node: envoy_node(node),
        set_node_on_first_message_only: stream.set_node_on_first_message_only,
        handler,
        stats,
        control_plane: ControlPlaneStats::new(store, &prefix),
        version: String::new(),
        tx: None,
        first_sent: false,
    };
    let api_type = stream.api_type;
    let task = tokio::spawn(async move {
        match api_type {
            ApiType::Grpc => {
                tokio::spawn(transport::run::<transport::Sotw>(
                    0,
                    channel,
                    Service::Secrets,
                    events_tx,
                ));
            }
            ApiType::DeltaGrpc => {
                tokio::spawn(transport::run::<transport::Delta>(
                    0,
                    channel,
                    Service::Secrets,
                    events_tx,
                ));
            }
        }
        state.run(events).await;
    });
    Ok(SecretSubscription { task })
}

struct Subscription {
    name: String,
    node: envoy_types::pb::envoy::config::core::v3::Node,
    set_node_on_first_message_only: bool,
    handler: Arc<dyn SecretHandler>,
    stats: SubscriptionStats,
    control_plane: ControlPlaneStats,
    /// The last accepted version (SotW `version_info`, Delta the resource's version).
    version: String,
    tx: Option<Tx>,
    first_sent: bool,
}

impl Subscription {
    /// Consumes the stream's events until the stream task is gone (the subscription dropped).
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Opening { tx, .. } => {
                    self.tx = Some(tx);
                    self.first_sent = false;
                    self.send_initial().await;
                }
                Event::Up { .. } => self.control_plane.connected_state.set(1),
                Event::Down { reason, .. } => {
                    self.control_plane.connected_state.set(0);
                    self.tx = None;
                    self.stats.update_failure.inc();
                    self.stats.update_attempt.inc();
                    debug!(secret = %self.name, %reason, "SDS stream down");
                }
                Event::Sotw { response, .. } => self.on_sotw(*response).await,
                Event::Delta { response, .. } => self.on_delta(*response).await,
                Event::File { .. } => {}
            }
        }
    }

    fn node(&mut self) -> Option<envoy_types::pb::envoy::config::core::v3::Node> {
        let first = !self.first_sent;
        self.first_sent = true;
        (first || !self.set_node_on_first_message_only).then(|| self.node.clone())
    }

    async fn send_initial(&mut self) {
        match &self.tx {
            Some(Tx::Sotw(_)) => {
                let request = DiscoveryRequest {
                    version_info: self.version.clone(),
                    node: self.node(),
                    resource_names: vec![self.name.clone()],
                    type_url: TYPE_SECRET.to_owned(),
                    ..Default::default()
                };
                self.send_sotw(request).await;
            }
            Some(Tx::Delta(_)) => {
                let mut initial = std::collections::HashMap::new();
                if !self.version.is_empty() {
                    initial.insert(self.name.clone(), self.version.clone());
                }
                let request = DeltaDiscoveryRequest {
                    node: self.node(),
                    type_url: TYPE_SECRET.to_owned(),
                    resource_names_subscribe: vec![self.name.clone()],
                    initial_resource_versions: initial,
                    ..Default::default()
                };
                self.send_delta(request).await;
            }
            None => {}
        }
    }

    async fn send_sotw(&mut self, request: DiscoveryRequest) {
        if let Some(Tx::Sotw(tx)) = &self.tx {
            if tx.send(request).await.is_err() {
                self.tx = None;
            }
        }
    }

    async fn send_delta(&mut self, request: DeltaDiscoveryRequest) {
        if let Some(Tx::Delta(tx)) = &self.tx {
            if tx.send(request).await.is_err() {
                self.tx = None;
            }
        }
    }

    /// Hands the secret's bytes to the handler; the stats as Envoy keeps them.
    fn apply(&mut self, value: Bytes, version: &str) -> Result<(), String> {
        let started = Instant::now();
        self.stats.update_attempt.inc();
        match self.handler.on_secret(&self.name, value, version) {
            Ok(()) => {
                self.stats.accepted(version, started.elapsed());
                self.version = version.to_owned();
                Ok(())
            }
            Err(e) => {
                warn!(secret = %self.name, error = %e, "SDS update rejected");
                self.stats.update_rejected.inc();
                Err(e)
            }
        }
    }

    async fn on_sotw(&mut self, response: DiscoveryResponse) {
        let ours: Option<&Any> = response
            .resources
            .iter()
            .find(|any| resource_name(&any.value) == self.name);
        let result = match ours {
            Some(any) if any.type_url != TYPE_SECRET => Err(format!(
                "type URL {} does not match the secret type {TYPE_SECRET}",
                any.type_url
            )),
            Some(any) => self.apply(Bytes::from(any.value.clone()), &response.version_info),
            // An empty response keeps the last secret (Envoy does not remove a secret in
            // use).
            None => Ok(()),
        };
        let request = DiscoveryRequest {
            version_info: self.version.clone(),
            node: self.node(),
            resource_names: vec![self.name.clone()],
            type_url: TYPE_SECRET.to_owned(),
            response_nonce: response.nonce,
            error_detail: result.err().map(nack_status),
            ..Default::default()
        };
        self.send_sotw(request).await;
    }

    async fn on_delta(&mut self, response: DeltaDiscoveryResponse) {
        let ours = response.resources.iter().find(|r| r.name == self.name);
        let result = match ours.and_then(|r| r.resource.as_ref().map(|any| (r, any))) {
            Some((_, any)) if any.type_url != TYPE_SECRET => Err(format!(
                "type URL {} does not match the secret type {TYPE_SECRET}",
                any.type_url
            )),
            Some((r, any)) => {
                let version = r.version.clone();
                self.apply(Bytes::from(any.value.clone()), &version)
            }
            None => {
                // A removal of the secret: accepted (Envoy keeps using the last value, and
                // counts the update).
                if response.removed_resources.contains(&self.name) {
                    self.stats.update_attempt.inc();
                    self.stats
                        .accepted(&response.system_version_info, std::time::Duration::ZERO);
                }
                Ok(())
            }
        };
        let request = DeltaDiscoveryRequest {
            node: self.node(),
            type_url: TYPE_SECRET.to_owned(),
            response_nonce: response.nonce,
            error_detail: result.err().map(nack_status),
            ..Default::default()
        };
        self.send_delta(request).await;
    }
}
