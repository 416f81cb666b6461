//! Typed envoy-types messages → [`crate::model`], applying Envoy's defaults and the checks Envoy
//! makes at load (proto constraints on the fields redvoy accepts, and the filter's and cluster
//! manager's own errors, with Envoy's wording where it has one).
//!
//! Runs after [`crate::supported::check`], so any field not read here is known to be unset or
//! harmless; `typed_config`s are already native `Any`s of the expected type.
//!
//! Every conversion destructures its message with every field named, those it does not read
//! bound to `_` (with the allowlist's reason where it has one), so that a field added by a
//! newer envoy-types fails to compile here, and one the allowlist accepts but nothing reads
//! stands out. Enums are matched by name through their prost types, never by number.

mod cluster;
mod dynamic;
mod http;
mod listener;
mod runtime;
mod stats;
mod tls;

pub(crate) use cluster::{assignment_endpoints, cluster};
pub(crate) use listener::listener;
pub(crate) use stats::one_line as regex_error_line;
pub use stats::DEFAULT_TAG_NAMES;
pub(crate) use tls::secret;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap};
use envoy_types::pb::envoy::config::core::v3::{
    address, data_source, socket_address, Address, DataSource, Locality, Node, Pipe,
    RuntimeFractionalPercent, SocketAddress,
};
use envoy_types::pb::envoy::config::overload::v3::{
    resource_monitor, OverloadManager, ResourceMonitor,
};
use envoy_types::pb::envoy::extensions::resource_monitors::downstream_connections::v3::DownstreamConnectionsConfig;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;

use crate::error::FieldPath;
use crate::supported::DOWNSTREAM_CONNECTIONS_CONFIG;
use crate::{model, ConfigError, LoadOptions};

/// Largest file a `DataSource.filename` may name (passwords and usernames are bytes long).
const MAX_DATA_SOURCE_BYTES: u64 = 1 << 20;

/// Envoy's `Admin.profile_path` when unset.
const DEFAULT_PROFILE_PATH: &str = "/var/log/envoy/envoy.prof";
/// `Pipe.mode` proto constraint (`lte: 511`, i.e. 0o777).
const MAX_PIPE_MODE: u32 = 0o777;

