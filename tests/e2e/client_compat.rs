//! What real client libraries need and Envoy 1.40 breaks (redvoy only; Envoy's behaviour is
//! named in each test): RESP3 after `HELLO 3`, SCAN over every host with a composite cursor,
//! cluster-wide commands on every host, per-client SELECT and CLIENT.
//!
//! The client-library tests themselves (redis-py, ioredis, redis-cli, redis-benchmark) are in
//! `client_libraries.rs`; these pin the wire behaviour those libraries rely on.

use std::collections::BTreeSet;

use redvoy_test_util::{
    redis_cluster_bootstrap, simple_bootstrap, start_servers, Proxy, RedisCluster, RedisServer,
    Reply, RespClient, Target,
};

fn redvoy() -> Target {
    Target::Redvoy
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Iterates SCAN to the end; panics on a loop that does not end or a malformed page.
fn scan_all(c: &mut RespClient, extra: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    for _ in 0..100_000 {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let reply = c.cmd(&args);
        let Reply::Array(page) = &reply else {
            panic!("SCAN {cursor}: {reply:?}");
        };
        let (Some(next), Some(Reply::Array(batch))) =
            (page.first().and_then(Reply::text), page.get(1))
        else {
            panic!("SCAN {cursor}: {reply:?}");
        };
        keys.extend(batch.iter().filter_map(Reply::text));
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
    panic!("SCAN did not end");
}

fn set_keys(c: &mut RespClient, keys: &[String]) {
    for chunk in keys.chunks(100) {
        let cmds: Vec<Vec<&str>> = chunk.iter().map(|k| vec!["SET", k, k]).collect();
        for reply in c.pipeline(&cmds) {
            assert_eq!(reply, Reply::ok());
        }
    }
}

/// Envoy 1.40 answers `HELLO 3` with NOPROTO. redvoy switches that client to RESP3 and
/// converts its replies by command, while other clients on the same upstream connections
/// keep RESP2.
#[test]
fn hello_3_switches_one_client_to_resp3() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redvoy(), &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
    let mut v3 = proxy.client();
    let mut v2 = proxy.client();
    let hello = v3.cmd(&["HELLO", "3", "SETNAME", "lib3"]);
    let Reply::Map(fields) = &hello else {
        panic!("HELLO 3 -> {hello:?}");
    };
    assert!(
        fields.contains(&(Reply::bulk("proto"), Reply::int(3))),
        "{hello:?}"
    );
    assert_eq!(v3.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("lib3"));
    for cmd in [
        vec!["HSET", "h", "f", "v"],
        vec!["SADD", "s", "m"],
        vec!["ZADD", "z", "1.5", "a", "2", "b"],
    ] {
        v2.cmd(&cmd);
    }
    let cases: &[(&[&str], &str)] = &[
        (&["GET", "missing"], "_\r\n"),
        (&["HGETALL", "h"], "%1\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        (&["SMEMBERS", "s"], "~1\r\n$1\r\nm\r\n"),
        (&["ZSCORE", "z", "a"], ",1.5\r\n"),
        (
            &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
            "*2\r\n*2\r\n$1\r\na\r\n,1.5\r\n*2\r\n$1\r\nb\r\n,2\r\n",
        ),
        (&["MGET", "missing", "h"], "*2\r\n_\r\n-WRONGTYPE"),
        (
            &["CONFIG", "GET", "maxmemory"],
            "%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
        ),
        (&["INCR", "n"], ":1\r\n"),
    ];
    for (args, want) in cases {
        let got = text(&v3.cmd_raw(args));
        assert!(got.starts_with(want), "RESP3 {args:?}: {got:?}");
    }
    let info = v3.cmd(&["INFO", "server"]);
    assert!(
        matches!(&info, Reply::Verbatim(f, body) if f == "txt" && text(body).contains("redis_version")),
        "INFO -> {info:?}"
    );
    // EXEC's reply is converted element by element, each in its command's shape.
    assert_eq!(v3.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(v3.cmd(&["HGETALL", "h"]), Reply::simple("QUEUED"));
    assert_eq!(v3.cmd(&["ZSCORE", "z", "a"]), Reply::simple("QUEUED"));
    assert_eq!(v3.cmd(&["GET", "missing"]), Reply::simple("QUEUED"));
    assert_eq!(
        text(&v3.cmd_raw(&["EXEC"])),
        "*3\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n,1.5\r\n_\r\n"
    );
    // The RESP2 client on the same upstream connection is unaffected.
    assert_eq!(text(&v2.cmd_raw(&["GET", "missing"])), "$-1\r\n");
    assert_eq!(
        text(&v2.cmd_raw(&["HGETALL", "h"])),
        "*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    // HELLO 2 switches back; unknown versions are Redis's NOPROTO.
    assert!(matches!(v3.cmd(&["HELLO", "2"]), Reply::Array(_)));
    assert_eq!(text(&v3.cmd_raw(&["GET", "missing"])), "$-1\r\n");
    assert_eq!(
        v3.cmd(&["HELLO", "4"]),
        Reply::err("NOPROTO unsupported protocol version")
    );
}

/// Envoy 1.40 sends SCAN's cursor to every shard and concatenates the replies (redis-py raises,
/// `redis-cli --scan` exits 1) — or, with RING_HASH, to one server. redvoy walks the hosts one
/// after the other with a composite cursor: every key once, ending with cursor 0.
#[test]
fn scan_returns_every_key_once_on_a_sharded_listener() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let proxy = Proxy::start(redvoy(), &simple_bootstrap("RING_HASH", &ports), &[]);
    let mut c = proxy.client();
    let keys: Vec<String> = (0..600).map(|i| format!("sc:{i}")).collect();
    set_keys(&mut c, &keys);
    c.cmd(&["SET", "other", "x"]);
    for server in &servers {
        assert!(
            matches!(server.cmd(&["DBSIZE"]), Reply::Integer(n) if n > 50),
            "keys not spread over the servers"
        );
    }
    let got = scan_all(&mut c, &["MATCH", "sc:*", "COUNT", "50"]);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a key returned twice");
    assert_eq!(unique, keys.iter().collect::<BTreeSet<_>>());
    assert_eq!(scan_all(&mut c, &["TYPE", "string"]).len(), keys.len() + 1);
    assert_eq!(c.cmd(&["SCAN", "abc"]), Reply::err("ERR invalid cursor"));
    assert_eq!(c.cmd(&["SCAN", "1023"]), Reply::err("ERR invalid cursor"));
}

/// Envoy 1.40 sends cluster-scope commands to one LB pick per "shard", and RING_HASH counts as
/// one shard: `SCRIPT LOAD` reaches one server of three, so EVALSHA fails for two thirds of
/// keys, and DBSIZE is unknown. redvoy sends them to every host.
#[test]
fn cluster_wide_commands_reach_every_server() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let proxy = Proxy::start(redvoy(), &simple_bootstrap("RING_HASH", &ports), &[]);
    let mut c = proxy.client();
    let keys: Vec<String> = (0..90).map(|i| format!("cw:{i}")).collect();
    set_keys(&mut c, &keys);
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::int(keys.len() as i64));
    let Reply::Array(all) = c.cmd(&["KEYS", "cw:*"]) else {
        panic!("KEYS");
    };
    assert_eq!(all.len(), keys.len());
    let sha = match c.cmd(&["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"]) {
        Reply::Bulk(s) => String::from_utf8_lossy(&s).into_owned(),
        other => panic!("SCRIPT LOAD -> {other:?}"),
    };
    for server in &servers {
        assert_eq!(
            server.cmd(&["SCRIPT", "EXISTS", &sha]),
            Reply::Array(vec![Reply::int(1)])
        );
    }
    for key in &keys {
        assert_eq!(
            c.cmd(&["EVALSHA", &sha, "1", key]),
            Reply::bulk(key),
            "{key}"
        );
    }
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha, "0000"]),
        Reply::Array(vec![Reply::int(1), Reply::int(0)])
    );
    // A script one server lacks does not "exist" through the proxy.
    servers[1].cmd(&["SCRIPT", "FLUSH"]);
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha]),
        Reply::Array(vec![Reply::int(0)])
    );
    assert_eq!(c.cmd(&["FLUSHALL"]), Reply::ok());
    for server in &servers {
        assert_eq!(server.cmd(&["DBSIZE"]), Reply::int(0));
    }
    // RANDOMKEY finds the one key wherever it is (Envoy asks one random server).
    assert_eq!(c.cmd(&["RANDOMKEY"]), Reply::Null);
    assert_eq!(c.cmd(&["SET", "lonely", "1"]), Reply::ok());
    for _ in 0..6 {
        assert_eq!(c.cmd(&["RANDOMKEY"]), Reply::bulk("lonely"));
    }
    // CONFIG GET through three servers: one map entry per parameter for a RESP3 client.
    let mut v3 = proxy.client();
    assert!(matches!(v3.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(
        text(&v3.cmd_raw(&["CONFIG", "GET", "maxmemory"])),
        "%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
    );
}

/// Envoy 1.40 sends SELECT over the shared upstream connections, so one client's
/// `SELECT 1` moves every client's keys to db 1. redvoy keeps database 0 for everyone and
/// answers SELECT per client; CLIENT SETNAME/GETNAME/ID/INFO are per client too.
#[test]
fn select_and_client_state_stay_with_their_client() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redvoy(), &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
    let mut a = proxy.client();
    let mut b = proxy.client();
    assert_eq!(a.cmd(&["SELECT", "0"]), Reply::ok());
    let refused = a.cmd(&["SELECT", "1"]);
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with(b"ERR DB index is out of range")),
        "{refused:?}"
    );
    assert_eq!(b.cmd(&["SET", "sel", "b"]), Reply::ok());
    assert_eq!(redis.cmd(&["GET", "sel"]), Reply::bulk("b"), "not in db 0");
    let mut direct = redis.client();
    assert_eq!(direct.cmd(&["SELECT", "1"]), Reply::ok());
    assert_eq!(direct.cmd(&["DBSIZE"]), Reply::int(0));

    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]), Reply::ok());
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("alpha"));
    assert_eq!(b.cmd(&["CLIENT", "GETNAME"]), Reply::Null);
    let (Reply::Integer(id_a), Reply::Integer(id_b)) =
        (a.cmd(&["CLIENT", "ID"]), b.cmd(&["CLIENT", "ID"]))
    else {
        panic!("CLIENT ID");
    };
    assert_ne!(id_a, id_b);
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "mylib"]),
        Reply::ok()
    );
    let info = a.cmd(&["CLIENT", "INFO"]).text().unwrap_or_default();
    assert!(
        info.contains(&format!("id={id_a} "))
            && info.contains("name=alpha")
            && info.contains("lib-name=mylib"),
        "{info}"
    );
    assert_eq!(
        a.cmd(&["CLIENT", "SETNAME", "has space"]),
        Reply::err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    // The upstream connection never got a name.
    let list = redis.cmd(&["CLIENT", "LIST"]).text().unwrap_or_default();
    assert!(!list.contains("name=alpha"), "{list}");
}

