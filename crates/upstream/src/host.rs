//! Upstream hosts and their per-host counters.

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use redvoy_config::model::HealthStatus;

/// Envoy's per-host counters and gauges (`envoy/upstream/host_description.h`), shown by the
/// admin `/clusters` page. Plain atomics: they are not in the stats store, exactly like Envoy.
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_total: AtomicU64,
    pub cx_active: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_active: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_success: AtomicU64,
}

/// One upstream endpoint. Immutable apart from its counters; a DNS change that keeps an address
/// keeps the same `Arc<Host>` so its counters and pooled connections survive.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    /// `endpoint.hostname`, or the DNS name the host was resolved from (Envoy's `hostname()`).
    pub hostname: String,
    /// `load_balancing_weight` (≥ 1).
    pub weight: u32,
    pub stats: HostStats,
    /// Where EDS placed the host (defaults for other cluster types).
    pub eds: EdsInfo,
    /// The endpoint's `health_status`: changed in place by an EDS update that keeps the host,
    /// so its active health checking state and counters carry on (as Envoy updates its
    /// `FAILED_EDS_HEALTH`/`DEGRADED_EDS_HEALTH` flags).
    eds_health: AtomicU8,
    /// What redvoy found out itself: active health checking, outlier detection.
    pub health: HostHealth,
    /// Consecutive failures, for outlier detection.
    pub outlier: crate::outlier::OutlierCounters,
    /// redis_proxy connections open to this host, counted against an enforced
    /// `max_connections` (see `connection.rs`).
    pub(crate) redis_connections: AtomicU32,
    /// Envoy's `address()->asString()`, precomputed: the ring / Maglev hash key.
    address_string: String,
    /// The `transport_socket_matches` entry the endpoint selected (`None`: the cluster's own
    /// transport socket).
    pub transport_match: Option<usize>,
}

/// A host's EDS locality and priority (shown by `/clusters`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdsInfo {
    pub locality: redvoy_config::model::Locality,
    pub priority: u32,
}

/// Envoy's run-time host health flags (`Host::HealthFlag`) that redvoy sets: the ones that
/// come from EDS are its `health_status` ([`Host::eds_health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HealthFlag {
    /// Failed active health checking (`unhealthy_threshold` failures in a row).
    FailedActiveHc = 1,
    /// The last active check timed out.
    ActiveHcTimeout = 1 << 1,
    /// Ejected by outlier detection.
    FailedOutlierCheck = 1 << 2,
    /// Added while active health checking runs, not yet checked.
    PendingActiveHc = 1 << 3,
    /// Removed by EDS but kept while it passes active health checks.
    PendingDynamicRemoval = 1 << 4,
}

/// A host's run-time health flags, shared by every worker (one atomic word).
#[derive(Debug, Default)]
pub struct HostHealth {
    flags: AtomicU32,
    /// The active health checker has completed its first check of this host (whatever the
    /// result): a cluster initialises once every host has one (Envoy's
    /// `addHostCheckCompleteCb`).
    first_check_done: std::sync::atomic::AtomicBool,
}

impl HostHealth {
    pub fn has(&self, flag: HealthFlag) -> bool {
        self.flags.load(Ordering::Acquire) & flag as u32 != 0
    }

    /// Sets `flag`; true when it was not set before.
    pub fn set(&self, flag: HealthFlag) -> bool {
        self.flags.fetch_or(flag as u32, Ordering::AcqRel) & flag as u32 == 0
    }

    /// Clears `flag`; true when it was set before.
    pub fn clear(&self, flag: HealthFlag) -> bool {
        self.flags.fetch_and(!(flag as u32), Ordering::AcqRel) & flag as u32 != 0
    }

    /// Whether the host is known not to answer: failed by active checks that timed out (it
    /// hangs), or ejected by outlier detection. One relaxed load: read for every request.
    #[inline]
    pub fn known_bad(&self) -> bool {
        let timed_out = HealthFlag::FailedActiveHc as u32 | HealthFlag::ActiveHcTimeout as u32;
        let flags = self.flags.load(Ordering::Relaxed);
        flags & timed_out == timed_out || flags & HealthFlag::FailedOutlierCheck as u32 != 0
    }

