//! The admin endpoints that change state (POST only): `/healthcheck/fail|ok`,
//! `/drain_listeners`, `/logging`, `/reset_counters`, `/runtime_modify`, `/quitquitquit`, and
//! the 405 every one of them answers to a GET. Each scenario runs on every target and the
//! observations must be equal. Values observed on Envoy 1.40 and written here are asserted
//! (`expect_eq!`) on Envoy, and on redvoy only when Envoy does not run: with both, the row
//! comparison lists every difference at once.

use std::collections::BTreeMap;
use std::time::Duration;

use redvoy_test_util::{
    dedent, expect_eq, expect_that, json_leaves, port_open, redis_listener_yaml,
    same_on_all_targets, simple_bootstrap, try_wait_for, HttpResponse, Level, Proxy, ProxyOptions,
    RedisServer, Reply, Rows,
};

use crate::targets;

const TEXT: &str = "text/plain; charset=UTF-8";
/// Envoy's answer to a GET on a mutating endpoint.
const GET_REFUSED: &str = "Method GET not allowed, POST required.";
/// Bound on a gauge set at the stats flush (`server.state`; Envoy flushes every 5 s).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a listener closing after a drain, or a process exiting.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// `--drain-time-s` for the graceful drain test.
const DRAIN_TIME_S: &str = "1";

/// `(label status, label content-type, label body)` rows.
fn rows_of(proxy: &Proxy, label: &str, resp: &HttpResponse) -> Rows {
    vec![
        (format!("{label} status"), resp.status.to_string()),
        (
            format!("{label} content-type"),
            resp.content_type().to_string(),
        ),
        (format!("{label} body"), proxy.normalize(&resp.body)),
    ]
}

/// POSTs `path`, asserts Envoy's `200 OK\n`, and returns the rows.
fn post_ok(proxy: &Proxy, path: &str) -> Rows {
    let target = proxy.target();
    let resp = proxy.admin("POST", path);
    expect_eq!(
        target,
        (resp.status, resp.body.as_str()),
        (200, "OK\n"),
        "{target} POST {path}"
    );
    rows_of(proxy, &format!("POST {path}"), &resp)
}

/// One line of `/stats?filter=^<name>$`, or `<absent>`.
fn stat_line(proxy: &Proxy, name: &str) -> String {
    let escaped = name.replace('.', r"\.");
    let resp = proxy.admin("GET", &format!("/stats?filter=^{escaped}$"));
    resp.body
        .lines()
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| "<absent>".into())
}

/// Polls until `/stats` shows `name: value` (bounded); returns whether it did.
fn wait_stat_line(proxy: &Proxy, name: &str, value: u64, timeout: Duration) -> bool {
    let want = format!("{name}: {value}");
    try_wait_for(timeout, || (stat_line(proxy, name) == want).then_some(())).is_some()
}

/// Every mutating endpoint answers a GET with 405 `Method GET not allowed, POST required.`
/// and does nothing: afterwards the server is still running, live and ready.
#[test]
fn every_mutating_endpoint_refuses_get() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    let paths = [
        "/quitquitquit",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/drain_listeners",
        "/drain_listeners?inboundonly&graceful",
        "/logging",
        "/logging?level=debug",
        "/reset_counters",
        "/runtime_modify",
        "/runtime_modify?a=b",
        "/reopen_logs",
        "/cpuprofiler",
        "/heapprofiler",
        "/allocprofiler",
        "/stats/recentlookups/clear",
        "/stats/recentlookups/disable",
        "/stats/recentlookups/enable",
    ];
    same_on_all_targets(&targets(), |target| {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        let mut rows = Rows::new();
        for path in paths {
            // Envoy logs each refusal at error level too.
            let name = path.split('?').next().unwrap_or(path);
            proxy.expect_log(
                Level::Error,
                &format!("admin path mutates state, method is not POST path=\"{name}\" method=GET"),
            );
            let resp = proxy.admin("GET", path);
            expect_eq!(
                target,
                (resp.status, resp.content_type(), resp.body.as_str()),
                (405, TEXT, GET_REFUSED),
                "{target} GET {path}"
            );
            rows.extend(rows_of(&proxy, &format!("GET {path}"), &resp));
        }
        let running = proxy.is_running();
        rows.push(("running after the refused GETs".into(), running.to_string()));
        assert!(running, "{target}: exited after GET /quitquitquit");
        let ready = proxy.admin("GET", "/ready");
        rows.extend(rows_of(&proxy, "GET /ready after the refused GETs", &ready));
        rows.push((
            "server.live after the refused GETs".into(),
            stat_line(&proxy, "server.live"),
        ));
        expect_eq!(
            target,
            (ready.status, ready.body.as_str()),
            (200, "LIVE\n"),
            "{target}: /ready after the refused GETs"
        );
        expect_eq!(
            target,
            stat_line(&proxy, "server.live"),
            "server.live: 1",
            "{target}"
        );
        expect_eq!(
            target,
            proxy.client().cmd(&["SET", "still", "serving"]),
            Reply::ok(),
            "{target}"
        );
        rows
    });
}

