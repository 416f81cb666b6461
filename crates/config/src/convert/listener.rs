//! Listeners and the `redis_proxy` filter (`RP/config.cc`, `RP/router_impl.cc` checks).

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    ClusterSpecifier, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::conn_pool_settings::ReadPolicy;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::prefix_routes::route::{
    ReadCommandPolicy, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::prefix_routes::Route;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::redis_fault::RedisFaultType;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::{
    ConnPoolSettings, PrefixRoutes, ProtocolVersion, RedisFault,
};
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::RedisProxy;
use prost::Message;

use super::{
    data_source, duration, optional_secret, runtime_fraction, socket_address, AddressKind,
};
use crate::error::FieldPath;
use crate::parse::type_name_of;
use crate::supported::{HTTP_CONNECTION_MANAGER, REDIS_PROXY, TCP_PROXY};
use crate::{model, ConfigError};

/// `DnsCacheConfig.dns_refresh_rate` and `max_hosts` when unset (Envoy's defaults).
const DEFAULT_DNS_CACHE_REFRESH_RATE: Duration = Duration::from_secs(60);
const DEFAULT_DNS_CACHE_MAX_HOSTS: u32 = 1024;

/// `ConnPoolSettings.buffer_flush_timeout` when unset (`CR/client_impl.cc`).
const DEFAULT_BUFFER_FLUSH_TIMEOUT: Duration = Duration::from_millis(3);
/// `ConnPoolSettings.max_upstream_unknown_connections` when unset.
const DEFAULT_MAX_UPSTREAM_UNKNOWN_CONNECTIONS: u32 = 100;
/// `Route.prefix` proto constraint.
const MAX_PREFIX_BYTES: usize = 1000;
/// The only substitution redvoy implements in `key_formatter`.
const KEY_COMMAND: &str = "%KEY%";

pub(crate) fn listener(l: Listener, p: &FieldPath) -> Result<model::Listener, ConfigError> {
    #[allow(deprecated)]
    let Listener {
        name,
        address,
        filter_chains,
        default_filter_chain,
        traffic_direction,
        bind_to_port,
        use_original_dst,
        ignore_global_conn_limit,
        bypass_overload_manager,
        // Ignored by the allowlist: read by other extensions only, tuning, or moot without
        // listener filters.
        metadata: _,
        per_connection_buffer_limit_bytes,
        listener_filters_timeout,
        continue_on_listener_filters_timeout,
        listener_filters,
        // Refused by the allowlist.
        additional_addresses: _,
        stat_prefix: _,
        stats_matcher: _,
        fcds_config: _,
        filter_chain_matcher: _,
        per_connection_buffer_high_watermark_timeout: _,
        deprecated_v1: _,
        drain_type: _,
        transparent: _,
        freebind: _,
        socket_options: _,
        tcp_fast_open_queue_length: _,
        udp_listener_config: _,
        api_listener: _,
        connection_balance_config: _,
        reuse_port: _,
        enable_reuse_port: _,
        access_log: _,
        tcp_backlog_size: _,
        max_connections_to_accept_per_socket_event: _,
        enable_mptcp: _,
        tcp_keepalive: _,
        listener_specifier: _,
    } = l;
    let Some(address) = &address else {
        return Err(ConfigError::invalid(
            p.field("address"),
            format!("error adding listener named '{name}': address is necessary"),
        ));
    };
    let address = socket_address(address, &p.field("address"), AddressKind::Bind)?;
    let traffic_direction = match TrafficDirection::try_from(traffic_direction) {
        Ok(TrafficDirection::Unspecified) => model::TrafficDirection::Unspecified,
        Ok(TrafficDirection::Inbound) => model::TrafficDirection::Inbound,
        Ok(TrafficDirection::Outbound) => model::TrafficDirection::Outbound,
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("traffic_direction"),
                "value must be one of the defined enum values",
            ));
        }
    };

    let chains_p = p.field("filter_chains");
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return Err(ConfigError::invalid(
            chains_p,
            format!("error adding listener '{address}': no filter chains specified"),
        ));
    }
    let mut chains = Vec::with_capacity(filter_chains.len());
    let mut seen_matches: Vec<(usize, &FilterChainMatch)> = Vec::new();
    let default_match = FilterChainMatch::default();
    for (i, chain) in filter_chains.iter().enumerate() {
        let cp = chains_p.index(i);
        let m = chain.filter_chain_match.as_ref().unwrap_or(&default_match);
        if let Some((first, _)) = seen_matches.iter().find(|(_, seen)| *seen == m) {
            let first_name = filter_chains
                .get(*first)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            return Err(ConfigError::invalid(
                cp.field("filter_chain_match"),
                format!(
                    "error adding listener '{address}': filter chain '{}' has the same matching \
                     rules defined as '{first_name}'",
                    chain.name
                ),
            ));
        }
        seen_matches.push((i, m));
        chains.push(filter_chain(chain, &cp)?);
    }
    let default_filter_chain = match &default_filter_chain {
        Some(c) => Some(filter_chain(c, &p.field("default_filter_chain"))?),
        None => None,
    };
    let inspectors = listener_filters_of(&listener_filters, &p.field("listener_filters"))?;
    let listener_filters_timeout = match &listener_filters_timeout {
        None => Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
        Some(d) => {
            Some(duration(d, &p.field("listener_filters_timeout"))?).filter(|d| !d.is_zero())
        }
    };
    Ok(model::Listener {
        name,
        address,
        traffic_direction,
        bind_to_port: bind_to_port.is_none_or(|b| b.value),
        use_original_dst: use_original_dst.is_some_and(|b| b.value) || inspectors.original_dst,
        tls_inspector: inspectors.tls,
        http_inspector: inspectors.http,
        listener_filters_timeout,
        continue_on_listener_filters_timeout,
        bypass_overload_manager,
        ignore_global_conn_limit,
        filter_chains: chains,
        default_filter_chain,
        per_connection_buffer_limit_bytes: per_connection_buffer_limit_bytes
            .map_or(DEFAULT_PER_CONNECTION_BUFFER_LIMIT_BYTES, |v| v.value),
    })
}

