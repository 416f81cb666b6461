//! Every admin endpoint over a real socket, with a raw HTTP/1.1 client and an in-process fake
//! backend, checked against what Envoy 1.40 answers (status, content type, body).

// Test helpers outside `#[test]` functions are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redvoy_admin::{
    bind_pipe, serve, serve_unix, Address, AdminBackend, AdminError, AdminState, ClusterStatus,
    CommandLineOptions, ConfigDumpQuery, DrainRequest, DrainStrategy, HostStatus, ListenerStatus,
    LogChange, LogLevel, MemoryStats, RuntimeEntry, RuntimeView, ServerInfo, ServerState,
    Thresholds,
};
use redvoy_stats::{HistogramUnit, Store};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

// === the fake backend ===

#[derive(Default)]
struct Fake {
    drains: Mutex<Vec<DrainRequest>>,
    admin_layer: Mutex<Option<Vec<(String, String)>>>,
    loggers: Mutex<Vec<(String, LogLevel)>>,
    dump_queries: Mutex<Vec<ConfigDumpQuery>>,
    /// When set, `config_dump` answers this as already applied.
    applied: Mutex<Option<String>>,
}

const CONFIG_DUMP: &str = r#"{"configs":[
 {"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
  "bootstrap":{"node":{"id":"sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local","cluster":"app.ns"},
   "admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":15000}}}},
  "last_updated":"2026-11-22T04:04:44.690Z"},
 {"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
  "static_clusters":[
   {"cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"down_cluster","type":"STATIC","connect_timeout":"1s","alt_stat_name":"down;"},"last_updated":"2026-11-22T04:04:44.693Z"},
   {"cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"redis_cluster","type":"STATIC","connect_timeout":"1s","lb_policy":"RING_HASH"},"last_updated":"2026-11-22T04:04:44.693Z"}]},
 EDS
 {"@type":"type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
  "static_listeners":[{"listener":{"@type":"type.googleapis.com/envoy.config.listener.v3.Listener","name":"redis_listener","address":{"socket_address":{"address":"127.0.0.1","port_value":6379}}},"last_updated":"2026-11-22T04:04:44.712Z"}]},
 {"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}]}"#;

const EDS_DUMP: &str = r#"{"@type":"type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
  "static_endpoint_configs":[{"endpoint_config":{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment","cluster_name":"redis_cluster","policy":{"overprovisioning_factor":140}}}]},"#;

impl AdminBackend for Fake {
    fn config_dump(&self, query: &ConfigDumpQuery) -> Result<String, AdminError> {
        self.dump_queries.lock().unwrap().push(query.clone());
        if let Some(applied) = self.applied.lock().unwrap().clone() {
            return Ok(applied);
        }
        let eds = if query.include_eds { EDS_DUMP } else { "" };
        Ok(CONFIG_DUMP.replace("EDS", eds))
    }

    fn clusters(&self) -> Vec<ClusterStatus> {
        let mut host = HostStatus::new(Address::Socket {
            ip: "127.0.0.1".into(),
            port: 6380,
        });
        host.hostname = "redis-a".into();
        host.stats[1].value = 3; // cx_total
        let down = ClusterStatus {
            name: "down_cluster".into(),
            observability_name: "down;".into(),
            added_via_api: false,
            eds_service_name: String::new(),
            circuit_breakers: [
                Thresholds {
                    max_connections: 7,
                    max_requests: 9,
                    ..Thresholds::default()
                },
                Thresholds::default(),
            ],
            outlier: None,
            hosts: vec![HostStatus::new(Address::Socket {
                ip: "127.0.0.1".into(),
                port: 1,
            })],
        };
        let redis = ClusterStatus {
            name: "redis_cluster".into(),
            observability_name: "redis_cluster".into(),
            hosts: vec![host],
            circuit_breakers: [Thresholds::default(); 2],
            ..down.clone()
        };
        vec![down, redis]
    }

    fn listeners(&self) -> Vec<ListenerStatus> {
        vec![ListenerStatus {
            name: "redis_listener".into(),
            local_address: Address::Socket {
                ip: "127.0.0.1".into(),
                port: 6379,
            },
            additional_local_addresses: vec![],
        }]
    }

    fn server_info(&self) -> ServerInfo {
        ServerInfo {
            version: "redvoy/1.40.0/Clean/RELEASE/rustls".into(),
            uptime_current_epoch: Duration::from_secs(9),
            uptime_all_epochs: Duration::from_secs(9),
            hot_restart_version: "disabled".into(),
            command_line_options: CommandLineOptions {
                concurrency: 2,
                config_path: "envoy.yaml".into(),
                drain_time: Duration::from_secs(5),
                drain_strategy: DrainStrategy::Immediate,
                disable_hot_restart: true,
                ..CommandLineOptions::default()
            },
            node_json: r#"{"id":"n1","cluster":"c1","client_features":[],"dynamic_parameters":{}}"#
                .into(),
        }
    }

    fn drain_listeners(&self, request: DrainRequest) {
        self.drains.lock().unwrap().push(request);
    }

    fn runtime(&self) -> RuntimeView {
        let admin = self.admin_layer.lock().unwrap().clone().unwrap_or_default();
        RuntimeView {
            layers: vec!["static".into(), "admin".into()],
            entries: admin
                .into_iter()
                .map(|(k, v)| RuntimeEntry {
                    key: k,
                    final_value: v.clone(),
                    layer_values: vec![String::new(), v],
                })
                .collect(),
        }
    }

    fn runtime_modify(&self, changes: &[(String, String)]) -> Result<(), AdminError> {
        let mut layer = self.admin_layer.lock().unwrap();
        let Some(layer) = layer.as_mut() else {
            return Err(AdminError::new(503, "No admin layer specified"));
        };
        for (k, v) in changes {
            layer.retain(|(key, _)| key != k);
            if !v.is_empty() {
                layer.push((k.clone(), v.clone()));
            }
        }
        Ok(())
    }

    fn memory(&self) -> MemoryStats {
        MemoryStats {
            allocated: 8162920,
            heap_size: 12582912,
            ..MemoryStats::default()
        }
    }

    fn loggers(&self) -> Vec<(String, LogLevel)> {
        self.loggers.lock().unwrap().clone()
    }

    fn set_log_levels(&self, change: LogChange) {
        let mut loggers = self.loggers.lock().unwrap();
        match change {
            LogChange::All(level) => loggers.iter_mut().for_each(|l| l.1 = level),
            LogChange::Named(named) => {
                for (name, level) in named {
                    if let Some(l) = loggers.iter_mut().find(|l| l.0 == name) {
                        l.1 = level;
                    }
                }
            }
        }
    }
}

// === the harness ===

struct Admin {
    addr: SocketAddr,
    stats: Store,
    server: Arc<ServerState>,
    fake: Arc<Fake>,
    quit: watch::Receiver<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

fn state(stats: &Store, fake: &Arc<Fake>) -> (AdminState, Arc<ServerState>, watch::Receiver<bool>) {
    let server = Arc::new(ServerState::new());
    let (shutdown, quit) = watch::channel(false);
    let backend: Arc<dyn AdminBackend> = fake.clone();
    let state = AdminState {
        stats: stats.clone(),
        server: Arc::clone(&server),
        shutdown,
        backend,
    };
    (state, server, quit)
}

fn fake() -> Arc<Fake> {
    let fake = Fake::default();
    *fake.admin_layer.lock().unwrap() = Some(Vec::new());
    *fake.loggers.lock().unwrap() = ["admin", "main", "redis"]
        .iter()
        .map(|n| ((*n).to_owned(), LogLevel::Info))
        .collect();
    Arc::new(fake)
}

async fn start() -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Store::new();
    stats.counter("redis.egress.command.get.total").add(4);
    stats.counter("redis.egress.command.getbit.total");
    stats.gauge("server.live").set(1);
    stats.gauge("server.state").set(0);
    stats.counter("listener_manager.workers_started").inc();
    stats.counter("cluster_manager.cds.update_success").inc();
    stats.counter("cluster_manager.cds.update_rejected");
    stats.counter("listener_manager.lds.update_success").add(2);
    stats
        .gauge("listener.0.0.0.0_6379.downstream_cx_active")
        .set(3);
    stats
        .gauge("listener.0.0.0.0_6379.worker_0.downstream_cx_active")
        .set(3);
    stats
        .histogram(
            "redis.egress.command.get.latency",
            HistogramUnit::Milliseconds,
        )
        .record(92);
    let fake = fake();
    let (state, server, quit) = state(&stats, &fake);
    let task = tokio::spawn(serve(listener, state));
    Admin {
        addr,
        stats,
        server,
        fake,
        quit,
        task,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap()
    }
}

/// Reads one response framed by content-length (`head` = response to HEAD, no body).
async fn read_reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>, head: bool) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(": ").unwrap();
        headers.push((k.to_owned(), v.to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    if !head {
        let n: usize = reply.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; n];
        r.read_exact(&mut body).await.unwrap();
        reply.body = String::from_utf8(body).unwrap();
    }
    reply
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut BufReader<S>,
    method: &str,
    target: &str,
    extra: &str,
) -> Reply {
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    );
    c.get_mut().write_all(raw.as_bytes()).await.unwrap();
    read_reply(c, method == "HEAD").await
}

async fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    exchange(&mut connect(addr).await, method, target, "").await
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target).await
}

async fn post(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "POST", target).await
}

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

// === lifecycle ===

#[tokio::test]
async fn ready_follows_the_server_state() {
    let a = start().await;
    let r = get(a.addr, "/ready").await;
    assert_eq!((r.status, r.body.as_str()), (503, "PRE_INITIALIZING\n"));
    assert_eq!(r.content_type(), TEXT);
    a.server.set_initializing();
    let r = get(a.addr, "/ready").await;
    assert_eq!((r.status, r.body.as_str()), (503, "INITIALIZING\n"));
    a.server.set_initialized();
    let r = get(a.addr, "/ready?x=1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));
    assert_eq!(r.content_type(), TEXT);
    assert_eq!(r.header("cache-control"), Some("no-cache, max-age=0"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("server"), Some("envoy"));
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
}

#[tokio::test]
async fn healthcheck_fail_and_ok() {
    let a = start().await;
    a.server.set_initialized();
    for path in ["/healthcheck/fail", "/healthcheck/ok"] {
        let r = get(a.addr, path).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (405, "Method GET not allowed, POST required.")
        );
    }
    assert_eq!(get(a.addr, "/ready").await.status, 200);

    let r = post(a.addr, "/healthcheck/fail").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (200, "OK\n", TEXT)
    );
    let r = get(a.addr, "/ready").await;
    assert_eq!((r.status, r.body.as_str()), (503, "DRAINING\n"));
    assert_eq!(
        json(&get(a.addr, "/server_info").await.body)["state"],
        "DRAINING"
    );
    // server.live moves at once; server.state is the binary's to update at the flush.
    assert_eq!(a.stats.value_of("server.live"), Some(0));
    assert_eq!(a.server.state().gauge_value(), 1);
    assert!(!a.server.live());

    let r = post(a.addr, "/healthcheck/ok").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert_eq!(get(a.addr, "/ready").await.body, "LIVE\n");
    assert_eq!(a.stats.value_of("server.live"), Some(1));
    assert_eq!(
        json(&get(a.addr, "/server_info").await.body)["state"],
        "LIVE"
    );
}

#[tokio::test]
async fn quitquitquit_needs_post_then_stops_serving() {
    let mut a = start().await;
    let r = get(a.addr, "/quitquitquit").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.content_type(), TEXT);
    assert_eq!(r.body, "Method GET not allowed, POST required.");
    let r = request(a.addr, "PUT", "/quitquitquit").await;
    assert_eq!(r.body, "Method PUT not allowed, POST required.");
    let r = request(a.addr, "HEAD", "/quitquitquit").await;
    assert_eq!(r.status, 405);
    assert!(!*a.quit.borrow());

    let r = post(a.addr, "/quitquitquit").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    tokio::time::timeout(Duration::from_secs(5), a.quit.wait_for(|q| *q))
        .await
        .unwrap()
        .unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), a.task)
        .await
        .unwrap()
        .unwrap();
    assert!(served.is_ok(), "serve returns once shutdown is requested");
}

