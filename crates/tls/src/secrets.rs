//! Secrets and the TLS contexts built from them. A TLS context may name its certificate or
//! validation context as a secret (`SdsSecretConfig`): from `static_resources.secrets`, or
//! from a secret discovery source (ADS, or a `SecretDiscoveryService` stream to a cluster, as
//! Istio's agent serves it). The [`SecretManager`] holds every secret's current value; a
//! [`DynamicTls`] is one cluster's or filter chain's context, rebuilt whenever a secret it
//! uses changes. A rebuilt context applies to new connections; existing ones keep theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use arc_swap::ArcSwapOption;
use redvoy_config::model::{
    self, ConfigSource, ConfigSourceKind, DownstreamTls, SdsSecretConfig, Secret, SecretKind,
    UpstreamTls,
};
use tokio::sync::watch;
use tracing::info;

use crate::{TlsAcceptor, TlsConnector, TlsError, TlsStats};

/// Which secret: its source and its name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretKey {
    pub source: SecretSource,
    pub name: String,
}

/// Where a secret comes from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretSource {
    /// `static_resources.secrets`.
    Static,
    /// The bootstrap's ADS stream.
    Ads,
    /// An `api_config_source` (by its settings, so that equal sources share a key).
    Api(String),
}

impl SecretKey {
    pub fn of(c: &SdsSecretConfig) -> Self {
        let source = match c.sds_config.as_ref().map(|s| &s.kind) {
            None => SecretSource::Static,
            Some(ConfigSourceKind::Ads) => SecretSource::Ads,
            Some(other) => SecretSource::Api(format!("{other:?}")),
        };
        Self {
            source,
            name: c.name.clone(),
        }
    }
}

/// Starts fetching a dynamic secret (installed by whoever runs the xDS clients).
pub type Fetcher = Arc<dyn Fn(&SecretKey, &ConfigSource) + Send + Sync>;

/// The current values of every secret, and the contexts that use them.
#[derive(Default)]
pub struct SecretManager {
    state: Mutex<State>,
    /// The node has an `id` and a `cluster`: Envoy refuses secret discovery without them.
    node_complete: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    values: HashMap<SecretKey, Arc<Secret>>,
    /// Dynamic secrets some context asked for, with their source, in the order first asked.
    requested: HashMap<SecretKey, ConfigSource>,
    requested_order: Vec<SecretKey>,
    /// Each dynamic secret as last accepted (version, encoded resource, when), for
    /// `/config_dump`.
    received: HashMap<SecretKey, Received>,
    users: Vec<Weak<dyn SecretUser>>,
    fetcher: Option<Fetcher>,
    /// Dynamic secrets whose files are re-read when these directories change, with their
    /// modification times as last seen.
    watches: HashMap<SecretKey, Vec<(std::path::PathBuf, Option<std::time::SystemTime>)>>,
    watching: bool,
}

/// How often watched directories are looked at (Envoy reacts to a move in them; the move of a
/// Kubernetes secret update changes the directory's modification time).
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

fn mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).ok()?.modified().ok()
}

/// A dynamic secret as it was received.
#[derive(Debug, Clone)]
pub struct Received {
    pub version: String,
    /// The `Secret` resource, protobuf-encoded.
    pub raw: bytes::Bytes,
    pub at: std::time::SystemTime,
}

/// What a context does when a secret changes: builds itself from the new values, then (once
/// every context built) starts using what it built.
trait SecretUser: Send + Sync {
    fn uses(&self, key: &SecretKey) -> bool;
    fn prepare(
        self: Arc<Self>,
        values: &HashMap<SecretKey, Arc<Secret>>,
    ) -> Result<Install, TlsError>;
}

/// Installs a context built by [`SecretUser::prepare`].
type Install = Box<dyn FnOnce() + Send>;