/// `Listener.per_connection_buffer_limit_bytes` when unset (Envoy's 1 MiB).
const DEFAULT_PER_CONNECTION_BUFFER_LIMIT_BYTES: u32 = 1024 * 1024;

/// `Listener.listener_filters_timeout` when unset.
const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// Which listener filters a listener runs (the allowlist refused every other kind).
#[derive(Default)]
struct Inspectors {
    tls: bool,
    http: bool,
    original_dst: bool,
}

fn listener_filters_of(
    filters: &[envoy_types::pb::envoy::config::listener::v3::ListenerFilter],
    p: &FieldPath,
) -> Result<Inspectors, ConfigError> {
    use envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType;
    let mut out = Inspectors::default();
    for (i, f) in filters.iter().enumerate() {
        let fp = p.index(i);
        let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
            return Err(ConfigError::unsupported_because(
                fp.field("typed_config"),
                format!(
                    "listener filter '{}' without a typed_config is not supported by redvoy",
                    f.name
                ),
            ));
        };
        match type_name_of(&any.type_url) {
            crate::supported::TLS_INSPECTOR => out.tls = true,
            crate::supported::HTTP_INSPECTOR => out.http = true,
            crate::supported::ORIGINAL_DST_FILTER => out.original_dst = true,
            other => {
                return Err(ConfigError::unsupported_because(
                    fp.field("typed_config"),
                    format!("listener filter {other} is not supported by redvoy"),
                ))
            }
        }
    }
    Ok(out)
}

