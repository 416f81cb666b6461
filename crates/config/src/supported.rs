//! What redvoy implements, as an allowlist over the merged `DynamicMessage`.
//!
//! Every field that is *set* must be listed for its message type, else the config is refused
//! with the field's path (`static_resources.clusters[1].outlier_detection: not supported by
//! redvoy`).
//! Listing per field rather than per path is deliberate: a new Envoy field is refused until
//! someone decides it is implemented or harmless, so redvoy never silently behaves unlike Envoy.
//!
//! The same walk resolves `typed_config`s: it looks the extension up by type URL, unwraps
//! `xds.type.v3.TypedStruct` / `udpa.type.v1.TypedStruct` (and `google.protobuf.Struct` where
//! Envoy accepts it), walks the inner message with the same rules, and puts it back as a plain
//! `Any` of the native type, so the conversion that follows only sees native types.

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

use crate::error::FieldPath;
use crate::parse::type_name_of;
use crate::ConfigError;

pub(crate) const REDIS_PROXY: &str = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy";
pub(crate) const REDIS_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions";
/// Names under which Envoy registers the redis_proxy filter factory (the second is deprecated
/// but still registered); `typed_extension_protocol_options` is keyed by them.
pub(crate) const REDIS_PROXY_NAMES: &[&str] =
    &["envoy.filters.network.redis_proxy", "envoy.redis_proxy"];
pub(crate) const REDIS_CLUSTER_TYPE: &str = "envoy.clusters.redis";
pub(crate) const REDIS_CLUSTER_CONFIG: &str =
    "envoy.extensions.clusters.redis.v3.RedisClusterConfig";
/// The Redis health checker's config (`custom_health_check.typed_config`): the one health
/// checker redvoy runs. Envoy finds it by this type, whatever `name` the entry gives.
pub(crate) const REDIS_HEALTH_CHECKER: &str = "envoy.extensions.health_checkers.redis.v3.Redis";
/// Why any health checker but Redis's is refused.
pub(crate) const REDIS_CHECKER_ONLY: &str = "redvoy runs the Redis health checker only \
     (custom_health_check envoy.health_checkers.redis, \
     type.googleapis.com/envoy.extensions.health_checkers.redis.v3.Redis)";
const HEALTH_CHECK: &str = "envoy.config.core.v3.HealthCheck";
pub(crate) const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub(crate) const HTTP_CONNECTION_MANAGER: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub(crate) const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const TRANSPORT_SOCKET: &str = "envoy.config.core.v3.TransportSocket";
/// The plaintext transport socket: the only one redvoy runs until it has TLS.
pub(crate) const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
pub(crate) const UPSTREAM_TLS: &str =
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
pub(crate) const DOWNSTREAM_TLS: &str =
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub(crate) const TLS_INSPECTOR: &str =
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
pub(crate) const HTTP_INSPECTOR: &str =
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
pub(crate) const ORIGINAL_DST_FILTER: &str =
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
/// The overload manager's global downstream connection limit: the one resource monitor
/// redvoy runs.
pub(crate) const DOWNSTREAM_CONNECTIONS_CONFIG: &str =
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";
/// The terminal network filters redvoy implements.
pub(crate) const TERMINAL_FILTERS: &[&str] = &[REDIS_PROXY, TCP_PROXY, HTTP_CONNECTION_MANAGER];
/// `typed_extension_protocol_options` key (and type) of the HTTP upstream options Istio puts
/// on its gRPC clusters (`xds-grpc`, `sds-grpc`) to ask for HTTP/2.
pub(crate) const HTTP_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Istio-only extension types (not in Envoy's build, so not in our descriptor set) that are
/// accepted and dropped: `istio.stats` (telemetry), `istio.metadata_exchange` (peer metadata
/// for telemetry), Istio's HTTP `alpn` and `peer_metadata` filters. None of them changes where
/// or how bytes are proxied.
const ISTIO_TOLERATED_TYPES: &[&str] = &[
    "stats.PluginConfig",
    "envoy.tcp.metadataexchange.config.MetadataExchange",
    "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    "io.istio.http.peer_metadata.Config",
];
/// Envoy HTTP filters dropped from the minimal connection manager: the compressor Istio adds to
/// the 15090 metrics listener only compresses responses for clients that accept it; an
/// uncompressed answer is equally valid HTTP.
const TOLERATED_HTTP_FILTERS: &[&str] = &["envoy.extensions.filters.http.compressor.v3.Compressor"];
/// Bootstrap extensions accepted without effect: the internal listener registry only serves
/// `envoy_internal_address` listeners and clusters, which redvoy refuses anyway.
const TOLERATED_BOOTSTRAP_EXTENSIONS: &[&str] =
    &["envoy.extensions.bootstrap.internal_listener.v3.InternalListener"];

const TYPED_STRUCT_XDS: &str = "xds.type.v3.TypedStruct";
const TYPED_STRUCT_UDPA: &str = "udpa.type.v1.TypedStruct";
const STRUCT: &str = "google.protobuf.Struct";
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// What to do with a set field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Implemented: accepted, and a message value is walked with the same rules.
    Walk,
    /// Accepted and not interpreted, because it cannot change what redvoy does (each use says
    /// why). The value is not walked.
    Ignore,
    /// `Filter.typed_config`: a network filter, looked up by type URL.
    NetworkFilter,
    /// `Cluster.typed_extension_protocol_options`: keyed by filter name.
    ProtocolOptions,
    /// `Cluster.cluster_type`: a cluster extension.
    ClusterType,
    /// `HttpFilter.typed_config`: the router (walked) or a tolerated filter (kept as is; the
    /// conversion drops it).
    HttpFilter,
    /// `Cluster.filters[].typed_config`: upstream network filters; only tolerated Istio ones.
    UpstreamFilter,
    /// `Bootstrap.bootstrap_extensions[].typed_config`: only tolerated ones.
    BootstrapExtension,
    /// `TransportSocket.typed_config`: plaintext (`raw_buffer`) and Envoy's TLS
    /// (`UpstreamTlsContext`, `DownstreamTlsContext`; the conversion checks which side). Anything
    /// else (ALTS, a tap, Istio's) is refused: connecting in plaintext where the config asks for
    /// encryption would be a silent security downgrade.
    TransportSocket,
    /// `ResourceMonitor.typed_config`: the global downstream connection limit only.
    ResourceMonitor,
    /// `HealthCheck.CustomHealthCheck.typed_config`: the Redis health checker only, looked up
    /// by type URL as Envoy does (the entry's `name` is free text).
    HealthChecker,
    /// `ListenerFilter.typed_config`: the TLS and HTTP inspectors and `original_dst`.
    ListenerFilter,
    /// `TransportSocketMatch.transport_socket`: walked when plaintext or TLS; any other
    /// socket is kept as is (its endpoints are left out by the cluster, see
    /// `model::MatchSocket`).
    MatchSocket,
    /// Accepted without walking its contents: the conversion reads what it needs (each use
    /// says what) and acts on it.
    Opaque,
}

