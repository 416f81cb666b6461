//! Validated domain types: what the rest of redvoy sees of Envoy's v3 config. Protobuf types
//! never leave this crate; everything here is plain Rust with Envoy's defaults already applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// The bootstrap after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// `cluster_manager.outlier_detection.event_log_path`: where outlier ejections are logged.
    pub outlier_event_log_path: Option<String>,
    pub node: Node,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// `dynamic_resources`.
    pub dynamic_resources: Option<DynamicResources>,
    /// `stats_config`, Envoy's defaults applied.
    pub stats_config: StatsConfig,
    /// `stats_flush_interval`, default 5 s (Envoy accepts [1 ms, 300 s)).
    pub stats_flush_interval: Duration,
    /// `layered_runtime`; no layers at all when the bootstrap has none (Envoy's `/runtime`
    /// then shows `"layers": []` and `/runtime_modify` answers "No admin layer specified").
    pub runtime: Runtime,
    /// `overload_manager`'s `envoy.resource_monitors.global_downstream_max_connections`.
    pub global_connection_limit: Option<GlobalConnectionLimit>,
    /// `static_resources.secrets`: TLS certificates and validation contexts that TLS contexts
    /// name in an `sds_config`-less `SdsSecretConfig`.
    pub secrets: Vec<Secret>,
    /// The merged bootstrap as written (before redvoy's normalization), for `/config_dump`.
    /// Opaque outside this crate: see [`crate::render_config_dump`].
    pub source: BootstrapSource,
}

/// The validated bootstrap proto, kept for [`crate::render_config_dump`]. Cloning shares it;
/// equality compares content. `Default` is an empty bootstrap (for tests that build models).
#[derive(Clone, Default)]
pub struct BootstrapSource(pub(crate) Arc<crate::pb::Bootstrap>);

impl BootstrapSource {
    /// The bootstrap as written, as binary proto (what a `-c FILE.pb` would hold).
    pub fn to_pb(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&*self.0)
    }
}

impl PartialEq for BootstrapSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::fmt::Debug for BootstrapSource {
    // The whole proto would drown the model's own fields in `{:#?}` output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let statics = self.0.static_resources.as_ref();
        f.debug_struct("BootstrapSource")
            .field("listeners", &statics.map_or(0, |s| s.listeners.len()))
            .field("clusters", &statics.map_or(0, |s| s.clusters.len()))
            .finish_non_exhaustive()
    }
}

/// The overload manager's global downstream connection limit: accepted connections beyond
/// `max_active_downstream_connections` (on every listener that neither bypasses the overload
/// manager nor ignores the global limit) are closed at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalConnectionLimit {
    /// The resource monitor's `name` (its stats are `overload.<name>.*`).
    pub monitor_name: String,
    /// `max_active_downstream_connections` (> 0).
    pub max_active_downstream_connections: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    pub zone: String,
    /// The whole `Node` proto after the `--service-*` overrides, encoded: what the xDS client
    /// sends (metadata included, unchanged).
    pub encoded: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// The TCP address. When [`Admin::pipe`] is set this is unused (empty address, port 0):
    /// use [`Admin::listen_address`] to pick the right one.
    pub address: SocketAddress,
    /// `address.pipe`: a Unix domain socket instead of TCP.
    pub pipe: Option<Pipe>,
    /// `profile_path`, default `/var/log/envoy/envoy.prof` (only `/cpuprofiler` writes there).
    pub profile_path: String,
    /// `ignore_global_conn_limit`: the admin listener does not count against the
    /// `global_downstream_max_connections` overload limit.
    pub ignore_global_conn_limit: bool,
}

impl Admin {
    /// Where the admin listener binds.
    pub fn listen_address(&self) -> AdminAddress<'_> {
        match &self.pipe {
            Some(pipe) => AdminAddress::Pipe(pipe),
            None => AdminAddress::Tcp(&self.address),
        }
    }
}

