//! Istio's `EnvoyFilter` (networking.istio.io/v1alpha3): the resource, its validation, which
//! filters a proxy gets and in what order, and the patches applied to listeners and clusters.
//!
//! The reference is istiod: `pilot/pkg/model/envoyfilter.go` (patch wrappers, INSERT_* turned
//! into ADD outside filter lists), `push_context.go` (`EnvoyFilters`: root namespace first at
//! equal priority, then creation time, then `name.namespace`),
//! `pilot/pkg/networking/core/envoyfilter/{listener_patch,cluster_patch,util}.go` (the
//! operations) and `pkg/config/validation/envoyfilter` (what admission refuses). Where istiod
//! drops a patch with only a log line (a value that does not convert, a MERGE whose typed
//! configs differ in type, which panics inside istiod), this module reports an error instead:
//! the caller keeps serving the last good configuration and shows why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use serde::Deserialize;

use crate::merge::{self, Lists};
use crate::proxy::ProxyIdentity;
use crate::reflect::{list_of, message_field, set_list, str_field};

const LISTENER: &str = "envoy.config.listener.v3.Listener";
const FILTER_CHAIN: &str = "envoy.config.listener.v3.FilterChain";
const FILTER: &str = "envoy.config.listener.v3.Filter";
const LISTENER_FILTER: &str = "envoy.config.listener.v3.ListenerFilter";
const HTTP_FILTER: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";
const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// istiod's names for its two catch-all listeners, on which a `portNumber` match is compared
/// with each filter chain's `destination_port` rather than the listener's port.
const VIRTUAL_INBOUND: &str = "virtualInbound";
const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
/// Longer `proxyVersion` patterns never match (istiod's `maxProxyVersionLen`).
const MAX_PROXY_VERSION_LEN: usize = 1024;

/// Why an EnvoyFilter cannot be used. `path` is the field inside the object
/// (`spec.configPatches[1].patch.value`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EnvoyFilter {namespace}/{name}: {path}: {message}")]
pub struct EnvoyFilterError {
    pub namespace: String,
    pub name: String,
    pub path: String,
    pub message: String,
}

/// What a patch applies to (`EnvoyFilter.ApplyTo`). Only the kinds this control plane
/// generates are accepted; route, extension-config and bootstrap patches are refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApplyTo {
    Listener,
    FilterChain,
    NetworkFilter,
    HttpFilter,
    ListenerFilter,
    Cluster,
}

impl ApplyTo {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "LISTENER" => Self::Listener,
            "FILTER_CHAIN" => Self::FilterChain,
            "NETWORK_FILTER" => Self::NetworkFilter,
            "HTTP_FILTER" => Self::HttpFilter,
            "LISTENER_FILTER" => Self::ListenerFilter,
            "CLUSTER" => Self::Cluster,
            "ROUTE_CONFIGURATION"
            | "VIRTUAL_HOST"
            | "HTTP_ROUTE"
            | "EXTENSION_CONFIG"
            | "BOOTSTRAP" => {
                return Err(format!(
                    "{s} is not supported: this control plane serves listeners, clusters and \
                     endpoints only (no RDS, ECDS or bootstrap)"
                ))
            }
            "INVALID" | "" => return Err("missing applyTo".to_owned()),
            other => {
                return Err(format!(
                    "unknown applyTo {other:?} (one of LISTENER, FILTER_CHAIN, NETWORK_FILTER, \
                     HTTP_FILTER, LISTENER_FILTER, CLUSTER, ROUTE_CONFIGURATION, VIRTUAL_HOST, \
                     HTTP_ROUTE, EXTENSION_CONFIG, BOOTSTRAP)"
                ))
            }
        })
    }

    /// The proto a patch value of this kind stands for.
    fn value_type(self) -> &'static str {
        match self {
            Self::Listener => LISTENER,
            Self::FilterChain => FILTER_CHAIN,
            Self::NetworkFilter => FILTER,
            Self::HttpFilter => HTTP_FILTER,
            Self::ListenerFilter => LISTENER_FILTER,
            Self::Cluster => CLUSTER,
        }
    }

    /// Kinds where INSERT_BEFORE/AFTER/FIRST keep their meaning (ordered filter lists); for
    /// the others istiod turns them into ADD.
    fn is_ordered_list(self) -> bool {
        matches!(
            self,
            Self::NetworkFilter | Self::HttpFilter | Self::ListenerFilter
        )
    }
}

/// `EnvoyFilter.Patch.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Merge,
    Add,
    Remove,
    InsertBefore,
    InsertAfter,
    InsertFirst,
    Replace,
    MergeAndReplaceList,
}

impl Operation {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "MERGE" => Self::Merge,
            "ADD" => Self::Add,
            "REMOVE" => Self::Remove,
            "INSERT_BEFORE" => Self::InsertBefore,
            "INSERT_AFTER" => Self::InsertAfter,
            "INSERT_FIRST" => Self::InsertFirst,
            "REPLACE" => Self::Replace,
            "MERGE_AND_REPLACE_LIST" => Self::MergeAndReplaceList,
            "INVALID" | "" => return Err("missing patch operation".to_owned()),
            other => return Err(format!("unknown patch operation {other:?}")),
        })
    }

    fn is_merge(self) -> bool {
        matches!(self, Self::Merge | Self::MergeAndReplaceList)
    }

    fn lists(self) -> Lists {
        if self == Self::MergeAndReplaceList {
            Lists::Replace
        } else {
            Lists::Append
        }
    }
}

/// `EnvoyFilter.PatchContext`: where the object being patched was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchContext {
    Any,
    SidecarInbound,
    SidecarOutbound,
    Gateway,
    Waypoint,
}

impl PatchContext {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ANY" | "" => Self::Any,
            "SIDECAR_INBOUND" => Self::SidecarInbound,
            "SIDECAR_OUTBOUND" => Self::SidecarOutbound,
            "GATEWAY" => Self::Gateway,
            "WAYPOINT" => Self::Waypoint,
            other => return Err(format!("unknown match context {other:?}")),
        })
    }
}

