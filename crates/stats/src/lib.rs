//! Envoy-style stats store: counters, gauges and histograms addressed by their full Envoy name
//! (`redis.<stat_prefix>.command.get.total`, `cluster.<name>.upstream_cx_total`, ...), the
//! periodic flush that latches histogram intervals, and the `/stats` text and JSON renderings.
//!
//! Owns: stat storage and rendering. Must never depend on another redvoy crate. Components
//! create their handles once (a struct of handles per component) and the data path only touches
//! those handles: recording is a relaxed atomic operation, never a lock or a map lookup.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use regex::Regex;

mod histogram;
mod render;
pub use histogram::{Histogram, HistogramUnit, QUANTILE_COUNT, SUPPORTED_QUANTILES};

/// Envoy's default `stats_flush_interval`: histogram intervals are latched this often.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest flush period `spawn_flush` uses.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(1);

/// A monotonically increasing count. Cloning shares the value.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<StatCell>);

/// A value that goes up and down (Envoy gauges are unsigned; going below zero saturates).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<StatCell>);

#[derive(Debug, Default)]
struct StatCell {
    value: AtomicU64,
    used: AtomicBool,
}

// === impl Counter ===

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        // Only written once in practice; the load avoids dirtying the cache line on every add.
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }

    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.0.value.store(0, Ordering::Relaxed);
    }
}

// === impl Gauge ===

impl Gauge {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.sub(1);
    }

    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        self.mark_used();
    }

    pub fn sub(&self, n: u64) {
        // Saturating: a racing reader must never see a wrapped-around huge value.
        let _ = self
            .0
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        self.mark_used();
    }

    pub fn set(&self, v: u64) {
        self.0.value.store(v, Ordering::Relaxed);
        self.mark_used();
    }

    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }

    fn mark_used(&self) {
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<String, Counter>,
    gauges: BTreeMap<String, Gauge>,
    histograms: BTreeMap<String, Histogram>,
}

/// The process-wide store. Cloning shares it. The mutex guards only the name → handle maps and
/// is taken when a component creates its handles or the admin port renders, never per request.
#[derive(Clone, Default)]
pub struct Store {
    registry: Arc<Mutex<Registry>>,
}