/// [`Admin::listen_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAddress<'a> {
    Tcp(&'a SocketAddress),
    Pipe(&'a Pipe),
}

/// `config.core.v3.Pipe`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pipe {
    /// A file system path, or `@name` for the Linux abstract namespace (as in Envoy).
    pub path: String,
    /// File mode of the socket (at most 0o777); 0 means "leave as created" (Envoy's default).
    pub mode: u32,
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
    /// `traffic_direction`: `/drain_listeners?inboundonly` drains only `Inbound` listeners.
    pub traffic_direction: TrafficDirection,
    /// `bind_to_port` (default true). A listener that does not bind only receives connections
    /// handed off by a `use_original_dst` listener (Istio's `<VIP>_<port>` listeners).
    pub bind_to_port: bool,
    /// `use_original_dst`: connections are handed to the listener bound (or registered) at
    /// their pre-NAT destination (`SO_ORIGINAL_DST`), if any, as Envoy's `original_dst`
    /// listener filter does.
    pub use_original_dst: bool,
    /// `bypass_overload_manager`: exempt from the overload manager's connection limit.
    pub bypass_overload_manager: bool,
    /// `ignore_global_conn_limit`: exempt from every global connection limit.
    pub ignore_global_conn_limit: bool,
    /// `listener_filters` `envoy.filters.listener.tls_inspector`: the ClientHello is peeked
    /// (SNI, ALPN, TLS or not) before a filter chain is chosen.
    pub tls_inspector: bool,
    /// `listener_filters` `envoy.filters.listener.http_inspector`: a plaintext connection's
    /// first bytes tell HTTP/1.x (`http/1.1`) or HTTP/2 prior knowledge (`h2c`).
    pub http_inspector: bool,
    /// `listener_filters_timeout` (default 15 s; zero: none): how long the inspectors wait
    /// for a client's first bytes.
    pub listener_filters_timeout: Option<std::time::Duration>,
    /// `continue_on_listener_filters_timeout`: when the inspectors time out, a chain is
    /// chosen with what is known instead of closing the connection.
    pub continue_on_listener_filters_timeout: bool,
    /// In order; the first whose match is the most specific wins, as in Envoy.
    pub filter_chains: Vec<FilterChain>,
    /// Used when no chain matches.
    pub default_filter_chain: Option<FilterChain>,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB; 0: no limit). redis_proxy bounds
    /// the replies it holds for one client by it (a slow reader), which Envoy's does not.
    pub per_connection_buffer_limit_bytes: u32,
}

impl Listener {
    /// The first chain's redis_proxy, if it has one (most listeners have a single chain).
    pub fn redis_proxy(&self) -> Option<&RedisProxy> {
        self.filter_chains.iter().find_map(|c| match &c.filter {
            NetworkFilter::RedisProxy(rp) => Some(&**rp),
            _ => None,
        })
    }
}

/// `config.listener.v3.FilterChain`: redvoy keeps only the terminal filter; non-terminal filters
/// it tolerates (Istio's `istio.stats`, `istio.metadata_exchange`) are dropped at load.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterChain {
    /// `name` (Envoy derives one when empty; empty here).
    pub name: String,
    pub filter_chain_match: FilterChainMatch,
    pub filter: NetworkFilter,
    /// `transport_socket` `envoy.transport_sockets.tls`: connections on this chain are TLS.
    pub tls: Option<DownstreamTls>,
}

/// `config.listener.v3.FilterChainMatch`, the parts a plain TCP connection can be matched on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    /// Destination (local, or original-destination) address ranges; empty matches any.
    pub prefix_ranges: Vec<CidrRange>,
    pub source_prefix_ranges: Vec<CidrRange>,
    pub source_ports: Vec<u16>,
    /// `server_names`: exact names or `*.`-wildcards, matched against the TLS SNI (which only
    /// the TLS inspector reads; without it no SNI is known).
    pub server_names: Vec<String>,
    /// `transport_protocol`: `raw_buffer` (what a connection is without an inspector) or
    /// `tls` (set by the TLS inspector); empty matches any.
    pub transport_protocol: String,
    /// `application_protocols`: ALPN values offered in the ClientHello; one must be offered.
    pub application_protocols: Vec<String>,
}

/// `config.core.v3.CidrRange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrRange {
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
}

/// A filter chain's terminal network filter.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkFilter {
    RedisProxy(Box<RedisProxy>),
    TcpProxy(TcpProxy),
    HttpConnectionManager(Box<HttpConnectionManager>),
}

/// `extensions.filters.network.tcp_proxy.v3.TcpProxy` (cluster or first weighted cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// `cluster`, or the first of `weighted_clusters`.
    pub cluster: String,
    /// `weighted_clusters` as `(name, weight)`: each connection picks one at random by weight,
    /// as Envoy does. Empty for a plain `cluster`.
    pub weighted_clusters: Vec<(String, u32)>,
    /// `idle_timeout`: default 1 h; `None` when set to 0 (disabled).
    pub idle_timeout: Option<Duration>,
}

/// The minimal `HttpConnectionManager` redvoy runs: HTTP/1.1, static `route_config`, the
/// router filter. What Istio's 15090 and 15021 listeners use.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// `config.route.v3.VirtualHost`.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    pub name: String,
    /// `*`, exact names, `*.suffix` / `prefix.*` wildcards.
    pub domains: Vec<String>,
    pub routes: Vec<HttpRoute>,
}

