//! xDS config sources and listener lifecycle beyond ADS, each scenario run on Envoy 1.40 (the
//! oracle) and on redvoy with the observations compared:
//! - `lds_config` / `cds_config` (and a cluster's `eds_config`) as their own
//!   `api_config_source` streams (GRPC and DELTA_GRPC): the request sequence on each stream;
//! - filesystem xDS (`path_config_source` and the deprecated `path`): a route changed by an
//!   atomic move of the LDS file;
//! - `--reject-unsupported` (redvoy only): an HCM-with-RDS listener NACKed instead of skipped;
//! - an update of a running listener to a filter type neither proxy runs (the retired v2
//!   RedisProxy type URL): NACKed, and the last good listener serves on, under load;
//! - a removed listener draining with `--drain-strategy immediate`, and a listener whose
//!   address changes;
//! - an EDS endpoint reported `UNHEALTHY`: no traffic, and `/clusters` health flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redvoy_test_util::ads::TYPE_LISTENER;
use redvoy_test_util::xds::{
    eds_cluster, eds_cluster_from, grpc_config_source, http_rds_listener, load_assignment,
    load_assignment_with_health, redis_listener, static_cluster, with_filter_type_url,
    xds_bootstrap, XdsBootstrap, XdsHealthStatus, NODE_CLUSTER, NODE_ID,
};
use redvoy_test_util::{
    encode_command, free_port, port_open, same_on_all_targets, try_wait_for, wait_for,
    wait_port_closed, AdsServer, Level, Proxy, ReadOutcome, RedisServer, Reply, RespClient, Rows,
    Stats, Target, Variant,
};

use crate::targets;

/// Bound on one xDS exchange (push → ACK) or a state change showing in the stats.
const XDS_WAIT: Duration = Duration::from_secs(15);
/// Bound on a moved config file being picked up (Envoy: inotify; redvoy polls every 500 ms).
const FILE_WAIT: Duration = Duration::from_secs(10);
/// `--drain-time-s` of the drain scenario.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Past the drain time, for what must have happened by its end.
const DRAIN_MARGIN: Duration = Duration::from_millis(1500);
/// How long the idle client of a draining listener is watched for an early close.
const IDLE_PEEK: Duration = Duration::from_millis(300);
/// Bound on one reply read by the drain scenario (a drained connection may also just close).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys written through a cluster with one unhealthy endpoint.
const HEALTH_KEYS: usize = 20;

/// The xDS stats compared after each phase (absent ones show as `<absent>`).
const XDS_STATS: &[&str] = &[
    "control_plane.connected_state",
    "listener_manager.lds.update_attempt",
    "listener_manager.lds.update_success",
    "listener_manager.lds.update_rejected",
    "listener_manager.lds.update_failure",
    "listener_manager.lds.version",
    "cluster_manager.cds.update_attempt",
    "cluster_manager.cds.update_success",
    "cluster_manager.cds.update_rejected",
    "cluster_manager.cds.update_failure",
    "cluster_manager.cds.version",
    "listener_manager.total_listeners_active",
    "listener_manager.total_listeners_warming",
    "listener_manager.total_listeners_draining",
    "listener_manager.listener_added",
    "listener_manager.listener_modified",
    "listener_manager.listener_removed",
    "cluster_manager.cluster_added",
    "cluster_manager.cluster_modified",
    "cluster_manager.active_clusters",
    "cluster_manager.warming_clusters",
];

fn stat_rows(rows: &mut Rows, phase: &str, stats: &Stats) {
    for name in XDS_STATS {
        rows.push((
            format!("{phase}: {name}"),
            stats.get(name).unwrap_or("<absent>").to_string(),
        ));
    }
}

/// Polls `/stats` until `name` is `value` (bounded); returns whether it got there, so a
/// target that never does shows as a compared row instead of an early panic.
fn stat_reaches(proxy: &Proxy, name: &str, value: u64, within: Duration) -> bool {
    try_wait_for(within, || {
        (proxy.stats().get_int(name) == Some(value)).then_some(())
    })
    .is_some()
}

/// SET then GET `key` through the listener on `port` with a fresh connection.
fn set_get(port: u16, key: &str, value: &str) -> (Reply, Reply) {
    let mut client = RespClient::connect(port);
    let set = client.cmd(&["SET", key, value]);
    let get = client.cmd(&["GET", key]);
    (set, get)
}

