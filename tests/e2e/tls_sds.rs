//! Oracle comparison: TLS secrets by name — from `static_resources.secrets`, and over SDS from
//! a stub of Istio's agent on a Unix socket (cluster `sds-grpc`, secrets `default` and
//! `ROOTCA`, Istio's `sds_config`). The same scenario through Envoy 1.40 and redvoy: the
//! listener warms until its secrets arrive (`/ready`, `total_listeners_warming`), the SDS
//! requests each proxy sends, and a certificate rotation under load that fails no request and
//! closes no connection while new connections get the new certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redvoy_test_util::xds::{
    certificate_secret, sds_grpc_cluster_yaml, validation_secret, ISTIO_SDS_CONFIG_YAML,
    TYPE_SECRET,
};
use redvoy_test_util::{
    same_on_all_targets, AdsServer, Level, Proxy, RedisServer, Rows, REDIS_PROXY_TYPE,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::targets;
use crate::tls::{Pki, CLIENT_ID};

/// Bound on every wait of this file.
const WAIT: Duration = Duration::from_secs(15);
/// Requests the load thread makes at most (it stops earlier when told).
const LOAD_LIMIT: u64 = 200_000;

/// A listener on `{{LISTENER_PORT}}` requiring client certificates, its certificate and CA
/// named as secrets (`tls` is the DownstreamTlsContext's common_tls_context body).
fn bootstrap(common: &str, redis_port: u16, extra_clusters: &str, secrets: &str) -> String {
    let common: String = common
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "node: {{id: sidecar~127.0.0.1~redis.default~default.svc.cluster.local, cluster: redis.default}}\nadmin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:\n  - name: mtls\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT}}}}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.redis_proxy\n        typed_config:\n          \"@type\": {REDIS_PROXY_TYPE}\n          stat_prefix: mtls\n          settings: {{op_timeout: 5s}}\n          prefix_routes: {{catch_all_route: {{cluster: redis}}}}\n      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          require_client_certificate: true\n          common_tls_context:\n{common}  clusters:\n  - name: redis\n    connect_timeout: 1s\n    load_assignment: {{cluster_name: redis, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {redis_port}}}}}}}}}]}}]}}\n{extra_clusters}{secrets}"
    )
}

/// A TLS RESP client with the test's client certificate, over std sockets.
struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    fn connect(pki: &Pki, port: u16) -> std::io::Result<TlsClient> {
        Self::connect_with(Arc::new(Self::config(pki)?), port)
    }

    /// A client config with the test's client certificate; connections made with one config
    /// share its session cache (resumption).
    fn config(pki: &Pki) -> std::io::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(pki.read("ca.pem").as_bytes())
            .map_err(std::io::Error::other)?;
        roots.add(ca).map_err(std::io::Error::other)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.read("client.pem").as_bytes())
                .collect::<Result<_, _>>()
                .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_slice(pki.read("client-key.pem").as_bytes())
            .map_err(std::io::Error::other)?;
        #[allow(deprecated)] // ring, as the proxy's own TLS
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(std::io::Error::other)?;
        Ok(config)
    }

    fn connect_with(config: Arc<rustls::ClientConfig>, port: u16) -> std::io::Result<TlsClient> {
        let name = ServerName::try_from("redis.test").map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(WAIT))?;
        let mut client = TlsClient {
            stream: rustls::StreamOwned::new(conn, tcp),
        };
        // Completes the handshake (and, for TLS 1.3, learns whether the server took the
        // client certificate) with a PING.
        client.cmd(&["PING"])?;
        Ok(client)
    }

    /// Whether this connection resumed an earlier session.
    fn resumed(&self) -> bool {
        self.stream.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The server's certificate (DER).
    fn server_certificate(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// One command; its reply's first line (`+OK`, `$1`, `-ERR …`).
    fn cmd(&mut self, args: &[&str]) -> std::io::Result<String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.write_all(out.as_bytes())?;
        self.stream.flush()?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) {
            let mut body = vec![0u8; len + 2];
            self.stream.read_exact(&mut body)?;
        }
        Ok(line)
    }
}