/// `config.route.v3.Route` with a path match.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub path_match: PathMatch,
    pub action: HttpRouteAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Path(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpRouteAction {
    /// `route.cluster`, with `prefix_rewrite` and `timeout` (default 15 s; zero disables).
    Cluster {
        cluster: String,
        prefix_rewrite: Option<String>,
        timeout: Duration,
    },
    /// `direct_response`.
    DirectResponse { status: u16, body: Option<String> },
}

/// `config.core.v3.TrafficDirection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficDirection {
    #[default]
    Unspecified,
    Inbound,
    Outbound,
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
    /// `protocol_version: RESP3`: clients must send `HELLO 3` before anything else. The
    /// default (`RESP2`, indistinguishable from unset in proto3) lets each client choose.
    pub require_resp3: bool,
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
    /// `dns_cache_config`: resolves hostnames in MOVED/ASK targets (default port 6379).
    pub dns_cache: Option<DnsCacheConfig>,
}

/// `common.dynamic_forward_proxy.v3.DnsCacheConfig`, the parts redvoy uses.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsCacheConfig {
    pub name: String,
    pub dns_lookup_family: DnsLookupFamily,
    /// `dns_refresh_rate`, default 60 s: how long a resolved name is reused.
    pub dns_refresh_rate: Duration,
    /// `max_hosts`, default 1024.
    pub max_hosts: u32,
    /// `dns_query_timeout`, default 5 s: a lookup taking longer fails the redirection.
    pub dns_query_timeout: Duration,
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
    /// EDS clusters: `eds_cluster_config`.
    pub eds: Option<EdsConfig>,
    /// `cluster_type { name: envoy.clusters.redis }`: its `RedisClusterConfig` (Envoy defaults
    /// applied). Set exactly when `discovery` is [`DiscoveryType::RedisCluster`].
    pub redis_cluster: Option<RedisClusterConfig>,
    /// `circuit_breakers`: the thresholds of both priorities, Envoy's defaults applied.
    pub circuit_breakers: CircuitBreakers,
    /// `common_lb_config.healthy_panic_threshold`.
    pub healthy_panic_threshold: PanicThreshold,
    /// `upstream_connection_options.tcp_keepalive`: TCP keepalive on upstream connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `transport_socket_matches`, in order; the cluster's own `transport_socket`
    /// (`upstream_tls`, or plaintext) is the fallback.
    pub transport_socket_matches: TransportSocketMatches,
    /// `health_checks[0]`: the active health checker (redvoy runs at most one per cluster).
    pub health_check: Option<Box<HealthCheck>>,
    /// `outlier_detection`: consecutive-failure ejection.
    pub outlier_detection: Option<Box<OutlierDetection>>,
    /// `ignore_health_on_host_removal`: with active health checking, a host EDS removes is
    /// dropped at once instead of staying (`/pending_dynamic_removal`) until it fails a check.
    pub ignore_health_on_host_removal: bool,
    /// `transport_socket` `envoy.transport_sockets.tls`: every connection to the cluster's
    /// hosts is TLS (never plaintext).
    pub upstream_tls: Option<Box<UpstreamTls>>,
}

/// `UpstreamTlsContext`, the parts redvoy runs (the rest is refused with its path).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// `sni`: sent as the server name; empty sends none (Envoy's default).
    pub sni: String,
    pub alpn_protocols: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// `common_tls_context.tls_certificates[0]`: the client certificate chain and key (mTLS).
    pub client_certificate: Option<TlsCertificate>,
    /// `tls_certificate_sds_secret_configs[0]`: the client certificate as a named secret.
    pub client_certificate_sds: Option<SdsSecretConfig>,
    /// `validation_context_sds_secret_config` (also inside `combined_validation_context`):
    /// the validation context as a named secret, merged over the inline one.
    pub validation_sds: Option<SdsSecretConfig>,
    /// `validation_context.trusted_ca`: without it the server certificate is not verified,
    /// as in Envoy.
    pub trusted_ca: Option<DataSource>,
    /// `validation_context.match_typed_subject_alt_names`: one must match (when any is set).
    pub san_matchers: Vec<SanMatcher>,
}

