//! What the admin port shows and changes, taken from the running server: the rendered config
//! dump, clusters and hosts, listeners, runtime, allocator figures, log levels, draining.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use redvoy_admin::{
    Address, AdminBackend, AdminError, ClusterStatus, CommandLineOptions, ConfigDumpQuery,
    DrainRequest, HostStat, HostStatus, ListenerStatus, LogChange, LogLevel, MemoryStats,
    RuntimeEntry, RuntimeView, ServerInfo, StatKind, Thresholds,
};
use redvoy_config::model::{self, TrafficDirection};
use redvoy_config::{
    render_config_dump_dynamic, DumpHealth, DumpHost, DumpOptions, DumpedResource,
    DynamicClusterDump, DynamicDump, DynamicListenerDump, FailedDump,
};
use redvoy_runtime::Runtime;
use redvoy_upstream::{ClusterManager, CoarseHealth, HealthFlag};
use tracing_subscriber::EnvFilter;

use crate::listener_manager::ListenerManager;
use crate::logging::{tracing_level, LogHandle};

/// The admin port's view of the running server (every field shared with the server).
pub struct Backend {
    pub bootstrap: model::Bootstrap,
    pub loaded_at: SystemTime,
    pub started: Instant,
    pub clusters: Arc<ClusterManager>,
    pub listeners: Arc<ListenerManager>,
    /// The xDS client, when the bootstrap has `dynamic_resources`.
    pub dynamic: Option<crate::xds::Dynamic>,
    pub runtime: Runtime,
    pub options: CommandLineOptions,
    pub drain_time: Duration,
    pub log_handle: Option<LogHandle>,
    /// Envoy's logger names with the level each was last set to; redvoy has one filter, set to
    /// the most verbose of these.
    pub log_levels: Mutex<BTreeMap<String, LogLevel>>,
    /// `listener_manager.listener_stopped`.
    pub listener_stopped: redvoy_stats::Counter,
}

/// A cluster's circuit-breaker thresholds as Envoy's resource managers report them in
/// `/clusters`, `[DEFAULT, HIGH]`.
///
/// With a retry budget, the retry limit is the budget's share of the requests counted against
/// the priority's breaker (only tcp_proxy and HTTP router connections, DEFAULT), never below
/// `min_retry_concurrency`. Reading that limit sets the priority's `remaining_retries` to 0,
/// as Envoy's `RetryBudgetImpl::max()` does: observed on Envoy 1.40, the gauge shows
/// `max_retries` until `/clusters` is first read, then 0.
fn circuit_breakers(cluster: &redvoy_upstream::Cluster) -> [Thresholds; 2] {
    let config = &cluster.config.circuit_breakers;
    let [default_remaining, high_remaining] = &cluster.stats.circuit_breakers_remaining;
    [
        (&config.default, default_remaining, cluster.breaker_in_use()),
        (&config.high, high_remaining, 0),
    ]
    .map(|(t, remaining, in_use)| {
        let max_retries = match &t.retry_budget {
            None => u64::from(t.max_retries),
            Some(budget) => {
                if let Some(r) = remaining {
                    r.retries.set(0);
                }
                // Envoy's arithmetic: a double truncated to an integer.
                let share = (budget.budget_percent / 100.0 * in_use as f64) as u64;
                share.max(u64::from(budget.min_retry_concurrency))
            }
        };
        Thresholds {
            max_connections: t.max_connections.into(),
            max_pending_requests: t.max_pending_requests.into(),
            max_requests: t.max_requests.into(),
            max_retries,
        }
    })
}

fn address(addr: &SocketAddr) -> Address {
    Address::Socket {
        ip: addr.ip().to_string(),
        port: addr.port(),
    }
}

