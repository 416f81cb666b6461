//! Booting as Istio's sidecar: the bootstrap pilot-agent renders today, read from the shared
//! fixtures (`default_golden.json`: Delta ADS over the agent's Unix socket, node on the first
//! message only, `initial_fetch_timeout: 0s`, Istio's stats_config, the 15090 Prometheus and
//! 15021 health listeners, the `agent`, `prometheus_stats`, `xds-grpc` and `sds-grpc`
//! clusters, the overload manager's connection limit, deferred stats), with only ports and
//! socket paths localized, started with pilot-agent's flags. Then CDS/LDS push an
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
    free_port, http, wait_for, AdsServer, HttpStub, Level, LogExpectation, Proxy, ProxyOptions,
    RedisServer, Reply, RespClient, Target,
};

use crate::targets;

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

/// Istio's rendered sidecar bootstrap, kept verbatim in the shared fixtures (istio/istio
/// `pkg/bootstrap/testdata/default_golden.json`). Read at run time: a private copy could drift
/// from what Istio renders today.
const GOLDEN_BOOTSTRAP: &str = "../shared/fixtures/istio/default_golden.json";

/// The golden bootstrap with only its ports and socket paths localized, as pilot-agent renders
/// them for a pod: the admin port (and the `prometheus_stats` cluster that points at it) →
/// `{{ADMIN_PORT}}`, the 15090 and 15021 listeners → `{{LISTENER_PORT}}` and
/// `{{LISTENER_PORT_1}}`, the `agent` cluster → the agent stub, the `xds-grpc` and `sds-grpc`
/// Unix sockets → the test's.
fn port_of(v: &mut serde_json::Value) -> &mut serde_json::Value {
    &mut v["address"]["socket_address"]["port_value"]
}

fn istio_bootstrap(xds_socket: &str, sds_socket: &str, agent_port: u16) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_BOOTSTRAP);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared fixtures must sit beside the repository)",
            path.display()
        )
    });
    let mut golden: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let placeholder = |name: &str| serde_json::Value::String(format!("{{{{{name}}}}}"));
    *port_of(&mut golden["admin"]) = placeholder("ADMIN_PORT");
    for listener in golden["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("golden: no static listeners"))
    {
        let name = match listener["name"].as_str() {
            Some("0.0.0.0_15090") => "LISTENER_PORT",
            Some("0.0.0.0_15021") => "LISTENER_PORT_1",
            other => panic!("golden: unexpected static listener {other:?}"),
        };
        *port_of(listener) = placeholder(name);
    }
    for cluster in golden["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("golden: no static clusters"))
    {
        let name = cluster["name"].as_str().unwrap_or_default().to_owned();
        let endpoint =
            &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
        match name.as_str() {
            "prometheus_stats" => *port_of(endpoint) = placeholder("ADMIN_PORT"),
            "agent" => *port_of(endpoint) = agent_port.into(),
            "xds-grpc" => endpoint["address"]["pipe"]["path"] = xds_socket.into(),
            "sds-grpc" => endpoint["address"]["pipe"]["path"] = sds_socket.into(),
            other => panic!("golden: unexpected static cluster {other}"),
        }
    }
    // Placeholders stand where numbers go: unquote them.
    serde_json::to_string_pretty(&golden)
        .unwrap_or_else(|e| panic!("golden: {e}"))
        .replace("\"{{ADMIN_PORT}}\"", "{{ADMIN_PORT}}")
        .replace("\"{{LISTENER_PORT}}\"", "{{LISTENER_PORT}}")
        .replace("\"{{LISTENER_PORT_1}}\"", "{{LISTENER_PORT_1}}")
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

        let yaml = istio_bootstrap(
            &socket.display().to_string(),
            &dir.path().join("sds.sock").display().to_string(),
            agent.port(),
        );
        let proxy = Proxy::start_with(
            target,
            &yaml,
            &ProxyOptions {
                no_default_args: true,
                args: PILOT_AGENT_FLAGS.iter().map(|s| s.to_string()).collect(),
                // redvoy skips the HTTP service's listener (no HTTP connection manager with
                // RDS), saying so.
                log: vec![LogExpectation::expect(
                    Level::Warn,
                    "listener skipped: redvoy does not implement its filters \
                     listener=0.0.0.0_8080",
                )],
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
