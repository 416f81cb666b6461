//! Oracle comparison: upstream TLS (`transport_socket: envoy.transport_sockets.tls` with an
//! `UpstreamTlsContext`) to real `redis-server --tls-port`s, with a test CA made here and an
//! Istio-shaped SPIFFE URI SAN. The same keys through Envoy 1.40 and redvoy: verified TLS,
//! SAN mismatch and untrusted CA refused, mutual TLS with and without a client certificate,
//! no validation context (Envoy then verifies nothing).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use redvoy_test_util::{
    bootstrap, free_port, redis_cluster_bootstrap, same_on_all_targets, tempfile, Cluster, Proxy,
    RedisCluster, RedisServer, Reply, Rows,
};

use crate::targets;

pub(crate) const SPIFFE_ID: &str = "spiffe://cluster.local/ns/default/sa/redis";
pub(crate) const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// A CA and what it signed, written as PEM files in a temporary directory: `ca.pem` and
/// `other-ca.pem`; `server.pem` (redis.test, the SPIFFE ID, 127.0.0.1); `client.pem` (the
/// client's SPIFFE ID); `stranger.pem` (signed by the CA, another SPIFFE ID);
/// `other-client.pem` (the client's SPIFFE ID, signed by the other CA); `server-next.pem`
/// (the server's identity renewed). Keys as `<name>-key.pem`.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (ca, ca_key) = make_ca("redvoy test CA");
        let (other_ca, other_ca_key) = make_ca("another CA");
        write(dir.path(), "ca.pem", &ca.pem());
        write(dir.path(), "other-ca.pem", &other_ca.pem());
        let server_key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let mut server = CertificateParams::new(vec!["redis.test".to_owned()])
            .unwrap_or_else(|e| panic!("params: {e}"));
        server.subject_alt_names.push(SanType::URI(
            SPIFFE_ID
                .try_into()
                .unwrap_or_else(|e| panic!("uri: {e:?}")),
        ));
        server.subject_alt_names.push(SanType::IpAddress(
            "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
        ));
        let server = server
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap_or_else(|e| panic!("sign: {e}"));
        write(dir.path(), "server.pem", &server.pem());
        write(dir.path(), "server-key.pem", &server_key.serialize_pem());
        // The same identity, renewed (a rotated workload certificate).
        let next_key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let mut next = CertificateParams::new(vec!["redis.test".to_owned()])
            .unwrap_or_else(|e| panic!("params: {e}"));
        next.subject_alt_names.push(SanType::URI(
            SPIFFE_ID
                .try_into()
                .unwrap_or_else(|e| panic!("uri: {e:?}")),
        ));
        let next = next
            .signed_by(&next_key, &ca, &ca_key)
            .unwrap_or_else(|e| panic!("sign: {e}"));
        write(dir.path(), "server-next.pem", &next.pem());
        write(dir.path(), "server-next-key.pem", &next_key.serialize_pem());
        for (name, id, (signer, signer_key)) in [
            ("client", CLIENT_ID, (&ca, &ca_key)),
            (
                "stranger",
                "spiffe://cluster.local/ns/default/sa/stranger",
                (&ca, &ca_key),
            ),
            ("other-client", CLIENT_ID, (&other_ca, &other_ca_key)),
        ] {
            let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
            let mut params = CertificateParams::new(Vec::<String>::new())
                .unwrap_or_else(|e| panic!("params: {e}"));
            params.subject_alt_names.push(SanType::URI(
                id.try_into().unwrap_or_else(|e| panic!("uri: {e:?}")),
            ));
            let cert = params
                .signed_by(&key, signer, signer_key)
                .unwrap_or_else(|e| panic!("sign: {e}"));
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}-key.pem"), &key.serialize_pem());
        }
        Pki { dir }
    }

    /// A file's contents.
    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A redis-server with a TLS port besides its plaintext one (kept for the harness's
    /// readiness check and direct reads); with `require_client_cert`, TLS clients must
    /// present a certificate the CA signed.
    pub(crate) fn redis(&self, require_client_cert: bool) -> (RedisServer, u16) {
        let tls_port = free_port();
        let p = |n: &str| self.path(n).display().to_string();
        let server = RedisServer::start_with(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server-key.pem"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
        ]);
        (server, tls_port)
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let mut params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("params: {e}"));
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("CA: {e}"));
    (cert, key)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// A cluster `name` to `port` over TLS with `context` (the UpstreamTlsContext's fields).
