//! What redvoy implements, as an allowlist over the merged `DynamicMessage`.
//!
//! Every field that is *set* must be listed for its message type, else the config is refused
//! with the field's path (`static_resources.clusters[1].health_checks: not supported by redvoy`).
//! Listing per field rather than per path is deliberate: a new Envoy field is refused until
//! someone decides it is implemented or harmless, so redvoy never silently behaves unlike Envoy.
//!
//! The same walk resolves `typed_config`s: it looks the extension up by type URL, unwraps
//! `xds.type.v3.TypedStruct` / `udpa.type.v1.TypedStruct` (and `google.protobuf.Struct` where
//! Envoy accepts it), walks the inner message with the same rules, and puts it back as a plain
//! `Any` of the native type, so the conversion that follows only sees native types.

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

use crate::error::FieldPath;
use crate::parse::type_name_of;
use crate::ConfigError;

pub(crate) const REDIS_PROXY: &str = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy";
pub(crate) const REDIS_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions";
/// Names under which Envoy registers the redis_proxy filter factory (the second is deprecated
/// but still registered); `typed_extension_protocol_options` is keyed by them.
pub(crate) const REDIS_PROXY_NAMES: &[&str] =
    &["envoy.filters.network.redis_proxy", "envoy.redis_proxy"];
pub(crate) const REDIS_CLUSTER_TYPE: &str = "envoy.clusters.redis";

const TYPED_STRUCT_XDS: &str = "xds.type.v3.TypedStruct";
const TYPED_STRUCT_UDPA: &str = "udpa.type.v1.TypedStruct";
const STRUCT: &str = "google.protobuf.Struct";
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// What to do with a set field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Implemented: accepted, and a message value is walked with the same rules.
    Walk,
    /// Accepted and not interpreted, because it cannot change what redvoy does (each use says
    /// why). The value is not walked.
    Ignore,
    /// `Filter.typed_config`: a network filter, looked up by type URL.
    NetworkFilter,
    /// `Cluster.typed_extension_protocol_options`: keyed by filter name.
    ProtocolOptions,
    /// `Cluster.cluster_type`: a cluster extension.
    ClusterType,
}

use Rule::{ClusterType, Ignore, NetworkFilter, ProtocolOptions, Walk};

