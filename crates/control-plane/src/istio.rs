//! What istiod generates for a sidecar from Services and their endpoints, before EnvoyFilters:
//! per TCP-class service port an outbound listener `<VIP>_<port>` whose only filter is a
//! `tcp_proxy` to the EDS cluster `outbound|<port>||<service>.<namespace>.svc.<domain>`
//! (`pilot/pkg/networking/core/{listener,networkfilter,cluster_builder}.go`), or, with
//! `PILOT_ENABLE_REDIS_FILTER`, a `redis_proxy` with `catch_all_route` and `op_timeout: 5s` to a
//! MAGLEV cluster; and the ClusterLoadAssignment of each cluster
//! (`pilot/pkg/xds/endpoints/endpoint_builder.go`).
//!
//! Left out, on purpose: Istio-only extensions (`istio.stats`, `istio.metadata_exchange`) that
//! stock Envoy would refuse, the mTLS `transport_socket_matches` (they need Istio's agent for
//! certificates; PERMISSIVE mode serves plaintext), inbound listeners, and HTTP services (no
//! HTTP routing for services in redvoy). A headless Service gets, in `direct` mode, one VIP
//! listener like a ClusterIP Service: istiod builds one listener per pod IP, which cannot work
//! when every stand-in pod shares 127.0.0.1; in `sidecar` mode it gets none.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use prost_reflect::DynamicMessage;
use serde_json::{json, Value};

use crate::k8s::{EndpointSet, Inputs, Service, ServicePort, TargetPort};
use crate::reflect::{list_of, message_field, set_list};

const LISTENER: &str = "envoy.config.listener.v3.Listener";
const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
const CLA: &str = "envoy.config.endpoint.v3.ClusterLoadAssignment";
/// istiod's unlimited circuit breaker value.
const UNLIMITED: u64 = 4_294_967_295;
/// The outbound capture port of a sidecar (MeshConfig `proxyListenPort`).
pub const VIRTUAL_OUTBOUND_PORT: u32 = 15001;

/// How service listeners receive their traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerBind {
    /// Each service listener binds its VIP:port itself, so a client on this machine connects to
    /// it directly (no iptables). The default for local runs.
    #[default]
    Direct,
    /// Istio's form: `bind_to_port: false` on the service listeners and a `virtualOutbound`
    /// listener on 15001 with `use_original_dst`, for traffic redirected by iptables.
    Sidecar,
}

/// Generation settings (istiod's mesh config and features, and the local-run switches).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    pub listener_bind: ListenerBind,
    /// istiod's `PILOT_ENABLE_REDIS_FILTER`.
    pub redis_filter: bool,
    /// VIPs for Services without a clusterIP: base address and prefix length.
    pub vip_range: (Ipv4Addr, u8),
    /// Rewrite `*.svc.<domain>` addresses in clusters to the Services' endpoints.
    pub resolve_cluster_local: bool,
    /// `virtualOutbound`'s port in sidecar mode (MeshConfig `proxyListenPort`).
    pub virtual_outbound_port: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            domain: "cluster.local".to_owned(),
            listener_bind: ListenerBind::Direct,
            redis_filter: false,
            vip_range: (Ipv4Addr::new(127, 10, 0, 0), 16),
            resolve_cluster_local: false,
            virtual_outbound_port: VIRTUAL_OUTBOUND_PORT,
        }
    }
}

/// Istio's protocol of a service port (`pkg/config/kube/conversion.go` `ConvertProtocol`):
/// `appProtocol` when set, else the port name; its prefix before the first `-` (after a
/// `grpc-web` check), case-insensitively; an unknown name is sniffed, except on well-known
/// server-first ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Redis,
    /// Istio's other TCP-class protocols: TCP, TLS, HTTPS (passed through), Mongo, MySQL.
    Tcp,
    /// Istio sniffs these (a TCP chain plus an HTTP chain); only the TCP chain is generated.
    Auto,
    /// HTTP, HTTP/2, gRPC, UDP: not generated (no HTTP routing for services here).
    Other,
}

