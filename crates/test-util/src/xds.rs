//! xDS resources (as generated protobuf messages) and xDS bootstraps for end-to-end tests.
//!
//! The builders make the few shapes the tests push: redis_proxy and tcp_proxy listeners, an
//! HTTP connection manager listener that needs RDS, STATIC and EDS clusters and their load
//! assignments. The bootstrap points an ADS stream (SotW or Delta, TCP or Unix socket) at an
//! [`AdsServer`].

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, TargetSpecifier};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    SocketAddress, TrafficDirection,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route as HttpRoute, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType as HttpFilterConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::prefix_routes::Route;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::{
    ConnPoolSettings, PrefixRoutes,
};
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::RedisProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration};

use crate::ads::{pack, AdsServer, Variant};

pub use envoy_types::pb::envoy::config::cluster::v3::Cluster as XdsCluster;
pub use envoy_types::pb::envoy::config::core::v3::HealthStatus as XdsHealthStatus;
pub use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment as XdsClusterLoadAssignment;
pub use envoy_types::pb::envoy::config::listener::v3::Listener as XdsListener;
pub use envoy_types::pb::envoy::config::route::v3::RouteConfiguration as XdsRouteConfiguration;

/// The redis_proxy op timeout of every listener built here.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Cluster connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `address:port` as an Envoy `Address`.
pub fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// `ConfigSource { ads: {}, resource_api_version: V3 }` with an optional initial fetch timeout.
pub fn ads_config_source(initial_fetch_timeout: Option<Duration>) -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        initial_fetch_timeout: initial_fetch_timeout.map(pb_duration),
        ..Default::default()
    }
}

/// A `ConfigSource` with its own `api_config_source` stream (`GRPC` for SotW, `DELTA_GRPC`)
/// to the static gRPC cluster `grpc_cluster`, as a bootstrap's `lds_config` / `cds_config` or a
/// cluster's `eds_config` uses instead of ADS.
pub fn grpc_config_source(variant: Variant, grpc_cluster: &str) -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: match variant {
                Variant::Sotw => ApiType::Grpc,
                Variant::Delta => ApiType::DeltaGrpc,
            } as i32,
            transport_api_version: ApiVersion::V3 as i32,
            grpc_services: vec![GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: grpc_cluster.to_string(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        })),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(ConfigType::TypedConfig(config)),
    }
}

