//! Wiring of the xDS client (`dynamic_resources`) to the cluster and listener managers: each
//! CDS, EDS and LDS response is decoded into domain types off the data path, applied (valid
//! resources even when others in the same response are refused, as Envoy does), and the
//! data path picks up the result through the managers' atomic swaps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use redvoy_config::model::{self, ConfigSourceKind, GrpcService};
use redvoy_config::{DynamicOptions, ResourceError};
use redvoy_stats::Store;
use redvoy_upstream::ClusterManager;
use redvoy_xds::{
    ChannelOptions, ClientConfig, Handler, Source, StreamConfig, Target, Update, XdsError,
    TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_SECRET,
};
use tokio::sync::watch;
use tracing::debug;

use crate::listener_manager::ListenerManager;

/// `dynamic_resources` that cannot be started (the caller adds the field name).
#[derive(Debug, thiserror::Error)]
pub enum DynamicError {
    #[error("gRPC service cluster '{0}' is not a static cluster")]
    NotStaticCluster(String),
    #[error("gRPC service cluster '{0}' has no endpoint")]
    NoEndpoint(String),
    #[error(
        "gRPC service cluster '{0}': TLS to the control plane is not supported by redvoy yet \
         (refused rather than connecting in plaintext)"
    )]
    TlsControlPlane(String),
    #[error(transparent)]
    Xds(#[from] XdsError),
}

/// Why an xDS response is NACKed. Its text is the NACK's `error_detail`, worded as Envoy's.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    /// One `name: reason` (or Envoy's duplicate message) per refused cluster.
    #[error("Error adding/updating cluster(s) {}", .0.join(", "))]
    Clusters(Vec<String>),
    /// One per refused listener; Envoy ends each with a newline.
    #[error("Error adding/updating listener(s) {}", lines(.0))]
    Listeners(Vec<String>),
    /// The first ClusterLoadAssignment that cannot be decoded.
    #[error("{name}: {reason}")]
    Endpoints { name: String, reason: String },
    #[error("redvoy does not handle {0}")]
    UnknownType(String),
    /// A secret that does not decode, or that a TLS context using it cannot be built from.
    #[error("{0}")]
    Secret(String),
}

fn lines(errors: &[String]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

/// A resource as last accepted, for `/config_dump`.
#[derive(Clone)]
pub struct Accepted {
    pub version: String,
    pub raw: Bytes,
    pub last_updated: SystemTime,
}

/// What `/config_dump` needs of the dynamic clusters and endpoints.
#[derive(Default)]
pub struct DynamicState {
    pub cds_version: String,
    pub clusters: BTreeMap<String, Accepted>,
    pub endpoints: BTreeMap<String, Accepted>,
}

/// Progress of the initial fetches (Envoy's init manager, simplified).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct InitProgress {
    cds_done: bool,
    eds_timed_out: bool,
    lds_done: bool,
}

struct Shared {
    clusters: Arc<ClusterManager>,
    listeners: Arc<ListenerManager>,
    options: DynamicOptions,
    has_cds: bool,
    has_lds: bool,
    progress: Mutex<InitProgress>,
    /// The cluster manager's part of initialization is done (Envoy leaves PRE_INITIALIZING).
    clusters_ready: watch::Sender<bool>,
    ready: watch::Sender<bool>,
    state: Mutex<DynamicState>,
}

/// The running xDS client.
#[derive(Clone)]
pub struct Dynamic {
    shared: Arc<Shared>,
    _client: Arc<redvoy_xds::XdsHandle>,
}

