//! redvoy's local control plane: a directory of Kubernetes YAML (Services, EndpointSlices or
//! Endpoints, Istio `EnvoyFilter`s) → what istiod would send each sidecar (outbound listeners,
//! clusters, endpoints, with the EnvoyFilters applied with Istio's semantics) → served over ADS
//! (State-of-the-World and Delta, TCP and a Unix socket) to Envoy and redvoy alike.
//!
//! Data flows one way: [`k8s`] reads the inputs, [`istio`] generates, [`envoyfilter`] selects
//! and patches per proxy, [`snapshot`] validates and versions what each proxy gets, [`server`]
//! streams it, [`watch`] swaps in a new world when the directory changes (the last good one
//! stays when the new one fails). Owns no data-path code; depends on `redvoy-config` only for
//! the descriptor pool and the resource checks redvoy itself applies.

#![forbid(unsafe_code)]

pub mod admin;
pub mod envoyfilter;
pub mod istio;
pub mod k8s;
#[cfg(feature = "kube")]
pub mod kube_source;
pub mod merge;
pub mod proxy;
pub mod reflect;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod watch;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::PoisonError;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tracing::{error, info, warn};

pub use istio::{ListenerBind, Settings};

/// How the control plane runs (the binary's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub config_dirs: Vec<PathBuf>,
    /// gRPC (ADS) over TCP.
    pub xds_address: Option<std::net::SocketAddr>,
    /// gRPC (ADS) over a Unix socket.
    pub xds_uds: Option<PathBuf>,
    /// The HTTP port (`/stats`, `/debug/config`…).
    pub admin_address: Option<std::net::SocketAddr>,
    /// Istio's root namespace: its EnvoyFilters apply to every proxy.
    pub root_namespace: String,
    pub settings: Settings,
    /// Quiet time after a change before the directory is read.
    pub debounce: Duration,
    /// Read Services, EndpointSlices and EnvoyFilters from the Kubernetes API (in-cluster or
    /// kubeconfig credentials) instead of `config_dirs`. Needs the `kube` feature.
    pub kube: bool,
}

/// Why the control plane could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {what} {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("xDS server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(
        "--kube: this binary was built without the `kube` feature (cargo build --features kube)"
    )]
    KubeNotBuilt,
    #[error("Kubernetes client: {0}")]
    Kube(String),
}

/// Keepalives: a proxy that vanished without closing (a node lost, a NAT entry dropped) is
/// noticed, its stream ended and its identity no longer kept.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
}

/// A reading of the inputs: the objects, or every error found.
type Reading = Result<k8s::Inputs, Vec<String>>;

fn read_dirs(dirs: &[PathBuf]) -> Reading {
    k8s::load_dirs(dirs).map_err(|errors| errors.into_iter().map(|e| e.to_string()).collect())
}

/// Builds a world from a reading (with every error found).
fn build(
    opts: &Options,
    reading: Reading,
    generation: u64,
    proxies: &[proxy::ProxyIdentity],
) -> Result<snapshot::World, Vec<String>> {
    snapshot::World::build(
        reading?,
        opts.settings.clone(),
        opts.root_namespace.clone(),
        generation,
        proxies,
    )
}