pub(crate) fn bootstrap(
    b: Bootstrap,
    source: model::BootstrapSource,
    opts: &LoadOptions,
) -> Result<model::Bootstrap, ConfigError> {
    #[allow(deprecated)]
    let Bootstrap {
        node,
        static_resources,
        dynamic_resources,
        admin,
        stats_config,
        stats_flush_interval,
        layered_runtime,
        overload_manager,
        // Accepted without effect (see supported.rs): the internal listener registry only. Of
        // the cluster manager, the outlier event log path is read below.
        bootstrap_extensions: _,
        cluster_manager,
        // Ignored by the allowlist: log format, and when stats are created.
        application_log_config: _,
        deferred_stat_options: _,
        // Refused by the allowlist.
        node_context_params: _,
        hds_config: _,
        flags_path: _,
        stats_sinks: _,
        watchdog: _,
        watchdogs: _,
        tracing: _,
        enable_dispatcher_stats: _,
        header_prefix: _,
        stats_server_version_override: _,
        use_tcp_for_dns_lookups: _,
        dns_resolution_config: _,
        typed_dns_resolver_config: _,
        fatal_actions: _,
        config_sources: _,
        default_config_source: _,
        default_socket_interface: _,
        certificate_provider_instances: _,
        inline_headers: _,
        perf_tracing_file_path: _,
        default_regex_engine: _,
        xds_delegate_extension: _,
        xds_config_tracker_extension: _,
        listener_manager: _,
        grpc_async_client_manager_config: _,
        memory_allocator_manager: _,
        enable_worker_cpu_affinity: _,
        stats_flush: _,
        stats_eviction: _,
    } = b;
    let root = FieldPath::root();
    let node = self::node(node, opts);
    let admin = match &admin {
        Some(a) => self::admin(a, &root.field("admin"))?,
        None => None,
    };
    let stats_config = match &stats_config {
        Some(s) => stats::stats_config(s, &root.field("stats_config"))?,
        None => model::StatsConfig::default(),
    };
    let stats_flush_interval = stats::flush_interval(
        stats_flush_interval.as_ref(),
        &root.field("stats_flush_interval"),
    )?;
    let runtime = match &layered_runtime {
        Some(r) => runtime::layered_runtime(r, &root.field("layered_runtime"))?,
        None => model::Runtime::default(),
    };
    let global_connection_limit = match &overload_manager {
        Some(o) => self::overload_manager(o, &root.field("overload_manager"))?,
        None => None,
    };
    let StaticResources {
        listeners: static_listeners,
        clusters: static_clusters,
        secrets: static_secrets,
    } = static_resources.unwrap_or_default();
    let sr = root.field("static_resources");
    let mut secrets: Vec<model::Secret> = Vec::with_capacity(static_secrets.len());
    for (i, s) in static_secrets.iter().enumerate() {
        let p = sr.field("secrets").index(i);
        let secret = tls::secret(s, &p)?;
        if secrets.iter().any(|s| s.name == secret.name) {
            return Err(ConfigError::invalid(
                p.field("name"),
                format!(
                    "Duplicate static TlsCertificate secret name {}",
                    secret.name
                ),
            ));
        }
        secrets.push(secret);
    }

    let mut clusters = Vec::with_capacity(static_clusters.len());
    let mut cluster_names = HashSet::new();
    for (i, c) in static_clusters.into_iter().enumerate() {
        let p = sr.field("clusters").index(i);
        let c = cluster::cluster(c, &p)?;
        if !cluster_names.insert(c.name.clone()) {
            return Err(ConfigError::invalid(
                p.field("name"),
                format!("cluster manager: duplicate cluster '{}'", c.name),
            ));
        }
        clusters.push(c);
    }

    let dynamic_resources = match &dynamic_resources {
        Some(d) => {
            let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
            Some(dynamic::dynamic_resources(
                d,
                &root.field("dynamic_resources"),
                &names,
                &node,
            )?)
        }
        None => None,
    };

    let mut listeners = Vec::with_capacity(static_listeners.len());
    let mut listener_names = HashSet::new();
    for (i, l) in static_listeners.into_iter().enumerate() {
        let p = sr.field("listeners").index(i);
        let l = listener::listener(l, &p)?;
        // Envoy would treat a second listener of the same name as an update of the first and
        // keep only one; refusing is clearer than silently dropping a listener.
        if !l.name.is_empty() && !listener_names.insert(l.name.clone()) {
            return Err(ConfigError::invalid(
                p.field("name"),
                format!("duplicate listener name '{}'", l.name),
            ));
        }
        listeners.push(l);
    }

    // Envoy looks a static secret up when it builds the TLS context that names it.
    let known = |name: &str| secrets.iter().any(|s| s.name == name);
    let unknown = |refs: Vec<&model::SdsSecretConfig>, p: FieldPath| match refs
        .into_iter()
        .find(|r| r.sds_config.is_none() && !known(&r.name))
    {
        Some(r) => Err(ConfigError::invalid(
            p,
            format!("Unknown static secret: {}", r.name),
        )),
        None => Ok(()),
    };
    for (i, c) in clusters.iter().enumerate() {
        if let Some(tls) = &c.upstream_tls {
            let refs = tls
                .client_certificate_sds
                .iter()
                .chain(tls.validation_sds.iter())
                .collect();
            unknown(
                refs,
                sr.field("clusters").index(i).field("transport_socket"),
            )?;
        }
    }
    for (i, l) in listeners.iter().enumerate() {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            if let Some(tls) = &chain.tls {
                let refs = tls
                    .certificate_sds
                    .iter()
                    .chain(tls.validation_sds.iter())
                    .collect();
                unknown(refs, sr.field("listeners").index(i))?;
            }
        }
    }

    let outlier_event_log_path = cluster_manager
        .as_ref()
        .and_then(|cm| cm.outlier_detection.as_ref())
        .map(|od| od.event_log_path.clone())
        .filter(|path| !path.is_empty());
    Ok(model::Bootstrap {
        outlier_event_log_path,
        node,
        admin,
        listeners,
        clusters,
        dynamic_resources,
        stats_config,
        stats_flush_interval,
        runtime,
        global_connection_limit,
        secrets,
        source,
    })
}

