//! The server's wiring, in the order Envoy starts: [`App::build`] creates the stats store, the
//! runtime, the clusters and the listener manager and binds the bootstrap's listeners (so an
//! address in use fails start-up before any traffic); [`App::spawn`] starts the workers, the
//! xDS client, the admin port and the periodic tasks; [`Running::drain`] stops them.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use redvoy_admin::{LogLevel, ServerState};
use redvoy_config::model;
use redvoy_proxy::{run_worker, DrainStrategy, WorkerCommand};
use redvoy_runtime::Runtime;
use redvoy_stats::{StatsError, Store};
use redvoy_upstream::{ClusterManager, UpstreamError};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::admin_backend::Backend;
use crate::listener_manager::{self, ListenerError, ListenerManager};
use crate::logging::LogHandle;
use crate::server::{ListenerManagerStats, ServerStats, SERVER_STATS_REFRESH};
use crate::xds::{self, Dynamic, DynamicError};

/// Longest start-up wait for the bootstrap's clusters to initialise (Redis Cluster topology,
/// first health checks).
const CLUSTER_INIT_TIMEOUT: Duration = Duration::from_secs(15);

/// What serve and init_only modes take from the command line (see `flags.rs`).
pub struct Settings {
    /// Echoed by `/server_info`.
    pub options: redvoy_admin::CommandLineOptions,
    pub drain_time: Duration,
    pub drain_strategy: DrainStrategy,
    pub reject_unsupported: bool,
    pub reject_unknown_dynamic_fields: bool,
    pub log_level: LogLevel,
    pub log_handle: Option<LogHandle>,
    pub concurrency: usize,
}

