//! Oracle comparison: multi-key commands split over three servers, healthy and with one server
//! down (MGET per-key errors in position, MSET/DEL error counts), and recovery afterwards.

use std::time::Duration;

use redvoy_test_util::{
    same_on_all_targets, simple_bootstrap, start_servers, try_wait_for, Proxy, RedisServer, Reply,
    RespClient, Rows,
};

use crate::targets;

const KEYS: usize = 30;
/// Bound on the proxy reconnecting to a restarted server.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(15);

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("fan:{i}")).collect()
}

/// Index of the server holding `key` (read directly).
fn holder(servers: &[RedisServer], key: &str) -> usize {
    let on: Vec<usize> = servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.cmd(&["EXISTS", key]) == Reply::int(1))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(on.len(), 1, "key {key} on servers {on:?}");
    on[0]
}

fn cmd_row(rows: &mut Rows, client: &mut RespClient, args: &[&str]) -> Reply {
    let reply = client.cmd(args);
    let label = if args.len() > 4 {
        format!("{} {} ... ({} args)", args[0], args[1], args.len() - 1)
    } else {
        args.join(" ")
    };
    rows.push((label, format!("{reply:?}")));
    reply
}

fn with_all(command: &str, keys: &[String]) -> Vec<String> {
    std::iter::once(command.to_string())
        .chain(keys.iter().cloned())
        .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn fan_out_commands_merge_like_envoy() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let yaml = simple_bootstrap("MAGLEV", &ports);
    let keys = keys();
    same_on_all_targets(&targets(), |target| {
        for server in &servers {
            server.flushall();
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let mut rows = Rows::new();
        let mut mset = vec!["MSET".to_string()];
        for key in &keys {
            mset.push(key.clone());
            mset.push(format!("v-{key}"));
        }
        assert_eq!(
            cmd_row(&mut rows, &mut client, &as_strs(&mset)),
            Reply::ok(),
            "{target}"
        );
        // Values spread over every server.
        let spread: std::collections::BTreeSet<usize> =
            keys.iter().map(|k| holder(&servers, k)).collect();
        assert_eq!(
            spread.len(),
            3,
            "{target}: keys not spread over all servers"
        );
        // A list key makes one MGET element a Redis error, in position.
        cmd_row(&mut rows, &mut client, &["RPUSH", "fan:list", "x"]);
        let mut mget = with_all("MGET", &keys[..5]);
        mget.insert(3, "fan:list".into());
        mget.push("fan:missing".into());
        let reply = cmd_row(&mut rows, &mut client, &as_strs(&mget));
        let items = reply
            .as_array()
            .unwrap_or_else(|| panic!("{target}: MGET -> {reply:?}"));
        assert_eq!(items[0], Reply::bulk("v-fan:0"), "{target}");
        assert!(
            items[2].text().unwrap_or_default().starts_with("WRONGTYPE"),
            "{target}: {reply:?}"
        );
        assert_eq!(items[6], Reply::Null, "{target}");
        for command in ["EXISTS", "TOUCH"] {
            let mut args = with_all(command, &keys[..10]);
            args.push("fan:missing".into());
            assert_eq!(
                cmd_row(&mut rows, &mut client, &as_strs(&args)),
                Reply::int(10),
                "{target}: {command}"
            );
        }
        assert_eq!(
            cmd_row(
                &mut rows,
                &mut client,
                &as_strs(&with_all("DEL", &keys[..10]))
            ),
            Reply::int(10),
            "{target}"
        );
        assert_eq!(
            cmd_row(
                &mut rows,
                &mut client,
                &as_strs(&with_all("UNLINK", &keys[5..15]))
            ),
            Reply::int(5),
            "{target}"
        );
        // Lowercase and mixed-case names, and a repeated key.
        cmd_row(
            &mut rows,
            &mut client,
            &["mset", "fan:a", "1", "fan:b", "2"],
        );
        cmd_row(&mut rows, &mut client, &["mget", "fan:a", "fan:b"]);
        cmd_row(&mut rows, &mut client, &["Del", "fan:a", "fan:b", "fan:a"]);
        let stats = proxy.stats();
        for name in ["mget", "mset", "del", "exists", "touch", "unlink"] {
            for kind in ["total", "success", "error"] {
                let stat = format!("redis.redis.command.{name}.{kind}");
                rows.push((stat.clone(), stats.int(&stat).to_string()));
            }
        }
        rows
    });
}

#[test]
fn mget_with_one_of_three_servers_down_like_envoy() {
    let mut servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let yaml = simple_bootstrap("MAGLEV", &ports);
    let keys = keys();
    same_on_all_targets(&targets(), |target| {
        // Each run starts with all three servers up and empty.
        for server in servers.iter_mut() {
            if !server.is_running() {
                server.restart();
            }
            server.flushall();
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let mut rows = Rows::new();
        for key in &keys {
            assert_eq!(
                client.cmd(&["SET", key, &format!("v-{key}")]),
                Reply::ok(),
                "{target}"
            );
        }
        let placed: Vec<usize> = keys.iter().map(|k| holder(&servers, k)).collect();
        let victim = 1;
        let on_victim = placed.iter().filter(|&&s| s == victim).count();
        assert!(on_victim > 0, "{target}: no key on the server to stop");
        servers[victim].stop();

        let reply = cmd_row(&mut rows, &mut client, &as_strs(&with_all("MGET", &keys)));
        let items = reply
            .as_array()
            .unwrap_or_else(|| panic!("{target}: MGET -> {reply:?}"));
        for ((key, item), server) in keys.iter().zip(items).zip(&placed) {
            if *server == victim {
                assert_eq!(
                    *item,
                    Reply::err("upstream failure"),
                    "{target}: MGET element {key}"
                );
            } else {
                assert_eq!(
                    *item,
                    Reply::bulk(format!("v-{key}")),
                    "{target}: MGET element {key}"
                );
            }
        }
        let dead_key = keys[placed.iter().position(|&s| s == victim).unwrap()].clone();
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["GET", &dead_key]),
            Reply::err("upstream failure"),
            "{target}"
        );
        let mut mset = vec!["MSET".to_string()];
        for key in &keys {
            mset.push(key.clone());
            mset.push("new".into());
        }
        let expected = Reply::Error(format!("finished with {on_victim} error(s)").into_bytes());
        assert_eq!(
            cmd_row(&mut rows, &mut client, &as_strs(&mset)),
            expected,
            "{target}: MSET"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &as_strs(&with_all("DEL", &keys))),
            expected,
            "{target}: DEL"
        );
        // The good fragments were applied.
        let live_key = keys[placed.iter().position(|&s| s != victim).unwrap()].clone();
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["GET", &live_key]),
            Reply::Null,
            "{target}"
        );
        // Other clients keep working.
        assert_eq!(proxy.client().cmd(&["PING"]), Reply::simple("PONG"));

        // The server comes back: the proxy reconnects (bounded wait).
        servers[victim].restart();
        let back = try_wait_for(RECONNECT_TIMEOUT, || {
            let reply = client.cmd(&["SET", &dead_key, "again"]);
            (reply == Reply::ok()).then_some(())
        });
        assert!(
            back.is_some(),
            "{target}: no reconnect to the restarted server"
        );
        assert_eq!(
            cmd_row(&mut rows, &mut client, &["GET", &dead_key]),
            Reply::bulk("again"),
            "{target}"
        );
        assert_eq!(
            servers[victim].cmd(&["GET", &dead_key]),
            Reply::bulk("again"),
            "{target}"
        );
        rows.push(("keys on stopped server".into(), on_victim.to_string()));
        rows.push((
            "mget.error".into(),
            proxy.stat("redis.redis.command.mget.error").to_string(),
        ));
        rows.push((
            "mset.error".into(),
            proxy.stat("redis.redis.command.mset.error").to_string(),
        ));
        rows.push((
            "get.error".into(),
            proxy.stat("redis.redis.command.get.error").to_string(),
        ));
        rows
    });
}