/// A redis_proxy filter config: `routes` as `(prefix, cluster)`, and an optional catch-all.
pub fn redis_proxy(
    stat_prefix: &str,
    routes: &[(&str, &str)],
    catch_all: Option<&str>,
) -> RedisProxy {
    RedisProxy {
        stat_prefix: stat_prefix.to_string(),
        settings: Some(ConnPoolSettings {
            op_timeout: Some(pb_duration(OP_TIMEOUT)),
            ..Default::default()
        }),
        prefix_routes: Some(PrefixRoutes {
            routes: routes
                .iter()
                .map(|(prefix, cluster)| Route {
                    prefix: prefix.to_string(),
                    cluster: cluster.to_string(),
                    ..Default::default()
                })
                .collect(),
            catch_all_route: catch_all.map(|cluster| Route {
                cluster: cluster.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A listener on `address:port` with one filter chain holding `redis`.
pub fn redis_listener_with(name: &str, address: &str, port: u16, redis: RedisProxy) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter("envoy.filters.network.redis_proxy", pack(&redis))],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A redis_proxy listener on `127.0.0.1:port` (stat prefix = name) sending every key to
/// `cluster`.
pub fn redis_listener(name: &str, port: u16, cluster: &str) -> Listener {
    redis_listener_with(
        name,
        "127.0.0.1",
        port,
        redis_proxy(name, &[], Some(cluster)),
    )
}

/// A tcp_proxy filter to `cluster`.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    }
}

/// A listener on `address:port` with one filter chain holding a tcp_proxy to `cluster`
/// (Istio's default for a Redis port).
pub fn tcp_proxy_listener(name: &str, address: &str, port: u16, cluster: &str) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter(
                "envoy.filters.network.tcp_proxy",
                pack(&tcp_proxy(cluster, cluster)),
            )],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// Istio's `virtualOutbound`: `0.0.0.0:port`, `use_original_dst`, a catch-all tcp_proxy to
/// `fallback_cluster` (Istio: `PassthroughCluster` or `BlackHoleCluster`).
pub fn virtual_outbound_listener(port: u16, fallback_cluster: &str) -> Listener {
    let mut listener = tcp_proxy_listener("virtualOutbound", "0.0.0.0", port, fallback_cluster);
    listener.use_original_dst = Some(BoolValue { value: true });
    listener
}

/// `listener` with every network filter's `typed_config` type URL replaced by `type_url`
/// (bytes unchanged): e.g. the retired v2 RedisProxy URL, which Envoy 1.40 has no factory for.
pub fn with_filter_type_url(mut listener: Listener, type_url: &str) -> Listener {
    for chain in &mut listener.filter_chains {
        for filter in &mut chain.filters {
            if let Some(ConfigType::TypedConfig(any)) = &mut filter.config_type {
                any.type_url = type_url.to_string();
            }
        }
    }
    listener
}

/// `cluster` with `lb_policy: CLUSTER_PROVIDED` (which only some cluster types provide).
pub fn with_cluster_provided_lb(mut cluster: Cluster) -> Cluster {
    cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    cluster
}

/// `listener` with `bind_to_port: false` (reached only through an original-dst hand-off).
pub fn without_bind(mut listener: Listener) -> Listener {
    listener.bind_to_port = Some(BoolValue { value: false });
    listener
}

/// A listener whose HTTP connection manager takes its routes from RDS (`route_config_name`
/// over ADS), as Istio generates for an HTTP service port.
pub fn http_rds_listener(name: &str, port: u16, route_config_name: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source(Some(Duration::ZERO))),
            route_config_name: route_config_name.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(HttpFilterConfigType::TypedConfig(pack(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        address: Some(socket_address("127.0.0.1", port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter(
                "envoy.filters.network.http_connection_manager",
                pack(&hcm),
            )],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// A route configuration answering every request with `status` (for the RDS a listener from
/// [`http_rds_listener`] waits for on Envoy).
pub fn direct_response_routes(name: &str, status: u32) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: "all".to_string(),
            domains: vec!["*".to_string()],
            routes: vec![HttpRoute {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(Action::DirectResponse(DirectResponseAction {
                    status,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A load assignment of `127.0.0.1:<port>` endpoints.
pub fn load_assignment(cluster: &str, ports: &[u16]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: if ports.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints: ports
                    .iter()
                    .map(|port| LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket_address("127.0.0.1", *port)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

/// A load assignment of `127.0.0.1:<port>` endpoints, each with its EDS `health_status`.
pub fn load_assignment_with_health(
    cluster: &str,
    endpoints: &[(u16, XdsHealthStatus)],
) -> ClusterLoadAssignment {
    let ports: Vec<u16> = endpoints.iter().map(|(port, _)| *port).collect();
    let mut cla = load_assignment(cluster, &ports);
    for locality in &mut cla.endpoints {
        for (lb, (_, health)) in locality.lb_endpoints.iter_mut().zip(endpoints) {
            lb.health_status = *health as i32;
        }
    }
    cla
}

fn cluster_base(name: &str, kind: DiscoveryType) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(pb_duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        lb_policy: LbPolicy::RingHash as i32,
        ..Default::default()
    }
}

/// A STATIC RING_HASH cluster over `127.0.0.1:<port>` endpoints (none: Istio's
/// `BlackHoleCluster`).
pub fn static_cluster(name: &str, ports: &[u16]) -> Cluster {
    Cluster {
        load_assignment: Some(load_assignment(name, ports)),
        ..cluster_base(name, DiscoveryType::Static)
    }
}

/// An EDS RING_HASH cluster whose endpoints come over ADS (name = the EDS resource name).
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source(None)),
            service_name: String::new(),
        }),
        ..cluster_base(name, DiscoveryType::Eds)
    }
}

/// An EDS RING_HASH cluster whose endpoints come from `eds_config` (e.g. a
/// [`grpc_config_source`] stream of its own).
pub fn eds_cluster_from(name: &str, eds_config: ConfigSource) -> Cluster {
    Cluster {
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(eds_config),
            service_name: String::new(),
        }),
        ..cluster_base(name, DiscoveryType::Eds)
    }
}

/// Options of [`xds_bootstrap`].
#[derive(Clone, Debug)]
pub struct XdsBootstrap {
    /// `ads_config.api_type`: `GRPC` (SotW) or `DELTA_GRPC`.
    pub variant: Variant,
    /// `initial_fetch_timeout` of `cds_config` and `lds_config`; `None` leaves Envoy's 15 s.
    pub cds_initial_fetch_timeout: Option<Duration>,
    pub lds_initial_fetch_timeout: Option<Duration>,
    pub set_node_on_first_message_only: bool,
    /// The admin address: `{{ADMIN_SOCKET}}` (a Unix socket) instead of the TCP port.
    pub admin_socket: bool,
}

impl XdsBootstrap {
    pub fn new(variant: Variant) -> Self {
        XdsBootstrap {
            variant,
            cds_initial_fetch_timeout: None,
            lds_initial_fetch_timeout: None,
            set_node_on_first_message_only: false,
            admin_socket: false,
        }
    }
}

/// Node id and cluster of every xDS bootstrap built here.
pub const NODE_ID: &str = "redvoy-test-node";
pub const NODE_CLUSTER: &str = "redvoy-test-cluster";

fn duration_yaml(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A bootstrap with an admin block, a STATIC `xds-grpc` cluster (HTTP/2) pointing at `server`
/// and `dynamic_resources` taking LDS and CDS from its ADS stream. A template for
/// [`crate::Proxy::start`] (`{{ADMIN_PORT}}` or `{{ADMIN_SOCKET}}`).
pub fn xds_bootstrap(server: &AdsServer, options: &XdsBootstrap) -> String {
    let admin = if options.admin_socket {
        "{pipe: {path: \"{{ADMIN_SOCKET}}\"}}".to_string()
    } else {
        "{socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}".to_string()
    };
    let api_type = match options.variant {
        Variant::Sotw => "GRPC",
        Variant::Delta => "DELTA_GRPC",
    };
    let source = |timeout: Option<Duration>| match timeout {
        Some(t) => format!(
            "{{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: {}}}",
            duration_yaml(t)
        ),
        None => "{ads: {}, resource_api_version: V3}".to_string(),
    };
    format!(
        r#"node: {{id: {NODE_ID}, cluster: {NODE_CLUSTER}}}
admin:
  address: {admin}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: {node_once}
    grpc_services:
    - envoy_grpc: {{cluster_name: xds-grpc}}
  cds_config: {cds}
  lds_config: {lds}
{static_resources}"#,
        node_once = options.set_node_on_first_message_only,
        cds = source(options.cds_initial_fetch_timeout),
        lds = source(options.lds_initial_fetch_timeout),
        static_resources = xds_grpc_static_resources(&server.envoy_address_yaml()),
    )
}

/// The bootstrap's `static_resources` with the `xds-grpc` cluster (STATIC, HTTP/2) whose one
/// endpoint is `address_yaml` (a `socket_address` or a `pipe`, in YAML flow form).
pub fn xds_grpc_static_resources(address_yaml: &str) -> String {
    format!(
        r#"static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {address_yaml}}}
"#
    )
}

/// `cluster` with a Redis health checker (`envoy.health_checkers.redis`, PING) checking every
/// `interval` (with or without traffic), a check timing out after `interval` × 0.8, and
/// unhealthy/healthy thresholds of 2.
pub fn with_redis_health_check(cluster: Cluster, interval: Duration) -> Cluster {
    use envoy_types::pb::envoy::config::core::v3::health_check::custom_health_check::ConfigType as CheckConfig;
    use envoy_types::pb::envoy::config::core::v3::health_check::{
        CustomHealthCheck, HealthChecker,
    };
    use envoy_types::pb::envoy::config::core::v3::HealthCheck;
    use envoy_types::pb::envoy::extensions::health_checkers::redis::v3::Redis;
    use envoy_types::pb::google::protobuf::UInt32Value;
    let check = HealthCheck {
        timeout: Some(pb_duration(interval * 4 / 5)),
        interval: Some(pb_duration(interval)),
        no_traffic_interval: Some(pb_duration(interval)),
        unhealthy_threshold: Some(UInt32Value { value: 2 }),
        healthy_threshold: Some(UInt32Value { value: 2 }),
        health_checker: Some(HealthChecker::CustomHealthCheck(CustomHealthCheck {
            name: "envoy.health_checkers.redis".to_string(),
            config_type: Some(CheckConfig::TypedConfig(
                crate::ads::pack(&Redis::default()),
            )),
        })),
        ..Default::default()
    };
    Cluster {
        health_checks: vec![check],
        ..cluster
    }
}

/// `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`.
pub const TYPE_SECRET: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// A `tls_certificate` secret with inline PEM (how Istio's agent sends `default`).
pub fn certificate_secret(name: &str, chain_pem: &str, key_pem: &str) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain_pem)),
            private_key: Some(inline(key_pem)),
            ..Default::default()
        })),
    }
}