    /// Takes over another host object's flags and first-check mark (the same endpoint,
    /// rebuilt).
    pub(crate) fn copy_from(&self, other: &HostHealth) {
        self.flags
            .store(other.flags.load(Ordering::Acquire), Ordering::Release);
        self.first_check_done
            .store(other.first_check_done(), Ordering::Release);
    }

    pub(crate) fn first_check_done(&self) -> bool {
        self.first_check_done.load(Ordering::Acquire)
    }

    pub(crate) fn mark_first_check_done(&self) {
        self.first_check_done.store(true, Ordering::Release);
    }
}

/// Envoy's coarse host health (`Host::coarseHealth`): what load balancing uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoarseHealth {
    Healthy,
    Degraded,
    Unhealthy,
}

// === impl Host ===

impl Host {
    /// Envoy's `coarseHealth`: unhealthy when EDS says so, active checking failed or outlier
    /// detection ejected the host; degraded when EDS says so; healthy otherwise.
    pub fn coarse_health(&self) -> CoarseHealth {
        if self.health.has(HealthFlag::FailedActiveHc)
            || self.health.has(HealthFlag::FailedOutlierCheck)
        {
            return CoarseHealth::Unhealthy;
        }
        if self.eds_failed() {
            CoarseHealth::Unhealthy
        } else if self.eds_health() == HealthStatus::Degraded {
            CoarseHealth::Degraded
        } else {
            CoarseHealth::Healthy
        }
    }

    /// The same host with EDS details.
    pub fn with_eds(mut self, eds: EdsInfo) -> Self {
        self.eds = eds;
        self
    }

    /// The same host with an EDS (or configured) `health_status`.
    pub fn with_eds_health(self, status: HealthStatus) -> Self {
        self.eds_health.store(status as u8, Ordering::Relaxed);
        self
    }

    /// The endpoint's last `health_status`.
    pub fn eds_health(&self) -> HealthStatus {
        match self.eds_health.load(Ordering::Acquire) {
            x if x == HealthStatus::Healthy as u8 => HealthStatus::Healthy,
            x if x == HealthStatus::Unhealthy as u8 => HealthStatus::Unhealthy,
            x if x == HealthStatus::Draining as u8 => HealthStatus::Draining,
            x if x == HealthStatus::Timeout as u8 => HealthStatus::Timeout,
            x if x == HealthStatus::Degraded as u8 => HealthStatus::Degraded,
            _ => HealthStatus::Unknown,
        }
    }

    /// Whether EDS (or the config) says the host must get no traffic (Envoy's
    /// `FAILED_EDS_HEALTH`: UNHEALTHY, DRAINING, TIMEOUT).
    pub fn eds_failed(&self) -> bool {
        let eds = self.eds_health();
        !(eds.is_healthy() || eds == HealthStatus::Degraded)
    }

    /// Records a new `health_status`; true when it changed.
    pub(crate) fn set_eds_health(&self, status: HealthStatus) -> bool {
        self.eds_health.swap(status as u8, Ordering::AcqRel) != status as u8
    }

    pub fn new(address: SocketAddr, hostname: impl Into<String>, weight: u32) -> Self {
        Self {
            address,
            hostname: hostname.into(),
            weight,
            stats: HostStats::default(),
            eds: EdsInfo::default(),
            eds_health: AtomicU8::new(HealthStatus::Unknown as u8),
            redis_connections: AtomicU32::new(0),
            health: HostHealth::default(),
            outlier: Default::default(),
            address_string: envoy_address_string(&address),
            transport_match: None,
        }
    }

    /// The host connects with `transport_socket_matches[m]` (see [`Host::transport_match`]).
    pub fn with_transport_match(mut self, m: Option<usize>) -> Self {
        self.transport_match = m;
        self
    }

