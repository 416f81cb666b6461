//! `--mode validate`: builds the stats store, the runtime, the clusters and every listener's
//! filter chains, as Envoy's validate mode builds the config, opening no socket.

use redvoy_config::model;
use redvoy_proxy::FilterConfigError;
use redvoy_runtime::Runtime;
use redvoy_stats::{StatsError, Store};
use redvoy_upstream::{ClusterManager, UpstreamError};

use crate::app::runtime_layers;

/// Why the bootstrap does not validate. The text (with its causes) is what the process prints.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("invalid stats_config")]
    Stats(#[source] StatsError),
    #[error("building clusters")]
    Clusters(#[source] UpstreamError),
    #[error("listener '{name}'")]
    Listener {
        name: String,
        #[source]
        source: FilterConfigError,
    },
}

pub async fn check(bootstrap: &model::Bootstrap) -> Result<(), ValidateError> {
    let store = Store::with_config(&bootstrap.stats_config).map_err(ValidateError::Stats)?;
    let runtime = Runtime::new(runtime_layers(bootstrap), &store);
    // No DNS lookups: as in Envoy's validate mode, a name that resolves only where the config
    // runs must not make it fail or warn here.
    let secrets = redvoy_tls::SecretManager::new(&bootstrap.secrets);
    secrets.set_node_complete(!bootstrap.node.id.is_empty() && !bootstrap.node.cluster.is_empty());
    let clusters = ClusterManager::without_dns(&bootstrap.clusters, &store, secrets)
        .await
        .map_err(ValidateError::Clusters)?;
    for listener in &bootstrap.listeners {
        redvoy_proxy::compile_chains(listener, &clusters, &store, &runtime).map_err(|source| {
            ValidateError::Listener {
                name: listener.name.clone(),
                source,
            }
        })?;
    }
    Ok(())
}
