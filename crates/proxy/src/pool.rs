//! A worker's connection pool for one upstream cluster of one filter: one pipelined client per
//! host, created on first use, kept aligned with the cluster's current host set.
//!
//! For an `envoy.clusters.redis` cluster the host comes from the slot map (CRC16 of the hash
//! tag, then the read policy), and `MOVED` / `ASK` replies are followed here when
//! `enable_redirection` is set (Envoy's `conn_pool_impl` redirection path).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redvoy_config::model::{DnsCacheConfig, DnsLookupFamily, ReadPolicy};
use redvoy_stats::Counter;
use redvoy_upstream::hash::{hashtag, murmur2_64, slot, MURMUR_SEED};
use redvoy_upstream::{Cluster, Host, HostSet};
use tracing::debug;

use crate::client::{ClientConfig, UpstreamClient};
use crate::pending::UpstreamFailure;
use crate::redirect::{split_host_port, RedirectRequest, Redirector, MAX_REDIRECT_HOPS};

struct Cache {
    hosts: Arc<HostSet>,
    /// Aligned with `hosts.hosts()`.
    clients: Vec<Option<Rc<UpstreamClient>>>,
    /// Clients of hosts known only from MOVED/ASK (Envoy's "unknown" hosts); dropped when the
    /// cluster adds the address.
    unknown: HashMap<SocketAddr, Rc<UpstreamClient>>,
}

/// Redirection settings of a pool (`enable_redirection` and friends).
pub(crate) struct RedirectSettings {
    pub max_unknown_connections: u32,
    pub dns_cache: Option<DnsCacheConfig>,
    /// `cluster.<name>.redis_cluster.max_upstream_unknown_connections_reached`.
    pub unknown_limit_reached: Counter,
}

/// Where a key's transaction runs (see [`ClusterPool::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    Slot(u16),
    Host(SocketAddr),
}

pub(crate) struct ClusterPool {
    cluster: Arc<Cluster>,
    config: Rc<ClientConfig>,
    enable_hashtagging: bool,
    read_policy: ReadPolicy,
    redirect: Option<RedirectSettings>,
    /// `cluster.<name>.redis_cluster.upstream_cx_drained`: connections of removed hosts that
    /// still had requests in flight, closed once they finish.
    cx_drained: Counter,
    cache: RefCell<Cache>,
    /// Names of MOVED/ASK targets already resolved through the DNS cache.
    dns: RefCell<HashMap<Bytes, (IpAddr, Instant)>>,
    this: Weak<ClusterPool>,
}

