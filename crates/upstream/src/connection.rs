//! What a cluster says about each upstream connection, whoever opens it: the DEFAULT-priority
//! circuit breaker on the connections tcp_proxy and the HTTP router open (Envoy enforces
//! `max_connections` there and nowhere in its redis_proxy, whose pooled clients it never
//! counts against the breaker: observed on Envoy 1.40) and what it reports (`cx_open`,
//! `rq_open`, `remaining_cx`, `remaining_rq`), and TCP keepalive
//! (`upstream_connection_options.tcp_keepalive`) on every upstream socket.

use std::sync::atomic::Ordering;

use redvoy_config::model::TcpKeepalive;
use socket2::SockRef;
use tokio::net::TcpStream;

use crate::{Cluster, Host};

/// One upstream connection counted against the cluster's circuit breaker; frees its place when
/// dropped.
pub struct ConnectionSlot<'a> {
    cluster: &'a Cluster,
}

impl Cluster {
    /// Takes a place under `max` open connections (`circuit_breakers` thresholds), or counts
    /// `upstream_cx_overflow` and returns `None` when the breaker is open. The caller then
    /// fails the downstream without connecting, as Envoy does (tcp_proxy closes the
    /// connection, the HTTP router answers 503).
    pub fn try_open_connection(&self, max: u32) -> Option<ConnectionSlot<'_>> {
        let max = u64::from(max);
        let taken =
            self.breaker_connections
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
        match taken {
            Ok(before) => {
                if before + 1 >= max {
                    self.stats.circuit_breakers_default_cx_open.set(1);
                }
                self.report_in_use(before + 1);
                Some(ConnectionSlot { cluster: self })
            }
            Err(_) => {
                self.stats.upstream_cx_overflow.inc();
                None
            }
        }
    }

    /// Connections (each with its one request) counted against the DEFAULT thresholds now.
    pub fn breaker_in_use(&self) -> u64 {
        self.breaker_connections.load(Ordering::Acquire)
    }

    /// Reports `in_use` slots against the DEFAULT thresholds: each is one connection carrying
    /// one request (tcp_proxy's, or the HTTP router's one request per connection), as Envoy's
    /// TCP pool counts a connection and its stream (`rq_open`, `remaining_cx`, `remaining_rq`;
    /// observed on Envoy 1.40).
    fn report_in_use(&self, in_use: u64) {
        let t = &self.config.circuit_breakers.default;
        let max_requests = u64::from(t.max_requests);
        self.stats
            .circuit_breakers_default_rq_open
            .set(u64::from(in_use >= max_requests));
        if let Some(remaining) = &self.stats.circuit_breakers_remaining[0] {
            remaining
                .cx
                .set(u64::from(t.max_connections).saturating_sub(in_use));
            remaining.rq.set(max_requests.saturating_sub(in_use));
        }
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let before = self
            .cluster
            .breaker_connections
            .fetch_sub(1, Ordering::AcqRel);
        // A place is free again. (A concurrent open may set the gauges just before this; they
        // only report, and the next open or close corrects them.)
        self.cluster.stats.circuit_breakers_default_cx_open.set(0);
        self.cluster.report_in_use(before.saturating_sub(1));
    }
}

/// Which enforced limit refused a redis_proxy request or connection (beyond Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    MaxConnections,
    MaxPendingRequests,
    MaxRequests,
}

impl Overflow {
    /// The error a client gets: which limit of which kind, so an operator knows what to raise.
    pub fn message(self) -> &'static str {
        match self {
            Overflow::MaxConnections => {
                "upstream overflow: circuit_breakers max_connections reached"
            }
            Overflow::MaxPendingRequests => {
                "upstream overflow: circuit_breakers max_pending_requests reached"
            }
            Overflow::MaxRequests => "upstream overflow: circuit_breakers max_requests reached",
        }
    }
}

