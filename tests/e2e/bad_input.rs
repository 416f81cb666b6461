//! Bad input and bad upstreams: the offending client gets a clear error or a closed
//! connection, every other client keeps working, and the proxy never dies.

use std::io::Write;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use redvoy_test_util::{
    bootstrap, catch_all_filter, free_port, simple_bootstrap, Cluster, Proxy, ReadOutcome,
    RedisServer, Reply, RespClient, Target,
};

use crate::targets;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "no reply yet" is watched for.
const QUIET: Duration = Duration::from_millis(500);

fn protocol_error() -> Reply {
    Reply::err("downstream protocol error")
}

/// Asserts the client gets `-downstream protocol error` and then a close.
fn expect_protocol_error(target: Target, client: &mut RespClient, what: &str) {
    match client.read_outcome(CLOSE_TIMEOUT) {
        ReadOutcome::Frame { reply, .. } => assert_eq!(reply, protocol_error(), "{target}: {what}"),
        other => panic!("{target}: {what}: expected the protocol error reply, got {other:?}"),
    }
    assert!(
        client.wait_closed(CLOSE_TIMEOUT),
        "{target}: {what}: connection not closed"
    );
}

#[test]
fn malformed_resp_closes_only_that_client() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    for target in targets() {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        let mut good = proxy.client();
        assert_eq!(good.cmd(&["SET", "bad:k", "v"]), Reply::ok());
        for garbage in [
            &b"!x\r\n"[..],
            b"*1\r\n$4\r\nPINGxx",
            b"*1\r\n$-7\r\n",
            b"GET \"unbalanced\r\n",
        ] {
            let mut bad = proxy.client();
            // A valid command first, answered before the error.
            let mut bytes = b"*1\r\n$4\r\nPING\r\n".to_vec();
            bytes.extend_from_slice(garbage);
            bad.send_raw(&bytes);
            assert_eq!(bad.read_reply(), Reply::simple("PONG"), "{target}");
            expect_protocol_error(target, &mut bad, &format!("{garbage:?}"));
            assert_eq!(
                good.cmd(&["GET", "bad:k"]),
                Reply::bulk("v"),
                "{target}: other client"
            );
        }
        assert!(proxy.is_running(), "{target} died");
    }
}

#[test]
fn oversized_bulk_and_array_lengths() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    for target in targets() {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        let mut good = proxy.client();
        // Beyond 512 MiB: refused at once.
        let mut over = proxy.client();
        over.send_raw(b"*2\r\n$3\r\nGET\r\n$536870913\r\n");
        expect_protocol_error(target, &mut over, "bulk of 512 MiB + 1");
        // Exactly 512 MiB: waited for (nothing answered, nothing closed yet).
        let mut at_limit = proxy.client();
        at_limit.send_raw(b"*2\r\n$3\r\nGET\r\n$536870912\r\nabc");
        assert!(
            matches!(at_limit.read_outcome(QUIET), ReadOutcome::Timeout { .. }),
            "{target}: a 512 MiB bulk is waited for"
        );
        drop(at_limit);
        // An absurd array length.
        let mut wide = proxy.client();
        wide.send_raw(b"*4294967296\r\n");
        let outcome = wide.read_outcome(CLOSE_TIMEOUT);
        assert!(
            matches!(&outcome, ReadOutcome::Frame { reply, .. } if *reply == protocol_error())
                || matches!(outcome, ReadOutcome::Closed { .. }),
            "{target}: array of 2^32 elements: {outcome:?}"
        );
        assert_eq!(
            good.cmd(&["PING"]),
            Reply::simple("PONG"),
            "{target}: other client"
        );
        assert!(proxy.is_running(), "{target} died");
    }
}

