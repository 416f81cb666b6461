//! Recording cost with one and two threads hammering the same stat: one shared atomic (the
//! previous design, and still the gauge's) against per-thread shards. A std-only bench (no
//! criterion): `cargo bench -p redvoy-stats --bench recording`. Prints nanoseconds per operation
//! per thread (wall time) from the best run in which every thread stayed on a CPU for at least
//! `MIN_ON_CPU` of its run (read from `/proc/thread-self/schedstat`): on a busy machine only
//! such runs show two threads really recording at the same time.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use redvoy_stats::{HistogramUnit, Store};

/// Operations per thread per run.
const OPS: u64 = 2_000_000;
/// Threads recording at once: one (uncontended cost) and two (two workers).
const THREAD_COUNTS: [usize; 2] = [1, 2];
/// Runs per measurement; the best qualifying one is reported.
const RUNS: usize = 30;
/// A run counts only if every thread was on a CPU for this share of its wall time.
const MIN_ON_CPU: f64 = 0.9;

/// Nanoseconds this thread has spent on a CPU (Linux); `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn measure(label: &str, op: impl Fn(u64) + Send + Sync + 'static) {
    let op = Arc::new(op);
    let results: Vec<String> = THREAD_COUNTS
        .iter()
        .map(|&threads| match run(threads, &op) {
            Some(ns) => format!("{ns:>7.2}"),
            None => format!("{:>7}", "busy"),
        })
        .collect();
    println!("{label:<52} {} ns/op", results.join(" "));
}

/// Best wall-clock ns/op over the runs where all threads ran concurrently.
fn run(threads: usize, op: &Arc<impl Fn(u64) + Send + Sync + 'static>) -> Option<f64> {
    let mut best: Option<f64> = None;
    for _ in 0..RUNS {
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let op = Arc::clone(op);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let cpu_start = thread_cpu_ns();
                    let start = Instant::now();
                    for i in 0..OPS {
                        op(black_box(i));
                    }
                    let wall = start.elapsed().as_nanos() as f64;
                    let on_cpu = match (cpu_start, thread_cpu_ns()) {
                        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / wall,
                        _ => 1.0,
                    };
                    (wall / OPS as f64, on_cpu)
                })
            })
            .collect();
        let results: Vec<(f64, f64)> = handles
            .into_iter()
            .map(|t| t.join().unwrap_or((f64::MAX, 0.0)))
            .collect();
        if results.iter().all(|&(_, on_cpu)| on_cpu >= MIN_ON_CPU) {
            let worst = results.iter().map(|&(ns, _)| ns).fold(0.0, f64::max);
            best = Some(best.map_or(worst, |b: f64| b.min(worst)));
        }
    }
    best
}

fn main() {
    println!(
        "{:<52} {:>7} {:>7}",
        "(ns per op per thread; best concurrent run)", "1 thr", "2 thr"
    );
    let store = Store::new();

    let shared = Arc::new(AtomicU64::new(0));
    measure("counter, one shared atomic (old design)", move |_| {
        shared.fetch_add(1, Ordering::Relaxed);
    });

    let c = store.counter("bench.counter");
    measure("counter, per-thread shards (Counter::inc)", move |_| {
        c.inc()
    });

    let g = store.gauge("bench.gauge");
    measure("gauge inc+dec, one shared atomic (Gauge)", move |_| {
        g.inc();
        g.dec();
    });

    // The previous histogram: count, sum and the bin on shared lines.
    let old = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    measure("histogram, shared count+sum+bin (old design)", move |i| {
        old[0].fetch_add(1, Ordering::Relaxed);
        old[1].fetch_add(80 + i % 8, Ordering::Relaxed);
        old[2].fetch_add(1, Ordering::Relaxed);
    });

    let h = store.histogram("bench.histogram", HistogramUnit::Microseconds);
    measure(
        "histogram, per-thread shards (Histogram::record)",
        move |i| h.record(80 + i % 8),
    );
}
