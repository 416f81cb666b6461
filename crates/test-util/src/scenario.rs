//! The local runner of `istio-examples/<scenario>/`: what `make demo-<scenario>` shows and
//! what `tests/e2e/istio_examples.rs` checks on Envoy and on redvoy.
//!
//! A scenario folder holds the Kubernetes YAML a user applies (`kubernetes.yaml`, the
//! EnvoyFilters) and `local.yaml`, which says which real redis-servers stand in for the pods
//! of which Service, the commands to send, what to show, and one live edit. The runner copies
//! the folder, writes one EndpointSlice per server (all on 127.0.0.1, each with its own port),
//! starts `redvoy-control-plane` on the copy (`--resolve-cluster-local`, its own VIP range),
//! starts the proxy with an Istio-shaped bootstrap (Delta ADS over the control plane's Unix
//! socket, the node of a pod with the scenario's labels), runs the steps, edits the file on
//! disk, waits for the proxy to ACK the push and runs the edit's steps.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{
    encode_command, free_port, http, try_wait_for, Proxy, ReadOutcome, RedisCluster, RedisServer,
    Reply, RespClient, Stats, Target,
};

/// Bound on the control plane and the proxy starting, a push being ACKed, a Redis Cluster's
/// topology reaching the proxy (its refresh runs every 5 s in the scenarios).
const WAIT: Duration = Duration::from_secs(20);
/// Bound on replicas catching up with their primaries.
const REPLICATION_WAIT: Duration = Duration::from_secs(10);
/// Bound on one command's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The environment variable naming the control plane binary.
pub const CONTROL_PLANE_BIN_ENV: &str = "REDVOY_CONTROL_PLANE_BIN";

