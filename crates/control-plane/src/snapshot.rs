//! A world (one good reading of the inputs) and, per proxy, the snapshot it is sent: the
//! generated resources with that proxy's EnvoyFilters applied, `--resolve-cluster-local` done,
//! every listener and cluster checked with the checks redvoy applies to xDS resources (what
//! Envoy would NACK is refused here, before it reaches any proxy), and versioned by content.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::DynamicMessage;

use crate::envoyfilter::{self, PatchContext};
use crate::istio::{self, Generated, Settings};
use crate::k8s::Inputs;
use crate::proxy::ProxyIdentity;
use crate::reflect::str_field;

pub const TYPE_LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const TYPE_CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const TYPE_ENDPOINT: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// One resource as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    /// xxHash64 of the encoded resource, in hex.
    pub version: String,
    pub any: Any,
    /// The resource's JSON, for `/debug/config`.
    pub json: serde_json::Value,
}

impl Resource {
    fn new(name: String, type_url: &str, msg: &DynamicMessage) -> Self {
        let value = msg.encode_to_vec();
        let version = format!("{:016x}", xxhash_rust::xxh64::xxh64(&value, 0));
        // Passwords and keys an EnvoyFilter may carry are not shown on the debug port.
        let json = redvoy_config::redacted_json(msg);
        Self {
            name,
            version,
            any: Any {
                type_url: type_url.to_owned(),
                value,
            },
            json,
        }
    }
}

/// What one proxy is sent.
#[derive(Debug, Clone, Default)]
pub struct ProxySnapshot {
    pub listeners: Vec<Resource>,
    pub clusters: Vec<Resource>,
    pub endpoints: BTreeMap<String, Resource>,
    /// `namespace/name` of the EnvoyFilters applied.
    pub envoy_filters: Vec<String>,
    /// Resources redvoy would skip (Envoy takes them), names that did not resolve.
    pub warnings: Vec<String>,
}