impl ClusterPool {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        config: Rc<ClientConfig>,
        enable_hashtagging: bool,
        read_policy: ReadPolicy,
        redirect: Option<RedirectSettings>,
        cx_drained: Counter,
    ) -> Rc<Self> {
        let hosts = cluster.host_set();
        let clients = vec![None; hosts.hosts().len()];
        Rc::new_cyclic(|this| Self {
            cluster,
            config,
            enable_hashtagging,
            read_policy,
            redirect,
            cx_drained,
            cache: RefCell::new(Cache {
                hosts,
                clients,
                unknown: HashMap::new(),
            }),
            dns: RefCell::new(HashMap::new()),
            this: this.clone(),
        })
    }

    /// Re-aligns the clients with the cluster's host set when it changed (a pointer compare in
    /// the common case). Clients of hosts that left are closed once idle.
    fn refresh(&self) {
        let current = self.cluster.host_set_guard();
        if Arc::ptr_eq(&self.cache.borrow().hosts, &current) {
            return;
        }
        let mut cache = self.cache.borrow_mut();
        let mut old: HashMap<SocketAddr, Rc<UpstreamClient>> = cache
            .clients
            .drain(..)
            .flatten()
            .map(|c| (c.host().address, c))
            .collect();
        let clients: Vec<Option<Rc<UpstreamClient>>> = current
            .hosts()
            .iter()
            .map(|h| {
                // A host first met through a redirection keeps its connection once the
                // topology lists it (Envoy replaces the temporary host).
                old.remove(&h.address)
                    .or_else(|| cache.unknown.remove(&h.address))
            })
            .collect();
        for (_, gone) in old {
            if !gone.is_idle() {
                self.cx_drained.inc();
            }
            gone.close_when_idle();
        }
        cache.hosts = Arc::clone(&current);
        cache.clients = clients;
    }

    /// Every connection of this pool, known hosts' and redirection targets' (fuzzing).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn clients(&self) -> Vec<Rc<UpstreamClient>> {
        let cache = self.cache.borrow();
        cache
            .clients
            .iter()
            .flatten()
            .chain(cache.unknown.values())
            .cloned()
            .collect()
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

    /// Index of the host serving `key`: the slot map for a Redis Cluster (hash tags always
    /// honoured, reads by read policy), else the cluster's load balancer.
    fn choose(&self, hosts: &HostSet, key: &[u8], is_read: bool) -> Option<usize> {
        match hosts.slot_map() {
            Some(map) => map.choose(hosts.hosts(), slot(key), is_read, self.read_policy),
            None if self.cluster.is_redis_cluster() => None,
            None => {
                if hosts.in_panic() {
                    self.cluster.stats.lb_healthy_panic.inc();
                }
                hosts.choose(self.hash_key(key))
            }
        }
    }

    /// Where a transaction's key belongs: its hash slot on a Redis Cluster (Redis requires one
    /// slot per transaction), else the primary host it maps to. Two keys with different
    /// placements cannot share a transaction.
    pub(crate) fn placement(&self, key: &[u8]) -> Option<Placement> {
        self.refresh();
        let cache = self.cache.borrow();
        match cache.hosts.slot_map() {
            Some(_) => Some(Placement::Slot(slot(key))),
            None if self.cluster.is_redis_cluster() => None,
            None => {
                let index = cache.hosts.choose(self.hash_key(key))?;
                Some(Placement::Host(cache.hosts.hosts().get(index)?.address))
            }
        }
    }

    pub(crate) fn client_for_key(&self, key: &[u8], is_read: bool) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        let index = {
            let cache = self.cache.borrow();
            self.choose(&cache.hosts, key, is_read)?
        };
        self.client_at(index)
    }

    /// A new connection to the primary `key` maps to, owned by the caller (transactions:
    /// never redirected, never a replica).
    pub(crate) fn dedicated_client_for_key(&self, key: &[u8]) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        let cache = self.cache.borrow();
        let index = self.choose(&cache.hosts, key, false)?;
        let host = cache.hosts.hosts().get(index)?;
        Some(UpstreamClient::new(
            Arc::clone(host),
            Rc::clone(&self.config),
            Weak::<ClusterPool>::new(),
            false,
        ))
    }

    /// Number of shards for broadcast commands: the primaries of a Redis Cluster, else every
    /// distinct host. Envoy 1.40 asks a plain cluster's load balancer for one host per shard
    /// index instead, which can skip a host or hit one twice (KEYS then misses keys); reaching
    /// each host once is what users expect.
    pub(crate) fn shard_count(&self) -> usize {
        self.refresh();
        let cache = self.cache.borrow();
        match cache.hosts.slot_map() {
            Some(map) => map.shards().len(),
            None if self.cluster.is_redis_cluster() => 0,
            None => cache.hosts.hosts().len(),
        }
    }

    pub(crate) fn client_for_shard(&self, shard: usize) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        let index = {
            let cache = self.cache.borrow();
            match cache.hosts.slot_map() {
                Some(map) => map.shards().get(shard)?.primary,
                None => shard,
            }
        };
        self.client_at(index)
    }

    fn client_at(&self, index: usize) -> Option<Rc<UpstreamClient>> {
        let mut cache = self.cache.borrow_mut();
        // The usual case, once per request: the connection exists (no host refcount touched).
        if let Some(Some(client)) = cache.clients.get(index) {
            return Some(Rc::clone(client));
        }
        let host = Arc::clone(cache.hosts.hosts().get(index)?);
        let slot = cache.clients.get_mut(index)?;
        Some(Rc::clone(slot.get_or_insert_with(|| {
            UpstreamClient::new(
                host,
                Rc::clone(&self.config),
                self.this.clone(),
                self.redirect.is_some(),
            )
        })))
    }

    /// The client for an address: a cluster member's pooled client, or a temporary one for an
    /// address known only from a redirection, within `max_upstream_unknown_connections`.
    fn client_for_address(&self, address: SocketAddr) -> Option<Rc<UpstreamClient>> {
        self.refresh();
        let index = {
            let cache = self.cache.borrow();
            cache
                .hosts
                .hosts()
                .iter()
                .position(|h| h.address == address)
        };
        if let Some(index) = index {
            return self.client_at(index);
        }
        let settings = self.redirect.as_ref()?;
        let mut cache = self.cache.borrow_mut();
        if let Some(c) = cache.unknown.get(&address) {
            return Some(Rc::clone(c));
        }
        // Envoy refuses when the count *equals* the limit, so 0 disables unknown hosts.
        if cache.unknown.len() as u64 == u64::from(settings.max_unknown_connections) {
            settings.unknown_limit_reached.inc();
            return None;
        }
        // A redirection target carries no metadata: the socket of the entry that matches no
        // labels (else the cluster's own), as for discovered nodes.
        let host = Arc::new(
            Host::new(address, String::new(), 1)
                .with_transport_match(self.cluster.unlabelled_transport_match()),
        );
        let client = UpstreamClient::new(host, Rc::clone(&self.config), self.this.clone(), true);
        cache.unknown.insert(address, Rc::clone(&client));
        Some(client)
    }

    fn resend(
        &self,
        ask: bool,
        address: SocketAddr,
        request: RedirectRequest,
    ) -> Result<(), RedirectRequest> {
        let stats = &self.cluster.stats;
        let Some(client) = self.client_for_address(address) else {
            stats.upstream_internal_redirect_failed_total.inc();
            return Err(request);
        };
        stats.upstream_internal_redirect_succeeded_total.inc();
        if let Some(trigger) = self.cluster.refresh_trigger() {
            trigger.on_redirection();
        }
        debug!(%address, ask, "following a redirection");
        client.send_redirected(ask, request);
        Ok(())
    }
}

