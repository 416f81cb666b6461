//! Hot swap under load: 50 connections issue SET/GET continuously through a redis_proxy
//! listener while the control plane swaps where the keys go 20 times. No client sees an
//! error or a closed connection, and every key written entirely within one configuration's
//! window is found (directly, on the redis-servers) on the cluster that configuration named.
//!
//! Two ways of swapping, both held to the requirement on redvoy:
//! - the listener's prefix route moves between two clusters (LDS);
//! - the route keeps naming one cluster whose endpoint moves between the servers (CDS).
//!
//! Envoy 1.40 does not meet the requirement (observed): after a listener update existing
//! connections keep the old filter chain, so their keys go to the old cluster, and are
//! drained (some closed); after a cluster update requests in flight on the old upstream
//! connections fail with `-upstream failure`. On Envoy the test asserts only what it meets
//! (route swaps: no error reply; endpoint swaps: no closed connection, no misplaced key) and
//! prints the rest.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redvoy_test_util::ads::TYPE_LISTENER;
use redvoy_test_util::xds::{
    redis_listener_with, redis_proxy, static_cluster, xds_bootstrap, XdsBootstrap, XdsCluster,
    XdsListener,
};
use redvoy_test_util::{
    free_port, try_wait_for, wait_for, AdsServer, Proxy, ReadOutcome, RedisServer, Reply,
    RespClient, Target, Variant,
};

use crate::targets;

/// Concurrent client connections.
const CONNECTIONS: usize = 50;
/// Configuration swaps.
const SWAPS: usize = 20;
/// Bound on the operations of one connection (each is one SET and one GET).
const MAX_OPS_PER_CONNECTION: usize = 5_000;
/// Bound on the whole load phase.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);
/// Writes completed after a swap became visible before the next swap starts, so each
/// configuration's window holds writes.
const WRITES_PER_WINDOW: u64 = 100;
/// Bound on one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one xDS exchange or a swap becoming visible.
const XDS_WAIT: Duration = Duration::from_secs(15);
/// Keys prefix routed by the listener.
const PREFIX: &str = "swap:";

/// What is swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Swap {
    /// The prefix route names cluster `ca` or `cb` (listener update).
    Route,
    /// The route names cluster `hot`, whose endpoint is server A or B (cluster update).
    ClusterEndpoint,
}

/// One write: the key, and the configuration epoch before it started and after it completed
/// (even = configuration `epoch / 2` in force and visible; odd = a swap in flight).
struct Write {
    key: String,
    before: u64,
    after: u64,
}

#[derive(Default)]
struct Outcome {
    writes: Vec<Write>,
    errors: Vec<String>,
    closed: usize,
}

/// Which server (0 = A, 1 = B) configuration `version` sends keys to.
fn server_of(version: u64) -> usize {
    (version % 2) as usize
}

fn listener(swap: Swap, port: u16, version: u64) -> XdsListener {
    let cluster = match swap {
        Swap::Route => ["ca", "cb"][server_of(version)],
        Swap::ClusterEndpoint => "hot",
    };
    redis_listener_with(
        "hot_listener",
        "127.0.0.1",
        port,
        redis_proxy("hot", &[(PREFIX, cluster)], Some("ca")),
    )
}

fn clusters(swap: Swap, servers: &[RedisServer], version: u64) -> Vec<XdsCluster> {
    let mut out = vec![
        static_cluster("ca", &[servers[0].port()]),
        static_cluster("cb", &[servers[1].port()]),
    ];
    if swap == Swap::ClusterEndpoint {
        out.push(static_cluster("hot", &[servers[server_of(version)].port()]));
    }
    out
}

/// Sends one command and reads its reply without panicking.
fn exchange(client: &mut RespClient, args: &[&str]) -> Result<Reply, ReadOutcome> {
    if client
        .try_send_raw(&redvoy_test_util::encode_command(args))
        .is_err()
    {
        return Err(ReadOutcome::Closed {
            pending: Vec::new(),
        });
    }
    match client.read_outcome(REPLY_TIMEOUT) {
        ReadOutcome::Frame { reply, .. } => Ok(reply),
        other => Err(other),
    }
}

