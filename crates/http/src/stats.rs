//! `http.<stat_prefix>.*`, declared once (Envoy's `ALL_HTTP_CONN_MAN_STATS` plus the router's
//! per-HCM counters that live under the same prefix).

use redvoy_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};

/// Handles to the stats redvoy moves. Cloning shares the values.
#[derive(Clone, Debug)]
pub struct HcmStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_http1_total: Counter,
    pub downstream_cx_http1_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_destroy_local: Counter,
    pub downstream_cx_destroy_remote: Counter,
    pub downstream_cx_destroy_active_rq: Counter,
    pub downstream_cx_destroy_local_active_rq: Counter,
    pub downstream_cx_destroy_remote_active_rq: Counter,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_cx_protocol_error: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_length_ms: Histogram,
    pub downstream_rq_total: Counter,
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_completed: Counter,
    pub downstream_rq_1xx: Counter,
    pub downstream_rq_2xx: Counter,
    pub downstream_rq_3xx: Counter,
    pub downstream_rq_4xx: Counter,
    pub downstream_rq_5xx: Counter,
    pub downstream_rq_response_before_rq_complete: Counter,
    pub downstream_rq_time: Histogram,
    /// Router: every request that reached the router filter.
    pub rq_total: Counter,
    pub rq_direct_response: Counter,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_reset_after_downstream_response_started: Counter,
}

/// Stats of the same macros redvoy never moves; registered so `/stats` lists Envoy's names.
const IDLE_COUNTERS: &[&str] = &[
    "downstream_cx_delayed_close_timeout",
    "downstream_cx_drain_close",
    "downstream_cx_http1_soft_drain",
    "downstream_cx_http2_total",
    "downstream_cx_http3_total",
    "downstream_cx_max_duration_reached",
    "downstream_cx_max_requests_reached",
    "downstream_cx_overload_disable_keepalive",
    "downstream_cx_ssl_total",
    "downstream_cx_upgrades_total",
    "downstream_flow_control_paused_reading_total",
    "downstream_flow_control_resumed_reading_total",
    "downstream_rq_failed_path_normalization",
    "downstream_rq_header_timeout",
    "downstream_rq_http2_total",
    "downstream_rq_http3_total",
    "downstream_rq_idle_timeout",
    "downstream_rq_max_duration_reached",
    "downstream_rq_non_relative_path",
    "downstream_rq_overload_close",
    "downstream_rq_redirected_with_normalized_path",
    "downstream_rq_rejected_via_ip_detection",
    "downstream_rq_rx_reset",
    "downstream_rq_timeout",
    "downstream_rq_too_large",
    "downstream_rq_too_many_premature_resets",
    "downstream_rq_tx_reset",
    "downstream_rq_ws_on_non_ws_route",
    "passthrough_internal_redirect_bad_location",
    "passthrough_internal_redirect_no_route",
    "passthrough_internal_redirect_predicate",
    "passthrough_internal_redirect_too_many_redirects",
    "passthrough_internal_redirect_unsafe_scheme",
    "rq_overload_local_reply",
    "rq_redirect",
    "rs_too_large",
    "tracing.client_enabled",
    "tracing.health_check",
    "tracing.not_traceable",
    "tracing.random_sampling",
    "tracing.service_forced",
];

const IDLE_GAUGES: &[&str] = &[
    "downstream_cx_http2_active",
    "downstream_cx_http3_active",
    "downstream_cx_rx_bytes_buffered",
    "downstream_cx_ssl_active",
    "downstream_cx_tx_bytes_buffered",
    "downstream_cx_upgrades_active",
];

/// The HTTP/1 codec's process-wide `http1.*` counters (not per HCM).
const HTTP1_COUNTERS: &[&str] = &[
    "http1.dropped_headers_with_underscores",
    "http1.metadata_not_supported_error",
    "http1.requests_rejected_with_underscores_in_headers",
    "http1.response_flood",
];

// === impl HcmStats ===

impl HcmStats {
    /// Creates (or re-attaches to) every stat under `http.<stat_prefix>.`.
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let prefix = format!("http.{stat_prefix}.");
        let c = |name: &str| store.counter(&format!("{prefix}{name}"));
        let g = |name: &str| store.gauge(&format!("{prefix}{name}"));
        let ms =
            |name: &str| store.histogram(&format!("{prefix}{name}"), HistogramUnit::Milliseconds);
        for name in IDLE_COUNTERS {
            c(name);
        }
        for name in IDLE_GAUGES {
            g(name);
        }
        for name in HTTP1_COUNTERS {
            store.counter(name);
        }
        Self {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: g("downstream_cx_active"),
            downstream_cx_http1_total: c("downstream_cx_http1_total"),
            downstream_cx_http1_active: g("downstream_cx_http1_active"),
            downstream_cx_destroy: c("downstream_cx_destroy"),
            downstream_cx_destroy_local: c("downstream_cx_destroy_local"),
            downstream_cx_destroy_remote: c("downstream_cx_destroy_remote"),
            downstream_cx_destroy_active_rq: c("downstream_cx_destroy_active_rq"),
            downstream_cx_destroy_local_active_rq: c("downstream_cx_destroy_local_active_rq"),
            downstream_cx_destroy_remote_active_rq: c("downstream_cx_destroy_remote_active_rq"),
            downstream_cx_idle_timeout: c("downstream_cx_idle_timeout"),
            downstream_cx_protocol_error: c("downstream_cx_protocol_error"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_cx_length_ms: ms("downstream_cx_length_ms"),
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_http1_total: c("downstream_rq_http1_total"),
            downstream_rq_active: g("downstream_rq_active"),
            downstream_rq_completed: c("downstream_rq_completed"),
            downstream_rq_1xx: c("downstream_rq_1xx"),
            downstream_rq_2xx: c("downstream_rq_2xx"),
            downstream_rq_3xx: c("downstream_rq_3xx"),
            downstream_rq_4xx: c("downstream_rq_4xx"),
            downstream_rq_5xx: c("downstream_rq_5xx"),
            downstream_rq_response_before_rq_complete: c(
                "downstream_rq_response_before_rq_complete",
            ),
            downstream_rq_time: ms("downstream_rq_time"),
            rq_total: c("rq_total"),
            rq_direct_response: c("rq_direct_response"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_reset_after_downstream_response_started: c(
                "rq_reset_after_downstream_response_started",
            ),
        }
    }

    /// `downstream_rq_<N>xx` for the status sent downstream.
    pub(crate) fn record_status(&self, status: u16) {
        match status / 100 {
            1 => self.downstream_rq_1xx.inc(),
            2 => self.downstream_rq_2xx.inc(),
            3 => self.downstream_rq_3xx.inc(),
            4 => self.downstream_rq_4xx.inc(),
            5 => self.downstream_rq_5xx.inc(),
            _ => {}
        }
    }
}
