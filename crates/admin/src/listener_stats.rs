//! The admin listener's own stats (`listener.admin.*`), registered and counted as Envoy does for
//! its admin listener, so the set of `listener.*` stats is the same.

use std::time::Instant;

use redvoy_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};

const PREFIX: &str = "listener.admin.";

pub(crate) struct AdminListenerStats {
    cx_total: Counter,
    cx_active: Gauge,
    cx_destroy: Counter,
    cx_length_ms: Histogram,
    accepted_per_event: Histogram,
    main_thread_cx_total: Counter,
    main_thread_cx_active: Gauge,
    /// `http.admin.downstream_rq_{1,2,3,4,5}xx`, indexed by the status class.
    rq_class: [Counter; 5],
    rq_completed: Counter,
    /// The connection manager's own `http.admin.*` counterparts.
    http_cx_active: Gauge,
    http_cx_total: Counter,
    http_cx_destroy: Counter,
    http_rq_total: Counter,
    http_rq_completed: Counter,
    http_rq_class: [Counter; 5],
    http_cx_http1_active: Gauge,
    http_cx_http1_total: Counter,
    http_rq_http1_total: Counter,
    http_rq_active: Gauge,
    http_rx_bytes_total: Counter,
    http_rx_bytes_buffered: Gauge,
    http_tx_bytes_total: Counter,
    http_cx_destroy_local: Counter,
    http_cx_destroy_remote: Counter,
}

impl AdminListenerStats {
    pub(crate) fn new(store: &Store) -> Self {
        let c = |n: &str| store.counter(&format!("{PREFIX}{n}"));
        let g = |n: &str| store.gauge(&format!("{PREFIX}{n}"));
        // Registered at zero: admin has no listener filters, limits or overload actions.
        for name in [
            "downstream_cx_overflow",
            "downstream_cx_overload_reject",
            "downstream_cx_transport_socket_connect_timeout",
            "downstream_global_cx_overflow",
            "downstream_listener_filter_error",
            "downstream_listener_filter_remote_close",
            "downstream_pre_cx_timeout",
            "no_filter_chain_match",
        ] {
            c(name);
        }
        g("downstream_pre_cx_active").set(0);
        Self {
            cx_total: c("downstream_cx_total"),
            cx_active: g("downstream_cx_active"),
            cx_destroy: c("downstream_cx_destroy"),
            cx_length_ms: store.histogram(
                &format!("{PREFIX}downstream_cx_length_ms"),
                HistogramUnit::Milliseconds,
            ),
            accepted_per_event: store.histogram(
                &format!("{PREFIX}connections_accepted_per_socket_event"),
                HistogramUnit::Unspecified,
            ),
            main_thread_cx_total: c("main_thread.downstream_cx_total"),
            main_thread_cx_active: g("main_thread.downstream_cx_active"),
            rq_class: [1, 2, 3, 4, 5].map(|n| c(&format!("http.admin.downstream_rq_{n}xx"))),
            rq_completed: c("http.admin.downstream_rq_completed"),
            http_cx_active: store.gauge("http.admin.downstream_cx_active"),
            http_cx_total: store.counter("http.admin.downstream_cx_total"),
            http_cx_destroy: store.counter("http.admin.downstream_cx_destroy"),
            http_rq_total: store.counter("http.admin.downstream_rq_total"),
            http_rq_completed: store.counter("http.admin.downstream_rq_completed"),
            http_rq_class: [1, 2, 3, 4, 5]
                .map(|n| store.counter(&format!("http.admin.downstream_rq_{n}xx"))),
            http_cx_http1_active: store.gauge("http.admin.downstream_cx_http1_active"),
            http_cx_http1_total: store.counter("http.admin.downstream_cx_http1_total"),
            http_rq_http1_total: store.counter("http.admin.downstream_rq_http1_total"),
            http_rq_active: store.gauge("http.admin.downstream_rq_active"),
            http_rx_bytes_total: store.counter("http.admin.downstream_cx_rx_bytes_total"),
            http_rx_bytes_buffered: store.gauge("http.admin.downstream_cx_rx_bytes_buffered"),
            http_tx_bytes_total: store.counter("http.admin.downstream_cx_tx_bytes_total"),
            http_cx_destroy_local: store.counter("http.admin.downstream_cx_destroy_local"),
            http_cx_destroy_remote: store.counter("http.admin.downstream_cx_destroy_remote"),
        }
    }

    /// A connection was accepted; returns when it opened, for `connection_closed`.
    pub(crate) fn connection_opened(&self) -> Instant {
        self.cx_total.inc();
        self.cx_active.inc();
        self.main_thread_cx_total.inc();
        self.main_thread_cx_active.inc();
        self.http_cx_active.inc();
        self.http_cx_total.inc();
        self.http_cx_http1_active.inc();
        self.http_cx_http1_total.inc();
        self.accepted_per_event.record(1);
        Instant::now()
    }

    pub(crate) fn connection_closed(&self, opened: Instant) {
        self.cx_active.dec();
        self.main_thread_cx_active.dec();
        self.cx_destroy.inc();
        self.http_cx_active.dec();
        self.http_cx_http1_active.dec();
        self.http_cx_destroy.inc();
        self.cx_length_ms
            .record(opened.elapsed().as_millis() as u64);
    }

    /// Response bytes written.
    pub(crate) fn sent(&self, bytes: usize) {
        self.http_tx_bytes_total.add(bytes as u64);
    }

    /// The admin server closed the connection (`Connection: close`, idle, bad request).
    pub(crate) fn closed_locally(&self) {
        self.http_cx_destroy_local.inc();
    }

    /// The client closed the connection.
    pub(crate) fn closed_remotely(&self) {
        self.http_cx_destroy_remote.inc();
    }

    /// A request arrived (`wire_len` bytes): it is active until `response`.
    pub(crate) fn request(&self, wire_len: usize) {
        self.http_rx_bytes_total.add(wire_len as u64);
        // Envoy's buffered-bytes gauge holds the size of the last read.
        self.http_rx_bytes_buffered.set(wire_len as u64);
        self.http_rq_total.inc();
        self.http_rq_http1_total.inc();
        self.http_rq_active.inc();
    }

    pub(crate) fn response(&self, status: u16) {
        self.http_rq_active.dec();
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.rq_class.get(class) {
            c.inc();
        }
        if let Some(c) = self.http_rq_class.get(class) {
            c.inc();
        }
        self.rq_completed.inc();
        self.http_rq_completed.inc();
    }
}
