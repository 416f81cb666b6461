//! The xDS client against the in-process ADS server: request sequences (compared with what
//! Envoy 1.40 sends for the same script, see `envoy_oracle.rs`), ACK/NACK versions and nonces,
//! EDS name changes, reconnects, initial fetch timeouts, Unix sockets and file sources.

// Test helpers outside #[test] functions panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Message;
use redvoy_test_util::ads::{pack, Address, AdsServer};
use redvoy_xds::{
    ApiType, ClientConfig, Handler, Source, StreamConfig, Target, Update, XdsHandle, TYPE_CLUSTER,
    TYPE_ENDPOINT, TYPE_LISTENER,
};

const WAIT: Duration = Duration::from_secs(5);

/// Records what the client hands over and keeps the cluster set, whose names are the EDS
/// names (every test cluster is an EDS cluster). A resource named `bad*` is refused.
#[derive(Default)]
struct Recorder {
    updates: Mutex<Vec<Update>>,
    clusters: Mutex<BTreeSet<String>>,
    initial: Mutex<Vec<(String, bool)>>,
}

impl Handler for Recorder {
    fn on_update(&self, update: Update) -> Result<(), String> {
        let bad: Vec<&str> = update
            .resources
            .iter()
            .filter(|r| r.name.starts_with("bad"))
            .map(|r| r.name.as_str())
            .collect();
        if update.type_url == TYPE_CLUSTER {
            let mut clusters = self.clusters.lock().unwrap();
            if update.state_of_the_world {
                clusters.clear();
            }
            for r in &update.removed {
                clusters.remove(r);
            }
            for r in &update.resources {
                if !r.name.starts_with("bad") {
                    clusters.insert(r.name.clone());
                }
            }
        }
        let result = if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "Error adding/updating listener(s) {}: bad\n",
                bad.join(": bad\n")
            ))
        };
        self.updates.lock().unwrap().push(update);
        result
    }

    fn eds_names(&self) -> Vec<String> {
        self.clusters.lock().unwrap().iter().cloned().collect()
    }

    fn on_initial_fetch_done(&self, type_url: &str, timed_out: bool) {
        self.initial
            .lock()
            .unwrap()
            .push((type_url.to_string(), timed_out));
    }
}

impl Recorder {
    fn initial(&self) -> Vec<(String, bool)> {
        self.initial.lock().unwrap().clone()
    }

    fn wait_initial(&self, n: usize) -> Vec<(String, bool)> {
        wait_until(|| (self.initial().len() >= n).then(|| self.initial()))
    }
}

fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met in {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        ..Default::default()
    }
}

fn cla(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        ..Default::default()
    }
}

fn listener(name: &str) -> Listener {
    Listener {
        name: name.into(),
        ..Default::default()
    }
}

