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
        g("downstream_pre_cx_active");
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
        }
    }

    /// A connection was accepted; returns when it opened, for `connection_closed`.
    pub(crate) fn connection_opened(&self) -> Instant {
        self.cx_total.inc();
        self.cx_active.inc();
        self.main_thread_cx_total.inc();
        self.main_thread_cx_active.inc();
        self.accepted_per_event.record(1);
        Instant::now()
    }

    pub(crate) fn connection_closed(&self, opened: Instant) {
        self.cx_active.dec();
        self.main_thread_cx_active.dec();
        self.cx_destroy.inc();
        self.cx_length_ms
            .record(opened.elapsed().as_millis() as u64);
    }

    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.rq_class.get(class) {
            c.inc();
        }
        self.rq_completed.inc();
    }
}