impl Backend {
    /// What xDS delivered, for `/config_dump`.
    fn dynamic_dump(&self) -> DynamicDump {
        let mut dump = DynamicDump::default();
        {
            let state = self.listeners.lock();
            dump.lds_version.clone_from(&state.lds_version);
            let mut names: Vec<&String> = state
                .active
                .iter()
                .filter(|(_, l)| !l.is_static)
                .map(|(n, _)| n)
                .chain(state.skipped.keys())
                .chain(state.failed.keys())
                .collect();
            names.sort();
            names.dedup();
            for name in names {
                let active = state.active.get(name).filter(|l| !l.is_static);
                dump.listeners.push(DynamicListenerDump {
                    name: name.clone(),
                    active: active.map(|l| DumpedResource {
                        version_info: l.version.clone(),
                        value: l.raw.clone(),
                        last_updated: l.last_updated,
                    }),
                    error: state.failed.get(name).map(|f| FailedDump {
                        value: f.raw.clone(),
                        version_info: f.version.clone(),
                        last_update_attempt: f.last_update_attempt,
                        details: f.details.clone(),
                    }),
                    skipped: state.skipped.get(name).map(|s| FailedDump {
                        value: s.raw.clone(),
                        version_info: s.version.clone(),
                        last_update_attempt: s.last_updated,
                        details: s.reason.clone(),
                    }),
                    ..Default::default()
                });
            }
        }
        if let Some(d) = &self.dynamic {
            let state = d.state();
            dump.cds_version.clone_from(&state.cds_version);
            let warming: std::collections::HashSet<String> = self
                .clusters
                .warming_clusters()
                .iter()
                .map(|c| c.name.clone())
                .collect();
            for (name, accepted) in &state.clusters {
                dump.clusters.push(DynamicClusterDump {
                    name: name.clone(),
                    resource: DumpedResource {
                        version_info: accepted.version.clone(),
                        value: accepted.raw.clone(),
                        last_updated: accepted.last_updated,
                    },
                    warming: warming.contains(name),
                });
            }
            for accepted in state.endpoints.values() {
                dump.endpoints.push(DumpedResource {
                    version_info: accepted.version.clone(),
                    value: accepted.raw.clone(),
                    last_updated: accepted.last_updated,
                });
            }
        }
        dump.secrets = self
            .clusters
            .secrets()
            .dynamic_secrets()
            .into_iter()
            .map(|(name, received)| {
                let resource = received.map(|r| DumpedResource {
                    version_info: r.version,
                    value: r.raw,
                    last_updated: r.at,
                });
                (name, resource)
            })
            .collect();
        dump
    }

    fn apply_log_levels(&self, levels: &BTreeMap<String, LogLevel>) {
        let most_verbose = levels.values().min().copied().unwrap_or(LogLevel::Info);
        if let Some(handle) = &self.log_handle {
            let _ = handle.reload(EnvFilter::new(tracing_level(most_verbose)));
        }
    }
}

impl AdminBackend for Backend {
    fn config_dump(&self, q: &ConfigDumpQuery) -> Result<String, AdminError> {
        let opts = DumpOptions {
            resource: q.resource.clone(),
            mask: q.mask.clone(),
            name_regex: q.name_regex.clone(),
            include_eds: q.include_eds,
        };
        // With `include_eds`, DNS clusters show the hosts they resolved to.
        let hosts = |name: &str| -> Option<Vec<DumpHost>> {
            // A STATIC cluster's dump lists its config's endpoints; these give their health.
            let cluster = self.clusters.get(name)?;
            Some(
                cluster
                    .all_hosts()
                    .iter()
                    .map(|h| DumpHost {
                        address: h.address,
                        hostname: h.hostname.clone(),
                        weight: h.weight,
                        health: match h.coarse_health() {
                            CoarseHealth::Healthy => DumpHealth::Healthy,
                            CoarseHealth::Degraded => DumpHealth::Degraded,
                            CoarseHealth::Unhealthy => DumpHealth::Unhealthy,
                        },
                    })
                    .collect(),
            )
        };
        let dynamic = self.dynamic_dump();
        render_config_dump_dynamic(&self.bootstrap, &dynamic, self.loaded_at, &opts, &hosts)
            .map_err(|e| AdminError::new(e.status, e.message))
    }

