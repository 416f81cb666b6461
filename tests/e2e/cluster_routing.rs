//! `envoy.clusters.redis` against a real 6-node Redis Cluster (3 primaries, 3 replicas built
//! with `redis-cli --cluster create`): slot routing checked on the nodes themselves, read
//! policies checked with `INFO commandstats`, and the replies Envoy 1.40 gives to MOVED,
//! CLUSTERDOWN and cross-slot transactions, compared between Envoy and redvoy.

use std::time::Duration;

use redvoy_test_util::{
    key_slot, redis_cluster_bootstrap, same_on_all_targets, wait_for, Proxy, RedisCluster, Reply,
    Rows, Target,
};

use crate::targets;

/// Bound on a cluster settling after a slot move (gossip on a loaded 2-core machine).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

fn default_bootstrap(cluster: &RedisCluster, settings: &str) -> String {
    let seeds: Vec<u16> = cluster.ports().into_iter().take(1).collect();
    redis_cluster_bootstrap(
        settings,
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 1s, cluster_refresh_timeout: 1s}",
        &seeds,
        "",
    )
}

/// Writes a key on every primary so that Redis 7 lists the replicas in `CLUSTER SLOTS`, and
/// waits until each replica has it.
pub(crate) fn replicate_something(cluster: &mut RedisCluster) {
    for p in cluster.primaries() {
        let key = (0..10_000)
            .map(|i| format!("warm:{i}"))
            .find(|k| cluster.primary_for_key(k.as_bytes()) == p.port)
            .unwrap_or_else(|| panic!("no key for primary {}", p.port));
        assert_eq!(cluster.cmd(p.port, &["SET", &key, "1"]), Reply::ok());
        for r in cluster.replicas_of(p.port) {
            let port = r.port;
            wait_for(
                Duration::from_secs(10),
                &format!("{key} on replica {port}"),
                || {
                    let mut c = cluster.client(port);
                    c.cmd(&["READONLY"]);
                    (c.cmd(&["GET", &key]) == Reply::bulk("1")).then_some(())
                },
            );
        }
    }
}

