//! The server-wide stats Envoy keeps outside any listener or cluster: `server.*`,
//! `listener_manager.*` and the thread-level zero counters tools expect to find.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redvoy_admin::ServerState;
use redvoy_stats::{Gauge, HistogramUnit, Store};
use tracing::debug;

/// How often `server.uptime` and the memory gauges are refreshed (Envoy: every stats flush).
pub const SERVER_STATS_REFRESH: Duration = Duration::from_secs(1);

pub struct ServerStats {
    live: Gauge,
    state: Gauge,
    uptime: Gauge,
    memory_allocated: Gauge,
    memory_heap_size: Gauge,
    memory_physical_size: Gauge,
    pub total_connections: Gauge,
    started: Instant,
}

impl ServerStats {
    pub fn new(store: &Store, concurrency: usize) -> Arc<Self> {
        let g = |n: &str| store.gauge(&format!("server.{n}"));
        let c = |n: &str| store.counter(&format!("server.{n}"));
        g("concurrency").set(concurrency as u64);
        // No certificates: Envoy reports u32::MAX days.
        g("days_until_first_cert_expiring").set(u64::from(u32::MAX));
        g("version").set(version_number());
        for name in [
            "compilation_settings.fips_mode",
            "hot_restart_epoch",
            "parent_connections",
            "seconds_until_first_ocsp_response_expiring",
            "stats_recent_lookups",
        ] {
            g(name);
        }
        for name in [
            "debug_assertion_failures",
            "dropped_stat_flushes",
            "dynamic_unknown_fields",
            "envoy_bug_failures",
            "envoy_notifications",
            "static_unknown_fields",
            "wip_protos",
            "main_thread.watchdog_mega_miss",
            "main_thread.watchdog_miss",
        ] {
            c(name);
        }
        for i in 0..concurrency {
            c(&format!("worker_{i}.watchdog_mega_miss"));
            c(&format!("worker_{i}.watchdog_miss"));
        }
        store.histogram("server.initialization_time_ms", HistogramUnit::Milliseconds);
        for name in [
            "main_thread.watchdog_mega_miss",
            "main_thread.watchdog_miss",
            "workers.watchdog_mega_miss",
            "workers.watchdog_miss",
        ] {
            store.counter(name);
        }
        let stats = Arc::new(Self {
            live: g("live"),
            state: g("state"),
            uptime: g("uptime"),
            memory_allocated: g("memory_allocated"),
            memory_heap_size: g("memory_heap_size"),
            memory_physical_size: g("memory_physical_size"),
            total_connections: g("total_connections"),
            started: Instant::now(),
        });
        stats.refresh(&ServerState::new());
        stats
    }

    /// `server.state`, `server.live`, uptime and allocator figures, refreshed as Envoy does on
    /// each stats flush (jemalloc's allocated / active / resident stand in for tcmalloc's
    /// allocated / heap / physical sizes).
    pub fn refresh(&self, server: &ServerState) {
        self.state.set(server.state().gauge_value());
        self.live.set(u64::from(server.live()));
        self.uptime.set(self.started.elapsed().as_secs());
        if tikv_jemalloc_ctl::epoch::advance().is_err() {
            debug!("jemalloc stats unavailable");
            return;
        }
        if let Ok(v) = tikv_jemalloc_ctl::stats::allocated::read() {
            self.memory_allocated.set(v as u64);
        }
        if let Ok(v) = tikv_jemalloc_ctl::stats::active::read() {
            self.memory_heap_size.set(v as u64);
        }
        if let Ok(v) = tikv_jemalloc_ctl::stats::resident::read() {
            self.memory_physical_size.set(v as u64);
        }
    }
}

/// Envoy derives `server.version` from its source revision; redvoy from its semantic version
/// (`major * 10000 + minor * 100 + patch`).
fn version_number() -> u64 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    let patch = parts.next().unwrap_or(0);
    major * 10_000 + minor * 100 + patch
}

/// `listener_manager.*`, for static listeners (xDS updates will move these).
pub struct ListenerManagerStats;

impl ListenerManagerStats {
    pub fn register(store: &Store, listeners: usize, concurrency: usize) {
        let c = |n: &str| store.counter(&format!("listener_manager.{n}"));
        let g = |n: &str| store.gauge(&format!("listener_manager.{n}"));
        c("listener_added").add(listeners as u64);
        c("listener_create_success").add((listeners * concurrency) as u64);
        for name in [
            "listener_create_failure",
            "listener_in_place_updated",
            "listener_modified",
            "listener_removed",
            "listener_stopped",
        ] {
            c(name);
        }
        g("total_listeners_active").set(listeners as u64);
        for name in [
            "total_filter_chains_draining",
            "total_listeners_draining",
            "total_listeners_warming",
            "workers_pinned",
        ] {
            g(name);
        }
    }

    pub fn workers_started(store: &Store) {
        store.gauge("listener_manager.workers_started").set(1);
    }
}
