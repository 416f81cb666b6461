//! Load balancer tests. Expected values come from Envoy's own tests
//! (`test/extensions/load_balancing_policies/{ring_hash,maglev}/*_lb_test.cc`) and from key
//! placements observed on a real Envoy 1.40 (`testdata/envoy_1_40_placement.txt`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redvoy_config::model::{HashFunction, LbPolicy};

use super::*;
use crate::hash::{murmur2_64, MURMUR_SEED};
use crate::host::Host;

fn host(addr: &str, weight: u32) -> Arc<Host> {
    Arc::new(Host::new(addr.parse::<SocketAddr>().unwrap(), "", weight))
}

fn named(addr: &str, hostname: &str, weight: u32) -> Arc<Host> {
    Arc::new(Host::new(
        addr.parse::<SocketAddr>().unwrap(),
        hostname,
        weight,
    ))
}

fn ports(ports: std::ops::Range<u16>) -> Vec<Arc<Host>> {
    ports.map(|p| host(&format!("127.0.0.1:{p}"), 1)).collect()
}

fn ring(min: u64, max: u64) -> LbPolicy {
    LbPolicy::RingHash {
        minimum_ring_size: min,
        maximum_ring_size: max,
        hash_function: HashFunction::XxHash,
    }
}

fn ring_default() -> LbPolicy {
    ring(1024, MAX_RING_SIZE)
}

fn maglev(table_size: u64) -> LbPolicy {
    LbPolicy::Maglev { table_size }
}

fn ring_hashes(set: &HostSet) -> Vec<(u64, usize)> {
    match &set.lb {
        Lb::Ring(Ring::Table { hashes, host_of }) => hashes
            .iter()
            .zip(host_of)
            .map(|(&h, &i)| (h, i as usize))
            .collect(),
        _ => panic!("not a ring"),
    }
}

fn port_of(set: &HostSet, hash: u64) -> u16 {
    set.choose_host(hash).unwrap().address.port()
}

// === Ring hash (ring_hash_lb_test.cc) ===

#[test]
fn ring_of_one_host_stores_no_entries_and_reports_them_all() {
    let set = HostSet::new(ports(90..91), &ring_default(), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 1024,
            min_hashes_per_host: 1024,
            max_hashes_per_host: 1024
        }
    );
    assert!(matches!(&set.lb, Lb::Ring(Ring::Single)));
    for hash in [0, 1, 1 << 40, u64::MAX] {
        assert_eq!(set.choose(hash), Some(0));
    }
    // A ring with no entries picks nothing, one host or not (Envoy's empty ring).
    let set = HostSet::new(ports(90..91), &ring(0, 0), false);
    assert_eq!(set.choose(7), None);
}

#[test]
fn ring_basic() {
    let set = HostSet::new(ports(90..96), &ring(12, MAX_RING_SIZE), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 12,
            min_hashes_per_host: 2,
            max_hashes_per_host: 2
        }
    );
    let expected = [
        (833437586790550860, 4),
        (928266305478181108, 2),
        (1033482794131418490, 0),
        (3551244743356806947, 5),
        (3851675632748031481, 3),
        (5583722120771150861, 1),
        (6311230543546372928, 1),
        (7700377290971790572, 3),
        (13144177310400110813, 5),
        (13444792449719432967, 2),
        (15516499411664133160, 4),
        (16117243373044804889, 0),
    ];
    assert_eq!(ring_hashes(&set), expected);
    assert_eq!(set.choose(0), Some(4));
    assert_eq!(set.choose(u64::MAX), Some(4));
    assert_eq!(set.choose(3551244743356806947), Some(5));
    assert_eq!(set.choose(3551244743356806948), Some(3));
    assert_eq!(set.choose(16117243373044804880), Some(0));
    assert!(set.is_hashing());
}

#[test]
fn ring_basic_with_murmur2() {
    let policy = LbPolicy::RingHash {
        minimum_ring_size: 12,
        maximum_ring_size: MAX_RING_SIZE,
        hash_function: HashFunction::MurmurHash2,
    };
    let set = HostSet::new(ports(80..86), &policy, false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 12,
            min_hashes_per_host: 2,
            max_hashes_per_host: 2
        }
    );
    let expected = [
        (1358027074129602068, 5),
        (4361834613929391114, 3),
        (7224494972555149682, 4),
        (7701421856454313576, 1),
        (8649315368077433379, 2),
        (8739448859063030639, 4),
        (9887544217113020895, 1),
        (10150910876324007731, 2),
        (15168472011420622455, 3),
        (15427156902705414897, 0),
        (16375050414328759093, 5),
        (17613279263364193813, 0),
    ];
    assert_eq!(ring_hashes(&set), expected);
    assert_eq!(set.choose(0), Some(5));
    assert_eq!(set.choose(u64::MAX), Some(5));
    assert_eq!(set.choose(1358027074129602068), Some(5));
    assert_eq!(set.choose(1358027074129602069), Some(3));
    assert_eq!(set.choose(10150910876324007730), Some(2));
}

