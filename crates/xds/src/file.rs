//! Filesystem xDS (`path_config_source`): a file holding a `DiscoveryResponse`, re-read when
//! it changes.
//!
//! Envoy re-reads on a move onto the path (or, with `watched_directory`, on any move in that
//! directory). Polling the file's identity (device, inode, size, mtime) and the directory's
//! mtime sees those moves, and also in-place rewrites, which Envoy would miss; reacting to
//! more changes is harmless since an unchanged file yields the same update.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::transport::Event;

/// How often the file's metadata is checked.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The contents of a discovery file (the shape of `redvoy_config::read_discovery_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiscoveryFile {
    pub version_info: String,
    pub resources: Vec<RawResource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawResource {
    pub type_url: String,
    pub name: String,
    pub value: Bytes,
}

/// Reads and decodes the file. Adapter over `redvoy_config::read_discovery_file` (YAML,
/// JSON or binary `DiscoveryResponse`); until that lands, binary protobuf only.
pub(crate) fn read(path: &Path) -> Result<DiscoveryFile, String> {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    let bytes =
        std::fs::read(path).map_err(|e| format!("unable to read file: {}: {e}", path.display()))?;
    let response = DiscoveryResponse::decode(bytes.as_slice())
        .map_err(|e| format!("unable to parse file {}: {e}", path.display()))?;
    let resources = response
        .resources
        .into_iter()
        .map(|any| {
            let name = crate::client::resource_name(&any.value);
            RawResource {
                type_url: any.type_url,
                name,
                value: Bytes::from(any.value),
            }
        })
        .collect();
    Ok(DiscoveryFile {
        version_info: response.version_info,
        resources,
    })
}

#[derive(Clone, PartialEq, Eq)]
struct Fingerprint {
    file: Option<(u64, u64, u64, Option<SystemTime>)>,
    dir: Option<SystemTime>,
}

fn fingerprint(path: &Path, dir: Option<&Path>) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    Fingerprint {
        file: std::fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok())),
        dir: dir.and_then(|d| std::fs::metadata(d).ok()?.modified().ok()),
    }
}

/// Reads the file now and again whenever it changes. Ends when the client task is gone.
pub(crate) async fn watch(
    type_index: usize,
    path: PathBuf,
    dir: Option<PathBuf>,
    events: mpsc::Sender<Event>,
) {
    let mut last: Option<Fingerprint> = None;
    loop {
        let (p, d) = (path.clone(), dir.clone());
        let now = tokio::task::spawn_blocking(move || fingerprint(&p, d.as_deref())).await;
        if let Ok(now) = now {
            if last.as_ref() != Some(&now) {
                last = Some(now);
                // A change between the fingerprint and the read shows up at the next poll
                // as another change, so the last version is always read.
                let p = path.clone();
                let result = tokio::task::spawn_blocking(move || read(&p))
                    .await
                    .unwrap_or_else(|e| Err(format!("file read task failed: {e}")));
                let event = Event::File {
                    type_index,
                    result: Box::new(result),
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
