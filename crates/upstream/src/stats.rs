//! `cluster.<name>.*` stats, declared once (Envoy's `ALL_CLUSTER_*_STATS` macros in
//! `envoy/upstream/upstream.h` and the load balancers' own gauges).

use std::sync::Arc;

use redvoy_config::model::{CircuitBreakers, LbPolicy, Thresholds};
use redvoy_stats::{
    DeferredFamily, Gauge, HistogramUnit, LazyCounter, LazyGauge, LazyHistogram, LazyScope, Store,
};

use crate::lb::LbTableStats;

/// Handles to every stat of one cluster, shared (`Arc`) by whatever records them: the data
/// path (connection pools in the proxy) updates the traffic ones, the cluster manager the rest.
#[derive(Debug)]
pub struct ClusterStats {
    scope: Arc<LazyScope>,
    // Connections.
    pub upstream_cx_total: LazyCounter,
    pub upstream_cx_active: LazyGauge,
    pub upstream_cx_connect_fail: LazyCounter,
    pub upstream_cx_connect_timeout: LazyCounter,
    pub upstream_cx_destroy: LazyCounter,
    pub upstream_cx_destroy_local: LazyCounter,
    pub upstream_cx_destroy_remote: LazyCounter,
    pub upstream_cx_destroy_with_active_rq: LazyCounter,
    pub upstream_cx_destroy_local_with_active_rq: LazyCounter,
    pub upstream_cx_destroy_remote_with_active_rq: LazyCounter,
    pub upstream_cx_protocol_error: LazyCounter,
    pub upstream_cx_rx_bytes_total: LazyCounter,
    pub upstream_cx_tx_bytes_total: LazyCounter,
    pub upstream_cx_rx_bytes_buffered: LazyGauge,
    pub upstream_cx_tx_bytes_buffered: LazyGauge,
    pub upstream_cx_none_healthy: LazyCounter,
    pub upstream_cx_overflow: LazyCounter,
    /// `circuit_breakers.default.cx_open`: 1 while the connection breaker is full.
    pub circuit_breakers_default_cx_open: LazyGauge,
    /// `circuit_breakers.default.rq_open`: 1 while the request breaker is full.
    pub circuit_breakers_default_rq_open: LazyGauge,
    /// `circuit_breakers.<priority>.remaining_*`, `[DEFAULT, HIGH]`: present for a priority
    /// whose thresholds have `track_remaining`.
    pub circuit_breakers_remaining: [Option<RemainingGauges>; 2],
    pub upstream_cx_connect_ms: LazyHistogram,
    pub upstream_cx_length_ms: LazyHistogram,
    // Requests.
    pub upstream_rq_total: LazyCounter,
    pub upstream_rq_active: LazyGauge,
    pub upstream_rq_completed: LazyCounter,
    pub upstream_rq_timeout: LazyCounter,
    pub upstream_rq_cancelled: LazyCounter,
    pub upstream_rq_pending_active: LazyGauge,
    pub upstream_rq_pending_overflow: LazyCounter,
    pub upstream_rq_per_cx: LazyHistogram,
    pub upstream_internal_redirect_succeeded_total: LazyCounter,
    pub upstream_internal_redirect_failed_total: LazyCounter,
    // Membership and discovery.
    pub membership_change: LazyCounter,
    pub membership_total: LazyGauge,
    pub membership_healthy: LazyGauge,
    pub membership_degraded: LazyGauge,
    pub membership_excluded: LazyGauge,
    pub max_host_weight: LazyGauge,
    pub update_attempt: LazyCounter,
    pub update_success: LazyCounter,
    pub update_failure: LazyCounter,
    pub update_empty: LazyCounter,
    pub update_no_rebuild: LazyCounter,
    pub version: LazyGauge,
    pub warming_state: LazyGauge,
    /// `default.total_match_count`: one per host object created (Envoy's transport socket
    /// matcher runs for every host it builds, including each DNS re-resolution).
    pub default_total_match_count: LazyCounter,
    // Load balancing.
    pub lb_healthy_panic: LazyCounter,
    pub lb: LbStats,
}

