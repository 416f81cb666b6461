//! The `envoy.filters.network.tcp_proxy` filter: connect to one host of the cluster (for an
//! ORIGINAL_DST cluster, the connection's pre-NAT destination) and copy bytes both ways, with
//! half-close, the idle timeout and Envoy's `tcp.<stat_prefix>.*` stats. It is what Istio puts on
//! a Redis service port until an EnvoyFilter swaps in redis_proxy.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redvoy_config::model::{self, DiscoveryType};
use redvoy_stats::{Counter, Gauge, Store};
use redvoy_tls::Stream;
use redvoy_upstream::{Cluster, ClusterStats, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

/// Bytes moved per read in each direction. One buffer per direction, so a connection holds at
/// most twice this; a slow reader stops the copy in that direction (TCP backpressure) instead of
/// growing a buffer, which is why `downstream_cx_*_bytes_buffered` stay at 0.
pub const TCP_PROXY_BUFFER: usize = 16 * 1024;

/// `tcp.<stat_prefix>.*` (Envoy's `ALL_TCP_PROXY_STATS`).
#[derive(Clone, Debug)]
pub struct TcpProxyStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_rx_bytes_buffered: Gauge,
    pub downstream_cx_tx_bytes_buffered: Gauge,
    pub idle_timeout: Counter,
    pub upstream_flush_total: Counter,
    pub upstream_flush_active: Gauge,
}

/// Counters of the same macro redvoy never moves (flow control, drain/overload close, early
/// data, on-demand routing, max duration); registered so `/stats` lists Envoy's names.
const IDLE_COUNTERS: &[&str] = &[
    "downstream_cx_drain_close",
    "downstream_cx_overload_close",
    "downstream_flow_control_paused_reading_total",
    "downstream_flow_control_resumed_reading_total",
    "early_data_received_count_total",
    "max_downstream_connection_duration",
    "route_delayed_total",
];

impl TcpProxyStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let prefix = format!("tcp.{stat_prefix}.");
        let c = |name: &str| store.counter(&format!("{prefix}{name}"));
        let g = |name: &str| store.gauge(&format!("{prefix}{name}"));
        for name in IDLE_COUNTERS {
            c(name);
        }
        Self {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_no_route: c("downstream_cx_no_route"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_cx_rx_bytes_buffered: g("downstream_cx_rx_bytes_buffered"),
            downstream_cx_tx_bytes_buffered: g("downstream_cx_tx_bytes_buffered"),
            idle_timeout: c("idle_timeout"),
            upstream_flush_total: c("upstream_flush_total"),
            upstream_flush_active: g("upstream_flush_active"),
        }
    }
}

/// A compiled `TcpProxy` filter. The cluster is resolved by the caller per connection (by
/// `cluster` name against the current snapshot), so a cluster swap reaches new connections.
#[derive(Debug)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    /// The one cluster (`cluster`), or the first of `weighted_clusters`.
    pub cluster: String,
    /// `weighted_clusters` as `(name, weight)`, with their sum; empty for one cluster.
    weighted_clusters: Vec<(String, u32)>,
    total_weight: u64,
    /// `None`: disabled (`idle_timeout: 0s`).
    pub idle_timeout: Option<Duration>,
    pub stats: TcpProxyStats,
}

impl TcpProxyConfig {
    pub fn new(config: &model::TcpProxy, store: &Store) -> Self {
        Self {
            stat_prefix: config.stat_prefix.clone(),
            cluster: config.cluster.clone(),
            weighted_clusters: config.weighted_clusters.clone(),
            total_weight: config
                .weighted_clusters
                .iter()
                .map(|(_, w)| u64::from(*w))
                .sum(),
            idle_timeout: config.idle_timeout,
            stats: TcpProxyStats::new(store, &config.stat_prefix),
        }
    }

