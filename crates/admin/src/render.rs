//! Envoy 1.40's text and JSON for the endpoints that show server objects: `/clusters`,
//! `/listeners`, `/server_info`, `/runtime`, `/memory`, `/certs`, `/logging`. JSON follows the
//! `envoy.admin.v3` protos as Envoy prints them (field-number order, proto3 defaults left out
//! except where Envoy prints them, 64-bit integers as strings).

use std::fmt::Write as _;
use std::time::Duration;

use crate::backend::{
    Address, CertificateDetails, ClusterStatus, CommandLineOptions, ContextCertificates,
    DrainStrategy, HealthFlags, HostStatus, IpVersion, ListenerStatus, Locality, LogLevel,
    MemoryStats, Mode, RuntimeView, ServerInfo, StatKind, Thresholds,
};
use crate::json::{self, Json};
use crate::State;

fn obj(members: Vec<(&str, Json)>) -> Json {
    Json::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

// === addresses ===

/// `Address::asString()`: `1.2.3.4:80`, `[::1]:80`, or the pipe path.
pub(crate) fn address_text(a: &Address) -> String {
    match a {
        Address::Socket { ip, port } if ip.contains(':') => format!("[{ip}]:{port}"),
        Address::Socket { ip, port } => format!("{ip}:{port}"),
        Address::Pipe { path } => path.clone(),
    }
}

/// `envoy.config.core.v3.Address`; `port_value` 0 and an empty address are left out.
fn address_json(a: &Address) -> Json {
    match a {
        Address::Socket { ip, port } => {
            let mut inner = Vec::new();
            if !ip.is_empty() {
                inner.push(("address", Json::str(ip.as_str())));
            }
            if *port != 0 {
                inner.push(("port_value", Json::num(port)));
            }
            obj(vec![("socket_address", obj(inner))])
        }
        Address::Pipe { path } => obj(vec![(
            "pipe",
            obj(vec![("path", Json::str(path.as_str()))]),
        )]),
    }
}

// === /listeners ===

pub(crate) fn listeners_text(listeners: &[ListenerStatus]) -> String {
    let mut out = String::new();
    for l in listeners {
        for a in std::iter::once(&l.local_address).chain(&l.additional_local_addresses) {
            let _ = writeln!(out, "{}::{}", l.name, address_text(a));
        }
    }
    out
}

pub(crate) fn listeners_json(listeners: &[ListenerStatus]) -> String {
    if listeners.is_empty() {
        return Json::Object(Vec::new()).pretty();
    }
    let statuses = listeners
        .iter()
        .map(|l| {
            let mut m = vec![
                ("name", Json::str(l.name.as_str())),
                ("local_address", address_json(&l.local_address)),
            ];
            if !l.additional_local_addresses.is_empty() {
                m.push((
                    "additional_local_addresses",
                    Json::Array(
                        l.additional_local_addresses
                            .iter()
                            .map(address_json)
                            .collect(),
                    ),
                ));
            }
            obj(m)
        })
        .collect();
    obj(vec![("listener_statuses", Json::Array(statuses))]).pretty()
}

// === /clusters ===

/// `{:g}` (printf `%g`): six significant digits, trailing zeros dropped, exponent form outside
/// 1e-4 ..< 1e6.
pub(crate) fn fmt_g(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".to_owned()
        } else if v > 0.0 {
            "inf".to_owned()
        } else {
            "-inf".to_owned()
        };
    }
    const PRECISION: i32 = 6;
    // The exponent after rounding to the precision, as printf decides it.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (PRECISION - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_owned()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// `{}` of a double in `fmt`: the shortest text that reads back the same (`-1`, `99.5`).
fn fmt_double(v: f64) -> String {
    format!("{v}")
}

