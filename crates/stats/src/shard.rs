//! Per-thread shards: each recording thread writes its own cache line, reads sum the shards.
//!
//! A thread takes the next shard index (round robin) the first time it records anything and
//! keeps it for its life. Workers are long-lived threads, so with up to `STAT_SHARDS` workers
//! every worker owns its shards and recording never bounces a cache line between cores. More
//! threads than shards share shards; the atomic add keeps that correct, only slower.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

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
        let shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % STAT_SHARDS;
        s.set(shard);
        shard
    })
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