pub fn protocol_of(port: &ServicePort) -> Protocol {
    if port.protocol.eq_ignore_ascii_case("UDP") || port.protocol.eq_ignore_ascii_case("SCTP") {
        return Protocol::Other;
    }
    let name = if port.app_protocol.is_empty() {
        port.name.as_str()
    } else {
        match port.app_protocol.as_str() {
            "kubernetes.io/h2c" | "kubernetes.io/ws" => return Protocol::Other,
            "kubernetes.io/wss" => return Protocol::Tcp,
            other => other,
        }
    };
    if name.len() >= 8 && name[..8].eq_ignore_ascii_case("grpc-web") {
        return Protocol::Other;
    }
    let prefix = name
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match prefix.as_str() {
        "redis" => Protocol::Redis,
        "tcp" | "tls" | "https" | "mongo" | "mysql" => Protocol::Tcp,
        "http" | "http2" | "http_proxy" | "grpc" | "udp" => Protocol::Other,
        _ if matches!(port.port, 25 | 53 | 3306 | 27017) => Protocol::Tcp,
        _ => Protocol::Auto,
    }
}

/// One generated cluster and the service hostnames it stands for (EnvoyFilter cluster match).
#[derive(Debug, Clone)]
pub struct GeneratedCluster {
    pub cluster: DynamicMessage,
    pub hosts: Vec<String>,
}

/// Everything generated from the inputs, the same for every proxy before patches.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub listeners: Vec<DynamicMessage>,
    pub clusters: Vec<GeneratedCluster>,
    /// EDS: cluster name → ClusterLoadAssignment.
    pub endpoints: BTreeMap<String, DynamicMessage>,
    /// `namespace/name` → the VIP used for it.
    pub vips: BTreeMap<String, String>,
    /// What was not generated, and why.
    pub notes: Vec<String>,
}

/// An error in generation is a bug in this module, not in the input; it carries the JSON's
/// conversion error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("generating {what}: {message}")]
pub struct GenerateError {
    pub what: String,
    pub message: String,
}