// === local.yaml ===

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Local {
    pub description: String,
    pub proxy: ProxySpec,
    pub servers: Vec<ServerSpec>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub edit: Option<Edit>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    pub service: String,
    pub namespace: String,
    /// `standalone`, `replica` or `cluster`.
    pub kind: String,
    #[serde(default = "one")]
    pub count: usize,
    #[serde(default)]
    pub replicas_per_primary: usize,
    /// Endpoints carry the hostname `<service>-<i>` (StatefulSet pods), for pod DNS names.
    #[serde(default)]
    pub hostnames: bool,
    #[serde(default)]
    pub also_services: Vec<String>,
    #[serde(default)]
    pub replica_of: Option<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Step {
    Send {
        send: Vec<String>,
        to: String,
        #[serde(default)]
        expect: Option<String>,
    },
    ShowKeys {
        show_keys: Vec<String>,
    },
    ShowStats {
        show_stats: Vec<String>,
    },
    ShowCommands {
        show_commands: Vec<String>,
    },
    WaitReplication {
        wait_replication: bool,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub file: String,
    pub replace: String,
    pub with: String,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// Reads a scenario's `local.yaml`.
pub fn read_local(dir: &Path) -> Result<Local, String> {
    let path = dir.join("local.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

// === Running ===

/// One stand-in pod.
struct Pod {
    service: String,
    index: usize,
    port: u16,
    /// `primary`, `replica` or empty for a standalone server.
    role: &'static str,
    /// A Redis Cluster replica: the index of its primary. Which node replicates which primary
    /// is `redis-cli --cluster create`'s choice, so replicas are named by their primary.
    replica_of: Option<usize>,
}

impl Pod {
    fn label(&self) -> String {
        match (self.role, self.replica_of) {
            ("", _) => format!("{}[{}]", self.service, self.index),
            (_, Some(p)) => format!("{}[{}]'s replica", self.service, p),
            (role, None) => format!("{}[{}] ({role})", self.service, self.index),
        }
    }
}

/// The redis-servers of a run, killed on drop.
#[derive(Default)]
struct Servers {
    standalone: Vec<RedisServer>,
    clusters: Vec<RedisCluster>,
    pods: Vec<Pod>,
}

impl Servers {
    /// The stand-in server listening on `port`.
    fn server(&self, port: u16) -> Option<&RedisServer> {
        self.standalone
            .iter()
            .find(|s| s.port() == port)
            .or_else(|| {
                self.clusters
                    .iter()
                    .find(|c| c.ports().contains(&port))
                    .map(|c| c.server(port))
            })
    }
}

/// How a test talks xDS to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsListen {
    /// `--xds-address 127.0.0.1:<free port>`.
    Tcp,
    /// `--xds-uds <work dir>/xds.sock`.
    Uds,
}

/// A running `redvoy-control-plane`, killed on drop.
pub struct ControlPlane {
    child: Child,
    pub admin: u16,
    /// With [`XdsListen::Tcp`].
    pub xds_port: u16,
    /// With [`XdsListen::Uds`].
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl ControlPlane {
    /// Starts `bin` on `config` (its log and socket under `dir`, VIPs from `vip_range`,
    /// `--debounce-ms 50`, then `extra`) and waits until it is ready.
    pub fn start(
        bin: &Path,
        config: &Path,
        dir: &Path,
        vip_range: &str,
        xds: XdsListen,
        extra: &[&str],
    ) -> Result<Self, String> {
        let cp = Self::spawn(bin, config, dir, vip_range, xds, extra)?;
        try_wait_for(WAIT, || {
            http(cp.admin, "GET", "/ready")
                .ok()
                .filter(|r| r.status == 200)
        })
        .ok_or_else(|| format!("the control plane did not start:\n{}", cp.log_text()))?;
        Ok(cp)
    }

    /// As [`ControlPlane::start`], without waiting for it to be ready.
    pub fn spawn(
        bin: &Path,
        config: &Path,
        dir: &Path,
        vip_range: &str,
        xds: XdsListen,
        extra: &[&str],
    ) -> Result<Self, String> {
        let admin = free_port();
        let xds_port = free_port();
        let socket = dir.join("xds.sock");
        let log = dir.join("control-plane.log");
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(["--config-dir", &config.display().to_string()])
            .args(["--admin-address", &format!("127.0.0.1:{admin}")])
            .args(["--vip-range", vip_range, "--debounce-ms", "50"]);
        match xds {
            XdsListen::Tcp => cmd.args(["--xds-address", &format!("127.0.0.1:{xds_port}")]),
            XdsListen::Uds => cmd.args(["--xds-uds", &socket.display().to_string()]),
        };
        let child = cmd
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        Ok(Self {
            child,
            admin,
            xds_port,
            socket,
            log,
        })
    }

    /// The VIP the control plane gave Service `namespace/name`.
    pub fn vip(&self, service: &str) -> Option<std::net::IpAddr> {
        self.status()["vips"][service].as_str()?.parse().ok()
    }

    pub fn stat(&self, name: &str) -> u64 {
        let body = http(self.admin, "GET", "/stats")
            .map(|r| r.body)
            .unwrap_or_default();
        Stats::parse(&body).get_int(name).unwrap_or(0)
    }

    pub fn status(&self) -> serde_json::Value {
        let body = http(self.admin, "GET", "/debug/status")
            .map(|r| r.body)
            .unwrap_or_default();
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        crate::process::kill_child(&mut self.child, Duration::from_secs(1));
    }
}

/// How to run a scenario.
pub struct RunOptions {
    pub target: Target,
    pub control_plane_bin: PathBuf,
    /// Print as the run goes (the demo); tests only keep the report.
    pub echo: bool,
}

/// What a run printed and what did not match an `expect`.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub failures: Vec<String>,
}

impl Report {
    fn line(&mut self, echo: bool, line: impl AsRef<str>) {
        let line = line.as_ref();
        if echo {
            println!("{line}");
        }
        let _ = writeln!(self.text, "{line}");
    }
}

/// A /24 VIP range of its own per call, so runs in one process never share a listener
/// address (a counter), and runs of two processes rarely do (the process id picks the start
/// among 25,000 ranges, 127.100.0.0–127.199.249.0).
pub fn unique_vip_range() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = (std::process::id() as usize * 97 + next) % 25_000;
    format!("127.{}.{}.0/24", 100 + n / 250, n % 250)
}

/// (namespace, Service name) → [(port name, port)].
type ServicePorts = BTreeMap<(String, String), Vec<(String, u16)>>;

/// The Service ports named in `kubernetes.yaml`.
fn service_ports(dir: &Path) -> Result<ServicePorts, String> {
    let mut out = BTreeMap::new();
    let path = dir.join("kubernetes.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for d in docs {
        if d["kind"] != "Service" {
            continue;
        }
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ports = d["spec"]["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        Some((
                            p["name"].as_str().unwrap_or_default().to_owned(),
                            u16::try_from(p["port"].as_u64()?).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert((ns, name), ports);
    }
    Ok(out)
}

/// One EndpointSlice per server: every server listens on 127.0.0.1 with its own port, which a
/// single slice (one port set for all endpoints) cannot say.
fn endpoint_slices(servers: &Servers, specs: &[ServerSpec], ports: &ServicePorts) -> String {
    let mut out = String::new();
    for spec in specs {
        for service in std::iter::once(&spec.service).chain(spec.also_services.iter()) {
            let names: Vec<&str> = ports
                .get(&(spec.namespace.clone(), service.clone()))
                .map(|p| {
                    p.iter()
                        .filter(|(_, n)| *n == 6379)
                        .map(|(name, _)| name.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let names = if names.is_empty() { vec![""] } else { names };
            for pod in servers.pods.iter().filter(|p| p.service == spec.service) {
                let hostname = if spec.hostnames {
                    format!(", hostname: {}-{}", spec.service, pod.index)
                } else {
                    String::new()
                };
                let port_list: Vec<String> = names
                    .iter()
                    .map(|n| format!("{{name: \"{n}\", port: {}}}", pod.port))
                    .collect();
                let _ = write!(
                    out,
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                     metadata: {{name: {service}-local-{}, namespace: {}, labels: {{kubernetes.io/service-name: {service}}}}}\n\
                     addressType: IPv4\n\
                     endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}{hostname}}}]\n\
                     ports: [{}]\n",
                    pod.index,
                    spec.namespace,
                    port_list.join(", ")
                );
            }
        }
    }
    out
}

fn start_servers(specs: &[ServerSpec]) -> Result<Servers, String> {
    let mut servers = Servers::default();
    for spec in specs {
        match spec.kind.as_str() {
            "standalone" | "replica" => {
                let primary = match (&spec.kind[..], &spec.replica_of) {
                    ("replica", Some(of)) => Some(
                        servers
                            .pods
                            .iter()
                            .find(|p| &p.service == of)
                            .map(|p| p.port)
                            .ok_or_else(|| {
                                format!("{}: replica_of {of}: no such server", spec.service)
                            })?,
                    ),
                    ("replica", None) => {
                        return Err(format!("{}: kind replica needs replica_of", spec.service))
                    }
                    _ => None,
                };
                for i in 0..spec.count {
                    let s = RedisServer::start();
                    if let Some(p) = primary {
                        s.cmd(&["REPLICAOF", "127.0.0.1", &p.to_string()]);
                    }
                    servers.pods.push(Pod {
                        service: spec.service.clone(),
                        index: i,
                        port: s.port(),
                        role: if primary.is_some() { "replica" } else { "" },
                        replica_of: None,
                    });
                    servers.standalone.push(s);
                }
            }
            "cluster" => {
                let per = 1 + spec.replicas_per_primary;
                if spec.count % per != 0 || spec.count < 3 * per {
                    return Err(format!(
                        "{}: a cluster of {} nodes cannot have {} replicas per primary and 3 primaries at least",
                        spec.service, spec.count, spec.replicas_per_primary
                    ));
                }
                let mut cluster = RedisCluster::start(spec.count / per, spec.replicas_per_primary);
                let primaries: BTreeSet<u16> = cluster.primaries().iter().map(|n| n.port).collect();
                let ports = cluster.ports();
                for (i, port) in ports.iter().copied().enumerate() {
                    let replica_of = if primaries.contains(&port) {
                        None
                    } else {
                        primaries
                            .iter()
                            .find(|p| cluster.replicas_of(**p).iter().any(|r| r.port == port))
                            .and_then(|p| ports.iter().position(|q| q == p))
                    };
                    servers.pods.push(Pod {
                        service: spec.service.clone(),
                        index: i,
                        port,
                        role: if replica_of.is_none() {
                            "primary"
                        } else {
                            "replica"
                        },
                        replica_of,
                    });
                }
                servers.clusters.push(cluster);
            }
            other => return Err(format!("{}: unknown server kind {other:?}", spec.service)),
        }
    }
    Ok(servers)
}

/// Redis 7 lists a replica in `CLUSTER SLOTS` only once it has replicated something: one
/// write per primary, replicated, before any step, so a REPLICA read policy has replicas.
fn warm_up(servers: &mut Servers) {
    for cluster in &mut servers.clusters {
        let slots = cluster.slots();
        for primary in cluster.primaries() {
            // A key of a slot this primary owns (the first of 10,000 candidates that is).
            let key = (0..10_000).map(|i| format!("warmup:{i}")).find(|k| {
                let slot = crate::key_slot(k.as_bytes());
                slots
                    .iter()
                    .any(|r| r.primary == primary.port && (r.start..=r.end).contains(&slot))
            });
            if let Some(key) = key {
                let _ = cluster.cmd(primary.port, &["SET", &key, "1"]);
            }
        }
    }
    wait_replication(servers);
}

/// A server's replication state: its role, its own offset, and, for a replica, its primary's
/// port, its offset and whether its link is up (one `INFO replication`).
struct Replication {
    primary: bool,
    master_offset: u64,
    primary_port: u16,
    replica_offset: u64,
    link_up: bool,
}

fn replication(port: u16) -> Replication {
    let info = RespClient::connect(port)
        .cmd(&["INFO", "replication"])
        .text()
        .unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    Replication {
        primary: field("role") == "master",
        master_offset: field("master_repl_offset").parse().unwrap_or(0),
        primary_port: field("master_port").parse().unwrap_or(0),
        replica_offset: field("slave_repl_offset").parse().unwrap_or(0),
        link_up: field("master_link_status") == "up",
    }
}

/// Waits until every replica has the offset of its primary (bounded).
fn wait_replication(servers: &Servers) -> bool {
    try_wait_for(REPLICATION_WAIT, || {
        let states: Vec<Replication> = servers.pods.iter().map(|p| replication(p.port)).collect();
        let primaries: BTreeMap<u16, u64> = servers
            .pods
            .iter()
            .zip(&states)
            .filter(|(_, r)| r.primary)
            .map(|(p, r)| (p.port, r.master_offset))
            .collect();
        states
            .iter()
            .filter(|r| !r.primary)
            .all(|r| {
                r.link_up
                    && primaries
                        .get(&r.primary_port)
                        .is_none_or(|m| r.replica_offset >= *m)
            })
            .then_some(())
    })
    .is_some()
}

/// Where a proxy's ADS server is.
#[derive(Debug, Clone, Copy)]
pub enum XdsAddress<'a> {
    Tcp(u16),
    Uds(&'a Path),
}

/// An Istio-shaped sidecar bootstrap: ADS (`api_type` GRPC or DELTA_GRPC) to `xds`, the node
/// on the first message only, initial fetch timeouts of 0 s, the node of a pod in `namespace`
/// with `labels` (what EnvoyFilter selection reads).
pub fn sidecar_bootstrap(
    xds: XdsAddress<'_>,
    api_type: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    let address = match xds {
        XdsAddress::Tcp(port) => {
            format!("{{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}")
        }
        XdsAddress::Uds(path) => format!("{{pipe: {{path: \"{}\"}}}}", path.display()),
    };
    format!(
        r#"node:
  id: sidecar~127.0.0.1~redis-client-0.{namespace}~{namespace}.svc.cluster.local
  cluster: redis-client.{namespace}
  metadata: {{NAMESPACE: {namespace}, ISTIO_VERSION: "1.28.0", LABELS: {{{labels}}}}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}}}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  lds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
{static_resources}"#,
        labels = labels.join(", "),
        static_resources = crate::xds::xds_grpc_static_resources(&address),
    )
}

/// `(integer) 1`, `alice`, `(nil)`, `OK`, an error's text: as redis-cli prints a reply.
pub fn cli_text(reply: &Reply) -> String {
    match reply {
        Reply::Simple(s) | Reply::Error(s) => String::from_utf8_lossy(s).into_owned(),
        Reply::Integer(n) => format!("(integer) {n}"),
        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Null | Reply::NullArray => "(nil)".to_owned(),
        Reply::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{}) {}", i + 1, cli_text(r)))
            .collect::<Vec<_>>()
            .join("  "),
        other => format!("{other:?}"),
    }
}