#[tokio::test]
async fn drain_listeners_as_pilot_agent_sends_it() {
    let a = start().await;
    assert_eq!(get(a.addr, "/drain_listeners").await.status, 405);
    for target in [
        "/drain_listeners?inboundonly&graceful",
        "/drain_listeners?graceful",
        "/drain_listeners?inboundonly&graceful&skip_exit",
        "/drain_listeners",
    ] {
        let r = post(a.addr, target).await;
        assert_eq!(
            (r.status, r.body.as_str(), r.content_type()),
            (200, "OK\n", TEXT)
        );
    }
    let d = |inbound_only, graceful, skip_exit| DrainRequest {
        inbound_only,
        graceful,
        skip_exit,
    };
    assert_eq!(
        *a.fake.drains.lock().unwrap(),
        [
            d(true, true, false),
            d(false, true, false),
            d(true, true, true),
            d(false, false, false)
        ]
    );
}

// === /stats ===

#[tokio::test]
async fn stats_with_pilot_agent_queries() {
    let a = start().await;
    // Exactly as pilot-agent sends them: nothing percent-encoded.
    let r = get(
        a.addr,
        r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)",
    )
    .await;
    assert_eq!((r.status, r.content_type()), (200, TEXT));
    assert_eq!(
        r.body,
        "listener_manager.workers_started: 1\nserver.state: 0\n"
    );
    let r = get(
        a.addr,
        r"/stats?usedonly&filter=^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$",
    )
    .await;
    assert_eq!(
        r.body,
        "cluster_manager.cds.update_success: 1\nlistener_manager.lds.update_success: 2\n"
    );
    let r = get(a.addr, "/stats?usedonly&filter=downstream_cx_active$").await;
    assert_eq!(
        r.body,
        "http.admin.downstream_cx_active: 1\n\
         listener.0.0.0.0_6379.downstream_cx_active: 3\n\
         listener.0.0.0.0_6379.worker_0.downstream_cx_active: 3\n\
         listener.admin.downstream_cx_active: 1\n\
         listener.admin.main_thread.downstream_cx_active: 1\n"
    );
}

