//! Oracle comparison: downstream TLS (`DownstreamTlsContext` on a filter chain) and the TLS and
//! HTTP inspectors, with `redis-cli --tls` as the client and a test CA made here. The same
//! clients through Envoy 1.40 and redvoy: mutual TLS with a required, verified client
//! certificate (SPIFFE SAN matched), refused without one, with an untrusted one or a wrong
//! identity; server-only TLS; and an Istio-PERMISSIVE-shaped listener serving TLS and
//! plaintext clients on one port by `transport_protocol`.

use std::process::Command;
use std::time::Duration;

use redvoy_test_util::{same_on_all_targets, Proxy, RedisServer, Rows, REDIS_PROXY_TYPE};

use crate::targets;
use crate::tls::{Pki, CLIENT_ID};

/// Bound on one redis-cli run (a refused handshake fails fast; this only guards a hang).
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// A redis_proxy filter chain (stat prefix `prefix`) to cluster `redis`, with `extra` YAML at
/// the chain's level (its match, its transport socket).
fn chain(prefix: &str, extra: &str) -> String {
    let extra: String = extra.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "    - filters:\n      - name: envoy.filters.network.redis_proxy\n        typed_config:\n          \"@type\": {REDIS_PROXY_TYPE}\n          stat_prefix: {prefix}\n          settings: {{op_timeout: 5s}}\n          prefix_routes: {{catch_all_route: {{cluster: redis}}}}\n{extra}"
    )
}

/// A `transport_socket` with a DownstreamTlsContext: the server certificate, plus `common`
/// at `common_tls_context`'s level and `context` at the DownstreamTlsContext's.
fn server_tls(pki: &Pki, common: &str, context: &str) -> String {
    let p = |n: &str| pki.path(n).display().to_string();
    let common: String = common.lines().map(|l| format!("      {l}\n")).collect();
    let context: String = context.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{context}    common_tls_context:\n      tls_certificates:\n      - certificate_chain: {{filename: {}}}\n        private_key: {{filename: {}}}\n{common}",
        p("server.pem"),
        p("server-key.pem"),
    )
}