/// Sends one command on a new connection (Envoy drains the connections of a listener it
/// replaces; a new connection always meets the current configuration).
fn send(addr: SocketAddr, args: &[String]) -> Result<Reply, String> {
    let mut c = RespClient::try_connect_to(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    c.try_send_raw(&encode_command(args))
        .map_err(|e| e.to_string())?;
    match c.read_outcome(REPLY_TIMEOUT) {
        ReadOutcome::Frame { reply, .. } => Ok(reply),
        ReadOutcome::Closed { .. } => Err("connection closed".to_owned()),
        ReadOutcome::Timeout { .. } => Err("no reply in time".to_owned()),
    }
}

struct Ctx<'a> {
    opts: &'a RunOptions,
    servers: &'a Servers,
    cp: &'a ControlPlane,
    proxy: &'a Proxy,
    report: Report,
}

impl Ctx<'_> {
    fn addr(&self, to: &str) -> Result<SocketAddr, String> {
        let (svc, port) = to
            .rsplit_once(':')
            .ok_or_else(|| format!("to: {to}: expected <service>.<namespace>:<port>"))?;
        let (name, ns) = svc
            .split_once('.')
            .ok_or_else(|| format!("to: {to}: expected <service>.<namespace>:<port>"))?;
        let status = self.cp.status();
        let vip = status["vips"][format!("{ns}/{name}")]
            .as_str()
            .ok_or_else(|| format!("no VIP for Service {ns}/{name}"))?;
        format!("{vip}:{port}")
            .parse()
            .map_err(|e| format!("{vip}:{port}: {e}"))
    }

    fn step(&mut self, step: &Step) {
        let echo = self.opts.echo;
        match step {
            Step::Send {
                send: args,
                to,
                expect,
            } => {
                let addr = match self.addr(to) {
                    Ok(a) => a,
                    Err(e) => {
                        self.report.failures.push(e);
                        return;
                    }
                };
                // A Redis Cluster's topology (and its replicas) reaches the proxy with its
                // discovery: until then it answers `no upstream host`.
                let start = Instant::now();
                let reply = loop {
                    let r = send(addr, args);
                    let retry = matches!(&r, Ok(Reply::Error(e)) if String::from_utf8_lossy(e).contains("no upstream host"))
                        || r.is_err();
                    if !retry || start.elapsed() > WAIT {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                };
                let text = match &reply {
                    Ok(r) => cli_text(r),
                    Err(e) => format!("<{e}>"),
                };
                self.report
                    .line(echo, format!("  {to}> {}  →  {text}", args.join(" ")));
                if let Some(want) = expect {
                    if &text != want {
                        self.report.failures.push(format!(
                            "{} to {to}: got {text:?}, expected {want:?}",
                            args.join(" ")
                        ));
                    }
                }
            }
            Step::ShowKeys { show_keys } => {
                for key in show_keys {
                    let holders: Vec<String> = self
                        .servers
                        .pods
                        .iter()
                        .filter(|p| {
                            let mut c = RespClient::connect(p.port);
                            if p.role == "replica" {
                                let _ = c.cmd(&["READONLY"]);
                            }
                            c.cmd(&["EXISTS", key]) == Reply::Integer(1)
                        })
                        .map(Pod::label)
                        .collect();
                    let mut holders = holders;
                    holders.sort();
                    let holders = if holders.is_empty() {
                        "nowhere".to_owned()
                    } else {
                        holders.join(", ")
                    };
                    self.report
                        .line(echo, format!("  key {key:?} is on {holders}"));
                }
            }
            Step::ShowStats { show_stats } => {
                let stats = self.proxy.stats();
                for name in show_stats {
                    let v = stats.get(name).unwrap_or("<absent>").to_string();
                    self.report.line(echo, format!("  {name}: {v}"));
                }
            }
            Step::ShowCommands { show_commands } => {
                let mut lines = Vec::new();
                for pod in &self.servers.pods {
                    let Some(server) = self.servers.server(pod.port) else {
                        continue;
                    };
                    let s: Vec<(String, u64)> = show_commands
                        .iter()
                        .map(|c| {
                            let c = c.to_ascii_lowercase();
                            let n = server.command_calls(&c);
                            (c, n)
                        })
                        .collect();
                    if s.iter().all(|(_, n)| *n == 0) {
                        continue;
                    }
                    let calls: Vec<String> = s.iter().map(|(c, n)| format!("{c}={n}")).collect();
                    lines.push(format!("  {} ran {}", pod.label(), calls.join(" ")));
                }
                lines.sort();
                for l in lines {
                    self.report.line(echo, l);
                }
            }
            Step::WaitReplication {
                wait_replication: wanted,
            } => {
                if *wanted && !wait_replication(self.servers) {
                    self.report
                        .failures
                        .push("replicas did not catch up".to_owned());
                }
            }
        }
    }
}

