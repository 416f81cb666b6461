//! A real Redis Cluster (cluster-enabled `redis-server`s joined by `redis-cli --cluster
//! create`) on free loopback ports, for slot-routing, redirection and failover tests.
//!
//! Topology is read live from the nodes (`CLUSTER NODES` / `CLUSTER SLOTS`), so it stays
//! right after a failover. Slots are computed here (CRC16/XMODEM with hash tags), independently
//! of redvoy's own code, so the cluster can be the oracle for the proxy's routing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::client::{ReadOutcome, RespClient};
use crate::net::{free_port, try_wait_for};
use crate::process::{tail, wait_exit};
use crate::redis::RedisServer;
use crate::resp::{encode_command, Reply};

/// Number of hash slots in a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;
/// Bound on `redis-cli --cluster create` (it waits for the nodes to join itself).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the whole cluster converging after creation: state ok everywhere, one slot map,
/// every replica's link up.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one probe command sent while polling (a node may be dead or busy).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Failure-detection timeout given to the nodes: short, so failover tests stay quick.
const NODE_TIMEOUT_MS: &str = "2000";
/// Lines of `redis-cli --cluster create` output kept in a panic message.
const CREATE_OUTPUT_TAIL_LINES: usize = 30;
/// Bound on one `redis-cli --cluster create` attempt against a bus port taken meanwhile.
const CREATE_ATTEMPTS: usize = 2;

/// Role of a cluster node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Primary,
    Replica,
}

/// One node as the cluster sees it (`CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInfo {
    pub port: u16,
    pub role: Role,
    pub id: String,
    /// For a replica, the node id of its primary.
    pub primary_id: Option<String>,
    /// Flagged `fail` or `fail?` by the node asked.
    pub failed: bool,
}

/// One `CLUSTER SLOTS` entry: an inclusive slot range and who serves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: u16,
    /// Sorted, so two nodes' answers compare equal regardless of their internal order.
    pub replicas: Vec<u16>,
}

/// A running Redis Cluster; every node is killed (by PID) on drop.
pub struct RedisCluster {
    servers: Vec<RedisServer>,
    /// With TLS: each node's TLS port, in `servers` order.
    tls_ports: Vec<u16>,
    /// Holds the output of `redis-cli --cluster create`.
    dir: TempDir,
}

// === impl RedisCluster ===

