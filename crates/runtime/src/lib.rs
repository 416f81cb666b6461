//! Envoy's layered runtime: named key/value layers (static layers from the bootstrap's
//! `layered_runtime`, and the admin layer `/runtime_modify` writes), merged into immutable
//! snapshots the data path reads without a lock.
//!
//! Owns: runtime values and the `runtime.*` stats. Must not depend on config or the data path:
//! the binary turns the bootstrap's layers into [`Layer`]s.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use redvoy_stats::{Counter, Gauge, Store};

/// One configured layer, lowest precedence first.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `static_layer`: nested maps already flattened to dotted keys.
    Static {
        name: String,
        values: BTreeMap<String, String>,
    },
    /// `admin_layer`: values set at run time through `/runtime_modify`.
    Admin { name: String },
}

impl Layer {
    fn name(&self) -> &str {
        match self {
            Layer::Static { name, .. } | Layer::Admin { name } => name,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// Envoy's text for `/runtime_modify` without an admin layer.
    #[error("No admin layer specified")]
    NoAdminLayer,
}

/// The merged view at one point in time.
#[derive(Debug, Default)]
pub struct Snapshot {
    values: HashMap<String, String>,
}

impl Snapshot {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Envoy's `getInteger`: the value when it parses as an unsigned integer, else `default`.
    pub fn get_integer(&self, key: &str, default: u64) -> u64 {
        self.get(key).and_then(parse_uint).unwrap_or(default)
    }

    /// Envoy's `featureEnabled(key, FractionalPercent default, random)`: a runtime integer is a
    /// percentage (over 100 means always); otherwise the default fraction decides.
    pub fn feature_enabled(
        &self,
        key: &str,
        numerator: u32,
        denominator: u32,
        random: u64,
    ) -> bool {
        let (numerator, denominator) = match self.get(key).and_then(parse_uint) {
            Some(v) if v > 100 => return true,
            Some(v) => (v, 100),
            None => (u64::from(numerator), u64::from(denominator)),
        };
        denominator > 0 && random % denominator < numerator
    }
}

/// Envoy reads runtime integers from their string form (`"50"`, `" 50"` is not an integer).
fn parse_uint(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        // Envoy also accepts whole doubles written as such ("50.0").
        s.parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d >= 0.0 && d.fract() == 0.0)
            .map(|d| d as u64)
    })
}

struct RuntimeStats {
    admin_overrides_active: Gauge,
    load_success: Counter,
    num_keys: Gauge,
    num_layers: Gauge,
    override_dir_not_exists: Counter,
}

/// The runtime. Cloning shares it.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    layers: Vec<Layer>,
    /// The admin layer's values; the mutex is only taken by `/runtime_modify` and `/runtime`.
    admin: Mutex<BTreeMap<String, String>>,
    snapshot: ArcSwap<Snapshot>,
    stats: RuntimeStats,
}

impl Runtime {
    pub fn new(layers: Vec<Layer>, store: &Store) -> Self {
        let c = |n: &str| store.counter(&format!("runtime.{n}"));
        let g = |n: &str| store.gauge(&format!("runtime.{n}"));
        // Envoy registers these whether or not anything uses them.
        g("deprecated_feature_seen_since_process_start");
        for name in [
            "deprecated_feature_use",
            "load_error",
            "override_dir_exists",
        ] {
            c(name);
        }
        let stats = RuntimeStats {
            admin_overrides_active: g("admin_overrides_active"),
            load_success: c("load_success"),
            num_keys: g("num_keys"),
            num_layers: g("num_layers"),
            override_dir_not_exists: c("override_dir_not_exists"),
        };
        let runtime = Runtime {
            inner: Arc::new(Inner {
                layers,
                admin: Mutex::new(BTreeMap::new()),
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                stats,
            }),
        };
        // Envoy 1.40 loads the runtime twice while starting (loader, then server init).
        runtime.reload();
        runtime.reload();
        runtime
    }