/// One load connection: SET/GET unique keys until told to stop or out of budget.
fn load(
    id: usize,
    port: u16,
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    outcome: Arc<Mutex<Outcome>>,
) {
    let mut client = RespClient::connect(port);
    let mut writes = Vec::new();
    let mut errors = Vec::new();
    let mut closed = 0;
    let started = Instant::now();
    for i in 0..MAX_OPS_PER_CONNECTION {
        if stop.load(Ordering::SeqCst) || started.elapsed() > LOAD_DEADLINE {
            break;
        }
        let key = format!("{PREFIX}{id}:{i}");
        let before = epoch.load(Ordering::SeqCst);
        let set = exchange(&mut client, &["SET", &key, &key]);
        let get = exchange(&mut client, &["GET", &key]);
        let after = epoch.load(Ordering::SeqCst);
        match (set, get) {
            (Err(ReadOutcome::Closed { .. }), _) | (_, Err(ReadOutcome::Closed { .. })) => {
                closed += 1;
                break;
            }
            (Ok(set), Ok(get)) if set == Reply::ok() && !get.is_error() => {
                // A GET not finding the value is an error only if no swap happened between
                // the SET and the GET (otherwise they may go to different servers).
                if get != Reply::bulk(&key) && before == after && before.is_multiple_of(2) {
                    errors.push(format!("{key}: lost write, GET {get:?}"));
                }
                writes.push(Write { key, before, after });
                completed.fetch_add(1, Ordering::SeqCst);
            }
            (set, get) => errors.push(format!("{key}: SET {set:?}, GET {get:?}")),
        }
    }
    let mut outcome = outcome
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    outcome.writes.extend(writes);
    outcome.errors.extend(errors);
    outcome.closed += closed;
}

/// Whether configuration `version` is visible: a probe key lands on its server. Redvoy
/// promises it on an existing connection (`probe`); Envoy only on a new one.
fn probe_lands(
    target: Target,
    probe: &mut RespClient,
    port: u16,
    servers: &[RedisServer],
    version: u64,
    n: &mut u64,
) -> bool {
    *n += 1;
    let key = format!("{PREFIX}probe:{n}");
    let reply = if target == Target::Redvoy {
        exchange(probe, &["SET", &key, "p"])
    } else {
        exchange(&mut RespClient::connect(port), &["SET", &key, "p"])
    };
    assert_eq!(reply, Ok(Reply::ok()), "{target}: probe SET {key}");
    servers[server_of(version)].cmd(&["EXISTS", &key]) == Reply::Integer(1)
}

