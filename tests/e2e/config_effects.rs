//! Cluster and filter settings that change where traffic goes or whether it flows, each fed to
//! Envoy 1.40 and to redvoy with the effect compared (same key placement, same replies, same
//! stats), so none of them can be accepted and silently ignored again:
//! - endpoint `health_status` on a STATIC RING_HASH cluster, and
//!   `common_lb_config.healthy_panic_threshold` (panic mode, and its absence at 0);
//! - tcp_proxy `weighted_clusters` (a cluster per connection, by weight);
//! - `circuit_breakers` (tcp_proxy: a connection beyond `max_connections` is closed with
//!   `upstream_cx_overflow`; redis_proxy: not enforced, in Envoy as in redvoy);
//! - `upstream_connection_options.tcp_keepalive` (the upstream socket's keepalive timer);
//! - `transport_socket_matches` with a TLS entry: both speak TLS to the endpoints that select
//!   it (here: to a plaintext Redis, so those keys fail) and never plaintext.

use std::process::Command;
use std::time::Duration;

use redvoy_test_util::{
    redis_listener_yaml, same_on_all_targets, Proxy, ReadOutcome, RedisServer, Reply, RespClient,
    Rows, Target,
};

use crate::targets;

/// Keys written for a placement comparison.
const KEYS: usize = 60;
/// Connections opened through the weighted tcp_proxy.
const WEIGHTED_CONNECTIONS: usize = 200;
/// Bound on a reply or a close.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// An lb_endpoint on `port` with extra YAML at the lb_endpoint's level.
fn lb_endpoint(port: u16, extra: &str) -> String {
    format!(
        "\n        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}{extra}"
    )
}

/// A bootstrap: listeners (YAML items) and clusters (YAML items).
fn bootstrap(listeners: &[String], clusters: &[String]) -> String {
    format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:{}\n  clusters:{}\n",
        listeners.concat(),
        clusters.concat()
    )
}

/// A redis_proxy listener on `{{LISTENER_PORT<suffix>}}` sending every key to `cluster`.
fn redis_listener(suffix: &str, cluster: &str) -> String {
    redis_listener_yaml(
        &format!("redis{suffix}"),
        &format!("{{{{LISTENER_PORT{suffix}}}}}"),
        &[],
        cluster,
    )
}

/// A tcp_proxy listener on `{{LISTENER_PORT<suffix>}}` with `target` (YAML: `cluster: x` or
/// `weighted_clusters: ...`).
fn tcp_listener(suffix: &str, target: &str) -> String {
    format!(
        r#"
  - name: tcp{suffix}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT{suffix}}}}}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": {TCP_PROXY_TYPE}
          stat_prefix: tcp{suffix}
          {target}"#
    )
}

/// A STATIC cluster with `lb_policy`, the given lb_endpoints and extra YAML at its level.
fn cluster(name: &str, lb_policy: &str, endpoints: &[String], extra: &str) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    lb_policy: {lb_policy}{extra}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{}"#,
        endpoints.concat()
    )
}

/// Which of `servers` (named A, B, C, ...) holds each of `keys`.
fn placement(keys: &[String], servers: &[&RedisServer]) -> String {
    keys.iter()
        .map(|k| {
            let on: String = servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.cmd(&["EXISTS", k]) == Reply::Integer(1))
                .map(|(i, _)| char::from(b'A' + i as u8))
                .collect();
            if on.is_empty() {
                "-".to_owned()
            } else {
                on
            }
        })
        .collect::<Vec<_>>()
        .join("")
}

// ---------------------------------------------------------------------------------------------
// health_status and healthy_panic_threshold

