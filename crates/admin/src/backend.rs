//! What the admin port needs from the rest of the server, as plain data. The binary implements
//! [`AdminBackend`]; this crate renders everything (text and JSON) so the bytes match Envoy.

use std::time::Duration;

/// An error a backend call answers with: the HTTP status and the body Envoy sends
/// (`text/plain`), e.g. `503` and `No admin layer specified`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {body}")]
pub struct AdminError {
    pub status: u16,
    pub body: String,
}

impl AdminError {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

/// The server as the admin endpoints see it. Every method is called on the admin task, one
/// request at a time per connection; none may block for long.
pub trait AdminBackend: Send + Sync + 'static {
    /// `envoy.admin.v3.ConfigDump` as proto3 JSON, with the query (`resource`, `mask`,
    /// `name_regex`, `include_eds`) applied by whoever holds the descriptors (the config
    /// crate). It is printed again the way Envoy prints. `name_regex` has already been checked
    /// to compile (RE2 syntax). An `Err` is sent as `text/plain` with its status.
    fn config_dump(&self, query: &ConfigDumpQuery) -> Result<String, AdminError>;

    /// Active clusters, in the order `/clusters` lists them.
    fn clusters(&self) -> Vec<ClusterStatus>;

    /// Listeners, in the order `/listeners` lists them. A drained (stopped) listener is still
    /// listed, as in Envoy.
    fn listeners(&self) -> Vec<ListenerStatus>;

    /// The static parts of `/server_info`; `state` comes from [`crate::ServerState`].
    fn server_info(&self) -> ServerInfo;

    /// `POST /drain_listeners`. Observed on Envoy 1.40: without `graceful` the selected
    /// listeners stop at once (new connections refused) and their open connections are told to
    /// drain; with `graceful` they keep accepting for the drain time (`--drain-time-s`) and then
    /// stop; with `skip_exit` they never stop, and every connection, old or new, is closed after
    /// its reply (`downstream_cx_drain_close`). `inbound_only` picks the listeners whose
    /// `traffic_direction` is `INBOUND`. `/ready`, the server state and `/listeners` do not
    /// change. The process keeps running.
    fn drain_listeners(&self, request: DrainRequest);

    /// Runtime layers and values for `/runtime`.
    fn runtime(&self) -> RuntimeView;

    /// `POST /runtime_modify`: set each key in the admin layer (an empty value removes the
    /// override). Without an admin layer Envoy answers `503 No admin layer specified`.
    fn runtime_modify(&self, changes: &[(String, String)]) -> Result<(), AdminError>;

    /// Allocator figures for `/memory`.
    fn memory(&self) -> MemoryStats;

    /// Every logger, in the order `/logging` lists them, with its level. Envoy's names are in
    /// [`crate::ENVOY_LOGGERS`].
    fn loggers(&self) -> Vec<(String, LogLevel)>;

    /// Applies a validated change: every name in `Named` is one of [`Self::loggers`].
    fn set_log_levels(&self, change: LogChange);

    /// Every TLS context's certificates, for `/certs`.
    fn certificates(&self) -> Vec<ContextCertificates> {
        Vec::new()
    }
}

/// One TLS context as `/certs` lists it (`envoy.admin.v3.Certificate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextCertificates {
    pub ca_cert: Vec<CertificateDetails>,
    pub cert_chain: Vec<CertificateDetails>,
}

/// `envoy.admin.v3.CertificateDetails`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateDetails {
    /// A file name, or `<inline>`.
    pub path: String,
    pub serial_number: String,
    /// `(dns | uri | ip_address, value)`, in the certificate's order.
    pub subject_alt_names: Vec<(&'static str, String)>,
    /// Seconds since the epoch.
    pub valid_from: i64,
    pub expiration_time: i64,
}

/// The query of `/config_dump`; empty values are already dropped, as Envoy 1.40 treats them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDumpQuery {
    /// `?resource=`: a repeated field of one of the dumps (`static_clusters`, ...).
    pub resource: Option<String>,
    /// `?mask=`: a `FieldMask`, comma-separated paths.
    pub mask: Option<String>,
    /// `?name_regex=`: RE2, must match a resource's whole name.
    pub name_regex: Option<String>,
    /// `?include_eds` is present, whatever its value.
    pub include_eds: bool,
}

/// Query of `POST /drain_listeners`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainRequest {
    /// `?inboundonly`
    pub inbound_only: bool,
    /// `?graceful`
    pub graceful: bool,
    /// `?skip_exit`
    pub skip_exit: bool,
}

/// An address as `/clusters` and `/listeners` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `ip` without brackets (`::1`); rendered `[::1]:80` in text.
    Socket { ip: String, port: u16 },
    /// A Unix socket path (`@name` for the abstract namespace).
    Pipe { path: String },
}

