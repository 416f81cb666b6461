//! Watching the input directories: a fingerprint (every manifest's path, size, mtime, ctime and
//! inode: a same-size edit within one mtime tick, or a file replaced by `cp -p`, still shows) taken
//! every [`POLL`]; after a change, the directory must be quiet for the debounce period before
//! it is read, so an editor's write-rename or a `kubectl`-style multi-file update is taken as
//! one. Polling keeps this free of platform watch APIs; a fingerprint of a few hundred files
//! costs microseconds.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How often the directories are looked at.
pub const POLL: Duration = Duration::from_millis(50);
/// What identifies the directories' content without reading it: path, size, mtime, ctime
/// (seconds and nanoseconds) and inode.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, (i64, i64), u64)>;

/// Fingerprints the manifests of `dirs`, the files `k8s::load_dirs` reads (a directory that
/// cannot be listed has none: its disappearance is a change too).
pub fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let (files, _) = crate::k8s::manifest_files(dirs);
    files
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            let ctime = (meta.ctime(), meta.ctime_nsec());
            Some((path, meta.len(), meta.modified().ok(), ctime, meta.ino()))
        })
        .collect()
}

/// [`fingerprint`] on a blocking thread (file system calls stay off the async workers).
async fn fingerprint_off_runtime(dirs: &[PathBuf]) -> Fingerprint {
    let dirs = dirs.to_vec();
    tokio::task::spawn_blocking(move || fingerprint(&dirs))
        .await
        .unwrap_or_default()
}

/// Waits until the fingerprint differs from `last` and then stays the same for `debounce`;
/// returns the settled fingerprint.
pub async fn next_change(dirs: &[PathBuf], last: &Fingerprint, debounce: Duration) -> Fingerprint {
    loop {
        tokio::time::sleep(POLL).await;
        let mut seen = fingerprint_off_runtime(dirs).await;
        if &seen == last {
            continue;
        }
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(POLL.min(debounce.max(Duration::from_millis(1)))).await;
            let now = fingerprint_off_runtime(dirs).await;
            if now != seen {
                seen = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= debounce {
                return seen;
            }
        }
    }
}
