//! Clusters: discovery type, load balancer, endpoints and Redis protocol options.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::ring_hash_lb_config::HashFunction;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, LbConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, transport_socket, HealthStatus, Metadata, RoutingPriority,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::clusters::redis::v3::RedisClusterConfig;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::RedisProtocolOptions;
use envoy_types::pb::google::protobuf::{
    value, Any as PbAny, Duration as PbDuration, Struct as PbStruct,
};
use prost::Message;

use super::{duration, optional_secret, socket_address, AddressKind};
use crate::error::FieldPath;
use crate::supported::{RAW_BUFFER, REDIS_CLUSTER_TYPE, REDIS_PROXY_NAMES};
use crate::{model, ConfigError};

/// `Cluster.connect_timeout` when unset.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `Cluster.dns_refresh_rate` when unset; set values must exceed `MIN_DNS_REFRESH_RATE`.
const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);
const MIN_DNS_REFRESH_RATE: Duration = Duration::from_millis(1);
/// Ring hash sizes: defaults, and the proto's upper bound for both.
const DEFAULT_MIN_RING_SIZE: u64 = 1024;
const DEFAULT_MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Maglev table size: default, and the proto's upper bound; it must be prime.
const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65_537;
const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;
/// `LeastRequestLbConfig.choice_count`: default and minimum.
const DEFAULT_CHOICE_COUNT: u32 = 2;
const MIN_CHOICE_COUNT: u32 = 2;
/// `LbEndpoint.load_balancing_weight` when unset; set values must be at least 1.
const DEFAULT_WEIGHT: u32 = 1;
/// `LocalityLbEndpoints.priority` proto constraint (`lte: 128`).
const MAX_PRIORITY: u32 = 128;