/// `DownstreamTlsContext`, the parts redvoy runs (the rest is refused with its path).
#[derive(Debug, Clone, PartialEq)]
pub struct DownstreamTls {
    pub alpn_protocols: Vec<String>,
    /// Envoy's server defaults: TLS 1.2 to 1.3.
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// `common_tls_context.tls_certificates[0]`: the server's certificate chain and key
    /// (exactly one of this and `certificate_sds` is set).
    pub certificate: Option<TlsCertificate>,
    /// `tls_certificate_sds_secret_configs[0]`: the certificate as a named secret.
    pub certificate_sds: Option<SdsSecretConfig>,
    /// The validation context as a named secret (see [`UpstreamTls::validation_sds`]).
    pub validation_sds: Option<SdsSecretConfig>,
    /// `validation_context.trusted_ca`: client certificates are requested and verified
    /// against it.
    pub trusted_ca: Option<DataSource>,
    /// `validation_context.match_typed_subject_alt_names`: a client certificate must match
    /// one (when any is set).
    pub san_matchers: Vec<SanMatcher>,
    /// `require_client_certificate`: a client without a certificate is refused.
    pub require_client_certificate: bool,
}

/// `SdsSecretConfig`: a secret by name, from `static_resources.secrets` (no `sds_config`) or
/// from a secret discovery source.
#[derive(Debug, Clone, PartialEq)]
pub struct SdsSecretConfig {
    pub name: String,
    pub sds_config: Option<ConfigSource>,
}

/// `extensions.transport_sockets.tls.v3.Secret`, the kinds redvoy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub kind: SecretKind,
    /// Where a change re-reads the secret's files: its `watched_directory`, else the
    /// directories of the files it names (Envoy's SDS secrets; a static context does not
    /// reload, as in Envoy).
    pub watched_directories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKind {
    TlsCertificate(TlsCertificate),
    ValidationContext(ValidationContext),
}

/// A `CertificateValidationContext`, the parts redvoy runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationContext {
    pub trusted_ca: Option<DataSource>,
    pub san_matchers: Vec<SanMatcher>,
}

/// TLS protocol versions rustls speaks (Envoy's 1.0 and 1.1 are refused or raised to 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    pub certificate_chain: DataSource,
    pub private_key: DataSource,
}

/// `config.core.v3.DataSource`: a file (read when connections are configured) or inline bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum DataSource {
    Filename(String),
    Inline(Vec<u8>),
}

/// Inline bytes may be a private key: never printed.
impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Filename(path) => f.debug_tuple("Filename").field(path).finish(),
            DataSource::Inline(bytes) => write!(f, "Inline([redacted, {} bytes])", bytes.len()),
        }
    }
}

/// `SubjectAltNameMatcher`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanMatcher {
    pub kind: SanKind,
    pub matcher: NameMatcher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Email,
    Dns,
    Uri,
    IpAddress,
}