// === impl Store ===

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut guard = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Returns the counter with this full name, creating it at zero the first time.
    pub fn counter(&self, name: &str) -> Counter {
        self.with(|r| r.counters.entry(name.to_owned()).or_default().clone())
    }

    /// Returns the gauge with this full name, creating it at zero the first time.
    pub fn gauge(&self, name: &str) -> Gauge {
        self.with(|r| r.gauges.entry(name.to_owned()).or_default().clone())
    }

    /// Returns the histogram with this full name, creating it empty the first time.
    pub fn histogram(&self, name: &str, unit: HistogramUnit) -> Histogram {
        self.with(|r| {
            r.histograms
                .entry(name.to_owned())
                .or_insert_with(|| Histogram::new(unit))
                .clone()
        })
    }

    /// A snapshot of every counter and gauge (name, value, used), in name order.
    pub fn counters_and_gauges(&self) -> Vec<(String, u64, bool)> {
        self.with(|r| {
            let mut all: Vec<(String, u64, bool)> = r
                .counters
                .iter()
                .map(|(n, c)| (n.clone(), c.value(), c.used()))
                .chain(
                    r.gauges
                        .iter()
                        .map(|(n, g)| (n.clone(), g.value(), g.used())),
                )
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        })
    }

    /// Every histogram, in name order.
    pub fn histograms(&self) -> Vec<(String, Histogram)> {
        self.with(|r| {
            r.histograms
                .iter()
                .map(|(n, h)| (n.clone(), h.clone()))
                .collect()
        })
    }

    /// Looks up the current value of a counter or gauge by full name (admin and tests).
    pub fn value_of(&self, name: &str) -> Option<u64> {
        self.with(|r| {
            r.counters
                .get(name)
                .map(Counter::value)
                .or_else(|| r.gauges.get(name).map(Gauge::value))
        })
    }

    /// Envoy's `/stats` text: `name: value` for every counter and gauge in name order, then
    /// `name: P0(i,c) ... P100(i,c)` (or `No recorded values`) for every histogram in name
    /// order. `filter` keeps names it matches anywhere (RE2 `PartialMatch`); `used_only` keeps
    /// stats written since start-up, and histograms merged at least once.
    pub fn render_text(&self, filter: Option<&Regex>, used_only: bool) -> String {
        let (scalars, histograms) = self.select(filter, used_only);
        render::text(&scalars, &histograms)
    }

    /// Envoy's `/stats?format=json` with the same selection as `render_text`.
    pub fn render_json(&self, filter: Option<&Regex>, used_only: bool) -> String {
        let (scalars, histograms) = self.select(filter, used_only);
        render::json(&scalars, &histograms)
    }

    /// Latches every histogram's interval (Envoy's stats flush). `spawn_flush` calls this every
    /// `stats_flush_interval`; until the first flush after a value is recorded a histogram
    /// reads `No recorded values`, as in Envoy.
    pub fn flush(&self) {
        // Clone the handles first: merging computes quantiles and must not hold the registry
        // lock that components take when they create stats.
        for (_, h) in self.histograms() {
            h.merge();
        }
    }

    /// Envoy's `/reset_counters`: every counter back to zero. Gauges and histograms are kept,
    /// and so is each counter's "used" mark (`usedonly` still lists it).
    pub fn reset_counters(&self) {
        let counters: Vec<Counter> = self.with(|r| r.counters.values().cloned().collect());
        for c in counters {
            c.reset();
        }
    }

    fn select(
        &self,
        filter: Option<&Regex>,
        used_only: bool,
    ) -> (Vec<render::Scalar>, Vec<(String, Histogram)>) {
        let keep = |name: &str, used: bool| {
            (!used_only || used) && filter.is_none_or(|re| re.is_match(name))
        };
        let scalars = self
            .counters_and_gauges()
            .into_iter()
            .filter(|(name, _, used)| keep(name, *used))
            .map(|(name, value, _)| render::Scalar { name, value })
            .collect();
        let histograms = self
            .histograms()
            .into_iter()
            .filter(|(name, h)| keep(name, !used_only || h.used()))
            .collect();
        (scalars, histograms)
    }
}

