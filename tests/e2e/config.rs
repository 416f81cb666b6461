//! Bootstrap loading: the published article config unchanged but for its addresses,
//! `--mode validate` exit codes, `--config-yaml` merging, and the minimal admin endpoints.

use std::time::Duration;

use redvoy_test_util::{
    dedent, http, simple_bootstrap, try_wait_for, validate, wait_for, Level, Proxy, ProxyOptions,
    RedisServer, Reply, Target,
};

use crate::targets;

/// Bound on a mirrored write reaching the mirror.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// The config from the article on Redis sidecar replication (issue 2), verbatim but for the
/// ports and the DNS names, which point at the test's redis-servers through `localhost`.
const ARTICLE: &str = r#"
admin:
  access_log_path: "/dev/null"
  address: {socket_address: {address: 0.0.0.0, port_value: 8001}}
static_resources:
  listeners:
  - name: redis_listener
    address: {socket_address: {address: 0.0.0.0, port_value: 6380}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          prefix_routes:
            routes:
            - cluster: redis-envoy-001
              prefix: ""
              request_mirror_policy:
              - cluster: redis-envoy-002
                exclude_read_commands: true
          stat_prefix: egress_redis
          settings: {op_timeout: 5s, enable_redirection: true}
  clusters:
  - name: redis-envoy-001
    connect_timeout: 0.25s
    type: STRICT_DNS
    lb_policy: MAGLEV
    load_assignment:
      cluster_name: redis-envoy-001
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: redis-envoy-001, port_value: 6379}}}}]}]
  - name: redis-envoy-002
    connect_timeout: 0.25s
    type: STRICT_DNS
    lb_policy: MAGLEV
    load_assignment:
      cluster_name: redis-envoy-002
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: redis-envoy-002, port_value: 6379}}}}]}]
"#;

fn article(primary: u16, mirror: u16) -> String {
    ARTICLE
        .replace("port_value: 8001", "port_value: {{ADMIN_PORT}}")
        .replace("port_value: 6380", "port_value: {{LISTENER_PORT}}")
        .replace(
            "address: redis-envoy-001, port_value: 6379",
            &format!("address: localhost, port_value: {primary}"),
        )
        .replace(
            "address: redis-envoy-002, port_value: 6379",
            &format!("address: localhost, port_value: {mirror}"),
        )
}

#[test]
fn article_config_loads_and_mirrors_writes_only() {
    let primary = RedisServer::start();
    let mirror = RedisServer::start();
    for target in targets() {
        for server in [&primary, &mirror] {
            server.flushall();
            assert_eq!(server.cmd(&["CONFIG", "RESETSTAT"]), Reply::ok());
        }
        let proxy = Proxy::start(target, &article(primary.port(), mirror.port()), &[]);
        let mut client = proxy.client();
        assert_eq!(
            client.cmd(&["SET", "article:k", "v1"]),
            Reply::ok(),
            "{target}"
        );
        assert_eq!(
            client.cmd(&["INCR", "article:n"]),
            Reply::int(1),
            "{target}"
        );
        assert_eq!(
            client.cmd(&["GET", "article:k"]),
            Reply::bulk("v1"),
            "{target}"
        );
        assert_eq!(
            client.cmd(&["MGET", "article:k", "article:none"]),
            Reply::Array(vec![Reply::bulk("v1"), Reply::Null]),
            "{target}"
        );
        // Writes reach the mirror (asynchronously), reads never do.
        wait_for(
            MIRROR_TIMEOUT,
            &format!("{target}: mirrored SET and INCR"),
            || {
                // MGET here, so that `cmdstat_get` on the mirror counts only the proxy's GETs.
                let both = Reply::Array(vec![Reply::bulk("v1"), Reply::bulk("1")]);
                (mirror.cmd(&["MGET", "article:k", "article:n"]) == both).then_some(())
            },
        );
        assert_eq!(mirror.command_calls("get"), 0, "{target}: GET was mirrored");
        assert_eq!(
            primary.command_calls("get"),
            3,
            "{target}: GET + two MGET fragments on the primary"
        );
        assert_eq!(
            mirror.command_calls("incr"),
            1,
            "{target}: INCR mirrored once"
        );
        let stats = proxy.stats();
        assert_eq!(
            stats.int("redis.egress_redis.command.set.total"),
            1,
            "{target}"
        );
        assert_eq!(
            stats.int("redis.egress_redis.command.get.total"),
            1,
            "{target}"
        );
        assert_eq!(
            stats.int("redis.egress_redis.command.mget.total"),
            1,
            "{target}"
        );

        // A dead mirror does not affect clients.
        let mut mirror_down = RedisServer::start();
        let proxy2 = Proxy::start(target, &article(primary.port(), mirror_down.port()), &[]);
        mirror_down.stop();
        let mut client2 = proxy2.client();
        assert_eq!(
            client2.cmd(&["SET", "article:k2", "v2"]),
            Reply::ok(),
            "{target}"
        );
        assert_eq!(
            client2.cmd(&["GET", "article:k2"]),
            Reply::bulk("v2"),
            "{target}"
        );
    }
}