    /// The cluster of a new connection: with `weighted_clusters`, Envoy's
    /// `WeightedClusterUtil::pickCluster` over `random` (a slot in `[0, total weight)`, the
    /// cluster whose cumulative range holds it); else the one cluster.
    pub fn pick_cluster(&self, random: u64) -> &str {
        if self.total_weight == 0 {
            return &self.cluster;
        }
        let selected = random % self.total_weight;
        let mut end = 0;
        for (name, weight) in &self.weighted_clusters {
            end += u64::from(*weight);
            if selected < end {
                return name;
            }
        }
        &self.cluster
    }
}

/// Why a proxied connection ended (for the log and the upstream destroy counters).
#[derive(Debug, thiserror::Error)]
enum CopyEnd {
    #[error("downstream: {0}")]
    Downstream(io::Error),
    #[error("upstream: {0}")]
    Upstream(io::Error),
}

/// Proxies one downstream connection until both directions have ended, either side fails, or
/// the idle timeout fires. `cluster` is `None` when the configured cluster does not exist
/// (`downstream_cx_no_route`); `original_dst` is the connection's `SO_ORIGINAL_DST`, used by
/// ORIGINAL_DST clusters. Dropping the future closes both connections.
pub async fn run(
    stream: Stream,
    config: &TcpProxyConfig,
    cluster: Option<Arc<Cluster>>,
    original_dst: Option<SocketAddr>,
) {
    let stats = &config.stats;
    stats.downstream_cx_total.inc();
    let Some(cluster) = cluster else {
        debug!(stat_prefix = %config.stat_prefix, "tcp_proxy: cluster not found");
        stats.downstream_cx_no_route.inc();
        return;
    };
    let cs = &cluster.stats;
    let (address, host) = if cluster.config.discovery == DiscoveryType::OriginalDst {
        (original_dst, None)
    } else {
        let host = cluster
            .host_set_guard()
            .choose_host(rand::random())
            .cloned();
        (host.as_ref().map(|h| h.address), host)
    };
    let Some(address) = address else {
        debug!(cluster = %cluster.name, "tcp_proxy: no healthy upstream");
        cs.upstream_cx_none_healthy.inc();
        return;
    };
    // Envoy's TCP pool: a connection over the cluster's `max_connections` is not made and the
    // downstream is closed (`upstream_cx_overflow`).
    let Some(_slot) =
        cluster.try_open_connection(cluster.config.circuit_breakers.default.max_connections)
    else {
        debug!(cluster = %cluster.name, "tcp_proxy: circuit breaker open (max_connections)");
        return;
    };
    let Some(upstream) = connect(&cluster, host.as_deref(), address).await else {
        return;
    };

    // Per-connection gauges, undone however this future ends.
    let _cx_active = GaugeGuard::new(cs.upstream_cx_active.get());
    let _host_active = host.as_ref().map(|h| HostActive::new(h));
    let started = Instant::now();
    let end = proxy(stream, upstream, config, cs).await;
    match &end {
        Ok(()) => {}
        Err(e) => debug!(error = %e, "tcp_proxy: connection ended"),
    }
    cs.upstream_cx_destroy.inc();
    // Who closed first is not tracked per direction; an upstream error is remote, anything
    // else (downstream gone, idle timeout, both halves closed) is the proxy closing upstream.
    if matches!(end, Err(CopyEnd::Upstream(_))) {
        cs.upstream_cx_destroy_remote.inc();
    } else {
        cs.upstream_cx_destroy_local.inc();
    }
    cs.upstream_cx_length_ms
        .record(started.elapsed().as_millis() as u64);
}

