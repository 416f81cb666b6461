//! Oracle comparison: active Redis health checking (`envoy.health_checkers.redis`).
//!
//! Three real redis-servers behind a RING_HASH cluster with a health checker. A killed server
//! is marked `/failed_active_hc` and leaves the ring (keys move exactly as Envoy's rebuilt ring
//! moves them); a restarted one comes back; a SIGSTOPped one is `/failed_active_hc/active_hc_timeout`;
//! with `key`, a server where that key exists fails (maintenance mode). Every row is compared
//! between Envoy 1.40 and redvoy.

use std::collections::BTreeMap;
use std::time::Duration;

use redvoy_test_util::{
    bootstrap, catch_all_filter, redis_cluster_bootstrap, same_on_all_targets, start_servers,
    try_wait_for, Cluster, Proxy, RedisCluster, RedisServer, Reply, Rows, Target,
};

use crate::targets;

const KEYS: usize = 300;
/// Health checks run every 250 ms (before traffic too) and time out after 200 ms: a change
/// shows within a few hundred milliseconds; waits are bounded well above that.
const HEALTH_CHECK: &str = "
health_checks:
- timeout: 0.2s
  interval: 0.25s
  no_traffic_interval: 0.25s
  unhealthy_threshold: 2
  healthy_threshold: 2
  custom_health_check:
    name: envoy.health_checkers.redis
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.health_checkers.redis.v3.Redis
";
const FLAG_WAIT: Duration = Duration::from_secs(15);

/// `/clusters` health flags of cluster `redis`, by server index.
fn flags(proxy: &Proxy, servers: &[RedisServer]) -> BTreeMap<usize, String> {
    cluster_flags(proxy, "redis", servers)
}

/// `/clusters` health flags of `cluster`'s hosts, by server index.
fn cluster_flags(proxy: &Proxy, cluster: &str, servers: &[RedisServer]) -> BTreeMap<usize, String> {
    host_values(proxy, cluster, "health_flags", servers)
}

/// One `/clusters` value (`health_flags`, `rq_total`, ...) of `cluster`'s hosts, by server index.
fn host_values(
    proxy: &Proxy,
    cluster: &str,
    key: &str,
    servers: &[RedisServer],
) -> BTreeMap<usize, String> {
    let body = proxy.admin("GET", "/clusters").body;
    let prefix = format!("{cluster}::127.0.0.1:");
    let separator = format!("::{key}::");
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((port, value)) = rest.split_once(&separator) else {
            continue;
        };
        if let Some(index) = servers.iter().position(|s| s.port().to_string() == port) {
            out.insert(index, value.to_owned());
        }
    }
    out
}

/// Waits (bounded) until every server's flags are as `want` (by index), returning them.
fn wait_flags(proxy: &Proxy, servers: &[RedisServer], want: &[&str]) -> String {
    let want: BTreeMap<usize, String> = want
        .iter()
        .enumerate()
        .map(|(i, f)| (i, (*f).to_owned()))
        .collect();
    let mut last = BTreeMap::new();
    let reached = try_wait_for(FLAG_WAIT, || {
        last = flags(proxy, servers);
        (last == want).then_some(())
    });
    assert!(
        reached.is_some(),
        "{}: health flags are {last:?}, expected {want:?}",
        proxy.target()
    );
    format!("{last:?}")
}

