//! A cluster's or filter chain's `transport_socket`: plaintext (`raw_buffer`, or none) or
//! `envoy.transport_sockets.tls` (`UpstreamTlsContext`, `DownstreamTlsContext`). The allowlist walk has refused every
//! TLS field redvoy does not run, with its path; what is left is read here.

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{transport_socket, DataSource, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters::TlsProtocol;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    Secret, SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use prost::Message;

use crate::error::FieldPath;
use crate::model;
use crate::supported::{DOWNSTREAM_TLS, RAW_BUFFER, UPSTREAM_TLS};
use crate::ConfigError;

/// A `transport_socket`'s `typed_config` and its path; `None` without a socket. A socket
/// with a name and no `typed_config` is refused: Envoy looks a socket up by its type, and a
/// name alone finds none (never plaintext instead).
fn typed_socket<'a>(
    socket: Option<&'a TransportSocket>,
    p: &FieldPath,
) -> Result<Option<(&'a envoy_types::pb::google::protobuf::Any, FieldPath)>, ConfigError> {
    let Some(TransportSocket { name, config_type }) = socket else {
        return Ok(None);
    };
    let Some(transport_socket::ConfigType::TypedConfig(any)) = config_type else {
        return Err(ConfigError::invalid(
            p.field("transport_socket"),
            crate::supported::no_factory(name, ""),
        ));
    };
    Ok(Some((
        any,
        p.field("transport_socket").field("typed_config"),
    )))
}

/// The cluster's TLS settings, or `None` for plaintext.
pub(crate) fn upstream_tls(
    socket: Option<&TransportSocket>,
    p: &FieldPath,
) -> Result<Option<model::UpstreamTls>, ConfigError> {
    let Some((any, p)) = typed_socket(socket, p)? else {
        return Ok(None);
    };
    match crate::parse::type_name_of(&any.type_url) {
        RAW_BUFFER => Ok(None),
        UPSTREAM_TLS => {
            let context = UpstreamTlsContext::decode(any.value.as_slice())
                .map_err(|e| ConfigError::invalid(&p, format!("cannot decode: {e}")))?;
            context_of(&context, &p).map(Some)
        }
        other => Err(ConfigError::unsupported_because(
            &p,
            format!("transport socket {other} is not supported by redvoy"),
        )),
    }
}

fn context_of(c: &UpstreamTlsContext, p: &FieldPath) -> Result<model::UpstreamTls, ConfigError> {
    #[allow(deprecated)]
    let UpstreamTlsContext {
        common_tls_context,
        sni,
        // Refused by the allowlist.
        auto_host_sni: _,
        auto_sni_san_validation: _,
        allow_renegotiation: _,
        max_session_keys: _,
        enforce_rsa_key_usage: _,
    } = c;
    let p = p.field("common_tls_context");
    // Envoy's client defaults: TLS 1.2 to 1.2.
    let common = common_of(
        common_tls_context.as_ref(),
        (model::TlsVersion::Tls12, model::TlsVersion::Tls12),
        &p,
    )?;
    let mut certificates = common.certificates;
    if certificates.len() > 1 {
        return Err(ConfigError::unsupported_because(
            p.field("tls_certificates"),
            "more than one client certificate: redvoy sends one",
        ));
    }
    let client_certificate = certificates.pop();
    let mut certificate_sds = common.certificate_sds;
    if certificate_sds.len() + usize::from(client_certificate.is_some()) > 1 {
        return Err(ConfigError::unsupported_because(
            p.field("tls_certificate_sds_secret_configs"),
            "more than one client certificate: redvoy sends one",
        ));
    }
    Ok(model::UpstreamTls {
        sni: sni.clone(),
        alpn_protocols: common.alpn_protocols,
        min_version: common.min_version,
        max_version: common.max_version,
        client_certificate,
        client_certificate_sds: certificate_sds.pop(),
        validation_sds: common.validation_sds,
        trusted_ca: common.validation.trusted_ca,
        san_matchers: common.validation.san_matchers,
    })
}

