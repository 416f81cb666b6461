//! Booting as Istio's sidecar: a bootstrap shaped like the one pilot-agent renders (Delta ADS
//! over the agent's Unix socket, node on the first message only, `initial_fetch_timeout: 0s`,
//! Istio's stats_config, the 15090 Prometheus and 15021 health listeners, the `agent` and
//! `prometheus_stats` clusters), started with pilot-agent's flags. Then CDS/LDS push an
//! Istio-shaped outbound Redis listener (tcp_proxy first, replaced by redis_proxy as an
//! EnvoyFilter would) and an HTTP listener taking its routes from RDS.
//!
//! Comparable on both targets: ready, `/healthz/ready` through 15021, Prometheus text through
//! 15090, Redis through the outbound listener (tcp_proxy, then redis_proxy). The RDS listener
//! differs by design: Envoy serves it once RDS arrives (the control plane answers it); redvoy
//! does not implement the HTTP router for services and skips it, staying ready and showing
//! it as skipped.

use std::time::Duration;

use redvoy_test_util::ads::{TYPE_LISTENER, TYPE_ROUTE};
use redvoy_test_util::xds::{
    direct_response_routes, eds_cluster, http_rds_listener, load_assignment, redis_listener_with,
    redis_proxy, tcp_proxy_listener,
};
use redvoy_test_util::{
    free_port, http, wait_for, AdsServer, HttpStub, Proxy, ProxyOptions, RedisServer, Reply,
    RespClient, Target,
};

fn targets() -> Vec<Target> {
    redvoy_test_util::targets(env!("CARGO_BIN_EXE_redvoy"))
}

/// Bound on an xDS exchange or a listener change showing.
const WAIT: Duration = Duration::from_secs(15);
/// Istio's outbound cluster name for the Redis service.
const REDIS_CLUSTER: &str = "outbound|6379||redis.default.svc.cluster.local";
/// The HTTP service's route configuration name (Istio: the port number).
const HTTP_ROUTE: &str = "8080";

/// pilot-agent's command line (istio/istio pkg/envoy/proxy.go), minus `-c`.
const PILOT_AGENT_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--concurrency",
    "1",
];

/// The bootstrap: pilot-agent's rendering (istio/istio pkg/bootstrap/testdata/
/// default_golden.json) with the test's ports and socket. `{{LISTENER_PORT}}` = 15090,
/// `{{LISTENER_PORT_1}}` = 15021, `{{ADMIN_PORT}}` = 15000.
fn istio_bootstrap(xds_socket: &str, agent_port: u16) -> String {
    let http_listener = |name: &str, port: &str, stat_prefix: &str, prefix: &str, cluster: &str| {
        format!(
            r#"
  - name: {name}
    address: {{socket_address: {{protocol: TCP, address: 127.0.0.1, port_value: {port}}}}}
    ignore_global_conn_limit: true
    bypass_overload_manager: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: AUTO
          stat_prefix: {stat_prefix}
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {{prefix: {prefix}}}
                route: {{cluster: {cluster}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        )
    };
    let static_cluster = |name: &str, port: &str| {
        format!(
            r#"
  - name: {name}
    alt_stat_name: "{name};"
    type: STATIC
    connect_timeout: 0.250s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{protocol: TCP, address: 127.0.0.1, port_value: {port}}}}}}}"#
        )
    };
    format!(
        r#"node:
  id: sidecar~10.3.3.3~redis-client-7d4b9c-abcde.default~default.svc.cluster.local
  cluster: redis-client.default
  locality: {{}}
  metadata:
    ENVOY_PROMETHEUS_PORT: 15090
    ENVOY_STATUS_PORT: 15021
    INSTANCE_IPS: "10.3.3.3"
    ISTIO_VERSION: "1.22.0"
    LABELS: {{app: redis-client}}
    NAMESPACE: default
    PROXY_CONFIG: {{binaryPath: /usr/local/bin/envoy, configPath: ./etc/istio/proxy, drainDuration: 45s, proxyAdminPort: 15000, statusPort: 15020}}
layered_runtime:
  layers:
  - name: global config
    static_layer:
      envoy.deprecated_features:envoy.config.listener.v3.Listener.hidden_envoy_deprecated_use_original_dst: true
      envoy.reloadable_features.http_reject_path_with_fragment: false
      re2.max_program_size.error_level: "32768"
  - name: admin
    admin_layer: {{}}
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/udpa.type.v1.TypedStruct
    type_url: type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
    value: {{buffer_size_kb: 64}}
stats_config:
  use_all_default_tags: false
  stats_tags:
  - {{tag_name: cluster_name, regex: '^cluster(\.(.+);)'}}
  - {{tag_name: tcp_prefix, regex: '^tcp\.((.*?)\.)\w+?$'}}
  - {{tag_name: response_code, regex: '_rq(_(\d{{3}}))$'}}
  - {{tag_name: response_code_class, regex: '_rq(_(\dxx))$'}}
  - {{tag_name: listener_address, regex: '^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)'}}
  - {{tag_name: component, regex: '(component\.(.+?)\.)'}}
  stats_matcher:
    inclusion_list:
      patterns:
      - {{prefix: "reporter="}}
      - {{prefix: cluster_manager}}
      - {{prefix: listener_manager}}
      - {{prefix: server}}
      - {{prefix: cluster.xds-grpc}}
      - {{prefix: wasm}}
      - {{suffix: rbac.allowed}}
      - {{suffix: rbac.denied}}
      - {{suffix: shadow_allowed}}
      - {{suffix: shadow_denied}}
      - {{safe_regex: {{regex: 'vhost\..*\.route\..*'}}}}
      - {{prefix: component}}
      - {{prefix: istio}}
admin:
  access_log:
  - name: envoy.access_loggers.file
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
      path: /dev/null
  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}
