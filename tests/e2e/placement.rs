//! Oracle comparison: where keys land with RING_HASH and MAGLEV.
//!
//! 1,000 keys are SET through the proxy over three redis-servers; then every key is read
//! directly from every server. Each key must be on exactly one server, and the placement
//! through redvoy must equal the placement through Envoy (same servers, same ports, so the
//! same host hashes).

use redvoy_test_util::{
    bootstrap, catch_all_filter, same_on_all_targets, start_servers, Cluster, Proxy, RedisServer,
    Reply, Rows, Target,
};

use crate::targets;

const KEYS: usize = 1_000;
/// Commands per pipelined write.
const BATCH: usize = 100;
/// A placement where one of three servers gets less than this share of keys is not hashing.
const MIN_SHARE_PERCENT: usize = 15;

/// SETs `keys` through the proxy (pipelined), each key's value being the key itself.
fn set_all(proxy: &Proxy, keys: &[String]) {
    let mut client = proxy.client();
    for chunk in keys.chunks(BATCH) {
        let commands: Vec<Vec<&str>> = chunk
            .iter()
            .map(|k| vec!["SET", k.as_str(), k.as_str()])
            .collect();
        for (key, reply) in chunk.iter().zip(client.pipeline(&commands)) {
            assert_eq!(reply, Reply::ok(), "{}: SET {key}", proxy.target());
        }
    }
}

/// For every key, the index of the one server holding it (panics if zero or several do).
fn locate(servers: &[RedisServer], keys: &[String]) -> Vec<usize> {
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
    for (index, server) in servers.iter().enumerate() {
        let mut client = server.client();
        for (chunk_no, chunk) in keys.chunks(BATCH).enumerate() {
            let commands: Vec<Vec<&str>> = chunk.iter().map(|k| vec!["GET", k.as_str()]).collect();
            for (i, reply) in client.pipeline(&commands).into_iter().enumerate() {
                let key = &keys[chunk_no * BATCH + i];
                match reply {
                    Reply::Null => {}
                    Reply::Bulk(v) if v == key.as_bytes() => {
                        holders[chunk_no * BATCH + i].push(index)
                    }
                    other => panic!("GET {key} on server {index}: {other:?}"),
                }
            }
        }
    }
    keys.iter()
        .zip(holders)
        .map(|(key, on)| match on.as_slice() {
            [one] => *one,
            _ => panic!("key {key} is on servers {on:?}, expected exactly one"),
        })
        .collect()
}

fn placement(target: Target, servers: &[RedisServer], yaml: &str, keys: &[String]) -> Rows {
    for server in servers {
        server.flushall();
    }
    let proxy = Proxy::start(target, yaml, &[]);
    set_all(&proxy, keys);
    let placed = locate(servers, keys);
    let mut per_server = vec![0usize; servers.len()];
    for &server in &placed {
        per_server[server] += 1;
    }
    for (index, count) in per_server.iter().enumerate() {
        assert!(
            count * 100 >= keys.len() * MIN_SHARE_PERCENT,
            "{target}: server {index} holds only {count} of {} keys ({per_server:?})",
            keys.len()
        );
    }
    // Reads through the proxy find every value again.
    let mut client = proxy.client();
    let mget: Vec<&str> = std::iter::once("MGET")
        .chain(keys.iter().take(50).map(String::as_str))
        .collect();
    let expected: Vec<Reply> = keys.iter().take(50).map(Reply::bulk).collect();
    assert_eq!(
        client.cmd(&mget),
        Reply::Array(expected),
        "{target}: MGET through the proxy"
    );
    keys.iter()
        .zip(placed)
        .map(|(key, server)| (key.clone(), server.to_string()))
        .collect()
}

fn check_policy(lb_policy: &str, extra_cluster_yaml: &str) {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let mut cluster = Cluster::new("redis", lb_policy, &ports);
    if !extra_cluster_yaml.is_empty() {
        cluster = cluster.extra(extra_cluster_yaml);
    }
    let yaml = bootstrap(&catch_all_filter("redis", ""), &[cluster]);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key:{i}")).collect();
    same_on_all_targets(&targets(), |target| {
        placement(target, &servers, &yaml, &keys)
    });
}

#[test]
fn ring_hash_places_1000_keys_like_envoy() {
    check_policy("RING_HASH", "");
}

#[test]
fn maglev_places_1000_keys_like_envoy() {
    check_policy("MAGLEV", "");
}

/// A non-default ring: a larger minimum size and MurmurHash2 for host hashing.
#[test]
fn ring_hash_with_murmur_and_ring_size_places_keys_like_envoy() {
    check_policy(
        "RING_HASH",
        "ring_hash_lb_config: {minimum_ring_size: 4096, hash_function: MURMUR_HASH_2}",
    );
}

/// With `enable_hashtagging`, only the `{...}` part is hashed: keys sharing a tag share a
/// server, and the placement of tags matches Envoy.
#[test]
fn hashtags_colocate_keys_like_envoy() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let filter = "stat_prefix: redis\nsettings: {op_timeout: 5s, enable_hashtagging: true}\nprefix_routes:\n  catch_all_route: {cluster: redis}";
    let yaml = bootstrap(filter, &[Cluster::new("redis", "MAGLEV", &ports)]);
    let keys: Vec<String> = (0..20)
        .flat_map(|tag| (0..5).map(move |i| format!("{{user{tag}}}:field{i}")))
        .collect();
    let rows = same_on_all_targets(&targets(), |target| {
        for server in &servers {
            server.flushall();
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        set_all(&proxy, &keys);
        keys.iter()
            .zip(locate(&servers, &keys))
            .map(|(key, server)| (key.clone(), server.to_string()))
            .collect()
    });
    for group in rows.chunks(5) {
        assert!(
            group.iter().all(|(_, server)| *server == group[0].1),
            "keys with one hash tag on different servers: {group:?}"
        );
    }
}
