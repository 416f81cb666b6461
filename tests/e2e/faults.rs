//! Fault injection: ERROR faults answer `Fault Injected: Error` without contacting the
//! upstream; DELAY faults hold the reply; stats `error_fault` / `delay_fault`.

use std::time::{Duration, Instant};

use redvoy_test_util::{
    bootstrap, catch_all_filter, same_on_all_targets, Cluster, Proxy, RedisServer, Reply, Rows,
};

use crate::targets;

const DELAY: Duration = Duration::from_millis(300);
/// How much earlier than `DELAY` a delayed reply may arrive (timer granularity).
const DELAY_SLACK: Duration = Duration::from_millis(20);

#[test]
fn error_and_delay_faults_per_command() {
    let redis = RedisServer::start();
    let faults = r#"
        faults:
        - fault_type: ERROR
          fault_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
          commands: [get]
        - fault_type: DELAY
          fault_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
          delay: 0.3s
          commands: [set]
    "#;
    let yaml = bootstrap(
        &catch_all_filter("redis", faults),
        &[Cluster::new("redis", "MAGLEV", &[redis.port()])],
    );
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        assert_eq!(redis.cmd(&["CONFIG", "RESETSTAT"]), Reply::ok());
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        let fault = Reply::err("Fault Injected: Error");
        assert_eq!(c.cmd(&["GET", "f"]), fault, "{target}");
        assert_eq!(
            c.cmd(&["get", "f"]),
            fault,
            "{target}: case-insensitive command match"
        );
        let started = Instant::now();
        assert_eq!(c.cmd(&["SET", "f", "1"]), Reply::ok(), "{target}");
        let took = started.elapsed();
        // Envoy's timers have millisecond granularity: it may answer a hair early.
        assert!(
            took >= DELAY - DELAY_SLACK,
            "{target}: SET answered after {took:?}, before the {DELAY:?} delay"
        );
        assert_eq!(
            c.cmd(&["INCR", "f"]),
            Reply::int(2),
            "{target}: other commands unaffected"
        );
        assert_eq!(
            c.cmd(&["PING"]),
            Reply::simple("PONG"),
            "{target}: local commands unaffected"
        );
        // MGET's fragments are `get`s, but faults apply to the client's command.
        assert_eq!(
            c.cmd(&["MGET", "f"]),
            Reply::Array(vec![Reply::bulk("2")]),
            "{target}"
        );
        assert_eq!(
            redis.command_calls("get"),
            1,
            "{target}: only the MGET fragment reached Redis"
        );
        let stats = proxy.stats();
        for name in ["get", "set", "incr", "mget"] {
            for kind in ["total", "success", "error", "error_fault", "delay_fault"] {
                let stat = format!("redis.redis.command.{name}.{kind}");
                rows.push((stat.clone(), stats.int(&stat).to_string()));
            }
        }
        assert_eq!(
            stats.int("redis.redis.command.get.error_fault"),
            2,
            "{target}"
        );
        assert_eq!(stats.int("redis.redis.command.get.error"), 2, "{target}");
        assert_eq!(
            stats.int("redis.redis.command.set.delay_fault"),
            1,
            "{target}"
        );
        assert_eq!(stats.int("redis.redis.command.set.success"), 1, "{target}");
        rows
    });
}

/// A fault without `commands` applies to every (non-local) command.
#[test]
fn error_fault_for_all_commands() {
    let redis = RedisServer::start();
    let faults = r#"
        faults:
        - fault_type: ERROR
          fault_enabled: {default_value: {numerator: 1, denominator: HUNDRED}}
          commands: [incr]
        - fault_type: ERROR
          fault_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
    "#;
    let yaml = bootstrap(
        &catch_all_filter("redis", faults),
        &[Cluster::new("redis", "MAGLEV", &[redis.port()])],
    );
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut c = proxy.client();
        let mut rows = Rows::new();
        for args in [
            vec!["SET", "a", "1"],
            vec!["MGET", "a", "b"],
            vec!["MSET", "a", "1"],
            vec!["DEL", "a"],
            vec!["EVAL", "return 1", "1", "a"],
            vec!["KEYS", "*"],
            vec!["PING"],
            vec!["ECHO", "x"],
            vec!["MULTI"],
            vec!["SET", "a", "1"],
            vec!["EXEC"],
        ] {
            let reply = c.cmd(&args);
            rows.push((args.join(" "), format!("{reply:?}")));
        }
        let fault = format!("{:?}", Reply::err("Fault Injected: Error"));
        assert_eq!(rows[0].1, fault, "{target}: SET");
        assert_eq!(rows[1].1, fault, "{target}: MGET");
        assert_eq!(rows[6].1, "+PONG", "{target}: PING is local");
        rows
    });
}
