//! The one error type of this crate. Every variant that concerns a config field carries the
//! field's path in Envoy's notation (`static_resources.clusters[1].health_checks`), so a user can
//! find the offending line, and the xDS client can put it in a NACK.

use std::path::PathBuf;

/// Why a bootstrap (or, later, an xDS resource) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither a config file nor `--config-yaml` was given (Envoy's wording).
    #[error("At least one of --config-path or --config-yaml should be non-empty")]
    NoConfig,

    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid YAML/JSON/protobuf, or does not fit the proto schema (unknown
    /// field, wrong type, unknown enum value, unknown `@type`). `origin` names the input
    /// (`config file x.yaml`, `--config-yaml`); `path` is the field where it went wrong.
    #[error("{origin}: {path}: {message}")]
    Parse {
        origin: String,
        path: String,
        message: String,
    },

    /// A field or value that Envoy accepts but redvoy does not implement. Refused rather than
    /// ignored: silently dropping it would make redvoy behave unlike Envoy.
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },

    /// A value that Envoy itself rejects (proto constraints and the filter's own checks).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },

    /// The built-in descriptor set failed to load (a build problem, never the user's config).
    #[error("internal descriptor set: {0}")]
    Descriptors(String),
}

/// The path shown for errors about the whole document.
pub(crate) const ROOT_PATH: &str = "<root>";

impl ConfigError {
    /// The field path the error is about, if it concerns one field.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Parse { path, .. }
            | Self::Unsupported { path, .. }
            | Self::Invalid { path, .. } => Some(path),
            Self::NoConfig | Self::Read { .. } | Self::Descriptors(_) => None,
        }
    }

    /// `<path>: not supported by redvoy`.
    pub(crate) fn unsupported(path: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            message: "not supported by redvoy".to_owned(),
        }
    }

    pub(crate) fn unsupported_because(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A protoc-gen-validate rule Envoy checks, in Envoy's words: `Proto constraint validation
    /// failed (RedisProxyValidationError.StatPrefix: value length must be at least 1
    /// characters)`, where `message` is the proto's short name and the field is the last
    /// segment of `path`. Control planes and tooling match on this text in NACKs.
    pub(crate) fn proto_constraint(path: &FieldPath, message: &str, rule: &str) -> Self {
        Self::invalid(
            path,
            format!(
                "Proto constraint validation failed ({message}ValidationError.{}: {rule})",
                path.last_field_camel()
            ),
        )
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Builds field paths: `a.b[0]["key"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    pub(crate) fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key:?}]", self.0))
    }

    /// The last field name in PGV's spelling (`stat_prefix` → `StatPrefix`).
    fn last_field_camel(&self) -> String {
        let last = self.0.rsplit('.').next().unwrap_or_default();
        let name = last.split('[').next().unwrap_or_default();
        name.split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }

    pub(crate) fn as_str(&self) -> &str {
        if self.0.is_empty() {
            ROOT_PATH
        } else {
            &self.0
        }
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&FieldPath> for String {
    fn from(p: &FieldPath) -> String {
        p.as_str().to_owned()
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.as_str().to_owned()
    }
}
