//! Envoy's TLS transport socket on the upstream side (`UpstreamTlsContext`), on rustls with the
//! ring provider (ring builds with the C compiler every Debian machine has for redis; aws-lc-rs
//! would also need cmake and Go for some targets).
//!
//! Verification is Envoy's, not a browser's: without `trusted_ca` the server certificate is
//! accepted unverified (Envoy's default); with it, the chain is checked against that CA only
//! (webpki) and the host name is never compared with `sni`; `match_typed_subject_alt_names`,
//! when set, must match one of the certificate's SANs. A failed handshake is a failed connect:
//! there is no plaintext fallback.

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
}

/// Opens TLS connections for one cluster.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("sni", &self.sni)
            .finish()
    }
}

impl TlsConnector {
    /// Reads the certificates and keys the settings name (files are read now, once).
    pub fn new(tls: &UpstreamTls) -> Result<Self, TlsError> {
        // ring has no post-quantum key exchange yet (the deprecation says so); it is what
        // builds with the two commands on a fresh machine.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] =
            match (tls.min_version, tls.max_version) {
                (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
                (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
                (TlsVersion::Tls12, TlsVersion::Tls13) => {
                    &[&rustls::version::TLS13, &rustls::version::TLS12]
                }
            };
        let roots = match &tls.trusted_ca {
            None => None,
            Some(source) => {
                let pem = read(source)?;
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
                Some(roots)
            }
        };
        let verifier = Arc::new(EnvoyVerifier {
            roots,
            san_matchers: tls.san_matchers.clone(),
            provider: Arc::clone(&provider),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &tls.client_certificate {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let chain_pem = read(&c.certificate_chain)?;
                let chain = CertificateDer::pem_slice_iter(&chain_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::Pem {
                        what: "certificate_chain",
                        reason: e.to_string(),
                    })?;
                let key = PrivateKeyDer::from_pem_slice(&read(&c.private_key)?).map_err(|e| {
                    // Never the key's bytes: only what kind of problem.
                    TlsError::Pem {
                        what: "private_key",
                        reason: e.to_string(),
                    }
                })?;
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
            sni,
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
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
    }
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

/// Envoy's default certificate validation (see the module's doc).
#[derive(Debug)]
struct EnvoyVerifier {
    roots: Option<RootCertStore>,
    san_matchers: Vec<SanMatcher>,
    provider: Arc<CryptoProvider>,
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
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if !self.san_matchers.is_empty() && !san_matches(end_entity, &self.san_matchers) {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether any of the certificate's subject alt names matches any matcher of its kind.
fn san_matches(cert: &CertificateDer<'_>, matchers: &[SanMatcher]) -> bool {
    let sans = subject_alt_names(cert);
    matchers.iter().any(|m| {
        sans.iter()
            .any(|(kind, value)| *kind == m.kind && m.matcher.matches(value))
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

/// A connection to an upstream host, plaintext or TLS, for the callers that do not need the
/// plaintext path's own fast types (the health checker, tcp_proxy).
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Connects to `addr` and, with `tls`, completes the handshake.
    pub async fn connect(addr: SocketAddr, tls: Option<&TlsConnector>) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Self::Plain(tcp)),
            Some(tls) => Ok(Self::Tls(Box::new(tls.connect(tcp, addr).await?))),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the peer closed the connection while it was idle (a look at the socket that
    /// consumes nothing, so a TLS session is left intact).
    pub fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        match self.tcp().poll_peek(&mut cx, &mut buf) {
            std::task::Poll::Ready(Ok(0)) => true,
            std::task::Poll::Ready(Ok(_)) | std::task::Poll::Pending => false,
            std::task::Poll::Ready(Err(_)) => true,
        }
    }
}

impl tokio::io::AsyncRead for UpstreamStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpstreamStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