/// A client that writes a lot without reading must not stop other clients.
#[test]
fn client_pipelining_without_reading_does_not_block_others() {
    let redis = RedisServer::start();
    assert_eq!(
        redis.cmd(&["SET", "big", &"x".repeat(16 * 1024)]),
        Reply::ok()
    );
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    for target in targets() {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        let flooder = proxy.client();
        let mut stream = flooder.try_clone_stream().unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        // Each GET asks for 16 KiB; 4,000 of them ask for 64 MiB nobody reads.
        let command = redvoy_test_util::encode_command(&["GET", "big"]);
        let writer = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut written = 0usize;
            while written < 4_000 && Instant::now() < deadline {
                if stream.write_all(&command).is_err() {
                    break; // the proxy stopped reading: fine
                }
                written += 1;
            }
            written
        });
        let mut other = proxy.client();
        for i in 0..20 {
            let key = format!("flood:{i}");
            assert_eq!(
                other.cmd(&["SET", &key, "v"]),
                Reply::ok(),
                "{target}: other client"
            );
            assert_eq!(
                other.cmd(&["GET", &key]),
                Reply::bulk("v"),
                "{target}: other client"
            );
        }
        let written = writer.join().unwrap();
        eprintln!("{target}: flooder wrote {written} GETs");
        drop(flooder);
        assert_eq!(other.cmd(&["PING"]), Reply::simple("PONG"), "{target}");
        assert!(proxy.is_running(), "{target} died");
    }
}

#[test]
fn dead_or_missing_upstreams() {
    let closed_port = free_port();
    let live = RedisServer::start();
    let filter = r#"
        stat_prefix: dead
        settings: {op_timeout: 1s}
        prefix_routes:
          routes:
          - {prefix: "dead:", cluster: dead}
          - {prefix: "empty:", cluster: empty}
          catch_all_route: {cluster: live}
    "#;
    let mut empty = Cluster::new("empty", "MAGLEV", &[]);
    empty.connect_timeout = "0.25s".into();
    let yaml = bootstrap(
        filter,
        &[
            Cluster::new("dead", "MAGLEV", &[closed_port]),
            empty,
            Cluster::new("live", "MAGLEV", &[live.port()]),
        ],
    );
    for target in targets() {
        live.flushall();
        let mut proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        assert_eq!(
            c.cmd(&["GET", "dead:1"]),
            Reply::err("upstream failure"),
            "{target}"
        );
        assert_eq!(
            c.cmd(&["GET", "empty:1"]),
            Reply::err("no upstream host"),
            "{target}"
        );
        assert_eq!(
            c.cmd(&["MGET", "dead:1", "empty:1", "live:1"]),
            Reply::Array(vec![
                Reply::err("upstream failure"),
                Reply::err("no upstream host"),
                Reply::Null
            ]),
            "{target}"
        );
        assert_eq!(c.cmd(&["SET", "live:1", "v"]), Reply::ok(), "{target}");
        assert_eq!(c.cmd(&["GET", "live:1"]), Reply::bulk("v"), "{target}");
        assert_eq!(proxy.stat("redis.dead.command.get.error"), 2, "{target}");
        assert!(proxy.is_running(), "{target} died");
    }
}

/// An upstream that accepts but never answers: `op_timeout` fails the request with
/// `upstream failure`, and later requests get the same (a fresh connection each time).
#[test]
fn silent_upstream_hits_op_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accept and hold connections without answering, until the test ends.
    let holder = thread::spawn(move || {
        let mut held = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && held.len() < 16 {
            match silent.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
        held.len()
    });
    let filter = catch_all_filter("silent", "").replace("op_timeout: 5s", "op_timeout: 0.5s");
    let yaml = bootstrap(&filter, &[Cluster::new("silent", "MAGLEV", &[port])]);
    for target in targets() {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let started = Instant::now();
        assert_eq!(
            c.cmd(&["GET", "k"]),
            Reply::err("upstream failure"),
            "{target}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400),
            "{target}: failed after {took:?}, before op_timeout"
        );
        assert!(took < Duration::from_secs(5), "{target}: took {took:?}");
        assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"), "{target}");
        assert!(proxy.is_running(), "{target} died");
    }
    drop(holder);
}

/// A client that disconnects with requests in flight does not disturb anyone.
#[test]
fn client_disconnect_with_requests_in_flight() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    for target in targets() {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        for _ in 0..5 {
            let mut gone = proxy.client();
            let mut burst = Vec::new();
            for i in 0..200 {
                burst.extend_from_slice(&redvoy_test_util::encode_command(&[
                    "SET",
                    &format!("gone:{i}"),
                    "v",
                ]));
            }
            gone.send_raw(&burst);
            drop(gone);
        }
        let mut c = proxy.client();
        assert_eq!(c.cmd(&["SET", "after", "1"]), Reply::ok(), "{target}");
        assert_eq!(c.cmd(&["GET", "after"]), Reply::bulk("1"), "{target}");
        assert!(proxy.is_running(), "{target} died");
    }
}