#[test]
fn ring_basic_with_hostname() {
    let hosts: Vec<_> = (90..96)
        .map(|p| named(&format!("127.0.0.1:{p}"), &p.to_string(), 1))
        .collect();
    let set = HostSet::new(hosts, &ring(12, MAX_RING_SIZE), true);
    let expected = [
        (1975508444536362413, 5),
        (2376063919839173711, 5),
        (2386806903309390596, 3),
        (6749904478991551885, 4),
        (6803900775736438537, 3),
        (7225015537174310577, 2),
        (8787465352164086522, 0),
        (11282020843382717940, 2),
        (13723418369486627818, 1),
        (13776502110861797421, 0),
        (14338313586354474791, 1),
        (15364271037087512980, 4),
    ];
    assert_eq!(ring_hashes(&set), expected);
    assert_eq!(set.choose(0), Some(5));
    assert_eq!(set.choose(u64::MAX), Some(5));
    assert_eq!(set.choose(7225015537174310577), Some(2));
    assert_eq!(set.choose(6803900775736438537), Some(3));
}

#[test]
fn ring_uneven_hosts() {
    let set = HostSet::new(ports(80..82), &ring(3, MAX_RING_SIZE), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 4,
            min_hashes_per_host: 2,
            max_hashes_per_host: 2
        }
    );
    assert_eq!(
        ring_hashes(&set),
        [
            (5454692015285649509, 0),
            (7859399908942313493, 1),
            (13838424394637650569, 0),
            (16064866803292627174, 1)
        ]
    );
    assert_eq!(set.choose(0), Some(0));

    let set = HostSet::new(ports(81..83), &ring(3, MAX_RING_SIZE), false);
    assert_eq!(
        ring_hashes(&set),
        [
            (7859399908942313493, 0),
            (8241336090459785962, 1),
            (12882406409176325258, 1),
            (16064866803292627174, 0)
        ]
    );
    assert_eq!(set.choose(0), Some(0));
}

#[test]
fn ring_host_weighted_tiny() {
    let hosts = vec![
        host("127.0.0.1:90", 1),
        host("127.0.0.1:91", 2),
        host("127.0.0.1:92", 3),
    ];
    let set = HostSet::new(hosts, &ring(6, 6), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 6,
            min_hashes_per_host: 1,
            max_hashes_per_host: 3
        }
    );
    for (hash, want) in [
        (928266305478181108, 2),
        (4443673547860492590, 2),
        (5583722120771150861, 1),
        (6311230543546372928, 1),
        (13444792449719432967, 2),
        (16117243373044804889, 0),
    ] {
        assert_eq!(set.choose(hash), Some(want), "hash {hash}");
    }
}

fn spread(set: &HostSet, n: u64, base_port: u16, buckets: usize) -> Vec<u32> {
    let mut counts = vec![0u32; buckets];
    for i in 0..n {
        counts[usize::from(port_of(set, i * (u64::MAX / n)) - base_port)] += 1;
    }
    counts
}

#[test]
fn ring_host_weighted_large() {
    let hosts = vec![
        host("127.0.0.1:90", 1),
        host("127.0.0.1:91", 2),
        host("127.0.0.1:92", 3),
    ];
    let set = HostSet::new(hosts, &ring(6144, MAX_RING_SIZE), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 6144,
            min_hashes_per_host: 1024,
            max_hashes_per_host: 3072
        }
    );
    assert_eq!(spread(&set, 6000, 90, 3), [987, 1932, 3081]);
}

#[test]
fn ring_small_fractional_scale() {
    let set = HostSet::new(ports(90..94), &ring(2, 2), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 2,
            min_hashes_per_host: 0,
            max_hashes_per_host: 1
        }
    );
    let counts = spread(&set, 1024, 90, 4);
    assert_eq!(counts.iter().filter(|&&c| c == 0).count(), 2);
    assert_eq!(counts.iter().sum::<u32>(), 1024);
}

#[test]
fn ring_large_fractional_scale() {
    let set = HostSet::new(ports(90..92), &ring(1023, 1023), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 1023,
            min_hashes_per_host: 511,
            max_hashes_per_host: 512
        }
    );
    assert_eq!(spread(&set, 1023, 90, 2), [526, 497]);
}

