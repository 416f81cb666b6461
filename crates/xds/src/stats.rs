//! The subscription and control-plane statistics Envoy keeps for xDS.
//!
//! Envoy 1.40 (observed): `update_attempt` counts the subscription start, every accepted SotW
//! response, every Delta response (accepted or not) and every failure; `update_empty` no
//! longer exists; `version` is xxHash64 of the accepted `version_info`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redvoy_stats::{Counter, Gauge, Histogram, HistogramUnit, Store, TextReadout};

/// `<prefix>.update_*` of one subscription (`listener_manager.lds`, `cluster_manager.cds`).
pub(crate) struct SubscriptionStats {
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_rejected: Counter,
    pub update_failure: Counter,
    pub init_fetch_timeout: Counter,
    version: Gauge,
    version_text: TextReadout,
    update_time: Gauge,
    update_duration: Histogram,
}

impl SubscriptionStats {
    pub(crate) fn new(store: &Store, prefix: &str) -> Self {
        let c = |n: &str| store.counter(&format!("{prefix}.{n}"));
        Self {
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_rejected: c("update_rejected"),
            update_failure: c("update_failure"),
            init_fetch_timeout: c("init_fetch_timeout"),
            version: store.gauge(&format!("{prefix}.version")),
            version_text: store.text_readout(&format!("{prefix}.version_text")),
            update_time: store.gauge(&format!("{prefix}.update_time")),
            update_duration: store.histogram(
                &format!("{prefix}.update_duration"),
                HistogramUnit::Milliseconds,
            ),
        }
    }

    /// An accepted update: the version stats, and how long the handler took.
    pub(crate) fn accepted(&self, version_info: &str, took: Duration) {
        self.update_success.inc();
        self.version.set(version_hash(version_info));
        self.version_text.set(version_info);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.update_time.set(now);
        self.update_duration.record(took.as_millis() as u64);
    }
}

/// Envoy's `HashUtil::xxHash64(version_info)` (seed 0).
pub(crate) fn version_hash(version_info: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(version_info.as_bytes(), 0)
}

/// `control_plane.*` of one gRPC stream.
pub(crate) struct ControlPlaneStats {
    pub connected_state: Gauge,
    pub pending_requests: Gauge,
    pub identifier: TextReadout,
}

impl ControlPlaneStats {
    /// `prefix` is empty for ADS (`control_plane.*`), the subscription's prefix for a
    /// per-type stream (`listener_manager.lds.control_plane.*`), as Envoy scopes them.
    pub(crate) fn new(store: &Store, prefix: &str) -> Self {
        let name = |n: &str| {
            if prefix.is_empty() {
                format!("control_plane.{n}")
            } else {
                format!("{prefix}.control_plane.{n}")
            }
        };
        Self {
            connected_state: store.gauge(&name("connected_state")),
            pending_requests: store.gauge(&name("pending_requests")),
            identifier: store.text_readout(&name("identifier")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gauge_matches_envoy() {
        // Read from Envoy 1.40's /stats after accepting these versions.
        assert_eq!(version_hash("c4"), 7591040797780345100);
        assert_eq!(version_hash("l3"), 13315180762226385533);
    }
}
