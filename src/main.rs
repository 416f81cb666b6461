//! `redvoy`: boots from an Envoy bootstrap with Envoy's command-line flags, builds the clusters
//! and redis_proxy listeners, starts the workers and the admin port, and shuts down on SIGTERM,
//! SIGINT or `POST /quitquitquit`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser, ValueEnum};
use redvoy_config::{model, LoadOptions};
use redvoy_proxy::{run_worker, DrainStrategy};
use redvoy_runtime::Runtime;
use redvoy_stats::Store;
use redvoy_upstream::ClusterManager;
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod admin_backend;
mod listener_manager;
mod server;
mod xds;

use admin_backend::{tracing_level, Backend, LogHandle};
use listener_manager::ListenerManager;
use redvoy_admin::LogLevel;
use server::{ListenerManagerStats, ServerStats, SERVER_STATS_REFRESH};

/// Longest start-up wait for the first topology of the bootstrap's Redis Clusters.
const REDIS_CLUSTER_INIT_TIMEOUT: Duration = Duration::from_secs(15);

// jemalloc: fast under many small per-request allocations, and it reports the allocated and
// resident sizes behind `server.memory_*`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serve,
    Validate,
    #[value(name = "init_only")]
    InitOnly,
}

/// Envoy's command line. Flags redvoy has no use for are accepted (and ignored) so that any
/// launcher written for Envoy, pilot-agent included, can start redvoy unchanged.
#[derive(Parser, Debug)]
#[command(
    name = "redvoy",
    version,
    about = "An Envoy-compatible data plane for Redis"
)]
struct Flags {
    /// Path to the bootstrap (YAML or JSON).
    #[arg(short = 'c', long = "config-path")]
    config_path: Option<PathBuf>,
    /// Bootstrap in YAML (or JSON), merged over --config-path as Envoy merges it.
    #[arg(long = "config-yaml")]
    config_yaml: Option<String>,
    #[arg(long = "mode", value_enum, default_value = "serve")]
    mode: Mode,
    /// Worker threads; defaults to the number of hardware threads, as in Envoy.
    #[arg(long = "concurrency")]
    concurrency: Option<usize>,
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    #[arg(long = "component-log-level")]
    component_log_level: Option<String>,
    #[arg(long = "service-node")]
    service_node: Option<String>,
    #[arg(long = "service-cluster")]
    service_cluster: Option<String>,
    #[arg(long = "service-zone")]
    service_zone: Option<String>,
    #[arg(long = "drain-time-s", default_value_t = 600)]
    drain_time_s: u64,
    #[arg(long = "drain-strategy")]
    drain_strategy: Option<String>,
    #[arg(long = "base-id")]
    base_id: Option<u64>,
    #[arg(long = "use-dynamic-base-id", action = ArgAction::SetTrue)]
    use_dynamic_base_id: bool,
    #[arg(long = "base-id-path")]
    base_id_path: Option<PathBuf>,
    #[arg(long = "disable-hot-restart", action = ArgAction::SetTrue)]
    disable_hot_restart: bool,
    #[arg(long = "allow-unknown-static-fields", action = ArgAction::SetTrue)]
    allow_unknown_static_fields: bool,
    #[arg(long = "reject-unknown-dynamic-fields", action = ArgAction::SetTrue)]
    reject_unknown_dynamic_fields: bool,
    #[arg(long = "local-address-ip-version")]
    local_address_ip_version: Option<String>,
    #[arg(long = "file-flush-interval-msec")]
    file_flush_interval_msec: Option<u64>,
    #[arg(long = "file-flush-min-size-kb")]
    file_flush_min_size_kb: Option<u64>,
    #[arg(long = "parent-shutdown-time-s")]
    parent_shutdown_time_s: Option<u64>,
    #[arg(long = "restart-epoch")]
    restart_epoch: Option<u64>,
    #[arg(long = "log-format")]
    log_format: Option<String>,
    #[arg(long = "log-path")]
    log_path: Option<PathBuf>,
    #[arg(long = "log-format-prefix-with-location")]
    log_format_prefix_with_location: Option<String>,
    #[arg(long = "bootstrap-version")]
    bootstrap_version: Option<u32>,
    #[arg(long = "skip-deprecated-logs", action = ArgAction::SetTrue)]
    skip_deprecated_logs: bool,
    #[arg(long = "enable-core-dump", action = ArgAction::SetTrue)]
    enable_core_dump: bool,
    /// redvoy only: a dynamic listener whose filters redvoy does not implement is NACKed, as
    /// Envoy would reject an unknown extension, instead of being skipped with a warning.
    #[arg(long = "reject-unsupported", action = ArgAction::SetTrue)]
    reject_unsupported: bool,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let log_handle = init_logging(log_level(&flags.log_level));
    match run(flags, log_handle) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Envoy's `-l` level (Envoy also takes `warn`).
fn log_level(level: &str) -> LogLevel {
    match level.to_ascii_lowercase().as_str() {
        "warn" => LogLevel::Warning,
        other => LogLevel::parse(other).unwrap_or(LogLevel::Info),
    }
}

/// Logs to stderr through a filter `/logging` can change at run time.
fn init_logging(level: LogLevel) -> Option<LogHandle> {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::EnvFilter::new(tracing_level(level)),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()
        .map(|()| handle)
}

fn run(flags: Flags, log_handle: Option<LogHandle>) -> Result<()> {
    let options = LoadOptions {
        config_path: flags.config_path.clone(),
        config_yaml: flags.config_yaml.clone(),
        service_node: flags.service_node.clone(),
        service_cluster: flags.service_cluster.clone(),
        service_zone: flags.service_zone.clone(),
    };
    let bootstrap = redvoy_config::load_bootstrap(&options).context("invalid bootstrap")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the main event loop")?;
    if flags.mode == Mode::Validate {
        // Envoy's validate mode builds the config without opening sockets.
        let store = Store::with_options(stats_options(&bootstrap.stats_config))
            .context("invalid stats_config")?;
        let layers = runtime_layers(&bootstrap);
        runtime.block_on(build_filters(
            &bootstrap,
            &store,
            &Runtime::new(layers, &store),
        ))?;
        let shown = flags
            .config_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!("configuration '{shown}' OK");
        return Ok(());
    }
    let concurrency = flags
        .concurrency
        .filter(|c| *c > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let drain_strategy = if flags
        .drain_strategy
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("immediate"))
    {
        DrainStrategy::Immediate
    } else {
        DrainStrategy::Gradual
    };
    let server = Server {
        options: command_line_options(&flags, concurrency, drain_strategy),
        drain_time: Duration::from_secs(flags.drain_time_s),
        drain_strategy,
        reject_unsupported: flags.reject_unsupported,
        reject_unknown_dynamic_fields: flags.reject_unknown_dynamic_fields,
        log_level: log_level(&flags.log_level),
        log_handle,
        concurrency,
        mode: flags.mode,
    };
    runtime.block_on(serve(bootstrap, server))
}

/// What `serve` needs from the command line.
struct Server {
    options: redvoy_admin::CommandLineOptions,
    drain_time: Duration,
    drain_strategy: DrainStrategy,
    reject_unsupported: bool,
    reject_unknown_dynamic_fields: bool,
    log_level: LogLevel,
    log_handle: Option<LogHandle>,
    concurrency: usize,
    mode: Mode,
}

/// `/server_info`'s `command_line_options`, as Envoy echoes its flags.
fn command_line_options(
    flags: &Flags,
    concurrency: usize,
    drain_strategy: DrainStrategy,
) -> redvoy_admin::CommandLineOptions {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut o = redvoy_admin::CommandLineOptions {
        base_id: flags.base_id.unwrap_or(0),
        concurrency: concurrency as u32,
        config_path: flags
            .config_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        config_yaml: text(&flags.config_yaml),
        allow_unknown_static_fields: flags.allow_unknown_static_fields,
        log_level: log_level(&flags.log_level).as_str().to_owned(),
        component_log_level: text(&flags.component_log_level),
        log_path: flags
            .log_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        service_cluster: text(&flags.service_cluster),
        service_node: text(&flags.service_node),
        service_zone: text(&flags.service_zone),
        drain_time: Duration::from_secs(flags.drain_time_s),
        disable_hot_restart: flags.disable_hot_restart,
        reject_unknown_dynamic_fields: flags.reject_unknown_dynamic_fields,
        use_dynamic_base_id: flags.use_dynamic_base_id,
        enable_core_dump: flags.enable_core_dump,
        skip_deprecated_logs: flags.skip_deprecated_logs,
        ..Default::default()
    };
    if let Some(ms) = flags.file_flush_interval_msec {
        o.file_flush_interval = Duration::from_millis(ms);
    }
    if let Some(s) = flags.parent_shutdown_time_s {
        o.parent_shutdown_time = Duration::from_secs(s);
    }
    if let Some(f) = &flags.log_format {
        o.log_format = f.clone();
    }
    if drain_strategy == DrainStrategy::Immediate {
        o.drain_strategy = redvoy_admin::DrainStrategy::Immediate;
    }
    o.mode = match flags.mode {
        Mode::Serve => redvoy_admin::Mode::Serve,
        Mode::Validate => redvoy_admin::Mode::Validate,
        Mode::InitOnly => redvoy_admin::Mode::InitOnly,
    };
    o
}

/// Envoy's validate mode: builds the clusters and every listener's filter chains, opening no
/// socket.
async fn build_filters(
    bootstrap: &model::Bootstrap,
    store: &Store,
    runtime: &Runtime,
) -> Result<()> {
    let clusters = ClusterManager::new(&bootstrap.clusters, store)
        .await
        .context("building clusters")?;
    for listener in &bootstrap.listeners {
        redvoy_proxy::compile_chains(listener, &clusters, store, runtime)
            .with_context(|| format!("listener '{}'", listener.name))?;
    }
    Ok(())
}

/// The bootstrap's `layered_runtime` as the runtime's layers.
fn runtime_layers(bootstrap: &model::Bootstrap) -> Vec<redvoy_runtime::Layer> {
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

/// The bootstrap's `stats_config` as the stats store takes it.
fn stats_options(config: &model::StatsConfig) -> redvoy_stats::StatsOptions {
    use redvoy_stats::{StatsMatcher, StringMatcher};
    let matcher = |m: &model::StringMatcher| {
        let v = m.value.clone();
        let plain = match m.kind {
            model::StringMatchKind::Exact => StringMatcher::Exact(v),
            model::StringMatchKind::Prefix => StringMatcher::Prefix(v),
            model::StringMatchKind::Suffix => StringMatcher::Suffix(v),
            model::StringMatchKind::Contains => StringMatcher::Contains(v),
            model::StringMatchKind::SafeRegex => StringMatcher::Regex(v),
        };
        if m.ignore_case {
            plain.ignoring_case()
        } else {
            plain
        }
    };
    redvoy_stats::StatsOptions {
        tags: config
            .stats_tags
            .iter()
            .map(|t| redvoy_stats::TagSpecifier {
                tag_name: t.tag_name.clone(),
                regex: t.regex.clone(),
                fixed_value: t.fixed_value.clone(),
            })
            .collect(),
        use_all_default_tags: config.use_all_default_tags,
        matcher: match &config.matcher {
            model::StatsMatcher::AcceptAll => StatsMatcher::AcceptAll,
            model::StatsMatcher::RejectAll => StatsMatcher::RejectAll,
            model::StatsMatcher::Inclusion(list) => {
                StatsMatcher::Inclusion(list.iter().map(matcher).collect())
            }
            model::StatsMatcher::Exclusion(list) => {
                StatsMatcher::Exclusion(list.iter().map(matcher).collect())
            }
        },
    }
}

async fn serve(bootstrap: model::Bootstrap, server: Server) -> Result<()> {
    let loaded_at = SystemTime::now();
    let started = Instant::now();
    let concurrency = server.concurrency;
    let store = Store::with_options(stats_options(&bootstrap.stats_config))
        .context("invalid stats_config")?;
    let server_state = Arc::new(redvoy_admin::ServerState::new());
    let server_stats = ServerStats::new(&store, concurrency);
    let runtime = Runtime::new(runtime_layers(&bootstrap), &store);
    let clusters = Arc::new(
        ClusterManager::new(&bootstrap.clusters, &store)
            .await
            .context("building clusters")?,
    );
    ListenerManagerStats::register(&store, bootstrap.clusters.len(), concurrency);
    clusters.spawn_dns_refresh();
    // Envoy starts listeners only once each Redis Cluster has its first topology; waiting
    // (bounded) here means the first client requests find the slot map.
    let pending = clusters
        .wait_redis_clusters(REDIS_CLUSTER_INIT_TIMEOUT)
        .await;
    if !pending.is_empty() {
        warn!(
            clusters = ?pending,
            "Redis Cluster topology not discovered yet; starting anyway (requests get 'no upstream host' until it is)"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut worker_tx = Vec::with_capacity(concurrency);
    let mut worker_rx = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        // Unbounded on purpose: commands come from config changes (a few per listener push,
        // never per request), and the main thread applying a push must not wait on a busy
        // worker; a bounded channel could stall xDS behind the data path.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        worker_tx.push(tx);
        worker_rx.push(rx);
    }
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
            time: server.drain_time,
            strategy: server.drain_strategy,
        },
        server.reject_unsupported,
    ));
    // Static listeners are bound before any worker runs, so an address in use fails startup.
    for listener in &bootstrap.listeners {
        listeners
            .add_or_update(listener.clone(), true, "", bytes::Bytes::new())
            .map_err(|e| anyhow::anyhow!("listener '{}': {e}", listener.name))?;
    }
    if server.mode == Mode::InitOnly {
        return Ok(());
    }