/// Which of the servers holds `key` (`A`, `B`, `both`, `none`).
fn holder(key: &str, a: &RedisServer, b: &RedisServer) -> &'static str {
    let on = |s: &RedisServer| s.cmd(&["EXISTS", key]) == Reply::Integer(1);
    match (on(a), on(b)) {
        (true, true) => "both",
        (true, false) => "A",
        (false, true) => "B",
        (false, false) => "none",
    }
}

/// Sends one command on an existing connection and describes what came back: the reply, or
/// `closed` / `timeout`.
fn exchange(client: &mut RespClient, args: &[&str]) -> String {
    if client.try_send_raw(&encode_command(args)).is_err() {
        return "closed (send failed)".into();
    }
    match client.read_outcome(REPLY_TIMEOUT) {
        ReadOutcome::Frame { reply, .. } => format!("{reply:?}"),
        ReadOutcome::Closed { .. } => "closed".into(),
        ReadOutcome::Timeout { .. } => "timeout".into(),
    }
}

/// The static cluster every bootstrap here uses for its gRPC streams (HTTP/2 to `server`).
fn grpc_cluster_yaml(server: &AdsServer) -> String {
    format!(
        r#"  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {}}}
"#,
        server.envoy_address_yaml()
    )
}

const ADMIN_YAML: &str =
    "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}\n";

// ---------------------------------------------------------------------------------------------
// 1. Per-type streams

/// LDS and CDS each on a stream of their own (no `ads_config`).
fn per_type_bootstrap(server: &AdsServer, variant: Variant) -> String {
    let api_type = match variant {
        Variant::Sotw => "GRPC",
        Variant::Delta => "DELTA_GRPC",
    };
    let source = format!(
        "{{resource_api_version: V3, api_config_source: {{api_type: {api_type}, \
         transport_api_version: V3, grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]}}}}"
    );
    format!(
        "node: {{id: {NODE_ID}, cluster: {NODE_CLUSTER}}}\n{ADMIN_YAML}dynamic_resources:\n  \
         cds_config: {source}\n  lds_config: {source}\nstatic_resources:\n  clusters:\n{}",
        grpc_cluster_yaml(server)
    )
}

/// The requests of each service, in arrival order, as `<api> s<k> <summary>` with `k` the
/// stream's rank within that service (streams of different services may interleave
/// differently from run to run; within one stream the order is the protocol's).
fn per_api_requests(server: &AdsServer) -> BTreeMap<&'static str, Vec<String>> {
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut ranks: BTreeMap<(&'static str, u64), usize> = BTreeMap::new();
    for r in server.requests() {
        let api = r.api.name();
        let next = ranks.keys().filter(|(a, _)| *a == api).count() + 1;
        let rank = *ranks.entry((api, r.stream)).or_insert(next);
        out.entry(api)
            .or_default()
            .push(format!("s{rank} {}", r.summary()));
    }
    out
}