/// `type.matcher.v3.StringMatcher` without regular expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMatcher {
    pub pattern: NamePattern,
    pub ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl NameMatcher {
    /// Matching a certificate's DNS SAN as Envoy does: an `exact` pattern compares without case
    /// and a SAN `*.example.com` matches one leftmost label (`dnsNameMatch`).
    pub fn matches_dns_san(&self, san: &str) -> bool {
        let NamePattern::Exact(name) = &self.pattern else {
            return self.matches(san);
        };
        let (name, san) = (name.to_ascii_lowercase(), san.to_ascii_lowercase());
        if name == san {
            return true;
        }
        match (san.strip_prefix('*'), name.find('.')) {
            (Some(rest), Some(dot)) if rest.starts_with('.') => name[dot..] == *rest,
            _ => false,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        let (value, fold) = if self.ignore_case {
            (value.to_ascii_lowercase(), true)
        } else {
            (value.to_owned(), false)
        };
        let p = |s: &String| {
            if fold {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        match &self.pattern {
            NamePattern::Exact(s) => value == p(s),
            NamePattern::Prefix(s) => value.starts_with(&p(s)),
            NamePattern::Suffix(s) => value.ends_with(&p(s)),
            NamePattern::Contains(s) => value.contains(&p(s)),
        }
    }
}

/// `envoy.config.cluster.v3.OutlierDetection`, Envoy's defaults applied. Success-rate and
/// failure-percentage ejection are not implemented (their fields are refused when set).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// Default 5.
    pub consecutive_5xx: u32,
    /// Default 5.
    pub consecutive_gateway_failure: u32,
    /// Default 5; counted only with `split_external_local_origin_errors`.
    pub consecutive_local_origin_failure: u32,
    /// Percent; default 100.
    pub enforcing_consecutive_5xx: u32,
    /// Percent; default 0 (detected, not enforced).
    pub enforcing_consecutive_gateway_failure: u32,
    /// Percent; default 100.
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Default 10 s: how often ejected hosts are considered for return.
    pub interval: Duration,
    /// Default 30 s, multiplied by the number of times the host was ejected.
    pub base_ejection_time: Duration,
    /// Default 300 s (or `base_ejection_time` when larger).
    pub max_ejection_time: Duration,
    /// Default 0.
    pub max_ejection_time_jitter: Duration,
    /// Percent of the cluster's hosts that may be ejected at once; default 10.
    pub max_ejection_percent: u32,
    pub split_external_local_origin_errors: bool,
    pub always_eject_one_host: bool,
    /// Default true: a passing active health check returns an ejected host.
    pub successful_active_health_check_uneject_host: bool,
}

/// `envoy.config.core.v3.HealthCheck`, Envoy's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Required.
    pub timeout: Duration,
    /// Required.
    pub interval: Duration,
    pub initial_jitter: Duration,
    pub interval_jitter: Duration,
    pub interval_jitter_percent: u32,
    /// Required.
    pub unhealthy_threshold: u32,
    /// Required.
    pub healthy_threshold: u32,
    /// Default true: keep the checking connection between checks.
    pub reuse_connection: bool,
    /// Default 60 s: the interval while the cluster has had no traffic.
    pub no_traffic_interval: Duration,
    /// Default `no_traffic_interval`.
    pub no_traffic_healthy_interval: Duration,
    /// Default `interval`.
    pub unhealthy_interval: Duration,
    /// Default `unhealthy_interval`.
    pub unhealthy_edge_interval: Duration,
    /// Default `interval`.
    pub healthy_edge_interval: Duration,
    /// `event_log_path` (deprecated in Envoy, still honoured): health check events as JSON
    /// lines.
    pub event_log_path: Option<String>,
    pub always_log_health_check_failures: bool,
    pub always_log_health_check_success: bool,
    pub checker: HealthChecker,
}

/// What a health check sends.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthChecker {
    /// `custom_health_check { name: envoy.health_checkers.redis }`: PING, or `EXISTS key`
    /// when `key` is set (the host fails while the key exists).
    Redis { key: Option<Bytes> },
}

/// `circuit_breakers.thresholds`: per priority, the first entry of that priority (as Envoy
/// picks it), Envoy's defaults for a priority without one.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CircuitBreakers {
    /// DEFAULT: the priority of every request redis_proxy, tcp_proxy and the minimal HTTP
    /// router make (enforced by the last two, as Envoy does).
    pub default: Thresholds,
    /// HIGH: reported only (high-priority HTTP routes, which redvoy never has).
    pub high: Thresholds,
    /// Beyond Envoy: the DEFAULT limits the config sets explicitly, enforced on redis_proxy's
    /// upstream traffic (Envoy's redis_proxy enforces none; a limit left unset stays
    /// unenforced, so no config starts failing at Envoy's default 1,024).
    pub redis_enforced: RedisLimits,
}

/// Circuit-breaker limits redvoy enforces on redis_proxy traffic (each only when configured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisLimits {
    /// Upstream connections per host of the cluster (every worker's pooled connection and
    /// every transaction's own connection).
    pub max_connections: Option<u32>,
    /// Requests waiting for an upstream connection to open, over the cluster.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the cluster.
    pub max_requests: Option<u32>,
}

impl RedisLimits {
    pub fn any(&self) -> bool {
        self.max_connections.is_some()
            || self.max_pending_requests.is_some()
            || self.max_requests.is_some()
    }
}

/// `CircuitBreakers.Thresholds` of one priority, Envoy's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `max_connections`; default 1024.
    pub max_connections: u32,
    /// `max_pending_requests`; default 1024.
    pub max_pending_requests: u32,
    /// `max_requests`; default 1024.
    pub max_requests: u32,
    /// `max_retries`; default 3.
    pub max_retries: u32,
    /// `max_connection_pools`; unset (the default) is unlimited, which Envoy keeps as
    /// `u64::MAX` (and reports so in `remaining_cx_pools`).
    pub max_connection_pools: Option<u32>,
    /// `retry_budget`: when set, it replaces `max_retries` as the limit on retries.
    pub retry_budget: Option<RetryBudget>,
    /// `track_remaining`: publish the `circuit_breakers.<priority>.remaining_*` gauges.
    pub track_remaining: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            max_connection_pools: None,
            retry_budget: None,
            track_remaining: false,
        }
    }
}

/// `Thresholds.retry_budget`, Envoy's defaults applied: retries may be `budget_percent` of the
/// active and pending requests, never fewer than `min_retry_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// `budget_percent`; default 20.
    pub budget_percent: f64,
    /// `min_retry_concurrency`; default 3.
    pub min_retry_concurrency: u32,
}