fn node() -> Bytes {
    Node {
        id: "n1".into(),
        cluster: "c1".into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

fn target(server: &AdsServer) -> Target {
    match server.address() {
        Address::Tcp(a) => Target::Tcp(a.to_string()),
        Address::Unix(p) => Target::Unix(p.clone()),
    }
}

fn ads_config(server: &AdsServer, api_type: ApiType, node_first_only: bool) -> ClientConfig {
    ClientConfig {
        node: node(),
        ads: Some(StreamConfig {
            target: target(server),
            api_type,
            set_node_on_first_message_only: node_first_only,
            connection: Default::default(),
        }),
        cds: Source::Ads,
        lds: Source::Ads,
        eds: Source::Ads,
        sds: Source::Ads,
        cds_initial_fetch_timeout: Duration::ZERO,
        lds_initial_fetch_timeout: Duration::ZERO,
        eds_initial_fetch_timeout: Duration::ZERO,
    }
}

/// A running client: its runtime (the test thread stays free to block), handler and stats.
struct Running {
    recorder: Arc<Recorder>,
    store: redvoy_stats::Store,
    handle: Option<XdsHandle>,
    rt: tokio::runtime::Runtime,
}

impl Running {
    fn start(config: ClientConfig) -> Running {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let recorder = Arc::new(Recorder::default());
        let store = redvoy_stats::Store::new();
        let handle = {
            let _guard = rt.enter();
            redvoy_xds::spawn(config, recorder.clone(), &store).unwrap()
        };
        Running {
            recorder,
            store,
            handle: Some(handle),
            rt,
        }
    }

    fn stat(&self, name: &str) -> u64 {
        self.store
            .value_of(name)
            .unwrap_or_else(|| panic!("no stat {name}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.handle.take();
    }
}

/// Waits until the server has `n` requests and a short quiet period passed, then returns the
/// summaries from `from` on (so an extra request would show up as a mismatch).
fn settle(server: &AdsServer, n: usize, from: usize) -> Vec<String> {
    server.wait_for_requests(n, WAIT);
    std::thread::sleep(Duration::from_millis(150));
    server.summaries()[from..].to_vec()
}

/// The script of `envoy_oracle.rs`; the expected sequences are what Envoy 1.40 sent for it
/// (EDS names sorted: Envoy's order is that of a hash set).
fn script(server: &mut AdsServer, delta: bool) {
    server.set_messages("c1", &[cluster("a"), cluster("b")]);
    server.set_messages("e1", &[cla("a"), cla("b")]);
    server.set_messages("l1", &[listener("l")]);
    let steps: Vec<(&str, Vec<&str>)> = if delta {
        vec![
            (
                "initial",
                vec![
                    "CDS{node}",
                    "EDS{+[a,b]}",
                    "CDS{n=n1}",
                    "LDS{}",
                    "EDS{n=n2}",
                    "LDS{n=n3}",
                ],
            ),
            ("eds e2", vec![]),
            ("cds c2", vec!["EDS{+[c] -[b]}", "CDS{n=n4}", "EDS{n=n5}"]),
            ("cds c3", vec!["EDS{-[a,c]}", "CDS{n=n6}"]),
            ("cds c4", vec!["EDS{+[a]}", "CDS{n=n7}", "EDS{n=n8}"]),
            ("lds bad", vec!["LDS{n=n9 NACK(13)}"]),
            ("lds empty", vec!["LDS{n=n10}"]),
            (
                "restart",
                vec![
                    "CDS{node known[a@c4]}",
                    "EDS{+[a] known[a@e1]}",
                    "LDS{}",
                    "CDS{n=n11}",
                    "EDS{n=n12}",
                    "LDS{n=n13}",
                ],
            ),
        ]
    } else {
        vec![
            (
                "initial",
                vec![
                    "CDS{node}",
                    "EDS{[a,b]}",
                    "CDS{v=c1 n=n1}",
                    "LDS{}",
                    "EDS{v=e1 [a,b] n=n2}",
                    "LDS{v=l1 n=n3}",
                ],
            ),
            ("eds e2", vec!["EDS{v=e2 [a,b] n=n4}"]),
            (
                "cds c2",
                vec![
                    "EDS{v=e2 [a,c] n=n4}",
                    "CDS{v=c2 n=n5}",
                    "EDS{v=e2 [a,c] n=n6}",
                ],
            ),
            ("cds c3", vec!["EDS{v=e2 n=n6}", "CDS{v=c3 n=n7}"]),
            (
                "cds c4",
                vec!["EDS{v=e2 [a] n=n6}", "CDS{v=c4 n=n8}", "EDS{v=e2 [a] n=n9}"],
            ),
            ("lds bad", vec!["LDS{v=l1 n=n10 NACK(13)}"]),
            ("lds empty", vec!["LDS{v=l3 n=n11}"]),
            (
                "restart",
                vec![
                    "CDS{node v=c4}",
                    "EDS{v=e2 [a]}",
                    "LDS{v=l3}",
                    "CDS{v=c4 n=n12}",
                    "EDS{v=e2 [a] n=n13}",
                    "LDS{v=l3 n=n14}",
                ],
            ),
        ]
    };
    let mut seen = 0;
    for (label, expected) in steps {
        match label {
            "initial" => {}
            "eds e2" => {
                server.set_messages("e2", &[cla("a"), cla("b"), cla("c")]);
            }
            "cds c2" => {
                server.set_messages("c2", &[cluster("a"), cluster("c")]);
            }
            "cds c3" => {
                server.set_messages("c3", &[] as &[Cluster]);
            }
            "cds c4" => {
                server.set_messages("c4", &[cluster("a")]);
            }
            "lds bad" => {
                server.set_messages("l2", &[listener("l"), listener("bad")]);
            }
            "lds empty" => {
                server.set_messages("l3", &[] as &[Listener]);
            }
            "restart" => {
                server.restart().unwrap();
            }
            _ => unreachable!(),
        }
        let got = settle(server, seen + expected.len(), seen);
        assert_eq!(
            got,
            expected,
            "step {label}; all: {:#?}",
            server.summaries()
        );
        seen += expected.len();
    }
    // The NACK names the refused resource; the valid one of the same response was applied.
    let nack = server.requests().into_iter().find(|r| r.is_nack()).unwrap();
    let detail = nack.error_detail.unwrap();
    assert_eq!(detail.code, 13);
    assert_eq!(
        detail.message,
        "Error adding/updating listener(s) bad: bad\n"
    );
    // Node on the first request of each stream only; the server saw the bootstrap's node.
    let with_node: Vec<u64> = server
        .requests()
        .iter()
        .filter(|r| r.has_node)
        .map(|r| r.stream)
        .collect();
    assert_eq!(with_node, [1, 2]);
    assert_eq!(server.requests()[0].node_id, "n1");
    assert_eq!(server.requests()[0].node_cluster, "c1");
}

fn check_stats(running: &Running, delta: bool) {
    // As Envoy 1.40 reported after the same script (update_failure: one per stream loss, so
    // at least one here: a retry can also hit the restart window).
    let failures = running.stat("cluster_manager.cds.update_failure");
    assert!(failures >= 1);
    assert_eq!(running.stat("cluster_manager.cds.update_success"), 5);
    assert_eq!(running.stat("cluster_manager.cds.update_rejected"), 0);
    assert_eq!(
        running.stat("cluster_manager.cds.update_attempt"),
        6 + failures
    );
    assert_eq!(
        running.stat("cluster_manager.cds.version"),
        7591040797780345100
    );
    assert_eq!(running.stat("listener_manager.lds.update_success"), 3);
    assert_eq!(running.stat("listener_manager.lds.update_rejected"), 1);
    assert_eq!(
        running.stat("listener_manager.lds.update_attempt"),
        if delta { 6 } else { 5 } + running.stat("listener_manager.lds.update_failure")
    );
    assert_eq!(
        running.stat("listener_manager.lds.version"),
        13315180762226385533
    );
    assert_eq!(running.stat("listener_manager.lds.init_fetch_timeout"), 0);
    assert_eq!(running.stat("control_plane.connected_state"), 1);
}

fn full_script(mut server: AdsServer, api_type: ApiType) {
    let delta = api_type == ApiType::DeltaGrpc;
    let running = Running::start(ads_config(&server, api_type, true));
    script(&mut server, delta);
    check_stats(&running, delta);
    assert_eq!(
        running.recorder.initial(),
        [
            (TYPE_CLUSTER.to_string(), false),
            (TYPE_ENDPOINT.to_string(), false),
            (TYPE_LISTENER.to_string(), false)
        ]
    );
    // What the handler saw for the bad LDS push: both listeners (it refuses one itself).
    let updates = running.recorder.updates.lock().unwrap().clone();
    let lds: Vec<(String, Vec<String>, bool)> = updates
        .iter()
        .filter(|u| u.type_url == TYPE_LISTENER && !u.resources.is_empty())
        .map(|u| {
            (
                u.version_info.clone(),
                u.resources.iter().map(|r| r.name.clone()).collect(),
                u.state_of_the_world,
            )
        })
        .collect();
    assert_eq!(lds[0], ("l1".into(), vec!["l".into()], !delta));
    // Delta carries only what changed.
    let l2: Vec<String> = if delta {
        vec!["bad".into()]
    } else {
        vec!["bad".into(), "l".into()]
    };
    assert_eq!(lds[1], ("l2".into(), l2, !delta));
    if delta {
        // The removal of everything is explicit in Delta.
        let last = updates
            .iter()
            .rev()
            .find(|u| u.type_url == TYPE_LISTENER && !u.removed.is_empty())
            .unwrap();
        assert_eq!(last.removed, ["bad", "l"]);
    }
}

#[test]
fn sotw_sequence_matches_envoy() {
    full_script(AdsServer::start_tcp().unwrap(), ApiType::Grpc);
}

#[test]
fn delta_sequence_matches_envoy() {
    full_script(AdsServer::start_tcp().unwrap(), ApiType::DeltaGrpc);
}

#[test]
fn sotw_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    full_script(
        AdsServer::start_unix(dir.path().join("xds.sock")).unwrap(),
        ApiType::Grpc,
    );
}

#[test]
fn delta_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    full_script(
        AdsServer::start_unix(dir.path().join("xds.sock")).unwrap(),
        ApiType::DeltaGrpc,
    );
}

#[test]
fn node_on_every_request_unless_first_only() {
    let server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[cluster("a")]);
    server.set_messages("e1", &[cla("a")]);
    server.set_messages("l1", &[listener("l")]);
    let _running = Running::start(ads_config(&server, ApiType::Grpc, false));
    let got = settle(&server, 6, 0);
    assert_eq!(
        got,
        [
            "CDS{node}",
            "EDS{node [a]}",
            "CDS{node v=c1 n=n1}",
            "LDS{node}",
            "EDS{node v=e1 [a] n=n2}",
            "LDS{node v=l1 n=n3}"
        ]
    );
}

#[test]
fn no_eds_clusters_start_lds_right_after_cds() {
    let server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[] as &[Cluster]);
    server.set_messages("l1", &[listener("l")]);
    let running = Running::start(ads_config(&server, ApiType::Grpc, true));
    let got = settle(&server, 4, 0);
    assert_eq!(
        got,
        ["CDS{node}", "LDS{}", "CDS{v=c1 n=n1}", "LDS{v=l1 n=n2}"]
    );
    assert_eq!(
        running.recorder.wait_initial(3),
        [
            (TYPE_CLUSTER.to_string(), false),
            (TYPE_ENDPOINT.to_string(), false),
            (TYPE_LISTENER.to_string(), false)
        ]
    );
}