impl ProxySnapshot {
    /// The resources of `type_url`; for EDS only `names` (an unknown name gets an empty
    /// assignment, as istiod sends, so the cluster can finish warming).
    pub fn resources(&self, type_url: &str, names: &BTreeSet<String>) -> Vec<Cow<'_, Resource>> {
        match type_url {
            TYPE_LISTENER => self.listeners.iter().map(Cow::Borrowed).collect(),
            TYPE_CLUSTER => self.clusters.iter().map(Cow::Borrowed).collect(),
            TYPE_ENDPOINT => names
                .iter()
                .map(|n| match self.endpoints.get(n) {
                    Some(r) => Cow::Borrowed(r),
                    None => Cow::Owned(empty_assignment(n)),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A version for the whole set of `type_url` a SotW client would get.
    pub fn version(&self, type_url: &str, names: &BTreeSet<String>) -> String {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for r in self.resources(type_url, names) {
            h.update(r.name.as_bytes());
            h.update(r.version.as_bytes());
        }
        format!("{:016x}", h.digest())
    }
}

fn empty_assignment(name: &str) -> Resource {
    let msg = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        ..Default::default()
    };
    let value = msg.encode_to_vec();
    Resource {
        name: name.to_owned(),
        version: format!("{:016x}", xxhash_rust::xxh64::xxh64(&value, 0)),
        any: Any {
            type_url: TYPE_ENDPOINT.to_owned(),
            value,
        },
        json: serde_json::json!({"cluster_name": name}),
    }
}

/// One good reading of the inputs, shared by every stream until the next.
#[derive(Debug)]
pub struct World {
    pub inputs: Inputs,
    pub generated: Generated,
    pub settings: Settings,
    pub root_namespace: String,
    /// Increases with every world taken.
    pub generation: u64,
    /// Snapshots by what selection reads of a proxy (see [`World::cache_key`]); errors too, so
    /// a proxy whose configuration fails does not rebuild it on every request.
    cache: Mutex<HashMap<ProxyIdentity, Result<Arc<ProxySnapshot>, String>>>,
    /// Node metadata keys some patch's `match.proxy.metadata` reads.
    metadata_keys: BTreeSet<String>,
    /// What is accepted but cannot take effect here (patches for inbound or gateway objects,
    /// filters with `targetRefs`).
    pub warnings: Vec<String>,
}

/// Snapshots kept per world at most; beyond, the cache starts over (pods come and go while the
/// files stay the same).
const MAX_CACHED_SNAPSHOTS: usize = 4096;

impl World {
    /// Generates from `inputs` and builds the snapshot of every proxy in `proxies` and of one
    /// stand-in proxy per EnvoyFilter (its namespace and selector labels), so a patch that
    /// breaks a listener is caught before any proxy it selects connects. Any failure refuses
    /// the world.
    pub fn build(
        inputs: Inputs,
        settings: Settings,
        root_namespace: String,
        generation: u64,
        proxies: &[ProxyIdentity],
    ) -> Result<Self, Vec<String>> {
        let generated = istio::generate(&inputs, &settings).map_err(|e| vec![e.to_string()])?;
        let metadata_keys = inputs
            .envoy_filters
            .iter()
            .flat_map(|f| f.patches.iter())
            .filter_map(|p| p.proxy.as_ref())
            .flat_map(|m| m.metadata_keys().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let mut world = Self {
            inputs,
            generated,
            settings,
            root_namespace,
            generation,
            cache: Mutex::new(HashMap::new()),
            metadata_keys,
            warnings: Vec::new(),
        };
        let mut probes: Vec<ProxyIdentity> = proxies.to_vec();
        // One stand-in per EnvoyFilter (its namespace, its selector's labels), and one per
        // namespace carrying the labels of every selector there and in the root namespace, so
        // that a patch on what another filter of the same workload added is seen applying.
        let mut union: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for f in &world.inputs.envoy_filters {
            let labels = f.workload_selector.clone().unwrap_or_default();
            probes.push(ProxyIdentity {
                id: format!("probe for EnvoyFilter {}/{}", f.namespace, f.name),
                namespace: f.namespace.clone(),
                labels: labels.clone(),
                ..ProxyIdentity::default()
            });
            union.entry(f.namespace.clone()).or_default().extend(labels);
        }
        let root_labels = union
            .get(&world.root_namespace)
            .cloned()
            .unwrap_or_default();
        for (namespace, labels) in &union {
            let mut all = root_labels.clone();
            all.extend(labels.clone());
            probes.push(ProxyIdentity {
                id: format!("probe for namespace {namespace}"),
                namespace: namespace.clone(),
                labels: all,
                ..ProxyIdentity::default()
            });
        }
        let mut errors = Vec::new();
        for p in &probes {
            if let Err(e) = world.snapshot_for(p) {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
        // A patch that changed nothing for any proxy is almost always a typo (a filter name,
        // a port): istiod counts it in `pilot_envoy_filter_status` and moves on; here it is
        // refused, so the mistake shows before it reaches a mesh.
        for f in &world.inputs.envoy_filters {
            if f.has_target_refs {
                world.warnings.push(format!(
                    "{}: EnvoyFilter {}/{}: targetRefs attach it to waypoints and gateways, never to a sidecar: not applied",
                    f.origin, f.namespace, f.name
                ));
                continue;
            }
            for p in &f.patches {
                if !p.targets_generated_objects() {
                    world.warnings.push(format!(
                        "{}: EnvoyFilter {}/{}: spec.configPatches[{}]: context {:?}: only sidecar-outbound objects are generated here, so it applies to nothing",
                        f.origin, f.namespace, f.name, p.index, p.context
                    ));
                    continue;
                }
                if p.must_match() && !p.applied.load(std::sync::atomic::Ordering::Relaxed) {
                    errors.push(format!(
                        "{}: EnvoyFilter {}/{}: spec.configPatches[{}]: {:?} {:?} matches nothing in any proxy's configuration",
                        f.origin, f.namespace, f.name, p.index, p.apply_to, p.operation
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(world)
        } else {
            Err(errors)
        }
    }

    /// Nothing to serve (generation 0): what runs until a first reading succeeds.
    pub fn empty(settings: Settings, root_namespace: String) -> Self {
        Self {
            inputs: Inputs::default(),
            generated: Generated::default(),
            settings,
            root_namespace,
            generation: 0,
            cache: Mutex::new(HashMap::new()),
            metadata_keys: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }

    /// What EnvoyFilter selection reads of a proxy: two proxies with the same key get the same
    /// snapshot.
    fn cache_key(&self, proxy: &ProxyIdentity) -> ProxyIdentity {
        ProxyIdentity {
            id: String::new(),
            namespace: proxy.namespace.clone(),
            labels: proxy.labels.clone(),
            metadata: proxy
                .metadata
                .iter()
                .filter(|(k, _)| self.metadata_keys.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            istio_version: proxy.istio_version.clone(),
        }
    }

    /// The snapshot of `proxy`, built once per world.
    pub fn snapshot_for(&self, proxy: &ProxyIdentity) -> Result<Arc<ProxySnapshot>, String> {
        let key = self.cache_key(proxy);
        if let Some(s) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return s.clone();
        }
        let snapshot = self.build_snapshot(proxy).map(Arc::new);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_SNAPSHOTS {
            cache.clear();
        }
        cache.insert(key, snapshot.clone());
        snapshot
    }

    /// Where an EnvoyFilter came from, for error messages.
    fn origin_of(&self, keys: &[String]) -> String {
        let origins: Vec<String> = self
            .inputs
            .envoy_filters
            .iter()
            .filter(|f| keys.contains(&format!("{}/{}", f.namespace, f.name)))
            .map(|f| format!("EnvoyFilter {}/{} ({})", f.namespace, f.name, f.origin))
            .collect();
        if origins.is_empty() {
            "no EnvoyFilter".to_owned()
        } else {
            origins.join(", ")
        }
    }

    fn build_snapshot(&self, proxy: &ProxyIdentity) -> Result<ProxySnapshot, String> {
        let patches = envoyfilter::select(&self.inputs.envoy_filters, proxy, &self.root_namespace);
        let keys = patches.keys();
        let fail = |what: String| format!("{what} [after {}]", self.origin_of(&keys));
        let ctx = PatchContext::SidecarOutbound;
        let listeners = envoyfilter::apply_listener_patches(
            ctx,
            &patches,
            self.generated.listeners.clone(),
            false,
        )
        .map_err(&fail)?;
        let mut clusters = Vec::new();
        for c in &self.generated.clusters {
            if let Some(c) =
                envoyfilter::apply_cluster_merge(ctx, &patches, c.cluster.clone(), &c.hosts)
                    .map_err(&fail)?
            {
                clusters.push(c);
            }
        }
        clusters.extend(envoyfilter::inserted_clusters(ctx, &patches));
        let mut out = ProxySnapshot {
            envoy_filters: keys.clone(),
            ..ProxySnapshot::default()
        };
        if self.settings.resolve_cluster_local {
            for c in clusters.iter_mut() {
                for name in istio::resolve_cluster_local(c, &self.inputs, &self.settings.domain) {
                    out.warnings
                        .push(format!("{name}: no such Service endpoint to resolve to"));
                }
            }
        }
        let opts = redvoy_config::DynamicOptions::default();
        let mut seen = BTreeSet::new();
        for l in &listeners {
            let r = Resource::new(str_field(l, "name"), TYPE_LISTENER, l);
            if !seen.insert(("l", r.name.clone())) {
                return Err(fail(format!("listener {}: defined twice", r.name)));
            }
            check(
                redvoy_config::decode_listener(&r.any.value, &opts),
                "listener",
                &r.name,
                &mut out.warnings,
            )
            .map_err(&fail)?;
            out.listeners.push(r);
        }
        for c in &clusters {
            let r = Resource::new(str_field(c, "name"), TYPE_CLUSTER, c);
            if !seen.insert(("c", r.name.clone())) {
                return Err(fail(format!("cluster {}: defined twice", r.name)));
            }
            check(
                redvoy_config::decode_cluster(&r.any.value, &opts),
                "cluster",
                &r.name,
                &mut out.warnings,
            )
            .map_err(&fail)?;
            out.clusters.push(r);
        }
        for (name, cla) in &self.generated.endpoints {
            out.endpoints.insert(
                name.clone(),
                Resource::new(name.clone(), TYPE_ENDPOINT, cla),
            );
        }
        Ok(out)
    }
}

/// A resource Envoy would refuse is an error; one only redvoy skips is a warning (Envoy
/// proxies of the same control plane take it).
fn check<T>(
    result: Result<T, redvoy_config::ResourceError>,
    kind: &str,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(redvoy_config::ResourceError::Invalid(e)) => Err(format!("{kind} {name}: {e}")),
        Err(redvoy_config::ResourceError::Unsupported(e)) => {
            warnings.push(format!("{kind} {name}: redvoy skips it: {e}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects() -> Vec<(String, serde_json::Value)> {
        vec![
            (
                "svc".to_owned(),
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "redis", "namespace": "redis"},
                       "spec": {"ports": [{"name": "tcp-redis", "port": 6379}]}}),
            ),
            (
                "ef".to_owned(),
                json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                "metadata": {"name": "auth", "namespace": "redis"},
                "spec": {"configPatches": [{
                    "applyTo": "NETWORK_FILTER",
                    "match": {"listener": {"portNumber": 6379, "filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}},
                    "patch": {"operation": "REPLACE", "value": {
                        "name": "envoy.filters.network.redis_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
                            "stat_prefix": "redis",
                            "settings": {"op_timeout": "1s"},
                            "downstream_auth_passwords": [{"inline_string": "hunter2"}],
                            "prefix_routes": {"catch_all_route": {"cluster": "outbound|6379||redis.redis.svc.cluster.local"}}
                        }}}}]}}),
            ),
        ]
    }

    fn world(objects: Vec<(String, serde_json::Value)>) -> Result<World, Vec<String>> {
        let inputs = crate::k8s::inputs_from_objects(objects).unwrap_or_else(|e| panic!("{e:?}"));
        World::build(
            inputs,
            Settings::default(),
            "istio-system".to_owned(),
            1,
            &[],
        )
    }

    #[test]
    fn the_debug_view_redacts_secrets_and_the_proxy_gets_them() {
        let w = world(objects()).unwrap_or_else(|e| panic!("{e:?}"));
        let proxy = ProxyIdentity {
            namespace: "redis".to_owned(),
            ..ProxyIdentity::default()
        };
        let snap = w.snapshot_for(&proxy).unwrap_or_else(|e| panic!("{e}"));
        let shown = snap.listeners[0].json.to_string();
        assert!(
            !shown.contains("hunter2") && shown.contains("[redacted]"),
            "{shown}"
        );
        let sent = String::from_utf8_lossy(&snap.listeners[0].any.value).into_owned();
        assert!(
            sent.contains("hunter2"),
            "the proxy itself needs the password"
        );
    }

    #[test]
    fn a_patch_that_matches_nothing_refuses_the_world() {
        let mut objs = objects();
        let text = objs[1]
            .1
            .to_string()
            .replace("envoy.filters.network.tcp_proxy", "envoy.tcp_proxy");
        objs[1].1 = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let errors = world(objs).err().unwrap_or_default();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("spec.configPatches[0]") && errors[0].contains("matches nothing")
        );
    }

    #[test]
    fn what_envoy_would_nack_refuses_the_world() {
        let mut objs = objects();
        let text = objs[1]
            .1
            .to_string()
            .replace("\"stat_prefix\":\"redis\"", "\"stat_prefix\":\"\"");
        objs[1].1 = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let errors = world(objs).err().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("StatPrefix: value length must be at least 1")),
            "{errors:?}"
        );
    }
}
