//! What `/certs` shows of a TLS context's certificates (Envoy's `CertificateDetails`): the
//! CA and the first certificate of the chain, each with its source, serial number, subject
//! alt names and validity.

use redvoy_config::model::{DataSource, SanKind};
use rustls::pki_types::CertificateDer;

/// One certificate as `/certs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateDetails {
    /// The file it was read from, or `<inline>`.
    pub path: String,
    /// Lower-case hex of the serial number, whole bytes (BoringSSL's `BN_bn2hex`).
    pub serial_number: String,
    /// DNS, URI and IP subject alt names, in the certificate's order.
    pub subject_alt_names: Vec<(SanKind, String)>,
    /// `notBefore` / `notAfter`, seconds since the epoch.
    pub valid_from: i64,
    pub expiration_time: i64,
}

/// A context's certificates: its CA (`trusted_ca`) and its own chain's first certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextCertificates {
    pub ca_cert: Vec<CertificateDetails>,
    pub cert_chain: Vec<CertificateDetails>,
}

impl CertificateDetails {
    /// The details of the first certificate in `pem` read from `source`.
    pub(crate) fn of_first(source: &DataSource, pem: &[u8]) -> Option<Self> {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let path = match source {
            DataSource::Filename(path) => path.clone(),
            DataSource::Inline(_) => "<inline>".to_owned(),
        };
        let serial = parsed.raw_serial();
        let significant = serial
            .iter()
            .position(|b| *b != 0)
            .map_or(&serial[serial.len().saturating_sub(1)..], |i| &serial[i..]);
        let serial_number = significant.iter().map(|b| format!("{b:02x}")).collect();
        let subject_alt_names = crate::subject_alt_names(&cert)
            .into_iter()
            .filter(|(kind, _)| *kind != SanKind::Email)
            .collect();
        let validity = parsed.validity();
        Some(Self {
            path,
            serial_number,
            subject_alt_names,
            valid_from: validity.not_before.timestamp(),
            expiration_time: validity.not_after.timestamp(),
        })
    }
}
