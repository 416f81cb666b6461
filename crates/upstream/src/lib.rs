//! The cluster manager: upstream clusters (STATIC, STRICT_DNS, LOGICAL_DNS), their host sets and
//! Envoy-exact load balancers (RING_HASH, MAGLEV, RANDOM, ROUND_ROBIN, LEAST_REQUEST), plus the
//! key hashes the redis_proxy feeds them (MurmurHash2-64, CRC16 slots, hash tags).
//!
//! Owns: which hosts a cluster has and which host a hash picks. Must not depend on the proxy,
//! and never opens a connection to a host (the proxy's conn pools do).

#![forbid(unsafe_code)]

// API CONTRACT (implemented by the upstream owner):
//
// pub mod hash {
//     pub const MURMUR_SEED: u64 = 0xc70f6907;
//     pub fn murmur2_64(data: &[u8], seed: u64) -> u64;   // Envoy MurmurHash::murmurHash2 (libstdc++ variant)
//     pub fn hashtag(key: &[u8]) -> &[u8];                // `{...}` rule of spec §5.7
//     pub fn crc16(data: &[u8]) -> u16;                   // XMODEM
//     pub fn slot(key: &[u8]) -> u16;                     // crc16(hashtag(key)) & 0x3fff
// }
// pub struct HostStats { cx_total, cx_active, cx_connect_fail, rq_total, rq_active, rq_timeout,
//                        rq_error, rq_success: AtomicU64 } (pub fields, plain atomics: per-host
//                        stats are not in the store, Envoy shows them in /clusters)
// pub struct Host { pub address: SocketAddr, pub hostname: String, pub weight: u32, pub stats: HostStats }
// pub struct HostSet { .. }  impl HostSet {
//     pub fn hosts(&self) -> &[Arc<Host>];
//     /// Index into `hosts()` of the host the cluster's LB picks for this hash (ignored by
//     /// non-hashing LBs). None when there are no hosts.
//     pub fn choose(&self, hash: u64) -> Option<usize>;
// }
// pub struct ClusterStats { pub upstream_cx_total: Counter, upstream_cx_active: Gauge,
//     upstream_cx_connect_fail, upstream_cx_connect_timeout, upstream_cx_destroy,
//     upstream_cx_destroy_local, upstream_cx_destroy_remote, upstream_cx_protocol_error,
//     upstream_cx_rx_bytes_total, upstream_cx_tx_bytes_total, upstream_rq_total: Counter,
//     upstream_rq_active: Gauge, upstream_rq_timeout, upstream_rq_cancelled, membership_change,
//     update_attempt, update_success, update_failure, update_no_rebuild: Counter,
//     membership_total, membership_healthy: Gauge, ... } all under `cluster.<name>.`
// pub struct Cluster { pub name: String, pub config: redvoy_config::model::Cluster, pub stats: ClusterStats, .. }
// impl Cluster {
//     /// The current host set; changes when DNS answers change (cheap: an ArcSwap load).
//     pub fn host_set(&self) -> Arc<HostSet>;
//     pub fn host_set_guard(&self) -> arc_swap::Guard<Arc<HostSet>>;
// }
// pub struct ClusterManager; impl ClusterManager {
//     /// Builds every cluster, resolving DNS names once (Envoy's cluster warming) before returning.
//     pub async fn new(clusters: &[model::Cluster], stats: &Store) -> Result<Self, UpstreamError>;
//     pub fn get(&self, name: &str) -> Option<&Arc<Cluster>>;
//     pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>>;
//     /// Spawns, on the current tokio runtime, one task per DNS cluster that re-resolves every
//     /// `dns_refresh_rate` and swaps in a new HostSet when the answer changed.
//     pub fn spawn_dns_refresh(&self);
// }