// === EnvoyFilter JSON (the CRD's camelCase fields) ===

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecJson {
    #[serde(default)]
    workload_selector: Option<SelectorJson>,
    #[serde(default)]
    target_refs: Vec<serde_json::Value>,
    #[serde(default)]
    config_patches: Vec<Option<PatchJson>>,
    #[serde(default)]
    priority: i32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorJson {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchJson {
    #[serde(default)]
    apply_to: Option<String>,
    #[serde(default, rename = "match")]
    match_: Option<MatchJson>,
    #[serde(default)]
    patch: Option<PatchBodyJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MatchJson {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    proxy: Option<ProxyMatchJson>,
    #[serde(default)]
    listener: Option<ListenerMatch>,
    #[serde(default)]
    route_configuration: Option<serde_json::Value>,
    #[serde(default)]
    cluster: Option<ClusterMatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProxyMatchJson {
    #[serde(default)]
    proxy_version: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchBodyJson {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    filter_class: Option<String>,
}

/// `EnvoyFilter.ListenerMatch`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    #[serde(default)]
    pub port_number: u32,
    /// Deprecated in Istio and ignored there too.
    #[serde(default)]
    pub port_name: String,
    #[serde(default)]
    pub filter_chain: Option<FilterChainMatch>,
    #[serde(default)]
    pub listener_filter: String,
    #[serde(default)]
    pub name: String,
}

/// `EnvoyFilter.ListenerMatch.FilterChainMatch`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChainMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub transport_protocol: String,
    #[serde(default)]
    pub application_protocols: String,
    #[serde(default)]
    pub filter: Option<FilterMatch>,
    #[serde(default)]
    pub destination_port: u32,
}

/// `EnvoyFilter.ListenerMatch.FilterMatch`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sub_filter: Option<SubFilterMatch>,
}

/// `EnvoyFilter.ListenerMatch.SubFilterMatch`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubFilterMatch {
    #[serde(default)]
    pub name: String,
}

/// `EnvoyFilter.ClusterMatch`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    #[serde(default)]
    pub port_number: u32,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub subset: String,
    #[serde(default)]
    pub name: String,
}

// === The validated model ===

/// `match.proxy`, compiled.
#[derive(Debug, Clone)]
pub struct ProxyMatch {
    version: VersionMatch,
    metadata: BTreeMap<String, String>,
}

impl ProxyMatch {
    /// The node metadata keys this match reads.
    pub fn metadata_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.keys().map(String::as_str)
    }
}

#[derive(Debug, Clone)]
enum VersionMatch {
    Any,
    /// istiod turns the common `^1\.NN.*` patterns into prefix checks.
    Prefix(String),
    Regex(regex::Regex),
    Never,
}

/// One config patch, its value converted to the proto it patches.
#[derive(Debug, Clone)]
pub struct ConfigPatch {
    pub apply_to: ApplyTo,
    pub operation: Operation,
    pub context: PatchContext,
    pub proxy: Option<ProxyMatch>,
    pub listener: Option<ListenerMatch>,
    pub cluster: Option<ClusterMatch>,
    pub value: DynamicMessage,
    /// `namespace/name` of the EnvoyFilter, for the debug view.
    pub key: String,
    /// `spec.configPatches[i]` in that EnvoyFilter.
    pub index: usize,
    /// Set once the patch changed something for some proxy of this world (shared by the
    /// clones made per proxy), so a patch that matches nothing anywhere can be reported.
    pub applied: Arc<AtomicBool>,
}

impl ConfigPatch {
    fn mark(&self) {
        self.applied.store(true, Ordering::Relaxed);
    }

    /// Whether a patch that never applied is worth reporting: operations that target an
    /// existing object (with a filter match where they need one), outside `match.proxy`
    /// (which depends on node metadata no stand-in proxy has).
    pub fn must_match(&self) -> bool {
        // Only sidecar-outbound objects are generated here: a patch for inbound, gateway or
        // waypoint objects has nothing to apply to (a warning, not an error).
        if self.proxy.is_some() || !self.targets_generated_objects() {
            return false;
        }
        match self.operation {
            Operation::Add | Operation::InsertFirst => false,
            Operation::InsertBefore | Operation::InsertAfter => self.has_filter_match(),
            Operation::Remove | Operation::Replace if self.apply_to.is_ordered_list() => {
                self.has_filter_match()
            }
            _ => true,
        }
    }

    /// Whether the patch's context is one this control plane generates objects for.
    pub fn targets_generated_objects(&self) -> bool {
        matches!(
            self.context,
            PatchContext::Any | PatchContext::SidecarOutbound
        )
    }

    fn has_filter_match(&self) -> bool {
        match self.apply_to {
            ApplyTo::NetworkFilter => network_filter_name(self).is_some(),
            ApplyTo::HttpFilter => sub_filter_name(self).is_some(),
            ApplyTo::ListenerFilter => listener_filter_name(self).is_some(),
            _ => true,
        }
    }
}

/// A parsed, validated EnvoyFilter.
#[derive(Debug, Clone)]
pub struct EnvoyFilter {
    pub name: String,
    pub namespace: String,
    pub priority: i32,
    /// RFC 3339 `metadata.creationTimestamp`; absent sorts first, as Go's zero time does.
    pub creation: String,
    /// `None`: every workload of the namespace (of the mesh, in the root namespace).
    pub workload_selector: Option<BTreeMap<String, String>>,
    /// `targetRefs` attach a filter to waypoints and gateways, never to a sidecar.
    pub has_target_refs: bool,
    pub patches: Vec<ConfigPatch>,
    /// The file it was read from.
    pub origin: String,
}

