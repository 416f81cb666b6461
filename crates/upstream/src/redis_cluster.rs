//! `envoy.clusters.redis`: topology discovery with `CLUSTER SLOTS`, the slot map the proxy
//! routes by, and Envoy's refresh manager (redirect / failure / degraded triggers).
//!
//! The discovery session is the one place where this crate opens a connection: one
//! `CLUSTER SLOTS` per round to a random known node (a seed while none is known), on
//! connections kept per address and bounded by `cluster_refresh_timeout`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use redvoy_config::model::{self, DnsLookupFamily, HealthStatus, ReadPolicy, RedisClusterConfig};
use redvoy_resp::{encode, Decoder, DecoderMode, Limits, RespValue};
use redvoy_stats::{Counter, Histogram, HistogramUnit, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::cluster::Cluster;
use crate::dns::resolve;
use crate::host::{EdsInfo, Host};
use crate::stats::ClusterStats;

/// Hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16_384;
/// Read buffer of a discovery connection (a CLUSTER SLOTS reply of a large cluster is tens of
/// KiB; the decoder limits bound it).
const READ_CHUNK: usize = 16 * 1024;

/// One hash-slot shard: a primary and its replicas, as indices into the host set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub primary: usize,
    pub replicas: Vec<usize>,
}

/// Envoy's `ClusterSlotsMap`: slot → shard, one shard per distinct primary in slot order.
#[derive(Clone)]
pub struct SlotMap {
    /// Shard index per slot; slots the reply did not cover map to shard 0, as in Envoy.
    table: Box<[u16]>,
    shards: Vec<Shard>,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMap")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl SlotMap {
    /// Shards in Envoy's order (one per distinct primary, slot entries sorted by start slot).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Envoy: a slot the reply did not cover maps to shard 0.
    pub fn shard_for_slot(&self, slot: u16) -> Option<&Shard> {
        let index = *self.table.get(usize::from(slot) % SLOT_COUNT)?;
        self.shards.get(usize::from(index))
    }

    /// Host index for a key's slot: writes go to the primary, reads follow `policy`
    /// (`redis_cluster_lb.cc`): healthy hosts first, then degraded, then any. `REPLICA` with
    /// no replica has no host.
    pub fn choose(
        &self,
        hosts: &[Arc<Host>],
        slot: u16,
        is_read: bool,
        policy: ReadPolicy,
    ) -> Option<usize> {
        let shard = self.shard_for_slot(slot)?;
        if !is_read {
            return Some(shard.primary);
        }
        let all = || std::iter::once(shard.primary).chain(shard.replicas.iter().copied());
        match policy {
            ReadPolicy::Master => Some(shard.primary),
            ReadPolicy::PreferMaster => {
                if health_of(hosts, shard.primary) == Health::Healthy {
                    Some(shard.primary)
                } else {
                    pick_by_health(hosts, all())
                }
            }
            ReadPolicy::Replica => pick_by_health(hosts, shard.replicas.iter().copied()),
            ReadPolicy::PreferReplica => {
                let healthy_replica = shard
                    .replicas
                    .iter()
                    .any(|r| health_of(hosts, *r) == Health::Healthy);
                if healthy_replica {
                    pick_by_health(hosts, shard.replicas.iter().copied())
                } else {
                    pick_by_health(hosts, all())
                }
            }
            ReadPolicy::Any => pick_by_health(hosts, all()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

fn health_of(hosts: &[Arc<Host>], index: usize) -> Health {
    match hosts.get(index).map(|h| h.eds.health_status) {
        Some(HealthStatus::Degraded) => Health::Degraded,
        Some(s) if s.is_healthy() => Health::Healthy,
        _ => Health::Unhealthy,
    }
}

/// Envoy's `chooseRandomHost`: a random healthy host, else a random degraded one, else any.
fn pick_by_health(hosts: &[Arc<Host>], candidates: impl Iterator<Item = usize>) -> Option<usize> {
    let candidates: smallvec_lite::Few = candidates.collect();
    let best = candidates.iter().map(|i| health_of(hosts, *i)).min()?;
    let pool: smallvec_lite::Few = candidates
        .iter()
        .copied()
        .filter(|i| health_of(hosts, *i) == best)
        .collect();
    let n = pool.len();
    if n == 1 {
        return pool.first().copied();
    }
    pool.get(rand::thread_rng().gen_range(0..n)).copied()
}

/// A tiny inline vector for a shard's hosts (a primary and a few replicas) so that a read
/// does not allocate.
mod smallvec_lite {
    const INLINE: usize = 8;

    #[derive(Default)]
    pub struct Few {
        len: usize,
        inline: [usize; INLINE],
        spill: Vec<usize>,
    }

    impl Few {
        pub fn len(&self) -> usize {
            self.len
        }
        pub fn first(&self) -> Option<&usize> {
            self.get(0)
        }
        pub fn get(&self, i: usize) -> Option<&usize> {
            if i >= self.len {
                None
            } else if i < INLINE {
                self.inline.get(i)
            } else {
                self.spill.get(i - INLINE)
            }
        }
        pub fn iter(&self) -> impl Iterator<Item = &usize> {
            (0..self.len).filter_map(|i| self.get(i))
        }
        fn push(&mut self, v: usize) {
            if self.len < INLINE {
                self.inline[self.len] = v;
            } else {
                self.spill.push(v);
            }
            self.len += 1;
        }
    }

    impl FromIterator<usize> for Few {
        fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
            let mut f = Few::default();
            for v in iter {
                f.push(v);
            }
            f
        }
    }
}

// === CLUSTER SLOTS ===

/// A node as the reply names it, before hostname resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeName {
    pub host: String,
    pub port: u16,
}

/// One entry of a `CLUSTER SLOTS` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: NodeName,
    pub replicas: Vec<NodeName>,
}

/// One slot range with its nodes resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: SocketAddr,
    pub replicas: Vec<SocketAddr>,
}

