//! The read-only admin endpoints, one test each: status code, content type and body shape must
//! be Envoy 1.40's (issue 3). Each test runs its scenario on every target and compares the
//! observations. Values observed on Envoy and written here are asserted (`expect_eq!`) on
//! Envoy, and on redvoy only when Envoy does not run (`REDVOY_TEST_TARGETS=redvoy`): with both,
//! the row comparison lists every difference at once.
//!
//! Bodies are compared with this run's ports and temp dir replaced by placeholders
//! (`Proxy::normalize`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use redvoy_test_util::{
    abbrev, expect_eq, expect_that, free_port, json_leaves, json_shape, same_on_all_targets,
    try_wait_for, two_cluster_bootstrap, HttpResponse, Proxy, RedisServer, Reply, Rows, Stats,
    Target,
};

use crate::targets;

/// Envoy's content types.
const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=UTF-8";

/// Bound on the proxy accounting for a closed client connection.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A GET, a SET and a GET to the down cluster on one connection, then waits until the proxy
/// has accounted for the closed connection.
fn light_traffic(proxy: &Proxy) {
    let target = proxy.target();
    {
        let mut c = proxy.client();
        expect_eq!(target, c.cmd(&["SET", "k", "v"]), Reply::ok(), "{target}");
        expect_eq!(target, c.cmd(&["GET", "k"]), Reply::bulk("v"), "{target}");
        expect_eq!(
            target,
            c.cmd(&["GET", "down:k"]),
            Reply::err("upstream failure"),
            "{target}"
        );
    }
    // A gauge that never gets there (or is missing) shows in the comparison, not here.
    let _ = try_wait_for(SETTLE_TIMEOUT, || {
        (proxy.stats().get_int("redis.redis.downstream_cx_active") == Some(0)).then_some(())
    });
}

/// `(label status, label content-type)` rows.
fn head_rows(label: &str, resp: &HttpResponse) -> Rows {
    vec![
        (format!("{label} status"), resp.status.to_string()),
        (
            format!("{label} content-type"),
            resp.content_type().to_string(),
        ),
    ]
}

/// Status, content type and the (normalized) body.
fn full_rows(proxy: &Proxy, label: &str, resp: &HttpResponse) -> Rows {
    let mut rows = head_rows(label, resp);
    rows.push((format!("{label} body"), proxy.normalize(&resp.body)));
    rows
}

fn parse_json(target: Target, label: &str, resp: &HttpResponse) -> Value {
    serde_json::from_str(&resp.body).unwrap_or_else(|e| {
        panic!(
            "{target} {label}: status {}, not JSON ({e}): {}",
            resp.status,
            abbrev(&resp.body, 300)
        )
    })
}

fn prefixed(label: &str, rows: Rows) -> Rows {
    rows.into_iter()
        .map(|(k, v)| (format!("{label} {k}"), v))
        .collect()
}

/// `GET /`: Envoy's HTML home page, with a link or form for every endpoint.
#[test]
fn home_page() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/");
        expect_eq!(
            target,
            (resp.status, resp.content_type()),
            (200, HTML),
            "{target} GET /"
        );
        let mut rows = head_rows("GET /", &resp);
        // The endpoints the page points at: `href='stats'`, `action='logging'`...
        let mut targets_linked = BTreeSet::new();
        for attr in ["href='", "action='"] {
            for piece in resp.body.split(attr).skip(1) {
                let link = piece.split('\'').next().unwrap_or("");
                if !link.starts_with("data:") && !link.starts_with("http") {
                    targets_linked.insert(link.to_string());
                }
            }
        }
        for link in [
            "stats",
            "config_dump",
            "clusters",
            "logging",
            "quitquitquit",
        ] {
            expect_that!(
                target,
                targets_linked.contains(link),
                "{target} GET /: no link or form for {link}: {targets_linked:?}"
            );
        }
        rows.extend(
            targets_linked
                .into_iter()
                .map(|l| (format!("GET / links to {l}"), "yes".to_string())),
        );
        rows.push((
            "GET / title".into(),
            resp.body
                .split("<title>")
                .nth(1)
                .and_then(|t| t.split("</title>").next())
                .unwrap_or("<none>")
                .to_string(),
        ));
        rows
    });
}

