//! xDS resources as Istio sends them: a filesystem discovery file is read, and each resource
//! decoded with `decode_listener` / `decode_cluster` / `decode_cluster_load_assignment`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use redvoy_config::model::*;
use redvoy_config::{
    decode_cluster, decode_cluster_load_assignment, decode_listener, read_discovery_file,
    DynamicOptions, RawResource, ResourceError,
};

const OPTS: DynamicOptions = DynamicOptions {
    reject_unknown_dynamic_fields: false,
};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("redvoy-resources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The resources of a YAML `DiscoveryResponse`.
fn resources(name: &str, yaml: &str) -> Vec<RawResource> {
    let file = read_discovery_file(&temp_file(name, yaml)).unwrap();
    file.resources
}

const LISTENERS: &str = r#"
version_info: "7"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 10.96.0.10_6379
  address: {socket_address: {address: 10.96.0.10, port_value: 6379}}
  bind_to_port: false
  traffic_direction: OUTBOUND
  continue_on_listener_filters_timeout: true
  listener_filters_timeout: 0s
  filter_chains:
  - filters:
    - name: istio.metadata_exchange
      typed_config:
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
        value: {protocol: istio-peer-exchange}
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: outbound|6379||redis.shop.svc.cluster.local
        cluster: outbound|6379||redis.shop.svc.cluster.local
        access_log:
        - name: envoy.access_loggers.file
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
            path: /dev/stdout
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: virtualOutbound
  address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
  use_original_dst: true
  traffic_direction: OUTBOUND
  filter_chains:
  - name: virtualOutbound-catchall-tcp
    filter_chain_match:
      prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]
      destination_port: 6379
      source_ports: [1234]
    filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: PassthroughCluster
        weighted_clusters: {clusters: [{name: PassthroughCluster, weight: 1}]}
        idle_timeout: 0s
  - filter_chain_match: {application_protocols: [http/1.1]}
    filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: BlackHoleCluster
        cluster: BlackHoleCluster
  default_filter_chain:
    filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: PassthroughCluster
        cluster: PassthroughCluster
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 0.0.0.0_8080
  address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: outbound_0.0.0.0_8080
        rds: {route_config_name: "8080", config_source: {ads: {}}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: bad_redis
  address: {socket_address: {address: 127.0.0.1, port_value: 6390}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.redis_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
        stat_prefix: ""
        settings: {op_timeout: 1s}
        prefix_routes: {catch_all_route: {cluster: c}}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http_static
  address: {socket_address: {address: 127.0.0.1, port_value: 15021}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: agent
        codec_type: HTTP1
        route_config:
          virtual_hosts:
          - name: backend
            domains: ["*"]
            routes:
            - match: {prefix: /healthz/ready}
              route: {cluster: agent, prefix_rewrite: /ready, timeout: 2s}
            - match: {path: /teapot}
              direct_response: {status: 418, body: {inline_string: short and stout}}
        http_filters:
        - name: envoy.filters.http.compressor
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
            compressor_library:
              name: gzip
              typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip}
        - name: envoy.filters.http.router
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#;

#[test]
fn istio_listeners() {
    let rs = resources("lds.yaml", LISTENERS);
    let names: Vec<&str> = rs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "10.96.0.10_6379",
            "virtualOutbound",
            "0.0.0.0_8080",
            "bad_redis",
            "http_static"
        ]
    );

    let vip = decode_listener(&rs[0].value, &OPTS).unwrap();
    assert!(!vip.bind_to_port);
    assert_eq!(vip.traffic_direction, TrafficDirection::Outbound);
    assert_eq!(vip.filter_chains.len(), 1);
    assert_eq!(
        vip.filter_chains[0].filter,
        NetworkFilter::TcpProxy(TcpProxy {
            stat_prefix: "outbound|6379||redis.shop.svc.cluster.local".to_owned(),
            cluster: "outbound|6379||redis.shop.svc.cluster.local".to_owned(),
            weighted_clusters: Vec::new(),
            idle_timeout: Some(Duration::from_secs(3600)),
        })
    );

    let vo = decode_listener(&rs[1].value, &OPTS).unwrap();
    assert!(vo.use_original_dst && vo.bind_to_port);
    let chain = &vo.filter_chains[0];
    assert_eq!(chain.name, "virtualOutbound-catchall-tcp");
    assert_eq!(
        chain.filter_chain_match,
        FilterChainMatch {
            destination_port: Some(6379),
            prefix_ranges: vec![CidrRange {
                address: "10.0.0.0".parse().unwrap(),
                prefix_len: 8
            }],
            source_prefix_ranges: vec![],
            source_ports: vec![1234],
            ..Default::default()
        }
    );
    assert_eq!(
        chain.filter,
        NetworkFilter::TcpProxy(TcpProxy {
            stat_prefix: "PassthroughCluster".to_owned(),
            cluster: "PassthroughCluster".to_owned(),
            // Istio writes the catch-all as one weighted cluster.
            weighted_clusters: vec![("PassthroughCluster".to_owned(), 1)],
            idle_timeout: None,
        })
    );
    assert_eq!(
        vo.filter_chains[1].filter_chain_match.application_protocols,
        ["http/1.1"]
    );
    assert!(vo.default_filter_chain.is_some());

    match decode_listener(&rs[2].value, &OPTS) {
        Err(ResourceError::Unsupported(e)) => assert!(e.contains("RDS"), "{e}"),
        other => panic!("{other:?}"),
    }
    match decode_listener(&rs[3].value, &OPTS) {
        Err(ResourceError::Invalid(e)) => assert!(
            e.contains(
                "Proto constraint validation failed (RedisProxyValidationError.StatPrefix: value \
                 length must be at least 1 characters)"
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }

    let http = decode_listener(&rs[4].value, &OPTS).unwrap();
    let NetworkFilter::HttpConnectionManager(hcm) = &http.filter_chains[0].filter else {
        panic!("{http:?}");
    };
    assert_eq!(hcm.stat_prefix, "agent");
    assert_eq!(
        hcm.virtual_hosts,
        vec![VirtualHost {
            name: "backend".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![
                HttpRoute {
                    path_match: PathMatch::Prefix("/healthz/ready".to_owned()),
                    action: HttpRouteAction::Cluster {
                        cluster: "agent".to_owned(),
                        prefix_rewrite: Some("/ready".to_owned()),
                        timeout: Duration::from_secs(2),
                    },
                },
                HttpRoute {
                    path_match: PathMatch::Path("/teapot".to_owned()),
                    action: HttpRouteAction::DirectResponse {
                        status: 418,
                        body: Some("short and stout".to_owned()),
                    },
                },
            ],
        }]
    );
}

/// `istio.stats` carries `stats.PluginConfig`, a type only Istio's proxy knows: tolerated and
/// dropped. As the last filter it is unsupported (no terminal filter redvoy runs).
#[test]
fn istio_stats_filter_is_dropped() {
    let rs = resources("lds-stats.yaml", LISTENERS);
    let mut l = Listener::decode(rs[0].value.as_ref()).unwrap();
    let stats = Filter {
        name: "istio.stats".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/stats.PluginConfig".to_owned(),
            value: vec![0x0a, 0x03, b'a', b'b', b'c'],
        })),
    };
    l.filter_chains[0].filters.insert(0, stats.clone());
    let model = decode_listener(&l.encode_to_vec(), &OPTS).unwrap();
    assert!(matches!(
        model.filter_chains[0].filter,
        NetworkFilter::TcpProxy(_)
    ));

    l.filter_chains[0].filters = vec![stats];
    match decode_listener(&l.encode_to_vec(), &OPTS) {
        Err(ResourceError::Unsupported(e)) => assert!(e.contains("istio.stats"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A filter whose type Envoy has no factory for (here the retired v2 network RBAC) is never
/// dropped from the chain: it could enforce something. Refused with Envoy's words.
#[test]
fn unknown_filter_type_is_refused_not_dropped() {
    let rs = resources("lds-unknown.yaml", LISTENERS);
    let mut l = Listener::decode(rs[0].value.as_ref()).unwrap();
    l.filter_chains[0].filters.insert(
        0,
        Filter {
            name: "envoy.filters.network.rbac".to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.config.filter.network.rbac.v2.RBAC".to_owned(),
                value: vec![],
            })),
        },
    );
    match decode_listener(&l.encode_to_vec(), &OPTS) {
        Err(ResourceError::Unsupported(e)) => assert!(
            e.contains(
                "Didn't find a registered implementation for 'envoy.filters.network.rbac' with \
                 type URL: 'envoy.config.filter.network.rbac.v2.RBAC'"
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_fields_follow_the_option() {
    // A file of its own: tests run in parallel, and a file another test rewrites meanwhile
    // reads as empty.
    let rs = resources("lds-unknown-fields.yaml", LISTENERS);
    let mut bytes = rs[0].value.to_vec();
    bytes.extend_from_slice(&[0xf8, 0x3f, 0x01]); // field 1023, varint 1
    assert!(decode_listener(&bytes, &OPTS).is_ok());
    let strict = DynamicOptions {
        reject_unknown_dynamic_fields: true,
    };
    match decode_listener(&bytes, &strict) {
        Err(ResourceError::Invalid(e)) => assert!(e.contains("unknown field number 1023"), "{e}"),
        other => panic!("{other:?}"),
    }
}

const CLUSTERS: &str = r#"
version_info: c1
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: outbound|6379||redis.shop.svc.cluster.local
  type: EDS
  eds_cluster_config:
    eds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
  connect_timeout: 10s
  lb_policy: LEAST_REQUEST
  alt_stat_name: outbound|6379||redis.shop.svc.cluster.local;
  circuit_breakers:
    thresholds: [{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295}]
  common_lb_config: {}
  metadata: {filter_metadata: {istio: {services: [{host: redis.shop.svc.cluster.local}]}}}
  filters:
  - name: istio.metadata_exchange
    typed_config:
      "@type": type.googleapis.com/udpa.type.v1.TypedStruct
      type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
      value: {protocol: istio-peer-exchange}
  transport_socket_matches:
  - name: tlsMode-istio
    match: {tlsMode: istio}
    transport_socket:
      name: envoy.transport_sockets.raw_buffer
      typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: PassthroughCluster
  type: ORIGINAL_DST
  connect_timeout: 10s
  lb_policy: CLUSTER_PROVIDED
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: bad_original_dst
  type: ORIGINAL_DST
  lb_policy: ROUND_ROBIN
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: named_eds
  type: EDS
  eds_cluster_config:
    service_name: other
    eds_config:
      api_config_source:
        api_type: DELTA_GRPC
        transport_api_version: V3
        grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
"#;

#[test]
fn istio_clusters() {
    let rs = resources("cds.yaml", CLUSTERS);
    let eds = decode_cluster(&rs[0].value, &OPTS).unwrap();
    assert_eq!(eds.discovery, DiscoveryType::Eds);
    assert_eq!(eds.lb_policy, LbPolicy::LeastRequest { choice_count: 2 });
    assert_eq!(
        eds.eds,
        Some(EdsConfig {
            service_name: "outbound|6379||redis.shop.svc.cluster.local".to_owned(),
            eds_config: ConfigSource {
                kind: ConfigSourceKind::Ads,
                initial_fetch_timeout: Duration::ZERO,
            },
        })
    );

    let pass = decode_cluster(&rs[1].value, &OPTS).unwrap();
    assert_eq!(pass.discovery, DiscoveryType::OriginalDst);

    match decode_cluster(&rs[2].value, &OPTS) {
        Err(ResourceError::Invalid(e)) => assert!(e.contains("CLUSTER_PROVIDED"), "{e}"),
        other => panic!("{other:?}"),
    }

    let named = decode_cluster(&rs[3].value, &OPTS).unwrap();
    assert_eq!(
        named.eds,
        Some(EdsConfig {
            service_name: "other".to_owned(),
            eds_config: ConfigSource {
                kind: ConfigSourceKind::Api(ApiConfigSource {
                    api_type: ApiType::DeltaGrpc,
                    grpc_service: GrpcService::EnvoyGrpc {
                        cluster_name: "xds-grpc".to_owned()
                    },
                    set_node_on_first_message_only: false,
                }),
                initial_fetch_timeout: Duration::from_secs(15),
            },
        })
    );
}

const HEALTH_CHECKED_CLUSTERS: &str = r#"
version_info: c2
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: checked
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}}}
  health_checks:
  - timeout: 1s
    interval: 3s
    unhealthy_threshold: 2
    healthy_threshold: 1
    custom_health_check:
      name: envoy.health_checkers.redis
      typed_config:
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.extensions.health_checkers.redis.v3.Redis
        value: {key: maintenance}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: no_interval
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}}}
  health_checks:
  - timeout: 1s
    unhealthy_threshold: 2
    healthy_threshold: 1
    custom_health_check:
      name: envoy.health_checkers.redis
      typed_config: {"@type": type.googleapis.com/envoy.extensions.health_checkers.redis.v3.Redis}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: http_checked
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}}}
  health_checks:
  - timeout: 1s
    interval: 3s
    unhealthy_threshold: 2
    healthy_threshold: 1
    http_health_check: {path: /healthz}