impl RedisCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes, creates the cluster and waits
    /// until it has converged (see [`RedisCluster::wait_converged`]).
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        Self::start_nodes(primaries, replicas_per_primary, None)
    }

    /// [`RedisCluster::start`] with every node also serving TLS (its certificate `cert`/`key`,
    /// clients not asked for one) and speaking TLS on the cluster bus and for replication, so
    /// that `CLUSTER SLOTS` asked over TLS names TLS ports. Plaintext ports stay, for the
    /// harness.
    pub fn start_tls(
        primaries: usize,
        replicas_per_primary: usize,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Self {
        Self::start_nodes(primaries, replicas_per_primary, Some((cert, key, ca)))
    }

    /// The TLS port of the node whose plaintext port is `port`.
    pub fn tls_port(&self, port: u16) -> u16 {
        let i = self
            .servers
            .iter()
            .position(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        *self
            .tls_ports
            .get(i)
            .unwrap_or_else(|| panic!("the cluster was not started with TLS"))
    }

    fn start_nodes(
        primaries: usize,
        replicas_per_primary: usize,
        tls: Option<(&Path, &Path, &Path)>,
    ) -> Self {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs 3 primaries"
        );
        let total = primaries * (1 + replicas_per_primary);
        let mut last_output = String::new();
        for _ in 0..CREATE_ATTEMPTS {
            let mut tls_ports = Vec::new();
            let servers: Vec<RedisServer> = (0..total)
                .map(|_| {
                    let mut extra: Vec<String> = Vec::new();
                    if let Some((cert, key, ca)) = tls {
                        let port = free_port();
                        tls_ports.push(port);
                        for arg in [
                            "--tls-port".to_owned(),
                            port.to_string(),
                            "--tls-cluster".to_owned(),
                            "yes".to_owned(),
                            "--tls-replication".to_owned(),
                            "yes".to_owned(),
                            "--tls-auth-clients".to_owned(),
                            "no".to_owned(),
                            "--tls-cert-file".to_owned(),
                            cert.display().to_string(),
                            "--tls-key-file".to_owned(),
                            key.display().to_string(),
                            "--tls-ca-cert-file".to_owned(),
                            ca.display().to_string(),
                        ] {
                            extra.push(arg);
                        }
                    }
                    start_node(&extra)
                })
                .collect();
            let dir = tempfile::Builder::new()
                .prefix("redvoy-cluster-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir for redis cluster: {e}"));
            let mut cluster = RedisCluster {
                servers,
                tls_ports,
                dir,
            };
            match cluster.create(replicas_per_primary) {
                Ok(()) => {
                    cluster.wait_until(CONVERGE_TIMEOUT, Some((primaries, replicas_per_primary)));
                    return cluster;
                }
                Err(output) => last_output = output,
            }
        }
        panic!(
            "redis-cli --cluster create failed {CREATE_ATTEMPTS} times; last output:\n{}",
            tail(&last_output, CREATE_OUTPUT_TAIL_LINES)
        );
    }

    /// Ports of all nodes, in start order (killed ones included).
    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(RedisServer::port).collect()
    }

    /// Ports of the nodes still running.
    pub fn live_ports(&mut self) -> Vec<u16> {
        self.servers
            .iter_mut()
            .filter_map(|s| s.is_running().then(|| s.port()))
            .collect()
    }

    /// All nodes as a live node sees them now (`CLUSTER NODES`), sorted by port.
    pub fn nodes(&mut self) -> Vec<NodeInfo> {
        let ports = self.live_ports();
        for port in ports {
            if let Some(text) = try_cmd(port, &["CLUSTER", "NODES"]).and_then(|r| r.text()) {
                let mut nodes = parse_cluster_nodes(&text);
                nodes.sort_by_key(|n| n.port);
                return nodes;
            }
        }
        panic!("no live cluster node answered CLUSTER NODES");
    }

    /// Primaries not flagged failed, sorted by port.
    pub fn primaries(&mut self) -> Vec<NodeInfo> {
        self.nodes()
            .into_iter()
            .filter(|n| n.role == Role::Primary && !n.failed)
            .collect()
    }

    /// Replicas of the primary on `primary_port`, sorted by port.
    pub fn replicas_of(&mut self, primary_port: u16) -> Vec<NodeInfo> {
        let nodes = self.nodes();
        let Some(primary) = nodes.iter().find(|n| n.port == primary_port) else {
            panic!("no cluster node on port {primary_port}");
        };
        let id = primary.id.clone();
        nodes
            .into_iter()
            .filter(|n| n.primary_id.as_deref() == Some(id.as_str()))
            .collect()
    }

    /// The `CLUSTER SLOTS` reply of a live node, parsed and sorted by slot.
    pub fn slots(&mut self) -> Vec<SlotRange> {
        let ports = self.live_ports();
        for port in ports {
            if let Some(slots) = try_cmd(port, &["CLUSTER", "SLOTS"]).and_then(|r| parse_slots(&r))
            {
                return slots;
            }
        }
        panic!("no live cluster node answered CLUSTER SLOTS");
    }

    /// The primary every live node names for `key`'s slot, or `None` while their views differ
    /// (gossip after a failover reaches nodes one by one).
    pub fn agreed_primary_for_key(&mut self, key: &[u8]) -> Option<u16> {
        let slot = key_slot(key);
        let mut agreed = None;
        for port in self.live_ports() {
            let ranges = try_cmd(port, &["CLUSTER", "SLOTS"]).and_then(|r| parse_slots(&r))?;
            let owner = ranges
                .iter()
                .find(|r| (r.start..=r.end).contains(&slot))?
                .primary;
            if agreed.is_some_and(|a| a != owner) {
                return None;
            }
            agreed = Some(owner);
        }
        agreed
    }

    /// Port of the primary serving `slot`.
    pub fn node_for_slot(&mut self, slot: u16) -> u16 {
        self.range_for_slot(slot).primary
    }

    /// Port of the primary owning `key`'s slot.
    pub fn primary_for_key(&mut self, key: &[u8]) -> u16 {
        self.node_for_slot(key_slot(key))
    }

    /// Ports of the replicas serving `key`'s slot.
    pub fn replicas_for_key(&mut self, key: &[u8]) -> Vec<u16> {
        self.range_for_slot(key_slot(key)).replicas
    }

    fn range_for_slot(&mut self, slot: u16) -> SlotRange {
        self.slots()
            .into_iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .unwrap_or_else(|| panic!("slot {slot} is not served"))
    }

    /// A direct client to the node on `port`.
    pub fn client(&self, port: u16) -> RespClient {
        RespClient::connect(self.server(port).port())
    }

    /// Sends one command directly to the node on `port`.
    pub fn cmd(&self, port: u16, args: &[&str]) -> Reply {
        self.client(port).cmd(args)
    }

    /// The node's `redis-server` (for logs, `command_calls`, restart...).
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Kills the node on `port` at once (SIGKILL), e.g. a primary for a failover test. Its
    /// replica is promoted after the node timeout; [`RedisCluster::wait_converged`] waits for it.
    pub fn kill(&mut self, port: u16) {
        self.server_mut(port).stop();
    }

    /// Waits until every live node reports `cluster_state:ok`, all live nodes return the same
    /// `CLUSTER NODES` (roles, primaries, failure flags) and the same `CLUSTER SLOTS`, covering
    /// all slots and naming only live nodes, and every replica has `master_link_status:up`.
    /// Panics after `timeout` with what was last seen.
    pub fn wait_converged(&mut self, timeout: Duration) {
        self.wait_until(timeout, None);
    }

    /// [`RedisCluster::wait_converged`], plus an exact shape `(primaries, replicas per
    /// primary)` when given: gossip makes roles known gradually, so a fresh cluster can look
    /// converged before its replicas are.
    fn wait_until(&mut self, timeout: Duration, shape: Option<(usize, usize)>) {
        let ports = self.live_ports();
        let mut last = String::new();
        let done = try_wait_for(timeout, || match converged(&ports, shape) {
            Ok(()) => Some(()),
            Err(why) => {
                last = why;
                None
            }
        });
        if done.is_none() {
            panic!("redis cluster did not converge within {timeout:?}: {last}");
        }
    }

    /// Runs `redis-cli --cluster create` over all nodes; the output on failure.
    fn create(&self, replicas_per_primary: usize) -> Result<(), String> {
        let out_path = self.dir.path().join("cluster-create.out");
        let out = std::fs::File::create(&out_path)
            .unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
        let mut child = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.servers.iter().map(RedisServer::addr))
            .arg("--cluster-replicas")
            .arg(replicas_per_primary.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let status = wait_exit(&mut child, CREATE_TIMEOUT);
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Some(s) if s.success() && !output.contains("[ERR]") => Ok(()),
            Some(s) => Err(format!("exit {s}:\n{output}")),
            None => Err(format!("timed out after {CREATE_TIMEOUT:?}:\n{output}")),
        }
    }
}