/// `GET /help`: `admin commands are:` then one `  /path: description` line per endpoint
/// (`(POST)` after mutating ones) with its parameters indented below.
#[test]
fn help() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/help");
        expect_eq!(
            target,
            (resp.status, resp.content_type()),
            (200, TEXT),
            "{target} GET /help"
        );
        expect_eq!(
            target,
            resp.body.lines().next(),
            Some("admin commands are:"),
            "{target} GET /help"
        );
        let mut rows = head_rows("GET /help", &resp);
        rows.push((
            "GET /help first line".into(),
            resp.body.lines().next().unwrap_or("").to_string(),
        ));
        let mut current: Option<(String, String)> = None;
        for line in resp.body.lines().skip(1) {
            if let Some(entry) = line.strip_prefix("  /") {
                rows.extend(current.take());
                let path = entry.split([':', ' ']).next().unwrap_or("");
                current = Some((format!("/help /{path}"), line.to_string()));
            } else if let Some((_, text)) = current.as_mut() {
                text.push('\n');
                text.push_str(line);
            } else {
                rows.push(("/help stray line".into(), line.to_string()));
            }
        }
        rows.extend(current);
        for path in ["/stats", "/config_dump", "/quitquitquit", "/ready"] {
            expect_that!(
                target,
                rows.iter().any(|(k, _)| k == &format!("/help {path}")),
                "{target}: /help does not list {path}"
            );
        }
        rows
    });
}

/// An unknown path: 404 with `invalid path. ` and the help text.
#[test]
fn unknown_path_is_404_with_the_help_text() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/no_such_endpoint");
        expect_eq!(
            target,
            resp.status,
            404,
            "{target}: {}",
            abbrev(&resp.body, 300)
        );
        expect_that!(
            target,
            resp.body.starts_with("invalid path. admin commands are:\n"),
            "{target}: {}",
            resp.body
        );
        let help = proxy.admin("GET", "/help");
        let mut rows = head_rows("GET /no_such_endpoint", &resp);
        rows.push((
            "404 body = `invalid path. ` + /help body".into(),
            (resp.body == format!("invalid path. {}", help.body)).to_string(),
        ));
        rows
    });
}

/// `/ready`: 200 `LIVE\n`, for GET, HEAD and POST alike.
#[test]
fn ready() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows = Rows::new();
        for method in ["GET", "HEAD", "POST"] {
            let resp = proxy.admin(method, "/ready");
            let label = format!("{method} /ready");
            if method != "HEAD" {
                expect_eq!(
                    target,
                    (resp.status, resp.body.as_str()),
                    (200, "LIVE\n"),
                    "{target} {label}"
                );
            }
            rows.extend(full_rows(&proxy, &label, &resp));
        }
        rows
    });
}