fn tls_cluster(name: &str, port: u16, context: &str) -> Cluster {
    let context: String = context.lines().map(|l| format!("    {l}\n")).collect();
    Cluster::new(name, "RING_HASH", &[port]).extra(&format!(
        "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{context}"
    ))
}

#[test]
fn upstream_tls_verifies_like_envoy() {
    let pki = Pki::new();
    let (open, open_port) = pki.redis(false);
    let (mutual, mutual_port) = pki.redis(true);
    let ca = pki.path("ca.pem").display().to_string();
    let other_ca = pki.path("other-ca.pem").display().to_string();
    let client = pki.path("client.pem").display().to_string();
    let client_key = pki.path("client-key.pem").display().to_string();
    let validation = |ca: &str, san: &str| {
        format!(
            "validation_context:\n  trusted_ca: {{filename: {ca}}}\n  match_typed_subject_alt_names:\n  - {{san_type: URI, matcher: {{exact: \"{san}\"}}}}\n"
        )
    };
    let common = |body: &str| -> String {
        let body: String = body.lines().map(|l| format!("  {l}\n")).collect();
        format!("sni: redis.test\ncommon_tls_context:\n{body}")
    };
    let client_cert = format!(
        "tls_certificates:\n- certificate_chain: {{filename: {client}}}\n  private_key: {{filename: {client_key}}}\n"
    );
    let clusters = [
        tls_cluster("verified", open_port, &common(&validation(&ca, SPIFFE_ID))),
        tls_cluster(
            "wrong_san",
            open_port,
            &common(&validation(
                &ca,
                "spiffe://cluster.local/ns/default/sa/other",
            )),
        ),
        tls_cluster(
            "wrong_ca",
            open_port,
            &common(&validation(&other_ca, SPIFFE_ID)),
        ),
        tls_cluster("unverified", open_port, "sni: redis.test\n"),
        tls_cluster(
            "mutual",
            mutual_port,
            &common(&format!("{client_cert}{}", validation(&ca, SPIFFE_ID))),
        ),
        tls_cluster(
            "no_client_cert",
            mutual_port,
            &common(&validation(&ca, SPIFFE_ID)),
        ),
    ];
    let routes: String = clusters
        .iter()
        .map(|c| format!("  - {{prefix: \"{}:\", cluster: {}}}\n", c.name, c.name))
        .collect();
    let filter = format!(
        "stat_prefix: redis\nsettings: {{op_timeout: 5s}}\nprefix_routes:\n  routes:\n{routes}"
    );
    let yaml = bootstrap(&filter, &clusters);
    let names: Vec<String> = clusters.iter().map(|c| c.name.clone()).collect();
    same_on_all_targets(&targets(), |target| {
        open.flushall();
        mutual.flushall();
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        let mut rows: Rows = Vec::new();
        for name in &names {
            let key = format!("{name}:k");
            rows.push((
                format!("{name}: SET"),
                format!("{:?}", client.cmd(&["SET", &key, "v"])),
            ));
            rows.push((
                format!("{name}: GET"),
                format!("{:?}", client.cmd(&["GET", &key])),
            ));
        }
        // What went through reached the servers (over TLS: only TLS ports were configured).
        rows.push((
            "verified key on the server".into(),
            format!("{:?}", open.cmd(&["GET", "verified:k"])),
        ));
        rows.push((
            "mutual key on the server".into(),
            format!("{:?}", mutual.cmd(&["GET", "mutual:k"])),
        ));
        assert_eq!(
            client.cmd(&["GET", "verified:k"]),
            Reply::bulk("v"),
            "{target}"
        );
        // The server drops the proxy's connection: the next connection resumes the TLS
        // session (redis-server's session cache), counted in `session_reused`.
        open.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
        let served = redvoy_test_util::try_wait_for(std::time::Duration::from_secs(10), || {
            (client.cmd(&["GET", "verified:k"]) == Reply::bulk("v")).then_some(())
        });
        assert!(served.is_some(), "{target}: no reconnection after the kill");
        // Envoy's `ssl.*` stats of each cluster: handshakes, failures by kind, the negotiated
        // version, cipher, curve and signature algorithm, certificate expiry.
        for (name, value) in proxy.stats().values.iter().filter(|(k, _)| {
            k.contains(".ssl.")
                || k.contains(".client_ssl_socket_factory.")
                || k.ends_with(".upstream_cx_connect_fail")
        }) {
            rows.push((name.clone(), value.clone()));
        }
        rows
    });
}