/// One entry of `/listeners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// The bound address (the real port when the config said 0).
    pub local_address: Address,
    pub additional_local_addresses: Vec<Address>,
}

/// Circuit-breaker limits of one priority, as the resource manager has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub max_connections: u64,
    pub max_pending_requests: u64,
    pub max_requests: u64,
    pub max_retries: u64,
}

impl Default for Thresholds {
    /// Envoy's defaults: 1024, 1024, 1024, 3.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Outlier detector figures of a cluster that has `outlier_detection` (`-1` = not computed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierInfo {
    pub success_rate_average: f64,
    pub success_rate_ejection_threshold: f64,
    pub local_origin_success_rate_average: f64,
    pub local_origin_success_rate_ejection_threshold: f64,
}

impl Default for OutlierInfo {
    fn default() -> Self {
        Self {
            success_rate_average: -1.0,
            success_rate_ejection_threshold: -1.0,
            local_origin_success_rate_average: -1.0,
            local_origin_success_rate_ejection_threshold: -1.0,
        }
    }
}

/// One entry of `/clusters`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub name: String,
    /// `alt_stat_name` when set, else the name.
    pub observability_name: String,
    pub added_via_api: bool,
    /// EDS service name; empty when not EDS or not set.
    pub eds_service_name: String,
    /// `[DEFAULT, HIGH]`.
    pub circuit_breakers: [Thresholds; 2],
    /// `Some` when the cluster has `outlier_detection`.
    pub outlier: Option<OutlierInfo>,
    /// Hosts of every priority, priority 0 first.
    pub hosts: Vec<HostStatus>,
}

/// Kind of a per-host stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Gauge,
}

/// A per-host stat (`cx_total`, `rq_active`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStat {
    pub name: String,
    pub kind: StatKind,
    pub value: u64,
}

/// Envoy's host health flags (`Host::HealthFlag`); all `false` prints `healthy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthFlags {
    pub failed_active_hc: bool,
    pub failed_outlier_check: bool,
    pub failed_eds_health: bool,
    pub degraded_active_hc: bool,
    pub degraded_eds_health: bool,
    pub pending_dynamic_removal: bool,
    pub pending_active_hc: bool,
    pub excluded_via_immediate_hc_fail: bool,
    pub active_hc_timeout: bool,
    pub eds_status_draining: bool,
}

/// `envoy.config.core.v3.Locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// One host of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    pub address: Address,
    pub hostname: String,
    /// Envoy's host stats: counters `cx_connect_fail cx_total rq_error rq_success rq_timeout
    /// rq_total`, gauges `cx_active rq_active rq_pending_active`. Any order.
    pub stats: Vec<HostStat>,
    pub health: HealthFlags,
    pub weight: u32,
    pub locality: Locality,
    pub canary: bool,
    pub priority: u32,
    /// Outlier success rates, negative when not computed (printed `-1`).
    pub success_rate: f64,
    pub local_origin_success_rate: f64,
}

impl HostStatus {
    /// A host with Envoy's nine host stats at zero, weight 1, healthy.
    pub fn new(address: Address) -> Self {
        let stat = |name: &str, kind| HostStat {
            name: name.to_owned(),
            kind,
            value: 0,
        };
        Self {
            address,
            hostname: String::new(),
            stats: vec![
                stat("cx_connect_fail", StatKind::Counter),
                stat("cx_total", StatKind::Counter),
                stat("rq_error", StatKind::Counter),
                stat("rq_success", StatKind::Counter),
                stat("rq_timeout", StatKind::Counter),
                stat("rq_total", StatKind::Counter),
                stat("cx_active", StatKind::Gauge),
                stat("rq_active", StatKind::Gauge),
                stat("rq_pending_active", StatKind::Gauge),
            ],
            health: HealthFlags::default(),
            weight: 1,
            locality: Locality::default(),
            canary: false,
            priority: 0,
            success_rate: -1.0,
            local_origin_success_rate: -1.0,
        }
    }
}

/// `/server_info` apart from `state`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// Envoy's form: `<sha>/<version>/<status>/<build type>/<ssl>`.
    pub version: String,
    pub uptime_current_epoch: Duration,
    pub uptime_all_epochs: Duration,
    /// `disabled` with `--disable-hot-restart` (always, for redvoy).
    pub hot_restart_version: String,
    pub command_line_options: CommandLineOptions,
    /// `envoy.config.core.v3.Node` as proto3 JSON, printed with default values as
    /// `/server_info` does (`"client_features": []`, `"type_descriptor": ""`, …).
    pub node_json: String,
}

