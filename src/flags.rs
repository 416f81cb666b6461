//! Envoy's command line, and what the rest of the binary takes from it. Flags redvoy has no use
//! for are accepted (and ignored) so that any launcher written for Envoy, pilot-agent included,
//! can start redvoy unchanged; the ones it reads are turned into [`Settings`] here and nowhere
//! else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use redvoy_admin::LogLevel;
use redvoy_config::LoadOptions;
use redvoy_proxy::DrainStrategy;

use crate::app::Settings;
use crate::logging::LogHandle;

/// `--drain-time-s` when unset (Envoy's default).
const DEFAULT_DRAIN_TIME_S: u64 = 600;
/// `--log-level` when unset.
const DEFAULT_LOG_LEVEL: &str = "info";
/// The `--drain-strategy` value that selects [`DrainStrategy::Immediate`]; anything else
/// (Envoy's `gradual` included) drains gradually.
const DRAIN_STRATEGY_IMMEDIATE: &str = "immediate";

/// `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
    #[value(name = "init_only")]
    InitOnly,
}

/// Envoy's command line.
#[derive(Parser, Debug)]
#[command(
    name = "redvoy",
    version,
    about = "An Envoy-compatible data plane for Redis"
)]
pub struct Flags {
    /// Path to the bootstrap (YAML or JSON).
    #[arg(short = 'c', long = "config-path")]
    config_path: Option<PathBuf>,
    /// Bootstrap in YAML (or JSON), merged over --config-path as Envoy merges it.
    #[arg(long = "config-yaml")]
    config_yaml: Option<String>,
    #[arg(long = "mode", value_enum, default_value = "serve")]
    pub mode: Mode,
    /// Worker threads; defaults to the number of hardware threads, as in Envoy.
    #[arg(long = "concurrency")]
    concurrency: Option<usize>,
    #[arg(short = 'l', long = "log-level", default_value = DEFAULT_LOG_LEVEL)]
    log_level: String,
    #[arg(long = "component-log-level")]
    component_log_level: Option<String>,
    #[arg(long = "service-node")]
    service_node: Option<String>,
    #[arg(long = "service-cluster")]
    service_cluster: Option<String>,
    #[arg(long = "service-zone")]
    service_zone: Option<String>,
    #[arg(long = "drain-time-s", default_value_t = DEFAULT_DRAIN_TIME_S)]
    drain_time_s: u64,
    #[arg(long = "drain-strategy")]
    drain_strategy: Option<String>,
    #[arg(long = "base-id")]
    base_id: Option<u64>,
    #[arg(long = "use-dynamic-base-id", action = ArgAction::SetTrue)]
    use_dynamic_base_id: bool,
    #[arg(long = "base-id-path")]
    base_id_path: Option<PathBuf>,
    #[arg(long = "disable-hot-restart", action = ArgAction::SetTrue)]
    disable_hot_restart: bool,
    #[arg(long = "allow-unknown-static-fields", action = ArgAction::SetTrue)]
    allow_unknown_static_fields: bool,
    #[arg(long = "reject-unknown-dynamic-fields", action = ArgAction::SetTrue)]
    reject_unknown_dynamic_fields: bool,
    #[arg(long = "local-address-ip-version")]
    local_address_ip_version: Option<String>,
    #[arg(long = "file-flush-interval-msec")]
    file_flush_interval_msec: Option<u64>,
    #[arg(long = "file-flush-min-size-kb")]
    file_flush_min_size_kb: Option<u64>,
    #[arg(long = "parent-shutdown-time-s")]
    parent_shutdown_time_s: Option<u64>,
    #[arg(long = "restart-epoch")]
    restart_epoch: Option<u64>,
    #[arg(long = "log-format")]
    log_format: Option<String>,
    #[arg(long = "log-path")]
    log_path: Option<PathBuf>,
    #[arg(long = "log-format-prefix-with-location")]
    log_format_prefix_with_location: Option<String>,
    #[arg(long = "bootstrap-version")]
    bootstrap_version: Option<u32>,
    #[arg(long = "skip-deprecated-logs", action = ArgAction::SetTrue)]
    skip_deprecated_logs: bool,
    #[arg(long = "enable-core-dump", action = ArgAction::SetTrue)]
    enable_core_dump: bool,
    /// redvoy only: a dynamic listener whose filters redvoy does not implement is NACKed, as
    /// Envoy would reject an unknown extension, instead of being skipped with a warning.
    #[arg(long = "reject-unsupported", action = ArgAction::SetTrue)]
    reject_unsupported: bool,
}