fn health_flags_text(h: &HealthFlags) -> String {
    let flags = [
        (h.failed_active_hc, "/failed_active_hc"),
        (h.failed_outlier_check, "/failed_outlier_check"),
        (h.failed_eds_health, "/failed_eds_health"),
        (h.degraded_active_hc, "/degraded_active_hc"),
        (h.degraded_eds_health, "/degraded_eds_health"),
        (h.pending_dynamic_removal, "/pending_dynamic_removal"),
        (h.pending_active_hc, "/pending_active_hc"),
        (
            h.excluded_via_immediate_hc_fail,
            "/excluded_via_immediate_hc_fail",
        ),
        (h.active_hc_timeout, "/active_hc_timeout"),
        (h.eds_status_draining, "/eds_status_draining"),
    ];
    let text: String = flags
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect();
    if text.is_empty() {
        "healthy".to_owned()
    } else {
        text
    }
}

pub(crate) fn clusters_text(clusters: &[ClusterStatus]) -> String {
    let mut out = String::new();
    for c in clusters {
        let n = &c.name;
        let _ = writeln!(out, "{n}::observability_name::{}", c.observability_name);
        if let Some(o) = &c.outlier {
            let _ = writeln!(
                out,
                "{n}::outlier::success_rate_average::{}",
                fmt_g(o.success_rate_average)
            );
            let _ = writeln!(
                out,
                "{n}::outlier::success_rate_ejection_threshold::{}",
                fmt_g(o.success_rate_ejection_threshold)
            );
            let _ = writeln!(
                out,
                "{n}::outlier::local_origin_success_rate_average::{}",
                fmt_g(o.local_origin_success_rate_average)
            );
            let _ = writeln!(
                out,
                "{n}::outlier::local_origin_success_rate_ejection_threshold::{}",
                fmt_g(o.local_origin_success_rate_ejection_threshold)
            );
        }
        for (priority, t) in ["default", "high"].iter().zip(&c.circuit_breakers) {
            let _ = writeln!(
                out,
                "{n}::{priority}_priority::max_connections::{}",
                t.max_connections
            );
            let _ = writeln!(
                out,
                "{n}::{priority}_priority::max_pending_requests::{}",
                t.max_pending_requests
            );
            let _ = writeln!(
                out,
                "{n}::{priority}_priority::max_requests::{}",
                t.max_requests
            );
            let _ = writeln!(
                out,
                "{n}::{priority}_priority::max_retries::{}",
                t.max_retries
            );
        }
        let _ = writeln!(out, "{n}::added_via_api::{}", c.added_via_api);
        if !c.eds_service_name.is_empty() {
            let _ = writeln!(out, "{n}::eds_service_name::{}", c.eds_service_name);
        }
        for h in &c.hosts {
            host_text(&mut out, n, h);
        }
    }
    out
}

fn host_text(out: &mut String, cluster: &str, h: &HostStatus) {
    let a = address_text(&h.address);
    // Counters and gauges together, by name (Envoy collects them in a std::map).
    let mut stats: Vec<(&str, u64)> = h.stats.iter().map(|s| (s.name.as_str(), s.value)).collect();
    stats.sort_by(|x, y| x.0.cmp(y.0));
    stats.dedup_by(|x, y| x.0 == y.0);
    for (name, value) in stats {
        let _ = writeln!(out, "{cluster}::{a}::{name}::{value}");
    }
    let _ = writeln!(out, "{cluster}::{a}::hostname::{}", h.hostname);
    let _ = writeln!(
        out,
        "{cluster}::{a}::health_flags::{}",
        health_flags_text(&h.health)
    );
    let _ = writeln!(out, "{cluster}::{a}::weight::{}", h.weight);
    let _ = writeln!(out, "{cluster}::{a}::region::{}", h.locality.region);
    let _ = writeln!(out, "{cluster}::{a}::zone::{}", h.locality.zone);
    let _ = writeln!(out, "{cluster}::{a}::sub_zone::{}", h.locality.sub_zone);
    let _ = writeln!(out, "{cluster}::{a}::canary::{}", h.canary);
    let _ = writeln!(out, "{cluster}::{a}::priority::{}", h.priority);
    let _ = writeln!(
        out,
        "{cluster}::{a}::success_rate::{}",
        fmt_double(h.success_rate)
    );
    let _ = writeln!(
        out,
        "{cluster}::{a}::local_origin_success_rate::{}",
        fmt_double(h.local_origin_success_rate)
    );
}