/// Why a `CLUSTER SLOTS` reply was rejected as a whole (Envoy's validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotsError {
    #[error("CLUSTER SLOTS reply is not a non-empty array")]
    NotArray,
    #[error("invalid slot entry")]
    BadEntry,
    #[error("invalid node in a slot entry")]
    BadNode,
    #[error("the node answered an error: {0}")]
    ErrorReply(String),
}

/// Parses a `CLUSTER SLOTS` reply with Envoy's rules: a non-empty array of
/// `[start, end, primary, replicas...]`, each node `[address (non-empty bulk), port, ...]`;
/// any violation rejects the whole reply.
pub(crate) fn parse_cluster_slots(reply: &RespValue) -> Result<Vec<RawSlotRange>, SlotsError> {
    if let RespValue::Error(e) = reply {
        return Err(SlotsError::ErrorReply(
            String::from_utf8_lossy(e).into_owned(),
        ));
    }
    let entries = match reply {
        RespValue::Array(a) if !a.is_empty() => a,
        _ => return Err(SlotsError::NotArray),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let RespValue::Array(parts) = entry else {
            return Err(SlotsError::BadEntry);
        };
        if parts.len() < 3 {
            return Err(SlotsError::BadEntry);
        }
        let slot = |v: &RespValue| -> Result<u16, SlotsError> {
            match v {
                RespValue::Integer(n) if (0..SLOT_COUNT as i64).contains(n) => Ok(*n as u16),
                _ => Err(SlotsError::BadEntry),
            }
        };
        let start = slot(&parts[0])?;
        let end = slot(&parts[1])?;
        if start > end {
            return Err(SlotsError::BadEntry);
        }
        let primary = parse_node(&parts[2])?;
        let replicas = parts[3..]
            .iter()
            .map(parse_node)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RawSlotRange {
            start,
            end,
            primary,
            replicas,
        });
    }
    Ok(out)
}

fn parse_node(v: &RespValue) -> Result<NodeName, SlotsError> {
    let RespValue::Array(parts) = v else {
        return Err(SlotsError::BadNode);
    };
    if parts.len() < 2 {
        return Err(SlotsError::BadNode);
    }
    let host = match &parts[0] {
        RespValue::Bulk(b) if !b.is_empty() => {
            String::from_utf8(b.to_vec()).map_err(|_| SlotsError::BadNode)?
        }
        _ => return Err(SlotsError::BadNode),
    };
    let port = match &parts[1] {
        RespValue::Integer(p) => u16::try_from(*p).map_err(|_| SlotsError::BadNode)?,
        _ => return Err(SlotsError::BadNode),
    };
    Ok(NodeName { host, port })
}

