//! Handles to stats that a [`DeferredFamily`](crate::DeferredFamily) declares: listed by every
//! renderer from the start (at zero, unused), stored only when first written. A cluster has
//! about fifty stats that its traffic moves; a mesh's thousand mostly idle clusters stored
//! them all, at some 250 bytes each, where a lazy handle is 40 bytes until its first write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::{Counter, Gauge, Histogram, HistogramUnit, Store};

/// Where a component's lazy stats are created: the store and the common name prefix.
pub struct LazyScope {
    store: Store,
    prefix: String,
    /// The component is gone and its stats with it (a removed cluster): a first write from a
    /// handle still held elsewhere (a connection closing later) must not bring them back.
    retired: AtomicBool,
}

impl std::fmt::Debug for LazyScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyScope")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl LazyScope {
    /// `prefix` must also be declared with [`Store::defer`], with every suffix the component's
    /// lazy handles use, for the stats to be listed before their first write.
    pub fn new(store: &Store, prefix: String) -> Arc<Self> {
        Arc::new(Self {
            store: store.clone(),
            prefix,
            retired: AtomicBool::new(false),
        })
    }

    pub fn counter(self: &Arc<Self>, suffix: &'static str) -> LazyCounter {
        LazyCounter(Lazy::new(self, suffix))
    }

    pub fn gauge(self: &Arc<Self>, suffix: &'static str) -> LazyGauge {
        LazyGauge(Lazy::new(self, suffix))
    }

    pub fn histogram(self: &Arc<Self>, suffix: &'static str, unit: HistogramUnit) -> LazyHistogram {
        LazyHistogram(Lazy::new(self, suffix), unit)
    }

    /// From now on, handles not yet written record into cells of their own, unlisted, as
    /// handles of removed stats do (call it when the store forgets the prefix).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

/// A handle not written through yet. Handles are shared (`Arc`), not copied, by the components
/// that pass them around: a copy would only see another copy's writes through the store, and
/// not at all for a name the stats matcher rejects.
#[derive(Debug)]
struct Lazy<T> {
    scope: Arc<LazyScope>,
    suffix: &'static str,
    handle: OnceLock<T>,
}

impl<T> Lazy<T> {
    fn new(scope: &Arc<LazyScope>, suffix: &'static str) -> Self {
        Self {
            scope: Arc::clone(scope),
            suffix,
            handle: OnceLock::new(),
        }
    }

    /// The stored stat, created now if it was not yet (a detached one, `None` to `create`, once
    /// retired).
    fn get(&self, create: impl FnOnce(Option<(&Store, &str)>) -> T) -> &T {
        self.handle.get_or_init(|| {
            if self.scope.is_retired() {
                create(None)
            } else {
                create(Some((&self.scope.store, &self.scope.name(self.suffix))))
            }
        })
    }

    /// The stat if it exists: this handle's, or one the store holds under the name (written
    /// through an earlier handle of the same component, e.g. before a cluster was replaced).
    fn existing(&self, find: impl FnOnce(&Store, &str) -> Option<T>) -> Option<&T> {
        if let Some(handle) = self.handle.get() {
            return Some(handle);
        }
        if self.scope.is_retired() {
            return None;
        }
        let found = find(&self.scope.store, &self.scope.name(self.suffix))?;
        Some(self.handle.get_or_init(|| found))
    }
}

/// A [`Counter`] stored on its first write.
#[derive(Debug)]
pub struct LazyCounter(Lazy<Counter>);

impl LazyCounter {
    /// The stored counter (created now if it was not yet).
    pub fn get(&self) -> &Counter {
        self.0
            .get(|at| at.map_or_else(Counter::default, |(store, name)| store.counter(name)))
    }

    pub fn inc(&self) {
        self.get().inc();
    }

    pub fn add(&self, n: u64) {
        self.get().add(n);
    }

    pub fn value(&self) -> u64 {
        self.0
            .existing(Store::existing_counter)
            .map_or(0, Counter::value)
    }

    pub fn used(&self) -> bool {
        self.0
            .existing(Store::existing_counter)
            .is_some_and(Counter::used)
    }
}

