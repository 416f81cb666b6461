//! xDS resources (LDS, CDS, EDS, and filesystem discovery files) → [`crate::model`], with the
//! same allowlist, TypedStruct/Struct unwrapping and Envoy checks as the bootstrap, in the
//! allowlist's dynamic mode (Istio's per-resource extras tolerated, see `supported.rs`).

use std::path::Path;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost_reflect::DynamicMessage;

use crate::convert::{self, AddressKind};
use crate::error::FieldPath;
use crate::parse::{self, Origin};
use crate::supported;
use crate::{descriptors, model, ConfigError};

const LISTENER: &str = "envoy.config.listener.v3.Listener";
const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
const CLUSTER_LOAD_ASSIGNMENT: &str = "envoy.config.endpoint.v3.ClusterLoadAssignment";
const DISCOVERY_RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";
const SECRET: &str = "envoy.extensions.transport_sockets.tls.v3.Secret";

/// How xDS resources are read (Envoy's command-line switches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DynamicOptions {
    /// `--reject-unknown-dynamic-fields`: a proto field this build does not know makes the
    /// resource invalid. Off by default, as in Envoy (unknown fields are skipped).
    pub reject_unknown_dynamic_fields: bool,
}

/// Why an xDS resource was not taken. The text is `<field path>: <message>` with the path
/// relative to the resource; the xDS client prefixes the resource name for the NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// Envoy itself rejects it (proto constraints, the filters' and managers' own checks).
    #[error("{0}")]
    Invalid(String),
    /// Valid for Envoy, but uses something redvoy does not implement (an HCM with RDS, an
    /// unknown network filter, an HCM feature beyond the minimal one). The listener is skipped
    /// with a warning unless `--reject-unsupported`.
    #[error("{0}")]
    Unsupported(String),
}

impl ResourceError {
    /// Whether Envoy rejects this while decoding the resource (an undecodable message, a
    /// protoc-gen-validate rule), before its cluster or listener manager sees it. The managers
    /// count an add or a modification for every other rejection: they raise those while
    /// building the resource, after counting.
    pub fn is_decode_error(&self) -> bool {
        let Self::Invalid(text) = self else {
            return false;
        };
        let message = text.split_once(": ").map_or(text.as_str(), |(_, m)| m);
        [
            "Proto constraint validation failed",
            "value ",
            "cannot decode",
        ]
        .iter()
        .any(|p| message.starts_with(p))
    }
}

impl From<ConfigError> for ResourceError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Unsupported { .. } => Self::Unsupported(e.to_string()),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// Decodes and checks one resource of type `full_name` (the bytes of an `Any.value`).
fn checked(
    full_name: &'static str,
    value: &[u8],
    opts: &DynamicOptions,
) -> Result<DynamicMessage, ResourceError> {
    let desc = descriptors::message(full_name)?;
    let mut msg = DynamicMessage::decode(desc, value)
        .map_err(|e| ResourceError::Invalid(format!("cannot decode {full_name}: {e}")))?;
    if opts.reject_unknown_dynamic_fields {
        parse::reject_unknown_wire_fields(&msg, &FieldPath::root(), Origin::Resource(full_name))?;
    }
    supported::check(&mut msg)?;
    Ok(msg)
}

fn transcode<T: prost::Message + Default>(
    msg: &DynamicMessage,
    full_name: &str,
) -> Result<T, ResourceError> {
    msg.transcode_to::<T>()
        .map_err(|e| ResourceError::Invalid(format!("{full_name} does not match envoy-types: {e}")))
}

/// An LDS resource (`type.googleapis.com/envoy.config.listener.v3.Listener`).
pub fn decode_listener(
    value: &[u8],
    opts: &DynamicOptions,
) -> Result<model::Listener, ResourceError> {
    let msg = checked(LISTENER, value, opts)?;
    let l: Listener = transcode(&msg, LISTENER)?;
    Ok(convert::listener(l, &FieldPath::root())?)
}