/// Resolves the nodes of a reply: IP literals directly, hostnames in parallel with the
/// cluster's lookup family. A primary that does not resolve fails the whole update; a replica
/// that does not is skipped. Returns the ranges (sorted) and whether a replica was skipped.
pub(crate) async fn resolve_ranges(
    raw: Vec<RawSlotRange>,
    family: DnsLookupFamily,
) -> Result<(Vec<SlotRange>, bool), String> {
    let mut names: HashMap<(String, u16), Option<SocketAddr>> = HashMap::new();
    for r in &raw {
        for n in std::iter::once(&r.primary).chain(&r.replicas) {
            if n.host.parse::<IpAddr>().is_err() {
                names.insert((n.host.clone(), n.port), None);
            }
        }
    }
    let mut lookups = tokio::task::JoinSet::new();
    for (host, port) in names.keys().cloned() {
        lookups.spawn(async move {
            let answer = resolve(&host, port, family).await;
            ((host, port), answer.ok().and_then(|a| a.first().copied()))
        });
    }
    while let Some(joined) = lookups.join_next().await {
        if let Ok((key, addr)) = joined {
            names.insert(key, addr);
        }
    }
    let lookup = |n: &NodeName| -> Option<SocketAddr> {
        match n.host.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, n.port)),
            Err(_) => names.get(&(n.host.clone(), n.port)).copied().flatten(),
        }
    };
    let mut skipped = false;
    let mut ranges = Vec::with_capacity(raw.len());
    for r in &raw {
        let Some(primary) = lookup(&r.primary) else {
            return Err(format!("cannot resolve primary {}", r.primary.host));
        };
        let mut replicas = Vec::with_capacity(r.replicas.len());
        for n in &r.replicas {
            match lookup(n) {
                Some(a) => replicas.push(a),
                None => {
                    warn!(host = %n.host, "Redis Cluster replica hostname does not resolve; skipped");
                    skipped = true;
                }
            }
        }
        ranges.push(SlotRange {
            start: r.start,
            end: r.end,
            primary,
            replicas,
        });
    }
    ranges.sort();
    Ok((ranges, skipped))
}

/// Builds the hosts (every primary and replica, each once, in slot order) and the slot map
/// from sorted ranges, reusing `old` hosts by address so their stats and connections live on.
/// New hosts copy health, weight and locality from the cluster's first configured endpoint,
/// as Envoy's redis cluster does.
pub(crate) fn build_topology(
    ranges: &[SlotRange],
    old: &[Arc<Host>],
    template: Option<&model::Endpoint>,
) -> (Vec<Arc<Host>>, SlotMap) {
    let mut hosts: Vec<Arc<Host>> = Vec::new();
    let mut index_of: HashMap<SocketAddr, usize> = HashMap::new();
    let mut intern = |addr: SocketAddr, hosts: &mut Vec<Arc<Host>>| -> usize {
        *index_of.entry(addr).or_insert_with(|| {
            let host = old
                .iter()
                .find(|h| h.address == addr)
                .cloned()
                .unwrap_or_else(|| new_host(addr, template));
            hosts.push(host);
            hosts.len() - 1
        })
    };
    let mut shards: Vec<Shard> = Vec::new();
    let mut shard_of_primary: HashMap<SocketAddr, u16> = HashMap::new();
    let mut table = vec![0u16; SLOT_COUNT].into_boxed_slice();
    for r in ranges {
        let primary = intern(r.primary, &mut hosts);
        let shard = match shard_of_primary.get(&r.primary) {
            Some(s) => *s,
            None => {
                let replicas = r.replicas.iter().map(|a| intern(*a, &mut hosts)).collect();
                shards.push(Shard { primary, replicas });
                let s = (shards.len() - 1) as u16;
                shard_of_primary.insert(r.primary, s);
                s
            }
        };
        for slot in r.start..=r.end {
            if let Some(t) = table.get_mut(usize::from(slot)) {
                *t = shard;
            }
        }
    }
    (hosts, SlotMap { table, shards })
}