/// A [`Gauge`] stored on its first write.
#[derive(Debug)]
pub struct LazyGauge(Lazy<Gauge>);

impl LazyGauge {
    /// The stored gauge (created now if it was not yet).
    pub fn get(&self) -> &Gauge {
        self.0
            .get(|at| at.map_or_else(Gauge::default, |(store, name)| store.gauge(name)))
    }

    pub fn inc(&self) {
        self.get().inc();
    }

    pub fn dec(&self) {
        self.get().dec();
    }

    pub fn add(&self, n: u64) {
        self.get().add(n);
    }

    pub fn sub(&self, n: u64) {
        self.get().sub(n);
    }

    pub fn set(&self, v: u64) {
        self.get().set(v);
    }

    pub fn value(&self) -> u64 {
        self.0
            .existing(Store::existing_gauge)
            .map_or(0, Gauge::value)
    }

    pub fn used(&self) -> bool {
        self.0
            .existing(Store::existing_gauge)
            .is_some_and(Gauge::used)
    }
}

/// A [`Histogram`] stored on its first recorded value.
#[derive(Debug)]
pub struct LazyHistogram(Lazy<Histogram>, HistogramUnit);

impl LazyHistogram {
    /// The stored histogram (created now if it was not yet).
    pub fn get(&self) -> &Histogram {
        let unit = self.1;
        self.0.get(|at| match at {
            Some((store, name)) => store.histogram(name, unit),
            None => Histogram::new(unit),
        })
    }

    pub fn record(&self, value: u64) {
        self.get().record(value);
    }

    pub fn count(&self) -> u64 {
        self.0
            .existing(Store::existing_histogram)
            .map_or(0, Histogram::count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeferredFamily;

    #[test]
    fn listed_before_the_first_write_and_stored_by_it() {
        let store = Store::new();
        store.defer(DeferredFamily {
            prefix: "cluster.c.".into(),
            members: Arc::from([String::new()]),
            counters: &["upstream_rq_total"],
            gauges: &["upstream_rq_active"],
            histograms: &["upstream_cx_connect_ms"],
        });
        let scope = LazyScope::new(&store, "cluster.c.".into());
        let total = scope.counter("upstream_rq_total");
        let active = scope.gauge("upstream_rq_active");
        let connect = scope.histogram("upstream_cx_connect_ms", HistogramUnit::Milliseconds);
        assert_eq!(store.value_of("cluster.c.upstream_rq_total"), Some(0));
        assert!(store.render_text(None, true).is_empty(), "nothing used yet");
        assert_eq!(total.value(), 0);
        // Another component's handle of the same name sees the first one's writes.
        let copy = scope.counter("upstream_rq_total");
        assert_eq!(copy.value(), 0);
        total.inc();
        assert_eq!(copy.value(), 1);
        copy.add(2);
        assert_eq!(total.value(), 3);
        assert_eq!(store.value_of("cluster.c.upstream_rq_total"), Some(3));
        active.set(0);
        assert!(active.used());
        assert!(store
            .render_text(None, true)
            .contains("cluster.c.upstream_rq_active: 0"));
        connect.record(5);
        assert_eq!(connect.count(), 1);
        assert_eq!(
            store
                .histograms()
                .iter()
                .filter(|(n, _)| n == "cluster.c.upstream_cx_connect_ms")
                .count(),
            1
        );
    }

    #[test]
    fn a_retired_scope_writes_nothing_back_into_the_store() {
        let store = Store::new();
        let scope = LazyScope::new(&store, "cluster.gone.".into());
        let written = scope.counter("upstream_cx_total");
        written.inc();
        let late = scope.counter("upstream_cx_destroy");
        store.remove_prefix("cluster.gone.", &[]);
        scope.retire();
        late.inc();
        assert_eq!(late.value(), 1, "the handle still counts");
        assert_eq!(written.value(), 1);
        assert_eq!(store.value_of("cluster.gone.upstream_cx_destroy"), None);
        assert_eq!(store.value_of("cluster.gone.upstream_cx_total"), None);
    }
}