/// Connects within the cluster's `connect_timeout` (a TLS host's handshake included),
/// counting as Envoy's TCP pool does. Never plaintext to a host whose socket is TLS.
async fn connect(cluster: &Cluster, host: Option<&Host>, address: SocketAddr) -> Option<Stream> {
    let cs = &cluster.stats;
    let tls = match host {
        Some(h) => cluster.tls_for(h),
        None => cluster.tls_for_match(cluster.unlabelled_transport_match()),
    }
    .cloned();
    cs.upstream_cx_total.inc();
    if let Some(h) = host {
        h.stats.cx_total.fetch_add(1, Ordering::Relaxed);
    }
    // A zero timeout would fail every connect; Envoy's proto requires a positive one.
    let limit = cluster.config.connect_timeout.max(Duration::from_millis(1));
    let started = Instant::now();
    let attempt = async {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        redvoy_upstream::set_tcp_keepalive(&stream, cluster.config.tcp_keepalive.as_ref());
        match &tls {
            None => Ok::<_, std::io::Error>(Stream::Plain(stream)),
            Some(context) => {
                let connector = context
                    .connector()
                    .ok_or_else(redvoy_tls::secrets_not_ready)?;
                Ok(Stream::Client(Box::new(
                    connector.connect(stream, address).await?,
                )))
            }
        }
    };
    let failed = match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(stream)) => {
            cs.upstream_cx_connect_ms
                .record(started.elapsed().as_millis() as u64);
            return Some(stream);
        }
        Ok(Err(e)) => {
            debug!(%address, error = %e, "tcp_proxy: upstream connect failed");
            false
        }
        Err(_) => {
            debug!(%address, "tcp_proxy: upstream connect timeout");
            true
        }
    };
    cs.upstream_cx_connect_fail.inc();
    if failed {
        cs.upstream_cx_connect_timeout.inc();
    }
    if let Some(h) = host {
        h.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
    }
    None
}

async fn proxy(
    downstream: Stream,
    upstream: Stream,
    config: &TcpProxyConfig,
    cs: &ClusterStats,
) -> Result<(), CopyEnd> {
    let _ = downstream.tcp().set_nodelay(true);
    match (downstream, upstream) {
        (Stream::Plain(mut down), Stream::Plain(mut up)) => {
            let (mut dr, mut dw) = down.split();
            let (mut ur, mut uw) = up.split();
            copy_both((&mut dr, &mut dw), (&mut ur, &mut uw), config, cs).await
        }
        (down, up) => {
            let (mut dr, mut dw) = tokio::io::split(down);
            let (mut ur, mut uw) = tokio::io::split(up);
            copy_both((&mut dr, &mut dw), (&mut ur, &mut uw), config, cs).await
        }
    }
}

/// Both directions until both ended, either failed, or the idle timeout fired.
async fn copy_both<DR, DW, UR, UW>(
    (dr, dw): (&mut DR, &mut DW),
    (ur, uw): (&mut UR, &mut UW),
    config: &TcpProxyConfig,
    cs: &ClusterStats,
) -> Result<(), CopyEnd>
where
    DR: AsyncReadExt + Unpin,
    DW: AsyncWriteExt + Unpin,
    UR: AsyncReadExt + Unpin,
    UW: AsyncWriteExt + Unpin,
{
    let stats = &config.stats;
    let epoch = Instant::now();
    // Milliseconds since `epoch` of the last byte moved in either direction.
    let last_activity = AtomicU64::new(0);
    let to_upstream = pipe(
        dr,
        uw,
        [
            &stats.downstream_cx_rx_bytes_total,
            cs.upstream_cx_tx_bytes_total.get(),
        ],
        (&last_activity, epoch),
        CopyEnd::Downstream,
        CopyEnd::Upstream,
    );
    let to_downstream = pipe(
        ur,
        dw,
        [
            cs.upstream_cx_rx_bytes_total.get(),
            &stats.downstream_cx_tx_bytes_total,
        ],
        (&last_activity, epoch),
        CopyEnd::Upstream,
        CopyEnd::Downstream,
    );
    let both = async { tokio::try_join!(to_upstream, to_downstream).map(|_| ()) };
    match config.idle_timeout {
        None => both.await,
        Some(idle) => {
            tokio::select! {
                r = both => r,
                () = idle_watch(idle, &last_activity, epoch) => {
                    debug!("tcp_proxy: idle timeout");
                    stats.idle_timeout.inc();
                    Ok(())
                }
            }
        }
    }
}

