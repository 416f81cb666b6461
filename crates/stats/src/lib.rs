//! Envoy-style stats store: counters, gauges, histograms and text readouts addressed by their
//! full Envoy name (`redis.<stat_prefix>.command.get.total`, `cluster.<name>.upstream_cx_total`,
//! ...), the bootstrap's `stats_config` (tag extraction, stats matcher), the periodic flush that
//! latches histogram intervals, and the `/stats` (text, JSON) and `/stats/prometheus` renderings.
//!
//! Owns: stat storage and rendering. Must never depend on another redvoy crate. Components
//! create their handles once (a struct of handles per component) and the data path only touches
//! those handles: recording is a relaxed atomic operation on the recording thread's own shard
//! (counters, histograms) or on one shared atomic (gauges), never a lock or a map lookup.
//!
//! Sharding: a counter holds `STAT_SHARDS` cache-line-padded cells, allocated on its first
//! increment; each thread adds to the cell of its shard (a thread-local index handed out round
//! robin on first use) and a read sums the cells. Histograms shard the same way. Gauges stay one
//! atomic: `set(v)` must leave exactly `v`, which a sum of per-thread cells cannot promise while
//! other threads add, and Envoy's gauges are shared atomics too.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use regex::Regex;

mod histogram;
mod lazy;
mod options;
mod regex_dialect;
mod render;
mod shard;
mod tags;

pub use histogram::{
    Histogram, HistogramUnit, BUCKET_COUNT, QUANTILE_COUNT, SUPPORTED_BUCKETS, SUPPORTED_QUANTILES,
};
pub use lazy::{LazyCounter, LazyGauge, LazyHistogram, LazyScope};
pub use options::{
    HistogramBucketSettings, StatsConfig, StatsError, StatsMatcher, StringMatchKind, StringMatcher,
    TagSpecifier,
};
pub use render::fmt_double;
pub use shard::{claim as claim_shard, STAT_SHARDS};
pub use tags::Tag;

use options::CompiledMatcher;
use shard::Padded;
use tags::TagProducer;

/// Envoy's default `stats_flush_interval`: histogram intervals are latched this often.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest flush period `spawn_flush` uses.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(1);

/// A monotonically increasing count. Cloning shares the value.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<CounterCell>);

#[derive(Debug, Default)]
struct CounterCell {
    /// Allocated by the first `add` of a thread that claimed a shard (a worker), so counters
    /// that only the control plane moves, or nobody, cost a few words.
    shards: OnceLock<Box<[Padded<AtomicU64>; STAT_SHARDS]>>,
    /// What threads without a shard of their own add (atomically).
    shared: AtomicU64,
    /// Envoy's "used" flag: set by any add, even of 0.
    used: AtomicBool,
    /// The sum at the last reset, subtracted from every read: a reset never writes the shards,
    /// which only their owning thread writes (see `shard::add`).
    base: AtomicU64,
}

/// A value that goes up and down (Envoy gauges are unsigned; going below zero saturates).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<GaugeCell>);

/// Not padded to a cache line: a cluster has two dozen gauges, mostly idle, and padded they were
/// 128 or 256 bytes each, a quarter of its stats' memory. The busy ones (`downstream_rq_active`,
/// `upstream_rq_active`) are written by every worker anyway, and the upstream ones once per
/// connection-loop iteration, not per request.
#[derive(Debug, Default)]
struct GaugeCell {
    value: AtomicU64,
    used: AtomicBool,
}

/// A string-valued stat (Envoy's `TextReadout`, e.g. `control_plane.identifier`). Cloning shares
/// the value. Set rarely (configuration events), so a mutex is fine.
#[derive(Clone, Debug, Default)]
pub struct TextReadout(Arc<Mutex<Option<String>>>);

