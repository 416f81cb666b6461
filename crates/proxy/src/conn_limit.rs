//! Envoy's global downstream connection limit, checked when a listener accepts a connection:
//! - the overload manager's proactive resource monitor
//!   `envoy.resource_monitors.global_downstream_max_connections`, for every listener that
//!   neither bypasses the overload manager nor ignores the global limit;
//! - otherwise the legacy runtime key `overload.global_downstream_max_connections`, compared
//!   with every open accepted socket (Envoy's `AcceptedSocketImpl` count), for every listener
//!   that does not ignore the global limit.
//!
//! A connection over the limit is closed at once, before any filter runs, and counted in the
//! accepting listener's `downstream_global_cx_overflow` (and, for the monitor, in
//! `overload.<monitor>.failed_updates`), as Envoy does (observed on 1.40).
//!
//! One deliberate difference: a connection of an `ignore_global_conn_limit` listener never
//! touches the monitor. Envoy does not count it when accepted but gives a slot back when it
//! closes, so after such connections come and go the monitored listeners admit more than the
//! limit (observed: 4 active with a limit of 2).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redvoy_config::model;
use redvoy_runtime::Runtime;
use redvoy_stats::{Counter, Store};

/// Envoy's legacy runtime key for the global limit (used where the overload manager's monitor
/// does not apply).
pub const GLOBAL_MAX_CX_RUNTIME_KEY: &str = "overload.global_downstream_max_connections";

/// How a listener stands towards the global limit (`bypass_overload_manager`,
/// `ignore_global_conn_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitExemptions {
    pub bypass_overload_manager: bool,
    pub ignore_global_conn_limit: bool,
}

impl From<&model::Listener> for LimitExemptions {
    fn from(l: &model::Listener) -> Self {
        Self {
            bypass_overload_manager: l.bypass_overload_manager,
            ignore_global_conn_limit: l.ignore_global_conn_limit,
        }
    }
}

/// The overload manager's connection monitor: a slot per admitted connection.
struct Monitor {
    max: u64,
    active: AtomicU64,
    failed_updates: Counter,
}

/// The process-wide limit, shared by every worker's accept loops.
pub struct GlobalConnectionLimit {
    monitor: Option<Monitor>,
    /// Open accepted sockets on every listener, for the runtime key.
    accepted: AtomicU64,
    runtime: Runtime,
}

impl GlobalConnectionLimit {
    pub fn new(
        config: Option<&model::GlobalConnectionLimit>,
        runtime: &Runtime,
        store: &Store,
    ) -> Self {
        let monitor = config.map(|c| {
            let prefix = format!("overload.{}.", c.monitor_name);
            // A proactive monitor has no pressure to report: Envoy keeps the gauge at 0.
            store.gauge(&format!("{prefix}pressure")).set(0);
            Monitor {
                max: c.max_active_downstream_connections,
                active: AtomicU64::new(0),
                failed_updates: store.counter(&format!("{prefix}failed_updates")),
            }
        });
        Self {
            monitor,
            accepted: AtomicU64::new(0),
            runtime: runtime.clone(),
        }
    }

    /// Admits one accepted connection of a listener with `exemptions`, or `None` when the
    /// connection must be closed. The slot is held until the [`Admission`] is dropped.
    pub fn admit(self: &Arc<Self>, exemptions: LimitExemptions) -> Option<Admission> {
        let mut monitored = false;
        if !exemptions.ignore_global_conn_limit {
            match &self.monitor {
                Some(m) if !exemptions.bypass_overload_manager => {
                    // Compare-and-swap, so concurrent accepts on all workers never pass `max`.
                    let admitted = m
                        .active
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < m.max).then_some(n + 1)
                        })
                        .is_ok();
                    if !admitted {
                        m.failed_updates.inc();
                        return None;
                    }
                    monitored = true;
                }
                _ => {
                    // Check, then count: two accepts racing may both pass at the limit, as in
                    // Envoy's own check of this key.
                    let limit = self
                        .runtime
                        .snapshot()
                        .get_integer(GLOBAL_MAX_CX_RUNTIME_KEY, u64::MAX);
                    if self.accepted.load(Ordering::Acquire) >= limit {
                        return None;
                    }
                }
            }
        }
        self.accepted.fetch_add(1, Ordering::AcqRel);
        Some(Admission {
            limit: Arc::clone(self),
            monitored,
        })
    }

    /// Connections currently holding a monitor slot.
    #[cfg(test)]
    fn monitored_connections(&self) -> u64 {
        self.monitor
            .as_ref()
            .map_or(0, |m| m.active.load(Ordering::Acquire))
    }
}

