//! redvoy's xDS client: fetches listeners, clusters and endpoints from a control plane (or a
//! watched file) and hands them, still encoded, to a [`Handler`].
//!
//! Owns the transport protocol as Envoy 1.40 speaks it: State of the World and Delta, one
//! aggregated stream (ADS) or one stream per type, TCP or Unix-socket targets, the CDS → EDS →
//! LDS start order, ACK/NACK with exact versions and nonces, reconnect with jittered backoff
//! and resubscription with known versions, `initial_fetch_timeout`, and the `control_plane.*`,
//! `listener_manager.lds.*` and `cluster_manager.cds.*` statistics.
//!
//! Must not depend on the data path: it neither decodes resources into the config model nor
//! applies them (that is the handler's job), so a bad resource can only ever become a NACK.

#![forbid(unsafe_code)]

mod backoff;
mod client;
mod file;
mod sds;
mod stats;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use redvoy_config::model::ApiType;

pub const TYPE_LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const TYPE_CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const TYPE_ENDPOINT: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const TYPE_SECRET: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

pub use sds::{subscribe_secret, SecretHandler, SecretSubscription};

/// Where a gRPC stream connects (HTTP/2 plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port` (an IPv6 host in brackets).
    Tcp(String),
    /// A Unix socket path (`pipe.path`, how Istio's agent serves xDS).
    Unix(PathBuf),
}

impl Target {
    /// A `google_grpc.target_uri`: `host:port`, `dns:///host:port`, `dns:host:port`,
    /// `ipv4:addr:port`, `ipv6:[addr]:port`, `unix:path` or `unix:///abs/path`.
    pub fn from_google_grpc_uri(uri: &str) -> Result<Target, XdsError> {
        let bad = || XdsError::TargetUri(uri.to_string());
        if let Some(rest) = uri.strip_prefix("unix:") {
            // `unix:///abs` and `unix:/abs` are absolute, `unix:rel` relative (gRPC naming).
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let host_port = if let Some(rest) = uri.strip_prefix("dns:") {
            // `dns://authority/host:port`: the authority (a DNS server) is not used.
            match rest.strip_prefix("//") {
                Some(with_authority) => with_authority.split_once('/').ok_or_else(bad)?.1,
                None => rest,
            }
        } else if let Some(rest) = uri
            .strip_prefix("ipv4:")
            .or_else(|| uri.strip_prefix("ipv6:"))
        {
            // A list of addresses: the first one is enough for a single stream.
            rest.split(',').next().unwrap_or(rest)
        } else {
            uri
        };
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Tcp(host_port.to_string()))
            }
            _ => Err(bad()),
        }
    }
}

/// One gRPC stream: the bootstrap's `ads_config`, or a per-type `api_config_source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    pub target: Target,
    pub api_type: ApiType,
    pub set_node_on_first_message_only: bool,
    /// The gRPC cluster's `connect_timeout` and `upstream_connection_options.tcp_keepalive`.
    pub connection: ChannelOptions,
}

/// How the channel to the control plane connects: its cluster's settings (an `envoy_grpc`
/// cluster), or Envoy's defaults (a `google_grpc` target has no cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    pub tcp_keepalive: Option<redvoy_config::model::TcpKeepalive>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            // Envoy's default cluster `connect_timeout`.
            connect_timeout: Duration::from_secs(5),
            tcp_keepalive: None,
        }
    }
}

/// Where one resource type comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The shared ADS stream ([`ClientConfig::ads`]).
    Ads,
    /// A stream of its own (`ListenerDiscoveryService/StreamListeners` and the like).
    Stream(StreamConfig),
    /// A file holding a `DiscoveryResponse` (the file, and `watched_directory`).
    Path(PathBuf, Option<PathBuf>),
    /// Not configured.
    None,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `model::Node.encoded`: the whole `Node` proto, sent as is (except for Envoy's
    /// `user_agent_name` / `user_agent_build_version` defaults when unset).
    pub node: Bytes,
    /// Required when any source is [`Source::Ads`].
    pub ads: Option<StreamConfig>,
    pub cds: Source,
    pub lds: Source,
    /// From the clusters' `eds_cluster_config.eds_config` (the first one).
    pub eds: Source,
    /// Secrets whose `sds_config` is `ads` ([`Source::Ads`] when there is an ADS stream).
    pub sds: Source,
    /// Zero waits forever.
    pub cds_initial_fetch_timeout: Duration,
    pub lds_initial_fetch_timeout: Duration,
    pub eds_initial_fetch_timeout: Duration,
}

