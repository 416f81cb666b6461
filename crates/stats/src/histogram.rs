//! Lock-free histograms with Envoy's bins and quantiles.
//!
//! Envoy records every histogram into a circllhist: one zero bin plus, per power of ten, 90 bins
//! holding the values with the same two leading decimal digits (`[12, 13)`, `[120, 130)`, ...).
//! Using the very same bins makes the quantiles redvoy prints identical to Envoy's for the same
//! recorded values, and lets the Prometheus rendering count exactly below Envoy's default bucket
//! bounds (0.5, 1, 5, 10, 25, ... are all bin edges).
//!
//! Recording is two relaxed atomic adds (sum, bin) on the recording thread's own shard (see
//! `shard`), so workers recording the same histogram never share a cache line. Everything else
//! (summing the shards, latching an interval, computing quantiles) happens in `merge`, which the
//! periodic stats flush calls, like Envoy's `ParentHistogramImpl::merge`: until the first flush
//! after a value was recorded, a histogram still reads "No recorded values".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::shard::{self, STAT_SHARDS};

/// What a histogram's values mean; Envoy renders them all the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramUnit {
    Milliseconds,
    Microseconds,
    Unspecified,
}

/// The quantiles Envoy computes for every histogram (`HistogramStatisticsImpl`).
pub const SUPPORTED_QUANTILES: [f64; QUANTILE_COUNT] =
    [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Number of entries in `SUPPORTED_QUANTILES`.
pub const QUANTILE_COUNT: usize = 10;

/// Envoy's default histogram bucket bounds (`HistogramSettingsImpl::defaultBuckets`), the `le`
/// labels of `/stats/prometheus`.
pub const SUPPORTED_BUCKETS: [f64; BUCKET_COUNT] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Number of entries in `SUPPORTED_BUCKETS`.
pub const BUCKET_COUNT: usize = 19;

/// Bins per power of ten: two leading digits, 10..=99.
const BINS_PER_DECADE: usize = 90;

/// Powers of ten a `u64` can reach (10^0 ..= 10^19).
const DECADES: usize = 20;

/// Exact powers of ten; `10f64.powi` is not guaranteed exact and the bin edges must be.
const POW10_F64: [f64; DECADES] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19,
];

const POW10_U64: [u64; DECADES] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
    10_000_000_000_000_000_000,
];

/// Identifies one bin; ordering follows the values the bins hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bin(u16);

impl Bin {
    const ZERO: Bin = Bin(0);

    fn of(value: u64) -> Bin {
        if value == 0 {
            return Bin::ZERO;
        }
        let exp = value.ilog10() as usize;
        // The two leading digits. Single-digit values are bins 10, 20, ..., 90 of decade 0
        // (width 0.1), as in circllhist's `int_scale_to_hist_bucket`. Constant divisors let the
        // compiler use multiplications instead of a division on the recording path.
        let lead = match exp {
            0 => value * 10,
            1 => value,
            2 => value / 10,
            3 => value / 100,
            4 => value / 1_000,
            5 => value / 10_000,
            6 => value / 100_000,
            _ => value / POW10_U64[exp - 1],
        };
        Bin((1 + exp * BINS_PER_DECADE + (lead as usize - 10)) as u16)
    }

    fn decade_and_slot(self) -> (usize, usize) {
        let i = self.0 as usize - 1;
        (i / BINS_PER_DECADE, i % BINS_PER_DECADE)
    }

    /// Left edge, computed as circllhist computes it so the floating-point results match.
    fn left(self) -> f64 {
        if self == Bin::ZERO {
            return 0.0;
        }
        let (exp, slot) = self.decade_and_slot();
        ((slot + 10) as f64 / 10.0) * POW10_F64[exp]
    }

    fn width(self) -> f64 {
        if self == Bin::ZERO {
            return 0.0;
        }
        let (exp, _) = self.decade_and_slot();
        POW10_F64[exp] / 10.0
    }

    /// The value circllhist (as linked into Envoy 1.40) assumes for every sample of a bin when
    /// it approximates a sum: the harmonic mean of the bin edges, `L + W * L / (L + U)`.
    /// Observed: one 112 µs sample sums to 114.78260869565218 (bin 110..120), not 115.
    fn midpoint(self) -> f64 {
        if self == Bin::ZERO {
            return 0.0;
        }
        let (left, width) = (self.left(), self.width());
        left + width * (left / (left + (left + width)))
    }

