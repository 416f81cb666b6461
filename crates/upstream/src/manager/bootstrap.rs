//! Building the bootstrap's clusters: every check first, then the first DNS answers (or none,
//! for `--mode validate`) before the manager is returned.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use redvoy_config::model::{self, DiscoveryType};
use redvoy_stats::Store;
use redvoy_tls::SecretManager;
use tokio::task::JoinSet;

use super::{ClusterManager, ClusterMap, ManagerState, ManagerStats};
use crate::cluster::{static_hosts, validate_cluster, Cluster};
use crate::dns::{resolve, Answer, DnsCluster};
use crate::UpstreamError;

/// Whether building the bootstrap's clusters resolves their DNS names.
#[derive(Clone, Copy)]
enum InitialDns {
    Resolve,
    Skip,
}

impl ClusterManager {
    /// Builds the bootstrap's clusters, resolving DNS names once (Envoy's cluster warming) before
    /// returning. A name that fails to resolve leaves its cluster without those hosts (a warning
    /// and `update_failure`, as in Envoy); configuration errors fail the whole call. Static EDS
    /// clusters warm until their first assignment.
    pub async fn new(clusters: &[model::Cluster], stats: &Store) -> Result<Self, UpstreamError> {
        Self::build(
            clusters,
            stats,
            InitialDns::Resolve,
            SecretManager::new(&[]),
        )
        .await
    }

    /// [`ClusterManager::new`] with the secrets TLS contexts may name (the bootstrap's
    /// `static_resources.secrets`, and those secret discovery brings later).
    pub async fn with_secrets(
        clusters: &[model::Cluster],
        stats: &Store,
        secrets: Arc<SecretManager>,
    ) -> Result<Self, UpstreamError> {
        Self::build(clusters, stats, InitialDns::Resolve, secrets).await
    }

    /// Builds the bootstrap's clusters as [`ClusterManager::new`] does, with every check, but
    /// resolves no name: `--mode validate`, where Envoy's resolver answers every query with no
    /// address so that a config naming hosts of another environment still validates.
    pub async fn without_dns(
        clusters: &[model::Cluster],
        stats: &Store,
        secrets: Arc<SecretManager>,
    ) -> Result<Self, UpstreamError> {
        Self::build(clusters, stats, InitialDns::Skip, secrets).await
    }

    async fn build(
        clusters: &[model::Cluster],
        stats: &Store,
        initial_dns: InitialDns,
        secrets: Arc<SecretManager>,
    ) -> Result<Self, UpstreamError> {
        let mut names = HashSet::with_capacity(clusters.len());
        for c in clusters {
            if !names.insert(c.name.clone()) {
                return Err(UpstreamError::DuplicateCluster(c.name.clone()));
            }
            validate_cluster(c)?;
        }

        let mut map = ClusterMap::default();
        let mut state = ManagerState {
            static_names: names,
            ..ManagerState::default()
        };
        let mut dns = Vec::new();
        for config in clusters {
            let cluster = Arc::new(Cluster::build(config.clone(), stats, &secrets)?);
            match config.discovery {
                DiscoveryType::Static => {
                    let hosts = static_hosts(&cluster)?;
                    for h in &hosts {
                        cluster.count_transport_match(h.transport_match, 1);
                    }
                    cluster.set_hosts(hosts);
                }
                DiscoveryType::OriginalDst => {}
                // Active at once with no hosts; `spawn_dns_refresh` starts discovery and
                // `wait_initialized` waits for the first topology.
                DiscoveryType::RedisCluster => state.static_redis.push(Arc::clone(&cluster)),
                DiscoveryType::Eds => {
                    cluster.stats.warming_state.set(1);
                    state.warming.insert(config.name.clone(), cluster);
                    continue;
                }
                DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                    dns.push(DnsCluster::new(&cluster));
                }
            }
            map.by_name
                .insert(config.name.clone(), Arc::clone(&cluster));
            map.order.push(cluster);
        }

        // Warm every DNS cluster concurrently: startup waits for the slowest name only.
        let mut lookups = JoinSet::new();
        let resolving = match initial_dns {
            InitialDns::Resolve => dns.as_slice(),
            InitialDns::Skip => &[],
        };
        for (ci, d) in resolving.iter().enumerate() {
            for (ti, t) in d.targets.iter().enumerate() {
                let (name, port, family) = (t.dns_address.clone(), t.port, d.family);
                lookups.spawn(async move { (ci, ti, resolve(&name, port, family).await) });
            }
        }
        let mut answers: Vec<Vec<Option<Answer>>> = dns
            .iter()
            .map(|d| d.targets.iter().map(|_| None).collect())
            .collect();
        while let Some(joined) = lookups.join_next().await {
            if let Ok((ci, ti, answer)) = joined {
                if let Some(slot) = answers.get_mut(ci).and_then(|a| a.get_mut(ti)) {
                    *slot = Some(answer);
                }
            }
        }
        let resolved = match initial_dns {
            InitialDns::Resolve => dns.len(),
            InitialDns::Skip => 0,
        };
        for (d, answers) in dns.iter_mut().take(resolved).zip(answers) {
            if let Some(cluster) = d.cluster.upgrade() {
                let answers = answers
                    .into_iter()
                    .map(|a| a.unwrap_or_else(|| Err("resolver task failed".to_owned())))
                    .collect();
                d.apply(&cluster, answers);
            }
        }
        state.static_dns = dns;

        let manager_stats = ManagerStats::new(stats);
        manager_stats.active_clusters.set(map.order.len() as u64);
        manager_stats
            .warming_clusters
            .set(state.warming.len() as u64);
        manager_stats.cluster_added.add(clusters.len() as u64);

        Ok(Self {
            secrets,
            store: stats.clone(),
            stats: manager_stats,
            active: ArcSwap::from_pointee(map),
            warming_count: tokio::sync::watch::channel(state.warming.len()).0,
            state: Mutex::new(state),
        })
    }
}