fn health_scenario(target: Target, servers: &[&RedisServer; 3]) -> Rows {
    let mut rows = Rows::new();
    let cases: &[(&str, [&str; 3], &str)] = &[
        (
            "healthy, healthy, unhealthy",
            ["HEALTHY", "HEALTHY", "UNHEALTHY"],
            "",
        ),
        (
            "healthy, unhealthy, unhealthy: panic",
            ["HEALTHY", "UNHEALTHY", "UNHEALTHY"],
            "",
        ),
        (
            "healthy, unhealthy, unhealthy, threshold 0",
            ["HEALTHY", "UNHEALTHY", "UNHEALTHY"],
            "\n    common_lb_config: {healthy_panic_threshold: {value: 0}}",
        ),
        (
            "healthy, degraded, unhealthy",
            ["HEALTHY", "DEGRADED", "UNHEALTHY"],
            "",
        ),
    ];
    for (label, health, extra) in cases {
        for s in servers {
            s.flushall();
        }
        let endpoints: Vec<String> = servers
            .iter()
            .zip(health)
            .map(|(s, h)| lb_endpoint(s.port(), &format!("\n          health_status: {h}")))
            .collect();
        let yaml = bootstrap(
            &[redis_listener("", "redis")],
            &[cluster("redis", "RING_HASH", &endpoints, extra)],
        );
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let keys: Vec<String> = (0..KEYS).map(|i| format!("health:{i}")).collect();
        for k in &keys {
            assert_eq!(
                client.cmd(&["SET", k, "v"]),
                Reply::ok(),
                "{target}: {label}: {k}"
            );
        }
        rows.push((format!("{label}: placement"), placement(&keys, servers)));
        let stats = proxy.stats();
        for name in [
            "membership_total",
            "membership_healthy",
            "membership_degraded",
        ] {
            rows.push((
                format!("{label}: {name}"),
                stats
                    .get(&format!("cluster.redis.{name}"))
                    .unwrap_or("<absent>")
                    .to_owned(),
            ));
        }
    }
    rows
}

#[test]
fn health_status_and_panic_threshold_place_keys_as_envoy() {
    let (a, b, c) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    same_on_all_targets(&targets(), |target| health_scenario(target, &[&a, &b, &c]));
}

// ---------------------------------------------------------------------------------------------
// tcp_proxy weighted_clusters

fn weighted_scenario(target: Target, light: &RedisServer, heavy: &RedisServer) -> Rows {
    light.flushall();
    heavy.flushall();
    let yaml = bootstrap(
        &[tcp_listener(
            "",
            "weighted_clusters: {clusters: [{name: light, weight: 1}, {name: heavy, weight: 3}]}",
        )],
        &[
            cluster("light", "ROUND_ROBIN", &[lb_endpoint(light.port(), "")], ""),
            cluster("heavy", "ROUND_ROBIN", &[lb_endpoint(heavy.port(), "")], ""),
        ],
    );
    let proxy = Proxy::start(target, &yaml, &[]);
    for i in 0..WEIGHTED_CONNECTIONS {
        let mut c = proxy.client();
        assert!(
            matches!(c.cmd(&["INCR", "hits"]), Reply::Integer(_)),
            "{target}: connection {i}"
        );
    }
    let count = |s: &RedisServer| match s.cmd(&["GET", "hits"]) {
        Reply::Bulk(b) => String::from_utf8_lossy(&b).parse::<usize>().unwrap_or(0),
        _ => 0,
    };
    let (l, h) = (count(light), count(heavy));
    eprintln!("{target}: {WEIGHTED_CONNECTIONS} connections: light {l}, heavy {h}");
    // Weights 1:3: 50 expected on light; a binomial this far off (below 20, above 90) would be
    // a five-sigma event.
    vec![
        (
            "every connection reached a cluster".into(),
            (l + h == WEIGHTED_CONNECTIONS).to_string(),
        ),
        (
            "light within 20..=90".into(),
            (20..=90).contains(&l).to_string(),
        ),
        ("heavy got more".into(), (h > l).to_string()),
    ]
}

#[test]
fn tcp_proxy_weighted_clusters_split_connections_by_weight() {
    let (light, heavy) = (RedisServer::start(), RedisServer::start());
    same_on_all_targets(&targets(), |target| {
        weighted_scenario(target, &light, &heavy)
    });
}

// ---------------------------------------------------------------------------------------------
// circuit_breakers