    /// Whether this bin counts towards bucket bound `bound`: circllhist's inclusive count below
    /// takes every bin up to and including the one that contains `bound`. Observed on Envoy
    /// 1.40: a value of 1 is counted in `le="1"`. Recorded values are integers, so the bin
    /// containing `bound` is the bin of `floor(bound)`, and for a bound below 1 only the zero bin.
    fn at_or_below(self, bound: f64) -> bool {
        if bound < 0.0 {
            return false;
        }
        if bound < 1.0 {
            return self == Bin::ZERO;
        }
        // `as` saturates, so huge bounds take every bin.
        self <= Bin::of(bound.floor() as u64)
    }
}

/// The non-empty bins of a histogram, in value order.
type Bins = Vec<(Bin, u64)>;

#[derive(Debug, Default)]
struct Latched {
    /// Envoy's `merged_`: set by the first flush after anything was recorded, never cleared.
    merged: bool,
    /// Everything recorded up to the last flush.
    cumulative: Bins,
    interval_quantiles: [f64; QUANTILE_COUNT],
    cumulative_quantiles: [f64; QUANTILE_COUNT],
}

/// One block of bin counters: one power of ten. Padded so that two shards' blocks never share a
/// cache line.
#[repr(align(128))]
#[derive(Debug)]
struct Block([AtomicU64; BINS_PER_DECADE]);

/// What one recording thread writes.
#[repr(align(128))]
#[derive(Debug)]
struct Shard {
    sum: AtomicU64,
    zero: AtomicU64,
    /// One block per power of ten, allocated on first use so that the hundreds of histograms
    /// Envoy creates eagerly (one per command) and never use stay small.
    decades: [OnceLock<Box<Block>>; DECADES],
}

