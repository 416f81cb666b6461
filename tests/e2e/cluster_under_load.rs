//! A Redis Cluster changing under load, through redvoy: slots migrating step by step (ASK and
//! MOVED windows) must cost clients nothing, and a killed primary must be served again soon
//! after its replica is promoted, with only Envoy's error strings in between and no request
//! left hanging.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redvoy_test_util::{
    key_slot, redis_cluster_bootstrap, wait_for, Proxy, ReadOutcome, RedisCluster, Reply,
    RespClient, Target,
};

/// Client connections of the load generator.
const CONNECTIONS: usize = 50;
/// Keys each connection cycles through.
const KEYS_PER_CONNECTION: usize = 40;
/// Upper bound on one load run, whatever happens to the cluster.
const LOAD_LIMIT: Duration = Duration::from_secs(90);
/// Longest a request may stay unanswered: op_timeout (2 s) plus slack for a loaded machine.
const REPLY_LIMIT: Duration = Duration::from_secs(6);
/// Slots moved in the resharding test.
const SLOTS_TO_MOVE: usize = 12;
/// Keys per MIGRATE batch: small, so ASK windows stay open for a while.
const MIGRATE_BATCH: usize = 2;

fn redvoy() -> Target {
    Target::Redvoy
}

fn bootstrap(seed: u16, refresh: &str, redirect_threshold: u32) -> String {
    redis_cluster_bootstrap(
        "{op_timeout: 2s, enable_redirection: true}",
        "{cluster: redis_cluster}",
        &format!(
            "{{cluster_refresh_rate: {refresh}, cluster_refresh_timeout: 1s, \
             redirect_refresh_interval: 1s, redirect_refresh_threshold: {redirect_threshold}}}"
        ),
        &[seed],
        "",
    )
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct LoadReport {
    requests: u64,
    /// Error replies, by text.
    errors: Vec<String>,
    /// GETs that returned something other than the value last written.
    stale: Vec<String>,
    /// Requests that got no reply within `REPLY_LIMIT`, or a closed connection.
    hung: u64,
}

/// Runs `CONNECTIONS` clients doing SET then GET on their own keys until `stop` is set (or
/// `LOAD_LIMIT`), each GET checked against the value just written.
struct Load {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    report: Arc<Mutex<LoadReport>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, keys: Vec<Vec<String>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let threads = keys
            .into_iter()
            .map(|mine| {
                let (stop, requests, report) = (
                    Arc::clone(&stop),
                    Arc::clone(&requests),
                    Arc::clone(&report),
                );
                thread::spawn(move || {
                    let started = Instant::now();
                    let mut c = RespClient::connect(port);
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_LIMIT {
                        round += 1;
                        for key in &mine {
                            let value = format!("{key}:{round}");
                            for (args, expect) in [
                                (vec!["SET", key.as_str(), value.as_str()], Reply::ok()),
                                (vec!["GET", key.as_str()], Reply::bulk(&value)),
                            ] {
                                c.send(&args);
                                requests.fetch_add(1, Ordering::Relaxed);
                                let outcome = c.read_outcome(REPLY_LIMIT);
                                let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                                r.requests += 1;
                                match outcome {
                                    ReadOutcome::Frame { reply, .. } if reply == expect => {}
                                    ReadOutcome::Frame {
                                        reply: Reply::Error(e),
                                        ..
                                    } => {
                                        r.errors.push(String::from_utf8_lossy(&e).into_owned());
                                        // After a failed SET the GET may rightly see the old
                                        // value: skip it.
                                        break;
                                    }
                                    ReadOutcome::Frame { reply, .. } => {
                                        r.stale.push(format!("{key}: {reply:?} != {expect:?}"))
                                    }
                                    ReadOutcome::Closed { .. } | ReadOutcome::Timeout { .. } => {
                                        r.hung += 1;
                                        drop(r);
                                        c = RespClient::connect(port);
                                        break;
                                    }
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            requests,
            report,
            threads,
        }
    }

    /// Waits until `n` more requests have been made (the load is really running).
    fn wait_requests(&self, n: u64) {
        let target = self.requests.load(Ordering::Relaxed) + n;
        wait_for(Duration::from_secs(30), "load progress", || {
            (self.requests.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap_or_else(|_| panic!("load thread panicked"));
        }
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *report)
    }
}

fn keys_for(n_connections: usize, prefix: &str) -> Vec<Vec<String>> {
    (0..n_connections)
        .map(|c| {
            (0..KEYS_PER_CONNECTION)
                .map(|k| format!("{prefix}:{c}:{k}"))
                .collect()
        })
        .collect()
}

fn node_id(cluster: &RedisCluster, port: u16) -> String {
    match cluster.cmd(port, &["CLUSTER", "MYID"]) {
        Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("CLUSTER MYID on {port}: {other:?}"),
    }
}

#[test]
fn resharding_under_load_costs_clients_nothing() {
    let mut cluster = RedisCluster::start(3, 1);
    let seed = cluster.ports()[0];
    // A long periodic refresh: any extra discovery round is one the redirections triggered.
    let proxy = Proxy::start(redvoy(), &bootstrap(seed, "60s", 3), &[]);
    let keys = keys_for(CONNECTIONS, "load");
    let all: Vec<&String> = keys.iter().flatten().collect();
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    let (from, to) = (primaries[0], primaries[1]);
    // Slots of `from` that the load uses.
    let mut slots: Vec<u16> = all
        .iter()
        .map(|k| key_slot(k.as_bytes()))
        .filter(|s| cluster.node_for_slot(*s) == from)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots.truncate(SLOTS_TO_MOVE);
    assert_eq!(
        slots.len(),
        SLOTS_TO_MOVE,
        "the load uses too few of {from}'s slots"
    );

    let load = Load::start(proxy.port(), keys.clone());
    load.wait_requests(2_000);
    let attempts_before = proxy.stat("cluster.redis_cluster.update_attempt");
    let (from_id, to_id) = (node_id(&cluster, from), node_id(&cluster, to));
    for slot in &slots {
        let s = slot.to_string();
        assert_eq!(
            cluster.cmd(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]),
            Reply::ok()
        );
        assert_eq!(
            cluster.cmd(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]),
            Reply::ok()
        );
        loop {
            let batch = MIGRATE_BATCH.to_string();
            let Reply::Array(found) = cluster.cmd(from, &["CLUSTER", "GETKEYSINSLOT", &s, &batch])
            else {
                panic!("GETKEYSINSLOT {s}");
            };
            if found.is_empty() {
                break;
            }
            let mut args: Vec<String> = [
                "MIGRATE",
                "127.0.0.1",
                &to.to_string(),
                "",
                "0",
                "5000",
                "KEYS",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            args.extend(found.iter().filter_map(|k| match k {
                Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            // The load keeps writing: a key may have moved already (NOKEY) — the next batch
            // picks up what is left.
            let r = cluster.cmd(from, &refs);
            assert!(
                r == Reply::ok() || r == Reply::simple("NOKEY"),
                "MIGRATE: {r:?}"
            );
            load.wait_requests(200);
        }
        // The new owner learns first, as redis-cli does it.
        for p in [to, from] {
            assert_eq!(
                cluster.cmd(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]),
                Reply::ok()
            );
        }
        for p in cluster.live_ports() {
            if p != to && p != from {
                cluster.cmd(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            }
        }
        load.wait_requests(500);
    }
    cluster.wait_converged(Duration::from_secs(30));
    load.wait_requests(2_000);
    let report = load.finish();
    eprintln!(
        "resharding: {} requests, {} errors, {} stale, {} hung; redirects followed {}, discovery rounds {} -> {}",
        report.requests,
        report.errors.len(),
        report.stale.len(),
        report.hung,
        proxy.stat("cluster.redis_cluster.upstream_internal_redirect_succeeded_total"),
        attempts_before,
        proxy.stat("cluster.redis_cluster.update_attempt"),
    );
    assert!(
        report.errors.is_empty(),
        "errors: {:?}",
        &report.errors[..report.errors.len().min(10)]
    );
    assert!(
        report.stale.is_empty(),
        "stale: {:?}",
        &report.stale[..report.stale.len().min(10)]
    );
    assert_eq!(report.hung, 0);
    assert!(proxy.stat("cluster.redis_cluster.upstream_internal_redirect_succeeded_total") > 0);
    assert_eq!(
        proxy.stat("cluster.redis_cluster.upstream_internal_redirect_failed_total"),
        0
    );
    // Redirections triggered at least one refresh (the periodic one is 60 s away).
    assert!(
        proxy.stat("cluster.redis_cluster.update_attempt") > attempts_before,
        "no refresh was triggered by redirections"
    );
    // Every key is readable with its last value, directly on the node that owns it now.
    let mut c = proxy.client();
    for key in all {
        let Reply::Bulk(v) = c.cmd(&["GET", key]) else {
            panic!("{key} unreadable through the proxy");
        };
        let owner = cluster.primary_for_key(key.as_bytes());
        assert_eq!(
            cluster.cmd(owner, &["GET", key]),
            Reply::Bulk(v),
            "{key} on {owner}"
        );
    }
    // The moved slots are now served by `to` and the proxy sends their keys there directly.
    for slot in &slots {
        assert_eq!(cluster.node_for_slot(*slot), to);
    }
}

#[test]
fn failover_is_served_again_after_the_next_refresh() {
    let mut cluster = RedisCluster::start(3, 1);
    let seed = cluster.ports()[0];
    let refresh = Duration::from_secs(2);
    let proxy = Proxy::start(redvoy(), &bootstrap(seed, "2s", 5), &[]);
    let keys = keys_for(CONNECTIONS, "fo");
    let load = Load::start(proxy.port(), keys.clone());
    load.wait_requests(2_000);

    let victim = cluster.primaries()[1].port;
    let replica = cluster.replicas_of(victim)[0].port;
    // A key the load does not touch, in the victim's slots.
    let victim_key = (0..10_000)
        .map(|i| format!("probe:{i}"))
        .find(|k| cluster.primary_for_key(k.as_bytes()) == victim)
        .unwrap_or_else(|| panic!("no probe key on {victim}"));
    cluster.kill(victim);
    // The replica is promoted after the node timeout; wait until every live node says so, as
    // the proxy may ask any of them.
    wait_for(Duration::from_secs(30), "replica promotion", || {
        (cluster.agreed_primary_for_key(victim_key.as_bytes()) == Some(replica)).then_some(())
    });
    let promoted_at = Instant::now();
    // Served again through the proxy within one refresh period plus a margin.
    let mut c = proxy.client();
    let served = wait_for(
        refresh * 3 + Duration::from_secs(3),
        "the slot range served again",
        || (c.cmd(&["SET", &victim_key, "after"]) == Reply::ok()).then(|| promoted_at.elapsed()),
    );
    load.wait_requests(2_000);
    let report = load.finish();
    let allowed = ["upstream failure", "no upstream host"];
    let unexpected: Vec<&String> = report
        .errors
        .iter()
        .filter(|e| !allowed.contains(&e.as_str()))
        .collect();
    eprintln!(
        "failover: {} requests, {} errors ({} unexpected), {} hung; served again {:?} after promotion",
        report.requests,
        report.errors.len(),
        unexpected.len(),
        report.hung,
        served
    );
    assert!(
        unexpected.is_empty(),
        "unexpected errors: {:?}",
        &unexpected[..unexpected.len().min(10)]
    );
    assert_eq!(report.hung, 0, "requests left without an answer");
    assert!(
        report.stale.is_empty(),
        "stale: {:?}",
        &report.stale[..report.stale.len().min(10)]
    );
    assert!(
        served <= refresh + Duration::from_secs(3),
        "served again only after {served:?}"
    );
    assert_eq!(
        cluster.cmd(replica, &["GET", &victim_key]),
        Reply::bulk("after")
    );
}
