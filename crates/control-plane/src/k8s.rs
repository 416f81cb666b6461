//! The input: a directory of Kubernetes YAML, as a user would `kubectl apply` it. The kinds
//! that shape a sidecar's configuration are read (`Service`, `EndpointSlice`, `Endpoints`,
//! `EnvoyFilter`, and `List`s of them); every other kind (Deployments, StatefulSets,
//! Namespaces…) is listed as ignored. Anything malformed is an [`InputError`] naming the file
//! and the object, and the whole directory is refused: the caller keeps the last good one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::envoyfilter::{self, EnvoyFilter};

/// Files larger than this are refused (a directory of manifests, not a data dump).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// At most this many files are read from one directory tree.
pub const MAX_FILES: usize = 1000;
/// Directory nesting followed at most.
const MAX_DEPTH: usize = 8;

/// Why an input was refused: the file, the object in it, and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {object}: {message}", file.display())]
pub struct InputError {
    pub file: PathBuf,
    /// `Kind namespace/name`, or `document N` when it has no usable identity.
    pub object: String,
    pub message: String,
}

/// `Service.spec.ports[].targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u32),
    Name(String),
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u32,
    pub target_port: TargetPort,
    pub protocol: String,
    pub app_protocol: String,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `spec.clusterIP`: `None` when unset, `Some("None")` for a headless Service.
    pub cluster_ip: Option<String>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

/// One endpoint (a pod) of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub ready: bool,
    /// The pod's hostname (StatefulSet pods: `<name>-<ordinal>`), for pod DNS names.
    pub hostname: String,
}

/// A Service's endpoints: an EndpointSlice, or a v1 Endpoints subset, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSet {
    pub service: String,
    pub namespace: String,
    pub endpoints: Vec<Endpoint>,
    /// Port name → port number on the endpoints.
    pub ports: Vec<(String, u32)>,
    /// From an EndpointSlice (else from a v1 Endpoints object, which is ignored for a Service
    /// that also has slices, as istiod does: a `kubectl get` dump carries both).
    pub from_slice: bool,
}

/// Everything read from the directory.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub services: Vec<Service>,
    pub endpoints: Vec<EndpointSet>,
    pub envoy_filters: Vec<EnvoyFilter>,
    /// `file: Kind namespace/name` of each object that was not of a kind read here.
    pub ignored: Vec<String>,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
}

/// Reads every `.yaml`, `.yml` and `.json` file under `dirs` (recursively, hidden entries
/// skipped, in name order). All errors are collected, so a user sees every problem at once.
pub fn load_dirs(dirs: &[PathBuf]) -> Result<Inputs, Vec<InputError>> {
    let (files, mut errors) = manifest_files(dirs);
    if files.len() > MAX_FILES {
        errors.push(InputError {
            file: dirs.first().cloned().unwrap_or_default(),
            object: "directory".to_owned(),
            message: format!("{} files, more than the {MAX_FILES} read", files.len()),
        });
        return Err(errors);
    }
    let mut inputs = Inputs::default();
    for file in &files {
        if let Err(mut e) = load_file(file, &mut inputs) {
            errors.append(&mut e);
        }
    }
    inputs.files = files;
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
}

/// The manifests under `dirs` (recursively, hidden entries skipped, in name order), and the
/// directories that could not be listed. What is read, and what the watcher fingerprints.
pub fn manifest_files(dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<InputError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        collect_files(dir, 0, &mut files, &mut errors);
    }
    (files, errors)
}

fn collect_files(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(InputError {
                file: dir.to_owned(),
                object: "directory".to_owned(),
                message: e.to_string(),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                collect_files(&path, depth + 1, files, errors);
            }
        } else if is_manifest(&path) {
            files.push(path);
        }
    }
}

