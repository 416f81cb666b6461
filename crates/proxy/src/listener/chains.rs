//! A listener's filter chains: compiled from config for the data path (one terminal filter
//! each: redis_proxy, tcp_proxy or the minimal HTTP connection manager), and Envoy's choice of
//! a chain for a new connection. Used by the listener manager and by validate mode alike.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use redvoy_config::model::{self, CidrRange, FilterChainMatch};
use redvoy_http::Hcm;
use redvoy_runtime::Runtime;
use redvoy_stats::Store;
use redvoy_upstream::ClusterManager;

use crate::filter::{FilterConfig, FilterConfigError};
use crate::tcp_proxy::TcpProxyConfig;

/// One filter chain's terminal filter, compiled.
pub enum ChainFilter {
    Redis(Arc<FilterConfig>),
    TcpProxy(Arc<TcpProxyConfig>),
    Http(Arc<Hcm>),
}

/// A filter chain: when it applies, and what runs.
pub struct CompiledChain {
    pub matcher: FilterChainMatch,
    pub filter: ChainFilter,
}

/// Every chain of a listener; replaced whole when the listener's config changes.
#[derive(Default)]
pub struct ChainSet {
    pub chains: Vec<CompiledChain>,
    pub default: Option<CompiledChain>,
}

impl ChainSet {
    /// Envoy's filter-chain selection for a plain TCP connection: destination port, then the
    /// most specific destination prefix, then source prefix and port; chains that need TLS or
    /// HTTP inspection never match. Returns an index into `chains`, or `chains.len()` for the
    /// default chain.
    pub fn select(&self, dst: SocketAddr, src: SocketAddr) -> Option<usize> {
        let matchers: Vec<&FilterChainMatch> = self.chains.iter().map(|c| &c.matcher).collect();
        select_chain(&matchers, dst, src)
            .or_else(|| self.default.as_ref().map(|_| self.chains.len()))
    }

    pub(crate) fn get(&self, index: usize) -> Option<&CompiledChain> {
        self.chains.get(index).or_else(|| {
            (index == self.chains.len())
                .then_some(self.default.as_ref())
                .flatten()
        })
    }
}

/// The index of the chain Envoy picks among `matchers` for a plain TCP connection.
fn select_chain(matchers: &[&FilterChainMatch], dst: SocketAddr, src: SocketAddr) -> Option<usize> {
    let candidates: Vec<usize> = (0..matchers.len())
        .filter(|&i| !matchers[i].needs_inspection)
        .collect();
    let by_port = exact_or_unset(&candidates, |i| {
        matchers[i].destination_port.map(|p| p == dst.port())
    });
    let by_dst = most_specific(&by_port, dst.ip(), |i| &matchers[i].prefix_ranges);
    let by_src = most_specific(&by_dst, src.ip(), |i| &matchers[i].source_prefix_ranges);
    let by_src_port = exact_or_unset(&by_src, |i| {
        (!matchers[i].source_ports.is_empty())
            .then(|| matchers[i].source_ports.contains(&src.port()))
    });
    by_src_port.first().copied()
}

/// Chains whose criterion matches exactly (`Some(true)`), else those that do not set it
/// (`None`); chains that set it to something else (`Some(false)`) never match.
fn exact_or_unset(from: &[usize], criterion: impl Fn(usize) -> Option<bool>) -> Vec<usize> {
    let exact: Vec<usize> = from
        .iter()
        .copied()
        .filter(|&i| criterion(i) == Some(true))
        .collect();
    if exact.is_empty() {
        from.iter()
            .copied()
            .filter(|&i| criterion(i).is_none())
            .collect()
    } else {
        exact
    }
}

/// The chains whose ranges contain `ip` with the longest prefix; chains without ranges only
/// when no range matches.
fn most_specific<'a>(
    from: &[usize],
    ip: IpAddr,
    ranges: impl Fn(usize) -> &'a Vec<CidrRange>,
) -> Vec<usize> {
    let mut best: Option<u8> = None;
    let mut out = Vec::new();
    for &i in from {
        let longest = ranges(i)
            .iter()
            .filter(|r| cidr_contains(r, ip))
            .map(|r| r.prefix_len)
            .max();
        match (longest, best) {
            (Some(l), Some(b)) if l < b => {}
            (Some(l), Some(b)) if l == b => out.push(i),
            (Some(l), _) => {
                best = Some(l);
                out = vec![i];
            }
            (None, _) => {}
        }
    }
    if best.is_some() {
        return out;
    }
    from.iter()
        .copied()
        .filter(|&i| ranges(i).is_empty())
        .collect()
}