fn per_type_scenario(target: Target, variant: Variant, a: &RedisServer, b: &RedisServer) -> Rows {
    a.flushall();
    b.flushall();
    let server = AdsServer::start_tcp().unwrap_or_else(|e| panic!("test xDS server: {e}"));
    let (p1, p2) = (free_port(), free_port());
    server.set_messages(
        "c1",
        &[
            eds_cluster_from("backend", grpc_config_source(variant, "xds-grpc")),
            static_cluster("static_b", &[b.port()]),
        ],
    );
    server.set_messages("e1", &[load_assignment("backend", &[a.port()])]);
    server.set_messages("l1", &[redis_listener("l1", p1, "backend")]);
    let proxy = Proxy::start(target, &per_type_bootstrap(&server, variant), &[]);
    let ack = server.wait_for_request(0, XDS_WAIT, "the first LDS ACK", |r| {
        r.type_url == TYPE_LISTENER && !r.response_nonce.is_empty()
    });
    assert!(!ack.is_nack(), "{target}: {}", ack.summary());
    assert_eq!(
        (set_get(p1, "k1", "v1"), holder("k1", a, b)),
        ((Reply::ok(), Reply::bulk("v1")), "A"),
        "{target}: a GET through the listener pushed on the LDS stream"
    );
    let mut rows = Rows::new();
    let apis: Vec<&str> = server.requests().iter().map(|r| r.api.name()).collect();
    assert!(
        !apis.contains(&"ADS"),
        "{target}: no ADS stream expected: {apis:?}"
    );
    stat_rows(&mut rows, "initial", &proxy.stats());

    // EDS moves the cluster to B; LDS adds a listener to the static cluster.
    let eds = server.push("e2", &[load_assignment("backend", &[b.port()])], XDS_WAIT);
    rows.push((
        "eds push: replies".into(),
        eds.iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let lds = server.push(
        "l2",
        &[
            redis_listener("l1", p1, "backend"),
            redis_listener("l2", p2, "static_b"),
        ],
        XDS_WAIT,
    );
    rows.push((
        "lds push: replies".into(),
        lds.iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    wait_for(XDS_WAIT, "l2 to listen", || port_open(p2).then_some(()));
    let mut n = 0;
    wait_for(XDS_WAIT, "a key through l1 to land on B", || {
        n += 1;
        let key = format!("probe{n}");
        set_get(p1, &key, "x");
        (holder(&key, a, b) == "B").then_some(())
    });
    rows.push((
        "GET through l2".into(),
        format!("{:?} on {}", set_get(p2, "k2", "v2"), holder("k2", a, b)),
    ));
    stat_rows(&mut rows, "after pushes", &proxy.stats());
    for (api, requests) in per_api_requests(&server) {
        rows.push((format!("{api} requests"), requests.join(" ")));
    }
    rows
}

fn run_per_type(variant: Variant) {
    let a = RedisServer::start();
    let b = RedisServer::start();
    same_on_all_targets(&targets(), |target| {
        per_type_scenario(target, variant, &a, &b)
    });
}

#[test]
fn per_type_streams_sotw() {
    run_per_type(Variant::Sotw);
}

#[test]
fn per_type_streams_delta() {
    run_per_type(Variant::Delta);
}

// ---------------------------------------------------------------------------------------------
// 2. Filesystem xDS

/// How the bootstrap names the files.
#[derive(Clone, Copy, Debug)]
enum PathStyle {
    /// `path_config_source: {path: ...}`
    PathConfigSource,
    /// The deprecated `path: ...`.
    Deprecated,
}

fn file_bootstrap(style: PathStyle, lds: &Path, cds: &Path) -> String {
    let source = |p: &Path| match style {
        PathStyle::PathConfigSource => format!(
            "{{resource_api_version: V3, path_config_source: {{path: {}}}}}",
            p.display()
        ),
        PathStyle::Deprecated => format!("{{resource_api_version: V3, path: {}}}", p.display()),
    };
    format!(
        "node: {{id: {NODE_ID}, cluster: {NODE_CLUSTER}}}\n{ADMIN_YAML}dynamic_resources:\n  \
         cds_config: {}\n  lds_config: {}\n",
        source(cds),
        source(lds)
    )
}

fn static_cluster_yaml(name: &str, port: u16) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"#
    )
}

/// A DiscoveryResponse with one redis_proxy listener on `port`: keys under `b:` to `cb` when
/// `route_b`, everything else to `ca`.
fn lds_file(version: &str, port: u16, route_b: bool) -> String {
    let routes = if route_b {
        "routes: [{prefix: \"b:\", cluster: cb}], "
    } else {
        ""
    };
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: fs
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.redis_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
        stat_prefix: fs
        settings: {{op_timeout: 5s}}
        prefix_routes: {{{routes}catch_all_route: {{cluster: ca}}}}
"#
    )
}

/// Writes `contents` next to `path` and renames it over `path` (what Envoy's watch sees).
fn replace_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
}

