//! The cluster manager: upstream clusters (STATIC, STRICT_DNS, LOGICAL_DNS, EDS and Envoy's
//! `envoy.clusters.redis`), their host sets and Envoy-exact load balancers (RING_HASH, MAGLEV,
//! RANDOM, ROUND_ROBIN, LEAST_REQUEST, the Redis Cluster slot map), plus the key hashes the
//! redis_proxy feeds them (MurmurHash2-64, CRC16 slots, hash tags).
//!
//! Owns: which hosts a cluster has and which host a hash picks. Must not depend on the proxy.
//! It opens no connection to a host except the Redis Cluster discovery session
//! (`CLUSTER SLOTS`); traffic goes through the proxy's conn pools, which ask a cluster for
//! their circuit-breaker place and socket options (`connection`).

#![forbid(unsafe_code)]

pub mod hash;

mod cluster;
mod connection;
mod dns;
mod event_log;
mod health_check;
mod host;
mod lb;
mod manager;
mod outlier;
mod redis_cluster;
mod stats;

pub use cluster::Cluster;
pub use connection::{set_tcp_keepalive, ConnectionSlot, Overflow};
pub use dns::{DNS_RESOLVE_TIMEOUT, MIN_DNS_REFRESH_RATE};
pub use event_log::EventLog;
pub use host::{
    envoy_address_string, CoarseHealth, EdsInfo, HealthFlag, Host, HostHealth, HostStats,
};
pub use lb::{
    validate_policy, HostSet, LbTableStats, MAX_MAGLEV_TABLE_SIZE, MAX_RING_SIZE, MAX_WRR_SCHEDULE,
};
pub use manager::{ClusterChange, ClusterManager};
pub use outlier::{OutlierCounters, OutlierDetector, OutlierResult};
pub use redis_cluster::{RefreshTrigger, Shard, SlotMap, SLOT_COUNT};
pub use stats::{ClusterStats, LbStats};

/// Configuration Envoy refuses when it creates a cluster or its load balancer. Messages are
/// Envoy's, so a rejected bootstrap or CDS update reads the same as with Envoy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "malformed IP address: {0}. Consider setting resolver_name or setting cluster type to \
         'STRICT_DNS' or 'LOGICAL_DNS'"
    )]
    MalformedIp(String),
    #[error(
        "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint"
    )]
    LogicalDnsEndpoints,
    #[error("Cannot use hostname for consistent hashing loadbalancing for cluster of type: '{0}'")]
    HostnameHashing(&'static str),
    #[error("ring hash: minimum_ring_size ({min}) > maximum_ring_size ({max})")]
    RingSizeBounds { min: u64, max: u64 },
    #[error("ring hash: maximum_ring_size ({0}) must be at most 8388608")]
    RingTooLarge(u64),
    #[error("The table size of maglev must be prime number")]
    MaglevTableNotPrime,
    #[error("maglev: table_size ({0}) must be at most 5000011")]
    MaglevTableTooLarge(u64),
    #[error("least request: choice_count ({0}) must be at least 2")]
    LeastRequestChoiceCount(u32),
    #[error("The sum of weights of all upstream hosts in a locality exceeds 4294967295")]
    WeightSumOverflow,
    #[error("cluster '{cluster}': transport socket: {reason}")]
    Tls { cluster: String, reason: String },
    #[error("cluster manager: duplicate cluster '{0}'")]
    DuplicateCluster(String),
    /// CDS named a bootstrap cluster (Envoy's message).
    #[error("'{0}' is a static cluster and cannot be added, modified or removed through CDS")]
    StaticCluster(String),
}