fn cidr_contains(range: &CidrRange, ip: IpAddr) -> bool {
    match (range.address, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let len = u32::from(range.prefix_len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let len = u32::from(range.prefix_len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Compiles every chain of `listener` (its default chain included). Fails as Envoy would
/// refuse the listener's filters (a redis_proxy whose routes or settings are invalid).
pub fn compile_chains(
    listener: &model::Listener,
    clusters: &ClusterManager,
    store: &Store,
    runtime: &Runtime,
) -> Result<ChainSet, FilterConfigError> {
    let compile = |chain: &model::FilterChain| -> Result<CompiledChain, FilterConfigError> {
        let filter = match &chain.filter {
            model::NetworkFilter::RedisProxy(rp) => {
                ChainFilter::Redis(Arc::new(FilterConfig::new(rp, clusters, store, runtime)?))
            }
            model::NetworkFilter::TcpProxy(tp) => {
                ChainFilter::TcpProxy(Arc::new(TcpProxyConfig::new(tp, store)))
            }
            model::NetworkFilter::HttpConnectionManager(hcm) => {
                ChainFilter::Http(Arc::new(Hcm::new(hcm, store)))
            }
        };
        Ok(CompiledChain {
            matcher: chain.filter_chain_match.clone(),
            filter,
        })
    };
    Ok(ChainSet {
        chains: listener
            .filter_chains
            .iter()
            .map(compile)
            .collect::<Result<_, _>>()?,
        default: listener
            .default_filter_chain
            .as_ref()
            .map(compile)
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> CidrRange {
        let (ip, len) = s.split_once('/').unwrap();
        CidrRange {
            address: ip.parse().unwrap(),
            prefix_len: len.parse().unwrap(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn filter_chain_selection_follows_envoys_order() {
        let any = FilterChainMatch::default();
        let port_6379 = FilterChainMatch {
            destination_port: Some(6379),
            ..Default::default()
        };
        let vip = FilterChainMatch {
            destination_port: Some(6379),
            prefix_ranges: vec![cidr("10.0.0.0/8"), cidr("10.1.2.3/32")],
            ..Default::default()
        };
        let tls = FilterChainMatch {
            needs_inspection: true,
            ..Default::default()
        };
        let chains = [&tls, &any, &port_6379, &vip];
        // Port first, then the longest destination prefix.
        assert_eq!(
            select_chain(&chains, addr("10.1.2.3:6379"), addr("1.1.1.1:5")),
            Some(3)
        );
        assert_eq!(
            select_chain(&chains, addr("192.168.0.1:6379"), addr("1.1.1.1:5")),
            Some(2)
        );
        // No port match: only chains without a port; the inspection chain never matches.
        assert_eq!(
            select_chain(&chains, addr("10.1.2.3:80"), addr("1.1.1.1:5")),
            Some(1)
        );
        assert_eq!(
            select_chain(&[&tls], addr("10.1.2.3:80"), addr("1.1.1.1:5")),
            None
        );
        let src = FilterChainMatch {
            source_prefix_ranges: vec![cidr("127.0.0.0/8")],
            source_ports: vec![1000],
            ..Default::default()
        };
        assert_eq!(
            select_chain(&[&src], addr("10.0.0.1:1"), addr("127.0.0.1:1000")),
            Some(0)
        );
        assert_eq!(
            select_chain(&[&src], addr("10.0.0.1:1"), addr("127.0.0.1:1001")),
            None
        );
        assert_eq!(
            select_chain(&[&src], addr("10.0.0.1:1"), addr("10.0.0.2:1000")),
            None
        );
        let v6 = FilterChainMatch {
            prefix_ranges: vec![cidr("::1/128")],
            ..Default::default()
        };
        assert_eq!(
            select_chain(&[&v6], addr("[::1]:1"), addr("[::1]:2")),
            Some(0)
        );
        assert_eq!(
            select_chain(&[&v6], addr("127.0.0.1:1"), addr("[::1]:2")),
            None
        );
    }
}
