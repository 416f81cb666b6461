//! `/config_dump`: the `envoy.admin.v3.ConfigDump` Envoy 1.40 prints for the same bootstrap.
//!
//! Envoy builds it from "config trackers", visited in key order: `bootstrap`, `clusters`,
//! `endpoint` (only with `?include_eds`, and only when there is a cluster), `listeners`,
//! `secrets`. Route trackers only exist once an HTTP connection manager does, so a redis_proxy
//! Envoy has none, and neither does redvoy. Each tracker's message is then masked
//! (`?mask=`), or its repeated `?resource=` field is unrolled, packed into `configs`, redacted
//! (`MessageUtil::redact`), and printed as protobuf's pretty JSON.
//!
//! Deliberately not reproduced: `node.extensions` (Envoy lists its ~500 compiled-in
//! extensions), the build SHA and `ssl.version` in `node.user_agent_build_version.metadata`
//! (redvoy reports its own), and distinct `last_updated` times per resource (all carry the
//! load time given; Envoy's differ by the milliseconds it took to add each one).

mod json;
mod mask;
mod redact;

/// Envoy's admin redaction of sensitive fields (for `redacted_json`).
pub(crate) fn redact_message(msg: &mut prost_reflect::DynamicMessage) {
    redact::redact(msg);
}

/// The JSON options of Envoy's admin dumps (for `redacted_json`).
pub(crate) fn json_options() -> prost_reflect::SerializeOptions {
    json::options()
}

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envoy_types::pb::envoy::admin::v3::clusters_config_dump::{DynamicCluster, StaticCluster};
use envoy_types::pb::envoy::admin::v3::endpoints_config_dump::{
    DynamicEndpointConfig, StaticEndpointConfig,
};
use envoy_types::pb::envoy::admin::v3::listeners_config_dump::{
    DynamicListener, DynamicListenerState, StaticListener,
};
use envoy_types::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClustersConfigDump, EndpointsConfigDump, ListenersConfigDump,
    SecretsConfigDump, UpdateFailureState,
};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, BuildVersion, HealthStatus, Locality, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy;
use envoy_types::pb::envoy::config::endpoint::v3::endpoint::HealthCheckConfig;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{
    value, Any, Struct, Timestamp, UInt32Value, Value as PbValue,
};
use prost::{Message, Name};
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::{descriptors, model};

use mask::FieldMask;

/// The Envoy release whose admin output redvoy reproduces, reported as the node's
/// `user_agent_build_version` (Envoy's own version field).
pub const ENVOY_COMPAT_VERSION: (u32, u32, u32) = (1, 40, 0);

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
const TYPE_LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const TYPE_CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const TYPE_SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// `error_state.details` of a listener redvoy skipped as unsupported.
pub const SKIPPED_PREFIX: &str = "skipped by redvoy: ";
const CONFIG_DUMP: &str = "envoy.admin.v3.ConfigDump";
/// `ClusterLoadAssignment.policy.overprovisioning_factor` when the config sets none.
const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;
/// Envoy's default `user_agent_name`.
const USER_AGENT_NAME: &str = "envoy";
/// What `?resource=` and `?mask=` can make Envoy answer.
const BAD_REQUEST: u16 = 400;
const NOT_FOUND: u16 = 404;
/// An internal failure (a descriptor missing from the built-in set): never the request's fault.
const INTERNAL: u16 = 500;

/// The query of a `/config_dump` request, parsed by the admin server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// `?resource=`: the name of a repeated field of one of the dumps (`static_clusters`,
    /// `dynamic_active_clusters`, `static_listeners`, `static_endpoint_configs`, ...).
    pub resource: Option<String>,
    /// `?mask=`: comma-separated field paths (`FieldMask`), applied to each dump, or to each
    /// `resource` entry (then also inside its packed resource: `cluster.name`).
    pub mask: Option<String>,
    /// `?name_regex=`: RE2 pattern that a resource's name must match in full. Empty = all.
    pub name_regex: Option<String>,
    /// `?include_eds` is present, whatever its value (Envoy only checks presence).
    pub include_eds: bool,
}

