//! Listeners and the `redis_proxy` filter (`RP/config.cc`, `RP/router_impl.cc` checks).

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::conn_pool_settings::ReadPolicy;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::prefix_routes::Route;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::redis_fault::RedisFaultType;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::{
    ConnPoolSettings, PrefixRoutes,
};
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::RedisProxy;
use prost::Message;

use super::{
    data_source, duration, optional_secret, runtime_fraction, socket_address, AddressKind,
};
use crate::error::FieldPath;
use crate::{model, ConfigError};

/// `ConnPoolSettings.buffer_flush_timeout` when unset (`CR/client_impl.cc`).
const DEFAULT_BUFFER_FLUSH_TIMEOUT: Duration = Duration::from_millis(3);
/// `ConnPoolSettings.max_upstream_unknown_connections` when unset.
const DEFAULT_MAX_UPSTREAM_UNKNOWN_CONNECTIONS: u32 = 100;
/// `Route.prefix` proto constraint.
const MAX_PREFIX_BYTES: usize = 1000;
/// The only substitution redvoy implements in `key_formatter`.
const KEY_COMMAND: &str = "%KEY%";

pub(super) fn listener(l: Listener, p: &FieldPath) -> Result<model::Listener, ConfigError> {
    let Some(address) = &l.address else {
        return Err(ConfigError::invalid(
            p.field("address"),
            format!(
                "error adding listener named '{}': address is necessary",
                l.name
            ),
        ));
    };
    let address = socket_address(address, &p.field("address"), AddressKind::Bind)?;

    let chains_p = p.field("filter_chains");
    let mut chains = l.filter_chains.into_iter();
    let Some(chain) = chains.next() else {
        return Err(ConfigError::invalid(
            chains_p,
            format!("error adding listener '{address}': no filter chains specified"),
        ));
    };
    if chains.next().is_some() {
        return Err(ConfigError::unsupported_because(
            chains_p.index(1),
            "more than one filter chain is not supported by redvoy",
        ));
    }
    let filters_p = chains_p.index(0).field("filters");
    let mut filters = chain.filters.into_iter();
    let Some(filter) = filters.next() else {
        return Err(ConfigError::unsupported_because(
            filters_p,
            "a filter chain without the redis_proxy filter is not supported by redvoy",
        ));
    };
    if filters.next().is_some() {
        // Every accepted filter is redis_proxy, a terminal filter.
        return Err(ConfigError::invalid(
            filters_p.index(0),
            format!(
                "Error: terminal filter named {} of type envoy.filters.network.redis_proxy must be \
                 the last filter in a network filter chain.",
                filter.name
            ),
        ));
    }
    let fp = filters_p.index(0).field("typed_config");
    let Some(filter::ConfigType::TypedConfig(any)) = filter.config_type else {
        return Err(ConfigError::invalid(
            fp,
            "a network filter needs a typed_config",
        ));
    };
    // The allowlist walk already resolved and re-packed it as the native type.
    let proxy = RedisProxy::decode(any.value.as_slice())
        .map_err(|e| ConfigError::invalid(&fp, format!("cannot decode RedisProxy: {e}")))?;
    let traffic_direction = match TrafficDirection::try_from(l.traffic_direction) {
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
    Ok(model::Listener {
        name: l.name,
        address,
        traffic_direction,
        bind_to_port: true,
        use_original_dst: false,
        filter_chains: vec![model::FilterChain {
            name: String::new(),
            filter_chain_match: model::FilterChainMatch::default(),
            filter: model::NetworkFilter::RedisProxy(Box::new(redis_proxy(proxy, &fp)?)),
        }],
        default_filter_chain: None,
    })
}

fn redis_proxy(rp: RedisProxy, p: &FieldPath) -> Result<model::RedisProxy, ConfigError> {
    if rp.stat_prefix.is_empty() {
        return Err(ConfigError::invalid(
            p.field("stat_prefix"),
            "value length must be at least 1 characters",
        ));
    }
    let Some(settings) = &rp.settings else {
        return Err(ConfigError::invalid(
            p.field("settings"),
            "value is required",
        ));
    };
    let settings = conn_pool_settings(settings, &p.field("settings"))?;
    let prefix_routes = prefix_routes(
        rp.prefix_routes.unwrap_or_default(),
        &p.field("prefix_routes"),
    )?;

    // `downstream_auth_password` (deprecated, still honoured) first, then
    // `downstream_auth_passwords`; empty ones dropped.
    let mut downstream_auth_passwords = Vec::new();
    #[allow(deprecated)]
    let single = rp.downstream_auth_password.as_ref();
    if let Some(pw) = optional_secret(single, &p.field("downstream_auth_password"))? {
        downstream_auth_passwords.push(pw);
    }
    for (i, d) in rp.downstream_auth_passwords.iter().enumerate() {
        let pw = data_source(d, &p.field("downstream_auth_passwords").index(i))?;
        if !pw.is_empty() {
            downstream_auth_passwords.push(pw);
        }
    }
    let downstream_auth_username = optional_secret(
        rp.downstream_auth_username.as_ref(),
        &p.field("downstream_auth_username"),
    )?;

    let mut faults = Vec::with_capacity(rp.faults.len());
    for (i, f) in rp.faults.iter().enumerate() {
        let fp = p.field("faults").index(i);
        let Some(enabled) = &f.fault_enabled else {
            return Err(ConfigError::invalid(
                fp.field("fault_enabled"),
                "value is required",
            ));
        };
        let fault_type = match RedisFaultType::try_from(f.fault_type) {
            Ok(RedisFaultType::Delay) => model::FaultType::Delay,
            Ok(RedisFaultType::Error) => model::FaultType::Error,
            Err(_) => {
                return Err(ConfigError::invalid(
                    fp.field("fault_type"),
                    "value must be one of the defined enum values",
                ))
            }
        };
        let delay = match &f.delay {
            Some(d) => duration(d, &fp.field("delay"))?,
            None => Duration::ZERO,
        };
        faults.push(model::Fault {
            fault_type,
            fault_enabled: runtime_fraction(enabled),
            delay,
            commands: f.commands.iter().map(|c| c.to_ascii_lowercase()).collect(),
        });
    }

    Ok(model::RedisProxy {
        stat_prefix: rp.stat_prefix,
        settings,
        latency_in_micros: rp.latency_in_micros,
        prefix_routes,
        downstream_auth_passwords,
        downstream_auth_username,
        faults,
        custom_commands: rp.custom_commands,
    })
}

fn conn_pool_settings(
    s: &ConnPoolSettings,
    p: &FieldPath,
) -> Result<model::ConnPoolSettings, ConfigError> {
    // Required, and Envoy 1.40 accepts 0s (the constraint is only `required`).
    let Some(op_timeout) = &s.op_timeout else {
        return Err(ConfigError::invalid(
            p.field("op_timeout"),
            "value is required",
        ));
    };
    let op_timeout = duration(op_timeout, &p.field("op_timeout"))?;
    let buffer_flush_timeout = match &s.buffer_flush_timeout {
        Some(d) => duration(d, &p.field("buffer_flush_timeout"))?,
        None => DEFAULT_BUFFER_FLUSH_TIMEOUT,
    };
    let read_policy = match ReadPolicy::try_from(s.read_policy) {
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
        enable_hashtagging: s.enable_hashtagging,
        enable_redirection: s.enable_redirection,
        max_buffer_size_before_flush: s.max_buffer_size_before_flush,
        buffer_flush_timeout,
        max_upstream_unknown_connections: s
            .max_upstream_unknown_connections
            .map_or(DEFAULT_MAX_UPSTREAM_UNKNOWN_CONNECTIONS, |v| v.value),
        enable_command_stats: s.enable_command_stats,
        read_policy,
    })
}