#[test]
fn ring_defaults_three_hosts() {
    // Observed on Envoy 1.40: ring_hash_lb.size 1026, 342 hashes per host.
    let set = HostSet::new(ports(7000..7003), &ring_default(), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 1026,
            min_hashes_per_host: 342,
            max_hashes_per_host: 342
        }
    );
}

#[test]
fn ring_size_bounds_are_validated() {
    assert_eq!(
        validate_policy(&ring(20, 10)).unwrap_err().to_string(),
        "ring hash: minimum_ring_size (20) > maximum_ring_size (10)"
    );
    assert!(validate_policy(&ring(1024, MAX_RING_SIZE + 1)).is_err());
    assert!(validate_policy(&ring_default()).is_ok());
}

// === Maglev (maglev_lb_test.cc) ===

fn assert_assignments(set: &HostSet, expected: &[usize]) {
    for i in 0..3 * expected.len() {
        assert_eq!(
            set.choose(i as u64),
            Some(expected[i % expected.len()]),
            "hash {i}"
        );
    }
}

#[test]
fn maglev_basic() {
    let set = HostSet::new(ports(90..96), &maglev(7), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Maglev {
            min_entries_per_host: 1,
            max_entries_per_host: 2
        }
    );
    assert_assignments(&set, &[2, 4, 0, 1, 5, 0, 3]);
    assert!(set.is_hashing());
}

#[test]
fn maglev_basic_with_hostname() {
    let hosts: Vec<_> = (90..96)
        .map(|p| named(&format!("127.0.0.1:{p}"), &p.to_string(), 1))
        .collect();
    let set = HostSet::new(hosts, &maglev(7), true);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Maglev {
            min_entries_per_host: 1,
            max_entries_per_host: 2
        }
    );
    assert_assignments(&set, &[2, 5, 0, 3, 4, 1, 0]);
}

#[test]
fn maglev_stable_under_host_order() {
    let hosts = ports(90..96);
    let mut shuffled = hosts.clone();
    shuffled.reverse();
    shuffled.swap(1, 4);
    let a = HostSet::new(hosts, &maglev(7), false);
    let b = HostSet::new(shuffled, &maglev(7), false);
    for i in 0..21u64 {
        assert_eq!(
            a.choose_host(i).unwrap().address,
            b.choose_host(i).unwrap().address
        );
    }
}

#[test]
fn maglev_weighted() {
    let hosts = vec![host("127.0.0.1:90", 1), host("127.0.0.1:91", 2)];
    let set = HostSet::new(hosts, &maglev(17), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Maglev {
            min_entries_per_host: 6,
            max_entries_per_host: 11
        }
    );
    assert_assignments(&set, &[1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1]);
}

#[test]
fn maglev_single_host() {
    for weight in [1, 7] {
        let set = HostSet::new(vec![host("127.0.0.1:90", weight)], &maglev(17), false);
        // Envoy 1.40 skips the table for one host; its gauges read 1 / 1 (observed).
        assert_eq!(
            set.table_stats(),
            LbTableStats::Maglev {
                min_entries_per_host: 1,
                max_entries_per_host: 1
            }
        );
        for i in 0..17 {
            assert_eq!(set.choose(i), Some(0));
        }
    }
}

#[test]
fn maglev_table_size_is_validated() {
    assert_eq!(
        validate_policy(&maglev(8)).unwrap_err().to_string(),
        "The table size of maglev must be prime number"
    );
    assert!(validate_policy(&maglev(65537)).is_ok());
    assert!(validate_policy(&maglev(5_000_011)).is_ok());
    assert!(validate_policy(&maglev(5_000_077)).is_err());
}

#[test]
fn maglev_defaults_three_hosts() {
    // Observed on Envoy 1.40 with weights 1, 2, 3 over the default table: 10923 / 32768.
    let hosts = vec![
        host("127.0.0.1:1", 1),
        host("127.0.0.1:2", 2),
        host("127.0.0.1:3", 3),
    ];
    let set = HostSet::new(hosts, &maglev(65537), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Maglev {
            min_entries_per_host: 10923,
            max_entries_per_host: 32768
        }
    );
}

// === Placement observed on a real Envoy 1.40 ===

const PLACEMENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/envoy_1_40_placement.txt"
));
/// The redis-servers' ports when the fixture was recorded (digit 0, 1, 2 of the fixture).
const PORTS: [u16; 3] = [42397, 37997, 58423];

