//! Fixture bootstraps: everything in `fixtures/good` loads, everything in `fixtures/bad` is
//! refused with the `# error:` texts its header lists (each includes the field path). When a
//! real `envoy` is on PATH, its `--mode validate` verdict is checked too: good fixtures and bad
//! ones marked `# envoy: accepts` are valid Envoy configs that redvoy merely does not implement;
//! `# envoy: rejects` ones Envoy refuses as well.

// clippy.toml allows these inside `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use redvoy_config::model::*;
use redvoy_config::{load_bootstrap, validate_only, ConfigError, LoadOptions};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn from_file(path: &Path) -> LoadOptions {
    LoadOptions {
        config_path: Some(path.to_owned()),
        ..LoadOptions::default()
    }
}

fn load(rel: &str) -> Bootstrap {
    load_bootstrap(&from_file(&fixture(rel))).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Lines `# <key>: <value>` at the top of a fixture.
fn header(path: &Path, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("# {key}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

#[test]
fn good_fixtures_load() {
    let mut failures = Vec::new();
    for path in fixtures("good") {
        if let Err(e) = load_bootstrap(&from_file(&path)) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "good fixtures refused:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bad_fixtures_are_refused_with_their_path() {
    let mut failures = Vec::new();
    for path in fixtures("bad") {
        let expected = header(&path, "error");
        assert!(
            !expected.is_empty(),
            "{}: no `# error:` line",
            path.display()
        );
        match validate_only(&from_file(&path)) {
            Ok(()) => failures.push(format!("{}: accepted", path.display())),
            Err(e) => {
                let text = e.to_string();
                for want in &expected {
                    if !text.contains(want.as_str()) {
                        failures.push(format!(
                            "{}:\n  got:  {text}\n  want: {want}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Envoy's own verdict on every fixture, when an `envoy` binary is available.
#[test]
fn envoy_agrees_on_fixtures() {
    if Command::new("envoy").arg("--version").output().is_err() {
        eprintln!("envoy not on PATH: skipping the oracle check");
        return;
    }
    let mut failures = Vec::new();
    let cases =
        fixtures("good")
            .into_iter()
            .map(|p| (p, true))
            .chain(fixtures("bad").into_iter().map(|p| {
                let verdict = header(&p, "envoy");
                (p, verdict.first().map(String::as_str) == Some("accepts"))
            }));
    for (path, should_accept) in cases {
        let out = Command::new("envoy")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "--mode",
                "validate",
                "--use-dynamic-base-id",
                "-l",
                "critical",
                "-c",
            ])
            .arg(&path)
            .output()
            .unwrap();
        if out.status.success() != should_accept {
            failures.push(format!(
                "{}: envoy {} it\n{}",
                path.display(),
                if out.status.success() {
                    "accepts"
                } else {
                    "rejects"
                },
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn settings(op_timeout: Duration) -> ConnPoolSettings {
    ConnPoolSettings {
        op_timeout,
        enable_hashtagging: false,
        enable_redirection: false,
        max_buffer_size_before_flush: 0,
        buffer_flush_timeout: Duration::from_millis(3),
        max_upstream_unknown_connections: 100,
        enable_command_stats: false,
        read_policy: ReadPolicy::Master,
        dns_cache: None,
    }
}

fn route(prefix: &str, cluster: &str) -> Route {
    Route {
        prefix: prefix.to_owned(),
        remove_prefix: false,
        cluster: cluster.to_owned(),
        request_mirror_policy: vec![],
        key_formatter: None,
        read_command_cluster: None,
    }
}

fn addr(address: &str, port: u16) -> SocketAddress {
    SocketAddress {
        address: address.to_owned(),
        port,
    }
}

fn endpoint(address: &str, port: u16) -> Endpoint {
    Endpoint {
        address: addr(address, port),
        pipe: None,
        weight: 1,
        hostname: String::new(),
        health_status: HealthStatus::Unknown,
        locality: Locality::default(),
        priority: 0,
        transport_socket_labels: Default::default(),
        locality_transport_socket_labels: Default::default(),
    }
}

fn redis_chain(proxy: RedisProxy) -> FilterChain {
    FilterChain {
        name: String::new(),
        filter_chain_match: FilterChainMatch::default(),
        filter: NetworkFilter::RedisProxy(Box::new(proxy)),
        tls: None,
    }
}

fn article_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        discovery: DiscoveryType::StrictDns,
        lb_policy: LbPolicy::Maglev { table_size: 65_537 },
        connect_timeout: Duration::from_millis(250),
        dns_refresh_rate: Duration::from_secs(5),
        dns_lookup_family: DnsLookupFamily::Auto,
        endpoints: vec![endpoint(name, 6379)],
        redis_protocol_options: None,
        use_hostname_for_hashing: false,
        eds: None,
        redis_cluster: None,
        circuit_breakers: Default::default(),
        healthy_panic_threshold: Default::default(),
        tcp_keepalive: None,
        transport_socket_matches: Default::default(),
        health_check: None,
        outlier_detection: None,
        ignore_health_on_host_removal: false,
        upstream_tls: None,
    }
}

/// The model without its opaque proto handle, for comparing with models built here.
fn no_source(mut b: Bootstrap) -> Bootstrap {
    b.source = BootstrapSource::default();
    b
}

fn admin_at(address: SocketAddress) -> Admin {
    Admin {
        address,
        pipe: None,
        profile_path: "/var/log/envoy/envoy.prof".to_owned(),
        ignore_global_conn_limit: false,
    }
}

fn article_model() -> Bootstrap {
    let mut r = route("", "redis-envoy-001");
    r.request_mirror_policy = vec![MirrorPolicy {
        cluster: "redis-envoy-002".to_owned(),
        runtime_fraction: None,
        exclude_read_commands: true,
    }];
    let mut s = settings(Duration::from_secs(5));
    s.enable_redirection = true;
    Bootstrap {
        outlier_event_log_path: None,
        node: Node::default(),
        admin: Some(admin_at(addr("0.0.0.0", 8001))),
        listeners: vec![Listener {
            name: "redis_listener".to_owned(),
            address: addr("0.0.0.0", 6380),
            traffic_direction: TrafficDirection::Unspecified,
            bind_to_port: true,
            use_original_dst: false,
            tls_inspector: false,
            http_inspector: false,
            listener_filters_timeout: Some(std::time::Duration::from_secs(15)),
            continue_on_listener_filters_timeout: false,
            bypass_overload_manager: false,
            ignore_global_conn_limit: false,
            filter_chains: vec![redis_chain(RedisProxy {
                stat_prefix: "egress_redis".to_owned(),
                settings: s,
                latency_in_micros: false,
                prefix_routes: PrefixRoutes {
                    routes: vec![r],
                    case_insensitive: false,
                    catch_all_route: None,
                },
                downstream_auth_passwords: vec![],
                downstream_auth_username: None,
                faults: vec![],
                custom_commands: vec![],
                require_resp3: false,
            })],
            default_filter_chain: None,
            per_connection_buffer_limit_bytes: 1024 * 1024,
        }],
        clusters: vec![
            article_cluster("redis-envoy-001"),
            article_cluster("redis-envoy-002"),
        ],
        dynamic_resources: None,
        stats_config: StatsConfig::default(),
        stats_flush_interval: Duration::from_secs(5),
        runtime: Runtime::default(),
        global_connection_limit: None,
        secrets: Vec::new(),
        source: BootstrapSource::default(),
    }
}

#[test]
fn article_config_model() {
    assert_eq!(no_source(load("good/article.yaml")), article_model());
}

#[test]
fn json_and_any_extension_read_as_json() {
    assert_eq!(no_source(load("good/article.json")), article_model());
    // Envoy reads every file not named .yaml/.yml/.pb/.pb_text as JSON.
    assert_eq!(
        no_source(load("good/article_json_any_extension.conf")),
        article_model()
    );
}

#[test]
fn envoy_example_with_lowercase_enum() {
    let b = load("good/envoy_examples_redis.yaml");
    assert_eq!(b.clusters[0].discovery, DiscoveryType::StrictDns);
    assert_eq!(
        b.clusters[0].lb_policy,
        LbPolicy::Maglev { table_size: 65_537 }
    );
    assert_eq!(
        b.listeners[0]
            .redis_proxy()
            .unwrap()
            .prefix_routes
            .catch_all_route,
        Some(route("", "redis_cluster"))
    );
}

#[test]
fn docs_fault_example() {
    let faults = load("good/envoy_docs_faults.yaml")
        .listeners
        .remove(0)
        .redis_proxy()
        .unwrap()
        .faults
        .clone();
    let pct = RuntimeFraction {
        runtime_key: "bogus_key".to_owned(),
        numerator: 10,
        denominator: 100,
    };
    assert_eq!(
        faults,
        vec![
            Fault {
                fault_type: FaultType::Error,
                fault_enabled: pct.clone(),
                delay: Duration::ZERO,
                commands: vec!["get".to_owned()]
            },
            Fault {
                fault_type: FaultType::Delay,
                fault_enabled: pct,
                delay: Duration::from_secs(2),
                commands: vec![]
            },
        ]
    );
}

#[test]
fn typed_structs_unwrap_to_native_types() {
    let xds = load("good/typed_struct_xds.yaml");
    let rp = xds.listeners[0].redis_proxy().unwrap();
    assert_eq!(rp.stat_prefix, "ts");
    assert_eq!(rp.settings.op_timeout, Duration::from_millis(2500));
    // Struct numbers are doubles; 7.0 must still fill the UInt32Value.
    assert_eq!(rp.settings.max_upstream_unknown_connections, 7);
    // Enum names are case-insensitive inside a TypedStruct too.
    assert_eq!(rp.settings.read_policy, ReadPolicy::PreferMaster);

    let udpa = load("good/typed_struct_udpa.yaml");
    assert_eq!(
        udpa.listeners[0].redis_proxy().unwrap().settings.op_timeout,
        Duration::from_secs(1)
    );
    assert_eq!(
        udpa.clusters[0].redis_protocol_options,
        Some(RedisProtocolOptions {
            auth_username: None,
            auth_password: Some(Bytes::from_static(b"s3cret"))
        })
    );
}

#[test]
fn full_featured_model() {
    let b = load("good/full.yaml");
    assert_eq!(
        b.node,
        Node {
            id: "node-1".to_owned(),
            cluster: "sidecar".to_owned(),
            zone: "eu-1a".to_owned(),
            encoded: b.node.encoded.clone(),
        }
    );
    let mut admin = admin_at(addr("::1", 9901));
    admin.profile_path = "/tmp/envoy.prof".to_owned();
    assert_eq!(b.admin, Some(admin));
    assert_eq!(
        b.runtime,
        Runtime {
            layers: vec![RuntimeLayer {
                name: "admin".to_owned(),
                kind: RuntimeLayerKind::Admin
            }]
        }
    );
    assert_eq!(b.admin.as_ref().unwrap().address.to_string(), "[::1]:9901");

    let mut ring_route = route("ab:", "ring");
    ring_route.remove_prefix = true;
    ring_route.key_formatter = Some("{%KEY%}-suffix".to_owned());
    ring_route.read_command_cluster = Some("lr".to_owned());
    ring_route.request_mirror_policy = vec![MirrorPolicy {
        cluster: "static".to_owned(),
        runtime_fraction: Some(RuntimeFraction {
            runtime_key: "mirror.pct".to_owned(),
            numerator: 25,
            denominator: 10_000,
        }),
        exclude_read_commands: true,
    }];
    let expected_proxy = RedisProxy {
        stat_prefix: "full".to_owned(),
        settings: ConnPoolSettings {
            op_timeout: Duration::from_millis(500),
            enable_hashtagging: true,
            enable_redirection: true,
            max_buffer_size_before_flush: 1024,
            buffer_flush_timeout: Duration::from_millis(10),
            max_upstream_unknown_connections: 0,
            enable_command_stats: true,
            read_policy: ReadPolicy::PreferReplica,
            dns_cache: None,
        },
        latency_in_micros: true,
        prefix_routes: PrefixRoutes {
            routes: vec![ring_route],
            case_insensitive: true,
            catch_all_route: Some(route("", "static")),
        },
        downstream_auth_passwords: vec![
            Bytes::from_static(b"first"),
            Bytes::from_static(b"second"),
            Bytes::from_static(b"file-secret"),
        ],
        downstream_auth_username: Some(Bytes::from_static(b"alice")),
        faults: vec![Fault {
            fault_type: FaultType::Delay,
            fault_enabled: RuntimeFraction {
                runtime_key: String::new(),
                numerator: 5,
                denominator: 1_000_000,
            },
            delay: Duration::from_millis(1500),
            commands: vec!["get".to_owned(), "set".to_owned()],
        }],
        custom_commands: vec!["JSON.SET".to_owned(), "json.get".to_owned()],
        require_resp3: false,
    };
    assert_eq!(
        b.listeners,
        vec![Listener {
            name: "redis".to_owned(),
            address: addr("127.0.0.1", 6380),
            traffic_direction: TrafficDirection::Outbound,
            bind_to_port: true,
            use_original_dst: false,
            tls_inspector: false,
            http_inspector: false,
            listener_filters_timeout: Some(std::time::Duration::from_secs(15)),
            continue_on_listener_filters_timeout: false,
            bypass_overload_manager: false,
            ignore_global_conn_limit: false,
            filter_chains: vec![FilterChain {
                name: "only".to_owned(),
                ..redis_chain(expected_proxy)
            }],
            default_filter_chain: None,
            per_connection_buffer_limit_bytes: 1024 * 1024,
        }]
    );

    let home = std::env::var("HOME").unwrap();
    let expected_clusters = vec![
        Cluster {
            name: "ring".to_owned(),
            discovery: DiscoveryType::StrictDns,
            lb_policy: LbPolicy::RingHash {
                minimum_ring_size: 2048,
                maximum_ring_size: 4096,
                hash_function: HashFunction::MurmurHash2,
            },
            connect_timeout: Duration::from_millis(250),
            dns_refresh_rate: Duration::from_secs(10),
            dns_lookup_family: DnsLookupFamily::V4Only,
            endpoints: vec![
                Endpoint {
                    address: addr("redis-a", 6379),
                    weight: 3,
                    hostname: "host-a".to_owned(),
                    locality: Locality {
                        zone: "a".to_owned(),
                        ..Locality::default()
                    },
                    ..endpoint("redis-a", 6379)
                },
                Endpoint {
                    locality: Locality {
                        zone: "b".to_owned(),
                        ..Locality::default()
                    },
                    ..endpoint("redis-b", 6380)
                },
            ],
            redis_protocol_options: None,
            use_hostname_for_hashing: true,
            eds: None,
            redis_cluster: None,
            circuit_breakers: Default::default(),
            // `healthy_panic_threshold: {value: 0}`: panic mode off.
            healthy_panic_threshold: PanicThreshold(0.0),
            tcp_keepalive: None,
            transport_socket_matches: Default::default(),
            health_check: None,
            outlier_detection: None,
            ignore_health_on_host_removal: false,
            upstream_tls: None,
        },
        Cluster {
            name: "lr".to_owned(),
            discovery: DiscoveryType::LogicalDns,
            lb_policy: LbPolicy::LeastRequest { choice_count: 3 },
            connect_timeout: Duration::from_secs(5),
            dns_refresh_rate: Duration::from_secs(5),
            dns_lookup_family: DnsLookupFamily::Auto,
            endpoints: vec![endpoint("localhost", 7000)],
            redis_protocol_options: None,
            use_hostname_for_hashing: false,
            eds: None,
            redis_cluster: None,
            circuit_breakers: Default::default(),
            healthy_panic_threshold: Default::default(),
            tcp_keepalive: None,
            transport_socket_matches: Default::default(),
            health_check: None,
            outlier_detection: None,
            ignore_health_on_host_removal: false,
            upstream_tls: None,
        },
        Cluster {
            name: "static".to_owned(),
            discovery: DiscoveryType::Static,
            lb_policy: LbPolicy::Random,
            connect_timeout: Duration::from_secs(5),
            dns_refresh_rate: Duration::from_secs(5),
            dns_lookup_family: DnsLookupFamily::Auto,
            endpoints: vec![endpoint("::1", 7001)],
            redis_protocol_options: Some(RedisProtocolOptions {
                auth_username: Some(Bytes::from_static(b"bob")),
                auth_password: Some(Bytes::from(home.into_bytes())),
            }),
            use_hostname_for_hashing: false,
            eds: None,
            redis_cluster: None,
            circuit_breakers: Default::default(),
            healthy_panic_threshold: Default::default(),
            tcp_keepalive: None,
            transport_socket_matches: Default::default(),
            health_check: None,
            outlier_detection: None,
            ignore_health_on_host_removal: false,
            upstream_tls: None,
        },
        Cluster {
            name: "maglev".to_owned(),
            discovery: DiscoveryType::Static,
            lb_policy: LbPolicy::Maglev {
                table_size: 5_000_011,
            },
            connect_timeout: Duration::from_secs(5),
            dns_refresh_rate: Duration::from_secs(5),
            dns_lookup_family: DnsLookupFamily::Auto,
            endpoints: vec![],
            redis_protocol_options: Some(RedisProtocolOptions {
                auth_username: None,
                auth_password: Some(Bytes::from_static(b"pw")),
            }),
            use_hostname_for_hashing: false,
            eds: None,
            redis_cluster: None,
            circuit_breakers: Default::default(),
            healthy_panic_threshold: Default::default(),
            tcp_keepalive: None,
            transport_socket_matches: Default::default(),
            health_check: None,
            outlier_detection: None,
            ignore_health_on_host_removal: false,
            upstream_tls: None,
        },
    ];
    assert_eq!(b.clusters, expected_clusters);
}

#[test]
fn config_yaml_merges_like_protobuf_merge_from() {
    let extra_listener = r#"
static_resources:
  listeners:
  - name: second
    address: {socket_address: {address: 127.0.0.1, port_value: 7000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: second
          settings: {op_timeout: 1s}
          prefix_routes: {catch_all_route: {cluster: redis-envoy-002}}
admin: {address: {socket_address: {port_value: 9000}}}
node: {id: from-overlay}
"#;
    let opts = LoadOptions {
        config_path: Some(fixture("good/article.yaml")),
        config_yaml: Some(extra_listener.to_owned()),
        ..LoadOptions::default()
    };
    let b = load_bootstrap(&opts).unwrap();
    let mut expected = article_model();
    // Scalars in a set message replace; the rest of `admin.address` stays.
    expected.admin = Some(admin_at(addr("0.0.0.0", 9000)));
    expected.node.id = "from-overlay".to_owned();
    // Node { id: "from-overlay" } in protobuf encoding.
    expected.node.encoded = Bytes::from_static(b"\n\x0cfrom-overlay");
    assert_eq!(b.node, expected.node);
    assert_eq!(b.admin, expected.admin);
    assert_eq!(b.clusters, expected.clusters);
    // Repeated fields append.
    assert_eq!(b.listeners.len(), 2);
    assert_eq!(b.listeners[0], expected.listeners[0]);
    assert_eq!(b.listeners[1].name, "second");
    assert_eq!(b.listeners[1].address, addr("127.0.0.1", 7000));

    // A cluster in the overlay is appended, not merged by name, so it duplicates.
    let dup = LoadOptions {
        config_path: Some(fixture("good/article.yaml")),
        config_yaml: Some(
            "{static_resources: {clusters: [{name: redis-envoy-001, connect_timeout: 1s}]}}"
                .to_owned(),
        ),
        ..LoadOptions::default()
    };
    let e = load_bootstrap(&dup).unwrap_err().to_string();
    assert!(e.contains("static_resources.clusters[2].name: cluster manager: duplicate cluster 'redis-envoy-001'"), "{e}");

    // An overlay's own errors name it.
    let bad = LoadOptions {
        config_path: Some(fixture("good/article.yaml")),
        config_yaml: Some("bogus: 1".to_owned()),
        ..LoadOptions::default()
    };
    let e = load_bootstrap(&bad).unwrap_err().to_string();
    assert!(e.starts_with("--config-yaml: "), "{e}");
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn config_yaml_alone_and_empty() {
    let text = std::fs::read_to_string(fixture("good/article.yaml")).unwrap();
    let alone = LoadOptions {
        config_yaml: Some(text),
        ..LoadOptions::default()
    };
    assert_eq!(no_source(load_bootstrap(&alone).unwrap()), article_model());

    // Empty values count as absent, as in Envoy.
    let empty = LoadOptions {
        config_path: Some(fixture("good/article.yaml")),
        config_yaml: Some(String::new()),
        ..LoadOptions::default()
    };
    assert_eq!(no_source(load_bootstrap(&empty).unwrap()), article_model());

    let none = LoadOptions {
        config_path: Some(PathBuf::new()),
        ..LoadOptions::default()
    };
    let e = load_bootstrap(&none).unwrap_err();
    assert!(matches!(e, ConfigError::NoConfig), "{e}");
    assert_eq!(
        e.to_string(),
        "At least one of --config-path or --config-yaml should be non-empty"
    );
}

#[test]
fn service_flags_override_node() {
    let mut opts = from_file(&fixture("good/full.yaml"));
    opts.service_node = Some("n".to_owned());
    opts.service_zone = Some("z".to_owned());
    let node = load_bootstrap(&opts).unwrap().node;
    assert_eq!(
        node,
        Node {
            id: "n".to_owned(),
            cluster: "sidecar".to_owned(),
            zone: "z".to_owned(),
            encoded: node.encoded.clone(),
        }
    );
    // The encoded node carries the overrides too (it is what the xDS client sends).
    let encoded = String::from_utf8_lossy(&node.encoded).into_owned();
    assert!(
        encoded.contains('z') && encoded.contains("sidecar"),
        "{encoded}"
    );

    let mut opts = from_file(&fixture("good/article.yaml"));
    opts.service_cluster = Some("c".to_owned());
    assert_eq!(load_bootstrap(&opts).unwrap().node.cluster, "c");
}

#[test]
fn missing_file_is_a_read_error() {
    let e = load_bootstrap(&from_file(Path::new("/nonexistent/redvoy.yaml"))).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/redvoy.yaml"), "{e}");
}

#[test]
fn error_path_accessor() {
    let e = load_bootstrap(&from_file(&fixture("bad/health_check_tcp.yaml"))).unwrap_err();
    assert_eq!(
        e.path(),
        Some("static_resources.clusters[0].health_checks[0].tcp_health_check")
    );
    assert!(matches!(e, ConfigError::Unsupported { .. }), "{e:?}");
}

fn matcher(kind: StringMatchKind, value: &str) -> StringMatcher {
    StringMatcher {
        kind,
        value: value.to_owned(),
        ignore_case: false,
    }
}

#[test]
fn istio_stats_runtime_model() {
    let b = load("good/istio_stats_runtime.yaml");
    assert_eq!(b.listeners[0].traffic_direction, TrafficDirection::Inbound);
    let admin = b.admin.as_ref().unwrap();
    assert_eq!(admin.profile_path, "/var/lib/istio/data/envoy.prof");
    assert!(admin.ignore_global_conn_limit);
    assert_eq!(
        admin.listen_address(),
        AdminAddress::Tcp(&addr("127.0.0.1", 15000))
    );
    assert_eq!(b.stats_flush_interval, Duration::from_millis(2500));

    let s = &b.stats_config;
    assert!(!s.use_all_default_tags);
    assert_eq!(s.stats_tags.len(), 7);
    assert_eq!(
        s.stats_tags[0],
        TagSpecifier {
            tag_name: "cluster_name".to_owned(),
            regex: Some(r"^cluster(\.(.+);)".to_owned()),
            fixed_value: None
        }
    );
    // No regex: Envoy's built-in extractor of that name.
    assert_eq!(s.stats_tags[5].regex, None);
    assert_eq!(s.stats_tags[5].fixed_value, None);
    assert_eq!(
        s.stats_tags[6].fixed_value.as_deref(),
        Some("cluster.local")
    );
    let StatsMatcher::Inclusion(patterns) = &s.matcher else {
        panic!("{:?}", s.matcher)
    };
    assert_eq!(patterns.len(), 15);
    assert_eq!(patterns[0], matcher(StringMatchKind::Prefix, "reporter="));
    assert_eq!(
        patterns[6],
        matcher(StringMatchKind::Suffix, "rbac.allowed")
    );
    assert_eq!(
        patterns[10],
        matcher(StringMatchKind::SafeRegex, r"vhost\..*\.route\..*")
    );
    assert_eq!(
        patterns[13],
        StringMatcher {
            kind: StringMatchKind::Contains,
            value: "redis".to_owned(),
            ignore_case: true
        }
    );
    assert_eq!(patterns[14], matcher(StringMatchKind::Exact, "server.live"));
    assert_eq!(
        s.histogram_bucket_settings,
        vec![HistogramBucketSettings {
            matcher: matcher(StringMatchKind::Prefix, "redis."),
            buckets: vec![0.5, 1.0, 5.0, 10.0, 25.0],
            bins: Some(20),
        }]
    );

    assert_eq!(b.runtime.layers.len(), 2);
    assert_eq!(b.runtime.layers[0].name, "global config");
    assert_eq!(b.runtime.layers[1].kind, RuntimeLayerKind::Admin);
    let RuntimeLayerKind::Static(values) = &b.runtime.layers[0].kind else {
        panic!("{:?}", b.runtime.layers[0])
    };
    let get = |k: &str| {
        values
            .get(k)
            .unwrap_or_else(|| panic!("no {k}: {values:?}"))
    };
    assert_eq!(
        get("envoy.reloadable_features.http_reject_path_with_fragment"),
        &RuntimeValue::Bool(false)
    );
    assert_eq!(
        get("re2.max_program_size.error_level"),
        &RuntimeValue::Number(32768.0)
    );
    // Nested objects flatten to dotted keys; a numerator/denominator object is one value.
    assert_eq!(get("mirror.pct"), &RuntimeValue::Number(50.0));
    assert_eq!(
        get("mirror.frac"),
        &RuntimeValue::FractionalPercent {
            numerator: 5,
            denominator: 10_000
        }
    );
    // Envoy's YAML loader keeps fractions as strings in a Struct.
    assert_eq!(get("ratio"), &RuntimeValue::String("0.25".to_owned()));
    assert_eq!(values.len(), 8, "{values:?}");
}

#[test]
fn admin_on_a_pipe() {
    let b = load("good/admin_pipe.yaml");
    let admin = b.admin.unwrap();
    let pipe = Pipe {
        path: "/tmp/redvoy-admin.sock".to_owned(),
        mode: 0o600,
    };
    assert_eq!(admin.pipe.as_ref(), Some(&pipe));
    assert_eq!(admin.listen_address(), AdminAddress::Pipe(&pipe));
    // No admin block: no admin listener, as in Envoy.
    assert!(load("good/typed_struct_xds.yaml").admin.is_none());
}

/// Envoy's `/runtime` shows each static value's raw string; redvoy's must be the same.
#[test]
fn runtime_raw_strings_match_envoy() {
    if Command::new("envoy").arg("--version").output().is_err() {
        eprintln!("envoy not on PATH: skipping the runtime oracle");
        return;
    }
    let yaml = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
layered_runtime:
  layers:
  - name: base
    static_layer:
      a.b: 5
      a: {c: "x", d: {e: true}, f: false}
      big: 1234567
      small: 0.1
      long_fraction: 0.1234567
      huge: 12345678901
      negative: -3
      s: "50"
      frac: {numerator: 50, denominator: TEN_THOUSAND}
  - name: admin
    admin_layer: {}
"#;
    let dir = std::env::temp_dir().join(format!("redvoy-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runtime.yaml");
    std::fs::write(&config, yaml).unwrap();
    let admin_file = dir.join("admin");
    let mut child = Command::new("envoy")
        .args(["--use-dynamic-base-id", "-l", "error", "-c"])
        .arg(&config)
        .arg("--admin-address-path")
        .arg(&admin_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let admin: std::net::SocketAddr = loop {
        if let Some(a) = std::fs::read_to_string(&admin_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "envoy did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (_, body) = common::get(admin, "/runtime");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let envoy: serde_json::Value = serde_json::from_str(&body).unwrap();

    let b = load_bootstrap(&LoadOptions {
        config_yaml: Some(yaml.to_owned()),
        ..LoadOptions::default()
    })
    .unwrap();
    let RuntimeLayerKind::Static(values) = &b.runtime.layers[0].kind else {
        panic!()
    };
    let entries = envoy["entries"].as_object().unwrap();
    assert_eq!(
        entries.keys().collect::<std::collections::BTreeSet<_>>(),
        values.keys().collect(),
    );
    // protobuf prefixes a debug string with a marker it randomizes per process.
    let marker = regex::Regex::new(r"^goo\.gle/debug\w*\s*\n").unwrap();
    for (key, value) in values {
        let theirs = entries[key]["final_value"].as_str().unwrap();
        assert_eq!(
            value.raw_string(),
            marker.replace(theirs, ""),
            "{key}: {value:?}"
        );
    }
    assert_eq!(envoy["layers"], serde_json::json!(["base", "admin"]));
}

/// Istio's rendered sidecar bootstrap (an equivalent of istio/istio's
/// `pkg/bootstrap/testdata/default_golden.json` with the current template's additions).
#[test]
fn istio_sidecar_bootstrap_model() {
    let b = load("good/istio-sidecar.json");
    assert_eq!(b.node.cluster, "redis-client.shop");
    let d = b.dynamic_resources.as_ref().unwrap();
    let ads = ConfigSource {
        kind: ConfigSourceKind::Ads,
        initial_fetch_timeout: Duration::ZERO,
    };
    assert_eq!(d.lds_config.as_ref(), Some(&ads));
    assert_eq!(d.cds_config.as_ref(), Some(&ads));
    assert_eq!(
        d.ads_config,
        Some(ApiConfigSource {
            api_type: ApiType::Grpc,
            grpc_service: GrpcService::EnvoyGrpc {
                cluster_name: "xds-grpc".to_owned()
            },
            set_node_on_first_message_only: true,
        })
    );
    let xds = b.clusters.iter().find(|c| c.name == "xds-grpc").unwrap();
    assert_eq!(
        xds.endpoints[0].pipe,
        Some(Pipe {
            path: "./etc/istio/proxy/XDS".to_owned(),
            mode: 0
        })
    );
    let names: Vec<&str> = b.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["0.0.0.0_15090", "0.0.0.0_15021"]);
    let NetworkFilter::HttpConnectionManager(hcm) = &b.listeners[1].filter_chains[0].filter else {
        panic!("{:?}", b.listeners[1]);
    };
    assert_eq!(hcm.stat_prefix, "agent");
    assert_eq!(
        hcm.virtual_hosts[0].routes[0],
        HttpRoute {
            path_match: PathMatch::Prefix("/healthz/ready".to_owned()),
            action: HttpRouteAction::Cluster {
                cluster: "agent".to_owned(),
                prefix_rewrite: None,
                timeout: Duration::from_secs(15),
            },
        }
    );
    // Istio's tags and matcher survive.
    assert!(!b.stats_config.use_all_default_tags);
    assert!(matches!(b.stats_config.matcher, StatsMatcher::Inclusion(_)));
}

/// Istio's current sidecar bootstrap, read from the shared fixtures as it is (verbatim from
/// istio/istio `pkg/bootstrap/testdata/default_golden.json`): it loads, with its overload
/// manager's connection limit and the exemptions of the 15090/15021 listeners.
#[test]
fn shared_istio_golden_bootstrap_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/istio/default_golden.json");
    assert!(
        path.is_file(),
        "{}: the shared fixtures are missing",
        path.display()
    );
    let b = load_bootstrap(&from_file(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        b.global_connection_limit,
        Some(GlobalConnectionLimit {
            monitor_name: "envoy.resource_monitors.global_downstream_max_connections".to_owned(),
            max_active_downstream_connections: 2_147_483_647,
        })
    );
    for l in &b.listeners {
        assert!(
            l.bypass_overload_manager && l.ignore_global_conn_limit,
            "{}",
            l.name
        );
    }
    let d = b.dynamic_resources.as_ref().unwrap();
    assert_eq!(d.ads_config.as_ref().unwrap().api_type, ApiType::DeltaGrpc);
    // Envoy agrees that it is valid (when an `envoy` binary is at hand).
    if Command::new("envoy").arg("--version").output().is_ok() {
        let out = Command::new("envoy")
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "envoy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `transport_socket_matches` with a TLS entry (Istio's auto-mTLS shape): accepted, and each
/// endpoint knows which entry it selects.
#[test]
fn transport_socket_matches_select_per_endpoint() {
    let b = load("good/transport_socket_matches_tls.yaml");
    let c = &b.clusters[0];
    let names: Vec<(&str, bool)> = c
        .transport_socket_matches
        .0
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.socket == redvoy_config::model::MatchSocket::Plaintext,
            )
        })
        .collect();
    assert_eq!(
        names,
        [("tlsMode-istio", false), ("tlsMode-disabled", true)]
    );
    let selected: Vec<Option<&str>> = c
        .endpoints
        .iter()
        .map(|e| {
            c.transport_socket_matches
                .resolve_endpoint(e)
                .and_then(|i| c.transport_socket_matches.0.get(i))
                .filter(|m| m.socket != redvoy_config::model::MatchSocket::Plaintext)
                .map(|m| m.name.as_str())
        })
        .collect();
    // The labelled endpoint needs TLS; the plain one and the one whose label has another
    // value take the plaintext catch-all.
    assert_eq!(selected, [Some("tlsMode-istio"), None, None]);
}

#[test]
fn envoy_grpc_must_name_a_static_cluster() {
    let opts = LoadOptions {
        config_yaml: Some(
            "node: {id: \"n\", cluster: \"c\"}\n\
             dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: nope}}]}\n"
                .to_owned(),
        ),
        ..LoadOptions::default()
    };
    let e = load_bootstrap(&opts).unwrap_err().to_string();
    assert!(e.contains("Unknown gRPC client cluster 'nope'"), "{e}");
}

/// `envoy.clusters.redis`: the Struct form (Istio EnvoyFilters), the typed form and a
/// TypedStruct all give the same model, Envoy's defaults filling what is unset.
#[test]
fn redis_cluster_type_forms() {
    let redis = |rel: &str| -> Cluster {
        let b = load(rel);
        let c = b.clusters.into_iter().next().unwrap();
        assert_eq!(c.discovery, DiscoveryType::RedisCluster, "{rel}");
        assert_eq!(c.lb_policy, LbPolicy::ClusterProvided, "{rel}");
        c
    };
    let s = redis("good/redis_cluster_struct.yaml")
        .redis_cluster
        .unwrap();
    assert_eq!(
        s,
        RedisClusterConfig {
            cluster_refresh_rate: Duration::from_secs(5),
            ..RedisClusterConfig::default()
        }
    );
    assert_eq!(s.cluster_refresh_timeout, Duration::from_secs(3));
    assert_eq!(s.redirect_refresh_threshold, 5);
    let t = redis("good/redis_cluster_typed.yaml")
        .redis_cluster
        .unwrap();
    assert_eq!(
        t,
        RedisClusterConfig {
            cluster_refresh_rate: Duration::from_secs(1),
            cluster_refresh_timeout: Duration::from_millis(500),
            redirect_refresh_interval: Duration::from_secs(2),
            redirect_refresh_threshold: 0,
            failure_refresh_threshold: 1,
            host_degraded_refresh_threshold: 2,
            enable_zone_discovery: false,
        }
    );
    let ts = redis("redvoy_only/redis_cluster_typed_struct.yaml")
        .redis_cluster
        .unwrap();
    assert_eq!(ts.redirect_refresh_threshold, 10);
}

#[test]
fn dns_cache_config_is_read() {
    let b = load("good/dns_cache.yaml");
    let Some(listener) = b.listeners.first() else {
        panic!("no listener")
    };
    let NetworkFilter::RedisProxy(rp) = &listener.filter_chains[0].filter else {
        panic!("not redis_proxy")
    };
    let cache = rp.settings.dns_cache.clone().unwrap();
    assert_eq!(cache.name, "dns");
    assert_eq!(cache.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(cache.dns_refresh_rate, Duration::from_secs(60));
    assert_eq!(cache.max_hosts, 1024);
    assert_eq!(cache.dns_query_timeout, Duration::from_millis(1500));
}

#[test]
fn protocol_version_is_read() {
    let require_resp3 = |rel: &str| {
        let b = load(rel);
        let Some(listener) = b.listeners.first() else {
            panic!("no listener")
        };
        let NetworkFilter::RedisProxy(rp) = &listener.filter_chains[0].filter else {
            panic!("not redis_proxy")
        };
        rp.require_resp3
    };
    assert!(require_resp3("good/resp3.yaml"));
    assert!(!require_resp3("good/dns_cache.yaml"));
}

#[test]
fn health_checks_model() {
    let b = load("good/health_checks.yaml");
    let checks: Vec<_> = b
        .clusters
        .iter()
        .map(|c| c.health_check.as_deref().cloned())
        .collect();
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    assert_eq!(
        checks,
        vec![
            // Every accepted field set; the edge intervals left unset take their defaults.
            Some(HealthCheck {
                timeout: ms(500),
                interval: secs(2),
                initial_jitter: ms(100),
                interval_jitter: ms(200),
                interval_jitter_percent: 10,
                unhealthy_threshold: 3,
                healthy_threshold: 2,
                reuse_connection: false,
                no_traffic_interval: secs(10),
                no_traffic_healthy_interval: secs(10),
                unhealthy_interval: secs(1),
                unhealthy_edge_interval: secs(1),
                healthy_edge_interval: secs(3),
                event_log_path: Some("/dev/null".to_owned()),
                always_log_health_check_failures: true,
                always_log_health_check_success: true,
                checker: HealthChecker::Redis {
                    key: Some(Bytes::from_static(b"maintenance")),
                },
            }),
            // Only the required fields (the checker in a TypedStruct): Envoy's defaults.
            Some(HealthCheck {
                timeout: secs(1),
                interval: secs(5),
                initial_jitter: Duration::ZERO,
                interval_jitter: Duration::ZERO,
                interval_jitter_percent: 0,
                unhealthy_threshold: 1,
                healthy_threshold: 1,
                reuse_connection: true,
                no_traffic_interval: secs(60),
                no_traffic_healthy_interval: secs(60),
                unhealthy_interval: secs(5),
                unhealthy_edge_interval: secs(5),
                healthy_edge_interval: secs(5),
                event_log_path: None,
                always_log_health_check_failures: false,
                always_log_health_check_success: false,
                checker: HealthChecker::Redis { key: None },
            }),
            // Another name for the Redis checker (Envoy goes by the type URL); an empty key
            // means PING.
            Some(HealthCheck {
                timeout: secs(1),
                interval: secs(5),
                initial_jitter: Duration::ZERO,
                interval_jitter: Duration::ZERO,
                interval_jitter_percent: 0,
                unhealthy_threshold: 1,
                healthy_threshold: 1,
                reuse_connection: true,
                no_traffic_interval: secs(30),
                no_traffic_healthy_interval: secs(90),
                unhealthy_interval: secs(5),
                unhealthy_edge_interval: secs(2),
                healthy_edge_interval: secs(5),
                event_log_path: None,
                always_log_health_check_failures: false,
                always_log_health_check_success: false,
                checker: HealthChecker::Redis { key: None },
            }),
        ]
    );
}

/// Each missing required field is named in Envoy's words, in Envoy's order.
#[test]
fn health_check_required_fields() {
    let base = std::fs::read_to_string(fixture("bad/health_check_no_interval.yaml")).unwrap();
    // The fixture's health check, which lacks `interval`.
    let written = "    - timeout: 1s\n      unhealthy_threshold: 2\n      healthy_threshold: 1\n";
    assert!(base.contains(written));
    let fields = [
        ("timeout", "1s", "Timeout"),
        ("interval", "5s", "Interval"),
        ("unhealthy_threshold", "2", "UnhealthyThreshold"),
        ("healthy_threshold", "1", "HealthyThreshold"),
    ];
    for (missing, _, camel) in fields {
        let block: String = fields
            .iter()
            .filter(|(name, _, _)| *name != missing)
            .enumerate()
            .map(|(i, (name, value, _))| {
                let indent = if i == 0 { "    - " } else { "      " };
                format!("{indent}{name}: {value}\n")
            })
            .collect();
        let opts = LoadOptions {
            config_yaml: Some(base.replacen(written, &block, 1)),
            ..LoadOptions::default()
        };
        let err = validate_only(&opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "static_resources.clusters[0].health_checks[0].{missing}: Proto constraint \
                 validation failed (HealthCheckValidationError.{camel}: value is required)"
            ),
            "without {missing}"
        );
    }
    // With several missing, Envoy names the first in the proto's order.
    let opts = LoadOptions {
        config_yaml: Some(base.replacen(written, "    - healthy_threshold: 1\n", 1)),
        ..LoadOptions::default()
    };
    let err = validate_only(&opts).unwrap_err();
    assert_eq!(
        err.path(),
        Some("static_resources.clusters[0].health_checks[0].timeout")
    );
}