/// `redis-cli` against `port` with `tls` flags (none: plaintext); its reply, or `refused`
/// when it could not get one (the handshake failed or the connection was closed).
fn cli(port: u16, tls: &[&str], args: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg(CLI_TIMEOUT.as_secs().to_string())
        .args(["redis-cli", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls)
        .args(args);
    let out = cmd.output().unwrap_or_else(|e| panic!("redis-cli: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // redis-cli prints a failed connection or read as an error line (and exits non-zero
    // for a failed connect); either way no reply came.
    if !out.status.success()
        || stdout.is_empty()
        || stdout.starts_with("Could not connect")
        || stdout.contains("Error:")
    {
        "refused".to_owned()
    } else {
        stdout
    }
}

#[test]
fn downstream_tls_and_inspectors_like_envoy() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let p = |n: &str| pki.path(n).display().to_string();
    let mtls = server_tls(
        &pki,
        &format!(
            "validation_context:\n  trusted_ca: {{filename: {}}}\n  match_typed_subject_alt_names:\n  - {{san_type: URI, matcher: {{exact: \"{CLIENT_ID}\"}}}}",
            p("ca.pem")
        ),
        "require_client_certificate: true",
    );
    let listener = |name: &str, port: &str, filters: &str, chains: &str| {
        format!(
            "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n{filters}    filter_chains:\n{chains}"
        )
    };
    let inspectors = "    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}\n    - name: envoy.filters.listener.http_inspector\n      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}\n";
    let yaml = format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:\n{}{}{}  clusters:\n  - name: redis\n    connect_timeout: 1s\n    load_assignment: {{cluster_name: redis, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}\n",
        listener("mtls", "{{LISTENER_PORT}}", "", &chain("mtls", &mtls)),
        listener("tls", "{{LISTENER_PORT_1}}", "", &chain("tls", &server_tls(&pki, "", ""))),
        listener(
            "permissive",
            "{{LISTENER_PORT_2}}",
            inspectors,
            &format!(
                "{}{}",
                chain(
                    "permissive_tls",
                    &format!(
                        "filter_chain_match: {{transport_protocol: tls}}\n{}",
                        server_tls(&pki, "", "")
                    )
                ),
                chain("permissive_plain", "filter_chain_match: {transport_protocol: raw_buffer}"),
            ),
        ),
        redis.port(),
    );
    let ca = p("ca.pem");
    let with_cert = |name: &str| {
        vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            ca.clone(),
            "--cert".to_owned(),
            p(&format!("{name}.pem")),
            "--key".to_owned(),
            p(&format!("{name}-key.pem")),
        ]
    };
    let no_cert = vec!["--tls".to_owned(), "--cacert".to_owned(), ca.clone()];
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        let [mtls, tls, permissive] = [0, 1, 2].map(|n| proxy.listener_port(n));
        let mut rows: Rows = Vec::new();
        let mut run = |label: &str, port: u16, flags: &[String], args: &[&str]| {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            rows.push((label.to_owned(), cli(port, &flags, args)));
        };
        run(
            "mTLS, client certificate: SET",
            mtls,
            &with_cert("client"),
            &["SET", "m", "1"],
        );
        run(
            "mTLS, client certificate: GET",
            mtls,
            &with_cert("client"),
            &["GET", "m"],
        );
        run("mTLS, no client certificate", mtls, &no_cert, &["GET", "m"]);
        run(
            "mTLS, untrusted client CA",
            mtls,
            &with_cert("other-client"),
            &["GET", "m"],
        );
        run(
            "mTLS, wrong identity",
            mtls,
            &with_cert("stranger"),
            &["GET", "m"],
        );
        run("mTLS, plaintext client", mtls, &[], &["GET", "m"]);
        run("TLS: SET", tls, &no_cert, &["SET", "t", "2"]);
        run(
            "TLS, unasked client certificate: GET",
            tls,
            &with_cert("client"),
            &["GET", "t"],
        );
        run(
            "permissive, TLS client",
            permissive,
            &no_cert,
            &["GET", "t"],
        );
        run(
            "permissive, plaintext client",
            permissive,
            &[],
            &["GET", "m"],
        );
        let sni: Vec<String> = no_cert
            .iter()
            .cloned()
            .chain(["--sni".to_owned(), "Redis.Test".to_owned()])
            .collect();
        run("permissive, TLS with SNI", permissive, &sni, &["GET", "t"]);
        rows.push((
            "on the server".into(),
            format!("{:?}", redis.cmd(&["GET", "m"])),
        ));
        // Counted once every connection has closed (Envoy's counters move as connections end).
        let names = [(mtls, "mtls"), (tls, "tls"), (permissive, "permissive")];
        let stats = proxy.stats();
        for (name, value) in stats.values.iter().filter(|(k, _)| {
            k.contains(".ssl.")
                || k.contains("_ssl_socket_factory.")
                || k.starts_with("tls_inspector.")
                || k.starts_with("http_inspector.")
                || k.contains(".downstream_pre_cx_")
                || k.contains(".downstream_listener_filter_")
                || k.ends_with(".no_filter_chain_match")
                || (k.starts_with("redis.") && k.ends_with(".downstream_cx_total"))
        }) {
            if value.contains("recorded") || name.contains("expiration_unix_time") {
                // Histograms flush on Envoy's own schedule; expiry is checked below.
                continue;
            }
            let mut name = name.clone();
            for (port, label) in names {
                name = name.replace(&format!("127.0.0.1_{port}."), &format!("{label}."));
            }
            rows.push((name, value.clone()));
        }
        // The server certificate's expiry, as Envoy reports it.
        let expiry = stats.get_int(&format!(
            "listener.127.0.0.1_{tls}.ssl.certificate.unnamed_cert_e3b0c442.expiration_unix_time_seconds"
        ));
        rows.push((
            "server certificate expiry set".into(),
            expiry.is_some_and(|e| e > 0).to_string(),
        ));
        rows
    });
}