fn observed(name: &str) -> Vec<u16> {
    let line = PLACEMENT
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no fixture line {name}"));
    line.trim()
        .bytes()
        .map(|b| PORTS[usize::from(b - b'0')])
        .collect()
}

fn ep(port: u16, weight: u32) -> Arc<Host> {
    host(&format!("127.0.0.1:{port}"), weight)
}

fn assert_placement(name: &str, set: &HostSet) {
    let want = observed(name);
    assert_eq!(want.len(), 1000);
    for (i, want_port) in want.iter().enumerate() {
        let key = format!("key:{i}");
        let got = port_of(set, murmur2_64(key.as_bytes(), MURMUR_SEED));
        assert_eq!(got, *want_port, "{name}: {key}");
    }
}

fn three(weights: [u32; 3]) -> Vec<Arc<Host>> {
    PORTS.iter().zip(weights).map(|(&p, w)| ep(p, w)).collect()
}

#[test]
fn envoy_placement_ring_default() {
    assert_placement(
        "ring",
        &HostSet::new(three([1, 1, 1]), &ring_default(), false),
    );
}

#[test]
fn envoy_placement_maglev_default() {
    assert_placement(
        "maglev",
        &HostSet::new(three([1, 1, 1]), &maglev(65537), false),
    );
}

#[test]
fn envoy_placement_weighted() {
    let set = HostSet::new(three([1, 2, 3]), &ring_default(), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 1026,
            min_hashes_per_host: 171,
            max_hashes_per_host: 513
        }
    );
    assert_placement("ring_w", &set);
    assert_placement(
        "maglev_w",
        &HostSet::new(three([1, 2, 3]), &maglev(65537), false),
    );
}

#[test]
fn envoy_placement_ring_murmur() {
    let policy = LbPolicy::RingHash {
        minimum_ring_size: 2000,
        maximum_ring_size: MAX_RING_SIZE,
        hash_function: HashFunction::MurmurHash2,
    };
    let set = HostSet::new(three([1, 1, 1]), &policy, false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 2001,
            min_hashes_per_host: 667,
            max_hashes_per_host: 667
        }
    );
    assert_placement("ring_mm", &set);
}

#[test]
fn envoy_placement_hostname_hashing() {
    let hosts = || -> Vec<Arc<Host>> {
        PORTS
            .iter()
            .zip(["redis-a", "redis-b", "redis-c"])
            .map(|(&p, n)| named(&format!("127.0.0.1:{p}"), n, 1))
            .collect()
    };
    assert_placement("ring_hn", &HostSet::new(hosts(), &ring_default(), true));
    let set = HostSet::new(hosts(), &maglev(1009), true);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Maglev {
            min_entries_per_host: 336,
            max_entries_per_host: 337
        }
    );
    assert_placement("maglev_hn", &set);
}

#[test]
fn envoy_placement_tiny_ring_and_odd_order() {
    let set = HostSet::new(three([5, 3, 1]), &ring(7, 7), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Ring {
            size: 7,
            min_hashes_per_host: 0,
            max_hashes_per_host: 4
        }
    );
    assert_placement("ring_tiny", &set);
    // Config order R3 (7), R1 (1), R2 (100).
    let hosts = vec![ep(PORTS[2], 7), ep(PORTS[0], 1), ep(PORTS[1], 100)];
    let set = HostSet::new(hosts, &maglev(307), false);
    assert_eq!(
        set.table_stats(),
        LbTableStats::Maglev {
            min_entries_per_host: 3,
            max_entries_per_host: 284
        }
    );
    assert_placement("maglev_w2", &set);
}

// === Distribution sanity ===

#[test]
fn thousand_keys_spread_over_three_hosts() {
    for policy in [ring_default(), maglev(65537)] {
        let set = HostSet::new(ports(7000..7003), &policy, false);
        let mut counts: HashMap<u16, u32> = HashMap::new();
        for i in 0..1000 {
            let key = format!("key:{i}");
            *counts
                .entry(port_of(&set, murmur2_64(key.as_bytes(), MURMUR_SEED)))
                .or_default() += 1;
            // Deterministic: the same key always lands on the same host.
            assert_eq!(
                set.choose(murmur2_64(key.as_bytes(), MURMUR_SEED)),
                set.choose(murmur2_64(key.as_bytes(), MURMUR_SEED))
            );
        }
        assert_eq!(counts.len(), 3);
        for (port, n) in counts {
            assert!((250..420).contains(&n), "{policy:?}: port {port} got {n}");
        }
    }
}

// === Non-hashing policies ===