/// Resolves a redirection target's name within the DNS cache's `dns_query_timeout`.
async fn resolve(
    name: &[u8],
    port: u16,
    family: DnsLookupFamily,
    query_timeout: Duration,
) -> Option<IpAddr> {
    let name = std::str::from_utf8(name).ok()?;
    let answers = tokio::time::timeout(query_timeout, tokio::net::lookup_host((name, port)))
        .await
        .ok()?
        .ok()?;
    let all: Vec<IpAddr> = answers.map(|a| a.ip()).collect();
    let pick = |v4: bool| all.iter().copied().find(|ip| ip.is_ipv4() == v4);
    match family {
        DnsLookupFamily::V4Only => pick(true),
        DnsLookupFamily::V6Only => pick(false),
        DnsLookupFamily::Auto => pick(false).or_else(|| pick(true)),
        DnsLookupFamily::V4Preferred => pick(true).or_else(|| pick(false)),
        DnsLookupFamily::All => all.first().copied(),
    }
}

impl Redirector for ClusterPool {
    fn redirect(
        &self,
        ask: bool,
        target: &[u8],
        request: RedirectRequest,
    ) -> Result<(), RedirectRequest> {
        let stats = &self.cluster.stats;
        let Some(settings) = self.redirect.as_ref() else {
            return Err(request);
        };
        if request.hops > MAX_REDIRECT_HOPS {
            stats.upstream_internal_redirect_failed_total.inc();
            return Err(request);
        }
        let Some((host, port)) = split_host_port(target) else {
            stats.upstream_internal_redirect_failed_total.inc();
            return Err(request);
        };
        if let Some(ip) = std::str::from_utf8(host)
            .ok()
            .and_then(|h| h.parse::<IpAddr>().ok())
        {
            return self.resend(ask, SocketAddr::new(ip, port), request);
        }
        // A hostname: only with a DNS cache (Envoy cannot use it otherwise).
        let Some(cache_config) = settings.dns_cache.as_ref() else {
            stats.upstream_internal_redirect_failed_total.inc();
            return Err(request);
        };
        let name = Bytes::copy_from_slice(host);
        if let Some((ip, at)) = self.dns.borrow().get(&name) {
            if at.elapsed() < cache_config.dns_refresh_rate {
                return self.resend(ask, SocketAddr::new(*ip, port), request);
            }
        }
        let Some(pool) = self.this.upgrade() else {
            return Err(request);
        };
        let family = cache_config.dns_lookup_family;
        let max_hosts = cache_config.max_hosts as usize;
        let query_timeout = cache_config.dns_query_timeout;
        tokio::task::spawn_local(async move {
            let resolved = resolve(&name, port, family, query_timeout).await;
            let request = match resolved {
                Some(ip) => {
                    {
                        let mut dns = pool.dns.borrow_mut();
                        if dns.len() >= max_hosts {
                            dns.clear();
                        }
                        dns.insert(name, (ip, Instant::now()));
                    }
                    match pool.resend(ask, SocketAddr::new(ip, port), request) {
                        Ok(()) => return,
                        Err(r) => r,
                    }
                }
                None => {
                    pool.cluster
                        .stats
                        .upstream_internal_redirect_failed_total
                        .inc();
                    request
                }
            };
            // The original MOVED/ASK text is gone by now; the request fails as Envoy fails a
            // redirection whose DNS lookup fails after the fact.
            if let Some(c) = request.completion {
                c.complete(Err(UpstreamFailure::Failure));
            }
        });
        Ok(())
    }

    fn on_request_failure(&self) {
        if let Some(trigger) = self.cluster.refresh_trigger() {
            trigger.on_failure();
        }
    }
}

impl Drop for ClusterPool {
    /// A replaced filter's pools (config push) let their connections finish what is in flight,
    /// then close them: the client tasks own themselves and would otherwise idle forever.
    fn drop(&mut self) {
        let cache = self.cache.get_mut();
        for client in cache.clients.iter().flatten().chain(cache.unknown.values()) {
            client.close_when_idle();
        }
    }
}