/// Why the server did not start. The text (with its causes) is what the process prints.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid stats_config")]
    Stats(#[source] StatsError),
    #[error("building clusters")]
    Clusters(#[source] UpstreamError),
    #[error("listener '{name}'")]
    Listener {
        name: String,
        #[source]
        source: ListenerError,
    },
    #[error("starting a worker thread")]
    WorkerThread(#[source] io::Error),
    #[error("dynamic_resources")]
    Dynamic(#[source] DynamicError),
    #[error("admin: cannot bind pipe {path}")]
    AdminPipe {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("admin: cannot bind {address}")]
    AdminTcp {
        address: String,
        #[source]
        source: io::Error,
    },
}

/// A worker that did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("worker failed: {0}")]
    WorkerFailed(io::Error),
    #[error("worker panicked")]
    WorkerPanicked,
}

/// Built and bound, not serving yet.
pub struct App {
    bootstrap: model::Bootstrap,
    settings: Settings,
    loaded_at: SystemTime,
    started: Instant,
    store: Store,
    runtime: Runtime,
    server_state: Arc<ServerState>,
    server_stats: Arc<ServerStats>,
    clusters: Arc<ClusterManager>,
    listeners: Arc<ListenerManager>,
    /// Each worker's end of its command channel, held until its thread starts. Commands sent
    /// before then (the static listeners) wait in the channel.
    worker_commands: Vec<mpsc::UnboundedReceiver<WorkerCommand>>,
    /// Notified when a secret is asked for on ADS (the xDS client then subscribes it).
    sds_ads_names: Arc<tokio::sync::Notify>,
}

/// Serving until [`Running::drain`].
pub struct Running {
    listeners: Arc<ListenerManager>,
    /// Tells the workers (and the admin port) to stop.
    shutdown: watch::Sender<bool>,
    /// Becomes `true` on `POST /quitquitquit`.
    quit: watch::Receiver<bool>,
    workers: Vec<JoinHandle<io::Result<()>>>,
    /// The xDS client stops when this is dropped.
    _dynamic: Option<Dynamic>,
}

// === impl App ===

impl App {
    pub async fn build(
        bootstrap: model::Bootstrap,
        settings: Settings,
    ) -> Result<Self, StartError> {
        let loaded_at = SystemTime::now();
        let started = Instant::now();
        let concurrency = settings.concurrency;
        let store = Store::with_config(&bootstrap.stats_config).map_err(StartError::Stats)?;
        let server_state = Arc::new(ServerState::new());
        let server_stats = ServerStats::new(&store, concurrency);
        let runtime = Runtime::new(runtime_layers(&bootstrap), &store);
        let secrets = redvoy_tls::SecretManager::new(&bootstrap.secrets);
        secrets
            .set_node_complete(!bootstrap.node.id.is_empty() && !bootstrap.node.cluster.is_empty());
        // Before any cluster or listener asks for a secret: the first ones subscribe at once.
        let sds_ads_names = Arc::new(tokio::sync::Notify::new());
        crate::secrets::install(&bootstrap, &secrets, &store, Arc::clone(&sds_ads_names));
        let clusters = Arc::new(
            ClusterManager::with_secrets(&bootstrap.clusters, &store, secrets)
                .await
                .map_err(StartError::Clusters)?,
        );
        if let Some(path) = &bootstrap.outlier_event_log_path {
            clusters.set_outlier_event_log(path);
        }
        ListenerManagerStats::register(&store, bootstrap.clusters.len(), concurrency);
        clusters.spawn_dns_refresh();
        // Envoy starts listeners only once each cluster has initialised (a Redis Cluster's
        // first topology, a health-checked cluster's first round of checks); waiting (bounded)
        // here means the first client requests find the slot map and the hosts' health.
        let pending = clusters.wait_initialized(CLUSTER_INIT_TIMEOUT).await;
        if !pending.is_empty() {
            warn!(
                clusters = ?pending,
                "clusters not initialised yet (Redis Cluster topology, first health checks); starting anyway"
            );
        }

        // Unbounded on purpose: commands come from config changes (a few per listener push,
        // never per request), and the main thread applying a push must not wait on a busy
        // worker; a bounded channel could stall xDS behind the data path.
        let (worker_tx, worker_commands): (Vec<_>, Vec<_>) =
            (0..concurrency).map(|_| mpsc::unbounded_channel()).unzip();
        let connection_limit = Arc::new(redvoy_proxy::GlobalConnectionLimit::new(
            bootstrap.global_connection_limit.as_ref(),
            &runtime,
            &store,
        ));
        let listeners = Arc::new(ListenerManager::new(
            &store,
            &runtime,
            Arc::clone(&clusters),
            worker_tx,
            connection_limit,
            listener_manager::Drain {
                time: settings.drain_time,
                strategy: settings.drain_strategy,
            },
            settings.reject_unsupported,
        ));
        // Bound before any worker runs, so an address in use fails start-up.
        for listener in &bootstrap.listeners {
            listeners
                .add_or_update(listener.clone(), true, "", bytes::Bytes::new())
                .map_err(|source| StartError::Listener {
                    name: listener.name.clone(),
                    source,
                })?;
        }
        Ok(Self {
            bootstrap,
            settings,
            loaded_at,
            started,
            store,
            runtime,
            server_state,
            server_stats,
            clusters,
            listeners,
            worker_commands,
            sds_ads_names,
        })
    }

    /// Starts the workers, the xDS client, the admin port, the stats flush and the lifecycle.
    pub async fn spawn(self) -> Result<Running, StartError> {
        let Self {
            bootstrap,
            settings,
            loaded_at,
            started,
            store,
            runtime,
            server_state,
            server_stats,
            clusters,
            listeners,
            worker_commands,
            sds_ads_names,
        } = self;
        let concurrency = settings.concurrency;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let mut workers = Vec::with_capacity(concurrency);
        for (id, commands) in worker_commands.into_iter().enumerate() {
            let rx = shutdown_rx.clone();
            let clusters = Arc::clone(&clusters);
            let handle = std::thread::Builder::new()
                .name(format!("wrk:worker_{id}"))
                .spawn(move || run_worker(id, commands, clusters, rx))
                .map_err(StartError::WorkerThread)?;
            workers.push(handle);
        }

        let dynamic = xds::start(
            &bootstrap,
            &store,
            Arc::clone(&clusters),
            Arc::clone(&listeners),
            redvoy_config::DynamicOptions {
                reject_unknown_dynamic_fields: settings.reject_unknown_dynamic_fields,
            },
            sds_ads_names,
        )
        .map_err(StartError::Dynamic)?;

        if let Some(admin) = &bootstrap.admin {
            let log_levels = redvoy_admin::ENVOY_LOGGERS
                .iter()
                .map(|name| ((*name).to_owned(), settings.log_level))
                .collect::<BTreeMap<_, _>>();
            let backend = Backend {
                bootstrap: bootstrap.clone(),
                loaded_at,
                started,
                clusters: Arc::clone(&clusters),
                listeners: Arc::clone(&listeners),
                dynamic: dynamic.clone(),
                runtime: runtime.clone(),
                options: settings.options.clone(),
                drain_time: settings.drain_time,
                log_handle: settings.log_handle.clone(),
                log_levels: Mutex::new(log_levels),
                listener_stopped: store.counter("listener_manager.listener_stopped"),
            };
            let state = redvoy_admin::AdminState {
                stats: store.clone(),
                server: Arc::clone(&server_state),
                shutdown: shutdown_tx.clone(),
                backend: Arc::new(backend),
            };
            spawn_admin(admin, state).await?;
        }
        redvoy_stats::spawn_flush(store.clone(), bootstrap.stats_flush_interval);
        spawn_server_stats(
            Arc::clone(&server_stats),
            Arc::clone(&server_state),
            Arc::clone(&listeners),
            Arc::clone(&clusters),
            store.clone(),
            concurrency,
        );
        spawn_lifecycle(
            dynamic.clone(),
            Arc::clone(&listeners),
            store,
            server_stats,
            server_state,
            concurrency,
        );
        Ok(Running {
            listeners,
            shutdown: shutdown_tx,
            quit: shutdown_rx,
            workers,
            _dynamic: dynamic,
        })
    }
}

// === impl Running ===

impl Running {
    /// Changes to `true` on `POST /quitquitquit`.
    pub fn quit_requested(&self) -> watch::Receiver<bool> {
        self.quit.clone()
    }

    /// Stops accepting, tells the workers to stop, and waits for their threads.
    pub fn drain(self) -> Result<(), ShutdownError> {
        self.listeners.stop_all();
        let _ = self.shutdown.send(true);
        for w in self.workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ShutdownError::WorkerFailed(e)),
                Err(_) => return Err(ShutdownError::WorkerPanicked),
            }
        }
        Ok(())
    }
}