/// A listener's view of the limit: the shared limit and the listener's exemptions.
#[derive(Clone)]
pub struct ListenerLimit {
    pub limit: Arc<GlobalConnectionLimit>,
    pub exemptions: LimitExemptions,
}

impl ListenerLimit {
    /// See [`GlobalConnectionLimit::admit`].
    pub fn admit(&self) -> Option<Admission> {
        self.limit.admit(self.exemptions)
    }
}

/// One admitted connection; gives its place back when dropped.
pub struct Admission {
    limit: Arc<GlobalConnectionLimit>,
    monitored: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limit.accepted.fetch_sub(1, Ordering::AcqRel);
        if self.monitored {
            if let Some(m) = &self.limit.monitor {
                m.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: Option<u64>, runtime: &[(&str, &str)]) -> Arc<GlobalConnectionLimit> {
        let store = Store::new();
        let layers = vec![redvoy_runtime::Layer::Static {
            name: "static".into(),
            values: runtime
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }];
        let runtime = Runtime::new(layers, &store);
        let config = max.map(|m| model::GlobalConnectionLimit {
            monitor_name: "envoy.resource_monitors.global_downstream_max_connections".into(),
            max_active_downstream_connections: m,
        });
        Arc::new(GlobalConnectionLimit::new(
            config.as_ref(),
            &runtime,
            &store,
        ))
    }

    const PLAIN: LimitExemptions = LimitExemptions {
        bypass_overload_manager: false,
        ignore_global_conn_limit: false,
    };
    const BYPASS: LimitExemptions = LimitExemptions {
        bypass_overload_manager: true,
        ignore_global_conn_limit: false,
    };
    const IGNORE: LimitExemptions = LimitExemptions {
        bypass_overload_manager: false,
        ignore_global_conn_limit: true,
    };

    #[test]
    fn monitor_admits_up_to_max_and_frees_on_drop() {
        let l = limit(Some(2), &[]);
        let a = l.admit(PLAIN).unwrap();
        let _b = l.admit(PLAIN).unwrap();
        assert!(l.admit(PLAIN).is_none());
        drop(a);
        assert!(l.admit(PLAIN).is_some());
    }

    #[test]
    fn exempt_listeners_neither_count_nor_free() {
        let l = limit(Some(1), &[]);
        let _a = l.admit(PLAIN).unwrap();
        // Exempt connections are admitted while the monitor is full, and closing them does
        // not free a monitored slot (Envoy frees one for `ignore_global_conn_limit`).
        let bypass = l.admit(BYPASS).unwrap();
        let ignore = l.admit(IGNORE).unwrap();
        drop(bypass);
        drop(ignore);
        assert!(l.admit(PLAIN).is_none());
        assert_eq!(l.monitored_connections(), 1);
    }

    #[test]
    fn runtime_key_limits_all_accepted_sockets_without_a_monitor() {
        let l = limit(None, &[(GLOBAL_MAX_CX_RUNTIME_KEY, "2")]);
        let _a = l.admit(IGNORE).unwrap();
        let _b = l.admit(BYPASS).unwrap();
        assert!(l.admit(PLAIN).is_none(), "every accepted socket counts");
        assert!(
            l.admit(IGNORE).is_some(),
            "ignore_global_conn_limit is exempt"
        );
        let unlimited = limit(None, &[]);
        let held: Vec<_> = (0..100).map(|_| unlimited.admit(PLAIN).unwrap()).collect();
        assert_eq!(held.len(), 100);
    }
}