// === impl Counter ===

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        let shard = shard::current();
        if shard == shard::SHARED_SHARD {
            self.0.shared.fetch_add(n, Ordering::Relaxed);
            if !self.0.used.load(Ordering::Relaxed) {
                self.0.used.store(true, Ordering::Relaxed);
            }
            return;
        }
        let shards = self
            .0
            .shards
            .get_or_init(|| Box::new(std::array::from_fn(|_| Padded::default())));
        shard::add(&shards[shard].0, shard, n);
    }

    /// The sum of every thread's increments since the last reset.
    pub fn value(&self) -> u64 {
        self.total()
            .wrapping_sub(self.0.base.load(Ordering::Relaxed))
    }

    /// The sum of every thread's increments.
    fn total(&self) -> u64 {
        let shared = self.0.shared.load(Ordering::Relaxed);
        self.0.shards.get().map_or(shared, |shards| {
            shards.iter().fold(shared, |acc, c| {
                acc.wrapping_add(c.0.load(Ordering::Relaxed))
            })
        })
    }

    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed) || self.0.shards.get().is_some()
    }

    pub fn reset(&self) {
        self.0.base.store(self.total(), Ordering::Relaxed);
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
        // Only written once in practice; the load avoids dirtying the cache line on every call.
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }
}

// === impl TextReadout ===

impl TextReadout {
    pub fn set(&self, value: impl Into<String>) {
        *self.lock() = Some(value.into());
    }

    /// The current value; empty until set.
    pub fn value(&self) -> String {
        self.lock().clone().unwrap_or_default()
    }

    /// Set at least once.
    pub fn used(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A registered stat: its handle and what tag extraction made of its name.
#[derive(Clone, Debug)]
struct Entry<T> {
    handle: T,
    tagged: Tagged,
}

/// The tag-extracted name and the tags of one stat, computed once when it is created.
#[derive(Clone, Debug)]
pub(crate) struct Tagged {
    pub(crate) extracted: Arc<str>,
    pub(crate) tags: Arc<[Tag]>,
}

impl Tagged {
    /// Not interned: for stats rendered without being stored (deferred ones).
    fn new((extracted, tags): (String, Vec<Tag>)) -> Self {
        Self {
            extracted: extracted.into(),
            tags: tags.into(),
        }
    }
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<String, Entry<Counter>>,
    gauges: BTreeMap<String, Entry<Gauge>>,
    histograms: BTreeMap<String, Entry<Histogram>>,
    text_readouts: BTreeMap<String, Entry<TextReadout>>,
    /// Keyed by prefix.
    deferred: BTreeMap<String, DeferredFamily>,
    /// Tag-extracted names and tag sets, shared by the stats that have them: every cluster's
    /// `upstream_cx_total` has the extracted name `cluster.upstream_cx_total`, and all of a
    /// cluster's stats have the tag `envoy.cluster_name=<name>`.
    interned_names: HashSet<Arc<str>>,
    interned_tags: HashSet<Arc<[Tag]>>,
}

/// Stats a component declares all at once but creates one member's at a time, when it first
/// records. Until then every renderer lists them as if created and never touched: counters at
/// 0, histograms without recorded values, left out by `usedonly`, as Envoy lists the stats it
/// creates eagerly. A redis_proxy filter's per-command stats are 1,260 names: stored, they were
/// most of what a listener costs.
#[derive(Clone, Debug)]
pub struct DeferredFamily {
    /// Every name is `prefix + member + "." + suffix`, or `prefix + suffix` for the member "".
    pub prefix: String,
    pub members: Arc<[String]>,
    pub counters: &'static [&'static str],
    pub gauges: &'static [&'static str],
    pub histograms: &'static [&'static str],
}

impl DeferredFamily {
    /// A family of single stats: `prefix + suffix` for each suffix.
    pub fn flat(
        prefix: String,
        counters: &'static [&'static str],
        gauges: &'static [&'static str],
    ) -> Self {
        static NO_MEMBER: OnceLock<Arc<[String]>> = OnceLock::new();
        Self {
            prefix,
            members: Arc::clone(NO_MEMBER.get_or_init(|| Arc::from([String::new()]))),
            counters,
            gauges,
            histograms: &[],
        }
    }

    fn name(&self, member: &str, suffix: &str) -> String {
        if member.is_empty() {
            format!("{}{suffix}", self.prefix)
        } else {
            format!("{}{member}.{suffix}", self.prefix)
        }
    }

    /// The family's names of one kind (counter, gauge or histogram suffixes), unordered.
    fn names<'a>(&'a self, suffixes: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
        self.members
            .iter()
            .flat_map(move |member| suffixes.iter().map(move |suffix| self.name(member, suffix)))
    }

    fn suffixes(&self, kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Counter => self.counters,
            Kind::Gauge => self.gauges,
            Kind::Histogram => self.histograms,
        }
    }

    fn contains(&self, name: &str, suffixes: &[&str]) -> bool {
        let Some(rest) = name.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        suffixes.iter().any(|suffix| {
            rest.strip_suffix(suffix).is_some_and(|head| {
                let member = head.strip_suffix('.').unwrap_or(head);
                (head.is_empty() || head.ends_with('.')) && self.members.iter().any(|m| m == member)
            })
        })
    }
}