#[tokio::test]
async fn stats_text_and_json() {
    let a = start().await;
    let r = get(a.addr, "/stats?filter=%5Eredis%5C.egress%5C.command%5C.get").await;
    assert_eq!(
        r.body,
        "redis.egress.command.get.total: 4\n\
         redis.egress.command.getbit.total: 0\n\
         redis.egress.command.get.latency: No recorded values\n"
    );
    let r = get(a.addr, "/stats?usedonly&filter=command").await;
    assert_eq!(r.body, "redis.egress.command.get.total: 4\n");
    a.stats.flush();
    let r = get(a.addr, "/stats?usedonly&filter=latency").await;
    assert!(
        r.body.starts_with(
            "redis.egress.command.get.latency: P0(92.5,92.5) P25(92.5,92.5) P50(92.5,92.5)"
        ),
        "{}",
        r.body
    );
    let r = get(a.addr, "/stats?filter=nothing-matches").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let r = get(a.addr, "/stats?filter=").await;
    assert!(r.body.contains("server.live: 1\n"), "empty filter = none");

    let r = get(a.addr, "/stats?format=json&filter=^server").await;
    assert_eq!((r.status, r.content_type()), (200, JSON));
    assert_eq!(
        r.body,
        r#"{"stats":[{"name":"server.live","value":1},{"name":"server.state","value":0}]}"#
    );
    let r = get(a.addr, "/stats?format=json&filter=nothing").await;
    assert_eq!(r.body, r#"{"stats":[]}"#);
}

#[tokio::test]
async fn stats_errors_in_envoys_order() {
    let a = start().await;
    for (target, body) in [
        ("/stats?filter=(", "Invalid re2 regex: missing ): ("),
        ("/stats?filter=(&type=bogus", "Invalid re2 regex: missing ): ("),
        ("/stats?filter=a**", "Invalid re2 regex: bad repetition operator: **"),
        ("/stats?type=bogus", "invalid &type= param"),
        ("/stats?type=counters", "invalid &type= param"),
        ("/stats?format=bogus&type=bogus", "invalid &type= param"),
        (
            "/stats?histogram_buckets=bogus&format=bogus",
            "usage: /stats?histogram_buckets=(cumulative|disjoint|detailed|summary|prometheusnative)\n",
        ),
        (
            "/stats?format=bogus",
            "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n",
        ),
        ("/stats/prometheus?filter=(", "Invalid re2 regex: missing ): ("),
    ] {
        let r = get(a.addr, target).await;
        assert_eq!((r.status, r.body.as_str(), r.content_type()), (400, body, TEXT), "{target}");
    }
}

#[tokio::test]
async fn stats_prometheus_type_and_invert_filter() {
    let a = start().await;
    for target in [
        "/stats/prometheus?filter=^server",
        "/stats?format=prometheus&filter=^server",
        // /stats/prometheus ignores format= and type=.
        "/stats/prometheus?format=json&type=Counters&filter=^server",
    ] {
        let r = get(a.addr, target).await;
        assert_eq!((r.status, r.content_type()), (200, TEXT), "{target}");
        assert!(
            r.body.contains("# TYPE envoy_server_live gauge\n"),
            "{target}: {}",
            r.body
        );
        assert!(!r.body.contains("redis"), "{target}");
    }
    let r = get(a.addr, "/stats/prometheus?histogram_buckets=disjoint").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "unsupported prometheus histogram bucket mode")
    );

    let r = get(
        a.addr,
        "/stats?type=Counters&filter=^server|workers_started",
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "listener_manager.workers_started: 1\n")
    );
    let r = get(a.addr, "/stats?type=Gauges&filter=^server").await;
    assert_eq!(r.body, "server.live: 1\nserver.state: 0\n");

    let r = get(a.addr, "/stats?invert_filter").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            400,
            "invert_filter can only be used if filter is also provided"
        )
    );
    let r = get(a.addr, "/stats?invert_filter&filter=^[a-z]").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let r = get(
        a.addr,
        "/stats?invert_filter&filter=^[a-q]|^redis|^server.live",
    )
    .await;
    assert_eq!(r.body, "server.state: 0\n");
}