/// `/server_info`: the `admin.v3.ServerInfo` keys; `state`, the command-line options and the
/// node as Envoy fills them from the flags.
#[test]
fn server_info() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    let flags = [
        "--service-node",
        "node-1",
        "--service-cluster",
        "cluster-1",
        "--service-zone",
        "zone-1",
    ];
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &flags);
        let resp = proxy.admin("GET", "/server_info");
        expect_eq!(
            target,
            (resp.status, resp.content_type()),
            (200, JSON),
            "{target} GET /server_info"
        );
        let info = parse_json(target, "/server_info", &resp);
        let mut rows = head_rows("GET /server_info", &resp);
        let obj = info
            .as_object()
            .unwrap_or_else(|| panic!("{target}: /server_info is not an object: {info}"));
        rows.push((
            "keys".into(),
            obj.keys().cloned().collect::<Vec<_>>().join(" "),
        ));
        expect_eq!(
            target,
            info["state"],
            "LIVE",
            "{target}: /server_info state"
        );
        rows.push(("state".into(), info["state"].to_string()));
        rows.push((
            "hot_restart_version".into(),
            info["hot_restart_version"].to_string(),
        ));
        for key in ["uptime_current_epoch", "uptime_all_epochs"] {
            let ok = info[key]
                .as_str()
                .and_then(|s| s.strip_suffix('s'))
                .is_some_and(|n| n.parse::<u64>().is_ok());
            rows.push((format!("{key} is whole seconds like `3s`"), ok.to_string()));
            expect_that!(
                target,
                ok,
                "{target}: {key} is not a duration like `3s`: {}",
                info[key]
            );
        }
        let version = info["version"].as_str().unwrap_or_default();
        rows.push((
            "version `/`-separated segments".into(),
            version.split('/').count().to_string(),
        ));
        expect_eq!(
            target,
            version.split('/').count(),
            5,
            "{target}: version is not `<sha>/<x.y.z>/<status>/<build type>/<ssl>`: {version:?}"
        );
        // Every command-line option, with its value: the harness passes `-l warning` to Envoy
        // and `-l info` to redvoy, so `log_level` is compared by presence only.
        let mut options = info["command_line_options"].clone();
        expect_that!(
            target,
            options.is_object(),
            "{target}: no command_line_options object"
        );
        expect_eq!(
            target,
            options["concurrency"],
            1,
            "{target}: command_line_options.concurrency"
        );
        expect_eq!(
            target,
            options["service_node"],
            "node-1",
            "{target}: command_line_options.service_node"
        );
        if let Some(level) = options.get_mut("log_level") {
            *level = Value::String("<as passed>".into());
        }
        let mut options_rows = json_leaves(&options, &[]);
        for (_, v) in &mut options_rows {
            *v = proxy.normalize(v);
        }
        rows.extend(prefixed("command_line_options", options_rows));
        // The node: id, cluster and locality from the flags, Envoy's user agent; the build
        // version and extension list by shape.
        let node = &info["node"];
        expect_eq!(target, node["id"], "node-1", "{target}: node.id");
        expect_eq!(
            target,
            node["cluster"],
            "cluster-1",
            "{target}: node.cluster"
        );
        for key in ["id", "cluster", "locality", "user_agent_name"] {
            rows.push((format!("node.{key}"), node[key].to_string()));
        }
        rows.extend(prefixed("node shape", json_shape(node, &[])));
        rows
    });
}

/// `/config_dump` with the query strings istioctl, bug-report and pilot-agent send, plus
/// `resource=`, `name_regex=` and the error cases.
#[test]
fn config_dump_queries() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    let queries = [
        "",
        "?mask=dynamic_active_clusters,dynamic_warming_clusters,static_clusters",
        "?mask=dynamic_listeners,static_listeners",
        "?mask=dynamic_route_configs,static_route_configs",
        "?mask=dynamic_active_secrets,dynamic_warming_secrets",
        "?mask=bootstrap",
        "?include_eds",
        "?include_eds=true",
        "?include_eds=true&mask=static_endpoint_configs",
        "?resource=static_clusters",
        "?resource=static_listeners&mask=listener.name",
        "?resource=static_clusters&name_regex=^redis$",
        "?resource=static_listeners&name_regex=redis",
        "?name_regex=^down$&mask=static_clusters",
        "?resource=no_such_field",
        "?mask=no_such_field",
    ];
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut rows = Rows::new();
        for query in queries {
            let label = format!("GET /config_dump{query}");
            let resp = proxy.admin("GET", &format!("/config_dump{query}"));
            rows.extend(head_rows(&label, &resp));
            if resp.status != 200 {
                rows.push((format!("{label} body"), resp.body.clone()));
                continue;
            }
            let mut dump = parse_json(target, &label, &resp);
            redvoy_test_util::normalize_json(&proxy, &mut dump);
            // The node (build details, extension list) is checked in `server_info`.
            strip_bootstrap_node(&mut dump);
            rows.extend(prefixed(&label, json_leaves(&dump, &["last_updated"])));
        }
        let full = proxy.admin_json("/config_dump");
        expect_that!(
            target,
            full["configs"].as_array().is_some_and(|c| c.len() >= 3),
            "{target}: /config_dump has fewer than 3 configs: {full}"
        );
        expect_eq!(
            target,
            proxy
                .admin("GET", "/config_dump?resource=no_such_field")
                .status,
            404,
            "{target}: unknown resource"
        );
        rows
    });
}

fn strip_bootstrap_node(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(b)) = map.get_mut("bootstrap") {
                b.remove("node");
            }
            map.values_mut().for_each(strip_bootstrap_node);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_bootstrap_node),
        _ => {}
    }
}