dynamic_resources:
  lds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  cds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  ads_config:
    api_type: DELTA_GRPC
    set_node_on_first_message_only: true
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{cluster_name: xds-grpc}}
static_resources:
  clusters:{prometheus}{agent}
  - name: xds-grpc
    alt_stat_name: "xds-grpc;"
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{pipe: {{path: {xds_socket}}}}}}}
    circuit_breakers:
      thresholds:
      - {{priority: DEFAULT, max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}
      - {{priority: HIGH, max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}
    upstream_connection_options: {{tcp_keepalive: {{keepalive_time: 300}}}}
    max_requests_per_connection: 1
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
  listeners:{stats_listener}{health_listener}
cluster_manager:
  outlier_detection: {{event_log_path: /dev/stdout}}
"#,
        prometheus = static_cluster("prometheus_stats", "{{ADMIN_PORT}}"),
        agent = static_cluster("agent", &agent_port.to_string()),
        stats_listener = http_listener(
            "0.0.0.0_15090",
            "{{LISTENER_PORT}}",
            "stats",
            "/stats/prometheus",
            "prometheus_stats"
        ),
        health_listener = http_listener(
            "0.0.0.0_15021",
            "{{LISTENER_PORT_1}}",
            "agent",
            "/healthz/ready",
            "agent"
        ),
    )
}

/// The Istio-shaped outbound listener for the Redis service: tcp_proxy (Istio's default), or
/// redis_proxy (what the EnvoyFilter patches in).
fn outbound_redis_listener(port: u16, redis_filter: bool) -> redvoy_test_util::xds::XdsListener {
    // Istio names it `<VIP>_6379`; the test binds it on loopback under that name.
    let name = "10.96.0.10_6379";
    if redis_filter {
        redis_listener_with(
            name,
            "127.0.0.1",
            port,
            redis_proxy(REDIS_CLUSTER, &[], Some(REDIS_CLUSTER)),
        )
    } else {
        tcp_proxy_listener(name, "127.0.0.1", port, REDIS_CLUSTER)
    }
}