/// One resource of an update, still encoded (`Any.value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Delta: the resource's own version. SotW and files: the response's `version_info`.
    pub version: String,
    pub value: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub type_url: String,
    /// SotW `version_info` / Delta `system_version_info`.
    pub version_info: String,
    /// True for SotW (and file) LDS/CDS: `resources` is the full set, anything absent is
    /// removed. False for Delta and for EDS (which in SotW may carry any subset).
    pub state_of_the_world: bool,
    pub resources: Vec<Resource>,
    /// Delta `removed_resources`.
    pub removed: Vec<String>,
}

/// Called from the client task, one call at a time: while a call runs, no request goes out
/// and no response is read (which is what makes an update's ACK follow its application).
pub trait Handler: Send + Sync + 'static {
    /// Applies the valid resources; `Err(text)` makes it a NACK (code 13, `text` as
    /// `error_detail.message`) and keeps the type's version where it was.
    fn on_update(&self, update: Update) -> Result<(), String>;
    /// After a CDS update was applied: the EDS names now needed (sorted, deduplicated).
    fn eds_names(&self) -> Vec<String>;
    /// The secrets asked for on ADS (see [`XdsHandle::sds_names_changed`]).
    fn sds_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// The initial fetch of this type finished: its first response (accepted or not), its
    /// first file read, the expiry of `initial_fetch_timeout`, or right away when the type
    /// has no source (or, for EDS, when no name is needed once CDS finished). Called exactly
    /// once per type.
    fn on_initial_fetch_done(&self, type_url: &str, timed_out: bool);
    /// Whether the clusters of the initial CDS fetch are warm (endpoints, DNS answers, first
    /// health checks) or gave up waiting: LDS starts only then, as Envoy starts it after its
    /// cluster manager initialised. When it becomes true later, the handler calls
    /// [`XdsHandle::clusters_warmed`].
    fn clusters_warm(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("invalid google_grpc target_uri {0:?}")]
    TargetUri(String),
    #[error("a config source uses ADS but dynamic_resources has no ads_config")]
    NoAdsConfig,
    #[error("invalid gRPC target {target}: {reason}")]
    Endpoint { target: String, reason: String },
}

/// Commands from the handle to the client task.
#[derive(Debug)]
pub(crate) enum Command {
    EdsNamesChanged,
    SdsNamesChanged,
    ClustersWarmed,
}

/// Commands queued before the client task takes them; EDS name changes coalesce, so a small
/// queue never loses one (a full queue already holds a pending re-read).
const COMMAND_QUEUE: usize = 8;

/// Controls a running client. Dropping it stops the client.
pub struct XdsHandle {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl XdsHandle {
    /// Re-reads [`Handler::eds_names`] and sends the EDS (un)subscription if it changed (a
    /// static cluster's EDS, or a change the handler made outside a CDS update).
    pub fn eds_names_changed(&self) {
        // Full = a re-read is already pending; closed = the client stopped.
        let _ = self.commands.try_send(Command::EdsNamesChanged);
    }

    /// Re-reads [`Handler::sds_names`] and subscribes the secrets it names on ADS.
    pub fn sds_names_changed(&self) {
        let _ = self.commands.try_send(Command::SdsNamesChanged);
    }

    /// [`Handler::clusters_warm`] may have become true: starts LDS if it was waiting for it.
    pub fn clusters_warmed(&self) {
        let _ = self.commands.try_send(Command::ClustersWarmed);
    }
}

impl Drop for XdsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the client on the current tokio runtime. Fails only on a configuration error
/// (an ADS source without `ads_config`, an unparsable target); connection problems are
/// retried forever, as Envoy does.
pub fn spawn(
    config: ClientConfig,
    handler: Arc<dyn Handler>,
    store: &redvoy_stats::Store,
) -> Result<XdsHandle, XdsError> {
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let task = client::start(config, handler, store, command_rx)?;
    Ok(XdsHandle { commands, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_grpc_uris() {
        let t = |s: &str| Target::from_google_grpc_uri(s).unwrap();
        assert_eq!(t("127.0.0.1:15010"), Target::Tcp("127.0.0.1:15010".into()));
        assert_eq!(t("dns:///istiod:15012"), Target::Tcp("istiod:15012".into()));
        assert_eq!(t("dns:istiod:15012"), Target::Tcp("istiod:15012".into()));
        assert_eq!(
            t("ipv4:10.0.0.1:80,10.0.0.2:80"),
            Target::Tcp("10.0.0.1:80".into())
        );
        assert_eq!(t("ipv6:[::1]:80"), Target::Tcp("[::1]:80".into()));
        assert_eq!(
            t("unix:///etc/istio/proxy/XDS"),
            Target::Unix("/etc/istio/proxy/XDS".into())
        );
        assert_eq!(t("unix:./XDS"), Target::Unix("./XDS".into()));
        assert!(Target::from_google_grpc_uri("istiod").is_err());
        assert!(Target::from_google_grpc_uri("unix:").is_err());
    }
}