#[test]
fn initial_fetch_timeouts() {
    // Nothing is ever answered: CDS times out, then LDS (no EDS names are needed).
    let server = AdsServer::start_tcp().unwrap();
    let mut config = ads_config(&server, ApiType::Grpc, true);
    config.cds_initial_fetch_timeout = Duration::from_millis(200);
    config.lds_initial_fetch_timeout = Duration::from_millis(200);
    let running = Running::start(config);
    assert_eq!(
        running.recorder.wait_initial(3),
        [
            (TYPE_CLUSTER.to_string(), true),
            (TYPE_ENDPOINT.to_string(), false),
            (TYPE_LISTENER.to_string(), true)
        ]
    );
    assert_eq!(server.summaries(), ["CDS{node}", "LDS{}"]);
    assert_eq!(running.stat("cluster_manager.cds.init_fetch_timeout"), 1);
    assert_eq!(running.stat("listener_manager.lds.init_fetch_timeout"), 1);
    // start + timeout
    assert_eq!(running.stat("cluster_manager.cds.update_attempt"), 2);
    // A late answer is still applied and ACKed; the initial fetch is not reported again.
    server.set_messages("c1", &[cluster("a")]);
    let got = settle(&server, 4, 2);
    assert_eq!(got, ["EDS{[a]}", "CDS{v=c1 n=n1}"]);
    assert_eq!(running.recorder.initial().len(), 3);
}