fn percent(v: f64) -> Json {
    obj(vec![("value", Json::num(fmt_double(v)))])
}

fn thresholds_json(priority: Option<&str>, t: &Thresholds) -> Json {
    let mut m = Vec::new();
    if let Some(p) = priority {
        m.push(("priority", Json::str(p)));
    }
    m.push(("max_connections", Json::num(t.max_connections)));
    m.push(("max_pending_requests", Json::num(t.max_pending_requests)));
    m.push(("max_requests", Json::num(t.max_requests)));
    m.push(("max_retries", Json::num(t.max_retries)));
    obj(m)
}

fn locality_json(l: &Locality) -> Json {
    let mut m = Vec::new();
    for (k, v) in [
        ("region", &l.region),
        ("zone", &l.zone),
        ("sub_zone", &l.sub_zone),
    ] {
        if !v.is_empty() {
            m.push((k, Json::str(v.as_str())));
        }
    }
    obj(m)
}

fn health_json(h: &HealthFlags) -> Json {
    // eds_health_status: DRAINING wins, then UNHEALTHY, DEGRADED, else HEALTHY.
    let eds = if h.eds_status_draining {
        "DRAINING"
    } else if h.failed_eds_health {
        "UNHEALTHY"
    } else if h.degraded_eds_health {
        "DEGRADED"
    } else {
        "HEALTHY"
    };
    let mut m = Vec::new();
    let flag = |m: &mut Vec<(&str, Json)>, set: bool, name| {
        if set {
            m.push((name, Json::Bool(true)));
        }
    };
    flag(&mut m, h.failed_active_hc, "failed_active_health_check");
    flag(&mut m, h.failed_outlier_check, "failed_outlier_check");
    m.push(("eds_health_status", Json::str(eds)));
    flag(&mut m, h.degraded_active_hc, "failed_active_degraded_check");
    flag(&mut m, h.pending_dynamic_removal, "pending_dynamic_removal");
    flag(&mut m, h.pending_active_hc, "pending_active_hc");
    flag(
        &mut m,
        h.excluded_via_immediate_hc_fail,
        "excluded_via_immediate_hc_fail",
    );
    flag(&mut m, h.active_hc_timeout, "active_hc_timeout");
    obj(m)
}

fn host_json(h: &HostStatus) -> Json {
    // Counters first, then gauges, each by name (Envoy's host stat order).
    let mut counters: Vec<_> = h
        .stats
        .iter()
        .filter(|s| s.kind == StatKind::Counter)
        .collect();
    let mut gauges: Vec<_> = h
        .stats
        .iter()
        .filter(|s| s.kind == StatKind::Gauge)
        .collect();
    counters.sort_by(|a, b| a.name.cmp(&b.name));
    gauges.sort_by(|a, b| a.name.cmp(&b.name));
    let stats = counters
        .into_iter()
        .chain(gauges)
        .map(|s| {
            let mut m = Vec::new();
            if s.kind == StatKind::Gauge {
                m.push(("type", Json::str("GAUGE")));
            }
            if s.value != 0 {
                m.push(("value", Json::u64_str(s.value)));
            }
            m.push(("name", Json::str(s.name.as_str())));
            obj(m)
        })
        .collect::<Vec<_>>();
    let mut m = vec![("address", address_json(&h.address))];
    if !stats.is_empty() {
        m.push(("stats", Json::Array(stats)));
    }
    m.push(("health_status", health_json(&h.health)));
    if h.success_rate >= 0.0 {
        m.push(("success_rate", percent(h.success_rate)));
    }
    if h.weight != 0 {
        m.push(("weight", Json::num(h.weight)));
    }
    if !h.hostname.is_empty() {
        m.push(("hostname", Json::str(h.hostname.as_str())));
    }
    if h.priority != 0 {
        m.push(("priority", Json::num(h.priority)));
    }
    if h.local_origin_success_rate >= 0.0 {
        m.push((
            "local_origin_success_rate",
            percent(h.local_origin_success_rate),
        ));
    }
    m.push(("locality", locality_json(&h.locality)));
    obj(m)
}