/// A refused `/config_dump` request: Envoy's status code and `text/plain` body (no newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DumpError {
    /// 400 (bad `mask`, bad `name_regex`, non-repeated `resource`) or 404 (unknown
    /// `resource`); 500 only for internal failures.
    pub status: u16,
    pub message: String,
}

impl DumpError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL, message)
    }
}

/// One host of a cluster as the cluster manager has it now, for `?include_eds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpHost {
    pub address: SocketAddr,
    /// The endpoint's `hostname`, or for DNS clusters the name it was resolved from.
    pub hostname: String,
    pub weight: u32,
    /// The host's coarse health (EDS status, active checks and outlier detection together),
    /// which Envoy writes as the endpoint's `health_status`.
    pub health: DumpHealth,
}

/// Envoy's coarse host health, as `/config_dump` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DumpHealth {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

impl DumpHealth {
    fn status(self) -> HealthStatus {
        match self {
            DumpHealth::Healthy => HealthStatus::Healthy,
            DumpHealth::Degraded => HealthStatus::Degraded,
            DumpHealth::Unhealthy => HealthStatus::Unhealthy,
        }
    }
}

/// Renders `/config_dump` for the bootstrap loaded at `loaded_at`. With `include_eds`, hosts
/// come from the config: exact for STATIC clusters; DNS clusters show none, as Envoy does
/// before its first resolution. Use [`render_config_dump_with_hosts`] to show resolved hosts.
pub fn render_config_dump(
    bootstrap: &model::Bootstrap,
    loaded_at: SystemTime,
    opts: &DumpOptions,
) -> Result<String, DumpError> {
    render_config_dump_with_hosts(bootstrap, loaded_at, opts, &|_| None)
}

/// As [`render_config_dump`], with `hosts(cluster_name)` giving a cluster's current hosts
/// (`None`: derive them from the config as above). Each host is put in the locality of the
/// config endpoint it came from (matched by address for STATIC clusters, by hostname and port
/// for DNS ones).
pub fn render_config_dump_with_hosts(
    bootstrap: &model::Bootstrap,
    loaded_at: SystemTime,
    opts: &DumpOptions,
    hosts: &dyn Fn(&str) -> Option<Vec<DumpHost>>,
) -> Result<String, DumpError> {
    render_config_dump_dynamic(bootstrap, &DynamicDump::default(), loaded_at, opts, hosts)
}

/// A resource as a discovery service delivered it, for `/config_dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedResource {
    /// The `version_info` of the response that carried it.
    pub version_info: String,
    /// The resource, protobuf-encoded (the `Any.value` received).
    pub value: Bytes,
    pub last_updated: SystemTime,
}

/// A rejected (or skipped) update of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDump {
    /// The rejected resource, protobuf-encoded.
    pub value: Bytes,
    /// The version of the response that carried it.
    pub version_info: String,
    pub last_update_attempt: SystemTime,
    /// Envoy's error text.
    pub details: String,
}

/// One dynamic listener in its states, as Envoy's `ListenersConfigDump.DynamicListener`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicListenerDump {
    pub name: String,
    pub active: Option<DumpedResource>,
    pub warming: Option<DumpedResource>,
    pub draining: Option<DumpedResource>,
    /// The last NACKed update of this listener.
    pub error: Option<FailedDump>,
    /// A listener redvoy skipped as unsupported (`details` = the reason). Rendered as
    /// `error_state` with `details: "skipped by redvoy: <reason>"` (where istioctl and other
    /// tools already look for listeners that are not serving), unless `error` is set.
    pub skipped: Option<FailedDump>,
}

/// One dynamic cluster, as Envoy's `ClustersConfigDump.DynamicCluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicClusterDump {
    pub name: String,
    pub resource: DumpedResource,
    /// Still waiting for its endpoints: listed under `dynamic_warming_clusters`.
    pub warming: bool,
}