/// Reads an EnvoyFilter's `spec` (and its name, namespace and creation time).
pub fn parse_envoy_filter(
    name: &str,
    namespace: &str,
    creation: &str,
    spec: &serde_json::Value,
) -> Result<EnvoyFilter, EnvoyFilterError> {
    let err = |path: String, message: String| EnvoyFilterError {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        path,
        message,
    };
    let spec: SpecJson =
        serde_json::from_value(spec.clone()).map_err(|e| err("spec".to_owned(), e.to_string()))?;
    if spec.workload_selector.is_some() && !spec.target_refs.is_empty() {
        return Err(err(
            "spec".to_owned(),
            "only one of targetRefs or workloadSelector can be set".to_owned(),
        ));
    }
    let key = format!("{namespace}/{name}");
    let mut patches = Vec::new();
    for (i, cp) in spec.config_patches.into_iter().enumerate() {
        let at = |field: &str| format!("spec.configPatches[{i}]{field}");
        let Some(cp) = cp else {
            return Err(err(at(""), "null config patch".to_owned()));
        };
        let apply_to = ApplyTo::parse(cp.apply_to.as_deref().unwrap_or(""))
            .map_err(|m| err(at(".applyTo"), m))?;
        let Some(body) = cp.patch else {
            return Err(err(at(".patch"), "missing patch".to_owned()));
        };
        let mut operation = Operation::parse(body.operation.as_deref().unwrap_or(""))
            .map_err(|m| err(at(".patch.operation"), m))?;
        if let Some(class) = &body.filter_class {
            if !matches!(class.as_str(), "UNSPECIFIED" | "AUTHN" | "AUTHZ" | "STATS") {
                return Err(err(
                    at(".patch.filterClass"),
                    format!("unknown filterClass {class:?}"),
                ));
            }
        }
        let m = cp.match_.unwrap_or_default();
        let context = PatchContext::parse(m.context.as_deref().unwrap_or(""))
            .map_err(|msg| err(at(".match.context"), msg))?;
        if m.route_configuration.is_some() {
            return Err(err(
                at(".match.routeConfiguration"),
                "a route configuration match cannot select listeners or clusters".to_owned(),
            ));
        }
        match apply_to {
            ApplyTo::Cluster if m.listener.is_some() => {
                return Err(err(
                    at(".match"),
                    "applyTo for cluster class objects cannot have non cluster match".to_owned(),
                ))
            }
            ApplyTo::Cluster => {}
            _ if m.cluster.is_some() => {
                return Err(err(
                    at(".match"),
                    "applyTo for listener class objects cannot have non listener match".to_owned(),
                ))
            }
            _ => {}
        }
        if let Some(filter) = m
            .listener
            .as_ref()
            .and_then(|l| l.filter_chain.as_ref())
            .and_then(|fc| fc.filter.as_ref())
        {
            if filter.name.is_empty() {
                return Err(err(
                    at(".match.listener.filterChain.filter"),
                    "filter match has no name to match on".to_owned(),
                ));
            }
            if let Some(sub) = &filter.sub_filter {
                if apply_to != ApplyTo::HttpFilter {
                    return Err(err(
                        at(".match.listener.filterChain.filter.subFilter"),
                        "subfilter match can be used with applyTo HTTP_FILTER only".to_owned(),
                    ));
                }
                if filter.name != HCM_NAME && filter.name != "envoy.http_connection_manager" {
                    return Err(err(
                        at(".match.listener.filterChain.filter.subFilter"),
                        format!("subfilter match requires filter match with {HCM_NAME}"),
                    ));
                }
                if sub.name.is_empty() {
                    return Err(err(
                        at(".match.listener.filterChain.filter.subFilter"),
                        "subfilter match has no name to match on".to_owned(),
                    ));
                }
            }
        }
        let proxy = match m.proxy {
            None => None,
            Some(p) => {
                let version = if p.proxy_version.is_empty() {
                    VersionMatch::Any
                } else if let Some(prefix) = well_known_version(&p.proxy_version) {
                    VersionMatch::Prefix(prefix)
                } else if p.proxy_version.len() > MAX_PROXY_VERSION_LEN {
                    VersionMatch::Never
                } else {
                    VersionMatch::Regex(regex::Regex::new(&p.proxy_version).map_err(|e| {
                        err(
                            at(".match.proxy.proxyVersion"),
                            format!("invalid regex for proxy version, [{e}]"),
                        )
                    })?)
                };
                Some(ProxyMatch {
                    version,
                    metadata: p.metadata,
                })
            }
        };
        let value = match (&body.value, operation) {
            (None, Operation::Remove) => redvoy_config::message_from_json(
                apply_to.value_type(),
                &serde_json::json!({}),
                false,
                "patch",
            )
            .map_err(|e| err(at(".patch.value"), e.to_string()))?,
            (None, _) => {
                return Err(err(
                    at(".patch.value"),
                    "missing patch value for non-remove operation".to_owned(),
                ))
            }
            (Some(v), _) => convert_value(apply_to, v).map_err(|m| err(at(".patch.value"), m))?,
        };
        if !apply_to.is_ordered_list()
            && matches!(
                operation,
                Operation::InsertBefore | Operation::InsertAfter | Operation::InsertFirst
            )
        {
            operation = Operation::Add;
        }
        patches.push(ConfigPatch {
            apply_to,
            operation,
            context,
            proxy,
            listener: m.listener,
            cluster: m.cluster,
            value,
            key: key.clone(),
            index: i,
            applied: Arc::new(AtomicBool::new(false)),
        });
    }
    Ok(EnvoyFilter {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        priority: spec.priority,
        creation: creation.to_owned(),
        workload_selector: spec.workload_selector.map(|s| s.labels),
        has_target_refs: !spec.target_refs.is_empty(),
        patches,
        origin: String::new(),
    })
}

fn well_known_version(pattern: &str) -> Option<String> {
    // `^1\.16.*` … `^1\.23.*` (istiod's `wellKnownVersions`).
    let minor = pattern.strip_prefix(r"^1\.")?.strip_suffix(".*")?;
    let n: u32 = minor.parse().ok()?;
    (16..=23).contains(&n).then(|| format!("1.{n}"))
}