/// Starts one cluster-enabled node. The cluster bus port is chosen free too (the default,
/// port + 10000, may be taken or out of range).
fn start_node(extra: &[String]) -> RedisServer {
    let bus_port = free_port().to_string();
    let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
    args.extend([
        "--cluster-enabled",
        "yes",
        // Relative to the node's own temp dir (`--dir`).
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        NODE_TIMEOUT_MS,
        "--cluster-port",
        &bus_port,
        // Replicas would otherwise wait 5 s for their first full sync.
        "--repl-diskless-sync-delay",
        "0",
    ]);
    RedisServer::start_with(&args)
}

/// Checks one round of convergence over `ports`; why not, otherwise.
fn converged(ports: &[u16], shape: Option<(usize, usize)>) -> Result<(), String> {
    let mut maps: BTreeMap<Vec<SlotRange>, Vec<u16>> = BTreeMap::new();
    let mut views: BTreeMap<Vec<NodeInfo>, Vec<u16>> = BTreeMap::new();
    for &port in ports {
        let text = try_cmd(port, &["CLUSTER", "NODES"])
            .and_then(|r| r.text())
            .ok_or_else(|| format!("{port}: no CLUSTER NODES"))?;
        let mut view = parse_cluster_nodes(&text);
        view.sort();
        views.entry(view).or_default().push(port);
        let info = try_cmd(port, &["CLUSTER", "INFO"])
            .and_then(|r| r.text())
            .ok_or_else(|| format!("{port}: no CLUSTER INFO"))?;
        if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
            return Err(format!("{port}: cluster_state not ok"));
        }
        let slots = try_cmd(port, &["CLUSTER", "SLOTS"])
            .and_then(|r| parse_slots(&r))
            .ok_or_else(|| format!("{port}: no CLUSTER SLOTS"))?;
        maps.entry(slots).or_default().push(port);
    }
    if views.len() != 1 {
        return Err(format!("nodes disagree on CLUSTER NODES: {views:?}"));
    }
    if maps.len() != 1 {
        return Err(format!("nodes disagree on CLUSTER SLOTS: {maps:?}"));
    }
    let Some(map) = maps.keys().next() else {
        return Err("no live nodes".to_string());
    };
    let covered: usize = map.iter().map(|r| usize::from(r.end - r.start) + 1).sum();
    if covered != usize::from(CLUSTER_SLOTS) {
        return Err(format!("{covered} slots covered: {map:?}"));
    }
    if let Some((primaries, replicas)) = shape {
        let mut owners: Vec<u16> = map.iter().map(|r| r.primary).collect();
        owners.sort_unstable();
        owners.dedup();
        if owners.len() != primaries || map.iter().any(|r| r.replicas.len() != replicas) {
            return Err(format!(
                "want {primaries} primaries with {replicas} replicas each: {map:?}"
            ));
        }
    }
    // A killed node still listed means the others have not noticed (or failed over) yet.
    if let Some(dead) = map
        .iter()
        .flat_map(|r| std::iter::once(&r.primary).chain(&r.replicas))
        .find(|p| !ports.contains(p))
    {
        return Err(format!("stopped node {dead} still serves slots: {map:?}"));
    }
    for range in map {
        for &replica in &range.replicas {
            let info = try_cmd(replica, &["INFO", "replication"])
                .and_then(|r| r.text())
                .unwrap_or_default();
            if !info.lines().any(|l| l.trim() == "master_link_status:up") {
                return Err(format!("replica {replica}: master link not up"));
            }
        }
    }
    Ok(())
}