pub(crate) fn cluster(c: Cluster, p: &FieldPath) -> Result<model::Cluster, ConfigError> {
    if c.name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("name"),
            "value length must be at least 1 characters",
        ));
    }
    let discovery = match &c.cluster_discovery_type {
        None => model::DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Static) => model::DiscoveryType::Static,
            Ok(DiscoveryType::StrictDns) => model::DiscoveryType::StrictDns,
            Ok(DiscoveryType::LogicalDns) => model::DiscoveryType::LogicalDns,
            Ok(DiscoveryType::Eds) => model::DiscoveryType::Eds,
            Ok(DiscoveryType::OriginalDst) => model::DiscoveryType::OriginalDst,
            #[allow(unreachable_patterns)]
            Ok(other) => {
                return Err(ConfigError::unsupported_because(
                    p.field("type"),
                    format!(
                        "cluster type {} is not supported by redvoy",
                        other.as_str_name()
                    ),
                ));
            }
            Err(_) => {
                return Err(ConfigError::invalid(
                    p.field("type"),
                    "value must be one of the defined enum values",
                ))
            }
        },
        // The allowlist walk refused every other cluster type already.
        Some(ClusterDiscoveryType::ClusterType(ct)) if ct.name == REDIS_CLUSTER_TYPE => {
            model::DiscoveryType::RedisCluster
        }
        Some(ClusterDiscoveryType::ClusterType(ct)) => {
            return Err(ConfigError::unsupported_because(
                p.field("cluster_type"),
                format!("unsupported cluster type '{}'", ct.name),
            ));
        }
    };
    let redis_cluster = match &c.cluster_discovery_type {
        Some(ClusterDiscoveryType::ClusterType(ct)) if ct.name == REDIS_CLUSTER_TYPE => Some(
            redis_cluster_config(ct.typed_config.as_ref(), &p.field("cluster_type"))?,
        ),
        _ => None,
    };

    let connect_timeout = match &c.connect_timeout {
        Some(d) => {
            let d = duration(d, &p.field("connect_timeout"))?;
            if d.is_zero() {
                return Err(ConfigError::invalid(
                    p.field("connect_timeout"),
                    "value must be greater than 0s",
                ));
            }
            d
        }
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    // Deprecated in favour of a DNS resolver extension, but still honoured by Envoy 1.40.
    #[allow(deprecated)]
    let dns_refresh_rate = match &c.dns_refresh_rate {
        Some(d) => {
            let d = duration(d, &p.field("dns_refresh_rate"))?;
            if d <= MIN_DNS_REFRESH_RATE {
                return Err(ConfigError::invalid(
                    p.field("dns_refresh_rate"),
                    "value must be greater than 1ms",
                ));
            }
            d
        }
        None => DEFAULT_DNS_REFRESH_RATE,
    };
    let dns_lookup_family = match DnsLookupFamily::try_from(c.dns_lookup_family) {
        Ok(DnsLookupFamily::Auto) => model::DnsLookupFamily::Auto,
        Ok(DnsLookupFamily::V4Only) => model::DnsLookupFamily::V4Only,
        Ok(DnsLookupFamily::V6Only) => model::DnsLookupFamily::V6Only,
        Ok(DnsLookupFamily::V4Preferred) => model::DnsLookupFamily::V4Preferred,
        Ok(DnsLookupFamily::All) => model::DnsLookupFamily::All,
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("dns_lookup_family"),
                "value must be one of the defined enum values",
            ));
        }
    };

    let lb_policy = if discovery == model::DiscoveryType::OriginalDst {
        // The upstream is the connection's original destination: no load balancer to pick.
        if c.lb_policy != LbPolicy::ClusterProvided as i32 {
            let name = LbPolicy::try_from(c.lb_policy).map_or("UNKNOWN", |l| l.as_str_name());
            return Err(ConfigError::invalid(
                p.field("lb_policy"),
                format!(
                    "cluster: LB policy {name} is not valid for Cluster type ORIGINAL_DST. Only \
                     'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"
                ),
            ));
        }
        if c.load_assignment.is_some() {
            return Err(ConfigError::invalid(
                p.field("load_assignment"),
                "ORIGINAL_DST clusters must have no load assignment configured",
            ));
        }
        // Unused for ORIGINAL_DST; the model has no "cluster provided" policy.
        model::LbPolicy::RoundRobin
    } else {
        lb_policy(&c, p, discovery)?
    };
    let eds = match (&c.eds_cluster_config, discovery) {
        (Some(e), model::DiscoveryType::Eds) => {
            let ep = p.field("eds_cluster_config");
            let Some(source) = &e.eds_config else {
                return Err(ConfigError::invalid(
                    ep.field("eds_config"),
                    "cannot create an EDS cluster without an EDS config",
                ));
            };
            Some(model::EdsConfig {
                service_name: if e.service_name.is_empty() {
                    c.name.clone()
                } else {
                    e.service_name.clone()
                },
                eds_config: super::dynamic::config_source(source, &ep.field("eds_config"))?,
            })
        }
        (None, model::DiscoveryType::Eds) => {
            return Err(ConfigError::invalid(
                p.field("eds_cluster_config"),
                "cannot create an EDS cluster without an EDS config",
            ));
        }
        // Envoy ignores the EDS settings of other cluster types.
        _ => None,
    };
    let endpoints = endpoints(&c, discovery, p)?;
    let redis_protocol_options = protocol_options(&c, p)?;
    let use_hostname_for_hashing = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.consistent_hashing_lb_config.as_ref())
        .is_some_and(|h| h.use_hostname_for_hashing);
    let circuit_breakers = circuit_breakers(&c);
    let healthy_panic_threshold = healthy_panic_threshold(&c, p)?;
    let tcp_keepalive = c
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
        .map(|k| model::TcpKeepalive {
            probes: k.keepalive_probes.map(|v| v.value),
            time: k
                .keepalive_time
                .map(|v| Duration::from_secs(u64::from(v.value))),
            interval: k
                .keepalive_interval
                .map(|v| Duration::from_secs(u64::from(v.value))),
        });
    let transport_socket_matches = transport_socket_matches(&c);
    if matches!(
        discovery,
        model::DiscoveryType::RedisCluster | model::DiscoveryType::OriginalDst
    ) {
        // Discovered nodes and original destinations carry no metadata: the entry matching no
        // labels decides for every one of them (and for Redis Cluster discovery).
        let none = BTreeMap::new();
        if let Some(m) = transport_socket_matches.unsupported_for(&none, &none) {
            return Err(ConfigError::unsupported_because(
                p.field("transport_socket_matches"),
                format!(
                    "the cluster's hosts select transport socket '{}', which is not \
                     plaintext: TLS is not supported by redvoy",
                    m.name
                ),
            ));
        }
    }

    Ok(model::Cluster {
        name: c.name,
        discovery,
        lb_policy,
        connect_timeout,
        dns_refresh_rate,
        dns_lookup_family,
        endpoints,
        redis_protocol_options,
        use_hostname_for_hashing,
        eds,
        redis_cluster,
        circuit_breakers,
        healthy_panic_threshold,
        tcp_keepalive,
        transport_socket_matches,
    })
}