impl SecretManager {
    /// A manager holding the bootstrap's static secrets.
    pub fn new(static_secrets: &[Secret]) -> Arc<Self> {
        let manager = Self::default();
        {
            let mut state = manager.lock();
            for s in static_secrets {
                state.values.insert(
                    SecretKey {
                        source: SecretSource::Static,
                        name: s.name.clone(),
                    },
                    Arc::new(s.clone()),
                );
            }
        }
        Arc::new(manager)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the node has an `id` and a `cluster` (secret discovery needs both, as in
    /// Envoy).
    pub fn set_node_complete(&self, complete: bool) {
        self.node_complete
            .store(complete, std::sync::atomic::Ordering::Relaxed);
    }

    /// Installs what starts dynamic subscriptions, and starts the ones asked for so far.
    pub fn set_fetcher(&self, fetcher: Fetcher) {
        let requested: Vec<(SecretKey, ConfigSource)> = {
            let mut state = self.lock();
            state.fetcher = Some(Arc::clone(&fetcher));
            state
                .requested
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect()
        };
        for (key, source) in requested {
            fetcher(&key, &source);
        }
    }

    /// The names of the ADS secrets asked for (sorted).
    pub fn ads_names(&self) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<String> = state
            .requested
            .keys()
            .filter(|k| k.source == SecretSource::Ads)
            .map(|k| k.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Notes how an accepted dynamic secret was received (for `/config_dump`).
    pub fn record(&self, key: &SecretKey, version: &str, raw: bytes::Bytes) {
        self.lock().received.insert(
            key.clone(),
            Received {
                version: version.to_owned(),
                raw,
                at: std::time::SystemTime::now(),
            },
        );
    }

    /// Every dynamic secret asked for, by name, with how it was last received (`None`: not
    /// yet, the secret is warming).
    pub fn dynamic_secrets(&self) -> Vec<(String, Option<Received>)> {
        let state = self.lock();
        // In the order first asked for, as Envoy lists its SDS subscriptions.
        let mut out: Vec<(String, Option<Received>)> = Vec::new();
        for k in &state.requested_order {
            if !out.iter().any(|(name, _)| *name == k.name) {
                out.push((k.name.clone(), state.received.get(k).cloned()));
            }
        }
        out
    }

    /// A new value of a dynamic secret (`None`: removed). Every context using it is built
    /// first: if one cannot be, nothing changes and the error is the update's NACK. The same
    /// value again changes nothing (Envoy compares the secret's hash).
    pub fn update(self: &Arc<Self>, key: &SecretKey, secret: Option<Secret>) -> Result<(), String> {
        let mut state = self.lock();
        let Some(secret) = secret else {
            // Envoy keeps using the last value of a removed secret.
            return Ok(());
        };
        if state.values.get(key).is_some_and(|v| **v == secret) {
            return Ok(());
        }
        state.users.retain(|u| u.strong_count() > 0);
        let users: Vec<Arc<dyn SecretUser>> = state
            .users
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|u| u.uses(key))
            .collect();
        let mut next = state.values.clone();
        next.insert(key.clone(), Arc::new(secret));
        let mut installs = Vec::with_capacity(users.len());
        for user in &users {
            installs.push(
                Arc::clone(user)
                    .prepare(&next)
                    .map_err(|e| format!("secret '{}': {e}", key.name))?,
            );
        }
        let watched = next
            .get(key)
            .map(|s| s.watched_directories.clone())
            .unwrap_or_default();
        state.values = next;
        for install in installs {
            install();
        }
        if watched.is_empty() {
            state.watches.remove(key);
        } else {
            let dirs = watched
                .iter()
                .map(|d| {
                    let path = std::path::PathBuf::from(d);
                    let seen = mtime(&path);
                    (path, seen)
                })
                .collect();
            state.watches.insert(key.clone(), dirs);
            self.start_watching(&mut state);
        }
        info!(secret = %key.name, contexts = users.len(), "secret updated");
        Ok(())
    }

    /// Starts the task that re-reads watched secrets' files (once; it ends with the manager).
    fn start_watching(self: &Arc<Self>, state: &mut State) {
        if state.watching {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.watching = true;
        let manager = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                manager.check_watches();
            }
        });
    }

