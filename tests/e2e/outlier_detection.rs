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
/// Envoy writes its event log file at its 10 s flush interval.
const EVENT_WAIT: Duration = Duration::from_secs(25);

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
                settle(&proxy);
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
        let closed_before = proxy.stat("cluster.redis.upstream_cx_destroy_remote");
        servers[2].stop();
        // The proxy sees its idle connection to the stopped server close first (no failure:
        // no request was waiting), so that each GET below is one refused connect; otherwise
        // a GET written into the closing connection races with the close.
        let noticed = try_wait_for(WAIT, || {
            (proxy.stat("cluster.redis.upstream_cx_destroy_remote") > closed_before).then_some(())
        });
        assert!(noticed.is_some(), "{target}: the close was never seen");
        let mut client = proxy.client();
        // Envoy's worker posts each detection to the main thread, which counts it and only
        // then starts the host's counter again; a failure that reaches the worker first is
        // added to the old count, so under load Envoy may see one detection fewer. Waiting
        // for each detection to be counted (3rd failure: consecutive_5xx, 5th: gateway
        // failure, 6th: the second consecutive_5xx) makes the sequence the same every run.
        let detected = |kind: &str| {
            proxy.stat(&format!(
                "cluster.redis.outlier_detection.ejections_detected_{kind}"
            ))
        };
        for failure in 1..=6 {
            assert_eq!(
                client.cmd(&["GET", &key]),
                Reply::err("upstream failure"),
                "{target}"
            );
            let wanted = match failure {
                3 => Some(("consecutive_5xx", 1)),
                5 => Some(("consecutive_gateway_failure", 1)),
                6 => Some(("consecutive_5xx", 2)),
                _ => None,
            };
            if let Some((kind, count)) = wanted {
                let counted = try_wait_for(WAIT, || (detected(kind) >= count).then_some(()));
                assert!(
                    counted.is_some(),
                    "{target}: failure {failure}: {kind} never detected"
                );
            }
        }
        rows.push(("flags".into(), format!("{:?}", flags(&proxy, &servers))));
        outlier_stats(&proxy, &mut rows, "6 failures");
        rows
    });
}

/// Every `cluster.redis.outlier_detection.*` stat, name and value.
fn all_outlier_stats(proxy: &Proxy, rows: &mut Rows, label: &str) {
    // BTreeMap: already sorted by name.
    for (name, value) in proxy
        .stats()
        .values
        .iter()
        .filter(|(n, _)| n.starts_with("cluster.redis.outlier_detection."))
    {
        rows.push((format!("{label} {name}"), value.clone()));
    }
}

/// Starts a proxy whose cluster manager writes the outlier event log to a fresh file.
fn start_logging(
    test: &str,
    target: Target,
    servers: &[RedisServer],
    outlier: &str,
    op_timeout: &str,
) -> (Proxy, std::path::PathBuf) {
    let log = std::env::temp_dir().join(format!(
        "redvoy-outlier-events-{test}-{}-{}.log",
        std::process::id(),
        target.name()
    ));
    let _ = std::fs::remove_file(&log);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let cluster = Cluster::new("redis", "RING_HASH", &ports).extra(outlier);
    let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster])
        .replace("op_timeout: 5s", &format!("op_timeout: {op_timeout}"))
        + &format!(
            "cluster_manager:\n  outlier_detection:\n    event_log_path: {}\n",
            log.display()
        );
    (Proxy::start(target, &yaml, &[]), log)
}

/// Envoy ejects a host on its main thread and only then tells the workers; a GET that
/// reaches the worker before that still goes to the ejected host. One admin request (served
/// by the main thread) after each failure gives that hand-off its turn, so a loaded machine
/// does not count one failure more on Envoy. redvoy ejects before it answers the failure.
fn settle(proxy: &Proxy) {
    proxy.admin("GET", "/ready");
}