/// `/config_dump?include_eds`: each server's `health_status` in cluster `redis`'s endpoints.
fn dump_health(proxy: &Proxy, servers: &[RedisServer]) -> String {
    let body = proxy.admin("GET", "/config_dump?include_eds").body;
    let dump: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config_dump: {e}"));
    let mut out = BTreeMap::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for endpoints in config["static_endpoint_configs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let cla = &endpoints["endpoint_config"];
            if cla["cluster_name"] != "redis" {
                continue;
            }
            for locality in cla["endpoints"].as_array().into_iter().flatten() {
                for lb in locality["lb_endpoints"].as_array().into_iter().flatten() {
                    let port = lb["endpoint"]["address"]["socket_address"]["port_value"].as_u64();
                    if let Some(i) = servers
                        .iter()
                        .position(|s| Some(u64::from(s.port())) == port)
                    {
                        out.insert(i, lb["health_status"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
        }
    }
    format!("{out:?}")
}

/// SETs every key through the proxy; every SET must succeed (no request goes to a failed host).
fn set_all(proxy: &Proxy, keys: &[String]) {
    let mut client = proxy.client();
    let commands: Vec<Vec<&str>> = keys
        .iter()
        .map(|k| vec!["SET", k.as_str(), k.as_str()])
        .collect();
    for (key, reply) in keys.iter().zip(client.pipeline(&commands)) {
        assert_eq!(reply, Reply::ok(), "{}: SET {key}", proxy.target());
    }
}

/// For every key, the index of the running server holding it.
fn locate(servers: &mut [RedisServer], keys: &[String]) -> Vec<String> {
    let mut holder = vec![String::from("none"); keys.len()];
    for (index, server) in servers.iter_mut().enumerate() {
        if !server.is_running() {
            continue;
        }
        let mut client = server.client();
        let commands: Vec<Vec<&str>> = keys.iter().map(|k| vec!["EXISTS", k.as_str()]).collect();
        for (i, reply) in client.pipeline(&commands).into_iter().enumerate() {
            if reply == Reply::Integer(1) {
                holder[i] = index.to_string();
            }
        }
    }
    holder
}

fn flush_running(servers: &mut [RedisServer]) {
    for server in servers.iter_mut() {
        if server.is_running() {
            server.flushall();
        }
    }
}

fn start(target: Target, servers: &[RedisServer], health_check: &str) -> Proxy {
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let cluster = Cluster::new("redis", "RING_HASH", &ports).extra(health_check);
    let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster]);
    Proxy::start(target, &yaml, &[])
}

#[test]
fn killed_server_leaves_the_ring_and_comes_back_like_envoy() {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("hc:{i}")).collect();
    // The same servers (so the same ports, so the same host hashes) for every target.
    let mut servers = start_servers(3);
    same_on_all_targets(&targets(), |target| {
        flush_running(&mut servers);
        let proxy = start(target, &servers, HEALTH_CHECK);
        let mut rows: Rows = Vec::new();
        let all_healthy = ["healthy", "healthy", "healthy"];
        rows.push(("start".into(), wait_flags(&proxy, &servers, &all_healthy)));
        rows.push((
            "membership_healthy start".into(),
            proxy.stat("cluster.redis.membership_healthy").to_string(),
        ));
        set_all(&proxy, &keys);
        let before = locate(&mut servers, &keys);

        // Killed: marked after unhealthy_threshold failed checks, its keys move.
        servers[1].stop();
        rows.push((
            "killed".into(),
            wait_flags(
                &proxy,
                &servers,
                &["healthy", "/failed_active_hc", "healthy"],
            ),
        ));
        rows.push((
            "membership_healthy killed".into(),
            proxy.stat("cluster.redis.membership_healthy").to_string(),
        ));
        rows.push((
            "health_check.healthy killed".into(),
            proxy.stat("cluster.redis.health_check.healthy").to_string(),
        ));
        rows.push((
            "/config_dump?include_eds health_status killed".into(),
            dump_health(&proxy, &servers),
        ));
        // A key of the killed server is served elsewhere once routing has the change.
        let probe = &keys[before
            .iter()
            .position(|s| s == "1")
            .expect("a key on server 1")];
        let mut client = proxy.client();
        let rerouted = try_wait_for(FLAG_WAIT, || {
            (client.cmd(&["SET", probe, "probe"]) == Reply::ok()).then_some(())
        });
        assert!(
            rerouted.is_some(),
            "{target}: {probe} still fails after the mark"
        );
        flush_running(&mut servers);
        set_all(&proxy, &keys);
        let failed = locate(&mut servers, &keys);
        // Envoy rebuilds the ring over the healthy hosts, which gives each more entries: some
        // keys of healthy hosts move too. The rows compare every key's move with Envoy's.
        for (i, key) in keys.iter().enumerate() {
            assert_ne!(failed[i], "1", "{target}: {key} still on the killed server");
            rows.push((
                format!("{key} placement"),
                format!("{} -> {}", before[i], failed[i]),
            ));
        }

        // Restarted: healthy again after healthy_threshold checks, keys come back (Envoy
        // applies a health change to routing within its 1 s update merge window: poll a key of
        // the restarted server until it lands there).
        servers[1].restart();
        rows.push((
            "restarted".into(),
            wait_flags(&proxy, &servers, &all_healthy),
        ));
        let probe = &keys[before
            .iter()
            .position(|s| s == "1")
            .expect("a key on server 1")];
        let mut client = proxy.client();
        let routed_back = try_wait_for(FLAG_WAIT, || {
            assert_eq!(client.cmd(&["SET", probe, "probe"]), Reply::ok());
            (servers[1].cmd(&["EXISTS", probe]) == Reply::Integer(1)).then_some(())
        });
        assert!(
            routed_back.is_some(),
            "{target}: {probe} never went back to server 1"
        );
        flush_running(&mut servers);
        set_all(&proxy, &keys);
        let back = locate(&mut servers, &keys);
        assert_eq!(before, back, "{target}: placement after the restart");
        for name in [
            "attempt",
            "success",
            "failure",
            "network_failure",
            "passive_failure",
            "verify_cluster",
            "healthy",
            "degraded",
        ] {
            let stat = format!("cluster.redis.health_check.{name}");
            let present = proxy.stats().get(&stat).is_some();
            rows.push((format!("{stat} present"), present.to_string()));
        }
        let failures = proxy.stat("cluster.redis.health_check.network_failure");
        assert!(failures >= 2, "{target}: network_failure {failures}");
        rows
    });
}

#[test]
fn hung_server_is_marked_timed_out_like_envoy() {
    same_on_all_targets(&targets(), |target| {
        let servers = start_servers(3);
        let proxy = start(target, &servers, HEALTH_CHECK);
        let mut rows: Rows = Vec::new();
        wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]);
        // The checker's connections are traffic, as Envoy counts them: one per host, kept.
        let stats = proxy.stats();
        for name in ["upstream_cx_total", "upstream_cx_active"] {
            let stat = format!("cluster.redis.{name}");
            rows.push((
                format!("{name} before traffic"),
                format!("{:?}", stats.get_int(&stat)),
            ));
        }
        let requests = stats
            .get_int("cluster.redis.upstream_rq_total")
            .unwrap_or(0);
        assert!(requests >= 3, "{target}: upstream_rq_total {requests}");
        servers[2].signal("-STOP");
        rows.push((
            "stopped".into(),
            wait_flags(
                &proxy,
                &servers,
                &["healthy", "healthy", "/failed_active_hc/active_hc_timeout"],
            ),
        ));
        servers[2].signal("-CONT");
        rows.push((
            "continued".into(),
            wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]),
        ));
        rows
    });
}