fn to_message(full_name: &str, value: &Value, what: &str) -> Result<DynamicMessage, GenerateError> {
    redvoy_config::message_from_json(full_name, value, true, what).map_err(|e| GenerateError {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// The FQDN of a Service.
pub fn fqdn(svc: &Service, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", svc.name, svc.namespace)
}

/// Istio's `BuildSubsetKey` for an outbound cluster without subset.
pub fn outbound_cluster_name(port: u32, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// Generates listeners, clusters and endpoints for `inputs`.
pub fn generate(inputs: &Inputs, settings: &Settings) -> Result<Generated, GenerateError> {
    let mut out = Generated::default();
    let mut services: Vec<&Service> = inputs.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let vips = assign_vips(&services, settings.vip_range, settings.listener_bind);
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        if svc.is_headless() && settings.listener_bind == ListenerBind::Sidecar {
            // istiod builds one listener per pod IP (or `0.0.0.0_<port>` with a chain per pod);
            // not generated.
            out.notes.push(format!(
                "Service {key}: headless, no listener or cluster in sidecar mode (its pods are reached by pod DNS names)"
            ));
            continue;
        }
        let Some(vip) = vips.get(&key).cloned() else {
            out.notes
                .push(format!("Service {key}: no VIP available in the range"));
            continue;
        };
        out.vips.insert(key.clone(), vip.clone());
        let host = fqdn(svc, &settings.domain);
        for port in &svc.ports {
            let protocol = protocol_of(port);
            if protocol == Protocol::Other {
                out.notes.push(format!(
                    "Service {key} port {} ({}): not a TCP-class protocol, not generated",
                    port.port, port.name
                ));
                continue;
            }
            let cluster_name = outbound_cluster_name(port.port, &host);
            let redis = protocol == Protocol::Redis && settings.redis_filter;
            out.listeners.push(to_message(
                LISTENER,
                &listener_json(
                    &vip,
                    port.port,
                    &cluster_name,
                    redis,
                    settings.listener_bind,
                ),
                &format!("listener {vip}_{}", port.port),
            )?);
            out.clusters.push(GeneratedCluster {
                cluster: to_message(
                    CLUSTER,
                    &cluster_json(&cluster_name, svc, &host, redis),
                    &cluster_name,
                )?,
                hosts: vec![host.clone()],
            });
            let cla = cla_json(&cluster_name, endpoints_of(inputs, svc, port));
            out.endpoints
                .insert(cluster_name.clone(), to_message(CLA, &cla, &cluster_name)?);
        }
    }
    if settings.listener_bind == ListenerBind::Sidecar {
        out.listeners.push(to_message(
            LISTENER,
            &virtual_outbound_json(settings.virtual_outbound_port),
            "virtualOutbound",
        )?);
        out.clusters.push(GeneratedCluster {
            cluster: to_message(CLUSTER, &passthrough_json(), "PassthroughCluster")?,
            hosts: Vec::new(),
        });
    }
    Ok(out)
}

/// VIPs: a Service's own `clusterIP`, else one from the range, picked by a hash of
/// `namespace/name` (stable while Services come and go), the next free one on a collision.
fn assign_vips(
    services: &[&Service],
    (base, prefix): (Ipv4Addr, u8),
    bind: ListenerBind,
) -> BTreeMap<String, String> {
    let mut vips = BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    for svc in services {
        if let Some(ip) = svc.cluster_ip.as_ref().filter(|ip| ip.as_str() != "None") {
            vips.insert(format!("{}/{}", svc.namespace, svc.name), ip.clone());
            taken.insert(ip.clone());
        }
    }
    let size: u64 = 1u64 << (32 - u32::from(prefix.min(30)));
    let base = u32::from(base) & !((size - 1) as u32);
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        if vips.contains_key(&key) || (svc.is_headless() && bind == ListenerBind::Sidecar) {
            continue;
        }
        // Skip the network and broadcast-like ends of the range.
        let usable = size.saturating_sub(2).max(1);
        let start = xxhash_rust::xxh64::xxh64(key.as_bytes(), 0) % usable;
        for i in 0..usable {
            let offset = (start + i) % usable + 1;
            let ip = Ipv4Addr::from(base.wrapping_add(offset as u32)).to_string();
            if taken.insert(ip.clone()) {
                vips.insert(key.clone(), ip);
                break;
            }
        }
    }
    vips
}

/// The endpoints of `svc` for `port`: (address, port, ready).
pub fn endpoints_of(
    inputs: &Inputs,
    svc: &Service,
    port: &ServicePort,
) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    for set in sets_of(inputs, &svc.namespace, &svc.name) {
        let Some(p) = endpoint_port(set, port) else {
            continue;
        };
        for e in &set.endpoints {
            out.push((e.address.clone(), p, e.ready));
        }
    }
    out
}

fn sets_of<'a>(
    inputs: &'a Inputs,
    namespace: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a EndpointSet> {
    let of_service = move |s: &&EndpointSet| s.namespace == namespace && s.service == name;
    let has_slices = inputs
        .endpoints
        .iter()
        .filter(of_service)
        .any(|s| s.from_slice);
    inputs
        .endpoints
        .iter()
        .filter(of_service)
        .filter(move |s| s.from_slice || !has_slices)
}

/// The port on the endpoints for a service port: the endpoint port of the same name, else the
/// only one, else a numeric targetPort.
fn endpoint_port(set: &EndpointSet, port: &ServicePort) -> Option<u32> {
    if let Some((_, p)) = set.ports.iter().find(|(n, _)| *n == port.name) {
        return Some(*p);
    }
    if set.ports.len() == 1 && port.name.is_empty() {
        return Some(set.ports[0].1);
    }
    match &port.target_port {
        TargetPort::Number(n) if set.ports.is_empty() => Some(*n),
        _ => None,
    }
}

fn listener_json(vip: &str, port: u32, cluster: &str, redis: bool, bind: ListenerBind) -> Value {
    let filter = if redis {
        json!({
            "name": "envoy.filters.network.redis_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
                "stat_prefix": cluster,
                "latency_in_micros": true,
                "settings": {"op_timeout": "5s"},
                "prefix_routes": {"catch_all_route": {"cluster": cluster}}
            }
        })
    } else {
        json!({
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": cluster,
                "cluster": cluster
            }
        })
    };
    let mut l = json!({
        "name": format!("{vip}_{port}"),
        "address": {"socket_address": {"address": vip, "port_value": port}},
        "traffic_direction": "OUTBOUND",
        "continue_on_listener_filters_timeout": true,
        "listener_filters_timeout": "0s",
        "filter_chains": [{"filters": [filter]}]
    });
    if bind == ListenerBind::Sidecar {
        l["bind_to_port"] = json!(false);
    }
    l
}

