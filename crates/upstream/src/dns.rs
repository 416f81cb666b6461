//! STRICT_DNS and LOGICAL_DNS discovery: resolving each endpoint's name the way Envoy's c-ares
//! resolver does, and turning answers into hosts with Envoy's per-target accounting.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redvoy_config::model::{self, DiscoveryType, DnsLookupFamily};
use tokio::task::JoinSet;
use tracing::warn;

use crate::cluster::Cluster;
use crate::host::{HealthFlag, Host};
use crate::stats::ClusterStats;

/// Upper bound on one DNS resolution (the initial one is awaited by `ClusterManager::new`).
/// A name that does not answer in time counts as a failed resolution (`update_failure`).
pub const DNS_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Floor for `dns_refresh_rate` (Envoy's proto requires more than 1 ms), so a zero value cannot
/// turn the refresh task into a busy loop.
pub const MIN_DNS_REFRESH_RATE: Duration = Duration::from_millis(1);

/// One DNS answer: the addresses (lookup family applied), or why the resolution failed.
pub(crate) type Answer = Result<Vec<SocketAddr>, String>;

/// A DNS name of a STRICT_DNS / LOGICAL_DNS cluster (Envoy's `ResolveTarget`).
#[derive(Debug)]
pub(crate) struct DnsTarget {
    pub(crate) dns_address: String,
    pub(crate) port: u16,
    /// `endpoint.hostname`, else the DNS name.
    pub(crate) hostname: String,
    pub(crate) weight: u32,
    /// The endpoint's `health_status`, given to every address it resolves to.
    pub(crate) health_status: model::HealthStatus,
    /// The endpoint's `transport_socket_matches` entry, given to every address, and its
    /// `total_match_count` (`None`: the cluster's `default.` one).
    pub(crate) transport_match: Option<usize>,
    pub(crate) match_count: Option<redvoy_stats::Counter>,
    /// This target's hosts in the order of the last successful answer.
    pub(crate) hosts: Vec<Arc<Host>>,
}

/// What the refresh task of one DNS cluster keeps between rounds.
#[derive(Debug)]
pub(crate) struct DnsCluster {
    pub(crate) cluster: Weak<Cluster>,
    pub(crate) targets: Vec<DnsTarget>,
    pub(crate) logical: bool,
    pub(crate) family: DnsLookupFamily,
    pub(crate) refresh_rate: Duration,
}

/// Resolves `name`, bounded by [`DNS_RESOLVE_TIMEOUT`], and applies the lookup family the way
/// Envoy's c-ares resolver does (AUTO: IPv6 if there is any, else IPv4; V4_PREFERRED: the
/// reverse; ALL: IPv4 then IPv6). The system resolver (getaddrinfo) orders the answer.
pub(crate) async fn resolve(name: &str, port: u16, family: DnsLookupFamily) -> Answer {
    let lookup = tokio::time::timeout(DNS_RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
    let mut all: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) | Err(_) if is_localhost(name) => Vec::new(),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("timed out after {DNS_RESOLVE_TIMEOUT:?}")),
    };
    if is_localhost(name) {
        // c-ares answers `localhost` with the loopback address of a family the hosts file does
        // not list (RFC 6761): Envoy resolves it to [::1] under AUTO even when /etc/hosts has
        // only 127.0.0.1. The address is hashed for placement, so follow it.
        if !all.iter().any(SocketAddr::is_ipv4) {
            all.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
        }
        if !all.iter().any(SocketAddr::is_ipv6) {
            all.push(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port));
        }
    }
    Ok(filter_family(&all, family))
}

fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .len()
            .checked_sub(".localhost".len())
            .and_then(|i| name.get(i..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
}

fn filter_family(all: &[SocketAddr], family: DnsLookupFamily) -> Vec<SocketAddr> {
    let v4 = all.iter().filter(|a| a.is_ipv4()).copied();
    let v6 = all.iter().filter(|a| a.is_ipv6()).copied();
    let has_v4 = all.iter().any(SocketAddr::is_ipv4);
    let has_v6 = all.iter().any(SocketAddr::is_ipv6);
    match family {
        DnsLookupFamily::V4Only => v4.collect(),
        DnsLookupFamily::V6Only => v6.collect(),
        DnsLookupFamily::Auto if has_v6 => v6.collect(),
        DnsLookupFamily::Auto => v4.collect(),
        DnsLookupFamily::V4Preferred if has_v4 => v4.collect(),
        DnsLookupFamily::V4Preferred => v6.collect(),
        DnsLookupFamily::All => v4.chain(v6).collect(),
    }
}

// === impl DnsCluster ===

impl DnsCluster {
    pub(crate) fn new(cluster: &Arc<Cluster>) -> Self {
        let config = &cluster.config;
        Self {
            cluster: Arc::downgrade(cluster),
            targets: cluster
                .usable_endpoints(&config.endpoints)
                .into_iter()
                .map(|e| DnsTarget {
                    dns_address: e.address.address.clone(),
                    port: e.address.port,
                    hostname: if e.hostname.is_empty() {
                        e.address.address.clone()
                    } else {
                        e.hostname.clone()
                    },
                    weight: e.weight,
                    health_status: e.health_status,
                    transport_match: cluster.transport_match(e),
                    match_count: cluster.transport_match_counter(cluster.transport_match(e)),
                    hosts: Vec::new(),
                })
                .collect(),
            logical: config.discovery == DiscoveryType::LogicalDns,
            family: config.dns_lookup_family,
            refresh_rate: config.dns_refresh_rate.max(MIN_DNS_REFRESH_RATE),
        }
    }

    pub(crate) async fn resolve_all(&self) -> Vec<Answer> {
        let mut set = JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let (name, port, family) = (t.dns_address.clone(), t.port, self.family);
            set.spawn(async move { (i, resolve(&name, port, family).await) });
        }
        let mut out: Vec<Answer> = self
            .targets
            .iter()
            .map(|_| Err("resolver task failed".to_owned()))
            .collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, answer)) = joined {
                if let Some(slot) = out.get_mut(i) {
                    *slot = answer;
                }
            }
        }
        out
    }

    /// Applies one round of answers (one per target, in target order) with Envoy's per-target
    /// accounting, then rebuilds the host set once if any target's address set changed.
    pub(crate) fn apply(&mut self, cluster: &Cluster, answers: Vec<Answer>) {
        let stats = &cluster.stats;
        let mut changed = false;
        for (target, answer) in self.targets.iter_mut().zip(answers) {
            stats.update_attempt.inc();
            let addrs = match answer {
                // LOGICAL_DNS ignores an empty answer (keeps its last address) and counts it
                // as a failure.
                Ok(addrs) if self.logical && addrs.is_empty() => Err("empty answer".to_owned()),
                other => other,
            };
            let mut addrs = match addrs {
                Ok(addrs) => addrs,
                Err(e) => {
                    stats.update_failure.inc();
                    warn!(
                        cluster = %cluster.name,
                        name = %target.dns_address,
                        error = %e,
                        "DNS resolution failed; keeping the previous hosts"
                    );
                    continue;
                }
            };
            stats.update_success.inc();
            if self.logical {
                addrs.truncate(1);
            }
            let keep_removed = !self.logical
                && cluster.config.health_check.is_some()
                && !cluster.config.ignore_health_on_host_removal;
            if target.update(addrs, stats, keep_removed) {
                stats.membership_change.inc();
                changed = true;
            } else {
                stats.update_no_rebuild.inc();
            }
        }
        if changed {
            let hosts: Vec<Arc<Host>> = self
                .targets
                .iter()
                .flat_map(|t| t.hosts.iter().cloned())
                // Removed by DNS and failed since: gone from the cluster already.
                .filter(|h| {
                    !(h.health.has(HealthFlag::PendingDynamicRemoval)
                        && h.health.has(HealthFlag::FailedActiveHc))
                })
                .collect();
            cluster.mark_new_hosts_unchecked(&hosts);
            cluster.install(hosts);
        }
    }
}

// === impl DnsTarget ===

