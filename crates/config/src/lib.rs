//! Envoy v3 configuration → validated domain types.
//!
//! Owns: the descriptor pool (envoy-types' set plus the TypedStruct protos in `proto/`), YAML and
//! JSON bootstrap loading through `prost-reflect`, `--config-yaml` merging, `Any`/`Struct`/
//! `TypedStruct` unpacking, refusal of everything redvoy does not implement with the field
//! path in the error, and rendering `/config_dump` as Envoy prints it ([`render_config_dump`]).
//! Protobuf types never leave this crate (the model keeps the source proto as an opaque
//! [`model::BootstrapSource`]). Must not depend on the data path; of the stats crate it uses
//! only the plain `stats_config` types ([`model::StatsConfig`] and its parts).
//!
//! Pipeline of [`load_bootstrap`]:
//! 1. `parse`: the file (format by name, as Envoy picks it) and `--config-yaml` become
//!    `DynamicMessage`s of `envoy.config.bootstrap.v3.Bootstrap`; the second is merged over the
//!    first with protobuf `MergeFrom` semantics. In YAML, Struct numbers follow Envoy's YAML
//!    loader (only int32 integers stay numbers).
//! 2. `supported`: every set field is checked against an allowlist; `typed_config`s are looked
//!    up by type URL and unwrapped (TypedStruct, Struct) into native `Any`s.
//! 3. `convert`: the typed envoy-types message becomes [`model`] types, with Envoy's defaults
//!    and load-time checks.

#![forbid(unsafe_code)]

mod convert;
mod descriptors;
mod dump;
mod error;
pub mod model;
mod numfmt;
mod parse;
mod resource;
mod supported;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost_reflect::DynamicMessage;

pub use convert::DEFAULT_TAG_NAMES;
pub use descriptors::ENVOY_TYPES_VERSION;
pub use dump::{
    render_bootstrap_json, render_config_dump, render_config_dump_dynamic,
    render_config_dump_with_hosts, DumpError, DumpHealth, DumpHost, DumpOptions, DumpedResource,
    DynamicClusterDump, DynamicDump, DynamicListenerDump, FailedDump, ENVOY_COMPAT_VERSION,
    SKIPPED_PREFIX,
};
pub use error::ConfigError;

/// The descriptor pool every conversion uses: Envoy's v3 API (envoy-types) plus the
/// TypedStruct protos. For code that handles xDS messages reflectively (a control plane
/// patching resources).
pub fn descriptor_pool() -> Result<&'static prost_reflect::DescriptorPool, ConfigError> {
    descriptors::pool()
}

/// A message as JSON for a debug view, with Envoy's admin redaction: fields marked
/// `(udpa.annotations.sensitive)` (passwords, private keys, inside `Any`s too) read
/// `[redacted]`, as in Envoy's `/config_dump`.
pub fn redacted_json(msg: &DynamicMessage) -> serde_json::Value {
    let mut copy = msg.clone();
    dump::redact_message(&mut copy);
    copy.serialize_with_options(serde_json::value::Serializer, &dump::json_options())
        .unwrap_or(serde_json::Value::Null)
}

/// A JSON value → the message named `full_name`, as a control plane converts a patch value
/// (`google.protobuf.Struct`) into the proto it stands for. `strict` false drops fields this
/// build does not know (protojson's `DiscardUnknown`, what istiod does); `origin` names the
/// input in errors.
pub fn message_from_json(
    full_name: &str,
    value: &serde_json::Value,
    strict: bool,
    origin: &str,
) -> Result<DynamicMessage, ConfigError> {
    let desc = descriptors::message(full_name)?;
    parse::message_from_json(value, &desc, strict, origin)
}
pub use resource::{
    decode_cluster, decode_cluster_load_assignment, decode_listener, decode_secret,
    listener_address, read_discovery_file, DiscoveryFile, DynamicOptions, RawResource,
    ResourceError,
};

/// Protobuf types used inside the crate's opaque handles.
pub(crate) mod pb {
    pub(crate) use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
}

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// Where the bootstrap comes from, as Envoy's command line gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `-c/--config-path`. The format follows the file name as in Envoy: `.yaml`/`.yml` YAML,
    /// `.pb` binary proto, `.pb_text` text proto, anything else JSON.
    pub config_path: Option<PathBuf>,
    /// `--config-yaml`, merged over the file (or used alone).
    pub config_yaml: Option<String>,
    /// `--service-node`: overrides `node.id`.
    pub service_node: Option<String>,
    /// `--service-cluster`: overrides `node.cluster`.
    pub service_cluster: Option<String>,
    /// `--service-zone`: overrides `node.locality.zone`.
    pub service_zone: Option<String>,
}

/// Loads, checks and converts the bootstrap.
pub fn load_bootstrap(opts: &LoadOptions) -> Result<model::Bootstrap, ConfigError> {
    let (proto, source) = load_proto(opts)?;
    convert::bootstrap(proto, source, opts)
}

