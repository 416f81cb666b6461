//! Oracle: what real Envoy 1.40 sends to the test ADS server for the script `client.rs`
//! replays against redvoy-xds (needs `envoy` on PATH; ~15 s). Run with
//! `cargo test -p redvoy-xds --test envoy_oracle -- --ignored --nocapture --test-threads 1`.

// Test helpers outside #[test] functions panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use redvoy_test_util::ads::{pack, AdsServer, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER};
use redvoy_test_util::proxy::Proxy;

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        initial_fetch_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn cla(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        ..Default::default()
    }
}

fn listener(name: &str, prefix: &str) -> Listener {
    Listener {
        name: name.into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&TcpProxy {
                    stat_prefix: prefix.into(),
                    cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("a".into())),
                    ..Default::default()
                }))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn bootstrap(server: &AdsServer, api_type: &str) -> String {
    format!(
        r#"
node: {{id: n1, cluster: c1}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}}}
dynamic_resources:
  ads_config: {{api_type: {api_type}, transport_api_version: V3, set_node_on_first_message_only: true, grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment: {{cluster_name: xds, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {addr}}}}}]}}]}}
"#,
        addr = server.envoy_address_yaml()
    )
}

fn step(server: &AdsServer, label: &str, seen: &mut usize) {
    std::thread::sleep(Duration::from_millis(700));
    let s = server.summaries();
    println!("--- {label}");
    for line in &s[*seen..] {
        println!("  {line}");
    }
    *seen = s.len();
}

fn run(api_type: &str) {
    let mut server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[cluster("a"), cluster("b")]);
    server.set_messages("e1", &[cla("a"), cla("b")]);
    server.set_messages("l1", &[listener("l", "t")]);
    let proxy = Proxy::start_envoy(&bootstrap(&server, api_type), &[]);
    let mut seen = 0;
    step(&server, "initial", &mut seen);
    server.set_messages("e2", &[cla("a"), cla("b"), cla("c")]);
    step(&server, "eds e2", &mut seen);
    server.set_messages("c2", &[cluster("a"), cluster("c")]);
    step(&server, "cds c2 [a,c]", &mut seen);
    server.set_messages("c3", &[] as &[Cluster]);
    step(&server, "cds c3 []", &mut seen);
    server.set_messages("c4", &[cluster("a")]);
    step(&server, "cds c4 [a]", &mut seen);
    server.set_messages("l2", &[listener("l", "t"), listener("bad", "")]);
    step(&server, "lds l2 with bad", &mut seen);
    for r in server.requests().iter().filter(|r| r.is_nack()) {
        println!("  NACK msg: {:?}", r.error_detail);
    }
    server.set_messages("l3", &[] as &[Listener]);
    step(&server, "lds l3 empty", &mut seen);
    server.restart().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    step(&server, "after restart", &mut seen);
    let stats = proxy.admin("GET", "/stats").body;
    let stats = stats.as_bytes();
    for line in String::from_utf8_lossy(stats).lines() {
        if line.starts_with("cluster_manager.cds")
            || line.starts_with("listener_manager.lds")
            || line.starts_with("control_plane")
        {
            println!("  {line}");
        }
    }
    let _ = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER);
}

#[test]
#[ignore]
fn envoy_sotw() {
    run("GRPC");
}

#[test]
#[ignore]
fn envoy_delta() {
    run("DELTA_GRPC");
}

fn static_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn order(api_type: &str) {
    // A: no EDS answer at first (EDS initial_fetch_timeout 2 s): does LDS wait for it?
    let server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[cluster("a")]);
    server.set_messages("l1", &[listener("l", "t")]);
    let start = std::time::Instant::now();
    let bs = bootstrap(&server, api_type);
    let t = std::thread::spawn(move || {
        let p = Proxy::start_envoy(&bs, &[]);
        std::thread::sleep(Duration::from_millis(500));
        drop(p);
    });
    let mut seen = 0;
    loop {
        let s = server.summaries();
        for line in &s[seen..] {
            println!("  {:>5}ms {line}", start.elapsed().as_millis());
        }
        seen = s.len();
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    t.join().unwrap();
    // B: CDS without EDS clusters.
    println!("--- B static only");
    let server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[static_cluster("s")]);
    server.set_messages("l1", &[listener("l", "t")]);
    let p = Proxy::start_envoy(&bootstrap(&server, api_type), &[]);
    let mut seen = 0;
    step(&server, "static", &mut seen);
    drop(p);
}

#[test]
#[ignore]
fn order_sotw() {
    order("GRPC");
}

#[test]
#[ignore]
fn order_delta() {
    order("DELTA_GRPC");
}
