//! Envoy's `ssl.*` stats of a TLS transport socket, under its scope (`cluster.<name>.`): every
//! counter Envoy lists (at zero until used), one counter per negotiated version, cipher, curve
//! and signature algorithm named as BoringSSL names them, and the expiry of the configured
//! certificates.

use std::io;

use redvoy_stats::{Counter, Store};
use rustls::{
    CertificateError, CommonState, Error as RustlsError, NamedGroup, ProtocolVersion,
    SignatureScheme,
};

/// Envoy names certificates configured inline or by file (not by SDS) after the hash of an
/// empty secret name.
const UNNAMED_SUFFIX: &str = "e3b0c442";

#[derive(Clone)]
pub struct TlsStats {
    store: Store,
    /// `cluster.<name>.ssl.`
    prefix: String,
    handshake: Counter,
    connection_error: Counter,
    fail_verify_error: Counter,
    fail_verify_san: Counter,
    fail_verify_no_cert: Counter,
    no_certificate: Counter,
    session_reused: Counter,
    context_update_by_sds: Counter,
    downstream_secrets_not_ready: Counter,
    upstream_secrets_not_ready: Counter,
}

impl std::fmt::Debug for TlsStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStats")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl TlsStats {
    /// Registers the stats of a cluster's TLS (`scope` is `cluster.<name>.`).
    pub fn new(store: &Store, scope: &str) -> Self {
        Self::register(store, scope, "client_ssl_socket_factory")
    }

    /// Registers the stats of a listener's TLS (`scope` is `listener.<address>.`).
    pub fn server(store: &Store, scope: &str) -> Self {
        Self::register(store, scope, "server_ssl_socket_factory")
    }

    fn register(store: &Store, scope: &str, factory: &str) -> Self {
        let prefix = format!("{scope}ssl.");
        let c = |name: &str| store.counter(&format!("{prefix}{name}"));
        for name in [
            "fail_verify_cert_hash",
            "ocsp_staple_failed",
            "ocsp_staple_omitted",
            "ocsp_staple_requests",
            "ocsp_staple_responses",
        ] {
            c(name);
        }
        let f = |name: &str| store.counter(&format!("{scope}{factory}.{name}"));
        Self {
            handshake: c("handshake"),
            connection_error: c("connection_error"),
            fail_verify_error: c("fail_verify_error"),
            fail_verify_san: c("fail_verify_san"),
            fail_verify_no_cert: c("fail_verify_no_cert"),
            no_certificate: c("no_certificate"),
            session_reused: c("session_reused"),
            context_update_by_sds: f("ssl_context_update_by_sds"),
            downstream_secrets_not_ready: f("downstream_context_secrets_not_ready"),
            upstream_secrets_not_ready: f("upstream_context_secrets_not_ready"),
            store: store.clone(),
            prefix,
        }
    }

    /// `ssl.certificate.<secret name>.expiration_unix_time_seconds`, or
    /// `…unnamed_{ca_cert,cert}_…` for a certificate configured inline or by file.
    pub(crate) fn certificate_expiry(&self, ca: bool, secret: Option<&str>, not_after: u64) {
        let kind = if ca { "ca_cert" } else { "cert" };
        let name = match secret {
            Some(name) => name.to_owned(),
            None => format!("unnamed_{kind}_{UNNAMED_SUFFIX}"),
        };
        self.store
            .gauge(&format!(
                "{}certificate.{name}.expiration_unix_time_seconds",
                self.prefix
            ))
            .set(not_after);
    }

    /// The context was rebuilt from a secret discovery update.
    pub(crate) fn on_sds_update(&self) {
        self.context_update_by_sds.inc();
    }

    /// A connection found no context (its secrets have not arrived).
    pub(crate) fn on_secrets_not_ready(&self, server: bool) {
        if server {
            self.downstream_secrets_not_ready.inc();
        } else {
            self.upstream_secrets_not_ready.inc();
        }
    }

    pub(crate) fn on_handshake(&self, conn: &CommonState) {
        self.handshake.inc();
        if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            self.session_reused.inc();
        }
        if let Some(v) = conn.protocol_version().and_then(version_name) {
            self.count(&format!("versions.{v}"));
        }
        if let Some(suite) = conn.negotiated_cipher_suite() {
            self.count(&format!("ciphers.{}", cipher_name(suite.suite())));
        }
        if let Some(group) = conn.negotiated_key_exchange_group() {
            if let Some(name) = curve_name(group.name()) {
                self.count(&format!("curves.{name}"));
            }
        }
    }

    /// The key-exchange group of a resumed session (the handshake itself had none).
    pub(crate) fn on_curve(&self, group: NamedGroup) {
        if let Some(name) = curve_name(group) {
            self.count(&format!("curves.{name}"));
        }
    }

    /// A client that sent no certificate (and was not required to).
    pub(crate) fn on_no_certificate(&self) {
        self.no_certificate.inc();
    }

    /// The peer's handshake signature, counted when it is verified.
    pub(crate) fn on_signature(&self, scheme: SignatureScheme) {
        if let Some(name) = sigalg_name(scheme) {
            self.count(&format!("sigalgs.{name}"));
        }
    }

    /// A failed handshake: certificate verification failures by kind, anything else as a
    /// connection error.
    pub(crate) fn on_error(&self, e: &io::Error) {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<RustlsError>());
        match tls {
            Some(RustlsError::InvalidCertificate(CertificateError::NotValidForName)) => {
                self.fail_verify_san.inc();
            }
            Some(RustlsError::InvalidCertificate(_)) => self.fail_verify_error.inc(),
            Some(RustlsError::NoCertificatesPresented) => self.fail_verify_no_cert.inc(),
            _ => self.connection_error.inc(),
        }
    }

    fn count(&self, name: &str) {
        self.store.counter(&format!("{}{name}", self.prefix)).inc();
    }
}

fn version_name(v: ProtocolVersion) -> Option<&'static str> {
    match v {
        ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        _ => None,
    }
}

/// BoringSSL's names: IANA names for TLS 1.3 suites, OpenSSL names for TLS 1.2 ones.
fn cipher_name(suite: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256".into(),
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384".into(),
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256".into(),
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384".into(),
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305".into(),
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256".into(),
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384".into(),
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305".into(),
        other => format!("{other:?}"),
    }
}

fn curve_name(group: NamedGroup) -> Option<&'static str> {
    match group {
        NamedGroup::X25519 => Some("X25519"),
        NamedGroup::secp256r1 => Some("P-256"),
        NamedGroup::secp384r1 => Some("P-384"),
        NamedGroup::secp521r1 => Some("P-521"),
        _ => None,
    }
}

fn sigalg_name(scheme: SignatureScheme) -> Option<&'static str> {
    use SignatureScheme as S;
    Some(match scheme {
        S::ECDSA_NISTP256_SHA256 => "ecdsa_secp256r1_sha256",
        S::ECDSA_NISTP384_SHA384 => "ecdsa_secp384r1_sha384",
        S::ECDSA_NISTP521_SHA512 => "ecdsa_secp521r1_sha512",
        S::RSA_PSS_SHA256 => "rsa_pss_rsae_sha256",
        S::RSA_PSS_SHA384 => "rsa_pss_rsae_sha384",
        S::RSA_PSS_SHA512 => "rsa_pss_rsae_sha512",
        S::RSA_PKCS1_SHA256 => "rsa_pkcs1_sha256",
        S::RSA_PKCS1_SHA384 => "rsa_pkcs1_sha384",
        S::RSA_PKCS1_SHA512 => "rsa_pkcs1_sha512",
        S::ED25519 => "ed25519",
        _ => return None,
    })
}