/// `healthy_panic_threshold` in percent: below this share of healthy (or degraded) hosts, the
/// load balancer uses every host. 0 disables panic mode; default 50.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanicThreshold(pub f64);

impl Default for PanicThreshold {
    fn default() -> Self {
        Self(50.0)
    }
}

impl PanicThreshold {
    /// Envoy's `isHostSetInPanic`: (healthy + degraded) / (hosts - excluded) below the
    /// threshold, which Envoy rounds to a whole percent first. An empty host set is in panic
    /// whenever the threshold is above 0.
    pub fn in_panic(self, usable: usize, total: usize) -> bool {
        let percent = if total == 0 {
            0.0
        } else {
            100.0 * usable as f64 / total as f64
        };
        percent < self.0.round().min(100.0)
    }
}

/// `config.core.v3.TcpKeepalive`; unset values take the system's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// One `transport_socket_matches` entry: the endpoints whose
/// `metadata.filter_metadata["envoy.transport_socket_match"]` (or their locality's) holds
/// every label of `labels` use its socket.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportSocketMatch {
    pub name: String,
    /// Label → value in a canonical text form (see [`Endpoint::transport_socket_labels`]).
    pub labels: BTreeMap<String, String>,
    pub socket: MatchSocket,
}

/// What a `transport_socket_matches` entry connects with.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchSocket {
    /// `raw_buffer` (or no socket).
    Plaintext,
    /// `envoy.transport_sockets.tls` (Istio's `tlsMode-istio`).
    Tls(Box<UpstreamTls>),
    /// A socket redvoy does not run: an endpoint that selects it is never connected to
    /// (never in plaintext instead).
    Unsupported,
}

/// A cluster's `transport_socket_matches`, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransportSocketMatches(pub Vec<TransportSocketMatch>);

impl TransportSocketMatches {
    /// The index of the entry an endpoint with these labels selects (`None`: the cluster's
    /// own `transport_socket`): Envoy's `TransportSocketMatcherImpl::resolve`, the first
    /// entry whose labels the endpoint's labels contain, else the first whose labels its
    /// locality's contain (two passes, in that order).
    pub fn resolve(
        &self,
        endpoint: &BTreeMap<String, String>,
        locality: &BTreeMap<String, String>,
    ) -> Option<usize> {
        let contains = |have: &BTreeMap<String, String>, want: &BTreeMap<String, String>| {
            want.iter().all(|(k, v)| have.get(k) == Some(v))
        };
        self.0
            .iter()
            .position(|m| contains(endpoint, &m.labels))
            .or_else(|| self.0.iter().position(|m| contains(locality, &m.labels)))
    }

    /// [`Self::resolve`] for an endpoint.
    pub fn resolve_endpoint(&self, e: &Endpoint) -> Option<usize> {
        self.resolve(
            &e.transport_socket_labels,
            &e.locality_transport_socket_labels,
        )
    }

    /// The entry an endpoint with these labels selects, when its socket is one redvoy does
    /// not run. `None` when the endpoint can be connected to.
    pub fn unsupported_for(
        &self,
        endpoint: &BTreeMap<String, String>,
        locality: &BTreeMap<String, String>,
    ) -> Option<&TransportSocketMatch> {
        self.resolve(endpoint, locality)
            .and_then(|i| self.0.get(i))
            .filter(|m| m.socket == MatchSocket::Unsupported)
    }

    /// [`Self::unsupported_for`] an endpoint.
    pub fn unsupported_for_endpoint(&self, e: &Endpoint) -> Option<&TransportSocketMatch> {
        self.unsupported_for(
            &e.transport_socket_labels,
            &e.locality_transport_socket_labels,
        )
    }
}

/// `extensions.clusters.redis.v3.RedisClusterConfig`, Envoy's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisClusterConfig {
    /// Period of the `CLUSTER SLOTS` poll; default 5 s.
    pub cluster_refresh_rate: Duration,
    /// Op timeout of the discovery connection; default 3 s.
    pub cluster_refresh_timeout: Duration,
    /// Minimum time between two triggered refreshes; default 5 s.
    pub redirect_refresh_interval: Duration,
    /// MOVED/ASK count that triggers a refresh; default 5; 0 disables.
    pub redirect_refresh_threshold: u32,
    /// Upstream failures that trigger a refresh; default 0 (disabled).
    pub failure_refresh_threshold: u32,
    /// Host-degraded events that trigger a refresh; default 0 (disabled).
    pub host_degraded_refresh_threshold: u32,
    pub enable_zone_discovery: bool,
}