/// The DEFAULT-priority `circuit_breakers.thresholds` (Envoy's defaults for what is unset).
/// HIGH-priority thresholds apply to high-priority HTTP routes only, which redvoy never has.
fn circuit_breakers(c: &Cluster) -> model::CircuitBreakers {
    let mut out = model::CircuitBreakers::default();
    let default = c.circuit_breakers.as_ref().and_then(|cb| {
        cb.thresholds
            .iter()
            .find(|t| t.priority == RoutingPriority::Default as i32)
    });
    if let Some(t) = default {
        if let Some(v) = t.max_connections {
            out.max_connections = v.value;
        }
        if let Some(v) = t.max_requests {
            out.max_requests = v.value;
        }
    }
    out
}

/// `common_lb_config.healthy_panic_threshold` (`Percent`, 0 to 100; default 50).
fn healthy_panic_threshold(
    c: &Cluster,
    p: &FieldPath,
) -> Result<model::PanicThreshold, ConfigError> {
    let Some(percent) = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.healthy_panic_threshold.as_ref())
    else {
        return Ok(model::PanicThreshold::default());
    };
    if !(0.0..=100.0).contains(&percent.value) {
        return Err(ConfigError::proto_constraint(
            &p.field("common_lb_config")
                .field("healthy_panic_threshold")
                .field("value"),
            "Percent",
            "value must be inside range [0, 100]",
        ));
    }
    Ok(model::PanicThreshold(percent.value))
}

/// `transport_socket_matches`: each entry's labels, and whether its socket is plaintext.
fn transport_socket_matches(c: &Cluster) -> model::TransportSocketMatches {
    model::TransportSocketMatches(
        c.transport_socket_matches
            .iter()
            .map(|m| model::TransportSocketMatch {
                name: m.name.clone(),
                labels: m.r#match.as_ref().map(struct_labels).unwrap_or_default(),
                plaintext: m.transport_socket.as_ref().is_some_and(|t| {
                    matches!(
                        &t.config_type,
                        Some(transport_socket::ConfigType::TypedConfig(any))
                            if crate::parse::type_name_of(&any.type_url) == RAW_BUFFER
                    )
                }),
            })
            .collect(),
    )
}

/// The filter metadata Envoy's transport socket matcher reads.
const TRANSPORT_SOCKET_MATCH_FILTER: &str = "envoy.transport_socket_match";

/// A metadata's `envoy.transport_socket_match` labels.
fn metadata_labels(metadata: Option<&Metadata>) -> BTreeMap<String, String> {
    metadata
        .and_then(|m| m.filter_metadata.get(TRANSPORT_SOCKET_MATCH_FILTER))
        .map(struct_labels)
        .unwrap_or_default()
}

/// A Struct's fields as label → canonical value text: a string as itself, anything else by its
/// debug form behind a marker no string value starts with, so that only equal values match.
fn struct_labels(s: &PbStruct) -> BTreeMap<String, String> {
    s.fields
        .iter()
        .map(|(k, v)| {
            let text = match &v.kind {
                Some(value::Kind::StringValue(s)) => s.clone(),
                other => format!("\u{0}{other:?}"),
            };
            (k.clone(), text)
        })
        .collect()
}

