//! The slot map the proxy routes by: each of the 16,384 hash slots to a shard (a primary and
//! its replicas), and the read policies' choice of a host within a shard.

use std::sync::Arc;

use rand::Rng;
use redvoy_config::model::ReadPolicy;

use crate::host::{CoarseHealth, Host};

/// Hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16_384;

/// One hash-slot shard: a primary and its replicas, as indices into the host set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub primary: usize,
    pub replicas: Vec<usize>,
}

/// Envoy's `ClusterSlotsMap`: slot → shard, one shard per distinct primary in slot order.
#[derive(Clone)]
pub struct SlotMap {
    /// Shard index per slot; slots the reply did not cover map to shard 0, as in Envoy.
    pub(super) table: Box<[u16]>,
    pub(super) shards: Vec<Shard>,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMap")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl SlotMap {
    /// Shards in Envoy's order (one per distinct primary, slot entries sorted by start slot).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Envoy: a slot the reply did not cover maps to shard 0.
    pub fn shard_for_slot(&self, slot: u16) -> Option<&Shard> {
        let index = *self.table.get(usize::from(slot) % SLOT_COUNT)?;
        self.shards.get(usize::from(index))
    }

    /// Host index for a key's slot: writes go to the primary, reads follow `policy`
    /// (`redis_cluster_lb.cc`): healthy hosts first, then degraded, then any. `REPLICA` with
    /// no replica has no host.
    pub fn choose(
        &self,
        hosts: &[Arc<Host>],
        slot: u16,
        is_read: bool,
        policy: ReadPolicy,
    ) -> Option<usize> {
        let shard = self.shard_for_slot(slot)?;
        if !is_read {
            return Some(shard.primary);
        }
        let all = || std::iter::once(shard.primary).chain(shard.replicas.iter().copied());
        match policy {
            ReadPolicy::Master => Some(shard.primary),
            ReadPolicy::PreferMaster => {
                if health_of(hosts, shard.primary) == Health::Healthy {
                    Some(shard.primary)
                } else {
                    pick_by_health(hosts, all())
                }
            }
            ReadPolicy::Replica => pick_by_health(hosts, shard.replicas.iter().copied()),
            ReadPolicy::PreferReplica => {
                let healthy_replica = shard
                    .replicas
                    .iter()
                    .any(|r| health_of(hosts, *r) == Health::Healthy);
                if healthy_replica {
                    pick_by_health(hosts, shard.replicas.iter().copied())
                } else {
                    pick_by_health(hosts, all())
                }
            }
            ReadPolicy::Any => pick_by_health(hosts, all()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// A host's coarse health: active health checking and outlier detection included.
fn health_of(hosts: &[Arc<Host>], index: usize) -> Health {
    match hosts.get(index).map(|h| h.coarse_health()) {
        Some(CoarseHealth::Healthy) => Health::Healthy,
        Some(CoarseHealth::Degraded) => Health::Degraded,
        _ => Health::Unhealthy,
    }
}

/// Envoy's `chooseRandomHost`: a random healthy host, else a random degraded one, else any.
fn pick_by_health(hosts: &[Arc<Host>], candidates: impl Iterator<Item = usize>) -> Option<usize> {
    let candidates: smallvec_lite::Few = candidates.collect();
    let best = candidates.iter().map(|i| health_of(hosts, *i)).min()?;
    let pool: smallvec_lite::Few = candidates
        .iter()
        .copied()
        .filter(|i| health_of(hosts, *i) == best)
        .collect();
    let n = pool.len();
    if n == 1 {
        return pool.first().copied();
    }
    pool.get(rand::thread_rng().gen_range(0..n)).copied()
}

/// A tiny inline vector for a shard's hosts (a primary and a few replicas) so that a read
/// does not allocate.
mod smallvec_lite {
    const INLINE: usize = 8;

    #[derive(Default)]
    pub struct Few {
        len: usize,
        inline: [usize; INLINE],
        spill: Vec<usize>,
    }

    impl Few {
        pub fn len(&self) -> usize {
            self.len
        }
        pub fn first(&self) -> Option<&usize> {
            self.get(0)
        }
        pub fn get(&self, i: usize) -> Option<&usize> {
            if i >= self.len {
                None
            } else if i < INLINE {
                self.inline.get(i)
            } else {
                self.spill.get(i - INLINE)
            }
        }
        pub fn iter(&self) -> impl Iterator<Item = &usize> {
            (0..self.len).filter_map(|i| self.get(i))
        }
        fn push(&mut self, v: usize) {
            if self.len < INLINE {
                self.inline[self.len] = v;
            } else {
                self.spill.push(v);
            }
            self.len += 1;
        }
    }

    impl FromIterator<usize> for Few {
        fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
            let mut f = Few::default();
            for v in iter {
                f.push(v);
            }
            f
        }
    }
}
