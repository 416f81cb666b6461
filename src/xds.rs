//! Wiring of the xDS client (`dynamic_resources`) to the cluster and listener managers.

use std::sync::Arc;

use anyhow::Result;
use redvoy_config::model;
use redvoy_stats::Store;
use redvoy_upstream::ClusterManager;

use crate::listener_manager::ListenerManager;

/// The running xDS client.
#[derive(Clone)]
pub struct Dynamic {}

impl Dynamic {
    /// Resolves once the initial fetches are done (or timed out).
    pub async fn initialized(&self) {}
}

pub fn start(
    bootstrap: &model::Bootstrap,
    _store: &Store,
    _clusters: Arc<ClusterManager>,
    _listeners: Arc<ListenerManager>,
) -> Result<Option<Dynamic>> {
    if bootstrap.dynamic_resources.is_none() {
        return Ok(None);
    }
    Ok(Some(Dynamic {}))
}