fn new_host(addr: SocketAddr, template: Option<&model::Endpoint>) -> Arc<Host> {
    let (weight, eds) = match template {
        Some(e) => (
            e.weight,
            EdsInfo {
                health_status: e.health_status,
                locality: e.locality.clone(),
                priority: e.priority,
            },
        ),
        None => (1, EdsInfo::default()),
    };
    Arc::new(Host::new(addr, String::new(), weight.max(1)).with_eds(eds))
}

// === refresh manager ===

/// Envoy's cluster refresh manager for one cluster: counts redirections, failures and
/// degraded-host events from every worker, and wakes the discovery task when one reaches its
/// threshold. Lock-free; an event counts only if no refresh was triggered within
/// `redirect_refresh_interval`.
#[derive(Debug)]
pub struct RefreshTrigger {
    redirects: AtomicU32,
    failures: AtomicU32,
    degraded: AtomicU32,
    redirect_threshold: u32,
    failure_threshold: u32,
    degraded_threshold: u32,
    interval: Duration,
    /// Milliseconds since `epoch` of the last triggered refresh, plus one (0: never).
    last_triggered: AtomicU64,
    epoch: Instant,
    pub(crate) wake: Notify,
}

impl RefreshTrigger {
    pub(crate) fn new(config: &RedisClusterConfig) -> Self {
        Self {
            redirects: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            degraded: AtomicU32::new(0),
            redirect_threshold: config.redirect_refresh_threshold,
            failure_threshold: config.failure_refresh_threshold,
            degraded_threshold: config.host_degraded_refresh_threshold,
            interval: config.redirect_refresh_interval,
            last_triggered: AtomicU64::new(0),
            epoch: Instant::now(),
            wake: Notify::new(),
        }
    }

    pub fn on_redirection(&self) {
        self.on_event(&self.redirects, self.redirect_threshold);
    }

    pub fn on_failure(&self) {
        self.on_event(&self.failures, self.failure_threshold);
    }

    pub fn on_host_degraded(&self) {
        self.on_event(&self.degraded, self.degraded_threshold);
    }

    fn on_event(&self, counter: &AtomicU32, threshold: u32) {
        if threshold == 0 {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_triggered.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval.as_millis() as u64 {
            return;
        }
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if count < threshold {
            return;
        }
        // One winner per trigger: the thread that moves `last_triggered` resets and wakes.
        if self
            .last_triggered
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.redirects.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.degraded.store(0, Ordering::Relaxed);
            debug!("Redis Cluster refresh triggered");
            self.wake.notify_one();
        }
    }
}

// === discovery session ===

/// A kept connection to one node for `CLUSTER SLOTS`.
struct DiscoveryConn {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
    /// Envoy counts the discovery client like any upstream connection (cluster and host).
    stats: ClusterStats,
    host: Option<Arc<Host>>,
}

