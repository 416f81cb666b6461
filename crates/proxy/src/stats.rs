//! The filter's stats under `redis.<stat_prefix>.`, declared once (Envoy's names and types).
//! `/stats` lists every command's from start-up, as Envoy's eagerly created stats do; the
//! store creates a command's only when it is first used.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use redvoy_stats::{Counter, DeferredFamily, Gauge, Histogram, HistogramUnit, Store};

use crate::supported_commands;

/// `redis.<stat_prefix>.command.<cmd>.*`.
#[derive(Clone)]
pub struct CommandStats {
    pub total: Counter,
    pub success: Counter,
    pub error: Counter,
    pub error_fault: Counter,
    pub delay_fault: Counter,
    pub latency: Histogram,
}

impl CommandStats {
    fn new(store: &Store, prefix: &str, cmd: &str, unit: HistogramUnit) -> Self {
        let p = format!("{prefix}command.{cmd}.");
        let [total, success, error, error_fault, delay_fault] =
            COMMAND_COUNTERS.map(|suffix| store.counter(&format!("{p}{suffix}")));
        Self {
            total,
            success,
            error,
            error_fault,
            delay_fault,
            latency: store.histogram(&format!("{p}{}", COMMAND_HISTOGRAMS[0]), unit),
        }
    }
}

/// The counters of `redis.<stat_prefix>.command.<cmd>.`, then the histogram.
const COMMAND_COUNTERS: [&str; 5] = ["total", "success", "error", "error_fault", "delay_fault"];
const COMMAND_HISTOGRAMS: [&str; 1] = ["latency"];

/// Every stat of one redis_proxy filter instance.
pub struct ProxyStats {
    pub downstream_cx_active: Gauge,
    /// Connections closed after their last reply because their listener drains.
    pub downstream_cx_drain_close: Counter,
    pub downstream_cx_protocol_error: Counter,
    pub downstream_cx_rx_bytes_buffered: Gauge,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_total: Counter,
    #[allow(dead_code)]
    pub downstream_cx_tx_bytes_buffered: Gauge,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_total: Counter,
    /// Requests refused by the RESP3 gate (`protocol_version: RESP3`) before `HELLO 3`.
    pub downstream_rq_noproto: Counter,
    pub splitter_invalid_request: Counter,
    pub splitter_unsupported_command: Counter,
    /// Indexed through `command_index`: a request resolves its command's stats once and keeps
    /// the index until its reply is delivered. A command's stats are created when it is first
    /// used; until then the store lists them from the deferred family this filter declared,
    /// so `/stats` shows every command from start-up, as Envoy's eager stats do, without a
    /// listener paying for 1,260 stats it mostly never touches.
    commands: Box<[OnceLock<Box<CommandStats>>]>,
    command_names: Arc<[String]>,
    store: Store,
    /// `redis.<stat_prefix>.`
    prefix: String,
    unit: HistogramUnit,
    /// `latency_in_micros` decides the unit of the command latency histograms.
    pub latency_in_micros: bool,
}

/// Stat names in order, and each name's position.
type NameTable = (Arc<[String]>, HashMap<String, usize>);

/// The supported commands' stat names, shared by every filter without custom commands, and
/// their positions.
fn supported_names() -> &'static NameTable {
    static NAMES: OnceLock<NameTable> = OnceLock::new();
    NAMES.get_or_init(|| {
        let names: Vec<String> = supported_commands::stat_command_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        (names.into(), index)
    })
}

impl ProxyStats {
    /// The filter's stats; `custom_commands` add their own command stats after the supported
    /// commands'.
    pub fn new(
        store: &Store,
        stat_prefix: &str,
        latency_in_micros: bool,
        custom_commands: &[String],
    ) -> Self {
        let p = format!("redis.{stat_prefix}.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        let g = |n: &str| store.gauge(&format!("{p}{n}"));
        let unit = if latency_in_micros {
            HistogramUnit::Microseconds
        } else {
            HistogramUnit::Milliseconds
        };
        let (supported, index) = supported_names();
        let mut extra: Vec<&String> = Vec::new();
        for name in custom_commands {
            if !index.contains_key(name) && !extra.contains(&name) {
                extra.push(name);
            }
        }
        let command_names: Arc<[String]> = if extra.is_empty() {
            Arc::clone(supported)
        } else {
            supported.iter().chain(extra).cloned().collect()
        };
        store.defer(DeferredFamily {
            prefix: format!("{p}command."),
            members: Arc::clone(&command_names),
            counters: &COMMAND_COUNTERS,
            gauges: &[],
            histograms: &COMMAND_HISTOGRAMS,
        });
        Self {
            downstream_cx_active: g("downstream_cx_active"),
            downstream_cx_drain_close: c("downstream_cx_drain_close"),
            downstream_cx_protocol_error: c("downstream_cx_protocol_error"),
            downstream_cx_rx_bytes_buffered: g("downstream_cx_rx_bytes_buffered"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_tx_bytes_buffered: g("downstream_cx_tx_bytes_buffered"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_rq_active: g("downstream_rq_active"),
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_noproto: c("downstream_rq_noproto"),
            splitter_invalid_request: c("splitter.invalid_request"),
            splitter_unsupported_command: c("splitter.unsupported_command"),
            commands: (0..command_names.len()).map(|_| OnceLock::new()).collect(),
            command_names,
            store: store.clone(),
            prefix: p,
            unit,
            latency_in_micros,
        }
    }

    pub fn command_index(&self, cmd: &str) -> Option<usize> {
        let (supported, index) = supported_names();
        if let Some(&i) = index.get(cmd) {
            return Some(i);
        }
        self.command_names[supported.len()..]
            .iter()
            .position(|n| n == cmd)
            .map(|i| supported.len() + i)
    }

    /// The command's stats, created on its first use.
    pub fn command_at(&self, index: usize) -> Option<&CommandStats> {
        let cell = self.commands.get(index)?;
        Some(cell.get_or_init(|| {
            Box::new(CommandStats::new(
                &self.store,
                &self.prefix,
                &self.command_names[index],
                self.unit,
            ))
        }))
    }
}
