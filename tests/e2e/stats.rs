//! `/stats` after known traffic: the `redis.<stat_prefix>.*` names and values (counters and
//! gauges; histograms by name only) must equal Envoy's, with spot checks of the main ones.
//! Also: one upstream connection per host per worker, seen from the server side.

use std::time::Duration;

use redvoy_test_util::{
    encode_command, same_on_all_targets, simple_bootstrap, wait_for, Proxy, RedisServer, Reply,
    Rows,
};

use crate::targets;

/// Number of clients connected to `redis` (including the one asking).
fn connected_clients(redis: &RedisServer) -> u64 {
    let info = redis.cmd(&["INFO", "clients"]).text().unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info}"))
}

#[test]
fn redis_filter_stats_after_traffic_match_envoy() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut sent = 0usize;
        let mut received = 0usize;
        {
            let mut c1 = proxy.client();
            let mut c2 = proxy.client();
            let mut c3 = proxy.client();
            let commands: Vec<Vec<u8>> = vec![
                encode_command(&["PING"]),
                encode_command(&["SET", "s", "1"]),
                encode_command(&["GET", "s"]),
                encode_command(&["GET", "missing"]),
                encode_command(&["MGET", "s", "missing"]),
                encode_command(&["FOO", "x"]),
                encode_command(&["GET"]),
                b"*0\r\n".to_vec(),
                encode_command(&["DEL", "s", "t"]),
                encode_command(&["ECHO", "hi"]),
                b"PING\r\n".to_vec(),
            ];
            for command in &commands {
                c1.send_raw(command);
                sent += command.len();
                received += c1.read_raw().len();
            }
            for (client, args) in [(&mut c2, ["SET", "a", "b"]), (&mut c3, ["SET", "c", "d"])] {
                let bytes = encode_command(&args);
                client.send_raw(&bytes);
                sent += bytes.len();
                received += client.read_raw().len();
            }
            // One pooled upstream connection serves all three clients (+1: this query).
            assert_eq!(
                connected_clients(&redis),
                2,
                "{target}: upstream connections"
            );
        }
        proxy.wait_stat("redis.redis.downstream_cx_active", 0);
        proxy.wait_stat("redis.redis.downstream_rq_active", 0);
        let stats = proxy.stats();
        let expect = [
            ("downstream_cx_total", 3),
            ("downstream_rq_total", 13),
            ("downstream_cx_protocol_error", 0),
            ("downstream_cx_rx_bytes_total", sent as u64),
            ("downstream_cx_tx_bytes_total", received as u64),
            ("splitter.unsupported_command", 1),
            ("splitter.invalid_request", 2),
            ("command.get.total", 2),
            ("command.get.success", 2),
            ("command.get.error", 0),
            ("command.set.total", 3),
            ("command.mget.total", 1),
            ("command.mget.success", 1),
            ("command.del.total", 1),
            ("command.zadd.total", 0),
        ];
        for (name, value) in expect {
            assert_eq!(
                stats.int(&format!("redis.redis.{name}")),
                value,
                "{target}: redis.redis.{name}"
            );
        }
        stats
            .comparable("redis.redis.")
            .into_iter()
            .collect::<Rows>()
    });
}

/// Gauges go back to zero when clients leave, and `downstream_cx_protocol_error` counts.
#[test]
fn protocol_error_and_active_gauges() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    for target in targets() {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut bad = proxy.client();
        let good = proxy.client();
        proxy.wait_stat("redis.redis.downstream_cx_active", 2);
        bad.send_raw(b"!garbage\r\n");
        assert!(
            bad.wait_closed(Duration::from_secs(5)),
            "{target}: not closed"
        );
        proxy.wait_stat("redis.redis.downstream_cx_protocol_error", 1);
        proxy.wait_stat("redis.redis.downstream_cx_active", 1);
        drop(good);
        proxy.wait_stat("redis.redis.downstream_cx_active", 0);
        wait_for(Duration::from_secs(5), "total", || {
            (proxy.stats().get_int("redis.redis.downstream_cx_total") == Some(2)).then_some(())
        });
        assert_eq!(proxy.client().cmd(&["PING"]), Reply::simple("PONG"));
    }
}

/// With `--concurrency 2`, clients spread over two workers, each with its own pooled upstream
/// connection: the server sees one or two proxy connections, never one per client.
#[test]
fn one_upstream_connection_per_host_per_worker() {
    use redvoy_test_util::ProxyOptions;
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    for target in targets() {
        let options = ProxyOptions {
            concurrency: 2,
            ..ProxyOptions::default()
        };
        let proxy = Proxy::start_with(target, &yaml, &options);
        let mut clients: Vec<_> = (0..16).map(|_| proxy.client()).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            let key = format!("w:{i}");
            assert_eq!(client.cmd(&["SET", &key, "v"]), Reply::ok(), "{target}");
            assert_eq!(client.cmd(&["GET", &key]), Reply::bulk("v"), "{target}");
        }
        let upstream = connected_clients(&redis) - 1;
        assert!(
            (1..=2).contains(&upstream),
            "{target}: {upstream} upstream connections for 16 clients on 2 workers"
        );
        drop(clients);
        proxy.wait_stat("redis.redis.downstream_cx_active", 0);
    }
}