impl Default for RedisClusterConfig {
    fn default() -> Self {
        Self {
            cluster_refresh_rate: Duration::from_secs(5),
            cluster_refresh_timeout: Duration::from_secs(3),
            redirect_refresh_interval: Duration::from_secs(5),
            redirect_refresh_threshold: 5,
            failure_refresh_threshold: 0,
            host_degraded_refresh_threshold: 0,
            enable_zone_discovery: false,
        }
    }
}

/// `Cluster.EdsClusterConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdsConfig {
    /// The EDS resource name: `service_name`, or the cluster's name when unset.
    pub service_name: String,
    pub eds_config: ConfigSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
    LogicalDns,
    /// Hosts from `ClusterLoadAssignment`s over xDS; the cluster warms until the first one.
    Eds,
    /// `ORIGINAL_DST` with `CLUSTER_PROVIDED`: the upstream is the connection's original
    /// destination (only meaningful to tcp_proxy).
    OriginalDst,
    /// `envoy.clusters.redis`: endpoints are discovery seeds; hosts and the slot map come from
    /// `CLUSTER SLOTS`. The cluster warms until the first topology (or a seed DNS failure).
    RedisCluster,
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
    /// `CLUSTER_PROVIDED` (or the `cluster_provided` typed policy): the cluster type chooses
    /// (Redis Cluster: slot map and read policy).
    ClusterProvided,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Unused (empty address, port 0) when [`Endpoint::pipe`] is set.
    pub address: SocketAddress,
    /// `endpoint.address.pipe`: a Unix socket (Istio's `xds-grpc` and `sds-grpc` clusters).
    pub pipe: Option<Pipe>,
    /// `load_balancing_weight`, default 1.
    pub weight: u32,
    /// `endpoint.hostname` (used for hashing when `use_hostname_for_hashing`).
    pub hostname: String,
    /// `health_status` (EDS); `Unknown` counts as healthy, as in Envoy without health checks.
    pub health_status: HealthStatus,
    /// The endpoint's `LocalityLbEndpoints.locality`.
    pub locality: Locality,
    /// `LocalityLbEndpoints.priority`.
    pub priority: u32,
    /// `metadata.filter_metadata["envoy.transport_socket_match"]`: label → value, the value in
    /// a canonical text form (a string as itself, other values by their JSON text).
    pub transport_socket_labels: BTreeMap<String, String>,
    /// The same labels of the endpoint's `LocalityLbEndpoints.metadata`.
    pub locality_transport_socket_labels: BTreeMap<String, String>,
}

/// `config.core.v3.HealthStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthStatus {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

impl HealthStatus {
    /// Whether Envoy routes to a host with this EDS status (no active health checking):
    /// `UNHEALTHY`, `DRAINING` and `TIMEOUT` hosts are excluded, `DEGRADED` only when nothing
    /// healthy is left.
    pub fn is_healthy(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy)
    }
}

/// `config.core.v3.Locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// `config.endpoint.v3.ClusterLoadAssignment`, flattened: every locality and priority's
/// endpoints in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterLoadAssignment {
    pub cluster_name: String,
    pub endpoints: Vec<Endpoint>,
}

/// `bootstrap.v3.Bootstrap.DynamicResources`.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicResources {
    pub lds_config: Option<ConfigSource>,
    pub cds_config: Option<ConfigSource>,
    /// The stream every `ads: {}` source shares.
    pub ads_config: Option<ApiConfigSource>,
}

/// `config.core.v3.ConfigSource`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSource {
    pub kind: ConfigSourceKind,
    /// `initial_fetch_timeout`, default 15 s; zero waits forever.
    pub initial_fetch_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSourceKind {
    /// `ads: {}`: the bootstrap's `ads_config` stream.
    Ads,
    /// `api_config_source`: a stream of its own.
    Api(ApiConfigSource),
    /// `path_config_source` (or the deprecated `path`): a file holding a `DiscoveryResponse`,
    /// re-read when it is replaced (Envoy watches for a move onto the path).
    Path {
        path: std::path::PathBuf,
        /// `watched_directory.path`: re-read when anything in it is moved.
        watched_directory: Option<std::path::PathBuf>,
    },
}

/// `config.core.v3.ApiConfigSource` (gRPC only).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfigSource {
    pub api_type: ApiType,
    /// The first of `grpc_services` (Envoy uses only the first).
    pub grpc_service: GrpcService,
    pub set_node_on_first_message_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiType {
    /// `GRPC`: State of the World.
    Grpc,
    /// `DELTA_GRPC`: incremental.
    DeltaGrpc,
}