/// Names Envoy registers the terminal filters under (for its "must be the last filter" error).
fn terminal_filter_name(type_name: &str) -> Option<&'static str> {
    match type_name {
        REDIS_PROXY => Some("envoy.filters.network.redis_proxy"),
        TCP_PROXY => Some("envoy.filters.network.tcp_proxy"),
        HTTP_CONNECTION_MANAGER => Some("envoy.filters.network.http_connection_manager"),
        _ => None,
    }
}

/// A filter chain: its match, and its one terminal filter (tolerated non-terminal filters are
/// dropped; the allowlist walk refused every other kind).
fn filter_chain(c: &FilterChain, p: &FieldPath) -> Result<model::FilterChain, ConfigError> {
    #[allow(deprecated)]
    let FilterChain {
        name,
        filter_chain_match,
        filters,
        transport_socket,
        // Read by other extensions, never by redis_proxy (ignored by the allowlist).
        metadata: _,
        // Refused by the allowlist.
        use_proxy_proto: _,
        transport_socket_connect_timeout: _,
    } = c;
    let tls = super::tls::downstream_tls(transport_socket.as_ref(), p)?;
    let filter_chain_match = match filter_chain_match {
        Some(m) => self::filter_chain_match(m, &p.field("filter_chain_match"))?,
        None => model::FilterChainMatch::default(),
    };
    let filters_p = p.field("filters");
    let mut terminal = None;
    let last = filters.len().saturating_sub(1);
    for (i, f) in filters.iter().enumerate() {
        let Filter {
            name: filter_name,
            config_type,
        } = f;
        let fp = filters_p.index(i).field("typed_config");
        let Some(filter::ConfigType::TypedConfig(any)) = config_type else {
            return Err(ConfigError::unsupported_because(
                fp,
                format!(
                    "network filter '{filter_name}' without a typed_config is not supported by \
                     redvoy"
                ),
            ));
        };
        let type_name = type_name_of(&any.type_url);
        let Some(envoy_name) = terminal_filter_name(type_name) else {
            // A tolerated (Istio) filter: dropped, but it cannot end the chain.
            if i == last {
                return Err(ConfigError::unsupported_because(
                    fp,
                    format!(
                        "filter chain ends in '{filter_name}' ({}), not a terminal filter redvoy \
                         implements",
                        any.type_url
                    ),
                ));
            }
            continue;
        };
        if i != last {
            return Err(ConfigError::invalid(
                filters_p.index(i),
                format!(
                    "Error: terminal filter named {filter_name} of type {envoy_name} must be the \
                     last filter in a network filter chain."
                ),
            ));
        }
        // The allowlist walk already resolved and re-packed it as the native type.
        terminal = Some(match type_name {
            REDIS_PROXY => {
                let proxy = RedisProxy::decode(any.value.as_slice()).map_err(|e| {
                    ConfigError::invalid(&fp, format!("cannot decode RedisProxy: {e}"))
                })?;
                model::NetworkFilter::RedisProxy(Box::new(redis_proxy(proxy, &fp)?))
            }
            TCP_PROXY => {
                let t = TcpProxy::decode(any.value.as_slice()).map_err(|e| {
                    ConfigError::invalid(&fp, format!("cannot decode TcpProxy: {e}"))
                })?;
                model::NetworkFilter::TcpProxy(tcp_proxy(&t, &fp)?)
            }
            _ => {
                let h = HttpConnectionManager::decode(any.value.as_slice()).map_err(|e| {
                    ConfigError::invalid(&fp, format!("cannot decode HttpConnectionManager: {e}"))
                })?;
                model::NetworkFilter::HttpConnectionManager(Box::new(super::http::hcm(&h, &fp)?))
            }
        });
    }
    let Some(filter) = terminal else {
        return Err(ConfigError::unsupported_because(
            filters_p,
            "a filter chain without a terminal filter redvoy implements (redis_proxy, tcp_proxy, \
             http_connection_manager) is not supported",
        ));
    };
    Ok(model::FilterChain {
        name: name.clone(),
        filter_chain_match,
        filter,
        tls,
    })
}