#[test]
fn maintenance_key_fails_its_host_like_envoy() {
    let with_key = HEALTH_CHECK.replace("v3.Redis\n", "v3.Redis\n      key: maint\n");
    same_on_all_targets(&targets(), |target| {
        let servers = start_servers(3);
        let proxy = start(target, &servers, &with_key);
        let mut rows: Rows = Vec::new();
        wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]);
        // Whatever its value: the key's existence is the signal.
        assert_eq!(servers[0].cmd(&["SET", "maint", "0"]), Reply::ok());
        rows.push((
            "key set".into(),
            wait_flags(
                &proxy,
                &servers,
                &["/failed_active_hc", "healthy", "healthy"],
            ),
        ));
        let exists = proxy.stat("cluster.redis.health_check.redis.exists_failure");
        assert!(exists >= 1, "{target}: exists_failure {exists}");
        assert_eq!(servers[0].cmd(&["DEL", "maint"]), Reply::Integer(1));
        rows.push((
            "key deleted".into(),
            wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]),
        ));
        rows
    });
}

/// The event log's lines, normalized: the timestamp out, ports as server indexes; sorted, as
/// hosts checked in the same round log in any order.
fn events(path: &std::path::Path, servers: &[RedisServer]) -> Vec<String> {
    let mut lines = event_lines(path, servers);
    lines.sort();
    lines
}

/// An event log's lines in order, normalized for comparison: the timestamp (checked to be RFC
/// 3339 UTC to the millisecond, no fraction on a whole second) replaced by `T`, server ports
/// (`port_value` or `upstream_url`) by `serverN`, and `secs_since_last_action` values by `N`.
pub(crate) fn event_lines(path: &std::path::Path, servers: &[RedisServer]) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut line = line.to_owned();
            if let Some(start) = line.find("\"timestamp\":\"") {
                let value = start + "\"timestamp\":\"".len();
                if let Some(len) = line[value..].find('"') {
                    let stamp = &line[value..value + len];
                    let shape: String = stamp
                        .chars()
                        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
                        .collect();
                    assert!(
                        shape == "dddd-dd-ddTdd:dd:dd.dddZ" || shape == "dddd-dd-ddTdd:dd:ddZ",
                        "timestamp {stamp}"
                    );
                    line.replace_range(value..value + len, "T");
                }
            }
            if let Some(start) = line.find("\"secs_since_last_action\":\"") {
                let value = start + "\"secs_since_last_action\":\"".len();
                if let Some(len) = line[value..].find('"') {
                    assert!(line[value..value + len].bytes().all(|b| b.is_ascii_digit()));
                    line.replace_range(value..value + len, "N");
                }
            }
            for (i, s) in servers.iter().enumerate() {
                line = line
                    .replace(
                        &format!("\"port_value\":{}", s.port()),
                        &format!("\"port_value\":\"server{i}\""),
                    )
                    .replace(
                        &format!("\"upstream_url\":\"127.0.0.1:{}\"", s.port()),
                        &format!("\"upstream_url\":\"server{i}\""),
                    );
            }
            line
        })
        .collect()
}