/// GETs `key` one request at a time until a reply is not `upstream failure`; the failures.
fn failures_until_rerouted(proxy: &Proxy, key: &str) -> usize {
    let mut client = proxy.client();
    let mut failures = 0;
    let rerouted = try_wait_for(WAIT, || match client.cmd(&["GET", key]) {
        Reply::Error(e) => {
            assert_eq!(e, b"upstream failure", "{}", proxy.target());
            failures += 1;
            settle(proxy);
            None
        }
        _ => Some(()),
    });
    assert!(rerouted.is_some(), "{}: GET never rerouted", proxy.target());
    failures
}

/// Waits (bounded) until the event log has `unejects` lines with `"action":"UNEJECT"`; every
/// line, normalized. Envoy flushes the file every 10 s (`--file-flush-interval-msec`), so the
/// bound is above that.
fn wait_unejects(
    proxy: &Proxy,
    log: &std::path::Path,
    servers: &[RedisServer],
    unejects: usize,
) -> Vec<String> {
    let mut last = Vec::new();
    let done = try_wait_for(EVENT_WAIT, || {
        last = crate::health_check::event_lines(log, servers);
        let seen = last
            .iter()
            .filter(|l| l.contains("\"action\":\"UNEJECT\""))
            .count();
        (seen >= unejects).then_some(())
    });
    assert!(
        done.is_some(),
        "{}: fewer than {unejects} UNEJECTs in {last:#?}",
        proxy.target()
    );
    last
}

/// A killed server with `consecutive_gateway_failure` detected but not enforced (its default
/// enforcing is 0 %) and `consecutive_5xx` enforced: the event log has a non-enforced EJECT for
/// every third failure, the enforced one at the tenth, and the UNEJECT after
/// `base_ejection_time` (while the server is still down: ejection time is all that counts).
#[test]
fn unenforced_detections_and_ejections_are_logged_like_envoy() {
    same_on_all_targets(&targets(), |target| {
        let mut servers = start_servers(3);
        let (proxy, log) = start_logging(
            "unenforced",
            target,
            &servers,
            "outlier_detection: {consecutive_5xx: 10, consecutive_gateway_failure: 3, \
             interval: 0.5s, base_ejection_time: 1s, max_ejection_percent: 100}\n",
            "5s",
        );
        let mut rows: Rows = Vec::new();
        let key = key_on(&proxy, &servers, 1);
        servers[1].stop();
        rows.push((
            "failed GETs".into(),
            failures_until_rerouted(&proxy, &key).to_string(),
        ));
        all_outlier_stats(&proxy, &mut rows, "ejected");
        for line in wait_unejects(&proxy, &log, &servers, 1) {
            rows.push(("event".into(), line));
        }
        let _ = std::fs::remove_file(&log);
        rows
    });
}

/// With `split_external_local_origin_errors`, a hung server's op_timeouts are local-origin
/// failures: ejected as `CONSECUTIVE_LOCAL_ORIGIN_FAILURE`, unejected (as Envoy prints it) with
/// the zero type; a second ejection says how long the host had been back. The deprecated
/// counters (`ejections_total`, `ejections_consecutive_5xx`) stay at zero.
#[test]
fn hung_server_is_a_local_origin_failure_when_split_like_envoy() {
    same_on_all_targets(&targets(), |target| {
        let servers = start_servers(3);
        let (proxy, log) = start_logging(
            "split",
            target,
            &servers,
            "outlier_detection: {split_external_local_origin_errors: true, \
             consecutive_local_origin_failure: 3, interval: 0.5s, base_ejection_time: 1s, \
             max_ejection_percent: 100}\n",
            "0.3s",
        );
        let mut rows: Rows = Vec::new();
        let key = key_on(&proxy, &servers, 1);
        // Envoy applies a host change to routing within its 1 s update merge window, so a
        // change that follows another closely reaches routing late: how many requests fail
        // before a reroute is compared only as "at least the threshold".
        for round in 0..2 {
            servers[1].signal("-STOP");
            let failures = failures_until_rerouted(&proxy, &key);
            assert!(
                failures >= 3,
                "{target}: round {round}: {failures} failures"
            );
            servers[1].signal("-CONT");
            let back = try_wait_for(WAIT, || {
                (proxy.client().cmd(&["GET", &key]) == Reply::bulk("v")).then_some(())
            });
            assert!(
                back.is_some(),
                "{target}: round {round}: the key never came back"
            );
            rows.push((
                format!("round {round}: flags back"),
                format!("{:?}", flags(&proxy, &servers)),
            ));
        }
        all_outlier_stats(&proxy, &mut rows, "after two rounds");
        for line in wait_unejects(&proxy, &log, &servers, 2) {
            rows.push(("event".into(), line));
        }
        let _ = std::fs::remove_file(&log);
        rows
    });
}