/// Largest `destination_port` (`lte: 65535`; `gte: 1`).
const MAX_PORT: u32 = 65_535;

fn filter_chain_match(
    m: &FilterChainMatch,
    p: &FieldPath,
) -> Result<model::FilterChainMatch, ConfigError> {
    let FilterChainMatch {
        destination_port,
        prefix_ranges,
        source_prefix_ranges,
        source_ports,
        server_names,
        transport_protocol,
        application_protocols,
        // Refused by the allowlist.
        address_suffix: _,
        suffix_len: _,
        direct_source_prefix_ranges: _,
        source_type: _,
    } = m;
    let destination_port = match destination_port {
        Some(port) => {
            let port = u16::try_from(port.value)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    ConfigError::invalid(
                        p.field("destination_port"),
                        format!("value must be inside range [1, {MAX_PORT}]"),
                    )
                })?;
            Some(port)
        }
        None => None,
    };
    let mut ports = Vec::with_capacity(source_ports.len());
    for (i, port) in source_ports.iter().enumerate() {
        let port = u16::try_from(*port)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                ConfigError::invalid(
                    p.field("source_ports").index(i),
                    format!("value must be inside range [1, {MAX_PORT}]"),
                )
            })?;
        ports.push(port);
    }
    for (i, name) in server_names.iter().enumerate() {
        // Envoy's check: a wildcard only as the whole first label.
        if name.contains('*') && !(name.starts_with("*.") && name[1..].find('*').is_none()) {
            return Err(ConfigError::invalid(
                p.field("server_names").index(i),
                format!(
                    "error adding listener: partial wildcards are not supported in \
                         \"server_names\": {name}"
                ),
            ));
        }
    }
    Ok(model::FilterChainMatch {
        destination_port,
        prefix_ranges: cidr_ranges(prefix_ranges, &p.field("prefix_ranges"))?,
        source_prefix_ranges: cidr_ranges(source_prefix_ranges, &p.field("source_prefix_ranges"))?,
        source_ports: ports,
        server_names: server_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        transport_protocol: transport_protocol.clone(),
        application_protocols: application_protocols.clone(),
    })
}

/// `CidrRange.prefix_len` proto constraint (`lte: 128`).
const MAX_PREFIX_LEN: u32 = 128;

fn cidr_ranges(ranges: &[CidrRange], p: &FieldPath) -> Result<Vec<model::CidrRange>, ConfigError> {
    let mut out = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        let CidrRange {
            address_prefix,
            prefix_len,
        } = r;
        let rp = p.index(i);
        if address_prefix.is_empty() {
            return Err(ConfigError::invalid(
                rp.field("address_prefix"),
                "value length must be at least 1 characters",
            ));
        }
        let address: std::net::IpAddr = address_prefix.parse().map_err(|_| {
            ConfigError::invalid(
                rp.field("address_prefix"),
                format!("malformed IP address: {address_prefix}"),
            )
        })?;
        let len = prefix_len.map_or(0, |v| v.value);
        if len > MAX_PREFIX_LEN {
            return Err(ConfigError::invalid(
                rp.field("prefix_len"),
                format!("value must be less than or equal to {MAX_PREFIX_LEN}"),
            ));
        }
        // Envoy clamps a too-long prefix to the address family's width.
        let width = if address.is_ipv4() { 32 } else { 128 };
        out.push(model::CidrRange {
            address,
            prefix_len: u8::try_from(len.min(width)).unwrap_or(u8::MAX),
        });
    }
    Ok(out)
}

/// `TcpProxy.idle_timeout` when unset.
const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