/// The allowlist: message full name → (field name, rule). Messages not listed accept no set
/// fields at all.
const ALLOWED: &[(&str, &[(&str, Rule)])] = &[
    (
        "envoy.config.bootstrap.v3.Bootstrap",
        &[
            ("node", Walk),
            ("static_resources", Walk),
            ("admin", Walk),
            // Static and admin layers only (disk and RTDS layers are refused below).
            ("layered_runtime", Walk),
            ("stats_config", Walk),
            // `stats_flush_on_admin` (the other member of its oneof) is refused.
            ("stats_flush_interval", Walk),
        ],
    ),
    ("envoy.config.bootstrap.v3.Bootstrap.StaticResources", &[("listeners", Walk), ("clusters", Walk)]),
    ("envoy.config.bootstrap.v3.LayeredRuntime", &[("layers", Walk)]),
    (
        "envoy.config.bootstrap.v3.RuntimeLayer",
        &[("name", Walk), ("static_layer", Walk), ("admin_layer", Walk)],
    ),
    (
        "envoy.config.metrics.v3.StatsConfig",
        &[
            ("stats_tags", Walk),
            ("use_all_default_tags", Walk),
            ("stats_matcher", Walk),
            ("histogram_bucket_settings", Walk),
        ],
    ),
    (
        "envoy.config.metrics.v3.TagSpecifier",
        &[("tag_name", Walk), ("regex", Walk), ("fixed_value", Walk)],
    ),
    (
        "envoy.config.metrics.v3.StatsMatcher",
        &[("reject_all", Walk), ("exclusion_list", Walk), ("inclusion_list", Walk)],
    ),
    (
        "envoy.config.metrics.v3.HistogramBucketSettings",
        &[("match", Walk), ("buckets", Walk), ("bins", Walk)],
    ),
    ("envoy.type.matcher.v3.ListStringMatcher", &[("patterns", Walk)]),
    (
        "envoy.type.matcher.v3.StringMatcher",
        // `custom` (an extension matcher) is refused.
        &[
            ("exact", Walk),
            ("prefix", Walk),
            ("suffix", Walk),
            ("safe_regex", Walk),
            ("contains", Walk),
            ("ignore_case", Walk),
        ],
    ),
    (
        "envoy.type.matcher.v3.RegexMatcher",
        // `google_re2` is deprecated and only tunes RE2's program-size limits.
        &[("regex", Walk), ("google_re2", Ignore)],
    ),
    (
        "envoy.config.bootstrap.v3.Admin",
        &[
            ("address", Walk),
            // Admin access logs record admin HTTP requests only; not writing them changes no
            // proxy behaviour (the article and Envoy's examples set `/dev/null`).
            ("access_log_path", Ignore),
            ("access_log", Ignore),
            ("profile_path", Walk),
            ("ignore_global_conn_limit", Walk),
        ],
    ),
    (
        "envoy.config.core.v3.Node",
        &[
            ("id", Walk),
            ("cluster", Walk),
            ("locality", Walk),
            // Node metadata and user agent are only reported to management servers.
            ("metadata", Ignore),
            ("user_agent_name", Ignore),
            ("user_agent_version", Ignore),
        ],
    ),
    (
        "envoy.config.core.v3.Locality",
        &[
            ("zone", Walk),
            // Region and sub-zone only feed zone-aware routing and xDS identification.
            ("region", Ignore),
            ("sub_zone", Ignore),
        ],
    ),
    // `pipe` is only implemented for the admin address; listeners and clusters refuse it at
    // conversion, with the path.
    ("envoy.config.core.v3.Address", &[("socket_address", Walk), ("pipe", Walk)]),
    ("envoy.config.core.v3.Pipe", &[("path", Walk), ("mode", Walk)]),
    (
        "envoy.config.core.v3.SocketAddress",
        // `protocol` is TCP unless set; UDP is refused by not listing it.
        &[("address", Walk), ("port_value", Walk)],
    ),
    (
        "envoy.config.listener.v3.Listener",
        &[
            ("name", Walk),
            ("address", Walk),
            ("filter_chains", Walk),
            // Selects the listeners `/drain_listeners?inboundonly` drains.
            ("traffic_direction", Walk),
            // Listener metadata is read by other extensions, never by redis_proxy.
            ("metadata", Ignore),
        ],
    ),
    (
        "envoy.config.listener.v3.FilterChain",
        &[
            ("filters", Walk),
            // A chain's name only identifies it for filter-chain updates; there is one chain.
            ("name", Ignore),
            // Read by other extensions, never by redis_proxy.
            ("metadata", Ignore),
        ],
    ),
    (
        "envoy.config.listener.v3.Filter",
        // The name is free text in v3 when typed_config is set: lookup is by type URL.
        &[("name", Walk), ("typed_config", NetworkFilter)],
    ),
    (
        REDIS_PROXY,
        &[
            ("stat_prefix", Walk),
            ("settings", Walk),
            ("latency_in_micros", Walk),
            ("prefix_routes", Walk),
            ("downstream_auth_password", Walk),
            ("downstream_auth_passwords", Walk),
            ("downstream_auth_username", Walk),
            ("faults", Walk),
            ("custom_commands", Walk),
        ],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.ConnPoolSettings",
        &[
            ("op_timeout", Walk),
            ("enable_hashtagging", Walk),
            ("enable_redirection", Walk),
            ("max_buffer_size_before_flush", Walk),
            ("buffer_flush_timeout", Walk),
            ("max_upstream_unknown_connections", Walk),
            ("enable_command_stats", Walk),
            ("read_policy", Walk),
        ],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes",
        &[("routes", Walk), ("case_insensitive", Walk), ("catch_all_route", Walk)],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route",
        &[
            ("prefix", Walk),
            ("remove_prefix", Walk),
            ("cluster", Walk),
            ("request_mirror_policy", Walk),
            ("key_formatter", Walk),
            ("read_command_policy", Walk),
        ],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route.RequestMirrorPolicy",
        &[("cluster", Walk), ("runtime_fraction", Walk), ("exclude_read_commands", Walk)],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route.ReadCommandPolicy",
        &[("cluster", Walk)],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.RedisFault",
        &[("fault_type", Walk), ("fault_enabled", Walk), ("delay", Walk), ("commands", Walk)],
    ),
    (REDIS_PROTOCOL_OPTIONS, &[("auth_password", Walk), ("auth_username", Walk)]),
    ("envoy.config.core.v3.RuntimeFractionalPercent", &[("default_value", Walk), ("runtime_key", Walk)]),
    ("envoy.type.v3.FractionalPercent", &[("numerator", Walk), ("denominator", Walk)]),
    (
        "envoy.config.core.v3.DataSource",
        &[("filename", Walk), ("inline_bytes", Walk), ("inline_string", Walk), ("environment_variable", Walk)],
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            ("name", Walk),
            ("type", Walk),
            ("cluster_type", ClusterType),
            ("connect_timeout", Walk),
            ("lb_policy", Walk),
            ("load_assignment", Walk),
            ("dns_refresh_rate", Walk),
            ("dns_lookup_family", Walk),
            ("typed_extension_protocol_options", ProtocolOptions),
            ("ring_hash_lb_config", Walk),
            ("maglev_lb_config", Walk),
            ("least_request_lb_config", Walk),
            ("common_lb_config", Walk),
            // Cluster metadata feeds subset load balancing and transport-socket matching (both
            // refused); redis_proxy never reads it.
            ("metadata", Ignore),
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        &[
            ("consistent_hashing_lb_config", Walk),
            // The panic threshold only matters when hosts are unhealthy; redvoy runs no health
            // checking or outlier detection (both refused), so every host stays healthy and the
            // threshold is never reached.
            ("healthy_panic_threshold", Ignore),
        ],
    ),
    ("envoy.config.cluster.v3.Cluster.CommonLbConfig.ConsistentHashingLbConfig", &[("use_hostname_for_hashing", Walk)]),
    (
        "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        &[("minimum_ring_size", Walk), ("maximum_ring_size", Walk), ("hash_function", Walk)],
    ),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig", &[("table_size", Walk)]),
    ("envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", &[("choice_count", Walk)]),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        &[("cluster_name", Walk), ("endpoints", Walk)],
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &[
            ("lb_endpoints", Walk),
            // Localities and their weights only matter to zone-aware and locality-weighted load
            // balancing, which need `common_lb_config` settings or a local cluster (refused).
            // Without them Envoy flattens every locality into one host set, as redvoy does.
            // (`priority` is not listed: a non-zero priority is refused.)
            ("locality", Ignore),
            ("load_balancing_weight", Ignore),
            ("metadata", Ignore),
        ],
    ),
    (
        "envoy.config.endpoint.v3.LbEndpoint",
        &[
            ("endpoint", Walk),
            ("load_balancing_weight", Walk),
            // Endpoint metadata feeds subset load balancing and transport-socket matching (both
            // refused); redis_proxy never reads it.
            ("metadata", Ignore),
        ],
    ),
    ("envoy.config.endpoint.v3.Endpoint", &[("address", Walk), ("hostname", Walk)]),
];