// === impl Flags ===

impl Flags {
    /// Where the bootstrap comes from, and the node fields the flags override.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            config_path: self.config_path.clone(),
            config_yaml: self.config_yaml.clone(),
            service_node: self.service_node.clone(),
            service_cluster: self.service_cluster.clone(),
            service_zone: self.service_zone.clone(),
        }
    }

    /// `--config-path` as printed (validate mode's `configuration '...' OK`, `/server_info`):
    /// empty when unset.
    pub fn config_path_text(&self) -> String {
        path_text(self.config_path.as_deref())
    }

    /// Envoy's `-l` level (Envoy also takes `warn`); an unknown level is `info`.
    pub fn log_level(&self) -> LogLevel {
        match self.log_level.to_ascii_lowercase().as_str() {
            "warn" => LogLevel::Warning,
            other => LogLevel::parse(other).unwrap_or(LogLevel::Info),
        }
    }

    /// What serve and init_only modes run with.
    pub fn settings(&self, log_handle: Option<LogHandle>) -> Settings {
        let concurrency = self
            .concurrency
            .filter(|c| *c > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let drain_strategy = if self
            .drain_strategy
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(DRAIN_STRATEGY_IMMEDIATE))
        {
            DrainStrategy::Immediate
        } else {
            DrainStrategy::Gradual
        };
        Settings {
            options: self.command_line_options(concurrency, drain_strategy),
            drain_time: Duration::from_secs(self.drain_time_s),
            drain_strategy,
            reject_unsupported: self.reject_unsupported,
            reject_unknown_dynamic_fields: self.reject_unknown_dynamic_fields,
            log_level: self.log_level(),
            log_handle,
            concurrency,
        }
    }

    /// `/server_info`'s `command_line_options`, as Envoy echoes its flags.
    fn command_line_options(
        &self,
        concurrency: usize,
        drain_strategy: DrainStrategy,
    ) -> redvoy_admin::CommandLineOptions {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut o = redvoy_admin::CommandLineOptions {
            base_id: self.base_id.unwrap_or(0),
            concurrency: concurrency as u32,
            config_path: self.config_path_text(),
            config_yaml: text(&self.config_yaml),
            allow_unknown_static_fields: self.allow_unknown_static_fields,
            log_level: self.log_level().as_str().to_owned(),
            component_log_level: text(&self.component_log_level),
            log_path: path_text(self.log_path.as_deref()),
            service_cluster: text(&self.service_cluster),
            service_node: text(&self.service_node),
            service_zone: text(&self.service_zone),
            drain_time: Duration::from_secs(self.drain_time_s),
            disable_hot_restart: self.disable_hot_restart,
            reject_unknown_dynamic_fields: self.reject_unknown_dynamic_fields,
            use_dynamic_base_id: self.use_dynamic_base_id,
            enable_core_dump: self.enable_core_dump,
            skip_deprecated_logs: self.skip_deprecated_logs,
            ..Default::default()
        };
        if let Some(ms) = self.file_flush_interval_msec {
            o.file_flush_interval = Duration::from_millis(ms);
        }
        if let Some(s) = self.parent_shutdown_time_s {
            o.parent_shutdown_time = Duration::from_secs(s);
        }
        if let Some(f) = &self.log_format {
            o.log_format = f.clone();
        }
        if drain_strategy == DrainStrategy::Immediate {
            o.drain_strategy = redvoy_admin::DrainStrategy::Immediate;
        }
        o.mode = match self.mode {
            Mode::Serve => redvoy_admin::Mode::Serve,
            Mode::Validate => redvoy_admin::Mode::Validate,
            Mode::InitOnly => redvoy_admin::Mode::InitOnly,
        };
        o
    }
}

fn path_text(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}
