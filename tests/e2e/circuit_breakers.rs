//! Circuit-breaker reporting (issue 13), Envoy 1.40 and redvoy with the same config: the
//! `circuit_breakers.{default,high}.*_open` gauges, the `remaining_*` gauges of the priorities
//! with `track_remaining` (their maximum at idle, `u64::MAX` for unlimited connection pools),
//! and the configured thresholds of both priorities in `/clusters` (text lines in Envoy's
//! order, and `circuit_breakers.thresholds` in JSON), for a cluster with custom DEFAULT and HIGH
//! thresholds, one tracking only HIGH, one with retry budgets and one without
//! `circuit_breakers`.
//!
//! What Envoy 1.40 was observed to do, and redvoy does the same:
//! - redis_proxy traffic counts against no breaker (every `remaining_*` stays at its maximum);
//!   each tcp_proxy connection counts one connection and one request (`remaining_cx`,
//!   `remaining_rq`, `cx_open`, `rq_open`), without `max_requests` being enforced;
//! - with a `retry_budget`, `/clusters` shows the budget's share of the requests counted
//!   (truncated), at least `min_retry_concurrency`, and reading it sets `remaining_retries` to
//!   0 (before the first read it is `max_retries`).

use std::time::Duration;

use redvoy_test_util::{
    bootstrap, catch_all_filter, expect_eq, try_wait_for, Cluster, Proxy, RedisServer, Reply,
    RespClient, Rows, Target,
};
use serde_json::Value;

use crate::targets;

/// Bound on the proxy counting closed tcp_proxy connections out.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// tcp_proxy connections held at once (`tcp_tracked` allows 3).
const HELD: usize = 3;

const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// The clusters compared, in the order their rows are listed (Envoy's `/clusters` order is its
/// hash map's).
const CLUSTERS: [&str; 5] = ["custom", "high_tracked", "budget", "plain", "tcp_tracked"];

/// A redis_proxy listener sending every key to `custom`, a tcp_proxy listener
/// (`{{LISTENER_PORT_1}}`) to `tcp_tracked`, and the clusters of [`CLUSTERS`].
fn breakers_bootstrap(redis: &RedisServer) -> String {
    let port = [redis.port()];
    let yaml = bootstrap(
        &catch_all_filter("custom", ""),
        &[
            // Every threshold of both priorities set; DEFAULT tracked.
            Cluster::new("custom", "RING_HASH", &port).extra(
                "
                circuit_breakers:
                  thresholds:
                  - {priority: DEFAULT, max_connections: 11, max_pending_requests: 12, max_requests: 13, max_retries: 14, max_connection_pools: 15, track_remaining: true}
                  - {priority: HIGH, max_connections: 21, max_pending_requests: 22, max_requests: 23, max_retries: 24, max_connection_pools: 25}
                ",
            ),
            // Only HIGH, partly set and tracked: defaults elsewhere, unlimited pools.
            Cluster::new("high_tracked", "ROUND_ROBIN", &port).extra(
                "
                circuit_breakers:
                  thresholds:
                  - {priority: HIGH, max_connections: 5, track_remaining: true}
                ",
            ),
            // Retry budgets (one empty: Envoy's defaults), limits of 0, and a second HIGH
            // entry, which Envoy ignores (the first of a priority counts).
            Cluster::new("budget", "ROUND_ROBIN", &port).extra(
                "
                circuit_breakers:
                  thresholds:
                  - {max_requests: 7, max_retries: 9, track_remaining: true, retry_budget: {budget_percent: {value: 50}, min_retry_concurrency: 5, budget_interval: 1s}}
                  - {priority: HIGH, max_connections: 0, max_requests: 0, track_remaining: true, retry_budget: {}}
                  - {priority: HIGH, max_connections: 99}
                ",
            ),
            Cluster::new("plain", "ROUND_ROBIN", &port),
            // For tcp_proxy: 3 connections; `max_requests` below that (reported, and not
            // enforced by Envoy's tcp_proxy); a budget of 70 % of the requests counted.
            Cluster::new("tcp_tracked", "ROUND_ROBIN", &port).extra(
                "
                circuit_breakers:
                  thresholds:
                  - {max_connections: 3, max_pending_requests: 4, max_requests: 2, track_remaining: true, retry_budget: {budget_percent: {value: 70}, min_retry_concurrency: 1}}
                ",
            ),
        ],
    );
    let tcp_listener = format!(
        r#"  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT_1}}}}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": {TCP_PROXY_TYPE}
          stat_prefix: tcp
          cluster: tcp_tracked
"#
    );
    yaml.replacen("  clusters:\n", &format!("{tcp_listener}  clusters:\n"), 1)
}

