//! Envoy's TLS transport socket on the upstream side (`UpstreamTlsContext`), on rustls with the
//! ring provider (ring builds with the C compiler every Debian machine has for redis; aws-lc-rs
//! would also need cmake and Go for some targets).
//!
//! Verification is Envoy's, not a browser's: without `trusted_ca` the server certificate is
//! accepted unverified (Envoy's default); with it, the chain is checked against that CA only
//! (webpki) and the host name is never compared with `sni`; `match_typed_subject_alt_names`,
//! when set, must match one of the certificate's SANs. A failed handshake is a failed connect:
//! there is no plaintext fallback.

mod details;
mod inspector;
mod secrets;
mod server;
mod stats;
mod stream;

pub use details::{CertificateDetails, ContextCertificates};
pub use inspector::{inspect_client_hello, ClientHello, Inspection};
pub use secrets::{
    ClientTls, DynamicTls, Fetcher, Received, SecretKey, SecretManager, SecretSource, ServerTls,
};
pub use server::TlsAcceptor;
pub use stats::TlsStats;
pub use stream::{secrets_not_ready, Stream};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use redvoy_config::model::{self, DataSource, SanKind, SanMatcher, TlsVersion, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as RustlsError, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why a cluster's TLS settings cannot be used (a file that cannot be read, bad PEM).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] RustlsError),
    #[error(
        "TlsCertificateSdsApi: node 'id' and 'cluster' are required. Set it either in 'node' \
         config or via --service-node and --service-cluster options."
    )]
    SdsWithoutNode,
    #[error("Unknown static secret: {0}")]
    UnknownStaticSecret(String),
    #[error("secret '{name}' is not a {expected} secret")]
    SecretKind {
        name: String,
        expected: &'static str,
    },
}

/// Opens TLS connections for one cluster.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    /// The config's verifier (one for every connection: rustls resumes a session only with
    /// the verifier that checked it).
    verifier: Arc<EnvoyVerifier>,
    certificates: ContextCertificates,
    sni: Option<ServerName<'static>>,
    stats: Option<TlsStats>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("sni", &self.sni)
            .finish()
    }
}

impl TlsConnector {
    /// Reads the certificates and keys the settings name (files are read now, once); `stats`
    /// gets Envoy's `ssl.*` stats.
    pub fn new(tls: &UpstreamTls, stats: Option<TlsStats>) -> Result<Self, TlsError> {
        let provider = provider();
        let versions = versions(tls.min_version, tls.max_version);
        let ca_name = tls.validation_sds.as_ref().map(|s| s.name.as_str());
        let roots = tls
            .trusted_ca
            .as_ref()
            .map(|ca| trusted_roots(ca, stats.as_ref(), ca_name))
            .transpose()?;
        if roots.is_none() && !tls.san_matchers.is_empty() {
            // The config refuses this too: SAN matching is only meaningful on a verified chain.
            return Err(TlsError::Pem {
                what: "validation_context",
                reason: "SAN matchers without a trusted CA".into(),
            });
        }
        let verification = Arc::new(Verification {
            roots,
            san_matchers: tls.san_matchers.clone(),
            provider: Arc::clone(&provider),
        });
        let verifier = Arc::new(EnvoyVerifier::new(&verification));
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>);
        let mut config = match &tls.client_certificate {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let name = tls.client_certificate_sds.as_ref().map(|s| s.name.as_str());
                let (chain, key) = certificate(c, stats.as_ref(), name)?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        config.alpn_protocols = tls
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let sni = if tls.sni.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(tls.sni.clone()).map_err(|e| TlsError::Pem {
                    what: "sni",
                    reason: e.to_string(),
                })?,
            )
        };
        Ok(Self {
            config: Arc::new(config),
            verifier,
            certificates: context_certificates(
                tls.trusted_ca.as_ref(),
                tls.client_certificate.as_ref(),
            ),
            sni,
            stats,
        })
    }

    /// The TLS handshake over a connected socket. Without `sni` no server name is sent (the
    /// peer's IP address names it for rustls, which sends none for an address).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        let result = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await;
        let Some(stats) = &self.stats else {
            return result;
        };
        match &result {
            Ok(stream) => {
                let conn = stream.get_ref().1;
                stats.on_handshake(conn);
                // The peer's handshake signature; a resumed session counts the one of the
                // handshake that made it, as Envoy (BoringSSL keeps it in the session) does.
                let peer = conn.peer_certificates().and_then(|c| c.first());
                if let Some(scheme) = peer.and_then(|c| self.verifier.signatures.get(c)) {
                    stats.on_signature(scheme);
                }
                match (peer, conn.negotiated_key_exchange_group()) {
                    (Some(cert), Some(group)) => self.verifier.curves.note(cert, group.name()),
                    (Some(cert), None) => {
                        if let Some(group) = self.verifier.curves.get(cert) {
                            stats.on_curve(group);
                        }
                    }
                    (None, _) => {}
                }
            }
            Err(e) => stats.on_error(e),
        }
        result
    }
}