    let mut workers = Vec::with_capacity(concurrency);
    for (id, commands) in worker_rx.into_iter().enumerate() {
        let rx = shutdown_rx.clone();
        let clusters = Arc::clone(&clusters);
        let handle = std::thread::Builder::new()
            .name(format!("wrk:worker_{id}"))
            .spawn(move || run_worker(id, commands, clusters, rx))
            .context("starting a worker thread")?;
        workers.push(handle);
    }

    let dynamic = xds::start(
        &bootstrap,
        &store,
        Arc::clone(&clusters),
        Arc::clone(&listeners),
        redvoy_config::DynamicOptions {
            reject_unknown_dynamic_fields: server.reject_unknown_dynamic_fields,
        },
    )
    .context("dynamic_resources")?;

    if let Some(admin) = &bootstrap.admin {
        let log_levels = redvoy_admin::ENVOY_LOGGERS
            .iter()
            .map(|name| ((*name).to_owned(), server.log_level))
            .collect::<BTreeMap<_, _>>();
        let backend = Backend {
            bootstrap: bootstrap.clone(),
            loaded_at,
            started,
            clusters: Arc::clone(&clusters),
            listeners: Arc::clone(&listeners),
            dynamic: dynamic.clone(),
            runtime: runtime.clone(),
            options: server.options.clone(),
            drain_time: server.drain_time,
            log_handle: server.log_handle.clone(),
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
        store.clone(),
        Arc::clone(&server_stats),
        Arc::clone(&server_state),
        concurrency,
    );

    wait_for_shutdown(shutdown_rx).await;
    info!("shutting down");
    listeners.stop_all();
    let _ = shutdown_tx.send(true);
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("worker failed: {e}"),
            Err(_) => bail!("worker panicked"),
        }
    }
    Ok(())
}