/// `/clusters` after traffic: per cluster its settings, per host its counters and flags, as
/// text lines (compared as a set: Envoy's cluster order is its hash map's) and as JSON.
#[test]
fn clusters() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        light_traffic(&proxy);
        let mut rows = Rows::new();
        for query in ["", "?filter=^red"] {
            let label = format!("GET /clusters{query}");
            let resp = proxy.admin("GET", &format!("/clusters{query}"));
            expect_eq!(
                target,
                (resp.status, resp.content_type()),
                (200, TEXT),
                "{target} {label}"
            );
            rows.extend(head_rows(&label, &resp));
            let lines: BTreeSet<String> = resp.body.lines().map(|l| proxy.normalize(l)).collect();
            let host = format!("redis::127.0.0.1:{}::", redis.port());
            for expected in [
                "redis::observability_name::redis".to_string(),
                "redis::added_via_api::false".to_string(),
                "redis::default_priority::max_connections::1024".to_string(),
                format!("{host}cx_total::1"),
                format!("{host}rq_total::2"),
                format!("{host}health_flags::healthy"),
            ] {
                expect_that!(
                    target,
                    lines.contains(&expected),
                    "{target} {label}: no line {expected:?} in\n{}",
                    resp.body
                );
            }
            // One row per line, labelled by the line: Envoy's cluster order is its hash map's.
            rows.extend(
                lines
                    .into_iter()
                    .map(|l| (format!("{label} line {l}"), "present".to_string())),
            );
        }
        let resp = proxy.admin("GET", "/clusters?format=json");
        expect_eq!(
            target,
            (resp.status, resp.content_type()),
            (200, JSON),
            "{target} /clusters?format=json"
        );
        let mut json = parse_json(target, "/clusters?format=json", &resp);
        redvoy_test_util::normalize_json(&proxy, &mut json);
        rows.extend(head_rows("GET /clusters?format=json", &resp));
        rows.extend(prefixed("json", json_leaves(&json, &[])));
        rows
    });
}

/// `/listeners`: `name::address` lines, and `?format=json`.
#[test]
fn listeners() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let text = proxy.admin("GET", "/listeners");
        expect_eq!(
            target,
            (text.status, proxy.normalize(&text.body).as_str()),
            (200, "redis_listener::127.0.0.1:{{LISTENER_PORT}}\n"),
            "{target} GET /listeners"
        );
        let mut rows = full_rows(&proxy, "GET /listeners", &text);
        for query in ["?format=json", "?format=text"] {
            let mut resp = proxy.admin("GET", &format!("/listeners{query}"));
            // JSON carries the port as a bare number, which `normalize` leaves alone.
            resp.body = resp
                .body
                .replace(&format!(": {}\n", proxy.port()), ": {{LISTENER_PORT}}\n");
            rows.extend(full_rows(&proxy, &format!("GET /listeners{query}"), &resp));
        }
        let json = proxy.admin_json("/listeners?format=json");
        expect_eq!(
            target,
            json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"],
            "{{LISTENER_PORT}}",
            "{target}: /listeners?format=json: {json}"
        );
        rows
    });
}

/// `/stats` with the exact query strings pilot-agent sends (unencoded `^ ( | ) \ $`), and the
/// same percent-encoded.
#[test]
fn stats_pilot_agent_queries() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        light_traffic(&proxy);
        let readiness = proxy.admin(
            "GET",
            r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)",
        );
        expect_eq!(
            target,
            (readiness.status, readiness.body.as_str()),
            (
                200,
                "listener_manager.workers_started: 1\nserver.state: 0\n"
            ),
            "{target}: pilot-agent readiness query"
        );
        let encoded = proxy.admin(
            "GET",
            "/stats?usedonly&filter=%5E%28server%5C.state%7Clistener_manager%5C.workers_started%29",
        );
        expect_eq!(
            target,
            encoded.body,
            readiness.body,
            "{target}: percent-encoded readiness query"
        );
        // A static bootstrap has no CDS or LDS: nothing matches.
        let xds = proxy.admin(
            "GET",
            r"/stats?usedonly&filter=^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$",
        );
        expect_eq!(
            target,
            (xds.status, xds.body.as_str()),
            (200, ""),
            "{target}: pilot-agent CDS/LDS query"
        );
        let drain = proxy.admin("GET", "/stats?usedonly&filter=downstream_cx_active$");
        let drain_lines: Vec<String> = drain.body.lines().map(|l| proxy.normalize(l)).collect();
        expect_that!(
            target,
            drain_lines
                .iter()
                .any(|l| l == "listener.127.0.0.1_{{LISTENER_PORT}}.downstream_cx_active: 0"),
            "{target}: pilot-agent drain query: {}",
            drain.body
        );
        let mut rows = full_rows(&proxy, "readiness query", &readiness);
        rows.extend(full_rows(&proxy, "encoded readiness query", &encoded));
        rows.extend(full_rows(&proxy, "cds/lds query", &xds));
        rows.extend(full_rows(&proxy, "drain query", &drain));
        rows
    });
}