fn file_scenario(target: Target, style: PathStyle, a: &RedisServer, b: &RedisServer) -> Rows {
    a.flushall();
    b.flushall();
    let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (lds, cds) = (dir.path().join("lds.yaml"), dir.path().join("cds.yaml"));
    let port = free_port();
    std::fs::write(
        &cds,
        format!(
            "version_info: \"c1\"\nresources:\n{}{}",
            static_cluster_yaml("ca", a.port()),
            static_cluster_yaml("cb", b.port())
        ),
    )
    .unwrap_or_else(|e| panic!("write cds: {e}"));
    std::fs::write(&lds, lds_file("l1", port, false)).unwrap_or_else(|e| panic!("write lds: {e}"));
    let proxy = Proxy::start(target, &file_bootstrap(style, &lds, &cds), &[]);
    let mut rows = Rows::new();
    wait_for(XDS_WAIT, "the file listener", || {
        port_open(port).then_some(())
    });
    rows.push((
        "before: b:1".into(),
        format!("{:?} on {}", set_get(port, "b:1", "x"), holder("b:1", a, b)),
    ));
    stat_rows(&mut rows, "before", &proxy.stats());

    replace_atomically(&lds, &lds_file("l2", port, true));
    let mut n = 0;
    let moved = try_wait_for(FILE_WAIT, || {
        n += 1;
        let key = format!("b:probe{n}");
        set_get(port, &key, "y");
        (holder(&key, a, b) == "B").then_some(())
    });
    rows.push((
        "after move: route b: applied".into(),
        moved.is_some().to_string(),
    ));
    rows.push((
        "after move: b:2".into(),
        format!("{:?} on {}", set_get(port, "b:2", "z"), holder("b:2", a, b)),
    ));
    rows.push((
        "after move: other".into(),
        format!("{:?} on {}", set_get(port, "o:1", "z"), holder("o:1", a, b)),
    ));
    stat_reaches(&proxy, "listener_manager.lds.update_success", 2, XDS_WAIT);
    stat_rows(&mut rows, "after move", &proxy.stats());
    rows
}

fn run_file(style: PathStyle) {
    let a = RedisServer::start();
    let b = RedisServer::start();
    same_on_all_targets(&targets(), |target| file_scenario(target, style, &a, &b));
}

#[test]
fn path_config_source_file_move_changes_route() {
    run_file(PathStyle::PathConfigSource);
}

#[test]
fn deprecated_path_file_move_changes_route() {
    run_file(PathStyle::Deprecated);
}

// ---------------------------------------------------------------------------------------------
// 3. --reject-unsupported (redvoy only: Envoy runs the HCM and asks for its RDS)