use Rule::{
    BootstrapExtension, ClusterType, HealthChecker, HttpFilter, Ignore, ListenerFilter,
    MatchSocket, NetworkFilter, Opaque, ProtocolOptions, ResourceMonitor, TransportSocket,
    UpstreamFilter, Walk,
};

/// The allowlist: message full name → (field name, rule). Messages not listed accept no set
/// fields at all.
const ALLOWED: &[(&str, &[(&str, Rule)])] = &[
    (
        "envoy.config.bootstrap.v3.Bootstrap",
        &[
            ("node", Walk),
            ("static_resources", Walk),
            ("admin", Walk),
            // Static and admin layers only (disk and RTDS layers are refused below).
            ("layered_runtime", Walk),
            ("stats_config", Walk),
            // `stats_flush_on_admin` (the other member of its oneof) is refused.
            ("stats_flush_interval", Walk),
            ("dynamic_resources", Walk),
            ("cluster_manager", Walk),
            ("bootstrap_extensions", Walk),
            // Only the format of redvoy's own log lines (Istio renders a text or JSON format).
            ("application_log_config", Ignore),
            // Only `envoy.resource_monitors.global_downstream_max_connections` (enforced).
            ("overload_manager", Walk),
            // When stats appear, not what they count: redvoy creates a component's stats when
            // the component is built (see the README).
            ("deferred_stat_options", Ignore),
        ],
    ),
    (
        "envoy.config.overload.v3.OverloadManager",
        &[
            // How often reactive monitors (memory, CPU) are polled; the connection limit is
            // proactive (checked at every accept), and reactive monitors are refused.
            ("refresh_interval", Ignore),
            ("resource_monitors", Walk),
            // `actions`, `loadshed_points` and `buffer_factory_config` are refused by not
            // listing them.
        ],
    ),
    (
        "envoy.config.overload.v3.ResourceMonitor",
        &[("name", Walk), ("typed_config", ResourceMonitor)],
    ),
    (DOWNSTREAM_CONNECTIONS_CONFIG, &[("max_active_downstream_connections", Walk)]),
    (
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        &[("listeners", Walk), ("clusters", Walk), ("secrets", Walk)],
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        &[("lds_config", Walk), ("cds_config", Walk), ("ads_config", Walk)],
    ),
    (
        "envoy.config.bootstrap.v3.ClusterManager",
        &[
            // The outlier-detection event log: where ejections are written (logging only).
            ("outlier_detection", Ignore),
            // Deferred creation only delays building per-worker cluster state; the clusters and
            // their behaviour are the same.
            ("enable_deferred_cluster_creation", Ignore),
        ],
    ),
    (
        "envoy.config.core.v3.TypedExtensionConfig",
        &[("name", Walk), ("typed_config", BootstrapExtension)],
    ),
    (
        "envoy.config.core.v3.ConfigSource",
        &[
            ("ads", Walk),
            ("api_config_source", Walk),
            ("path_config_source", Walk),
            ("path", Walk),
            ("initial_fetch_timeout", Walk),
            ("resource_api_version", Walk),
        ],
    ),
    ("envoy.config.core.v3.AggregatedConfigSource", &[]),
    ("envoy.config.core.v3.PathConfigSource", &[("path", Walk), ("watched_directory", Walk)]),
    ("envoy.config.core.v3.WatchedDirectory", &[("path", Walk)]),
    (
        "envoy.config.core.v3.ApiConfigSource",
        &[
            ("api_type", Walk),
            ("transport_api_version", Walk),
            ("grpc_services", Walk),
            ("set_node_on_first_message_only", Walk),
            // `rate_limit_settings` (a token bucket on discovery requests) is refused by not
            // listing it: redvoy does not pace its requests.
            // REST polling interval and request timeout: only used by REST subscriptions, and
            // only gRPC ones are accepted.
            ("refresh_delay", Ignore),
            ("request_timeout", Ignore),
        ],
    ),
    (
        "envoy.config.core.v3.GrpcService",
        &[
            ("envoy_grpc", Walk),
            ("google_grpc", Walk),
            // A deadline for unary calls; xDS uses one long-lived stream, which has none.
            ("timeout", Ignore),
        ],
    ),
    (
        "envoy.config.core.v3.GrpcService.EnvoyGrpc",
        // `authority` (the :authority sent) and `retry_policy` are refused by not listing them.
        &[("cluster_name", Walk)],
    ),
    (
        "envoy.config.core.v3.GrpcService.GoogleGrpc",
        &[
            ("target_uri", Walk),
            // Prefix of the gRPC client's own stats, which redvoy does not keep.
            ("stat_prefix", Ignore),
        ],
    ),
    ("envoy.config.bootstrap.v3.LayeredRuntime", &[("layers", Walk)]),
    (
        "envoy.config.bootstrap.v3.RuntimeLayer",
        &[("name", Walk), ("static_layer", Walk), ("admin_layer", Walk)],
    ),
    (
        "envoy.config.metrics.v3.StatsConfig",
        &[
            ("stats_tags", Walk),
            ("use_all_default_tags", Walk),
            ("stats_matcher", Walk),
            ("histogram_bucket_settings", Walk),
        ],
    ),
    (
        "envoy.config.metrics.v3.TagSpecifier",
        &[("tag_name", Walk), ("regex", Walk), ("fixed_value", Walk)],
    ),
    (
        "envoy.config.metrics.v3.StatsMatcher",
        &[("reject_all", Walk), ("exclusion_list", Walk), ("inclusion_list", Walk)],
    ),
    (
        "envoy.config.metrics.v3.HistogramBucketSettings",
        &[("match", Walk), ("buckets", Walk), ("bins", Walk)],
    ),
    ("envoy.type.matcher.v3.ListStringMatcher", &[("patterns", Walk)]),
    (
        "envoy.type.matcher.v3.StringMatcher",
        // `custom` (an extension matcher) is refused.
        &[
            ("exact", Walk),
            ("prefix", Walk),
            ("suffix", Walk),
            ("safe_regex", Walk),
            ("contains", Walk),
            ("ignore_case", Walk),
        ],
    ),
    (
        "envoy.type.matcher.v3.RegexMatcher",
        // `google_re2` is deprecated and only tunes RE2's program-size limits.
        &[("regex", Walk), ("google_re2", Ignore)],
    ),
    (
        "envoy.config.bootstrap.v3.Admin",
        &[
            ("address", Walk),
            // Admin access logs record admin HTTP requests only; not writing them changes no
            // proxy behaviour (the article and Envoy's examples set `/dev/null`).
            ("access_log_path", Ignore),
            ("access_log", Ignore),
            ("profile_path", Walk),
            ("ignore_global_conn_limit", Walk),
        ],
    ),
    (
        "envoy.config.core.v3.Node",
        &[
            ("id", Walk),
            ("cluster", Walk),
            ("locality", Walk),
            // Node metadata and user agent are only reported to management servers.
            ("metadata", Ignore),
            ("user_agent_name", Ignore),
            ("user_agent_version", Ignore),
        ],
    ),
    (
        "envoy.config.core.v3.Locality",
        // Zone-aware routing is refused; these identify the node and label endpoints.
        &[("zone", Walk), ("region", Walk), ("sub_zone", Walk)],
    ),
    // `pipe` is only implemented for the admin address; listeners and clusters refuse it at
    // conversion, with the path.
    ("envoy.config.core.v3.Address", &[("socket_address", Walk), ("pipe", Walk)]),
    ("envoy.config.core.v3.Pipe", &[("path", Walk), ("mode", Walk)]),
    (
        "envoy.config.core.v3.SocketAddress",
        // `protocol` is TCP unless set; UDP is refused by not listing it.
        &[("address", Walk), ("port_value", Walk)],
    ),
    (
        "envoy.config.listener.v3.Listener",
        &[
            ("name", Walk),
            ("address", Walk),
            ("filter_chains", Walk),
            // Selects the listeners `/drain_listeners?inboundonly` drains.
            ("traffic_direction", Walk),
            // Listener metadata is read by other extensions, never by redis_proxy.
            ("metadata", Ignore),
            ("bind_to_port", Walk),
            ("use_original_dst", Walk),
            ("default_filter_chain", Walk),
            // The TLS and HTTP inspectors and `original_dst` (others are refused).
            ("listener_filters", Walk),
            // How long the inspectors wait for a client's first bytes, and whether a chain is
            // chosen without them when it runs out.
            ("listener_filters_timeout", Walk),
            ("continue_on_listener_filters_timeout", Walk),
            // Exemptions from the global downstream connection limit (enforced).
            ("ignore_global_conn_limit", Walk),
            ("bypass_overload_manager", Walk),
            // redis_proxy's byte budget per client (slow readers); tcp_proxy's own bound is
            // smaller.
            ("per_connection_buffer_limit_bytes", Walk),
        ],
    ),
    (
        "envoy.config.listener.v3.FilterChain",
        &[
            ("filters", Walk),
            ("name", Walk),
            ("filter_chain_match", Walk),
            // Plaintext or `DownstreamTlsContext` (see `TransportSocket`).
            ("transport_socket", Walk),
            // Read by other extensions, never by redis_proxy.
            ("metadata", Ignore),
        ],
    ),
    (
        "envoy.config.listener.v3.FilterChainMatch",
        &[
            ("destination_port", Walk),
            ("prefix_ranges", Walk),
            ("source_prefix_ranges", Walk),
            ("source_ports", Walk),
            ("server_names", Walk),
            ("transport_protocol", Walk),
            ("application_protocols", Walk),
        ],
    ),
    ("envoy.config.core.v3.CidrRange", &[("address_prefix", Walk), ("prefix_len", Walk)]),
    (
        TCP_PROXY,
        &[
            ("stat_prefix", Walk),
            ("cluster", Walk),
            ("weighted_clusters", Walk),
            ("idle_timeout", Walk),
            // Access logs record connections; they never change what is proxied.
            ("access_log", Ignore),
            ("access_log_options", Ignore),
        ],
    ),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", &[("clusters", Walk)]),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
        // Each connection picks a cluster at random by weight, as in Envoy.
        &[("name", Walk), ("weight", Walk)],
    ),
    (
        HTTP_CONNECTION_MANAGER,
        &[
            ("stat_prefix", Walk),
            ("codec_type", Walk),
            ("route_config", Walk),
            ("http_filters", Walk),
            // Access logs record requests; they never change what is proxied.
            ("access_log", Ignore),
        ],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        &[
            ("name", Walk),
            ("typed_config", HttpFilter),
            // Only lets Envoy skip a filter type it has no factory for; redvoy refuses those
            // whether optional or not, and knows every type it accepts.
            ("is_optional", Ignore),
        ],
    ),
    ("envoy.config.route.v3.RouteConfiguration", &[("name", Walk), ("virtual_hosts", Walk)]),
    (
        "envoy.config.route.v3.VirtualHost",
        &[("name", Walk), ("domains", Walk), ("routes", Walk)],
    ),
    (
        "envoy.config.route.v3.Route",
        &[
            ("match", Walk),
            ("route", Walk),
            ("direct_response", Walk),
            // A route's name only labels it in stats and dumps.
            ("name", Ignore),
        ],
    ),
    ("envoy.config.route.v3.RouteMatch", &[("prefix", Walk), ("path", Walk)]),
    (
        "envoy.config.route.v3.RouteAction",
        &[("cluster", Walk), ("prefix_rewrite", Walk), ("timeout", Walk)],
    ),
    ("envoy.config.route.v3.DirectResponseAction", &[("status", Walk), ("body", Walk)]),
    (
        "envoy.config.listener.v3.Filter",
        // The name is free text in v3 when typed_config is set: lookup is by type URL.
        &[("name", Walk), ("typed_config", NetworkFilter)],
    ),
    (
        REDIS_PROXY,
        &[
            ("stat_prefix", Walk),
            ("settings", Walk),
            ("latency_in_micros", Walk),
            ("prefix_routes", Walk),
            ("downstream_auth_password", Walk),
            ("downstream_auth_passwords", Walk),
            ("downstream_auth_username", Walk),
            ("faults", Walk),
            ("custom_commands", Walk),
            ("protocol_version", Walk),
        ],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.ConnPoolSettings",
        &[
            ("op_timeout", Walk),
            ("enable_hashtagging", Walk),
            ("enable_redirection", Walk),
            ("max_buffer_size_before_flush", Walk),
            ("buffer_flush_timeout", Walk),
            ("max_upstream_unknown_connections", Walk),
            ("enable_command_stats", Walk),
            ("read_policy", Walk),
            ("dns_cache_config", Walk),
        ],
    ),
    (
        "envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig",
        &[
            ("name", Walk),
            ("dns_lookup_family", Walk),
            ("dns_refresh_rate", Walk),
            ("max_hosts", Walk),
            ("dns_query_timeout", Walk),
            // Tuning of the cache's own re-resolution and expiry; redvoy re-resolves a MOVED
            // target's name after `dns_refresh_rate` (a failed lookup at the next redirection)
            // and keeps at most `max_hosts` names.
            ("dns_min_refresh_rate", Ignore),
            ("host_ttl", Ignore),
            ("dns_failure_refresh_rate", Ignore),
        ],
    ),
    (
        REDIS_CLUSTER_CONFIG,
        &[
            ("cluster_refresh_rate", Walk),
            ("cluster_refresh_timeout", Walk),
            ("redirect_refresh_interval", Walk),
            ("redirect_refresh_threshold", Walk),
            ("failure_refresh_threshold", Walk),
            ("host_degraded_refresh_threshold", Walk),
        ],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes",
        &[("routes", Walk), ("case_insensitive", Walk), ("catch_all_route", Walk)],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route",
        &[
            ("prefix", Walk),
            ("remove_prefix", Walk),
            ("cluster", Walk),
            ("request_mirror_policy", Walk),
            ("key_formatter", Walk),
            ("read_command_policy", Walk),
        ],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route.RequestMirrorPolicy",
        &[("cluster", Walk), ("runtime_fraction", Walk), ("exclude_read_commands", Walk)],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route.ReadCommandPolicy",
        &[("cluster", Walk)],
    ),
    (
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.RedisFault",
        &[("fault_type", Walk), ("fault_enabled", Walk), ("delay", Walk), ("commands", Walk)],
    ),
    (REDIS_PROTOCOL_OPTIONS, &[("auth_password", Walk), ("auth_username", Walk)]),
    ("envoy.config.core.v3.RuntimeFractionalPercent", &[("default_value", Walk), ("runtime_key", Walk)]),
    ("envoy.type.v3.FractionalPercent", &[("numerator", Walk), ("denominator", Walk)]),
    ("envoy.type.v3.Percent", &[("value", Walk)]),
    (
        "envoy.config.core.v3.DataSource",
        &[("filename", Walk), ("inline_bytes", Walk), ("inline_string", Walk), ("environment_variable", Walk)],
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            ("name", Walk),
            ("type", Walk),
            ("cluster_type", ClusterType),
            ("connect_timeout", Walk),
            ("lb_policy", Walk),
            ("load_assignment", Walk),
            ("dns_refresh_rate", Walk),
            ("dns_lookup_family", Walk),
            ("typed_extension_protocol_options", ProtocolOptions),
            ("ring_hash_lb_config", Walk),
            ("maglev_lb_config", Walk),
            ("least_request_lb_config", Walk),
            ("common_lb_config", Walk),
            // Cluster metadata feeds subset load balancing (refused) and other extensions;
            // neither the filters nor the load balancers redvoy runs read it.
            ("metadata", Ignore),
            ("eds_cluster_config", Walk),
            // Thresholds of both priorities, reported as Envoy reports them; DEFAULT ones
            // enforced where Envoy enforces them (tcp_proxy and the HTTP router; Envoy's
            // redis_proxy enforces none).
            ("circuit_breakers", Walk),
            ("upstream_connection_options", Walk),
            // HTTP upstream pools only: a gRPC xDS stream is one request on one connection.
            ("max_requests_per_connection", Ignore),
            // Only renames the cluster's stats (`cluster.<alt_stat_name>.`); redvoy keeps
            // `cluster.<name>.` (Istio's default matcher excludes mesh cluster stats anyway).
            ("alt_stat_name", Ignore),
            // Upstream network filters: only Istio's `istio.metadata_exchange` is accepted.
            ("filters", Walk),
            // The fallback socket: plaintext or `UpstreamTlsContext` (see `TransportSocket`).
            ("transport_socket", Walk),
            // Honoured per endpoint: plaintext entries are used; an endpoint selecting another
            // (Istio's `tlsMode-istio` → TLS) is left out of the cluster, never connected to in
            // plaintext (see `TransportSocketMatches`).
            ("transport_socket_matches", Walk),
            ("original_dst_lb_config", Walk),
            // One Redis health checker per cluster (a second entry is refused by the
            // conversion, with its path).
            ("health_checks", Walk),
            ("outlier_detection", Walk),
            // With active health checking, whether a host EDS removes goes at once or stays
            // while it passes its checks.
            ("ignore_health_on_host_removal", Walk),
        ],
    ),
    (
        "envoy.config.cluster.v3.OutlierDetection",
        // Consecutive-failure ejection. Refused by not listing them: success-rate and
        // failure-percentage ejection (`enforcing_success_rate`, `success_rate_*`,
        // `enforcing_local_origin_success_rate`, `failure_percentage_*`,
        // `enforcing_failure_percentage*`), `monitors` and `detect_degraded_hosts`, which
        // redvoy does not implement.
        &[
            ("consecutive_5xx", Walk),
            ("interval", Walk),
            ("base_ejection_time", Walk),
            ("max_ejection_percent", Walk),
            ("enforcing_consecutive_5xx", Walk),
            ("consecutive_gateway_failure", Walk),
            ("enforcing_consecutive_gateway_failure", Walk),
            ("split_external_local_origin_errors", Walk),
            ("consecutive_local_origin_failure", Walk),
            ("enforcing_consecutive_local_origin_failure", Walk),
            ("max_ejection_time", Walk),
            ("max_ejection_time_jitter", Walk),
            ("successful_active_health_check_uneject_host", Walk),
            ("always_eject_one_host", Walk),
        ],
    ),
    (
        HEALTH_CHECK,
        // Refused by not listing them: the HTTP, TCP and gRPC checkers (redvoy runs the Redis
        // one only, see `unsupported_field`); `alt_port` and `event_service` (not implemented
        // by Envoy either, and not by redvoy); `event_logger` (sink extensions; the deprecated
        // `event_log_path` is honoured); `tls_options` and `transport_socket_match_criteria`
        // (health check sockets other than the cluster's own).
        &[
            ("timeout", Walk),
            ("interval", Walk),
            ("initial_jitter", Walk),
            ("interval_jitter", Walk),
            ("interval_jitter_percent", Walk),
            ("unhealthy_threshold", Walk),
            ("healthy_threshold", Walk),
            ("reuse_connection", Walk),
            ("custom_health_check", Walk),
            ("no_traffic_interval", Walk),
            ("no_traffic_healthy_interval", Walk),
            ("unhealthy_interval", Walk),
            ("unhealthy_edge_interval", Walk),
            ("healthy_edge_interval", Walk),
            // Health check events as JSON lines, and which of them are written.
            ("event_log_path", Walk),
            ("always_log_health_check_failures", Walk),
            ("always_log_health_check_success", Walk),
        ],
    ),
    (
        "envoy.config.core.v3.HealthCheck.CustomHealthCheck",
        &[("name", Walk), ("typed_config", HealthChecker)],
    ),
    // `aws_iam` (IAM authentication of the checker's connections) is refused by not listing it.
    (REDIS_HEALTH_CHECKER, &[("key", Walk)]),
    (
        "envoy.config.cluster.v3.Cluster.TransportSocketMatch",
        // Plaintext and TLS sockets are walked (and run); an endpoint that selects any other
        // socket is never connected to (never in plaintext instead).
        &[("name", Walk), ("match", Walk), ("transport_socket", MatchSocket)],
    ),
    (TRANSPORT_SOCKET, &[("name", Walk), ("typed_config", TransportSocket)]),
    (
        "envoy.config.listener.v3.ListenerFilter",
        // `filter_disabled` and `config_discovery` (ECDS) are refused by not listing them.
        &[("name", Walk), ("typed_config", ListenerFilter)],
    ),
    // Their settings (ClientHello size limits, JA3 fingerprints, the HTTP inspector's none)
    // are refused by not listing them.
    (TLS_INSPECTOR, &[]),
    (HTTP_INSPECTOR, &[]),
    (ORIGINAL_DST_FILTER, &[]),
    (
        DOWNSTREAM_TLS,
        // Refused by not listing them: session ticket keys and their SDS, stateless resumption
        // and session timeouts, OCSP stapling policy, full certificate scans, the TLS
        // fingerprint options.
        &[("common_tls_context", Walk), ("require_client_certificate", Walk)],
    ),
    (
        UPSTREAM_TLS,
        // Refused by not listing them: `auto_host_sni`, `auto_sni_san_validation`,
        // `allow_renegotiation`, `max_session_keys`, `enforce_rsa_key_usage`.
        &[("common_tls_context", Walk), ("sni", Walk)],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        // Refused by not listing them: certificate providers, custom handshakers and
        // selectors, `key_log`.
        &[
            ("tls_params", Walk),
            ("tls_certificates", Walk),
            ("tls_certificate_sds_secret_configs", Walk),
            ("alpn_protocols", Walk),
            ("validation_context", Walk),
            ("validation_context_sds_secret_config", Walk),
            ("combined_validation_context", Walk),
        ],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
        &[("name", Walk), ("sds_config", Walk)],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
        // The certificate-provider variant is refused by not listing it.
        &[
            ("default_validation_context", Walk),
            ("validation_context_sds_secret_config", Walk),
        ],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        // Session ticket keys and generic secrets are refused by not listing them.
        &[("name", Walk), ("tls_certificate", Walk), ("validation_context", Walk)],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        // Refused by not listing them: cipher suites, curves, signature algorithms and
        // compliance policies (rustls's defaults are used).
        &[("tls_minimum_protocol_version", Walk), ("tls_maximum_protocol_version", Walk)],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
        // Refused by not listing them: pkcs12, key providers, passwords, OCSP staples, SCTs.
        &[
            ("certificate_chain", Walk),
            ("private_key", Walk),
            // Re-reads an SDS secret's files when the directory changes (a static context
            // does not reload, in Envoy as in redvoy).
            ("watched_directory", Walk),
        ],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        // Refused by not listing them: everything that loosens or changes verification
        // (`trust_chain_verification`, `allow_expired_certificate`, custom validators), SPKI
        // and hash pinning, CRLs, system roots. The deprecated
        // `match_subject_alt_names` is read as Envoy reads it.
        &[
            ("trusted_ca", Walk),
            ("match_typed_subject_alt_names", Walk),
            ("match_subject_alt_names", Walk),
            ("watched_directory", Walk),
        ],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
        // `oid` (OTHER_NAME) is refused by not listing it.
        &[("san_type", Walk), ("matcher", Walk)],
    ),
    (
        "envoy.config.cluster.v3.CircuitBreakers",
        // `per_host_thresholds` is refused by not listing it.
        &[("thresholds", Walk)],
    ),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        // Every threshold of both priorities is reported (`/clusters`, `remaining_*` with
        // `track_remaining`). Enforced: DEFAULT `max_connections` and `max_requests` by
        // tcp_proxy and the HTTP router, as Envoy does (its redis_proxy enforces none). Only
        // reported: `max_pending_requests` (a queue redvoy never has: tcp_proxy and the HTTP
        // router fail at once), `max_retries` and `retry_budget` (neither redis_proxy,
        // tcp_proxy nor redvoy's HTTP router retries), `max_connection_pools` (Envoy's
        // redis_proxy does not use it; redvoy's tcp_proxy and HTTP router have no pools), and
        // HIGH thresholds (high-priority HTTP routes, which redvoy never has).
        &[
            ("priority", Walk),
            ("max_connections", Walk),
            ("max_requests", Walk),
            ("max_pending_requests", Walk),
            ("max_retries", Walk),
            ("retry_budget", Walk),
            ("track_remaining", Walk),
            ("max_connection_pools", Walk),
        ],
    ),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget",
        &[
            ("budget_percent", Walk),
            ("min_retry_concurrency", Walk),
            // Checked (a duration), then dropped: it widens the requests the budget counts,
            // and redvoy counts none against the breaker.
            ("budget_interval", Walk),
        ],
    ),
    (
        "envoy.config.cluster.v3.UpstreamConnectionOptions",
        // `happy_eyeballs_config` is refused by not listing it.
        &[
            ("tcp_keepalive", Walk),
            // Only names the local interface in connection info (logs, access logs).
            ("set_local_interface_name_on_upstream_connections", Ignore),
        ],
    ),
    (
        "envoy.config.core.v3.TcpKeepalive",
        &[("keepalive_probes", Walk), ("keepalive_time", Walk), ("keepalive_interval", Walk)],
    ),
    (
        "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        &[("eds_config", Walk), ("service_name", Walk)],
    ),
    (
        "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig",
        // `use_http_header` and the port override are refused by not listing them.
        &[],
    ),
    (
        "envoy.config.cluster.v3.Filter",
        &[("name", Walk), ("typed_config", UpstreamFilter)],
    ),
    (
        HTTP_PROTOCOL_OPTIONS,
        &[("explicit_http_config", Walk), ("common_http_protocol_options", Walk)],
    ),
    (
        "envoy.config.core.v3.HttpProtocolOptions",
        // Durations and header limits (`max_connection_duration`, `max_stream_duration`,
        // `max_headers_count`, ...) are refused by not listing them.
        &[
            // Moot: the xDS stream is never idle (HTTP/2 keepalive), and redvoy's HTTP router
            // opens one connection per request and closes it after the response.
            ("idle_timeout", Ignore),
            ("max_requests_per_connection", Ignore),
        ],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        // Which HTTP version to speak upstream: redvoy's xDS client always speaks HTTP/2 (gRPC)
        // and its HTTP router HTTP/1.1, whatever is set.
        &[
            // HTTP/1 codec details (absolute URLs, header case, HTTP/1.0): redvoy's router
            // sends plain HTTP/1.1 requests as they came.
            ("http_protocol_options", Ignore),
            ("http2_protocol_options", Walk),
        ],
    ),
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        // HTTP/2 codec tuning (windows, table sizes, codec choice) and flood limits towards
        // the peer, which for redvoy is only the control plane. `connection_keepalive` (PING
        // interval and timeout: when a dead control plane is noticed) is refused by not
        // listing it: redvoy pings every 30 s and gives up after 10 s.
        &[
            ("hpack_table_size", Ignore),
            ("max_concurrent_streams", Ignore),
            ("initial_stream_window_size", Ignore),
            ("initial_connection_window_size", Ignore),
            ("allow_connect", Ignore),
            ("allow_metadata", Ignore),
            ("max_outbound_frames", Ignore),
            ("max_outbound_control_frames", Ignore),
            ("max_consecutive_inbound_frames_with_empty_payload", Ignore),
            ("max_inbound_priority_frames_per_stream", Ignore),
            ("max_inbound_window_update_frames_per_data_frame_sent", Ignore),
            ("stream_error_on_invalid_http_messaging", Ignore),
            ("override_stream_error_on_invalid_http_message", Ignore),
            ("custom_settings_parameters", Ignore),
            ("use_oghttp2_codec", Ignore),
            ("max_metadata_size", Ignore),
            ("enable_huffman_encoding", Ignore),
            ("max_header_field_size_kb", Ignore),
            ("disallow_obs_text", Ignore),
            ("stream_reset_burst", Ignore),
            ("stream_reset_rate", Ignore),
        ],
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        &[
            ("consistent_hashing_lb_config", Walk),
            // Applied to the endpoints' `health_status` (panic mode), on every cluster type.
            ("healthy_panic_threshold", Walk),
        ],
    ),
    ("envoy.config.cluster.v3.Cluster.CommonLbConfig.ConsistentHashingLbConfig", &[("use_hostname_for_hashing", Walk)]),
    (
        "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        &[("minimum_ring_size", Walk), ("maximum_ring_size", Walk), ("hash_function", Walk)],
    ),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig", &[("table_size", Walk)]),
    ("envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", &[("choice_count", Walk)]),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        // `policy` (overprovisioning, drop overloads) is refused by not listing it.
        &[("cluster_name", Walk), ("endpoints", Walk)],
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &[
            ("lb_endpoints", Walk),
            ("locality", Walk),
            ("priority", Walk),
            // Locality weights only matter to locality-weighted load balancing, which needs
            // `common_lb_config.locality_weighted_lb_config` (refused).
            ("load_balancing_weight", Ignore),
            // Read for `envoy.transport_socket_match` labels; other keys feed subset load
            // balancing (refused) and are never read.
            ("metadata", Opaque),
        ],
    ),
    (
        "envoy.config.endpoint.v3.LbEndpoint",
        &[
            ("endpoint", Walk),
            ("load_balancing_weight", Walk),
            // Read for `envoy.transport_socket_match` labels; other keys feed subset load
            // balancing (refused) and are never read.
            ("metadata", Opaque),
            ("health_status", Walk),
        ],
    ),
    ("envoy.config.endpoint.v3.Endpoint", &[("address", Walk), ("hostname", Walk)]),
];

