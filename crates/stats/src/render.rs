//! Envoy's `/stats` renderings (`source/server/admin/stats_render.cc`): text and JSON, and
//! `/stats/prometheus` (`source/server/admin/prometheus_stats.cc`).
//!
//! `/stats` lists text readouts, then counters and gauges together in name order, then
//! histograms in name order (Envoy walks its stats in one sorted pass per phase).

use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::histogram::{PrometheusSnapshot, QUANTILE_COUNT, SUPPORTED_BUCKETS};
use crate::{Histogram, Tag, Tagged};

/// `100 * q` for each supported quantile, as Envoy's `P{:g}` prints it.
pub(crate) const QUANTILE_LABELS: [&str; QUANTILE_COUNT] = [
    "0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100",
];

/// A counter or gauge as rendered: full name and value.
pub(crate) struct Scalar {
    pub(crate) name: String,
    pub(crate) value: u64,
}

/// What `/stats` shows, already filtered and in order.
pub(crate) struct Selection {
    /// Text readouts (name, value).
    pub(crate) texts: Vec<(String, String)>,
    pub(crate) scalars: Vec<Scalar>,
    pub(crate) histograms: Vec<(String, Histogram)>,
}

pub(crate) fn text(sel: &Selection) -> String {
    let mut out =
        String::with_capacity(64 * (sel.texts.len() + sel.scalars.len() + sel.histograms.len()));
    for (name, value) in &sel.texts {
        let _ = writeln!(out, "{name}: \"{value}\"");
    }
    for s in &sel.scalars {
        let _ = writeln!(out, "{}: {}", s.name, s.value);
    }
    for (name, h) in &sel.histograms {
        let _ = writeln!(out, "{}: {}", name, h.quantile_summary());
    }
    out
}