#[tokio::test]
async fn reset_counters() {
    let a = start().await;
    assert_eq!(get(a.addr, "/reset_counters").await.status, 405);
    let r = post(a.addr, "/reset_counters").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert_eq!(a.stats.value_of("redis.egress.command.get.total"), Some(0));
    assert_eq!(a.stats.value_of("server.live"), Some(1), "gauges are kept");
}

// === /server_info ===

#[tokio::test]
async fn server_info_shape() {
    let a = start().await;
    a.server.set_initialized();
    let r = get(a.addr, "/server_info").await;
    assert_eq!((r.status, r.content_type()), (200, JSON));
    assert!(r.body.starts_with(
        "{\n \"version\": \"redvoy/1.40.0/Clean/RELEASE/rustls\",\n \"state\": \"LIVE\",\n \"uptime_current_epoch\": \"9s\",\n \"uptime_all_epochs\": \"9s\",\n \"hot_restart_version\": \"disabled\",\n \"command_line_options\": {\n  \"base_id\": \"0\",\n  \"concurrency\": 2,\n  \"config_path\": \"envoy.yaml\",\n"
    ), "{}", r.body);
    assert!(r.body.ends_with(
        " \"node\": {\n  \"id\": \"n1\",\n  \"cluster\": \"c1\",\n  \"client_features\": [],\n  \"dynamic_parameters\": {}\n },\n \"hot_restart_initializing\": false\n}\n"
    ), "{}", r.body);
    let v = json(&r.body);
    let o = &v["command_line_options"];
    assert_eq!(o["drain_time"], "5s");
    assert_eq!(o["drain_strategy"], "Immediate");
    assert_eq!(o["file_flush_interval"], "10s");
    assert_eq!(o["parent_shutdown_time"], "900s");
    assert_eq!(o["disable_hot_restart"], true);
    assert_eq!(o["mode"], "Serve");
    assert_eq!(o["local_address_ip_version"], "v4");
    assert_eq!(o["socket_path"], "@envoy_domain_socket");
    assert_eq!(o["disabled_extensions"], serde_json::json!([]));
    assert_eq!(o.as_object().unwrap().len(), 39);
    let r = get(a.addr, "/hot_restart_version").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (200, "disabled", TEXT)
    );
}