/// The Redis health checker speaks the cluster's TLS: a verified host is healthy, one whose
/// certificate fails verification is failed, as with Envoy 1.40.
#[test]
fn health_checks_use_the_clusters_tls_like_envoy() {
    let pki = Pki::new();
    let (_open, open_port) = pki.redis(false);
    let ca = pki.path("ca.pem").display().to_string();
    let other_ca = pki.path("other-ca.pem").display().to_string();
    let check = "health_checks:\n- timeout: 0.5s\n  interval: 0.25s\n  no_traffic_interval: 0.25s\n  unhealthy_threshold: 1\n  healthy_threshold: 1\n  custom_health_check:\n    name: envoy.health_checkers.redis\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.health_checkers.redis.v3.Redis\n";
    let context = |ca: &str| {
        format!("common_tls_context:\n  validation_context:\n    trusted_ca: {{filename: {ca}}}\n")
    };
    let clusters = [
        tls_cluster("good", open_port, &context(&ca)).extra(check),
        tls_cluster("bad", open_port, &context(&other_ca)).extra(check),
    ];
    let filter = "stat_prefix: redis\nsettings: {op_timeout: 5s}\nprefix_routes:\n  routes:\n  - {prefix: \"good:\", cluster: good}\n  - {prefix: \"bad:\", cluster: bad}\n";
    let yaml = bootstrap(filter, &clusters);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let want = ["good=healthy", "bad=/failed_active_hc"];
        let mut last = Vec::new();
        let reached = redvoy_test_util::try_wait_for(std::time::Duration::from_secs(15), || {
            let body = proxy.admin("GET", "/clusters").body;
            last = body
                .lines()
                .filter_map(|l| {
                    let (cluster, rest) = l.split_once("::")?;
                    let flags = rest.split_once("::health_flags::")?.1;
                    Some(format!("{cluster}={flags}"))
                })
                .collect::<Vec<_>>();
            last.sort();
            let mut w: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
            w.sort();
            (last == w).then_some(())
        });
        assert!(reached.is_some(), "{target}: flags {last:?}");
        vec![("flags".to_owned(), format!("{last:?}"))]
    });
}

/// A 3-node Redis Cluster serving TLS with the test CA's server certificate, the TLS port of
/// its first node (the seed), and the cluster's `transport_socket` verifying it (the CA and
/// the SPIFFE SAN), as YAML.
fn tls_redis_cluster(pki: &Pki) -> (RedisCluster, u16, String) {
    let cluster = RedisCluster::start_tls(
        3,
        0,
        &pki.path("server.pem"),
        &pki.path("server-key.pem"),
        &pki.path("ca.pem"),
    );
    let seed = cluster.tls_port(cluster.ports()[0]);
    let ca = pki.path("ca.pem").display().to_string();
    let transport = format!(
        "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: redis.test\n        common_tls_context:\n          validation_context:\n            trusted_ca: {{filename: {ca}}}\n            match_typed_subject_alt_names:\n            - {{san_type: URI, matcher: {{exact: \"{SPIFFE_ID}\"}}}}\n"
    );
    (cluster, seed, transport)
}

