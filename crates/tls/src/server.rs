//! Envoy's TLS transport socket on the downstream side (`DownstreamTlsContext`): the filter
//! chain's certificate, and client certificates as Envoy treats them. Without a
//! `validation_context` no client certificate is asked for (unless one is required, and then
//! any is accepted); with `trusted_ca` one is asked for and, when sent, verified against that
//! CA and the SAN matchers; `require_client_certificate` refuses a client that sends none.

use std::io;
use std::sync::Arc;

use redvoy_config::model::{DownstreamTls, SanMatcher};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error as RustlsError};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::{certificate, provider, san_matches, trusted_roots, versions, TlsError, TlsStats};

/// Accepts TLS connections for one filter chain.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
    certificates: crate::ContextCertificates,
    stats: Option<TlsStats>,
    /// The config's client-certificate verifier, when client certificates are asked for (it
    /// remembers each client's signature algorithm for the stats).
    verifier: Option<Arc<ClientVerifier>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("client_auth", &self.verifier.is_some())
            .finish()
    }
}

impl TlsAcceptor {
    /// Reads the certificate, key and CA the settings name (files are read now, once);
    /// `stats` gets Envoy's `ssl.*` stats of the listener.
    pub fn new(tls: &DownstreamTls, stats: Option<TlsStats>) -> Result<Self, TlsError> {
        let provider = provider();
        let ca_name = tls.validation_sds.as_ref().map(|s| s.name.as_str());
        let roots = tls
            .trusted_ca
            .as_ref()
            .map(|ca| trusted_roots(ca, stats.as_ref(), ca_name))
            .transpose()?;
        if roots.is_none() && !tls.san_matchers.is_empty() {
            // Envoy refuses this (a secret that leads here is NACKed): SAN matching is only
            // meaningful on a verified chain, and without it any certificate would pass.
            return Err(TlsError::Pem {
                what: "validation_context",
                reason: "SAN-based verification of peer certificates without trusted CA is \
                         insecure and not allowed"
                    .into(),
            });
        }
        let webpki = match roots {
            None => None,
            Some(roots) => Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Pem {
                        what: "trusted_ca",
                        reason: e.to_string(),
                    })?,
            ),
        };
        let client_auth = (webpki.is_some() || tls.require_client_certificate).then(|| {
            Arc::new(ClientAuth {
                webpki,
                san_matchers: tls.san_matchers.clone(),
                required: tls.require_client_certificate,
                provider: Arc::clone(&provider),
            })
        });
        let versions = versions(tls.min_version, tls.max_version);
        let Some(certificate_config) = &tls.certificate else {
            return Err(TlsError::Pem {
                what: "tls_certificates",
                reason: "No TLS certificates found for server context".into(),
            });
        };
        let name = tls.certificate_sds.as_ref().map(|s| s.name.as_str());
        let (chain, key) = certificate(certificate_config, stats.as_ref(), name)?;
        let key = provider.key_provider.load_private_key(key)?;
        let certificate: Arc<dyn ResolvesServerCert> =
            Arc::new(OneCertificate(Arc::new(CertifiedKey::new(chain, key))));
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?;
        let verifier = client_auth.map(|auth| Arc::new(ClientVerifier::new(&auth)));
        let builder = match &verifier {
            None => builder.with_no_client_auth(),
            Some(v) => {
                builder.with_client_cert_verifier(Arc::clone(v) as Arc<dyn ClientCertVerifier>)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&certificate));
        config.alpn_protocols = tls
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        // Envoy (BoringSSL) resumes sessions with tickets by default.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Self {
            config: Arc::new(config),
            certificates: crate::context_certificates(
                tls.trusted_ca.as_ref(),
                tls.certificate.as_ref(),
            ),
            stats,
            verifier,
        })
    }

    /// What `/certs` shows of this context.
    pub fn certificates(&self) -> &crate::ContextCertificates {
        &self.certificates
    }

    /// The TLS handshake over an accepted socket (whose ClientHello may have been peeked,
    /// never consumed).
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let Some(stats) = &self.stats else {
            return tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
                .accept(tcp)
                .await;
        };
        let result = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
            .accept(tcp)
            .await;
        match &result {
            Ok(stream) => {
                let conn = stream.get_ref().1;
                stats.on_handshake(conn);
                match conn.peer_certificates().and_then(|c| c.first()) {
                    None => stats.on_no_certificate(),
                    // The client's handshake signature (a resumed session counts the one of
                    // the handshake that made it, as for upstream connections).
                    Some(cert) => {
                        let verifier = self.verifier.as_ref();
                        if let Some(scheme) = verifier.and_then(|v| v.signatures.get(cert)) {
                            stats.on_signature(scheme);
                        }
                    }
                }
            }
            Err(e) => stats.on_error(e),
        }
        result
    }
}

/// The chain's one certificate, whatever the client asks for.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// What a chain's client-certificate validation checks.
#[derive(Debug)]
struct ClientAuth {
    /// Chain verification against `trusted_ca` (a client without a certificate passes it).
    webpki: Option<Arc<dyn ClientCertVerifier>>,
    san_matchers: Vec<SanMatcher>,
    required: bool,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct ClientVerifier {
    auth: Arc<ClientAuth>,
    signatures: crate::PeerMemory<rustls::SignatureScheme>,
}

impl ClientVerifier {
    fn new(auth: &Arc<ClientAuth>) -> Self {
        Self {
            auth: Arc::clone(auth),
            signatures: crate::PeerMemory::new(),
        }
    }

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

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.auth.webpki {
            Some(v) => v.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        let Some(webpki) = &self.auth.webpki else {
            // No validation context: any certificate is accepted, as in Envoy.
            return Ok(ClientCertVerified::assertion());
        };
        webpki.verify_client_cert(end_entity, intermediates, now)?;
        if !self.auth.san_matchers.is_empty() && !san_matches(end_entity, &self.auth.san_matchers) {
            return Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.noted(
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.auth.provider.signature_verification_algorithms,
            ),
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
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.auth.provider.signature_verification_algorithms,
            ),
            cert,
            dss.scheme,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.auth
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
