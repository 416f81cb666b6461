//! Wires secret discovery to the secret manager: a secret whose `sds_config` is an
//! `api_config_source` gets a `SecretDiscoveryService` stream of its own (Istio's agent on
//! `sds-grpc`), one whose `sds_config` is `ads` is asked for on the ADS stream.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use redvoy_config::model::{self, ConfigSourceKind};
use redvoy_stats::Store;
use redvoy_tls::{SecretKey, SecretManager};
use redvoy_xds::{SecretHandler, SecretSubscription};
use tokio::sync::Notify;
use tracing::warn;

/// Applies a secret's SDS updates to the manager.
struct Handler {
    secrets: Arc<SecretManager>,
    key: SecretKey,
}

impl SecretHandler for Handler {
    fn on_secret(&self, name: &str, value: Bytes, version: &str) -> Result<(), String> {
        let secret = redvoy_config::decode_secret(&value).map_err(|e| e.to_string())?;
        if secret.name != name {
            return Err(format!("secret '{}' received for '{name}'", secret.name));
        }
        self.secrets.update(&self.key, Some(secret))?;
        self.secrets.record(&self.key, version, value);
        Ok(())
    }
}

/// Installs the fetcher on `secrets`. `ads_names_changed` is notified when a secret asked
/// for on ADS is new (the xDS client then re-reads [`SecretManager::ads_names`]).
pub fn install(
    bootstrap: &model::Bootstrap,
    secrets: &Arc<SecretManager>,
    store: &Store,
    ads_names_changed: Arc<Notify>,
) {
    let subscriptions: Arc<Mutex<Vec<SecretSubscription>>> = Arc::default();
    let bootstrap = bootstrap.clone();
    let store = store.clone();
    let manager = Arc::downgrade(secrets);
    secrets.set_fetcher(Arc::new(move |key, source| {
        let Some(manager) = manager.upgrade() else {
            return;
        };
        match &source.kind {
            ConfigSourceKind::Ads => ads_names_changed.notify_one(),
            ConfigSourceKind::Api(api) => {
                let stream = match crate::xds::stream(&bootstrap, api) {
                    Ok(stream) => stream,
                    Err(e) => {
                        warn!(secret = %key.name, error = %e, "cannot subscribe to the secret");
                        return;
                    }
                };
                let handler = Arc::new(Handler {
                    secrets: manager,
                    key: key.clone(),
                });
                match redvoy_xds::subscribe_secret(
                    &stream,
                    &bootstrap.node.encoded,
                    &key.name,
                    handler,
                    &store,
                ) {
                    Ok(subscription) => subscriptions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(subscription),
                    Err(e) => {
                        warn!(secret = %key.name, error = %e, "cannot subscribe to the secret")
                    }
                }
            }
            // Refused by the config.
            ConfigSourceKind::Path { .. } => {}
        }
    }));
}