fn cluster_json(name: &str, svc: &Service, host: &str, redis: bool) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {
            "eds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "service_name": name
        },
        "connect_timeout": "10s",
        "lb_policy": if redis { "MAGLEV" } else { "LEAST_REQUEST" },
        "circuit_breakers": {"thresholds": [{
            "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
            "max_requests": UNLIMITED, "max_retries": UNLIMITED, "track_remaining": true
        }]},
        "common_lb_config": {},
        "metadata": {"filter_metadata": {"istio": {"services": [{
            "host": host,
            "name": svc.name,
            "namespace": svc.namespace
        }]}}}
    })
}

/// Not-ready endpoints are left out, as istiod does by default (`PILOT_SEND_UNHEALTHY_ENDPOINTS`
/// off): sent as UNHEALTHY they would still count in Envoy's panic threshold.
fn cla_json(name: &str, endpoints: Vec<(String, u32, bool)>) -> Value {
    let lb: Vec<Value> = endpoints
        .into_iter()
        .filter(|(_, _, ready)| *ready)
        .map(|(address, port, _)| {
            json!({
                "endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}},
                "health_status": "HEALTHY",
                "load_balancing_weight": 1
            })
        })
        .collect();
    if lb.is_empty() {
        return json!({"cluster_name": name});
    }
    let weight = lb.len();
    json!({"cluster_name": name, "endpoints": [{"locality": {}, "lb_endpoints": lb, "load_balancing_weight": weight}]})
}

fn virtual_outbound_json(port: u32) -> Value {
    json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "use_original_dst": true,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{
            "name": "virtualOutbound-catchall-tcp",
            "filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "PassthroughCluster",
                    "cluster": "PassthroughCluster"
                }
            }]
        }]
    })
}

fn passthrough_json() -> Value {
    json!({
        "name": "PassthroughCluster",
        "type": "ORIGINAL_DST",
        "connect_timeout": "10s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": {"thresholds": [{
            "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
            "max_requests": UNLIMITED, "max_retries": UNLIMITED
        }]}
    })
}

/// `--resolve-cluster-local`: what cluster DNS and kube-proxy do for a proxy in a cluster, done
/// on the configuration instead. Every socket address in a cluster's `load_assignment` written
/// as `<service>.<namespace>.svc.<domain>` becomes the Service's endpoints, and
/// `<hostname>.<service>.<namespace>.svc.<domain>` (a StatefulSet pod) the endpoint with that
/// hostname, the port mapped from the service port to the endpoint port. Returns the names
/// that did not resolve.
pub fn resolve_cluster_local(
    cluster: &mut DynamicMessage,
    inputs: &Inputs,
    domain: &str,
) -> Vec<String> {
    let Some(mut la) = message_field(cluster, "load_assignment") else {
        return Vec::new();
    };
    let mut unresolved = Vec::new();
    let mut localities = list_of(&la, "endpoints");
    let mut changed = false;
    for loc in localities.iter_mut() {
        let mut lbs = Vec::new();
        for lb in list_of(loc, "lb_endpoints") {
            let Some((host, port)) = socket_address_of(&lb) else {
                lbs.push(lb);
                continue;
            };
            let Some(resolved) = resolve_name(&host, port, inputs, domain) else {
                if host.ends_with(&format!(".svc.{domain}")) {
                    unresolved.push(format!("{host}:{port}"));
                }
                lbs.push(lb);
                continue;
            };
            changed = true;
            for (address, p) in resolved {
                let mut copy = lb.clone();
                set_socket_address(&mut copy, &address, p);
                lbs.push(copy);
            }
        }
        set_list(loc, "lb_endpoints", lbs);
    }
    if changed {
        set_list(&mut la, "endpoints", localities);
        cluster.set_field_by_name("load_assignment", prost_reflect::Value::Message(la));
    }
    unresolved
}