impl Shard {
    fn new() -> Self {
        Self {
            sum: AtomicU64::new(0),
            zero: AtomicU64::new(0),
            decades: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

#[derive(Debug)]
struct Inner {
    unit: HistogramUnit,
    /// Per-thread shards, each allocated when its first thread records.
    shards: [OnceLock<Box<Shard>>; STAT_SHARDS],
    /// Only `merge` and the admin port touch this; recording never does.
    latched: Mutex<Latched>,
}

/// The latched cumulative data as `/stats/prometheus` renders it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PrometheusSnapshot {
    pub(crate) count: u64,
    /// circllhist's approximate sum (bin midpoints), which is what Envoy reports.
    pub(crate) sum: f64,
    /// Samples at or below each of `SUPPORTED_BUCKETS`.
    pub(crate) buckets: [u64; BUCKET_COUNT],
}

/// A recording handle; cloning shares the data.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<Inner>);

// === impl Histogram ===

impl Histogram {
    pub fn new(unit: HistogramUnit) -> Self {
        Self(Arc::new(Inner {
            unit,
            shards: std::array::from_fn(|_| OnceLock::new()),
            latched: Mutex::new(Latched::default()),
        }))
    }

    pub fn unit(&self) -> HistogramUnit {
        self.0.unit
    }

    pub fn record(&self, value: u64) {
        let index = shard::current();
        let shard = self.0.shards[index].get_or_init(|| Box::new(Shard::new()));
        shard::add(&shard.sum, index, value);
        let bin = Bin::of(value);
        if bin == Bin::ZERO {
            shard::add(&shard.zero, index, 1);
            return;
        }
        let (decade, slot) = bin.decade_and_slot();
        let block = shard.decades[decade]
            .get_or_init(|| Box::new(Block(std::array::from_fn(|_| AtomicU64::new(0)))));
        shard::add(&block.0[slot], index, 1);
    }

    /// Values recorded so far (live, not latched).
    pub fn count(&self) -> u64 {
        self.snapshot().iter().map(|&(_, c)| c).sum()
    }

    /// Sum of the values recorded so far (live, not latched, exact).
    pub fn sum(&self) -> u64 {
        self.live_shards().fold(0u64, |acc, s| {
            acc.wrapping_add(s.sum.load(Ordering::Relaxed))
        })
    }

    /// Envoy's `ParentHistogram::used()`: a flush has happened since the first recorded value.
    pub fn used(&self) -> bool {
        self.latched().merged
    }

    /// The quantiles latched by the last flush, `(interval, cumulative)` in the order of
    /// `SUPPORTED_QUANTILES`; NaN where there was no data. `None` until `used()`.
    pub fn computed_quantiles(&self) -> Option<([f64; QUANTILE_COUNT], [f64; QUANTILE_COUNT])> {
        let l = self.latched();
        l.merged
            .then_some((l.interval_quantiles, l.cumulative_quantiles))
    }

    /// Envoy's `quantileSummary()`: `P0(i,c) P25(i,c) ... P100(i,c)` or `No recorded values`.
    pub fn quantile_summary(&self) -> String {
        let Some((interval, cumulative)) = self.computed_quantiles() else {
            return "No recorded values".to_owned();
        };
        let mut out = String::with_capacity(256);
        for (i, label) in crate::render::QUANTILE_LABELS.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push('P');
            out.push_str(label);
            out.push('(');
            out.push_str(&crate::render::fmt_double(interval[i]));
            out.push(',');
            out.push_str(&crate::render::fmt_double(cumulative[i]));
            out.push(')');
        }
        out
    }

    /// Latches what was recorded since the previous merge as the new interval and folds it
    /// into the cumulative data (Envoy's `ParentHistogramImpl::merge`, run on every flush).
    pub(crate) fn merge(&self) {
        let now = self.snapshot();
        let mut l = self.latched();
        if !l.merged && now.is_empty() {
            return;
        }
        let interval = subtract(&now, &l.cumulative);
        l.interval_quantiles = quantiles(&interval);
        l.cumulative_quantiles = quantiles(&now);
        l.cumulative = now;
        l.merged = true;
    }

    /// The latched cumulative data for `/stats/prometheus` (Envoy renders
    /// `cumulativeStatistics()`): zeros until the first merge.
    pub(crate) fn prometheus_snapshot(&self) -> PrometheusSnapshot {
        let l = self.latched();
        let mut snap = PrometheusSnapshot {
            count: 0,
            sum: 0.0,
            buckets: [0; BUCKET_COUNT],
        };
        for &(bin, c) in &l.cumulative {
            snap.count += c;
            snap.sum += bin.midpoint() * c as f64;
            for (bound, slot) in SUPPORTED_BUCKETS.iter().zip(snap.buckets.iter_mut()) {
                if bin.at_or_below(*bound) {
                    *slot += c;
                }
            }
        }
        snap
    }

    fn live_shards(&self) -> impl Iterator<Item = &Shard> {
        self.0.shards.iter().filter_map(|s| s.get().map(|b| &**b))
    }

    /// Reads the live bins, summed over the shards. Concurrent recording may land on either side
    /// of the read, exactly as a value recorded during Envoy's merge lands in this interval or
    /// the next.
    fn snapshot(&self) -> Bins {
        let mut bins = Vec::new();
        let zero: u64 = self
            .live_shards()
            .map(|s| s.zero.load(Ordering::Relaxed))
            .sum();
        if zero > 0 {
            bins.push((Bin::ZERO, zero));
        }
        let mut blocks: Vec<&Block> = Vec::with_capacity(STAT_SHARDS);
        for decade in 0..DECADES {
            blocks.clear();
            blocks.extend(
                self.live_shards()
                    .filter_map(|s| s.decades[decade].get().map(|b| &**b)),
            );
            if blocks.is_empty() {
                continue;
            }
            for slot in 0..BINS_PER_DECADE {
                let c: u64 = blocks
                    .iter()
                    .map(|b| b.0[slot].load(Ordering::Relaxed))
                    .sum();
                if c > 0 {
                    bins.push((Bin((1 + decade * BINS_PER_DECADE + slot) as u16), c));
                }
            }
        }
        bins
    }

    fn latched(&self) -> std::sync::MutexGuard<'_, Latched> {
        self.0
            .latched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `now - before`, bin by bin; both are sorted and `now` dominates `before` (counts only grow).
fn subtract(now: &Bins, before: &Bins) -> Bins {
    let mut out = Vec::with_capacity(now.len());
    let mut prev = before.iter().peekable();
    for &(bin, count) in now {
        while prev.next_if(|(b, _)| *b < bin).is_some() {}
        let earlier = prev.next_if(|(b, _)| *b == bin).map_or(0, |&(_, c)| c);
        let delta = count.saturating_sub(earlier);
        if delta > 0 {
            out.push((bin, delta));
        }
    }
    out
}

/// circllhist's `hist_approx_quantile` (the type-1 variant Envoy's libcircllhist ships): the n
/// values of a bin are taken to sit at `left + k/(n+1) * width`, k = 1..=n, and quantile q is the
/// value of rank `ceil(q * total)` (rank 1 for q = 0). NaN for an empty histogram.
fn quantiles(bins: &Bins) -> [f64; QUANTILE_COUNT] {
    let mut out = [f64::NAN; QUANTILE_COUNT];
    let total: f64 = bins.iter().map(|&(_, c)| c as f64).sum();
    if total == 0.0 {
        return out;
    }
    let Some(&(mut bin, first)) = bins.first() else {
        return out;
    };
    let mut next = 1;
    let mut lower = 0.0;
    let mut upper = first as f64;
    for (q, slot) in SUPPORTED_QUANTILES.iter().zip(out.iter_mut()) {
        let target = total * q;
        while upper < target {
            let Some(&(b, c)) = bins.get(next) else { break };
            next += 1;
            bin = b;
            lower = upper;
            upper = lower + c as f64;
        }
        let width = bin.width();
        *slot = if width == 0.0 {
            bin.left()
        } else {
            let n = upper - lower;
            let k = (target - lower).ceil().max(1.0);
            bin.left() + k / (n + 1.0) * width
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(values: &[u64]) -> Histogram {
        let h = Histogram::new(HistogramUnit::Unspecified);
        for &v in values {
            h.record(v);
        }
        h.merge();
        h
    }

    fn cumulative(h: &Histogram) -> [f64; QUANTILE_COUNT] {
        h.computed_quantiles().unwrap().1
    }

    #[test]
    fn bins_follow_two_leading_digits() {
        assert_eq!(Bin::of(0), Bin::ZERO);
        assert_eq!((Bin::of(1).left(), Bin::of(1).width()), (1.0, 0.1));
        assert_eq!((Bin::of(9).left(), Bin::of(9).width()), (9.0, 0.1));
        assert_eq!((Bin::of(10).left(), Bin::of(10).width()), (10.0, 1.0));
        assert_eq!((Bin::of(92).left(), Bin::of(92).width()), (92.0, 1.0));
        assert_eq!((Bin::of(109).left(), Bin::of(109).width()), (100.0, 10.0));
        assert_eq!((Bin::of(275).left(), Bin::of(275).width()), (270.0, 10.0));
        assert_eq!(Bin::of(u64::MAX).decade_and_slot(), (19, 8));
        let mut values: Vec<u64> = (0..2000).chain([u64::MAX / 3, u64::MAX]).collect();
        values.sort_unstable();
        let bins: Vec<Bin> = values.iter().map(|&v| Bin::of(v)).collect();
        assert!(
            bins.windows(2).all(|w| w[0] <= w[1]),
            "bin order follows value order"
        );
    }

    #[test]
    fn empty_histogram_is_unused_until_something_is_recorded_and_flushed() {
        let h = Histogram::new(HistogramUnit::Milliseconds);
        h.merge();
        assert!(!h.used());
        assert_eq!(h.quantile_summary(), "No recorded values");
        h.record(3);
        assert!(
            !h.used(),
            "recording alone does not make it used before a flush"
        );
        h.merge();
        assert!(h.used());
    }

    // Observed on Envoy 1.40: one GET of ~92 ms, then three of 100..110 ms in the next interval.
    #[test]
    fn quantiles_match_envoy_observations() {
        let h = merged(&[92]);
        assert_eq!(cumulative(&h), [92.5; QUANTILE_COUNT]);
        for v in [101, 103, 104] {
            h.record(v);
        }
        h.merge();
        let (interval, cumulative) = h.computed_quantiles().unwrap();
        assert_eq!(
            interval,
            [102.5, 102.5, 105.0, 107.5, 107.5, 107.5, 107.5, 107.5, 107.5, 107.5]
        );
        assert_eq!(
            cumulative,
            [92.5, 92.5, 102.5, 105.0, 107.5, 107.5, 107.5, 107.5, 107.5, 107.5]
        );
        assert_eq!(
            h.quantile_summary(),
            "P0(102.5,92.5) P25(102.5,92.5) P50(105,102.5) P75(107.5,105) P90(107.5,107.5) \
             P95(107.5,107.5) P99(107.5,107.5) P99.5(107.5,107.5) P99.9(107.5,107.5) \
             P100(107.5,107.5)"
        );
    }

    // libcircllhist's own expectations for its type-1 quantiles.
    #[test]
    fn quantiles_match_circllhist_tests() {
        let h = merged(&[100, 100]);
        let q = cumulative(&h);
        assert!((q[0] - (100.0 + 10.0 / 3.0)).abs() < 1e-9);
        assert!((q[9] - (100.0 + 20.0 / 3.0)).abs() < 1e-9);
        // circllhist's bin edge 1.1 * 100 is 110.00000000000001, and Envoy 1.40 prints a single
        // 112 ms sample as `P0(115.00000000000001,...)`: the rounding is part of the output.
        let h = merged(&[100, 110, 200]);
        assert_eq!(
            cumulative(&h),
            [
                105.0,
                105.0,
                115.00000000000001,
                205.0,
                205.0,
                205.0,
                205.0,
                205.0,
                205.0,
                205.0
            ]
        );
        assert_eq!(
            cumulative(&merged(&[112])),
            [115.00000000000001; QUANTILE_COUNT]
        );
        let h = merged(&[1, 2, 3, 4]);
        assert_eq!(
            cumulative(&h),
            [1.05, 1.05, 2.05, 3.05, 4.05, 4.05, 4.05, 4.05, 4.05, 4.05]
        );
    }

    #[test]
    fn zero_values_sit_at_zero_and_thirds_print_like_envoy() {
        let h = merged(&[0, 0, 0, 0, 0, 1, 1, 2]);
        let q = cumulative(&h);
        assert_eq!(q[0], 0.0);
        assert_eq!(q[3], 1.0333333333333334);
        assert_eq!(q[9], 2.05);
    }

    #[test]
    fn quiet_interval_is_nan_and_cumulative_is_kept() {
        let h = merged(&[5]);
        h.merge();
        let (interval, cumulative) = h.computed_quantiles().unwrap();
        assert!(interval.iter().all(|v| v.is_nan()));
        assert_eq!(cumulative, [5.05; QUANTILE_COUNT]);
        assert!(h
            .quantile_summary()
            .starts_with("P0(nan,5.05) P25(nan,5.05)"));
    }

    #[test]
    fn subtract_handles_new_and_unchanged_bins() {
        let before = vec![(Bin(1), 2), (Bin(5), 1)];
        let now = vec![(Bin::ZERO, 1), (Bin(1), 2), (Bin(3), 4), (Bin(5), 3)];
        assert_eq!(
            subtract(&now, &before),
            vec![(Bin::ZERO, 1), (Bin(3), 4), (Bin(5), 2)]
        );
    }

    #[test]
    fn threads_record_into_their_own_shards_and_reads_sum_them() {
        let h = Histogram::new(HistogramUnit::Microseconds);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for v in 0..1000 {
                        h.record(v % 200 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.count(), 4000);
        let want: u64 = (0..4u64)
            .map(|t| (0..1000u64).map(|v| v % 200 + t).sum::<u64>())
            .sum();
        assert_eq!(h.sum(), want);
        h.merge();
        assert_eq!(h.prometheus_snapshot().count, 4000);
    }

    // Sums exactly as Envoy 1.40 printed them (`{:.32g}`) for the same bins.
    #[test]
    fn approximate_sums_match_envoy() {
        let sum =
            |values: &[u64]| crate::render::fmt_g(merged(values).prometheus_snapshot().sum, 32);
        // One 112 µs SET: bin [110, 120).
        assert_eq!(sum(&[112]), "114.78260869565218627030844800174");
        // Bins 79, 83, 94, 110.
        assert_eq!(sum(&[79, 83, 94, 117]), "372.27382452694257608527550473809");
        // Bins 80, 84, 96, 130, 140.
        assert_eq!(
            sum(&[80, 84, 96, 133, 141]),
            "541.13374617819238210358889773488"
        );
        // Three and six samples of 1: bin [1, 1.1).
        assert_eq!(sum(&[1, 1, 1]), "3.1428571428571432377907513000537");
        assert_eq!(sum(&[1; 6]), "6.2857142857142864755815026001073");
        assert_eq!(sum(&[21]), "21.488372093023254905119756585918");
        assert_eq!(sum(&[0, 0]), "0");
    }

    #[test]
    fn buckets_are_cumulative_and_inclusive_of_their_bound() {
        let h = merged(&[0, 1, 1, 5, 99, 100, 109, 110, 4_000_000]);
        let snap = h.prometheus_snapshot();
        assert_eq!(snap.count, 9);
        // 0.5: the zero; 1: both ones (Envoy 1.40 counts 1 under le="1"); 5: the five;
        // 100: 99 and the bin [100, 110) that holds the bound; 250: 110.
        assert_eq!(
            snap.buckets,
            [1, 3, 4, 4, 4, 4, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]
        );
        let empty = Histogram::new(HistogramUnit::Unspecified);
        assert_eq!(empty.prometheus_snapshot().buckets, [0; BUCKET_COUNT]);
        // Until a flush, the rendering shows nothing even though values were recorded.
        empty.record(3);
        assert_eq!(empty.prometheus_snapshot().count, 0);
    }
}