fn prefix_routes(pr: PrefixRoutes, p: &FieldPath) -> Result<model::PrefixRoutes, ConfigError> {
    let mut routes = Vec::with_capacity(pr.routes.len());
    let mut seen = HashSet::new();
    for (i, r) in pr.routes.iter().enumerate() {
        let rp = p.field("routes").index(i);
        let mut route = route(r, &rp)?;
        // Prefixes are compared (and matched) lowercased when case_insensitive.
        if pr.case_insensitive {
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
    let catch_all_route = match &pr.catch_all_route {
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
        case_insensitive: pr.case_insensitive,
        catch_all_route,
    })
}

fn route(r: &Route, p: &FieldPath) -> Result<model::Route, ConfigError> {
    if r.prefix.len() > MAX_PREFIX_BYTES {
        return Err(ConfigError::invalid(
            p.field("prefix"),
            format!("value length must be at most {MAX_PREFIX_BYTES} bytes"),
        ));
    }
    if r.cluster.is_empty() {
        return Err(ConfigError::invalid(
            p.field("cluster"),
            "value length must be at least 1 characters",
        ));
    }
    let mut request_mirror_policy = Vec::with_capacity(r.request_mirror_policy.len());
    for (i, m) in r.request_mirror_policy.iter().enumerate() {
        if m.cluster.is_empty() {
            return Err(ConfigError::invalid(
                p.field("request_mirror_policy").index(i).field("cluster"),
                "value length must be at least 1 characters",
            ));
        }
        request_mirror_policy.push(model::MirrorPolicy {
            cluster: m.cluster.clone(),
            runtime_fraction: m.runtime_fraction.as_ref().map(runtime_fraction),
            exclude_read_commands: m.exclude_read_commands,
        });
    }
    let key_formatter = if r.key_formatter.is_empty() {
        None
    } else {
        check_key_formatter(&r.key_formatter, &p.field("key_formatter"))?;
        Some(r.key_formatter.clone())
    };
    let read_command_cluster = match &r.read_command_policy {
        Some(rcp) if rcp.cluster.is_empty() => {
            return Err(ConfigError::invalid(
                p.field("read_command_policy").field("cluster"),
                "value length must be at least 1 characters",
            ));
        }
        Some(rcp) => Some(rcp.cluster.clone()),
        None => None,
    };
    Ok(model::Route {
        prefix: r.prefix.clone(),
        remove_prefix: r.remove_prefix,
        cluster: r.cluster.clone(),
        request_mirror_policy,
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