/// A filter chain's TLS settings, or `None` for plaintext.
pub(crate) fn downstream_tls(
    socket: Option<&TransportSocket>,
    p: &FieldPath,
) -> Result<Option<model::DownstreamTls>, ConfigError> {
    let Some((any, p)) = typed_socket(socket, p)? else {
        return Ok(None);
    };
    match crate::parse::type_name_of(&any.type_url) {
        RAW_BUFFER => Ok(None),
        DOWNSTREAM_TLS => {
            let c = DownstreamTlsContext::decode(any.value.as_slice())
                .map_err(|e| ConfigError::invalid(&p, format!("cannot decode: {e}")))?;
            #[allow(deprecated)]
            let DownstreamTlsContext {
                common_tls_context,
                require_client_certificate,
                // Refused by the allowlist.
                require_sni: _,
                session_ticket_keys_type: _,
                disable_stateful_session_resumption: _,
                session_timeout: _,
                ocsp_staple_policy: _,
                full_scan_certs_on_sni_mismatch: _,
                prefer_client_ciphers: _,
            } = c;
            let cp = p.field("common_tls_context");
            // Envoy's server defaults: TLS 1.2 to 1.3.
            let common = common_of(
                common_tls_context.as_ref(),
                (model::TlsVersion::Tls12, model::TlsVersion::Tls13),
                &cp,
            )?;
            let count = common.certificates.len() + common.certificate_sds.len();
            if count == 0 {
                return Err(ConfigError::invalid(
                    &cp,
                    "No TLS certificates found for server context",
                ));
            }
            if count > 1 {
                return Err(ConfigError::unsupported_because(
                    cp.field("tls_certificates"),
                    "more than one server certificate (chosen by SNI or key type) is not \
                     supported by redvoy",
                ));
            }
            Ok(Some(model::DownstreamTls {
                alpn_protocols: common.alpn_protocols,
                min_version: common.min_version,
                max_version: common.max_version,
                certificate: common.certificates.into_iter().next(),
                certificate_sds: common.certificate_sds.into_iter().next(),
                validation_sds: common.validation_sds,
                trusted_ca: common.validation.trusted_ca,
                san_matchers: common.validation.san_matchers,
                require_client_certificate: require_client_certificate.is_some_and(|b| b.value),
            }))
        }
        other => Err(ConfigError::unsupported_because(
            &p,
            format!("transport socket {other} is not supported by redvoy on listeners"),
        )),
    }
}

/// What both sides read of a `CommonTlsContext`.
struct Common {
    min_version: model::TlsVersion,
    max_version: model::TlsVersion,
    certificates: Vec<model::TlsCertificate>,
    certificate_sds: Vec<model::SdsSecretConfig>,
    alpn_protocols: Vec<String>,
    /// The inline (or combined default) validation context.
    validation: model::ValidationContext,
    validation_sds: Option<model::SdsSecretConfig>,
}

