//! Envoy-style stats store: counters, gauges and histograms addressed by their full Envoy name
//! (`redis.<stat_prefix>.command.get.total`, `cluster.<name>.upstream_cx_total`, ...), and the
//! `/stats` text rendering.
//!
//! Owns: stat storage and rendering. Must never depend on another redvoy crate. Components
//! create their handles once (a struct of handles per component) and the data path only touches
//! those handles: recording is a relaxed atomic operation, never a lock or a map lookup.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

mod histogram;
pub use histogram::{Histogram, HistogramUnit};

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
                .chain(r.gauges.iter().map(|(n, g)| (n.clone(), g.value(), g.used())))
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
}
