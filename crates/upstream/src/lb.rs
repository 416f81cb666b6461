//! Host sets and their load balancers.
//!
//! RING_HASH and MAGLEV are ports of Envoy's `ring_hash_lb.cc` / `maglev_lb.cc` fed the way
//! `thread_aware_lb_impl.cc` feeds them, so a key hash lands on the same host as in Envoy:
//! - hosts are taken in priority-set order (config order for STATIC; DNS answer order, targets
//!   in config order, for STRICT_DNS). Envoy does not sort them for the ring; Maglev sorts its
//!   build entries by hash key itself;
//! - weights are normalised in `f64` exactly as `normalizeHostWeights` does, since the ring
//!   walks running `f64` sums and a different rounding moves entries between hosts;
//! - the table is built over the routable hosts the cluster hands in: the healthy ones, or all
//!   of them in panic mode (`cluster.rs`, `routable`), as Envoy's thread-aware balancers do;
//! - the hash reaches the table untouched: one priority, no `hash_balance_factor`, no retry
//!   attempts from the redis context.
//!
//! The other policies ignore the hash. Choosing never allocates and never locks.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;
use redvoy_config::model::{HashFunction, LbPolicy};

use crate::hash::{murmur2_64, xx_hash64, MURMUR_SEED};
use crate::host::Host;
use crate::redis_cluster::SlotMap;
use crate::UpstreamError;

/// Envoy's proto bound on `RingHashLbConfig.maximum_ring_size` (8M entries, ~128 MiB here).
pub const MAX_RING_SIZE: u64 = 8_388_608;
/// Envoy's proto bound on `MaglevLbConfig.table_size`.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;
/// Longest precomputed weighted round-robin schedule. Beyond this the schedule keeps the
/// weights' proportions over this many picks instead of one pick per unit of weight.
pub const MAX_WRR_SCHEDULE: u64 = 65_536;

/// What Envoy reports about a hashing table after a build (`ring_hash_lb.*` / `maglev_lb.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbTableStats {
    None,
    Ring {
        size: u64,
        min_hashes_per_host: u64,
        max_hashes_per_host: u64,
    },
    Maglev {
        min_entries_per_host: u64,
        max_entries_per_host: u64,
    },
}

/// An immutable set of hosts plus the load balancer built over them. Replaced as a whole (via
/// `ArcSwap` in `Cluster`) when membership changes.
pub struct HostSet {
    hosts: Vec<Arc<Host>>,
    lb: Lb,
    table_stats: LbTableStats,
    /// Built over every host because too few were healthy (Envoy's panic mode): each pick
    /// counts `lb_healthy_panic`.
    in_panic: bool,
}

enum Lb {
    Empty,
    Ring(Ring),
    Maglev(Maglev),
    RoundRobin(RoundRobin),
    Random(Random),
    LeastRequest(LeastRequest),
    /// `envoy.clusters.redis`: the slot map from `CLUSTER SLOTS`.
    Slots(SlotMap),
}

