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
    /// Days until the first certificate of any TLS context expires (u32::MAX without any).
    pub days_until_first_cert_expiring: Gauge,
    started: Instant,
}

impl ServerStats {
    pub fn new(store: &Store, concurrency: usize) -> Arc<Self> {
        let g = |n: &str| store.gauge(&format!("server.{n}"));
        let c = |n: &str| store.counter(&format!("server.{n}"));
        g("concurrency").set(concurrency as u64);
        // No certificates: Envoy reports u32::MAX days.
        let days_until_first_cert_expiring = g("days_until_first_cert_expiring");
        days_until_first_cert_expiring.set(u64::from(u32::MAX));
        g("version").set(version_number());
        // Written at start-up by Envoy (so listed by `usedonly`) though they stay 0 here.
        for name in ["compilation_settings.fips_mode", "stats_recent_lookups"] {
            g(name).set(0);
        }
        for name in [
            "hot_restart_epoch",
            "parent_connections",
            "seconds_until_first_ocsp_response_expiring",
        ] {
            g(name);
        }
        for name in [
            "debug_assertion_failures",
            "dropped_stat_flushes",
            "envoy_bug_failures",
            "envoy_notifications",
            "main_thread.watchdog_mega_miss",
            "main_thread.watchdog_miss",
        ] {
            c(name);
        }
        // Envoy adds 0 to these after validating the bootstrap, which marks them used.
        for name in [
            "dynamic_unknown_fields",
            "static_unknown_fields",
            "wip_protos",
        ] {
            c(name).add(0);
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
            days_until_first_cert_expiring,
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
    /// The counters and gauges the listener manager does not own (it owns the listener
    /// counts: see `listener_manager.rs`).
    pub fn register(store: &Store, clusters: usize, concurrency: usize) {
        Self::clusters_inflated(store, clusters, concurrency);
        // 0 until the initial fetches are done (then 1), as Envoy shows it while initializing.
        store.gauge("listener_manager.workers_started").set(0);
    }

    /// `thread_local_cluster_manager.<thread>.clusters_inflated`: every thread has every cluster.
    pub fn clusters_inflated(store: &Store, clusters: usize, concurrency: usize) {
        let threads = std::iter::once("main_thread".to_owned())
            .chain((0..concurrency).map(|i| format!("worker_{i}")));
        for thread in threads {
            store
                .gauge(&format!(
                    "thread_local_cluster_manager.{thread}.clusters_inflated"
                ))
                .set(clusters as u64);
        }
    }

    pub fn workers_started(store: &Store) {
        store.gauge("listener_manager.workers_started").set(1);
    }
}