/// One direction: read, write, count; on end of stream half-close the other side (Envoy runs
/// the downstream connection with half-close enabled, so each FIN is forwarded on its own).
async fn pipe<R, W>(
    reader: &mut R,
    writer: &mut W,
    counters: [&Counter; 2],
    (last_activity, epoch): (&AtomicU64, Instant),
    read_err: fn(io::Error) -> CopyEnd,
    write_err: fn(io::Error) -> CopyEnd,
) -> Result<(), CopyEnd>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; TCP_PROXY_BUFFER];
    loop {
        let n = reader.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            // The peer may already be gone; that ends this direction all the same.
            let _ = writer.shutdown().await;
            return Ok(());
        }
        counters[0].add(n as u64);
        last_activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        writer.write_all(&buf[..n]).await.map_err(write_err)?;
        // A TLS writer may hold bytes back until flushed (a plain socket holds none).
        writer.flush().await.map_err(write_err)?;
        counters[1].add(n as u64);
        last_activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Completes once nothing moved for `idle`.
async fn idle_watch(idle: Duration, last_activity: &AtomicU64, epoch: Instant) {
    loop {
        let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
        let deadline = epoch + last + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The host's `cx_active` (shown by `/clusters`) while the connection lives.
struct HostActive<'a>(&'a Host);

impl<'a> HostActive<'a> {
    fn new(host: &'a Host) -> Self {
        host.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        Self(host)
    }
}

impl Drop for HostActive<'_> {
    fn drop(&mut self) {
        self.0.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redvoy_config::model::{DnsLookupFamily, LbPolicy};
    use tokio::net::TcpListener;

    fn cluster(discovery: DiscoveryType, hosts: &[SocketAddr], store: &Store) -> Arc<Cluster> {
        let c = Cluster::new(
            model::Cluster {
                name: "c".into(),
                discovery,
                lb_policy: LbPolicy::RoundRobin,
                connect_timeout: Duration::from_millis(250),
                dns_refresh_rate: Duration::from_secs(5),
                dns_lookup_family: DnsLookupFamily::Auto,
                endpoints: Vec::new(),
                redis_protocol_options: None,
                use_hostname_for_hashing: false,
                eds: None,
                redis_cluster: None,
                circuit_breakers: Default::default(),
                healthy_panic_threshold: Default::default(),
                tcp_keepalive: None,
                transport_socket_matches: Default::default(),
                health_check: None,
                outlier_detection: None,
                ignore_health_on_host_removal: false,
                upstream_tls: None,
            },
            store,
        );
        c.set_hosts(
            hosts
                .iter()
                .map(|a| Arc::new(Host::new(*a, "", 1)))
                .collect(),
        );
        Arc::new(c)
    }

    fn config(store: &Store, idle: Option<Duration>) -> Arc<TcpProxyConfig> {
        Arc::new(TcpProxyConfig::new(
            &model::TcpProxy {
                stat_prefix: "p".into(),
                cluster: "c".into(),
                weighted_clusters: Vec::new(),
                idle_timeout: idle,
            },
            store,
        ))
    }

    /// An echo server that, on the client's FIN, writes `bye` and closes.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            let _ = s.write_all(b"bye").await;
                            return;
                        }
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A listener running the tcp_proxy for each accepted connection.
    async fn front(
        cfg: Arc<TcpProxyConfig>,
        cluster: Option<Arc<Cluster>>,
        original_dst: Option<SocketAddr>,
    ) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let cfg = cfg.clone();
                let cluster = cluster.clone();
                tokio::spawn(
                    async move { run(Stream::Plain(s), &cfg, cluster, original_dst).await },
                );
            }
        });
        addr
    }

    async fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    fn stat(store: &Store, name: &str) -> u64 {
        store.value_of(name).unwrap()
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let store = Store::new();
        let up = echo().await;
        let cfg = config(&store, Some(Duration::from_secs(3600)));
        let addr = front(
            cfg,
            Some(cluster(DiscoveryType::Static, &[up], &store)),
            None,
        )
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        // Our FIN reaches the upstream, whose answer still comes back.
        s.shutdown().await.unwrap();
        assert_eq!(read_all(&mut s).await, b"bye");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stat(&store, "tcp.p.downstream_cx_total"), 1);
        assert_eq!(stat(&store, "tcp.p.downstream_cx_rx_bytes_total"), 5);
        assert_eq!(stat(&store, "tcp.p.downstream_cx_tx_bytes_total"), 8);
        assert_eq!(stat(&store, "cluster.c.upstream_cx_total"), 1);
        assert_eq!(stat(&store, "cluster.c.upstream_cx_active"), 0);
        assert_eq!(stat(&store, "cluster.c.upstream_cx_tx_bytes_total"), 5);
        assert_eq!(stat(&store, "tcp.p.upstream_flush_total"), 0);
        assert_eq!(
            stat(&store, "tcp.p.downstream_flow_control_paused_reading_total"),
            0
        );
    }

    #[tokio::test]
    async fn original_dst_cluster_connects_to_the_original_destination() {
        let store = Store::new();
        let up = echo().await;
        let cfg = config(&store, None);
        let c = cluster(DiscoveryType::OriginalDst, &[], &store);
        let addr = front(cfg, Some(c), Some(up)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_all(&mut s).await, b"xbye");
    }

    #[tokio::test]
    async fn no_route_no_host_and_connect_failure_close_the_client() {
        let store = Store::new();
        let cfg = config(&store, None);
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        for (cluster, original_dst) in [
            (None, None),
            (Some(cluster(DiscoveryType::Static, &[], &store)), None),
            (Some(cluster(DiscoveryType::OriginalDst, &[], &store)), None),
            (Some(cluster(DiscoveryType::Static, &[dead], &store)), None),
        ] {
            let addr = front(cfg.clone(), cluster, original_dst).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert!(read_all(&mut s).await.is_empty());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stat(&store, "tcp.p.downstream_cx_total"), 4);
        assert_eq!(stat(&store, "tcp.p.downstream_cx_no_route"), 1);
        assert_eq!(stat(&store, "cluster.c.upstream_cx_none_healthy"), 2);
        assert_eq!(stat(&store, "cluster.c.upstream_cx_connect_fail"), 1);
    }

    #[tokio::test]
    async fn idle_timeout_closes_both_sides() {
        let store = Store::new();
        let up = echo().await;
        let cfg = config(&store, Some(Duration::from_millis(150)));
        let addr = front(
            cfg,
            Some(cluster(DiscoveryType::Static, &[up], &store)),
            None,
        )
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        let started = Instant::now();
        // The upstream never saw a FIN, so it cannot have said "bye".
        assert!(read_all(&mut s).await.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(stat(&store, "tcp.p.idle_timeout"), 1);
    }

    #[test]
    fn weighted_clusters_pick_by_cumulative_weight() {
        let store = Store::new();
        let config = TcpProxyConfig::new(
            &model::TcpProxy {
                stat_prefix: "p".into(),
                cluster: "a".into(),
                weighted_clusters: vec![("a".into(), 1), ("b".into(), 3)],
                idle_timeout: None,
            },
            &store,
        );
        // Envoy's pickCluster: `random % 4` in [0, 1) → a, [1, 4) → b.
        let picks: Vec<&str> = (0..8).map(|r| config.pick_cluster(r)).collect();
        assert_eq!(picks, ["a", "b", "b", "b", "a", "b", "b", "b"]);
        let single = TcpProxyConfig::new(
            &model::TcpProxy {
                stat_prefix: "p".into(),
                cluster: "only".into(),
                weighted_clusters: Vec::new(),
                idle_timeout: None,
            },
            &store,
        );
        assert_eq!(single.pick_cluster(7), "only");
    }
}