/// `lb_policy` with its matching `*_lb_config` (a config for another policy is ignored, as in
/// Envoy).
fn lb_policy(
    c: &Cluster,
    p: &FieldPath,
    discovery: model::DiscoveryType,
) -> Result<model::LbPolicy, ConfigError> {
    let policy = LbPolicy::try_from(c.lb_policy).map_err(|_| {
        ConfigError::invalid(
            p.field("lb_policy"),
            "value must be one of the defined enum values",
        )
    })?;
    Ok(match policy {
        LbPolicy::ClusterProvided if discovery == model::DiscoveryType::RedisCluster => {
            model::LbPolicy::ClusterProvided
        }
        LbPolicy::RoundRobin => model::LbPolicy::RoundRobin,
        LbPolicy::Random => model::LbPolicy::Random,
        LbPolicy::LeastRequest => {
            let choice_count = match &c.lb_config {
                Some(LbConfig::LeastRequestLbConfig(l)) => {
                    l.choice_count.map_or(DEFAULT_CHOICE_COUNT, |v| v.value)
                }
                _ => DEFAULT_CHOICE_COUNT,
            };
            if choice_count < MIN_CHOICE_COUNT {
                return Err(ConfigError::invalid(
                    p.field("least_request_lb_config").field("choice_count"),
                    format!("value must be greater than or equal to {MIN_CHOICE_COUNT}"),
                ));
            }
            model::LbPolicy::LeastRequest { choice_count }
        }
        LbPolicy::RingHash => {
            let rp = p.field("ring_hash_lb_config");
            let (min, max, hash) = match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => (
                    r.minimum_ring_size
                        .map_or(DEFAULT_MIN_RING_SIZE, |v| v.value),
                    r.maximum_ring_size
                        .map_or(DEFAULT_MAX_RING_SIZE, |v| v.value),
                    r.hash_function,
                ),
                _ => (DEFAULT_MIN_RING_SIZE, DEFAULT_MAX_RING_SIZE, 0),
            };
            for (name, v) in [("minimum_ring_size", min), ("maximum_ring_size", max)] {
                if v > MAX_RING_SIZE {
                    return Err(ConfigError::invalid(
                        rp.field(name),
                        format!("value must be less than or equal to {MAX_RING_SIZE}"),
                    ));
                }
            }
            if min > max {
                return Err(ConfigError::invalid(
                    rp,
                    format!("ring hash: minimum_ring_size ({min}) > maximum_ring_size ({max})"),
                ));
            }
            let hash_function = match HashFunction::try_from(hash) {
                Ok(HashFunction::XxHash) => model::HashFunction::XxHash,
                Ok(HashFunction::MurmurHash2) => model::HashFunction::MurmurHash2,
                Err(_) => {
                    return Err(ConfigError::invalid(
                        rp.field("hash_function"),
                        "value must be one of the defined enum values",
                    ));
                }
            };
            model::LbPolicy::RingHash {
                minimum_ring_size: min,
                maximum_ring_size: max,
                hash_function,
            }
        }
        LbPolicy::Maglev => {
            let table_size = match &c.lb_config {
                Some(LbConfig::MaglevLbConfig(m)) => {
                    m.table_size.map_or(DEFAULT_MAGLEV_TABLE_SIZE, |v| v.value)
                }
                _ => DEFAULT_MAGLEV_TABLE_SIZE,
            };
            let tp = p.field("maglev_lb_config").field("table_size");
            if table_size > MAX_MAGLEV_TABLE_SIZE {
                return Err(ConfigError::invalid(
                    tp,
                    format!("value must be less than or equal to {MAX_MAGLEV_TABLE_SIZE}"),
                ));
            }
            if !is_prime(table_size) {
                return Err(ConfigError::invalid(
                    tp,
                    "The table size of maglev must be prime number",
                ));
            }
            model::LbPolicy::Maglev { table_size }
        }
        // Only the Redis Cluster (and ORIGINAL_DST, handled by the caller) provides one.
        LbPolicy::ClusterProvided => {
            return Err(ConfigError::invalid(
                p.field("lb_policy"),
                format!(
                    "cluster manager: cluster provided LB specified but cluster '{}' did not \
                     provide one. Check cluster documentation.",
                    c.name
                ),
            ));
        }
        other => {
            return Err(ConfigError::unsupported_because(
                p.field("lb_policy"),
                format!(
                    "lb_policy {} is not supported by redvoy",
                    other.as_str_name()
                ),
            ));
        }
    })
}