/// Values that are accepted whole (their JSON form is a scalar or free-form).
fn is_leaf(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Duration"
            | "google.protobuf.Empty"
            // Free-form; where one is read (`static_layer`), the conversion checks it.
            | "google.protobuf.Struct"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
    )
}

fn rule_for(message: &str, field: &str) -> Option<Rule> {
    ALLOWED
        .iter()
        .find(|(name, _)| *name == message)
        .and_then(|(_, fields)| fields.iter().find(|(f, _)| *f == field))
        .map(|(_, rule)| *rule)
}

/// Checks every set field of `msg` against the allowlist and normalizes `typed_config`s.
pub(crate) fn check(msg: &mut DynamicMessage) -> Result<(), ConfigError> {
    walk(msg, &FieldPath::root())
}

fn walk(msg: &mut DynamicMessage, path: &FieldPath) -> Result<(), ConfigError> {
    let desc = msg.descriptor();
    if is_leaf(desc.full_name()) {
        return Ok(());
    }
    // The extension's `name`, for Envoy's "Didn't find a registered implementation" text.
    let ext_name = msg
        .get_field_by_name("name")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    // A transport socket named but not typed (`{name: envoy.transport_sockets.tls}`) is one
    // Envoy refuses; it must not pass as plaintext here.
    if desc.full_name() == TRANSPORT_SOCKET
        && !desc
            .get_field_by_name("typed_config")
            .is_some_and(|f| msg.has_field(&f))
    {
        return Err(ConfigError::unsupported_because(
            path.clone(),
            no_factory(&ext_name, ""),
        ));
    }
    // Field-number order, so the first offending field reported does not depend on hashing.
    let mut set: Vec<_> = msg.fields().map(|(f, _)| f).collect();
    set.sort_by_key(|f| f.number());
    for field in set {
        let fpath = path.field(field.name());
        let Some(rule) = rule_for(desc.full_name(), field.name()) else {
            return Err(unsupported_field(desc.full_name(), field.name(), fpath));
        };
        let value = msg.get_field_mut(&field);
        match rule {
            Ignore | Opaque => {}
            MatchSocket => {
                let Value::Message(socket) = value else {
                    continue;
                };
                let inner = socket
                    .get_field_by_name("typed_config")
                    .and_then(|v| v.as_message().cloned())
                    .and_then(|any| {
                        any.get_field_by_name("type_url")
                            .and_then(|v| v.as_str().map(|u| type_name_of(u).to_owned()))
                    })
                    .unwrap_or_default();
                if inner == RAW_BUFFER || inner == UPSTREAM_TLS {
                    walk(socket, &fpath)?;
                }
            }
            Walk => walk_value(value, &fpath)?,
            NetworkFilter => {
                let Value::Message(any) = value else { continue };
                match resolve_any(
                    any,
                    &ext_name,
                    &fpath,
                    TERMINAL_FILTERS,
                    &[],
                    false,
                    "filter type",
                )? {
                    Resolved::Native(inner) => *any = repack(walked(inner, &fpath)?)?,
                    Resolved::Tolerated => {}
                }
            }
            HttpFilter => {
                let Value::Message(any) = value else { continue };
                match resolve_any(
                    any,
                    &ext_name,
                    &fpath,
                    &[ROUTER],
                    TOLERATED_HTTP_FILTERS,
                    false,
                    "HTTP filter type",
                )? {
                    Resolved::Native(inner) => *any = repack(walked(inner, &fpath)?)?,
                    Resolved::Tolerated => {}
                }
            }
            ResourceMonitor => {
                let Value::Message(any) = value else { continue };
                match resolve_any(
                    any,
                    &ext_name,
                    &fpath,
                    &[DOWNSTREAM_CONNECTIONS_CONFIG],
                    &[],
                    false,
                    "resource monitor",
                )? {
                    Resolved::Native(inner) => *any = repack(walked(inner, &fpath)?)?,
                    Resolved::Tolerated => {
                        return Err(ConfigError::unsupported_because(
                            fpath,
                            "only the envoy.resource_monitors.global_downstream_max_connections \
                             resource monitor is supported by redvoy",
                        ))
                    }
                }
            }
            TransportSocket => {
                let Value::Message(any) = value else { continue };
                match resolve_any(
                    any,
                    &ext_name,
                    &fpath,
                    &[RAW_BUFFER, UPSTREAM_TLS, DOWNSTREAM_TLS],
                    &[],
                    false,
                    "transport socket",
                ) {
                    Ok(Resolved::Native(inner)) => *any = repack(walked(inner, &fpath)?)?,
                    Ok(Resolved::Tolerated) | Err(ConfigError::Unsupported { .. }) => {
                        let type_url = any
                            .get_field_by_name("type_url")
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        return Err(ConfigError::unsupported_because(
                            fpath,
                            format!(
                                "transport socket {type_url} is not supported by redvoy (only \
                                 raw_buffer and envoy.transport_sockets.tls): refused rather \
                                 than running in plaintext"
                            ),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            ListenerFilter => {
                let Value::Message(any) = value else { continue };
                match resolve_any(
                    any,
                    &ext_name,
                    &fpath,
                    &[TLS_INSPECTOR, HTTP_INSPECTOR, ORIGINAL_DST_FILTER],
                    &[],
                    false,
                    "listener filter type",
                )? {
                    Resolved::Native(inner) => *any = repack(walked(inner, &fpath)?)?,
                    Resolved::Tolerated => {}
                }
            }
            UpstreamFilter | BootstrapExtension => {
                let Value::Message(any) = value else { continue };
                let (noun, tolerated) = if rule == UpstreamFilter {
                    ("upstream network filter type", &[][..])
                } else {
                    ("bootstrap extension type", TOLERATED_BOOTSTRAP_EXTENSIONS)
                };
                match resolve_any(any, &ext_name, &fpath, &[], tolerated, false, noun)? {
                    Resolved::Native(_) | Resolved::Tolerated => {}
                }
            }
            ProtocolOptions => {
                let Value::Map(entries) = value else { continue };
                let mut keys: Vec<MapKey> = entries.keys().cloned().collect();
                keys.sort();
                for key in keys {
                    let name = match &key {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    let kpath = fpath.key(&name);
                    let expected = if REDIS_PROXY_NAMES.contains(&name.as_str()) {
                        REDIS_PROTOCOL_OPTIONS
                    } else if name == HTTP_PROTOCOL_OPTIONS {
                        HTTP_PROTOCOL_OPTIONS
                    } else {
                        return Err(ConfigError::unsupported_because(
                            kpath,
                            format!("protocol options for '{name}' are not supported by redvoy"),
                        ));
                    };
                    let Some(Value::Message(any)) = entries.get_mut(&key) else {
                        continue;
                    };
                    // Envoy looks protocol options up by name and converts a plain Struct too.
                    match resolve_any(
                        any,
                        &name,
                        &kpath,
                        &[expected],
                        &[],
                        true,
                        "protocol options type",
                    )? {
                        Resolved::Native(inner) => *any = repack(walked(inner, &kpath)?)?,
                        Resolved::Tolerated => {
                            return Err(ConfigError::unsupported_because(
                                kpath,
                                "unsupported protocol options type",
                            ))
                        }
                    }
                }
            }
            HealthChecker => {
                let Value::Message(any) = value else { continue };
                // Envoy finds no health checker for a bare Struct (its name is not used).
                let type_url = any
                    .get_field_by_name("type_url")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if type_name_of(&type_url) == STRUCT {
                    return Err(ConfigError::invalid(fpath, no_factory(&ext_name, STRUCT)));
                }
                match resolve_any(
                    any,
                    &ext_name,
                    &fpath,
                    &[REDIS_HEALTH_CHECKER],
                    &[],
                    false,
                    "health checker type",
                ) {
                    Ok(Resolved::Native(inner)) => *any = repack(walked(inner, &fpath)?)?,
                    Ok(Resolved::Tolerated) => {
                        return Err(ConfigError::unsupported_because(
                            fpath,
                            format!("unsupported health checker type; {REDIS_CHECKER_ONLY}"),
                        ))
                    }
                    Err(ConfigError::Unsupported { path, message }) => {
                        return Err(ConfigError::unsupported_because(
                            path,
                            format!("{message}; {REDIS_CHECKER_ONLY}"),
                        ))
                    }
                    Err(e) => return Err(e),
                }
            }
            ClusterType => {
                let Value::Message(ext) = value else { continue };
                let name = ext
                    .get_field_by_name("name")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if name != REDIS_CLUSTER_TYPE {
                    return Err(ConfigError::unsupported_because(
                        fpath,
                        format!("unsupported cluster type '{name}'"),
                    ));
                }
                let tpath = fpath.field("typed_config");
                let Some(Value::Message(any)) = ext
                    .descriptor()
                    .get_field_by_name("typed_config")
                    .filter(|f| ext.has_field(f))
                    .map(|f| ext.get_field_mut(&f))
                else {
                    continue;
                };
                // Istio EnvoyFilters write it as a plain Struct, which Envoy converts. A
                // TypedStruct is accepted too although Envoy 1.40 finds no cluster factory for
                // it: here it can only mean RedisClusterConfig.
                match resolve_any(
                    any,
                    &name,
                    &tpath,
                    &[REDIS_CLUSTER_CONFIG],
                    &[],
                    true,
                    "cluster type",
                )? {
                    Resolved::Native(inner) => *any = repack(walked(inner, &tpath)?)?,
                    Resolved::Tolerated => {
                        return Err(ConfigError::unsupported_because(
                            tpath,
                            "unsupported cluster type configuration",
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// A field the allowlist does not list, with a clearer word where users commonly meet one.
fn unsupported_field(message: &str, field: &str, path: FieldPath) -> ConfigError {
    match (message, field) {
        (HTTP_CONNECTION_MANAGER, "rds") => ConfigError::unsupported_because(
            path,
            "HTTP connection manager with RDS is not supported by redvoy (only a static route_config)",
        ),
        (HTTP_CONNECTION_MANAGER, _) => ConfigError::unsupported_because(
            path,
            "not supported by redvoy's minimal HTTP connection manager",
        ),
        (HEALTH_CHECK, "http_health_check" | "tcp_health_check" | "grpc_health_check") => {
            ConfigError::unsupported_because(
                path,
                format!("not supported by redvoy; {REDIS_CHECKER_ONLY}"),
            )
        }
        (HEALTH_CHECK, "tls_options" | "transport_socket_match_criteria") => {
            ConfigError::unsupported_because(
                path,
                "not supported by redvoy: health checks use the cluster's own transport socket \
                 (plaintext, or the cluster's TLS)",
            )
        }
        _ => ConfigError::unsupported(path),
    }
}

/// What a `typed_config` turned out to be.
enum Resolved {
    /// One of the expected native types (TypedStruct and Struct forms already converted).
    Native(DynamicMessage),
    /// An extension accepted without effect: an Istio-only type (bare or in a TypedStruct), or
    /// one of the tolerated Envoy types for this extension point. Left as written; the
    /// conversion drops it.
    Tolerated,
}

/// Whether `type_name` (a full message name) is accepted and dropped at an extension point
/// that also tolerates the Envoy types `tolerated`: Istio's own extensions and those. Any other
/// type is refused: one Envoy has no factory for (a retired v2 type, a typo) would make Envoy
/// refuse the resource, and dropping it could drop a filter that enforces something.
fn is_tolerated(type_name: &str, tolerated: &[&str]) -> bool {
    ISTIO_TOLERATED_TYPES.contains(&type_name) || tolerated.contains(&type_name)
}

/// Envoy's text for a `typed_config` whose type it has no factory for.
pub(crate) fn no_factory(ext_name: &str, type_name: &str) -> String {
    format!("Didn't find a registered implementation for '{ext_name}' with type URL: '{type_name}'")
}

fn walked(mut msg: DynamicMessage, path: &FieldPath) -> Result<DynamicMessage, ConfigError> {
    walk(&mut msg, path)?;
    Ok(msg)
}

fn walk_value(value: &mut Value, path: &FieldPath) -> Result<(), ConfigError> {
    match value {
        Value::Message(m) => walk_message_value(m, path),
        Value::List(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Message(m) = item {
                    walk_message_value(m, &path.index(i))?;
                }
            }
            Ok(())
        }
        Value::Map(entries) => {
            let mut keys: Vec<MapKey> = entries.keys().cloned().collect();
            keys.sort();
            for key in keys {
                let kpath = match &key {
                    MapKey::String(s) => path.key(s),
                    other => path.key(&format!("{other:?}")),
                };
                if let Some(Value::Message(m)) = entries.get_mut(&key) {
                    walk_message_value(m, &kpath)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn walk_message_value(m: &mut DynamicMessage, path: &FieldPath) -> Result<(), ConfigError> {
    // An `Any` is only accepted where a rule above resolves it.
    if m.descriptor().full_name() == "google.protobuf.Any" {
        return Err(ConfigError::unsupported(path));
    }
    walk(m, path)
}

/// Unpacks a `typed_config` whose native type must be one of `expected`, the way Envoy's
/// `translateOpaqueConfig` does: the native type itself; a TypedStruct (either package) whose
/// `type_url` names it, its Struct converted through JSON with unknown fields refused; a bare
/// `google.protobuf.Struct` only where `allow_struct` (extension points looked up by name; a
/// filter looked up by type URL cannot be a Struct). Tolerated extensions (see
/// [`is_tolerated`]), bare or in a TypedStruct, come back as [`Resolved::Tolerated`]; a type
/// Envoy does not know is refused with Envoy's words, naming `ext_name`.
fn resolve_any(
    any: &DynamicMessage,
    ext_name: &str,
    path: &FieldPath,
    expected: &[&str],
    tolerated: &[&str],
    allow_struct: bool,
    noun: &str,
) -> Result<Resolved, ConfigError> {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let value = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    if type_url.is_empty() {
        return Err(ConfigError::invalid(path, "typed_config has no @type"));
    }
    let pool = any.descriptor().parent_pool().clone();
    let desc_of = |name: &str| -> Result<MessageDescriptor, ConfigError> {
        pool.get_message_by_name(name)
            .ok_or_else(|| ConfigError::invalid(path, format!("message '{name}' not found")))
    };
    let decode = |name: &str, bytes: &[u8]| -> Result<DynamicMessage, ConfigError> {
        DynamicMessage::decode(desc_of(name)?, bytes)
            .map_err(|e| ConfigError::invalid(path, format!("cannot decode {name}: {e}")))
    };
    match type_name_of(&type_url) {
        name if expected.contains(&name) => Ok(Resolved::Native(decode(name, &value)?)),
        name @ (TYPED_STRUCT_XDS | TYPED_STRUCT_UDPA) => {
            let typed_struct = decode(name, &value)?;
            let inner_url = typed_struct
                .get_field_by_name("type_url")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let inner = type_name_of(&inner_url);
            if !expected.contains(&inner) {
                if !inner.is_empty() && is_tolerated(inner, tolerated) {
                    return Ok(Resolved::Tolerated);
                }
                let message = if pool.get_message_by_name(inner).is_none() {
                    no_factory(ext_name, inner)
                } else {
                    format!("unsupported {noun} {inner_url} (in {name})")
                };
                return Err(ConfigError::unsupported_because(path, message));
            }
            let fields = match typed_struct
                .get_field_by_name("value")
                .and_then(|v| v.as_message().cloned())
            {
                Some(fields) => fields,
                None => DynamicMessage::new(desc_of(STRUCT)?),
            };
            Ok(Resolved::Native(struct_to_message(
                &fields,
                &desc_of(inner)?,
                path,
            )?))
        }
        STRUCT if allow_struct => {
            let [only] = expected else {
                return Err(ConfigError::invalid(
                    path,
                    "a Struct needs one expected type",
                ));
            };
            let target = desc_of(only)?;
            Ok(Resolved::Native(struct_to_message(
                &decode(STRUCT, &value)?,
                &target,
                path,
            )?))
        }
        name if name != STRUCT && is_tolerated(name, tolerated) => Ok(Resolved::Tolerated),
        name if pool.get_message_by_name(name).is_none() => Err(ConfigError::unsupported_because(
            path,
            no_factory(ext_name, name),
        )),
        _ => Err(ConfigError::unsupported_because(
            path,
            format!("unsupported {noun} {type_url}"),
        )),
    }
}

/// A `google.protobuf.Struct` read as the JSON form of `target` (Envoy's `jsonConvert`).
fn struct_to_message(
    fields: &DynamicMessage,
    target: &MessageDescriptor,
    path: &FieldPath,
) -> Result<DynamicMessage, ConfigError> {
    let mut json = serde_json::to_value(fields)
        .map_err(|e| ConfigError::invalid(path, format!("cannot read Struct as JSON: {e}")))?;
    // Envoy's JSON conversion is as lenient with enum case as its YAML loading.
    crate::parse::normalize(&mut json, target);
    let mut track = serde_path_to_error::Track::new();
    DynamicMessage::deserialize(
        target.clone(),
        serde_path_to_error::Deserializer::new(json, &mut track),
    )
    .map_err(|e| {
        let inner = track.path().to_string();
        let at = if inner.is_empty() || inner == "." {
            path.clone()
        } else {
            path.field(&inner)
        };
        let message = format!("as {}: {e}", target.full_name());
        ConfigError::invalid(
            crate::parse::with_unknown_field(at.as_str(), &message),
            message,
        )
    })
}

/// The native `Any` for a resolved message (canonical type URL).
fn repack(msg: DynamicMessage) -> Result<DynamicMessage, ConfigError> {
    let any_desc = crate::descriptors::message("google.protobuf.Any")?;
    let mut any = DynamicMessage::new(any_desc);
    any.set_field_by_name(
        "type_url",
        Value::String(format!("{TYPE_URL_PREFIX}{}", msg.descriptor().full_name())),
    );
    any.set_field_by_name("value", Value::Bytes(msg.encode_to_vec().into()));
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every allowlisted message and field exists in the descriptor set, so a typo or an
    /// envoy-types bump that renames a field cannot silently drop a rule.
    #[test]
    fn allowlist_names_exist() {
        let pool = crate::descriptors::pool().unwrap();
        for (message, fields) in ALLOWED {
            let desc = pool
                .get_message_by_name(message)
                .unwrap_or_else(|| panic!("no message {message}"));
            for (field, _) in *fields {
                assert!(
                    desc.get_field_by_name(field).is_some(),
                    "no field {message}.{field}"
                );
            }
        }
    }
}