pub(crate) fn clusters_json(clusters: &[ClusterStatus]) -> String {
    if clusters.is_empty() {
        return Json::Object(Vec::new()).pretty();
    }
    let statuses = clusters
        .iter()
        .map(|c| {
            let mut m = vec![("name", Json::str(c.name.as_str()))];
            if c.added_via_api {
                m.push(("added_via_api", Json::Bool(true)));
            }
            let outlier = c.outlier.unwrap_or_default();
            if outlier.success_rate_ejection_threshold > 0.0 {
                m.push((
                    "success_rate_ejection_threshold",
                    percent(outlier.success_rate_ejection_threshold),
                ));
            }
            if !c.hosts.is_empty() {
                m.push((
                    "host_statuses",
                    Json::Array(c.hosts.iter().map(host_json).collect()),
                ));
            }
            if outlier.local_origin_success_rate_ejection_threshold > 0.0 {
                m.push((
                    "local_origin_success_rate_ejection_threshold",
                    percent(outlier.local_origin_success_rate_ejection_threshold),
                ));
            }
            let [default, high] = &c.circuit_breakers;
            m.push((
                "circuit_breakers",
                obj(vec![(
                    "thresholds",
                    Json::Array(vec![
                        thresholds_json(None, default),
                        thresholds_json(Some("HIGH"), high),
                    ]),
                )]),
            ));
            if !c.observability_name.is_empty() {
                m.push((
                    "observability_name",
                    Json::str(c.observability_name.as_str()),
                ));
            }
            if !c.eds_service_name.is_empty() {
                m.push(("eds_service_name", Json::str(c.eds_service_name.as_str())));
            }
            obj(m)
        })
        .collect();
    obj(vec![("cluster_statuses", Json::Array(statuses))]).pretty()
}

// === /server_info ===

/// `google.protobuf.Duration` in JSON: seconds with 0, 3, 6 or 9 fractional digits.
pub(crate) fn duration_json(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{secs}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}s")
    }
}

fn options_json(o: &CommandLineOptions) -> Json {
    let strs = |v: &[String]| Json::Array(v.iter().map(|s| Json::str(s.as_str())).collect());
    obj(vec![
        ("base_id", Json::u64_str(o.base_id)),
        ("concurrency", Json::num(o.concurrency)),
        ("config_path", Json::str(o.config_path.as_str())),
        ("config_yaml", Json::str(o.config_yaml.as_str())),
        (
            "allow_unknown_static_fields",
            Json::Bool(o.allow_unknown_static_fields),
        ),
        (
            "admin_address_path",
            Json::str(o.admin_address_path.as_str()),
        ),
        (
            "local_address_ip_version",
            Json::str(match o.local_address_ip_version {
                IpVersion::V4 => "v4",
                IpVersion::V6 => "v6",
            }),
        ),
        ("log_level", Json::str(o.log_level.as_str())),
        (
            "component_log_level",
            Json::str(o.component_log_level.as_str()),
        ),
        ("log_format", Json::str(o.log_format.as_str())),
        ("log_path", Json::str(o.log_path.as_str())),
        ("service_cluster", Json::str(o.service_cluster.as_str())),
        ("service_node", Json::str(o.service_node.as_str())),
        ("service_zone", Json::str(o.service_zone.as_str())),
        (
            "file_flush_interval",
            Json::str(duration_json(o.file_flush_interval)),
        ),
        ("drain_time", Json::str(duration_json(o.drain_time))),
        (
            "parent_shutdown_time",
            Json::str(duration_json(o.parent_shutdown_time)),
        ),
        (
            "mode",
            Json::str(match o.mode {
                Mode::Serve => "Serve",
                Mode::Validate => "Validate",
                Mode::InitOnly => "InitOnly",
            }),
        ),
        ("disable_hot_restart", Json::Bool(o.disable_hot_restart)),
        ("enable_mutex_tracing", Json::Bool(o.enable_mutex_tracing)),
        ("restart_epoch", Json::num(o.restart_epoch)),
        ("cpuset_threads", Json::Bool(o.cpuset_threads)),
        (
            "reject_unknown_dynamic_fields",
            Json::Bool(o.reject_unknown_dynamic_fields),
        ),
        ("log_format_escaped", Json::Bool(o.log_format_escaped)),
        ("disabled_extensions", strs(&o.disabled_extensions)),
        (
            "ignore_unknown_dynamic_fields",
            Json::Bool(o.ignore_unknown_dynamic_fields),
        ),
        ("use_dynamic_base_id", Json::Bool(o.use_dynamic_base_id)),
        ("base_id_path", Json::str(o.base_id_path.as_str())),
        (
            "drain_strategy",
            Json::str(match o.drain_strategy {
                DrainStrategy::Gradual => "Gradual",
                DrainStrategy::Immediate => "Immediate",
            }),
        ),
        (
            "enable_fine_grain_logging",
            Json::Bool(o.enable_fine_grain_logging),
        ),
        ("socket_path", Json::str(o.socket_path.as_str())),
        ("socket_mode", Json::num(o.socket_mode)),
        ("enable_core_dump", Json::Bool(o.enable_core_dump)),
        ("stats_tag", strs(&o.stats_tag)),
        (
            "skip_hot_restart_on_no_parent",
            Json::Bool(o.skip_hot_restart_on_no_parent),
        ),
        (
            "skip_hot_restart_parent_stats",
            Json::Bool(o.skip_hot_restart_parent_stats),
        ),
        ("skip_deprecated_logs", Json::Bool(o.skip_deprecated_logs)),
        ("file_flush_min_size", Json::num(o.file_flush_min_size)),
        (
            "log_stacktrace_single_entry",
            Json::Bool(o.log_stacktrace_single_entry),
        ),
    ])
}