    fn clusters(&self) -> Vec<ClusterStatus> {
        self.clusters
            .clusters()
            .iter()
            .map(|cluster| {
                let hosts = cluster
                    .all_hosts()
                    .iter()
                    .map(|h| {
                        let s = &h.stats;
                        let v = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                        let counter = |name: &str, value| HostStat {
                            name: name.to_owned(),
                            kind: StatKind::Counter,
                            value,
                        };
                        let gauge = |name: &str, value| HostStat {
                            name: name.to_owned(),
                            kind: StatKind::Gauge,
                            value,
                        };
                        let mut status = HostStatus::new(address(&h.address));
                        status.hostname = h.hostname.clone();
                        status.weight = h.weight;
                        status.priority = h.eds.priority;
                        status.locality = redvoy_admin::Locality {
                            region: h.eds.locality.region.clone(),
                            zone: h.eds.locality.zone.clone(),
                            sub_zone: h.eds.locality.sub_zone.clone(),
                        };
                        // Envoy's EDS health flags (no active health checking).
                        match h.eds_health() {
                            model::HealthStatus::Unhealthy | model::HealthStatus::Timeout => {
                                status.health.failed_eds_health = true;
                            }
                            model::HealthStatus::Draining => {
                                status.health.eds_status_draining = true;
                            }
                            model::HealthStatus::Degraded => {
                                status.health.degraded_eds_health = true;
                            }
                            model::HealthStatus::Unknown | model::HealthStatus::Healthy => {}
                        }
                        // What redvoy found out itself (active health checking).
                        status.health.failed_active_hc = h.health.has(HealthFlag::FailedActiveHc);
                        status.health.active_hc_timeout = h.health.has(HealthFlag::ActiveHcTimeout);
                        status.health.pending_active_hc = h.health.has(HealthFlag::PendingActiveHc);
                        status.health.pending_dynamic_removal =
                            h.health.has(HealthFlag::PendingDynamicRemoval);
                        status.health.failed_outlier_check =
                            h.health.has(HealthFlag::FailedOutlierCheck);
                        status.stats = vec![
                            counter("cx_connect_fail", v(&s.cx_connect_fail)),
                            counter("cx_total", v(&s.cx_total)),
                            counter("rq_error", v(&s.rq_error)),
                            counter("rq_success", v(&s.rq_success)),
                            counter("rq_timeout", v(&s.rq_timeout)),
                            counter("rq_total", v(&s.rq_total)),
                            gauge("cx_active", v(&s.cx_active)),
                            gauge("rq_active", v(&s.rq_active)),
                            gauge("rq_pending_active", 0),
                        ];
                        status
                    })
                    .collect();
                ClusterStatus {
                    name: cluster.name.clone(),
                    observability_name: cluster.name.clone(),
                    added_via_api: !self.clusters.is_static(&cluster.name),
                    eds_service_name: cluster
                        .config
                        .eds
                        .as_ref()
                        .map(|e| e.service_name.clone())
                        .unwrap_or_default(),
                    circuit_breakers: circuit_breakers(cluster),
                    outlier: None,
                    hosts,
                }
            })
            .collect()
    }

    fn listeners(&self) -> Vec<ListenerStatus> {
        let mut out: Vec<ListenerStatus> = self
            .listeners
            .running()
            .iter()
            .map(|(l, runtime)| ListenerStatus {
                name: l.name.clone(),
                local_address: address(&runtime.address),
                additional_local_addresses: Vec::new(),
            })
            .collect();
        // Listeners redvoy skipped are listed with the address they ask for (they do not
        // listen there): `/config_dump` says why, under `error_state`.
        for (name, skipped) in &self.listeners.lock().skipped {
            let local_address = match redvoy_config::listener_address(&skipped.raw) {
                Some(a) => Address::Socket {
                    ip: a.address,
                    port: a.port,
                },
                None => Address::Socket {
                    ip: String::new(),
                    port: 0,
                },
            };
            out.push(ListenerStatus {
                name: name.clone(),
                local_address,
                additional_local_addresses: Vec::new(),
            });
        }
        out
    }

    fn server_info(&self) -> ServerInfo {
        let node = &self.bootstrap.node;
        // The node as Envoy's /server_info shows it: build details and the extensions this
        // server implements (redvoy lists only its own).
        let node_json = serde_json::json!({
            "id": node.id,
            "cluster": node.cluster,
            "locality": {"region": "", "zone": node.zone, "sub_zone": ""},
            "user_agent_name": "envoy",
            "user_agent_build_version": {
                "version": {"major_number": 1, "minor_number": 40, "patch": 0},
                "metadata": {
                    "build.type": if cfg!(debug_assertions) { "DEBUG" } else { "RELEASE" },
                    "revision.sha": concat!("redvoy-", env!("CARGO_PKG_VERSION")),
                    "revision.status": "Clean",
                    "ssl.version": "none"
                }
            },
            "extensions": [
                {
                    "name": "envoy.filters.network.redis_proxy",
                    "category": "envoy.filters.network",
                    "type_descriptor": "",
                    "type_urls": ["envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"],
                    "disabled": false
                },
                {
                    "name": "envoy.cluster.static",
                    "category": "envoy.clusters",
                    "type_descriptor": "",
                    "type_urls": [],
                    "disabled": false
                }
            ],
            "client_features": [],
            "listening_addresses": [],
            "dynamic_parameters": {}
        });
        // Envoy reports whole seconds (`"3s"`).
        let uptime = Duration::from_secs(self.started.elapsed().as_secs());
        ServerInfo {
            version: format!(
                "redvoy/{}/Clean/RELEASE/BoringSSL",
                env!("CARGO_PKG_VERSION")
            ),
            uptime_current_epoch: uptime,
            uptime_all_epochs: uptime,
            hot_restart_version: "disabled".to_owned(),
            command_line_options: self.options.clone(),
            node_json: node_json.to_string(),
        }
    }

    fn drain_listeners(&self, request: DrainRequest) {
        for (listener, runtime) in self.listeners.running() {
            if request.inbound_only && listener.traffic_direction != TrafficDirection::Inbound {
                continue;
            }
            let control = Arc::clone(&runtime.control);
            if request.skip_exit {
                control.start_drain_close();
                continue;
            }
            let drain_time = self.drain_time;
            let graceful = request.graceful;
            let stopped = self.listener_stopped.clone();
            tokio::spawn(async move {
                if !control.is_stopped() {
                    control.drain(graceful, drain_time).await;
                    stopped.inc();
                }
            });
        }
    }

