//! `CLUSTER SLOTS`: the reply's validation as Envoy does it, hostname resolution, and the
//! topology (hosts and slot map) built from it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use redvoy_config::model::{self, DnsLookupFamily};
use redvoy_resp::RespValue;
use tracing::warn;

use super::slot_map::{Shard, SlotMap, SLOT_COUNT};
use crate::dns::resolve;
use crate::host::{EdsInfo, Host};

/// A node as the reply names it, before hostname resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeName {
    pub host: String,
    pub port: u16,
}

/// One entry of a `CLUSTER SLOTS` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: NodeName,
    pub replicas: Vec<NodeName>,
}

/// One slot range with its nodes resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: SocketAddr,
    pub replicas: Vec<SocketAddr>,
}

/// Why a `CLUSTER SLOTS` reply was rejected as a whole (Envoy's validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotsError {
    #[error("CLUSTER SLOTS reply is not a non-empty array")]
    NotArray,
    #[error("invalid slot entry")]
    BadEntry,
    #[error("invalid node in a slot entry")]
    BadNode,
    #[error("the node answered an error: {0}")]
    ErrorReply(String),
}

/// Parses a `CLUSTER SLOTS` reply with Envoy's rules: a non-empty array of
/// `[start, end, primary, replicas...]`, each node `[address (non-empty bulk), port, ...]`;
/// any violation rejects the whole reply.
pub(crate) fn parse_cluster_slots(reply: &RespValue) -> Result<Vec<RawSlotRange>, SlotsError> {
    if let RespValue::Error(e) = reply {
        return Err(SlotsError::ErrorReply(
            String::from_utf8_lossy(e).into_owned(),
        ));
    }
    let entries = match reply {
        RespValue::Array(a) if !a.is_empty() => a,
        _ => return Err(SlotsError::NotArray),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let RespValue::Array(parts) = entry else {
            return Err(SlotsError::BadEntry);
        };
        if parts.len() < 3 {
            return Err(SlotsError::BadEntry);
        }
        let slot = |v: &RespValue| -> Result<u16, SlotsError> {
            match v {
                RespValue::Integer(n) if (0..SLOT_COUNT as i64).contains(n) => Ok(*n as u16),
                _ => Err(SlotsError::BadEntry),
            }
        };
        let start = slot(&parts[0])?;
        let end = slot(&parts[1])?;
        if start > end {
            return Err(SlotsError::BadEntry);
        }
        let primary = parse_node(&parts[2])?;
        let replicas = parts[3..]
            .iter()
            .map(parse_node)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RawSlotRange {
            start,
            end,
            primary,
            replicas,
        });
    }
    Ok(out)
}

fn parse_node(v: &RespValue) -> Result<NodeName, SlotsError> {
    let RespValue::Array(parts) = v else {
        return Err(SlotsError::BadNode);
    };
    if parts.len() < 2 {
        return Err(SlotsError::BadNode);
    }
    let host = match &parts[0] {
        RespValue::Bulk(b) if !b.is_empty() => {
            String::from_utf8(b.to_vec()).map_err(|_| SlotsError::BadNode)?
        }
        _ => return Err(SlotsError::BadNode),
    };
    let port = match &parts[1] {
        RespValue::Integer(p) => u16::try_from(*p).map_err(|_| SlotsError::BadNode)?,
        _ => return Err(SlotsError::BadNode),
    };
    Ok(NodeName { host, port })
}

