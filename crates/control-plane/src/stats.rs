//! The control plane's own counters, named after istiod's metrics where one exists (so an
//! istiod dashboard panel works on it): `pilot_xds` (connected proxies), `pilot_xds_pushes`,
//! `pilot_total_xds_rejects`; and `redvoy_control_plane_*` for the rest.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::snapshot::{TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER};

/// The xDS types served, with istiod's short names (the `type` label).
pub const TYPES: [(&str, &str); 3] = [
    (TYPE_CLUSTER, "cds"),
    (TYPE_ENDPOINT, "eds"),
    (TYPE_LISTENER, "lds"),
];

#[derive(Debug, Default)]
pub struct PerType {
    pub pushes: AtomicU64,
    pub acks: AtomicU64,
    pub rejects: AtomicU64,
}

/// Counters and gauges, updated by the server and the watcher.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicI64,
    pub per_type: [PerType; 3],
    pub loads_ok: AtomicU64,
    pub loads_rejected: AtomicU64,
    /// Errors in the last rejected load (0 after a good one).
    pub input_errors: AtomicU64,
    pub envoy_filters: AtomicU64,
    pub services: AtomicU64,
}

impl Stats {
    pub fn of_type(&self, type_url: &str) -> Option<&PerType> {
        TYPES
            .iter()
            .position(|(t, _)| *t == type_url)
            .map(|i| &self.per_type[i])
    }

    /// Envoy's `/stats` text form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "control_plane.config_loads.rejected: {}",
            self.loads_rejected.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "control_plane.config_loads.success: {}",
            self.loads_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "control_plane.connected_proxies: {}",
            self.connected.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "control_plane.envoy_filters: {}",
            self.envoy_filters.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "control_plane.input_errors: {}",
            self.input_errors.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "control_plane.services: {}",
            self.services.load(Relaxed)
        );
        for (i, (_, short)) in TYPES.iter().enumerate() {
            let t = &self.per_type[i];
            let _ = writeln!(out, "control_plane.{short}.acks: {}", t.acks.load(Relaxed));
            let _ = writeln!(
                out,
                "control_plane.{short}.pushes: {}",
                t.pushes.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "control_plane.{short}.rejects: {}",
                t.rejects.load(Relaxed)
            );
        }
        out
    }

    /// Prometheus text exposition.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per = |f: fn(&PerType) -> u64| -> Vec<(String, String)> {
            TYPES
                .iter()
                .enumerate()
                .map(|(i, (_, short))| {
                    (
                        format!("{{type=\"{short}\"}}"),
                        f(&self.per_type[i]).to_string(),
                    )
                })
                .collect()
        };
        family(
            "pilot_xds",
            "gauge",
            "Proxies connected to this control plane.",
            vec![(String::new(), self.connected.load(Relaxed).to_string())],
        );
        family(
            "pilot_xds_pushes",
            "counter",
            "Responses sent, by xDS type.",
            per(|t| t.pushes.load(Relaxed)),
        );
        family(
            "pilot_total_xds_rejects",
            "counter",
            "Responses proxies NACKed, by xDS type.",
            per(|t| t.rejects.load(Relaxed)),
        );
        family(
            "redvoy_control_plane_xds_acks_total",
            "counter",
            "Responses proxies ACKed, by xDS type.",
            per(|t| t.acks.load(Relaxed)),
        );
        family(
            "redvoy_control_plane_config_loads_total",
            "counter",
            "Readings of the input directory, by result.",
            vec![
                (
                    "{result=\"success\"}".to_owned(),
                    self.loads_ok.load(Relaxed).to_string(),
                ),
                (
                    "{result=\"rejected\"}".to_owned(),
                    self.loads_rejected.load(Relaxed).to_string(),
                ),
            ],
        );
        family(
            "redvoy_control_plane_input_errors",
            "gauge",
            "Errors in the last rejected reading (0 once a reading succeeds).",
            vec![(String::new(), self.input_errors.load(Relaxed).to_string())],
        );
        family(
            "redvoy_control_plane_envoy_filters",
            "gauge",
            "EnvoyFilters in the configuration served.",
            vec![(String::new(), self.envoy_filters.load(Relaxed).to_string())],
        );
        family(
            "redvoy_control_plane_services",
            "gauge",
            "Services in the configuration served.",
            vec![(String::new(), self.services.load(Relaxed).to_string())],
        );
        out
    }
}