/// `/server_info`; `Err` when the backend's node JSON does not parse.
pub(crate) fn server_info_json(
    info: &ServerInfo,
    state: State,
) -> Result<String, json::ParseError> {
    let node = json::parse(&info.node_json)?;
    Ok(obj(vec![
        ("version", Json::str(info.version.as_str())),
        ("state", Json::str(state.as_str())),
        (
            "uptime_current_epoch",
            Json::str(duration_json(info.uptime_current_epoch)),
        ),
        (
            "uptime_all_epochs",
            Json::str(duration_json(info.uptime_all_epochs)),
        ),
        (
            "hot_restart_version",
            Json::str(info.hot_restart_version.as_str()),
        ),
        (
            "command_line_options",
            options_json(&info.command_line_options),
        ),
        ("node", node),
        ("hot_restart_initializing", Json::Bool(false)),
    ])
    .pretty())
}

// === /runtime, /memory, /certs ===

pub(crate) fn runtime_json(view: &RuntimeView) -> String {
    let mut entries: Vec<_> = view.entries.iter().collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries.dedup_by(|a, b| a.key == b.key);
    let entries = entries
        .into_iter()
        .map(|e| {
            (
                e.key.clone(),
                obj(vec![
                    ("final_value", Json::str(e.final_value.as_str())),
                    (
                        "layer_values",
                        Json::Array(
                            e.layer_values
                                .iter()
                                .map(|v| Json::str(v.as_str()))
                                .collect(),
                        ),
                    ),
                ]),
            )
        })
        .collect();
    // Envoy prints `entries` first.
    obj(vec![
        ("entries", Json::Object(entries)),
        (
            "layers",
            Json::Array(view.layers.iter().map(|l| Json::str(l.as_str())).collect()),
        ),
    ])
    .pretty()
}

pub(crate) fn memory_json(m: &MemoryStats) -> String {
    obj(vec![
        ("allocated", Json::u64_str(m.allocated)),
        ("heap_size", Json::u64_str(m.heap_size)),
        ("pageheap_unmapped", Json::u64_str(m.pageheap_unmapped)),
        ("pageheap_free", Json::u64_str(m.pageheap_free)),
        ("total_thread_cache", Json::u64_str(m.total_thread_cache)),
        (
            "total_physical_bytes",
            Json::u64_str(m.total_physical_bytes),
        ),
    ])
    .pretty()
}