/// The shared copy of `owned` in `set`, added when it is new.
fn intern<T, O>(set: &mut HashSet<Arc<T>>, owned: O) -> Arc<T>
where
    T: ?Sized + Eq + std::hash::Hash,
    O: std::borrow::Borrow<T> + Into<Arc<T>>,
{
    if let Some(known) = set.get(owned.borrow()) {
        return Arc::clone(known);
    }
    let new: Arc<T> = owned.into();
    set.insert(Arc::clone(&new));
    new
}

/// The kinds of stat a deferred family declares.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// What a deferred histogram renders as: one shared histogram nothing records into.
fn untouched_histogram() -> Histogram {
    static EMPTY: OnceLock<Histogram> = OnceLock::new();
    EMPTY
        .get_or_init(|| Histogram::new(HistogramUnit::Unspecified))
        .clone()
}

impl Registry {
    fn tagged(&mut self, (extracted, tags): (String, Vec<Tag>)) -> Tagged {
        Tagged {
            extracted: intern(&mut self.interned_names, extracted),
            tags: intern(&mut self.interned_tags, tags),
        }
    }

    fn created(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Counter => self.counters.contains_key(name),
            Kind::Gauge => self.gauges.contains_key(name),
            Kind::Histogram => self.histograms.contains_key(name),
        }
    }

    /// The deferred stats of `kind` not created yet (and accepted by the matcher), unsorted.
    fn untouched(&self, kind: Kind, matcher: &CompiledMatcher) -> Vec<String> {
        self.deferred
            .values()
            .flat_map(|f| f.names(f.suffixes(kind)))
            .filter(|n| !self.created(kind, n) && !matcher.rejects(n))
            .collect()
    }

    /// A deferred stat of `kind` not created yet (`matcher`: the store's stats matcher, which
    /// may reject it).
    fn is_untouched(&self, kind: Kind, name: &str, matcher: &CompiledMatcher) -> bool {
        !self.created(kind, name)
            && !matcher.rejects(name)
            && self
                .deferred
                .values()
                .any(|f| f.contains(name, f.suffixes(kind)))
    }
}

/// `stats_config`, compiled.
#[derive(Debug)]
struct Config {
    tags: TagProducer,
    matcher: CompiledMatcher,
}

/// The process-wide store. Cloning shares it. The mutex guards only the name → handle maps and
/// is taken when a component creates its handles or the admin port renders, never per request.
#[derive(Clone)]
pub struct Store {
    registry: Arc<Mutex<Registry>>,
    config: Arc<Config>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Which stats `/stats?type=` selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatsType {
    #[default]
    All,
    Counters,
    Gauges,
    Histograms,
    TextReadouts,
}

/// A `type=` value Envoy does not know; the message is Envoy's 400 body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid &type= param")]
pub struct InvalidStatsType;

impl FromStr for StatsType {
    type Err = InvalidStatsType;

    /// Envoy's exact, case-sensitive labels (`StatLabels`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "All" => StatsType::All,
            "Counters" => StatsType::Counters,
            "Gauges" => StatsType::Gauges,
            "Histograms" => StatsType::Histograms,
            "TextReadouts" => StatsType::TextReadouts,
            _ => return Err(InvalidStatsType),
        })
    }
}

/// What `/stats` selects: `filter` (RE2, partial match on the full name), `usedonly`, `type`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatsQuery<'a> {
    pub filter: Option<&'a Regex>,
    pub used_only: bool,
    pub stats_type: StatsType,
}

// === impl Store ===