#[test]
fn empty_sets_choose_nothing() {
    for policy in [
        ring_default(),
        maglev(7),
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest { choice_count: 2 },
    ] {
        let set = HostSet::new(Vec::new(), &policy, false);
        assert_eq!(set.choose(42), None);
        assert!(set.choose_host(42).is_none());
    }
}

#[test]
fn round_robin_cycles() {
    let set = HostSet::new(ports(1..4), &LbPolicy::RoundRobin, false);
    let first = set.choose(0).unwrap();
    for i in 1..30 {
        assert_eq!(set.choose(0), Some((first + i) % 3));
    }
    assert!(!set.is_hashing());
}

#[test]
fn weighted_round_robin_proportions() {
    let hosts = vec![host("10.0.0.1:1", 1), host("10.0.0.2:1", 3)];
    let set = HostSet::new(hosts, &LbPolicy::RoundRobin, false);
    let mut counts = [0u32; 2];
    for _ in 0..400 {
        counts[set.choose(0).unwrap()] += 1;
    }
    assert_eq!(counts, [100, 300]);
}

#[test]
fn random_spreads() {
    let set = HostSet::new(ports(1..4), &LbPolicy::Random, false);
    let mut counts = [0u32; 3];
    for _ in 0..3000 {
        counts[set.choose(7).unwrap()] += 1;
    }
    assert!(
        counts.iter().all(|&c| (700..1300).contains(&c)),
        "{counts:?}"
    );

    let hosts = vec![host("10.0.0.1:1", 1), host("10.0.0.2:1", 9)];
    let set = HostSet::new(hosts, &LbPolicy::Random, false);
    let mut counts = [0u32; 2];
    for _ in 0..5000 {
        counts[set.choose(7).unwrap()] += 1;
    }
    assert!((300..700).contains(&counts[0]), "{counts:?}");
}

#[test]
fn least_request_prefers_idle_hosts() {
    let hosts = ports(1..3);
    hosts[0].stats.rq_active.store(100, Ordering::Relaxed);
    let set = HostSet::new(hosts, &LbPolicy::LeastRequest { choice_count: 2 }, false);
    let mut busy = 0;
    for _ in 0..4000 {
        if set.choose(0) == Some(0) {
            busy += 1;
        }
    }
    // The busy host wins only when both samples hit it: ~1/4 of the time.
    assert!((700..1300).contains(&busy), "{busy}");

    let set = HostSet::new(
        ports(1..3),
        &LbPolicy::LeastRequest { choice_count: 2 },
        false,
    );
    set.hosts()[1].stats.rq_active.store(5, Ordering::Relaxed);
    let mut counts = [0u32; 2];
    for _ in 0..1000 {
        counts[set.choose(0).unwrap()] += 1;
    }
    assert!(counts[0] > counts[1], "{counts:?}");
}

#[test]
fn weight_sum_overflow_builds_nothing() {
    let hosts = vec![host("10.0.0.1:1", u32::MAX), host("10.0.0.2:1", 1)];
    assert_eq!(HostSet::new(hosts, &ring_default(), false).choose(1), None);
}

proptest::proptest! {
    /// The ketama binary search is "first entry with hash ≥ h, else entry 0".
    #[test]
    fn ring_lookup_is_lower_bound_with_wrap(h in proptest::prelude::any::<u64>(), n in 2u16..8) {
        let set = HostSet::new(ports(1..n + 1), &ring(16, 64), false);
        let entries = ring_hashes(&set);
        let want = entries.iter().find(|e| e.0 >= h).unwrap_or(&entries[0]).1;
        proptest::prop_assert_eq!(set.choose(h), Some(want));
        for e in &entries {
            proptest::prop_assert_eq!(set.choose(e.0), Some(e.1));
        }
    }
}

/// However tightly a Maglev table is packed, every entry reads back as built.
#[test]
fn packed_maglev_tables_read_back_every_entry() {
    for hosts in [1usize, 2, 3, 4, 5, 16, 17, 255, 256, 257, 65_536, 65_537] {
        let size = 65_537usize;
        let table: Vec<u32> = (0..size)
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % hosts as u64) as u32)
            .collect();
        let packed = MaglevTable::compact(table.clone(), hosts);
        for (i, &host) in table.iter().enumerate() {
            assert_eq!(
                packed.get(i as u64),
                Some(host as usize),
                "{hosts} hosts, entry {i}"
            );
            // The hash is reduced modulo the table size, as Envoy's lookup does.
            let wrapped = i as u64 + size as u64 * 977;
            assert_eq!(packed.get(wrapped), Some(host as usize));
        }
    }
}
