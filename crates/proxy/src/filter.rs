//! One redis_proxy filter's configuration, compiled from the domain types: routes resolved to
//! pool indices, faults indexed by command, auth secrets, stats handles. Immutable and shared
//! by every worker (`Arc`); each worker builds its own pools from `pools`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redvoy_config::model::{self, ReadPolicy};
use redvoy_resp::encode;
use redvoy_runtime::Runtime;
use redvoy_stats::{Counter, Histogram, HistogramUnit, Store};
use redvoy_upstream::{Cluster, ClusterManager};

use crate::faults::{FaultList, Faults};
use crate::router::Router;
use crate::stats::ProxyStats;
use crate::supported_commands::{self, CommandSpec};

/// Runtime key: how long a client over its buffer limit may accept no reply byte.
pub const SLOW_READER_TIMEOUT_KEY: &str = "redvoy.redis_proxy.slow_reader_close_timeout_ms";
const DEFAULT_SLOW_READER_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum FilterConfigError {
    #[error("redis_proxy {stat_prefix}: {message}")]
    Invalid {
        stat_prefix: String,
        message: String,
    },
    /// A filter chain's TLS settings cannot be used (a certificate or key that cannot be read).
    #[error("transport socket: {0}")]
    Tls(#[from] redvoy_tls::TlsError),
}

/// What every worker needs to build its connection pool for one upstream cluster.
pub(crate) struct PoolSpec {
    pub cluster: Arc<Cluster>,
    pub connect_timeout: Duration,
    pub prelude: Bytes,
    pub prelude_replies: usize,
    pub upstream_rq_time: Histogram,
    /// The store and cluster name, when `enable_command_stats` asks for per-command stats.
    pub command_stats: Option<(Store, String)>,
    /// `cluster.<name>.redis_cluster.max_upstream_unknown_connections_reached`.
    pub unknown_limit_reached: Counter,
    /// `cluster.<name>.redis_cluster.upstream_cx_drained`.
    pub cx_drained: Counter,
}

/// A request's command as one filter serves it: the command tables' facts, this filter's
/// `command.<name>.*` stats (an index into `ProxyStats`) and its fault list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command {
    pub spec: CommandSpec,
    pub stats: Option<usize>,
    pub faults: FaultList,
    /// Listed in `custom_commands` (allowed in a transaction whatever its class).
    pub custom: bool,
}

/// A compiled redis_proxy filter.
pub struct FilterConfig {
    pub(crate) stat_prefix: String,
    pub(crate) router: Router,
    /// Indexed by the routes' pool indices; `None` for a cluster the config does not define.
    pub(crate) pools: Vec<Option<PoolSpec>>,
    /// The cluster name of each pool index.
    pool_names: Vec<String>,
    pub(crate) settings: model::ConnPoolSettings,
    pub(crate) stats: ProxyStats,
    pub(crate) passwords: Vec<Bytes>,
    pub(crate) username: Option<Bytes>,
    pub(crate) faults: Faults,
    /// Every supported command as this filter serves it, indexed by `CommandSpec::id`, then
    /// the custom commands.
    commands: Vec<Command>,
    pub(crate) runtime: Runtime,
    /// Matched against the lowercased command, so only lowercase entries ever match (Envoy);
    /// the value indexes `commands`. Entries naming a supported command are not here: that
    /// command keeps its own spec (marked `custom`).
    custom_commands: HashMap<String, usize>,
    /// `command.multi.*`, where Envoy counts every command queued in a transaction.
    pub(crate) multi_stats: Option<usize>,
    /// `protocol_version: RESP3`: nothing but HELLO 3, AUTH and QUIT before `HELLO 3`.
    pub(crate) require_resp3: bool,
    /// The listener's `per_connection_buffer_limit_bytes` (0: none): the reply bytes one
    /// client may have held and expected before the session stops dispatching its requests.
    pub(crate) buffer_limit: usize,
    /// `redis.<stat_prefix>.redvoy_downstream_cx_slow_reader_close`, created on first use so
    /// that `/stats` lists exactly Envoy's names until a slow reader has been closed.
    slow_reader_close: SlowReaderClose,
}

/// A counter Envoy does not have, registered only when it first counts.
struct SlowReaderClose {
    store: Store,
    name: String,
    counter: std::sync::OnceLock<Counter>,
}

