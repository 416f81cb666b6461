//! Oracle comparison: outlier detection (consecutive failures) on a redis_proxy cluster.
//!
//! Three real redis-servers behind a RING_HASH cluster with `outlier_detection`. Requests to a
//! killed server fail until `consecutive_5xx` failures in a row eject it (`/failed_outlier_check`);
//! its keys then go to the other hosts; after `base_ejection_time` it comes back. Redis error
//! replies (WRONGTYPE, ERR) never count. With the default `max_ejection_percent` (10 %), one of
//! three hosts is never ejected (33 % > 10 %): the failure is only counted as an overflow. Every
//! row is compared between Envoy 1.40 and redvoy.

use std::collections::BTreeMap;
use std::time::Duration;

use redvoy_test_util::{
    bootstrap, catch_all_filter, same_on_all_targets, start_servers, try_wait_for, Cluster, Proxy,
    RedisServer, Reply, Rows, Target,
};

use crate::targets;

const EJECTING: &str = "
outlier_detection:
  consecutive_5xx: 3
  interval: 0.5s
  base_ejection_time: 1s
  max_ejection_percent: 100
";
const WAIT: Duration = Duration::from_secs(15);

fn start(target: Target, servers: &[RedisServer], outlier: &str) -> Proxy {
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let cluster = Cluster::new("redis", "RING_HASH", &ports).extra(outlier);
    let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster]);
    Proxy::start(target, &yaml, &[])
}

/// `/clusters` health flags of cluster `redis`, by server index.
fn flags(proxy: &Proxy, servers: &[RedisServer]) -> BTreeMap<usize, String> {
    let body = proxy.admin("GET", "/clusters").body;
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("redis::127.0.0.1:") else {
            continue;
        };
        let Some((port, value)) = rest.split_once("::health_flags::") else {
            continue;
        };
        if let Some(index) = servers.iter().position(|s| s.port().to_string() == port) {
            out.insert(index, value.to_owned());
        }
    }
    out
}

/// A key that the ring puts on server `index` (found by writing through the proxy).
fn key_on(proxy: &Proxy, servers: &[RedisServer], index: usize) -> String {
    let mut client = proxy.client();
    for i in 0..1000 {
        let key = format!("od:{i}");
        assert_eq!(client.cmd(&["SET", &key, "v"]), Reply::ok());
        if servers[index].cmd(&["EXISTS", &key]) == Reply::Integer(1) {
            return key;
        }
    }
    panic!("{}: no key of 1000 lands on server {index}", proxy.target());
}

fn outlier_stats(proxy: &Proxy, rows: &mut Rows, label: &str) {
    let stats = proxy.stats();
    for name in [
        "ejections_active",
        "ejections_enforced_total",
        "ejections_enforced_consecutive_5xx",
        "ejections_detected_consecutive_5xx",
        "ejections_enforced_consecutive_gateway_failure",
        "ejections_detected_consecutive_gateway_failure",
        "ejections_overflow",
        "ejections_total",
    ] {
        let stat = format!("cluster.redis.outlier_detection.{name}");
        rows.push((
            format!("{label} {name}"),
            format!("{:?}", stats.get_int(&stat)),
        ));
    }
}

#[test]
fn dead_server_is_ejected_and_returns_like_envoy() {
    same_on_all_targets(&targets(), |target| {
        let mut servers = start_servers(3);
        let proxy = start(target, &servers, EJECTING);
        let mut rows: Rows = Vec::new();
        let key = key_on(&proxy, &servers, 1);
        // Redis error replies are replies: never an outlier failure.
        let mut client = proxy.client();
        for _ in 0..5 {
            let reply = client.cmd(&["LPUSH", &key, "x"]);
            assert!(
                matches!(&reply, Reply::Error(e) if e.starts_with(b"WRONGTYPE")),
                "{target}: {reply:?}"
            );
        }
        outlier_stats(&proxy, &mut rows, "after errors");
        servers[1].stop();
        // One request at a time: each opens a connection that is refused.
        let mut failures = 0;
        let ejected = try_wait_for(WAIT, || match client.cmd(&["GET", &key]) {
            Reply::Error(e) => {
                assert_eq!(e, b"upstream failure", "{target}");
                failures += 1;
                None
            }
            _ => Some(()),
        });
        assert!(ejected.is_some(), "{target}: GET never rerouted");
        rows.push(("failed GETs before rerouting".into(), failures.to_string()));
        rows.push((
            "flags ejected".into(),
            format!("{:?}", flags(&proxy, &servers)),
        ));
        outlier_stats(&proxy, &mut rows, "ejected");
        // Back after base_ejection_time (checked every interval), flag cleared.
        let back = try_wait_for(WAIT, || {
            (flags(&proxy, &servers).get(&1).map(String::as_str) == Some("healthy")).then_some(())
        });
        assert!(back.is_some(), "{target}: never returned");
        rows.push((
            "ejections_active back".into(),
            format!(
                "{:?}",
                proxy
                    .stats()
                    .get_int("cluster.redis.outlier_detection.ejections_active")
            ),
        ));
        rows
    });
}

#[test]
fn default_max_ejection_percent_never_ejects_one_of_three_like_envoy() {
    same_on_all_targets(&targets(), |target| {
        let mut servers = start_servers(3);
        let proxy = start(
            target,
            &servers,
            "outlier_detection: {consecutive_5xx: 3}\n",
        );
        let mut rows: Rows = Vec::new();
        let key = key_on(&proxy, &servers, 2);
        servers[2].stop();
        let mut client = proxy.client();
        for _ in 0..6 {
            assert_eq!(
                client.cmd(&["GET", &key]),
                Reply::err("upstream failure"),
                "{target}"
            );
        }
        rows.push(("flags".into(), format!("{:?}", flags(&proxy, &servers))));
        outlier_stats(&proxy, &mut rows, "6 failures");
        rows
    });
}