/// The same on a Redis Cluster listener: SCAN walks every primary, DBSIZE sums them, and a
/// RESP3 client reads cluster data.
#[test]
fn scan_and_cluster_wide_commands_on_a_redis_cluster() {
    let mut cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(
        redvoy(),
        &redis_cluster_bootstrap(
            "{op_timeout: 5s, enable_redirection: true}",
            "{cluster: redis_cluster}",
            "{cluster_refresh_rate: 60s}",
            &cluster.ports()[..1],
            "",
        ),
        &[],
    );
    let mut c = proxy.client();
    let keys: Vec<String> = (0..600).map(|i| format!("rc:{i}")).collect();
    set_keys(&mut c, &keys);
    for key in keys.iter().step_by(37) {
        let owner = cluster.primary_for_key(key.as_bytes());
        assert_eq!(cluster.cmd(owner, &["GET", key]), Reply::bulk(key), "{key}");
    }
    let got = scan_all(&mut c, &["COUNT", "100"]);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a key returned twice");
    assert_eq!(unique, keys.iter().collect::<BTreeSet<_>>());
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::int(keys.len() as i64));
    let mut v3 = proxy.client();
    assert!(matches!(v3.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(v3.cmd(&["GET", "rc:1"]), Reply::bulk("rc:1"));
    assert_eq!(v3.cmd(&["GET", "rc:none"]), Reply::Null3);
    assert_eq!(v3.cmd(&["MULTI"]), Reply::ok(),);
    assert_eq!(v3.cmd(&["SET", "{t}a", "1"]), Reply::simple("QUEUED"));
    assert_eq!(v3.cmd(&["INCR", "{t}b"]), Reply::simple("QUEUED"));
    assert_eq!(
        v3.cmd(&["SET", "other-slot", "1"]),
        Reply::err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    assert_eq!(
        v3.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(v3.cmd(&["GET", "{t}a"]), Reply::Null3);
}

/// `protocol_version: RESP3` (a field Envoy 1.40's API has): clients must negotiate RESP3
/// with `HELLO 3` before anything else; `HELLO 2`, a bare `HELLO` and other commands before it
/// get NOPROTO.
#[test]
fn protocol_version_resp3_requires_hello_3() {
    let redis = RedisServer::start();
    let yaml = redvoy_test_util::bootstrap(
        &redvoy_test_util::catch_all_filter("redis", "protocol_version: RESP3"),
        &[redvoy_test_util::Cluster::new(
            "redis",
            "MAGLEV",
            &[redis.port()],
        )],
    );
    let proxy = Proxy::start(redvoy(), &yaml, &[]);
    let mut c = proxy.client();
    let noproto = Reply::err("NOPROTO unsupported protocol version");
    assert_eq!(c.cmd(&["GET", "k"]), noproto);
    // Envoy's gate comes before the splitter: an unknown command gets NOPROTO too.
    assert_eq!(c.cmd(&["BOGUSCMD", "x"]), noproto);
    assert_eq!(c.cmd(&["HELLO"]), noproto);
    assert_eq!(c.cmd(&["HELLO", "2"]), noproto);
    assert!(matches!(c.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(c.cmd(&["HELLO", "2"]), noproto);
    // As observed on Envoy 1.40: only the gate counts `downstream_rq_noproto` (GET, BOGUSCMD);
    // a refused HELLO is a HELLO error, and an unknown command before HELLO 3 is not counted
    // as unsupported.
    let stats = proxy.stats();
    assert_eq!(stats.get_int("redis.redis.downstream_rq_noproto"), Some(2));
    assert_eq!(
        stats.get_int("redis.redis.splitter.unsupported_command"),
        Some(0)
    );
    // Three refused HELLOs, one accepted.
    assert_eq!(stats.get_int("redis.redis.command.hello.total"), Some(4));
    assert_eq!(stats.get_int("redis.redis.command.hello.error"), Some(3));
    assert_eq!(stats.get_int("redis.redis.command.hello.success"), Some(1));
}