/// Waits (bounded) until the event log has `count` lines, returning them normalized.
fn wait_events(
    proxy: &Proxy,
    path: &std::path::Path,
    servers: &[RedisServer],
    count: usize,
) -> Vec<String> {
    let mut last = Vec::new();
    let reached = try_wait_for(FLAG_WAIT, || {
        last = events(path, servers);
        (last.len() >= count).then_some(())
    });
    assert!(
        reached.is_some(),
        "{}: {} event lines, expected {count}: {last:#?}",
        proxy.target(),
        last.len()
    );
    last
}

/// A health-checked cluster initialises after every host's first check, so the first requests
/// after start-up already avoid a dead host; every transition is written to `event_log_path`
/// as Envoy writes it.
#[test]
fn first_requests_avoid_a_dead_host_and_events_are_logged_like_envoy() {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("hc-start:{i}")).collect();
    let mut servers = start_servers(3);
    same_on_all_targets(&targets(), |target| {
        if !servers[1].is_running() {
            servers[1].restart();
        }
        flush_running(&mut servers);
        servers[1].stop();
        let log = std::env::temp_dir().join(format!(
            "redvoy-hc-events-{}-{}.log",
            std::process::id(),
            target.name()
        ));
        let _ = std::fs::remove_file(&log);
        let health_check = HEALTH_CHECK.replace(
            "  unhealthy_threshold: 2\n",
            &format!(
                "  unhealthy_threshold: 2\n  event_log_path: {}\n",
                log.display()
            ),
        );
        let proxy = start(target, &servers, &health_check);
        let mut rows: Rows = Vec::new();
        // Right after start: no key goes to the dead server (without the first round, every
        // host would still count as failed and panic mode would use all three).
        set_all(&proxy, &keys);
        rows.push((
            "flags at start".into(),
            format!("{:?}", flags(&proxy, &servers)),
        ));
        for line in wait_events(&proxy, &log, &servers, 3) {
            rows.push(("start event".into(), line));
        }

        servers[1].restart();
        wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]);
        servers[2].signal("-STOP");
        wait_flags(
            &proxy,
            &servers,
            &["healthy", "healthy", "/failed_active_hc/active_hc_timeout"],
        );
        servers[2].signal("-CONT");
        wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]);
        for line in wait_events(&proxy, &log, &servers, 6) {
            rows.push(("event".into(), line));
        }
        let _ = std::fs::remove_file(&log);
        rows
    });
}

