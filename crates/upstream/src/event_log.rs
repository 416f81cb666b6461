//! Envoy's event logs as JSON lines appended to a file: outlier ejections
//! (`cluster_manager.outlier_detection.event_log_path`, `OutlierDetectionEvent`) and health
//! check transitions (`HealthCheck.event_log_path`, `HealthCheckEvent`).
//!
//! A write that fails is logged once and dropped: an event log must never stop the data path.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use tracing::warn;

use crate::host::Host;

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct EventLog {
    path: String,
    file: Mutex<Option<File>>,
    warned: AtomicBool,
}

impl EventLog {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            file: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    pub(crate) fn outlier_eject(&self, cluster: &str, host: &Host, kind: &str, num_ejections: u32) {
        self.write(&format!(
            "{{\"type\":\"{kind}\",\"cluster_name\":{},\"upstream_url\":{},\"action\":\"EJECT\",\
             \"num_ejections\":{num_ejections},\"enforced\":true,\"timestamp\":\"{}\"}}",
            json_string(cluster),
            json_string(host.address_string()),
            timestamp()
        ));
    }

    pub(crate) fn outlier_uneject(&self, cluster: &str, host: &Host, num_ejections: u32) {
        self.write(&format!(
            "{{\"cluster_name\":{},\"upstream_url\":{},\"action\":\"UNEJECT\",\
             \"num_ejections\":{num_ejections},\"enforced\":false,\"timestamp\":\"{}\"}}",
            json_string(cluster),
            json_string(host.address_string()),
            timestamp()
        ));
    }

    fn write(&self, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => return self.warn_once(&e),
            }
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                self.warn_once(&e);
            }
        }
    }

    fn warn_once(&self, e: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(path = %self.path, error = %e, "cannot write the event log; events are dropped");
        }
    }
}

/// RFC 3339 UTC with microseconds, as Envoy's JSON timestamps.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_strings() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(json_string("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