/// Starts the periodic stats flush on the current tokio runtime: `store.flush()` every
/// `interval`, first after one full interval, as Envoy's flush timer does. Runs until the
/// returned task is aborted or the runtime stops.
pub fn spawn_flush(store: Store, interval: Duration) -> tokio::task::JoinHandle<()> {
    // tokio refuses a zero period; Envoy's own minimum for `stats_flush_interval` is 1 ms.
    let interval = interval.max(MIN_FLUSH_INTERVAL);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(start, interval);
        // A late flush (busy main thread) just makes that interval longer, like Envoy's timer.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            store.flush();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let s = Store::new();
        s.counter("redis.p.command.get.total").add(3);
        s.gauge("redis.p.downstream_cx_active").set(0);
        s.counter("redis.p.downstream_cx_total");
        s.counter("cluster.c.upstream_cx_total").inc();
        s.histogram("a.first.latency", HistogramUnit::Milliseconds);
        s.histogram("redis.p.command.get.latency", HistogramUnit::Milliseconds)
            .record(92);
        s
    }

    #[test]
    fn text_lists_scalars_by_name_then_histograms_by_name() {
        let s = store();
        assert_eq!(
            s.render_text(None, false),
            "cluster.c.upstream_cx_total: 1\n\
             redis.p.command.get.total: 3\n\
             redis.p.downstream_cx_active: 0\n\
             redis.p.downstream_cx_total: 0\n\
             a.first.latency: No recorded values\n\
             redis.p.command.get.latency: No recorded values\n"
        );
    }

    #[test]
    fn histograms_show_quantiles_after_a_flush() {
        let s = store();
        s.flush();
        let text = s.render_text(Some(&Regex::new("latency").unwrap()), false);
        assert_eq!(
            text,
            "a.first.latency: No recorded values\n\
             redis.p.command.get.latency: P0(92.5,92.5) P25(92.5,92.5) P50(92.5,92.5) \
             P75(92.5,92.5) P90(92.5,92.5) P95(92.5,92.5) P99(92.5,92.5) P99.5(92.5,92.5) \
             P99.9(92.5,92.5) P100(92.5,92.5)\n"
        );
        s.flush();
        assert!(s
            .render_text(Some(&Regex::new("get.latency").unwrap()), true)
            .starts_with("redis.p.command.get.latency: P0(nan,92.5) P25(nan,92.5)"));
    }

    #[test]
    fn filter_is_an_unanchored_regex_and_usedonly_skips_untouched_stats() {
        let s = store();
        let re = Regex::new(r"^redis\.p\.(command|downstream)").unwrap();
        assert_eq!(
            s.render_text(Some(&re), true),
            "redis.p.command.get.total: 3\nredis.p.downstream_cx_active: 0\n"
        );
        assert_eq!(
            s.render_text(Some(&Regex::new("cx_total").unwrap()), false),
            "cluster.c.upstream_cx_total: 1\nredis.p.downstream_cx_total: 0\n"
        );
        assert_eq!(
            s.render_text(Some(&Regex::new("nomatch").unwrap()), false),
            ""
        );
        s.flush();
        assert!(s
            .render_text(None, true)
            .ends_with("redis.p.downstream_cx_active: 0\nredis.p.command.get.latency: P0(92.5,92.5) P25(92.5,92.5) P50(92.5,92.5) P75(92.5,92.5) P90(92.5,92.5) P95(92.5,92.5) P99(92.5,92.5) P99.5(92.5,92.5) P99.9(92.5,92.5) P100(92.5,92.5)\n"));
    }

    #[test]
    fn json_has_envoys_shape() {
        let s = store();
        assert_eq!(
            s.render_json(Some(&Regex::new("nomatch").unwrap()), false),
            r#"{"stats":[]}"#
        );
        assert_eq!(
            s.render_json(Some(&Regex::new("^cluster").unwrap()), false),
            r#"{"stats":[{"name":"cluster.c.upstream_cx_total","value":1}]}"#
        );
        s.flush();
        let nulls = [r#"{"cumulative":null,"interval":null}"#; QUANTILE_COUNT].join(",");
        let halves = [r#"{"cumulative":92.5,"interval":92.5}"#; QUANTILE_COUNT].join(",");
        assert_eq!(
            s.render_json(Some(&Regex::new("get.total|latency").unwrap()), false),
            format!(
                r#"{{"stats":[{{"name":"redis.p.command.get.total","value":3}},{{"histograms":{{"supported_quantiles":[0,25,50,75,90,95,99,99.5,99.9,100],"computed_quantiles":[{{"name":"a.first.latency","values":[{nulls}]}},{{"name":"redis.p.command.get.latency","values":[{halves}]}}]}}}}]}}"#
            )
        );
    }

    #[test]
    fn reset_counters_zeroes_counters_only() {
        let s = store();
        s.gauge("redis.p.downstream_cx_active").set(7);
        s.reset_counters();
        assert_eq!(s.value_of("redis.p.command.get.total"), Some(0));
        assert_eq!(s.value_of("cluster.c.upstream_cx_total"), Some(0));
        assert_eq!(s.value_of("redis.p.downstream_cx_active"), Some(7));
        assert!(s
            .render_text(None, true)
            .contains("redis.p.command.get.total: 0\n"));
    }

    #[tokio::test]
    async fn spawn_flush_latches_periodically() {
        let s = store();
        let task = spawn_flush(s.clone(), Duration::from_millis(20));
        let h = s.histogram("redis.p.command.get.latency", HistogramUnit::Milliseconds);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !h.used() {
            assert!(tokio::time::Instant::now() < deadline, "no flush happened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
    }
}