/// `envoy.clusters.redis` with a health checker on the real 6-node cluster: a hung replica is
/// failed by its check and PREFER_REPLICA reads of its shard go to the shard's primary (every
/// other shard keeps reading from its replica); once it answers again, reads go back to it.
/// Topology refresh is off (`cluster_refresh_rate` 1 h), so only health checking can move them.
#[test]
fn redis_cluster_hung_replica_sends_prefer_replica_reads_to_the_primary_like_envoy() {
    let mut cluster = RedisCluster::start(3, 1);
    crate::cluster_routing::replicate_something(&mut cluster);
    let health_check: String = HEALTH_CHECK.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = redis_cluster_bootstrap(
        "{op_timeout: 5s, read_policy: PREFER_REPLICA}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s, cluster_refresh_timeout: 1s}",
        &cluster.ports()[..1],
        &health_check,
    );
    let keys: Vec<String> = (0..60).map(|i| format!("hc-rk:{i}")).collect();
    for k in &keys {
        let owner = cluster.primary_for_key(k.as_bytes());
        assert_eq!(cluster.cmd(owner, &["SET", k, "v"]), Reply::ok());
    }
    for k in &keys {
        let replica = cluster.replicas_for_key(k.as_bytes())[0];
        let replicated = try_wait_for(FLAG_WAIT, || {
            let mut rc = cluster.client(replica);
            rc.cmd(&["READONLY"]);
            (rc.cmd(&["GET", k]) == Reply::bulk("v")).then_some(())
        });
        assert!(replicated.is_some(), "{k} never reached replica {replica}");
    }
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    // The hung shard: the first primary's replica.
    let shard = primaries[0];
    let replica = cluster.replicas_of(shard)[0].port;
    let shard_keys = keys
        .iter()
        .filter(|k| cluster.primary_for_key(k.as_bytes()) == shard)
        .count() as u64;
    assert!(shard_keys > 0);
    let name = |port: u16| {
        if port == replica {
            "hung replica".to_owned()
        } else if let Some(i) = primaries.iter().position(|p| *p == port) {
            format!("primary{i}")
        } else {
            "replica".to_owned()
        }
    };
    let mut ports = cluster.ports();
    ports.sort_unstable();
    same_on_all_targets(&targets(), |target| {
        // The previous target's pause may still be flagged by gossip: discovery must see 6.
        cluster.wait_converged(Duration::from_secs(30));
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows: Rows = Vec::new();
        let flags = |proxy: &Proxy| -> Vec<String> {
            let body = proxy.admin("GET", "/clusters").body;
            let mut out: Vec<String> = body
                .lines()
                .filter_map(|l| l.strip_prefix("redis_cluster::127.0.0.1:"))
                .filter_map(|rest| rest.split_once("::health_flags::"))
                .filter_map(|(port, flags)| Some((port.parse::<u16>().ok()?, flags)))
                .map(|(port, flags)| format!("{}={flags}", name(port)))
                .collect();
            out.sort();
            out
        };
        let wait = |proxy: &Proxy, hung: &str| -> Vec<String> {
            let mut last = Vec::new();
            let reached = try_wait_for(FLAG_WAIT, || {
                last = flags(proxy);
                let ok = last.len() == 6
                    && last.iter().all(|f| {
                        if f.starts_with("hung replica=") {
                            f.ends_with(&format!("={hung}"))
                        } else {
                            f.ends_with("=healthy")
                        }
                    });
                ok.then_some(())
            });
            assert!(
                reached.is_some(),
                "{target}: flags {last:?}, hung replica expected {hung}"
            );
            last
        };
        let primary_gets = |cluster: &RedisCluster| -> Vec<u64> {
            primaries
                .iter()
                .map(|p| cluster.server(*p).command_calls("get"))
                .collect()
        };
        let read_all = |proxy: &Proxy| {
            let mut c = proxy.client();
            for k in &keys {
                assert_eq!(c.cmd(&["GET", k]), Reply::bulk("v"), "{target}: GET {k}");
            }
        };
        rows.push(("at start".into(), format!("{:?}", wait(&proxy, "healthy"))));
        let before = primary_gets(&cluster);
        read_all(&proxy);
        let after = primary_gets(&cluster);
        assert_eq!(
            before, after,
            "{target}: reads reached a primary while every replica is healthy"
        );

        cluster.server(replica).signal("-STOP");
        rows.push((
            "replica hung".into(),
            format!("{:?}", wait(&proxy, "/failed_active_hc/active_hc_timeout")),
        ));
        let before = primary_gets(&cluster);
        read_all(&proxy);
        let after = primary_gets(&cluster);
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(moved, vec![shard_keys, 0, 0], "{target}: GETs per primary");
        rows.push(("GETs per primary while hung".into(), format!("{moved:?}")));

        cluster.server(replica).signal("-CONT");
        rows.push((
            "replica back".into(),
            format!("{:?}", wait(&proxy, "healthy")),
        ));
        // Envoy applies a host's return within its 1 s update merge window: poll, bounded.
        let back = try_wait_for(FLAG_WAIT, || {
            let before = primary_gets(&cluster);
            read_all(&proxy);
            (before == primary_gets(&cluster)).then_some(())
        });
        assert!(
            back.is_some(),
            "{target}: reads never went back to the replica"
        );
        rows
    });
}

/// Waits (bounded) until `cluster`'s flags are `want` (server index → flags), returning them.
fn wait_cluster_flags(
    proxy: &Proxy,
    cluster: &str,
    servers: &[RedisServer],
    want: &[(usize, &str)],
) -> String {
    let want: BTreeMap<usize, String> = want.iter().map(|(i, f)| (*i, (*f).to_owned())).collect();
    let mut last = BTreeMap::new();
    let reached = try_wait_for(FLAG_WAIT, || {
        last = cluster_flags(proxy, cluster, servers);
        (last == want).then_some(())
    });
    assert!(
        reached.is_some(),
        "{}: {cluster} flags are {last:?}, expected {want:?}",
        proxy.target()
    );
    format!("{last:?}")
}

/// Bound on one xDS exchange (push → ACK) or a listener opening.
const XDS_WAIT: Duration = Duration::from_secs(15);

/// A proxy fed over ADS: EDS cluster `backend` with a Redis health checker every 250 ms (and
/// `ignore_health_on_host_removal` when asked), `assignment`, and a redis_proxy listener to it
/// (its port returned once open).
fn start_eds(
    target: Target,
    ignore_health_on_host_removal: bool,
    assignment: redvoy_test_util::xds::XdsClusterLoadAssignment,
) -> (redvoy_test_util::AdsServer, Proxy, u16) {
    use redvoy_test_util::xds::{
        eds_cluster, redis_listener, with_redis_health_check, xds_bootstrap, XdsBootstrap,
    };
    use redvoy_test_util::{free_port, port_open, AdsServer, Variant};
    let ads = AdsServer::start_tcp().unwrap_or_else(|e| panic!("test ADS server: {e}"));
    let port = free_port();
    let mut cluster = with_redis_health_check(eds_cluster("backend"), Duration::from_millis(250));
    cluster.ignore_health_on_host_removal = ignore_health_on_host_removal;
    ads.set_messages("c1", &[cluster]);
    ads.set_messages("e1", &[assignment]);
    ads.set_messages("l1", &[redis_listener("l1", port, "backend")]);
    let proxy = Proxy::start(
        target,
        &xds_bootstrap(&ads, &XdsBootstrap::new(Variant::Sotw)),
        &[],
    );
    let listening = try_wait_for(XDS_WAIT, || port_open(port).then_some(()));
    assert!(listening.is_some(), "{target}: the listener never opened");
    (ads, proxy, port)
}