/// The `dynamic_listeners` entry named `name` in `/config_dump`.
fn dynamic_listener(proxy: &Proxy, name: &str) -> serde_json::Value {
    let dump: serde_json::Value = serde_json::from_str(&proxy.admin("GET", "/config_dump").body)
        .unwrap_or_else(|e| panic!("/config_dump is not JSON: {e}"));
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["dynamic_listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|l| l["name"] == name)
        .unwrap_or(serde_json::Value::Null)
}

fn unsupported_listener_run(reject: bool, a: &RedisServer) {
    let server = AdsServer::start_tcp().unwrap_or_else(|e| panic!("test ADS server: {e}"));
    let (p1, p2) = (free_port(), free_port());
    server.set_messages("c1", &[static_cluster("ca", &[a.port()])]);
    server.set_messages("l1", &[redis_listener("l1", p1, "ca")]);
    let args: &[&str] = if reject {
        &["--reject-unsupported"]
    } else {
        &[]
    };
    let proxy = Proxy::start(
        Target::Redvoy,
        &xds_bootstrap(&server, &XdsBootstrap::new(Variant::Sotw)),
        args,
    );
    if reject {
        proxy.expect_log(Level::Warn, "Error adding/updating listener(s) web: ");
    } else {
        proxy.expect_log(
            Level::Warn,
            "listener skipped: redvoy does not implement its filters listener=web",
        );
    }
    server.wait_for_request(0, XDS_WAIT, "the first LDS ACK", |r| {
        r.type_url == TYPE_LISTENER && !r.response_nonce.is_empty()
    });
    let replies = server.push(
        "l2",
        &[
            redis_listener("l1", p1, "ca"),
            http_rds_listener("web", p2, "web-routes"),
        ],
        XDS_WAIT,
    );
    let reply = replies.first().unwrap_or_else(|| panic!("no LDS push"));
    eprintln!("reject={reject}: {:?}", reply.error_detail);
    let web = dynamic_listener(&proxy, "web");
    if reject {
        let detail = reply
            .error_detail
            .clone()
            .unwrap_or_else(|| panic!("expected a NACK, got {}", reply.summary()));
        assert_eq!(detail.code, 13, "NACK code");
        assert!(
            detail.message.contains("web"),
            "the NACK names the listener: {:?}",
            detail.message
        );
        assert_eq!(
            reply.version_info, "l1",
            "the NACK keeps the accepted version"
        );
        assert_eq!(proxy.stat("listener_manager.lds.update_rejected"), 1);
    } else {
        assert!(!reply.is_nack(), "skipped, not NACKed: {}", reply.summary());
        assert_eq!(reply.version_info, "l2");
        let details = web["error_state"]["details"].as_str().unwrap_or_default();
        assert!(
            details.starts_with("skipped by redvoy:"),
            "config_dump shows web as skipped: {web}"
        );
        assert_eq!(proxy.stat("listener_manager.lds.update_rejected"), 0);
    }
    assert!(web["active_state"].is_null(), "web is never active: {web}");
    assert!(
        !port_open(p2),
        "nothing listens for the unsupported listener"
    );
    assert_eq!(
        set_get(p1, "k", "v"),
        (Reply::ok(), Reply::bulk("v")),
        "the other listener serves"
    );
}

#[test]
fn reject_unsupported_nacks_and_default_skips() {
    if !targets().contains(&Target::Redvoy) {
        eprintln!("redvoy not among the targets: --reject-unsupported is redvoy's own flag");
        return;
    }
    let a = RedisServer::start();
    unsupported_listener_run(false, &a);
    unsupported_listener_run(true, &a);
}

// ---------------------------------------------------------------------------------------------
// 3b. An update of a running listener that cannot run is NACKed; the last good one serves on

/// Client threads keeping the listener busy while the update is refused.
const UPDATE_LOAD_THREADS: usize = 8;
/// Bound on the operations of one load thread (each is a SET and a GET).
const UPDATE_LOAD_MAX_OPS: usize = 20_000;
/// Bound on the whole load phase.
const UPDATE_LOAD_DEADLINE: Duration = Duration::from_secs(30);
/// Every this many operations a load thread also opens a fresh connection, so new
/// connections are tested across the refused update too.
const UPDATE_LOAD_RECONNECT_EVERY: usize = 50;
/// The type URL of the retired v2 redis_proxy config: Envoy 1.40 has no factory for it.
const V2_REDIS_PROXY: &str =
    "type.googleapis.com/envoy.config.filter.network.redis_proxy.v2.RedisProxy";

/// SET/GET through `port` from several threads until `stop`; returns (operations, errors).
fn run_update_load(port: u16, stop: &AtomicBool) -> (usize, Vec<String>) {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..UPDATE_LOAD_THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    let mut ops = 0;
                    let mut client = match RespClient::try_connect(port) {
                        Ok(c) => c,
                        Err(e) => return (0, vec![format!("thread {t}: connect: {e}")]),
                    };
                    client.set_timeout(REPLY_TIMEOUT);
                    while !stop.load(Ordering::Relaxed)
                        && ops < UPDATE_LOAD_MAX_OPS
                        && started.elapsed() < UPDATE_LOAD_DEADLINE
                    {
                        if ops % UPDATE_LOAD_RECONNECT_EVERY == UPDATE_LOAD_RECONNECT_EVERY - 1 {
                            match RespClient::try_connect(port) {
                                Ok(mut fresh) => {
                                    fresh.set_timeout(REPLY_TIMEOUT);
                                    client = fresh;
                                }
                                Err(e) => errors.push(format!("thread {t}: reconnect: {e}")),
                            }
                        }
                        let key = format!("upd:{t}:{ops}");
                        let set = exchange(&mut client, &["SET", &key, "v"]);
                        let get = exchange(&mut client, &["GET", &key]);
                        if set != format!("{:?}", Reply::ok())
                            || get != format!("{:?}", Reply::bulk("v"))
                        {
                            errors.push(format!("thread {t} op {ops}: SET {set}, GET {get}"));
                            if errors.len() > 5 {
                                break;
                            }
                        }
                        ops += 1;
                    }
                    (ops, errors)
                })
            })
            .collect();
        threads
            .into_iter()
            .fold((0, Vec::new()), |(n, mut all), h| {
                let (ops, errors) = h
                    .join()
                    .unwrap_or_else(|_| (0, vec!["thread panicked".into()]));
                all.extend(errors);
                (n + ops, all)
            })
    })
}

