//! Prefix routes (longest prefix, `remove_prefix`, `case_insensitive`, `key_formatter`,
//! catch-all, no route) and request mirroring, compared between targets.

use std::time::Duration;

use redvoy_test_util::{
    bootstrap, same_on_all_targets, start_servers, wait_for, Cluster, Proxy, RedisServer, Reply,
    RespClient, Rows,
};

use crate::targets;

/// Bound on a mirrored write reaching the mirror.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

fn clusters(servers: &[RedisServer]) -> Vec<Cluster> {
    servers
        .iter()
        .enumerate()
        .map(|(i, s)| Cluster::new(&format!("c{i}"), "MAGLEV", &[s.port()]))
        .collect()
}

/// `server index -> sorted keys` rows.
fn placement_rows(servers: &[RedisServer]) -> Rows {
    servers
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("keys on c{i}"), s.keys().join(" ")))
        .collect()
}

fn cmd_row(rows: &mut Rows, client: &mut RespClient, args: &[&str]) -> Reply {
    let reply = client.cmd(args);
    rows.push((args.join(" "), format!("{reply:?}")));
    reply
}

#[test]
fn prefix_routes_case_insensitive_with_remove_prefix_and_catch_all() {
    let servers = start_servers(4);
    let filter = r#"
        stat_prefix: routes
        settings: {op_timeout: 5s}
        prefix_routes:
          case_insensitive: true
          routes:
          - {prefix: "a:", cluster: c0}
          - {prefix: "ab:", cluster: c1}
          - {prefix: "strip:", cluster: c2, remove_prefix: true}
          - {prefix: "fmt:", cluster: c2, key_formatter: "{%KEY%}-suffix"}
          catch_all_route: {cluster: c3}
    "#;
    let yaml = bootstrap(filter, &clusters(&servers));
    same_on_all_targets(&targets(), |target| {
        servers.iter().for_each(RedisServer::flushall);
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let mut rows = Rows::new();
        for key in [
            "a:1", "A:2", "ab:1", "AB:2", "aB:3", "abc", "strip:x", "STRIP:Y", "fmt:k", "other",
            "a", "",
        ] {
            assert_eq!(
                cmd_row(&mut rows, &mut client, &["SET", key, key]),
                Reply::ok(),
                "{target}: SET {key:?}"
            );
        }
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["GET", "strip:x"]),
            Reply::bulk("strip:x"),
            "{target}"
        );
        cmd_row(
            &mut rows,
            &mut client,
            &["MGET", "a:1", "AB:2", "strip:x", "other", "fmt:k"],
        );
        cmd_row(&mut rows, &mut client, &["DEL", "a:1", "ab:1", "STRIP:Y"]);
        rows.extend(placement_rows(&servers));
        // Longest prefix, case folded for lookup only; prefix stripped; key formatted.
        assert_eq!(servers[0].keys(), ["A:2"], "{target}: c0 (a:1 deleted)");
        assert_eq!(
            servers[1].keys(),
            ["AB:2", "aB:3"],
            "{target}: c1 (ab:1 deleted)"
        );
        assert_eq!(
            servers[2].keys(),
            ["x", "{fmt:k}-suffix"],
            "{target}: c2 (Y deleted)"
        );
        assert_eq!(
            servers[3].keys(),
            ["", "a", "abc", "other"],
            "{target}: c3 (catch-all)"
        );
        rows
    });
}

#[test]
fn no_route_without_catch_all_is_no_upstream_host() {
    let servers = start_servers(2);
    let filter = r#"
        stat_prefix: routes
        settings: {op_timeout: 5s}
        prefix_routes:
          routes:
          - {prefix: "a:", cluster: c0}
          - {prefix: "b:", cluster: c1}
    "#;
    let yaml = bootstrap(filter, &clusters(&servers));
    same_on_all_targets(&targets(), |target| {
        servers.iter().for_each(RedisServer::flushall);
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let mut rows = Rows::new();
        let no_host = Reply::err("no upstream host");
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["SET", "A:1", "x"]),
            no_host,
            "{target}: case-sensitive"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["GET", "zzz"]),
            no_host,
            "{target}"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["SET", "a:1", "x"]),
            Reply::ok(),
            "{target}"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["MGET", "a:1", "zzz", "b:1"]),
            Reply::Array(vec![Reply::bulk("x"), no_host.clone(), Reply::Null]),
            "{target}"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["MSET", "a:2", "1", "zzz", "2"]),
            Reply::err("finished with 1 error(s)"),
            "{target}"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["DEL", "a:2", "zzz", "q"]),
            Reply::err("finished with 2 error(s)"),
            "{target}"
        );
        // Cluster-scope and random-shard commands route through the empty key: no route here.
        cmd_row(&mut rows, &mut client, &["KEYS", "*"]);
        cmd_row(&mut rows, &mut client, &["RANDOMKEY"]);
        cmd_row(&mut rows, &mut client, &["EVAL", "return 1", "1", "zzz"]);
        let stats = proxy.stats();
        for name in ["set", "get", "mget", "mset", "del", "keys", "eval"] {
            for kind in ["total", "success", "error"] {
                let stat = format!("redis.routes.command.{name}.{kind}");
                rows.push((stat.clone(), stats.int(&stat).to_string()));
            }
        }
        rows
    });
}

