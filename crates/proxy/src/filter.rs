//! One redis_proxy filter's configuration, compiled from the domain types: routes resolved to
//! pool indices, faults indexed by command, auth secrets, stats handles. Immutable and shared
//! by every worker (`Arc`); each worker builds its own pools from `pools`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redvoy_config::model::{self, FaultType, ReadPolicy};
use redvoy_resp::encode;
use redvoy_runtime::Runtime;
use redvoy_stats::{Counter, Histogram, HistogramUnit, Store};
use redvoy_upstream::{Cluster, ClusterManager};

use crate::router::Router;
use crate::stats::ProxyStats;
use crate::supported_commands;

#[derive(Debug, thiserror::Error)]
pub enum FilterConfigError {
    #[error("redis_proxy {stat_prefix}: {message}")]
    Invalid {
        stat_prefix: String,
        message: String,
    },
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

#[derive(Debug, Clone)]
pub(crate) struct FaultEntry {
    pub error: bool,
    /// Integer percent, as Envoy converts the fractional percent.
    pub percent: u32,
    /// Runtime key overriding `percent` (empty: none).
    pub runtime_key: String,
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    by_command: HashMap<String, Vec<FaultEntry>>,
    all: Vec<FaultEntry>,
}

impl Faults {
    fn new(faults: &[model::Fault]) -> Self {
        let entry = |f: &model::Fault| FaultEntry {
            error: f.fault_type == FaultType::Error,
            percent: percent_of(&f.fault_enabled),
            runtime_key: f.fault_enabled.runtime_key.clone(),
            delay: f.delay,
        };
        let mut by_command: HashMap<String, Vec<FaultEntry>> = HashMap::new();
        for f in faults.iter().filter(|f| !f.commands.is_empty()) {
            for c in &f.commands {
                by_command.entry(c.clone()).or_default().push(entry(f));
            }
        }
        let all: Vec<FaultEntry> = faults
            .iter()
            .filter(|f| f.commands.is_empty())
            .map(entry)
            .collect();
        // Faults without a command list apply to every command, after the specific ones.
        for list in by_command.values_mut() {
            list.extend(all.iter().cloned());
        }
        Self { by_command, all }
    }

    /// Envoy's selection: one draw in [0, 100) against cumulative percentages, each taken
    /// from the runtime when the fault names a runtime key.
    pub(crate) fn pick(&self, cmd: &str, runtime: &Runtime) -> Option<&FaultEntry> {
        let list = self.by_command.get(cmd).unwrap_or(&self.all);
        if list.is_empty() {
            return None;
        }
        let snapshot = runtime.snapshot();
        let draw = rand::random::<u64>() % 100;
        let mut cumulative = 0u64;
        for f in list {
            cumulative += if f.runtime_key.is_empty() {
                u64::from(f.percent)
            } else {
                snapshot.get_integer(&f.runtime_key, u64::from(f.percent))
            };
            if draw < cumulative {
                return Some(f);
            }
        }
        None
    }
}

fn percent_of(f: &model::RuntimeFraction) -> u32 {
    if f.denominator == 100 {
        f.numerator
    } else if f.denominator == 0 {
        0
    } else {
        (u64::from(f.numerator) * 100 / u64::from(f.denominator)) as u32
    }
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
    pub(crate) runtime: Runtime,
    /// Matched against the lowercased command, so only lowercase entries ever match (Envoy).
    pub(crate) custom_commands: HashSet<String>,
    /// `protocol_version: RESP3`: nothing but HELLO 3, AUTH and QUIT before `HELLO 3`.
    pub(crate) require_resp3: bool,
}

impl FilterConfig {
    pub fn new(
        config: &model::RedisProxy,
        clusters: &ClusterManager,
        store: &Store,
        runtime: &Runtime,
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
        let command_names = supported_commands::stat_command_names()
            .into_iter()
            .map(str::to_owned)
            .chain(config.custom_commands.iter().cloned());
        let stats = ProxyStats::new(
            store,
            &config.stat_prefix,
            config.latency_in_micros,
            command_names,
        );
        Ok(Self {
            stat_prefix: config.stat_prefix.clone(),
            router,
            pools,
            pool_names: names,
            settings,
            stats,
            passwords: config.downstream_auth_passwords.clone(),
            username: config.downstream_auth_username.clone(),
            faults: Faults::new(&config.faults),
            runtime: runtime.clone(),
            custom_commands: config.custom_commands.iter().cloned().collect(),
            require_resp3: config.require_resp3,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_percent_conversion() {
        let f = |n, d| model::RuntimeFraction {
            runtime_key: String::new(),
            numerator: n,
            denominator: d,
        };
        assert_eq!(percent_of(&f(30, 100)), 30);
        assert_eq!(percent_of(&f(5000, 10_000)), 50);
        assert_eq!(percent_of(&f(1_000_000, 1_000_000)), 100);
    }

    #[test]
    fn fault_pick_at_100_percent() {
        let faults = Faults::new(&[model::Fault {
            fault_type: FaultType::Error,
            fault_enabled: model::RuntimeFraction {
                runtime_key: String::new(),
                numerator: 100,
                denominator: 100,
            },
            delay: Duration::ZERO,
            commands: vec!["get".into()],
        }]);
        let runtime = Runtime::new(Vec::new(), &Store::new());
        assert!(faults.pick("get", &runtime).is_some_and(|f| f.error));
        assert!(faults.pick("set", &runtime).is_none());
    }
}
