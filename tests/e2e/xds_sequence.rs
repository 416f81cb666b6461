//! The xDS protocol as the proxy speaks it to an in-process ADS server (crates/test-util
//! `AdsServer`), SotW and Delta, over TCP and a Unix socket: the initial request sequence with
//! its versions and nonces, ACK, NACK of an invalid listener with the last good config still
//! serving, partial apply, listener and cluster removal, an EDS change moving traffic to
//! another redis-server, a control-plane restart with the proxy serving throughout and
//! resubscribing with its versions, and `initial_fetch_timeout`. Envoy is the oracle: the
//! recorded requests and the stats of each phase must be the same on every target.

use std::time::Duration;

use redvoy_test_util::ads::{TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER};
use redvoy_test_util::xds::{
    eds_cluster, load_assignment, redis_listener, redis_listener_with, redis_proxy, static_cluster,
    with_cluster_provided_lb, xds_bootstrap, XdsBootstrap,
};
use redvoy_test_util::{
    free_port, port_open, same_on_all_targets, try_wait_for, wait_for, wait_port_closed, AdsServer,
    Level, Proxy, RedisServer, Reply, RespClient, Rows, Stats, Target, Variant,
};

use crate::targets;

/// Bound on one xDS exchange (push → ACK) or a state change showing in the stats.
const XDS_WAIT: Duration = Duration::from_secs(15);
/// Bound on the proxy reconnecting to a restarted control plane (Envoy's first retry waits
/// up to 500 ms, jittered; later ones longer).
const RECONNECT_WAIT: Duration = Duration::from_secs(30);
/// Keys written after an EDS change, all of which must land on the new server.
const KEYS_AFTER_EDS_CHANGE: usize = 10;
/// How long a proxy whose LDS initial fetch never completes is watched staying unready.
const NOT_READY_WATCH: Duration = Duration::from_secs(3);

/// The stats every phase records (absent ones show as `<absent>`).
const XDS_STATS: &[&str] = &[
    "control_plane.connected_state",
    "listener_manager.lds.update_attempt",
    "listener_manager.lds.update_success",
    "listener_manager.lds.update_rejected",
    "listener_manager.lds.update_empty",
    "listener_manager.lds.init_fetch_timeout",
    "cluster_manager.cds.update_attempt",
    "cluster_manager.cds.update_success",
    "cluster_manager.cds.update_rejected",
    "cluster_manager.cds.update_empty",
    "cluster_manager.cds.init_fetch_timeout",
    "listener_manager.total_listeners_active",
    "listener_manager.total_listeners_warming",
    "listener_manager.listener_added",
    "listener_manager.listener_modified",
    "listener_manager.listener_removed",
    "listener_manager.workers_started",
    "cluster_manager.cluster_added",
    "cluster_manager.cluster_modified",
    "cluster_manager.cluster_removed",
    "cluster_manager.active_clusters",
    "cluster_manager.warming_clusters",
    "server.state",
];

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Unix,
}

/// A fresh control plane (nonces count from n1 on each, so runs compare).
fn control_plane(transport: Transport, dir: &redvoy_test_util::tempfile::TempDir) -> AdsServer {
    match transport {
        Transport::Tcp => AdsServer::start_tcp(),
        Transport::Unix => AdsServer::start_unix(dir.path().join("xds.sock")),
    }
    .unwrap_or_else(|e| panic!("test ADS server: {e}"))
}

fn stat_rows(rows: &mut Rows, phase: &str, stats: &Stats) {
    for name in XDS_STATS {
        rows.push((
            format!("{phase}: {name}"),
            stats.get(name).unwrap_or("<absent>").to_string(),
        ));
    }
}

/// Polls `/stats` until `name` is `value` (bounded), for state that settles after an ACK.
fn wait_stat(proxy: &Proxy, name: &str, value: u64) {
    let mut last = None;
    let reached = try_wait_for(XDS_WAIT, || {
        last = proxy.stats().get_int(name);
        (last == Some(value)).then_some(())
    });
    assert!(
        reached.is_some(),
        "{}: stat {name} stayed {last:?}, expected {value}",
        proxy.target()
    );
}