    /// The address as Envoy prints it: `127.0.0.1:6379`, `[::1]:6379`, `[fe80::1%2]:6379`.
    pub fn address_string(&self) -> &str {
        &self.address_string
    }

    /// The string the consistent-hashing load balancers hash for this host.
    pub(crate) fn hash_key(&self, use_hostname: bool) -> &str {
        if use_hostname {
            &self.hostname
        } else {
            &self.address_string
        }
    }
}

/// Formats an address exactly as Envoy's `Address::Instance::asString()`; the result is hashed
/// to place hosts, so it must match byte for byte (IPv6 goes through glibc `inet_ntop`, which
/// differs from Rust's `Display` for IPv4-compatible addresses such as `::1.2.3.4`).
pub fn envoy_address_string(address: &SocketAddr) -> String {
    match address {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => {
            let mut s = String::with_capacity(48);
            s.push('[');
            inet_ntop6(a.ip(), &mut s);
            if a.scope_id() != 0 {
                let _ = write!(s, "%{}", a.scope_id());
            }
            let _ = write!(s, "]:{}", a.port());
            s
        }
    }
}

/// glibc's `inet_ntop(AF_INET6, ...)`: the longest run (first one on ties) of two or more zero
/// words becomes `::`; an embedded IPv4 tail is printed for IPv4-compatible (`::a.b.c.d`) and
/// IPv4-mapped (`::ffff:a.b.c.d`) addresses.
fn inet_ntop6(ip: &Ipv6Addr, out: &mut String) {
    let words = ip.segments();
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let mut cur: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(match cur {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else {
            cur = None;
        }
        if let Some((base, len)) = cur {
            if best_base.is_none() || len > best_len {
                best_base = Some(base);
                best_len = len;
            }
        }
    }
    if best_len < 2 {
        best_base = None;
    }
    let in_run = |i: usize| best_base.is_some_and(|b| i >= b && i < b + best_len);
    for (i, &w) in words.iter().enumerate() {
        if in_run(i) {
            if Some(i) == best_base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && best_base == Some(0)
            && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))
        {
            let o = ip.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return;
        }
        let _ = write!(out, "{w:x}");
    }
    if best_base.is_some_and(|b| b + best_len == 8) {
        out.push(':');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV6;

    fn v6(s: &str) -> String {
        let ip: Ipv6Addr = s.parse().unwrap();
        envoy_address_string(&SocketAddr::V6(SocketAddrV6::new(ip, 6379, 0, 0)))
    }

    #[test]
    fn ipv4_format() {
        let a: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(envoy_address_string(&a), "127.0.0.1:6379");
    }

    #[test]
    fn ipv6_format_like_glibc() {
        assert_eq!(v6("::1"), "[::1]:6379");
        assert_eq!(v6("::"), "[::]:6379");
        assert_eq!(v6("1::"), "[1::]:6379");
        assert_eq!(v6("2001:db8::1"), "[2001:db8::1]:6379");
        assert_eq!(v6("2001:db8:0:1:1:1:1:1"), "[2001:db8:0:1:1:1:1:1]:6379");
        assert_eq!(v6("2001:0:0:1:0:0:0:1"), "[2001:0:0:1::1]:6379");
        assert_eq!(v6("1:0:0:2:0:0:3:4"), "[1::2:0:0:3:4]:6379");
        assert_eq!(v6("::ffff:10.0.0.1"), "[::ffff:10.0.0.1]:6379");
        assert_eq!(v6("::10.0.0.1"), "[::10.0.0.1]:6379");
        assert_eq!(v6("FE80::ABCD"), "[fe80::abcd]:6379");
        assert_eq!(v6("::ffff:0:1.2.3.4"), "[::ffff:0:102:304]:6379");
        assert_eq!(v6("0:0:0:0:0:1:0:0"), "[::1:0:0]:6379");
        let scoped = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 0, 3));
        assert_eq!(envoy_address_string(&scoped), "[fe80::1%3]:80");
    }
}
