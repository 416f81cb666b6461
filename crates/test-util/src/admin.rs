//! Reading admin endpoints for comparisons: each stat's kind, `/stats/prometheus` parsed, JSON
//! bodies flattened into rows, with the ports and paths of one run replaced by placeholders.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::compare::{abbrev, Rows};

/// Characters of an unexpected admin body quoted in a panic message.
const BODY_QUOTE: usize = 300;
use crate::proxy::{Proxy, Stats};

/// The `/stats?type=` values and the kind each one lists.
pub const STAT_TYPES: [(&str, &str); 4] = [
    ("Counters", "counter"),
    ("Gauges", "gauge"),
    ("Histograms", "histogram"),
    ("TextReadouts", "text_readout"),
];

// === impl Proxy ===

impl Proxy {
    /// `GET path`: asserts a 200 with a JSON body and returns it, ports and temp paths
    /// replaced by placeholders ([`normalize_json`]).
    pub fn admin_json(&self, path: &str) -> Value {
        let resp = self.admin("GET", path);
        assert_eq!(
            resp.status,
            200,
            "{} GET {path}: status {} body {}",
            self.target(),
            resp.status,
            abbrev(&resp.body, BODY_QUOTE)
        );
        let mut value: Value = serde_json::from_str(&resp.body).unwrap_or_else(|e| {
            panic!(
                "{} GET {path}: not JSON ({e}): {}",
                self.target(),
                abbrev(&resp.body, BODY_QUOTE)
            )
        });
        normalize_json(self, &mut value);
        value
    }

    /// Every stat name (normalized) with its kind (`counter`, `gauge`, `histogram`,
    /// `text_readout`), from `/stats?type=Counters` etc. A name listed under several types
    /// gets them all joined with `+` (which no Envoy stat has).
    pub fn stat_kinds(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for (query, kind) in STAT_TYPES {
            let path = format!("/stats?type={query}");
            let resp = self.admin("GET", &path);
            assert_eq!(
                resp.status,
                200,
                "{} GET {path}: status {} body {}",
                self.target(),
                resp.status,
                abbrev(&resp.body, BODY_QUOTE)
            );
            for name in Stats::parse(&resp.body).values.into_keys() {
                let name = self.normalize(&name);
                out.entry(name)
                    .and_modify(|k| {
                        k.push('+');
                        k.push_str(kind);
                    })
                    .or_insert_with(|| kind.to_string());
            }
        }
        out
    }

    /// `/stats` with names normalized (values as printed).
    pub fn normalized_stats(&self) -> Stats {
        Stats {
            values: self
                .stats()
                .values
                .into_iter()
                .map(|(k, v)| (self.normalize(&k), v))
                .collect(),
        }
    }

    /// `GET /stats/prometheus` (plus `query`, e.g. `?usedonly`), parsed, label values
    /// normalized.
    pub fn prometheus(&self, query: &str) -> Prometheus {
        let path = format!("/stats/prometheus{query}");
        let resp = self.admin("GET", &path);
        assert_eq!(
            resp.status,
            200,
            "{} GET {path}: status {} body {}",
            self.target(),
            resp.status,
            abbrev(&resp.body, BODY_QUOTE)
        );
        let mut parsed = Prometheus::parse(&resp.body)
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.target()));
        for sample in &mut parsed.samples {
            for (_, value) in &mut sample.labels {
                *value = self.normalize(value);
            }
        }
        parsed
    }
}

/// Replaces, in place, this run's specifics in an admin JSON body: `port_value` numbers equal
/// to the proxy's admin or listener ports become their placeholder strings, and strings go
/// through [`Proxy::normalize`].
pub fn normalize_json(proxy: &Proxy, value: &mut Value) {
    let ports = proxy.port_placeholders();
    normalize_value(proxy, &ports, value);
}

fn normalize_value(proxy: &Proxy, ports: &[(u16, String)], value: &mut Value) {
    match value {
        Value::String(s) => *s = proxy.normalize(s),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| normalize_value(proxy, ports, v)),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "port_value" {
                    if let Some(name) = v
                        .as_u64()
                        .and_then(|n| ports.iter().find(|(p, _)| u64::from(*p) == n))
                        .map(|(_, name)| name.clone())
                    {
                        *v = Value::String(name);
                        continue;
                    }
                }
                normalize_value(proxy, ports, v);
            }
        }
        _ => {}
    }
}