/// `circuit_breakers.<priority>.remaining_*` (`track_remaining`): each threshold less what is
/// counted against it, as Envoy's resource manager publishes them.
#[derive(Clone, Debug)]
pub struct RemainingGauges {
    /// `remaining_cx`: `max_connections` less the open connections.
    pub cx: Gauge,
    /// `remaining_cx_pools`: `max_connection_pools` (unlimited: `u64::MAX`).
    pub cx_pools: Gauge,
    /// `remaining_pending`: `max_pending_requests`.
    pub pending: Gauge,
    /// `remaining_rq`: `max_requests` less the requests in flight.
    pub rq: Gauge,
    /// `remaining_retries`: `max_retries` (Envoy sets it to 0 once a retry budget is read).
    pub retries: Gauge,
}

/// The load balancer's own gauges, present only for the hashing policies.
#[derive(Clone, Debug)]
pub enum LbStats {
    None,
    /// `ring_hash_lb.size` / `.min_hashes_per_host` / `.max_hashes_per_host`.
    RingHash {
        size: Gauge,
        min_hashes_per_host: Gauge,
        max_hashes_per_host: Gauge,
    },
    /// `maglev_lb.min_entries_per_host` / `.max_entries_per_host`.
    Maglev {
        min_entries_per_host: Gauge,
        max_entries_per_host: Gauge,
    },
}

/// Every `cluster.<name>.` counter, gauge and histogram besides the load balancer's and the
/// circuit breakers' `remaining_*`: declared as one deferred family, listed from the start and
/// stored on first write. Most clusters of a mesh see no traffic; stored, these were half of
/// what one cost. The first group are [`ClusterStats`]' handles; the second, stats of Envoy's
/// cluster macros that redvoy never moves (HTTP, retries, zones, subsets, ...), listed so that
/// `/stats` shows the same names as Envoy, at zero.
const COUNTERS: &[&str] = &[
    "upstream_cx_total",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_remote",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_protocol_error",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total",
    "upstream_cx_none_healthy",
    "upstream_cx_overflow",
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_timeout",
    "upstream_rq_cancelled",
    "upstream_rq_pending_overflow",
    "upstream_internal_redirect_succeeded_total",
    "upstream_internal_redirect_failed_total",
    "membership_change",
    "update_attempt",
    "update_success",
    "update_failure",
    "update_empty",
    "update_no_rebuild",
    "default.total_match_count",
    "lb_healthy_panic",
    // Never moved.
    "assignment_stale",
    "assignment_timeout_received",
    "assignment_use_cached",
    "bind_errors",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_subsets_created",
    "lb_subsets_fallback",
    "lb_subsets_fallback_panic",
    "lb_subsets_removed",
    "lb_subsets_selected",
    "lb_zone_cluster_too_small",
    "lb_zone_no_capacity_left",
    "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone",
    "lb_zone_routing_sampled",
    "original_dst_host_invalid",
    "retry_or_shadow_abandoned",
    "upstream_cx_close_notify",
    "upstream_cx_connect_attempts_exceeded",
    "upstream_cx_connect_with_0_rtt",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_http3_total",
    "upstream_cx_idle_timeout",
    "upstream_cx_max_duration_reached",
    "upstream_cx_max_requests",
    "upstream_cx_pool_overflow",
    "upstream_cx_preconnect_skipped",
    "upstream_flow_control_backed_up_total",
    "upstream_flow_control_drained_total",
    "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total",
    "upstream_http3_broken",
    "upstream_rq_0rtt",
    "upstream_rq_active_overflow",
    "upstream_rq_maintenance_mode",
    "upstream_rq_max_duration_reached",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_pending_total",
    "upstream_rq_per_try_idle_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_retry",
    "upstream_rq_retry_backoff_exponential",
    "upstream_rq_retry_backoff_ratelimited",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_success",
    "upstream_rq_rx_reset",
    "upstream_rq_rx_reset_no_error",
    "upstream_rq_tx_reset",
];