fn breaker_scenario(target: Target, redis: &RedisServer) -> Rows {
    let all_one = "\n    circuit_breakers: {thresholds: [{max_connections: 1, max_pending_requests: 1, max_requests: 1}]}";
    let yaml = bootstrap(
        &[
            tcp_listener("", "cluster: tcp_cb"),
            redis_listener("_1", "redis_cb"),
        ],
        &[
            cluster(
                "tcp_cb",
                "ROUND_ROBIN",
                &[lb_endpoint(redis.port(), "")],
                all_one,
            ),
            cluster(
                "redis_cb",
                "ROUND_ROBIN",
                &[lb_endpoint(redis.port(), "")],
                all_one,
            ),
        ],
    );
    let proxy = Proxy::start(target, &yaml, &[]);
    let mut rows = Rows::new();

    // tcp_proxy: the first connection holds the only place; the second is closed unanswered.
    let mut first = RespClient::connect(proxy.listener_port(0));
    rows.push(("tcp first".into(), format!("{:?}", first.cmd(&["PING"]))));
    let mut second = RespClient::connect(proxy.listener_port(0));
    let outcome = if second.try_send_raw(b"*1\r\n$4\r\nPING\r\n").is_err() {
        "closed".to_owned()
    } else {
        match second.read_outcome(REPLY_TIMEOUT) {
            ReadOutcome::Frame { reply, .. } => format!("{reply:?}"),
            ReadOutcome::Closed { .. } => "closed".to_owned(),
            ReadOutcome::Timeout { .. } => "timeout".to_owned(),
        }
    };
    rows.push(("tcp second".into(), outcome));
    let stats = proxy.stats();
    for name in ["upstream_cx_overflow", "circuit_breakers.default.cx_open"] {
        rows.push((
            format!("tcp_cb {name}"),
            stats
                .get(&format!("cluster.tcp_cb.{name}"))
                .unwrap_or("<absent>")
                .to_owned(),
        ));
    }
    drop(first);

    // redis_proxy: Envoy enforces none of the thresholds (its redis client never consults
    // them): several clients pipelining are all answered while the server is paused. redvoy
    // deliberately enforces limits a cluster sets explicitly (README, "Beyond client
    // libraries"): one request in flight, the others refused at once.
    let mut paused = RespClient::connect(redis.port());
    assert_eq!(paused.cmd(&["CLIENT", "PAUSE", "500"]), Reply::ok());
    let mut clients: Vec<RespClient> = (0..4)
        .map(|_| RespClient::connect(proxy.listener_port(1)))
        .collect();
    for c in &mut clients {
        c.send_raw(&b"*2\r\n$3\r\nGET\r\n$2\r\ncb\r\n".repeat(5));
    }
    let mut answered = 0;
    for c in &mut clients {
        for _ in 0..5 {
            if let ReadOutcome::Frame {
                reply: Reply::Null, ..
            } = c.read_outcome(REPLY_TIMEOUT)
            {
                answered += 1;
            }
        }
    }
    let stats = proxy.stats();
    let refused = stats
        .get_int("cluster.redis_cb.upstream_rq_pending_overflow")
        .unwrap_or(0)
        + stats
            .get_int("cluster.redis_cb.upstream_cx_overflow")
            .unwrap_or(0);
    let expected = match target {
        Target::Envoy => (20, 0),
        Target::Redvoy => (1, 19),
    };
    assert_eq!(
        (answered, refused),
        expected,
        "{target}: redis_proxy GETs answered of 20, and refused by a limit"
    );
    rows
}

#[test]
fn circuit_breakers_bound_tcp_proxy_and_only_redvoys_redis_proxy() {
    let redis = RedisServer::start();
    same_on_all_targets(&targets(), |target| breaker_scenario(target, &redis));
}

// ---------------------------------------------------------------------------------------------
// upstream_connection_options.tcp_keepalive