// === /config_dump ===

#[tokio::test]
async fn config_dump_applied_by_the_backend() {
    let a = start().await;
    *a.fake.applied.lock().unwrap() = Some(r#"{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster","cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"c<1>"}}]}"#.into());
    let r = get(
        a.addr,
        "/config_dump?resource=static_clusters&mask=cluster.name&name_regex=c.*&include_eds=",
    )
    .await;
    assert_eq!((r.status, r.content_type()), (200, JSON));
    assert_eq!(
        r.body,
        "{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster\",\n   \"cluster\": {\n    \"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\",\n    \"name\": \"c\\u003c1\\u003e\"\n   }\n  }\n ]\n}\n"
    );
    assert_eq!(
        a.fake.dump_queries.lock().unwrap().last().unwrap(),
        &ConfigDumpQuery {
            resource: Some("static_clusters".into()),
            mask: Some("cluster.name".into()),
            name_regex: Some("c.*".into()),
            include_eds: true,
        }
    );
    // A bad name_regex never reaches the backend.
    let before = a.fake.dump_queries.lock().unwrap().len();
    assert_eq!(get(a.addr, "/config_dump?name_regex=a)").await.status, 400);
    assert_eq!(a.fake.dump_queries.lock().unwrap().len(), before);
}

// === /clusters, /listeners ===

#[tokio::test]
async fn clusters_text_json_and_filter() {
    let a = start().await;
    let r = get(a.addr, "/clusters").await;
    assert_eq!((r.status, r.content_type()), (200, TEXT));
    assert!(r.body.starts_with(
        "down_cluster::observability_name::down;\n\
         down_cluster::default_priority::max_connections::7\n\
         down_cluster::default_priority::max_pending_requests::1024\n\
         down_cluster::default_priority::max_requests::9\n\
         down_cluster::default_priority::max_retries::3\n\
         down_cluster::high_priority::max_connections::1024\n"
    ));
    assert!(r.body.contains(
        "redis_cluster::127.0.0.1:6380::cx_total::3\n\
         redis_cluster::127.0.0.1:6380::rq_active::0\n"
    ));
    assert!(r.body.contains("redis_cluster::127.0.0.1:6380::hostname::redis-a\nredis_cluster::127.0.0.1:6380::health_flags::healthy\nredis_cluster::127.0.0.1:6380::weight::1\n"));
    assert!(r.body.ends_with("redis_cluster::127.0.0.1:6380::success_rate::-1\nredis_cluster::127.0.0.1:6380::local_origin_success_rate::-1\n"));

    let r = get(a.addr, "/clusters?format=json").await;
    assert_eq!((r.status, r.content_type()), (200, JSON));
    let v = json(&r.body);
    let statuses = v["cluster_statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 2);
    assert_eq!(
        statuses[1]["host_statuses"][0]["stats"][1],
        serde_json::json!({"value": "3", "name": "cx_total"})
    );
    assert_eq!(
        statuses[0]["circuit_breakers"]["thresholds"][0]["max_connections"],
        7
    );
    assert_eq!(statuses[0]["observability_name"], "down;");

    let r = get(a.addr, "/clusters?filter=^redis").await;
    assert!(r.body.starts_with("redis_cluster::") && !r.body.contains("down_cluster"));
    let r = get(a.addr, "/clusters?format=bogus").await;
    assert_eq!((r.status, r.content_type()), (200, TEXT));
    let r = get(a.addr, "/clusters?filter=(").await;
    assert_eq!((r.status, r.body.as_str()), (400, "Invalid re2 regex"));
}

#[tokio::test]
async fn listeners_text_and_json() {
    let a = start().await;
    let r = get(a.addr, "/listeners").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (200, "redis_listener::127.0.0.1:6379\n", TEXT)
    );
    let r = get(a.addr, "/listeners?format=json").await;
    assert_eq!(r.content_type(), JSON);
    assert_eq!(
        r.body,
        "{\n \"listener_statuses\": [\n  {\n   \"name\": \"redis_listener\",\n   \"local_address\": {\n    \"socket_address\": {\n     \"address\": \"127.0.0.1\",\n     \"port_value\": 6379\n    }\n   }\n  }\n ]\n}\n"
    );
}

// === /logging ===

#[tokio::test]
async fn logging_lists_and_changes_levels() {
    let a = start().await;
    let r = get(a.addr, "/logging").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (405, "Method GET not allowed, POST required.")
    );
    let list = "active loggers:\n  admin: info\n  main: info\n  redis: info\n\n";
    let r = post(a.addr, "/logging").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (200, list, TEXT)
    );

    let r = post(a.addr, "/logging?redis=debug").await;
    assert_eq!(
        r.body,
        "active loggers:\n  admin: info\n  main: info\n  redis: debug\n\n"
    );
    let r = post(a.addr, "/logging?paths=admin:trace,main:error").await;
    assert_eq!(
        r.body,
        "active loggers:\n  admin: trace\n  main: error\n  redis: debug\n\n"
    );
    // Empty values are ignored, so this is `level=warning` alone.
    let r = post(a.addr, "/logging?level=warning&redis=&usedonly").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            200,
            "active loggers:\n  admin: warning\n  main: warning\n  redis: warning\n\n"
        )
    );

    let r = post(a.addr, "/logging?level=bogus").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        "error: unknown logger level\n\n\
         usage: /logging?<name>=<level> (change single level)\n\
         usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n\
         usage: /logging?level=<level> (change all levels)\n\
         usage: /logging?group=<group_name>:<level> (change group of loggers)\n\
         levels: trace debug info warning error critical off \n\
         active loggers:\n  admin: warning\n  main: warning\n  redis: warning\n\n"
    );
    let r = post(a.addr, "/logging?paths=redis:debug,nope:info").await;
    assert!(r.body.starts_with("error: unknown logger name\n\n"));
    assert!(r.body.ends_with("  redis: warning\n\n"), "nothing changed");
    let r = post(a.addr, "/logging?level=info&redis=debug").await;
    assert!(r
        .body
        .starts_with("error: invalid number of parameters\n\n"));
}