/// `/healthcheck/fail`: `/ready` answers 503 `DRAINING`, `server.live` drops to 0 at once and
/// `server.state` becomes 1 (DRAINING) at the next stats flush; `/server_info` says
/// DRAINING; the listeners keep serving. `/healthcheck/ok` undoes all of it.
#[test]
fn healthcheck_fail_and_ok() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    let readiness_query =
        r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)";
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows = Rows::new();
        let state_of = |proxy: &Proxy| proxy.admin_json("/server_info")["state"].to_string();

        rows.extend(post_ok(&proxy, "/healthcheck/fail"));
        let ready = proxy.admin("GET", "/ready");
        expect_eq!(
            target,
            (ready.status, ready.body.as_str()),
            (503, "DRAINING\n"),
            "{target}: /ready after /healthcheck/fail"
        );
        rows.extend(rows_of(&proxy, "GET /ready (failed)", &ready));
        expect_eq!(
            target,
            stat_line(&proxy, "server.live"),
            "server.live: 0",
            "{target}: server.live right after /healthcheck/fail"
        );
        expect_that!(
            target,
            wait_stat_line(&proxy, "server.state", 1, FLUSH_TIMEOUT),
            "{target}: server.state did not become 1 (DRAINING) within {FLUSH_TIMEOUT:?} of \
             /healthcheck/fail; it is {}",
            stat_line(&proxy, "server.state")
        );
        rows.push((
            "server.live (failed)".into(),
            stat_line(&proxy, "server.live"),
        ));
        rows.push((
            "server.state (failed, after a flush)".into(),
            stat_line(&proxy, "server.state"),
        ));
        let agent = proxy.admin("GET", readiness_query);
        expect_eq!(
            target,
            agent.body,
            "listener_manager.workers_started: 1\nserver.state: 1\n",
            "{target}: pilot-agent readiness query while failed"
        );
        rows.extend(rows_of(&proxy, "pilot-agent query (failed)", &agent));
        expect_eq!(
            target,
            state_of(&proxy),
            "\"DRAINING\"",
            "{target}: /server_info state"
        );
        rows.push(("/server_info state (failed)".into(), state_of(&proxy)));
        expect_eq!(
            target,
            proxy.client().cmd(&["SET", "while", "failed"]),
            Reply::ok(),
            "{target}: the listener stops serving after /healthcheck/fail"
        );
        // Failing twice is fine.
        rows.extend(post_ok(&proxy, "/healthcheck/fail"));

        rows.extend(post_ok(&proxy, "/healthcheck/ok"));
        let ready = proxy.admin("GET", "/ready");
        expect_eq!(
            target,
            (ready.status, ready.body.as_str()),
            (200, "LIVE\n"),
            "{target}: /ready after /healthcheck/ok"
        );
        rows.extend(rows_of(&proxy, "GET /ready (ok again)", &ready));
        expect_eq!(
            target,
            stat_line(&proxy, "server.live"),
            "server.live: 1",
            "{target}: server.live right after /healthcheck/ok"
        );
        expect_that!(
            target,
            wait_stat_line(&proxy, "server.state", 0, FLUSH_TIMEOUT),
            "{target}: server.state did not go back to 0 within {FLUSH_TIMEOUT:?} of \
             /healthcheck/ok; it is {}",
            stat_line(&proxy, "server.state")
        );
        rows.push(("server.live (ok)".into(), stat_line(&proxy, "server.live")));
        rows.push((
            "server.state (ok)".into(),
            stat_line(&proxy, "server.state"),
        ));
        expect_eq!(
            target,
            state_of(&proxy),
            "\"LIVE\"",
            "{target}: /server_info state"
        );
        rows.extend(post_ok(&proxy, "/healthcheck/ok"));
        rows
    });
}

