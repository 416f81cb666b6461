//! Clients that send requests and never read the replies (issue 16): the memory one client
//! makes the proxy hold is bounded by the listener's `per_connection_buffer_limit_bytes`, other
//! clients on the same upstream connection are not slowed, and a client that stays over the
//! limit without reading is closed (`redvoy.redis_proxy.slow_reader_close_timeout_ms`) and
//! counted in `redis.<prefix>.redvoy_downstream_cx_slow_reader_close`.
//!
//! Envoy 1.40 beside it: its redis_proxy ignores the buffer limit and keeps every reply, so two
//! such clients pipelining 100 GETs of a 4 MiB value grow it by hundreds of MiB.

use std::time::{Duration, Instant};

use redvoy_test_util::{
    bootstrap, catch_all_filter, dedent, rss_kib, try_wait_for, Cluster, Proxy, RedisServer, Reply,
    RespClient, Target,
};

use crate::targets;

/// The value every slow reader asks for, 100 times in one pipeline.
const BIG_VALUE: usize = 4 * 1024 * 1024;
const PIPELINE: usize = 100;
/// Slow readers at once on redvoy (the scenario), and on Envoy (enough to show it).
const REDVOY_SLOW_READERS: usize = 20;
const ENVOY_SLOW_READERS: usize = 2;
/// The slow-reader timeout the bootstrap sets (runtime), short for the test.
const CLOSE_TIMEOUT_MS: u64 = 3000;
/// Bounds on the proxy reaching each state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The healthy client's requests while the slow readers hold their replies.
const HEALTHY_REQUESTS: usize = 500;

fn rss_mib(proxy: &Proxy) -> u64 {
    match rss_kib(proxy.pid()) {
        Some(kib) => kib / 1024,
        None => panic!("the proxy is not running"),
    }
}

fn slow_reader(port: u16) -> RespClient {
    let mut client = RespClient::connect(port);
    let mut pipeline = Vec::new();
    for _ in 0..PIPELINE {
        pipeline.extend_from_slice(&redvoy_test_util::encode_command(&["GET", "big"]));
    }
    client.send_raw(&pipeline);
    client
}