/// `cmdstat_<cmd>` calls on one node.
fn calls(cluster: &RedisCluster, port: u16, cmd: &str) -> u64 {
    let Reply::Bulk(text) = cluster.cmd(port, &["INFO", "commandstats"]) else {
        return 0;
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn keys_land_on_the_primary_that_owns_their_slot() {
    let mut cluster = RedisCluster::start(3, 1);
    let yaml = default_bootstrap(&cluster, "{op_timeout: 5s}");
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    for target in targets() {
        for p in cluster.primaries() {
            cluster.cmd(p.port, &["FLUSHALL"]);
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        for k in &keys {
            assert_eq!(c.cmd(&["SET", k, k]), Reply::ok(), "{target}: SET {k}");
        }
        for k in &keys {
            let owner = cluster.primary_for_key(k.as_bytes());
            assert_eq!(
                cluster.cmd(owner, &["GET", k]),
                Reply::bulk(k),
                "{target}: {k} (slot {}) not on its owner {owner}",
                key_slot(k.as_bytes())
            );
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk(k), "{target}");
        }
        // Hash tags keep keys together; fan-out commands split per slot.
        assert_eq!(c.cmd(&["SET", "{user1}.a", "1"]), Reply::ok());
        assert_eq!(c.cmd(&["SET", "{user1}.b", "2"]), Reply::ok());
        let owner = cluster.primary_for_key(b"user1");
        assert_eq!(cluster.cmd(owner, &["GET", "{user1}.b"]), Reply::bulk("2"));
        let mut mset = vec!["MSET"];
        for k in keys.iter().take(20) {
            mset.push(k);
            mset.push("m");
        }
        assert_eq!(c.cmd(&mset), Reply::ok(), "{target}");
        let mut mget = vec!["MGET"];
        mget.extend(keys.iter().take(20).map(String::as_str));
        assert_eq!(
            c.cmd(&mget),
            Reply::Array(vec![Reply::bulk("m"); 20]),
            "{target}"
        );
        let mut del = vec!["DEL"];
        del.extend(keys.iter().take(20).map(String::as_str));
        assert_eq!(c.cmd(&del), Reply::int(20), "{target}");
        assert_eq!(
            proxy.stat("cluster.redis_cluster.update_success"),
            0,
            "{target}: Envoy leaves update_success at 0 for a redis cluster"
        );
        assert!(proxy.stat("cluster.redis_cluster.update_attempt") >= 1);
        assert_eq!(proxy.stat("cluster.redis_cluster.membership_total") % 3, 0);
    }
}

#[test]
fn replica_read_policy_sends_reads_to_replicas() {
    let mut cluster = RedisCluster::start(3, 1);
    replicate_something(&mut cluster);
    let yaml = default_bootstrap(&cluster, "{op_timeout: 5s, read_policy: REPLICA}");
    let keys: Vec<String> = (0..60).map(|i| format!("rk:{i}")).collect();
    for target in targets() {
        let proxy = Proxy::start(target, &yaml, &[]);
        // The topology must show replicas before REPLICA has hosts.
        wait_for(Duration::from_secs(15), "6 hosts in the topology", || {
            (proxy.stat("cluster.redis_cluster.membership_total") == 6).then_some(())
        });
        let mut c = proxy.client();
        for k in &keys {
            assert_eq!(c.cmd(&["SET", k, "v"]), Reply::ok(), "{target}");
        }
        for k in &keys {
            let owner = cluster.primary_for_key(k.as_bytes());
            let replica = cluster.replicas_for_key(k.as_bytes())[0];
            wait_for(Duration::from_secs(10), "replication", || {
                let mut rc = cluster.client(replica);
                rc.cmd(&["READONLY"]);
                (rc.cmd(&["GET", k]) == Reply::bulk("v")).then_some(())
            });
            let _ = owner;
        }
        let before: Vec<(u16, u64)> = cluster
            .nodes()
            .iter()
            .map(|n| (n.port, calls(&cluster, n.port, "get")))
            .collect();
        for k in &keys {
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk("v"), "{target}: GET {k}");
        }
        let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
        let mut on_replicas = 0;
        for (port, was) in before {
            let now = calls(&cluster, port, "get");
            if primaries.contains(&port) {
                assert_eq!(now, was, "{target}: a GET reached primary {port}");
            } else {
                on_replicas += now - was;
            }
        }
        assert_eq!(on_replicas, keys.len() as u64, "{target}");
    }
}

/// MOVED passed through without redirection and followed with it; CLUSTERDOWN; a cross-slot
/// transaction. Every reply compared between Envoy and redvoy.
#[test]
fn redirection_and_cluster_errors_match_envoy() {
    let mut cluster = RedisCluster::start(3, 1);
    let key = "moved:key";
    let slot = key_slot(key.as_bytes());
    let plain = redis_cluster_bootstrap(
        "{op_timeout: 5s}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s}",
        &cluster.ports()[..1],
        "",
    );
    let redirecting = redis_cluster_bootstrap(
        "{op_timeout: 5s, enable_redirection: true}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s, redirect_refresh_threshold: 0, failure_refresh_threshold: 1}",
        &cluster.ports()[..1],
        "",
    );
    let ports: Vec<u16> = cluster.ports();
    same_on_all_targets(&targets(), |target| {
        let mut rows = Rows::new();
        // Put the slot back on its original owner between targets.
        let home = cluster.node_for_slot(slot);
        let p_plain = Proxy::start(target, &plain, &[]);
        let p_redir = Proxy::start(target, &redirecting, &[]);
        let mut plain_c = p_plain.client();
        let mut redir_c = p_redir.client();
        assert_eq!(plain_c.cmd(&["SET", key, "v"]), Reply::ok());
        // Move the slot behind the proxies' backs.
        let other = cluster
            .primaries()
            .iter()
            .map(|p| p.port)
            .find(|p| *p != home)
            .unwrap();
        move_slot(&mut cluster, slot, home, other);
        let moved = plain_c.cmd(&["GET", key]);
        rows.push((
            "GET without redirection".into(),
            normalise(&format!("{moved:?}"), &ports),
        ));
        let followed = redir_c.cmd(&["GET", key]);
        rows.push(("GET with redirection".into(), format!("{followed:?}")));
        assert_eq!(followed, Reply::bulk("v"), "{target}");
        assert!(
            p_redir.stat("cluster.redis_cluster.upstream_internal_redirect_succeeded_total") >= 1
        );
        // Cross-slot transaction: Envoy routes it by its first key, so the node answers MOVED
        // for the second key and EXECABORT; redvoy refuses the second key with Redis's own
        // CROSSSLOT before it reaches a node (a deliberate difference). Either way nothing
        // commits.
        for (name, c) in [("plain", &mut plain_c), ("redir", &mut redir_c)] {
            let replies: Vec<String> = [
                vec!["MULTI"],
                vec!["SET", "{a}x", "1"],
                vec!["SET", "{b}y", "2"],
                vec!["EXEC"],
            ]
            .iter()
            .map(|args| normalise(&format!("{:?}", c.cmd(args)), &ports))
            .collect();
            let second = match target {
                Target::Envoy => "-MOVED",
                Target::Redvoy => "-CROSSSLOT Keys in request don't hash to the same slot",
            };
            assert!(
                replies[2].starts_with(second),
                "{target} {name}: {replies:?}"
            );
            rows.push((
                format!("{name}: cross-slot MULTI, SET, EXEC"),
                format!("{} {} {}", replies[0], replies[1], replies[3]),
            ));
            assert_eq!(c.cmd(&["GET", "{a}x"]), Reply::Null, "{target}: committed");
        }
        // CLUSTERDOWN: a slot nobody serves.
        let down_key = "down:key";
        let down_slot = key_slot(down_key.as_bytes());
        let owner = cluster.node_for_slot(down_slot);
        for p in cluster.live_ports() {
            cluster.cmd(p, &["CLUSTER", "DELSLOTS", &down_slot.to_string()]);
        }
        let attempts = p_redir.stat("cluster.redis_cluster.update_attempt");
        for (name, c) in [("plain", &mut plain_c), ("redir", &mut redir_c)] {
            let r = c.cmd(&["GET", down_key]);
            rows.push((format!("{name}: GET in an unserved slot"), format!("{r:?}")));
        }
        // With failure_refresh_threshold 1, the CLUSTERDOWN failure triggers a discovery.
        let refreshed = redvoy_test_util::try_wait_for(Duration::from_secs(5), || {
            (p_redir.stat("cluster.redis_cluster.update_attempt") > attempts).then_some(())
        });
        rows.push((
            "refresh after CLUSTERDOWN".into(),
            format!("{}", refreshed.is_some()),
        ));
        // Restore: the owner claims the slot again; gossip tells the others.
        assert_eq!(
            cluster.cmd(owner, &["CLUSTER", "ADDSLOTS", &down_slot.to_string()]),
            Reply::ok()
        );
        cluster.wait_converged(CONVERGE_TIMEOUT);
        move_slot(&mut cluster, slot, other, home);
        rows
    });
}

fn node_id(cluster: &RedisCluster, port: u16) -> String {
    match cluster.cmd(port, &["CLUSTER", "MYID"]) {
        Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("CLUSTER MYID on {port}: {other:?}"),
    }
}

/// Moves one slot (and its keys) from `from` to `to` the way `redis-cli --cluster reshard`
/// does: IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE on every node.
fn move_slot(cluster: &mut RedisCluster, slot: u16, from: u16, to: u16) {
    let s = slot.to_string();
    let from_id = node_id(cluster, from);
    let to_id = node_id(cluster, to);
    assert_eq!(
        cluster.cmd(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]),
        Reply::ok()
    );
    assert_eq!(
        cluster.cmd(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]),
        Reply::ok()
    );
    loop {
        let Reply::Array(keys) = cluster.cmd(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]) else {
            panic!("GETKEYSINSLOT");
        };
        if keys.is_empty() {
            break;
        }
        let mut args: Vec<String> = vec![
            "MIGRATE".into(),
            "127.0.0.1".into(),
            to.to_string(),
            String::new(),
            "0".into(),
            "5000".into(),
            "KEYS".into(),
        ];
        for k in keys {
            if let Reply::Bulk(b) = k {
                args.push(String::from_utf8_lossy(&b).into_owned());
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(cluster.cmd(from, &refs), Reply::ok(), "MIGRATE");
    }
    for p in cluster.live_ports() {
        cluster.cmd(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    }
    cluster.wait_converged(CONVERGE_TIMEOUT);
}

fn normalise(text: &str, ports: &[u16]) -> String {
    let mut out = text.to_string();
    for (i, p) in ports.iter().enumerate() {
        out = out.replace(&format!(":{p}"), &format!(":<node{i}>"));
    }
    out
}

/// Nodes that announce a hostname (`cluster-preferred-endpoint-type hostname`): discovery
/// resolves the names in `CLUSTER SLOTS`, and a MOVED naming a host is followed only through
/// `dns_cache_config`; without one the MOVED is passed through with
/// `upstream_internal_redirect_failed_total`. redvoy only: the Envoy 1.40 wheel's c-ares
/// resolver answers nothing for `localhost` on a machine without a DNS server, so Envoy never
/// leaves warming here.
#[test]
fn hostnames_in_cluster_slots_and_redirections() {
    let mut cluster = RedisCluster::start(3, 1);
    for p in cluster.ports() {
        assert_eq!(
            cluster.cmd(
                p,
                &["CONFIG", "SET", "cluster-announce-hostname", "localhost"]
            ),
            Reply::ok()
        );
        assert_eq!(
            cluster.cmd(
                p,
                &[
                    "CONFIG",
                    "SET",
                    "cluster-preferred-endpoint-type",
                    "hostname"
                ]
            ),
            Reply::ok()
        );
    }
    // Hostnames travel by gossip: until then a node names its peers `?`.
    wait_for(
        Duration::from_secs(20),
        "hostnames in CLUSTER SLOTS",
        || {
            cluster
                .live_ports()
                .iter()
                .all(|p| {
                    let text = format!("{:?}", cluster.cmd(*p, &["CLUSTER", "SLOTS"]));
                    text.contains("localhost") && !text.contains("\"?\"")
                })
                .then_some(())
        },
    );
    let key = "named:key";
    let slot = key_slot(key.as_bytes());
    let v4 = |yaml: String| {
        yaml.replace(
            "    lb_policy: CLUSTER_PROVIDED\n",
            "    lb_policy: CLUSTER_PROVIDED\n    dns_lookup_family: V4_ONLY\n",
        )
    };
    let with_cache = v4(redis_cluster_bootstrap(
        "{op_timeout: 5s, enable_redirection: true, dns_cache_config: {name: moved, dns_lookup_family: V4_ONLY}}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s}",
        &cluster.ports()[..1],
        "",
    ));
    let without_cache = v4(redis_cluster_bootstrap(
        "{op_timeout: 5s, enable_redirection: true}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s}",
        &cluster.ports()[..1],
        "",
    ));
    let home = cluster.node_for_slot(slot);
    let a = Proxy::start(Target::Redvoy, &with_cache, &[]);
    let b = Proxy::start(Target::Redvoy, &without_cache, &[]);
    let (mut ca, mut cb) = (a.client(), b.client());
    assert_eq!(
        ca.cmd(&["SET", key, "v"]),
        Reply::ok(),
        "discovery by hostname"
    );
    assert_eq!(cluster.cmd(home, &["GET", key]), Reply::bulk("v"));
    let other = cluster
        .primaries()
        .iter()
        .map(|p| p.port)
        .find(|p| *p != home)
        .unwrap_or_else(|| panic!("one primary only"));
    move_slot(&mut cluster, slot, home, other);
    assert_eq!(
        ca.cmd(&["GET", key]),
        Reply::bulk("v"),
        "MOVED to localhost:<port> followed"
    );
    assert_eq!(
        a.stat("cluster.redis_cluster.upstream_internal_redirect_succeeded_total"),
        1
    );
    assert_eq!(
        cb.cmd(&["GET", key]),
        Reply::err(&format!("MOVED {slot} localhost:{other}")),
        "no DNS cache: the MOVED is passed through"
    );
    assert_eq!(
        b.stat("cluster.redis_cluster.upstream_internal_redirect_failed_total"),
        1
    );
}

/// Cluster-scope commands on a Redis Cluster reach every primary and are merged as Envoy
/// merges them.
#[test]
fn cluster_scope_commands_match_envoy() {
    let mut cluster = RedisCluster::start(3, 1);
    let yaml = default_bootstrap(&cluster, "{op_timeout: 5s}");
    let ports = cluster.ports();
    same_on_all_targets(&targets(), |target| {
        for p in cluster.primaries() {
            cluster.cmd(p.port, &["FLUSHALL"]);
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        for i in 0..30 {
            assert_eq!(c.cmd(&["SET", &format!("scope:{i}"), "v"]), Reply::ok());
        }
        let keys = match c.cmd(&["KEYS", "scope:*"]) {
            Reply::Array(items) => {
                let mut names: Vec<String> = items.iter().map(|r| format!("{r:?}")).collect();
                names.sort();
                names.join(",")
            }
            other => format!("{other:?}"),
        };
        rows.push(("KEYS scope:* (sorted)".into(), keys));
        for args in [
            vec!["INFO", "keyspace"],
            vec!["CONFIG", "GET", "cluster-enabled"],
            vec!["SCRIPT", "LOAD", "return 1"],
            vec!["FLUSHALL"],
            vec!["KEYS", "*"],
        ] {
            let r = c.cmd(&args);
            rows.push((args.join(" "), normalise(&format!("{r:?}"), &ports)));
        }
        rows
    });
}