impl TlsConnector {
    /// What `/certs` shows of this context.
    pub fn certificates(&self) -> &ContextCertificates {
        &self.certificates
    }
}

/// The CA's and the chain's first certificates of a context (files read again: cheap, once
/// per context build).
pub(crate) fn context_certificates(
    ca: Option<&DataSource>,
    certificate: Option<&model::TlsCertificate>,
) -> ContextCertificates {
    let details = |source: &DataSource| {
        read(source)
            .ok()
            .and_then(|pem| CertificateDetails::of_first(source, &pem))
    };
    ContextCertificates {
        ca_cert: ca.and_then(details).into_iter().collect(),
        cert_chain: certificate
            .and_then(|c| details(&c.certificate_chain))
            .into_iter()
            .collect(),
    }
}

/// ring's provider with BoringSSL's (Envoy's) preferences.
fn provider() -> Arc<CryptoProvider> {
    // ring has no post-quantum key exchange yet (the deprecation says so); it is what
    // builds with the two commands on a fresh machine.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = envoy_client_cipher_order(&provider.cipher_suites);
    // BoringSSL's (Envoy's) order, so that peers pick the curve they pick with Envoy.
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    Arc::new(provider)
}

fn versions(
    min: TlsVersion,
    max: TlsVersion,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    match (min, max) {
        (TlsVersion::Tls12, TlsVersion::Tls12) => TLS12,
        (TlsVersion::Tls13, _) => TLS13,
        (TlsVersion::Tls12, TlsVersion::Tls13) => BOTH,
    }
}

/// The CA certificates of a `trusted_ca`; their earliest expiry goes to the stats.
fn trusted_roots(
    ca: &DataSource,
    stats: Option<&TlsStats>,
    secret: Option<&str>,
) -> Result<RootCertStore, TlsError> {
    let pem = read(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "trusted_ca",
            reason: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            what: "trusted_ca",
            reason: "no certificate in it".into(),
        });
    }
    if let (Some(stats), Some(expiry)) = (stats, earliest_expiry(&pem)) {
        stats.certificate_expiry(true, secret, expiry);
    }
    Ok(roots)
}

/// A certificate chain and its key; the chain's expiry goes to the stats.
fn certificate(
    c: &model::TlsCertificate,
    stats: Option<&TlsStats>,
    secret: Option<&str>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain_pem = read(&c.certificate_chain)?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate_chain",
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate_chain",
            reason: "no certificate in it".into(),
        });
    }
    // Envoy (BoringSSL) parses every certificate and checks the key against the first: a
    // chain that does not parse, or a key of another certificate, is refused here rather
    // than failing every handshake later.
    for cert in &chain {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| TlsError::Pem {
            what: "certificate_chain",
            reason: format!("not an X.509 certificate: {e}"),
        })?;
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&c.private_key)?).map_err(|e| {
        // Never the key's bytes: only what kind of problem.
        TlsError::Pem {
            what: "private_key",
            reason: e.to_string(),
        }
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| TlsError::Pem {
            what: "private_key",
            reason: format!("does not match the certificate: {e}"),
        })?;
    if let (Some(stats), Some(expiry)) = (stats, first_expiry(&chain_pem)) {
        stats.certificate_expiry(false, secret, expiry);
    }
    Ok((chain, key))
}

