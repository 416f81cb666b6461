//! A STRICT mesh, end to end, with Istio's shapes: redvoy as the client sidecar originating
//! Istio mTLS (its certificate and root CA from a stub of Istio's agent on the SDS Unix
//! socket, `transport_socket_matches` entry `tlsMode-istio`, Istio's ALPN and SNI) to a real
//! Envoy 1.40 acting as the server-side sidecar of a redis-server (an inbound listener that
//! requires mTLS); and the reverse: Envoy as the client sidecar, redvoy as the server-side
//! sidecar with Istio's PERMISSIVE inbound listener (TLS inspector; an mTLS chain and a
//! plaintext chain), serving mTLS and plaintext clients and refusing a wrong identity.

use std::time::Duration;

use redvoy_test_util::xds::{
    certificate_secret, sds_grpc_cluster_yaml, validation_secret, ISTIO_SDS_CONFIG_YAML,
    TYPE_SECRET,
};
use redvoy_test_util::{
    try_wait_for, AdsServer, Proxy, ProxyOptions, RedisServer, Reply, RespClient, Target,
    REDIS_PROXY_TYPE,
};

use crate::tls::{Pki, CLIENT_ID, SPIFFE_ID};

/// Bound on every wait of this file.
const WAIT: Duration = Duration::from_secs(15);
/// Istio's ALPN for mesh mTLS.
const ISTIO_ALPN: &str = "[istio-peer-exchange, istio]";

const NODE: &str =
    "node: {id: sidecar~127.0.0.1~client.default~default.svc.cluster.local, cluster: client.default}\n";

fn admin() -> &'static str {
    "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}\n"
}

/// A stub of Istio's agent serving `default` (the workload's certificate `cert`) and
/// `ROOTCA` on a Unix socket in `dir`.
fn agent(pki: &Pki, dir: &std::path::Path, cert: &str) -> (AdsServer, String) {
    let socket = dir.join("sds.sock");
    let agent = AdsServer::start_unix(&socket).unwrap_or_else(|e| panic!("agent: {e}"));
    agent.set_messages(
        "1",
        &[
            certificate_secret(
                "default",
                &pki.read(&format!("{cert}.pem")),
                &pki.read(&format!("{cert}-key.pem")),
            ),
            validation_secret("ROOTCA", &pki.read("ca.pem")),
        ],
    );
    (agent, socket.display().to_string())
}

/// A redis_proxy listener on `{{LISTENER_PORT}}` to `cluster`.
fn redis_listener(cluster: &str) -> String {
    format!(
        "  - name: outbound_redis\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT}}}}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.redis_proxy\n        typed_config:\n          \"@type\": {REDIS_PROXY_TYPE}\n          stat_prefix: outbound_redis\n          settings: {{op_timeout: 5s}}\n          prefix_routes: {{catch_all_route: {{cluster: \"{cluster}\"}}}}\n"
    )
}

/// A STATIC cluster to 127.0.0.1:`port`, its endpoint labelled `tlsMode: istio`, with Istio's
/// `transport_socket_matches` (`tls_common` is the mTLS entry's `common_tls_context` body).
fn outbound_cluster(name: &str, port: u16, tls_common: &str) -> String {
    let common: String = tls_common
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "  - name: \"{name}\"\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: \"{name}\"\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}, metadata: {{filter_metadata: {{envoy.transport_socket_match: {{tlsMode: istio}}}}}}}}]}}]\n    transport_socket_matches:\n    - name: tlsMode-istio\n      match: {{tlsMode: istio}}\n      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n          sni: outbound_.6379_._.redis.default.svc.cluster.local\n          common_tls_context:\n{common}    - name: tlsMode-disabled\n      match: {{}}\n      transport_socket:\n        name: envoy.transport_sockets.raw_buffer\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}\n"
    )
}