/// The leaves of `value` as `(path, JSON text)` rows, e.g.
/// `/configs/[@type=ClustersConfigDump]/static_clusters/[cluster.name=redis]/cluster/lb_policy`
/// => `"RING_HASH"`. Array elements are named by their `name` (or `cluster.name`,
/// `listener.name`, `cluster_name`, the last segment of `@type`...) when every element has a
/// distinct one, so that order differences and missing elements show as such; by index
/// otherwise. Empty objects and arrays are leaves (`{}`, `[]`). Keys named in `skip` are
/// left out (e.g. `last_updated`).
pub fn json_leaves(value: &Value, skip: &[&str]) -> Rows {
    let mut out = Vec::new();
    leaves(value, String::new(), skip, &mut out);
    out
}

fn leaves(value: &Value, path: String, skip: &[&str], out: &mut Rows) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                if !skip.contains(&k.as_str()) {
                    leaves(v, format!("{path}/{k}"), skip, out);
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let keys: Vec<Option<String>> = items.iter().map(element_key).collect();
            let distinct: BTreeSet<&Option<String>> = keys.iter().collect();
            let keyed = keys.iter().all(Option::is_some) && distinct.len() == keys.len();
            for (i, (item, key)) in items.iter().zip(&keys).enumerate() {
                let segment = match key {
                    Some(key) if keyed => format!("[{key}]"),
                    _ => i.to_string(),
                };
                leaves(item, format!("{path}/{segment}"), skip, out);
            }
        }
        other => out.push((
            if path.is_empty() { "/".into() } else { path },
            other.to_string(),
        )),
    }
}

/// A name for an array element, for [`json_leaves`]: its own `name` or `cluster_name`, that of
/// a wrapped resource (`{"cluster": {"name": ...}}`), or the last segment of its `@type`.
fn element_key(item: &Value) -> Option<String> {
    const OWN: [&str; 2] = ["name", "cluster_name"];
    const WRAPPED: [&str; 5] = [
        "cluster",
        "listener",
        "endpoint_config",
        "route_config",
        "active_state",
    ];
    let obj = item.as_object()?;
    for key in OWN {
        if let Some(Value::String(s)) = obj.get(key) {
            return Some(format!("{key}={s}"));
        }
    }
    for wrapper in WRAPPED {
        if let Some(inner) = obj.get(wrapper).and_then(element_key) {
            return Some(format!("{wrapper}.{inner}"));
        }
    }
    match obj.get("@type") {
        Some(Value::String(t)) => Some(format!("@type={}", t.rsplit('.').next().unwrap_or(t))),
        _ => None,
    }
}

/// The shape of `value` as `(path, type)` rows: object keys are kept, array elements merged
/// under `[]` (the union of their shapes), leaves typed `string`, `number`, `bool`, `null`,
/// `{}` or `[]`. Keys named in `skip` are left out. Two bodies of the same shape give the same
/// rows whatever their values.
pub fn json_shape(value: &Value, skip: &[&str]) -> Rows {
    let mut set = BTreeMap::new();
    shape(value, String::new(), skip, &mut set);
    set.into_iter().collect()
}

fn shape(value: &Value, path: String, skip: &[&str], out: &mut BTreeMap<String, String>) {
    let mut leaf = |kind: &str| {
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.clone()
        };
        out.entry(path)
            .and_modify(|k: &mut String| {
                if !k.split('|').any(|x| x == kind) {
                    k.push('|');
                    k.push_str(kind);
                }
            })
            .or_insert_with(|| kind.to_string());
    };
    match value {
        Value::Object(map) if map.is_empty() => leaf("{}"),
        Value::Array(items) if items.is_empty() => leaf("[]"),
        Value::Null => leaf("null"),
        Value::Bool(_) => leaf("bool"),
        Value::Number(_) => leaf("number"),
        Value::String(_) => leaf("string"),
        Value::Object(map) => {
            for (k, v) in map {
                if !skip.contains(&k.as_str()) {
                    shape(v, format!("{path}/{k}"), skip, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, format!("{path}/[]"), skip, out);
            }
        }
    }
}

/// `/stats/prometheus` text, parsed.
#[derive(Clone, Debug, Default)]
pub struct Prometheus {
    /// `# TYPE <family> <type>` lines.
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: String,
}

// === impl Prometheus ===