/// The address a listener resource asks for (`ip:port`), read without any other check: for
/// listing a listener redvoy skipped (`/listeners`). `None` when it has no socket address.
pub fn listener_address(value: &[u8]) -> Option<model::SocketAddress> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use prost::Message;
    let l = Listener::decode(value).ok()?;
    let Some(address::Address::SocketAddress(sa)) = l.address?.address else {
        return None;
    };
    let port = match sa.port_specifier? {
        socket_address::PortSpecifier::PortValue(p) => u16::try_from(p).ok()?,
        socket_address::PortSpecifier::NamedPort(_) => return None,
    };
    Some(model::SocketAddress {
        address: sa.address,
        port,
    })
}

/// A CDS resource (`type.googleapis.com/envoy.config.cluster.v3.Cluster`).
pub fn decode_cluster(
    value: &[u8],
    opts: &DynamicOptions,
) -> Result<model::Cluster, ResourceError> {
    let msg = checked(CLUSTER, value, opts)?;
    let c: Cluster = transcode(&msg, CLUSTER)?;
    Ok(convert::cluster(c, &FieldPath::root())?)
}

/// An SDS resource (`type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`).
pub fn decode_secret(value: &[u8]) -> Result<model::Secret, ResourceError> {
    let msg = checked(SECRET, value, &DynamicOptions::default())?;
    let s: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret =
        transcode(&msg, SECRET)?;
    Ok(convert::secret(&s, &FieldPath::root())?)
}

/// An EDS resource (`type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`).
/// Unknown fields are skipped, as Envoy does by default.
pub fn decode_cluster_load_assignment(
    value: &[u8],
) -> Result<model::ClusterLoadAssignment, ResourceError> {
    let msg = checked(CLUSTER_LOAD_ASSIGNMENT, value, &DynamicOptions::default())?;
    let la: ClusterLoadAssignment = transcode(&msg, CLUSTER_LOAD_ASSIGNMENT)?;
    let root = FieldPath::root();
    if la.cluster_name.is_empty() {
        return Err(ConfigError::invalid(
            root.field("cluster_name"),
            "value length must be at least 1 characters",
        )
        .into());
    }
    let endpoints = convert::assignment_endpoints(&la, &root, AddressKind::StaticEndpoint)?;
    Ok(model::ClusterLoadAssignment {
        cluster_name: la.cluster_name,
        endpoints,
    })
}

/// A filesystem xDS file (`path_config_source`): one `DiscoveryResponse`, read by file name
/// as Envoy does (`.yaml`/`.yml`, `.pb`, `.pb_text`, else JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryFile {
    pub version_info: String,
    pub resources: Vec<RawResource>,
}

/// One resource of a [`DiscoveryFile`]: its `Any`, and its name (`name`, or `cluster_name` for
/// a ClusterLoadAssignment; empty when the type is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResource {
    pub type_url: String,
    pub name: String,
    pub value: Bytes,
}

/// Reads a filesystem xDS file.
pub fn read_discovery_file(path: &Path) -> Result<DiscoveryFile, ConfigError> {
    let desc = descriptors::message(DISCOVERY_RESPONSE)?;
    let msg = parse::load_file(path, &desc)?;
    let response: DiscoveryResponse = msg.transcode_to().map_err(|e| {
        ConfigError::Descriptors(format!(
            "{DISCOVERY_RESPONSE} does not match envoy-types: {e}"
        ))
    })?;
    let pool = descriptors::pool()?;
    let resources = response
        .resources
        .into_iter()
        .map(|any| {
            let name = pool
                .get_message_by_name(parse::type_name_of(&any.type_url))
                .and_then(|d| DynamicMessage::decode(d, any.value.as_slice()).ok())
                .and_then(|m| {
                    ["name", "cluster_name"].iter().find_map(|f| {
                        m.get_field_by_name(f)
                            .and_then(|v| v.as_str().map(str::to_owned))
                    })
                })
                .unwrap_or_default();
            RawResource {
                type_url: any.type_url,
                name,
                value: Bytes::from(any.value),
            }
        })
        .collect();
    Ok(DiscoveryFile {
        version_info: response.version_info,
        resources,
    })
}