/// BoringSSL's client preference as Envoy configures it (AES-128-GCM and ChaCha20 first, then
/// AES-256-GCM), so that servers that honour the client's order pick what they pick for Envoy.
fn envoy_client_cipher_order(
    suites: &[rustls::SupportedCipherSuite],
) -> Vec<rustls::SupportedCipherSuite> {
    use rustls::CipherSuite as S;
    const ORDER: &[S] = &[
        S::TLS13_AES_128_GCM_SHA256,
        S::TLS13_AES_256_GCM_SHA384,
        S::TLS13_CHACHA20_POLY1305_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    let mut ordered: Vec<rustls::SupportedCipherSuite> = ORDER
        .iter()
        .filter_map(|want| suites.iter().find(|s| s.suite() == *want).copied())
        .collect();
    ordered.extend(
        suites
            .iter()
            .filter(|s| !ORDER.contains(&s.suite()))
            .copied(),
    );
    ordered
}

/// The earliest `notAfter` (Unix seconds) of the PEM certificates.
fn earliest_expiry(pem: &[u8]) -> Option<u64> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .filter_map(|c| not_after(&c))
        .min()
}

/// The first PEM certificate's `notAfter` (a chain's leaf).
fn first_expiry(pem: &[u8]) -> Option<u64> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .and_then(|c| not_after(&c))
}

fn not_after(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    u64::try_from(parsed.validity().not_after.timestamp()).ok()
}

fn read(source: &DataSource) -> Result<Vec<u8>, TlsError> {
    match source {
        DataSource::Inline(bytes) => Ok(bytes.clone()),
        DataSource::Filename(path) => std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        }),
    }
}

/// What a cluster's certificate validation checks (see the module's doc).
#[derive(Debug)]
struct Verification {
    roots: Option<RootCertStore>,
    san_matchers: Vec<SanMatcher>,
    provider: Arc<CryptoProvider>,
}

/// Envoy's default certificate validation, noting each peer's handshake signature algorithm
/// (by the peer's certificate: the verifier is shared by every connection of a context).
#[derive(Debug)]
struct EnvoyVerifier {
    verification: Arc<Verification>,
    signatures: PeerMemory<rustls::SignatureScheme>,
    /// The key-exchange group of each peer's last full handshake: a resumed TLS 1.2 session
    /// has none of its own, and Envoy counts the session's.
    curves: PeerMemory<rustls::NamedGroup>,
}

/// Peers whose handshake details are remembered (a context's peers; the oldest go first).
const REMEMBERED_PEERS: usize = 64;

/// A handshake detail per peer certificate, for the stats of later (resumed) connections of a
/// context whose verifier all its connections share.
#[derive(Debug)]
pub(crate) struct PeerMemory<V> {
    entries: std::sync::Mutex<std::collections::VecDeque<(u64, V)>>,
}

impl<V: Copy> PeerMemory<V> {
    pub(crate) fn new() -> Self {
        Self {
            entries: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn key(cert: &CertificateDer<'_>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        cert.as_ref().hash(&mut hasher);
        hasher.finish()
    }

    /// What was last noted for `cert`'s owner.
    pub(crate) fn get(&self, cert: &CertificateDer<'_>) -> Option<V> {
        let key = Self::key(cert);
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub(crate) fn note(&self, cert: &CertificateDer<'_>, value: V) {
        let key = Self::key(cert);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|(k, _)| *k != key);
        if entries.len() == REMEMBERED_PEERS {
            entries.pop_front();
        }
        entries.push_back((key, value));
    }
}

impl EnvoyVerifier {
    fn new(verification: &Arc<Verification>) -> Self {
        Self {
            verification: Arc::clone(verification),
            signatures: PeerMemory::new(),
            curves: PeerMemory::new(),
        }
    }

    fn algorithms(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.verification.provider.signature_verification_algorithms
    }

    /// A verified handshake signature: its algorithm is noted for the stats.
    fn noted(
        &self,
        verified: Result<HandshakeSignatureValid, RustlsError>,
        cert: &CertificateDer<'_>,
        scheme: rustls::SignatureScheme,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        let valid = verified?;
        self.signatures.note(cert, scheme);
        Ok(valid)
    }
}

impl ServerCertVerifier for EnvoyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let v = &self.verification;
        let Some(roots) = &v.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            v.provider.signature_verification_algorithms.all,
        )?;
        if !v.san_matchers.is_empty() && !san_matches(end_entity, &v.san_matchers) {
            return Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.noted(
            verify_tls12_signature(message, cert, dss, self.algorithms()),
            cert,
            dss.scheme,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.noted(
            verify_tls13_signature(message, cert, dss, self.algorithms()),
            cert,
            dss.scheme,
        )
    }

    /// Offered in BoringSSL's (Envoy's) order, so that servers sign as they do for Envoy.
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        use rustls::SignatureScheme as S;
        const ORDER: &[S] = &[
            S::ECDSA_NISTP256_SHA256,
            S::RSA_PSS_SHA256,
            S::RSA_PKCS1_SHA256,
            S::ECDSA_NISTP384_SHA384,
            S::RSA_PSS_SHA384,
            S::RSA_PKCS1_SHA384,
            S::RSA_PSS_SHA512,
            S::RSA_PKCS1_SHA512,
        ];
        let mut schemes = self
            .verification
            .provider
            .signature_verification_algorithms
            .supported_schemes();
        let rank = |s: &S| ORDER.iter().position(|o| o == s).unwrap_or(ORDER.len());
        schemes.sort_by_key(rank);
        schemes
    }
}