/// Two listeners: `inbound` (`traffic_direction: INBOUND`) on `{{LISTENER_PORT}}` and `plain`
/// (no direction) on `{{LISTENER_PORT_1}}`, both to one cluster.
fn two_listener_bootstrap(redis: &RedisServer) -> String {
    format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:{}{}\n  clusters:\n  - name: redis\n    connect_timeout: 1s\n    type: STATIC\n    lb_policy: RING_HASH\n    load_assignment:\n      cluster_name: redis\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]\n",
        redis_listener_yaml(
            "inbound",
            "{{LISTENER_PORT}}",
            &["traffic_direction: INBOUND"],
            "redis"
        ),
        redis_listener_yaml("plain", "{{LISTENER_PORT_1}}", &[], "redis"),
        redis.port()
    )
}

/// `/drain_listeners?inboundonly&graceful` (what pilot-agent sends on SIGTERM): only the
/// INBOUND listener stops, after the drain time; a listener without `traffic_direction` keeps
/// serving, and `/ready` stays LIVE. A plain `/drain_listeners` then stops the rest at once,
/// without ending the process.
#[test]
fn drain_listeners_inbound_only_graceful() {
    let redis = RedisServer::start();
    let yaml = two_listener_bootstrap(&redis);
    same_on_all_targets(&targets(), |target| {
        let options = ProxyOptions {
            args: vec!["--drain-time-s".into(), DRAIN_TIME_S.into()],
            ..ProxyOptions::default()
        };
        let mut proxy = Proxy::start_with(target, &yaml, &options);
        let (inbound, plain) = (proxy.listener_port(0), proxy.listener_port(1));
        let mut rows = Rows::new();
        let ping = |port: u16| redvoy_test_util::RespClient::connect(port).cmd(&["PING"]);
        expect_eq!(
            target,
            ping(inbound),
            Reply::simple("PONG"),
            "{target}: inbound"
        );

        rows.extend(post_ok(&proxy, "/drain_listeners?inboundonly&graceful"));
        let closed = try_wait_for(CLOSE_TIMEOUT, || (!port_open(inbound)).then_some(()));
        rows.push((
            "inbound listener closed".into(),
            closed.is_some().to_string(),
        ));
        rows.push((
            "plain listener after the inbound drain".into(),
            format!("{:?}", ping(plain)),
        ));
        expect_that!(
            target,
            closed.is_some(),
            "{target}: the INBOUND listener still accepts {CLOSE_TIMEOUT:?} after a graceful \
             inbound-only drain with --drain-time-s {DRAIN_TIME_S}"
        );
        expect_eq!(
            target,
            ping(plain),
            Reply::simple("PONG"),
            "{target}: a listener without traffic_direction must not be drained by ?inboundonly"
        );
        let ready = proxy.admin("GET", "/ready");
        expect_eq!(
            target,
            (ready.status, ready.body.as_str()),
            (200, "LIVE\n"),
            "{target}: /ready during the drain"
        );
        rows.extend(rows_of(&proxy, "GET /ready (inbound drained)", &ready));
        expect_that!(
            target,
            wait_stat_line(
                &proxy,
                "listener_manager.listener_stopped",
                1,
                CLOSE_TIMEOUT
            ),
            "{target}: {}",
            stat_line(&proxy, "listener_manager.listener_stopped")
        );
        for name in [
            "listener_manager.listener_stopped",
            "listener_manager.total_listeners_active",
            "listener_manager.total_listeners_draining",
            "server.live",
        ] {
            rows.push((format!("{name} (inbound drained)"), stat_line(&proxy, name)));
        }
        let listeners = proxy.admin("GET", "/listeners");
        rows.extend(rows_of(
            &proxy,
            "GET /listeners (inbound drained)",
            &listeners,
        ));

        rows.extend(post_ok(&proxy, "/drain_listeners"));
        let closed = try_wait_for(CLOSE_TIMEOUT, || (!port_open(plain)).then_some(()));
        rows.push(("plain listener closed".into(), closed.is_some().to_string()));
        let running = proxy.is_running();
        rows.push(("running after /drain_listeners".into(), running.to_string()));
        expect_that!(
            target,
            closed.is_some(),
            "{target}: a plain /drain_listeners left the listener open"
        );
        expect_that!(
            target,
            running,
            "{target}: /drain_listeners (no skip_exit) must not end the process"
        );
        expect_that!(
            target,
            wait_stat_line(
                &proxy,
                "listener_manager.listener_stopped",
                2,
                CLOSE_TIMEOUT
            ),
            "{target}: {}",
            stat_line(&proxy, "listener_manager.listener_stopped")
        );
        let ready = proxy.admin("GET", "/ready");
        rows.extend(rows_of(&proxy, "GET /ready (all drained)", &ready));
        rows.push((
            "listener_stopped (all drained)".into(),
            stat_line(&proxy, "listener_manager.listener_stopped"),
        ));
        rows
    });
}