/// Refreshes the server-wide gauges every second (`server.*` state and uptime, total
/// connections, the per-worker cluster count).
fn spawn_server_stats(
    server_stats: Arc<ServerStats>,
    server_state: Arc<redvoy_admin::ServerState>,
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
            ListenerManagerStats::clusters_inflated(&store, clusters.clusters().len(), concurrency);
        }
    });
}

/// Envoy's phases: PRE_INITIALIZING while the cluster manager initializes (the bootstrap's
/// clusters, then CDS and its EDS), INITIALIZING while its init manager waits for LDS, then
/// LIVE (and the workers start); each fetch bounded by its initial_fetch_timeout.
fn spawn_lifecycle(
    dynamic: Option<xds::Dynamic>,
    store: Store,
    server_stats: Arc<ServerStats>,
    server_state: Arc<redvoy_admin::ServerState>,
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
        ListenerManagerStats::workers_started(&store);
        server_state.set_initialized();
        server_stats.refresh(&server_state);
        info!(workers = concurrency, "redvoy ready");
    });
}

/// Opens the admin port where `admin.address` says: TCP, or a Unix socket for `pipe`.
async fn spawn_admin(admin: &model::Admin, state: redvoy_admin::AdminState) -> Result<()> {
    match admin.listen_address() {
        model::AdminAddress::Pipe(pipe) => {
            let socket = redvoy_admin::bind_pipe(&pipe.path, pipe.mode)
                .with_context(|| format!("admin: cannot bind pipe {}", pipe.path))?;
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
                .with_context(|| format!("admin: cannot bind {addr}"))?;
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

async fn wait_for_shutdown(mut quit: watch::Receiver<bool>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = async { while quit.changed().await.is_ok() { if *quit.borrow() { break; } } } => {}
    }
}