/// `{"stats":[{"name":..,"value":..},...,{"histograms":{...}}]}`, compact, like Envoy. Text
/// readouts come first with string values. The histogram element is present only when at least
/// one histogram passed the filters.
pub(crate) fn json(sel: &Selection) -> String {
    let mut out = String::with_capacity(
        64 * (sel.texts.len() + sel.scalars.len() + 4 * sel.histograms.len()) + 16,
    );
    out.push_str("{\"stats\":[");
    let mut first = true;
    for (name, value) in &sel.texts {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        push_json_string(&mut out, name);
        out.push_str(",\"value\":");
        push_json_string(&mut out, value);
        out.push('}');
    }
    for s in &sel.scalars {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        push_json_string(&mut out, &s.name);
        let _ = write!(out, ",\"value\":{}}}", s.value);
    }
    if !sel.histograms.is_empty() {
        if !first {
            out.push(',');
        }
        out.push_str("{\"histograms\":{\"supported_quantiles\":[");
        out.push_str(&QUANTILE_LABELS.join(","));
        out.push_str("],\"computed_quantiles\":[");
        for (i, (name, h)) in sel.histograms.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            push_json_string(&mut out, name);
            out.push_str(",\"values\":[");
            let nan = [f64::NAN; QUANTILE_COUNT];
            let (interval, cumulative) = h.computed_quantiles().unwrap_or((nan, nan));
            for q in 0..QUANTILE_COUNT {
                if q > 0 {
                    out.push(',');
                }
                out.push_str("{\"cumulative\":");
                push_json_number(&mut out, cumulative[q]);
                out.push_str(",\"interval\":");
                push_json_number(&mut out, interval[q]);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push_str("]}}");
    }
    out.push_str("]}");
    out
}

/// One stat as `/stats/prometheus` renders it.
pub(crate) struct PromMetric {
    pub(crate) name: String,
    pub(crate) tagged: Tagged,
    pub(crate) value: PromValue,
}

pub(crate) enum PromValue {
    Number(u64),
    Text(String),
    Histogram(PrometheusSnapshot),
}

/// The whole `/stats/prometheus` body: counter families, gauge families, text readout families
/// (rendered as gauges), histogram families.
pub(crate) fn prometheus(
    counters: Vec<PromMetric>,
    gauges: Vec<PromMetric>,
    texts: Vec<PromMetric>,
    histograms: Vec<PromMetric>,
) -> String {
    let mut out = String::with_capacity(
        96 * (counters.len() + gauges.len() + texts.len() + 24 * histograms.len()),
    );
    for (metrics, kind) in [
        (counters, "counter"),
        (gauges, "gauge"),
        (texts, "gauge"),
        (histograms, "histogram"),
    ] {
        for family in families(metrics) {
            let metric = prometheus_name(&family[0].tagged.extracted);
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for m in &family {
                let labels = labels(&m.tagged.tags);
                match &m.value {
                    PromValue::Number(v) => {
                        let _ = writeln!(out, "{metric}{{{labels}}} {v}");
                    }
                    PromValue::Text(v) => {
                        let sep = if labels.is_empty() { "" } else { "," };
                        let _ = writeln!(
                            out,
                            "{metric}{{{labels}{sep}text_value=\"{}\"}} 0",
                            label_value(v)
                        );
                    }
                    PromValue::Histogram(h) => histogram_lines(&mut out, &metric, &labels, h),
                }
            }
        }
    }
    out
}

/// Groups metrics by tag-extracted name; families and their members in Envoy's order.
fn families(mut metrics: Vec<PromMetric>) -> Vec<Vec<PromMetric>> {
    metrics.sort_by(|a, b| {
        segment_cmp(&a.tagged.extracted, &b.tagged.extracted)
            .then_with(|| segment_cmp(&a.name, &b.name))
    });
    let mut out: Vec<Vec<PromMetric>> = Vec::new();
    for m in metrics {
        match out.last_mut() {
            Some(f) if f[0].tagged.extracted == m.tagged.extracted => f.push(m),
            _ => out.push(vec![m]),
        }
    }
    out
}

/// Envoy's `SymbolTable::lessThan`: names compared `.`-token by token, a name that is a prefix
/// of the other first. Differs from plain string order when a token is a prefix of another and
/// the longer one continues with a character below `.` (`down` < `down-cluster`).
fn segment_cmp(a: &str, b: &str) -> Ordering {
    a.split('.').cmp(b.split('.'))
}

fn histogram_lines(out: &mut String, metric: &str, labels: &str, h: &PrometheusSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, count) in SUPPORTED_BUCKETS.iter().zip(h.buckets.iter()) {
        let _ = writeln!(
            out,
            "{metric}_bucket{{{labels}{sep}le=\"{}\"}} {count}",
            fmt_g(*bound, PROMETHEUS_PRECISION)
        );
    }
    let _ = writeln!(
        out,
        "{metric}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(
        out,
        "{metric}_sum{{{labels}}} {}",
        fmt_g(h.sum, PROMETHEUS_PRECISION)
    );
    let _ = writeln!(out, "{metric}_count{{{labels}}} {}", h.count);
}

/// Envoy prints bucket bounds and sums with `{:.32g}`.
const PROMETHEUS_PRECISION: usize = 32;

/// `envoy_` + the tag-extracted name with every character outside `[a-zA-Z0-9_]` replaced by
/// `_` (one `_` per character, as RE2's `ReplaceAll` over UTF-8).
pub(crate) fn prometheus_name(extracted: &str) -> String {
    let mut out = String::with_capacity(extracted.len() + 6);
    out.push_str("envoy_");
    push_sanitized(&mut out, extracted);
    out
}

fn push_sanitized(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// `name="value",...`: names sanitized like metric names, values escaped.
fn labels(tags: &[Tag]) -> String {
    let mut out = String::new();
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_sanitized(&mut out, &t.name);
        out.push_str("=\"");
        out.push_str(&label_value(&t.value));
        out.push('"');
    }
    out
}