/// `/logging` parsed: `active loggers:` then `  <name>: <level>` lines; anything else (usage
/// and error text) is returned as `text`.
struct Loggers {
    levels: BTreeMap<String, String>,
    text: String,
}

fn parse_loggers(body: &str) -> Loggers {
    let mut levels = BTreeMap::new();
    let mut text = String::new();
    let mut in_list = false;
    for line in body.lines() {
        if line == "active loggers:" {
            in_list = true;
            text.push_str(line);
            text.push('\n');
        } else if let (true, Some((name, level))) = (
            in_list,
            line.strip_prefix("  ").and_then(|l| l.split_once(": ")),
        ) {
            levels.insert(name.to_string(), level.to_string());
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    Loggers { levels, text }
}

/// `POST /logging`: the list of Envoy's loggers; `?level=` sets all, `?paths=a:l,b:l` and
/// `?<name>=<level>` set some; unknown levels and names are 400 with the usage text.
#[test]
fn logging_list_and_levels() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows = Rows::new();
        // The harness starts the two binaries at different levels: set one first.
        let steps: [(&str, u16); 7] = [
            ("/logging?level=debug", 200),
            ("/logging", 200),
            ("/logging?paths=redis:trace,admin:error", 200),
            ("/logging?upstream=info", 200),
            ("/logging?level=bogus", 400),
            ("/logging?paths=no_such_logger:info", 400),
            ("/logging?no_such_logger=info", 400),
        ];
        for (path, status) in steps {
            let resp = proxy.admin("POST", path);
            expect_eq!(
                target,
                (resp.status, resp.content_type()),
                (status, TEXT),
                "{target} POST {path}: {}",
                resp.body
            );
            let parsed = parse_loggers(&resp.body);
            let label = format!("POST {path}");
            rows.push((format!("{label} status"), resp.status.to_string()));
            rows.push((format!("{label} text"), parsed.text.clone()));
            rows.extend(
                parsed
                    .levels
                    .iter()
                    .map(|(name, level)| (format!("{label} logger {name}"), level.clone())),
            );
            let level_of = |name: &str| parsed.levels.get(name).map(String::as_str);
            match path {
                "/logging?level=debug" | "/logging" => expect_that!(
                    target,
                    !parsed.levels.is_empty() && parsed.levels.values().all(|l| l == "debug"),
                    "{target} POST {path}: not all debug: {:?}",
                    parsed.levels
                ),
                "/logging?paths=redis:trace,admin:error" => expect_eq!(
                    target,
                    (level_of("redis"), level_of("admin"), level_of("upstream")),
                    (Some("trace"), Some("error"), Some("debug")),
                    "{target} POST {path}"
                ),
                "/logging?upstream=info" => {
                    expect_eq!(
                        target,
                        level_of("upstream"),
                        Some("info"),
                        "{target} POST {path}"
                    )
                }
                "/logging?level=bogus" => expect_that!(
                    target,
                    parsed.text.starts_with("error: unknown logger level\n"),
                    "{target} POST {path}: {}",
                    resp.body
                ),
                _ => expect_that!(
                    target,
                    parsed.text.starts_with("error: unknown logger name\n"),
                    "{target} POST {path}: {}",
                    resp.body
                ),
            }
        }
        rows
    });
}