fn hot_swap(target: Target, swap: Swap) {
    let servers = [RedisServer::start(), RedisServer::start()];
    let server = AdsServer::start_tcp().unwrap_or_else(|e| panic!("ADS: {e}"));
    let port = free_port();
    server.set_messages("c0", &clusters(swap, &servers, 0));
    server.set_messages("l0", &[listener(swap, port, 0)]);
    let proxy = Proxy::start(
        target,
        &xds_bootstrap(&server, &XdsBootstrap::new(Variant::Sotw)),
        &[],
    );
    wait_for(XDS_WAIT, "the listener", || {
        RespClient::try_connect(port).ok().map(|_| ())
    });

    let epoch = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|id| {
            let (epoch, stop, completed, outcome) = (
                epoch.clone(),
                stop.clone(),
                completed.clone(),
                outcome.clone(),
            );
            std::thread::spawn(move || load(id, port, epoch, stop, completed, outcome))
        })
        .collect();

    let mut probe = RespClient::connect(port);
    let mut probes = 0;
    let mut invisible = Vec::new();
    for version in 1..=SWAPS as u64 {
        let mark = completed.load(Ordering::SeqCst);
        wait_for(XDS_WAIT, "writes in the current window", || {
            (completed.load(Ordering::SeqCst) >= mark + WRITES_PER_WINDOW).then_some(())
        });
        epoch.store(2 * version - 1, Ordering::SeqCst);
        let replies = match swap {
            Swap::Route => server.push(
                &format!("l{version}"),
                &[listener(swap, port, version)],
                XDS_WAIT,
            ),
            Swap::ClusterEndpoint => server.push(
                &format!("c{version}"),
                &clusters(swap, &servers, version),
                XDS_WAIT,
            ),
        };
        assert!(
            replies.iter().all(|r| !r.is_nack()),
            "{target}: swap {version} NACKed: {:?}",
            replies.iter().map(|r| r.summary()).collect::<Vec<_>>()
        );
        let visible = try_wait_for(XDS_WAIT, || {
            probe_lands(target, &mut probe, port, &servers, version, &mut probes).then_some(())
        });
        if visible.is_none() {
            invisible.push(version);
        }
        epoch.store(2 * version, Ordering::SeqCst);
    }
    let mark = completed.load(Ordering::SeqCst);
    wait_for(XDS_WAIT, "writes in the last window", || {
        (completed.load(Ordering::SeqCst) >= mark + WRITES_PER_WINDOW).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker
            .join()
            .unwrap_or_else(|_| panic!("a load connection panicked"));
    }

    let outcome = outcome
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let held: Vec<std::collections::HashSet<String>> = servers
        .iter()
        .map(|s| s.keys().into_iter().collect())
        .collect();
    let mut misplaced = Vec::new();
    let mut checked = 0;
    for write in outcome
        .writes
        .iter()
        .filter(|w| w.before == w.after && w.before.is_multiple_of(2))
    {
        let expected = server_of(write.before / 2);
        checked += 1;
        let on_expected = held[expected].contains(&write.key);
        let on_other = held[1 - expected].contains(&write.key);
        if !on_expected || on_other {
            misplaced.push(format!(
                "{} (config {}, on expected: {on_expected}, on the other: {on_other})",
                write.key,
                write.before / 2
            ));
        }
    }
    let lds = server
        .requests()
        .iter()
        .filter(|r| r.type_url == TYPE_LISTENER)
        .count();
    eprintln!(
        "{target} {swap:?}: {} writes, {checked} within one window, {} misplaced, {} errors, {} closed connections, {} swaps never visible, {lds} LDS requests, {probes} probes",
        outcome.writes.len(),
        misplaced.len(),
        outcome.errors.len(),
        outcome.closed,
        invisible.len(),
    );
    if target == Target::Envoy {
        // Envoy 1.40 falls short of the requirement in both modes (observed): after a route
        // swap existing connections keep the old filter chain (their keys go to the old
        // cluster) and are drained, some closed; after an endpoint swap requests in flight on
        // the old upstream connections fail with `-upstream failure`. Only what it meets is
        // asserted; the rest is reported above.
        match swap {
            Swap::Route => assert!(
                outcome.errors.is_empty(),
                "{target}: {:?}",
                &outcome.errors[..outcome.errors.len().min(10)]
            ),
            Swap::ClusterEndpoint => {
                assert_eq!(outcome.closed, 0, "{target}: closed connections");
                assert!(
                    misplaced.is_empty(),
                    "{target}: {:?}",
                    &misplaced[..misplaced.len().min(10)]
                );
            }
        }
        return;
    }
    assert_eq!(
        outcome.closed, 0,
        "{target}: connections closed during the swaps"
    );
    assert!(
        outcome.errors.is_empty(),
        "{target}: {} client-visible errors: {:?}",
        outcome.errors.len(),
        &outcome.errors[..outcome.errors.len().min(10)]
    );
    assert!(
        invisible.is_empty(),
        "{target}: swaps never visible: {invisible:?}"
    );
    assert!(
        checked as u64 >= WRITES_PER_WINDOW,
        "{target}: only {checked} writes fell within one window"
    );
    assert!(
        misplaced.is_empty(),
        "{target}: {} of {checked} keys on the wrong server, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(10)]
    );
    drop(proxy);
}

#[test]
fn route_swapped_between_clusters_under_load() {
    for target in targets() {
        eprintln!("--- running on {target}");
        hot_swap(target, Swap::Route);
    }
}

#[test]
fn cluster_endpoint_swapped_under_load() {
    for target in targets() {
        eprintln!("--- running on {target}");
        hot_swap(target, Swap::ClusterEndpoint);
    }
}