/// Two of three servers killed and ejected: below the 50 % panic threshold routing uses every
/// host again (`lb_healthy_panic`), so a dead server's key fails while a live one's is served;
/// with `healthy_panic_threshold: 0` panic mode is off and every key goes to the live server.
/// Compared with Envoy 1.40.
#[test]
fn panic_mode_with_ejected_hosts_and_threshold_zero_like_envoy() {
    let ejecting = "outlier_detection: {consecutive_5xx: 2, interval: 0.5s, \
                    base_ejection_time: 60s, max_ejection_percent: 100}\n";
    let no_panic =
        format!("{ejecting}common_lb_config: {{healthy_panic_threshold: {{value: 0}}}}\n");
    for (label, extra) in [("panic", ejecting.to_owned()), ("threshold 0", no_panic)] {
        same_on_all_targets(&targets(), |target| {
            let mut servers = start_servers(3);
            let proxy = start(target, &servers, &extra);
            let mut rows: Rows = Vec::new();
            let keys: Vec<String> = (0..3).map(|i| key_on(&proxy, &servers, i)).collect();
            servers[1].stop();
            servers[2].stop();
            let mut client = proxy.client();
            // Many keys: once one dead host is ejected the ring is rebuilt and a given key of
            // the other may move to the live host, so only a spread of keys keeps reaching it.
            let spread: Vec<String> = (0..40).map(|i| format!("od-spread:{i}")).collect();
            let both = try_wait_for(WAIT, || {
                for key in &spread {
                    client.cmd(&["GET", key]);
                }
                let f = flags(&proxy, &servers);
                (f.get(&1).map(String::as_str) == Some("/failed_outlier_check")
                    && f.get(&2).map(String::as_str) == Some("/failed_outlier_check"))
                .then_some(())
            });
            assert!(
                both.is_some(),
                "{target} {label}: {:?}",
                flags(&proxy, &servers)
            );
            // Envoy applies the second ejection within its 1 s update merge window (until then
            // its ring has one dead host out, and a live key may even map to the other): wait
            // until requests are routed with both hosts out.
            let settled = try_wait_for(WAIT, || {
                let live_key = client.cmd(&["GET", &keys[0]]);
                let panics = proxy.stat("cluster.redis.lb_healthy_panic");
                let dead_key = client.cmd(&["GET", &keys[1]]);
                let expected = if label == "panic" {
                    panics >= 1 && dead_key == Reply::err("upstream failure")
                } else {
                    dead_key == Reply::Null
                };
                (expected && live_key == Reply::bulk("v")).then_some(())
            });
            assert!(settled.is_some(), "{target} {label}: routing never settled");
            rows.push((
                format!("{label}: a dead server's key"),
                format!("{:?}", client.cmd(&["GET", &keys[1]])),
            ));
            rows.push((
                format!("{label}: a live server's key"),
                format!("{:?}", client.cmd(&["GET", &keys[0]])),
            ));
            rows.push((
                format!("{label}: lb_healthy_panic counted"),
                (proxy.stat("cluster.redis.lb_healthy_panic") > 0).to_string(),
            ));
            rows
        });
    }
}