/// Envoy's `sanitizeValue` (Prometheus' own text escaping): `\` → `\\`, newline → `\n`,
/// `"` → `\"`.
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// printf's / fmt's `%.{precision}g`: `precision` significant digits, fixed notation when the
/// decimal exponent is in [-4, precision), exponent notation otherwise, trailing zeros and a
/// trailing point removed. Rust's `{:.N$e}` rounds the exact binary value correctly, like glibc.
pub(crate) fn fmt_g(v: f64, precision: usize) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let p = precision.max(1);
    let sci = format!("{:.*e}", p - 1, v);
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i64 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i64 {
        let mantissa = trim_fraction(mantissa);
        return format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
    let decimals = usize::try_from(p as i64 - 1 - exp).unwrap_or(0);
    trim_fraction(&format!("{v:.decimals$}")).to_owned()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn push_json_number(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(&fmt_double(v));
    } else {
        // JSON has no NaN; Envoy writes null for "no data this interval".
        out.push_str("null");
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A double as fmt's `{}` prints it (what Envoy's `fmt::format("{}", d)` gives): the shortest
/// representation that reads back to the same value, in fixed notation when the decimal
/// exponent is in [-4, 16) and as `1.5e+16` / `1e-05` otherwise; `nan`, `inf`, `-inf`.
pub fn fmt_double(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` is also shortest-round-trip; only the layout differs.
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        // Rust's `{}` is shortest-round-trip in fixed notation, which is what fmt prints here.
        return format!("{v}");
    }
    format!(
        "{mantissa}e{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_like_fmt() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (1.0, "1"),
            (92.5, "92.5"),
            (105.0, "105"),
            (151.66666666666666, "151.66666666666666"),
            (1.0333333333333334, "1.0333333333333334"),
            (2.033333333333333, "2.033333333333333"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000015, "1.5e-05"),
            (1e15, "1000000000000000"),
            (1e16, "1e+16"),
            (1.8e6, "1800000"),
            (1.25e20, "1.25e+20"),
            (1e100, "1e+100"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
        ];
        for &(v, want) in cases {
            assert_eq!(fmt_double(v), want, "{v:?}");
        }
    }

    #[test]
    fn g32_prints_like_fmt() {
        // Values as Envoy 1.40 printed them in /stats/prometheus.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (0.5, "0.5"),
            (1.0, "1"),
            (3_600_000.0, "3600000"),
            (114.78260869565218, "114.78260869565218627030844800174"),
            (13.146792601338056, "13.146792601338056272197718499228"),
            (3.1428571428571432, "3.1428571428571432377907513000537"),
            (1e40, "1.0000000000000000303786028427004e+40"),
            (1.5e-5, "1.5000000000000000380012861456169e-05"),
            (0.0001, "0.00010000000000000000479217360238593"),
        ];
        for &(v, want) in cases {
            assert_eq!(fmt_g(v, 32), want, "{v:?}");
        }
        assert_eq!(fmt_g(92.5, 6), "92.5");
        assert_eq!(fmt_g(1234567.0, 6), "1.23457e+06");
    }

    #[test]
    fn names_labels_and_order() {
        assert_eq!(
            prometheus_name("cluster.upstream_cx_total"),
            "envoy_cluster_upstream_cx_total"
        );
        assert_eq!(prometheus_name("a.b-c;d.é"), "envoy_a_b_c_d__");
        let tags = vec![
            Tag {
                name: "envoy.cluster_name".into(),
                value: "a\"b\\c\nd".into(),
            },
            Tag {
                name: "x-y".into(),
                value: "v".into(),
            },
        ];
        assert_eq!(labels(&tags), r#"envoy_cluster_name="a\"b\\c\nd",x_y="v""#);
        assert_eq!(
            segment_cmp("cluster.down.x", "cluster.down-cluster.x"),
            Ordering::Less
        );
        assert_eq!(segment_cmp("http.x", "http1.x"), Ordering::Less);
        assert_eq!(segment_cmp("a.b", "a.b.c"), Ordering::Less);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
    }
}