fn mirror_bootstrap(primary: u16, mirror: u16, exclude_reads: bool) -> String {
    let filter = format!(
        r#"
        stat_prefix: mirror
        settings: {{op_timeout: 5s}}
        prefix_routes:
          catch_all_route:
            cluster: primary
            request_mirror_policy:
            - {{cluster: mirror, exclude_read_commands: {exclude_reads}}}
        "#
    );
    bootstrap(
        &filter,
        &[
            Cluster::new("primary", "MAGLEV", &[primary]),
            Cluster::new("mirror", "MAGLEV", &[mirror]),
        ],
    )
}

fn reset(servers: &[&RedisServer]) {
    for server in servers {
        server.flushall();
        assert_eq!(server.cmd(&["CONFIG", "RESETSTAT"]), Reply::ok());
    }
}

#[test]
fn mirroring_sends_writes_and_skips_reads_when_excluded() {
    let primary = RedisServer::start();
    let mirror = RedisServer::start();
    for target in targets() {
        reset(&[&primary, &mirror]);
        let proxy = Proxy::start(
            target,
            &mirror_bootstrap(primary.port(), mirror.port(), true),
            &[],
        );
        let mut client = proxy.client();
        assert_eq!(client.cmd(&["SET", "m:1", "a"]), Reply::ok());
        assert_eq!(client.cmd(&["MSET", "m:2", "b", "m:3", "c"]), Reply::ok());
        assert_eq!(client.cmd(&["INCR", "m:n"]), Reply::int(1));
        assert_eq!(client.cmd(&["GET", "m:1"]), Reply::bulk("a"));
        assert_eq!(
            client.cmd(&["MGET", "m:1", "m:2"]),
            Reply::Array(vec![Reply::bulk("a"), Reply::bulk("b")])
        );
        assert_eq!(client.cmd(&["EXISTS", "m:1", "m:3"]), Reply::int(2));
        assert_eq!(client.cmd(&["DEL", "m:3"]), Reply::int(1));
        assert_eq!(client.cmd(&["SET", "m:last", "z"]), Reply::ok());
        // Mirrors go out in order on one connection: once the last write arrived, all did.
        wait_for(
            MIRROR_TIMEOUT,
            &format!("{target}: mirrored writes"),
            || (mirror.keys() == ["m:1", "m:2", "m:last", "m:n"]).then_some(()),
        );
        assert_eq!(
            mirror.command_calls("set"),
            4,
            "{target}: SET, 2 MSET fragments, SET"
        );
        assert_eq!(mirror.command_calls("incr"), 1, "{target}");
        assert_eq!(mirror.command_calls("del"), 1, "{target}");
        assert_eq!(
            mirror.command_calls("get"),
            0,
            "{target}: reads not mirrored"
        );
        assert_eq!(
            mirror.command_calls("exists"),
            0,
            "{target}: reads not mirrored"
        );
        assert_eq!(
            proxy.stat("redis.mirror.command.set.total"),
            2,
            "{target}: mirrors not counted"
        );
    }
}

#[test]
fn mirroring_without_exclusion_sends_reads_too_and_a_dead_mirror_is_harmless() {
    let primary = RedisServer::start();
    let mut mirror = RedisServer::start();
    for target in targets() {
        if !mirror.is_running() {
            mirror.restart();
        }
        reset(&[&primary, &mirror]);
        let proxy = Proxy::start(
            target,
            &mirror_bootstrap(primary.port(), mirror.port(), false),
            &[],
        );
        let mut client = proxy.client();
        assert_eq!(client.cmd(&["SET", "r:1", "a"]), Reply::ok());
        assert_eq!(client.cmd(&["GET", "r:1"]), Reply::bulk("a"));
        assert_eq!(client.cmd(&["SET", "r:last", "z"]), Reply::ok());
        wait_for(MIRROR_TIMEOUT, &format!("{target}: mirrored GET"), || {
            (mirror.command_calls("set") == 2).then_some(())
        });
        assert_eq!(mirror.command_calls("get"), 1, "{target}: GET mirrored");

        mirror.stop();
        for i in 0..20 {
            let key = format!("r:dead:{i}");
            assert_eq!(
                client.cmd(&["SET", &key, "v"]),
                Reply::ok(),
                "{target}: with the mirror down"
            );
            assert_eq!(
                client.cmd(&["GET", &key]),
                Reply::bulk("v"),
                "{target}: with the mirror down"
            );
        }
        assert_eq!(proxy.stat("redis.mirror.command.get.error"), 0, "{target}");
    }
}