/// `config.core.v3.GrpcService`.
#[derive(Debug, Clone, PartialEq)]
pub enum GrpcService {
    /// `envoy_grpc.cluster_name`: a static cluster of the bootstrap.
    EnvoyGrpc { cluster_name: String },
    /// `google_grpc.target_uri`: `host:port`, `dns:///host:port`, `ipv4:addr:port` or
    /// `unix:path` / `unix:///path`.
    GoogleGrpc { target_uri: String },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisProtocolOptions {
    /// `None` when unset or empty (Envoy sends no AUTH for an empty password).
    pub auth_username: Option<Bytes>,
    pub auth_password: Option<Bytes>,
}

// The stats crate owns the `stats_config` types, since it is what compiles them; the model
// re-exports them so that the proto converts straight into what the store takes.
pub use redvoy_stats::{
    HistogramBucketSettings, StatsConfig, StatsMatcher, StringMatchKind, StringMatcher,
    TagSpecifier,
};

/// `bootstrap.v3.LayeredRuntime`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Runtime {
    /// Lowest precedence first; names are unique and at most one layer is `Admin`.
    pub layers: Vec<RuntimeLayer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeLayer {
    pub name: String,
    pub kind: RuntimeLayerKind,
}

/// `disk_layer` and `rtds_layer` are refused at load.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeLayerKind {
    /// `static_layer`, nested objects flattened to dotted keys as Envoy does (`{a: {b: 1}}` is
    /// key `a.b`); an object with `numerator`/`denominator` is one FractionalPercent value.
    Static(BTreeMap<String, RuntimeValue>),
    /// `admin_layer`: starts empty, written by `/runtime_modify`.
    Admin,
}

/// One static runtime value, as Envoy keeps it.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeValue {
    String(String),
    Number(f64),
    Bool(bool),
    /// `{numerator: N, denominator: HUNDRED|TEN_THOUSAND|MILLION}`; denominator 100, 10_000 or
    /// 1_000_000.
    FractionalPercent {
        numerator: u32,
        denominator: u32,
    },
}

impl RuntimeValue {
    /// Envoy's raw string for the value: what `/runtime` shows and what the integer and
    /// double lookups parse. Numbers print as `absl::StrCat(double)` does (six significant
    /// digits: `1234567` is `1.23457e+06`); booleans as `true`/`false`. A FractionalPercent
    /// prints as the Struct's text format (Envoy prefixes a randomized debug marker, omitted).
    pub fn raw_string(&self) -> String {
        match self {
            RuntimeValue::String(s) => s.clone(),
            RuntimeValue::Number(n) => crate::numfmt::six_digits(*n),
            RuntimeValue::Bool(b) => b.to_string(),
            RuntimeValue::FractionalPercent {
                numerator,
                denominator,
            } => {
                let name = match denominator {
                    10_000 => "TEN_THOUSAND",
                    1_000_000 => "MILLION",
                    _ => "HUNDRED",
                };
                format!(
                    "fields {{\n  key: \"denominator\"\n  value {{\n    string_value: \"{name}\"\n  }}\n}}\n\
                     fields {{\n  key: \"numerator\"\n  value {{\n    number_value: {numerator}\n  }}\n}}\n"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Envoy looks at the endpoint's labels with every entry before the locality's: an
    /// endpoint labelled for TLS gets TLS even when an earlier plaintext entry matches its
    /// locality.
    #[test]
    fn transport_socket_match_tries_endpoint_labels_first() {
        let matches = TransportSocketMatches(vec![
            TransportSocketMatch {
                name: "zone-plain".into(),
                labels: labels(&[("zone", "a")]),
                socket: MatchSocket::Plaintext,
            },
            TransportSocketMatch {
                name: "istio-tls".into(),
                labels: labels(&[("tlsMode", "istio")]),
                socket: MatchSocket::Unsupported,
            },
        ]);
        let endpoint = labels(&[("tlsMode", "istio")]);
        let locality = labels(&[("zone", "a")]);
        assert_eq!(
            matches
                .unsupported_for(&endpoint, &locality)
                .map(|m| m.name.as_str()),
            Some("istio-tls")
        );
        // Only the locality matches: its plaintext entry.
        assert!(matches.unsupported_for(&labels(&[]), &locality).is_none());
        // Nothing matches: the cluster's plaintext fallback.
        assert!(matches
            .unsupported_for(&labels(&[]), &labels(&[]))
            .is_none());
    }
}