/// `/stats` text: the plain listing (counters and gauges by name, then histograms),
/// `?filter=`, `?usedonly`, `?type=`, `?format=json`, and the errors for a bad regex, type or
/// format.
#[test]
fn stats_text_json_and_types() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        light_traffic(&proxy);
        let mut rows = Rows::new();

        // Plain text: `name: value`, counters and gauges sorted by name, then histograms
        // sorted by name.
        let all = proxy.admin("GET", "/stats");
        expect_eq!(
            target,
            (all.status, all.content_type()),
            (200, TEXT),
            "{target} GET /stats"
        );
        rows.extend(head_rows("GET /stats", &all));
        let (mut plain, mut hist, mut problems) = (Vec::new(), Vec::new(), Vec::new());
        for line in all.body.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                problems.push(format!("line without `: `: {line:?}"));
                continue;
            };
            if value.parse::<u64>().is_ok() {
                if !hist.is_empty() {
                    problems.push(format!("counter/gauge {name} after a histogram"));
                }
                plain.push(name);
            } else {
                if let Some(p) = histogram_text_problem(value) {
                    problems.push(format!("histogram {name}: {p}"));
                }
                hist.push(name);
            }
        }
        let unsorted = |names: &[&str]| {
            names.windows(2).find(|w| w[0] >= w[1]).map_or_else(
                || "sorted".to_string(),
                |w| format!("{} before {}", w[0], w[1]),
            )
        };
        rows.push((
            "GET /stats counters and gauges order".into(),
            unsorted(&plain),
        ));
        rows.push(("GET /stats histograms order".into(), unsorted(&hist)));
        rows.push(("GET /stats malformed lines".into(), problems.join("\n")));

        // `?filter=` is a partial-match regex on the full name; `type=` keeps one kind.
        let queries = [
            r"/stats?filter=^redis\.redis\.command\.get\.",
            r"/stats?filter=^redis\.redis\.command\.get\.&type=Counters",
            r"/stats?filter=^redis\.redis\.&type=Gauges",
            r"/stats?filter=^redis\.redis\.command\.(get|set)\.&type=Histograms",
            r"/stats?filter=^redis\.redis\.&type=TextReadouts",
            r"/stats?filter=^redis\.redis\.command\.get\.&type=All",
            r"/stats?filter=^cluster\.down\.upstream_cx_&usedonly",
            r"/stats?filter=^redis\.redis\.command\.get\.&usedonly&type=Counters",
        ];
        for query in queries {
            let resp = proxy.admin("GET", query);
            rows.extend(head_rows(query, &resp));
            let lines: Vec<String> = resp
                .body
                .lines()
                .map(|l| {
                    // Histogram values depend on timing; their presence does not.
                    match l.split_once(": ") {
                        Some((name, value)) if value.parse::<u64>().is_err() => {
                            match histogram_text_problem(value) {
                                None => format!("{name}: <histogram>"),
                                Some(p) => format!("{name}: malformed histogram: {p}"),
                            }
                        }
                        _ => l.to_string(),
                    }
                })
                .collect();
            rows.push((format!("{query} body"), lines.join("\n")));
        }
        let counters = Stats::parse(
            &proxy
                .admin(
                    "GET",
                    r"/stats?filter=^redis\.redis\.command\.get\.&type=Counters",
                )
                .body,
        );
        expect_eq!(
            target,
            counters.values.keys().cloned().collect::<Vec<_>>(),
            ["delay_fault", "error", "error_fault", "success", "total"]
                .map(|s| format!("redis.redis.command.get.{s}")),
            "{target}: ?type=Counters"
        );

        // JSON: `{"stats":[{"name","value"}...,{"histograms":{...}}]}`.
        let json_query =
            r"/stats?format=json&filter=^redis\.redis\.(command\.get\.|downstream_cx_total$)";
        let resp = proxy.admin("GET", json_query);
        expect_eq!(
            target,
            (resp.status, resp.content_type()),
            (200, JSON),
            "{target} {json_query}"
        );
        rows.extend(head_rows(json_query, &resp));
        let json = parse_json(target, json_query, &resp);
        // Histogram values are `null` or numbers depending on the flush timing.
        rows.extend(prefixed("json shape", json_shape(&json, &["values"])));
        let entries = json["stats"]
            .as_array()
            .unwrap_or_else(|| panic!("{target}: no `stats` array: {json}"));
        for entry in entries {
            if let Some(name) = entry["name"].as_str() {
                rows.push((format!("json {name}"), entry["value"].to_string()));
            } else if let Some(h) = entry.get("histograms") {
                rows.push((
                    "json supported_quantiles".into(),
                    h["supported_quantiles"].to_string(),
                ));
                for q in h["computed_quantiles"].as_array().into_iter().flatten() {
                    rows.push((
                        format!("json histogram {}", q["name"]),
                        format!("{} values", q["values"].as_array().map_or(0, Vec::len)),
                    ));
                }
            } else {
                rows.push(("json unexpected entry".into(), entry.to_string()));
            }
        }
        expect_that!(
            target,
            entries
                .iter()
                .any(|e| e["name"] == "redis.redis.command.get.total" && e["value"] == 2),
            "{target}: {json_query}: {json}"
        );

        // Errors.
        for query in [
            "/stats?filter=(",
            "/stats?type=Bogus",
            "/stats?format=bogus",
        ] {
            let resp = proxy.admin("GET", query);
            expect_eq!(target, resp.status, 400, "{target} {query}: {}", resp.body);
            rows.extend(full_rows(&proxy, query, &resp));
        }
        rows
    });
}