/// Checks the parts of a policy Envoy refuses when it creates the load balancer.
pub fn validate_policy(policy: &LbPolicy) -> Result<(), UpstreamError> {
    match policy {
        LbPolicy::RingHash {
            minimum_ring_size,
            maximum_ring_size,
            ..
        } => {
            if minimum_ring_size > maximum_ring_size {
                return Err(UpstreamError::RingSizeBounds {
                    min: *minimum_ring_size,
                    max: *maximum_ring_size,
                });
            }
            if *maximum_ring_size > MAX_RING_SIZE {
                return Err(UpstreamError::RingTooLarge(*maximum_ring_size));
            }
        }
        LbPolicy::Maglev { table_size } => {
            if *table_size > MAX_MAGLEV_TABLE_SIZE {
                return Err(UpstreamError::MaglevTableTooLarge(*table_size));
            }
            if !is_prime(*table_size) {
                return Err(UpstreamError::MaglevTableNotPrime);
            }
        }
        LbPolicy::LeastRequest { choice_count } => {
            if *choice_count < 2 {
                return Err(UpstreamError::LeastRequestChoiceCount(*choice_count));
            }
        }
        LbPolicy::RoundRobin | LbPolicy::Random | LbPolicy::ClusterProvided => {}
    }
    Ok(())
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

// === impl HostSet ===

impl HostSet {
    /// A set with no hosts: `choose` always answers `None`.
    pub fn empty() -> Self {
        Self {
            hosts: Vec::new(),
            lb: Lb::Empty,
            table_stats: LbTableStats::None,
            in_panic: false,
        }
    }

    /// Builds the load balancer for `policy` over `hosts` (in priority-set order). The policy
    /// must have passed [`validate_policy`]; out-of-range values are clamped, never panicked on.
    pub fn new(hosts: Vec<Arc<Host>>, policy: &LbPolicy, use_hostname_for_hashing: bool) -> Self {
        if hosts.is_empty() {
            return Self::empty();
        }
        let (lb, table_stats) = match policy {
            LbPolicy::RingHash {
                minimum_ring_size,
                maximum_ring_size,
                hash_function,
            } => match normalize(&hosts) {
                Some(norm) => {
                    let max = (*maximum_ring_size).min(MAX_RING_SIZE);
                    let min = (*minimum_ring_size).min(max);
                    let (ring, stats) = Ring::build(
                        &hosts,
                        &norm,
                        min,
                        max,
                        *hash_function,
                        use_hostname_for_hashing,
                    );
                    (Lb::Ring(ring), stats)
                }
                None => (Lb::Empty, LbTableStats::None),
            },
            LbPolicy::Maglev { table_size } => match normalize(&hosts) {
                Some(norm) => {
                    let size = (*table_size).clamp(2, MAX_MAGLEV_TABLE_SIZE);
                    let (maglev, stats) =
                        Maglev::build(&hosts, &norm, size, use_hostname_for_hashing);
                    (Lb::Maglev(maglev), stats)
                }
                None => (Lb::Empty, LbTableStats::None),
            },
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided => (
                Lb::RoundRobin(RoundRobin::build(&hosts)),
                LbTableStats::None,
            ),
            LbPolicy::Random => (Lb::Random(Random::build(&hosts)), LbTableStats::None),
            LbPolicy::LeastRequest { choice_count } => (
                Lb::LeastRequest(LeastRequest::build(&hosts, *choice_count)),
                LbTableStats::None,
            ),
        };
        Self {
            hosts,
            lb,
            table_stats,
            in_panic: false,
        }
    }

    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.hosts
    }

    /// Index into `hosts()` of the host the cluster's LB picks for this hash (ignored by
    /// non-hashing LBs). None when there are no hosts.
    #[inline]
    pub fn choose(&self, hash: u64) -> Option<usize> {
        match &self.lb {
            Lb::Empty => None,
            Lb::Ring(r) => r.choose(hash),
            Lb::Maglev(m) => m.choose(hash),
            Lb::RoundRobin(rr) => Some(rr.choose(self.hosts.len())),
            Lb::Random(r) => Some(r.choose(self.hosts.len())),
            Lb::LeastRequest(lr) => Some(lr.choose(&self.hosts)),
            // Generic callers: the primary of the slot the hash names.
            Lb::Slots(map) => map
                .shard_for_slot((hash & 0x3FFF) as u16)
                .map(|s| s.primary),
        }
    }

    /// A Redis Cluster's host set: every discovered node, with its slot map.
    pub fn redis_cluster(hosts: Vec<Arc<Host>>, map: SlotMap) -> Self {
        Self {
            hosts,
            lb: Lb::Slots(map),
            table_stats: LbTableStats::None,
            in_panic: false,
        }
    }

    /// The same host set, marked as built in panic mode.
    pub(crate) fn in_panic_mode(mut self, in_panic: bool) -> Self {
        self.in_panic = in_panic;
        self
    }

    /// Whether the set was built over every host because too few were healthy.
    #[inline]
    pub fn in_panic(&self) -> bool {
        self.in_panic
    }

    /// Some for an envoy.clusters.redis cluster once a topology is installed.
    #[inline]
    pub fn slot_map(&self) -> Option<&SlotMap> {
        match &self.lb {
            Lb::Slots(map) => Some(map),
            _ => None,
        }
    }

    /// The host `choose` picks.
    #[inline]
    pub fn choose_host(&self, hash: u64) -> Option<&Arc<Host>> {
        self.choose(hash).and_then(|i| self.hosts.get(i))
    }

    /// True for RING_HASH and MAGLEV (the key decides the host).
    pub fn is_hashing(&self) -> bool {
        matches!(self.lb, Lb::Ring(_) | Lb::Maglev(_))
    }

    /// What the last build reported for `ring_hash_lb.*` / `maglev_lb.*`.
    pub fn table_stats(&self) -> LbTableStats {
        self.table_stats
    }
}