fn tcp_proxy(t: &TcpProxy, p: &FieldPath) -> Result<model::TcpProxy, ConfigError> {
    #[allow(deprecated)]
    let TcpProxy {
        stat_prefix,
        cluster_specifier,
        idle_timeout,
        // Access logs never change what is proxied (ignored by the allowlist).
        access_log: _,
        access_log_options: _,
        // Refused by the allowlist.
        on_demand: _,
        metadata_match: _,
        downstream_idle_timeout: _,
        upstream_idle_timeout: _,
        max_connect_attempts: _,
        backoff_options: _,
        hash_policy: _,
        tunneling_config: _,
        max_downstream_connection_duration: _,
        max_downstream_connection_duration_jitter_percentage: _,
        access_log_flush_interval: _,
        flush_access_log_on_connected: _,
        proxy_protocol_tlvs: _,
        proxy_protocol_tlv_merge_policy: _,
        upstream_connect_mode: _,
        max_early_data_bytes: _,
        check_drain_close: _,
    } = t;
    if stat_prefix.is_empty() {
        return Err(ConfigError::proto_constraint(
            &p.field("stat_prefix"),
            "TcpProxy",
            "value length must be at least 1 characters",
        ));
    }
    let (cluster, weighted_clusters) = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => (c.clone(), Vec::new()),
        Some(ClusterSpecifier::WeightedClusters(WeightedCluster { clusters })) => {
            let wp = p.field("weighted_clusters").field("clusters");
            if clusters.is_empty() {
                return Err(ConfigError::invalid(
                    wp,
                    "value must contain at least 1 item(s)",
                ));
            }
            let mut weighted = Vec::with_capacity(clusters.len());
            for (i, c) in clusters.iter().enumerate() {
                let ClusterWeight {
                    name,
                    weight,
                    // Refused by the allowlist (no subset load balancing).
                    metadata_match: _,
                } = c;
                if name.is_empty() {
                    return Err(ConfigError::proto_constraint(
                        &wp.index(i).field("name"),
                        "ClusterWeight",
                        "value length must be at least 1 characters",
                    ));
                }
                if *weight < 1 {
                    return Err(ConfigError::proto_constraint(
                        &wp.index(i).field("weight"),
                        "ClusterWeight",
                        "value must be greater than or equal to 1",
                    ));
                }
                weighted.push((name.clone(), *weight));
            }
            (weighted[0].0.clone(), weighted)
        }
        None => {
            return Err(ConfigError::invalid(
                p,
                "cluster_specifier: value is required",
            ));
        }
    };
    let idle_timeout = match idle_timeout {
        Some(d) => Some(duration(d, &p.field("idle_timeout"))?).filter(|d| !d.is_zero()),
        None => Some(DEFAULT_TCP_IDLE_TIMEOUT),
    };
    Ok(model::TcpProxy {
        stat_prefix: stat_prefix.clone(),
        cluster,
        weighted_clusters,
        idle_timeout,
    })
}

fn redis_proxy(rp: RedisProxy, p: &FieldPath) -> Result<model::RedisProxy, ConfigError> {
    #[allow(deprecated)]
    let RedisProxy {
        stat_prefix,
        settings,
        latency_in_micros,
        prefix_routes,
        downstream_auth_password,
        downstream_auth_passwords,
        downstream_auth_username,
        faults,
        custom_commands,
        protocol_version,
        // Refused by the allowlist.
        external_auth_provider: _,
    } = rp;
    if stat_prefix.is_empty() {
        return Err(ConfigError::proto_constraint(
            &p.field("stat_prefix"),
            "RedisProxy",
            "value length must be at least 1 characters",
        ));
    }
    let Some(settings) = &settings else {
        return Err(ConfigError::invalid(
            p.field("settings"),
            "value is required",
        ));
    };
    let settings = conn_pool_settings(settings, &p.field("settings"))?;
    let prefix_routes =
        self::prefix_routes(prefix_routes.unwrap_or_default(), &p.field("prefix_routes"))?;

    // `downstream_auth_password` (deprecated, still honoured) first, then
    // `downstream_auth_passwords`; empty ones dropped.
    let mut passwords = Vec::new();
    if let Some(pw) = optional_secret(
        downstream_auth_password.as_ref(),
        &p.field("downstream_auth_password"),
    )? {
        passwords.push(pw);
    }
    for (i, d) in downstream_auth_passwords.iter().enumerate() {
        let pw = data_source(d, &p.field("downstream_auth_passwords").index(i))?;
        if !pw.is_empty() {
            passwords.push(pw);
        }
    }
    let downstream_auth_username = optional_secret(
        downstream_auth_username.as_ref(),
        &p.field("downstream_auth_username"),
    )?;

    let mut model_faults = Vec::with_capacity(faults.len());
    for (i, f) in faults.iter().enumerate() {
        model_faults.push(fault(f, &p.field("faults").index(i))?);
    }

    // An unknown number cannot get past the parser; like prost's getter, it would mean RESP2.
    let require_resp3 = ProtocolVersion::try_from(protocol_version) == Ok(ProtocolVersion::Resp3);
    Ok(model::RedisProxy {
        stat_prefix,
        settings,
        latency_in_micros,
        prefix_routes,
        downstream_auth_passwords: passwords,
        downstream_auth_username,
        faults: model_faults,
        custom_commands,
        require_resp3,
    })
}