fn common_of(
    common: Option<&CommonTlsContext>,
    default_versions: (model::TlsVersion, model::TlsVersion),
    p: &FieldPath,
) -> Result<Common, ConfigError> {
    let common = common.cloned().unwrap_or_default();
    #[allow(deprecated)]
    let CommonTlsContext {
        tls_params,
        tls_certificates,
        alpn_protocols,
        validation_context_type,
        tls_certificate_sds_secret_configs,
        // Refused by the allowlist.
        tls_certificate_provider_instance: _,
        custom_tls_certificate_selector: _,
        tls_certificate_certificate_provider: _,
        tls_certificate_certificate_provider_instance: _,
        custom_handshaker: _,
        key_log: _,
    } = common;
    let (min_version, max_version) = versions(
        tls_params.as_ref(),
        default_versions,
        &p.field("tls_params"),
    )?;
    let certificates = tls_certificates
        .iter()
        .enumerate()
        .map(|(i, c)| certificate(c, &p.field("tls_certificates").index(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let certificate_sds = tls_certificate_sds_secret_configs
        .iter()
        .enumerate()
        .map(|(i, c)| sds_secret_config(c, &p.field("tls_certificate_sds_secret_configs").index(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let (validation, validation_sds) = match validation_context_type {
        None => (model::ValidationContext::default(), None),
        Some(ValidationContextType::ValidationContext(v)) => {
            (validation(&v, &p.field("validation_context"))?, None)
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(c)) => (
            model::ValidationContext::default(),
            Some(sds_secret_config(
                &c,
                &p.field("validation_context_sds_secret_config"),
            )?),
        ),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            let cp = p.field("combined_validation_context");
            let default = match &c.default_validation_context {
                Some(v) => validation(v, &cp.field("default_validation_context"))?,
                None => model::ValidationContext::default(),
            };
            let Some(sds) = &c.validation_context_sds_secret_config else {
                return Err(ConfigError::invalid(
                    cp.field("validation_context_sds_secret_config"),
                    "value is required",
                ));
            };
            let sds = sds_secret_config(sds, &cp.field("validation_context_sds_secret_config"))?;
            (default, Some(sds))
        }
        // The allowlist refused the others.
        Some(_) => {
            return Err(ConfigError::unsupported_because(
                p.field("validation_context_type"),
                "this validation context type is not supported by redvoy",
            ))
        }
    };
    if validation.trusted_ca.is_none()
        && validation_sds.is_none()
        && !validation.san_matchers.is_empty()
    {
        // Envoy refuses SAN matching without a CA to verify the chain against.
        return Err(ConfigError::invalid(
            p.field("validation_context"),
            "SAN-based verification of peer certificates without trusted CA is insecure and \
             not allowed",
        ));
    }
    Ok(Common {
        min_version,
        max_version,
        certificates,
        certificate_sds,
        alpn_protocols,
        validation,
        validation_sds,
    })
}

/// `default` when unset (Envoy's differ by side). rustls speaks 1.2 and 1.3: a range reaching
/// below 1.2 is narrowed to what remains, one entirely below it is refused.
fn versions(
    params: Option<&TlsParameters>,
    default: (model::TlsVersion, model::TlsVersion),
    p: &FieldPath,
) -> Result<(model::TlsVersion, model::TlsVersion), ConfigError> {
    let Some(TlsParameters {
        tls_minimum_protocol_version,
        tls_maximum_protocol_version,
        // Refused by the allowlist.
        cipher_suites: _,
        ecdh_curves: _,
        signature_algorithms: _,
        compliance_policies: _,
    }) = params
    else {
        return Ok(default);
    };
    let version = |v: i32, default: model::TlsVersion, field: &str| match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) => Ok(default),
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11)
            if field == "tls_minimum_protocol_version" =>
        {
            Ok(model::TlsVersion::Tls12)
        }
        Ok(TlsProtocol::TlSv12) => Ok(model::TlsVersion::Tls12),
        Ok(TlsProtocol::TlSv13) => Ok(model::TlsVersion::Tls13),
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11) => Err(ConfigError::unsupported_because(
            p.field(field),
            "TLS versions below 1.2 are not supported by redvoy",
        )),
        Err(_) => Err(ConfigError::invalid(
            p.field(field),
            "value must be one of the defined enum values",
        )),
    };
    let min = version(
        *tls_minimum_protocol_version,
        default.0,
        "tls_minimum_protocol_version",
    )?;
    let max = version(
        *tls_maximum_protocol_version,
        default.1,
        "tls_maximum_protocol_version",
    )?;
    if min > max {
        return Err(ConfigError::invalid(
            p,
            "tls_minimum_protocol_version is above tls_maximum_protocol_version",
        ));
    }
    Ok((min, max))
}

fn certificate(c: &TlsCertificate, p: &FieldPath) -> Result<model::TlsCertificate, ConfigError> {
    let TlsCertificate {
        certificate_chain,
        private_key,
        // Read for SDS secrets only (see `watched_directories`), as in Envoy.
        watched_directory: _,
        // Refused by the allowlist.
        pkcs12: _,
        private_key_provider: _,
        password: _,
        ocsp_staple: _,
        signed_certificate_timestamp: _,
        tls_params: _,
    } = c;
    let chain = data_source(certificate_chain.as_ref(), &p.field("certificate_chain"))?;
    let key = data_source(private_key.as_ref(), &p.field("private_key"))?;
    match (chain, key) {
        (Some(certificate_chain), Some(private_key)) => Ok(model::TlsCertificate {
            certificate_chain,
            private_key,
        }),
        _ => Err(ConfigError::invalid(
            p,
            "a certificate needs both certificate_chain and private_key",
        )),
    }
}

#[allow(deprecated)]
fn validation(
    v: &CertificateValidationContext,
    p: &FieldPath,
) -> Result<model::ValidationContext, ConfigError> {
    let CertificateValidationContext {
        trusted_ca,
        match_typed_subject_alt_names,
        // Refused by the allowlist.
        ca_certificate_provider_instance: _,
        system_root_certs: _,
        // Read for SDS secrets only (see `watched_directories`), as in Envoy.
        watched_directory: _,
        verify_certificate_spki: _,
        verify_certificate_hash: _,
        match_subject_alt_names,
        require_signed_certificate_timestamp: _,
        crl: _,
        allow_expired_certificate: _,
        trust_chain_verification: _,
        custom_validator_config: _,
        only_verify_leaf_cert_crl: _,
        max_verify_depth: _,
        suppress_client_ca_list: _,
    } = v;
    let trusted_ca = data_source(trusted_ca.as_ref(), &p.field("trusted_ca"))?;
    let mut san_matchers = match_typed_subject_alt_names
        .iter()
        .enumerate()
        .map(|(i, m)| san_matcher(m, &p.field("match_typed_subject_alt_names").index(i)))
        .collect::<Result<Vec<_>, _>>()?;
    // The deprecated untyped list (Istio still writes it): Envoy matches each against DNS,
    // URI, email and IP SANs alike; with typed matchers present it is ignored.
    if san_matchers.is_empty() {
        for (i, m) in match_subject_alt_names.iter().enumerate() {
            let matcher = name_matcher(m, &p.field("match_subject_alt_names").index(i))?;
            for kind in [
                model::SanKind::Dns,
                model::SanKind::Uri,
                model::SanKind::Email,
                model::SanKind::IpAddress,
            ] {
                san_matchers.push(model::SanMatcher {
                    kind,
                    matcher: matcher.clone(),
                });
            }
        }
    }
    Ok(model::ValidationContext {
        trusted_ca,
        san_matchers,
    })
}

/// `SdsSecretConfig`: a static secret by name, or one from a discovery source.
fn sds_secret_config(
    c: &SdsSecretConfig,
    p: &FieldPath,
) -> Result<model::SdsSecretConfig, ConfigError> {
    let SdsSecretConfig { name, sds_config } = c;
    if name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("name"),
            "value length must be at least 1 characters",
        ));
    }
    let sds_config = match sds_config {
        Some(source) => {
            let source = super::dynamic::config_source(source, &p.field("sds_config"))?;
            if matches!(source.kind, model::ConfigSourceKind::Path { .. }) {
                return Err(ConfigError::unsupported_because(
                    p.field("sds_config"),
                    "secrets from files (path_config_source) are not supported by redvoy",
                ));
            }
            Some(source)
        }
        None => None,
    };
    Ok(model::SdsSecretConfig {
        name: name.clone(),
        sds_config,
    })
}