impl fmt::Debug for HostSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lb = match &self.lb {
            Lb::Empty => "empty",
            Lb::Ring(_) => "ring_hash",
            Lb::Maglev(_) => "maglev",
            Lb::RoundRobin(_) => "round_robin",
            Lb::Random(_) => "random",
            Lb::LeastRequest(_) => "least_request",
            Lb::Slots(_) => "redis_cluster",
        };
        f.debug_struct("HostSet")
            .field(
                "hosts",
                &self
                    .hosts
                    .iter()
                    .map(|h| h.address_string())
                    .collect::<Vec<_>>(),
            )
            .field("lb", &lb)
            .field("table_stats", &self.table_stats)
            .finish()
    }
}

/// Normalised host weights, as `normalizeHostWeights` computes them (no locality weighting).
struct Normalized {
    weights: Vec<f64>,
    min: f64,
    max: f64,
}

/// `None` when Envoy would build nothing: a weight sum of zero or above `u32::MAX` (Envoy
/// refuses the latter at config time; a DNS answer could still reach it, and Envoy then builds
/// an empty table too).
fn normalize(hosts: &[Arc<Host>]) -> Option<Normalized> {
    let sum: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    if sum == 0 || sum > u64::from(u32::MAX) {
        return None;
    }
    let mut min = 1.0f64;
    let mut max = 0.0f64;
    let weights = hosts
        .iter()
        .map(|h| {
            // Same operation order as Envoy: weight * locality_weight(1.0) / sum.
            let w = f64::from(h.weight) * 1.0 / sum as f64;
            if w < min {
                min = w;
            }
            if max < w {
                max = w;
            }
            w
        })
        .collect();
    Some(Normalized { weights, min, max })
}

// === Ring hash ===

/// Envoy's Ketama-style ring: parallel arrays (hash, host index), sorted by hash.
enum Ring {
    /// One host holds every entry: every hash picks it, so the entries (16 bytes each, 1,024
    /// at the default minimum size) are not stored. A mesh has many one-endpoint services.
    Single,
    Table {
        hashes: Vec<u64>,
        host_of: Vec<u32>,
    },
}

impl Ring {
    fn build(
        hosts: &[Arc<Host>],
        norm: &Normalized,
        min_ring_size: u64,
        max_ring_size: u64,
        hash_function: HashFunction,
        use_hostname: bool,
    ) -> (Self, LbTableStats) {
        // The least-weighted host gets a whole number of entries, capped by the maximum size.
        let wanted = (norm.min * min_ring_size as f64).ceil() / norm.min;
        let cap = max_ring_size as f64;
        let scale = if cap < wanted { cap } else { wanted };
        let ring_size = scale.ceil() as u64;
        if hosts.len() == 1 && ring_size > 0 {
            // The loop below would give the host all `ring_size` entries.
            let stats = LbTableStats::Ring {
                size: ring_size,
                min_hashes_per_host: ring_size,
                max_hashes_per_host: ring_size,
            };
            return (Ring::Single, stats);
        }

        let mut entries: Vec<(u64, u32)> =
            Vec::with_capacity(usize::try_from(ring_size.min(MAX_RING_SIZE)).unwrap_or(0));
        let mut key: Vec<u8> = Vec::with_capacity(64);
        let mut digits = itoa_buf::Buffer::new();
        // Running sums across all hosts keep fractional shares from being lost (Envoy's
        // current_hashes / target_hashes).
        let mut current_hashes = 0.0f64;
        let mut target_hashes = 0.0f64;
        let mut min_hashes = ring_size;
        let mut max_hashes = 0u64;
        for (idx, (host, weight)) in hosts.iter().zip(&norm.weights).enumerate() {
            key.clear();
            key.extend_from_slice(host.hash_key(use_hostname).as_bytes());
            key.push(b'_');
            let prefix = key.len();
            target_hashes += scale * weight;
            let mut i = 0u64;
            while current_hashes < target_hashes {
                key.truncate(prefix);
                key.extend_from_slice(digits.format(i));
                let hash = match hash_function {
                    HashFunction::MurmurHash2 => murmur2_64(&key, MURMUR_SEED),
                    HashFunction::XxHash => xx_hash64(&key, 0),
                };
                entries.push((hash, idx as u32));
                i += 1;
                current_hashes += 1.0;
            }
            min_hashes = min_hashes.min(i);
            max_hashes = max_hashes.max(i);
        }
        // Stable, so equal hashes (never seen in practice) keep host order.
        entries.sort_by_key(|e| e.0);
        let ring = Ring::Table {
            hashes: entries.iter().map(|e| e.0).collect(),
            host_of: entries.iter().map(|e| e.1).collect(),
        };
        let stats = LbTableStats::Ring {
            size: ring_size,
            min_hashes_per_host: min_hashes,
            max_hashes_per_host: max_hashes,
        };
        (ring, stats)
    }

