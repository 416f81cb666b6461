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

use redvoy_tls::{ServerTls, TlsStats};

use super::inspect::Inspectors;
use crate::filter::{FilterConfig, FilterConfigError};
use crate::listener_stats::listener_stat_prefix;
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
    /// The chain's TLS (`DownstreamTlsContext`, rebuilt when its secrets change); `None` is
    /// plaintext.
    pub tls: Option<Arc<ServerTls>>,
}

/// What the listener filters found out about a connection before a chain is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    /// `tls` when the TLS inspector saw a ClientHello; `raw_buffer` otherwise.
    pub transport_protocol: &'static str,
    /// The ClientHello's SNI, lower-cased.
    pub server_name: Option<String>,
    /// The ClientHello's ALPN protocols, or what the HTTP inspector found (`http/1.1`, `h2c`).
    pub application_protocols: Vec<String>,
}

impl Detected {
    /// A connection no inspector looked at.
    pub fn plain() -> Self {
        Self {
            transport_protocol: RAW_BUFFER,
            ..Default::default()
        }
    }
}

/// Envoy's transport protocol of a connection no TLS inspector recognised.
pub const RAW_BUFFER: &str = "raw_buffer";

/// Every chain of a listener, and the inspectors that run before one is chosen; replaced
/// whole when the listener's config changes.
#[derive(Default)]
pub struct ChainSet {
    pub chains: Vec<CompiledChain>,
    pub default: Option<CompiledChain>,
    pub inspectors: Option<Inspectors>,
}

impl ChainSet {
    /// Envoy's filter-chain selection: destination port, the most specific destination
    /// prefix, server name, transport protocol, application protocol, then source prefix and
    /// port. Returns an index into `chains`, or `chains.len()` for the default chain.
    pub fn select(&self, dst: SocketAddr, src: SocketAddr, detected: &Detected) -> Option<usize> {
        let matchers: Vec<&FilterChainMatch> = self.chains.iter().map(|c| &c.matcher).collect();
        select_chain(&matchers, dst, src, detected)
            .or_else(|| self.default.as_ref().map(|_| self.chains.len()))
    }

    /// Every chain's TLS context (to wait for their secrets).
    pub fn tls_contexts(&self) -> Vec<Arc<ServerTls>> {
        self.chains
            .iter()
            .chain(self.default.as_ref())
            .filter_map(|c| c.tls.clone())
            .collect()
    }

    pub(crate) fn get(&self, index: usize) -> Option<&CompiledChain> {
        self.chains.get(index).or_else(|| {
            (index == self.chains.len())
                .then_some(self.default.as_ref())
                .flatten()
        })
    }
}

/// The index of the chain Envoy picks among `matchers`.
fn select_chain(
    matchers: &[&FilterChainMatch],
    dst: SocketAddr,
    src: SocketAddr,
    detected: &Detected,
) -> Option<usize> {
    let candidates: Vec<usize> = (0..matchers.len()).collect();
    let by_port = exact_or_unset(&candidates, |i| {
        matchers[i].destination_port.map(|p| p == dst.port())
    });
    let by_dst = most_specific(&by_port, dst.ip(), |i| &matchers[i].prefix_ranges);
    let by_name = by_server_name(&by_dst, detected.server_name.as_deref(), |i| {
        &matchers[i].server_names
    });
    let by_transport = exact_or_unset(&by_name, |i| {
        let wanted = &matchers[i].transport_protocol;
        (!wanted.is_empty()).then(|| wanted == detected.transport_protocol)
    });
    let by_alpn = by_application_protocol(&by_transport, &detected.application_protocols, |i| {
        &matchers[i].application_protocols
    });
    let by_src = most_specific(&by_alpn, src.ip(), |i| &matchers[i].source_prefix_ranges);
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

/// Envoy's server-name step: chains naming the SNI exactly, else those with the longest
/// matching `*.` wildcard, else those that name none.
fn by_server_name<'a>(
    from: &[usize],
    sni: Option<&str>,
    names: impl Fn(usize) -> &'a Vec<String>,
) -> Vec<usize> {
    if let Some(sni) = sni {
        let exact: Vec<usize> = from
            .iter()
            .copied()
            .filter(|&i| names(i).iter().any(|n| n == sni))
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        // `a.b.example.com` tries `*.b.example.com`, then `*.example.com`, then `*.com`.
        let mut rest = sni;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            let wildcard = format!("*.{rest}");
            let found: Vec<usize> = from
                .iter()
                .copied()
                .filter(|&i| names(i).contains(&wildcard))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
    }
    from.iter()
        .copied()
        .filter(|&i| names(i).is_empty())
        .collect()
}