/// Whether a path is read as manifests (`.yaml`, `.yml`, `.json`).
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn load_file(file: &Path, inputs: &mut Inputs) -> Result<(), Vec<InputError>> {
    let fail = |object: &str, message: String| InputError {
        file: file.to_owned(),
        object: object.to_owned(),
        message,
    };
    let size = std::fs::metadata(file)
        .map_err(|e| vec![fail("file", e.to_string())])?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(vec![fail(
            "file",
            format!("{size} bytes, more than the {MAX_FILE_BYTES} read"),
        )]);
    }
    let text = std::fs::read_to_string(file).map_err(|e| vec![fail("file", e.to_string())])?;
    let docs = parse_documents(&text).map_err(|m| vec![fail("YAML", m)])?;
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if let Err(e) = load_object(file, &format!("document {}", i + 1), doc, inputs, 0) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Objects that did not come from files (the Kubernetes API): each with a description of
/// where it came from (`kube: Service redis/redis`), read as if from a file of that name.
pub fn inputs_from_objects(
    objects: Vec<(String, serde_json::Value)>,
) -> Result<Inputs, Vec<InputError>> {
    let mut inputs = Inputs::default();
    let mut errors = Vec::new();
    for (origin, value) in objects {
        if let Err(e) = load_object(Path::new(&origin), "object", value, &mut inputs, 0) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
}

/// The documents of a YAML stream (JSON is YAML), empty ones dropped.
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut options = serde_saphyr::Options::default();
    // One line per error: a snippet does not fit a log line or a status entry.
    options.with_snippet = false;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| e.to_string().trim().to_owned())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    creation_timestamp: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn load_object(
    file: &Path,
    doc: &str,
    value: serde_json::Value,
    inputs: &mut Inputs,
    depth: usize,
) -> Result<(), InputError> {
    let mut fail_object = doc.to_owned();
    let fail = |object: &str, message: String| InputError {
        file: file.to_owned(),
        object: object.to_owned(),
        message,
    };
    let Some(obj) = value.as_object() else {
        return Err(fail(
            doc,
            "not a Kubernetes object (a mapping with apiVersion and kind)".to_owned(),
        ));
    };
    let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    let api = obj
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    if kind.is_empty() || api.is_empty() {
        // Not a manifest (a scenario's local.yaml, say): not ours to judge.
        inputs
            .ignored
            .push(format!("{}: {doc} (no apiVersion/kind)", file.display()));
        return Ok(());
    }
    let meta: Meta = obj
        .get("metadata")
        .map(|m| serde_json::from_value(m.clone()))
        .transpose()
        .map_err(|e| fail(doc, format!("metadata: {e}")))?
        .unwrap_or_default();
    let namespace = if meta.namespace.is_empty() {
        "default".to_owned()
    } else {
        meta.namespace.clone()
    };
    if !meta.name.is_empty() {
        fail_object = format!("{kind} {namespace}/{}", meta.name);
    }
    let spec = obj.get("spec").cloned().unwrap_or(serde_json::Value::Null);
    match (api, kind) {
        ("v1", "List") => {
            if depth > 0 {
                return Err(fail(&fail_object, "a List inside a List".to_owned()));
            }
            let items = obj
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                load_object(
                    file,
                    &format!("{doc} item {}", i + 1),
                    item,
                    inputs,
                    depth + 1,
                )?;
            }
        }
        ("v1", "Service") => {
            require_name(&meta).map_err(|m| fail(&fail_object, m))?;
            let svc =
                parse_service(&meta.name, &namespace, &spec).map_err(|m| fail(&fail_object, m))?;
            inputs.services.push(svc);
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let service = meta
                .labels
                .get("kubernetes.io/service-name")
                .cloned()
                .ok_or_else(|| {
                    fail(
                        &fail_object,
                        "an EndpointSlice needs the label kubernetes.io/service-name".to_owned(),
                    )
                })?;
            let set = parse_endpoint_slice(&service, &namespace, obj)
                .map_err(|m| fail(&fail_object, m))?;
            inputs.endpoints.push(set);
        }
        ("v1", "Endpoints") => {
            require_name(&meta).map_err(|m| fail(&fail_object, m))?;
            let mut sets =
                parse_endpoints(&meta.name, &namespace, obj).map_err(|m| fail(&fail_object, m))?;
            inputs.endpoints.append(&mut sets);
        }
        ("networking.istio.io/v1alpha3", "EnvoyFilter") => {
            require_name(&meta).map_err(|m| fail(&fail_object, m))?;
            let creation = meta.creation_timestamp.clone().unwrap_or_default();
            let mut ef = envoyfilter::parse_envoy_filter(&meta.name, &namespace, &creation, &spec)
                .map_err(|e| fail(&fail_object, format!("{}: {}", e.path, e.message)))?;
            ef.origin = file.display().to_string();
            if inputs
                .envoy_filters
                .iter()
                .any(|f| f.name == ef.name && f.namespace == ef.namespace)
            {
                return Err(fail(
                    &fail_object,
                    "defined twice (an EnvoyFilter is identified by namespace and name)".to_owned(),
                ));
            }
            inputs.envoy_filters.push(ef);
        }
        (other_api, "EnvoyFilter") => {
            return Err(fail(
                &fail_object,
                format!(
                "apiVersion {other_api}: EnvoyFilter exists only as networking.istio.io/v1alpha3"
            ),
            ))
        }
        _ => inputs
            .ignored
            .push(format!("{}: {fail_object} ({api} {kind})", file.display())),
    }
    Ok(())
}