    /// libketama's `ketama_get_server` as ported by Envoy (signed indices, wrap to entry 0):
    /// the first entry whose hash is ≥ `h`, or entry 0 past the end.
    #[inline]
    fn choose(&self, h: u64) -> Option<usize> {
        let (hashes, host_of) = match self {
            Ring::Single => return Some(0),
            Ring::Table { hashes, host_of } => (hashes, host_of),
        };
        let len = hashes.len() as i64;
        if len == 0 {
            return None;
        }
        let (mut low, mut high) = (0i64, len);
        let mid = loop {
            let mid = (low + high) / 2;
            if mid == len {
                break 0;
            }
            let midval = hashes[mid as usize];
            let midval1 = if mid == 0 {
                0
            } else {
                hashes[(mid - 1) as usize]
            };
            if h <= midval && h > midval1 {
                break mid;
            }
            if midval < h {
                low = mid + 1;
            } else {
                high = mid - 1;
            }
            if low > high {
                break 0;
            }
        };
        host_of.get(mid as usize).map(|&i| i as usize)
    }
}

/// Decimal formatting of the ring entry index without allocating (Envoy: `absl::StrCat(i)`).
mod itoa_buf {
    pub struct Buffer([u8; 20]);

    impl Buffer {
        pub fn new() -> Self {
            Self([0; 20])
        }

        pub fn format(&mut self, mut n: u64) -> &[u8] {
            let mut pos = self.0.len();
            loop {
                pos -= 1;
                self.0[pos] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            &self.0[pos..]
        }
    }
}

// === Maglev ===

enum Maglev {
    /// One host: Envoy 1.40 skips the table (its stats then read 1 / 1).
    Single,
    Table(MaglevTable),
}

/// The finished table, packed as tightly as its host indexes allow: with the usual handful of
/// hosts, 65,537 entries take 16 KiB (2 bits each) instead of 256 KiB as `u32`. A lookup is one
/// random access into the table, and on a worker whose caches the kernel's network stack keeps
/// flushing it missed the cache often enough to be 6 % of the worker's time at `-P 16`.
enum MaglevTable {
    /// `bits` (1, 2, 4 or 8) per entry, `64 / bits` entries per word, low bits first.
    Packed {
        bits: u32,
        words: Box<[u64]>,
        len: u64,
    },
    U16(Box<[u16]>),
    U32(Box<[u32]>),
}

impl MaglevTable {
    fn compact(table: Vec<u32>, hosts: usize) -> Self {
        let needed = usize::BITS - hosts.saturating_sub(1).leading_zeros();
        let bits = match needed {
            0 | 1 => 1,
            2 => 2,
            3 | 4 => 4,
            5..=8 => 8,
            9..=16 => return MaglevTable::U16(table.iter().map(|&h| h as u16).collect()),
            _ => return MaglevTable::U32(table.into_boxed_slice()),
        };
        let per_word = (64 / bits) as usize;
        let mut words = vec![0u64; table.len().div_ceil(per_word)];
        for (i, &host) in table.iter().enumerate() {
            words[i / per_word] |= u64::from(host) << ((i % per_word) as u32 * bits);
        }
        MaglevTable::Packed {
            bits,
            words: words.into_boxed_slice(),
            len: table.len() as u64,
        }
    }