/// `static_resources.secrets[]` and SDS resources.
pub(crate) fn secret(s: &Secret, p: &FieldPath) -> Result<model::Secret, ConfigError> {
    let Secret { name, r#type } = s;
    let watched_directories = watched_directories(r#type.as_ref());
    let kind = match r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            model::SecretKind::TlsCertificate(certificate(c, &p.field("tls_certificate"))?)
        }
        Some(secret::Type::ValidationContext(v)) => {
            model::SecretKind::ValidationContext(validation(v, &p.field("validation_context"))?)
        }
        // The allowlist refused the others.
        _ => {
            return Err(ConfigError::unsupported_because(
                p,
                "only tls_certificate and validation_context secrets are supported by redvoy",
            ))
        }
    };
    Ok(model::Secret {
        name: name.clone(),
        kind,
        watched_directories,
    })
}

/// A secret's `watched_directory`, else the directories of the files it names.
fn watched_directories(kind: Option<&secret::Type>) -> Vec<String> {
    let (explicit, files): (Option<&str>, Vec<&DataSource>) = match kind {
        Some(secret::Type::TlsCertificate(c)) => (
            c.watched_directory.as_ref().map(|w| w.path.as_str()),
            c.certificate_chain
                .iter()
                .chain(c.private_key.iter())
                .collect(),
        ),
        Some(secret::Type::ValidationContext(v)) => (
            v.watched_directory.as_ref().map(|w| w.path.as_str()),
            v.trusted_ca.iter().collect(),
        ),
        _ => (None, Vec::new()),
    };
    if let Some(dir) = explicit.filter(|d| !d.is_empty()) {
        return vec![dir.to_owned()];
    }
    let mut dirs: Vec<String> = files
        .into_iter()
        .filter_map(|d| match &d.specifier {
            Some(Specifier::Filename(f)) => std::path::Path::new(f)
                .parent()
                .map(|p| p.display().to_string()),
            _ => None,
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

fn san_matcher(m: &SubjectAltNameMatcher, p: &FieldPath) -> Result<model::SanMatcher, ConfigError> {
    let SubjectAltNameMatcher {
        san_type,
        matcher,
        // Refused by the allowlist.
        oid: _,
    } = m;
    let kind = match SanType::try_from(*san_type) {
        Ok(SanType::Email) => model::SanKind::Email,
        Ok(SanType::Dns) => model::SanKind::Dns,
        Ok(SanType::Uri) => model::SanKind::Uri,
        Ok(SanType::IpAddress) => model::SanKind::IpAddress,
        // Envoy's proto constraint: defined and not UNSPECIFIED.
        _ => {
            return Err(ConfigError::invalid(
                p.field("san_type"),
                "value must be one of the defined enum values other than SAN_TYPE_UNSPECIFIED",
            ))
        }
    };
    let Some(StringMatcher {
        match_pattern,
        ignore_case,
    }) = matcher
    else {
        return Err(ConfigError::invalid(
            p.field("matcher"),
            "value is required",
        ));
    };
    let matcher = name_matcher(
        &StringMatcher {
            match_pattern: match_pattern.clone(),
            ignore_case: *ignore_case,
        },
        &p.field("matcher"),
    )?;
    Ok(model::SanMatcher { kind, matcher })
}

fn name_matcher(m: &StringMatcher, p: &FieldPath) -> Result<model::NameMatcher, ConfigError> {
    let StringMatcher {
        match_pattern,
        ignore_case,
    } = m;
    let pattern = match match_pattern {
        Some(MatchPattern::Exact(s)) => model::NamePattern::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => model::NamePattern::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => model::NamePattern::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => model::NamePattern::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(_)) => {
            return Err(ConfigError::unsupported_because(
                p.field("safe_regex"),
                "regular expressions for subject alt names are not supported by redvoy",
            ))
        }
        _ => {
            return Err(ConfigError::unsupported_because(
                p,
                "this string matcher is not supported for subject alt names",
            ))
        }
    };
    Ok(model::NameMatcher {
        pattern,
        ignore_case: *ignore_case,
    })
}

fn data_source(
    d: Option<&DataSource>,
    p: &FieldPath,
) -> Result<Option<model::DataSource>, ConfigError> {
    let Some(DataSource {
        specifier,
        // Reloading on change (watched_directory) is refused by the allowlist.
        watched_directory: _,
    }) = d
    else {
        return Ok(None);
    };
    Ok(match specifier {
        // Envoy's proto constraint: a DataSource names its source (an empty `trusted_ca: {}`
        // must not turn verification off).
        None => {
            return Err(ConfigError::invalid(
                p,
                "DataSourceValidationError.Specifier: value is required",
            ))
        }
        Some(Specifier::Filename(f)) => Some(model::DataSource::Filename(f.clone())),
        Some(Specifier::InlineBytes(b)) => Some(model::DataSource::Inline(b.clone())),
        Some(Specifier::InlineString(s)) => Some(model::DataSource::Inline(s.as_bytes().to_vec())),
        Some(Specifier::EnvironmentVariable(name)) => match std::env::var(name) {
            Ok(v) => Some(model::DataSource::Inline(v.into_bytes())),
            Err(_) => {
                return Err(ConfigError::invalid(
                    p.field("environment_variable"),
                    format!("environment variable {name} does not exist"),
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::model::{DataSource, NameMatcher, NamePattern};

    #[test]
    fn dns_sans_match_as_envoy_matches_them() {
        let exact = |s: &str| NameMatcher {
            pattern: NamePattern::Exact(s.to_owned()),
            ignore_case: false,
        };
        assert!(exact("redis.example.com").matches_dns_san("REDIS.example.com"));
        assert!(exact("a.example.com").matches_dns_san("*.example.com"));
        assert!(!exact("a.b.example.com").matches_dns_san("*.example.com"));
        assert!(!exact("example.com").matches_dns_san("*.example.com"));
        assert!(!exact("a.example.com").matches_dns_san("*example.com"));
        let prefix = NameMatcher {
            pattern: NamePattern::Prefix("redis.".to_owned()),
            ignore_case: false,
        };
        assert!(prefix.matches_dns_san("redis.example.com"));
    }

    #[test]
    fn inline_data_is_never_printed() {
        let key = DataSource::Inline(b"-----BEGIN PRIVATE KEY-----".to_vec());
        assert_eq!(format!("{key:?}"), "Inline([redacted, 27 bytes])");
    }
}
