//! Logging to stderr through a filter that `/logging` can change at run time.

use redvoy_admin::LogLevel;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Switches tracing's filter when `/logging` changes levels.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Installs the global subscriber at `level`. `None` when one is already installed (the
/// levels then cannot be changed at run time).
pub fn init(level: LogLevel) -> Option<LogHandle> {
    let (filter, handle) = reload::Layer::new(EnvFilter::new(tracing_level(level)));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()
        .map(|()| handle)
}

/// The tracing directive for an Envoy log level.
pub fn tracing_level(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warn",
        LogLevel::Error | LogLevel::Critical => "error",
        LogLevel::Off => "off",
    }
}