// === /runtime ===

#[tokio::test]
async fn runtime_and_runtime_modify() {
    let a = start().await;
    let r = get(a.addr, "/runtime").await;
    assert_eq!((r.status, r.content_type()), (200, JSON));
    assert_eq!(
        r.body,
        "{\n \"entries\": {},\n \"layers\": [\n  \"static\",\n  \"admin\"\n ]\n}\n"
    );

    let r = get(a.addr, "/runtime_modify?a=1").await;
    assert_eq!(r.status, 405);
    let r = post(a.addr, "/runtime_modify").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (
            400,
            "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n       or send the parameters as form values\nuse an empty value to remove a previously added override",
            TEXT
        )
    );
    let r = post(a.addr, "/runtime_modify?redis.mirror=50&k=1&k=2").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    let v = json(&get(a.addr, "/runtime").await.body);
    assert_eq!(v["entries"]["redis.mirror"]["final_value"], "50");
    assert_eq!(v["entries"]["k"]["final_value"], "1", "first value wins");

    // A form body counts only without a query and with the form content type.
    let mut c = connect(a.addr).await;
    let r = exchange(
        &mut c,
        "POST",
        "/runtime_modify",
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\nk=&fault=%2050",
    )
    .await;
    assert_eq!(r.body, "OK\n");
    let v = json(&get(a.addr, "/runtime").await.body);
    assert!(v["entries"].get("k").is_none(), "empty value removes");
    assert_eq!(v["entries"]["fault"]["final_value"], " 50");
    let mut c = connect(a.addr).await;
    let r = exchange(
        &mut c,
        "POST",
        "/runtime_modify",
        "Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nx=1",
    )
    .await;
    assert_eq!(r.status, 400);

    *a.fake.admin_layer.lock().unwrap() = None;
    let r = post(a.addr, "/runtime_modify?a=1").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (503, "No admin layer specified", TEXT)
    );
}

