//! `redvoy`: boots from an Envoy bootstrap with Envoy's command-line flags, builds the clusters
//! and redis_proxy listeners, starts the workers and the admin port, and shuts down on SIGTERM,
//! SIGINT or `POST /quitquitquit`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser, ValueEnum};
use redvoy_config::{model, LoadOptions};
use redvoy_proxy::{bind_listener, run_worker, FilterConfig, ListenerStats, WorkerListener};
use redvoy_runtime::Runtime;
use redvoy_stats::Store;
use redvoy_upstream::ClusterManager;
use tokio::sync::watch;
use tracing::{error, info};

mod server;

use server::{ListenerManagerStats, ServerState, ServerStats, SERVER_STATS_REFRESH};

// jemalloc: fast under many small per-request allocations, and it reports the allocated and
// resident sizes behind `server.memory_*`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Envoy's stats flush interval default: histogram interval quantiles cover this long.
const STATS_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

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
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging(&flags.log_level);
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Maps Envoy's log levels onto tracing's.
fn init_logging(level: &str) {
    let filter = match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => "info",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(flags: Flags) -> Result<()> {
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
        let store = Store::new();
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
    runtime.block_on(serve(bootstrap, concurrency, flags.mode))
}

struct Built {
    clusters: ClusterManager,
    filters: Vec<(model::Listener, Arc<FilterConfig>)>,
}

async fn build_filters(
    bootstrap: &model::Bootstrap,
    store: &Store,
    runtime: &Runtime,
) -> Result<Built> {
    let clusters = ClusterManager::new(&bootstrap.clusters, store)
        .await
        .context("building clusters")?;
    let mut filters = Vec::new();
    for listener in &bootstrap.listeners {
        let filter = FilterConfig::new(&listener.redis_proxy, &clusters, store, runtime)
            .with_context(|| format!("listener '{}'", listener.name))?;
        filters.push((listener.clone(), Arc::new(filter)));
    }
    Ok(Built { clusters, filters })
}

/// The bootstrap's `layered_runtime` as the runtime's layers.
fn runtime_layers(_bootstrap: &model::Bootstrap) -> Vec<redvoy_runtime::Layer> {
    Vec::new()
}

fn listener_address(listener: &model::Listener) -> Result<SocketAddr> {
    let ip: IpAddr = listener.address.address.parse().with_context(|| {
        format!(
            "listener '{}': address '{}' is not an IP address",
            listener.name, listener.address.address
        )
    })?;
    Ok(SocketAddr::new(ip, listener.address.port))
}

async fn serve(bootstrap: model::Bootstrap, concurrency: usize, mode: Mode) -> Result<()> {
    let store = Store::new();
    let server_stats = ServerStats::new(&store, concurrency);
    let runtime = Runtime::new(runtime_layers(&bootstrap), &store);
    let built = build_filters(&bootstrap, &store, &runtime).await?;
    ListenerManagerStats::register(&store, built.filters.len(), concurrency);
    built.clusters.spawn_dns_refresh();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // Every worker gets its own socket per listener; binding them all before starting any
    // worker reports an address in use before traffic flows.
    let mut per_worker: Vec<Vec<WorkerListener>> = (0..concurrency).map(|_| Vec::new()).collect();
    let mut listener_stats = Vec::new();
    for (listener, filter) in &built.filters {
        let addr = listener_address(listener)?;
        let stats = Arc::new(ListenerStats::new(&store, &addr, concurrency));
        listener_stats.push(Arc::clone(&stats));
        for worker in per_worker.iter_mut() {
            let socket = bind_listener(addr)
                .with_context(|| format!("listener '{}': cannot bind {addr}", listener.name))?;
            worker.push(WorkerListener {
                name: listener.name.clone(),
                socket,
                filter: Arc::clone(filter),
                stats: Arc::clone(&stats),
            });
        }
        info!(listener = %listener.name, %addr, "listener started");
    }
    if mode == Mode::InitOnly {
        return Ok(());
    }

    let mut workers = Vec::with_capacity(concurrency);
    for (id, listeners) in per_worker.into_iter().enumerate() {
        let rx = shutdown_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("wrk:worker_{id}"))
            .spawn(move || run_worker(id, listeners, rx))
            .context("starting a worker thread")?;
        workers.push(handle);
    }

    let ready = Arc::new(AtomicBool::new(false));
    if let Some(admin) = &bootstrap.admin {
        let addr = format!("{}:{}", admin.address.address, admin.address.port);
        let socket = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("admin: cannot bind {addr}"))?;
        info!(address = %addr, "admin listening");
        let state = redvoy_admin::AdminState {
            stats: store.clone(),
            ready: Arc::clone(&ready),
            shutdown: shutdown_tx.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = redvoy_admin::serve(socket, state).await {
                error!(error = %e, "admin server stopped");
            }
        });
    }
    redvoy_stats::spawn_flush(store.clone(), STATS_FLUSH_INTERVAL);
    ListenerManagerStats::workers_started(&store);
    server_stats.set_state(ServerState::Live);
    {
        let server_stats = Arc::clone(&server_stats);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SERVER_STATS_REFRESH);
            loop {
                ticks.tick().await;
                server_stats.refresh();
                let connections = listener_stats
                    .iter()
                    .map(|l| l.downstream_cx_active.value())
                    .sum();
                server_stats.total_connections.set(connections);
            }
        });
    }
    ready.store(true, Ordering::Relaxed);
    info!(workers = concurrency, "redvoy ready");

    wait_for_shutdown(shutdown_rx).await;
    info!("shutting down");
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