/// An EDS cluster with active health checking: a `health_status` change applies to the host
/// in place (its checking state and counters carry on); a host EDS removes while it passes its
/// checks stays, `/pending_dynamic_removal`, and goes once a check fails it. Compared with
/// Envoy 1.40.
#[test]
fn eds_health_status_and_removal_combine_with_active_checks_like_envoy() {
    use redvoy_test_util::xds::{load_assignment_with_health, XdsHealthStatus};
    let mut servers = start_servers(3);
    same_on_all_targets(&targets(), |target| {
        if !servers[2].is_running() {
            servers[2].restart();
        }
        let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
        let all_healthy: Vec<(u16, XdsHealthStatus)> = ports
            .iter()
            .map(|p| (*p, XdsHealthStatus::Healthy))
            .collect();
        let (ads, proxy, port) = start_eds(
            target,
            false,
            load_assignment_with_health("backend", &all_healthy),
        );
        let mut rows: Rows = Vec::new();
        // LDS starts once the cluster is warm (its first health checks done): the listener
        // serves from its first request.
        let mut client = redvoy_test_util::RespClient::connect(port);
        for i in 0..60 {
            assert_eq!(
                client.cmd(&["SET", &format!("eds-hc:{i}"), "v"]),
                Reply::ok(),
                "{target}"
            );
        }
        let healthy3 = [(0, "healthy"), (1, "healthy"), (2, "healthy")];
        rows.push((
            "start".into(),
            wait_cluster_flags(&proxy, "backend", &servers, &healthy3),
        ));
        let requests = |proxy: &Proxy| -> u64 {
            host_values(proxy, "backend", "rq_total", &servers)
                .get(&1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let before = requests(&proxy);
        assert!(before > 0, "{target}: no request reached server 1");

        let mut eds = all_healthy.clone();
        eds[1].1 = XdsHealthStatus::Unhealthy;
        ads.push(
            "e2",
            &[load_assignment_with_health("backend", &eds)],
            XDS_WAIT,
        );
        rows.push((
            "server 1 UNHEALTHY by EDS".into(),
            wait_cluster_flags(
                &proxy,
                "backend",
                &servers,
                &[(0, "healthy"), (1, "/failed_eds_health"), (2, "healthy")],
            ),
        ));
        ads.push(
            "e3",
            &[load_assignment_with_health("backend", &all_healthy)],
            XDS_WAIT,
        );
        rows.push((
            "server 1 HEALTHY again".into(),
            wait_cluster_flags(&proxy, "backend", &servers, &healthy3),
        ));
        // The same host object: its counters were not reset.
        let after = requests(&proxy);
        assert!(after >= before, "{target}: rq_total {before} -> {after}");

        ads.push(
            "e4",
            &[load_assignment_with_health("backend", &all_healthy[..2])],
            XDS_WAIT,
        );
        rows.push((
            "server 2 removed by EDS, still passing".into(),
            wait_cluster_flags(
                &proxy,
                "backend",
                &servers,
                &[
                    (0, "healthy"),
                    (1, "healthy"),
                    (2, "/pending_dynamic_removal"),
                ],
            ),
        ));
        servers[2].stop();
        rows.push((
            "server 2 failed its checks".into(),
            wait_cluster_flags(
                &proxy,
                "backend",
                &servers,
                &[(0, "healthy"), (1, "healthy")],
            ),
        ));
        let stats = proxy.stats();
        for name in [
            "membership_total",
            "membership_healthy",
            "membership_change",
        ] {
            let stat = format!("cluster.backend.{name}");
            rows.push((name.into(), format!("{:?}", stats.get_int(&stat))));
        }
        rows
    });
}

/// With `ignore_health_on_host_removal`, a host EDS removes goes at once, checks passing or
/// not. Compared with Envoy 1.40.
#[test]
fn ignore_health_on_host_removal_drops_a_removed_host_at_once_like_envoy() {
    use redvoy_test_util::xds::load_assignment;
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    same_on_all_targets(&targets(), |target| {
        let (ads, proxy, _) = start_eds(target, true, load_assignment("backend", &ports));
        let mut rows: Rows = Vec::new();
        rows.push((
            "start".into(),
            wait_cluster_flags(
                &proxy,
                "backend",
                &servers,
                &[(0, "healthy"), (1, "healthy"), (2, "healthy")],
            ),
        ));
        ads.push("e2", &[load_assignment("backend", &ports[..2])], XDS_WAIT);
        rows.push((
            "server 2 removed by EDS".into(),
            format!("{:?}", cluster_flags(&proxy, "backend", &servers)),
        ));
        rows
    });
}

/// Beyond Envoy: in panic mode (two of three servers hung, so routing uses all three), a key
/// whose server is known hung (failed by checks that timed out) gets `upstream failure` at
/// once instead of after `op_timeout`; keys of the healthy server are served. Run on both
/// targets to show the difference: Envoy 1.40 makes the client wait.
#[test]
fn known_hung_host_fails_fast_in_panic_mode_unlike_envoy() {
    let keys: Vec<String> = (0..30).map(|i| format!("ff:{i}")).collect();
    for target in targets() {
        let mut servers = start_servers(3);
        let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
        let cluster = Cluster::new("redis", "RING_HASH", &ports).extra(HEALTH_CHECK);
        let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster])
            .replace("op_timeout: 5s", "op_timeout: 2s");
        let proxy = Proxy::start(target, &yaml, &[]);
        wait_flags(&proxy, &servers, &["healthy", "healthy", "healthy"]);
        set_all(&proxy, &keys);
        let holders = locate(&mut servers, &keys);
        let on = |index: &str| keys.iter().zip(&holders).find(|(_, h)| h.as_str() == index);
        let (Some((hung_key, _)), Some((live_key, _))) = (on("1"), on("0")) else {
            panic!("{target}: no key on server 1 or 0: {holders:?}");
        };
        servers[1].signal("-STOP");
        servers[2].signal("-STOP");
        let timed_out = "/failed_active_hc/active_hc_timeout";
        wait_flags(&proxy, &servers, &["healthy", timed_out, timed_out]);
        let mut client = proxy.client();
        // Envoy applies the second failure within its 1 s update merge window: panic mode
        // shows in `lb_healthy_panic` once a request is routed in it.
        let panicking = try_wait_for(FLAG_WAIT, || {
            assert_eq!(
                client.cmd(&["GET", live_key]),
                Reply::bulk(live_key),
                "{target}"
            );
            (proxy.stat("cluster.redis.lb_healthy_panic") >= 1).then_some(())
        });
        assert!(panicking.is_some(), "{target}: never in panic mode");
        let started = std::time::Instant::now();
        let reply = client.cmd(&["GET", hung_key]);
        let waited = started.elapsed();
        assert_eq!(
            client.cmd(&["GET", live_key]),
            Reply::bulk(live_key),
            "{target}"
        );
        servers[1].signal("-CONT");
        servers[2].signal("-CONT");
        assert_eq!(reply, Reply::err("upstream failure"), "{target}");
        match target {
            Target::Envoy => assert!(
                waited >= Duration::from_millis(1500),
                "envoy answered in {waited:?}"
            ),
            Target::Redvoy => assert!(
                waited < Duration::from_millis(500),
                "redvoy answered in {waited:?}"
            ),
        }
        assert!(
            proxy.stat("cluster.redis.lb_healthy_panic") >= 1,
            "{target}"
        );
    }
}