/// `/certs`: every context, its CA and chain certificates; `now` (seconds since the epoch)
/// gives `days_until_expiration`.
pub(crate) fn certs_json(contexts: &[ContextCertificates], now: i64) -> String {
    let details = |list: &[CertificateDetails]| {
        Json::Array(
            list.iter()
                .map(|d| {
                    obj(vec![
                        ("path", Json::str(d.path.as_str())),
                        ("serial_number", Json::str(d.serial_number.as_str())),
                        (
                            "subject_alt_names",
                            Json::Array(
                                d.subject_alt_names
                                    .iter()
                                    .map(|(kind, value)| {
                                        obj(vec![(kind, Json::str(value.as_str()))])
                                    })
                                    .collect(),
                            ),
                        ),
                        (
                            "days_until_expiration",
                            Json::u64_str(((d.expiration_time - now) / 86_400).max(0) as u64),
                        ),
                        ("valid_from", Json::str(rfc3339(d.valid_from))),
                        ("expiration_time", Json::str(rfc3339(d.expiration_time))),
                    ])
                })
                .collect(),
        )
    };
    let certificates = contexts
        .iter()
        .map(|c| {
            obj(vec![
                ("ca_cert", details(&c.ca_cert)),
                ("cert_chain", details(&c.cert_chain)),
            ])
        })
        .collect();
    obj(vec![("certificates", Json::Array(certificates))]).pretty()
}

/// A protobuf JSON timestamp of whole seconds: `2026-12-07T14:08:17Z`.
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

// === /logging ===