/// Envoy's application-protocol step: the first of the connection's protocols some chain
/// lists picks those chains; else the chains that list none.
fn by_application_protocol<'a>(
    from: &[usize],
    offered: &[String],
    listed: impl Fn(usize) -> &'a Vec<String>,
) -> Vec<usize> {
    for protocol in offered {
        let found: Vec<usize> = from
            .iter()
            .copied()
            .filter(|&i| listed(i).contains(protocol))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    from.iter()
        .copied()
        .filter(|&i| listed(i).is_empty())
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
/// refuse the listener's filters (a redis_proxy whose routes or settings are invalid) or its
/// TLS settings (a certificate that cannot be read).
pub fn compile_chains(
    listener: &model::Listener,
    clusters: &ClusterManager,
    store: &Store,
    runtime: &Runtime,
) -> Result<ChainSet, FilterConfigError> {
    let scope = listener
        .address
        .to_string()
        .parse::<SocketAddr>()
        .map(|a| format!("listener.{}.", listener_stat_prefix(&a)))
        .unwrap_or_else(|_| format!("listener.{}.", listener.name));
    let compile = |chain: &model::FilterChain| -> Result<CompiledChain, FilterConfigError> {
        let tls = chain
            .tls
            .as_ref()
            .map(|tls| {
                ServerTls::new(
                    tls,
                    Some(TlsStats::server(store, &scope)),
                    clusters.secrets(),
                )
            })
            .transpose()?;
        let filter = match &chain.filter {
            model::NetworkFilter::RedisProxy(rp) => {
                ChainFilter::Redis(Arc::new(FilterConfig::new(
                    rp,
                    clusters,
                    store,
                    runtime,
                    listener.per_connection_buffer_limit_bytes,
                )?))
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
            tls,
        })
    };
    Ok(ChainSet {
        inspectors: Inspectors::new(listener, store),
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
    fn inspected_connections_pick_chains_by_sni_transport_and_alpn() {
        let m = |names: &[&str], transport: &str, alpn: &[&str]| FilterChainMatch {
            server_names: names.iter().map(|s| s.to_string()).collect(),
            transport_protocol: transport.into(),
            application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        // Istio's inbound shape: mTLS with Istio's ALPN, any TLS, plaintext.
        let istio = m(&[], "tls", &["istio-peer-exchange", "istio"]);
        let any_tls = m(&[], "tls", &[]);
        let plain = m(&[], "raw_buffer", &[]);
        let exact = m(&["redis.example.com"], "", &[]);
        let wildcard = m(&["*.example.com"], "", &[]);
        let chains = [&istio, &any_tls, &plain];
        let tls = |sni: Option<&str>, alpn: &[&str]| Detected {
            transport_protocol: "tls",
            server_name: sni.map(str::to_owned),
            application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        };
        let (d, s) = (addr("10.0.0.1:6379"), addr("10.0.0.2:1"));
        assert_eq!(select_chain(&chains, d, s, &tls(None, &["istio"])), Some(0));
        assert_eq!(select_chain(&chains, d, s, &tls(None, &["h2"])), Some(1));
        assert_eq!(select_chain(&chains, d, s, &Detected::plain()), Some(2));
        // Server names: exact first, then the wildcard, then chains naming none.
        let named = [&exact, &wildcard, &plain];
        assert_eq!(
            select_chain(&named, d, s, &tls(Some("redis.example.com"), &[])),
            Some(0)
        );
        assert_eq!(
            select_chain(&named, d, s, &tls(Some("a.example.com"), &[])),
            Some(1)
        );
        assert_eq!(
            select_chain(&named, d, s, &tls(Some("a.b.example.com"), &[])),
            Some(1)
        );
        assert_eq!(
            select_chain(&named, d, s, &tls(Some("other.org"), &[])),
            None
        );
        assert_eq!(select_chain(&named, d, s, &Detected::plain()), Some(2));
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
            transport_protocol: "tls".into(),
            ..Default::default()
        };
        let plain = Detected::plain();
        let chains = [&tls, &any, &port_6379, &vip];
        // Port first, then the longest destination prefix.
        assert_eq!(
            select_chain(&chains, addr("10.1.2.3:6379"), addr("1.1.1.1:5"), &plain),
            Some(3)
        );
        assert_eq!(
            select_chain(&chains, addr("192.168.0.1:6379"), addr("1.1.1.1:5"), &plain),
            Some(2)
        );
        // No port match: only chains without a port; the inspection chain never matches.
        assert_eq!(
            select_chain(&chains, addr("10.1.2.3:80"), addr("1.1.1.1:5"), &plain),
            Some(1)
        );
        assert_eq!(
            select_chain(&[&tls], addr("10.1.2.3:80"), addr("1.1.1.1:5"), &plain),
            None
        );
        let src = FilterChainMatch {
            source_prefix_ranges: vec![cidr("127.0.0.0/8")],
            source_ports: vec![1000],
            ..Default::default()
        };
        assert_eq!(
            select_chain(&[&src], addr("10.0.0.1:1"), addr("127.0.0.1:1000"), &plain),
            Some(0)
        );
        assert_eq!(
            select_chain(&[&src], addr("10.0.0.1:1"), addr("127.0.0.1:1001"), &plain),
            None
        );
        assert_eq!(
            select_chain(&[&src], addr("10.0.0.1:1"), addr("10.0.0.2:1000"), &plain),
            None
        );
        let v6 = FilterChainMatch {
            prefix_ranges: vec![cidr("::1/128")],
            ..Default::default()
        };
        assert_eq!(
            select_chain(&[&v6], addr("[::1]:1"), addr("[::1]:2"), &plain),
            Some(0)
        );
        assert_eq!(
            select_chain(&[&v6], addr("127.0.0.1:1"), addr("[::1]:2"), &plain),
            None
        );
    }
}