/// Struct → proto, non-strict as istiod's `BuildXDSObjectFromStruct(…, false)`, with its
/// admission webhook's hint for v2 types.
fn convert_value(apply_to: ApplyTo, value: &serde_json::Value) -> Result<DynamicMessage, String> {
    redvoy_config::message_from_json(apply_to.value_type(), value, false, "value").map_err(|e| {
        let text = e.to_string();
        let text = text.strip_prefix("value: ").unwrap_or(&text).to_owned();
        if text.contains(".v2.") {
            format!("referenced type unknown (hint: try using the v3 XDS API): {text}")
        } else {
            text
        }
    })
}

// === Selection: which filters a proxy gets, in which order ===

/// The patches for one proxy, bucketed by kind in application order (istiod's
/// `MergedEnvoyFilterWrapper`).
#[derive(Debug, Default, Clone)]
pub struct MergedPatches {
    by_kind: BTreeMap<ApplyTo, Vec<ConfigPatch>>,
}

impl MergedPatches {
    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    fn of(&self, kind: ApplyTo) -> &[ConfigPatch] {
        self.by_kind.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// The `namespace/name` of every filter that contributed a patch.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .by_kind
            .values()
            .flatten()
            .map(|p| p.key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// istiod's `PushContext.EnvoyFilters(proxy)`.
pub fn select(
    filters: &[EnvoyFilter],
    proxy: &ProxyIdentity,
    root_namespace: &str,
) -> MergedPatches {
    let attaches = |f: &EnvoyFilter| {
        if f.has_target_refs {
            return false;
        }
        match &f.workload_selector {
            None => true,
            Some(labels) => labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)),
        }
    };
    let mut matched: Vec<&EnvoyFilter> = filters
        .iter()
        .filter(|f| {
            (f.namespace == root_namespace
                || (proxy.namespace != root_namespace && f.namespace == proxy.namespace))
                && attaches(f)
        })
        .collect();
    matched.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| {
                let (ar, br) = (a.namespace == root_namespace, b.namespace == root_namespace);
                if a.namespace != b.namespace && (ar || br) {
                    br.cmp(&ar)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| a.creation.cmp(&b.creation))
            .then_with(|| {
                format!("{}.{}", a.name, a.namespace).cmp(&format!("{}.{}", b.name, b.namespace))
            })
    });
    let mut out = MergedPatches::default();
    for f in matched {
        for p in &f.patches {
            if proxy_match(proxy, p) {
                out.by_kind.entry(p.apply_to).or_default().push(p.clone());
            }
        }
    }
    out
}

fn proxy_match(proxy: &ProxyIdentity, p: &ConfigPatch) -> bool {
    let Some(m) = &p.proxy else {
        return true;
    };
    match &m.version {
        VersionMatch::Any => {}
        VersionMatch::Never => return false,
        VersionMatch::Prefix(prefix) => {
            if !proxy.istio_version.starts_with(prefix.as_str()) {
                return false;
            }
        }
        VersionMatch::Regex(re) => {
            if proxy.istio_version.is_empty() || !re.is_match(&proxy.istio_version) {
                return false;
            }
        }
    }
    m.metadata
        .iter()
        .all(|(k, v)| proxy.metadata.get(k) == Some(v))
}

// === Reflection helpers ===

fn port_of(address: Option<DynamicMessage>) -> Option<u32> {
    let sa = message_field(&address?, "socket_address")?;
    sa.get_field_by_name("port_value").and_then(|v| v.as_u32())
}

fn typed_config(msg: &DynamicMessage) -> Option<DynamicMessage> {
    message_field(msg, "typed_config")
}

/// An `Any` → the message it holds.
fn unpack(any: &DynamicMessage) -> Result<DynamicMessage, String> {
    let url = str_field(any, "type_url");
    let name = url.rsplit_once('/').map_or(url.as_str(), |(_, n)| n);
    let desc = any
        .descriptor()
        .parent_pool()
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown type {url:?}"))?;
    let bytes = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    DynamicMessage::decode(desc, bytes).map_err(|e| format!("{url}: {e}"))
}

fn pack(any_like: &DynamicMessage, inner: &DynamicMessage) -> DynamicMessage {
    use prost::Message;
    let mut any = DynamicMessage::new(any_like.descriptor());
    any.set_field_by_name(
        "type_url",
        Value::String(format!(
            "type.googleapis.com/{}",
            inner.descriptor().full_name()
        )),
    );
    any.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
    any
}

/// istiod's `MergeAnyWithAny`: both typed configs unpacked, proto-merged, packed again. Two
/// different types cannot merge (istiod panics and drops every listener patch of the push);
/// that is reported.
fn merge_any(dst: &DynamicMessage, src: &DynamicMessage) -> Result<DynamicMessage, String> {
    let mut d = unpack(dst)?;
    let s = unpack(src)?;
    if d.descriptor() != s.descriptor() {
        return Err(format!(
            "cannot MERGE a typed_config of type {} into one of type {}",
            s.descriptor().full_name(),
            d.descriptor().full_name()
        ));
    }
    merge::merge(&mut d, &s, Lists::Append);
    Ok(pack(dst, &d))
}

// === Listener patches (listener_patch.go) ===

/// Patch errors that istiod would swallow; reported by the caller.
pub type PatchResult<T> = Result<T, String>;

fn listener_match(listener: &DynamicMessage, p: &ConfigPatch) -> bool {
    let Some(m) = &p.listener else {
        return true;
    };
    let name = str_field(listener, "name");
    if !m.name.is_empty() && m.name != name {
        return false;
    }
    if p.apply_to != ApplyTo::Listener && (name == VIRTUAL_INBOUND || name == VIRTUAL_OUTBOUND) {
        return true;
    }
    if m.port_number != 0 && port_of(message_field(listener, "address")) != Some(m.port_number) {
        return false;
    }
    true
}