pub(crate) fn loggers_text(out: &mut String, loggers: &[(String, LogLevel)]) {
    out.push_str("active loggers:\n");
    for (name, level) in loggers {
        let _ = writeln!(out, "  {name}: {}", level.as_str());
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{HostStat, OutlierInfo};

    #[test]
    fn printf_g() {
        for (v, s) in [
            (-1.0, "-1"),
            (0.0, "0"),
            (95.5, "95.5"),
            (1.0 / 3.0, "0.333333"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (99.99999, "100"),
        ] {
            assert_eq!(fmt_g(v), s, "{v}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_json(Duration::from_secs(5)), "5s");
        assert_eq!(duration_json(Duration::from_millis(1500)), "1.500s");
        assert_eq!(duration_json(Duration::from_micros(1)), "0.000001s");
        assert_eq!(duration_json(Duration::from_nanos(7)), "0.000000007s");
    }

    fn redis_cluster() -> ClusterStatus {
        let mut host = HostStatus::new(Address::Socket {
            ip: "127.0.0.1".into(),
            port: 46987,
        });
        host.hostname = "redis-a".into();
        host.locality.region = "r1".into();
        host.locality.zone = "z1".into();
        for s in &mut host.stats {
            match s.name.as_str() {
                "cx_total" | "cx_active" => s.value = 1,
                "rq_total" => s.value = 2,
                _ => {}
            }
        }
        ClusterStatus {
            name: "redis_cluster".into(),
            observability_name: "redis_cluster".into(),
            added_via_api: false,
            eds_service_name: String::new(),
            circuit_breakers: [Thresholds::default(); 2],
            outlier: None,
            hosts: vec![host],
        }
    }

    #[test]
    fn clusters_text_matches_envoy() {
        // Observed on Envoy 1.40 after SET and GET through a redis_proxy.
        let expected = "redis_cluster::observability_name::redis_cluster
redis_cluster::default_priority::max_connections::1024
redis_cluster::default_priority::max_pending_requests::1024
redis_cluster::default_priority::max_requests::1024
redis_cluster::default_priority::max_retries::3
redis_cluster::high_priority::max_connections::1024
redis_cluster::high_priority::max_pending_requests::1024
redis_cluster::high_priority::max_requests::1024
redis_cluster::high_priority::max_retries::3
redis_cluster::added_via_api::false
redis_cluster::127.0.0.1:46987::cx_active::1
redis_cluster::127.0.0.1:46987::cx_connect_fail::0
redis_cluster::127.0.0.1:46987::cx_total::1
redis_cluster::127.0.0.1:46987::rq_active::0
redis_cluster::127.0.0.1:46987::rq_error::0
redis_cluster::127.0.0.1:46987::rq_pending_active::0
redis_cluster::127.0.0.1:46987::rq_success::0
redis_cluster::127.0.0.1:46987::rq_timeout::0
redis_cluster::127.0.0.1:46987::rq_total::2
redis_cluster::127.0.0.1:46987::hostname::redis-a
redis_cluster::127.0.0.1:46987::health_flags::healthy
redis_cluster::127.0.0.1:46987::weight::1
redis_cluster::127.0.0.1:46987::region::r1
redis_cluster::127.0.0.1:46987::zone::z1
redis_cluster::127.0.0.1:46987::sub_zone::
redis_cluster::127.0.0.1:46987::canary::false
redis_cluster::127.0.0.1:46987::priority::0
redis_cluster::127.0.0.1:46987::success_rate::-1
redis_cluster::127.0.0.1:46987::local_origin_success_rate::-1
";
        assert_eq!(clusters_text(&[redis_cluster()]), expected);
    }

    #[test]
    fn clusters_json_matches_envoy() {
        let expected = r#"{
 "cluster_statuses": [
  {
   "name": "redis_cluster",
   "host_statuses": [
    {
     "address": {
      "socket_address": {
       "address": "127.0.0.1",
       "port_value": 46987
      }
     },
     "stats": [
      {
       "name": "cx_connect_fail"
      },
      {
       "value": "1",
       "name": "cx_total"
      },
      {
       "name": "rq_error"
      },
      {
       "name": "rq_success"
      },
      {
       "name": "rq_timeout"
      },
      {
       "value": "2",
       "name": "rq_total"
      },
      {
       "type": "GAUGE",
       "value": "1",
       "name": "cx_active"
      },
      {
       "type": "GAUGE",
       "name": "rq_active"
      },
      {
       "type": "GAUGE",
       "name": "rq_pending_active"
      }
     ],
     "health_status": {
      "eds_health_status": "HEALTHY"
     },
     "weight": 1,
     "hostname": "redis-a",
     "locality": {
      "region": "r1",
      "zone": "z1"
     }
    }
   ],
   "circuit_breakers": {
    "thresholds": [
     {
      "max_connections": 1024,
      "max_pending_requests": 1024,
      "max_requests": 1024,
      "max_retries": 3
     },
     {
      "priority": "HIGH",
      "max_connections": 1024,
      "max_pending_requests": 1024,
      "max_requests": 1024,
      "max_retries": 3
     }
    ]
   },
   "observability_name": "redis_cluster"
  }
 ]
}
"#;
        assert_eq!(clusters_json(&[redis_cluster()]), expected);
        assert_eq!(clusters_json(&[]), "{}\n");
    }

    #[test]
    fn outlier_pipe_priority_and_flags() {
        let mut c = redis_cluster();
        c.name = "od".into();
        c.observability_name = "od".into();
        c.outlier = Some(OutlierInfo::default());
        let mut pipe = HostStatus::new(Address::Pipe {
            path: "/tmp/adm/redis.sock".into(),
        });
        pipe.priority = 1;
        pipe.locality.sub_zone = "sz".into();
        pipe.health.failed_active_hc = true;
        pipe.health.failed_outlier_check = true;
        pipe.stats = vec![HostStat {
            name: "cx_total".into(),
            kind: StatKind::Counter,
            value: 0,
        }];
        c.hosts = vec![pipe];
        let text = clusters_text(&[c.clone()]);
        assert!(text.starts_with(
            "od::observability_name::od\nod::outlier::success_rate_average::-1\nod::outlier::success_rate_ejection_threshold::-1\nod::outlier::local_origin_success_rate_average::-1\nod::outlier::local_origin_success_rate_ejection_threshold::-1\nod::default_priority::max_connections::1024\n"
        ));
        assert!(text.contains(
            "od::/tmp/adm/redis.sock::health_flags::/failed_active_hc/failed_outlier_check\n"
        ));
        assert!(text.contains("od::/tmp/adm/redis.sock::priority::1\n"));
        let json = clusters_json(&[c]);
        assert!(
            json.contains("\"pipe\": {\n       \"path\": \"/tmp/adm/redis.sock\"\n      }"),
            "{json}"
        );
        assert!(json.contains("\"failed_active_health_check\": true,\n      \"failed_outlier_check\": true,\n      \"eds_health_status\": \"HEALTHY\""));
        assert!(json.contains("\"weight\": 1,\n     \"priority\": 1,\n     \"locality\": {\n      \"sub_zone\": \"sz\"\n     }"));
    }

    #[test]
    fn listeners_match_envoy() {
        let ls = vec![
            ListenerStatus {
                name: "v6".into(),
                local_address: Address::Socket {
                    ip: "::1".into(),
                    port: 35261,
                },
                additional_local_addresses: vec![Address::Socket {
                    ip: "127.0.0.1".into(),
                    port: 37985,
                }],
            },
            ListenerStatus {
                name: "pipe_l".into(),
                local_address: Address::Pipe {
                    path: "/tmp/adm/l.sock".into(),
                },
                additional_local_addresses: vec![],
            },
        ];
        assert_eq!(
            listeners_text(&ls),
            "v6::[::1]:35261\nv6::127.0.0.1:37985\npipe_l::/tmp/adm/l.sock\n"
        );
        let expected = r#"{
 "listener_statuses": [
  {
   "name": "v6",
   "local_address": {
    "socket_address": {
     "address": "::1",
     "port_value": 35261
    }
   },
   "additional_local_addresses": [
    {
     "socket_address": {
      "address": "127.0.0.1",
      "port_value": 37985
     }
    }
   ]
  },
  {
   "name": "pipe_l",
   "local_address": {
    "pipe": {
     "path": "/tmp/adm/l.sock"
    }
   }
  }
 ]
}
"#;
        assert_eq!(listeners_json(&ls), expected);
        assert_eq!(listeners_json(&[]), "{}\n");
        assert_eq!(listeners_text(&[]), "");
    }

    #[test]
    fn runtime_memory_certs() {
        assert_eq!(
            runtime_json(&RuntimeView::default()),
            "{\n \"entries\": {},\n \"layers\": []\n}\n"
        );
        let view = RuntimeView {
            layers: vec!["static".into(), "admin".into()],
            entries: vec![
                crate::backend::RuntimeEntry {
                    key: "redis.foo".into(),
                    final_value: "1".into(),
                    layer_values: vec!["1".into(), String::new()],
                },
                crate::backend::RuntimeEntry {
                    key: "a".into(),
                    final_value: "x".into(),
                    layer_values: vec![String::new(), "x".into()],
                },
            ],
        };
        assert_eq!(
            runtime_json(&view),
            "{\n \"entries\": {\n  \"a\": {\n   \"final_value\": \"x\",\n   \"layer_values\": [\n    \"\",\n    \"x\"\n   ]\n  },\n  \"redis.foo\": {\n   \"final_value\": \"1\",\n   \"layer_values\": [\n    \"1\",\n    \"\"\n   ]\n  }\n },\n \"layers\": [\n  \"static\",\n  \"admin\"\n ]\n}\n"
        );
        assert_eq!(
            memory_json(&MemoryStats {
                allocated: 8162920,
                ..MemoryStats::default()
            }),
            "{\n \"allocated\": \"8162920\",\n \"heap_size\": \"0\",\n \"pageheap_unmapped\": \"0\",\n \"pageheap_free\": \"0\",\n \"total_thread_cache\": \"0\",\n \"total_physical_bytes\": \"0\"\n}\n"
        );
        assert_eq!(certs_json(&[], 0), "{\n \"certificates\": []\n}\n");
        assert_eq!(rfc3339(1_796_652_497), "2026-12-07T14:08:17Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
