//! Downstream AUTH flows (spec §3.8) and upstream AUTH from `RedisProtocolOptions`,
//! compared between targets.

use redvoy_test_util::{
    bootstrap, catch_all_filter, same_on_all_targets, Cluster, Proxy, RedisServer, Reply,
    RespClient, Rows,
};

use crate::targets;

fn step(rows: &mut Rows, client: &mut RespClient, args: &[&str], expect: Reply) {
    let reply = client.cmd(args);
    rows.push((args.join(" "), format!("{reply:?}")));
    assert_eq!(reply, expect, "{}", args.join(" "));
}

fn ok() -> Reply {
    Reply::ok()
}

fn noauth() -> Reply {
    Reply::err("NOAUTH Authentication required.")
}

#[test]
fn downstream_passwords() {
    let redis = RedisServer::start();
    let filter = catch_all_filter(
        "redis",
        "downstream_auth_passwords: [{inline_string: p1}, {inline_string: p2}]",
    );
    let yaml = bootstrap(&filter, &[Cluster::new("redis", "MAGLEV", &[redis.port()])]);
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        let r = &mut rows;
        step(r, &mut c, &["PING"], noauth());
        step(r, &mut c, &["GET", "k"], noauth());
        step(r, &mut c, &["MULTI"], noauth());
        // The unknown-command check runs before the auth check.
        step(
            r,
            &mut c,
            &["FOO"],
            Reply::err("ERR unknown command 'FOO', with args beginning with: "),
        );
        // ... but before the arity check: a bare GET is refused for auth first.
        step(r, &mut c, &["GET"], noauth());
        step(r, &mut c, &["AUTH"], Reply::err("invalid request"));
        step(
            r,
            &mut c,
            &["AUTH", "wrong"],
            Reply::err("ERR invalid password"),
        );
        step(r, &mut c, &["PING"], noauth());
        step(r, &mut c, &["AUTH", "p2"], ok());
        step(r, &mut c, &["PING"], Reply::simple("PONG"));
        step(r, &mut c, &["SET", "k", "v"], ok());
        step(r, &mut c, &["GET", "k"], Reply::bulk("v"));
        // A wrong AUTH takes access away again.
        step(
            r,
            &mut c,
            &["AUTH", "wrong"],
            Reply::err("ERR invalid password"),
        );
        step(r, &mut c, &["GET", "k"], noauth());
        step(r, &mut c, &["AUTH", "default", "p1"], ok());
        step(r, &mut c, &["GET", "k"], Reply::bulk("v"));
        step(
            r,
            &mut c,
            &["AUTH", "bob", "p1"],
            Reply::err("WRONGPASS invalid username-password pair"),
        );
        step(r, &mut c, &["GET", "k"], noauth());
        // Four elements: the first argument is the password.
        step(r, &mut c, &["AUTH", "p1", "x", "y"], ok());
        step(r, &mut c, &["GET", "k"], Reply::bulk("v"));
        // Each connection authenticates on its own.
        let mut other = proxy.client();
        step(r, &mut other, &["GET", "k"], noauth());
        rows
    });
}

#[test]
fn downstream_username_and_password() {
    let redis = RedisServer::start();
    let filter = catch_all_filter(
        "redis",
        "downstream_auth_username: {inline_string: alice}\ndownstream_auth_password: {inline_string: secret}",
    );
    let yaml = bootstrap(&filter, &[Cluster::new("redis", "MAGLEV", &[redis.port()])]);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        let r = &mut rows;
        let wrongpass = || Reply::err("WRONGPASS invalid username-password pair");
        step(r, &mut c, &["PING"], noauth());
        step(r, &mut c, &["AUTH", "alice", "wrong"], wrongpass());
        step(r, &mut c, &["AUTH", "bob", "secret"], wrongpass());
        step(r, &mut c, &["AUTH", "default", "secret"], wrongpass());
        step(r, &mut c, &["AUTH", "alice", "secret"], ok());
        step(r, &mut c, &["PING"], Reply::simple("PONG"));
        step(
            r,
            &mut c,
            &["AUTH", "wrong"],
            Reply::err("ERR invalid password"),
        );
        step(r, &mut c, &["PING"], noauth());
        // Password-only AUTH still works with a username configured.
        step(r, &mut c, &["AUTH", "secret"], ok());
        step(r, &mut c, &["ECHO", "in"], Reply::bulk("in"));
        rows
    });
}

#[test]
fn upstream_password_from_protocol_options() {
    let redis = RedisServer::start_with_password("upw");
    let cluster = |password: &str| {
        Cluster::new("redis", "MAGLEV", &[redis.port()]).upstream_auth(None, password)
    };
    let good = bootstrap(&catch_all_filter("redis", ""), &[cluster("upw")]);
    let bad = bootstrap(&catch_all_filter("redis", ""), &[cluster("nope")]);
    same_on_all_targets(&targets(), |target| {
        let mut rows = Rows::new();
        {
            let proxy = Proxy::start(target, &good, &[]);
            let mut c = proxy.client();
            step(&mut rows, &mut c, &["SET", "up", "1"], ok());
            step(&mut rows, &mut c, &["GET", "up"], Reply::bulk("1"));
            step(
                &mut rows,
                &mut c,
                &["MGET", "up", "up"],
                Reply::Array(vec![Reply::bulk("1"), Reply::bulk("1")]),
            );
        }
        {
            // A wrong upstream password is not reported; Redis then refuses the commands.
            let proxy = Proxy::start(target, &bad, &[]);
            let mut c = proxy.client();
            step(&mut rows, &mut c, &["GET", "up"], noauth());
            step(&mut rows, &mut c, &["PING"], Reply::simple("PONG"));
        }
        rows
    });
}

#[test]
fn upstream_username_and_password_from_protocol_options() {
    let redis = RedisServer::start();
    assert_eq!(
        redis.cmd(&["ACL", "SETUSER", "bob", "on", ">bpw", "~*", "+@all"]),
        Reply::ok()
    );
    assert_eq!(
        redis.cmd(&["ACL", "SETUSER", "default", "off"]),
        Reply::ok()
    );
    let cluster =
        Cluster::new("redis", "MAGLEV", &[redis.port()]).upstream_auth(Some("bob"), "bpw");
    let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster]);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        step(&mut rows, &mut c, &["SET", "acl", "1"], ok());
        step(&mut rows, &mut c, &["INCR", "acl"], Reply::int(2));
        rows
    });
}