/// `envoy.clusters.redis` over TLS: discovery (`CLUSTER SLOTS` asked over TLS names the nodes'
/// TLS ports) and the data path to every primary are TLS, verified against the test CA and the
/// SPIFFE SAN; every key lands on the primary that owns its slot. Compared with Envoy 1.40.
#[test]
fn redis_cluster_over_tls_like_envoy() {
    let pki = Pki::new();
    let (mut cluster, seed, transport) = tls_redis_cluster(&pki);
    let yaml = redis_cluster_bootstrap(
        "{op_timeout: 5s}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 5s}",
        &[seed],
        &transport,
    );
    let keys: Vec<String> = (0..30).map(|i| format!("tls-cluster:{i}")).collect();
    let owners: Vec<u16> = keys
        .iter()
        .map(|k| cluster.primary_for_key(k.as_bytes()))
        .collect();
    same_on_all_targets(&targets(), |target| {
        for p in cluster.primaries() {
            cluster.cmd(p.port, &["FLUSHALL"]);
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let discovered = redvoy_test_util::try_wait_for(std::time::Duration::from_secs(15), || {
            (proxy.stat("cluster.redis_cluster.membership_total") == 3).then_some(())
        });
        assert!(discovered.is_some(), "{target}: the topology never arrived");
        let mut client = proxy.client();
        let mut rows: Rows = Vec::new();
        for (key, owner) in keys.iter().zip(&owners) {
            assert_eq!(
                client.cmd(&["SET", key, "v"]),
                Reply::ok(),
                "{target}: SET {key}"
            );
            assert_eq!(
                client.cmd(&["GET", key]),
                Reply::bulk("v"),
                "{target}: GET {key}"
            );
            assert_eq!(
                cluster.cmd(*owner, &["EXISTS", key]),
                Reply::Integer(1),
                "{target}: {key} not on its primary"
            );
        }
        let stats = proxy.stats();
        for name in [
            "membership_total",
            "ssl.fail_verify_error",
            "ssl.fail_verify_san",
        ] {
            let stat = format!("cluster.redis_cluster.{name}");
            rows.push((name.to_owned(), format!("{:?}", stats.get_int(&stat))));
        }
        rows.push((
            "TLS handshakes (discovery and data)".to_owned(),
            (stats
                .get_int("cluster.redis_cluster.ssl.handshake")
                .unwrap_or(0)
                >= 3)
                .to_string(),
        ));
        rows
    });
}

/// `transport_socket_matches` as Istio writes them: endpoints labelled `tlsMode: istio` get
/// the TLS entry (verified against the test CA and the SPIFFE SAN), `tlsMode: disabled` the
/// plaintext one, an unlabelled endpoint the cluster's own socket. Every key lands on its
/// server, each over its own socket; the per-entry `total_match_count` and `ssl.*` stats as
/// Envoy 1.40 counts them.
#[test]
fn transport_socket_matches_pick_tls_per_endpoint_like_envoy() {
    let pki = Pki::new();
    let (tls_server, tls_port) = pki.redis(false);
    let plain = RedisServer::start();
    let other = RedisServer::start();
    let ca = pki.path("ca.pem").display().to_string();
    let endpoint = |port: u16, mode: Option<&str>| {
        let metadata = mode
            .map(|m| {
                format!(
                    ", metadata: {{filter_metadata: {{envoy.transport_socket_match: {{tlsMode: {m}}}}}}}"
                )
            })
            .unwrap_or_default();
        format!(
            "        - {{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}{metadata}}}\n"
        )
    };
    let cluster = format!(
        "  - name: mesh\n    connect_timeout: 1s\n    lb_policy: RING_HASH\n    load_assignment:\n      cluster_name: mesh\n      endpoints:\n      - lb_endpoints:\n{}{}{}    transport_socket_matches:\n    - name: tlsMode-istio\n      match: {{tlsMode: istio}}\n      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n          sni: redis.test\n          common_tls_context:\n            alpn_protocols: [istio-peer-exchange, istio]\n            validation_context:\n              trusted_ca: {{filename: {ca}}}\n              match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: \"{SPIFFE_ID}\"}}}}]\n    - name: tlsMode-disabled\n      match: {{tlsMode: disabled}}\n      transport_socket:\n        name: envoy.transport_sockets.raw_buffer\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}\n",
        endpoint(tls_port, Some("istio")),
        endpoint(plain.port(), Some("disabled")),
        endpoint(other.port(), None),
    );
    let yaml = format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:\n  - name: redis\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT}}}}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.redis_proxy\n        typed_config:\n          \"@type\": {}\n          stat_prefix: redis\n          settings: {{op_timeout: 5s}}\n          prefix_routes: {{catch_all_route: {{cluster: mesh}}}}\n  clusters:\n{cluster}",
        redvoy_test_util::REDIS_PROXY_TYPE
    );
    let keys: Vec<String> = (0..60).map(|i| format!("match:{i}")).collect();
    same_on_all_targets(&targets(), |target| {
        for s in [&tls_server, &plain, &other] {
            s.flushall();
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let mut client = proxy.client();
        for key in &keys {
            assert_eq!(
                client.cmd(&["SET", key, "v"]),
                Reply::ok(),
                "{target}: SET {key}"
            );
        }
        let mut rows: Rows = Vec::new();
        for (name, server) in [
            ("tls", &tls_server),
            ("plain", &plain),
            ("unlabelled", &other),
        ] {
            let held: Vec<&String> = keys
                .iter()
                .filter(|k| server.cmd(&["EXISTS", k]) == Reply::Integer(1))
                .collect();
            rows.push((format!("keys on {name}"), format!("{held:?}")));
        }
        for (name, value) in proxy.stats().values.iter().filter(|(k, _)| {
            k.starts_with("cluster.mesh.")
                && (k.ends_with("total_match_count")
                    || k.contains(".ssl.handshake")
                    || k.contains(".ssl.fail_verify")
                    || k.ends_with(".upstream_cx_total"))
        }) {
            rows.push((name.clone(), value.clone()));
        }
        rows
    });
}