/// The name the global downstream connection limit must have.
const GLOBAL_CX_MONITOR: &str = "envoy.resource_monitors.global_downstream_max_connections";

/// `overload_manager`: its one supported resource monitor, the global downstream connection
/// limit (the allowlist refused actions, load shed points and every other monitor).
fn overload_manager(
    o: &OverloadManager,
    p: &FieldPath,
) -> Result<Option<model::GlobalConnectionLimit>, ConfigError> {
    let OverloadManager {
        resource_monitors,
        // Only paces reactive monitors, which are refused.
        refresh_interval: _,
        // Refused by the allowlist.
        actions: _,
        loadshed_points: _,
        buffer_factory_config: _,
    } = o;
    let mut limit = None;
    let mut names = HashSet::new();
    for (i, monitor) in resource_monitors.iter().enumerate() {
        let ResourceMonitor { name, config_type } = monitor;
        let mp = p.field("resource_monitors").index(i);
        if name.is_empty() {
            return Err(ConfigError::proto_constraint(
                &mp.field("name"),
                "ResourceMonitor",
                "value length must be at least 1 characters",
            ));
        }
        // The connection limit is a proactive resource Envoy knows by this name only.
        if name != GLOBAL_CX_MONITOR {
            return Err(ConfigError::invalid(
                mp.field("name"),
                format!(
                    "Didn't find a registered implementation for '{name}' with type URL: \
                     '{DOWNSTREAM_CONNECTIONS_CONFIG}'"
                ),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(ConfigError::invalid(
                mp.field("name"),
                format!("Duplicate resource monitor {name}"),
            ));
        }
        let tp = mp.field("typed_config");
        let config = match config_type {
            Some(resource_monitor::ConfigType::TypedConfig(any)) => {
                DownstreamConnectionsConfig::decode(any.value.as_slice()).map_err(|e| {
                    ConfigError::invalid(
                        &tp,
                        format!("cannot decode DownstreamConnectionsConfig: {e}"),
                    )
                })?
            }
            None => {
                return Err(ConfigError::invalid(&tp, "typed_config: value is required"));
            }
        };
        let DownstreamConnectionsConfig {
            max_active_downstream_connections,
        } = config;
        let max = u64::try_from(max_active_downstream_connections)
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                ConfigError::proto_constraint(
                    &tp.field("max_active_downstream_connections"),
                    "DownstreamConnectionsConfig",
                    "value must be greater than 0",
                )
            })?;
        limit = Some(model::GlobalConnectionLimit {
            monitor_name: name.clone(),
            max_active_downstream_connections: max,
        });
    }
    Ok(limit)
}

/// `admin`: no admin listener without an address, as in Envoy.
fn admin(a: &Admin, p: &FieldPath) -> Result<Option<model::Admin>, ConfigError> {
    #[allow(deprecated)]
    let Admin {
        address,
        profile_path,
        ignore_global_conn_limit,
        // Admin access logs change no proxy behaviour (ignored by the allowlist).
        access_log: _,
        access_log_path: _,
        // Refused by the allowlist.
        socket_options: _,
        allow_paths: _,
    } = a;
    let Some(address) = address else {
        return Ok(None);
    };
    let ap = p.field("address");
    let Address { address: kind } = address;
    let (address, pipe) = match kind {
        Some(address::Address::Pipe(p)) => {
            let unused = model::SocketAddress {
                address: String::new(),
                port: 0,
            };
            (unused, Some(pipe(p, &ap.field("pipe"))?))
        }
        _ => (socket_address(address, &ap, AddressKind::Bind)?, None),
    };
    let profile_path = if profile_path.is_empty() {
        DEFAULT_PROFILE_PATH.to_owned()
    } else {
        profile_path.clone()
    };
    Ok(Some(model::Admin {
        address,
        pipe,
        profile_path,
        ignore_global_conn_limit: *ignore_global_conn_limit,
    }))
}