    #[inline]
    fn get(&self, hash: u64) -> Option<usize> {
        match self {
            MaglevTable::Packed { bits, words, len } => {
                let i = hash % len;
                // `bits` is a power of two dividing 64: the word and the place in it are shifts
                // and masks.
                let log_bits = bits.trailing_zeros();
                let log_per_word = 6 - log_bits;
                let word = words.get((i >> log_per_word) as usize)?;
                let shift = ((i & ((1 << log_per_word) - 1)) as u32) << log_bits;
                Some(((word >> shift) & ((1u64 << bits) - 1)) as usize)
            }
            MaglevTable::U16(t) => t.get((hash % t.len() as u64) as usize).map(|&h| h.into()),
            MaglevTable::U32(t) => t.get((hash % t.len() as u64) as usize).map(|&h| h as usize),
        }
    }
}

struct MaglevEntry {
    host: u32,
    offset: u64,
    skip: u64,
    weight: f64,
    target_weight: f64,
    next: u64,
    count: u64,
}

const MAGLEV_EMPTY: u32 = u32::MAX;

impl Maglev {
    fn build(
        hosts: &[Arc<Host>],
        norm: &Normalized,
        table_size: u64,
        use_hostname: bool,
    ) -> (Self, LbTableStats) {
        if hosts.len() == 1 {
            let stats = LbTableStats::Maglev {
                min_entries_per_host: 1,
                max_entries_per_host: 1,
            };
            return (Maglev::Single, stats);
        }
        // Envoy sorts by (hash key, host pointer, weight); equal keys only happen with
        // duplicate hostnames, where Envoy's order is pointer order — host order here.
        let mut order: Vec<usize> = (0..hosts.len()).collect();
        order.sort_by(|&a, &b| {
            hosts[a]
                .hash_key(use_hostname)
                .as_bytes()
                .cmp(hosts[b].hash_key(use_hostname).as_bytes())
        });
        let mut entries: Vec<MaglevEntry> = order
            .iter()
            .map(|&i| {
                let key = hosts[i].hash_key(use_hostname).as_bytes();
                MaglevEntry {
                    host: i as u32,
                    offset: xx_hash64(key, 0) % table_size,
                    skip: xx_hash64(key, 1) % (table_size - 1) + 1,
                    weight: norm.weights[i],
                    target_weight: 0.0,
                    next: 0,
                    count: 0,
                }
            })
            .collect();

        let size = usize::try_from(table_size).unwrap_or(usize::MAX);
        let mut table = vec![MAGLEV_EMPTY; size];
        let permutation = |e: &MaglevEntry| {
            (e.offset.wrapping_add(e.skip.wrapping_mul(e.next)) % table_size) as usize
        };
        let mut filled = 0usize;
        let mut iteration: u32 = 1;
        while filled < size {
            for e in entries.iter_mut() {
                if filled >= size {
                    break;
                }
                // A host with the maximum weight claims a slot every round; one with a third of
                // it every third round.
                if f64::from(iteration) * e.weight < e.target_weight {
                    continue;
                }
                e.target_weight += norm.max;
                let mut c = permutation(e);
                while table[c] != MAGLEV_EMPTY {
                    e.next += 1;
                    c = permutation(e);
                }
                table[c] = e.host;
                e.next += 1;
                e.count += 1;
                filled += 1;
            }
            iteration = iteration.wrapping_add(1);
        }
        let min = entries.iter().map(|e| e.count).min().unwrap_or(0);
        let max = entries.iter().map(|e| e.count).max().unwrap_or(0);
        let stats = LbTableStats::Maglev {
            min_entries_per_host: min,
            max_entries_per_host: max,
        };
        (
            Maglev::Table(MaglevTable::compact(table, hosts.len())),
            stats,
        )
    }

