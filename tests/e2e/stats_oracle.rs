//! The stats oracle (issue 3, "How it is checked"): Envoy 1.40 and redvoy run the same bootstrap
//! and the same scripted traffic (GET, SET, MGET over 3 keys, an unsupported command, a
//! wrong-arity command, a request routed to a down server), then must show
//! (a) the same `redis.*`, `cluster.*`, `listener.*` stat names with the same kinds,
//! (b) the same counter and gauge values for those (deterministic ones),
//! (c) the same `/stats/prometheus` metric names, types and label names,
//! (d) the same listeners and clusters in `/config_dump`.
//!
//! Names are compared with this run's ports replaced by placeholders
//! (`listener.127.0.0.1_{{LISTENER_PORT}}.downstream_cx_total`), see `Proxy::normalize`.
//! Values observed on Envoy and written here are asserted on Envoy, and on redvoy only when
//! Envoy does not run (`expect_eq!`): with both, the row comparison lists every difference.

use std::time::Duration;

use redvoy_test_util::{
    expect_eq, expect_that, free_port, json_leaves, same_on_all_targets, try_wait_for,
    two_cluster_bootstrap, Proxy, RedisServer, Reply, Rows, Target,
};

use crate::targets;

/// Stats redvoy deliberately does not have, each with the reason. A pattern is an exact
/// (normalized) stat name, or a prefix when it ends in `*`. Applies to (a) and (b).
const LEFT_OUT: &[(&str, &str)] = &[];

/// Prometheus metric (sample) names redvoy deliberately does not emit, with the reason; same
/// pattern rules as [`LEFT_OUT`]. Applies to (c).
const LEFT_OUT_PROMETHEUS: &[(&str, &str)] = &[];

/// `/config_dump` leaf paths (prefixes) redvoy deliberately does not reproduce, with the
/// reason. Applies to (d).
const LEFT_OUT_CONFIG_DUMP: &[(&str, &str)] = &[];

/// Stats whose value is not a function of the scripted traffic (names compared in (a), values
/// not in (b)), with the reason. Same pattern rules as [`LEFT_OUT`].
const NONDETERMINISTIC: &[(&str, &str)] = &[];

/// Bound on the proxy accounting for closed connections after the script.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The stat families compared.
const SCOPES: [&str; 3] = ["redis.", "cluster.", "listener."];
/// Their Prometheus counterparts.
const PROMETHEUS_SCOPES: [&str; 3] = ["envoy_redis_", "envoy_cluster_", "envoy_listener_"];

fn matches(patterns: &[(&str, &str)], name: &str) -> bool {
    patterns.iter().any(|(p, _)| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *p,
    })
}

fn in_scope(name: &str) -> bool {
    SCOPES.iter().any(|s| name.starts_with(s)) && !matches(LEFT_OUT, name)
}

/// Two clusters: `redis` (a live redis-server) for every key but `down:*`, and `down` (a port
/// nothing listens on) for `down:*`.
fn oracle_bootstrap(redis: &RedisServer, down_port: u16) -> String {
    two_cluster_bootstrap(redis.port(), down_port)
}