impl DnsTarget {
    /// Takes a new answer; returns whether the set of addresses changed. The host list always
    /// follows the latest answer order, reusing the `Arc<Host>` of addresses already known.
    ///
    /// With `keep_removed` (active health checking without `ignore_health_on_host_removal`), a
    /// host the answer no longer has stays, `/pending_dynamic_removal`, while it passes its
    /// checks (Envoy's `updateDynamicHostList`); one that failed since goes quietly (the
    /// cluster already removed it when its check failed).
    pub(crate) fn update(
        &mut self,
        addrs: Vec<SocketAddr>,
        stats: &ClusterStats,
        keep_removed: bool,
    ) -> bool {
        let mut seen = HashSet::with_capacity(addrs.len());
        let mut hosts = Vec::with_capacity(addrs.len());
        let mut added = false;
        for addr in addrs {
            if !seen.insert(addr) {
                continue;
            }
            match self.hosts.iter().find(|h| h.address == addr) {
                Some(existing) => {
                    existing.health.clear(HealthFlag::PendingDynamicRemoval);
                    hosts.push(existing.clone());
                }
                None => {
                    added = true;
                    hosts.push(Arc::new(
                        Host::new(addr, self.hostname.clone(), self.weight)
                            .with_eds_health(self.health_status)
                            .with_transport_match(self.transport_match),
                    ));
                }
            }
            // Envoy builds a fresh host object (and runs the transport socket matcher) for
            // every address of every answer.
            match &self.match_count {
                Some(count) => count.inc(),
                None => stats.default_total_match_count.inc(),
            }
        }
        let mut removed = false;
        for h in &self.hosts {
            if seen.contains(&h.address) {
                continue;
            }
            let failed = h.health.has(HealthFlag::FailedActiveHc);
            if failed && h.health.has(HealthFlag::PendingDynamicRemoval) {
                continue;
            }
            if keep_removed && !failed && !h.eds_failed() {
                h.health.set(HealthFlag::PendingDynamicRemoval);
                hosts.push(Arc::clone(h));
            } else {
                removed = true;
            }
        }
        self.hosts = hosts;
        added || removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redvoy_config::model::LbPolicy;
    use redvoy_stats::Store;

    #[tokio::test]
    async fn localhost_follows_c_ares() {
        // Observed on Envoy 1.40 with an /etc/hosts that lists only 127.0.0.1 localhost.
        let auto = resolve("localhost", 1, DnsLookupFamily::Auto)
            .await
            .unwrap();
        assert_eq!(auto, ["[::1]:1".parse::<SocketAddr>().unwrap()]);
        let all = resolve("localhost", 1, DnsLookupFamily::All).await.unwrap();
        let all: Vec<String> = all.iter().map(crate::envoy_address_string).collect();
        assert_eq!(all, ["127.0.0.1:1", "[::1]:1"]);
        let v4 = resolve("LocalHost.", 1, DnsLookupFamily::V4Preferred)
            .await
            .unwrap();
        assert_eq!(v4, ["127.0.0.1:1".parse::<SocketAddr>().unwrap()]);
        assert!(is_localhost("redis.localhost"));
        assert!(!is_localhost("notlocalhost"));
    }

    #[test]
    fn lookup_families() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let c: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let all = [a, b, c];
        assert_eq!(filter_family(&all, DnsLookupFamily::V4Only), [a, c]);
        assert_eq!(filter_family(&all, DnsLookupFamily::V6Only), [b]);
        assert_eq!(filter_family(&all, DnsLookupFamily::Auto), [b]);
        assert_eq!(filter_family(&[a, c], DnsLookupFamily::Auto), [a, c]);
        assert_eq!(filter_family(&all, DnsLookupFamily::V4Preferred), [a, c]);
        assert_eq!(filter_family(&[b], DnsLookupFamily::V4Preferred), [b]);
        assert_eq!(filter_family(&all, DnsLookupFamily::All), [a, c, b]);
    }

    fn target() -> DnsTarget {
        DnsTarget {
            dns_address: "x".into(),
            port: 1,
            hostname: "x".into(),
            weight: 1,
            health_status: model::HealthStatus::Unknown,
            transport_match: None,
            match_count: None,
            hosts: Vec::new(),
        }
    }

    #[test]
    fn target_update_tracks_changes_and_reuses_hosts() {
        let store = Store::new();
        let stats = ClusterStats::new(&store, "t", &LbPolicy::RoundRobin, &Default::default());
        let mut t = target();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        assert!(t.update(vec![a, b, a], &stats, false));
        assert_eq!(t.hosts.len(), 2);
        let first = t.hosts[0].clone();
        // Same set, new order: no change, but the order follows the answer.
        assert!(!t.update(vec![b, a], &stats, false));
        assert_eq!(t.hosts[0].address, b);
        assert!(Arc::ptr_eq(&t.hosts[1], &first));
        assert!(t.update(vec![b], &stats, false));
        assert!(t.update(vec![], &stats, false));
        assert!(t.hosts.is_empty());
    }

    #[test]
    fn health_checked_target_keeps_a_passing_removed_host() {
        let store = Store::new();
        let stats = ClusterStats::new(&store, "t", &LbPolicy::RoundRobin, &Default::default());
        let mut t = target();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        assert!(t.update(vec![a, b], &stats, true));
        let kept = t.hosts[1].clone();
        // b leaves the answer while passing its checks: kept, flagged, no change.
        assert!(!t.update(vec![a], &stats, true));
        assert_eq!(t.hosts.len(), 2);
        assert!(kept.health.has(HealthFlag::PendingDynamicRemoval));
        // Back in the answer: the same host, unflagged.
        assert!(!t.update(vec![a, b], &stats, true));
        assert!(Arc::ptr_eq(&t.hosts[1], &kept));
        assert!(!kept.health.has(HealthFlag::PendingDynamicRemoval));
        // Gone again, then failed by a check: dropped without counting a second removal.
        assert!(!t.update(vec![a], &stats, true));
        kept.health.set(HealthFlag::FailedActiveHc);
        assert!(!t.update(vec![a], &stats, true));
        assert_eq!(t.hosts.len(), 1);
        // A failed host leaving the answer goes at once.
        t.hosts[0].health.set(HealthFlag::FailedActiveHc);
        assert!(t.update(vec![], &stats, true));
        assert!(t.hosts.is_empty());
    }
}