/// `ss`'s view of the proxy's established connections to `port` (timers shown).
fn sockets_to(port: u16) -> String {
    let out = Command::new("ss")
        .args([
            "-tnoH",
            "state",
            "established",
            "dport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("ss: {e} (iproute2 is installed by make test)"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keepalive_scenario(target: Target, with: &RedisServer, without: &RedisServer) -> Rows {
    let keepalive =
        "\n    upstream_connection_options: {tcp_keepalive: {keepalive_time: 60, keepalive_interval: 5, keepalive_probes: 3}}";
    let yaml = bootstrap(
        &[
            redis_listener("", "with"),
            tcp_listener("_1", "cluster: without"),
        ],
        &[
            cluster(
                "with",
                "ROUND_ROBIN",
                &[lb_endpoint(with.port(), "")],
                keepalive,
            ),
            cluster(
                "without",
                "ROUND_ROBIN",
                &[lb_endpoint(without.port(), "")],
                "",
            ),
        ],
    );
    let proxy = Proxy::start(target, &yaml, &[]);
    let mut a = RespClient::connect(proxy.listener_port(0));
    assert_eq!(a.cmd(&["SET", "ka", "1"]), Reply::ok(), "{target}");
    let mut b = RespClient::connect(proxy.listener_port(1));
    assert_eq!(b.cmd(&["SET", "ka", "1"]), Reply::ok(), "{target}");
    let (with_ss, without_ss) = (sockets_to(with.port()), sockets_to(without.port()));
    eprintln!("{target}: with keepalive: {with_ss}\nwithout: {without_ss}");
    // `timer:(keepalive,59sec,0)`: the first probe within the configured 60 s (the system's
    // default would be 7200 s).
    let first_probe_s = with_ss
        .split("timer:(keepalive,")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    vec![
        (
            "keepalive timer within keepalive_time on the configured cluster's connection".into(),
            first_probe_s.is_some_and(|s| s <= 60).to_string(),
        ),
        (
            "no keepalive timer without the option".into(),
            (!without_ss.is_empty() && !without_ss.contains("keepalive")).to_string(),
        ),
    ]
}

#[test]
fn tcp_keepalive_is_set_on_upstream_connections() {
    let (with, without) = (RedisServer::start(), RedisServer::start());
    same_on_all_targets(&targets(), |target| {
        keepalive_scenario(target, &with, &without)
    });
}

// ---------------------------------------------------------------------------------------------
// transport_socket_matches with a TLS entry

#[test]
fn endpoints_selecting_tls_are_never_used_in_plaintext() {
    let (tls, plain) = (RedisServer::start(), RedisServer::start());
    let matches = r#"
    transport_socket_matches:
    - name: tlsMode-istio
      match: {tlsMode: istio}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    - name: tlsMode-disabled
      match: {}
      transport_socket:
        name: envoy.transport_sockets.raw_buffer
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"#;
    let endpoints = [
        lb_endpoint(
            tls.port(),
            "\n          metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}",
        ),
        lb_endpoint(plain.port(), ""),
    ];
    let yaml = bootstrap(
        &[redis_listener("", "redis")],
        &[cluster("redis", "RING_HASH", &endpoints, matches)],
    );
    for target in targets() {
        tls.flushall();
        plain.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let keys: Vec<String> = (0..KEYS).map(|i| format!("tsm:{i}")).collect();
        let failed = keys
            .iter()
            .filter(|k| client.cmd(&["SET", k, "v"]) != Reply::ok())
            .count();
        let on_tls = tls.keys().len();
        eprintln!(
            "{target}: SETs failed {failed}, keys on the TLS endpoint (in plaintext) {on_tls}"
        );
        assert_eq!(
            on_tls, 0,
            "{target}: nothing reaches the TLS endpoint in plaintext"
        );
        // Both speak TLS to the labelled endpoint: the plaintext Redis there fails the
        // handshake, so the keys hashed to it fail; the others are served.
        assert!(failed > 0, "{target}: keys routed to the TLS endpoint fail");
        assert_eq!(plain.keys().len(), KEYS - failed, "{target}");
    }
}