/// A `validation_context` secret with an inline CA (how Istio's agent sends `ROOTCA`).
pub fn validation_secret(name: &str, ca_pem: &str) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(ca_pem)),
                ..Default::default()
            },
        )),
    }
}

fn inline(pem: &str) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    envoy_types::pb::envoy::config::core::v3::DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    }
}

/// The `sds_config` Istio writes for its agent's secrets (SotW on `sds-grpc`, node on the
/// first message only, wait forever), as YAML.
pub const ISTIO_SDS_CONFIG_YAML: &str = "{api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}], set_node_on_first_message_only: true, transport_api_version: V3}, initial_fetch_timeout: 0s, resource_api_version: V3}";

/// `cluster` over TLS (sending `sni`), its server certificates verified against the CA of
/// secret `ca_secret`, asked for on ADS (`validation_context_sds_secret_config`).
pub fn with_upstream_tls_from_ads(mut cluster: Cluster, ca_secret: &str, sni: &str) -> Cluster {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
    use envoy_types::pb::envoy::config::core::v3::TransportSocket;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CommonTlsContext, SdsSecretConfig, UpstreamTlsContext,
    };
    let context = UpstreamTlsContext {
        sni: sni.to_owned(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                SdsSecretConfig {
                    name: ca_secret.to_owned(),
                    sds_config: Some(ads_config_source(None)),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    cluster.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(SocketConfig::TypedConfig(pack(&context))),
    });
    cluster
}

/// A `tls_certificate` secret naming its files (an SDS server that hands out paths).
pub fn certificate_secret_files(name: &str, chain_path: &str, key_path: &str) -> Secret {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    let file = |path: &str| envoy_types::pb::envoy::config::core::v3::DataSource {
        specifier: Some(Specifier::Filename(path.to_owned())),
        ..Default::default()
    };
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(file(chain_path)),
            private_key: Some(file(key_path)),
            ..Default::default()
        })),
    }
}

/// The `sds-grpc` cluster of Istio's bootstrap (HTTP/2 to the agent's Unix socket), as a
/// `static_resources.clusters` item in YAML.
pub fn sds_grpc_cluster_yaml(socket: &str) -> String {
    format!(
        "  - name: sds-grpc\n    type: STATIC\n    connect_timeout: 1s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {{http2_protocol_options: {{}}}}\n    load_assignment: {{cluster_name: sds-grpc, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: {socket}}}}}}}}}]}}]}}\n"
    )
}