/// Beyond Envoy: the circuit-breaker limits a cluster sets explicitly, enforced on
/// redis_proxy's upstream traffic (Envoy's redis_proxy reports them and enforces none). Each
/// refusal is counted in Envoy's stat names: `upstream_rq_pending_overflow` for requests,
/// `upstream_cx_overflow` for connections; `circuit_breakers.default.rq_open` shows whether
/// `max_requests` is reached.
impl Cluster {
    /// Whether any redis_proxy limit is enforced on this cluster.
    pub fn enforces_redis_limits(&self) -> bool {
        self.config.circuit_breakers.redis_enforced.any()
    }

    /// Takes a place for one request under `max_requests` and, when `waiting` (its connection
    /// is still opening), under `max_pending_requests`.
    pub fn try_start_redis_request(&self, waiting: bool) -> Result<(), Overflow> {
        let limits = &self.config.circuit_breakers.redis_enforced;
        if let Some(max) = limits.max_requests {
            let taken =
                self.redis_requests
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < u64::from(max)).then_some(n + 1)
                    });
            match taken {
                Ok(_) => self.report_redis_requests(max),
                Err(_) => {
                    self.stats.upstream_rq_pending_overflow.inc();
                    return Err(Overflow::MaxRequests);
                }
            }
        }
        if waiting {
            if let Err(overflow) = self.try_wait_for_connection() {
                self.finish_redis_request();
                return Err(overflow);
            }
        }
        Ok(())
    }

    /// Gives back a request's `max_requests` place.
    pub fn finish_redis_request(&self) {
        let limits = &self.config.circuit_breakers.redis_enforced;
        if let Some(max) = limits.max_requests {
            self.redis_requests.fetch_sub(1, Ordering::AcqRel);
            self.report_redis_requests(max);
        }
    }

    /// `rq_open` from the counter as it is now (workers race; the last writer reads the
    /// latest count).
    fn report_redis_requests(&self, max: u32) {
        let open = self.redis_requests.load(Ordering::Acquire) >= u64::from(max);
        self.stats
            .circuit_breakers_default_rq_open
            .set(u64::from(open));
    }

    fn try_wait_for_connection(&self) -> Result<(), Overflow> {
        let Some(max) = self
            .config
            .circuit_breakers
            .redis_enforced
            .max_pending_requests
        else {
            return Ok(());
        };
        self.redis_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < u64::from(max)).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| {
                self.stats.upstream_rq_pending_overflow.inc();
                Overflow::MaxPendingRequests
            })
    }

    /// `count` requests stopped waiting for their connection (it opened, or failed).
    pub fn stop_waiting_for_connection(&self, count: u64) {
        if count > 0
            && self
                .config
                .circuit_breakers
                .redis_enforced
                .max_pending_requests
                .is_some()
        {
            self.redis_pending.fetch_sub(count, Ordering::AcqRel);
        }
    }

    /// Takes a place for one more connection to `host` under `max_connections`.
    pub fn try_open_redis_connection(&self, host: &Host) -> Result<(), Overflow> {
        let Some(max) = self.config.circuit_breakers.redis_enforced.max_connections else {
            return Ok(());
        };
        host.redis_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| {
                self.stats.upstream_cx_overflow.inc();
                Overflow::MaxConnections
            })
    }

    /// Gives back a connection's place (after [`Cluster::try_open_redis_connection`]).
    pub fn close_redis_connection(&self, host: &Host) {
        if self
            .config
            .circuit_breakers
            .redis_enforced
            .max_connections
            .is_some()
        {
            host.redis_connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Applies `upstream_connection_options.tcp_keepalive` to a connected upstream socket (unset
/// values keep the system's defaults). A socket that refuses the option keeps working without
/// it, as with Envoy, which only logs a failed socket option.
pub fn set_tcp_keepalive(stream: &TcpStream, keepalive: Option<&TcpKeepalive>) {
    let Some(k) = keepalive else {
        return;
    };
    let mut params = socket2::TcpKeepalive::new();
    if let Some(time) = k.time {
        params = params.with_time(time);
    }
    if let Some(interval) = k.interval {
        params = params.with_interval(interval);
    }
    if let Some(probes) = k.probes {
        params = params.with_retries(probes);
    }
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&params) {
        tracing::warn!(error = %e, "cannot set TCP keepalive on an upstream connection");
    }
}