    /// Rebuilds the contexts of every watched secret whose directory changed: their files
    /// are read again. A build that fails (files caught mid-rotation) keeps the contexts as
    /// they were; the rotation's last move is another change.
    fn check_watches(&self) {
        let mut state = self.lock();
        let mut changed = Vec::new();
        for (key, dirs) in state.watches.iter_mut() {
            let mut any = false;
            for (dir, seen) in dirs.iter_mut() {
                let now = mtime(dir);
                if now != *seen {
                    *seen = now;
                    any = true;
                }
            }
            if any {
                changed.push(key.clone());
            }
        }
        for key in changed {
            state.users.retain(|u| u.strong_count() > 0);
            let users: Vec<Arc<dyn SecretUser>> = state
                .users
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|u| u.uses(&key))
                .collect();
            let mut installs = Vec::with_capacity(users.len());
            let mut failed = None;
            for user in &users {
                match Arc::clone(user).prepare(&state.values) {
                    Ok(install) => installs.push(install),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) => {
                    tracing::warn!(secret = %key.name, error = %e, "secret files changed but cannot be used; keeping the last good ones")
                }
                None => {
                    for install in installs {
                        install();
                    }
                    info!(secret = %key.name, "secret files re-read");
                }
            }
        }
    }

    /// Registers a context and returns the values to build it from, under one lock: an
    /// update after this rebuilds the context, so none is missed.
    fn register(
        &self,
        user: Weak<dyn SecretUser>,
        refs: &[&SdsSecretConfig],
    ) -> HashMap<SecretKey, Arc<Secret>> {
        let mut to_fetch = Vec::new();
        let (fetcher, values) = {
            let mut state = self.lock();
            state.users.retain(|u| u.strong_count() > 0);
            state.users.push(user);
            for r in refs {
                let (key, Some(source)) = (SecretKey::of(r), &r.sds_config) else {
                    continue;
                };
                if !state.requested.contains_key(&key) {
                    state.requested.insert(key.clone(), source.clone());
                    state.requested_order.push(key.clone());
                    to_fetch.push((key, source.clone()));
                }
            }
            (state.fetcher.clone(), state.values.clone())
        };
        if let Some(fetcher) = fetcher {
            for (key, source) in to_fetch {
                fetcher(&key, &source);
            }
        }
        values
    }
}

/// One cluster's or filter chain's TLS context, as its secrets make it now: `None` until
/// every secret it names has arrived.
pub struct DynamicTls<T> {
    keys: Vec<SecretKey>,
    /// How long a warming cluster or listener waits for the secrets: the longest
    /// `initial_fetch_timeout` of their sources; `None` (a zero timeout) waits forever.
    warm_limit: Option<std::time::Duration>,
    build: Builder<T>,
    current: ArcSwapOption<T>,
    ready: watch::Sender<bool>,
    stats: Option<TlsStats>,
}

type Builder<T> =
    Box<dyn Fn(&HashMap<SecretKey, Arc<Secret>>) -> Result<Option<T>, TlsError> + Send + Sync>;

impl<T> std::fmt::Debug for DynamicTls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicTls")
            .field("secrets", &self.keys)
            .field("ready", &*self.ready.borrow())
            .finish()
    }
}

/// A cluster's TLS: its connector, rebuilt when its secrets change.
pub type ClientTls = DynamicTls<TlsConnector>;
/// A filter chain's TLS: its acceptor, rebuilt when its secrets change.
pub type ServerTls = DynamicTls<TlsAcceptor>;

impl<T: Send + Sync + 'static> DynamicTls<T> {
    fn start(
        refs: Vec<&SdsSecretConfig>,
        build: Builder<T>,
        stats: Option<TlsStats>,
        manager: &Arc<SecretManager>,
    ) -> Result<Arc<Self>, TlsError> {
        let keys: Vec<SecretKey> = refs.iter().map(|r| SecretKey::of(r)).collect();
        if keys.iter().any(|k| k.source != SecretSource::Static)
            && !manager
                .node_complete
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(TlsError::SdsWithoutNode);
        }
        let timeouts: Vec<std::time::Duration> = refs
            .iter()
            .filter_map(|r| r.sds_config.as_ref())
            .map(|c| c.initial_fetch_timeout)
            .collect();
        let warm_limit = if timeouts.iter().any(|t| t.is_zero()) {
            None
        } else {
            Some(timeouts.into_iter().max().unwrap_or_default())
        };
        {
            let state = manager.lock();
            for key in keys.iter().filter(|k| k.source == SecretSource::Static) {
                if !state.values.contains_key(key) {
                    return Err(TlsError::UnknownStaticSecret(key.name.clone()));
                }
            }
        }
        let (ready, _) = watch::channel(false);
        let this = Arc::new(Self {
            keys,
            warm_limit,
            build,
            current: ArcSwapOption::empty(),
            ready,
            stats,
        });
        let user: Arc<dyn SecretUser> = Arc::clone(&this) as Arc<dyn SecretUser>;
        let values = manager.register(Arc::downgrade(&user), &refs);
        // Built from the values as of registering; an update that came meanwhile has
        // already installed something newer, which this does not replace.
        if let Some(built) = (this.build)(&values)? {
            let previous = this
                .current
                .compare_and_swap(&None::<Arc<T>>, Some(Arc::new(built)));
            if previous.is_none() {
                this.ready.send_replace(true);
            }
        }
        Ok(this)
    }

    /// The context to use for a new connection; `None` while a secret has not arrived (the
    /// connection is refused and counted, as Envoy does).
    pub fn current(&self) -> Option<Arc<T>> {
        self.current.load_full()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Completes once every secret has arrived.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Completes once every secret has arrived, or the sources' `initial_fetch_timeout` ran
    /// out (the cluster or listener then starts without them, as Envoy's does).
    pub async fn wait_warm(&self) {
        match self.warm_limit {
            None => self.wait_ready().await,
            Some(limit) => {
                let _ = tokio::time::timeout(limit, self.wait_ready()).await;
            }
        }
    }

    /// How long a warming cluster or listener waits for the secrets (`None`: forever).
    pub fn warm_limit(&self) -> Option<std::time::Duration> {
        self.warm_limit
    }

    /// The context for a new connection; without one (secrets missing) the connection is
    /// refused and counted (`{down,up}stream_context_secrets_not_ready`).
    fn for_connection(&self, server: bool) -> Option<Arc<T>> {
        let current = self.current();
        if current.is_none() {
            if let Some(stats) = &self.stats {
                stats.on_secrets_not_ready(server);
            }
        }
        current
    }
}