// === the small ones ===

#[tokio::test]
async fn memory_certs_and_fixed_answers() {
    let a = start().await;
    let r = get(a.addr, "/memory").await;
    assert_eq!((r.status, r.content_type()), (200, JSON));
    assert_eq!(
        r.body,
        "{\n \"allocated\": \"8162920\",\n \"heap_size\": \"12582912\",\n \"pageheap_unmapped\": \"0\",\n \"pageheap_free\": \"0\",\n \"total_thread_cache\": \"0\",\n \"total_physical_bytes\": \"0\"\n}\n"
    );
    let r = get(a.addr, "/certs").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (200, "{\n \"certificates\": []\n}\n", JSON)
    );
    let r = get(a.addr, "/init_dump").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.content_type()),
        (200, "{}\n", JSON)
    );
    let r = get(a.addr, "/contention").await;
    assert_eq!(
        r.body,
        "Mutex contention tracing is not enabled. To enable, run Envoy with flag --enable-mutex-tracing."
    );
    let r = get(a.addr, "/stats/recentlookups").await;
    assert_eq!(
        r.body,
        "Lookup tracking is not enabled. Use /stats/recentlookups/enable to enable.\n\ntotal: 0\n"
    );
    for path in [
        "/stats/recentlookups/enable",
        "/stats/recentlookups/disable",
        "/stats/recentlookups/clear",
        "/reopen_logs",
    ] {
        assert_eq!(get(a.addr, path).await.status, 405, "{path}");
        assert_eq!(post(a.addr, path).await.body, "OK\n", "{path}");
    }
    let r = post(a.addr, "/cpuprofiler").await;
    assert_eq!((r.status, r.body.as_str()), (400, "?enable=<y|n>\n"));
    let r = post(a.addr, "/cpuprofiler?enable=y").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "failure to start the profiler")
    );
    assert_eq!(post(a.addr, "/cpuprofiler?enable=n").await.body, "OK\n");
    let r = post(a.addr, "/heapprofiler?enable=y").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (501, "The current build does not support heap profiler")
    );
    assert_eq!(post(a.addr, "/allocprofiler").await.status, 400);
}

