//! Transactions as Envoy runs them: MULTI answered locally, everything until EXEC on a
//! dedicated connection to the first key's server (multi-key commands not split), local
//! commands answered inside, stats under `command.multi.*`. Compared between targets.

use redvoy_test_util::{
    encode_command, same_on_all_targets, simple_bootstrap, start_servers, Proxy, RedisServer,
    Reply, RespClient, Rows, Target,
};

fn targets() -> Vec<Target> {
    redvoy_test_util::targets(env!("CARGO_BIN_EXE_redvoy"))
}

fn step(rows: &mut Rows, client: &mut RespClient, args: &[&str]) -> Reply {
    let reply = client.cmd(args);
    rows.push((args.join(" "), format!("{reply:?}")));
    reply
}

/// Index of the one server holding `key`.
fn holder(servers: &[RedisServer], key: &str) -> Option<usize> {
    let on: Vec<usize> = servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.cmd(&["EXISTS", key]) == Reply::int(1))
        .map(|(i, _)| i)
        .collect();
    assert!(on.len() <= 1, "{key} on servers {on:?}");
    on.first().copied()
}

#[test]
fn transactions_run_on_the_first_keys_server() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let yaml = simple_bootstrap("MAGLEV", &ports);
    // Keys whose own hashes spread over the servers (found with plain SETs first).
    let keys: Vec<String> = (0..12).map(|i| format!("tx:{i}")).collect();
    same_on_all_targets(&targets(), |target| {
        servers.iter().for_each(RedisServer::flushall);
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        for key in &keys {
            assert_eq!(c.cmd(&["SET", key, "plain"]), Reply::ok());
        }
        let home: Vec<usize> = keys.iter().map(|k| holder(&servers, k).unwrap()).collect();
        let first = &keys[0];
        let elsewhere = keys
            .iter()
            .zip(&home)
            .find(|(_, h)| **h != home[0])
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| panic!("{target}: all keys on one server"));
        servers.iter().for_each(RedisServer::flushall);

        assert_eq!(step(&mut rows, &mut c, &["MULTI"]), Reply::ok(), "{target}");
        assert_eq!(
            step(&mut rows, &mut c, &["SET", first, "1"]),
            Reply::simple("QUEUED"),
            "{target}"
        );
        assert_eq!(
            step(&mut rows, &mut c, &["PING"]),
            Reply::simple("PONG"),
            "{target}: local inside MULTI"
        );
        assert_eq!(
            step(&mut rows, &mut c, &["ECHO", "e"]),
            Reply::bulk("e"),
            "{target}"
        );
        // A key that hashes elsewhere follows the transaction's key.
        assert_eq!(
            step(&mut rows, &mut c, &["SET", &elsewhere, "2"]),
            Reply::simple("QUEUED"),
            "{target}"
        );
        // Multi-key commands are forwarded whole.
        assert_eq!(
            step(&mut rows, &mut c, &["MGET", first, &elsewhere]),
            Reply::simple("QUEUED"),
            "{target}"
        );
        assert_eq!(
            step(&mut rows, &mut c, &["DEL", "tx:none1", "tx:none2"]),
            Reply::simple("QUEUED"),
            "{target}"
        );
        assert_eq!(
            step(&mut rows, &mut c, &["EXEC"]),
            Reply::Array(vec![
                Reply::ok(),
                Reply::ok(),
                Reply::Array(vec![Reply::bulk("1"), Reply::bulk("2")]),
                Reply::int(0),
            ]),
            "{target}"
        );
        assert_eq!(holder(&servers, first), Some(home[0]), "{target}");
        assert_eq!(
            holder(&servers, &elsewhere),
            Some(home[0]),
            "{target}: followed the first key"
        );
        // After EXEC, commands route by their own keys again.
        assert_eq!(
            step(&mut rows, &mut c, &["GET", &elsewhere]),
            Reply::Null,
            "{target}"
        );

        // DISCARD after queued commands goes to Redis; nothing is applied.
        step(&mut rows, &mut c, &["MULTI"]);
        step(&mut rows, &mut c, &["SET", "tx:discarded", "1"]);
        assert_eq!(
            step(&mut rows, &mut c, &["DISCARD"]),
            Reply::ok(),
            "{target}"
        );
        assert_eq!(
            step(&mut rows, &mut c, &["GET", "tx:discarded"]),
            Reply::Null,
            "{target}"
        );

        // A Redis-side error inside the transaction is passed through; EXEC still runs.
        step(&mut rows, &mut c, &["MULTI"]);
        step(&mut rows, &mut c, &["SET", "tx:s", "x"]);
        step(&mut rows, &mut c, &["INCR", "tx:s"]);
        step(&mut rows, &mut c, &["EXEC"]);
        // Unsupported commands inside are refused without ending the transaction.
        step(&mut rows, &mut c, &["MULTI"]);
        step(&mut rows, &mut c, &["SET", "tx:t", "1"]);
        step(&mut rows, &mut c, &["KEYS", "*"]);
        step(&mut rows, &mut c, &["EXEC"]);

        let stats = proxy.stats();
        for name in [
            "multi", "exec", "discard", "set", "get", "mget", "del", "incr", "keys",
        ] {
            for kind in ["total", "success", "error"] {
                let stat = format!("redis.redis.command.{name}.{kind}");
                rows.push((stat.clone(), stats.int(&stat).to_string()));
            }
        }
        rows
    });
}

#[test]
fn pipelined_transaction() {
    let servers = start_servers(2);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let yaml = simple_bootstrap("MAGLEV", &ports);
    same_on_all_targets(&targets(), |target| {
        servers.iter().for_each(RedisServer::flushall);
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut burst = Vec::new();
        for args in [
            &["MULTI"][..],
            &["SET", "p", "1"],
            &["GET", "p"],
            &["EXEC"],
            &["GET", "p"],
        ] {
            burst.extend_from_slice(&encode_command(args));
        }
        c.send_raw(&burst);
        let replies: Vec<Reply> = (0..5).map(|_| c.read_reply()).collect();
        assert_eq!(
            replies,
            vec![
                Reply::ok(),
                Reply::simple("QUEUED"),
                Reply::simple("QUEUED"),
                Reply::Array(vec![Reply::ok(), Reply::bulk("1")]),
                Reply::bulk("1"),
            ],
            "{target}"
        );
        vec![("replies".to_string(), format!("{replies:?}"))]
    });
}

/// WATCH runs on the shared connection and the transaction on a dedicated one, so a
/// concurrent write does not abort the EXEC (Envoy's documented quirk).
#[test]
fn watch_does_not_guard_the_transaction() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("MAGLEV", &[redis.port()]);
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        assert_eq!(
            step(&mut rows, &mut c, &["WATCH", "w"]),
            Reply::ok(),
            "{target}"
        );
        assert_eq!(redis.cmd(&["SET", "w", "other"]), Reply::ok());
        step(&mut rows, &mut c, &["MULTI"]);
        step(&mut rows, &mut c, &["SET", "w", "mine"]);
        step(&mut rows, &mut c, &["EXEC"]);
        step(&mut rows, &mut c, &["GET", "w"]);
        step(&mut rows, &mut c, &["UNWATCH"]);
        rows
    });
}