fn record(shared: &server::Shared, world: &snapshot::World) {
    shared.stats.loads_ok.fetch_add(1, Relaxed);
    shared.stats.input_errors.store(0, Relaxed);
    shared
        .stats
        .envoy_filters
        .store(world.inputs.envoy_filters.len() as u64, Relaxed);
    shared
        .stats
        .services
        .store(world.inputs.services.len() as u64, Relaxed);
    shared
        .last_errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

fn reject(shared: &server::Shared, errors: Vec<String>) {
    for e in &errors {
        error!("configuration refused, the last good one stays: {e}");
    }
    shared.stats.loads_rejected.fetch_add(1, Relaxed);
    shared
        .stats
        .input_errors
        .store(errors.len() as u64, Relaxed);
    *shared
        .last_errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = errors;
}

/// Runs until the process ends: serves ADS and the admin port, and follows the directories (or
/// the Kubernetes API). A first reading that fails does not end the process (a control plane
/// that exits on a bad file takes every proxy's updates down with it): nothing is served and
/// `/ready` answers 503 until the files are fixed, so no proxy is sent an empty configuration.
pub async fn run(opts: Options) -> Result<(), Error> {
    // The source of readings: the directories (polled) or the Kubernetes API (watched).
    let (readings_tx, mut readings) = tokio::sync::mpsc::channel::<Reading>(4);
    if opts.kube {
        #[cfg(feature = "kube")]
        {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| Error::Kube(e.to_string()))?;
            tokio::spawn(kube_source::watch(client, readings_tx, opts.debounce));
        }
        #[cfg(not(feature = "kube"))]
        return Err(Error::KubeNotBuilt);
    } else {
        let dirs = opts.config_dirs.clone();
        let debounce = opts.debounce;
        tokio::spawn(async move {
            let d = dirs.clone();
            let first =
                tokio::task::spawn_blocking(move || (watch::fingerprint(&d), read_dirs(&d))).await;
            let (mut last, reading) = match first {
                Ok(r) => r,
                Err(e) => (
                    Vec::new(),
                    Err(vec![format!("reading the directories: {e}")]),
                ),
            };
            if readings_tx.send(reading).await.is_err() {
                return;
            }
            loop {
                last = watch::next_change(&dirs, &last, debounce).await;
                let d = dirs.clone();
                let reading = tokio::task::spawn_blocking(move || read_dirs(&d))
                    .await
                    .unwrap_or_else(|e| Err(vec![format!("reading the directories: {e}")]));
                if readings_tx.send(reading).await.is_err() {
                    return;
                }
            }
        });
    }
    // The first reading decides what is served at start.
    let first = readings
        .recv()
        .await
        .unwrap_or_else(|| Err(vec!["no input source".to_owned()]));
    let (world, errors) = match build(&opts, first, 1, &[]) {
        Ok(w) => (w, Vec::new()),
        Err(errors) => (
            snapshot::World::empty(opts.settings.clone(), opts.root_namespace.clone()),
            errors,
        ),
    };
    let shared = server::Shared::new(world);
    if errors.is_empty() {
        record(&shared, &shared.world());
        info!(generation = 1, "configuration loaded");
    } else {
        reject(&shared, errors);
    }

    let service = AggregatedDiscoveryServiceServer::new(server::AdsService::new(shared.clone()))
        .max_decoding_message_size(16 * 1024 * 1024);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = opts.xds_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                what: "--xds-address",
                address: addr.to_string(),
                source,
            })?;
        info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving ADS over TCP");
        let svc = service.clone();
        tasks.spawn(async move {
            grpc_server()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .map_err(Error::from)
        });
    }
    if let Some(path) = &opts.xds_uds {
        // A stale socket from an earlier run would make the bind fail.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).map_err(|source| Error::Bind {
            what: "--xds-uds",
            address: path.display().to_string(),
            source,
        })?;
        info!(path = %path.display(), "serving ADS over a Unix socket");
        let svc = service.clone();
        tasks.spawn(async move {
            grpc_server()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .map_err(Error::from)
        });
    }
    if let Some(addr) = opts.admin_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                what: "--admin-address",
                address: addr.to_string(),
                source,
            })?;
        info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin port");
        let shared = shared.clone();
        tasks.spawn(async move {
            admin::serve(listener, shared).await;
            Ok(())
        });
    }

    let mut generation = shared.world().generation.max(1);
    loop {
        tokio::select! {
            reading = readings.recv() => {
                let Some(reading) = reading else {
                    warn!("the input source ended; serving the last good configuration");
                    std::future::pending::<()>().await;
                    continue;
                };
                generation += 1;
                let connected = shared.connected();
                // Building every connected proxy's snapshot is CPU work: off the async workers
                // that carry the xDS streams.
                let o = opts.clone();
                let built = tokio::task::spawn_blocking(move || build(&o, reading, generation, &connected))
                    .await
                    .unwrap_or_else(|e| Err(vec![format!("building the configuration: {e}")]));
                match built {
                    Ok(world) => {
                        record(&shared, &world);
                        info!(generation, services = world.inputs.services.len(),
                              envoy_filters = world.inputs.envoy_filters.len(), "configuration changed, pushing");
                        shared.swap(world);
                    }
                    Err(errors) => reject(&shared, errors),
                }
            }
            done = tasks.join_next() => {
                match done {
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(e)) => warn!("server task ended: {e}"),
                    Some(Ok(Ok(()))) | None => {}
                }
                if tasks.is_empty() {
                    warn!("nothing to serve (no --xds-address, --xds-uds or --admin-address)");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