/// The xDS-delivered state for [`render_config_dump_dynamic`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicDump {
    /// Last accepted LDS `version_info` (`ListenersConfigDump.version_info`); empty = none.
    pub lds_version: String,
    /// Last accepted CDS `version_info`.
    pub cds_version: String,
    /// In the order Envoy lists them (the listener manager's order: by name is fine).
    pub listeners: Vec<DynamicListenerDump>,
    /// Any order (sorted by name here, as Envoy's cluster map is).
    pub clusters: Vec<DynamicClusterDump>,
    /// The last `ClusterLoadAssignment` of each EDS service. With `?include_eds`, every
    /// dynamic cluster gets a `dynamic_endpoint_configs` entry built like the static ones
    /// (from `hosts(name)`, else from its config or these assignments).
    pub endpoints: Vec<DumpedResource>,
    /// Every secret asked for over SDS, by name: as last accepted, or `None` while warming.
    pub secrets: Vec<(String, Option<DumpedResource>)>,
}

/// As [`render_config_dump_with_hosts`], plus the dynamic listeners, clusters and endpoints.
pub fn render_config_dump_dynamic(
    bootstrap: &model::Bootstrap,
    dynamic_state: &DynamicDump,
    loaded_at: SystemTime,
    opts: &DumpOptions,
    hosts: &dyn Fn(&str) -> Option<Vec<DumpHost>>,
) -> Result<String, DumpError> {
    let source = bootstrap.source.0.as_ref();
    let names = NameMatcher::new(opts.name_regex.as_deref())?;
    let last_updated = timestamp(loaded_at);
    let statics = source.static_resources.clone().unwrap_or_default();
    // Envoy's cluster map is ordered by name; listeners keep their configuration order.
    let mut clusters = statics.clusters;
    clusters.sort_by(|a, b| a.name.cmp(&b.name));

    let mut trackers: Vec<DynamicMessage> = Vec::new();
    trackers.push(dynamic(&BootstrapConfigDump {
        bootstrap: Some(dumped_bootstrap(source)),
        last_updated: Some(last_updated),
    })?);
    let mut dyn_clusters: Vec<&DynamicClusterDump> = dynamic_state
        .clusters
        .iter()
        .filter(|c| names.matches(&c.name))
        .collect();
    dyn_clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let dumped_cluster = |c: &DynamicClusterDump| DynamicCluster {
        version_info: c.resource.version_info.clone(),
        cluster: Some(any(TYPE_CLUSTER, &c.resource.value)),
        last_updated: Some(timestamp(c.resource.last_updated)),
        ..Default::default()
    };
    trackers.push(dynamic(&ClustersConfigDump {
        version_info: dynamic_state.cds_version.clone(),
        dynamic_active_clusters: dyn_clusters
            .iter()
            .filter(|c| !c.warming)
            .map(|c| dumped_cluster(c))
            .collect(),
        dynamic_warming_clusters: dyn_clusters
            .iter()
            .filter(|c| c.warming)
            .map(|c| dumped_cluster(c))
            .collect(),
        static_clusters: clusters
            .iter()
            .filter(|c| names.matches(&c.name))
            .map(|c| StaticCluster {
                cluster: Some(pack(c)),
                last_updated: Some(last_updated),
            })
            .collect(),
    })?);
    if opts.include_eds && !(clusters.is_empty() && dynamic_state.clusters.is_empty()) {
        trackers.push(dynamic(&EndpointsConfigDump {
            dynamic_endpoint_configs: dyn_clusters
                .iter()
                .map(|c| DynamicEndpointConfig {
                    endpoint_config: Some(pack(&dynamic_load_assignment(
                        c,
                        &dynamic_state.endpoints,
                        hosts(&c.name),
                    ))),
                    ..Default::default()
                })
                .collect(),
            static_endpoint_configs: clusters
                .iter()
                .filter(|c| names.matches(&c.name))
                .map(|c| StaticEndpointConfig {
                    endpoint_config: Some(pack(&load_assignment(c, hosts(&c.name)))),
                    last_updated: None,
                })
                .collect(),
        })?);
    }
    let state = |r: &DumpedResource| DynamicListenerState {
        version_info: r.version_info.clone(),
        listener: Some(any(TYPE_LISTENER, &r.value)),
        last_updated: Some(timestamp(r.last_updated)),
    };
    trackers.push(dynamic(&ListenersConfigDump {
        version_info: dynamic_state.lds_version.clone(),
        dynamic_listeners: dynamic_state
            .listeners
            .iter()
            .filter(|l| names.matches(&l.name))
            .map(|l| {
                let failure = match (&l.error, &l.skipped) {
                    (Some(e), _) => Some((e, e.details.clone())),
                    (None, Some(s)) => Some((s, format!("{SKIPPED_PREFIX}{}", s.details))),
                    (None, None) => None,
                };
                DynamicListener {
                    name: l.name.clone(),
                    active_state: l.active.as_ref().map(state),
                    warming_state: l.warming.as_ref().map(state),
                    draining_state: l.draining.as_ref().map(state),
                    error_state: failure.map(|(f, details)| UpdateFailureState {
                        failed_configuration: Some(any(TYPE_LISTENER, &f.value)),
                        last_update_attempt: Some(timestamp(f.last_update_attempt)),
                        details,
                        version_info: f.version_info.clone(),
                    }),
                    ..Default::default()
                }
            })
            .collect(),
        static_listeners: statics
            .listeners
            .iter()
            .filter(|l| names.matches(&l.name))
            .map(|l| StaticListener {
                listener: Some(pack(l)),
                last_updated: Some(last_updated),
            })
            .collect(),
    })?);
    let dynamic_secret = |name: &String, r: Option<&DumpedResource>| {
        envoy_types::pb::envoy::admin::v3::secrets_config_dump::DynamicSecret {
            name: name.clone(),
            version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
            last_updated: r.map(|r| timestamp(r.last_updated)),
            secret: r.map(|r| any(TYPE_SECRET, &r.value)),
            ..Default::default()
        }
    };
    trackers.push(dynamic(&SecretsConfigDump {
        static_secrets: statics
            .secrets
            .iter()
            .filter(|s| names.matches(&s.name))
            .map(
                |s| envoy_types::pb::envoy::admin::v3::secrets_config_dump::StaticSecret {
                    name: s.name.clone(),
                    last_updated: None,
                    secret: Some(pack(s)),
                },
            )
            .collect(),
        dynamic_active_secrets: dynamic_state
            .secrets
            .iter()
            .filter(|(name, r)| r.is_some() && names.matches(name))
            .map(|(name, r)| dynamic_secret(name, r.as_ref()))
            .collect(),
        dynamic_warming_secrets: dynamic_state
            .secrets
            .iter()
            .filter(|(name, r)| r.is_none() && names.matches(name))
            .map(|(name, r)| dynamic_secret(name, r.as_ref()))
            .collect(),
    })?);

    let mask = opts.mask.as_deref().map(FieldMask::parse);
    let configs = match &opts.resource {
        Some(resource) => resources(trackers, resource, mask.as_ref())?,
        None => all(trackers, opts.mask.as_deref(), mask.as_ref())?,
    };
    let mut dump = DynamicMessage::new(message(CONFIG_DUMP)?);
    dump.set_field_by_name(
        "configs",
        Value::List(configs.into_iter().map(Value::Message).collect()),
    );
    redact::redact(&mut dump);
    json::to_envoy_json(&dump).map_err(DumpError::internal)
}

