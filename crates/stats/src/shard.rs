//! Per-thread shards: each data-path thread writes its own cache line, reads sum the shards.
//!
//! A worker thread claims the next shard index when it starts ([`claim`]) and keeps it for its
//! life. The first `STAT_SHARDS - 1` to claim own their shard alone: nobody else ever writes
//! it, so their adds are a plain load and store, without the locked read-modify-write that was
//! most of the cost of a stat on the request path. Every other thread (the main thread, xDS,
//! admin, health checks; workers beyond the owners) records into the shared place, with
//! atomic adds: for a counter that is a cell inside the counter, so a counter only the control
//! plane moves never allocates the shard array (2 KiB).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per counter and per histogram. 16 covers the worker counts a sidecar runs with
/// (`--concurrency` 1..16); beyond that threads share shards (still exact, just contended).
pub const STAT_SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// Marks a thread that has not recorded anything yet.
const UNASSIGNED: usize = usize::MAX;

thread_local! {
    // Const-initialized and without a destructor: reading it is a plain thread-local load.
    static SHARD: Cell<usize> = const { Cell::new(UNASSIGNED) };
}

/// The calling thread's shard: its own after [`claim`], else the shared one.
#[inline]
pub(crate) fn current() -> usize {
    SHARD.with(|s| {
        let shard = s.get();
        if shard != UNASSIGNED {
            shard
        } else {
            SHARED_SHARD
        }
    })
}

/// Gives the calling thread a shard of its own (while any are left), for a thread that records
/// on the request path. Idempotent.
pub fn claim() {
    SHARD.with(|s| {
        if s.get() == UNASSIGNED {
            s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed).min(SHARED_SHARD));
        }
    });
}

/// The shard every thread after the owners shares.
pub(crate) const SHARED_SHARD: usize = STAT_SHARDS - 1;

/// Adds `n` to `cell`, a cell of shard `shard` as `current` returned it.
#[inline]
pub(crate) fn add(cell: &AtomicU64, shard: usize, n: u64) {
    if shard < SHARED_SHARD {
        // Only this thread writes its own shard (a counter reset moves the counter's base, never
        // a shard); readers see the old or the new value, as with an atomic add.
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        cell.fetch_add(n, Ordering::Relaxed);
    }
}

/// Keeps its value alone on a cache line. 128 bytes rather than 64 because x86's adjacent-line
/// prefetcher and Apple/ARM big cores move lines in pairs (the same choice as crossbeam's
/// `CachePadded`).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_threads_spread_round_robin() {
        assert_eq!(
            std::thread::spawn(current).join().unwrap(),
            SHARED_SHARD,
            "a thread that did not claim one records in the shared shard"
        );
        claim();
        let mine = current();
        claim();
        assert_eq!(current(), mine);
        let others: Vec<usize> = (0..STAT_SHARDS)
            .map(|_| {
                std::thread::spawn(|| {
                    claim();
                    current()
                })
                .join()
                .unwrap()
            })
            .collect();
        let mut distinct = others.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Other tests start threads concurrently, so only "spread out" can be asserted.
        assert!(distinct.len() > 1, "{others:?}");
        assert!(others.iter().all(|&s| s < STAT_SHARDS));
    }

    #[test]
    fn padding_is_a_cache_line_pair() {
        assert_eq!(std::mem::align_of::<Padded<u64>>(), 128);
        assert_eq!(std::mem::size_of::<[Padded<u64>; 2]>(), 256);
    }
}