/// `--local-address-ip-version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IpVersion {
    #[default]
    V4,
    V6,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Serve,
    Validate,
    InitOnly,
}

/// `--drain-strategy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DrainStrategy {
    #[default]
    Gradual,
    Immediate,
}

/// `envoy.admin.v3.CommandLineOptions` as Envoy 1.40 echoes them, in its field order.
/// `Default` holds Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandLineOptions {
    pub base_id: u64,
    pub concurrency: u32,
    pub config_path: String,
    pub config_yaml: String,
    pub allow_unknown_static_fields: bool,
    pub admin_address_path: String,
    pub local_address_ip_version: IpVersion,
    pub log_level: String,
    pub component_log_level: String,
    pub log_format: String,
    pub log_path: String,
    pub service_cluster: String,
    pub service_node: String,
    pub service_zone: String,
    pub file_flush_interval: Duration,
    pub drain_time: Duration,
    pub parent_shutdown_time: Duration,
    pub mode: Mode,
    pub disable_hot_restart: bool,
    pub enable_mutex_tracing: bool,
    pub restart_epoch: u32,
    pub cpuset_threads: bool,
    pub reject_unknown_dynamic_fields: bool,
    pub log_format_escaped: bool,
    pub disabled_extensions: Vec<String>,
    pub ignore_unknown_dynamic_fields: bool,
    pub use_dynamic_base_id: bool,
    pub base_id_path: String,
    pub drain_strategy: DrainStrategy,
    pub enable_fine_grain_logging: bool,
    pub socket_path: String,
    pub socket_mode: u32,
    pub enable_core_dump: bool,
    pub stats_tag: Vec<String>,
    pub skip_hot_restart_on_no_parent: bool,
    pub skip_hot_restart_parent_stats: bool,
    pub skip_deprecated_logs: bool,
    pub file_flush_min_size: u32,
    pub log_stacktrace_single_entry: bool,
}

impl Default for CommandLineOptions {
    fn default() -> Self {
        Self {
            base_id: 0,
            concurrency: 1,
            config_path: String::new(),
            config_yaml: String::new(),
            allow_unknown_static_fields: false,
            admin_address_path: String::new(),
            local_address_ip_version: IpVersion::V4,
            log_level: "info".to_owned(),
            component_log_level: String::new(),
            log_format: "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v".to_owned(),
            log_path: String::new(),
            service_cluster: String::new(),
            service_node: String::new(),
            service_zone: String::new(),
            file_flush_interval: Duration::from_secs(10),
            drain_time: Duration::from_secs(600),
            parent_shutdown_time: Duration::from_secs(900),
            mode: Mode::Serve,
            disable_hot_restart: false,
            enable_mutex_tracing: false,
            restart_epoch: 0,
            cpuset_threads: false,
            reject_unknown_dynamic_fields: false,
            log_format_escaped: false,
            disabled_extensions: Vec::new(),
            ignore_unknown_dynamic_fields: false,
            use_dynamic_base_id: false,
            base_id_path: String::new(),
            drain_strategy: DrainStrategy::Gradual,
            enable_fine_grain_logging: false,
            socket_path: "@envoy_domain_socket".to_owned(),
            socket_mode: 0,
            enable_core_dump: false,
            stats_tag: Vec::new(),
            skip_hot_restart_on_no_parent: false,
            skip_hot_restart_parent_stats: false,
            skip_deprecated_logs: false,
            file_flush_min_size: 0,
            log_stacktrace_single_entry: false,
        }
    }
}

/// `/runtime`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeView {
    /// Layer names in bootstrap order.
    pub layers: Vec<String>,
    /// Every key of any layer; printed sorted by key.
    pub entries: Vec<RuntimeEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeEntry {
    pub key: String,
    /// The value in effect.
    pub final_value: String,
    /// One per layer, `""` where the layer lacks the key.
    pub layer_values: Vec<String>,
}

/// `/memory` (`envoy.admin.v3.Memory`), bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub allocated: u64,
    pub heap_size: u64,
    pub pageheap_unmapped: u64,
    pub pageheap_free: u64,
    pub total_thread_cache: u64,
    pub total_physical_bytes: u64,
}

/// spdlog's levels, as `/logging` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

impl LogLevel {
    pub const ALL: [LogLevel; 7] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
        LogLevel::Off,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Off => "off",
        }
    }

    /// Exact, case-sensitive names only (`warn` and `INFO` are refused, as in Envoy).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A validated `/logging` change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChange {
    /// `?level=`: every logger.
    All(LogLevel),
    /// `?<name>=<level>` or `?paths=`: these loggers only.
    Named(Vec<(String, LogLevel)>),
}