/// The bootstrap as Envoy's `BootstrapConfigDump` shows it (node defaults added, secrets
/// redacted), as pretty JSON: handy for logging the effective config.
pub fn render_bootstrap_json(bootstrap: &model::Bootstrap) -> Result<String, DumpError> {
    let mut msg = dynamic(&dumped_bootstrap(bootstrap.source.0.as_ref()))?;
    redact::redact(&mut msg);
    json::to_envoy_json(&msg).map_err(DumpError::internal)
}

/// All trackers, each masked; those the mask does not fit are left out.
fn all(
    trackers: Vec<DynamicMessage>,
    raw_mask: Option<&str>,
    mask: Option<&FieldMask>,
) -> Result<Vec<DynamicMessage>, DumpError> {
    let mut configs = Vec::with_capacity(trackers.len());
    for mut t in trackers {
        if let Some(mask) = mask {
            if !mask.check_and_trim(&mut t) {
                continue;
            }
        }
        configs.push(pack_dynamic(&t)?);
    }
    if configs.is_empty() {
        if let Some(raw) = raw_mask {
            return Err(DumpError::new(
                BAD_REQUEST,
                format!("FieldMask {raw} could not be successfully applied to any configs."),
            ));
        }
    }
    Ok(configs)
}

/// The entries of the first tracker that has a field named `resource`.
fn resources(
    trackers: Vec<DynamicMessage>,
    resource: &str,
    mask: Option<&FieldMask>,
) -> Result<Vec<DynamicMessage>, DumpError> {
    for t in trackers {
        let Some(field) = t.descriptor().get_field_by_name(resource) else {
            continue;
        };
        if !field.is_list() {
            return Err(DumpError::new(
                BAD_REQUEST,
                format!(
                    "{resource} is not a repeated field. Use ?mask={resource} to get only this \
                     field"
                ),
            ));
        }
        let items = match t.get_field(&field).as_list() {
            Some(items) => items.to_vec(),
            None => Vec::new(),
        };
        let mut configs = Vec::with_capacity(items.len());
        for item in items {
            let Value::Message(mut m) = item else {
                continue;
            };
            if let Some(mask) = mask {
                if !mask.trim_resource(&mut m) {
                    return Err(DumpError::new(
                        BAD_REQUEST,
                        format!(
                            "FieldMask {} could not be successfully used.",
                            mask.debug_string()
                        ),
                    ));
                }
            }
            configs.push(pack_dynamic(&m)?);
        }
        return Ok(configs);
    }
    Err(DumpError::new(
        NOT_FOUND,
        format!("{resource} not found in config dump"),
    ))
}

