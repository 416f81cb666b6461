//! Lock-free histograms. (Quantile rendering is owned by the stats owner.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a histogram's values mean; Envoy renders them all the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramUnit {
    Milliseconds,
    Microseconds,
    Unspecified,
}

/// Number of log-linear buckets; see `bucket_of`.
const BUCKETS: usize = 64 * 16;

#[derive(Debug)]
struct Inner {
    unit: HistogramUnit,
    count: AtomicU64,
    sum: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

/// A recording handle; cloning shares the data.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<Inner>);

impl Histogram {
    pub fn new(unit: HistogramUnit) -> Self {
        let buckets = (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Inner {
            unit,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            buckets,
        }))
    }

    pub fn unit(&self) -> HistogramUnit {
        self.0.unit
    }

    pub fn record(&self, value: u64) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(value, Ordering::Relaxed);
        if let Some(b) = self.0.buckets.get(bucket_of(value)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> u64 {
        self.0.sum.load(Ordering::Relaxed)
    }
}

/// 16 linear sub-buckets per power of two: about 6% relative error, like Envoy's circllhist.
fn bucket_of(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize; // >= 4
    let sub = ((v >> (exp - 4)) & 0xf) as usize;
    (exp - 3) * 16 + sub
}