    /// The current values; cheap enough for the data path.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.snapshot.load()
    }

    fn admin_values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.inner
            .admin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn reload(&self) {
        let admin = self.admin_values().clone();
        let mut values = HashMap::new();
        for layer in &self.inner.layers {
            match layer {
                Layer::Static { values: v, .. } => {
                    values.extend(v.iter().map(|(k, v)| (k.clone(), v.clone())))
                }
                Layer::Admin { .. } => {
                    values.extend(admin.iter().map(|(k, v)| (k.clone(), v.clone())))
                }
            }
        }
        let stats = &self.inner.stats;
        stats.num_keys.set(values.len() as u64);
        stats.num_layers.set(self.inner.layers.len() as u64);
        // Envoy only writes this gauge once the admin layer holds overrides.
        if !admin.is_empty() || stats.admin_overrides_active.value() != 0 {
            stats
                .admin_overrides_active
                .set(u64::from(!admin.is_empty()));
        }
        stats.load_success.inc();
        stats.override_dir_not_exists.inc();
        self.inner.snapshot.store(Arc::new(Snapshot { values }));
    }

    /// `/runtime_modify`: sets admin-layer values; an empty value removes the key.
    pub fn modify(&self, changes: &[(String, String)]) -> Result<(), RuntimeError> {
        if !self
            .inner
            .layers
            .iter()
            .any(|l| matches!(l, Layer::Admin { .. }))
        {
            return Err(RuntimeError::NoAdminLayer);
        }
        {
            let mut admin = self.admin_values();
            for (k, v) in changes {
                if v.is_empty() {
                    admin.remove(k);
                } else {
                    admin.insert(k.clone(), v.clone());
                }
            }
        }
        self.reload();
        Ok(())
    }

    /// `/runtime` as Envoy renders it: every key with its final value and its value in each
    /// layer (empty string where the layer lacks it), and the layer names.
    pub fn to_json(&self) -> serde_json::Value {
        let admin = self.admin_values().clone();
        let layer_values: Vec<&BTreeMap<String, String>> = self
            .inner
            .layers
            .iter()
            .map(|l| match l {
                Layer::Static { values, .. } => values,
                Layer::Admin { .. } => &admin,
            })
            .collect();
        let snapshot = self.snapshot();
        let mut entries = serde_json::Map::new();
        let mut keys: Vec<&String> = snapshot.values.keys().collect();
        keys.sort();
        for key in keys {
            let per_layer: Vec<serde_json::Value> = layer_values
                .iter()
                .map(|v| serde_json::Value::String(v.get(key).cloned().unwrap_or_default()))
                .collect();
            entries.insert(
                key.clone(),
                serde_json::json!({
                    "final_value": snapshot.values.get(key).cloned().unwrap_or_default(),
                    "layer_values": per_layer,
                }),
            );
        }
        let layers: Vec<&str> = self.inner.layers.iter().map(Layer::name).collect();
        serde_json::json!({ "entries": entries, "layers": layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(with_admin: bool) -> (Runtime, Store) {
        let store = Store::new();
        let mut layers = vec![Layer::Static {
            name: "static".into(),
            values: BTreeMap::from([("mirror.pct".to_string(), "30".to_string())]),
        }];
        if with_admin {
            layers.push(Layer::Admin {
                name: "admin".into(),
            });
        }
        (Runtime::new(layers, &store), store)
    }

    #[test]
    fn admin_layer_overrides_and_removes() {
        let (rt, store) = runtime(true);
        assert_eq!(rt.snapshot().get_integer("mirror.pct", 0), 30);
        rt.modify(&[("mirror.pct".into(), "1".into()), ("x".into(), "7".into())])
            .unwrap();
        assert_eq!(rt.snapshot().get_integer("mirror.pct", 0), 1);
        assert_eq!(store.value_of("runtime.admin_overrides_active"), Some(1));
        assert_eq!(store.value_of("runtime.num_keys"), Some(2));
        assert_eq!(store.value_of("runtime.load_success"), Some(3));
        let json = rt.to_json();
        assert_eq!(json["entries"]["mirror.pct"]["layer_values"][1], "1");
        assert_eq!(json["layers"][1], "admin");
        rt.modify(&[("mirror.pct".into(), String::new())]).unwrap();
        assert_eq!(rt.snapshot().get_integer("mirror.pct", 0), 30);
    }

    #[test]
    fn modify_without_admin_layer_is_refused() {
        let (rt, _) = runtime(false);
        let err = rt.modify(&[("a".into(), "1".into())]).unwrap_err();
        assert_eq!(err.to_string(), "No admin layer specified");
    }

    #[test]
    fn feature_enabled_semantics() {
        let (rt, _) = runtime(true);
        let s = rt.snapshot();
        // Runtime integer is a percentage.
        assert!(s.feature_enabled("mirror.pct", 0, 100, 29));
        assert!(!s.feature_enabled("mirror.pct", 0, 100, 30));
        // Missing key: the default fraction.
        assert!(s.feature_enabled("nope", 1, 10_000, 0));
        assert!(!s.feature_enabled("nope", 1, 10_000, 1));
        rt.modify(&[("big".into(), "101".into())]).unwrap();
        assert!(rt.snapshot().feature_enabled("big", 0, 100, 99));
    }
}