impl Store {
    /// A store with Envoy's defaults: every stat accepted, default tag extractors.
    pub fn new() -> Self {
        static DEFAULT_CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
        let config = DEFAULT_CONFIG.get_or_init(|| {
            Arc::new(Config {
                // Only user tag specifiers can fail; there are none here.
                tags: TagProducer::new(&[], true).unwrap_or_else(|_| TagProducer::empty()),
                matcher: CompiledMatcher::AcceptAll,
            })
        });
        Self {
            registry: Arc::default(),
            config: Arc::clone(config),
        }
    }

    /// A store configured from the bootstrap's `stats_config`.
    pub fn with_config(stats_config: &StatsConfig) -> Result<Store, StatsError> {
        let config = Config {
            tags: TagProducer::new(&stats_config.stats_tags, stats_config.use_all_default_tags)?,
            matcher: CompiledMatcher::new(&stats_config.matcher)?,
        };
        Ok(Self {
            registry: Arc::default(),
            config: Arc::new(config),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut guard = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// The registered counter, gauge or histogram with this name, if one was created (nothing
    /// is created here).
    pub(crate) fn existing_counter(&self, name: &str) -> Option<Counter> {
        self.with(|r| r.counters.get(name).map(|e| e.handle.clone()))
    }

    pub(crate) fn existing_gauge(&self, name: &str) -> Option<Gauge> {
        self.with(|r| r.gauges.get(name).map(|e| e.handle.clone()))
    }

    pub(crate) fn existing_histogram(&self, name: &str) -> Option<Histogram> {
        self.with(|r| r.histograms.get(name).map(|e| e.handle.clone()))
    }

    /// Forgets every stat whose name starts with `prefix` but with none of `keep` (Envoy drops
    /// a destroyed listener's or cluster's scope). Handles still held elsewhere keep working,
    /// unlisted; a later stat of the same name starts again from zero, as in Envoy.
    pub fn remove_prefix(&self, prefix: &str, keep: &[String]) {
        let gone =
            |name: &str| name.starts_with(prefix) && !keep.iter().any(|k| name.starts_with(k));
        self.with(|r| {
            r.counters.retain(|n, _| !gone(n));
            r.gauges.retain(|n, _| !gone(n));
            r.histograms.retain(|n, _| !gone(n));
            r.text_readouts.retain(|n, _| !gone(n));
            r.deferred.retain(|n, _| !gone(n));
            r.interned_names.retain(|a| Arc::strong_count(a) > 1);
            r.interned_tags.retain(|a| Arc::strong_count(a) > 1);
        });
    }

    /// Declares a family of stats created on first use (see [`DeferredFamily`]). Declaring a
    /// prefix again with the same stat lists adds the members it did not have (two filters
    /// with one stat prefix); with other lists, the new declaration replaces the old one (a
    /// component rebuilt with other stats: the lists are per component, so two components
    /// never share a prefix).
    pub fn defer(&self, family: DeferredFamily) {
        self.with(|r| match r.deferred.get_mut(&family.prefix) {
            // A component declaring its prefix again (a cluster replaced by a CDS update) may
            // declare other stats: its latest declaration is what exists.
            Some(known)
                if known.counters != family.counters
                    || known.gauges != family.gauges
                    || known.histograms != family.histograms =>
            {
                *known = family;
            }
            Some(known) if known.members == family.members => {}
            Some(known) => {
                let mut members: Vec<String> = known.members.to_vec();
                for m in family.members.iter() {
                    if !members.contains(m) {
                        members.push(m.clone());
                    }
                }
                known.members = members.into();
            }
            None => {
                r.deferred.insert(family.prefix.clone(), family);
            }
        });
    }

    /// Returns the counter with this full name, creating it at zero the first time. A name the
    /// stats matcher rejects gets a working handle that is never registered (Envoy's null stat).
    pub fn counter(&self, name: &str) -> Counter {
        self.get_or_create(name, |r| &mut r.counters, Counter::default)
    }

    /// Returns the gauge with this full name, creating it at zero the first time.
    pub fn gauge(&self, name: &str) -> Gauge {
        self.get_or_create(name, |r| &mut r.gauges, Gauge::default)
    }

    /// Returns the histogram with this full name, creating it empty the first time.
    pub fn histogram(&self, name: &str, unit: HistogramUnit) -> Histogram {
        self.get_or_create(name, |r| &mut r.histograms, || Histogram::new(unit))
    }

    /// Returns the text readout with this full name, creating it empty the first time.
    pub fn text_readout(&self, name: &str) -> TextReadout {
        self.get_or_create(name, |r| &mut r.text_readouts, TextReadout::default)
    }

    fn get_or_create<T: Clone>(
        &self,
        name: &str,
        map: impl Fn(&mut Registry) -> &mut BTreeMap<String, Entry<T>>,
        make: impl FnOnce() -> T,
    ) -> T {
        if self.config.matcher.rejects(name) {
            return make();
        }
        self.with(|r| {
            if let Some(e) = map(r).get(name) {
                return e.handle.clone();
            }
            let tagged = r.tagged(self.config.tags.produce(name));
            let handle = make();
            map(r).insert(
                name.to_owned(),
                Entry {
                    handle: handle.clone(),
                    tagged,
                },
            );
            handle
        })
    }

    /// Whether a stat with this full name would be instantiated (the stats matcher accepts it).
    pub fn accepts(&self, name: &str) -> bool {
        !self.config.matcher.rejects(name)
    }

    /// The tag-extracted name and tags of a registered stat of any type.
    pub fn tags_of(&self, name: &str) -> Option<(String, Vec<Tag>)> {
        self.with(|r| {
            r.counters
                .get(name)
                .map(|e| e.tagged.clone())
                .or_else(|| r.gauges.get(name).map(|e| e.tagged.clone()))
                .or_else(|| r.histograms.get(name).map(|e| e.tagged.clone()))
                .or_else(|| r.text_readouts.get(name).map(|e| e.tagged.clone()))
                .or_else(|| {
                    let untouched = r.is_untouched(Kind::Counter, name, &self.config.matcher)
                        || r.is_untouched(Kind::Gauge, name, &self.config.matcher)
                        || r.is_untouched(Kind::Histogram, name, &self.config.matcher);
                    untouched.then(|| {
                        let (extracted, tags) = self.config.tags.produce(name);
                        Tagged::new((extracted, tags))
                    })
                })
        })
        .map(|t| (t.extracted.to_string(), t.tags.to_vec()))
    }

    /// A snapshot of every counter and gauge (name, value, used), in name order.
    pub fn counters_and_gauges(&self) -> Vec<(String, u64, bool)> {
        self.with(|r| {
            let mut all: Vec<(String, u64, bool)> = r
                .counters
                .iter()
                .map(|(n, e)| (n.clone(), e.handle.value(), e.handle.used()))
                .chain(
                    r.gauges
                        .iter()
                        .map(|(n, e)| (n.clone(), e.handle.value(), e.handle.used())),
                )
                .chain(
                    r.untouched(Kind::Counter, &self.config.matcher)
                        .into_iter()
                        .chain(r.untouched(Kind::Gauge, &self.config.matcher))
                        .map(|n| (n, 0, false)),
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
                .map(|(n, e)| (n.clone(), e.handle.clone()))
                .collect()
        })
    }

    /// Every text readout (name, value), in name order.
    pub fn text_readouts(&self) -> Vec<(String, String)> {
        self.with(|r| {
            r.text_readouts
                .iter()
                .map(|(n, e)| (n.clone(), e.handle.value()))
                .collect()
        })
    }

    /// Looks up the current value of a counter or gauge by full name (admin and tests).
    pub fn value_of(&self, name: &str) -> Option<u64> {
        self.with(|r| {
            r.counters
                .get(name)
                .map(|e| e.handle.value())
                .or_else(|| r.gauges.get(name).map(|e| e.handle.value()))
                .or_else(|| {
                    (r.is_untouched(Kind::Counter, name, &self.config.matcher)
                        || r.is_untouched(Kind::Gauge, name, &self.config.matcher))
                    .then_some(0)
                })
        })
    }

    /// Envoy's `/stats` text: `name: value` for every counter and gauge in name order, then
    /// `name: P0(i,c) ... P100(i,c)` (or `No recorded values`) for every histogram in name
    /// order. `filter` keeps names it matches anywhere (RE2 `PartialMatch`); `used_only` keeps
    /// stats written since start-up, and histograms merged at least once.
    pub fn render_text(&self, filter: Option<&Regex>, used_only: bool) -> String {
        self.render_text_query(&StatsQuery {
            filter,
            used_only,
            stats_type: StatsType::All,
        })
    }

    /// Envoy's `/stats?format=json` with the same selection as `render_text`.
    pub fn render_json(&self, filter: Option<&Regex>, used_only: bool) -> String {
        self.render_json_query(&StatsQuery {
            filter,
            used_only,
            stats_type: StatsType::All,
        })
    }

    /// `/stats` text with `type=`: text readouts (`name: "value"`), then counters and gauges
    /// merged in name order, then histograms; `Counters`/`Gauges` keep only that kind of the
    /// middle part, `Histograms`/`TextReadouts` only their part.
    pub fn render_text_query(&self, q: &StatsQuery<'_>) -> String {
        render::text(&self.select(q))
    }

    /// `/stats?format=json` with `type=`, same selection as `render_text_query`.
    pub fn render_json_query(&self, q: &StatsQuery<'_>) -> String {
        render::json(&self.select(q))
    }

    /// Envoy 1.40's `/stats/prometheus` (text exposition 0.0.4): families of counters, then
    /// gauges, then histograms, each family under one `# TYPE` line, families ordered by
    /// tag-extracted name and members by full name (both compared `.`-segment by segment, as
    /// Envoy's symbol table does); metric `envoy_` + sanitized tag-extracted name, tags as
    /// labels; histograms as cumulative `_bucket{le=..}` over Envoy's default bounds, `+Inf`,
    /// `_sum`, `_count` from the last flush. `filter` and `used_only` as for `/stats`.
    pub fn render_prometheus(&self, used_only: bool, filter: Option<&Regex>) -> String {
        self.render_prometheus_with(used_only, filter, false)
    }

    /// `render_prometheus` with `?text_readouts`: text readouts rendered as gauges of value 0
    /// with a `text_value` label, between the gauges and the histograms.
    pub fn render_prometheus_with(
        &self,
        used_only: bool,
        filter: Option<&Regex>,
        text_readouts: bool,
    ) -> String {
        let keep = |name: &str, used: bool| {
            (!used_only || used) && filter.is_none_or(|re| re.is_match(name))
        };
        let number = |name: &String, tagged: &Tagged, value: u64| render::PromMetric {
            name: name.clone(),
            tagged: tagged.clone(),
            value: render::PromValue::Number(value),
        };
        let families = self.with(|r| {
            let counters: Vec<render::PromMetric> = r
                .counters
                .iter()
                .filter(|(n, e)| keep(n, e.handle.used()))
                .map(|(n, e)| number(n, &e.tagged, e.handle.value()))
                .collect();
            let gauges: Vec<render::PromMetric> = r
                .gauges
                .iter()
                .filter(|(n, e)| keep(n, e.handle.used()))
                .map(|(n, e)| number(n, &e.tagged, e.handle.value()))
                .collect();
            // Deferred stats not created yet: only their names under the lock (the tag
            // extraction, regexes, runs after it, so a worker creating a stat never waits on a
            // scrape's extraction).
            let untouched = |kind| {
                if used_only {
                    return Vec::new();
                }
                r.untouched(kind, &self.config.matcher)
                    .into_iter()
                    .filter(|n| keep(n, false))
                    .collect::<Vec<String>>()
            };
            let untouched_names = [
                untouched(Kind::Counter),
                untouched(Kind::Gauge),
                untouched(Kind::Histogram),
            ];
            let texts = if text_readouts {
                r.text_readouts
                    .iter()
                    .filter(|(n, e)| keep(n, e.handle.used()))
                    .map(|(n, e)| render::PromMetric {
                        name: n.clone(),
                        tagged: e.tagged.clone(),
                        value: render::PromValue::Text(e.handle.value()),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let histograms: Vec<(String, Tagged, Histogram)> = r
                .histograms
                .iter()
                .map(|(n, e)| (n.clone(), e.tagged.clone(), e.handle.clone()))
                .collect();
            (counters, gauges, texts, histograms, untouched_names)
        });
        let (mut counters, mut gauges, texts, mut histograms, untouched_names) = families;
        let [untouched_counters, untouched_gauges, untouched_histograms] = untouched_names;
        let tagged = |name: &str| Tagged::new(self.config.tags.produce(name));
        let zero = |name: String| render::PromMetric {
            tagged: tagged(&name),
            name,
            value: render::PromValue::Number(0),
        };
        counters.extend(untouched_counters.into_iter().map(zero));
        gauges.extend(untouched_gauges.into_iter().map(zero));
        histograms.extend(untouched_histograms.into_iter().map(|name| {
            let t = tagged(&name);
            (name, t, untouched_histogram())
        }));
        // Histogram data is read outside the registry lock: it takes each histogram's own lock.
        let histograms = histograms
            .into_iter()
            .filter(|(n, _, h)| keep(n, h.used()))
            .map(|(name, tagged, h)| render::PromMetric {
                name,
                tagged,
                value: render::PromValue::Histogram(h.prometheus_snapshot()),
            })
            .collect();
        render::prometheus(counters, gauges, texts, histograms)
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
        let counters: Vec<Counter> =
            self.with(|r| r.counters.values().map(|e| e.handle.clone()).collect());
        for c in counters {
            c.reset();
        }
    }

    fn select(&self, q: &StatsQuery<'_>) -> render::Selection {
        let keep = |name: &str, used: bool| {
            (!q.used_only || used) && q.filter.is_none_or(|re| re.is_match(name))
        };
        let t = q.stats_type;
        let want_texts = matches!(t, StatsType::All | StatsType::TextReadouts);
        let want_counters = matches!(t, StatsType::All | StatsType::Counters);
        let want_gauges = matches!(t, StatsType::All | StatsType::Gauges);
        let want_histograms = matches!(t, StatsType::All | StatsType::Histograms);
        let (texts, mut scalars, histograms) = self.with(|r| {
            let texts: Vec<(String, String)> = if want_texts {
                r.text_readouts
                    .iter()
                    .filter(|(n, e)| keep(n, e.handle.used()))
                    .map(|(n, e)| (n.clone(), e.handle.value()))
                    .collect()
            } else {
                Vec::new()
            };
            // Deferred stats not created yet, at zero (never "used").
            let untouched_scalars = |kind, scalars: &mut Vec<render::Scalar>| {
                if !q.used_only {
                    scalars.extend(
                        r.untouched(kind, &self.config.matcher)
                            .into_iter()
                            .filter(|n| keep(n, false))
                            .map(|name| render::Scalar { name, value: 0 }),
                    );
                }
            };
            let mut scalars: Vec<render::Scalar> = Vec::new();
            if want_counters {
                scalars.extend(
                    r.counters
                        .iter()
                        .filter(|(n, e)| keep(n, e.handle.used()))
                        .map(|(n, e)| render::Scalar {
                            name: n.clone(),
                            value: e.handle.value(),
                        }),
                );
                untouched_scalars(Kind::Counter, &mut scalars);
            }
            if want_gauges {
                scalars.extend(
                    r.gauges
                        .iter()
                        .filter(|(n, e)| keep(n, e.handle.used()))
                        .map(|(n, e)| render::Scalar {
                            name: n.clone(),
                            value: e.handle.value(),
                        }),
                );
                untouched_scalars(Kind::Gauge, &mut scalars);
            }
            let histograms: Vec<(String, Histogram)> = if want_histograms {
                let mut all: Vec<(String, Histogram)> = r
                    .histograms
                    .iter()
                    .map(|(n, e)| (n.clone(), e.handle.clone()))
                    .collect();
                if !q.used_only {
                    let untouched = r.untouched(Kind::Histogram, &self.config.matcher);
                    if !untouched.is_empty() {
                        all.extend(untouched.into_iter().map(|n| (n, untouched_histogram())));
                        all.sort_by(|a, b| a.0.cmp(&b.0));
                    }
                }
                all
            } else {
                Vec::new()
            };
            (texts, scalars, histograms)
        });
        scalars.sort_by(|a, b| a.name.cmp(&b.name));
        let histograms = histograms
            .into_iter()
            .filter(|(name, h)| keep(name, !q.used_only || h.used()))
            .collect();
        render::Selection {
            texts,
            scalars,
            histograms,
        }
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
mod tests;