/// Envoy's additions to the bootstrap it dumps: a default `user_agent_name` and its build
/// version (both kept when the config sets them).
fn dumped_bootstrap(source: &Bootstrap) -> Bootstrap {
    let mut b = source.clone();
    let node = b.node.get_or_insert_with(Default::default);
    if node.user_agent_name.is_empty() {
        node.user_agent_name = USER_AGENT_NAME.to_owned();
    }
    let has_version = matches!(
        &node.user_agent_version_type,
        Some(UserAgentVersionType::UserAgentBuildVersion(v)) if v.version.is_some()
    );
    if !has_version {
        node.user_agent_version_type =
            Some(UserAgentVersionType::UserAgentBuildVersion(build_version()));
    }
    b
}

fn build_version() -> BuildVersion {
    let (major_number, minor_number, patch) = ENVOY_COMPAT_VERSION;
    let text = |s: &str| PbValue {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    };
    let build_type = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    BuildVersion {
        version: Some(SemanticVersion {
            major_number,
            minor_number,
            patch,
        }),
        metadata: Some(Struct {
            fields: [
                (
                    "revision.sha",
                    format!("redvoy-{}", env!("CARGO_PKG_VERSION")),
                ),
                ("revision.status", "Clean".to_owned()),
                ("build.type", build_type.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), text(&v)))
            .collect(),
        }),
    }
}

/// Envoy's `systemClockToTimestamp`: millisecond precision.
fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // Below 1e9, so it fits.
        nanos: i32::try_from(since.subsec_millis() * 1_000_000).unwrap_or(0),
    }
}

/// An `Any` of an already encoded resource.
fn any(type_url: &str, value: &Bytes) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: value.to_vec(),
    }
}

