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

    /// One `OutlierDetectionEvent` with `action: EJECT`, fields in proto order as Envoy's JSON
    /// printer writes them: `secs_since_last_action` (a string: uint64) is the time since the
    /// host last came back, absent if it never did.
    pub(crate) fn outlier_eject(
        &self,
        cluster: &str,
        host: &Host,
        kind: &str,
        num_ejections: u32,
        enforced: bool,
        secs_since_last_action: Option<u64>,
    ) {
        self.write(&format!(
            "{{\"type\":\"{kind}\",\"timestamp\":\"{}\"{},\"cluster_name\":{},\
             \"upstream_url\":{},\"action\":\"EJECT\",\"num_ejections\":{num_ejections},\
             \"enforced\":{enforced},\"eject_consecutive_event\":{{}}}}",
            timestamp_millis(),
            secs_since(secs_since_last_action),
            json_string(cluster),
            json_string(host.address_string()),
        ));
    }

    /// `action: UNEJECT`: Envoy leaves `type` unset, so it prints as its zero value
    /// (`CONSECUTIVE_5XX`) whatever the ejection was; the time since the ejection.
    pub(crate) fn outlier_uneject(
        &self,
        cluster: &str,
        host: &Host,
        num_ejections: u32,
        secs_since_ejection: u64,
    ) {
        self.write(&format!(
            "{{\"type\":\"CONSECUTIVE_5XX\",\"timestamp\":\"{}\"{},\"cluster_name\":{},\
             \"upstream_url\":{},\"action\":\"UNEJECT\",\"num_ejections\":{num_ejections},\
             \"enforced\":false}}",
            timestamp_millis(),
            secs_since(Some(secs_since_ejection)),
            json_string(cluster),
            json_string(host.address_string()),
        ));
    }

    /// One `HealthCheckEvent` of the Redis checker, fields in the order Envoy's JSON printer
    /// writes them (proto field numbers), every primitive field printed.
    pub(crate) fn health_check(&self, cluster: &str, host: &Host, event: HealthEvent<'_>) {
        let (before_timestamp, after_timestamp, after_locality) = match event {
            HealthEvent::EjectUnhealthy { failure_type } => (
                format!(
                    ",\"eject_unhealthy_event\":{{\"failure_type\":\"{failure_type}\",\
                     \"http_status_code\":0}}"
                ),
                String::new(),
                String::new(),
            ),
            HealthEvent::AddHealthy { first_check } => (
                format!(",\"add_healthy_event\":{{\"first_check\":{first_check}}}"),
                String::new(),
                String::new(),
            ),
            HealthEvent::Failure {
                failure_type,
                first_check,
            } => (
                String::new(),
                format!(
                    ",\"health_check_failure_event\":{{\"failure_type\":\"{failure_type}\",\
                     \"first_check\":{first_check},\"http_status_code\":0}}"
                ),
                String::new(),
            ),
            HealthEvent::Success => (
                String::new(),
                String::new(),
                ",\"successful_health_check_event\":{}".to_owned(),
            ),
        };
        let locality = &host.eds.locality;
        self.write(&format!(
            "{{\"health_checker_type\":\"REDIS\",\"host\":{{\"socket_address\":{{\
             \"protocol\":\"TCP\",\"address\":{},\"port_value\":{},\"resolver_name\":\"\",\
             \"ipv4_compat\":false,\"network_namespace_filepath\":\"\"}}}},\
             \"cluster_name\":{}{before_timestamp},\"timestamp\":\"{}\"{after_timestamp},\
             \"locality\":{{\"region\":{},\"zone\":{},\"sub_zone\":{}}}{after_locality}}}",
            json_string(&host.address.ip().to_string()),
            host.address.port(),
            json_string(cluster),
            timestamp_millis(),
            json_string(&locality.region),
            json_string(&locality.zone),
            json_string(&locality.sub_zone),
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

/// What a health check event says (Envoy's `HealthCheckEvent` oneof).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HealthEvent<'a> {
    /// The host became unhealthy (`HealthCheckFailureType` name).
    EjectUnhealthy { failure_type: &'a str },
    /// The host became healthy.
    AddHealthy { first_check: bool },
    /// A failed check, logged for a host's first check or with
    /// `always_log_health_check_failures`.
    Failure {
        failure_type: &'a str,
        first_check: bool,
    },
    /// A passing check, with `always_log_health_check_success`.
    Success,
}

/// RFC 3339 UTC with milliseconds, as the protobuf JSON printer writes a timestamp Envoy took
/// in milliseconds: no fraction on a whole second.
fn timestamp_millis() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (date, millis) = (rfc3339_seconds(now.as_secs() as i64), now.subsec_millis());
    if millis == 0 {
        format!("{date}Z")
    } else {
        format!("{date}.{millis:03}Z")
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn rfc3339_seconds(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `,"secs_since_last_action":"N"` when there was a last action.
fn secs_since(secs: Option<u64>) -> String {
    secs.map(|s| format!(",\"secs_since_last_action\":\"{s}\""))
        .unwrap_or_default()
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