/// `config.core.v3.Pipe` with its proto constraints.
pub(crate) fn pipe(pipe: &Pipe, pp: &FieldPath) -> Result<model::Pipe, ConfigError> {
    let Pipe { path, mode } = pipe;
    if path.is_empty() {
        return Err(ConfigError::invalid(
            pp.field("path"),
            "value length must be at least 1 characters",
        ));
    }
    if *mode > MAX_PIPE_MODE {
        return Err(ConfigError::invalid(
            pp.field("mode"),
            format!("value must be less than or equal to {MAX_PIPE_MODE}"),
        ));
    }
    Ok(model::Pipe {
        path: path.clone(),
        mode: *mode,
    })
}

/// `node`, overridden by `--service-node/--service-cluster/--service-zone` as Envoy does.
fn node(node: Option<Node>, opts: &LoadOptions) -> model::Node {
    let mut n = node.unwrap_or_default();
    let pick = |flag: &Option<String>, from_config: &mut String| {
        if let Some(v) = flag.as_ref().filter(|v| !v.is_empty()) {
            from_config.clone_from(v);
        }
    };
    pick(&opts.service_node, &mut n.id);
    pick(&opts.service_cluster, &mut n.cluster);
    if let Some(zone) = opts.service_zone.as_ref().filter(|v| !v.is_empty()) {
        n.locality
            .get_or_insert_with(Default::default)
            .zone
            .clone_from(zone);
    }
    let encoded = n.encode_to_vec().into();
    #[allow(deprecated)]
    let Node {
        id,
        cluster,
        locality,
        // Only for management servers, which get the whole node as `encoded`.
        metadata: _,
        user_agent_name: _,
        user_agent_version_type: _,
        // Refused by the allowlist.
        dynamic_parameters: _,
        extensions: _,
        client_features: _,
        listening_addresses: _,
    } = n;
    let Locality {
        zone,
        // Only for management servers, in `encoded`.
        region: _,
        sub_zone: _,
    } = locality.unwrap_or_default();
    model::Node {
        id,
        cluster,
        zone,
        encoded,
    }
}

/// What a socket address is used for, which decides whether a host name is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressKind {
    /// Listener and admin addresses are bound: Envoy requires an IP literal.
    Bind,
    /// STATIC cluster endpoints: IP literal, with Envoy's hint about DNS cluster types.
    StaticEndpoint,
    /// STRICT_DNS / LOGICAL_DNS endpoints: a name to resolve.
    DnsEndpoint,
}

/// `config.core.v3.Address` that must be a `socket_address` (other kinds were refused).
pub(crate) fn socket_address(
    a: &Address,
    p: &FieldPath,
    kind: AddressKind,
) -> Result<model::SocketAddress, ConfigError> {
    let Address { address } = a;
    let sa = match address {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => {
            return Err(ConfigError::unsupported_because(
                p.field("pipe"),
                "pipe addresses are only supported by redvoy for admin and STATIC/EDS cluster \
                 endpoints",
            ));
        }
        _ => return Err(ConfigError::invalid(p, "address is required")),
    };
    let SocketAddress {
        address,
        port_specifier,
        // TCP when unset; UDP is refused by the allowlist.
        protocol: _,
        // Refused by the allowlist.
        resolver_name: _,
        ipv4_compat: _,
        network_namespace_filepath: _,
    } = sa;
    let sp = p.field("socket_address");
    if address.is_empty() {
        return Err(ConfigError::invalid(
            sp.field("address"),
            "value length must be at least 1 characters",
        ));
    }
    let port = match *port_specifier {
        Some(socket_address::PortSpecifier::PortValue(port)) => port,
        // Named ports were refused by the allowlist.
        _ => {
            return Err(ConfigError::invalid(
                sp.field("port_value"),
                "port_value is required",
            ))
        }
    };
    let port = u16::try_from(port).map_err(|_| {
        ConfigError::invalid(
            sp.field("port_value"),
            "value must be less than or equal to 65535",
        )
    })?;
    let is_ip = address.parse::<std::net::IpAddr>().is_ok();
    match kind {
        AddressKind::Bind if !is_ip => {
            return Err(ConfigError::invalid(
                sp.field("address"),
                format!("malformed IP address: {address}"),
            ));
        }
        AddressKind::StaticEndpoint if !is_ip => {
            return Err(ConfigError::invalid(
                sp.field("address"),
                format!(
                    "malformed IP address: {address}. Consider setting resolver_name or setting \
                     cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'"
                ),
            ));
        }
        _ => {}
    }
    Ok(model::SocketAddress {
        address: address.clone(),
        port,
    })
}