/// Gauges, in the same two groups (the idle ones are breakers redvoy never counts against: see
/// `connection.rs`).
const GAUGES: &[&str] = &[
    "upstream_cx_active",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_tx_bytes_buffered",
    "circuit_breakers.default.cx_open",
    "circuit_breakers.default.rq_open",
    "upstream_rq_active",
    "upstream_rq_pending_active",
    "membership_total",
    "membership_healthy",
    "membership_degraded",
    "membership_excluded",
    "max_host_weight",
    "version",
    "warming_state",
    // Never moved.
    "lb_subsets_active",
    "upstream_queue_overloaded",
    "circuit_breakers.default.cx_pool_open",
    "circuit_breakers.default.rq_pending_open",
    "circuit_breakers.default.rq_retry_open",
    "circuit_breakers.high.cx_open",
    "circuit_breakers.high.cx_pool_open",
    "circuit_breakers.high.rq_open",
    "circuit_breakers.high.rq_pending_open",
    "circuit_breakers.high.rq_retry_open",
];

const HISTOGRAMS: &[&str] = &[
    "upstream_cx_connect_ms",
    "upstream_cx_length_ms",
    "upstream_rq_per_cx",
];

// === impl ClusterStats ===

impl ClusterStats {
    /// Declares every stat under `cluster.<cluster>.` and hands out lazy handles to them; only
    /// `warming_state`, the load balancer's gauges and `remaining_*` are stored at once.
    pub fn new(
        store: &Store,
        cluster: &str,
        policy: &LbPolicy,
        breakers: &CircuitBreakers,
    ) -> Self {
        let prefix = format!("cluster.{cluster}.");
        let g = |name: &str| store.gauge(&format!("{prefix}{name}"));
        store.defer(DeferredFamily {
            histograms: HISTOGRAMS,
            ..DeferredFamily::flat(prefix.clone(), COUNTERS, GAUGES)
        });
        let scope = LazyScope::new(store, prefix.clone());
        let c = |name: &'static str| {
            debug_assert!(COUNTERS.contains(&name), "{name} is not declared");
            scope.counter(name)
        };
        let lazy_g = |name: &'static str| {
            debug_assert!(GAUGES.contains(&name), "{name} is not declared");
            scope.gauge(name)
        };
        let h = |name: &'static str, unit| {
            debug_assert!(HISTOGRAMS.contains(&name), "{name} is not declared");
            scope.histogram(name, unit)
        };
        let lb = match policy {
            LbPolicy::RingHash { .. } => LbStats::RingHash {
                size: g("ring_hash_lb.size"),
                min_hashes_per_host: g("ring_hash_lb.min_hashes_per_host"),
                max_hashes_per_host: g("ring_hash_lb.max_hashes_per_host"),
            },
            LbPolicy::Maglev { .. } => LbStats::Maglev {
                min_entries_per_host: g("maglev_lb.min_entries_per_host"),
                max_entries_per_host: g("maglev_lb.max_entries_per_host"),
            },
            _ => LbStats::None,
        };
        // Envoy's resource manager starts each `remaining_*` gauge at its maximum.
        let remaining = |priority: &str, t: &Thresholds| {
            t.track_remaining.then(|| {
                let r = |name: &str, max: u64| {
                    let gauge = g(&format!("circuit_breakers.{priority}.remaining_{name}"));
                    gauge.set(max);
                    gauge
                };
                RemainingGauges {
                    cx: r("cx", t.max_connections.into()),
                    cx_pools: r(
                        "cx_pools",
                        t.max_connection_pools.map_or(u64::MAX, u64::from),
                    ),
                    pending: r("pending", t.max_pending_requests.into()),
                    rq: r("rq", t.max_requests.into()),
                    retries: r("retries", t.max_retries.into()),
                }
            })
        };
        Self {
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_active: lazy_g("upstream_cx_active"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: c("upstream_cx_connect_timeout"),
            upstream_cx_destroy: c("upstream_cx_destroy"),
            upstream_cx_destroy_local: c("upstream_cx_destroy_local"),
            upstream_cx_destroy_remote: c("upstream_cx_destroy_remote"),
            upstream_cx_destroy_with_active_rq: c("upstream_cx_destroy_with_active_rq"),
            upstream_cx_destroy_local_with_active_rq: c("upstream_cx_destroy_local_with_active_rq"),
            upstream_cx_destroy_remote_with_active_rq: c(
                "upstream_cx_destroy_remote_with_active_rq",
            ),
            upstream_cx_protocol_error: c("upstream_cx_protocol_error"),
            upstream_cx_rx_bytes_total: c("upstream_cx_rx_bytes_total"),
            upstream_cx_tx_bytes_total: c("upstream_cx_tx_bytes_total"),
            upstream_cx_rx_bytes_buffered: lazy_g("upstream_cx_rx_bytes_buffered"),
            upstream_cx_tx_bytes_buffered: lazy_g("upstream_cx_tx_bytes_buffered"),
            upstream_cx_none_healthy: c("upstream_cx_none_healthy"),
            upstream_cx_overflow: c("upstream_cx_overflow"),
            circuit_breakers_default_cx_open: lazy_g("circuit_breakers.default.cx_open"),
            circuit_breakers_default_rq_open: lazy_g("circuit_breakers.default.rq_open"),
            circuit_breakers_remaining: [
                remaining("default", &breakers.default),
                remaining("high", &breakers.high),
            ],
            upstream_cx_connect_ms: h("upstream_cx_connect_ms", HistogramUnit::Milliseconds),
            upstream_cx_length_ms: h("upstream_cx_length_ms", HistogramUnit::Milliseconds),
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_active: lazy_g("upstream_rq_active"),
            upstream_rq_completed: c("upstream_rq_completed"),
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_cancelled: c("upstream_rq_cancelled"),
            upstream_rq_pending_active: lazy_g("upstream_rq_pending_active"),
            upstream_rq_pending_overflow: c("upstream_rq_pending_overflow"),
            upstream_rq_per_cx: h("upstream_rq_per_cx", HistogramUnit::Unspecified),
            upstream_internal_redirect_succeeded_total: c(
                "upstream_internal_redirect_succeeded_total",
            ),
            upstream_internal_redirect_failed_total: c("upstream_internal_redirect_failed_total"),
            membership_change: c("membership_change"),
            membership_total: lazy_g("membership_total"),
            membership_healthy: lazy_g("membership_healthy"),
            membership_degraded: lazy_g("membership_degraded"),
            membership_excluded: lazy_g("membership_excluded"),
            max_host_weight: lazy_g("max_host_weight"),
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_failure: c("update_failure"),
            update_empty: c("update_empty"),
            update_no_rebuild: c("update_no_rebuild"),
            version: lazy_g("version"),
            warming_state: {
                // Written (0, warm) as soon as Envoy creates the cluster.
                let warming = lazy_g("warming_state");
                warming.set(0);
                warming
            },
            default_total_match_count: c("default.total_match_count"),
            lb_healthy_panic: c("lb_healthy_panic"),
            lb,
            scope,
        }
    }

    /// The cluster is removed and the store forgets its stats: handles still held (by
    /// connections that close later) must not register them again.
    pub fn retire(&self) {
        self.scope.retire();
    }

    /// Publishes what a load balancer build reported.
    pub(crate) fn record_table(&self, table: LbTableStats) {
        match (&self.lb, table) {
            (
                LbStats::RingHash {
                    size,
                    min_hashes_per_host,
                    max_hashes_per_host,
                },
                LbTableStats::Ring {
                    size: s,
                    min_hashes_per_host: lo,
                    max_hashes_per_host: hi,
                },
            ) => {
                size.set(s);
                min_hashes_per_host.set(lo);
                max_hashes_per_host.set(hi);
            }
            (
                LbStats::Maglev {
                    min_entries_per_host,
                    max_entries_per_host,
                },
                LbTableStats::Maglev {
                    min_entries_per_host: lo,
                    max_entries_per_host: hi,
                },
            ) => {
                min_entries_per_host.set(lo);
                max_entries_per_host.set(hi);
            }
            // An empty host set: Envoy builds no table and leaves the last values in place.
            _ => {}
        }
    }
}