/// Trial division; table sizes are at most `MAX_MAGLEV_TABLE_SIZE`, so ~1,100 steps at most.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Every locality's endpoints, flattened in order (each keeps its locality and priority).
fn endpoints(
    c: &Cluster,
    discovery: model::DiscoveryType,
    p: &FieldPath,
) -> Result<Vec<model::Endpoint>, ConfigError> {
    let Some(la) = &c.load_assignment else {
        return Ok(Vec::new());
    };
    let lp = p.field("load_assignment");
    if la.cluster_name.is_empty() {
        return Err(ConfigError::invalid(
            lp.field("cluster_name"),
            "value length must be at least 1 characters",
        ));
    }
    if discovery == model::DiscoveryType::LogicalDns
        && (la.endpoints.len() != 1
            || la
                .endpoints
                .first()
                .is_some_and(|l| l.lb_endpoints.len() != 1))
    {
        return Err(ConfigError::invalid(
            lp,
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
        ));
    }
    let kind = match discovery {
        model::DiscoveryType::Static
        | model::DiscoveryType::Eds
        | model::DiscoveryType::OriginalDst => AddressKind::StaticEndpoint,
        model::DiscoveryType::StrictDns
        | model::DiscoveryType::LogicalDns
        | model::DiscoveryType::RedisCluster => AddressKind::DnsEndpoint,
    };
    assignment_endpoints(la, &lp, kind)
}

/// The endpoints of a `ClusterLoadAssignment` (a cluster's `load_assignment`, or an EDS one).
pub(crate) fn assignment_endpoints(
    la: &ClusterLoadAssignment,
    lp: &FieldPath,
    kind: AddressKind,
) -> Result<Vec<model::Endpoint>, ConfigError> {
    let mut out = Vec::new();
    for (i, locality) in la.endpoints.iter().enumerate() {
        let locp = lp.field("endpoints").index(i);
        let loc = locality
            .locality
            .as_ref()
            .map_or_else(model::Locality::default, |l| model::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            });
        if locality.priority > MAX_PRIORITY {
            return Err(ConfigError::invalid(
                locp.field("priority"),
                format!("value must be less than or equal to {MAX_PRIORITY}"),
            ));
        }
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let ep = locp.field("lb_endpoints").index(j);
            let Some(HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
                return Err(ConfigError::invalid(
                    ep.field("endpoint"),
                    "value is required",
                ));
            };
            let ap = ep.field("endpoint").field("address");
            let Some(address) = &endpoint.address else {
                return Err(ConfigError::invalid(ap, "value is required"));
            };
            let (address, pipe) = match &address.address {
                Some(address::Address::Pipe(pipe)) if kind == AddressKind::StaticEndpoint => {
                    let pp = ap.field("pipe");
                    (
                        model::SocketAddress {
                            address: String::new(),
                            port: 0,
                        },
                        Some(super::pipe(pipe, &pp)?),
                    )
                }
                _ => (socket_address(address, &ap, kind)?, None),
            };
            let weight = lb.load_balancing_weight.map_or(DEFAULT_WEIGHT, |w| w.value);
            if weight < 1 {
                return Err(ConfigError::invalid(
                    ep.field("load_balancing_weight"),
                    "value must be greater than or equal to 1",
                ));
            }
            let health_status = match HealthStatus::try_from(lb.health_status) {
                Ok(HealthStatus::Unknown) => model::HealthStatus::Unknown,
                Ok(HealthStatus::Healthy) => model::HealthStatus::Healthy,
                Ok(HealthStatus::Unhealthy) => model::HealthStatus::Unhealthy,
                Ok(HealthStatus::Draining) => model::HealthStatus::Draining,
                Ok(HealthStatus::Timeout) => model::HealthStatus::Timeout,
                Ok(HealthStatus::Degraded) => model::HealthStatus::Degraded,
                Err(_) => {
                    return Err(ConfigError::invalid(
                        ep.field("health_status"),
                        "value must be one of the defined enum values",
                    ));
                }
            };
            out.push(model::Endpoint {
                address,
                pipe,
                weight,
                hostname: endpoint.hostname.clone(),
                health_status,
                locality: loc.clone(),
                priority: locality.priority,
                transport_socket_labels: metadata_labels(lb.metadata.as_ref()),
                locality_transport_socket_labels: metadata_labels(locality.metadata.as_ref()),
            });
        }
    }
    Ok(out)
}

