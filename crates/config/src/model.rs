//! Validated domain types: what the rest of redvoy sees of Envoy's v3 config. Protobuf types
//! never leave this crate; everything here is plain Rust with Envoy's defaults already applied.

use std::time::Duration;

use bytes::Bytes;

/// The bootstrap after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    pub node: Node,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub address: SocketAddress,
}

/// `config.core.v3.SocketAddress` with a TCP port (names are resolved by the user of the value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketAddress {
    pub address: String,
    pub port: u16,
}

impl std::fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.contains(':') {
            write!(f, "[{}]:{}", self.address, self.port)
        } else {
            write!(f, "{}:{}", self.address, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddress,
    /// The one network filter chain's terminal filter (redvoy only runs redis_proxy for now).
    pub redis_proxy: RedisProxy,
}

/// `extensions.filters.network.redis_proxy.v3.RedisProxy`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisProxy {
    pub stat_prefix: String,
    pub settings: ConnPoolSettings,
    pub latency_in_micros: bool,
    pub prefix_routes: PrefixRoutes,
    /// `downstream_auth_password` followed by `downstream_auth_passwords`, read once at load;
    /// empty ones are dropped, as in Envoy.
    pub downstream_auth_passwords: Vec<Bytes>,
    /// `None` when unset or empty (Envoy treats an empty username as none).
    pub downstream_auth_username: Option<Bytes>,
    pub faults: Vec<Fault>,
    /// As written in the config (Envoy only ever matches lowercase entries).
    pub custom_commands: Vec<String>,
}

/// `RedisProxy.ConnPoolSettings`, Envoy defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnPoolSettings {
    /// Required; Envoy 1.40 accepts `0s`, so zero can reach the data path.
    pub op_timeout: Duration,
    pub enable_hashtagging: bool,
    pub enable_redirection: bool,
    pub max_buffer_size_before_flush: u32,
    /// Default 3 ms.
    pub buffer_flush_timeout: Duration,
    /// Default 100.
    pub max_upstream_unknown_connections: u32,
    pub enable_command_stats: bool,
    pub read_policy: ReadPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPolicy {
    #[default]
    Master,
    PreferMaster,
    Replica,
    PreferReplica,
    Any,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixRoutes {
    pub routes: Vec<Route>,
    pub case_insensitive: bool,
    pub catch_all_route: Option<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Lowercased at load when `PrefixRoutes.case_insensitive` (Envoy compares lowercased).
    pub prefix: String,
    pub remove_prefix: bool,
    pub cluster: String,
    pub request_mirror_policy: Vec<MirrorPolicy>,
    /// Envoy substitution format; only `%KEY%` is accepted (others are refused at load).
    pub key_formatter: Option<String>,
    /// `read_command_policy.cluster`.
    pub read_command_cluster: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPolicy {
    pub cluster: String,
    pub runtime_fraction: Option<RuntimeFraction>,
    pub exclude_read_commands: bool,
}

/// `config.core.v3.RuntimeFractionalPercent`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeFraction {
    pub runtime_key: String,
    pub numerator: u32,
    /// 100, 10_000 or 1_000_000.
    pub denominator: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultType {
    Delay,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub fault_type: FaultType,
    pub fault_enabled: RuntimeFraction,
    pub delay: Duration,
    /// Lowercased at load.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub discovery: DiscoveryType,
    pub lb_policy: LbPolicy,
    pub connect_timeout: Duration,
    /// Default 5 s.
    pub dns_refresh_rate: Duration,
    pub dns_lookup_family: DnsLookupFamily,
    pub endpoints: Vec<Endpoint>,
    /// `typed_extension_protocol_options["envoy.filters.network.redis_proxy"]`.
    pub redis_protocol_options: Option<RedisProtocolOptions>,
    /// `common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing`.
    pub use_hostname_for_hashing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
    LogicalDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsLookupFamily {
    #[default]
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFunction {
    XxHash,
    MurmurHash2,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest {
        choice_count: u32,
    },
    Random,
    RingHash {
        minimum_ring_size: u64,
        maximum_ring_size: u64,
        hash_function: HashFunction,
    },
    Maglev {
        table_size: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: SocketAddress,
    /// `load_balancing_weight`, default 1.
    pub weight: u32,
    /// `endpoint.hostname` (used for hashing when `use_hostname_for_hashing`).
    pub hostname: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisProtocolOptions {
    /// `None` when unset or empty (Envoy sends no AUTH for an empty password).
    pub auth_username: Option<Bytes>,
    pub auth_password: Option<Bytes>,
}
