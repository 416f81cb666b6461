//! A worker's connection pool for one upstream cluster of one filter: one pipelined client per
//! host, created on first use, kept aligned with the cluster's current host set.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use redvoy_upstream::hash::{hashtag, murmur2_64, MURMUR_SEED};
use redvoy_upstream::{Cluster, HostSet};

use crate::client::{ClientConfig, UpstreamClient};

struct Cache {
    hosts: Arc<HostSet>,
    /// Aligned with `hosts.hosts()`.
    clients: Vec<Option<Rc<UpstreamClient>>>,
}

pub(crate) struct ClusterPool {
    cluster: Arc<Cluster>,
    config: Rc<ClientConfig>,
    enable_hashtagging: bool,
    cache: RefCell<Cache>,
}

impl ClusterPool {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        config: Rc<ClientConfig>,
        enable_hashtagging: bool,
    ) -> Self {
        let hosts = cluster.host_set();
        let clients = vec![None; hosts.hosts().len()];
        Self {
            cluster,
            config,
            enable_hashtagging,
            cache: RefCell::new(Cache { hosts, clients }),
        }
    }

    /// Re-aligns the clients with the cluster's host set when it changed (a pointer compare in
    /// the common case). Clients of hosts that left are closed once idle.
    fn refresh(&self) {
        let current = self.cluster.host_set_guard();
        if Arc::ptr_eq(&self.cache.borrow().hosts, &current) {
            return;
        }
        let mut cache = self.cache.borrow_mut();
        let mut old: HashMap<std::net::SocketAddr, Rc<UpstreamClient>> = cache
            .clients
            .drain(..)
            .flatten()
            .map(|c| (c.host().address, c))
            .collect();
        let clients = current
            .hosts()
            .iter()
            .map(|h| old.remove(&h.address))
            .collect();
        for (_, gone) in old {
            gone.close_when_idle();
        }
        cache.hosts = Arc::clone(&current);
        cache.clients = clients;
    }

    /// Envoy's key hash for non-Redis-Cluster clusters.
    pub(crate) fn hash_key(&self, key: &[u8]) -> u64 {
        let k = if self.enable_hashtagging {
            hashtag(key)
        } else {
            key
        };
        murmur2_64(k, MURMUR_SEED)
    }

    pub(crate) fn client_for_key(&self, key: &[u8]) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        let hash = self.hash_key(key);
        let index = self.cache.borrow().hosts.choose(hash)?;
        self.client_at(index)
    }

    /// A new connection to the host `key` maps to, owned by the caller (transactions).
    pub(crate) fn dedicated_client_for_key(&self, key: &[u8]) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        let hash = self.hash_key(key);
        let cache = self.cache.borrow();
        let index = cache.hosts.choose(hash)?;
        let host = cache.hosts.hosts().get(index)?;
        Some(UpstreamClient::new(
            Arc::clone(host),
            Rc::clone(&self.config),
        ))
    }

    /// Number of shards for broadcast commands: every distinct host of the cluster. Envoy 1.40
    /// instead asks its load balancer for one host per shard index, which can skip a host or
    /// hit one twice (KEYS then misses keys); reaching each host once is what users expect.
    pub(crate) fn shard_count(&self) -> usize {
        self.refresh();
        self.cache.borrow().hosts.hosts().len()
    }

    pub(crate) fn client_for_shard(&self, shard: usize) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        self.client_at(shard)
    }

    fn client_at(&self, index: usize) -> Option<Rc<UpstreamClient>> {
        let mut cache = self.cache.borrow_mut();
        let host = Arc::clone(cache.hosts.hosts().get(index)?);
        let slot = cache.clients.get_mut(index)?;
        Some(Rc::clone(slot.get_or_insert_with(|| {
            UpstreamClient::new(host, Rc::clone(&self.config))
        })))
    }
}

impl Drop for ClusterPool {
    /// A replaced filter's pools (config push) let their connections finish what is in flight,
    /// then close them: the client tasks own themselves and would otherwise idle forever.
    fn drop(&mut self) {
        for client in self.cache.get_mut().clients.iter().flatten() {
            client.close_when_idle();
        }
    }
}