/// Starts `target` and plays the script; returns once every downstream connection is closed
/// and accounted for.
fn run_script(target: Target, yaml: &str, redis: &RedisServer) -> Proxy {
    redis.flushall();
    let proxy = Proxy::start(target, yaml, &[]);
    {
        let mut a = proxy.client();
        let script: [(&[&str], Option<Reply>); 8] = [
            (&["GET", "k1"], Some(Reply::Null)),
            (&["SET", "k1", "v1"], Some(Reply::ok())),
            (&["GET", "k1"], Some(Reply::bulk("v1"))),
            (
                &["MGET", "k1", "k2", "k3"],
                Some(Reply::Array(vec![
                    Reply::bulk("v1"),
                    Reply::Null,
                    Reply::Null,
                ])),
            ),
            // Unsupported: an error reply whose text other tests check.
            (&["FOO", "x"], None),
            // Wrong arity.
            (&["GET"], Some(Reply::err("invalid request"))),
            // Routed to the down cluster.
            (&["GET", "down:x"], Some(Reply::err("upstream failure"))),
            (&["SET", "k2", "v2"], Some(Reply::ok())),
        ];
        for (args, expected) in script {
            let reply = a.cmd(args);
            match expected {
                Some(expected) => expect_eq!(target, reply, expected, "{target}: {args:?}"),
                None => expect_that!(target, reply.is_error(), "{target}: {args:?} -> {reply:?}"),
            }
        }
        let mut b = proxy.client();
        let reply_b = b.cmd(&["SET", "k3", "v3"]);
        expect_eq!(target, reply_b, Reply::ok(), "{target}");
    }
    // Wait until the closes are accounted for. A stat that never gets there (or is missing)
    // is reported by the comparison, not here.
    let listener = format!("listener.127.0.0.1_{}.downstream_cx_active", proxy.port());
    for (name, value) in [
        ("redis.redis.downstream_cx_active", 0),
        ("redis.redis.downstream_rq_active", 0),
        (listener.as_str(), 0),
        ("redis.redis.downstream_cx_total", 2),
    ] {
        let reached = try_wait_for(SETTLE_TIMEOUT, || {
            (proxy.stats().get_int(name) == Some(value)).then_some(())
        });
        if reached.is_none() {
            eprintln!("{target}: {name} did not reach {value} within {SETTLE_TIMEOUT:?}");
        }
    }
    proxy
}

/// (a) The same stat names, with the same kinds.
#[test]
fn stat_names_and_kinds_match_envoy() {
    let redis = RedisServer::start();
    let yaml = oracle_bootstrap(&redis, free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = run_script(target, &yaml, &redis);
        let kinds = proxy.stat_kinds();
        let rows: Rows = kinds
            .into_iter()
            .filter(|(name, _)| in_scope(name))
            .collect();
        expect_that!(
            target,
            rows.iter()
                .any(|(n, k)| n == "redis.redis.command.get.total" && k == "counter"),
            "{target}: /stats?type=Counters lacks redis.redis.command.get.total"
        );
        rows
    });
}

/// (b) The same values for every `redis.*`, `cluster.*` and `listener.*` (but the admin
/// listener's) counter and gauge, plus spot checks against the values Envoy shows.
#[test]
fn counter_and_gauge_values_after_the_script_match_envoy() {
    let redis = RedisServer::start();
    let yaml = oracle_bootstrap(&redis, free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = run_script(target, &yaml, &redis);
        let stats = proxy.normalized_stats();
        // Observed on Envoy 1.40 after this script.
        let expected = [
            ("redis.redis.downstream_cx_total", 2),
            ("redis.redis.downstream_rq_total", 9),
            ("redis.redis.splitter.unsupported_command", 1),
            ("redis.redis.splitter.invalid_request", 1),
            ("redis.redis.command.get.total", 3),
            ("redis.redis.command.get.success", 2),
            ("redis.redis.command.get.error", 1),
            ("redis.redis.command.set.total", 3),
            ("redis.redis.command.mget.total", 1),
            ("redis.redis.command.mget.success", 1),
            ("cluster.redis.upstream_cx_total", 1),
            ("cluster.redis.upstream_cx_active", 1),
            // GET, SET, GET, 3 MGET fragments, SET, SET.
            ("cluster.redis.upstream_rq_total", 8),
            ("cluster.redis.upstream_rq_active", 0),
            // Envoy's Redis client does not account upstream bytes.
            ("cluster.redis.upstream_cx_rx_bytes_total", 0),
            ("cluster.redis.upstream_cx_tx_bytes_total", 0),
            ("cluster.down.upstream_cx_total", 1),
            ("cluster.down.upstream_cx_connect_fail", 1),
            ("cluster.down.upstream_cx_destroy_remote_with_active_rq", 1),
            ("cluster.down.upstream_rq_total", 1),
            (
                "listener.127.0.0.1_{{LISTENER_PORT}}.downstream_cx_total",
                2,
            ),
            (
                "listener.127.0.0.1_{{LISTENER_PORT}}.worker_0.downstream_cx_total",
                2,
            ),
        ];
        for (name, value) in expected {
            expect_eq!(target, stats.get_int(name), Some(value), "{target}: {name}");
        }
        stats
            .values
            .into_iter()
            .filter(|(name, _)| {
                in_scope(name)
                    && !name.starts_with("listener.admin.")
                    && !matches(NONDETERMINISTIC, name)
            })
            .filter(|(_, value)| value.parse::<u64>().is_ok())
            .collect()
    });
}

