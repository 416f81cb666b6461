//! Clusters: discovery type, load balancer, endpoints and Redis protocol options.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::thresholds::RetryBudget;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::ConsistentHashingLbConfig;
use envoy_types::pb::envoy::config::cluster::v3::cluster::ring_hash_lb_config::HashFunction;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, CustomClusterType, DiscoveryType, DnsLookupFamily,
    EdsClusterConfig, LbConfig, LbPolicy, LeastRequestLbConfig, MaglevLbConfig, RingHashLbConfig,
    TransportSocketMatch,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::health_check::custom_health_check::ConfigType;
use envoy_types::pb::envoy::config::core::v3::health_check::{CustomHealthCheck, HealthChecker};
use envoy_types::pb::envoy::config::core::v3::{
    address, transport_socket, Address, HealthCheck, HealthStatus, Locality, Metadata,
    RoutingPriority, TcpKeepalive, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::clusters::redis::v3::RedisClusterConfig;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::RedisProtocolOptions;
use envoy_types::pb::envoy::extensions::health_checkers::redis::v3::Redis as RedisHealthChecker;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{
    value, Any as PbAny, Duration as PbDuration, Struct as PbStruct,
};
use prost::Message;

use super::{duration, optional_secret, socket_address, AddressKind};
use crate::error::FieldPath;
use crate::supported::{
    no_factory, REDIS_CHECKER_ONLY, REDIS_CLUSTER_TYPE, REDIS_HEALTH_CHECKER, REDIS_PROXY_NAMES,
};
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
/// `HealthCheck.no_traffic_interval` when unset.
const DEFAULT_NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) fn cluster(c: Cluster, p: &FieldPath) -> Result<model::Cluster, ConfigError> {
    #[allow(deprecated)]
    let Cluster {
        name,
        cluster_discovery_type,
        connect_timeout,
        lb_policy,
        lb_config,
        load_assignment,
        dns_refresh_rate,
        dns_lookup_family,
        typed_extension_protocol_options,
        common_lb_config,
        eds_cluster_config,
        circuit_breakers,
        upstream_connection_options,
        transport_socket_matches,
        health_checks,
        transport_socket,
        // Only Istio's metadata exchange passes the allowlist; it changes nothing proxied.
        filters: _,
        // Ignored by the allowlist: read by nothing redvoy runs, HTTP pools only, stats naming.
        metadata: _,
        max_requests_per_connection: _,
        alt_stat_name: _,
        // Refused by the allowlist.
        transport_socket_matcher: _,
        stats_matcher: _,
        per_connection_buffer_limit_bytes: _,
        per_connection_buffer_high_watermark_timeout: _,
        upstream_http_protocol_options: _,
        common_http_protocol_options: _,
        http_protocol_options: _,
        http2_protocol_options: _,
        dns_jitter: _,
        dns_failure_refresh_rate: _,
        respect_dns_ttl: _,
        dns_resolvers: _,
        use_tcp_for_dns_lookups: _,
        dns_resolution_config: _,
        typed_dns_resolver_config: _,
        wait_for_warm_on_init: _,
        outlier_detection,
        cleanup_interval: _,
        upstream_bind_config: _,
        lb_subset_config: _,
        protocol_selection: _,
        close_connections_on_host_health_failure: _,
        ignore_health_on_host_removal,
        load_balancing_policy: _,
        lrs_server: _,
        lrs_report_endpoint_metrics: _,
        track_timeout_budgets: _,
        upstream_config: _,
        track_cluster_stats: _,
        preconnect_policy: _,
        connection_pool_per_downstream_connection: _,
        queuing_policies: _,
    } = c;
    if name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("name"),
            "value length must be at least 1 characters",
        ));
    }
    let (discovery, redis_cluster) = match &cluster_discovery_type {
        None => (model::DiscoveryType::Static, None),
        Some(ClusterDiscoveryType::Type(t)) => {
            let discovery = match DiscoveryType::try_from(*t) {
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
            };
            (discovery, None)
        }
        Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
            name: type_name,
            typed_config,
        })) => {
            // The allowlist walk refused every other cluster type already.
            if type_name != REDIS_CLUSTER_TYPE {
                return Err(ConfigError::unsupported_because(
                    p.field("cluster_type"),
                    format!("unsupported cluster type '{type_name}'"),
                ));
            }
            let config = redis_cluster_config(typed_config.as_ref(), &p.field("cluster_type"))?;
            (model::DiscoveryType::RedisCluster, Some(config))
        }
    };

    let connect_timeout = match &connect_timeout {
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
    let dns_refresh_rate = match &dns_refresh_rate {
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
    let dns_lookup_family = match DnsLookupFamily::try_from(dns_lookup_family) {
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
        let policy = LbPolicy::try_from(lb_policy);
        if policy != Ok(LbPolicy::ClusterProvided) {
            let name = policy.map_or("UNKNOWN", |l| l.as_str_name());
            return Err(ConfigError::invalid(
                p.field("lb_policy"),
                format!(
                    "cluster: LB policy {name} is not valid for Cluster type ORIGINAL_DST. Only \
                     'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"
                ),
            ));
        }
        if load_assignment.is_some() {
            return Err(ConfigError::invalid(
                p.field("load_assignment"),
                "ORIGINAL_DST clusters must have no load assignment configured",
            ));
        }
        // Unused for ORIGINAL_DST; the model has no "cluster provided" policy.
        model::LbPolicy::RoundRobin
    } else {
        self::lb_policy(lb_policy, lb_config.as_ref(), &name, p, discovery)?
    };
    let eds = match (&eds_cluster_config, discovery) {
        (
            Some(EdsClusterConfig {
                eds_config,
                service_name,
            }),
            model::DiscoveryType::Eds,
        ) => {
            let ep = p.field("eds_cluster_config");
            let Some(source) = eds_config else {
                return Err(ConfigError::invalid(
                    ep.field("eds_config"),
                    "cannot create an EDS cluster without an EDS config",
                ));
            };
            Some(model::EdsConfig {
                service_name: if service_name.is_empty() {
                    name.clone()
                } else {
                    service_name.clone()
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
    let endpoints = endpoints(load_assignment.as_ref(), discovery, p)?;
    let redis_protocol_options = protocol_options(&typed_extension_protocol_options, p)?;
    let (use_hostname_for_hashing, healthy_panic_threshold) =
        self::common_lb_config(common_lb_config.as_ref(), p)?;
    let circuit_breakers = self::circuit_breakers(circuit_breakers.as_ref(), p)?;
    let tcp_keepalive = upstream_connection_options
        .as_ref()
        .and_then(tcp_keepalive_option);
    let transport_socket_matches = self::transport_socket_matches(&transport_socket_matches, p)?;
    let health_check = self::health_checks(&health_checks, p)?;
    let upstream_tls = super::tls::upstream_tls(transport_socket.as_ref(), p)?;
    if upstream_tls.is_some() {
        let not_yet = match discovery {
            model::DiscoveryType::OriginalDst => Some("ORIGINAL_DST clusters"),
            _ => None,
        };
        if let Some(what) = not_yet {
            return Err(ConfigError::unsupported_because(
                p.field("transport_socket"),
                format!("TLS is not supported by redvoy yet for {what}"),
            ));
        }
    }
    let outlier_detection = outlier_detection
        .as_ref()
        .map(|o| self::outlier_detection(o, &p.field("outlier_detection")))
        .transpose()?;
    if matches!(
        discovery,
        model::DiscoveryType::RedisCluster | model::DiscoveryType::OriginalDst
    ) {
        // Discovered nodes and original destinations carry no metadata: the entry matching no
        // labels decides for every one of them (and for Redis Cluster discovery).
        let none = BTreeMap::new();
        let selected = transport_socket_matches
            .resolve(&none, &none)
            .and_then(|i| transport_socket_matches.0.get(i));
        if let (model::DiscoveryType::OriginalDst, Some(m)) = (discovery, selected) {
            if matches!(m.socket, model::MatchSocket::Tls(_)) {
                return Err(ConfigError::unsupported_because(
                    p.field("transport_socket_matches"),
                    format!(
                        "the cluster's hosts select transport socket '{}': TLS is not \
                         supported by redvoy yet for ORIGINAL_DST clusters",
                        m.name
                    ),
                ));
            }
        }
        // Redis Cluster nodes take the first endpoint's entry (Envoy builds them from it);
        // original destinations, and redirection targets, the entry matching no labels.
        let seed = match (discovery, endpoints.first()) {
            (model::DiscoveryType::RedisCluster, Some(e)) => transport_socket_matches
                .unsupported_for(
                    &e.transport_socket_labels,
                    &e.locality_transport_socket_labels,
                ),
            _ => None,
        };
        if let Some(m) = seed.or_else(|| transport_socket_matches.unsupported_for(&none, &none)) {
            return Err(ConfigError::unsupported_because(
                p.field("transport_socket_matches"),
                format!(
                    "the cluster's hosts select transport socket '{}', which redvoy does not \
                     run",
                    m.name
                ),
            ));
        }
    }

    Ok(model::Cluster {
        name,
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
        // Boxed: most clusters set none of these, and each cluster keeps its config.
        health_check: health_check.map(Box::new),
        outlier_detection: outlier_detection.map(Box::new),
        ignore_health_on_host_removal,
        upstream_tls: upstream_tls.map(Box::new),
    })
}

/// `outlier_detection`, Envoy's defaults applied (the allowlist refused success-rate and
/// failure-percentage fields).
fn outlier_detection(
    o: &OutlierDetection,
    p: &FieldPath,
) -> Result<model::OutlierDetection, ConfigError> {
    const MESSAGE: &str = "OutlierDetection";
    let OutlierDetection {
        consecutive_5xx,
        interval,
        base_ejection_time,
        max_ejection_percent,
        enforcing_consecutive_5xx,
        consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
        split_external_local_origin_errors,
        consecutive_local_origin_failure,
        enforcing_consecutive_local_origin_failure,
        max_ejection_time,
        max_ejection_time_jitter,
        successful_active_health_check_uneject_host,
        always_eject_one_host,
        // Refused by the allowlist: success-rate and failure-percentage ejection, monitors
        // and degraded-host detection are not implemented.
        enforcing_success_rate: _,
        success_rate_minimum_hosts: _,
        success_rate_request_volume: _,
        success_rate_stdev_factor: _,
        enforcing_local_origin_success_rate: _,
        failure_percentage_threshold: _,
        enforcing_failure_percentage: _,
        enforcing_failure_percentage_local_origin: _,
        failure_percentage_minimum_hosts: _,
        failure_percentage_request_volume: _,
        monitors: _,
        detect_degraded_hosts: _,
    } = o;
    let read = |d: &Option<PbDuration>, name: &str| -> Result<Option<Duration>, ConfigError> {
        let Some(d) = d else {
            return Ok(None);
        };
        let value = duration(d, &p.field(name))?;
        if value.is_zero() && name != "max_ejection_time_jitter" {
            return Err(ConfigError::proto_constraint(
                &p.field(name),
                MESSAGE,
                "value must be greater than 0s",
            ));
        }
        Ok(Some(value))
    };
    let percent = |v: &Option<u32>, name: &str, default: u32| -> Result<u32, ConfigError> {
        match v {
            Some(v) if *v > 100 => Err(ConfigError::proto_constraint(
                &p.field(name),
                MESSAGE,
                "value must be less than or equal to 100",
            )),
            Some(v) => Ok(*v),
            None => Ok(default),
        }
    };
    let value = |v: &Option<u32>, default: u32| v.unwrap_or(default);
    let interval = read(interval, "interval")?.unwrap_or(Duration::from_secs(10));
    let base_ejection_time =
        read(base_ejection_time, "base_ejection_time")?.unwrap_or(Duration::from_secs(30));
    // Envoy: the default maximum is 300 s, or the base when that is larger.
    let max_ejection_time = read(max_ejection_time, "max_ejection_time")?
        .unwrap_or_else(|| base_ejection_time.max(Duration::from_secs(300)));
    if max_ejection_time < base_ejection_time {
        return Err(ConfigError::invalid(
            p.field("max_ejection_time"),
            "outlier detector's max_ejection_time cannot be smaller than base_ejection_time",
        ));
    }
    Ok(model::OutlierDetection {
        consecutive_5xx: value(&consecutive_5xx.map(|v| v.value), 5),
        consecutive_gateway_failure: value(&consecutive_gateway_failure.map(|v| v.value), 5),
        consecutive_local_origin_failure: value(
            &consecutive_local_origin_failure.map(|v| v.value),
            5,
        ),
        enforcing_consecutive_5xx: percent(
            &enforcing_consecutive_5xx.map(|v| v.value),
            "enforcing_consecutive_5xx",
            100,
        )?,
        enforcing_consecutive_gateway_failure: percent(
            &enforcing_consecutive_gateway_failure.map(|v| v.value),
            "enforcing_consecutive_gateway_failure",
            0,
        )?,
        enforcing_consecutive_local_origin_failure: percent(
            &enforcing_consecutive_local_origin_failure.map(|v| v.value),
            "enforcing_consecutive_local_origin_failure",
            100,
        )?,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: read(max_ejection_time_jitter, "max_ejection_time_jitter")?
            .unwrap_or(Duration::ZERO),
        max_ejection_percent: percent(
            &max_ejection_percent.map(|v| v.value),
            "max_ejection_percent",
            10,
        )?,
        split_external_local_origin_errors: *split_external_local_origin_errors,
        always_eject_one_host: always_eject_one_host.is_some_and(|v| v.value),
        successful_active_health_check_uneject_host: successful_active_health_check_uneject_host
            .is_none_or(|v| v.value),
    })
}

/// `health_checks`: at most one entry, the Redis health checker (the allowlist refused every
/// other checker), with Envoy's proto constraints and defaults.
fn health_checks(
    checks: &[HealthCheck],
    p: &FieldPath,
) -> Result<Option<model::HealthCheck>, ConfigError> {
    let hp = p.field("health_checks");
    // Envoy checks every entry's proto constraints before it builds the cluster.
    let mut converted = checks
        .iter()
        .enumerate()
        .map(|(i, c)| health_check(c, &hp.index(i)))
        .collect::<Result<Vec<_>, _>>()?;
    if converted.len() > 1 {
        return Err(ConfigError::unsupported_because(
            hp.index(1),
            "redvoy runs one health checker per cluster",
        ));
    }
    Ok(converted.pop())
}

/// One `HealthCheck`. Errors come in Envoy's order: negative durations (found while parsing),
/// then the proto constraints in declaration order, the checker oneof last.
fn health_check(c: &HealthCheck, p: &FieldPath) -> Result<model::HealthCheck, ConfigError> {
    const MESSAGE: &str = "HealthCheck";
    #[allow(deprecated)]
    let HealthCheck {
        timeout,
        interval,
        initial_jitter,
        interval_jitter,
        interval_jitter_percent,
        unhealthy_threshold,
        healthy_threshold,
        reuse_connection,
        no_traffic_interval,
        no_traffic_healthy_interval,
        unhealthy_interval,
        unhealthy_edge_interval,
        healthy_edge_interval,
        event_log_path,
        always_log_health_check_failures,
        always_log_health_check_success,
        health_checker,
        // Refused by the allowlist: not implemented (`alt_port`, `event_service`), sink
        // extensions, and health check sockets other than the cluster's plaintext one.
        alt_port: _,
        event_logger: _,
        event_service: _,
        tls_options: _,
        transport_socket_match_criteria: _,
    } = c;
    let read = |d: &Option<PbDuration>, name: &str| -> Result<Option<Duration>, ConfigError> {
        d.as_ref().map(|d| duration(d, &p.field(name))).transpose()
    };
    let timeout = read(timeout, "timeout")?;
    let interval = read(interval, "interval")?;
    let initial_jitter = read(initial_jitter, "initial_jitter")?;
    let interval_jitter = read(interval_jitter, "interval_jitter")?;
    let no_traffic_interval = read(no_traffic_interval, "no_traffic_interval")?;
    let no_traffic_healthy_interval =
        read(no_traffic_healthy_interval, "no_traffic_healthy_interval")?;
    let unhealthy_interval = read(unhealthy_interval, "unhealthy_interval")?;
    let unhealthy_edge_interval = read(unhealthy_edge_interval, "unhealthy_edge_interval")?;
    let healthy_edge_interval = read(healthy_edge_interval, "healthy_edge_interval")?;

    // PGV `gt: {}` on every interval that is set.
    let positive = |d: Option<Duration>, name: &str| -> Result<Option<Duration>, ConfigError> {
        match d {
            Some(d) if d.is_zero() => Err(ConfigError::proto_constraint(
                &p.field(name),
                MESSAGE,
                "value must be greater than 0s",
            )),
            d => Ok(d),
        }
    };
    let required =
        |name: &str| ConfigError::proto_constraint(&p.field(name), MESSAGE, "value is required");
    let timeout = positive(timeout, "timeout")?.ok_or_else(|| required("timeout"))?;
    let interval = positive(interval, "interval")?.ok_or_else(|| required("interval"))?;
    let unhealthy_threshold = unhealthy_threshold
        .map(|v| v.value)
        .ok_or_else(|| required("unhealthy_threshold"))?;
    let healthy_threshold = healthy_threshold
        .map(|v| v.value)
        .ok_or_else(|| required("healthy_threshold"))?;
    let no_traffic_interval = positive(no_traffic_interval, "no_traffic_interval")?
        .unwrap_or(DEFAULT_NO_TRAFFIC_INTERVAL);
    let no_traffic_healthy_interval =
        positive(no_traffic_healthy_interval, "no_traffic_healthy_interval")?
            .unwrap_or(no_traffic_interval);
    let unhealthy_interval =
        positive(unhealthy_interval, "unhealthy_interval")?.unwrap_or(interval);
    let unhealthy_edge_interval =
        positive(unhealthy_edge_interval, "unhealthy_edge_interval")?.unwrap_or(unhealthy_interval);
    let healthy_edge_interval =
        positive(healthy_edge_interval, "healthy_edge_interval")?.unwrap_or(interval);

    // Refused by the allowlist already.
    let other_checker = |name: &str| {
        ConfigError::unsupported_because(
            p.field(name),
            format!("not supported by redvoy; {REDIS_CHECKER_ONLY}"),
        )
    };
    let checker = match health_checker {
        Some(HealthChecker::CustomHealthCheck(custom)) => {
            custom_health_check(custom, &p.field("custom_health_check"))?
        }
        Some(HealthChecker::HttpHealthCheck(_)) => return Err(other_checker("http_health_check")),
        Some(HealthChecker::TcpHealthCheck(_)) => return Err(other_checker("tcp_health_check")),
        Some(HealthChecker::GrpcHealthCheck(_)) => return Err(other_checker("grpc_health_check")),
        // PGV's wording for a required oneof names no message.
        None => {
            return Err(ConfigError::invalid(
                p,
                "Proto constraint validation failed (field: \"health_checker\", reason: is \
                 required)",
            ));
        }
    };
    Ok(model::HealthCheck {
        timeout,
        interval,
        initial_jitter: initial_jitter.unwrap_or_default(),
        interval_jitter: interval_jitter.unwrap_or_default(),
        interval_jitter_percent: *interval_jitter_percent,
        unhealthy_threshold,
        healthy_threshold,
        reuse_connection: reuse_connection.is_none_or(|v| v.value),
        no_traffic_interval,
        no_traffic_healthy_interval,
        unhealthy_interval,
        unhealthy_edge_interval,
        healthy_edge_interval,
        event_log_path: (!event_log_path.is_empty()).then(|| event_log_path.clone()),
        always_log_health_check_failures: *always_log_health_check_failures,
        always_log_health_check_success: *always_log_health_check_success,
        checker,
    })
}

/// `custom_health_check`: the Redis checker (the allowlist walk refused any other type and
/// re-packed TypedStruct forms as the native type).
fn custom_health_check(
    c: &CustomHealthCheck,
    p: &FieldPath,
) -> Result<model::HealthChecker, ConfigError> {
    let CustomHealthCheck { name, config_type } = c;
    if name.is_empty() {
        return Err(ConfigError::proto_constraint(
            &p.field("name"),
            "CustomHealthCheck",
            "value length must be at least 1 characters",
        ));
    }
    // Envoy finds the factory by type URL; without one there is nothing to find.
    let Some(ConfigType::TypedConfig(any)) = config_type else {
        return Err(ConfigError::invalid(p, no_factory(name, "")));
    };
    let tp = p.field("typed_config");
    if crate::parse::type_name_of(&any.type_url) != REDIS_HEALTH_CHECKER {
        return Err(ConfigError::unsupported_because(
            tp,
            format!(
                "unsupported health checker type {}; {REDIS_CHECKER_ONLY}",
                any.type_url
            ),
        ));
    }
    let RedisHealthChecker {
        key,
        // Refused by the allowlist.
        aws_iam: _,
    } = RedisHealthChecker::decode(any.value.as_slice())
        .map_err(|e| ConfigError::invalid(&tp, format!("cannot decode Redis: {e}")))?;
    Ok(model::HealthChecker::Redis {
        key: (!key.is_empty()).then(|| Bytes::from(key)),
    })
}

/// `upstream_connection_options.tcp_keepalive`.
fn tcp_keepalive_option(o: &UpstreamConnectionOptions) -> Option<model::TcpKeepalive> {
    let UpstreamConnectionOptions {
        tcp_keepalive,
        // Only names the interface in connection info (ignored by the allowlist).
        set_local_interface_name_on_upstream_connections: _,
        // Refused by the allowlist.
        happy_eyeballs_config: _,
    } = o;
    let TcpKeepalive {
        keepalive_probes,
        keepalive_time,
        keepalive_interval,
    } = tcp_keepalive.as_ref()?;
    Some(model::TcpKeepalive {
        probes: keepalive_probes.map(|v| v.value),
        time: keepalive_time.map(|v| Duration::from_secs(u64::from(v.value))),
        interval: keepalive_interval.map(|v| Duration::from_secs(u64::from(v.value))),
    })
}

/// `circuit_breakers.thresholds`: per priority, the first entry of that priority (Envoy's
/// `ResourceManagers::load`), Envoy's defaults for what it leaves unset. DEFAULT is what
/// tcp_proxy and the HTTP router enforce; HIGH (high-priority HTTP routes, which redvoy never
/// has) is only reported.
fn circuit_breakers(
    cb: Option<&CircuitBreakers>,
    p: &FieldPath,
) -> Result<model::CircuitBreakers, ConfigError> {
    let Some(CircuitBreakers {
        thresholds,
        // Refused by the allowlist.
        per_host_thresholds: _,
    }) = cb
    else {
        return Ok(model::CircuitBreakers::default());
    };
    let p = p.field("circuit_breakers").field("thresholds");
    let of = |priority: RoutingPriority| -> Result<model::Thresholds, ConfigError> {
        match thresholds
            .iter()
            .position(|t| RoutingPriority::try_from(t.priority) == Ok(priority))
        {
            Some(i) => self::thresholds(&thresholds[i], &p.index(i)),
            None => Ok(model::Thresholds::default()),
        }
    };
    let redis_enforced = thresholds
        .iter()
        .find(|t| RoutingPriority::try_from(t.priority) == Ok(RoutingPriority::Default))
        .map(|t| model::RedisLimits {
            max_connections: t.max_connections.map(|v| v.value),
            max_pending_requests: t.max_pending_requests.map(|v| v.value),
            max_requests: t.max_requests.map(|v| v.value),
        })
        .unwrap_or_default();
    Ok(model::CircuitBreakers {
        default: of(RoutingPriority::Default)?,
        high: of(RoutingPriority::High)?,
        redis_enforced,
    })
}

/// One `CircuitBreakers.Thresholds` entry, Envoy's defaults applied.
fn thresholds(t: &Thresholds, p: &FieldPath) -> Result<model::Thresholds, ConfigError> {
    let Thresholds {
        // Chosen by the caller.
        priority: _,
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        retry_budget,
        track_remaining,
        max_connection_pools,
    } = t;
    let d = model::Thresholds::default();
    let retry_budget = retry_budget
        .as_ref()
        .map(|b| self::retry_budget(b, &p.field("retry_budget")))
        .transpose()?;
    Ok(model::Thresholds {
        max_connections: max_connections.map_or(d.max_connections, |v| v.value),
        max_pending_requests: max_pending_requests.map_or(d.max_pending_requests, |v| v.value),
        max_requests: max_requests.map_or(d.max_requests, |v| v.value),
        max_retries: max_retries.map_or(d.max_retries, |v| v.value),
        max_connection_pools: max_connection_pools.map(|v| v.value),
        retry_budget,
        track_remaining: *track_remaining,
    })
}

/// `Thresholds.retry_budget`: Envoy's defaults (20 %, 3) for what it leaves unset.
fn retry_budget(b: &RetryBudget, p: &FieldPath) -> Result<model::RetryBudget, ConfigError> {
    let RetryBudget {
        budget_percent,
        min_retry_concurrency,
        budget_interval,
    } = b;
    // Only widens the requests the budget counts; redvoy counts none against the breaker, so
    // it changes nothing. Checked as Envoy checks it.
    if let Some(interval) = budget_interval {
        super::duration(interval, &p.field("budget_interval"))?;
    }
    let budget_percent = match budget_percent {
        Some(Percent { value }) if !(0.0..=100.0).contains(value) => {
            return Err(ConfigError::proto_constraint(
                &p.field("budget_percent").field("value"),
                "Percent",
                "value must be inside range [0, 100]",
            ));
        }
        Some(Percent { value }) => *value,
        None => 20.0,
    };
    Ok(model::RetryBudget {
        budget_percent,
        min_retry_concurrency: min_retry_concurrency.map_or(3, |v| v.value),
    })
}

/// `common_lb_config`: `consistent_hashing_lb_config.use_hostname_for_hashing`, and
/// `healthy_panic_threshold` (`Percent`, 0 to 100; default 50).
fn common_lb_config(
    c: Option<&CommonLbConfig>,
    p: &FieldPath,
) -> Result<(bool, model::PanicThreshold), ConfigError> {
    let Some(CommonLbConfig {
        healthy_panic_threshold,
        consistent_hashing_lb_config,
        // Refused by the allowlist.
        update_merge_window: _,
        ignore_new_hosts_until_first_hc: _,
        close_connections_on_host_set_change: _,
        override_host_status: _,
        locality_config_specifier: _,
    }) = c
    else {
        return Ok((false, model::PanicThreshold::default()));
    };
    let use_hostname_for_hashing = consistent_hashing_lb_config.as_ref().is_some_and(
        |ConsistentHashingLbConfig {
             use_hostname_for_hashing,
             // Refused by the allowlist.
             hash_balance_factor: _,
         }| *use_hostname_for_hashing,
    );
    let Some(Percent { value }) = healthy_panic_threshold else {
        return Ok((use_hostname_for_hashing, model::PanicThreshold::default()));
    };
    if !(0.0..=100.0).contains(value) {
        return Err(ConfigError::proto_constraint(
            &p.field("common_lb_config")
                .field("healthy_panic_threshold")
                .field("value"),
            "Percent",
            "value must be inside range [0, 100]",
        ));
    }
    Ok((use_hostname_for_hashing, model::PanicThreshold(*value)))
}

/// `transport_socket_matches`: each entry's labels and socket (plaintext, TLS, or one redvoy
/// does not run).
fn transport_socket_matches(
    matches: &[TransportSocketMatch],
    p: &FieldPath,
) -> Result<model::TransportSocketMatches, ConfigError> {
    let mut out = Vec::with_capacity(matches.len());
    for (i, m) in matches.iter().enumerate() {
        let TransportSocketMatch {
            name,
            r#match,
            transport_socket,
        } = m;
        let mp = p.field("transport_socket_matches").index(i);
        if transport_socket.is_none() {
            // Envoy builds the entry's socket from an empty config: no factory, refused.
            return Err(ConfigError::invalid(
                mp.field("transport_socket"),
                crate::supported::no_factory("", ""),
            ));
        }
        let socket = match super::tls::upstream_tls(transport_socket.as_ref(), &mp) {
            Ok(None) => model::MatchSocket::Plaintext,
            Ok(Some(tls)) => model::MatchSocket::Tls(Box::new(tls)),
            Err(ConfigError::Unsupported { .. }) if !is_tls(transport_socket.as_ref()) => {
                model::MatchSocket::Unsupported
            }
            Err(e) => return Err(e),
        };
        out.push(model::TransportSocketMatch {
            name: name.clone(),
            labels: r#match.as_ref().map(struct_labels).unwrap_or_default(),
            socket,
        });
    }
    Ok(model::TransportSocketMatches(out))
}

/// Whether a socket is `envoy.transport_sockets.tls` (whose errors are the config's).
fn is_tls(socket: Option<&TransportSocket>) -> bool {
    matches!(
        socket.and_then(|s| s.config_type.as_ref()),
        Some(transport_socket::ConfigType::TypedConfig(any))
            if crate::parse::type_name_of(&any.type_url) == crate::supported::UPSTREAM_TLS
    )
}

/// The filter metadata Envoy's transport socket matcher reads.
const TRANSPORT_SOCKET_MATCH_FILTER: &str = "envoy.transport_socket_match";

/// A metadata's `envoy.transport_socket_match` labels.
fn metadata_labels(metadata: Option<&Metadata>) -> BTreeMap<String, String> {
    let Some(Metadata {
        filter_metadata,
        // Envoy's transport socket matcher reads the untyped form only.
        typed_filter_metadata: _,
    }) = metadata
    else {
        return BTreeMap::new();
    };
    filter_metadata
        .get(TRANSPORT_SOCKET_MATCH_FILTER)
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
    lb_policy: i32,
    lb_config: Option<&LbConfig>,
    cluster_name: &str,
    p: &FieldPath,
    discovery: model::DiscoveryType,
) -> Result<model::LbPolicy, ConfigError> {
    let policy = LbPolicy::try_from(lb_policy).map_err(|_| {
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
            let choice_count = match lb_config {
                Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    choice_count,
                    // Refused by the allowlist.
                    active_request_bias: _,
                    slow_start_config: _,
                })) => choice_count.map_or(DEFAULT_CHOICE_COUNT, |v| v.value),
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
            let (min, max, hash) = match lb_config {
                Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                    minimum_ring_size,
                    maximum_ring_size,
                    hash_function,
                })) => (
                    minimum_ring_size.map_or(DEFAULT_MIN_RING_SIZE, |v| v.value),
                    maximum_ring_size.map_or(DEFAULT_MAX_RING_SIZE, |v| v.value),
                    HashFunction::try_from(*hash_function),
                ),
                _ => (
                    DEFAULT_MIN_RING_SIZE,
                    DEFAULT_MAX_RING_SIZE,
                    Ok(HashFunction::XxHash),
                ),
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
            let hash_function = match hash {
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
            let table_size = match lb_config {
                Some(LbConfig::MaglevLbConfig(MaglevLbConfig { table_size })) => {
                    table_size.map_or(DEFAULT_MAGLEV_TABLE_SIZE, |v| v.value)
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
                    "cluster manager: cluster provided LB specified but cluster '{cluster_name}' \
                     did not provide one. Check cluster documentation."
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
    la: Option<&ClusterLoadAssignment>,
    discovery: model::DiscoveryType,
    p: &FieldPath,
) -> Result<Vec<model::Endpoint>, ConfigError> {
    let Some(la) = la else {
        return Ok(Vec::new());
    };
    let ClusterLoadAssignment {
        cluster_name,
        endpoints,
        // Refused by the allowlist.
        named_endpoints: _,
        policy: _,
    } = la;
    let lp = p.field("load_assignment");
    if cluster_name.is_empty() {
        return Err(ConfigError::invalid(
            lp.field("cluster_name"),
            "value length must be at least 1 characters",
        ));
    }
    if discovery == model::DiscoveryType::LogicalDns
        && (endpoints.len() != 1 || endpoints.first().is_some_and(|l| l.lb_endpoints.len() != 1))
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
    let ClusterLoadAssignment {
        endpoints,
        // Checked and kept by each caller.
        cluster_name: _,
        // Refused by the allowlist.
        named_endpoints: _,
        policy: _,
    } = la;
    let mut out = Vec::new();
    for (i, locality_endpoints) in endpoints.iter().enumerate() {
        let LocalityLbEndpoints {
            locality,
            metadata: locality_metadata,
            lb_endpoints,
            priority,
            // Only locality-weighted load balancing reads it, which is refused (ignored by the
            // allowlist).
            load_balancing_weight: _,
            // Refused by the allowlist.
            proximity: _,
            lb_config: _,
        } = locality_endpoints;
        let locp = lp.field("endpoints").index(i);
        let loc = locality.as_ref().map_or_else(
            model::Locality::default,
            |Locality {
                 region,
                 zone,
                 sub_zone,
             }| model::Locality {
                region: region.clone(),
                zone: zone.clone(),
                sub_zone: sub_zone.clone(),
            },
        );
        if *priority > MAX_PRIORITY {
            return Err(ConfigError::invalid(
                locp.field("priority"),
                format!("value must be less than or equal to {MAX_PRIORITY}"),
            ));
        }
        for (j, lb) in lb_endpoints.iter().enumerate() {
            let LbEndpoint {
                health_status,
                metadata,
                load_balancing_weight,
                host_identifier,
            } = lb;
            let ep = locp.field("lb_endpoints").index(j);
            let Some(HostIdentifier::Endpoint(endpoint)) = host_identifier else {
                return Err(ConfigError::invalid(
                    ep.field("endpoint"),
                    "value is required",
                ));
            };
            let Endpoint {
                address,
                hostname,
                // Refused by the allowlist.
                health_check_config: _,
                additional_addresses: _,
                observability_name: _,
            } = endpoint;
            let ap = ep.field("endpoint").field("address");
            let Some(address) = address else {
                return Err(ConfigError::invalid(ap, "value is required"));
            };
            let Address { address: specifier } = address;
            let (address, pipe) = match specifier {
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
            let weight = load_balancing_weight.map_or(DEFAULT_WEIGHT, |w| w.value);
            if weight < 1 {
                return Err(ConfigError::invalid(
                    ep.field("load_balancing_weight"),
                    "value must be greater than or equal to 1",
                ));
            }
            let health_status = match HealthStatus::try_from(*health_status) {
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
                hostname: hostname.clone(),
                health_status,
                locality: loc.clone(),
                priority: *priority,
                transport_socket_labels: metadata_labels(metadata.as_ref()),
                locality_transport_socket_labels: metadata_labels(locality_metadata.as_ref()),
            });
        }
    }
    Ok(out)
}

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
    let RedisClusterConfig {
        cluster_refresh_rate,
        cluster_refresh_timeout,
        redirect_refresh_interval,
        redirect_refresh_threshold,
        failure_refresh_threshold,
        host_degraded_refresh_threshold,
        // Refused by the allowlist.
        enable_zone_discovery: _,
    } = RedisClusterConfig::decode(any.value.as_slice())
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
    if let Some(d) = positive(&cluster_refresh_rate, "cluster_refresh_rate")? {
        out.cluster_refresh_rate = d;
    }
    if let Some(d) = positive(&cluster_refresh_timeout, "cluster_refresh_timeout")? {
        out.cluster_refresh_timeout = d;
    }
    if let Some(d) = &redirect_refresh_interval {
        out.redirect_refresh_interval = duration(d, &tp.field("redirect_refresh_interval"))?;
    }
    if let Some(v) = redirect_refresh_threshold {
        out.redirect_refresh_threshold = v.value;
    }
    out.failure_refresh_threshold = failure_refresh_threshold;
    out.host_degraded_refresh_threshold = host_degraded_refresh_threshold;
    Ok(out)
}

/// `typed_extension_protocol_options` under the redis_proxy filter's name (either alias).
fn protocol_options(
    options: &HashMap<String, PbAny>,
    p: &FieldPath,
) -> Result<Option<model::RedisProtocolOptions>, ConfigError> {
    let mut found = REDIS_PROXY_NAMES
        .iter()
        .filter_map(|name| options.get(*name).map(|any| (*name, any)));
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
    let RedisProtocolOptions {
        auth_username,
        auth_password,
        // Refused by the allowlist.
        aws_iam: _,
        credentials: _,
    } = RedisProtocolOptions::decode(any.value.as_slice()).map_err(|e| {
        ConfigError::invalid(&kp, format!("cannot decode RedisProtocolOptions: {e}"))
    })?;
    Ok(Some(model::RedisProtocolOptions {
        auth_username: optional_secret(auth_username.as_ref(), &kp.field("auth_username"))?,
        auth_password: optional_secret(auth_password.as_ref(), &kp.field("auth_password"))?,
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