#[test]
fn eds_timeout_releases_lds() {
    let server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[cluster("a")]);
    server.set_messages("l1", &[listener("l")]);
    let mut config = ads_config(&server, ApiType::DeltaGrpc, true);
    config.eds_initial_fetch_timeout = Duration::from_millis(200);
    let running = Running::start(config);
    let got = settle(&server, 5, 0);
    assert_eq!(
        got,
        ["CDS{node}", "EDS{+[a]}", "CDS{n=n1}", "LDS{}", "LDS{n=n2}"]
    );
    assert_eq!(
        running.recorder.wait_initial(3)[1],
        (TYPE_ENDPOINT.to_string(), true)
    );
}

#[test]
fn file_sources() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lds.pb");
    let write = |version: &str, names: &[&str]| {
        let response = DiscoveryResponse {
            version_info: version.into(),
            resources: names.iter().map(|n| pack(&listener(n))).collect(),
            type_url: TYPE_LISTENER.into(),
            ..Default::default()
        };
        // Written aside and moved onto the path, as Envoy expects.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, response.encode_to_vec()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write("f1", &["x", "y"]);
    let config = ClientConfig {
        node: node(),
        ads: None,
        cds: Source::None,
        lds: Source::Path(path.clone(), None),
        eds: Source::None,
        sds: Source::None,
        cds_initial_fetch_timeout: Duration::ZERO,
        lds_initial_fetch_timeout: Duration::ZERO,
        eds_initial_fetch_timeout: Duration::ZERO,
    };
    let running = Running::start(config);
    let names = |running: &Running| -> Vec<(String, Vec<String>)> {
        running
            .recorder
            .updates
            .lock()
            .unwrap()
            .iter()
            .map(|u| {
                assert!(u.state_of_the_world);
                (
                    u.version_info.clone(),
                    u.resources.iter().map(|r| r.name.clone()).collect(),
                )
            })
            .collect()
    };
    assert_eq!(running.recorder.wait_initial(3).len(), 3);
    assert_eq!(
        names(&running),
        [("f1".to_string(), vec!["x".to_string(), "y".into()])]
    );
    write("f2", &["x"]);
    wait_until(|| (names(&running).len() == 2).then_some(()));
    assert_eq!(
        names(&running)[1],
        ("f2".to_string(), vec!["x".to_string()])
    );
    // A refused file and an unreadable one: counted, last good version kept.
    write("f3", &["bad"]);
    wait_until(|| (running.stat("listener_manager.lds.update_rejected") == 1).then_some(()));
    std::fs::write(&path, b"not a protobuf \xff\xff").unwrap();
    wait_until(|| (running.stat("listener_manager.lds.update_failure") == 1).then_some(()));
    assert_eq!(running.stat("listener_manager.lds.update_success"), 2);
    let version = running.stat("listener_manager.lds.version");
    write("f2", &["x"]);
    wait_until(|| (running.stat("listener_manager.lds.update_success") == 3).then_some(()));
    assert_eq!(running.stat("listener_manager.lds.version"), version);
}