/// `?include_eds` for a dynamic cluster: as for static ones, from its hosts; an EDS cluster's
/// config endpoints are its last `ClusterLoadAssignment` (matched by service name).
fn dynamic_load_assignment(
    c: &DynamicClusterDump,
    assignments: &[DumpedResource],
    live: Option<Vec<DumpHost>>,
) -> ClusterLoadAssignment {
    let mut cluster = Cluster::decode(c.resource.value.as_ref()).unwrap_or_default();
    if cluster.name.is_empty() {
        cluster.name.clone_from(&c.name);
    }
    let is_eds = matches!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t)) if DiscoveryType::try_from(t) == Ok(DiscoveryType::Eds)
    );
    if is_eds {
        let service = cluster
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cluster.name.clone());
        cluster.load_assignment = assignments
            .iter()
            .filter_map(|a| ClusterLoadAssignment::decode(a.value.as_ref()).ok())
            .find(|a| a.cluster_name == service);
        // Envoy names an EDS cluster's hosts after the service they came from.
        let mut cla = load_assignment(&cluster, live);
        cla.cluster_name = service;
        return cla;
    }
    load_assignment(&cluster, live)
}

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn pack_dynamic(m: &DynamicMessage) -> Result<DynamicMessage, DumpError> {
    let mut any = DynamicMessage::new(message("google.protobuf.Any")?);
    any.set_field_by_name(
        "type_url",
        Value::String(format!("{TYPE_URL_PREFIX}{}", m.descriptor().full_name())),
    );
    any.set_field_by_name("value", Value::Bytes(m.encode_to_vec().into()));
    Ok(any)
}

fn message(name: &str) -> Result<prost_reflect::MessageDescriptor, DumpError> {
    descriptors::message(name).map_err(|e| DumpError::internal(e.to_string()))
}

/// A typed message as a `DynamicMessage` of the built-in pool.
fn dynamic<M: Message + Name>(m: &M) -> Result<DynamicMessage, DumpError> {
    DynamicMessage::decode(message(&M::full_name())?, m.encode_to_vec().as_slice())
        .map_err(|e| DumpError::internal(format!("{}: {e}", M::full_name())))
}

/// `?name_regex=`: Envoy compiles it as RE2 and requires a full match.
struct NameMatcher(Option<regex::Regex>);

impl NameMatcher {
    fn new(pattern: Option<&str>) -> Result<Self, DumpError> {
        let Some(pattern) = pattern.filter(|p| !p.is_empty()) else {
            return Ok(Self(None));
        };
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(|r| Self(Some(r)))
            .map_err(|e| {
                DumpError::new(
                    BAD_REQUEST,
                    format!(
                        "INVALID_ARGUMENT: Error while parsing name_regex from {pattern}: {}",
                        crate::convert::regex_error_line(&e)
                    ),
                )
            })
    }

    fn matches(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|r| r.is_match(name))
    }
}

// === EDS ===

/// One config endpoint, with what the dump needs of its position in the load assignment.
struct ConfigEndpoint<'a> {
    locality: Locality,
    locality_weight: u32,
    lb: &'a LbEndpoint,
    endpoint: &'a Endpoint,
    socket: Option<&'a SocketAddress>,
}