/// Exit status of `--mode validate` for a bootstrap.
fn validates(target: Target, yaml: &str) -> bool {
    let out = validate(target, yaml, &[]);
    eprintln!(
        "{target} --mode validate -> {:?}\n{}",
        out.status,
        out.log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    out.status.success()
}

#[test]
fn validate_mode_exit_codes() {
    let good = simple_bootstrap("MAGLEV", &[6379]);
    let unknown_filter = good
        .replace(
            "name: envoy.filters.network.redis_proxy",
            "name: envoy.filters.network.no_such_filter",
        )
        .replace(
            "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
            "type.googleapis.com/envoy.extensions.filters.network.no_such.v3.NoSuch",
        );
    let unknown_field = good.replace(
        "stat_prefix: redis",
        "stat_prefix: redis\n          no_such_field: 1",
    );
    let unknown_cluster_type = good.replace("type: STATIC", "type: NO_SUCH_TYPE");
    let no_op_timeout = good.replace(
        "settings: {op_timeout: 5s}",
        "settings: {enable_hashtagging: true}",
    );
    let no_upstream = good.replace(
        "prefix_routes:\n            catch_all_route: {cluster: redis}",
        "prefix_routes: {}",
    );
    assert_ne!(no_upstream, good);
    let bad_yaml = good.replace("static_resources:", "static_resources: [");
    let cases: Vec<(&str, &str, bool)> = vec![
        ("good", &good, true),
        ("article", ARTICLE, true),
        ("unknown filter", &unknown_filter, false),
        ("unknown field in RedisProxy", &unknown_field, false),
        ("unknown cluster type", &unknown_cluster_type, false),
        ("settings without op_timeout", &no_op_timeout, false),
        ("no upstream at all", &no_upstream, false),
        ("malformed YAML", &bad_yaml, false),
    ];
    for target in targets() {
        for (name, yaml, ok) in &cases {
            assert_eq!(
                validates(target, yaml),
                *ok,
                "{target}: --mode validate on {name}"
            );
        }
    }
}

/// `--config-yaml` is merged over the file: here it moves the admin port.
#[test]
fn config_yaml_is_merged_over_the_file() {
    let redis = RedisServer::start();
    let file = simple_bootstrap("MAGLEV", &[redis.port()]).replace("{{ADMIN_PORT}}", "1");
    for target in targets() {
        let options = ProxyOptions {
            args: vec![
                "--config-yaml".into(),
                "admin: {address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}}".into(),
            ],
            ..ProxyOptions::default()
        };
        let proxy = Proxy::start_with(target, &file, &options);
        assert_eq!(
            proxy.client().cmd(&["SET", "merged", "1"]),
            Reply::ok(),
            "{target}"
        );
    }
}

#[test]
fn admin_ready_stats_and_quitquitquit() {
    let redis = RedisServer::start();
    for target in targets() {
        let mut proxy = Proxy::start(target, &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
        let ready = proxy.admin("GET", "/ready");
        assert_eq!(
            (ready.status, ready.body.trim()),
            (200, "LIVE"),
            "{target}: /ready"
        );
        assert_eq!(proxy.client().cmd(&["GET", "x"]), Reply::Null, "{target}");
        let stats = proxy.admin("GET", "/stats");
        assert!(
            stats
                .body
                .lines()
                .any(|l| l == "redis.redis.command.get.total: 1"),
            "{target}: /stats lacks `redis.redis.command.get.total: 1`"
        );
        let filtered = proxy.admin("GET", "/stats?filter=redis.redis.command.get");
        assert!(
            filtered
                .body
                .lines()
                .all(|l| l.starts_with("redis.redis.command.get")),
            "{target}: {}",
            filtered.body
        );
        proxy.expect_log(
            Level::Error,
            "admin path mutates state, method is not POST path=\"/quitquitquit\" method=GET",
        );
        let get_quit = proxy.admin("GET", "/quitquitquit");
        assert_eq!(get_quit.status, 405, "{target}: GET /quitquitquit");
        let admin_port = proxy.admin_port();
        let status = proxy.quit();
        assert!(
            status.success(),
            "{target}: exit status after /quitquitquit: {status:?}"
        );
        assert!(
            http(admin_port, "GET", "/ready").is_err(),
            "{target}: admin still up"
        );
    }
}

/// A bootstrap given as JSON (`.json` is not needed: YAML is a superset) loads the same way.
#[test]
fn json_bootstrap_loads() {
    let redis = RedisServer::start();
    let json = dedent(&format!(
        r#"
        {{"admin": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": {{{{ADMIN_PORT}}}}}}}}}},
         "static_resources": {{
           "listeners": [{{"name": "l", "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": {{{{LISTENER_PORT}}}}}}}},
             "filter_chains": [{{"filters": [{{"name": "envoy.filters.network.redis_proxy",
               "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
                 "stat_prefix": "json", "settings": {{"op_timeout": "5s"}},
                 "prefix_routes": {{"catch_all_route": {{"cluster": "c"}}}}}}}}]}}]}}],
           "clusters": [{{"name": "c", "connect_timeout": "1s", "type": "STATIC", "lb_policy": "RING_HASH",
             "load_assignment": {{"cluster_name": "c", "endpoints": [{{"lb_endpoints": [
               {{"endpoint": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": {port}}}}}}}}}]}}]}}}}]}}}}
        "#,
        port = redis.port()
    ));
    for target in targets() {
        let proxy = Proxy::start(target, &json, &[]);
        assert_eq!(
            proxy.client().cmd(&["SET", "j", "1"]),
            Reply::ok(),
            "{target}"
        );
        let done = try_wait_for(Duration::from_secs(5), || {
            (proxy.stats().get_int("redis.json.command.set.total") == Some(1)).then_some(())
        });
        assert!(done.is_some(), "{target}: redis.json.command.set.total");
    }
}

/// Every bundled example bootstrap passes `--mode validate`.
#[test]
fn bundled_examples_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut examples: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no examples in {}", dir.display());
    // examples/tls-redis.yaml reads its credentials from the environment, as documented.
    std::env::set_var("REDIS_USERNAME", "app");
    std::env::set_var("REDIS_PASSWORD", "example");
    for target in targets() {
        for path in &examples {
            let yaml = std::fs::read_to_string(path).unwrap();
            let out = validate(target, &yaml, &[]);
            assert!(
                out.status.success(),
                "{target}: {} does not validate:\n{}",
                path.display(),
                out.log
            );
        }
    }
}