impl Dynamic {
    /// Resolves once CDS's initial fetch is done and its clusters are warm (or timed out):
    /// Envoy's cluster manager initialization, after which the server is INITIALIZING.
    pub async fn clusters_initialized(&self) {
        let mut rx = self.shared.clusters_ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Resolves once the initial fetches are done (or timed out).
    pub async fn initialized(&self) {
        let mut rx = self.shared.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    pub fn state(&self) -> MutexGuard<'_, DynamicState> {
        self.shared.lock_state()
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, DynamicState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// INITIALIZING once CDS is done and its clusters warm (or EDS timed out); LIVE once LDS is
    /// done too.
    fn check_ready(&self) {
        let p = *self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let clusters_ready = !self.has_cds
            || (p.cds_done && (p.eds_timed_out || self.clusters.warming_clusters().is_empty()));
        let listeners_ready = !self.has_lds || p.lds_done;
        if clusters_ready {
            self.clusters_ready
                .send_if_modified(|r| !std::mem::replace(r, true));
        }
        if clusters_ready && listeners_ready {
            self.ready.send_if_modified(|r| !std::mem::replace(r, true));
        }
    }

    fn on_clusters(&self, update: &Update) -> Result<(), Rejection> {
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        let now = SystemTime::now();
        for r in &update.resources {
            let cluster = match redvoy_config::decode_cluster(&r.value, &self.options) {
                Ok(c) => c,
                Err(e) => {
                    if !e.is_decode_error() {
                        self.clusters.count_refused(&r.name);
                    }
                    // A refused cluster keeps its previous version (it is named, so it is not
                    // a removal).
                    seen.insert(r.name.clone());
                    errors.push(format!("{}: {}", r.name, e));
                    continue;
                }
            };
            let name = cluster.name.clone();
            if !seen.insert(name.clone()) {
                errors.push(format!("duplicate cluster {name} found"));
                continue;
            }
            match self.clusters.add_or_update(cluster) {
                Ok(_) => {
                    self.lock_state().clusters.insert(
                        name,
                        Accepted {
                            version: version_of(update, r),
                            raw: r.value.clone(),
                            last_updated: now,
                        },
                    );
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        let mut removed: Vec<String> = update.removed.clone();
        if update.state_of_the_world {
            // Every dynamic cluster the response does not name is removed, even when some of
            // the response was refused (Envoy computes removals from the whole response).
            let known: Vec<String> = self.lock_state().clusters.keys().cloned().collect();
            removed.extend(known.into_iter().filter(|n| !seen.contains(n)));
        }
        for name in removed {
            if let Ok(true) = self.clusters.remove(&name) {
                debug!(cluster = %name, "cluster removed");
            }
            self.lock_state().clusters.remove(&name);
        }
        self.listeners.refresh_filters();
        if errors.is_empty() {
            self.lock_state()
                .cds_version
                .clone_from(&update.version_info);
            Ok(())
        } else {
            Err(Rejection::Clusters(errors))
        }
    }

    /// Secrets asked for on ADS: each applied to the TLS contexts using it; the first that
    /// cannot be used NACKs the update (the ones before it stay applied, as Envoy's
    /// per-secret subscriptions each take their own).
    fn on_secrets(&self, update: &Update) -> Result<(), Rejection> {
        let secrets = self.clusters.secrets();
        for r in &update.resources {
            let secret = redvoy_config::decode_secret(&r.value)
                .map_err(|e| Rejection::Secret(format!("{}: {e}", r.name)))?;
            let key = redvoy_tls::SecretKey {
                source: redvoy_tls::SecretSource::Ads,
                name: r.name.clone(),
            };
            secrets
                .update(&key, Some(secret))
                .map_err(Rejection::Secret)?;
        }
        Ok(())
    }

    fn on_endpoints(&self, update: &Update) -> Result<(), Rejection> {
        let now = SystemTime::now();
        for r in &update.resources {
            let cla = redvoy_config::decode_cluster_load_assignment(&r.value).map_err(|e| {
                Rejection::Endpoints {
                    name: r.name.clone(),
                    reason: e.to_string(),
                }
            })?;
            let name = cla.cluster_name.clone();
            self.clusters.apply_load_assignment(cla);
            self.lock_state().endpoints.insert(
                name,
                Accepted {
                    version: version_of(update, r),
                    raw: r.value.clone(),
                    last_updated: now,
                },
            );
        }
        for name in &update.removed {
            self.clusters.forget_load_assignment(name);
            self.lock_state().endpoints.remove(name);
        }
        self.listeners.refresh_filters();
        self.check_ready();
        Ok(())
    }

    fn on_listeners(&self, update: &Update) -> Result<(), Rejection> {
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        let mut decoded = Vec::new();
        for r in &update.resources {
            match redvoy_config::decode_listener(&r.value, &self.options) {
                Ok(l) => {
                    if !seen.insert(l.name.clone()) {
                        errors.push(format!("duplicate listener {} found", l.name));
                        continue;
                    }
                    decoded.push((l, r));
                }
                // A new listener redvoy cannot run is skipped (an HTTP service's listener in a
                // mesh). An update of a running one is NACKed instead, so the last good
                // listener keeps serving, as Envoy keeps it when it rejects an update.
                Err(ResourceError::Unsupported(reason))
                    if !self.listeners.reject_unsupported
                        && !self.listeners.is_running_dynamic(&r.name) =>
                {
                    seen.insert(r.name.clone());
                    self.listeners
                        .skip(&r.name, reason, &version_of(update, r), r.value.clone());
                }
                Err(e) => {
                    seen.insert(r.name.clone());
                    self.listeners.record_failure(
                        &r.name,
                        e.to_string(),
                        &version_of(update, r),
                        r.value.clone(),
                    );
                    errors.push(format!("{}: {}", r.name, e));
                }
            }
        }
        // Removals first, so that a new listener may take a removed one's address.
        let mut removed: Vec<String> = update.removed.clone();
        if update.state_of_the_world {
            removed.extend(
                self.listeners
                    .dynamic_names()
                    .into_iter()
                    .filter(|n| !seen.contains(n)),
            );
        }
        for name in removed {
            self.listeners.remove(&name);
        }
        for (listener, r) in decoded {
            let name = listener.name.clone();
            if let Err(e) = self.listeners.add_or_update(
                listener,
                false,
                &version_of(update, r),
                r.value.clone(),
            ) {
                self.listeners.record_failure(
                    &name,
                    e.to_string(),
                    &version_of(update, r),
                    r.value.clone(),
                );
                errors.push(format!("{name}: {e}"));
            }
        }
        if errors.is_empty() {
            self.listeners
                .lock()
                .lds_version
                .clone_from(&update.version_info);
            Ok(())
        } else {
            Err(Rejection::Listeners(errors))
        }
    }
}

/// The version shown for one resource: its own (Delta), else the response's.
fn version_of(update: &Update, r: &redvoy_xds::Resource) -> String {
    if r.version.is_empty() {
        update.version_info.clone()
    } else {
        r.version.clone()
    }
}

struct XdsHandler(Arc<Shared>);

impl Handler for XdsHandler {
    /// The client's trait takes the NACK's detail as text.
    fn on_update(&self, update: Update) -> Result<(), String> {
        let result = match update.type_url.as_str() {
            TYPE_CLUSTER => self.0.on_clusters(&update),
            TYPE_ENDPOINT => self.0.on_endpoints(&update),
            TYPE_LISTENER => self.0.on_listeners(&update),
            TYPE_SECRET => self.0.on_secrets(&update),
            other => Err(Rejection::UnknownType(other.to_owned())),
        };
        // The xDS client logs the rejection once, as Envoy's gRPC mux does.
        result.map_err(|e| e.to_string())
    }

    fn eds_names(&self) -> Vec<String> {
        self.0.clusters.eds_service_names()
    }

    fn sds_names(&self) -> Vec<String> {
        self.0.clusters.secrets().ads_names()
    }

    /// Envoy's cluster manager initialisation: every cluster warm, or EDS's initial fetch
    /// timed out.
    fn clusters_warm(&self) -> bool {
        let p = *self
            .0
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.eds_timed_out || self.0.clusters.warming_clusters().is_empty()
    }

    fn on_initial_fetch_done(&self, type_url: &str, timed_out: bool) {
        {
            let mut p = self
                .0
                .progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match type_url {
                TYPE_CLUSTER => p.cds_done = true,
                TYPE_LISTENER => p.lds_done = true,
                TYPE_ENDPOINT if timed_out => {
                    p.eds_timed_out = true;
                    self.0.clusters.finish_warming();
                }
                _ => {}
            }
        }
        self.0.check_ready();
    }
}

/// Where a gRPC service lives (a bootstrap cluster's first endpoint, or a Google gRPC URI) and
/// how to connect to it (the cluster's connect timeout and TCP keepalive; Envoy's defaults for
/// a `google_grpc` target).
fn target(
    bootstrap: &model::Bootstrap,
    service: &GrpcService,
) -> Result<(Target, ChannelOptions), DynamicError> {
    match service {
        GrpcService::EnvoyGrpc { cluster_name } => {
            let cluster = bootstrap
                .clusters
                .iter()
                .find(|c| &c.name == cluster_name)
                .ok_or_else(|| DynamicError::NotStaticCluster(cluster_name.clone()))?;
            if cluster.upstream_tls.is_some() {
                return Err(DynamicError::TlsControlPlane(cluster_name.clone()));
            }
            let endpoint = cluster
                .endpoints
                .first()
                .ok_or_else(|| DynamicError::NoEndpoint(cluster_name.clone()))?;
            let target = match &endpoint.pipe {
                Some(pipe) => Target::Unix(pipe.path.clone().into()),
                None => Target::Tcp(endpoint.address.to_string()),
            };
            let options = ChannelOptions {
                connect_timeout: cluster.connect_timeout,
                tcp_keepalive: cluster.tcp_keepalive,
            };
            Ok((target, options))
        }
        GrpcService::GoogleGrpc { target_uri } => Ok((
            Target::from_google_grpc_uri(target_uri)?,
            ChannelOptions::default(),
        )),
    }
}

pub(crate) fn stream(
    bootstrap: &model::Bootstrap,
    api: &model::ApiConfigSource,
) -> Result<StreamConfig, DynamicError> {
    let (target, connection) = target(bootstrap, &api.grpc_service)?;
    Ok(StreamConfig {
        target,
        api_type: api.api_type,
        set_node_on_first_message_only: api.set_node_on_first_message_only,
        connection,
    })
}

fn source(
    bootstrap: &model::Bootstrap,
    cs: Option<&model::ConfigSource>,
) -> Result<Source, DynamicError> {
    Ok(match cs.map(|c| &c.kind) {
        None => Source::None,
        Some(ConfigSourceKind::Ads) => Source::Ads,
        Some(ConfigSourceKind::Api(api)) => Source::Stream(stream(bootstrap, api)?),
        Some(ConfigSourceKind::Path {
            path,
            watched_directory,
        }) => Source::Path(path.clone(), watched_directory.clone()),
    })
}

/// Starts the xDS client of `dynamic_resources`; `None` when the bootstrap has none.
pub fn start(
    bootstrap: &model::Bootstrap,
    store: &Store,
    clusters: Arc<ClusterManager>,
    listeners: Arc<ListenerManager>,
    options: DynamicOptions,
    sds_names_changed: Arc<tokio::sync::Notify>,
) -> Result<Option<Dynamic>, DynamicError> {
    let Some(dr) = &bootstrap.dynamic_resources else {
        return Ok(None);
    };
    let ads = dr
        .ads_config
        .as_ref()
        .map(|api| stream(bootstrap, api))
        .transpose()?;
    // EDS follows the ADS stream when there is one, else the first static EDS cluster's source.
    let eds_config = bootstrap
        .clusters
        .iter()
        .find_map(|c| c.eds.as_ref().map(|e| e.eds_config.clone()));
    let eds = match (&ads, &eds_config) {
        (Some(_), _) => Source::Ads,
        (None, Some(cs)) => source(bootstrap, Some(cs))?,
        (None, None) => source(bootstrap, dr.cds_config.as_ref())?,
    };
    let timeout = |cs: Option<&model::ConfigSource>| {
        cs.map_or(std::time::Duration::from_secs(15), |c| {
            c.initial_fetch_timeout
        })
    };
    let config = ClientConfig {
        node: bootstrap.node.encoded.clone(),
        cds: source(bootstrap, dr.cds_config.as_ref())?,
        lds: source(bootstrap, dr.lds_config.as_ref())?,
        eds,
        sds: Source::None,
        ads,
        cds_initial_fetch_timeout: timeout(dr.cds_config.as_ref()),
        lds_initial_fetch_timeout: timeout(dr.lds_config.as_ref()),
        // Istio sets 0s on every EDS source; Envoy's default otherwise.
        eds_initial_fetch_timeout: timeout(eds_config.as_ref()),
    };
    let config = ClientConfig {
        sds: if config.ads.is_some() {
            Source::Ads
        } else {
            Source::None
        },
        ..config
    };
    let shared = Arc::new(Shared {
        clusters,
        listeners,
        options,
        has_cds: dr.cds_config.is_some(),
        has_lds: dr.lds_config.is_some(),
        progress: Mutex::new(InitProgress::default()),
        clusters_ready: watch::channel(false).0,
        ready: watch::channel(false).0,
        state: Mutex::new(DynamicState::default()),
    });
    shared.check_ready();
    // A cluster may finish warming on its own (DNS answer, Redis Cluster topology, first
    // health checks), not only on an xDS update: filters naming it are rebuilt, readiness is
    // re-checked, and LDS may start.
    // Subscribed before the client starts, so no change falls between its check and this.
    let mut warming = shared.clusters.warming_changes();
    let handler = Arc::new(XdsHandler(Arc::clone(&shared)));
    let client = Arc::new(redvoy_xds::spawn(config, handler, store)?);
    // A secret asked for on ADS outside an xDS update (a bootstrap cluster's or listener's).
    let sds_client = Arc::downgrade(&client);
    tokio::spawn(async move {
        loop {
            sds_names_changed.notified().await;
            match sds_client.upgrade() {
                Some(client) => client.sds_names_changed(),
                None => return,
            }
        }
    });
    let watcher = Arc::downgrade(&shared);
    let xds = Arc::downgrade(&client);
    tokio::spawn(async move {
        while warming.changed().await.is_ok() {
            match (watcher.upgrade(), xds.upgrade()) {
                (Some(shared), Some(client)) => {
                    // A listener built while its cluster warmed routes to it from now on.
                    shared.listeners.refresh_filters();
                    shared.check_ready();
                    client.clusters_warmed();
                }
                _ => return,
            }
        }
    });
    Ok(Some(Dynamic {
        shared,
        _client: client,
    }))
}