/// Istio's inbound listener on `{{LISTENER_PORT_<n>}}` (`port`): TLS inspector, an mTLS chain
/// (`tls` is its DownstreamTlsContext's body) and, when `permissive`, a plaintext chain, both
/// tcp_proxy to `inbound|6379||`.
fn inbound_listener(port: &str, tls: &str, permissive: bool) -> String {
    let tls: String = tls.lines().map(|l| format!("          {l}\n")).collect();
    let tcp = "      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: \"inbound|6379||\"\n          cluster: \"inbound|6379||\"\n";
    let plaintext = if permissive {
        format!(
            "    - filter_chain_match: {{transport_protocol: raw_buffer}}\n      filters:\n{tcp}"
        )
    } else {
        String::new()
    };
    format!(
        "  - name: virtualInbound\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}\n    filter_chains:\n    - filter_chain_match: {{transport_protocol: tls, application_protocols: {ISTIO_ALPN}}}\n      filters:\n{tcp}      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{tls}{plaintext}"
    )
}

fn inbound_cluster(redis_port: u16) -> String {
    format!(
        "  - name: \"inbound|6379||\"\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment: {{cluster_name: \"inbound|6379||\", endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {redis_port}}}}}}}}}]}}]}}\n"
    )
}

fn start(target: Target, yaml: &str) -> Proxy {
    Proxy::start_with(target, yaml, &ProxyOptions::default())
}

/// redvoy originates Istio mTLS with the agent's secrets to Envoy's inbound listener, which
/// requires it.
#[test]
fn redvoy_client_sidecar_to_envoy_server_sidecar_strict() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let p = |n: &str| pki.path(n).display().to_string();
    // The server side: Envoy with files (how a sidecar's agent would have written them).
    let server_tls = format!(
        "require_client_certificate: true\ncommon_tls_context:\n  alpn_protocols: [istio-peer-exchange, h2, http/1.1]\n  tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]\n  validation_context:\n    trusted_ca: {{filename: {}}}\n    match_typed_subject_alt_names: [{{san_type: URI, matcher: {{prefix: \"spiffe://cluster.local/\"}}}}]",
        p("server.pem"),
        p("server-key.pem"),
        p("ca.pem")
    );
    let envoy_yaml = format!(
        "{}static_resources:\n  listeners:\n{}  clusters:\n{}",
        admin(),
        inbound_listener("{{LISTENER_PORT}}", &server_tls, false),
        inbound_cluster(redis.port())
    );
    let server_sidecar = start(Target::Envoy, &envoy_yaml);
    let inbound_port = server_sidecar.listener_port(0);

    // The client side: redvoy with the agent's secrets.
    let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("dir: {e}"));
    let (agent, socket) = agent(&pki, dir.path(), "client");
    let client_common = format!(
        "alpn_protocols: {ISTIO_ALPN}\ntls_certificate_sds_secret_configs:\n- name: default\n  sds_config: {ISTIO_SDS_CONFIG_YAML}\ncombined_validation_context:\n  default_validation_context:\n    match_subject_alt_names: [{{exact: \"{SPIFFE_ID}\"}}]\n  validation_context_sds_secret_config:\n    name: ROOTCA\n    sds_config: {ISTIO_SDS_CONFIG_YAML}"
    );
    let cluster = "outbound|6379||redis.default.svc.cluster.local";
    let redvoy_yaml = format!(
        "{NODE}{}static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        admin(),
        redis_listener(cluster),
        outbound_cluster(cluster, inbound_port, &client_common),
        sds_grpc_cluster_yaml(&socket)
    );
    let client_sidecar = start(Target::Redvoy, &redvoy_yaml);
    let mut client = client_sidecar.client();
    for i in 0..20 {
        let key = format!("mesh:{i}");
        assert_eq!(client.cmd(&["SET", &key, "v"]), Reply::ok(), "SET {key}");
        assert_eq!(client.cmd(&["GET", &key]), Reply::bulk("v"), "GET {key}");
        assert_eq!(
            redis.cmd(&["GET", &key]),
            Reply::bulk("v"),
            "{key} on the server"
        );
    }
    // Both secrets came from the agent; the hop was mutual TLS, verified on both sides.
    assert!(agent
        .requests()
        .iter()
        .any(|r| r.type_url == TYPE_SECRET && r.resource_names == ["ROOTCA"]));
    let scope = format!("listener.127.0.0.1_{inbound_port}.ssl.");
    assert!(server_sidecar.stat(&format!("{scope}handshake")) >= 1);
    assert_eq!(server_sidecar.stat(&format!("{scope}no_certificate")), 0);
    assert_eq!(server_sidecar.stat(&format!("{scope}fail_verify_error")), 0);
    assert!(client_sidecar.stat(&format!("cluster.{cluster}.ssl.handshake")) >= 1);
    assert_eq!(
        client_sidecar.stat(&format!(
            "cluster.{cluster}.tlsMode-istio.total_match_count"
        )),
        1
    );
}

