//! The walkthrough in `istio-examples/redis-cluster/`: the EnvoyFilter's patches (a
//! `envoy.clusters.redis` cluster written as a Struct, a write mirror, and redis_proxy with
//! REPLICA reads, redirection and command stats) are taken from the file itself, pointed at a
//! real 6-node Redis Cluster and a standalone mirror on loopback, and run through Envoy and
//! redvoy. Keys must land on their slot's primary and on the mirror; reads must reach replicas
//! only, never the mirror.

use std::time::Duration;

use redvoy_test_util::{start_servers, targets, wait_for, Proxy, RedisCluster, Reply, Target};
use serde_json::{json, Value};

const ENVOY_FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/istio-examples/redis-cluster/envoyfilter-redis-cluster.yaml"
);

fn all_targets() -> Vec<Target> {
    targets(env!("CARGO_BIN_EXE_redvoy"))
}

/// The `patch.value` of every config patch, with its `applyTo`.
fn patches() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(ENVOY_FILTER)
        .unwrap_or_else(|e| panic!("reading {ENVOY_FILTER}: {e}"));
    let doc: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {ENVOY_FILTER}: {e}"));
    assert_eq!(doc["kind"], "EnvoyFilter");
    doc["spec"]["configPatches"]
        .as_array()
        .unwrap_or_else(|| panic!("no configPatches"))
        .iter()
        .map(|p| {
            (
                p["applyTo"].as_str().unwrap_or_default().to_owned(),
                p["patch"]["value"].clone(),
            )
        })
        .collect()
}

/// Points a cluster's endpoints at loopback ports (the file names Kubernetes pods).
fn on_loopback(mut cluster: Value, ports: &[u16]) -> Value {
    let endpoints: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    cluster["load_assignment"]["endpoints"] = json!([{ "lb_endpoints": endpoints }]);
    cluster
}

/// An Envoy bootstrap (JSON, which is YAML too) built from the EnvoyFilter's patches: the two
/// clusters, and a listener whose only filter is the patch that replaces tcp_proxy.
fn bootstrap(cluster_ports: &[u16], mirror_port: u16) -> String {
    let mut clusters = Vec::new();
    let mut filter = None;
    for (apply_to, value) in patches() {
        match apply_to.as_str() {
            "CLUSTER" if value["name"] == "redis-mirror" => {
                clusters.push(on_loopback(value, &[mirror_port]))
            }
            "CLUSTER" => clusters.push(on_loopback(value, cluster_ports)),
            "NETWORK_FILTER" => filter = Some(value),
            other => panic!("unexpected applyTo {other}"),
        }
    }
    let filter = filter.unwrap_or_else(|| panic!("no NETWORK_FILTER patch"));
    let boot = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}},
        "static_resources": {
            "listeners": [{
                "name": "redis",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}},
                "filter_chains": [{"filters": [filter]}],
            }],
            "clusters": clusters,
        }
    });
    serde_json::to_string_pretty(&boot)
        .unwrap_or_default()
        .replacen("\"port_value\": 1", "\"port_value\": {{ADMIN_PORT}}", 1)
        .replacen("\"port_value\": 2", "\"port_value\": {{LISTENER_PORT}}", 1)
}

fn calls(port_cmd: Reply, cmd: &str) -> u64 {
    let Reply::Bulk(text) = port_cmd else {
        return 0;
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("cmdstat_{cmd}:calls="))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn walkthrough_envoyfilter_runs_on_a_real_cluster() {
    let mut cluster = RedisCluster::start(3, 1);
    let mirror = start_servers(1).remove(0);
    // Redis 7 lists replicas in CLUSTER SLOTS only once they replicated something.
    for p in cluster.primaries() {
        let key = (0..10_000)
            .map(|i| format!("warm:{i}"))
            .find(|k| cluster.primary_for_key(k.as_bytes()) == p.port)
            .unwrap_or_else(|| panic!("no key for {}", p.port));
        assert_eq!(cluster.cmd(p.port, &["SET", &key, "1"]), Reply::ok());
    }
    cluster.wait_converged(Duration::from_secs(30));
    let yaml = bootstrap(&cluster.ports(), mirror.port());
    let keys: Vec<String> = (0..40).map(|i| format!("walk:{i}")).collect();
    for target in all_targets() {
        mirror.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        wait_for(Duration::from_secs(20), "replicas in the topology", || {
            (proxy.stat("cluster.custom-redis-cluster.membership_total") == 6).then_some(())
        });
        let mut c = proxy.client();
        for k in &keys {
            assert_eq!(c.cmd(&["SET", k, "v"]), Reply::ok(), "{target}");
        }
        // Writes: on the slot's primary, and mirrored.
        for k in &keys {
            let owner = cluster.primary_for_key(k.as_bytes());
            assert_eq!(
                cluster.cmd(owner, &["GET", k]),
                Reply::bulk("v"),
                "{target}: {k}"
            );
            wait_for(Duration::from_secs(5), "mirror write", || {
                (mirror.cmd(&["GET", k]) == Reply::bulk("v")).then_some(())
            });
            for r in cluster.replicas_for_key(k.as_bytes()) {
                wait_for(Duration::from_secs(10), "replication", || {
                    let mut rc = cluster.client(r);
                    rc.cmd(&["READONLY"]);
                    (rc.cmd(&["GET", k]) == Reply::bulk("v")).then_some(())
                });
            }
        }
        // Reads: replicas only; never the primaries, never the mirror.
        let nodes = cluster.nodes();
        let before: Vec<u64> = nodes
            .iter()
            .map(|n| calls(cluster.cmd(n.port, &["INFO", "commandstats"]), "get"))
            .collect();
        let mirror_before = calls(mirror.cmd(&["INFO", "commandstats"]), "get");
        for k in &keys {
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk("v"), "{target}");
        }
        let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
        let mut on_replicas = 0;
        for (n, was) in nodes.iter().zip(before) {
            let now = calls(cluster.cmd(n.port, &["INFO", "commandstats"]), "get");
            if primaries.contains(&n.port) {
                assert_eq!(now, was, "{target}: a read reached primary {}", n.port);
            } else {
                on_replicas += now - was;
            }
        }
        assert_eq!(on_replicas, keys.len() as u64, "{target}");
        assert_eq!(
            calls(mirror.cmd(&["INFO", "commandstats"]), "get"),
            mirror_before,
            "{target}: reads must not be mirrored"
        );
        // enable_command_stats: per-command upstream stats of both clusters.
        let stats = proxy.stats();
        assert_eq!(
            stats.int("cluster.custom-redis-cluster.redis_cluster.upstream_commands.set.total"),
            keys.len() as u64,
            "{target}"
        );
        assert_eq!(
            stats.int("cluster.custom-redis-cluster.redis_cluster.upstream_commands.get.total"),
            keys.len() as u64,
            "{target}"
        );
        assert_eq!(
            stats.int("cluster.redis-mirror.redis_cluster.upstream_commands.set.total"),
            keys.len() as u64,
            "{target}"
        );
        assert_eq!(
            stats.int("redis.redis_stats.command.set.total"),
            keys.len() as u64,
            "{target}"
        );
    }
}