#[test]
fn boots_as_istio_sidecar_and_serves_redis() {
    let redis = RedisServer::start();
    for target in targets() {
        eprintln!("--- running on {target}");
        redis.flushall();
        let agent = HttpStub::start(&[("/healthz/ready", 200, "")]);
        let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let socket = dir.path().join("XDS");
        let server = AdsServer::start_unix(&socket).unwrap_or_else(|e| panic!("ADS: {e}"));
        let (redis_port, http_port) = (free_port(), free_port());
        server.set_messages("2024-01-01T00:00:00Z/1", &[eds_cluster(REDIS_CLUSTER)]);
        server.set_messages(
            "2024-01-01T00:00:00Z/1",
            &[load_assignment(REDIS_CLUSTER, &[redis.port()])],
        );
        server.set_messages(
            "2024-01-01T00:00:00Z/1",
            &[
                outbound_redis_listener(redis_port, false),
                http_rds_listener("0.0.0.0_8080", http_port, HTTP_ROUTE),
            ],
        );
        // Envoy waits for the RDS of the HTTP listener (initial_fetch_timeout 0s): answer it.
        server.set_messages(
            "2024-01-01T00:00:00Z/1",
            &[direct_response_routes(HTTP_ROUTE, 200)],
        );

        let yaml = istio_bootstrap(&socket.display().to_string(), agent.port());
        let proxy = Proxy::start_with(
            target,
            &yaml,
            &ProxyOptions {
                no_default_args: true,
                args: PILOT_AGENT_FLAGS.iter().map(|s| s.to_string()).collect(),
                ..ProxyOptions::default()
            },
        );
        let requests = server.requests();
        assert!(requests[0].has_node, "{target}: node on the first message");
        assert!(
            requests[1..]
                .iter()
                .filter(|r| r.stream == 1)
                .all(|r| !r.has_node),
            "{target}: set_node_on_first_message_only: {:?}",
            server.summaries()
        );

        // The agent's readiness probe through 15021, and Prometheus through 15090.
        let health = http(proxy.listener_port(1), "GET", "/healthz/ready")
            .unwrap_or_else(|e| panic!("{target}: GET :15021/healthz/ready: {e}"));
        assert_eq!(health.status, 200, "{target}: /healthz/ready: {health:?}");
        assert!(agent.requests() >= 1, "{target}: the agent was asked");
        let prom = http(proxy.listener_port(0), "GET", "/stats/prometheus")
            .unwrap_or_else(|e| panic!("{target}: GET :15090/stats/prometheus: {e}"));
        assert_eq!(prom.status, 200, "{target}: /stats/prometheus");
        assert!(
            prom.body.contains("# TYPE envoy_server_live gauge")
                || prom.body.contains("# TYPE envoy_server_state gauge"),
            "{target}: Prometheus text expected:\n{}",
            redvoy_test_util::abbrev(&prom.body, 600)
        );
        assert!(
            !prom
                .body
                .contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"agent\"}"),
            "{target}: Istio's stats_matcher keeps only the included prefixes"
        );
        let other = http(proxy.listener_port(0), "GET", "/ready")
            .unwrap_or_else(|e| panic!("{target}: GET :15090/ready: {e}"));
        assert_eq!(
            other.status, 404,
            "{target}: 15090 routes only /stats/prometheus"
        );

        // Redis through the tcp_proxy listener, then through redis_proxy after the
        // "EnvoyFilter" push replaces the filter.
        let mut client = RespClient::connect(redis_port);
        assert_eq!(
            client.cmd(&["SET", "via-tcp", "1"]),
            Reply::ok(),
            "{target}: tcp_proxy"
        );
        assert_eq!(redis.cmd(&["GET", "via-tcp"]), Reply::bulk("1"));
        server.push(
            "2024-01-01T00:00:00Z/2",
            &[
                outbound_redis_listener(redis_port, true),
                http_rds_listener("0.0.0.0_8080", http_port, HTTP_ROUTE),
            ],
            WAIT,
        );
        wait_for(WAIT, "a SET counted by redis_proxy", || {
            let mut c = RespClient::connect(redis_port);
            assert_eq!(
                c.cmd(&["SET", "via-redis", "2"]),
                Reply::ok(),
                "{target}: redis_proxy"
            );
            // The stats matcher hides `redis.*`: read the listener's behaviour from Redis
            // itself — redis_proxy answers PING locally, tcp_proxy forwards it.
            let before = redis.command_calls("ping");
            assert_eq!(c.cmd(&["PING"]), Reply::Simple(b"PONG".to_vec()));
            (redis.command_calls("ping") == before).then_some(())
        });
        assert_eq!(redis.cmd(&["GET", "via-redis"]), Reply::bulk("2"));

        // The HTTP listener needing RDS.
        let lds = server
            .requests()
            .iter()
            .filter(|r| r.type_url == TYPE_LISTENER && r.is_nack())
            .count();
        assert_eq!(lds, 0, "{target}: no LDS NACK: {:?}", server.summaries());
        let asked_rds = server.requests().iter().any(|r| r.type_url == TYPE_ROUTE);
        let listeners = proxy.admin("GET", "/listeners").body;
        match target {
            Target::Envoy => {
                assert!(asked_rds, "{target}: Envoy subscribes to RDS");
                assert!(listeners.contains("0.0.0.0_8080"), "{target}: {listeners}");
                let resp = http(http_port, "GET", "/")
                    .unwrap_or_else(|e| panic!("{target}: GET :8080: {e}"));
                assert_eq!(resp.status, 200, "{target}: RDS direct response");
            }
            Target::Redvoy => {
                let dump = proxy.admin("GET", "/config_dump").body;
                assert!(
                    listeners.contains("0.0.0.0_8080") || dump.contains("0.0.0.0_8080"),
                    "{target}: the skipped listener is shown in /listeners or /config_dump"
                );
            }
        }
        assert_eq!(
            proxy.admin("GET", "/ready").status,
            200,
            "{target}: still ready"
        );
        let stats = proxy.stats();
        for name in [
            "listener_manager.lds.update_success",
            "cluster_manager.cds.update_success",
            "control_plane.connected_state",
            "server.state",
        ] {
            eprintln!("{target}: {name} = {:?}", stats.get(name));
        }
        assert_eq!(stats.get_int("server.state"), Some(0), "{target}: LIVE");
        drop(proxy);
    }
}