/// `/reset_counters`: counters go to zero, gauges keep their value.
#[test]
fn reset_counters() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        expect_eq!(
            target,
            client.cmd(&["SET", "r", "1"]),
            Reply::ok(),
            "{target}"
        );
        expect_eq!(
            target,
            client.cmd(&["GET", "r"]),
            Reply::bulk("1"),
            "{target}"
        );
        let _ = try_wait_for(CLOSE_TIMEOUT, || {
            (proxy.stats().get_int("redis.redis.command.get.total") == Some(1)).then_some(())
        });
        let mut rows = post_ok(&proxy, "/reset_counters");
        let stats = proxy.normalized_stats();
        for (name, value) in [
            ("redis.redis.command.get.total", 0),
            ("redis.redis.command.set.success", 0),
            ("redis.redis.downstream_cx_total", 0),
            ("redis.redis.downstream_rq_total", 0),
            ("cluster.redis.upstream_rq_total", 0),
            // Gauges are not reset: the client and its pooled upstream connection are open.
            ("redis.redis.downstream_cx_active", 1),
            ("cluster.redis.upstream_cx_active", 1),
            (
                "listener.127.0.0.1_{{LISTENER_PORT}}.downstream_cx_active",
                1,
            ),
            ("server.live", 1),
            ("listener_manager.workers_started", 1),
        ] {
            expect_eq!(
                target,
                stats.get_int(name),
                Some(value),
                "{target}: {name} after /reset_counters"
            );
        }
        rows.extend(
            stats
                .values
                .into_iter()
                .filter(|(k, _)| {
                    ["redis.", "cluster.", "listener."]
                        .iter()
                        .any(|p| k.starts_with(p))
                        && !k.starts_with("listener.admin.")
                })
                .filter(|(_, v)| v.parse::<u64>().is_ok()),
        );
        // Counting resumes from zero.
        expect_eq!(
            target,
            client.cmd(&["GET", "r"]),
            Reply::bulk("1"),
            "{target}"
        );
        let resumed = try_wait_for(CLOSE_TIMEOUT, || {
            (proxy.stats().get_int("redis.redis.command.get.total") == Some(1)).then_some(())
        });
        rows.push((
            "command.get.total counts again from 0".into(),
            resumed.is_some().to_string(),
        ));
        rows
    });
}