/// A config dump with its `last_updated` values blanked (they differ run to run).
fn without_timestamps(body: &str) -> String {
    body.lines()
        .map(|l| match l.split_once("\"last_updated\": ") {
            Some((indent, _)) => format!("{indent}\"last_updated\": \"…\","),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn cert_der(pki: &Pki, name: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pki.read(name).as_bytes())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

/// Static secrets by name: the listener's certificate and CA from `static_resources.secrets`,
/// mutual TLS served, the certificate stats named after the secrets.
#[test]
fn static_secrets_like_envoy() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let p = |n: &str| pki.path(n).display().to_string();
    let common = format!(
        "tls_certificate_sds_secret_configs: [{{name: server}}]\ncombined_validation_context:\n  default_validation_context:\n    match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: \"{CLIENT_ID}\"}}}}]\n  validation_context_sds_secret_config: {{name: ca}}"
    );
    let secrets = format!(
        "  secrets:\n  - name: server\n    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}\n  - name: ca\n    validation_context: {{trusted_ca: {{filename: {}}}}}\n",
        p("server.pem"),
        p("server-key.pem"),
        p("ca.pem")
    );
    let yaml = bootstrap(&common, redis.port(), "", &secrets);
    same_on_all_targets(&targets(), |target| {
        let proxy = Proxy::start(target, &yaml, &[]);
        let port = proxy.listener_port(0);
        let mut client =
            TlsClient::connect(&pki, port).unwrap_or_else(|e| panic!("{target}: TLS connect: {e}"));
        // A second connection with the same client config resumes the session (TLS 1.3
        // tickets), and the server counts it.
        let config = Arc::new(
            TlsClient::config(&pki).unwrap_or_else(|e| panic!("{target}: client config: {e}")),
        );
        let resumed: Vec<bool> = (0..2)
            .map(|_| {
                let mut c = TlsClient::connect_with(Arc::clone(&config), port)
                    .unwrap_or_else(|e| panic!("{target}: TLS connect: {e}"));
                let _ = c.cmd(&["GET", "s"]);
                c.resumed()
            })
            .collect();
        let mut rows: Rows = vec![
            ("resumed (first, second)".into(), format!("{resumed:?}")),
            (
                "SET".into(),
                format!("{:?}", client.cmd(&["SET", "s", "1"]).ok()),
            ),
            (
                "server certificate".into(),
                (client.server_certificate() == cert_der(&pki, "server.pem")).to_string(),
            ),
        ];
        rows.push((
            "/config_dump?resource=static_secrets".into(),
            proxy
                .admin("GET", "/config_dump?resource=static_secrets")
                .body,
        ));
        let scope = format!("listener.127.0.0.1_{port}.");
        for (name, value) in proxy.stats().values.iter().filter(|(k, _)| {
            k.starts_with(&scope)
                && (k.contains(".ssl.certificate.")
                    || k.contains("factory")
                    || k.ends_with(".ssl.session_reused")
                    || k.ends_with(".ssl.handshake"))
        }) {
            let value = if name.contains("expiration") {
                (value != "0").to_string()
            } else {
                value.clone()
            };
            rows.push((name.replace(&scope, "listener."), value));
        }
        rows
    });
}

/// The listener context of the agent tests: Istio's `default` certificate and `ROOTCA`
/// validation secrets, both from `sds_config`.
fn agent_secrets_context(sds_config: &str) -> String {
    format!(
        "tls_certificate_sds_secret_configs:\n- name: default\n  sds_config: {sds_config}\ncombined_validation_context:\n  default_validation_context:\n    match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: \"{CLIENT_ID}\"}}}}]\n  validation_context_sds_secret_config:\n    name: ROOTCA\n    sds_config: {sds_config}"
    )
}

/// An SDS agent on a Unix socket (in the returned directory) and the target started with the
/// `common` listener context over it, ready once its admin answers (its listener warms).
fn start_with_agent(
    target: redvoy_test_util::Target,
    common: &str,
    redis_port: u16,
) -> (redvoy_test_util::tempfile::TempDir, AdsServer, Proxy) {
    let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("dir: {e}"));
    let socket = dir.path().join("sds.sock");
    let agent = AdsServer::start_unix(&socket).unwrap_or_else(|e| panic!("SDS: {e}"));
    let sds_cluster = sds_grpc_cluster_yaml(&socket.display().to_string());
    let yaml = bootstrap(common, redis_port, &sds_cluster, "");
    let proxy = Proxy::start_admin_answering(target, &yaml);
    (dir, agent, proxy)
}

/// Istio's shape: `default` and `ROOTCA` from the agent's Unix socket. The listener warms
/// until both arrive; a rotation of `default` under load fails nothing and closes nothing;
/// new connections get the new certificate.
#[test]
fn sds_from_the_agent_socket_warms_and_rotates_like_envoy() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let common = agent_secrets_context(ISTIO_SDS_CONFIG_YAML);
    same_on_all_targets(&targets(), |target| {
        redis.flushall();
        let (_dir, agent, proxy) = start_with_agent(target, &common, redis.port());
        let mut rows: Rows = Vec::new();
        // Both secrets asked for, each on a stream of its own, before any is served.
        let asked = redvoy_test_util::try_wait_for(WAIT, || {
            let mut names: Vec<String> = agent
                .requests()
                .iter()
                .filter(|r| r.type_url == TYPE_SECRET)
                .map(|r| {
                    format!(
                        "{}:{:?} node={}",
                        r.api.name(),
                        r.resource_names,
                        r.has_node
                    )
                })
                .collect();
            names.sort();
            names.dedup();
            (names.len() >= 2).then_some(names)
        });
        rows.push((
            "SDS requests before any secret".into(),
            format!("{asked:?}"),
        ));
        let streams: std::collections::BTreeSet<u64> = agent
            .requests()
            .iter()
            .filter(|r| r.type_url == TYPE_SECRET)
            .map(|r| r.stream)
            .collect();
        rows.push(("SDS streams".into(), streams.len().to_string()));
        rows.push((
            "warming: /ready".into(),
            proxy.admin("GET", "/ready").status.to_string(),
        ));
        rows.push((
            "warming: total_listeners_warming".into(),
            proxy
                .stat("listener_manager.total_listeners_warming")
                .to_string(),
        ));

        // The agent answers: the listener starts.
        agent.set_messages(
            "1",
            &[
                certificate_secret(
                    "default",
                    &pki.read("server.pem"),
                    &pki.read("server-key.pem"),
                ),
                validation_secret("ROOTCA", &pki.read("ca.pem")),
            ],
        );
        let live = redvoy_test_util::try_wait_for(WAIT, || {
            (proxy.admin("GET", "/ready").status == 200).then_some(())
        });
        rows.push(("warmed: ready".into(), live.is_some().to_string()));
        rows.push((
            "warmed: total_listeners_warming".into(),
            proxy
                .stat("listener_manager.total_listeners_warming")
                .to_string(),
        ));
        let port = proxy.listener_port(0);
        let mut first =
            TlsClient::connect(&pki, port).unwrap_or_else(|e| panic!("{target}: TLS connect: {e}"));
        rows.push((
            "first certificate".into(),
            (first.server_certificate() == cert_der(&pki, "server.pem")).to_string(),
        ));
        rows.push((
            "SET".into(),
            format!("{:?}", first.cmd(&["SET", "k", "0"]).ok()),
        ));

        // Load on a connection of its own while the certificate rotates.
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let mut loaded =
            TlsClient::connect(&pki, port).unwrap_or_else(|e| panic!("{target}: TLS connect: {e}"));
        let load = {
            let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                for i in 0..LOAD_LIMIT {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > WAIT * 2 {
                        break;
                    }
                    let value = i.to_string();
                    let ok = loaded
                        .cmd(&["SET", "load", &value])
                        .is_ok_and(|r| r == "+OK")
                        && loaded
                            .cmd(&["GET", "load"])
                            .is_ok_and(|r| r.starts_with('$'));
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                loaded
            })
        };
        // Some load before the rotation.
        let _ = redvoy_test_util::try_wait_for(WAIT, || {
            (done.load(Ordering::Relaxed) >= 100).then_some(())
        });
        agent.set_messages(
            "2",
            &[certificate_secret(
                "default",
                &pki.read("server-next.pem"),
                &pki.read("server-next-key.pem"),
            )],
        );
        // New connections get the renewed certificate.
        let rotated = redvoy_test_util::try_wait_for(WAIT, || {
            let fresh = TlsClient::connect(&pki, port).ok()?;
            (fresh.server_certificate() == cert_der(&pki, "server-next.pem")).then_some(())
        });
        // More load after it.
        let after = done.load(Ordering::Relaxed);
        let _ = redvoy_test_util::try_wait_for(WAIT, || {
            (done.load(Ordering::Relaxed) >= after + 100).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        let mut loaded = load
            .join()
            .unwrap_or_else(|_| panic!("load thread panicked"));
        rows.push((
            "rotated for new connections".into(),
            rotated.is_some().to_string(),
        ));
        rows.push((
            "requests failed under rotation".into(),
            failures.load(Ordering::Relaxed).to_string(),
        ));
        rows.push((
            "loaded connection still open, old certificate".into(),
            format!(
                "{:?} {}",
                loaded.cmd(&["GET", "k"]).ok(),
                loaded.server_certificate() == cert_der(&pki, "server.pem")
            ),
        ));
        rows.push((
            "first connection still open".into(),
            format!("{:?}", first.cmd(&["GET", "k"]).ok()),
        ));
        rows.push((
            "active secrets in /config_dump (keys redacted)".into(),
            without_timestamps(
                &proxy
                    .admin("GET", "/config_dump?resource=dynamic_active_secrets")
                    .body,
            ),
        ));
        // A secret that cannot be used is NACKed; the listener keeps the last good one.
        proxy.expect_log(Level::Warn, "SDS update rejected");
        agent.set_messages(
            "3",
            &[certificate_secret(
                "default",
                "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
                &pki.read("server-next-key.pem"),
            )],
        );
        let nack = redvoy_test_util::try_wait_for(WAIT, || {
            agent
                .requests()
                .iter()
                .find(|r| r.type_url == TYPE_SECRET && r.is_nack())
                .map(|r| (r.version_info.clone(), r.resource_names.clone()))
        });
        rows.push((
            "bad secret NACKed (version kept)".into(),
            format!("{nack:?}"),
        ));
        let after_nack = TlsClient::connect(&pki, port)
            .map(|c| c.server_certificate() == cert_der(&pki, "server-next.pem"));
        rows.push((
            "after the NACK, the last good certificate".into(),
            format!("{:?}", after_nack.ok()),
        ));
        // Where redvoy differs: Envoy's dump shows the rejected secret (what it received),
        // redvoy's the one in use.
        let dumped = proxy
            .admin("GET", "/config_dump?resource=dynamic_active_secrets")
            .body;
        let want = match target {
            redvoy_test_util::Target::Envoy => "\"version_info\": \"3\"",
            redvoy_test_util::Target::Redvoy => "\"version_info\": \"2\"",
        };
        assert!(dumped.contains(want), "{target}: {dumped}");
        let stats = proxy.stats();
        let scope = format!("listener.127.0.0.1_{port}.");
        for (name, value) in stats.values.iter().filter(|(k, _)| {
            (k.starts_with(&scope) && (k.contains("factory") || k.contains(".ssl.certificate.")))
                || (k.starts_with("sds.")
                    && ["update_success", "update_rejected", "version_text"]
                        .iter()
                        .any(|s| k.ends_with(s)))
        }) {
            let value = if name.contains("expiration") {
                (value != "0").to_string()
            } else {
                value.clone()
            };
            rows.push((name.replace(&scope, "listener."), value));
        }
        rows
    });
}

/// Secrets on the ADS stream (`sds_config: {ads: {}}`): a CDS cluster's upstream TLS names its
/// CA as a secret; the cluster warms (and LDS waits) until the secret comes on ADS, then the
/// listener serves through verified TLS. The SDS requests on ADS compared with Envoy 1.40.
#[test]
fn secrets_over_ads_like_envoy() {
    use redvoy_test_util::xds::{
        redis_listener, static_cluster, with_upstream_tls_from_ads, xds_bootstrap, XdsBootstrap,
    };
    use redvoy_test_util::{free_port, port_open, try_wait_for, Variant};
    let pki = Pki::new();
    let (redis, tls_port) = pki.redis(false);
    for variant in [Variant::Sotw, Variant::Delta] {
        same_on_all_targets(&targets(), |target| {
            redis.flushall();
            let ads = AdsServer::start_tcp().unwrap_or_else(|e| panic!("ADS: {e}"));
            let port = free_port();
            ads.set_messages(
                "c1",
                &[with_upstream_tls_from_ads(
                    static_cluster("tlsredis", &[tls_port]),
                    "ca",
                    "redis.test",
                )],
            );
            ads.set_messages("l1", &[redis_listener("l1", port, "tlsredis")]);
            let proxy = Proxy::start_admin_answering(
                target,
                &xds_bootstrap(&ads, &XdsBootstrap::new(variant)),
            );
            let mut rows: Rows = Vec::new();
            // The secret is asked for on ADS; until it comes, the cluster warms and LDS waits.
            let asked = try_wait_for(WAIT, || {
                ads.requests()
                    .iter()
                    .find(|r| r.type_url == TYPE_SECRET)
                    .map(|r| format!("{} {:?}{:?}", r.api.name(), r.resource_names, r.subscribe))
            });
            rows.push(("secret asked for".into(), format!("{asked:?}")));
            rows.push((
                "warming clusters before the secret".into(),
                proxy.stat("cluster_manager.warming_clusters").to_string(),
            ));
            rows.push((
                "LDS asked before the secret".into(),
                ads.requests()
                    .iter()
                    .any(|r| r.short_type() == "LDS")
                    .to_string(),
            ));
            ads.set_messages("s1", &[validation_secret("ca", &pki.read("ca.pem"))]);
            let listening = try_wait_for(WAIT, || port_open(port).then_some(()));
            rows.push(("listener open".into(), listening.is_some().to_string()));
            let mut client = redvoy_test_util::RespClient::connect(port);
            rows.push((
                "SET through verified TLS".into(),
                format!("{:?}", client.cmd(&["SET", "ads-sds", "1"])),
            ));
            rows.push((
                "on the server".into(),
                format!("{:?}", redis.cmd(&["GET", "ads-sds"])),
            ));
            rows.push((
                "handshakes".into(),
                (proxy.stat("cluster.tlsredis.ssl.handshake") >= 1).to_string(),
            ));
            // The secret's ACK.
            let acked = try_wait_for(WAIT, || {
                ads.requests()
                    .iter()
                    .rev()
                    .find(|r| r.type_url == TYPE_SECRET && !r.response_nonce.is_empty())
                    .map(|r| (r.is_nack(), r.version_info.clone()))
            });
            rows.push(("secret ACK (nack, version)".into(), format!("{acked:?}")));
            rows
        });
    }
}

/// An SDS secret that names files: when the files are replaced (a move into their directory,
/// as a Kubernetes secret update does), new connections get the new certificate, as with
/// Envoy, which watches the directory of an SDS secret's files.
#[test]
fn sds_secret_files_are_reread_when_replaced_like_envoy() {
    use redvoy_test_util::xds::certificate_secret_files;
    let pki = Pki::new();
    let redis = RedisServer::start();
    let common = format!(
        "tls_certificate_sds_secret_configs:\n- name: default\n  sds_config: {ISTIO_SDS_CONFIG_YAML}\ncombined_validation_context:\n  default_validation_context:\n    match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: \"{CLIENT_ID}\"}}}}]\n  validation_context_sds_secret_config:\n    name: ROOTCA\n    sds_config: {ISTIO_SDS_CONFIG_YAML}"
    );
    same_on_all_targets(&targets(), |target| {
        let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("dir: {e}"));
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap_or_else(|e| panic!("certs dir: {e}"));
        // Written elsewhere, then moved in: the directory sees one move per file.
        let install = |name: &str| {
            for (from, to) in [
                (format!("{name}.pem"), "cert.pem"),
                (format!("{name}-key.pem"), "key.pem"),
            ] {
                let staged = dir.path().join(to);
                std::fs::write(&staged, pki.read(&from)).unwrap_or_else(|e| panic!("{to}: {e}"));
                std::fs::rename(&staged, certs.join(to)).unwrap_or_else(|e| panic!("{to}: {e}"));
            }
        };
        install("server");
        let socket = dir.path().join("sds.sock");
        let agent = AdsServer::start_unix(&socket).unwrap_or_else(|e| panic!("SDS: {e}"));
        let p = |n: &str| certs.join(n).display().to_string();
        agent.set_messages(
            "1",
            &[
                certificate_secret_files("default", &p("cert.pem"), &p("key.pem")),
                validation_secret("ROOTCA", &pki.read("ca.pem")),
            ],
        );
        let sds_cluster = sds_grpc_cluster_yaml(&socket.display().to_string());
        let yaml = bootstrap(&common, redis.port(), &sds_cluster, "");
        let proxy = Proxy::start(target, &yaml, &[]);
        let port = proxy.listener_port(0);
        let first = TlsClient::connect(&pki, port)
            .map(|c| c.server_certificate() == cert_der(&pki, "server.pem"));
        let mut rows: Rows = vec![("first certificate".into(), format!("{:?}", first.ok()))];
        install("server-next");
        let reread = redvoy_test_util::try_wait_for(WAIT, || {
            let c = TlsClient::connect(&pki, port).ok()?;
            (c.server_certificate() == cert_der(&pki, "server-next.pem")).then_some(())
        });
        rows.push((
            "new connections after the files moved in".into(),
            format!("{:?}", reread.map(|_| "server-next")),
        ));
        rows
    });
}