#[test]
fn eds_names_changed_from_the_handle() {
    let server = AdsServer::start_tcp().unwrap();
    server.set_messages("c1", &[cluster("a")]);
    server.set_messages("e1", &[cla("a"), cla("z")]);
    server.set_messages("l1", &[listener("l")]);
    let running = Running::start(ads_config(&server, ApiType::Grpc, true));
    settle(&server, 6, 0);
    running.recorder.clusters.lock().unwrap().insert("z".into());
    running.handle.as_ref().unwrap().eds_names_changed();
    let got = settle(&server, 8, 6);
    assert_eq!(got, ["EDS{v=e1 [a,z] n=n2}", "EDS{v=e1 [a,z] n=n4}"]);
}

/// A CDS response far above gRPC's usual 4 MiB limit (large meshes send such) is received,
/// handed over whole and ACKed.
#[test]
fn responses_larger_than_4_mib_are_accepted() {
    let server = AdsServer::start_tcp().unwrap();
    let running = Running::start(ads_config(&server, ApiType::Grpc, true));
    // 3,000 clusters of ~2 KiB each: ~6 MiB in one DiscoveryResponse.
    let clusters: Vec<Cluster> = (0..3000)
        .map(|i| Cluster {
            name: format!("c{i:04}-{}", "x".repeat(2000)),
            ..Default::default()
        })
        .collect();
    let bytes: usize = clusters.iter().map(|c| c.encoded_len()).sum();
    assert!(bytes > 5 << 20, "{bytes}");
    server.set_messages("big", &clusters);
    let ack = wait_until(|| {
        server
            .requests()
            .into_iter()
            .find(|r| r.type_url == TYPE_CLUSTER && r.version_info == "big")
    });
    assert!(!ack.is_nack());
    let delivered = wait_until(|| {
        running
            .recorder
            .updates
            .lock()
            .unwrap()
            .iter()
            .find(|u| u.type_url == TYPE_CLUSTER && u.version_info == "big")
            .map(|u| u.resources.len())
    });
    assert_eq!(delivered, 3000);
}