/// Every `cluster.<c>.circuit_breakers.*` stat of the clusters in `clusters`, one row each.
fn breaker_stats(proxy: &Proxy, label: &str, clusters: &[&str]) -> Rows {
    let stats = proxy.stats();
    clusters
        .iter()
        .flat_map(|c| {
            let prefix = format!("cluster.{c}.circuit_breakers.");
            stats
                .values
                .iter()
                .filter(move |(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (format!("{label} {k}"), v.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Per cluster, its own `/clusters` lines (not its hosts'), in the order printed.
fn clusters_text(proxy: &Proxy, label: &str, clusters: &[&str]) -> Rows {
    let resp = proxy.admin("GET", "/clusters");
    assert_eq!(resp.status, 200, "{} GET /clusters", proxy.target());
    clusters
        .iter()
        .map(|c| {
            let own = format!("{c}::");
            let lines: Vec<&str> = resp
                .body
                .lines()
                .filter(|l| l.starts_with(&own) && !l.contains("::127.0.0.1:"))
                .collect();
            (format!("{label} /clusters {c}"), lines.join("\n"))
        })
        .collect()
}

/// Per cluster, `circuit_breakers` of `/clusters?format=json`.
fn clusters_json(proxy: &Proxy, label: &str, clusters: &[&str]) -> Rows {
    let json = proxy.admin_json("/clusters?format=json");
    let statuses = json["cluster_statuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    clusters
        .iter()
        .map(|c| {
            let breakers = statuses
                .iter()
                .find(|s| s["name"] == *c)
                .map_or(Value::Null, |s| s["circuit_breakers"].clone());
            (
                format!("{label} /clusters?format=json {c} circuit_breakers"),
                serde_json::to_string_pretty(&breakers)
                    .unwrap_or_else(|e| panic!("cannot print JSON: {e}")),
            )
        })
        .collect()
}

/// `/stats/prometheus` samples of the `remaining_*` gauges.
fn prometheus_remaining(proxy: &Proxy) -> Rows {
    let resp = proxy.admin("GET", "/stats/prometheus");
    resp.body
        .lines()
        .filter(|l| {
            !l.starts_with('#') && l.contains("circuit_breakers_") && l.contains("remaining")
        })
        .map(|l| match l.rsplit_once(' ') {
            Some((sample, value)) => (format!("prometheus {sample}"), value.to_owned()),
            None => (format!("prometheus {l}"), String::new()),
        })
        .collect()
}

fn scenario(target: Target, redis: &RedisServer) -> Rows {
    let proxy = Proxy::start(target, &breakers_bootstrap(redis), &[]);
    let mut rows = Rows::new();

    // At startup, before anything reads a retry budget.
    rows.extend(breaker_stats(&proxy, "startup", &CLUSTERS));
    let stats = proxy.stats();
    for (name, value) in [
        ("custom.circuit_breakers.default.remaining_cx_pools", "15"),
        (
            "high_tracked.circuit_breakers.high.remaining_cx_pools",
            "18446744073709551615",
        ),
        ("budget.circuit_breakers.default.remaining_retries", "9"),
        ("plain.circuit_breakers.default.cx_open", "0"),
    ] {
        let name = format!("cluster.{name}");
        expect_eq!(target, stats.get(&name), Some(value), "{target} {name}");
    }
    expect_eq!(
        target,
        stats.get("cluster.plain.circuit_breakers.default.remaining_cx"),
        None,
        "{target}: no remaining_* without track_remaining"
    );
    rows.extend(prometheus_remaining(&proxy));

    // The thresholds as configured, per priority; reading them zeroes the budgets' gauges.
    rows.extend(clusters_text(&proxy, "idle", &CLUSTERS));
    let text = proxy.admin("GET", "/clusters").body;
    for line in [
        "custom::default_priority::max_connections::11",
        "custom::high_priority::max_retries::24",
        "budget::default_priority::max_retries::5",
        "budget::high_priority::max_connections::0",
        "plain::high_priority::max_retries::3",
    ] {
        expect_eq!(
            target,
            text.lines().any(|l| l == line),
            true,
            "{target}: no line {line:?} in /clusters"
        );
    }
    rows.extend(clusters_json(&proxy, "idle", &CLUSTERS));
    rows.extend(breaker_stats(&proxy, "after /clusters", &CLUSTERS));
    expect_eq!(
        target,
        proxy
            .stats()
            .get("cluster.budget.circuit_breakers.default.remaining_retries"),
        Some("0"),
        "{target}: remaining_retries after /clusters read the retry budget"
    );

    // redis_proxy traffic counts against no breaker.
    {
        let mut c = RespClient::connect(proxy.listener_port(0));
        for i in 0..20 {
            let key = format!("cb:{i}");
            expect_eq!(target, c.cmd(&["SET", &key, "v"]), Reply::ok(), "{target}");
        }
        rows.extend(breaker_stats(&proxy, "after redis traffic", &["custom"]));
    }

    // tcp_proxy: each connection is one connection and one request against DEFAULT.
    let mut held = Vec::new();
    for i in 0..HELD {
        let mut c = RespClient::connect(proxy.listener_port(1));
        rows.push((
            format!("tcp connection {i} PING"),
            format!("{:?}", c.cmd(&["PING"])),
        ));
        held.push(c);
    }
    rows.extend(breaker_stats(&proxy, "tcp held", &["tcp_tracked"]));
    rows.extend(clusters_text(&proxy, "tcp held", &["tcp_tracked"]));
    rows.extend(clusters_json(&proxy, "tcp held", &["tcp_tracked"]));
    drop(held);
    let settled = try_wait_for(SETTLE_TIMEOUT, || {
        (proxy
            .stats()
            .get("cluster.tcp_tracked.circuit_breakers.default.remaining_cx")
            == Some("3"))
        .then_some(())
    });
    rows.push(("tcp closed settled".into(), settled.is_some().to_string()));
    rows.extend(breaker_stats(&proxy, "tcp closed", &["tcp_tracked"]));
    rows.extend(clusters_text(&proxy, "tcp closed", &["tcp_tracked"]));
    rows
}

#[test]
fn thresholds_and_remaining_are_reported() {
    let redis = RedisServer::start();
    redvoy_test_util::same_on_all_targets(&targets(), |target| scenario(target, &redis));
}

/// Beyond Envoy: limits a cluster sets explicitly are enforced on redis_proxy traffic. Run on
/// both targets to show the difference: Envoy 1.40 enforces neither limit (a transaction opens
/// a second connection beyond `max_connections: 1`; a second request waits behind a hung one
/// beyond `max_requests: 1`); redvoy refuses both at once with an error naming the limit, and
/// counts them (`upstream_cx_overflow`, `upstream_rq_pending_overflow`).
#[test]
fn explicit_limits_are_enforced_on_redis_traffic_unlike_envoy() {
    let redis = RedisServer::start();
    for target in targets() {
        let connections = Cluster::new("limited", "RING_HASH", &[redis.port()]).extra(
            "
            circuit_breakers:
              thresholds:
              - {max_connections: 1}
            ",
        );
        let proxy = Proxy::start(
            target,
            &bootstrap(&catch_all_filter("limited", ""), &[connections]),
            &[],
        );
        let mut c = proxy.client();
        assert_eq!(c.cmd(&["SET", "cb:k", "v"]), Reply::ok(), "{target}");
        // WATCH needs the client's own upstream connection: a second one to the host.
        let watch = c.cmd(&["WATCH", "cb:k"]);
        let overflow = proxy.stat("cluster.limited.upstream_cx_overflow");
        match target {
            Target::Envoy => {
                assert_eq!(watch, Reply::ok(), "envoy enforces no limit on redis_proxy");
                assert_eq!(overflow, 0);
            }
            Target::Redvoy => {
                assert_eq!(
                    watch,
                    Reply::err("upstream overflow: circuit_breakers max_connections reached")
                );
                assert_eq!(overflow, 1);
                // The pooled connection still serves.
                assert_eq!(c.cmd(&["GET", "cb:k"]), Reply::bulk("v"));
            }
        }
        drop(c);
        drop(proxy);

        let requests = Cluster::new("limited", "RING_HASH", &[redis.port()]).extra(
            "
            circuit_breakers:
              thresholds:
              - {max_requests: 1}
            ",
        );
        let yaml = bootstrap(&catch_all_filter("limited", ""), &[requests])
            .replace("op_timeout: 5s", "op_timeout: 1s");
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut warm = proxy.client();
        assert_eq!(warm.cmd(&["SET", "cb:k", "v"]), Reply::ok(), "{target}");
        redis.signal("-STOP");
        // One request in flight to the hung server...
        let mut hung = proxy.client();
        hung.send(&["GET", "cb:k"]);
        let in_flight = try_wait_for(SETTLE_TIMEOUT, || {
            (proxy.stat("cluster.limited.upstream_rq_active") == 1).then_some(())
        });
        // ...and a second one from another client.
        let started = std::time::Instant::now();
        let second = if in_flight.is_some() {
            warm.cmd(&["GET", "cb:k"])
        } else {
            Reply::err("the first request never went upstream")
        };
        let waited = started.elapsed();
        redis.signal("-CONT");
        let pending_overflow = proxy.stat("cluster.limited.upstream_rq_pending_overflow");
        match target {
            Target::Envoy => {
                // It waited behind the hung one until op_timeout.
                assert_eq!(second, Reply::err("upstream failure"), "envoy");
                assert!(
                    waited >= Duration::from_millis(500),
                    "envoy answered in {waited:?}"
                );
                assert_eq!(pending_overflow, 0);
            }
            Target::Redvoy => {
                assert_eq!(
                    second,
                    Reply::err("upstream overflow: circuit_breakers max_requests reached")
                );
                assert!(
                    waited < Duration::from_millis(500),
                    "redvoy answered in {waited:?}"
                );
                assert_eq!(pending_overflow, 1);
            }
        }
        // The hung request: answered after SIGCONT, or timed out first (Envoy, which waited).
        let first = hung.read_reply();
        assert!(
            first == Reply::bulk("v") || first == Reply::err("upstream failure"),
            "{target}: {first:?}"
        );
    }
}

/// Beyond Envoy: `max_pending_requests` bounds the requests waiting for an upstream connection
/// to open. The host never completes the handshake; five clients send a GET each: Envoy 1.40
/// holds all five until `connect_timeout` (1 s) fails them; redvoy holds two and refuses three
/// at once.
#[test]
fn max_pending_requests_bounds_requests_waiting_for_a_connection_unlike_envoy() {
    let hole = redvoy_test_util::Blackhole::start();
    for target in targets() {
        let cluster = Cluster::new("waiting", "RING_HASH", &[hole.port()]).extra(
            "
            circuit_breakers:
              thresholds:
              - {max_pending_requests: 2}
            ",
        );
        let proxy = Proxy::start(
            target,
            &bootstrap(&catch_all_filter("waiting", ""), &[cluster]),
            &[],
        );
        // Five clients with one GET each: a single client's pipeline would reach the cluster
        // two requests at a time (a new client's in-flight window, see `slow_readers.rs`).
        let mut clients: Vec<_> = (0..5).map(|_| proxy.client()).collect();
        for c in &mut clients {
            c.send(&["GET", "k"]);
        }
        let replies: Vec<Reply> = clients.iter_mut().map(|c| c.read_reply()).collect();
        let count = |text: &str| replies.iter().filter(|r| **r == Reply::err(text)).count();
        let failed = count("upstream failure");
        let refused = count("upstream overflow: circuit_breakers max_pending_requests reached");
        let overflow = proxy.stat("cluster.waiting.upstream_rq_pending_overflow");
        match target {
            Target::Envoy => assert_eq!((failed, refused, overflow), (5, 0, 0), "envoy"),
            Target::Redvoy => assert_eq!((failed, refused, overflow), (2, 3, 3), "redvoy"),
        }
    }
}