/// `typed_extension_protocol_options` under the redis_proxy filter's name (either alias).
/// `cluster_type.typed_config` of `envoy.clusters.redis` (already re-packed as the native type
/// by the allowlist walk), with Envoy's defaults and proto constraints.
fn redis_cluster_config(
    any: Option<&PbAny>,
    p: &FieldPath,
) -> Result<model::RedisClusterConfig, ConfigError> {
    let mut out = model::RedisClusterConfig::default();
    let Some(any) = any else {
        return Ok(out);
    };
    let tp = p.field("typed_config");
    let r = RedisClusterConfig::decode(any.value.as_slice())
        .map_err(|e| ConfigError::invalid(&tp, format!("cannot decode RedisClusterConfig: {e}")))?;
    let positive = |d: &Option<PbDuration>, name: &str| -> Result<Option<Duration>, ConfigError> {
        let Some(d) = d else { return Ok(None) };
        let fp = tp.field(name);
        let d = duration(d, &fp)?;
        if d.is_zero() {
            return Err(ConfigError::invalid(fp, "value must be greater than 0s"));
        }
        Ok(Some(d))
    };
    if let Some(d) = positive(&r.cluster_refresh_rate, "cluster_refresh_rate")? {
        out.cluster_refresh_rate = d;
    }
    if let Some(d) = positive(&r.cluster_refresh_timeout, "cluster_refresh_timeout")? {
        out.cluster_refresh_timeout = d;
    }
    if let Some(d) = &r.redirect_refresh_interval {
        out.redirect_refresh_interval = duration(d, &tp.field("redirect_refresh_interval"))?;
    }
    if let Some(v) = r.redirect_refresh_threshold {
        out.redirect_refresh_threshold = v.value;
    }
    out.failure_refresh_threshold = r.failure_refresh_threshold;
    out.host_degraded_refresh_threshold = r.host_degraded_refresh_threshold;
    Ok(out)
}

fn protocol_options(
    c: &Cluster,
    p: &FieldPath,
) -> Result<Option<model::RedisProtocolOptions>, ConfigError> {
    let mut found = REDIS_PROXY_NAMES.iter().filter_map(|name| {
        c.typed_extension_protocol_options
            .get(*name)
            .map(|any| (*name, any))
    });
    let Some((name, any)) = found.next() else {
        return Ok(None);
    };
    let op = p.field("typed_extension_protocol_options");
    if let Some((other, _)) = found.next() {
        // Both aliases name the same factory; Envoy would keep one of them arbitrarily.
        return Err(ConfigError::invalid(
            op.key(other),
            format!("protocol options are also set under '{name}'"),
        ));
    }
    let kp = op.key(name);
    // The allowlist walk already resolved and re-packed it as the native type.
    let o = RedisProtocolOptions::decode(any.value.as_slice()).map_err(|e| {
        ConfigError::invalid(&kp, format!("cannot decode RedisProtocolOptions: {e}"))
    })?;
    Ok(Some(model::RedisProtocolOptions {
        auth_username: optional_secret(o.auth_username.as_ref(), &kp.field("auth_username"))?,
        auth_password: optional_secret(o.auth_password.as_ref(), &kp.field("auth_password"))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(5_000_011));
        assert!(is_prime(2));
        assert!(!is_prime(1000));
        assert!(!is_prime(1));
        assert!(!is_prime(0));
    }
}
