//! Envoy's `/stats` renderings (`source/server/admin/stats_render.cc`): text and JSON.
//!
//! Both list counters and gauges together in name order, then histograms in name order (Envoy
//! walks its stats in one sorted pass per phase: scalars, then histograms).

use std::fmt::Write as _;

use crate::histogram::QUANTILE_COUNT;
use crate::Histogram;

/// `100 * q` for each supported quantile, as Envoy's `P{:g}` prints it.
pub(crate) const QUANTILE_LABELS: [&str; QUANTILE_COUNT] = [
    "0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100",
];

/// A counter or gauge as rendered: full name and value.
pub(crate) struct Scalar {
    pub(crate) name: String,
    pub(crate) value: u64,
}

pub(crate) fn text(scalars: &[Scalar], histograms: &[(String, Histogram)]) -> String {
    let mut out = String::with_capacity(64 * (scalars.len() + histograms.len()));
    for s in scalars {
        let _ = writeln!(out, "{}: {}", s.name, s.value);
    }
    for (name, h) in histograms {
        let _ = writeln!(out, "{}: {}", name, h.quantile_summary());
    }
    out
}

/// `{"stats":[{"name":..,"value":..},...,{"histograms":{...}}]}`, compact, like Envoy. The
/// histogram element is present only when at least one histogram passed the filters.
pub(crate) fn json(scalars: &[Scalar], histograms: &[(String, Histogram)]) -> String {
    let mut out = String::with_capacity(64 * (scalars.len() + 4 * histograms.len()) + 16);
    out.push_str("{\"stats\":[");
    let mut first = true;
    for s in scalars {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        push_json_string(&mut out, &s.name);
        let _ = write!(out, ",\"value\":{}}}", s.value);
    }
    if !histograms.is_empty() {
        if !first {
            out.push(',');
        }
        out.push_str("{\"histograms\":{\"supported_quantiles\":[");
        out.push_str(&QUANTILE_LABELS.join(","));
        out.push_str("],\"computed_quantiles\":[");
        for (i, (name, h)) in histograms.iter().enumerate() {
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
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
    }
}
