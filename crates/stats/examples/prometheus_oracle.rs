//! Rebuilds a real Envoy's stats in a redvoy store and prints our `/stats/prometheus`, so the two
//! can be diffed. Input: a directory with Envoy's `/stats?type=Counters` (`counters.txt`),
//! `?type=Gauges` (`gauges.txt`) and `?type=Histograms&histogram_buckets=detailed` (`hist.txt`).
//! Histograms are refilled from their detailed cumulative bins (`lower,width:count`) and flushed
//! once, so their buckets, sums and counts are Envoy's. An optional `stats_config.json` (the
//! bootstrap's `stats_config`, in Envoy's JSON) configures tags and the matcher.
//!
//! ```text
//! curl -s "$ADMIN/stats?type=Counters" > DIR/counters.txt
//! curl -s "$ADMIN/stats?type=Gauges" > DIR/gauges.txt
//! curl -s "$ADMIN/stats?type=Histograms&histogram_buckets=detailed" > DIR/hist.txt
//! curl -s "$ADMIN/stats/prometheus" > DIR/prom.txt
//! cargo run -p redvoy-stats --example prometheus_oracle -- DIR > ours.txt
//! diff DIR/prom.txt ours.txt   # only stats that changed between the curls differ
//! ```

use std::fs;

use redvoy_stats::{
    HistogramUnit, StatsConfig, StatsMatcher, Store, StringMatchKind, StringMatcher, TagSpecifier,
};
use serde_json::Value;

/// The subset of `envoy.config.metrics.v3.StatsConfig` the store takes, from Envoy's JSON.
fn stats_config(json: &Value) -> Result<StatsConfig, Box<dyn std::error::Error>> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let tags = json
        .get("stats_tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .map(|t| TagSpecifier {
                    tag_name: text(t, "tag_name").unwrap_or_default(),
                    regex: text(t, "regex"),
                    fixed_value: text(t, "fixed_value"),
                })
                .collect()
        })
        .unwrap_or_default();
    let string_matcher = |p: &Value| -> Result<StringMatcher, Box<dyn std::error::Error>> {
        let m = if let Some(s) = text(p, "prefix") {
            StringMatcher::new(StringMatchKind::Prefix, s)
        } else if let Some(s) = text(p, "suffix") {
            StringMatcher::new(StringMatchKind::Suffix, s)
        } else if let Some(s) = text(p, "exact") {
            StringMatcher::new(StringMatchKind::Exact, s)
        } else if let Some(s) = text(p, "contains") {
            StringMatcher::new(StringMatchKind::Contains, s)
        } else if let Some(s) = p.get("safe_regex").and_then(|r| text(r, "regex")) {
            StringMatcher::new(StringMatchKind::SafeRegex, s)
        } else {
            return Err(format!("unsupported matcher {p}").into());
        };
        let ignore_case = p.get("ignore_case").and_then(Value::as_bool) == Some(true);
        Ok(if ignore_case { m.ignoring_case() } else { m })
    };
    let list = |k: &str| -> Result<Option<Vec<StringMatcher>>, Box<dyn std::error::Error>> {
        json.get("stats_matcher")
            .and_then(|m| m.get(k))
            .and_then(|l| l.get("patterns"))
            .and_then(Value::as_array)
            .map(|ps| ps.iter().map(string_matcher).collect())
            .transpose()
    };
    let matcher = if let Some(ms) = list("inclusion_list")? {
        StatsMatcher::Inclusion(ms)
    } else if let Some(ms) = list("exclusion_list")? {
        StatsMatcher::Exclusion(ms)
    } else {
        match json
            .pointer("/stats_matcher/reject_all")
            .and_then(Value::as_bool)
        {
            Some(true) => StatsMatcher::RejectAll,
            _ => StatsMatcher::AcceptAll,
        }
    };
    Ok(StatsConfig {
        stats_tags: tags,
        use_all_default_tags: json
            .get("use_all_default_tags")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        matcher,
        histogram_bucket_settings: Vec::new(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: prometheus_oracle DIR [usedonly]")?;
    let used_only = args.next().as_deref() == Some("usedonly");
    let store = match fs::read_to_string(format!("{dir}/stats_config.json")) {
        Ok(json) => Store::with_config(&stats_config(&serde_json::from_str(&json)?)?)?,
        Err(_) => Store::new(),
    };
    for line in fs::read_to_string(format!("{dir}/counters.txt"))?.lines() {
        let (name, value) = line.rsplit_once(": ").ok_or("bad counter line")?;
        let c = store.counter(name);
        let v: u64 = value.parse()?;
        if v > 0 || !used_only {
            c.add(v);
        }
    }
    for line in fs::read_to_string(format!("{dir}/gauges.txt"))?.lines() {
        let (name, value) = line.rsplit_once(": ").ok_or("bad gauge line")?;
        store.gauge(name).set(value.parse()?);
    }
    let hist = fs::read_to_string(format!("{dir}/hist.txt"))?;
    let mut current = None;
    for line in hist.lines() {
        if let Some(name) = line.strip_suffix(": No recorded values") {
            store.histogram(name, HistogramUnit::Unspecified);
        } else if let Some(name) = line.strip_suffix(':') {
            current = Some(store.histogram(name, HistogramUnit::Unspecified));
        } else if let Some(totals) = line.trim().strip_prefix("totals=") {
            let h = current.take().ok_or("totals without a histogram")?;
            for bin in totals.split(", ").filter(|b| !b.is_empty()) {
                let (lower_width, count) = bin.split_once(':').ok_or("bad bin")?;
                let (lower, _) = lower_width.split_once(',').ok_or("bad bin")?;
                let lower: f64 = lower.parse()?;
                for _ in 0..count.parse::<u64>()? {
                    h.record(lower.round() as u64);
                }
            }
        }
    }
    store.flush();
    print!("{}", store.render_prometheus(used_only, None));
    Ok(())
}