/// The bootstrap's `layered_runtime` as the runtime's layers.
pub fn runtime_layers(bootstrap: &model::Bootstrap) -> Vec<redvoy_runtime::Layer> {
    bootstrap
        .runtime
        .layers
        .iter()
        .map(|layer| match &layer.kind {
            model::RuntimeLayerKind::Static(values) => redvoy_runtime::Layer::Static {
                name: layer.name.clone(),
                values: values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.raw_string()))
                    .collect(),
            },
            model::RuntimeLayerKind::Admin => redvoy_runtime::Layer::Admin {
                name: layer.name.clone(),
            },
        })
        .collect()
}

/// Refreshes the server-wide gauges every second (`server.*` state and uptime, total
/// connections, the per-worker cluster count).
fn spawn_server_stats(
    server_stats: Arc<ServerStats>,
    server_state: Arc<ServerState>,
    listeners: Arc<ListenerManager>,
    clusters: Arc<ClusterManager>,
    store: Store,
    concurrency: usize,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SERVER_STATS_REFRESH);
        loop {
            ticks.tick().await;
            server_stats.refresh(&server_state);
            let connections = listeners
                .running()
                .iter()
                .map(|(_, l)| l.stats.downstream_cx_active.value())
                .sum();
            server_stats.total_connections.set(connections);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let first_expiry = crate::admin_backend::tls_certificates(&clusters, &listeners)
                .iter()
                .flat_map(|c| c.ca_cert.iter().chain(&c.cert_chain))
                .map(|d| ((d.expiration_time - now) / 86_400).max(0) as u64)
                .min();
            server_stats
                .days_until_first_cert_expiring
                .set(first_expiry.unwrap_or(u64::from(u32::MAX)));
            ListenerManagerStats::clusters_inflated(&store, clusters.clusters().len(), concurrency);
        }
    });
}

/// Envoy's phases: PRE_INITIALIZING while the cluster manager initializes (the bootstrap's
/// clusters, then CDS and its EDS), INITIALIZING while its init manager waits for LDS, then
/// LIVE (and the workers start); each fetch bounded by its initial_fetch_timeout.
fn spawn_lifecycle(
    dynamic: Option<Dynamic>,
    listeners: Arc<ListenerManager>,
    store: Store,
    server_stats: Arc<ServerStats>,
    server_state: Arc<ServerState>,
    concurrency: usize,
) {
    tokio::spawn(async move {
        if let Some(d) = &dynamic {
            d.clusters_initialized().await;
        }
        server_state.set_initializing();
        if let Some(d) = &dynamic {
            d.initialized().await;
        }
        // Listeners warming for their TLS secrets hold initialization, as in Envoy.
        listeners.wait_warmed().await;
        listeners.set_workers_started();
        ListenerManagerStats::workers_started(&store);
        server_state.set_initialized();
        server_stats.refresh(&server_state);
        info!(workers = concurrency, "redvoy ready");
    });
}

/// Opens the admin port where `admin.address` says: TCP, or a Unix socket for `pipe`.
async fn spawn_admin(
    admin: &model::Admin,
    state: redvoy_admin::AdminState,
) -> Result<(), StartError> {
    match admin.listen_address() {
        model::AdminAddress::Pipe(pipe) => {
            let socket = redvoy_admin::bind_pipe(&pipe.path, pipe.mode).map_err(|source| {
                StartError::AdminPipe {
                    path: pipe.path.clone(),
                    source,
                }
            })?;
            info!(path = %pipe.path, "admin listening");
            tokio::spawn(async move {
                if let Err(e) = redvoy_admin::serve_unix(socket, state).await {
                    error!(error = %e, "admin server stopped");
                }
            });
        }
        model::AdminAddress::Tcp(address) => {
            let addr = address.to_string();
            let socket = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| StartError::AdminTcp {
                    address: addr.clone(),
                    source,
                })?;
            info!(address = %addr, "admin listening");
            tokio::spawn(async move {
                if let Err(e) = redvoy_admin::serve(socket, state).await {
                    error!(error = %e, "admin server stopped");
                }
            });
        }
    }
    Ok(())
}