/// `/certs` lists every TLS context (a listener's, a verifying mTLS cluster's with an inline
/// client certificate, an unverified cluster's) as Envoy 1.40 prints it, and
/// `server.days_until_first_cert_expiring` follows the first certificate to expire.
#[test]
fn certs_endpoint_like_envoy() {
    let pki = Pki::new();
    let (_open, open_port) = pki.redis(false);
    let p = |n: &str| pki.path(n).display().to_string();
    let inline_client =
        serde_json::to_string(&pki.read("client.pem")).unwrap_or_else(|e| panic!("json: {e}"));
    let clusters = [
        tls_cluster(
            "mutual",
            open_port,
            &format!(
                "common_tls_context:\n  tls_certificates:\n  - certificate_chain: {{inline_string: {inline_client}}}\n    private_key: {{filename: {}}}\n  validation_context:\n    trusted_ca: {{filename: {}}}\n",
                p("client-key.pem"),
                p("ca.pem")
            ),
        ),
        tls_cluster("unverified", open_port, "sni: redis.test\n"),
    ];
    let listener_tls = format!(
        "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]\n            validation_context: {{trusted_ca: {{filename: {}}}}}\n",
        p("server.pem"),
        p("server-key.pem"),
        p("other-ca.pem")
    );
    let filter = "stat_prefix: redis\nsettings: {op_timeout: 5s}\nprefix_routes: {catch_all_route: {cluster: mutual}}\n";
    let yaml = bootstrap(filter, &clusters)
        .replace("  clusters:\n", &format!("{listener_tls}  clusters:\n"));
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let body = proxy.admin("GET", "/certs").body;
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"));
        let mut contexts: Vec<String> = json["certificates"]
            .as_array()
            .map(|a| a.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        // Envoy lists contexts in hash order.
        contexts.sort();
        let mut rows: Rows = contexts
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("context {i}"), c))
            .collect();
        rows.push((
            "pretty-printed as Envoy".into(),
            body.starts_with("{\n \"certificates\": [\n  {\n   \"ca_cert\": ")
                .to_string(),
        ));
        let days = redvoy_test_util::try_wait_for(std::time::Duration::from_secs(10), || {
            let d = proxy.stat("server.days_until_first_cert_expiring");
            (d != u64::from(u32::MAX)).then_some(d)
        });
        rows.push(("days_until_first_cert_expiring".into(), format!("{days:?}")));
        rows
    });
}