/// Envoy originates Istio mTLS to redvoy's PERMISSIVE inbound listener (secrets from the
/// agent): served; a plaintext client is served by the plaintext chain; a client with a
/// wrong identity is refused.
#[test]
fn envoy_client_sidecar_to_redvoy_server_sidecar_permissive() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let p = |n: &str| pki.path(n).display().to_string();
    let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("dir: {e}"));
    let (_agent, socket) = agent(&pki, dir.path(), "server");
    let server_tls = format!(
        "require_client_certificate: true\ncommon_tls_context:\n  alpn_protocols: [istio-peer-exchange, h2, http/1.1]\n  tls_certificate_sds_secret_configs:\n  - name: default\n    sds_config: {ISTIO_SDS_CONFIG_YAML}\n  combined_validation_context:\n    default_validation_context:\n      match_subject_alt_names: [{{exact: \"{CLIENT_ID}\"}}]\n    validation_context_sds_secret_config:\n      name: ROOTCA\n      sds_config: {ISTIO_SDS_CONFIG_YAML}"
    );
    let redvoy_yaml = format!(
        "{NODE}{}static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        admin(),
        inbound_listener("{{LISTENER_PORT}}", &server_tls, true),
        inbound_cluster(redis.port()),
        sds_grpc_cluster_yaml(&socket)
    );
    let server_sidecar = start(Target::Redvoy, &redvoy_yaml);
    let inbound_port = server_sidecar.listener_port(0);

    // The client side: Envoy with files, one cluster per identity.
    let client_common = |cert: &str| {
        format!(
            "alpn_protocols: {ISTIO_ALPN}\ntls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]\nvalidation_context:\n  trusted_ca: {{filename: {}}}\n  match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: \"{SPIFFE_ID}\"}}}}]",
            p(&format!("{cert}.pem")),
            p(&format!("{cert}-key.pem")),
            p("ca.pem")
        )
    };
    let envoy_yaml = format!(
        "{}static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        admin(),
        redis_listener("mesh"),
        redis_listener("stranger")
            .replace("outbound_redis", "stranger_redis")
            .replace("{{LISTENER_PORT}}", "{{LISTENER_PORT_1}}"),
        outbound_cluster("mesh", inbound_port, &client_common("client")),
        outbound_cluster("stranger", inbound_port, &client_common("stranger")),
    );
    let client_sidecar = start(Target::Envoy, &envoy_yaml);
    let mut client = client_sidecar.client();
    assert_eq!(client.cmd(&["SET", "permissive", "mtls"]), Reply::ok());
    assert_eq!(redis.cmd(&["GET", "permissive"]), Reply::bulk("mtls"));
    // A plaintext client (a pod without a sidecar) straight to the inbound port.
    let mut plain = RespClient::connect(inbound_port);
    assert_eq!(plain.cmd(&["GET", "permissive"]), Reply::bulk("mtls"));
    // A wrong identity: refused by redvoy (the SAN check), so Envoy's request fails.
    let mut stranger = RespClient::connect(client_sidecar.listener_port(1));
    let refused = stranger.cmd(&["GET", "permissive"]);
    assert!(matches!(refused, Reply::Error(_)), "{refused:?}");
    let scope = format!("listener.127.0.0.1_{inbound_port}.");
    let failed_san = try_wait_for(WAIT, || {
        (server_sidecar.stat(&format!("{scope}ssl.fail_verify_san")) >= 1).then_some(())
    });
    assert!(failed_san.is_some(), "the wrong identity was not refused");
    assert!(server_sidecar.stat(&format!("{scope}ssl.handshake")) >= 1);
    assert!(server_sidecar.stat("tls_inspector.tls_found") >= 1);
    assert!(server_sidecar.stat("tls_inspector.tls_not_found") >= 1);
}