/// A proto Duration as a std one; negative durations are rejected as Envoy does.
pub(crate) fn duration(d: &PbDuration, p: &FieldPath) -> Result<Duration, ConfigError> {
    let PbDuration { seconds, nanos } = *d;
    let (Ok(secs), Ok(nanos)) = (u64::try_from(seconds), u32::try_from(nanos)) else {
        return Err(ConfigError::invalid(
            p,
            "Invalid duration: Expected positive duration",
        ));
    };
    if nanos >= 1_000_000_000 {
        return Err(ConfigError::invalid(
            p,
            "Invalid duration: nanos out of range",
        ));
    }
    Ok(Duration::new(secs, nanos))
}

/// `RuntimeFractionalPercent` → model; no `default_value` means 0 %.
pub(crate) fn runtime_fraction(r: &RuntimeFractionalPercent) -> model::RuntimeFraction {
    let RuntimeFractionalPercent {
        default_value,
        runtime_key,
    } = r;
    let (numerator, denominator) = match default_value {
        Some(FractionalPercent {
            numerator,
            denominator,
        }) => {
            let denominator = match DenominatorType::try_from(*denominator) {
                Ok(DenominatorType::TenThousand) => 10_000,
                Ok(DenominatorType::Million) => 1_000_000,
                // Unknown values cannot get past the parser; HUNDRED is the default.
                Ok(DenominatorType::Hundred) | Err(_) => 100,
            };
            (*numerator, denominator)
        }
        None => (0, 100),
    };
    model::RuntimeFraction {
        runtime_key: runtime_key.clone(),
        numerator,
        denominator,
    }
}

/// Reads a `DataSource` once, at load (as Envoy's redis_proxy does). Errors use Envoy's words.
pub(crate) fn data_source(d: &DataSource, p: &FieldPath) -> Result<Bytes, ConfigError> {
    let DataSource {
        specifier,
        // Refused by the allowlist: a credential is read once, at load.
        watched_directory: _,
    } = d;
    match specifier {
        Some(data_source::Specifier::InlineString(s)) => Ok(Bytes::from(s.clone().into_bytes())),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(Bytes::from(b.clone())),
        Some(data_source::Specifier::Filename(f)) => {
            let fp = p.field("filename");
            if f.is_empty() {
                return Err(ConfigError::invalid(
                    fp,
                    "value length must be at least 1 characters",
                ));
            }
            let meta = std::fs::metadata(f)
                .map_err(|_| ConfigError::invalid(&fp, format!("Invalid path: {f}")))?;
            if !meta.is_file() {
                return Err(ConfigError::invalid(fp, format!("Invalid path: {f}")));
            }
            if meta.len() > MAX_DATA_SOURCE_BYTES {
                return Err(ConfigError::invalid(
                    fp,
                    format!(
                        "file {f} is larger than redvoy's limit of {MAX_DATA_SOURCE_BYTES} bytes"
                    ),
                ));
            }
            std::fs::read(f)
                .map(Bytes::from)
                .map_err(|e| ConfigError::invalid(fp, format!("cannot read {f}: {e}")))
        }
        Some(data_source::Specifier::EnvironmentVariable(v)) => {
            let vp = p.field("environment_variable");
            if v.is_empty() {
                return Err(ConfigError::invalid(
                    vp,
                    "value length must be at least 1 characters",
                ));
            }
            match std::env::var_os(v) {
                Some(value) => Ok(Bytes::from(value.into_encoded_bytes())),
                None => Err(ConfigError::invalid(
                    vp,
                    format!("Environment variable doesn't exist: {v}"),
                )),
            }
        }
        None => Err(ConfigError::invalid(p, "specifier is required")),
    }
}

/// An optional credential: unset and empty both mean "none", as in Envoy, where an empty
/// password or username disables the corresponding AUTH.
pub(crate) fn optional_secret(
    d: Option<&DataSource>,
    p: &FieldPath,
) -> Result<Option<Bytes>, ConfigError> {
    match d {
        Some(d) => Ok(Some(data_source(d, p)?).filter(|b| !b.is_empty())),
        None => Ok(None),
    }
}
