//! The Redis Cluster fixture itself: a 3+3 cluster forms, keys land on their slot's owner and
//! replicate to its replicas.

use std::time::{Duration, Instant};

use redvoy_test_util::{key_slot, wait_for, RedisCluster, Reply, Role};

/// Bound on a write becoming visible on a replica.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);
const KEYS: usize = 100;

#[test]
fn cluster_of_three_primaries_and_three_replicas_routes_and_replicates() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    eprintln!("cluster up in {:?}", started.elapsed());

    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{nodes:?}");
    for primary in &primaries {
        let replicas = cluster.replicas_of(primary.port);
        assert_eq!(replicas.len(), 1, "replicas of {}: {nodes:?}", primary.port);
        assert!(replicas.iter().all(|r| r.role == Role::Replica));
    }
    let slots = cluster.slots();
    let covered: u32 = slots.iter().map(|r| u32::from(r.end - r.start) + 1).sum();
    assert_eq!(covered, 16384, "{slots:?}");

    // Write each key directly to the primary owning its slot, as `redis-cli -c` would end up.
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key:{i}")).collect();
    let mut owners = Vec::new();
    for key in &keys {
        let owner = cluster.primary_for_key(key.as_bytes());
        // The local slot function agrees with the server's.
        let server_slot = cluster.cmd(owner, &["CLUSTER", "KEYSLOT", key]);
        assert_eq!(server_slot, Reply::int(i64::from(key_slot(key.as_bytes()))));
        assert_eq!(cluster.cmd(owner, &["SET", key, key]), Reply::ok(), "{key}");
        owners.push(owner);
    }
    // Every primary got some keys (100 keys over 3 ranges).
    for primary in &primaries {
        assert!(owners.contains(&primary.port), "no key on {}", primary.port);
    }

    for (key, &owner) in keys.iter().zip(&owners) {
        assert_eq!(cluster.cmd(owner, &["GET", key]), Reply::bulk(key));
        // Another primary redirects.
        let other = primaries.iter().find(|p| p.port != owner).unwrap().port;
        let moved = cluster.cmd(other, &["GET", key]).text().unwrap_or_default();
        assert!(moved.starts_with("MOVED "), "{key} on {other}: {moved}");
        for replica in cluster.replicas_for_key(key.as_bytes()) {
            let mut client = cluster.client(replica);
            assert_eq!(client.cmd(&["READONLY"]), Reply::ok());
            wait_for(
                REPLICATION_TIMEOUT,
                &format!("{key} on replica {replica}"),
                || (client.cmd(&["GET", key]) == Reply::bulk(key)).then_some(()),
            );
        }
    }
    eprintln!("test done in {:?}", started.elapsed());
}

#[test]
fn killing_a_primary_promotes_its_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let primary = cluster.primaries()[0].port;
    let replica = cluster.replicas_of(primary)[0].port;
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.primary_for_key(k.as_bytes()) == primary)
        .unwrap();
    assert_eq!(cluster.cmd(primary, &["SET", &key, "v"]), Reply::ok());
    // WAIT: the write reached the replica before the primary dies.
    assert_eq!(cluster.cmd(primary, &["WAIT", "1", "2000"]), Reply::int(1));

    let started = Instant::now();
    cluster.kill(primary);
    cluster.wait_converged(Duration::from_secs(20));
    eprintln!("failover converged in {:?}", started.elapsed());
    assert_eq!(cluster.primary_for_key(key.as_bytes()), replica);
    assert!(cluster.primaries().iter().any(|p| p.port == replica));
    assert_eq!(cluster.cmd(replica, &["GET", &key]), Reply::bulk("v"));
}
