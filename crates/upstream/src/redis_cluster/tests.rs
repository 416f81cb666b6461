//! Unit tests of the Redis Cluster discovery: CLUSTER SLOTS parsing, topology, slot map.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redvoy_config::model::{self, HealthStatus, ReadPolicy, RedisClusterConfig};
use redvoy_resp::RespValue;

use super::refresh::*;
use super::slot_map::*;
use super::slots::*;
use crate::host::Host;

fn bulk(s: &str) -> RespValue {
    RespValue::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}
fn node(host: &str, port: i64) -> RespValue {
    RespValue::Array(vec![bulk(host), RespValue::Integer(port), bulk("id")])
}
fn entry(start: i64, end: i64, nodes: Vec<RespValue>) -> RespValue {
    let mut v = vec![RespValue::Integer(start), RespValue::Integer(end)];
    v.extend(nodes);
    RespValue::Array(v)
}

#[test]
fn parses_a_valid_reply() {
    let reply = RespValue::Array(vec![
        entry(
            0,
            8191,
            vec![node("127.0.0.1", 7000), node("127.0.0.1", 7001)],
        ),
        entry(8192, 16383, vec![node("redis-1", 7002)]),
    ]);
    let parsed = parse_cluster_slots(&reply).unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].replicas.len(), 1);
    assert_eq!(parsed[1].primary.host, "redis-1");
}

#[test]
fn rejects_malformed_replies_whole() {
    let bad = [
        RespValue::Array(vec![]),
        RespValue::Integer(1),
        RespValue::Error(Bytes::from_static(
            b"ERR This instance has cluster support disabled",
        )),
        RespValue::Array(vec![RespValue::Integer(1)]),
        RespValue::Array(vec![entry(0, 1, vec![])]),
        RespValue::Array(vec![entry(0, 1, vec![bulk("x")])]),
        RespValue::Array(vec![entry(0, 1, vec![RespValue::Array(vec![bulk("a")])])]),
        RespValue::Array(vec![entry(0, 1, vec![node("", 7000)])]),
        RespValue::Array(vec![entry(0, 1, vec![node("1.2.3.4", 70000)])]),
        RespValue::Array(vec![entry(
            0,
            1,
            vec![RespValue::Array(vec![bulk("1.2.3.4"), bulk("7000")])],
        )]),
        // A bad replica rejects the reply too (RedisReplicaErrorResponse).
        RespValue::Array(vec![entry(0, 1, vec![node("1.2.3.4", 1), node("", 2)])]),
        RespValue::Array(vec![entry(
            0,
            1,
            vec![node("1.2.3.4", 1), RespValue::Integer(3)],
        )]),
        RespValue::Array(vec![RespValue::Array(vec![
            bulk("0"),
            RespValue::Integer(1),
            node("1.2.3.4", 1),
        ])]),
    ];
    for (i, b) in bad.iter().enumerate() {
        assert!(parse_cluster_slots(b).is_err(), "case {i} accepted");
    }
}

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn topology() -> (Vec<Arc<Host>>, SlotMap) {
    let ranges = vec![
        SlotRange {
            start: 0,
            end: 99,
            primary: addr(1),
            replicas: vec![addr(2), addr(3)],
        },
        SlotRange {
            start: 100,
            end: 199,
            primary: addr(4),
            replicas: vec![],
        },
        SlotRange {
            start: 200,
            end: 299,
            primary: addr(1),
            replicas: vec![addr(2), addr(3)],
        },
    ];
    build_topology(&ranges, &[], None, None)
}

#[test]
fn slot_map_and_policies() {
    let (hosts, map) = topology();
    assert_eq!(hosts.len(), 4);
    assert_eq!(map.shards().len(), 2);
    assert_eq!(map.shard_for_slot(250), map.shard_for_slot(5));
    // Uncovered slots map to shard 0.
    assert_eq!(map.shard_for_slot(16000), map.shards().first());
    let primary = |s| hosts[map.choose(&hosts, s, false, ReadPolicy::Replica).unwrap()].address;
    assert_eq!(primary(5), addr(1));
    assert_eq!(primary(150), addr(4));
    for _ in 0..20 {
        let r = map.choose(&hosts, 5, true, ReadPolicy::Replica).unwrap();
        assert!([addr(2), addr(3)].contains(&hosts[r].address));
        let m = map.choose(&hosts, 5, true, ReadPolicy::Master).unwrap();
        assert_eq!(hosts[m].address, addr(1));
        let p = map
            .choose(&hosts, 5, true, ReadPolicy::PreferReplica)
            .unwrap();
        assert!([addr(2), addr(3)].contains(&hosts[p].address));
    }
    // NoReplica: REPLICA has no host; PREFER_REPLICA and ANY fall back to the primary.
    assert_eq!(map.choose(&hosts, 150, true, ReadPolicy::Replica), None);
    let p = map
        .choose(&hosts, 150, true, ReadPolicy::PreferReplica)
        .unwrap();
    assert_eq!(hosts[p].address, addr(4));
    let a = map.choose(&hosts, 150, true, ReadPolicy::Any).unwrap();
    assert_eq!(hosts[a].address, addr(4));
}

#[test]
fn unhealthy_primary_and_replica() {
    let unhealthy = model::Endpoint {
        address: model::SocketAddress {
            address: "127.0.0.1".into(),
            port: 1,
        },
        pipe: None,
        weight: 1,
        hostname: String::new(),
        health_status: HealthStatus::Unhealthy,
        locality: model::Locality::default(),
        priority: 0,
        transport_socket_labels: Default::default(),
        locality_transport_socket_labels: Default::default(),
    };
    let ranges = vec![SlotRange {
        start: 0,
        end: 16383,
        primary: addr(1),
        replicas: vec![addr(2)],
    }];
    let (hosts, map) = build_topology(&ranges, &[], Some(&unhealthy), None);
    // Every host unhealthy: PREFER_MASTER picks among all.
    let picks: std::collections::HashSet<_> = (0..200)
        .map(|_| {
            map.choose(&hosts, 1, true, ReadPolicy::PreferMaster)
                .unwrap()
        })
        .collect();
    assert_eq!(picks.len(), 2);
}

#[test]
fn hosts_are_reused_by_address() {
    let (hosts, _) = topology();
    let ranges = vec![SlotRange {
        start: 0,
        end: 16383,
        primary: addr(4),
        replicas: vec![addr(1)],
    }];
    let (next, _) = build_topology(&ranges, &hosts, None, None);
    assert!(Arc::ptr_eq(&next[0], &hosts[3]));
    assert!(Arc::ptr_eq(&next[1], &hosts[0]));
}

#[test]
fn refresh_trigger_thresholds_and_interval() {
    let config = RedisClusterConfig {
        redirect_refresh_threshold: 3,
        failure_refresh_threshold: 0,
        redirect_refresh_interval: Duration::from_secs(3600),
        ..RedisClusterConfig::default()
    };
    let t = RefreshTrigger::new(&config);
    t.on_redirection();
    t.on_redirection();
    assert_eq!(t.last_triggered.load(Ordering::Relaxed), 0);
    t.on_redirection();
    assert_ne!(t.last_triggered.load(Ordering::Relaxed), 0);
    assert_eq!(t.redirects.load(Ordering::Relaxed), 0);
    // Within the interval nothing counts.
    for _ in 0..10 {
        t.on_redirection();
    }
    assert_eq!(t.redirects.load(Ordering::Relaxed), 0);
    // Threshold 0 disables the failure trigger.
    t.on_failure();
    assert_eq!(t.failures.load(Ordering::Relaxed), 0);
}