/// Kills server 1 and restarts it, recording the flags of each state once reached.
fn kill_and_restart(proxy: &Proxy, servers: &mut [RedisServer], rows: &mut Rows) {
    servers[1].stop();
    rows.push((
        "killed".into(),
        wait_flags(proxy, servers, &["healthy", "/failed_active_hc", "healthy"]),
    ));
    servers[1].restart();
    rows.push((
        "restarted".into(),
        wait_flags(proxy, servers, &["healthy", "healthy", "healthy"]),
    ));
}

/// Under steady traffic on the healthy servers' keys, a server is killed, restarted, then hung
/// and continued: not one request for a healthy server's key fails, through Envoy 1.40 or
/// redvoy (keys may move between healthy servers while the ring is rebuilt; a GET of a moved
/// key is a miss, never an error).
#[test]
fn healthy_keys_never_fail_while_a_server_dies_and_hangs_under_load_like_envoy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Bounds of the background load: requests and time.
    const MAX_OPS: usize = 200_000;
    const MAX_TIME: Duration = Duration::from_secs(90);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("load:{i}")).collect();
    let mut servers = start_servers(3);
    same_on_all_targets(&targets(), |target| {
        if !servers[1].is_running() {
            servers[1].restart();
        }
        flush_running(&mut servers);
        let proxy = start(target, &servers, HEALTH_CHECK);
        let all_healthy = ["healthy", "healthy", "healthy"];
        wait_flags(&proxy, &servers, &all_healthy);
        set_all(&proxy, &keys);
        let holders = locate(&mut servers, &keys);
        let healthy_keys: Vec<String> = keys
            .iter()
            .zip(&holders)
            .filter(|(_, h)| h.as_str() != "1")
            .map(|(k, _)| k.clone())
            .collect();
        assert!(!healthy_keys.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let stop = Arc::clone(&stop);
            let mut client = proxy.client();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let (mut ops, mut errors) = (0usize, Vec::new());
                'run: while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_TIME {
                    for key in &healthy_keys {
                        if ops >= MAX_OPS {
                            break 'run;
                        }
                        for reply in client.pipeline(&[vec!["SET", key, "x"], vec!["GET", key]]) {
                            if let Reply::Error(e) = reply {
                                errors.push(format!("{key}: {}", String::from_utf8_lossy(&e)));
                            }
                        }
                        ops += 2;
                    }
                }
                (ops, errors)
            })
        };
        let mut rows: Rows = Vec::new();
        kill_and_restart(&proxy, &mut servers, &mut rows);
        servers[1].signal("-STOP");
        rows.push((
            "hung".into(),
            wait_flags(
                &proxy,
                &servers,
                &["healthy", "/failed_active_hc/active_hc_timeout", "healthy"],
            ),
        ));
        servers[1].signal("-CONT");
        rows.push((
            "continued".into(),
            wait_flags(&proxy, &servers, &all_healthy),
        ));
        stop.store(true, Ordering::Relaxed);
        let (ops, errors) = load
            .join()
            .unwrap_or_else(|_| panic!("{target}: the load thread panicked"));
        assert!(ops > 100, "{target}: only {ops} requests in the background");
        eprintln!("{target}: {ops} background requests");
        rows.push((
            "errors on healthy servers' keys".into(),
            format!("{errors:?}"),
        ));
        rows
    });
}