/// SET then GET `key` through the listener on `port` with a fresh connection.
fn set_get(port: u16, key: &str, value: &str) -> (Reply, Reply) {
    let mut client = RespClient::connect(port);
    let set = client.cmd(&["SET", key, value]);
    let get = client.cmd(&["GET", key]);
    (set, get)
}

fn last_request_of(server: &AdsServer, type_url: &str) -> String {
    server
        .requests()
        .iter()
        .rev()
        .find(|r| r.type_url == type_url)
        .map(|r| r.summary())
        .unwrap_or_default()
}

/// The whole protocol scenario on one target; rows compared between targets.
fn protocol_scenario(
    target: Target,
    variant: Variant,
    transport: Transport,
    a: &RedisServer,
    b: &RedisServer,
) -> Rows {
    a.flushall();
    b.flushall();
    let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut server = control_plane(transport, &dir);
    let mut rows = Rows::new();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());

    // Initial state: an EDS cluster on server A, a STATIC cluster on B, one listener.
    server.set_messages(
        "c1",
        &[
            eds_cluster("backend"),
            static_cluster("static_b", &[b.port()]),
        ],
    );
    server.set_messages("e1", &[load_assignment("backend", &[a.port()])]);
    server.set_messages("l1", &[redis_listener("l1", p1, "backend")]);
    let yaml = xds_bootstrap(&server, &XdsBootstrap::new(variant));
    let proxy = Proxy::start(target, &yaml, &[]);
    // The two NACKs below (the second CDS one again when the control plane comes back).
    proxy.expect_log(
        Level::Warn,
        "Error adding/updating listener(s) bad: filter_chains[0].filters[0].typed_config.\
         stat_prefix: Proto constraint validation failed",
    );
    proxy.expect_log(
        Level::Warn,
        "Error adding/updating cluster(s) ca: lb_policy: cluster manager: cluster provided LB \
         specified but cluster 'ca' did not provide one.",
    );
    let lds_ack = server.wait_for_request(0, XDS_WAIT, "the first LDS ACK", |r| {
        r.type_url == TYPE_LISTENER && !r.response_nonce.is_empty()
    });
    assert!(!lds_ack.is_nack(), "{target}: {}", lds_ack.summary());
    let initial = server.requests();
    assert!(
        initial[0].has_node,
        "{target}: the first request carries the node"
    );
    assert_eq!(initial[0].node_id, redvoy_test_util::xds::NODE_ID);
    rows.push((
        "initial requests".into(),
        initial
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    wait_stat(&proxy, "control_plane.connected_state", 1);
    stat_rows(&mut rows, "initial", &proxy.stats());
    let (set, get) = set_get(p1, "k1", "v1");
    assert_eq!(
        (set, get),
        (Reply::ok(), Reply::bulk("v1")),
        "{target}: via l1"
    );
    assert_eq!(
        a.cmd(&["GET", "k1"]),
        Reply::bulk("v1"),
        "{target}: k1 on A"
    );

    // Partial apply: a good new listener and an invalid one (empty stat_prefix) in one
    // response. The good one is applied, the response NACKed naming the bad one.
    let bad = redis_listener_with(
        "bad",
        "127.0.0.1",
        p3,
        redis_proxy("", &[], Some("backend")),
    );
    let replies = server.push(
        "l2",
        &[
            redis_listener("l1", p1, "backend"),
            redis_listener("l2", p2, "static_b"),
            bad,
        ],
        XDS_WAIT,
    );
    let nack = replies
        .first()
        .unwrap_or_else(|| panic!("{target}: no LDS push"));
    rows.push(("partial apply: reply".into(), nack.summary()));
    let detail = nack
        .error_detail
        .clone()
        .unwrap_or_else(|| panic!("{target}: expected a NACK, got {}", nack.summary()));
    assert_eq!(detail.code, 13, "{target}: NACK code");
    assert!(
        detail.message.contains("bad"),
        "{target}: the NACK message names the listener: {:?}",
        detail.message
    );
    rows.push(("partial apply: error code".into(), detail.code.to_string()));
    // Envoy's protoc-gen-validate wording, which control planes and tooling match on.
    rows.push((
        "partial apply: NACK has Envoy's constraint text".into(),
        detail
            .message
            .contains(
                "Proto constraint validation failed (RedisProxyValidationError.StatPrefix: \
                 value length must be at least 1 characters)",
            )
            .to_string(),
    ));
    eprintln!("{target}: NACK message: {:?}", detail.message);
    wait_for(XDS_WAIT, "l2 to listen", || port_open(p2).then_some(()));
    let (set, get) = set_get(p2, "k2", "v2");
    assert_eq!(
        (set, get),
        (Reply::ok(), Reply::bulk("v2")),
        "{target}: via l2"
    );
    assert_eq!(
        b.cmd(&["GET", "k2"]),
        Reply::bulk("v2"),
        "{target}: k2 on B"
    );
    let (set, get) = set_get(p1, "k3", "v3");
    assert_eq!(
        (set, get),
        (Reply::ok(), Reply::bulk("v3")),
        "{target}: l1 still serves"
    );
    rows.push((
        "partial apply: bad listener port open".into(),
        port_open(p3).to_string(),
    ));
    wait_stat(&proxy, "listener_manager.lds.update_rejected", 1);
    stat_rows(&mut rows, "partial apply", &proxy.stats());

    // Removal of a listener: l2 is absent from the next full state; its port closes.
    let replies = server.push("l3", &[redis_listener("l1", p1, "backend")], XDS_WAIT);
    rows.push((
        "listener removal: reply".into(),
        replies
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    wait_port_closed(p2);
    wait_stat(&proxy, "listener_manager.listener_removed", 1);
    stat_rows(&mut rows, "listener removal", &proxy.stats());

    // Removal of a cluster.
    let replies = server.push("c2", &[eds_cluster("backend")], XDS_WAIT);
    rows.push((
        "cluster removal: reply".into(),
        replies
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    wait_stat(&proxy, "cluster_manager.cluster_removed", 1);
    stat_rows(&mut rows, "cluster removal", &proxy.stats());

    // A plain cluster asking for a cluster-provided load balancer: NACKed with Envoy's text,
    // the valid cluster of the same response kept.
    let replies = server.push(
        "c3",
        &[
            eds_cluster("backend"),
            with_cluster_provided_lb(static_cluster("ca", &[a.port()])),
        ],
        XDS_WAIT,
    );
    let nack = replies
        .first()
        .unwrap_or_else(|| panic!("{target}: no CDS push"));
    let detail = nack
        .error_detail
        .clone()
        .unwrap_or_else(|| panic!("{target}: expected a NACK, got {}", nack.summary()));
    eprintln!("{target}: CDS NACK message: {:?}", detail.message);
    rows.push((
        "cluster provided: NACK has Envoy's text".into(),
        (detail
            .message
            .starts_with("Error adding/updating cluster(s) ca: ")
            && detail.message.contains(
                "cluster manager: cluster provided LB specified but cluster 'ca' did not \
                 provide one. Check cluster documentation.",
            ))
        .to_string(),
    ));
    wait_stat(&proxy, "cluster_manager.cds.update_rejected", 1);
    stat_rows(&mut rows, "cluster provided", &proxy.stats());

    // EDS change: the cluster's only endpoint moves from A to B; new keys land on B.
    let replies = server.push("e2", &[load_assignment("backend", &[b.port()])], XDS_WAIT);
    rows.push((
        "eds change: reply".into(),
        replies
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let mut n = 0;
    wait_for(XDS_WAIT, "a key to land on B after the EDS change", || {
        n += 1;
        let key = format!("probe{n}");
        let (set, _) = set_get(p1, &key, "x");
        assert_eq!(set, Reply::ok(), "{target}: SET {key}");
        (b.cmd(&["GET", &key]) == Reply::bulk("x")).then_some(())
    });
    for i in 0..KEYS_AFTER_EDS_CHANGE {
        let key = format!("after-eds-{i}");
        assert_eq!(set_get(p1, &key, "y").0, Reply::ok(), "{target}: SET {key}");
        assert_eq!(
            b.cmd(&["GET", &key]),
            Reply::bulk("y"),
            "{target}: {key} on B"
        );
        assert_eq!(
            a.cmd(&["EXISTS", &key]),
            Reply::Integer(0),
            "{target}: {key} not on A"
        );
    }

    // Control-plane restart: the proxy keeps serving while it is gone, then resubscribes
    // with the versions it holds.
    let before_restart = server.request_count();
    server.stop();
    wait_stat(&proxy, "control_plane.connected_state", 0);
    let (set, get) = set_get(p1, "during-outage", "z");
    assert_eq!(
        (set, get),
        (Reply::ok(), Reply::bulk("z")),
        "{target}: serving while xDS is down"
    );
    server
        .restart()
        .unwrap_or_else(|e| panic!("restart ADS: {e}"));
    server.wait_for_request(
        before_restart,
        RECONNECT_WAIT,
        "the LDS ACK after reconnect",
        |r| r.type_url == TYPE_LISTENER && !r.response_nonce.is_empty(),
    );
    wait_stat(&proxy, "control_plane.connected_state", 1);
    let (set, get) = set_get(p1, "after-restart", "w");
    assert_eq!(
        (set, get),
        (Reply::ok(), Reply::bulk("w")),
        "{target}: serving after restart"
    );
    let resubscribe: Vec<String> = server.requests()[before_restart..]
        .iter()
        .map(|r| format!("s{} {}", r.stream, r.summary()))
        .collect();
    rows.push(("after restart: requests".into(), resubscribe.join(" ")));
    let stats = proxy.stats();
    // Reconnect attempts while the server was down depend on timing: only "some".
    for name in [
        "listener_manager.lds.update_failure",
        "cluster_manager.cds.update_failure",
    ] {
        rows.push((
            format!("after restart: {name} > 0"),
            stats.get_int(name).is_some_and(|v| v > 0).to_string(),
        ));
    }
    for name in XDS_STATS.iter().filter(|n| !n.ends_with("update_attempt")) {
        rows.push((
            format!("after restart: {name}"),
            stats.get(name).unwrap_or("<absent>").to_string(),
        ));
    }
    rows.push((
        "last EDS request".into(),
        last_request_of(&server, TYPE_ENDPOINT),
    ));
    rows.push((
        "last CDS request".into(),
        last_request_of(&server, TYPE_CLUSTER),
    ));
    rows.push((
        "all requests".into(),
        server
            .requests()
            .iter()
            .map(|r| format!("s{} {}", r.stream, r.summary()))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    drop(proxy);
    rows
}

fn run_protocol(variant: Variant, transport: Transport) {
    let a = RedisServer::start();
    let b = RedisServer::start();
    same_on_all_targets(&targets(), |target| {
        protocol_scenario(target, variant, transport, &a, &b)
    });
}

#[test]
fn sotw_over_tcp() {
    run_protocol(Variant::Sotw, Transport::Tcp);
}

#[test]
fn sotw_over_unix_socket() {
    run_protocol(Variant::Sotw, Transport::Unix);
}

#[test]
fn delta_over_tcp() {
    run_protocol(Variant::Delta, Transport::Tcp);
}

#[test]
fn delta_over_unix_socket() {
    run_protocol(Variant::Delta, Transport::Unix);
}

/// The control plane answers CDS (empty) but never LDS: with a 1 s LDS
/// `initial_fetch_timeout` the proxy goes LIVE after it, counting `init_fetch_timeout`.
fn fetch_timeout_scenario(target: Target, variant: Variant) -> Rows {
    let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let server = control_plane(Transport::Unix, &dir);
    server.set_messages::<redvoy_test_util::xds::XdsCluster>("c1", &[]);
    let mut options = XdsBootstrap::new(variant);
    options.lds_initial_fetch_timeout = Some(Duration::from_secs(1));
    let yaml = xds_bootstrap(&server, &options);
    let proxy = Proxy::start_admin_answering(target, &yaml);
    proxy.expect_log(
        Level::Warn,
        "xDS: initial fetch timed out for type.googleapis.com/envoy.config.listener.v3.Listener",
    );
    wait_for(
        XDS_WAIT,
        "/ready to answer 200 after the LDS fetch timeout",
        || (proxy.admin("GET", "/ready").status == 200).then_some(()),
    );
    let mut rows = Rows::new();
    rows.push((
        "/ready".into(),
        proxy.admin("GET", "/ready").body.trim().to_string(),
    ));
    stat_rows(&mut rows, "after timeout", &proxy.stats());
    rows.push(("requests".into(), server.summaries().join(" ")));
    // LDS arriving late is still applied.
    let port = free_port();
    server.push("l1", &[redis_listener("late", port, "none")], XDS_WAIT);
    wait_for(XDS_WAIT, "the late listener", || {
        port_open(port).then_some(())
    });
    rows.push((
        "requests after late LDS".into(),
        server.summaries().join(" "),
    ));
    rows
}

#[test]
fn initial_fetch_timeout_expires_and_server_goes_live() {
    same_on_all_targets(&targets(), |target| {
        let mut rows = fetch_timeout_scenario(target, Variant::Sotw);
        rows.extend(
            fetch_timeout_scenario(target, Variant::Delta)
                .into_iter()
                .map(|(k, v)| (format!("delta {k}"), v)),
        );
        rows
    });
}

/// `initial_fetch_timeout: 0s` waits forever. Without a CDS answer the proxy stays
/// PRE_INITIALIZING (its cluster manager initializes); once CDS is answered it is INITIALIZING
/// until LDS answers (its init manager waits for the listeners); then LIVE. Not ready (503)
/// before, and its listeners do not exist.
#[test]
fn zero_initial_fetch_timeout_waits_for_lds() {
    same_on_all_targets(&targets(), |target| {
        let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let server = control_plane(Transport::Unix, &dir);
        let mut options = XdsBootstrap::new(Variant::Delta);
        options.lds_initial_fetch_timeout = Some(Duration::ZERO);
        options.cds_initial_fetch_timeout = Some(Duration::ZERO);
        let yaml = xds_bootstrap(&server, &options);
        let proxy = Proxy::start_admin_answering(target, &yaml);
        server.wait_for_request(0, XDS_WAIT, "the CDS subscription", |r| {
            r.type_url == TYPE_CLUSTER
        });
        let mut rows = Rows::new();
        let ready = |proxy: &Proxy| {
            let r = proxy.admin("GET", "/ready");
            format!("{} {}", r.status, r.body.trim())
        };
        let became_ready = try_wait_for(NOT_READY_WATCH, || {
            (proxy.admin("GET", "/ready").status == 200).then_some(())
        });
        assert!(became_ready.is_none(), "{target}: ready without CDS");
        rows.push(("/ready while waiting for CDS".into(), ready(&proxy)));
        rows.push((
            "/server_info state while waiting for CDS".into(),
            proxy.admin_json("/server_info")["state"].to_string(),
        ));
        // One cluster (never connected to): an empty Delta state would send nothing.
        server.push("c1", &[static_cluster("ca", &[free_port()])], XDS_WAIT);
        server.wait_for_request(0, XDS_WAIT, "the LDS subscription", |r| {
            r.type_url == TYPE_LISTENER
        });
        let became_ready = try_wait_for(NOT_READY_WATCH, || {
            (proxy.admin("GET", "/ready").status == 200).then_some(())
        });
        assert!(became_ready.is_none(), "{target}: ready without LDS");
        rows.push(("/ready while waiting for LDS".into(), ready(&proxy)));
        stat_rows(&mut rows, "waiting", &proxy.stats());
        // Envoy refreshes the `server.state` gauge on its stats flush (every 5 s), so while
        // waiting it may still read 0; /ready above is the state.
        rows.retain(|(label, _)| label != "waiting: server.state");
        let port = free_port();
        server.push("l1", &[redis_listener("l1", port, "none")], XDS_WAIT);
        wait_for(XDS_WAIT, "/ready 200 after LDS", || {
            (proxy.admin("GET", "/ready").status == 200).then_some(())
        });
        wait_for(XDS_WAIT, "the listener", || port_open(port).then_some(()));
        stat_rows(&mut rows, "after LDS", &proxy.stats());
        rows.push(("requests".into(), server.summaries().join(" ")));
        rows
    });
}