#[tokio::test]
async fn help_home_and_unknown_paths() {
    let a = start().await;
    let help = get(a.addr, "/help").await;
    assert_eq!((help.status, help.content_type()), (200, TEXT));
    assert!(help
        .body
        .starts_with("admin commands are:\n  /: Admin home page\n"));
    assert!(help
        .body
        .contains("  /quitquitquit (POST): exit the server\n"));
    for path in ["/nonexistent", "/stats/", "/Ready", "//"] {
        let r = get(a.addr, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.content_type(), TEXT);
        assert_eq!(r.body, format!("invalid path. {}", help.body));
    }
    let r = get(a.addr, "/").await;
    assert_eq!(
        (r.status, r.content_type()),
        (200, "text/html; charset=UTF-8")
    );
    assert!(r
        .body
        .starts_with("<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>"));
    assert!(r
        .body
        .contains("<form action='drain_listeners' method='post' class='home-form'>"));
    assert!(r
        .body
        .contains("<form action='config_dump' method='get' class='home-form'>"));
}

// === HTTP behaviour ===

#[tokio::test]
async fn keep_alive_pipelining_and_head() {
    let a = start().await;
    a.server.set_initialized();
    let mut c = connect(a.addr).await;
    // Two pipelined requests and a chunked POST body that must be consumed, then HEAD.
    c.get_mut()
        .write_all(
            b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /stats?filter=^server.live HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /ready HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              HEAD /ready HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
    assert_eq!(read_reply(&mut c, false).await.body, "LIVE\n");
    assert_eq!(read_reply(&mut c, false).await.body, "server.live: 1\n");
    assert_eq!(read_reply(&mut c, false).await.body, "LIVE\n");
    let head = read_reply(&mut c, true).await;
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("5"))
    );
    // Still open: one more request with a content-length body, then close.
    c.get_mut()
        .write_all(b"PUT /ready HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxy")
        .await
        .unwrap();
    let last = read_reply(&mut c, false).await;
    assert_eq!(last.body, "LIVE\n");
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "server closed after Connection: close");
}

#[tokio::test]
async fn bad_requests_get_an_answer_and_a_close() {
    let a = start().await;
    let mut c = connect(a.addr).await;
    let big = format!(
        "GET /ready HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    // The server may stop reading once the head is too large; a failed write is fine.
    let _ = c.get_mut().write_all(big.as_bytes()).await;
    assert_eq!(read_reply(&mut c, false).await.status, 431);

    let mut c = connect(a.addr).await;
    c.get_mut().write_all(b"GARBAGE\r\n\r\n").await.unwrap();
    let r = read_reply(&mut c, false).await;
    assert_eq!(r.status, 400);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    // The server is still serving others.
    assert_eq!(get(a.addr, "/ready").await.status, 503);
}

// === admin on a pipe ===

#[tokio::test]
async fn serves_on_a_unix_socket_with_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("redvoy-admin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin.sock");
    let path_str = path.to_str().unwrap().to_owned();
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listener = bind_pipe(&path_str, 0o600).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let stats = Store::new();
    let fake = fake();
    let (state, server, _quit) = state(&stats, &fake);
    server.set_initialized();
    let shutdown = state.shutdown.clone();
    let task = tokio::spawn(serve_unix(listener, state));
    let mut c = BufReader::new(tokio::net::UnixStream::connect(&path).await.unwrap());
    let r = exchange(&mut c, "GET", "/ready", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));
    let mut c = BufReader::new(tokio::net::UnixStream::connect(&path).await.unwrap());
    let r = exchange(&mut c, "GET", "/listeners", "").await;
    assert_eq!(r.body, "redis_listener::127.0.0.1:6379\n");
    shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn serves_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("redvoy-admin-test-{}", std::process::id());
    let listener = bind_pipe(&format!("@{name}"), 0).unwrap();
    let stats = Store::new();
    let fake = fake();
    let (state, _server, _quit) = state(&stats, &fake);
    tokio::spawn(serve_unix(listener, state));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std_stream = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    std_stream.set_nonblocking(true).unwrap();
    let mut c = BufReader::new(tokio::net::UnixStream::from_std(std_stream).unwrap());
    let r = exchange(&mut c, "GET", "/ready", "").await;
    assert_eq!((r.status, r.body.as_str()), (503, "PRE_INITIALIZING\n"));
}