impl Drop for DiscoveryConn {
    fn drop(&mut self) {
        self.stats.upstream_cx_active.dec();
        self.stats.upstream_cx_destroy.inc();
        self.stats.upstream_cx_destroy_local.inc();
        if let Some(h) = &self.host {
            h.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `cluster.<name>.upstream_commands.cluster.*`: the discovery client's command stats (Envoy
/// records them under the command's name, `cluster`).
struct DiscoveryCommandStats {
    total: Counter,
    success: Counter,
    /// Created on the first failure, as Envoy creates it.
    failure: Option<Counter>,
    failure_name: String,
    store: Store,
    latency: Histogram,
}

/// The discovery state of one redis cluster, owned by its task.
pub(crate) struct Discovery {
    seeds: Vec<(String, u16)>,
    family: DnsLookupFamily,
    connect_timeout: Duration,
    tcp_keepalive: Option<redvoy_config::model::TcpKeepalive>,
    refresh_timeout: Duration,
    /// `auth` (and user) sent first on every discovery connection; reply not checked.
    auth: Option<Vec<Vec<u8>>>,
    conns: HashMap<SocketAddr, DiscoveryConn>,
    /// `cluster.<name>.upstream_commands.upstream_rq_time` (µs).
    rq_time: Histogram,
    command: DiscoveryCommandStats,
    stats: ClusterStats,
    last_ranges: Option<Vec<SlotRange>>,
    /// Nodes whose `CLUSTER SLOTS` failed since the last good round. They are asked last: after
    /// a primary dies, Envoy may keep asking the dead node, a refresh period lost each time.
    failed: Vec<SocketAddr>,
}

/// What one discovery round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoundOutcome {
    Installed,
    Unchanged,
    Failed,
    /// Seeds resolved to nothing (Envoy's `update_empty`): initialisation completes empty.
    Empty,
}

impl Discovery {
    pub(crate) fn new(cluster: &Cluster, store: &Store) -> Self {
        let config = &cluster.config;
        let auth = config.redis_protocol_options.as_ref().and_then(|o| {
            match (&o.auth_username, &o.auth_password) {
                (Some(u), Some(p)) if !u.is_empty() => {
                    Some(vec![b"auth".to_vec(), u.to_vec(), p.to_vec()])
                }
                (_, Some(p)) if !p.is_empty() => Some(vec![b"auth".to_vec(), p.to_vec()]),
                _ => None,
            }
        });
        let redis = config.redis_cluster.clone().unwrap_or_default();
        Self {
            seeds: config
                .endpoints
                .iter()
                .filter(|e| e.pipe.is_none())
                .map(|e| (e.address.address.clone(), e.address.port))
                .collect(),
            family: config.dns_lookup_family,
            connect_timeout: config.connect_timeout,
            tcp_keepalive: config.tcp_keepalive,
            refresh_timeout: redis.cluster_refresh_timeout,
            auth,
            conns: HashMap::new(),
            rq_time: store.histogram(
                &format!(
                    "cluster.{}.upstream_commands.upstream_rq_time",
                    cluster.name
                ),
                HistogramUnit::Microseconds,
            ),
            command: {
                let p = format!("cluster.{}.upstream_commands.cluster.", cluster.name);
                DiscoveryCommandStats {
                    total: store.counter(&format!("{p}total")),
                    success: store.counter(&format!("{p}success")),
                    failure: None,
                    failure_name: format!("{p}failure"),
                    store: store.clone(),
                    latency: store.histogram(&format!("{p}latency"), HistogramUnit::Microseconds),
                }
            },
            stats: cluster.stats.clone(),
            last_ranges: None,
            failed: Vec::new(),
        }
    }

    /// One round: `update_attempt`, `CLUSTER SLOTS` to a random known node (a seed while the
    /// topology is empty), then install, `update_no_rebuild` or `update_failure`.
    pub(crate) async fn round(&mut self, cluster: &Cluster) -> RoundOutcome {
        let stats = &cluster.stats;
        stats.update_attempt.inc();
        let host_set = cluster.host_set();
        let known: Vec<SocketAddr> = host_set.hosts().iter().map(|h| h.address).collect();
        self.conns.retain(|a, _| known.contains(a));
        self.failed.retain(|a| known.contains(a));
        let target = if known.is_empty() {
            match self.pick_seed().await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    stats.update_empty.inc();
                    return RoundOutcome::Empty;
                }
                Err(e) => {
                    warn!(cluster = %cluster.name, error = %e, "Redis Cluster seed did not resolve");
                    stats.update_failure.inc();
                    return RoundOutcome::Failed;
                }
            }
        } else {
            let fresh: Vec<SocketAddr> = known
                .iter()
                .copied()
                .filter(|a| !self.failed.contains(a))
                .collect();
            let from = if fresh.is_empty() { &known } else { &fresh };
            from[rand::thread_rng().gen_range(0..from.len())]
        };
        let host = host_set
            .hosts()
            .iter()
            .find(|h| h.address == target)
            .cloned();
        drop(host_set);
        let started = Instant::now();
        self.command.total.inc();
        stats.upstream_rq_total.inc();
        stats.upstream_rq_active.inc();
        if let Some(h) = &host {
            h.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        }
        let reply = tokio::time::timeout(
            self.connect_timeout + self.refresh_timeout,
            self.cluster_slots(target, host),
        )
        .await;
        stats.upstream_rq_active.dec();
        let micros = started.elapsed().as_micros() as u64;
        match &reply {
            Ok(Ok(RespValue::Error(_))) => {
                let c = &mut self.command;
                c.failure
                    .get_or_insert_with(|| c.store.counter(&c.failure_name))
                    .inc();
            }
            Ok(Ok(_)) => self.command.success.inc(),
            _ => {}
        }
        if matches!(reply, Ok(Ok(_))) {
            self.command.latency.record(micros);
        }
        let reply = match reply {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                debug!(cluster = %cluster.name, %target, error = %e, "CLUSTER SLOTS failed");
                self.conns.remove(&target);
                if !self.failed.contains(&target) {
                    self.failed.push(target);
                }
                stats.update_failure.inc();
                return RoundOutcome::Failed;
            }
            Err(_) => {
                debug!(cluster = %cluster.name, %target, "CLUSTER SLOTS timed out");
                self.conns.remove(&target);
                if !self.failed.contains(&target) {
                    self.failed.push(target);
                }
                stats.update_failure.inc();
                return RoundOutcome::Failed;
            }
        };
        self.failed.clear();
        self.rq_time.record(micros);
        let raw = match parse_cluster_slots(&reply) {
            Ok(r) => r,
            Err(e) => {
                warn!(cluster = %cluster.name, %target, error = %e, "CLUSTER SLOTS reply rejected");
                stats.update_failure.inc();
                return RoundOutcome::Failed;
            }
        };
        let ranges = match resolve_ranges(raw, self.family).await {
            Ok((ranges, skipped)) => {
                if skipped {
                    stats.update_failure.inc();
                }
                ranges
            }
            Err(e) => {
                warn!(cluster = %cluster.name, error = %e, "Redis Cluster topology not applied");
                stats.update_failure.inc();
                return RoundOutcome::Failed;
            }
        };
        if self.last_ranges.as_ref() == Some(&ranges) && cluster.host_set().slot_map().is_some() {
            // Envoy builds the hosts of every parsed reply before it compares.
            stats
                .default_total_match_count
                .add(ranges.iter().map(|r| 1 + r.replicas.len() as u64).sum());
            stats.update_no_rebuild.inc();
            return RoundOutcome::Unchanged;
        }
        let old = cluster.host_set();
        let (hosts, map) = build_topology(&ranges, old.hosts(), cluster.config.endpoints.first());
        cluster.set_redis_topology(hosts, map);
        self.last_ranges = Some(ranges);
        RoundOutcome::Installed
    }

    async fn pick_seed(&self) -> Result<Option<SocketAddr>, String> {
        if self.seeds.is_empty() {
            return Ok(None);
        }
        let (host, port) = &self.seeds[rand::thread_rng().gen_range(0..self.seeds.len())];
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Some(SocketAddr::new(ip, *port)));
        }
        let answer = resolve(host, *port, self.family).await?;
        if answer.is_empty() {
            return Ok(None);
        }
        Ok(Some(answer[rand::thread_rng().gen_range(0..answer.len())]))
    }

    async fn cluster_slots(
        &mut self,
        target: SocketAddr,
        host: Option<Arc<Host>>,
    ) -> std::io::Result<RespValue> {
        if !self.conns.contains_key(&target) {
            let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(target))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")
                })??;
            let _ = stream.set_nodelay(true);
            crate::set_tcp_keepalive(&stream, self.tcp_keepalive.as_ref());
            self.stats.upstream_cx_total.inc();
            self.stats.upstream_cx_active.inc();
            if let Some(h) = &host {
                h.stats.cx_total.fetch_add(1, Ordering::Relaxed);
                h.stats.cx_active.fetch_add(1, Ordering::Relaxed);
            }
            let mut conn = DiscoveryConn {
                stream,
                decoder: Decoder::new(DecoderMode::Reply, Limits::default()),
                buf: BytesMut::with_capacity(READ_CHUNK),
                stats: self.stats.clone(),
                host,
            };
            if let Some(auth) = &self.auth {
                let parts: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
                let mut out = BytesMut::new();
                encode::command(&mut out, &parts);
                conn.stream.write_all(&out).await?;
                // Envoy does not check the AUTH reply; a wrong password shows as NOAUTH next.
                read_reply(&mut conn).await?;
            }
            self.conns.insert(target, conn);
        }
        let conn = self
            .conns
            .get_mut(&target)
            .ok_or_else(|| std::io::Error::other("discovery connection vanished"))?;
        let mut out = BytesMut::new();
        encode::command(&mut out, &[b"CLUSTER", b"SLOTS"]);
        conn.stream.write_all(&out).await?;
        read_reply(conn).await
    }
}