/// Runs `scenario` (a folder of `istio-examples/`) on `opts.target`.
pub fn run(scenario: &Path, opts: &RunOptions) -> Result<Report, String> {
    let local = read_local(scenario)?;
    let tmp = tempfile::Builder::new()
        .prefix("redvoy-scenario-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(scenario)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let path = entry.path();
        let name = entry.file_name();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml");
        if is_yaml && name != "local.yaml" {
            std::fs::copy(&path, config.join(&name)).map_err(|e| e.to_string())?;
        }
    }
    let mut report = Report::default();
    report.line(
        opts.echo,
        format!("== {} on {}", local.description, opts.target),
    );
    let mut servers = start_servers(&local.servers)?;
    warm_up(&mut servers);
    let ports = service_ports(scenario)?;
    std::fs::write(
        config.join("endpoints.local.yaml"),
        endpoint_slices(&servers, &local.servers, &ports),
    )
    .map_err(|e| e.to_string())?;
    for pod in &servers.pods {
        report.line(
            opts.echo,
            format!("  {} on 127.0.0.1:{}", pod.label(), pod.port),
        );
    }
    let cp = ControlPlane::start(
        &opts.control_plane_bin,
        &config,
        tmp.path(),
        &unique_vip_range(),
        XdsListen::Uds,
        &["--resolve-cluster-local"],
    )?;
    let proxy = Proxy::start(
        opts.target,
        &sidecar_bootstrap(
            XdsAddress::Uds(&cp.socket),
            "DELTA_GRPC",
            &local.proxy.namespace,
            &local.proxy.labels,
        ),
        &[],
    );
    try_wait_for(WAIT, || {
        (cp.stat("control_plane.lds.acks") >= 1).then_some(())
    })
    .ok_or_else(|| format!("{}: no LDS ACK:\n{}", opts.target, cp.log_text()))?;
    let status = cp.status();
    report.line(
        opts.echo,
        format!(
            "  control plane: VIPs {}, EnvoyFilters {}",
            status["vips"], status["envoy_filters"]
        ),
    );
    for pod in &servers.pods {
        let _ = RespClient::connect(pod.port).cmd(&["CONFIG", "RESETSTAT"]);
    }
    let mut ctx = Ctx {
        opts,
        servers: &servers,
        cp: &cp,
        proxy: &proxy,
        report,
    };
    for step in &local.steps {
        ctx.step(step);
    }
    if let Some(edit) = &local.edit {
        let path = config.join(&edit.file);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", edit.file))?;
        if text.matches(&edit.replace).count() != 1 {
            return Err(format!(
                "edit: {:?} must occur once in {}",
                edit.replace, edit.file
            ));
        }
        let acks = cp.stat("control_plane.lds.acks") + cp.stat("control_plane.cds.acks");
        let started = Instant::now();
        std::fs::write(&path, text.replacen(&edit.replace, &edit.with, 1))
            .map_err(|e| e.to_string())?;
        ctx.report.line(
            opts.echo,
            format!(
                "== live edit of {}: {:?} → {:?}",
                edit.file, edit.replace, edit.with
            ),
        );
        try_wait_for(WAIT, || {
            (cp.stat("control_plane.lds.acks") + cp.stat("control_plane.cds.acks") > acks)
                .then_some(())
        })
        .ok_or_else(|| format!("the edit was not ACKed:\n{}", cp.log_text()))?;
        // An ACKed listener or cluster may still be warming (Envoy); the steps run once
        // nothing is.
        try_wait_for(WAIT, || {
            let stats = proxy.stats();
            let warming = |name: &str| stats.get_int(name).unwrap_or(0);
            (warming("listener_manager.total_listeners_warming") == 0
                && warming("cluster_manager.warming_clusters") == 0)
                .then_some(())
        })
        .ok_or_else(|| format!("{}: still warming after the edit", opts.target))?;
        ctx.report.line(
            opts.echo,
            format!("  pushed and ACKed in {:?}", started.elapsed()),
        );
        for pod in &servers.pods {
            let _ = RespClient::connect(pod.port).cmd(&["CONFIG", "RESETSTAT"]);
        }
        for step in &edit.steps {
            ctx.step(step);
        }
    }
    let rejects = cp.stat("control_plane.lds.rejects")
        + cp.stat("control_plane.cds.rejects")
        + cp.stat("control_plane.eds.rejects");
    if rejects > 0 {
        ctx.report.failures.push(format!(
            "{} NACKed {rejects} response(s):\n{}",
            opts.target,
            cp.log_text()
        ));
    }
    Ok(ctx.report)
}