/// Whether any of the certificate's subject alt names matches any matcher of its kind.
fn san_matches(cert: &CertificateDer<'_>, matchers: &[SanMatcher]) -> bool {
    let sans = subject_alt_names(cert);
    matchers.iter().any(|m| {
        sans.iter().any(|(kind, value)| {
            *kind == m.kind
                && match kind {
                    SanKind::Dns => m.matcher.matches_dns_san(value),
                    _ => m.matcher.matches(value),
                }
        })
    })
}

/// The certificate's subject alt names as Envoy renders them for matching.
pub fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<(SanKind, String)> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) => Some((SanKind::Dns, (*s).to_owned())),
            GeneralName::URI(s) => Some((SanKind::Uri, (*s).to_owned())),
            GeneralName::RFC822Name(s) => Some((SanKind::Email, (*s).to_owned())),
            GeneralName::IPAddress(bytes) => ip_string(bytes).map(|ip| (SanKind::IpAddress, ip)),
            _ => None,
        })
        .collect()
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// A model matcher, for tests and callers that build settings by hand.
pub fn exact_san(kind: SanKind, value: &str) -> SanMatcher {
    SanMatcher {
        kind,
        matcher: model::NameMatcher {
            pattern: model::NamePattern::Exact(value.to_owned()),
            ignore_case: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType as RcSan};

    fn cert(sans: Vec<RcSan>) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn subject_alt_names_as_envoy_renders_them() {
        let der = cert(vec![
            RcSan::DnsName("*.redis.test".try_into().expect("dns")),
            RcSan::URI("spiffe://cluster.local/ns/a/sa/b".try_into().expect("uri")),
            RcSan::IpAddress("127.0.0.1".parse().expect("ip")),
            RcSan::IpAddress("::1".parse().expect("ip")),
        ]);
        assert_eq!(
            subject_alt_names(&der),
            vec![
                (SanKind::Dns, "*.redis.test".to_owned()),
                (SanKind::Uri, "spiffe://cluster.local/ns/a/sa/b".to_owned()),
                (SanKind::IpAddress, "127.0.0.1".to_owned()),
                (SanKind::IpAddress, "::1".to_owned()),
            ]
        );
        assert!(san_matches(
            &der,
            &[exact_san(SanKind::Dns, "node1.redis.test")]
        ));
        assert!(san_matches(&der, &[exact_san(SanKind::IpAddress, "::1")]));
        assert!(!san_matches(
            &der,
            &[exact_san(SanKind::Uri, "spiffe://cluster.local/ns/a/sa/c")]
        ));
        // A kind must match its own kind: an IP pattern never matches a DNS SAN.
        assert!(!san_matches(
            &der,
            &[exact_san(SanKind::Email, "127.0.0.1")]
        ));
    }

    #[test]
    fn ciphers_in_boringssl_client_order() {
        #[allow(deprecated)] // ring's provider, as in `TlsConnector::new`
        let suites = rustls::crypto::ring::default_provider().cipher_suites;
        let ordered: Vec<String> = envoy_client_cipher_order(&suites)
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(ordered.len(), suites.len());
        assert_eq!(ordered[0], "TLS13_AES_128_GCM_SHA256");
        assert_eq!(ordered[3], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    }
}