impl FilterConfig {
    pub fn new(
        config: &model::RedisProxy,
        clusters: &ClusterManager,
        store: &Store,
        runtime: &Runtime,
        buffer_limit: u32,
    ) -> Result<Self, FilterConfigError> {
        if config.stat_prefix.is_empty() {
            return Err(FilterConfigError::Invalid {
                stat_prefix: String::new(),
                message: "stat_prefix must not be empty".into(),
            });
        }
        let mut names: Vec<String> = Vec::new();
        let router = Router::new(&config.prefix_routes, |cluster| {
            if let Some(i) = names.iter().position(|n| n == cluster) {
                return i;
            }
            names.push(cluster.to_owned());
            names.len() - 1
        });
        let settings = config.settings.clone();
        // Envoy accepts routes to clusters that do not exist; requests on them get
        // `no upstream host`.
        let pools = names
            .iter()
            .map(|name| {
                let cluster = clusters.get(name)?;
                // Envoy registers the pool's counters for every cluster the filter uses.
                for stat in ["connection_rate_limited", "upstream_resp3_hello_failure"] {
                    store.counter(&format!("cluster.{name}.redis_cluster.{stat}"));
                }
                let unknown_limit_reached = store.counter(&format!(
                    "cluster.{name}.redis_cluster.max_upstream_unknown_connections_reached"
                ));
                let cx_drained =
                    store.counter(&format!("cluster.{name}.redis_cluster.upstream_cx_drained"));
                let (prelude, prelude_replies) = prelude(
                    cluster.config.redis_protocol_options.as_ref(),
                    settings.read_policy,
                );
                Some(PoolSpec {
                    connect_timeout: cluster.config.connect_timeout,
                    prelude,
                    prelude_replies,
                    command_stats: settings
                        .enable_command_stats
                        .then(|| (store.clone(), name.clone())),
                    upstream_rq_time: store.histogram(
                        &format!("cluster.{name}.redis_cluster.upstream_commands.upstream_rq_time"),
                        HistogramUnit::Microseconds,
                    ),
                    unknown_limit_reached,
                    cx_drained,
                    cluster,
                })
            })
            .collect();
        let stats = ProxyStats::new(
            store,
            &config.stat_prefix,
            config.latency_in_micros,
            &config.custom_commands,
        );
        let faults = Faults::new(&config.faults);
        let resolve = |name: &str, spec: CommandSpec| Command {
            spec,
            stats: stats.command_index(name),
            faults: faults.list_for(name),
            custom: config.custom_commands.iter().any(|c| c == name),
        };
        // Indexed by `CommandSpec::id`: the table lists every command at its id.
        let mut commands: Vec<Command> = supported_commands::all()
            .iter()
            .map(|(name, spec)| resolve(name, *spec))
            .collect();
        let mut custom_commands = HashMap::new();
        for name in &config.custom_commands {
            if supported_commands::lookup(name).is_some() || custom_commands.contains_key(name) {
                continue;
            }
            let id = commands.len();
            commands.push(resolve(name, CommandSpec::custom(id)));
            custom_commands.insert(name.clone(), id);
        }
        let multi_stats = stats.command_index("multi");
        Ok(Self {
            stat_prefix: config.stat_prefix.clone(),
            router,
            pools,
            pool_names: names,
            settings,
            stats,
            passwords: config.downstream_auth_passwords.clone(),
            username: config.downstream_auth_username.clone(),
            faults,
            commands,
            runtime: runtime.clone(),
            custom_commands,
            multi_stats,
            require_resp3: config.require_resp3,
            buffer_limit: buffer_limit as usize,
            slow_reader_close: SlowReaderClose {
                store: store.clone(),
                name: format!(
                    "redis.{}.redvoy_downstream_cx_slow_reader_close",
                    config.stat_prefix
                ),
                counter: std::sync::OnceLock::new(),
            },
        })
    }

    /// Counts a client closed because it stopped reading its replies.
    pub(crate) fn count_slow_reader_close(&self) {
        let c = &self.slow_reader_close;
        c.counter.get_or_init(|| c.store.counter(&c.name)).inc();
    }

    /// How long a client over its buffer limit may accept no reply byte before it is closed
    /// (runtime `redvoy.redis_proxy.slow_reader_close_timeout_ms`, default 30 s; 0: never).
    pub(crate) fn slow_reader_timeout(&self) -> Option<Duration> {
        let ms = self
            .runtime
            .snapshot()
            .get_integer(SLOW_READER_TIMEOUT_KEY, DEFAULT_SLOW_READER_TIMEOUT_MS);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The command a request names (lowercased), as this filter serves it; `None` when it is
    /// neither supported nor a custom command. One table lookup per request.
    pub(crate) fn command(&self, cmd: &str) -> Option<&Command> {
        let id = match supported_commands::lookup(cmd) {
            Some(spec) => spec.id,
            None => *self.custom_commands.get(cmd)?,
        };
        self.commands.get(id)
    }

    pub fn stat_prefix(&self) -> &str {
        &self.stat_prefix
    }

    /// Whether every cluster this filter routes to is still the version the cluster manager
    /// has (none added, replaced or removed since the filter was built).
    pub fn clusters_current(&self, clusters: &ClusterManager) -> bool {
        self.pool_names.iter().zip(&self.pools).all(|(name, spec)| {
            match (clusters.get(name), spec) {
                (Some(now), Some(spec)) => Arc::ptr_eq(&now, &spec.cluster),
                (None, None) => true,
                _ => false,
            }
        })
    }
}

/// The bytes every new upstream connection starts with: `auth` when the cluster has
/// credentials, then `readonly` when reads may go to replicas (Envoy sends both lowercase and
/// never checks their replies).
fn prelude(
    options: Option<&model::RedisProtocolOptions>,
    read_policy: ReadPolicy,
) -> (Bytes, usize) {
    let mut out = BytesMut::new();
    let mut replies = 0;
    if let Some(opts) = options {
        match (&opts.auth_username, &opts.auth_password) {
            (Some(user), Some(pass)) if !user.is_empty() => {
                encode::command(&mut out, &[b"auth", user, pass]);
                replies += 1;
            }
            (_, Some(pass)) if !pass.is_empty() => {
                encode::command(&mut out, &[b"auth", pass]);
                replies += 1;
            }
            _ => {}
        }
    }
    if read_policy != ReadPolicy::Master {
        encode::command(&mut out, &[b"readonly"]);
        replies += 1;
    }
    (out.freeze(), replies)
}