/// A STRICT_DNS cluster (`localhost`, IPv4) with the Redis health checker: a killed server is
/// failed and comes back after a restart, as with Envoy 1.40.
#[test]
fn strict_dns_cluster_is_health_checked_like_envoy() {
    let mut servers = start_servers(3);
    same_on_all_targets(&targets(), |target| {
        if !servers[1].is_running() {
            servers[1].restart();
        }
        let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
        let cluster = Cluster::new("redis", "RING_HASH", &ports)
            .kind("STRICT_DNS", "localhost")
            .extra(&format!("dns_lookup_family: V4_ONLY\n{HEALTH_CHECK}"));
        let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster]);
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows: Rows = Vec::new();
        let all_healthy = ["healthy", "healthy", "healthy"];
        rows.push(("start".into(), wait_flags(&proxy, &servers, &all_healthy)));
        kill_and_restart(&proxy, &mut servers, &mut rows);
        rows
    });
}

/// `host_degraded_refresh_threshold: 1` on a health-checked Redis Cluster: a replica failed by
/// its checks triggers a topology refresh (`update_attempt` moves although the periodic refresh
/// is an hour away), as Envoy 1.40's `reloadHealthyHostsHelper` does.
#[test]
fn redis_cluster_failed_host_triggers_a_topology_refresh_like_envoy() {
    let mut cluster = RedisCluster::start(3, 1);
    crate::cluster_routing::replicate_something(&mut cluster);
    let health_check: String = HEALTH_CHECK.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = redis_cluster_bootstrap(
        "{op_timeout: 5s}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s, cluster_refresh_timeout: 1s, \
         host_degraded_refresh_threshold: 1, redirect_refresh_interval: 0.1s}",
        &cluster.ports()[..1],
        &health_check,
    );
    let primary = cluster.primaries()[0].port;
    let replica = cluster.replicas_of(primary)[0].port;
    same_on_all_targets(&targets(), |target| {
        cluster.wait_converged(Duration::from_secs(30));
        let proxy = Proxy::start(target, &yaml, &[]);
        let attempts = |proxy: &Proxy| proxy.stat("cluster.redis_cluster.update_attempt");
        let six = try_wait_for(FLAG_WAIT, || {
            (proxy.stat("cluster.redis_cluster.membership_healthy") == 6).then_some(())
        });
        assert!(six.is_some(), "{target}: never 6 healthy hosts");
        let before = attempts(&proxy);
        cluster.server(replica).signal("-STOP");
        let refreshed = try_wait_for(FLAG_WAIT, || (attempts(&proxy) > before).then_some(()));
        cluster.server(replica).signal("-CONT");
        vec![(
            "a refresh after the replica failed its checks".to_owned(),
            refreshed.is_some().to_string(),
        )]
    });
}