    fn runtime(&self) -> RuntimeView {
        let json = self.runtime.to_json();
        let layers = json["layers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let entries = json["entries"]
            .as_object()
            .map(|entries| {
                entries
                    .iter()
                    .map(|(key, e)| RuntimeEntry {
                        key: key.clone(),
                        final_value: e["final_value"].as_str().unwrap_or_default().to_owned(),
                        layer_values: e["layer_values"]
                            .as_array()
                            .map(|v| {
                                v.iter()
                                    .map(|x| x.as_str().unwrap_or_default().to_owned())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        RuntimeView { layers, entries }
    }

    fn runtime_modify(&self, changes: &[(String, String)]) -> Result<(), AdminError> {
        self.runtime
            .modify(changes)
            .map_err(|e| AdminError::new(503, e.to_string()))
    }

    fn memory(&self) -> MemoryStats {
        let _ = tikv_jemalloc_ctl::epoch::advance();
        let read = |r: tikv_jemalloc_ctl::Result<usize>| r.map_or(0, |v| v as u64);
        let allocated = read(tikv_jemalloc_ctl::stats::allocated::read());
        let active = read(tikv_jemalloc_ctl::stats::active::read());
        let mapped = read(tikv_jemalloc_ctl::stats::mapped::read());
        let resident = read(tikv_jemalloc_ctl::stats::resident::read());
        MemoryStats {
            allocated,
            heap_size: mapped,
            pageheap_unmapped: 0,
            pageheap_free: active.saturating_sub(allocated),
            total_thread_cache: 0,
            total_physical_bytes: resident,
        }
    }

    fn loggers(&self) -> Vec<(String, LogLevel)> {
        let levels = self
            .log_levels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        redvoy_admin::ENVOY_LOGGERS
            .iter()
            .map(|name| {
                let level = levels.get(*name).copied().unwrap_or(LogLevel::Info);
                ((*name).to_owned(), level)
            })
            .collect()
    }

    fn set_log_levels(&self, change: LogChange) {
        let mut levels = self
            .log_levels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match change {
            LogChange::All(level) => {
                for name in redvoy_admin::ENVOY_LOGGERS {
                    levels.insert((*name).to_owned(), level);
                }
            }
            LogChange::Named(changes) => {
                for (name, level) in changes {
                    levels.insert(name, level);
                }
            }
        }
        self.apply_log_levels(&levels);
    }

    fn certificates(&self) -> Vec<redvoy_admin::ContextCertificates> {
        tls_certificates(&self.clusters, &self.listeners)
            .into_iter()
            .map(|c| {
                let details = |list: &[redvoy_tls::CertificateDetails]| {
                    list.iter()
                        .map(|d| redvoy_admin::CertificateDetails {
                            path: d.path.clone(),
                            serial_number: d.serial_number.clone(),
                            subject_alt_names: d
                                .subject_alt_names
                                .iter()
                                .filter_map(|(kind, value)| {
                                    let kind = match kind {
                                        model::SanKind::Dns => "dns",
                                        model::SanKind::Uri => "uri",
                                        model::SanKind::IpAddress => "ip_address",
                                        model::SanKind::Email => return None,
                                    };
                                    Some((kind, value.clone()))
                                })
                                .collect(),
                            valid_from: d.valid_from,
                            expiration_time: d.expiration_time,
                        })
                        .collect()
                };
                redvoy_admin::ContextCertificates {
                    ca_cert: details(&c.ca_cert),
                    cert_chain: details(&c.cert_chain),
                }
            })
            .collect()
    }
}

/// Every built TLS context's certificates: the listeners' filter chains, then the clusters
/// (active and warming) with their `transport_socket_matches` entries. A context whose secrets
/// have not arrived is not built yet and not listed, as in Envoy.
pub fn tls_certificates(
    clusters: &ClusterManager,
    listeners: &ListenerManager,
) -> Vec<redvoy_tls::ContextCertificates> {
    let mut out = Vec::new();
    for (_, runtime) in listeners.running() {
        for context in runtime.chains().tls_contexts() {
            if let Some(acceptor) = context.current() {
                out.push(acceptor.certificates().clone());
            }
        }
    }
    for cluster in clusters
        .clusters()
        .iter()
        .chain(clusters.warming_clusters().iter())
    {
        for context in cluster.tls_contexts() {
            if let Some(connector) = context.current() {
                out.push(connector.certificates().clone());
            }
        }
    }
    out
}