/// The same agent over Delta SDS (`api_type: DELTA_GRPC`): each secret subscribed on a stream
/// of its own, the listener warms until both arrive, a rotation applies to new connections.
#[test]
fn delta_sds_from_the_agent_socket_like_envoy() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let delta = ISTIO_SDS_CONFIG_YAML.replace("api_type: GRPC", "api_type: DELTA_GRPC");
    let common = agent_secrets_context(&delta);
    same_on_all_targets(&targets(), |target| {
        let (_dir, agent, proxy) = start_with_agent(target, &common, redis.port());
        let mut rows: Rows = Vec::new();
        let asked = redvoy_test_util::try_wait_for(WAIT, || {
            let mut subscribed: Vec<String> = agent
                .requests()
                .iter()
                .filter(|r| r.type_url == TYPE_SECRET)
                .map(|r| format!("{:?} {:?}", r.variant, r.subscribe))
                .collect();
            subscribed.sort();
            subscribed.dedup();
            (subscribed.len() >= 2).then_some(subscribed)
        });
        rows.push(("Delta subscriptions".into(), format!("{asked:?}")));
        rows.push((
            "warming: /ready".into(),
            proxy.admin("GET", "/ready").status.to_string(),
        ));
        agent.set_messages(
            "1",
            &[
                certificate_secret(
                    "default",
                    &pki.read("server.pem"),
                    &pki.read("server-key.pem"),
                ),
                validation_secret("ROOTCA", &pki.read("ca.pem")),
            ],
        );
        let live = redvoy_test_util::try_wait_for(WAIT, || {
            (proxy.admin("GET", "/ready").status == 200).then_some(())
        });
        rows.push(("warmed: ready".into(), live.is_some().to_string()));
        let port = proxy.listener_port(0);
        let first = TlsClient::connect(&pki, port)
            .map(|c| c.server_certificate() == cert_der(&pki, "server.pem"));
        rows.push(("first certificate".into(), format!("{:?}", first.ok())));
        agent.set_messages(
            "2",
            &[certificate_secret(
                "default",
                &pki.read("server-next.pem"),
                &pki.read("server-next-key.pem"),
            )],
        );
        let rotated = redvoy_test_util::try_wait_for(WAIT, || {
            let c = TlsClient::connect(&pki, port).ok()?;
            (c.server_certificate() == cert_der(&pki, "server-next.pem")).then_some(())
        });
        rows.push(("rotated".into(), rotated.is_some().to_string()));
        for name in ["sds.default.update_success", "sds.ROOTCA.update_success"] {
            rows.push((name.into(), proxy.stat(name).to_string()));
        }
        rows
    });
}
