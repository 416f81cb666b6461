//! The filter's stats under `redis.<stat_prefix>.`, declared once (Envoy's names and types) and
//! created eagerly, as Envoy does, so `/stats` lists every command from start-up.

use std::collections::HashMap;

use redvoy_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};

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
        Self {
            total: store.counter(&format!("{p}total")),
            success: store.counter(&format!("{p}success")),
            error: store.counter(&format!("{p}error")),
            error_fault: store.counter(&format!("{p}error_fault")),
            delay_fault: store.counter(&format!("{p}delay_fault")),
            latency: store.histogram(&format!("{p}latency"), unit),
        }
    }
}

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
    /// the index until its reply is delivered.
    commands: Vec<CommandStats>,
    command_index: HashMap<String, usize>,
    /// `latency_in_micros` decides the unit of the command latency histograms.
    pub latency_in_micros: bool,
}

impl ProxyStats {
    pub fn new(
        store: &Store,
        stat_prefix: &str,
        latency_in_micros: bool,
        command_names: impl IntoIterator<Item = String>,
    ) -> Self {
        let p = format!("redis.{stat_prefix}.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        let g = |n: &str| store.gauge(&format!("{p}{n}"));
        let unit = if latency_in_micros {
            HistogramUnit::Microseconds
        } else {
            HistogramUnit::Milliseconds
        };
        let mut commands = Vec::new();
        let mut command_index = HashMap::new();
        for name in command_names {
            if command_index.contains_key(&name) {
                continue;
            }
            command_index.insert(name.clone(), commands.len());
            commands.push(CommandStats::new(store, &p, &name, unit));
        }
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
            commands,
            command_index,
            latency_in_micros,
        }
    }

    pub fn command_index(&self, cmd: &str) -> Option<usize> {
        self.command_index.get(cmd).copied()
    }

    pub fn command_at(&self, index: usize) -> Option<&CommandStats> {
        self.commands.get(index)
    }
}