"#;

/// CDS: the Redis health checker is decoded; Envoy's own constraint is a decode error (NACKed
/// before the cluster manager counts an update), another checker is unsupported.
#[test]
fn health_checked_clusters() {
    let rs = resources("cds-hc.yaml", HEALTH_CHECKED_CLUSTERS);
    let checked = decode_cluster(&rs[0].value, &OPTS).unwrap();
    let hc = checked.health_check.unwrap();
    assert_eq!(hc.interval, Duration::from_secs(3));
    assert_eq!(hc.unhealthy_edge_interval, Duration::from_secs(3));
    assert_eq!(hc.no_traffic_interval, Duration::from_secs(60));
    assert_eq!(
        hc.checker,
        HealthChecker::Redis {
            key: Some(bytes::Bytes::from_static(b"maintenance"))
        }
    );

    let e = decode_cluster(&rs[1].value, &OPTS).unwrap_err();
    assert!(e.is_decode_error(), "{e:?}");
    assert_eq!(
        e.to_string(),
        "health_checks[0].interval: Proto constraint validation failed \
         (HealthCheckValidationError.Interval: value is required)"
    );

    match decode_cluster(&rs[2].value, &OPTS) {
        Err(ResourceError::Unsupported(e)) => assert!(
            e.starts_with(
                "health_checks[0].http_health_check: not supported by redvoy; redvoy runs the \
                 Redis health checker only"
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

const ENDPOINTS: &str = r#"
version_info: e1
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: outbound|6379||redis.shop.svc.cluster.local
  endpoints:
  - locality: {region: eu, zone: eu-b}
    load_balancing_weight: 2
    lb_endpoints:
    - endpoint: {address: {socket_address: {address: 10.1.0.5, port_value: 6379}}}
      health_status: HEALTHY
      load_balancing_weight: 1
      metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
    - endpoint: {address: {socket_address: {address: 10.1.0.6, port_value: 6379}}}
      health_status: DRAINING
  - priority: 1
    lb_endpoints:
    - endpoint: {address: {pipe: {path: /tmp/redis.sock}}}
"#;

#[test]
fn istio_endpoints() {
    let file = read_discovery_file(&temp_file("eds.yaml", ENDPOINTS)).unwrap();
    assert_eq!(file.version_info, "e1");
    let r = &file.resources[0];
    assert_eq!(
        r.type_url,
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    );
    assert_eq!(r.name, "outbound|6379||redis.shop.svc.cluster.local");
    let la = decode_cluster_load_assignment(&r.value).unwrap();
    assert_eq!(la.cluster_name, r.name);
    let e = &la.endpoints;
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].health_status, HealthStatus::Healthy);
    assert_eq!(e[0].locality.zone, "eu-b");
    assert_eq!(e[1].health_status, HealthStatus::Draining);
    assert!(!e[1].health_status.is_healthy());
    assert_eq!(e[2].priority, 1);
    assert_eq!(e[2].pipe.as_ref().unwrap().path, "/tmp/redis.sock");
}

#[test]
fn discovery_file_errors_name_the_file() {
    let e = read_discovery_file(&temp_file("bad.yaml", "resources: 3\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.yaml"), "{e}");
}

/// A skipped listener shows in `error_state`; an Istio-only `Any` inside it is printed as an
/// empty TypedStruct naming its type instead of failing the whole dump.
#[test]
fn skipped_listener_and_unknown_any_in_config_dump() {
    use redvoy_config::{
        load_bootstrap, render_config_dump_dynamic, DumpOptions, DynamicDump, DynamicListenerDump,
        FailedDump, LoadOptions, SKIPPED_PREFIX,
    };
    let rs = resources("lds-dump.yaml", LISTENERS);
    let mut l = Listener::decode(rs[0].value.as_ref()).unwrap();
    l.filter_chains[0].filters.insert(
        0,
        Filter {
            name: "istio.stats".to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/stats.PluginConfig".to_owned(),
                value: vec![],
            })),
        },
    );
    let now = std::time::SystemTime::now();
    let state = DynamicDump {
        lds_version: "7".to_owned(),
        listeners: vec![DynamicListenerDump {
            name: "0.0.0.0_8080".to_owned(),
            skipped: Some(FailedDump {
                value: l.encode_to_vec().into(),
                version_info: "7".to_owned(),
                last_update_attempt: now,
                details: "HTTP connection manager with RDS".to_owned(),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let boot = temp_file(
        "boot.yaml",
        "node: {id: \"n1\", cluster: \"c\"}\nstatic_resources: {}\n",
    );
    let b = load_bootstrap(&LoadOptions {
        config_path: Some(boot),
        ..LoadOptions::default()
    })
    .unwrap();
    let opts = DumpOptions {
        resource: Some("dynamic_listeners".to_owned()),
        ..DumpOptions::default()
    };
    let text = render_config_dump_dynamic(&b, &state, now, &opts, &|_| None).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &doc["configs"][0];
    assert_eq!(entry["name"], "0.0.0.0_8080");
    let err = &entry["error_state"];
    assert_eq!(
        err["details"],
        format!("{SKIPPED_PREFIX}HTTP connection manager with RDS")
    );
    assert_eq!(err["version_info"], "7");
    let filter = &err["failed_configuration"]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        filter["@type"],
        "type.googleapis.com/udpa.type.v1.TypedStruct"
    );
    assert_eq!(filter["type_url"], "type.googleapis.com/stats.PluginConfig");
}
