//! Per-thread shards: each recording thread writes its own cache line, reads sum the shards.
//!
//! A thread takes the next shard index the first time it records anything and keeps it for its
//! life. The first `STAT_SHARDS - 1` threads to record (the workers, started first) own their
//! shard alone: nobody else ever writes it, so their adds are a plain load and store, without
//! the locked read-modify-write that was most of the cost of a stat on the request path. Every
//! later thread shares the last shard, with atomic adds.

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

/// The calling thread's shard.
#[inline]
pub(crate) fn current() -> usize {
    SHARD.with(|s| {
        let shard = s.get();
        if shard != UNASSIGNED {
            return shard;
        }
        let shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed).min(SHARED_SHARD);
        s.set(shard);
        shard
    })
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
        let mine = current();
        assert_eq!(current(), mine);
        let others: Vec<usize> = (0..STAT_SHARDS)
            .map(|_| std::thread::spawn(current).join().unwrap())
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