fn fault(f: &RedisFault, p: &FieldPath) -> Result<model::Fault, ConfigError> {
    let RedisFault {
        fault_type,
        fault_enabled,
        delay,
        commands,
    } = f;
    let Some(enabled) = fault_enabled else {
        return Err(ConfigError::invalid(
            p.field("fault_enabled"),
            "value is required",
        ));
    };
    let fault_type = match RedisFaultType::try_from(*fault_type) {
        Ok(RedisFaultType::Delay) => model::FaultType::Delay,
        Ok(RedisFaultType::Error) => model::FaultType::Error,
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("fault_type"),
                "value must be one of the defined enum values",
            ))
        }
    };
    let delay = match delay {
        Some(d) => duration(d, &p.field("delay"))?,
        None => Duration::ZERO,
    };
    Ok(model::Fault {
        fault_type,
        fault_enabled: runtime_fraction(enabled),
        delay,
        commands: commands.iter().map(|c| c.to_ascii_lowercase()).collect(),
    })
}

/// `ConnPoolSettings.dns_cache_config`, the parts redvoy uses for MOVED/ASK hostnames.
/// `DnsCacheConfig.dns_query_timeout` when unset.
const DEFAULT_DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

fn dns_cache_config(
    d: &DnsCacheConfig,
    p: &FieldPath,
) -> Result<model::DnsCacheConfig, ConfigError> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily as Family;
    #[allow(deprecated)]
    let DnsCacheConfig {
        name,
        dns_lookup_family,
        dns_refresh_rate,
        dns_query_timeout,
        max_hosts,
        // The cache's own re-resolution and expiry tuning (ignored by the allowlist).
        dns_min_refresh_rate: _,
        host_ttl: _,
        dns_failure_refresh_rate: _,
        // Refused by the allowlist.
        disable_dns_refresh_on_failure: _,
        dns_cache_circuit_breaker: _,
        use_tcp_for_dns_lookups: _,
        dns_resolution_config: _,
        typed_dns_resolver_config: _,
        preresolve_hostnames: _,
        key_value_config: _,
        resolved_address_filter: _,
    } = d;
    if name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("name"),
            "value length must be at least 1 characters",
        ));
    }
    let dns_lookup_family = match Family::try_from(*dns_lookup_family) {
        Ok(Family::Auto) => model::DnsLookupFamily::Auto,
        Ok(Family::V4Only) => model::DnsLookupFamily::V4Only,
        Ok(Family::V6Only) => model::DnsLookupFamily::V6Only,
        Ok(Family::V4Preferred) => model::DnsLookupFamily::V4Preferred,
        Ok(Family::All) => model::DnsLookupFamily::All,
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("dns_lookup_family"),
                "value must be one of the defined enum values",
            ))
        }
    };
    let dns_refresh_rate = match dns_refresh_rate {
        Some(r) => duration(r, &p.field("dns_refresh_rate"))?,
        None => DEFAULT_DNS_CACHE_REFRESH_RATE,
    };
    let dns_query_timeout = match dns_query_timeout {
        Some(t) => duration(t, &p.field("dns_query_timeout"))?,
        None => DEFAULT_DNS_QUERY_TIMEOUT,
    };
    Ok(model::DnsCacheConfig {
        name: name.clone(),
        dns_lookup_family,
        dns_refresh_rate,
        dns_query_timeout,
        max_hosts: max_hosts.map_or(DEFAULT_DNS_CACHE_MAX_HOSTS, |v| v.value),
    })
}