/// Envoy's `dumpEndpointConfigs` for one cluster: hosts grouped by locality, localities in
/// (region, zone, sub_zone) order, each with its coarse health. A STATIC cluster's hosts come
/// from its config (with their live health when `live` has them), others' from `live`.
fn load_assignment(c: &Cluster, live: Option<Vec<DumpHost>>) -> ClusterLoadAssignment {
    let discovery_static = match c.cluster_discovery_type {
        None => true,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(t) == Ok(DiscoveryType::Static)
        }
        Some(_) => false,
    };
    let (live, health_of) = if discovery_static {
        (None, live.unwrap_or_default())
    } else {
        (live, Vec::new())
    };
    let is_static = !matches!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t))
            if matches!(
                DiscoveryType::try_from(t),
                Ok(DiscoveryType::StrictDns | DiscoveryType::LogicalDns)
            )
    );
    let config: Vec<ConfigEndpoint<'_>> = c
        .load_assignment
        .iter()
        .flat_map(|la| la.endpoints.iter())
        .flat_map(|loc| {
            loc.lb_endpoints.iter().filter_map(move |lb| {
                let Some(HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
                    return None;
                };
                let socket = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
                    Some(address::Address::SocketAddress(sa)) => Some(sa),
                    _ => None,
                };
                Some(ConfigEndpoint {
                    locality: loc.locality.clone().unwrap_or_default(),
                    locality_weight: loc.load_balancing_weight.map_or(0, |w| w.value),
                    lb,
                    endpoint,
                    socket,
                })
            })
        })
        .collect();

    // (host, the config endpoint it came from)
    let hosts: Vec<(DumpHost, Option<&ConfigEndpoint<'_>>)> = match live {
        Some(hosts) => hosts
            .into_iter()
            .map(|h| {
                let from = config.iter().find(|e| came_from(e, &h, is_static));
                (h, from)
            })
            .collect(),
        // Until resolved, a DNS cluster has no hosts.
        None if !is_static => Vec::new(),
        None => config
            .iter()
            .filter_map(|e| {
                let sa = e.socket?;
                let ip: IpAddr = sa.address.parse().ok()?;
                let port = match sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).ok()?,
                    _ => return None,
                };
                let address = SocketAddr::new(ip, port);
                let health = health_of
                    .iter()
                    .find(|h| h.address == address)
                    .map_or(DumpHealth::Healthy, |h| h.health);
                let host = DumpHost {
                    address,
                    hostname: e.endpoint.hostname.clone(),
                    weight: e.lb.load_balancing_weight.map_or(1, |w| w.value),
                    health,
                };
                Some((host, Some(e)))
            })
            .collect(),
    };

    let mut groups: BTreeMap<(String, String, String), LocalityLbEndpoints> = BTreeMap::new();
    for (host, from) in hosts {
        let locality = from.map(|e| e.locality.clone()).unwrap_or_default();
        let key = (
            locality.region.clone(),
            locality.zone.clone(),
            locality.sub_zone.clone(),
        );
        let group = groups.entry(key).or_insert_with(|| LocalityLbEndpoints {
            locality: Some(locality),
            load_balancing_weight: Some(UInt32Value {
                value: from.map_or(0, |e| e.locality_weight),
            }),
            ..Default::default()
        });
        // Static hosts carry metadata only when configured; DNS hosts always have some.
        let metadata = match from.and_then(|e| e.lb.metadata.clone()) {
            Some(m) => Some(m),
            None if is_static => None,
            None => Some(Metadata::default()),
        };
        group.lb_endpoints.push(LbEndpoint {
            health_status: host.health.status() as i32,
            metadata,
            load_balancing_weight: Some(UInt32Value { value: host.weight }),
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: host.address.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                            host.address.port(),
                        ))),
                        ..Default::default()
                    })),
                }),
                health_check_config: Some(HealthCheckConfig::default()),
                hostname: host.hostname,
                ..Default::default()
            })),
        });
    }
    ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: groups.into_values().collect(),
        policy: Some(Policy {
            overprovisioning_factor: Some(UInt32Value {
                value: DEFAULT_OVERPROVISIONING_FACTOR,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn came_from(e: &ConfigEndpoint<'_>, h: &DumpHost, is_static: bool) -> bool {
    let Some(sa) = e.socket else { return false };
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        _ => return false,
    };
    if port != u32::from(h.address.port()) {
        return false;
    }
    if is_static {
        sa.address.parse::<IpAddr>().ok() == Some(h.address.ip())
    } else if e.endpoint.hostname.is_empty() {
        sa.address == h.hostname
    } else {
        e.endpoint.hostname == h.hostname
    }
}

#[cfg(test)]
mod tests;
