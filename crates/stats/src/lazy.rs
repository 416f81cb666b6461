//! Handles to stats that a [`DeferredFamily`](crate::DeferredFamily) declares: listed by every
//! renderer from the start (at zero, unused), stored only when first written. A cluster has
//! about fifty stats that its traffic moves; a mesh's thousand mostly idle clusters stored
//! them all, at some 250 bytes each, where a lazy handle is 40 bytes until its first write.

use std::sync::{Arc, OnceLock};

use crate::{Counter, Gauge, Histogram, HistogramUnit, Store};

/// Where a component's lazy stats are created: the store and the common name prefix.
pub struct LazyScope {
    store: Store,
    prefix: String,
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

    fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }
}

#[derive(Clone, Debug)]
struct Lazy<T> {
    scope: Arc<LazyScope>,
    suffix: &'static str,
    /// Clones made before the first write each look the stat up once; the store hands them
    /// all the same value.
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
}

/// A [`Counter`] stored on its first write.
#[derive(Clone, Debug)]
pub struct LazyCounter(Lazy<Counter>);

impl LazyCounter {
    /// The stored counter (created now if it was not yet).
    pub fn get(&self) -> &Counter {
        let l = &self.0;
        l.handle
            .get_or_init(|| l.scope.store.counter(&l.scope.name(l.suffix)))
    }

    pub fn inc(&self) {
        self.get().inc();
    }

    pub fn add(&self, n: u64) {
        self.get().add(n);
    }

    pub fn value(&self) -> u64 {
        self.0.handle.get().map_or(0, Counter::value)
    }

    pub fn used(&self) -> bool {
        self.0.handle.get().is_some_and(Counter::used)
    }
}

/// A [`Gauge`] stored on its first write.
#[derive(Clone, Debug)]
pub struct LazyGauge(Lazy<Gauge>);

impl LazyGauge {
    /// The stored gauge (created now if it was not yet).
    pub fn get(&self) -> &Gauge {
        let l = &self.0;
        l.handle
            .get_or_init(|| l.scope.store.gauge(&l.scope.name(l.suffix)))
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
        self.0.handle.get().map_or(0, Gauge::value)
    }

    pub fn used(&self) -> bool {
        self.0.handle.get().is_some_and(Gauge::used)
    }
}

/// A [`Histogram`] stored on its first recorded value.
#[derive(Clone, Debug)]
pub struct LazyHistogram(Lazy<Histogram>, HistogramUnit);

impl LazyHistogram {
    /// The stored histogram (created now if it was not yet).
    pub fn get(&self) -> &Histogram {
        let l = &self.0;
        l.handle
            .get_or_init(|| l.scope.store.histogram(&l.scope.name(l.suffix), self.1))
    }

    pub fn record(&self, value: u64) {
        self.get().record(value);
    }

    pub fn count(&self) -> u64 {
        self.0.handle.get().map_or(0, Histogram::count)
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
        let copy = total.clone();
        total.inc();
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
}