/// One command with a bounded wait, `None` if the node is down, slow or the reply is an error.
fn try_cmd(port: u16, args: &[&str]) -> Option<Reply> {
    let mut client = RespClient::try_connect(port).ok()?;
    client.try_send_raw(&encode_command(args)).ok()?;
    match client.read_outcome(PROBE_TIMEOUT) {
        ReadOutcome::Frame { reply, .. } if !reply.is_error() => Some(reply),
        _ => None,
    }
}

/// Parses `CLUSTER SLOTS` into ranges sorted by slot (replicas sorted); `None` if malformed.
pub fn parse_slots(reply: &Reply) -> Option<Vec<SlotRange>> {
    let mut ranges = Vec::new();
    for entry in reply.as_array()? {
        let items = entry.as_array()?;
        let start = u16::try_from(items.first()?.as_int()?).ok()?;
        let end = u16::try_from(items.get(1)?.as_int()?).ok()?;
        let mut ports = items[2..]
            .iter()
            .map(|node| u16::try_from(node.as_array()?.get(1)?.as_int()?).ok());
        let primary = ports.next()??;
        let mut replicas = ports.collect::<Option<Vec<u16>>>()?;
        replicas.sort_unstable();
        ranges.push(SlotRange {
            start,
            end,
            primary,
            replicas,
        });
    }
    ranges.sort();
    Some(ranges)
}

/// Parses `CLUSTER NODES` text (`<id> <ip:port@bus> <flags> <primary-id|-> ...`).
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let id = fields.first()?.to_string();
            let addr = fields.get(1)?;
            let host_port = addr.split('@').next()?;
            let port = host_port.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            let role = if flags.contains(&"master") {
                Role::Primary
            } else {
                Role::Replica
            };
            let primary_id = match *fields.get(3)? {
                "-" => None,
                id => Some(id.to_string()),
            };
            let failed = flags.iter().any(|f| *f == "fail" || *f == "fail?");
            Some(NodeInfo {
                port,
                role,
                id,
                primary_id,
                failed,
            })
        })
        .collect()
}

/// The hash slot of `key`: CRC16/XMODEM of the hash tag (the bytes between the first `{` and
/// the next `}`, if non-empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % CLUSTER_SLOTS
}

/// CRC16/XMODEM (polynomial 0x1021, init 0), the checksum Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_reference_values() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"{}x"), crc16(b"{}x") % CLUSTER_SLOTS);
    }
}