fn require_name(meta: &Meta) -> Result<(), String> {
    if meta.name.is_empty() {
        Err("metadata.name is required".to_owned())
    } else {
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpecJson {
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Vec<ServicePortJson>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePortJson {
    #[serde(default)]
    name: String,
    port: u32,
    #[serde(default)]
    target_port: Option<serde_json::Value>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    app_protocol: Option<String>,
}

fn parse_service(name: &str, namespace: &str, spec: &serde_json::Value) -> Result<Service, String> {
    let spec: ServiceSpecJson =
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err("spec.type ExternalName is not supported (no endpoints to serve)".to_owned());
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.into_iter().enumerate() {
        if p.port == 0 || p.port > 65535 {
            return Err(format!("spec.ports[{i}].port: {} is not a port", p.port));
        }
        let target_port = match p.target_port {
            None => TargetPort::Number(p.port),
            Some(serde_json::Value::Number(n)) => TargetPort::Number(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=65535).contains(n))
                    .ok_or_else(|| format!("spec.ports[{i}].targetPort: {n} is not a port"))?,
            ),
            Some(serde_json::Value::String(s)) => match s.parse::<u32>() {
                Ok(n) => TargetPort::Number(n),
                Err(_) => TargetPort::Name(s),
            },
            Some(other) => {
                return Err(format!("spec.ports[{i}].targetPort: {other} is not a port"))
            }
        };
        ports.push(ServicePort {
            name: p.name,
            port: p.port,
            target_port,
            protocol: p.protocol.unwrap_or_else(|| "TCP".to_owned()),
            app_protocol: p.app_protocol.unwrap_or_default(),
        });
    }
    Ok(Service {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        cluster_ip: spec.cluster_ip.filter(|ip| !ip.is_empty()),
        ports,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceEndpointJson {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Option<ConditionsJson>,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConditionsJson {
    #[serde(default)]
    ready: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct PortJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<u32>,
}

fn parse_endpoint_slice(
    service: &str,
    namespace: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<EndpointSet, String> {
    let address_type = obj
        .get("addressType")
        .and_then(|a| a.as_str())
        .unwrap_or("IPv4");
    if address_type == "FQDN" {
        return Err("addressType FQDN is not supported".to_owned());
    }
    let endpoints: Vec<SliceEndpointJson> = obj
        .get("endpoints")
        .map(|e| serde_json::from_value(e.clone()))
        .transpose()
        .map_err(|e| format!("endpoints: {e}"))?
        .unwrap_or_default();
    let ports: Vec<PortJson> = obj
        .get("ports")
        .map(|e| serde_json::from_value(e.clone()))
        .transpose()
        .map_err(|e| format!("ports: {e}"))?
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, e) in endpoints.into_iter().enumerate() {
        for a in e.addresses {
            a.parse::<std::net::IpAddr>()
                .map_err(|_| format!("endpoints[{i}].addresses: {a:?} is not an IP address"))?;
            out.push(Endpoint {
                address: a,
                // Kubernetes: an unknown readiness counts as ready.
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                hostname: e.hostname.clone().unwrap_or_default(),
            });
        }
    }
    Ok(EndpointSet {
        from_slice: true,
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        endpoints: out,
        ports: ports
            .into_iter()
            .filter_map(|p| Some((p.name.unwrap_or_default(), p.port?)))
            .collect(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubsetJson {
    #[serde(default)]
    addresses: Vec<AddressJson>,
    #[serde(default)]
    not_ready_addresses: Vec<AddressJson>,
    #[serde(default)]
    ports: Vec<PortJson>,
}

#[derive(Debug, Default, Deserialize)]
struct AddressJson {
    ip: String,
    #[serde(default)]
    hostname: Option<String>,
}

fn parse_endpoints(
    service: &str,
    namespace: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<EndpointSet>, String> {
    let subsets: Vec<SubsetJson> = obj
        .get("subsets")
        .map(|e| serde_json::from_value(e.clone()))
        .transpose()
        .map_err(|e| format!("subsets: {e}"))?
        .unwrap_or_default();
    let mut sets = Vec::new();
    for (i, s) in subsets.into_iter().enumerate() {
        let mut endpoints = Vec::new();
        for (ready, list) in [(true, s.addresses), (false, s.not_ready_addresses)] {
            for a in list {
                a.ip.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("subsets[{i}]: {:?} is not an IP address", a.ip))?;
                endpoints.push(Endpoint {
                    address: a.ip,
                    ready,
                    hostname: a.hostname.unwrap_or_default(),
                });
            }
        }
        sets.push(EndpointSet {
            from_slice: false,
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            endpoints,
            ports: s
                .ports
                .into_iter()
                .filter_map(|p| Some((p.name.unwrap_or_default(), p.port?)))
                .collect(),
        });
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kinds_it_knows_and_lists_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("app.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: redis, namespace: redis}\n\
             spec:\n  ports: [{name: tcp-redis, port: 6379}]\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: redis, namespace: redis}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: redis-abc, namespace: redis, labels: {kubernetes.io/service-name: redis}}\n\
             addressType: IPv4\nendpoints: [{addresses: [127.0.0.1], conditions: {ready: True}}]\n\
             ports: [{name: tcp-redis, port: 7000}]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let inputs = load_dirs(&[dir.path().to_owned()]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(inputs.services.len(), 1);
        assert_eq!(
            inputs.services[0].ports[0].target_port,
            TargetPort::Number(6379)
        );
        assert_eq!(
            inputs.endpoints[0].ports,
            vec![("tcp-redis".to_owned(), 7000)]
        );
        assert!(
            inputs.endpoints[0].endpoints[0].ready,
            "YAML 1.1 True is a boolean"
        );
        assert_eq!(inputs.ignored.len(), 1);
    }

    #[test]
    fn errors_name_the_file_and_the_object() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("bad.yaml"), "a: [1, 2\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("ef.yaml"),
            "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n\
             metadata: {name: x, namespace: redis}\n\
             spec: {configPatches: [{applyTo: SOMETHING, patch: {operation: ADD, value: {}}}]}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let errors = load_dirs(&[dir.path().to_owned()])
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].file.ends_with("bad.yaml"));
        assert_eq!(errors[0].object, "YAML");
        assert!(errors[1].to_string().contains(
            "ef.yaml: EnvoyFilter redis/x: spec.configPatches[0].applyTo: unknown applyTo \"SOMETHING\""
        ), "{}", errors[1]);
    }
}

#[cfg(test)]
mod api_tests {
    use super::*;

    /// The `--kube` source hands objects over as JSON, with where they came from.
    #[test]
    fn objects_from_the_api_read_like_files() {
        let svc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "redis", "namespace": "redis"},
            "spec": {"ports": [{"name": "tcp-redis", "port": 6379}]}
        });
        let bad = serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": "x", "namespace": "redis"},
            "spec": {"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "NOPE"}}]}
        });
        let inputs =
            inputs_from_objects(vec![("kube: Service redis/redis".to_owned(), svc.clone())])
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(inputs.services.len(), 1);
        let errors = inputs_from_objects(vec![
            ("kube: Service redis/redis".to_owned(), svc),
            ("kube: EnvoyFilter redis/x".to_owned(), bad),
        ])
        .err()
        .unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().starts_with("kube: EnvoyFilter redis/x: EnvoyFilter redis/x: spec.configPatches[0].patch.operation"),
            "{}",
            errors[0]
        );
    }
}