impl<T: Send + Sync + 'static> SecretUser for DynamicTls<T> {
    fn uses(&self, key: &SecretKey) -> bool {
        self.keys.contains(key)
    }

    fn prepare(
        self: Arc<Self>,
        values: &HashMap<SecretKey, Arc<Secret>>,
    ) -> Result<Install, TlsError> {
        let built = (self.build)(values)?.map(Arc::new);
        let this = self;
        Ok(Box::new(move || {
            // Envoy counts every secret update its context sees, complete or not yet.
            if let Some(stats) = &this.stats {
                stats.on_sds_update();
            }
            if let Some(built) = built {
                this.current.store(Some(built));
                this.ready.send_replace(true);
            }
        }))
    }
}

impl ClientTls {
    /// A cluster's TLS from its settings: built now when its secrets are known (files read
    /// now), else once they arrive.
    pub fn new(
        tls: &UpstreamTls,
        stats: Option<TlsStats>,
        manager: &Arc<SecretManager>,
    ) -> Result<Arc<Self>, TlsError> {
        let refs: Vec<&SdsSecretConfig> = tls
            .client_certificate_sds
            .iter()
            .chain(tls.validation_sds.iter())
            .collect();
        let config = tls.clone();
        let build_stats = stats.clone();
        Self::start(
            refs,
            Box::new(move |values| {
                let Some(resolved) = resolve_upstream(&config, values)? else {
                    return Ok(None);
                };
                TlsConnector::new(&resolved, build_stats.clone()).map(Some)
            }),
            stats,
            manager,
        )
    }

    /// The connector for a new connection, counting `upstream_context_secrets_not_ready`
    /// when there is none yet.
    pub fn connector(&self) -> Option<Arc<TlsConnector>> {
        self.for_connection(false)
    }
}

impl ServerTls {
    /// A filter chain's TLS from its settings (see [`ClientTls::new`]).
    pub fn new(
        tls: &DownstreamTls,
        stats: Option<TlsStats>,
        manager: &Arc<SecretManager>,
    ) -> Result<Arc<Self>, TlsError> {
        let refs: Vec<&SdsSecretConfig> = tls
            .certificate_sds
            .iter()
            .chain(tls.validation_sds.iter())
            .collect();
        let config = tls.clone();
        let build_stats = stats.clone();
        Self::start(
            refs,
            Box::new(move |values| {
                let Some(resolved) = resolve_downstream(&config, values)? else {
                    return Ok(None);
                };
                TlsAcceptor::new(&resolved, build_stats.clone()).map(Some)
            }),
            stats,
            manager,
        )
    }

    /// The acceptor for a new connection, counting `downstream_context_secrets_not_ready`
    /// when there is none yet.
    pub fn acceptor(&self) -> Option<Arc<TlsAcceptor>> {
        self.for_connection(true)
    }
}