fn refused_update_scenario(target: Target, a: &RedisServer) -> Rows {
    let server = AdsServer::start_tcp().unwrap_or_else(|e| panic!("test ADS server: {e}"));
    let port = free_port();
    server.set_messages("c1", &[static_cluster("ca", &[a.port()])]);
    server.set_messages("l1", &[redis_listener("l1", port, "ca")]);
    let proxy = Proxy::start(
        target,
        &xds_bootstrap(&server, &XdsBootstrap::new(Variant::Sotw)),
        &[],
    );
    proxy.expect_log(
        Level::Warn,
        "Error adding/updating listener(s) l1: filter_chains[0].filters[0].typed_config: \
         Didn't find a registered implementation for 'envoy.filters.network.redis_proxy'",
    );
    server.wait_for_request(0, XDS_WAIT, "the first LDS ACK", |r| {
        r.type_url == TYPE_LISTENER && !r.response_nonce.is_empty()
    });
    wait_for(XDS_WAIT, "l1 to listen", || port_open(port).then_some(()));

    let stop = AtomicBool::new(false);
    // The server is shared with the other target's run: count its SETs from here.
    let before = a.command_calls("set");
    let (replies, (ops, errors)) = std::thread::scope(|scope| {
        let load = scope.spawn(|| run_update_load(port, &stop));
        // Let the load run before and after the refused update.
        wait_for(XDS_WAIT, "the load to start", || {
            (a.command_calls("set") > before + 200).then_some(())
        });
        let replies = server.push(
            "l2",
            &[with_filter_type_url(
                redis_listener("l1", port, "ca"),
                V2_REDIS_PROXY,
            )],
            XDS_WAIT,
        );
        let after = a.command_calls("set");
        wait_for(XDS_WAIT, "more load after the refused update", || {
            (a.command_calls("set") > after + 200).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        let result = load
            .join()
            .unwrap_or_else(|_| (0, vec!["load panicked".into()]));
        (replies, result)
    });
    let reply = replies
        .first()
        .unwrap_or_else(|| panic!("{target}: no LDS push"));
    let detail = reply
        .error_detail
        .clone()
        .unwrap_or_else(|| panic!("{target}: expected a NACK, got {}", reply.summary()));
    eprintln!(
        "{target}: NACK: {:?}; {ops} operations under load",
        detail.message
    );
    assert!(
        errors.is_empty(),
        "{target}: client errors under load: {errors:?}"
    );
    assert!(ops > 0, "{target}: the load ran");
    let mut rows = Rows::new();
    rows.push(("NACK code".into(), detail.code.to_string()));
    rows.push(("NACK version".into(), reply.version_info.clone()));
    rows.push((
        "NACK names the listener and the type".into(),
        (detail
            .message
            .starts_with("Error adding/updating listener(s) l1: ")
            && detail.message.contains(
                "Didn't find a registered implementation for 'envoy.filters.network.redis_proxy' \
                 with type URL: 'envoy.config.filter.network.redis_proxy.v2.RedisProxy'",
            ))
        .to_string(),
    ));
    rows.push(("port still open".into(), port_open(port).to_string()));
    rows.push((
        "new connection after the NACK".into(),
        format!("{:?}", set_get(port, "after", "1")),
    ));
    stat_rows(&mut rows, "refused update", &proxy.stats());
    rows
}

#[test]
fn refused_update_keeps_the_running_listener_serving() {
    let a = RedisServer::start();
    same_on_all_targets(&targets(), |target| refused_update_scenario(target, &a));
}

// ---------------------------------------------------------------------------------------------
// 4. Listener drain on removal and on address change

fn drain_scenario(target: Target, a: &RedisServer) -> Rows {
    let server = AdsServer::start_tcp().unwrap_or_else(|e| panic!("test ADS server: {e}"));
    let (p_gone, p_keep, p_moved) = (free_port(), free_port(), free_port());
    server.set_messages("c1", &[static_cluster("ca", &[a.port()])]);
    server.set_messages(
        "l1",
        &[
            redis_listener("gone", p_gone, "ca"),
            redis_listener("keep", p_keep, "ca"),
        ],
    );
    let drain = DRAIN_TIME.as_secs().to_string();
    let proxy = Proxy::start(
        target,
        &xds_bootstrap(&server, &XdsBootstrap::new(Variant::Sotw)),
        &["--drain-time-s", &drain, "--drain-strategy", "immediate"],
    );
    server.wait_for_request(0, XDS_WAIT, "the first LDS ACK", |r| {
        r.type_url == TYPE_LISTENER && !r.response_nonce.is_empty()
    });
    let mut rows = Rows::new();
    // Two clients of the listener about to go: one keeps talking, one stays idle.
    let mut busy = RespClient::connect(p_gone);
    let mut idle = RespClient::connect(p_gone);
    rows.push((
        "busy before".into(),
        exchange(&mut busy, &["SET", "d", "1"]),
    ));
    rows.push(("idle before".into(), exchange(&mut idle, &["GET", "d"])));

    let replies = server.push("l2", &[redis_listener("keep", p_keep, "ca")], XDS_WAIT);
    let removed_at = Instant::now();
    rows.push((
        "removal: reply".into(),
        replies
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    rows.push((
        "removal: draining gauge reaches 1".into(),
        stat_reaches(
            &proxy,
            "listener_manager.total_listeners_draining",
            1,
            DRAIN_TIME / 2,
        )
        .to_string(),
    ));
    rows.push((
        "removal: new connection accepted".into(),
        port_open(p_gone).to_string(),
    ));
    rows.push((
        "removal: busy 1st request while draining".into(),
        exchange(&mut busy, &["GET", "d"]),
    ));
    rows.push((
        "removal: busy 2nd request while draining".into(),
        exchange(&mut busy, &["GET", "d"]),
    ));
    // The close is seen by the client a moment before the proxy's gauge may drop.
    rows.push((
        "removal, while draining: only idle still connected".into(),
        stat_reaches(&proxy, "redis.gone.downstream_cx_active", 1, DRAIN_TIME / 4).to_string(),
    ));
    let stats = proxy.stats();
    for name in [
        "redis.gone.downstream_cx_drain_close",
        "redis.gone.downstream_cx_total",
        "listener_manager.total_listeners_draining",
    ] {
        rows.push((
            format!("removal, while draining: {name}"),
            stats.get(name).unwrap_or("<absent>").to_string(),
        ));
    }
    rows.push((
        "removal: idle still open during drain time".into(),
        (!idle.wait_closed(IDLE_PEEK)).to_string(),
    ));
    assert!(
        removed_at.elapsed() < DRAIN_TIME,
        "{target}: the drain-time checks took too long to mean anything"
    );
    let idle_left = (DRAIN_TIME + DRAIN_MARGIN).saturating_sub(removed_at.elapsed());
    rows.push((
        "removal: idle closed by the end of drain time".into(),
        idle.wait_closed(idle_left).to_string(),
    ));
    rows.push((
        "removal: draining gauge back to 0".into(),
        stat_reaches(
            &proxy,
            "listener_manager.total_listeners_draining",
            0,
            XDS_WAIT,
        )
        .to_string(),
    ));
    let stats = proxy.stats();
    // Envoy drops the stats of a listener's scope once the drained listener is destroyed.
    let gone_prefixes = [
        format!("listener.127.0.0.1_{p_gone}."),
        "redis.gone.".to_string(),
    ];
    let left: Vec<String> = gone_prefixes
        .iter()
        .map(|prefix| {
            let n = stats
                .values
                .keys()
                .filter(|k| k.starts_with(prefix))
                .count();
            format!("{}*: {n}", prefix.replace(&p_gone.to_string(), "{{GONE}}"))
        })
        .collect();
    rows.push((
        "removal: stats left of the removed listener".into(),
        left.join(", "),
    ));
    for name in [
        "listener_manager.listener_removed",
        "listener_manager.total_listeners_active",
    ] {
        rows.push((
            format!("removal: {name}"),
            stats.get(name).unwrap_or("<absent>").to_string(),
        ));
    }

    // Address change: same name, new port.
    let mut old_conn = RespClient::connect(p_keep);
    rows.push((
        "move: old connection before".into(),
        exchange(&mut old_conn, &["GET", "d"]),
    ));
    let replies = server.push("l3", &[redis_listener("keep", p_moved, "ca")], XDS_WAIT);
    rows.push((
        "move: reply".into(),
        replies
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    rows.push((
        "move: draining gauge reaches 1".into(),
        stat_reaches(
            &proxy,
            "listener_manager.total_listeners_draining",
            1,
            DRAIN_TIME / 2,
        )
        .to_string(),
    ));
    wait_for(XDS_WAIT, "the new port to listen", || {
        port_open(p_moved).then_some(())
    });
    wait_port_closed(p_keep);
    rows.push((
        "move: GET on the new port".into(),
        format!("{:?}", set_get(p_moved, "m", "1")),
    ));
    rows.push((
        "move: old connection first request".into(),
        exchange(&mut old_conn, &["GET", "m"]),
    ));
    rows.push((
        "move: old connection second request".into(),
        exchange(&mut old_conn, &["GET", "m"]),
    ));
    stat_reaches(
        &proxy,
        "listener_manager.total_listeners_draining",
        0,
        XDS_WAIT,
    );
    stat_rows(&mut rows, "move", &proxy.stats());
    rows
}

#[test]
fn listener_drains_on_removal_and_address_change() {
    let a = RedisServer::start();
    same_on_all_targets(&targets(), |target| drain_scenario(target, &a));
}

// ---------------------------------------------------------------------------------------------
// 5. EDS health_status

/// The `/clusters` lines of `cluster`'s hosts (ports named A and B), without the connection
/// and request counters that depend on pooling (`rq_total` kept).
fn host_lines(proxy: &Proxy, cluster: &str, a: &RedisServer, b: &RedisServer) -> String {
    let body = proxy.admin("GET", "/clusters").body;
    let prefix = format!("{cluster}::127.0.0.1:");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| !(l.contains("::cx_") || l.contains("::rq_")) || l.contains("::rq_total::"))
        .map(|l| {
            l.replace(&format!("127.0.0.1:{}", a.port()), "A")
                .replace(&format!("127.0.0.1:{}", b.port()), "B")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `health_status` of `cluster`'s hosts in `/clusters?format=json`, ports named A and B.
fn health_json(proxy: &Proxy, cluster: &str, a: &RedisServer, b: &RedisServer) -> String {
    let body = proxy.admin("GET", "/clusters?format=json").body;
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/clusters json: {e}"));
    let mut out = Vec::new();
    for c in json["cluster_statuses"].as_array().into_iter().flatten() {
        if c["name"] != cluster {
            continue;
        }
        for h in c["host_statuses"].as_array().into_iter().flatten() {
            let port = h["address"]["socket_address"]["port_value"].as_u64();
            let name = if port == Some(u64::from(a.port())) {
                "A"
            } else if port == Some(u64::from(b.port())) {
                "B"
            } else {
                "?"
            };
            out.push(format!("{name} {}", h["health_status"]));
        }
    }
    out.sort();
    out.join("\n")
}

fn health_scenario(target: Target, a: &RedisServer, b: &RedisServer) -> Rows {
    a.flushall();
    b.flushall();
    let server = AdsServer::start_tcp().unwrap_or_else(|e| panic!("test ADS server: {e}"));
    let port = free_port();
    server.set_messages("c1", &[eds_cluster("backend")]);
    server.set_messages(
        "e1",
        &[load_assignment_with_health(
            "backend",
            &[
                (a.port(), XdsHealthStatus::Healthy),
                (b.port(), XdsHealthStatus::Unhealthy),
            ],
        )],
    );
    server.set_messages("l1", &[redis_listener("l1", port, "backend")]);
    let proxy = Proxy::start(
        target,
        &xds_bootstrap(&server, &XdsBootstrap::new(Variant::Sotw)),
        &[],
    );
    wait_for(XDS_WAIT, "the listener", || port_open(port).then_some(()));
    let mut client = RespClient::connect(port);
    for i in 0..HEALTH_KEYS {
        let key = format!("h{i}");
        assert_eq!(
            client.cmd(&["SET", &key, "v"]),
            Reply::ok(),
            "{target}: SET {key}"
        );
    }
    let mut rows = Rows::new();
    let mut holders: Vec<&str> = (0..HEALTH_KEYS)
        .map(|i| holder(&format!("h{i}"), a, b))
        .collect();
    holders.dedup();
    rows.push(("keys land on".into(), holders.join(",")));
    rows.push((
        "/clusters hosts".into(),
        host_lines(&proxy, "backend", a, b),
    ));
    rows.push((
        "/clusters?format=json health_status".into(),
        health_json(&proxy, "backend", a, b),
    ));
    let stats = proxy.stats();
    for name in [
        "cluster.backend.membership_total",
        "cluster.backend.membership_healthy",
        "cluster.backend.membership_degraded",
        "cluster.backend.membership_excluded",
    ] {
        rows.push((name.into(), stats.get(name).unwrap_or("<absent>").into()));
    }
    rows
}

#[test]
fn eds_unhealthy_endpoint_gets_no_traffic() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    same_on_all_targets(&targets(), |target| health_scenario(target, &a, &b));
}