/// `--mode validate`: everything [`load_bootstrap`] checks, nothing started.
pub fn validate_only(opts: &LoadOptions) -> Result<(), ConfigError> {
    load_bootstrap(opts).map(|_| ())
}

/// Steps 1 and 2: the merged, checked bootstrap as the typed envoy-types message, and the
/// merged bootstrap as written (what Envoy's `/config_dump` shows).
fn load_proto(opts: &LoadOptions) -> Result<(Bootstrap, model::BootstrapSource), ConfigError> {
    let desc = descriptors::message(BOOTSTRAP)?;
    // Empty values count as absent, as in Envoy.
    let path = opts
        .config_path
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty());
    let overlay = opts.config_yaml.as_deref().filter(|y| !y.trim().is_empty());
    let mut msg = match (path, overlay) {
        (None, None) => return Err(ConfigError::NoConfig),
        (Some(path), _) => parse::load_file(path, &desc)?,
        (None, Some(_)) => DynamicMessage::new(desc.clone()),
    };
    if let Some(yaml) = overlay {
        let overlay = parse::parse_config_yaml(yaml, &desc)?;
        parse::merge(&mut msg, &overlay)?;
    }
    checked_proto(msg)
}

/// A bootstrap given as binary proto bytes (what a `-c FILE.pb` holds), decoded, checked and
/// converted as [`load_bootstrap`] does with the file (the fuzzer's way in).
pub fn load_bootstrap_pb(bytes: &[u8]) -> Result<model::Bootstrap, ConfigError> {
    let desc = descriptors::message(BOOTSTRAP)?;
    let msg = parse::decode_binary(bytes, &desc, parse::Origin::File(Path::new("<bytes>.pb")))?;
    let (proto, source) = checked_proto(msg)?;
    convert::bootstrap(proto, source, &LoadOptions::default())
}

/// Step 2: the merged bootstrap checked against what redvoy supports, as the typed message and
/// as written.
fn checked_proto(
    mut msg: DynamicMessage,
) -> Result<(Bootstrap, model::BootstrapSource), ConfigError> {
    let transcode = |m: &DynamicMessage| {
        m.transcode_to::<Bootstrap>().map_err(|e| {
            ConfigError::Descriptors(format!("{BOOTSTRAP} does not match envoy-types: {e}"))
        })
    };
    // Before the check, which rewrites TypedStructs into native `Any`s: Envoy dumps them as
    // written.
    let source = model::BootstrapSource(Arc::new(transcode(&msg)?));
    supported::check(&mut msg)?;
    Ok((transcode(&msg)?, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article_message() -> DynamicMessage {
        let desc = descriptors::message(BOOTSTRAP).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/good/article.yaml");
        parse::load_file(&path, &desc).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("redvoy-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn load_path(path: PathBuf) -> Result<model::Bootstrap, ConfigError> {
        load_bootstrap(&LoadOptions {
            config_path: Some(path),
            ..LoadOptions::default()
        })
    }

    /// `.pb` and `.pb_text` bootstraps give the same model as the YAML they were made from.
    #[test]
    fn binary_and_text_proto_files() {
        use prost::Message;
        let msg = article_message();
        let source = model::BootstrapSource(Arc::new(msg.transcode_to().unwrap()));
        let from_yaml =
            convert::bootstrap(msg.transcode_to().unwrap(), source, &LoadOptions::default())
                .unwrap();

        let pb = temp_file("article.pb", &msg.encode_to_vec());
        assert_eq!(load_path(pb).unwrap(), from_yaml);

        let text = msg.to_text_format();
        assert!(
            text.contains(
                "[type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy]"
            ),
            "{text}"
        );
        let pb_text = temp_file("article.pb_text", text.as_bytes());
        assert_eq!(load_path(pb_text).unwrap(), from_yaml);

        // A binary file with a field this build does not know is refused, as in Envoy.
        let mut bytes = msg.encode_to_vec();
        bytes.extend_from_slice(&[0xf8, 0x3f, 0x01]); // field 1023, varint 1
        let e = load_path(temp_file("unknown.pb", &bytes))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field number 1023"), "{e}");
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let yaml = "#".repeat(parse::MAX_CONFIG_BYTES + 1);
        let e = load_bootstrap(&LoadOptions {
            config_yaml: Some(yaml),
            ..LoadOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("larger than redvoy's limit"), "{e}");
    }

    #[test]
    fn descriptor_set_is_stripped_and_complete() {
        let pool = descriptors::pool().unwrap();
        for name in [
            BOOTSTRAP,
            supported::REDIS_PROXY,
            supported::REDIS_PROTOCOL_OPTIONS,
            "xds.type.v3.TypedStruct",
            "udpa.type.v1.TypedStruct",
        ] {
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
        // Comments stripped at build time keep the embedded set small (~0.6 MiB, not 3.3).
        const { assert!(descriptors::DESCRIPTOR_SET_LEN < 2 << 20) };
    }
}