    #[inline]
    fn choose(&self, hash: u64) -> Option<usize> {
        match self {
            Maglev::Single => Some(0),
            Maglev::Table(table) => table.get(hash),
        }
    }
}

// === Round robin ===

/// Unweighted: Envoy's `hosts[rr_index++ % size]`, starting at a random index. Weighted: a
/// precomputed earliest-deadline-first schedule (Envoy's EDF scheduler picks in the same
/// proportions), walked by the same counter. One counter shared by all workers.
struct RoundRobin {
    schedule: Option<Vec<u32>>,
    next: AtomicUsize,
}

#[derive(PartialEq)]
struct Deadline(f64, u32);

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    // Reversed: BinaryHeap is a max-heap and the earliest deadline (then lowest index) wins.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

impl RoundRobin {
    fn build(hosts: &[Arc<Host>]) -> Self {
        let start = rand::thread_rng().gen::<usize>();
        Self {
            schedule: weighted_schedule(hosts),
            next: AtomicUsize::new(start),
        }
    }

    #[inline]
    fn choose(&self, n: usize) -> usize {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.schedule {
            Some(s) => s[i % s.len()] as usize,
            None => i % n,
        }
    }
}

fn all_weights_equal(hosts: &[Arc<Host>]) -> bool {
    hosts.windows(2).all(|w| w[0].weight == w[1].weight)
}

fn weighted_schedule(hosts: &[Arc<Host>]) -> Option<Vec<u32>> {
    if all_weights_equal(hosts) {
        return None;
    }
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight.max(1))).sum();
    let len = total.min(MAX_WRR_SCHEDULE) as usize;
    let mut heap: BinaryHeap<Deadline> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Deadline(1.0 / f64::from(h.weight.max(1)), i as u32))
        .collect();
    let mut schedule = Vec::with_capacity(len);
    while schedule.len() < len {
        let Some(Deadline(deadline, i)) = heap.pop() else {
            break;
        };
        schedule.push(i);
        let step = 1.0 / f64::from(hosts[i as usize].weight.max(1));
        heap.push(Deadline(deadline + step, i));
    }
    Some(schedule)
}

// === Random ===

struct Random {
    /// Running weight sums when weights differ (pick by weight), else None (uniform).
    cumulative: Option<Vec<u64>>,
}

impl Random {
    fn build(hosts: &[Arc<Host>]) -> Self {
        if all_weights_equal(hosts) {
            return Self { cumulative: None };
        }
        let mut sum = 0u64;
        let cumulative = hosts
            .iter()
            .map(|h| {
                sum += u64::from(h.weight.max(1));
                sum
            })
            .collect();
        Self {
            cumulative: Some(cumulative),
        }
    }

    #[inline]
    fn choose(&self, n: usize) -> usize {
        let mut rng = rand::thread_rng();
        match &self.cumulative {
            Some(c) => {
                let total = c.last().copied().unwrap_or(1);
                let r = rng.gen_range(0..total);
                c.partition_point(|&s| s <= r).min(n - 1)
            }
            None => rng.gen_range(0..n),
        }
    }
}

// === Least request ===

/// Envoy's power-of-`choice_count`-choices over `rq_active` (first sample wins ties). With
/// unequal weights Envoy runs an EDF over `weight / (active + 1)`; here the samples are drawn
/// by weight and the best `weight / (active + 1)` wins, which favours the same hosts without a
/// lock.
struct LeastRequest {
    choice_count: u32,
    weights: Option<Random>,
}

impl LeastRequest {
    fn build(hosts: &[Arc<Host>], choice_count: u32) -> Self {
        let weights = (!all_weights_equal(hosts)).then(|| Random::build(hosts));
        Self {
            choice_count: choice_count.max(1),
            weights,
        }
    }

    #[inline]
    fn choose(&self, hosts: &[Arc<Host>]) -> usize {
        let n = hosts.len();
        if n == 1 {
            return 0;
        }
        let mut rng = rand::thread_rng();
        let mut best: Option<(usize, f64)> = None;
        for _ in 0..self.choice_count {
            let i = match &self.weights {
                Some(w) => w.choose(n),
                None => rng.gen_range(0..n),
            };
            let active = hosts[i].stats.rq_active.load(Ordering::Relaxed) as f64;
            let score = match self.weights {
                Some(_) => (active + 1.0) / f64::from(hosts[i].weight.max(1)),
                None => active,
            };
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((i, score));
            }
        }
        best.map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests;