/// `examples/tls-redis.yaml`, the README's walkthrough, run as written against a TLS
/// `redis-server` that requires an ACL user's password: its placeholders filled in, the
/// credentials from the environment. Replies and the server's view the same through Envoy 1.40
/// and redvoy; a wrong password fails the same way.
#[test]
fn the_tls_redis_example_runs_like_envoy() {
    let pki = Pki::new();
    let (redis, tls_port) = pki.redis(false);
    let p = |n: &str| pki.path(n).display().to_string();
    redis.cmd(&["ACL", "SETUSER", "app", "on", ">s3cret", "~*", "+@all"]);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/tls-redis.yaml"
    ))
    .unwrap_or_else(|e| panic!("examples/tls-redis.yaml: {e}"));
    let yaml = example
        .replace("port_value: 9901", "port_value: {{ADMIN_PORT}}")
        .replace("port_value: 6380", "port_value: {{LISTENER_PORT}}")
        .replace("port_value: 6379", &format!("port_value: {tls_port}"))
        .replace("REDIS_HOST", "localhost")
        .replace("REDIS_TLS_NAME", "redis.test")
        .replace("/etc/ssl/certs/ca-certificates.crt", &p("ca.pem"));
    let bootstrap = yaml.replace(
        "{environment_variable: REDIS_PASSWORD}",
        "{inline_string: \"s3cret\"}",
    );
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        std::env::set_var("REDIS_USERNAME", "app");
        let proxy = Proxy::start(target, &bootstrap, &[]);
        let mut client = proxy.client();
        let mut rows: Rows = vec![
            (
                "SET".into(),
                format!("{:?}", client.cmd(&["SET", "managed", "1"])),
            ),
            (
                "GET".into(),
                format!("{:?}", client.cmd(&["GET", "managed"])),
            ),
            (
                "on the server".into(),
                format!("{:?}", redis.cmd(&["GET", "managed"])),
            ),
            (
                "verified TLS handshakes".into(),
                (proxy.stat("cluster.managed_redis.ssl.handshake") >= 1).to_string(),
            ),
        ];
        // The proxy's connection authenticated as the ACL user.
        let clients = format!("{:?}", redis.cmd(&["CLIENT", "LIST"]));
        rows.push((
            "a connection as user app".into(),
            clients.contains("user=app").to_string(),
        ));
        rows
    });
}

/// A MOVED over TLS: a slot changes owner behind the proxy's back (its refresh far away), the
/// old owner answers MOVED naming the new owner's TLS port, and the proxy follows it over TLS
/// (`enable_redirection`); the key lands on the new owner. Compared with Envoy 1.40.
#[test]
fn moved_redirection_over_tls_like_envoy() {
    let pki = Pki::new();
    let (mut cluster, seed, transport) = tls_redis_cluster(&pki);
    let yaml = redis_cluster_bootstrap(
        "{op_timeout: 5s, enable_redirection: true}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 3600s, redirect_refresh_threshold: 0}",
        &[seed],
        &transport,
    );
    let mut round = 0;
    same_on_all_targets(&targets(), |target| {
        round += 1;
        // A fresh key (and so an empty slot) for each target.
        let key = format!("moved-tls:{round}");
        for p in cluster.primaries() {
            cluster.cmd(p.port, &["FLUSHALL"]);
        }
        let proxy = Proxy::start(target, &yaml, &[]);
        let discovered = redvoy_test_util::try_wait_for(std::time::Duration::from_secs(15), || {
            (proxy.stat("cluster.redis_cluster.membership_total") == 3).then_some(())
        });
        assert!(discovered.is_some(), "{target}: the topology never arrived");
        let owner = cluster.primary_for_key(key.as_bytes());
        let primaries = cluster.primaries();
        let new_owner = primaries
            .iter()
            .find(|p| p.port != owner)
            .unwrap_or_else(|| panic!("a second primary"));
        let slot = match cluster.cmd(owner, &["CLUSTER", "KEYSLOT", &key]) {
            Reply::Integer(s) => s.to_string(),
            other => panic!("KEYSLOT: {other:?}"),
        };
        for p in cluster.live_ports() {
            cluster.cmd(p, &["CLUSTER", "SETSLOT", &slot, "NODE", &new_owner.id]);
        }
        cluster.wait_converged(std::time::Duration::from_secs(15));
        let mut client = proxy.client();
        let mut rows: Rows = Vec::new();
        rows.push((
            "SET after the move".into(),
            format!("{:?}", client.cmd(&["SET", &key, "v"])),
        ));
        rows.push((
            "GET after the move".into(),
            format!("{:?}", client.cmd(&["GET", &key])),
        ));
        rows.push((
            "on the new owner".into(),
            format!("{:?}", cluster.cmd(new_owner.port, &["EXISTS", &key])),
        ));
        let stats = proxy.stats();
        for name in [
            "upstream_internal_redirect_succeeded_total",
            "ssl.fail_verify_error",
            "ssl.fail_verify_san",
            "ssl.connection_error",
        ] {
            let stat = format!("cluster.redis_cluster.{name}");
            rows.push((name.to_owned(), format!("{:?}", stats.get_int(&stat))));
        }
        rows
    });
}