async fn read_reply(conn: &mut DiscoveryConn) -> std::io::Result<RespValue> {
    loop {
        match conn.decoder.decode(&mut conn.buf) {
            Ok(Some(frame)) => return Ok(frame.value),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(READ_CHUNK);
        }
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "node closed the connection",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> RespValue {
        RespValue::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }
    fn node(host: &str, port: i64) -> RespValue {
        RespValue::Array(vec![bulk(host), RespValue::Integer(port), bulk("id")])
    }
    fn entry(start: i64, end: i64, nodes: Vec<RespValue>) -> RespValue {
        let mut v = vec![RespValue::Integer(start), RespValue::Integer(end)];
        v.extend(nodes);
        RespValue::Array(v)
    }

    #[test]
    fn parses_a_valid_reply() {
        let reply = RespValue::Array(vec![
            entry(
                0,
                8191,
                vec![node("127.0.0.1", 7000), node("127.0.0.1", 7001)],
            ),
            entry(8192, 16383, vec![node("redis-1", 7002)]),
        ]);
        let parsed = parse_cluster_slots(&reply).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].replicas.len(), 1);
        assert_eq!(parsed[1].primary.host, "redis-1");
    }

    #[test]
    fn rejects_malformed_replies_whole() {
        let bad = [
            RespValue::Array(vec![]),
            RespValue::Integer(1),
            RespValue::Error(Bytes::from_static(
                b"ERR This instance has cluster support disabled",
            )),
            RespValue::Array(vec![RespValue::Integer(1)]),
            RespValue::Array(vec![entry(0, 1, vec![])]),
            RespValue::Array(vec![entry(0, 1, vec![bulk("x")])]),
            RespValue::Array(vec![entry(0, 1, vec![RespValue::Array(vec![bulk("a")])])]),
            RespValue::Array(vec![entry(0, 1, vec![node("", 7000)])]),
            RespValue::Array(vec![entry(0, 1, vec![node("1.2.3.4", 70000)])]),
            RespValue::Array(vec![entry(
                0,
                1,
                vec![RespValue::Array(vec![bulk("1.2.3.4"), bulk("7000")])],
            )]),
            // A bad replica rejects the reply too (RedisReplicaErrorResponse).
            RespValue::Array(vec![entry(0, 1, vec![node("1.2.3.4", 1), node("", 2)])]),
            RespValue::Array(vec![entry(
                0,
                1,
                vec![node("1.2.3.4", 1), RespValue::Integer(3)],
            )]),
            RespValue::Array(vec![RespValue::Array(vec![
                bulk("0"),
                RespValue::Integer(1),
                node("1.2.3.4", 1),
            ])]),
        ];
        for (i, b) in bad.iter().enumerate() {
            assert!(parse_cluster_slots(b).is_err(), "case {i} accepted");
        }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn topology() -> (Vec<Arc<Host>>, SlotMap) {
        let ranges = vec![
            SlotRange {
                start: 0,
                end: 99,
                primary: addr(1),
                replicas: vec![addr(2), addr(3)],
            },
            SlotRange {
                start: 100,
                end: 199,
                primary: addr(4),
                replicas: vec![],
            },
            SlotRange {
                start: 200,
                end: 299,
                primary: addr(1),
                replicas: vec![addr(2), addr(3)],
            },
        ];
        build_topology(&ranges, &[], None)
    }

    #[test]
    fn slot_map_and_policies() {
        let (hosts, map) = topology();
        assert_eq!(hosts.len(), 4);
        assert_eq!(map.shards().len(), 2);
        assert_eq!(map.shard_for_slot(250), map.shard_for_slot(5));
        // Uncovered slots map to shard 0.
        assert_eq!(map.shard_for_slot(16000), map.shards().first());
        let primary = |s| hosts[map.choose(&hosts, s, false, ReadPolicy::Replica).unwrap()].address;
        assert_eq!(primary(5), addr(1));
        assert_eq!(primary(150), addr(4));
        for _ in 0..20 {
            let r = map.choose(&hosts, 5, true, ReadPolicy::Replica).unwrap();
            assert!([addr(2), addr(3)].contains(&hosts[r].address));
            let m = map.choose(&hosts, 5, true, ReadPolicy::Master).unwrap();
            assert_eq!(hosts[m].address, addr(1));
            let p = map
                .choose(&hosts, 5, true, ReadPolicy::PreferReplica)
                .unwrap();
            assert!([addr(2), addr(3)].contains(&hosts[p].address));
        }
        // NoReplica: REPLICA has no host; PREFER_REPLICA and ANY fall back to the primary.
        assert_eq!(map.choose(&hosts, 150, true, ReadPolicy::Replica), None);
        let p = map
            .choose(&hosts, 150, true, ReadPolicy::PreferReplica)
            .unwrap();
        assert_eq!(hosts[p].address, addr(4));
        let a = map.choose(&hosts, 150, true, ReadPolicy::Any).unwrap();
        assert_eq!(hosts[a].address, addr(4));
    }

    #[test]
    fn unhealthy_primary_and_replica() {
        let unhealthy = model::Endpoint {
            address: model::SocketAddress {
                address: "127.0.0.1".into(),
                port: 1,
            },
            pipe: None,
            weight: 1,
            hostname: String::new(),
            health_status: HealthStatus::Unhealthy,
            locality: model::Locality::default(),
            priority: 0,
            transport_socket_labels: Default::default(),
            locality_transport_socket_labels: Default::default(),
        };
        let ranges = vec![SlotRange {
            start: 0,
            end: 16383,
            primary: addr(1),
            replicas: vec![addr(2)],
        }];
        let (hosts, map) = build_topology(&ranges, &[], Some(&unhealthy));
        // Every host unhealthy: PREFER_MASTER picks among all.
        let picks: std::collections::HashSet<_> = (0..200)
            .map(|_| {
                map.choose(&hosts, 1, true, ReadPolicy::PreferMaster)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks.len(), 2);
    }

    #[test]
    fn hosts_are_reused_by_address() {
        let (hosts, _) = topology();
        let ranges = vec![SlotRange {
            start: 0,
            end: 16383,
            primary: addr(4),
            replicas: vec![addr(1)],
        }];
        let (next, _) = build_topology(&ranges, &hosts, None);
        assert!(Arc::ptr_eq(&next[0], &hosts[3]));
        assert!(Arc::ptr_eq(&next[1], &hosts[0]));
    }

    #[test]
    fn refresh_trigger_thresholds_and_interval() {
        let config = RedisClusterConfig {
            redirect_refresh_threshold: 3,
            failure_refresh_threshold: 0,
            redirect_refresh_interval: Duration::from_secs(3600),
            ..RedisClusterConfig::default()
        };
        let t = RefreshTrigger::new(&config);
        t.on_redirection();
        t.on_redirection();
        assert_eq!(t.last_triggered.load(Ordering::Relaxed), 0);
        t.on_redirection();
        assert_ne!(t.last_triggered.load(Ordering::Relaxed), 0);
        assert_eq!(t.redirects.load(Ordering::Relaxed), 0);
        // Within the interval nothing counts.
        for _ in 0..10 {
            t.on_redirection();
        }
        assert_eq!(t.redirects.load(Ordering::Relaxed), 0);
        // Threshold 0 disables the failure trigger.
        t.on_failure();
        assert_eq!(t.failures.load(Ordering::Relaxed), 0);
    }
}