fn conn_pool_settings(
    s: &ConnPoolSettings,
    p: &FieldPath,
) -> Result<model::ConnPoolSettings, ConfigError> {
    let ConnPoolSettings {
        op_timeout,
        enable_hashtagging,
        enable_redirection,
        max_buffer_size_before_flush,
        buffer_flush_timeout,
        max_upstream_unknown_connections,
        enable_command_stats,
        read_policy,
        dns_cache_config,
        // Refused by the allowlist.
        connection_rate_limit: _,
    } = s;
    // Required, and Envoy 1.40 accepts 0s (the constraint is only `required`).
    let Some(op_timeout) = op_timeout else {
        return Err(ConfigError::invalid(
            p.field("op_timeout"),
            "value is required",
        ));
    };
    let op_timeout = duration(op_timeout, &p.field("op_timeout"))?;
    let buffer_flush_timeout = match buffer_flush_timeout {
        Some(d) => duration(d, &p.field("buffer_flush_timeout"))?,
        None => DEFAULT_BUFFER_FLUSH_TIMEOUT,
    };
    let read_policy = match ReadPolicy::try_from(*read_policy) {
        Ok(ReadPolicy::Master) => model::ReadPolicy::Master,
        Ok(ReadPolicy::PreferMaster) => model::ReadPolicy::PreferMaster,
        Ok(ReadPolicy::Replica) => model::ReadPolicy::Replica,
        Ok(ReadPolicy::PreferReplica) => model::ReadPolicy::PreferReplica,
        Ok(ReadPolicy::Any) => model::ReadPolicy::Any,
        Ok(other) => {
            return Err(ConfigError::unsupported_because(
                p.field("read_policy"),
                format!(
                    "read policy {} is not supported by redvoy",
                    other.as_str_name()
                ),
            ));
        }
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("read_policy"),
                "value must be one of the defined enum values",
            ));
        }
    };
    Ok(model::ConnPoolSettings {
        op_timeout,
        enable_hashtagging: *enable_hashtagging,
        enable_redirection: *enable_redirection,
        max_buffer_size_before_flush: *max_buffer_size_before_flush,
        buffer_flush_timeout,
        max_upstream_unknown_connections: max_upstream_unknown_connections
            .map_or(DEFAULT_MAX_UPSTREAM_UNKNOWN_CONNECTIONS, |v| v.value),
        enable_command_stats: *enable_command_stats,
        read_policy,
        dns_cache: dns_cache_config
            .as_ref()
            .map(|d| self::dns_cache_config(d, &p.field("dns_cache_config")))
            .transpose()?,
    })
}

fn prefix_routes(pr: PrefixRoutes, p: &FieldPath) -> Result<model::PrefixRoutes, ConfigError> {
    let PrefixRoutes {
        routes: proto_routes,
        case_insensitive,
        catch_all_route,
    } = pr;
    let mut routes = Vec::with_capacity(proto_routes.len());
    let mut seen = HashSet::new();
    for (i, r) in proto_routes.iter().enumerate() {
        let rp = p.field("routes").index(i);
        let mut route = route(r, &rp)?;
        // Prefixes are compared (and matched) lowercased when case_insensitive.
        if case_insensitive {
            route.prefix = route.prefix.to_ascii_lowercase();
        }
        if !seen.insert(route.prefix.clone()) {
            return Err(ConfigError::invalid(
                rp.field("prefix"),
                format!("prefix `{}` already exists.", route.prefix),
            ));
        }
        routes.push(route);
    }
    let catch_all_route = match &catch_all_route {
        Some(r) => Some(route(r, &p.field("catch_all_route"))?),
        None => None,
    };
    if routes.is_empty() && catch_all_route.is_none() {
        return Err(ConfigError::invalid(
            p,
            "cannot configure a redis-proxy without any upstream",
        ));
    }
    Ok(model::PrefixRoutes {
        routes,
        case_insensitive,
        catch_all_route,
    })
}