fn filter_chain_match(listener: &DynamicMessage, fc: &DynamicMessage, p: &ConfigPatch) -> bool {
    let Some(m) = &p.listener else {
        return true;
    };
    let name = str_field(listener, "name");
    let fcm = message_field(fc, "filter_chain_match");
    let destination_port = fcm
        .as_ref()
        .and_then(|f| message_field(f, "destination_port"))
        .and_then(|w| w.get_field_by_name("value").and_then(|v| v.as_u32()));
    if (name == VIRTUAL_INBOUND || name == VIRTUAL_OUTBOUND)
        && m.port_number > 0
        && destination_port.unwrap_or(0) != m.port_number
    {
        return false;
    }
    let Some(c) = &m.filter_chain else {
        return true;
    };
    if !c.name.is_empty() && c.name != str_field(fc, "name") {
        return false;
    }
    let strings = |field: &str| -> Vec<String> {
        fcm.as_ref()
            .and_then(|f| f.get_field_by_name(field))
            .and_then(|v| {
                v.as_list().map(|l| {
                    l.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    if !c.sni.is_empty() && !strings("server_names").contains(&c.sni) {
        return false;
    }
    if !c.transport_protocol.is_empty()
        && fcm.as_ref().map(|f| str_field(f, "transport_protocol"))
            != Some(c.transport_protocol.clone())
    {
        return false;
    }
    if !c.application_protocols.is_empty() {
        if fcm.is_none() {
            return false;
        }
        let have = strings("application_protocols");
        if !c
            .application_protocols
            .split(',')
            .all(|p| have.iter().any(|h| h == p))
        {
            return false;
        }
    }
    if c.destination_port > 0 && destination_port != Some(c.destination_port) {
        return false;
    }
    true
}

fn network_filter_name(p: &ConfigPatch) -> Option<&str> {
    p.listener
        .as_ref()?
        .filter_chain
        .as_ref()?
        .filter
        .as_ref()
        .map(|f| f.name.as_str())
}

fn sub_filter_name(p: &ConfigPatch) -> Option<&str> {
    p.listener
        .as_ref()?
        .filter_chain
        .as_ref()?
        .filter
        .as_ref()?
        .sub_filter
        .as_ref()
        .map(|s| s.name.as_str())
}

fn listener_filter_name(p: &ConfigPatch) -> Option<&str> {
    p.listener
        .as_ref()
        .map(|l| l.listener_filter.as_str())
        .filter(|n| !n.is_empty())
}

fn context_match(ctx: PatchContext, p: &ConfigPatch) -> bool {
    p.context == ctx || p.context == PatchContext::Any
}

/// istiod's `ApplyListenerPatches`: patches `listeners` generated in `ctx`.
pub fn apply_listener_patches(
    ctx: PatchContext,
    patches: &MergedPatches,
    listeners: Vec<DynamicMessage>,
    skip_adds: bool,
) -> PatchResult<Vec<DynamicMessage>> {
    if patches.is_empty() {
        return Ok(listeners);
    }
    let mut out = Vec::with_capacity(listeners.len());
    for mut l in listeners {
        if patch_listener(ctx, patches, &mut l)? {
            out.push(l);
        }
    }
    if !skip_adds {
        for p in patches.of(ApplyTo::Listener) {
            if p.operation != Operation::Add {
                continue;
            }
            if p.context == PatchContext::Any
                && ctx != PatchContext::SidecarOutbound
                && ctx != PatchContext::Gateway
            {
                continue;
            }
            if context_match(ctx, p) {
                p.mark();
                out.push(p.value.clone());
            }
        }
    }
    out.retain(|l| !str_field(l, "name").is_empty());
    Ok(out)
}

/// Returns false when the listener was removed.
fn patch_listener(
    ctx: PatchContext,
    patches: &MergedPatches,
    l: &mut DynamicMessage,
) -> PatchResult<bool> {
    for p in patches.of(ApplyTo::Listener) {
        if !context_match(ctx, p) || !listener_match(l, p) {
            continue;
        }
        if p.operation == Operation::Remove {
            p.mark();
            return Ok(false);
        }
        if p.operation.is_merge() {
            p.mark();
            merge::merge(l, &p.value, p.operation.lists());
        }
    }
    patch_listener_filters(ctx, patches.of(ApplyTo::ListenerFilter), l)?;
    patch_filter_chains(ctx, patches, l)?;
    Ok(true)
}

/// The list operations shared by listener, network and HTTP filters: ADD, INSERT_*, REPLACE,
/// REMOVE, with `matches` saying which element the patch's filter match names (`None`: the
/// patch has no filter match). Returns the new list.
fn list_operation(
    mut items: Vec<DynamicMessage>,
    p: &ConfigPatch,
    has_match: bool,
    matches: impl Fn(&DynamicMessage) -> bool,
) -> Vec<DynamicMessage> {
    let first = items.iter().position(&matches);
    match p.operation {
        Operation::Add => items.push(p.value.clone()),
        Operation::InsertFirst => items.insert(0, p.value.clone()),
        Operation::InsertAfter => {
            if !has_match {
                items.push(p.value.clone());
            } else if let Some(i) = first {
                items.insert(i + 1, p.value.clone());
            } else {
                return items;
            }
        }
        Operation::InsertBefore => {
            if !has_match {
                items.insert(0, p.value.clone());
            } else if let Some(i) = first {
                items.insert(i, p.value.clone());
            } else {
                return items;
            }
        }
        Operation::Replace => match first {
            Some(i) if has_match => items[i] = p.value.clone(),
            _ => return items,
        },
        Operation::Remove => {
            if !has_match || first.is_none() {
                return items;
            }
            items.retain(|f| !matches(f));
        }
        Operation::Merge | Operation::MergeAndReplaceList => return items,
    }
    p.mark();
    items
}

/// A filter-level MERGE (network, HTTP and listener filters): the patch's typed config merged
/// into the filter's, the name replaced when the patch has one. Filters without a typed config
/// are skipped, as in istiod.
fn merge_filter(filter: &mut DynamicMessage, p: &ConfigPatch, rename: bool) -> PatchResult<()> {
    let patch = &p.value;
    let Some(current) = typed_config(filter) else {
        return Ok(());
    };
    p.mark();
    let name = if rename {
        str_field(patch, "name")
    } else {
        String::new()
    };
    if let Some(src) = typed_config(patch) {
        let merged = merge_any(&current, &src)?;
        filter.set_field_by_name("typed_config", Value::Message(merged));
    }
    if !name.is_empty() {
        filter.set_field_by_name("name", Value::String(name));
    }
    Ok(())
}

fn patch_listener_filters(
    ctx: PatchContext,
    patches: &[ConfigPatch],
    l: &mut DynamicMessage,
) -> PatchResult<()> {
    for p in patches {
        if !context_match(ctx, p) || !listener_match(l, p) {
            continue;
        }
        let wanted = listener_filter_name(p);
        let matches = |f: &DynamicMessage| wanted.is_none_or(|n| str_field(f, "name") == n);
        let mut filters = list_of(l, "listener_filters");
        if p.operation == Operation::Merge {
            if wanted.is_none() {
                continue;
            }
            for f in filters.iter_mut() {
                // istiod's `mergeListenerFilter` does not check the name (every listener filter
                // of the listener is merged) and writes the name back into the patch instead of
                // the filter (never renaming it); kept as is.
                merge_filter(f, p, false)?;
            }
        } else {
            filters = list_operation(filters, p, wanted.is_some(), matches);
        }
        set_list(l, "listener_filters", filters);
    }
    Ok(())
}

fn patch_filter_chains(
    ctx: PatchContext,
    patches: &MergedPatches,
    l: &mut DynamicMessage,
) -> PatchResult<()> {
    let snapshot = l.clone();
    let mut chains = Vec::new();
    for mut fc in list_of(l, "filter_chains") {
        // A chain without filters is dropped, as istiod drops one whose `Filters` is nil.
        if list_of(&fc, "filters").is_empty() {
            continue;
        }
        if patch_filter_chain(ctx, patches, &snapshot, &mut fc)? {
            chains.push(fc);
        }
    }
    if let Some(mut fc) = message_field(l, "default_filter_chain") {
        if !list_of(&fc, "filters").is_empty() {
            if patch_filter_chain(ctx, patches, &snapshot, &mut fc)?
                && !list_of(&fc, "filters").is_empty()
            {
                l.set_field_by_name("default_filter_chain", Value::Message(fc));
            } else {
                l.clear_field_by_name("default_filter_chain");
            }
        }
    }
    for p in patches.of(ApplyTo::FilterChain) {
        if p.operation == Operation::Add && context_match(ctx, p) && listener_match(&snapshot, p) {
            p.mark();
            chains.push(p.value.clone());
        }
    }
    chains.retain(|fc| !list_of(fc, "filters").is_empty());
    set_list(l, "filter_chains", chains);
    Ok(())
}

/// Returns false when the chain was removed.
fn patch_filter_chain(
    ctx: PatchContext,
    patches: &MergedPatches,
    l: &DynamicMessage,
    fc: &mut DynamicMessage,
) -> PatchResult<bool> {
    for p in patches.of(ApplyTo::FilterChain) {
        if !context_match(ctx, p) || !listener_match(l, p) || !filter_chain_match(l, fc, p) {
            continue;
        }
        if p.operation == Operation::Remove {
            p.mark();
            return Ok(false);
        }
        if p.operation.is_merge() {
            p.mark();
            if !merge_transport_socket(fc, &p.value)? {
                merge::merge(fc, &p.value, p.operation.lists());
            }
        }
    }
    patch_network_filters(ctx, patches, l, fc)?;
    Ok(true)
}

/// A transport socket of the same name is merged at the typed-config level (istiod's
/// `mergeTransportSocketListener`). Returns whether it handled the merge.
fn merge_transport_socket(fc: &mut DynamicMessage, patch: &DynamicMessage) -> PatchResult<bool> {
    let (Some(patch_ts), Some(mut ts)) = (
        message_field(patch, "transport_socket"),
        message_field(fc, "transport_socket"),
    ) else {
        return Ok(false);
    };
    if str_field(&patch_ts, "name") != str_field(&ts, "name") {
        return Ok(false);
    }
    if let (Some(dst), Some(src)) = (typed_config(&ts), typed_config(&patch_ts)) {
        let merged = merge_any(&dst, &src)?;
        ts.set_field_by_name("typed_config", Value::Message(merged));
        fc.set_field_by_name("transport_socket", Value::Message(ts));
    }
    Ok(true)
}

fn patch_network_filters(
    ctx: PatchContext,
    patches: &MergedPatches,
    l: &DynamicMessage,
    fc: &mut DynamicMessage,
) -> PatchResult<()> {
    let mut filters = list_of(fc, "filters");
    for p in patches.of(ApplyTo::NetworkFilter) {
        if !context_match(ctx, p) || !listener_match(l, p) || !filter_chain_match(l, fc, p) {
            continue;
        }
        let wanted = network_filter_name(p);
        filters = list_operation(filters, p, wanted.is_some(), |f| {
            wanted.is_none_or(|n| str_field(f, "name") == n)
        });
    }
    for filter in filters.iter_mut() {
        for p in patches.of(ApplyTo::NetworkFilter) {
            if p.operation != Operation::Merge
                || !context_match(ctx, p)
                || !listener_match(l, p)
                || !filter_chain_match(l, fc, p)
                || network_filter_name(p).is_some_and(|n| n != str_field(filter, "name"))
            {
                continue;
            }
            merge_filter(filter, p, true)?;
        }
        if str_field(filter, "name") == HCM_NAME {
            patch_http_filters(ctx, patches, l, fc, filter)?;
        }
    }
    set_list(fc, "filters", filters);
    Ok(())
}

fn patch_http_filters(
    ctx: PatchContext,
    patches: &MergedPatches,
    l: &DynamicMessage,
    fc: &DynamicMessage,
    filter: &mut DynamicMessage,
) -> PatchResult<()> {
    let http_patches = patches.of(ApplyTo::HttpFilter);
    if http_patches.is_empty() {
        return Ok(());
    }
    let any = typed_config(filter);
    let mut hcm = match &any {
        Some(a) => match unpack(a) {
            Ok(m) if m.descriptor().full_name() == HCM_TYPE => m,
            // istiod gives up silently on an HCM it cannot unmarshal.
            _ => return Ok(()),
        },
        None => redvoy_config::message_from_json(HCM_TYPE, &serde_json::json!({}), false, "hcm")
            .map_err(|e| e.to_string())?,
    };
    let filter_name = str_field(filter, "name");
    let mut http = list_of(&hcm, "http_filters");
    let applies = |p: &ConfigPatch| {
        context_match(ctx, p)
            && listener_match(l, p)
            && filter_chain_match(l, fc, p)
            && network_filter_name(p).is_none_or(|n| n == filter_name)
    };
    for p in http_patches {
        if !applies(p) {
            continue;
        }
        let wanted = sub_filter_name(p);
        http = list_operation(http, p, wanted.is_some(), |f| {
            wanted.is_none_or(|n| str_field(f, "name") == n)
        });
    }
    for hf in http.iter_mut() {
        for p in http_patches {
            if p.operation != Operation::Merge
                || !applies(p)
                || sub_filter_name(p).is_some_and(|n| n != str_field(hf, "name"))
            {
                continue;
            }
            merge_filter(hf, p, true)?;
        }
    }
    set_list(&mut hcm, "http_filters", http);
    if let Some(a) = any {
        filter.set_field_by_name("typed_config", Value::Message(pack(&a, &hcm)));
    }
    Ok(())
}

// === Cluster patches (cluster_patch.go) ===

/// `outbound|port|subset|host` → (direction, subset, host, port), istiod's `ParseSubsetKey`.
pub fn parse_subset_key(name: &str) -> (String, String, String, u32) {
    let parts: Vec<&str> = name.split('|').collect();
    if parts.len() < 4 {
        // istiod also accepts the SNI form `outbound_.80_._.host`.
        let sni: Vec<&str> = name.splitn(4, '_').collect();
        if sni.len() == 4 && sni[1].starts_with('.') {
            let port = sni[1].trim_start_matches('.').parse().unwrap_or(0);
            let subset = sni[2].trim_start_matches('.').to_owned();
            let host = sni[3].trim_start_matches('.').to_owned();
            return (sni[0].to_owned(), subset, host, port);
        }
        return (String::new(), String::new(), String::new(), 0);
    }
    (
        parts[0].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
        parts[1].parse().unwrap_or(0),
    )
}

/// istiod's `clusterMatch`; `hosts` are the service hostnames of an inbound cluster.
pub fn cluster_match(cluster_name: &str, m: Option<&ClusterMatch>, hosts: &[String]) -> bool {
    let Some(m) = m else {
        return true;
    };
    if !m.name.is_empty() {
        return m.name == cluster_name;
    }
    let (direction, subset, host, port) = parse_subset_key(cluster_name);
    let host_matches: Vec<String> = if direction == "inbound" && !hosts.is_empty() {
        hosts.to_vec()
    } else {
        vec![host]
    };
    if !m.subset.is_empty() && m.subset != subset {
        return false;
    }
    if !m.service.is_empty() && !host_matches.contains(&m.service) {
        return false;
    }
    if m.port_number != 0 && m.port_number != port {
        return false;
    }
    true
}

/// istiod's `ApplyClusterMerge`: MERGE and REMOVE patches on one generated cluster. `None`
/// when a REMOVE matched.
pub fn apply_cluster_merge(
    ctx: PatchContext,
    patches: &MergedPatches,
    mut cluster: DynamicMessage,
    hosts: &[String],
) -> PatchResult<Option<DynamicMessage>> {
    let name = str_field(&cluster, "name");
    for p in patches.of(ApplyTo::Cluster) {
        let matched = context_match(ctx, p) && cluster_match(&name, p.cluster.as_ref(), hosts);
        if p.operation == Operation::Remove && matched {
            p.mark();
            return Ok(None);
        }
        if !p.operation.is_merge() || !matched {
            continue;
        }
        p.mark();
        if !merge_cluster_transport_socket(&mut cluster, &p.value)? {
            merge::merge(&mut cluster, &p.value, p.operation.lists());
        }
    }
    Ok(Some(cluster))
}

/// istiod's `mergeTransportSocketCluster`. Returns whether it handled the merge.
fn merge_cluster_transport_socket(
    c: &mut DynamicMessage,
    patch: &DynamicMessage,
) -> PatchResult<bool> {
    let Some(patch_ts) = message_field(patch, "transport_socket") else {
        return Ok(false);
    };
    let ts_name = str_field(&patch_ts, "name");
    let mut matches = list_of(c, "transport_socket_matches");
    if !matches.is_empty() {
        let Some(i) = matches.iter().position(|m| {
            message_field(m, "transport_socket").is_some_and(|ts| str_field(&ts, "name") == ts_name)
        }) else {
            // A transport_socket beside transport_socket_matches would be invalid: istiod
            // drops the patch's socket and reports it handled.
            return Ok(true);
        };
        let mut ts =
            message_field(&matches[i], "transport_socket").unwrap_or_else(|| patch_ts.clone());
        merge_socket_config(&mut ts, &patch_ts)?;
        matches[i].set_field_by_name("transport_socket", Value::Message(ts));
        set_list(c, "transport_socket_matches", matches);
        return Ok(true);
    }
    match message_field(c, "transport_socket") {
        Some(mut ts) if str_field(&ts, "name") == ts_name => {
            merge_socket_config(&mut ts, &patch_ts)?;
            c.set_field_by_name("transport_socket", Value::Message(ts));
        }
        _ => c.set_field_by_name("transport_socket", Value::Message(patch_ts)),
    }
    Ok(true)
}

fn merge_socket_config(ts: &mut DynamicMessage, patch_ts: &DynamicMessage) -> PatchResult<()> {
    if let (Some(dst), Some(src)) = (typed_config(ts), typed_config(patch_ts)) {
        let merged = merge_any(&dst, &src)?;
        ts.set_field_by_name("typed_config", Value::Message(merged));
    }
    Ok(())
}

/// istiod's `InsertedClusters`: the clusters ADD patches bring for context `ctx`.
pub fn inserted_clusters(ctx: PatchContext, patches: &MergedPatches) -> Vec<DynamicMessage> {
    patches
        .of(ApplyTo::Cluster)
        .iter()
        .filter(|p| p.operation == Operation::Add)
        .filter(|p| {
            !(p.context == PatchContext::Any
                && ctx != PatchContext::SidecarOutbound
                && ctx != PatchContext::Gateway)
                && context_match(ctx, p)
        })
        .map(|p| {
            p.mark();
            p.value.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(name: &str, namespace: &str, priority: i32, selector: Option<&str>) -> EnvoyFilter {
        let mut spec = json!({
            "priority": priority,
            "configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {"name": name}}}]
        });
        if let Some(app) = selector {
            spec["workloadSelector"] = json!({"labels": {"app": app}});
        }
        parse_envoy_filter(name, namespace, "", &spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn proxy(namespace: &str, app: &str) -> ProxyIdentity {
        ProxyIdentity {
            namespace: namespace.to_owned(),
            labels: [("app".to_owned(), app.to_owned())].into(),
            ..ProxyIdentity::default()
        }
    }

    fn added(patches: &MergedPatches) -> Vec<String> {
        inserted_clusters(PatchContext::SidecarOutbound, patches)
            .iter()
            .map(|c| str_field(c, "name"))
            .collect()
    }

    #[test]
    fn selection_order_and_scope_are_istios() {
        let filters = vec![
            filter("b-own", "redis", 0, None),
            filter("a-root", "istio-system", 0, None),
            filter("early", "redis", -1, None),
            filter("other-app", "redis", 0, Some("web")),
            filter("mine", "redis", 0, Some("client")),
            filter("other-ns", "web", 0, None),
        ];
        let p = select(&filters, &proxy("redis", "client"), "istio-system");
        // Priority first; at equal priority the root namespace first, then by name.
        assert_eq!(added(&p), vec!["early", "a-root", "b-own", "mine"]);
        // A proxy in the root namespace gets only the root namespace's filters.
        let p = select(&filters, &proxy("istio-system", "client"), "istio-system");
        assert_eq!(added(&p), vec!["a-root"]);
    }

    #[test]
    fn target_refs_never_attach_to_a_sidecar() {
        let spec = json!({
            "targetRefs": [{"kind": "Service", "group": "", "name": "waypoint"}],
            "configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {"name": "x"}}}]
        });
        let f = parse_envoy_filter("x", "redis", "", &spec).unwrap_or_else(|e| panic!("{e}"));
        assert!(select(&[f], &proxy("redis", "client"), "istio-system").is_empty());
    }

    #[test]
    fn validation_refuses_what_admission_refuses() {
        let refuse = |spec: serde_json::Value, path: &str, text: &str| {
            let e = parse_envoy_filter("x", "redis", "", &spec)
                .err()
                .unwrap_or_else(|| panic!("accepted: {spec}"));
            assert_eq!(e.path, path, "{e}");
            assert!(e.message.contains(text), "{e}");
        };
        refuse(
            json!({"configPatches": [{"applyTo": "NETWORK_FILTER", "patch": {"operation": "MERGE"}}]}),
            "spec.configPatches[0].patch.value",
            "missing patch value",
        );
        refuse(
            json!({"configPatches": [{"applyTo": "NETWORK_FILTER",
                "match": {"listener": {"filterChain": {"filter": {"name": "x", "subFilter": {"name": "y"}}}}},
                "patch": {"operation": "REMOVE"}}]}),
            "spec.configPatches[0].match.listener.filterChain.filter.subFilter",
            "HTTP_FILTER only",
        );
        refuse(
            json!({"configPatches": [{"applyTo": "CLUSTER", "match": {"listener": {"portNumber": 1}},
                "patch": {"operation": "REMOVE"}}]}),
            "spec.configPatches[0].match",
            "non cluster match",
        );
        refuse(
            json!({"configPatches": [{"applyTo": "NETWORK_FILTER", "patch": {"operation": "ADD",
                "value": {"name": "r", "typed_config": {"@type": "type.googleapis.com/envoy.config.filter.network.redis_proxy.v2.RedisProxy"}}}}]}),
            "spec.configPatches[0].patch.value",
            "try using the v3 XDS API",
        );
        refuse(
            json!({"configPatches": [{"applyTo": "ROUTE_CONFIGURATION", "patch": {"operation": "MERGE", "value": {}}}]}),
            "spec.configPatches[0].applyTo",
            "no RDS",
        );
        refuse(
            json!({"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {}}}], "unknownField": 1}),
            "spec",
            "unknown field",
        );
    }

    #[test]
    fn insert_outside_filter_lists_becomes_add() {
        let spec = json!({"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "INSERT_FIRST", "value": {"name": "c"}}}]});
        let f = parse_envoy_filter("x", "redis", "", &spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.patches[0].operation, Operation::Add);
        let spec = json!({"configPatches": [{"applyTo": "NETWORK_FILTER", "patch": {"operation": "INSERT_FIRST", "value": {"name": "f"}}}]});
        let f = parse_envoy_filter("x", "redis", "", &spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.patches[0].operation, Operation::InsertFirst);
    }
}
