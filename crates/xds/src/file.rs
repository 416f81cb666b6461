//! Filesystem xDS (`path_config_source`): a file holding a `DiscoveryResponse`, re-read when
//! it changes.
//!
//! Envoy re-reads on a move onto the path (or, with `watched_directory`, on any move in that
//! directory). Polling the file's identity (device, inode, size, mtime) and the directory's
//! mtime sees those moves, and also in-place rewrites, which Envoy would miss; reacting to
//! more changes is harmless since an unchanged file yields the same update.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::transport::Event;

/// How often the file's metadata is checked.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) use redvoy_config::DiscoveryFile;

/// Reads and decodes the file (YAML, JSON, text or binary `DiscoveryResponse`, by name as
/// Envoy picks the format).
pub(crate) fn read(path: &Path) -> Result<DiscoveryFile, String> {
    redvoy_config::read_discovery_file(path).map_err(|e| e.to_string())
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
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = events.closed() => return,
        }
    }
}