fn route(r: &Route, p: &FieldPath) -> Result<model::Route, ConfigError> {
    let Route {
        prefix,
        remove_prefix,
        cluster,
        request_mirror_policy,
        key_formatter,
        read_command_policy,
    } = r;
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(ConfigError::invalid(
            p.field("prefix"),
            format!("value length must be at most {MAX_PREFIX_BYTES} bytes"),
        ));
    }
    if cluster.is_empty() {
        return Err(ConfigError::invalid(
            p.field("cluster"),
            "value length must be at least 1 characters",
        ));
    }
    let mut mirrors = Vec::with_capacity(request_mirror_policy.len());
    for (i, m) in request_mirror_policy.iter().enumerate() {
        let RequestMirrorPolicy {
            cluster,
            runtime_fraction: fraction,
            exclude_read_commands,
        } = m;
        if cluster.is_empty() {
            return Err(ConfigError::invalid(
                p.field("request_mirror_policy").index(i).field("cluster"),
                "value length must be at least 1 characters",
            ));
        }
        mirrors.push(model::MirrorPolicy {
            cluster: cluster.clone(),
            runtime_fraction: fraction.as_ref().map(runtime_fraction),
            exclude_read_commands: *exclude_read_commands,
        });
    }
    let key_formatter = if key_formatter.is_empty() {
        None
    } else {
        check_key_formatter(key_formatter, &p.field("key_formatter"))?;
        Some(key_formatter.clone())
    };
    let read_command_cluster = match read_command_policy {
        Some(ReadCommandPolicy { cluster }) if cluster.is_empty() => {
            return Err(ConfigError::invalid(
                p.field("read_command_policy").field("cluster"),
                "value length must be at least 1 characters",
            ));
        }
        Some(ReadCommandPolicy { cluster }) => Some(cluster.clone()),
        None => None,
    };
    Ok(model::Route {
        prefix: prefix.clone(),
        remove_prefix: *remove_prefix,
        cluster: cluster.clone(),
        request_mirror_policy: mirrors,
        key_formatter,
        read_command_cluster,
    })
}

/// redvoy implements `%KEY%` only; any other `%COMMAND%` would need Envoy's substitution
/// formatter over connection info, so it is refused rather than left unexpanded.
fn check_key_formatter(format: &str, p: &FieldPath) -> Result<(), ConfigError> {
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix(KEY_COMMAND) {
            rest = tail;
            continue;
        }
        let command = after[1..].find('%').map_or(after, |end| &after[..end + 2]);
        return Err(ConfigError::unsupported_because(
            p,
            format!(
                "substitution {command} in key_formatter is not supported by redvoy (only %KEY%)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formatter_accepts_only_key_substitutions() {
        let p = FieldPath::root();
        assert!(check_key_formatter("{%KEY%}-suffix", &p).is_ok());
        assert!(check_key_formatter("%KEY%:%KEY%", &p).is_ok());
        assert!(check_key_formatter("plain", &p).is_ok());
        let e = check_key_formatter("%KEY%-%DOWNSTREAM_REMOTE_ADDRESS%", &p).unwrap_err();
        assert!(e.to_string().contains("%DOWNSTREAM_REMOTE_ADDRESS%"), "{e}");
        assert!(check_key_formatter("100%", &p).is_err());
    }
}
