//! Transactions. Where Envoy 1.40 keeps Redis's promises, redvoy is compared with it: MULTI
//! answered locally, everything until EXEC on a dedicated connection to the key's server,
//! multi-key commands not split, local commands answered inside, stats under
//! `command.multi.*`. Where Envoy breaks them, redvoy keeps them (redvoy-only tests below):
//! WATCH runs on the transaction's own connection, so a concurrent write makes EXEC return
//! null; a refused command or a key of another server makes EXEC answer EXECABORT and commits
//! nothing.

use redvoy_test_util::{
    encode_command, same_on_all_targets, simple_bootstrap, start_servers, Proxy, RedisServer,
    Reply, RespClient, Rows, Target,
};

use crate::targets;

fn redvoy() -> Target {
    Target::Redvoy
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

/// Two keys of `prefix` that the proxy puts on different servers (found with plain SETs).
fn keys_on_two_servers(proxy: &Proxy, servers: &[RedisServer], prefix: &str) -> (String, String) {
    let mut c = proxy.client();
    let keys: Vec<String> = (0..32).map(|i| format!("{prefix}:{i}")).collect();
    for key in &keys {
        assert_eq!(c.cmd(&["SET", key, "plain"]), Reply::ok());
    }
    let home: Vec<Option<usize>> = keys.iter().map(|k| holder(servers, k)).collect();
    servers.iter().for_each(RedisServer::flushall);
    let other = (1..keys.len())
        .find(|i| home[*i] != home[0])
        .unwrap_or_else(|| panic!("all {prefix} keys on one server"));
    (keys[0].clone(), keys[other].clone())
}

#[test]
fn transactions_match_envoy_on_one_server() {
    let servers = start_servers(1);
    let yaml = simple_bootstrap("MAGLEV", &[servers[0].port()]);
    same_on_all_targets(&targets(), |target| {
        servers.iter().for_each(RedisServer::flushall);
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        assert_eq!(step(&mut rows, &mut c, &["MULTI"]), Reply::ok(), "{target}");
        assert_eq!(
            step(&mut rows, &mut c, &["SET", "tx:a", "1"]),
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
        assert_eq!(
            step(&mut rows, &mut c, &["SET", "tx:b", "2"]),
            Reply::simple("QUEUED"),
            "{target}"
        );
        // Multi-key commands are forwarded whole.
        assert_eq!(
            step(&mut rows, &mut c, &["MGET", "tx:a", "tx:b"]),
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
        assert_eq!(
            step(&mut rows, &mut c, &["GET", "tx:b"]),
            Reply::bulk("2"),
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

        // A Redis-side error at run time is passed through; EXEC still runs the rest.
        step(&mut rows, &mut c, &["MULTI"]);
        step(&mut rows, &mut c, &["SET", "tx:s", "x"]);
        step(&mut rows, &mut c, &["INCR", "tx:s"]);
        step(&mut rows, &mut c, &["EXEC"]);

        let stats = proxy.stats();
        for name in [
            "multi", "exec", "discard", "set", "get", "mget", "del", "incr",
        ] {
            for kind in ["total", "success", "error"] {
                let stat = format!("redis.redis.command.{name}.{kind}");
                rows.push((stat.clone(), stats.int(&stat).to_string()));
            }
        }
        rows
    });
}

/// Envoy 1.40 sends a transaction's every command to the first key's server, so a key of
/// another server is written there. redvoy refuses it with Redis's CROSSSLOT error and EXEC
/// then commits nothing (EXECABORT), as a Redis Cluster node does.
#[test]
fn a_key_of_another_server_aborts_the_transaction() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let proxy = Proxy::start(redvoy(), &simple_bootstrap("MAGLEV", &ports), &[]);
    let (first, elsewhere) = keys_on_two_servers(&proxy, &servers, "tx");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &first, "1"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["SET", &elsewhere, "2"]),
        Reply::err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    assert_eq!(
        c.cmd(&["MGET", &first, &elsewhere]),
        Reply::err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(holder(&servers, &first), None, "committed after EXECABORT");
    assert_eq!(holder(&servers, &elsewhere), None);
    // The connection is usable afterwards, and keys route by their own hash again.
    assert_eq!(c.cmd(&["SET", &elsewhere, "3"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", &elsewhere]), Reply::bulk("3"));
}

/// Envoy 1.40 refuses an unsupported command inside MULTI (and EXISTS, which Redis allows)
/// but EXEC still commits the rest. redvoy queues EXISTS, and a refused command makes EXEC
/// answer EXECABORT with nothing committed, as Redis does for a command it rejects.
#[test]
fn a_refused_command_aborts_the_transaction() {
    let servers = start_servers(1);
    let proxy = Proxy::start(
        redvoy(),
        &simple_bootstrap("MAGLEV", &[servers[0].port()]),
        &[],
    );
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "r:a", "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXISTS", "r:a", "r:b"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::ok(), Reply::int(1)])
    );

    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "r:t", "1"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["KEYS", "*"]),
        Reply::err("'KEYS' command is not supported within transaction")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(servers[0].cmd(&["EXISTS", "r:t"]), Reply::int(0));
    // A refusal before the first keyed command aborts too.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SCAN", "0"]),
        Reply::err("'SCAN' command is not supported within transaction")
    );
    assert_eq!(c.cmd(&["SET", "r:u", "1"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(servers[0].cmd(&["EXISTS", "r:u"]), Reply::int(0));
    // So do an unknown command and a command without its arguments.
    for bad in [&["FOO", "x"][..], &["GET"]] {
        assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
        assert_eq!(c.cmd(&["SET", "r:v", "1"]), Reply::simple("QUEUED"));
        assert!(c.cmd(bad).is_error(), "{bad:?}");
        assert_eq!(
            c.cmd(&["EXEC"]),
            Reply::err("EXECABORT Transaction discarded because of previous errors."),
            "{bad:?}"
        );
        assert_eq!(servers[0].cmd(&["EXISTS", "r:v"]), Reply::int(0));
    }
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

/// WATCH runs on the transaction's own connection (Envoy 1.40 runs it on the shared one, so
/// it guards nothing): a write by anyone else between WATCH and EXEC makes EXEC return null
/// and nothing is applied; without one, EXEC commits.
#[test]
fn watch_guards_the_transaction() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redvoy(), &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
    let mut c = proxy.client();
    let mut other = proxy.client();

    assert_eq!(c.cmd(&["WATCH", "w"]), Reply::ok());
    assert_eq!(other.cmd(&["SET", "w", "other"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "w", "mine"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Null,
        "EXEC after a concurrent write"
    );
    assert_eq!(redis.cmd(&["GET", "w"]), Reply::bulk("other"));

    // Unchanged key: EXEC commits.
    assert_eq!(c.cmd(&["WATCH", "w"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "w"]), Reply::bulk("other"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "w", "mine"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![Reply::ok()]));
    assert_eq!(redis.cmd(&["GET", "w"]), Reply::bulk("mine"));

    // UNWATCH releases the guard.
    assert_eq!(c.cmd(&["WATCH", "w"]), Reply::ok());
    assert_eq!(c.cmd(&["UNWATCH"]), Reply::ok());
    assert_eq!(other.cmd(&["SET", "w", "again"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "w", "last"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![Reply::ok()]));
    assert_eq!(redis.cmd(&["GET", "w"]), Reply::bulk("last"));

    // WATCH inside MULTI is Redis's error, and does not end the transaction.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["WATCH", "w"]),
        Reply::err("ERR WATCH inside MULTI is not allowed")
    );
    assert_eq!(c.cmd(&["DISCARD"]), Reply::ok());
}