/// A histogram's text value: `No recorded values`, or ten `P<q>(<interval>,<cumulative>)`.
/// Returns what is wrong with it, if anything.
fn histogram_text_problem(value: &str) -> Option<String> {
    if value == "No recorded values" {
        return None;
    }
    let quantiles: Vec<&str> = value
        .split(' ')
        .map(|q| q.split('(').next().unwrap_or(""))
        .collect();
    if quantiles
        != [
            "P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5", "P99.9", "P100",
        ]
    {
        return Some(format!("quantiles {quantiles:?}"));
    }
    for q in value.split(' ') {
        let ok = q
            .split_once('(')
            .and_then(|(_, r)| r.strip_suffix(')'))
            .is_some_and(|inner| {
                inner.split(',').count() == 2
                    && inner
                        .split(',')
                        .all(|x| x == "nan" || x.parse::<f64>().is_ok())
            });
        if !ok {
            return Some(format!("bad quantile {q:?}"));
        }
    }
    None
}

/// `/stats/prometheus`: content type, `# TYPE` before each family, Envoy's tag extraction and
/// default buckets, `?usedonly`, `?filter=` (on Envoy's stat names, not the Prometheus ones).
#[test]
fn stats_prometheus() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        light_traffic(&proxy);
        let resp = proxy.admin("GET", "/stats/prometheus");
        expect_eq!(
            target,
            (resp.status, resp.content_type()),
            (200, TEXT),
            "{target} GET /stats/prometheus"
        );
        let mut rows = head_rows("GET /stats/prometheus", &resp);
        let body = proxy.normalize(&resp.body);
        for line in [
            "# TYPE envoy_redis_command_get_total counter",
            "envoy_redis_command_get_total{envoy_redis_prefix=\"redis\"} 2",
            "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"redis\"} 2",
            "envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name=\"down\"} 1",
            "envoy_listener_downstream_cx_total{envoy_listener_address=\"127.0.0.1_{{LISTENER_PORT}}\"} 1",
            // Labels in tag-extraction order, not sorted.
            "envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"0\",envoy_listener_address=\"127.0.0.1_{{LISTENER_PORT}}\"} 1",
            "# TYPE envoy_server_live gauge",
            "envoy_server_live{} 1",
            "# TYPE envoy_redis_command_get_latency histogram",
        ] {
            let present = body.lines().any(|l| l == line);
            expect_that!(target, present, "{target} /stats/prometheus: no line {line:?}");
            rows.push((format!("has line {line}"), present.to_string()));
        }
        // Each family's `# TYPE` comes right before its first sample, and families are not
        // split.
        let mut seen = BTreeSet::new();
        let mut current = String::new();
        let mut misplaced = Vec::new();
        let prom = redvoy_test_util::Prometheus::parse(&resp.body)
            .unwrap_or_else(|e| panic!("{target}: /stats/prometheus does not parse: {e}"));
        for line in resp.body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or("").to_string();
                if !seen.insert(current.clone()) {
                    misplaced.push(format!("{current} typed twice"));
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if prom.family_of(name) != current {
                    misplaced.push(format!("{name} outside its family's block"));
                }
            }
        }
        rows.push(("families not in one block".into(), misplaced.join("\n")));
        // Envoy's default buckets.
        let les: Vec<String> = prom
            .samples
            .iter()
            .filter(|s| {
                s.name == "envoy_redis_command_get_latency_bucket"
                    && s.labels
                        .iter()
                        .any(|(k, v)| k == "envoy_redis_prefix" && v == "redis")
            })
            .filter_map(|s| {
                s.labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.clone())
            })
            .collect();
        expect_eq!(
            target,
            les.join(","),
            "0.5,1,5,10,25,50,100,250,500,1000,2500,5000,10000,30000,60000,300000,600000,1800000,3600000,+Inf",
            "{target}: histogram buckets"
        );
        rows.push(("le".into(), les.join(",")));
        // `?usedonly` and `?filter=`: the sample names (and label values) listed.
        for query in [
            "?usedonly",
            r"?filter=^redis\.redis\.command\.get\.",
            "?filter=server_live",
            r"?usedonly&filter=^cluster\.down\.",
        ] {
            let p = proxy.prometheus(query);
            // Histograms count as used only once a stats flush (every 5 s) has latched them,
            // so whether they are listed depends on when the flush fell: leave them out.
            let names: BTreeSet<String> = p
                .samples
                .iter()
                .filter(|s| {
                    !["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|x| s.name.ends_with(x))
                })
                .map(|s| {
                    let labels: Vec<String> =
                        s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}{{{}}}", s.name, labels.join(","))
                })
                .collect();
            rows.push((
                format!("/stats/prometheus{query} samples"),
                names.into_iter().collect::<Vec<_>>().join("\n"),
            ));
        }
        rows
    });
}