/// The healthy client's latencies (sorted) over `HEALTHY_REQUESTS` GETs of a small key.
fn healthy_latencies(port: u16) -> Vec<Duration> {
    let mut client = RespClient::connect(port);
    let mut latencies = Vec::with_capacity(HEALTHY_REQUESTS);
    for _ in 0..HEALTHY_REQUESTS {
        let started = Instant::now();
        assert_eq!(client.cmd(&["GET", "small"]), Reply::bulk("x"));
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

#[test]
fn slow_readers_are_bounded_and_closed() {
    let redis = RedisServer::start();
    let mut admin = redis.client();
    assert_eq!(admin.cmd(&["SET", "small", "x"]), Reply::ok());
    let big = vec![b'v'; BIG_VALUE];
    assert_eq!(admin.cmd(&[b"SET".as_slice(), b"big", &big]), Reply::ok());
    let yaml = format!(
        "{}\n{}",
        dedent(&format!(
            "
            layered_runtime:
              layers:
              - {{name: static, static_layer: {{redvoy.redis_proxy.slow_reader_close_timeout_ms: {CLOSE_TIMEOUT_MS}}}}}
            "
        )),
        bootstrap(
            &catch_all_filter("redis", ""),
            &[Cluster::new("redis", "MAGLEV", &[redis.port()])]
        )
    );
    for target in targets() {
        let proxy = Proxy::start(target, &yaml, &[]);
        // Warm up: the connection pool and the allocator's first arenas.
        let warm = healthy_latencies(proxy.port());
        assert_eq!(warm.len(), HEALTHY_REQUESTS);
        let baseline = rss_mib(&proxy);
        let gets_before = redis.command_calls("get");
        match target {
            Target::Envoy => {
                let readers: Vec<RespClient> = (0..ENVOY_SLOW_READERS)
                    .map(|_| slow_reader(proxy.port()))
                    .collect();
                // Envoy forwards every request and keeps every reply.
                let grown = try_wait_for(SETTLE_TIMEOUT, || {
                    (rss_mib(&proxy) >= baseline + 300).then_some(())
                });
                eprintln!(
                    "envoy: baseline {baseline} MiB, with {ENVOY_SLOW_READERS} slow readers {} MiB",
                    rss_mib(&proxy)
                );
                assert!(
                    grown.is_some(),
                    "envoy: expected its RSS to grow by 300 MiB or more with \
                     {ENVOY_SLOW_READERS} slow readers (baseline {baseline} MiB, now {} MiB)",
                    rss_mib(&proxy)
                );
                drop(readers);
            }
            Target::Redvoy => {
                let mut readers: Vec<RespClient> = (0..REDVOY_SLOW_READERS)
                    .map(|_| slow_reader(proxy.port()))
                    .collect();
                // Every slow reader has had a reply sent upstream.
                let dispatched = try_wait_for(SETTLE_TIMEOUT, || {
                    (redis.command_calls("get") >= gets_before + REDVOY_SLOW_READERS as u64)
                        .then_some(())
                });
                assert!(
                    dispatched.is_some(),
                    "the slow readers' first GETs never reached redis"
                );
                let latencies = healthy_latencies(proxy.port());
                let p99 = latencies[latencies.len() * 99 / 100];
                let held = rss_mib(&proxy);
                let forwarded = redis.command_calls("get") - gets_before - HEALTHY_REQUESTS as u64;
                let closed = try_wait_for(SETTLE_TIMEOUT, || {
                    // Absent from /stats until it first counts.
                    (proxy
                        .stats()
                        .get_int("redis.redis.redvoy_downstream_cx_slow_reader_close")
                        == Some(REDVOY_SLOW_READERS as u64))
                    .then_some(())
                });
                let reader_saw_close = readers
                    .iter_mut()
                    .all(|r| r.read_until_closed(SETTLE_TIMEOUT).is_some());
                drop(readers);
                // A request per poll keeps the allocator ticking: it returns freed pages as it
                // works, not on its own.
                let mut probe = RespClient::connect(proxy.port());
                let released = try_wait_for(SETTLE_TIMEOUT, || {
                    assert_eq!(probe.cmd(&["GET", "small"]), Reply::bulk("x"));
                    let now = rss_mib(&proxy);
                    (now <= baseline + 64).then_some(now)
                });
                drop(probe);
                let after = healthy_latencies(proxy.port());
                eprintln!(
                    "redvoy: baseline {baseline} MiB, with {REDVOY_SLOW_READERS} slow readers \
                     {held} MiB, {forwarded} of their {} GETs forwarded, healthy p99 {p99:?}, \
                     after {released:?} MiB",
                    REDVOY_SLOW_READERS * PIPELINE
                );
                assert!(
                    held < 300,
                    "RSS {held} MiB with slow readers (bound: 300 MiB)"
                );
                assert!(
                    forwarded <= (REDVOY_SLOW_READERS * 4) as u64,
                    "{forwarded} of the slow readers' GETs were forwarded: reading did not stop"
                );
                assert!(
                    p99 < Duration::from_millis(20),
                    "healthy client's p99 {p99:?}"
                );
                assert!(
                    closed.is_some(),
                    "the slow readers were not all closed and counted"
                );
                assert!(reader_saw_close, "a slow reader's connection stayed open");
                assert!(
                    released.is_some(),
                    "RSS stayed at {} MiB after the slow readers left (baseline {baseline} MiB)",
                    rss_mib(&proxy)
                );
                assert_eq!(after.len(), HEALTHY_REQUESTS);
                let all_closed = try_wait_for(SETTLE_TIMEOUT, || {
                    (proxy.stat("redis.redis.downstream_cx_active") == 0).then_some(())
                });
                assert!(all_closed.is_some(), "connections stayed open");
            }
        }
    }
}