/// Values that are accepted whole (their JSON form is a scalar or free-form).
fn is_leaf(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Duration"
            | "google.protobuf.Empty"
            // Free-form; where one is read (`static_layer`), the conversion checks it.
            | "google.protobuf.Struct"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
    )
}

fn rule_for(message: &str, field: &str) -> Option<Rule> {
    ALLOWED
        .iter()
        .find(|(name, _)| *name == message)
        .and_then(|(_, fields)| fields.iter().find(|(f, _)| *f == field))
        .map(|(_, rule)| *rule)
}

/// Checks every set field of `msg` against the allowlist and normalizes `typed_config`s.
pub(crate) fn check(msg: &mut DynamicMessage) -> Result<(), ConfigError> {
    walk(msg, &FieldPath::root())
}

fn walk(msg: &mut DynamicMessage, path: &FieldPath) -> Result<(), ConfigError> {
    let desc = msg.descriptor();
    if is_leaf(desc.full_name()) {
        return Ok(());
    }
    // Field-number order, so the first offending field reported does not depend on hashing.
    let mut set: Vec<_> = msg.fields().map(|(f, _)| f).collect();
    set.sort_by_key(|f| f.number());
    for field in set {
        let fpath = path.field(field.name());
        let Some(rule) = rule_for(desc.full_name(), field.name()) else {
            return Err(ConfigError::unsupported(fpath));
        };
        let value = msg.get_field_mut(&field);
        match rule {
            Ignore => {}
            Walk => walk_value(value, &fpath)?,
            NetworkFilter => {
                let Value::Message(any) = value else { continue };
                let inner = resolve_any(any, &fpath, REDIS_PROXY, false, "filter type")?;
                *any = repack(walked(inner, &fpath)?)?;
            }
            ProtocolOptions => {
                let Value::Map(entries) = value else { continue };
                let mut keys: Vec<MapKey> = entries.keys().cloned().collect();
                keys.sort();
                for key in keys {
                    let name = match &key {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    let kpath = fpath.key(&name);
                    if !REDIS_PROXY_NAMES.contains(&name.as_str()) {
                        return Err(ConfigError::unsupported_because(
                            kpath,
                            format!("protocol options for '{name}' are not supported by redvoy"),
                        ));
                    }
                    let Some(Value::Message(any)) = entries.get_mut(&key) else {
                        continue;
                    };
                    // Envoy looks protocol options up by name and converts a plain Struct too.
                    let inner = resolve_any(
                        any,
                        &kpath,
                        REDIS_PROTOCOL_OPTIONS,
                        true,
                        "protocol options type",
                    )?;
                    *any = repack(walked(inner, &kpath)?)?;
                }
            }
            ClusterType => {
                let name = match value {
                    Value::Message(m) => m
                        .get_field_by_name("name")
                        .and_then(|v| v.as_str().map(str::to_owned)),
                    _ => None,
                }
                .unwrap_or_default();
                let message = if name == REDIS_CLUSTER_TYPE {
                    "cluster type envoy.clusters.redis (Redis Cluster) is not supported by redvoy yet".to_owned()
                } else {
                    format!("unsupported cluster type '{name}'")
                };
                return Err(ConfigError::unsupported_because(fpath, message));
            }
        }
    }
    Ok(())
}

fn walked(mut msg: DynamicMessage, path: &FieldPath) -> Result<DynamicMessage, ConfigError> {
    walk(&mut msg, path)?;
    Ok(msg)
}

fn walk_value(value: &mut Value, path: &FieldPath) -> Result<(), ConfigError> {
    match value {
        Value::Message(m) => walk_message_value(m, path),
        Value::List(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Message(m) = item {
                    walk_message_value(m, &path.index(i))?;
                }
            }
            Ok(())
        }
        Value::Map(entries) => {
            let mut keys: Vec<MapKey> = entries.keys().cloned().collect();
            keys.sort();
            for key in keys {
                let kpath = match &key {
                    MapKey::String(s) => path.key(s),
                    other => path.key(&format!("{other:?}")),
                };
                if let Some(Value::Message(m)) = entries.get_mut(&key) {
                    walk_message_value(m, &kpath)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn walk_message_value(m: &mut DynamicMessage, path: &FieldPath) -> Result<(), ConfigError> {
    // An `Any` is only accepted where a rule above resolves it.
    if m.descriptor().full_name() == "google.protobuf.Any" {
        return Err(ConfigError::unsupported(path));
    }
    walk(m, path)
}

/// Unpacks a `typed_config` whose native type must be `expected`, the way Envoy's
/// `translateOpaqueConfig` does: the native type itself; a TypedStruct (either package) whose
/// `type_url` names `expected`, its Struct converted through JSON with unknown fields refused;
/// a bare `google.protobuf.Struct` only where `allow_struct` (extension points looked up by
/// name; a filter looked up by type URL cannot be a Struct).
fn resolve_any(
    any: &DynamicMessage,
    path: &FieldPath,
    expected: &str,
    allow_struct: bool,
    noun: &str,
) -> Result<DynamicMessage, ConfigError> {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let value = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    if type_url.is_empty() {
        return Err(ConfigError::invalid(path, "typed_config has no @type"));
    }
    let pool = any.descriptor().parent_pool().clone();
    let desc_of = |name: &str| -> Result<MessageDescriptor, ConfigError> {
        pool.get_message_by_name(name)
            .ok_or_else(|| ConfigError::invalid(path, format!("message '{name}' not found")))
    };
    let decode = |name: &str, bytes: &[u8]| -> Result<DynamicMessage, ConfigError> {
        DynamicMessage::decode(desc_of(name)?, bytes)
            .map_err(|e| ConfigError::invalid(path, format!("cannot decode {name}: {e}")))
    };
    match type_name_of(&type_url) {
        name if name == expected => decode(name, &value),
        name @ (TYPED_STRUCT_XDS | TYPED_STRUCT_UDPA) => {
            let typed_struct = decode(name, &value)?;
            let inner_url = typed_struct
                .get_field_by_name("type_url")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if type_name_of(&inner_url) != expected {
                return Err(ConfigError::unsupported_because(
                    path,
                    format!("unsupported {noun} {inner_url} (in {name})"),
                ));
            }
            let fields = match typed_struct
                .get_field_by_name("value")
                .and_then(|v| v.as_message().cloned())
            {
                Some(fields) => fields,
                None => DynamicMessage::new(desc_of(STRUCT)?),
            };
            struct_to_message(&fields, &desc_of(expected)?, path)
        }
        STRUCT if allow_struct => {
            struct_to_message(&decode(STRUCT, &value)?, &desc_of(expected)?, path)
        }
        _ => Err(ConfigError::unsupported_because(
            path,
            format!("unsupported {noun} {type_url}"),
        )),
    }
}

/// A `google.protobuf.Struct` read as the JSON form of `target` (Envoy's `jsonConvert`).
fn struct_to_message(
    fields: &DynamicMessage,
    target: &MessageDescriptor,
    path: &FieldPath,
) -> Result<DynamicMessage, ConfigError> {
    let mut json = serde_json::to_value(fields)
        .map_err(|e| ConfigError::invalid(path, format!("cannot read Struct as JSON: {e}")))?;
    // Envoy's JSON conversion is as lenient with enum case as its YAML loading.
    crate::parse::normalize(&mut json, target);
    let mut track = serde_path_to_error::Track::new();
    DynamicMessage::deserialize(
        target.clone(),
        serde_path_to_error::Deserializer::new(json, &mut track),
    )
    .map_err(|e| {
        let inner = track.path().to_string();
        let at = if inner.is_empty() || inner == "." {
            path.clone()
        } else {
            path.field(&inner)
        };
        let message = format!("as {}: {e}", target.full_name());
        ConfigError::invalid(
            crate::parse::with_unknown_field(at.as_str(), &message),
            message,
        )
    })
}

/// The native `Any` for a resolved message (canonical type URL).
fn repack(msg: DynamicMessage) -> Result<DynamicMessage, ConfigError> {
    let any_desc = crate::descriptors::message("google.protobuf.Any")?;
    let mut any = DynamicMessage::new(any_desc);
    any.set_field_by_name(
        "type_url",
        Value::String(format!("{TYPE_URL_PREFIX}{}", msg.descriptor().full_name())),
    );
    any.set_field_by_name("value", Value::Bytes(msg.encode_to_vec().into()));
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every allowlisted message and field exists in the descriptor set, so a typo or an
    /// envoy-types bump that renames a field cannot silently drop a rule.
    #[test]
    fn allowlist_names_exist() {
        let pool = crate::descriptors::pool().unwrap();
        for (message, fields) in ALLOWED {
            let desc = pool
                .get_message_by_name(message)
                .unwrap_or_else(|| panic!("no message {message}"));
            for (field, _) in *fields {
                assert!(
                    desc.get_field_by_name(field).is_some(),
                    "no field {message}.{field}"
                );
            }
        }
    }
}