/// (c) `/stats/prometheus`: the same metric families with the same `# TYPE`, and for every
/// sample name the same label names.
#[test]
fn prometheus_metric_and_label_names_match_envoy() {
    let redis = RedisServer::start();
    let yaml = oracle_bootstrap(&redis, free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = run_script(target, &yaml, &redis);
        let prom = proxy.prometheus("");
        let in_scope = |name: &str| {
            PROMETHEUS_SCOPES.iter().any(|s| name.starts_with(s))
                && !matches(LEFT_OUT_PROMETHEUS, name)
        };
        let mut rows: Rows = prom
            .families
            .iter()
            .filter(|(family, _)| in_scope(family))
            .map(|(family, kind)| (format!("# TYPE {family}"), kind.clone()))
            .collect();
        rows.extend(
            prom.label_names()
                .into_iter()
                .filter(|(name, _)| in_scope(name))
                .map(|(name, labels)| (format!("labels of {name}"), labels)),
        );
        // Every sample belongs to a typed family.
        let untyped: Vec<&str> = prom
            .samples
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !prom.families.contains_key(prom.family_of(n)))
            .collect();
        rows.push(("samples without a # TYPE".into(), untyped.join(" ")));
        rows
    });
}

/// (d) `/config_dump`: the same sections in the same order, the same listeners and clusters
/// field by field (`last_updated` values ignored), and the same bootstrap but for `node`
/// (build and extension details).
#[test]
fn config_dump_listeners_and_clusters_match_envoy() {
    let redis = RedisServer::start();
    let yaml = oracle_bootstrap(&redis, free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = run_script(target, &yaml, &redis);
        let dump = proxy.admin_json("/config_dump");
        let configs = dump["configs"]
            .as_array()
            .unwrap_or_else(|| panic!("{target}: /config_dump has no `configs` array: {dump}"));
        let type_of =
            |c: &serde_json::Value| c["@type"].as_str().unwrap_or("<no @type>").to_string();
        let mut rows: Rows = vec![(
            "configs @type order".into(),
            configs.iter().map(type_of).collect::<Vec<_>>().join(" "),
        )];
        for config in configs {
            let kind = type_of(config);
            let short = kind.rsplit('.').next().unwrap_or(&kind).to_string();
            let value = match short.as_str() {
                "ClustersConfigDump" | "ListenersConfigDump" => config.clone(),
                "BootstrapConfigDump" => {
                    let mut b = config.clone();
                    if let Some(bootstrap) = b.get_mut("bootstrap").and_then(|v| v.as_object_mut())
                    {
                        bootstrap.remove("node");
                    }
                    b
                }
                _ => continue,
            };
            for (path, leaf) in json_leaves(&value, &["last_updated"]) {
                let path = format!("{short}{path}");
                if !LEFT_OUT_CONFIG_DUMP
                    .iter()
                    .any(|(p, _)| path.starts_with(p))
                {
                    rows.push((path, leaf));
                }
            }
        }
        // `last_updated` is there, as a UTC timestamp, on each static listener and cluster.
        for section in ["static_clusters", "static_listeners"] {
            let stamps: Vec<String> = configs
                .iter()
                .filter_map(|c| c[section].as_array())
                .flatten()
                .map(|entry| match entry["last_updated"].as_str() {
                    Some(t) if t.ends_with('Z') && t.contains('T') => "timestamp".to_string(),
                    _ => format!("bad: {}", entry["last_updated"]),
                })
                .collect();
            rows.push((format!("{section} last_updated"), stamps.join(" ")));
        }
        rows
    });
}