/// `/memory`: Envoy's allocator figures, as decimal strings.
#[test]
fn memory() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/memory");
        let json = parse_json(target, "/memory", &resp);
        let obj = json
            .as_object()
            .unwrap_or_else(|| panic!("{target}: /memory: {json}"));
        let mut rows = head_rows("GET /memory", &resp);
        let not_decimal: Vec<&String> = obj
            .iter()
            .filter(|(_, v)| v.as_str().is_none_or(|v| v.parse::<u64>().is_err()))
            .map(|(k, _)| k)
            .collect();
        rows.push((
            "values that are not decimal strings".into(),
            format!("{not_decimal:?}"),
        ));
        rows.extend(prefixed("shape", json_shape(&json, &[])));
        rows
    });
}

/// `/certs`: no certificates, valid JSON.
#[test]
fn certs() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/certs");
        let json = parse_json(target, "/certs", &resp);
        expect_eq!(
            target,
            json,
            serde_json::json!({"certificates": []}),
            "{target}: /certs"
        );
        full_rows(&proxy, "GET /certs", &resp)
    });
}

/// `/runtime` with no `layered_runtime`: no layers, no entries.
#[test]
fn runtime_without_layers() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/runtime");
        let json = parse_json(target, "/runtime", &resp);
        expect_eq!(
            target,
            json,
            serde_json::json!({"entries": {}, "layers": []}),
            "{target}: /runtime"
        );
        let mut rows = head_rows("GET /runtime", &resp);
        rows.push(("json".into(), json.to_string()));
        rows
    });
}

/// `/hot_restart_version` (read by tooling): `disabled` with `--disable-hot-restart`.
#[test]
fn hot_restart_version() {
    let redis = RedisServer::start();
    let yaml = two_cluster_bootstrap(redis.port(), free_port());
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let resp = proxy.admin("GET", "/hot_restart_version");
        full_rows(&proxy, "GET /hot_restart_version", &resp)
    });
}