/// The value of `r` among `values`, which must be of the kind the context expects.
fn lookup<'a>(
    r: &SdsSecretConfig,
    values: &'a HashMap<SecretKey, Arc<Secret>>,
) -> Option<&'a Secret> {
    values.get(&SecretKey::of(r)).map(|s| &**s)
}

fn certificate_of(r: &SdsSecretConfig, secret: &Secret) -> Result<model::TlsCertificate, TlsError> {
    match &secret.kind {
        SecretKind::TlsCertificate(c) => Ok(c.clone()),
        SecretKind::ValidationContext(_) => Err(TlsError::SecretKind {
            name: r.name.clone(),
            expected: "tls_certificate",
        }),
    }
}

/// Envoy's merge of a validation context secret over the inline (default) one: the secret's
/// CA replaces the default's, SAN matchers add up.
fn validation_of(
    r: &SdsSecretConfig,
    secret: &Secret,
    default: &model::ValidationContext,
) -> Result<model::ValidationContext, TlsError> {
    match &secret.kind {
        SecretKind::ValidationContext(v) => Ok(model::ValidationContext {
            trusted_ca: v.trusted_ca.clone().or_else(|| default.trusted_ca.clone()),
            san_matchers: default
                .san_matchers
                .iter()
                .chain(&v.san_matchers)
                .cloned()
                .collect(),
        }),
        SecretKind::TlsCertificate(_) => Err(TlsError::SecretKind {
            name: r.name.clone(),
            expected: "validation_context",
        }),
    }
}

/// A context's certificate and validation context with its named secrets filled in (`None`
/// while one is missing): `(certificate, trusted_ca, san_matchers)`.
type Resolved = (
    Option<model::TlsCertificate>,
    Option<model::DataSource>,
    Vec<model::SanMatcher>,
);

fn resolve(
    certificate: (Option<&model::TlsCertificate>, Option<&SdsSecretConfig>),
    validation: (Option<&SdsSecretConfig>, model::ValidationContext),
    values: &HashMap<SecretKey, Arc<Secret>>,
) -> Result<Option<Resolved>, TlsError> {
    let (inline, certificate_sds) = certificate;
    let certificate = match certificate_sds {
        None => inline.cloned(),
        Some(r) => {
            let Some(secret) = lookup(r, values) else {
                return Ok(None);
            };
            Some(certificate_of(r, secret)?)
        }
    };
    let (validation_sds, default) = validation;
    let validation = match validation_sds {
        None => default,
        Some(r) => {
            let Some(secret) = lookup(r, values) else {
                return Ok(None);
            };
            validation_of(r, secret, &default)?
        }
    };
    Ok(Some((
        certificate,
        validation.trusted_ca,
        validation.san_matchers,
    )))
}

/// The settings with every named secret filled in; `None` while one is missing.
pub(crate) fn resolve_upstream(
    tls: &UpstreamTls,
    values: &HashMap<SecretKey, Arc<Secret>>,
) -> Result<Option<UpstreamTls>, TlsError> {
    let default = model::ValidationContext {
        trusted_ca: tls.trusted_ca.clone(),
        san_matchers: tls.san_matchers.clone(),
    };
    let resolved = resolve(
        (
            tls.client_certificate.as_ref(),
            tls.client_certificate_sds.as_ref(),
        ),
        (tls.validation_sds.as_ref(), default),
        values,
    )?;
    Ok(resolved.map(
        |(client_certificate, trusted_ca, san_matchers)| UpstreamTls {
            client_certificate,
            trusted_ca,
            san_matchers,
            ..tls.clone()
        },
    ))
}

/// See [`resolve_upstream`].
pub(crate) fn resolve_downstream(
    tls: &DownstreamTls,
    values: &HashMap<SecretKey, Arc<Secret>>,
) -> Result<Option<DownstreamTls>, TlsError> {
    let default = model::ValidationContext {
        trusted_ca: tls.trusted_ca.clone(),
        san_matchers: tls.san_matchers.clone(),
    };
    let resolved = resolve(
        (tls.certificate.as_ref(), tls.certificate_sds.as_ref()),
        (tls.validation_sds.as_ref(), default),
        values,
    )?;
    Ok(
        resolved.map(|(certificate, trusted_ca, san_matchers)| DownstreamTls {
            certificate,
            trusted_ca,
            san_matchers,
            ..tls.clone()
        }),
    )
}