impl Prometheus {
    /// Parses the Prometheus text exposition format (0.0.4) as Envoy writes it.
    pub fn parse(text: &str) -> Result<Prometheus, String> {
        let mut out = Prometheus::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(family), Some(kind), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("line {}: bad TYPE line {line:?}", n + 1));
                };
                if out
                    .families
                    .insert(family.to_string(), kind.to_string())
                    .is_some()
                {
                    return Err(format!("line {}: family {family} typed twice", n + 1));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples
                .push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?);
        }
        Ok(out)
    }

    /// The family a sample belongs to: its name, or its name without `_bucket`, `_sum`,
    /// `_count` when that is a histogram or summary family.
    pub fn family_of<'a>(&'a self, sample_name: &'a str) -> &'a str {
        if self.families.contains_key(sample_name) {
            return sample_name;
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample_name.strip_suffix(suffix) {
                if self.families.contains_key(base) {
                    return base;
                }
            }
        }
        sample_name
    }

    /// For each sample name, the distinct label-name lists its samples carry (sorted, each
    /// rendered `{a,b}`, joined by a space).
    pub fn label_names(&self) -> BTreeMap<String, String> {
        let mut sets: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for sample in &self.samples {
            let mut names: Vec<&str> = sample.labels.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            sets.entry(&sample.name)
                .or_default()
                .insert(format!("{{{}}}", names.join(",")));
        }
        sets.into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().collect::<Vec<_>>().join(" ")))
            .collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        // `key="value"` pairs separated by `,` (a trailing one allowed), up to `}`; Envoy
        // writes `{}` for a metric without tags.
        let mut chars = body.char_indices();
        let end = loop {
            let mut key = String::new();
            let mut closing = None;
            for (i, c) in chars.by_ref() {
                match c {
                    '}' if key.is_empty() => {
                        closing = Some(i);
                        break;
                    }
                    '=' => break,
                    ',' if key.is_empty() => {}
                    c => key.push(c),
                }
            }
            if let Some(i) = closing {
                break i;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?} has no quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, other)) => value.push(other),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                return Err(format!("label {key:?}: unterminated value"));
            }
            labels.push((key, value));
        };
        rest = &body[end + 1..];
    }
    let value = rest.trim();
    if value.is_empty() {
        return Err("no value".to_string());
    }
    Ok(Sample {
        name,
        labels,
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# TYPE envoy_cluster_upstream_rq_total counter\n\
                    envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 5\n\
                    # TYPE envoy_x histogram\n\
                    envoy_x_bucket{envoy_cluster_name=\"a\",le=\"0.5\"} 0\n\
                    envoy_x_sum{envoy_cluster_name=\"a\\\"b\"} 0\n\
                    envoy_server_live 1\n\
                    envoy_cluster_manager_cluster_added{} 2\n";
        let p = Prometheus::parse(text).unwrap();
        assert_eq!(p.families.len(), 2);
        assert_eq!(p.samples.len(), 5);
        assert!(p.samples[4].labels.is_empty());
        assert_eq!(p.samples[4].value, "2");
        assert_eq!(
            p.samples[1].labels,
            vec![
                ("envoy_cluster_name".to_string(), "a".to_string()),
                ("le".to_string(), "0.5".to_string())
            ]
        );
        assert_eq!(p.samples[2].labels[0].1, "a\"b");
        assert_eq!(p.samples[3].value, "1");
        assert_eq!(p.family_of("envoy_x_bucket"), "envoy_x");
        assert_eq!(
            p.label_names().get("envoy_x_bucket").unwrap(),
            "{envoy_cluster_name,le}"
        );
        assert_eq!(p.label_names().get("envoy_server_live").unwrap(), "{}");
    }

    #[test]
    fn json_rows_key_arrays_by_name() {
        let v: Value = serde_json::from_str(
            r#"{"a":[{"cluster":{"name":"x","n":1}},{"cluster":{"name":"y"}}],"b":[1,2],"c":{},"last_updated":"t"}"#,
        )
        .unwrap();
        let mut rows = json_leaves(&v, &["last_updated"]);
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("/a/[cluster.name=x]/cluster/n".into(), "1".into()),
                ("/a/[cluster.name=x]/cluster/name".into(), "\"x\"".into()),
                ("/a/[cluster.name=y]/cluster/name".into(), "\"y\"".into()),
                ("/b/0".into(), "1".into()),
                ("/b/1".into(), "2".into()),
                ("/c".into(), "{}".into()),
            ]
        );
        let shape = json_shape(&v, &[]);
        assert!(shape.contains(&("/a/[]/cluster/n".into(), "number".into())));
        assert!(shape.contains(&("/b/[]".into(), "number".into())));
    }
}
