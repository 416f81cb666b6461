//! The discovery session: one `CLUSTER SLOTS` per round to a known node (a seed while none is
//! known), on connections kept per address, with Envoy's stats for the discovery client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use redvoy_config::model::DnsLookupFamily;
use redvoy_resp::{encode, Decoder, DecoderMode, Limits, RespValue};
use redvoy_stats::{Counter, Histogram, HistogramUnit, Store};
use redvoy_tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::slot_map::SlotMap;
use super::slots::{build_topology, parse_cluster_slots, resolve_ranges, SlotRange};
use crate::cluster::Cluster;
use crate::dns::resolve;
use crate::host::Host;
use crate::stats::ClusterStats;

/// Read buffer of a discovery connection (a CLUSTER SLOTS reply of a large cluster is tens of
/// KiB; the decoder limits bound it).
const READ_CHUNK: usize = 16 * 1024;

/// A kept connection to one node for `CLUSTER SLOTS`.
struct DiscoveryConn {
    stream: Stream,
    decoder: Decoder,
    buf: BytesMut,
    /// Envoy counts the discovery client like any upstream connection (cluster and host).
    stats: Arc<ClusterStats>,
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
    /// The cluster's TLS: discovery connections are TLS like every other one.
    tls: Option<Arc<redvoy_tls::ClientTls>>,
    refresh_timeout: Duration,
    /// `auth` (and user) sent first on every discovery connection; reply not checked.
    auth: Option<Vec<Vec<u8>>>,
    conns: HashMap<SocketAddr, DiscoveryConn>,
    /// `cluster.<name>.upstream_commands.upstream_rq_time` (µs).
    rq_time: Histogram,
    command: DiscoveryCommandStats,
    stats: Arc<ClusterStats>,
    last_ranges: Option<Vec<SlotRange>>,
    /// Nodes whose `CLUSTER SLOTS` failed since the last good round. They are asked last: after
    /// a primary dies, Envoy may keep asking the dead node, a refresh period lost each time.
    failed: Vec<SocketAddr>,
}

/// What one discovery round found. The round only reads the cluster; whoever runs the
/// discovery installs a new topology.
pub(crate) enum RoundOutcome {
    /// A changed topology: every node's host (reused where the address stays) and the slot
    /// map, to install with `Cluster::set_redis_topology`.
    Topology(Vec<Arc<Host>>, SlotMap),
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
            tls: cluster
                .tls_for_match(cluster.seed_transport_match())
                .cloned(),
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
            stats: Arc::clone(&cluster.stats),
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
            cluster.count_transport_match(
                cluster.seed_transport_match(),
                ranges.iter().map(|r| 1 + r.replicas.len() as u64).sum(),
            );
            stats.update_no_rebuild.inc();
            return RoundOutcome::Unchanged;
        }
        let old = cluster.host_set();
        let (hosts, map) = build_topology(
            &ranges,
            old.hosts(),
            cluster.config.endpoints.first(),
            cluster.seed_transport_match(),
        );
        self.last_ranges = Some(ranges);
        RoundOutcome::Topology(hosts, map)
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
            let keepalive = self.tcp_keepalive;
            let tls = self.tls.clone();
            let connect = async move {
                let stream = TcpStream::connect(target).await?;
                let _ = stream.set_nodelay(true);
                crate::set_tcp_keepalive(&stream, keepalive.as_ref());
                match &tls {
                    None => Ok::<_, std::io::Error>(Stream::Plain(stream)),
                    Some(tls) => {
                        let connector =
                            tls.connector().ok_or_else(redvoy_tls::secrets_not_ready)?;
                        Ok(Stream::Client(Box::new(
                            connector.connect(stream, target).await?,
                        )))
                    }
                }
            };
            // The handshake is part of the connect, within connect_timeout.
            let stream = tokio::time::timeout(self.connect_timeout, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")
                })??;
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
                stats: Arc::clone(&self.stats),
                host,
            };
            if let Some(auth) = &self.auth {
                let parts: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
                let mut out = BytesMut::new();
                encode::command(&mut out, &parts);
                conn.stream.write_all(&out).await?;
                conn.stream.flush().await?;
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
        conn.stream.flush().await?;
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