/// Resolves the nodes of a reply: IP literals directly, hostnames in parallel with the
/// cluster's lookup family. A primary that does not resolve fails the whole update; a replica
/// that does not is skipped. Returns the ranges (sorted) and whether a replica was skipped.
pub(crate) async fn resolve_ranges(
    raw: Vec<RawSlotRange>,
    family: DnsLookupFamily,
) -> Result<(Vec<SlotRange>, bool), String> {
    let mut names: HashMap<(String, u16), Option<SocketAddr>> = HashMap::new();
    for r in &raw {
        for n in std::iter::once(&r.primary).chain(&r.replicas) {
            if n.host.parse::<IpAddr>().is_err() {
                names.insert((n.host.clone(), n.port), None);
            }
        }
    }
    let mut lookups = tokio::task::JoinSet::new();
    for (host, port) in names.keys().cloned() {
        lookups.spawn(async move {
            let answer = resolve(&host, port, family).await;
            ((host, port), answer.ok().and_then(|a| a.first().copied()))
        });
    }
    while let Some(joined) = lookups.join_next().await {
        if let Ok((key, addr)) = joined {
            names.insert(key, addr);
        }
    }
    let lookup = |n: &NodeName| -> Option<SocketAddr> {
        match n.host.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, n.port)),
            Err(_) => names.get(&(n.host.clone(), n.port)).copied().flatten(),
        }
    };
    let mut skipped = false;
    let mut ranges = Vec::with_capacity(raw.len());
    for r in &raw {
        let Some(primary) = lookup(&r.primary) else {
            return Err(format!("cannot resolve primary {}", r.primary.host));
        };
        let mut replicas = Vec::with_capacity(r.replicas.len());
        for n in &r.replicas {
            match lookup(n) {
                Some(a) => replicas.push(a),
                None => {
                    warn!(host = %n.host, "Redis Cluster replica hostname does not resolve; skipped");
                    skipped = true;
                }
            }
        }
        ranges.push(SlotRange {
            start: r.start,
            end: r.end,
            primary,
            replicas,
        });
    }
    ranges.sort();
    Ok((ranges, skipped))
}

/// Builds the hosts (every primary and replica, each once, in slot order) and the slot map
/// from sorted ranges, reusing `old` hosts by address so their stats and connections live on.
/// New hosts copy health, weight and locality from the cluster's first configured endpoint,
/// as Envoy's redis cluster does.
pub(crate) fn build_topology(
    ranges: &[SlotRange],
    old: &[Arc<Host>],
    template: Option<&model::Endpoint>,
    transport_match: Option<usize>,
) -> (Vec<Arc<Host>>, SlotMap) {
    let mut hosts: Vec<Arc<Host>> = Vec::new();
    let mut index_of: HashMap<SocketAddr, usize> = HashMap::new();
    let mut intern = |addr: SocketAddr, hosts: &mut Vec<Arc<Host>>| -> usize {
        *index_of.entry(addr).or_insert_with(|| {
            let host = old
                .iter()
                .find(|h| h.address == addr)
                .cloned()
                .unwrap_or_else(|| new_host(addr, template, transport_match));
            hosts.push(host);
            hosts.len() - 1
        })
    };
    let mut shards: Vec<Shard> = Vec::new();
    let mut shard_of_primary: HashMap<SocketAddr, u16> = HashMap::new();
    let mut table = vec![0u16; SLOT_COUNT].into_boxed_slice();
    for r in ranges {
        let primary = intern(r.primary, &mut hosts);
        let shard = match shard_of_primary.get(&r.primary) {
            Some(s) => *s,
            None => {
                let replicas = r.replicas.iter().map(|a| intern(*a, &mut hosts)).collect();
                shards.push(Shard { primary, replicas });
                let s = (shards.len() - 1) as u16;
                shard_of_primary.insert(r.primary, s);
                s
            }
        };
        for slot in r.start..=r.end {
            if let Some(t) = table.get_mut(usize::from(slot)) {
                *t = shard;
            }
        }
    }
    (hosts, SlotMap { table, shards })
}

fn new_host(
    addr: SocketAddr,
    template: Option<&model::Endpoint>,
    transport_match: Option<usize>,
) -> Arc<Host> {
    let (weight, eds, health) = match template {
        Some(e) => (
            e.weight,
            EdsInfo {
                locality: e.locality.clone(),
                priority: e.priority,
            },
            e.health_status,
        ),
        None => (1, EdsInfo::default(), model::HealthStatus::Unknown),
    };
    Arc::new(
        Host::new(addr, String::new(), weight.max(1))
            .with_eds(eds)
            .with_eds_health(health)
            .with_transport_match(transport_match),
    )
}