/// `/runtime_modify` with an admin layer: `?key=value` adds overrides that `/runtime` lists
/// (with their per-layer values), an empty value removes one; no parameters is 400 with the
/// usage text.
#[test]
fn runtime_modify_with_an_admin_layer() {
    let redis = RedisServer::start();
    let yaml = format!(
        "{}\n{}",
        dedent(
            "
            layered_runtime:
              layers:
              - {name: static, static_layer: {redis.drain_close_enabled: 1, some.flag: true}}
              - {name: admin, admin_layer: {}}
            "
        ),
        simple_bootstrap("RING_HASH", &[redis.port()])
    );
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows = Rows::new();
        let runtime = |proxy: &Proxy, label: &str| -> Rows {
            let json = proxy.admin_json("/runtime");
            json_leaves(&json, &[])
                .into_iter()
                .map(|(k, v)| (format!("{label} {k}"), v))
                .collect()
        };
        rows.extend(runtime(&proxy, "initial"));
        rows.extend(post_ok(
            &proxy,
            "/runtime_modify?redis.fault_enabled=1&foo.bar=hello",
        ));
        let json = proxy.admin_json("/runtime");
        expect_eq!(
            target,
            json["entries"]["foo.bar"]["final_value"],
            "hello",
            "{target}: /runtime after /runtime_modify: {json}"
        );
        expect_eq!(
            target,
            json["layers"],
            serde_json::json!(["static", "admin"]),
            "{target}: /runtime layers"
        );
        rows.extend(runtime(&proxy, "modified"));
        rows.push((
            "runtime.admin_overrides_active".into(),
            stat_line(&proxy, "runtime.admin_overrides_active"),
        ));
        rows.push((
            "runtime.num_keys".into(),
            stat_line(&proxy, "runtime.num_keys"),
        ));
        rows.extend(post_ok(&proxy, "/runtime_modify?foo.bar="));
        let json = proxy.admin_json("/runtime");
        expect_that!(
            target,
            json["entries"].get("foo.bar").is_none(),
            "{target}: an empty value must remove the override: {json}"
        );
        rows.extend(runtime(&proxy, "removed"));
        let usage = proxy.admin("POST", "/runtime_modify");
        expect_eq!(
            target,
            usage.status,
            400,
            "{target}: POST /runtime_modify: {}",
            usage.body
        );
        rows.extend(rows_of(&proxy, "POST /runtime_modify", &usage));
        rows
    });
}

/// `/runtime_modify` without an admin layer in `layered_runtime`: 503 `No admin layer
/// specified`.
#[test]
fn runtime_modify_without_an_admin_layer_is_503() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("POST", "/runtime_modify?redis.fault_enabled=1");
        expect_eq!(
            target,
            (resp.status, resp.body.as_str()),
            (503, "No admin layer specified"),
            "{target}"
        );
        let mut rows = rows_of(&proxy, "POST /runtime_modify?redis.fault_enabled=1", &resp);
        let mut runtime = proxy.admin("GET", "/runtime");
        // Envoy prints `layers` and `entries` in hash order, which varies between runs.
        let parsed: serde_json::Value = serde_json::from_str(&runtime.body)
            .unwrap_or_else(|e| panic!("{target}: /runtime is not JSON ({e}): {}", runtime.body));
        runtime.body = parsed.to_string();
        rows.extend(rows_of(&proxy, "GET /runtime", &runtime));
        rows
    });
}

/// `POST /quitquitquit`: `200 OK`, then the process exits with status 0 and its listener and
/// admin ports are closed.
#[test]
fn quitquitquit_exits_cleanly() {
    let redis = RedisServer::start();
    let yaml = simple_bootstrap("RING_HASH", &[redis.port()]);
    same_on_all_targets(&targets(), |target| {
        let mut proxy = Proxy::start(target, &yaml, &[]);
        // An open client must not hold the exit up.
        let mut client = proxy.client();
        expect_eq!(
            target,
            client.cmd(&["SET", "q", "1"]),
            Reply::ok(),
            "{target}"
        );
        let rows = post_ok(&proxy, "/quitquitquit");
        let status = proxy.wait_exit(CLOSE_TIMEOUT).unwrap_or_else(|| {
            panic!("{target} still runs {CLOSE_TIMEOUT:?} after POST /quitquitquit")
        });
        let mut rows = rows;
        rows.push(("exit code".into(), format!("{:?}", status.code())));
        expect_eq!(
            target,
            status.code(),
            Some(0),
            "{target}: exit status after /quitquitquit: {status:?}"
        );
        for (what, port) in [("listener", proxy.port()), ("admin", proxy.admin_port())] {
            rows.push((
                format!("{what} port open after the exit"),
                port_open(port).to_string(),
            ));
            expect_that!(
                target,
                !port_open(port),
                "{target}: the {what} port {port} still accepts after the exit"
            );
        }
        rows
    });
}
