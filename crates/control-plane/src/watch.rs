//! Watching the input directories: a fingerprint (every manifest's path, size, mtime, ctime and
//! inode: a same-size edit within one mtime tick, or a file replaced by `cp -p`, still shows) taken
//! every [`POLL`]; after a change, the directory must be quiet for the debounce period before
//! it is read, so an editor's write-rename or a `kubectl`-style multi-file update is taken as
//! one. Polling keeps this free of platform watch APIs; a fingerprint of a few hundred files
//! costs microseconds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the directories are looked at.
pub const POLL: Duration = Duration::from_millis(50);
/// Nesting followed when fingerprinting (as when reading).
const MAX_DEPTH: usize = 8;

/// What identifies the directories' content without reading it: path, size, mtime, ctime
/// (seconds and nanoseconds) and inode.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, (i64, i64), u64)>;

/// Fingerprints `dirs` (manifests only, hidden entries skipped, as `k8s::load_dirs` reads them).
pub fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    for d in dirs {
        walk(d, 0, &mut out);
    }
    out.sort();
    out
}

fn walk(dir: &Path, depth: usize, out: &mut Fingerprint) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'))
        {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, depth + 1, out);
            }
        } else if crate::k8s::is_manifest(&path) {
            use std::os::unix::fs::MetadataExt;
            let ctime = (meta.ctime(), meta.ctime_nsec());
            out.push((path, meta.len(), meta.modified().ok(), ctime, meta.ino()));
        }
    }
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
