//! `listener.<address>.*` stats (Envoy's `ListenerStats` and per-worker `PerHandlerListenerStats`).

use std::net::SocketAddr;

use redvoy_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};

/// Stats of one listener, shared by every worker; `workers[i]` are worker i's own.
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_global_cx_overflow: Counter,
    pub downstream_cx_length_ms: Histogram,
    pub connections_accepted_per_socket_event: Histogram,
    pub workers: Vec<WorkerListenerStats>,
}

pub struct WorkerListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
}

/// Envoy's stat name for a listener address: `127.0.0.1:6379` → `127.0.0.1_6379`, IPv6
/// `[::1]:6379` → `[__1]_6379`.
pub fn listener_stat_prefix(addr: &SocketAddr) -> String {
    let ip = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("{}_{}", ip.replace(':', "_"), addr.port())
}

impl ListenerStats {
    pub fn new(store: &Store, addr: &SocketAddr, workers: usize) -> Self {
        let p = format!("listener.{}.", listener_stat_prefix(addr));
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        let g = |n: &str| store.gauge(&format!("{p}{n}"));
        // Stats Envoy registers for every listener that redvoy never moves off zero (no
        // listener filters, overload actions or per-listener connection limits).
        for name in [
            "downstream_cx_overflow",
            "downstream_cx_overload_reject",
            "downstream_cx_transport_socket_connect_timeout",
            "downstream_listener_filter_error",
            "downstream_listener_filter_remote_close",
            "downstream_pre_cx_timeout",
            "extension_config_missing",
            "network_extension_config_missing",
            "no_filter_chain_match",
        ] {
            c(name);
        }
        // Envoy writes this gauge (to 0) when the listener starts.
        g("downstream_pre_cx_active").set(0);
        Self {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_destroy: c("downstream_cx_destroy"),
            downstream_cx_active: g("downstream_cx_active"),
            downstream_global_cx_overflow: c("downstream_global_cx_overflow"),
            downstream_cx_length_ms: store.histogram(
                &format!("{p}downstream_cx_length_ms"),
                HistogramUnit::Milliseconds,
            ),
            connections_accepted_per_socket_event: store.histogram(
                &format!("{p}connections_accepted_per_socket_event"),
                HistogramUnit::Unspecified,
            ),
            workers: (0..workers)
                .map(|i| WorkerListenerStats {
                    downstream_cx_total: c(&format!("worker_{i}.downstream_cx_total")),
                    downstream_cx_active: g(&format!("worker_{i}.downstream_cx_active")),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_prefix_of_addresses() {
        let v4: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(listener_stat_prefix(&v4), "127.0.0.1_6379");
        let v6: SocketAddr = "[::1]:6379".parse().unwrap();
        assert_eq!(listener_stat_prefix(&v6), "[__1]_6379");
    }
}