fn resolve_name(
    host: &str,
    port: u32,
    inputs: &Inputs,
    domain: &str,
) -> Option<Vec<(String, u32)>> {
    let stem = host.strip_suffix(&format!(".svc.{domain}"))?;
    let parts: Vec<&str> = stem.split('.').collect();
    let (pod, service, namespace) = match parts.as_slice() {
        [service, namespace] => (None, *service, *namespace),
        [pod, service, namespace] => (Some(*pod), *service, *namespace),
        _ => return None,
    };
    let svc = inputs
        .services
        .iter()
        .find(|s| s.name == service && s.namespace == namespace)?;
    let svc_port = svc.ports.iter().find(|p| p.port == port)?;
    let mut out = Vec::new();
    for set in sets_of(inputs, namespace, service) {
        let Some(p) = endpoint_port(set, svc_port) else {
            continue;
        };
        for e in &set.endpoints {
            if pod.is_none_or(|h| h == e.hostname) && (e.ready || pod.is_some()) {
                out.push((e.address.clone(), p));
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn socket_address_of(lb: &DynamicMessage) -> Option<(String, u32)> {
    let sa = message_field(
        &message_field(&message_field(lb, "endpoint")?, "address")?,
        "socket_address",
    )?;
    let host = sa.get_field_by_name("address")?.as_str()?.to_owned();
    let port = sa.get_field_by_name("port_value")?.as_u32()?;
    Some((host, port))
}

fn set_socket_address(lb: &mut DynamicMessage, address: &str, port: u32) {
    let Some(mut endpoint) = message_field(lb, "endpoint") else {
        return;
    };
    let Some(mut addr) = message_field(&endpoint, "address") else {
        return;
    };
    let Some(mut sa) = message_field(&addr, "socket_address") else {
        return;
    };
    sa.set_field_by_name("address", prost_reflect::Value::String(address.to_owned()));
    sa.set_field_by_name("port_value", prost_reflect::Value::U32(port));
    addr.set_field_by_name("socket_address", prost_reflect::Value::Message(sa));
    endpoint.set_field_by_name("address", prost_reflect::Value::Message(addr));
    lb.set_field_by_name("endpoint", prost_reflect::Value::Message(endpoint));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{Endpoint, EndpointSet};

    fn port(name: &str, port: u32, app_protocol: &str) -> ServicePort {
        ServicePort {
            name: name.to_owned(),
            port,
            target_port: TargetPort::Number(port),
            protocol: "TCP".to_owned(),
            app_protocol: app_protocol.to_owned(),
        }
    }

    #[test]
    fn protocol_selection_is_istios() {
        assert_eq!(protocol_of(&port("redis", 6379, "")), Protocol::Redis);
        assert_eq!(protocol_of(&port("Redis-main", 6379, "")), Protocol::Redis);
        assert_eq!(protocol_of(&port("tcp-client", 6379, "")), Protocol::Tcp);
        assert_eq!(
            protocol_of(&port("client", 6379, "redis")),
            Protocol::Redis,
            "appProtocol wins"
        );
        assert_eq!(protocol_of(&port("http-x", 6379, "tcp")), Protocol::Tcp);
        assert_eq!(
            protocol_of(&port("redis", 6379, "custom")),
            Protocol::Auto,
            "appProtocol alone decides"
        );
        assert_eq!(protocol_of(&port("grpc-web-x", 80, "")), Protocol::Other);
        assert_eq!(protocol_of(&port("tls-redis", 6380, "")), Protocol::Tcp);
        assert_eq!(protocol_of(&port("client", 6379, "")), Protocol::Auto);
        assert_eq!(
            protocol_of(&port("", 3306, "")),
            Protocol::Tcp,
            "server-first port"
        );
        assert_eq!(protocol_of(&port("http-web", 80, "")), Protocol::Other);
    }

    fn service(name: &str, cluster_ip: Option<&str>) -> Service {
        Service {
            name: name.to_owned(),
            namespace: "redis".to_owned(),
            cluster_ip: cluster_ip.map(str::to_owned),
            ports: vec![port("tcp-redis", 6379, "")],
        }
    }

    #[test]
    fn vips_are_the_cluster_ip_else_stable_and_distinct() {
        let a = service("a", None);
        let b = service("b", Some("10.0.0.7"));
        let c = service("c", None);
        let range = (Ipv4Addr::new(127, 10, 0, 0), 24);
        let vips = assign_vips(&[&a, &b, &c], range, ListenerBind::Direct);
        assert_eq!(vips["redis/b"], "10.0.0.7");
        assert_ne!(vips["redis/a"], vips["redis/c"]);
        assert!(vips["redis/a"].starts_with("127.10.0."));
        // Adding a Service does not move the others.
        let d = service("d", None);
        let again = assign_vips(&[&a, &b, &c, &d], range, ListenerBind::Direct);
        assert_eq!(again["redis/a"], vips["redis/a"]);
        assert_eq!(again["redis/c"], vips["redis/c"]);
    }

    fn inputs() -> Inputs {
        let mut headless = service("redis-cluster", Some("None"));
        headless.ports[0].name = "tcp-client".to_owned();
        let set = |host: &str, port: u32| EndpointSet {
            service: "redis-cluster".to_owned(),
            namespace: "redis".to_owned(),
            endpoints: vec![Endpoint {
                address: "127.0.0.1".to_owned(),
                ready: true,
                hostname: host.to_owned(),
            }],
            ports: vec![("tcp-client".to_owned(), port)],
            from_slice: true,
        };
        Inputs {
            services: vec![headless],
            endpoints: vec![set("redis-cluster-0", 7000), set("redis-cluster-1", 7001)],
            ..Inputs::default()
        }
    }

    fn cluster_with(addresses: &[(&str, u32)]) -> DynamicMessage {
        let lbs: Vec<Value> = addresses
            .iter()
            .map(|(a, p)| json!({"endpoint": {"address": {"socket_address": {"address": a, "port_value": p}}}}))
            .collect();
        to_message(
            CLUSTER,
            &json!({"name": "c", "type": "STRICT_DNS", "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": lbs}]}}),
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn addresses(c: &DynamicMessage) -> Vec<(String, u32)> {
        let la =
            message_field(c, "load_assignment").unwrap_or_else(|| panic!("no load_assignment"));
        list_of(&la, "endpoints")
            .iter()
            .flat_map(|l| list_of(l, "lb_endpoints"))
            .filter_map(|lb| socket_address_of(&lb))
            .collect()
    }

    #[test]
    fn cluster_local_names_resolve_to_endpoints() {
        let inputs = inputs();
        let mut c = cluster_with(&[
            (
                "redis-cluster-1.redis-cluster.redis.svc.cluster.local",
                6379,
            ),
            ("redis-cluster.redis.svc.cluster.local", 6379),
            ("elsewhere.example.com", 6379),
            ("nothere.redis.svc.cluster.local", 6379),
        ]);
        let unresolved = resolve_cluster_local(&mut c, &inputs, "cluster.local");
        assert_eq!(
            unresolved,
            vec!["nothere.redis.svc.cluster.local:6379".to_owned()]
        );
        assert_eq!(
            addresses(&c),
            vec![
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("elsewhere.example.com".to_owned(), 6379),
                ("nothere.redis.svc.cluster.local".to_owned(), 6379),
            ]
        );
    }

    #[test]
    fn endpoints_are_ignored_beside_endpoint_slices() {
        let mut inputs = inputs();
        inputs.endpoints.push(EndpointSet {
            from_slice: false,
            ..inputs.endpoints[0].clone()
        });
        let svc = inputs.services[0].clone();
        assert_eq!(endpoints_of(&inputs, &svc, &svc.ports[0]).len(), 2);
    }
}
