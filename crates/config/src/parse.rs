//! Text → `DynamicMessage`: the file formats Envoy reads, `--config-yaml`, and the merge of the
//! two. Everything here is schema-level (unknown fields, types, enum names); what redvoy
//! supports is decided later, on the merged message.

use std::path::Path;

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage};

use crate::error::{FieldPath, ROOT_PATH};
use crate::ConfigError;

/// Largest config file or `--config-yaml` accepted. A Redis bootstrap is kilobytes; 5,000
/// clusters plus 5,000 listeners is ~7 MiB. Larger input is refused before parsing.
pub(crate) const MAX_CONFIG_BYTES: usize = 64 << 20;
/// YAML parser budgets, sized so that any document within `MAX_CONFIG_BYTES` fits (every
/// node and event costs at least one byte of input) while still bounding alias expansion.
const YAML_MAX_EVENTS: usize = 2 * MAX_CONFIG_BYTES;
const YAML_MAX_NODES: usize = MAX_CONFIG_BYTES;

/// Where a piece of config text came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    File(&'a Path),
    ConfigYaml,
    /// An xDS resource (`listener`, `cluster`, `ClusterLoadAssignment`).
    Resource(&'a str),
}

impl Origin<'_> {
    fn describe(self) -> String {
        match self {
            Origin::File(p) => format!("config file {}", p.display()),
            Origin::ConfigYaml => "--config-yaml".to_owned(),
            Origin::Resource(kind) => kind.to_owned(),
        }
    }
}

/// The formats Envoy picks by file name (case-insensitively); anything else is read as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
    /// Not named `.json`, but Envoy reads it as JSON all the same.
    OtherAsJson,
    ProtoBinary,
    ProtoText,
}

fn format_of(path: &Path) -> Format {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".pb") {
        Format::ProtoBinary
    } else if name.ends_with(".pb_text") {
        Format::ProtoText
    } else if name.ends_with(".yaml") || name.ends_with(".yml") {
        Format::Yaml
    } else if name.ends_with(".json") {
        Format::Json
    } else {
        Format::OtherAsJson
    }
}

/// A binary proto (a `.pb` file's contents) as a message of type `desc`; fields the message
/// does not define are refused, as Envoy refuses them.
pub(crate) fn decode_binary(
    bytes: &[u8],
    desc: &MessageDescriptor,
    origin: Origin<'_>,
) -> Result<DynamicMessage, ConfigError> {
    check_size(origin, bytes.len())?;
    let msg = DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|e| parse_error(origin, ROOT_PATH, e.to_string()))?;
    reject_unknown_wire_fields(&msg, &FieldPath::root(), origin)?;
    Ok(msg)
}

/// Reads and parses a bootstrap file as a message of type `desc`.
pub(crate) fn load_file(
    path: &Path,
    desc: &MessageDescriptor,
) -> Result<DynamicMessage, ConfigError> {
    let origin = Origin::File(path);
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    check_size(origin, bytes.len())?;
    match format_of(path) {
        Format::ProtoBinary => decode_binary(&bytes, desc, origin),
        Format::ProtoText => DynamicMessage::parse_text_format(desc.clone(), utf8(&bytes, origin)?)
            .map_err(|e| parse_error(origin, ROOT_PATH, e.to_string())),
        Format::Yaml => {
            let mut msg = parse_yaml(utf8(&bytes, origin)?, desc, origin)?;
            yaml_struct_numbers(&mut msg, 0);
            Ok(msg)
        }
        Format::Json => parse_json(utf8(&bytes, origin)?, desc, origin),
        Format::OtherAsJson => {
            parse_json(utf8(&bytes, origin)?, desc, origin).map_err(|e| match e {
                // Envoy's rule surprises people who name a YAML file `envoy.conf`; say why.
                ConfigError::Parse {
                    origin,
                    path,
                    message,
                } => ConfigError::Parse {
                    origin,
                    path,
                    message: format!(
                        "{message} (read as JSON because the file name does not end in .yaml, \
                         .yml, .pb or .pb_text)"
                    ),
                },
                other => other,
            })
        }
    }
}

/// Parses `--config-yaml` (YAML, hence also JSON).
pub(crate) fn parse_config_yaml(
    text: &str,
    desc: &MessageDescriptor,
) -> Result<DynamicMessage, ConfigError> {
    check_size(Origin::ConfigYaml, text.len())?;
    let mut msg = parse_yaml(text, desc, Origin::ConfigYaml)?;
    yaml_struct_numbers(&mut msg, 0);
    Ok(msg)
}

/// Nesting beyond which [`yaml_struct_numbers`] stops looking (the parsers' own recursion
/// limits are lower; this only bounds the walk).
const MAX_WALK_DEPTH: usize = 256;
const VALUE: &str = "google.protobuf.Value";
const ANY: &str = "google.protobuf.Any";

/// Envoy's YAML loader fills `google.protobuf.Struct` values its own way: an integer that fits
/// in an int32 becomes a number, any other number (a fraction, a larger integer) a *string*
/// (`envoy/source/common/protobuf/yaml_utility.cc`). That shows in `/config_dump` (node
/// metadata `0.5` is dumped as `"0.5"`) and in runtime values, so YAML input is rewritten the
/// same way. The original spelling is gone by now: `1.50` becomes `"1.5"`, where Envoy keeps
/// `"1.50"`. JSON input keeps its numbers, as in Envoy.
fn yaml_struct_numbers(msg: &mut DynamicMessage, depth: usize) -> bool {
    if depth > MAX_WALK_DEPTH {
        return false;
    }
    let full_name = msg.descriptor().full_name().to_owned();
    if full_name == VALUE {
        if let Some(n) = msg
            .get_field_by_name("number_value")
            .filter(|_| msg.has_field_by_name("number_value"))
            .and_then(|v| v.as_f64())
        {
            if !(n.fract() == 0.0 && n >= f64::from(i32::MIN) && n <= f64::from(i32::MAX)) {
                msg.set_field_by_name(
                    "string_value",
                    prost_reflect::Value::String(yaml_number_text(n)),
                );
                return true;
            }
        }
    }
    if full_name == ANY {
        return any_struct_numbers(msg, depth);
    }
    let mut changed = false;
    let fields: Vec<_> = msg.fields().map(|(f, _)| f).collect();
    for field in fields {
        match msg.get_field_mut(&field) {
            prost_reflect::Value::Message(m) => changed |= yaml_struct_numbers(m, depth + 1),
            prost_reflect::Value::List(items) => {
                for item in items {
                    if let prost_reflect::Value::Message(m) = item {
                        changed |= yaml_struct_numbers(m, depth + 1);
                    }
                }
            }
            prost_reflect::Value::Map(entries) => {
                for v in entries.values_mut() {
                    if let prost_reflect::Value::Message(m) = v {
                        changed |= yaml_struct_numbers(m, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// An `Any` carries its message as bytes; Structs inside (a TypedStruct's value) are fixed by
/// decoding, rewriting and re-encoding, only when something changed.
fn any_struct_numbers(any: &mut DynamicMessage, depth: usize) -> bool {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let Some(desc) = any
        .descriptor()
        .parent_pool()
        .get_message_by_name(type_name_of(&type_url))
    else {
        return false;
    };
    let bytes = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let Ok(mut inner) = DynamicMessage::decode(desc, bytes) else {
        return false;
    };
    if !yaml_struct_numbers(&mut inner, depth + 1) {
        return false;
    }
    any.set_field_by_name(
        "value",
        prost_reflect::Value::Bytes(inner.encode_to_vec().into()),
    );
    true
}

/// How a YAML number that Envoy keeps as a string reads once parsed.
fn yaml_number_text(n: f64) -> String {
    // Integral values print without a fraction, as they were written.
    const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() < EXACT_INTEGER {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

/// Envoy's `--config-yaml` semantics: protobuf `MergeFrom` of the override into the file's
/// message (set scalars replace, repeated fields append, messages merge recursively, map
/// entries replace). Decoding the override's wire form into the base gives exactly that.
pub(crate) fn merge(
    base: &mut DynamicMessage,
    overlay: &DynamicMessage,
) -> Result<(), ConfigError> {
    base.merge(overlay.encode_to_vec().as_slice())
        .map_err(|e| parse_error(Origin::ConfigYaml, ROOT_PATH, format!("cannot merge: {e}")))
}

fn utf8<'a>(bytes: &'a [u8], origin: Origin<'_>) -> Result<&'a str, ConfigError> {
    std::str::from_utf8(bytes)
        .map_err(|e| parse_error(origin, ROOT_PATH, format!("not UTF-8: {e}")))
}

fn check_size(origin: Origin<'_>, len: usize) -> Result<(), ConfigError> {
    if len > MAX_CONFIG_BYTES {
        return Err(parse_error(
            origin,
            ROOT_PATH,
            format!("{len} bytes is larger than redvoy's limit of {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn parse_error(origin: Origin<'_>, path: &str, message: String) -> ConfigError {
    ConfigError::Parse {
        origin: origin.describe(),
        path: with_unknown_field(path, &message),
        message,
    }
}

/// The deserializer reports an unknown field at the enclosing message; name the field itself
/// in the path, so that every error's path ends at the offending field.
pub(crate) fn with_unknown_field(path: &str, message: &str) -> String {
    const MARKER: &str = "unrecognized field name '";
    let field = message
        .find(MARKER)
        .map(|i| &message[i + MARKER.len()..])
        .and_then(|rest| rest.split_once('\'').map(|(name, _)| name));
    match field {
        Some(name) if path == ROOT_PATH || path.is_empty() => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None => path.to_owned(),
    }
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    // serde_path_to_error renders the root as ".".
    if s.is_empty() || s == "." {
        ROOT_PATH.to_owned()
    } else {
        s
    }
}

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = YAML_MAX_EVENTS;
    budget.max_nodes = YAML_MAX_NODES;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // The error message carries line and column; a multi-line snippet does not fit in one
    // log line or an xDS NACK.
    options.with_snippet = false;
    options
}

/// YAML straight into the message (streaming, so errors carry line and column), with a retry
/// through a JSON value whose enum names were upper-cased: Envoy parses enums
/// case-insensitively (its own `examples/redis/envoy.yaml` says `type: strict_dns`).
fn parse_yaml(
    text: &str,
    desc: &MessageDescriptor,
    origin: Origin<'_>,
) -> Result<DynamicMessage, ConfigError> {
    let mut failed_at = String::new();
    let direct =
        serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
            let mut track = serde_path_to_error::Track::new();
            let result = DynamicMessage::deserialize(
                desc.clone(),
                serde_path_to_error::Deserializer::new(de, &mut track),
            );
            if result.is_err() {
                failed_at = path_string(&track.path());
            }
            result
        });
    let first_error = match direct {
        Ok(msg) => return Ok(msg),
        Err(e) => e,
    };
    let first_path = if failed_at.is_empty() {
        ROOT_PATH.to_owned()
    } else {
        failed_at
    };
    let first = parse_error(origin, &first_path, yaml_error_message(&first_error));
    // Syntax errors cannot be helped by the retry.
    let Ok(mut value) =
        serde_saphyr::from_str_with_options::<serde_json::Value>(text, yaml_options())
    else {
        return Err(first);
    };
    retry_normalized(&mut value, desc, origin, first)
}

fn yaml_error_message(e: &serde_saphyr::Error) -> String {
    // saphyr's Display already starts with "line L column C: " when it knows the position.
    e.to_string().trim().to_owned()
}

fn parse_json(
    text: &str,
    desc: &MessageDescriptor,
    origin: Origin<'_>,
) -> Result<DynamicMessage, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let direct = DynamicMessage::deserialize(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
    )
    .and_then(|msg| de.end().map(|()| msg));
    let first_error = match direct {
        Ok(msg) => return Ok(msg),
        Err(e) => e,
    };
    let first = parse_error(origin, &path_string(&track.path()), first_error.to_string());
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Err(first);
    };
    retry_normalized(&mut value, desc, origin, first)
}

/// Second attempt on a parsed value after [`normalize`]. If it fails too, the error of the
/// direct attempt is reported (it has a position), unless the retry got further.
fn retry_normalized(
    value: &mut serde_json::Value,
    desc: &MessageDescriptor,
    origin: Origin<'_>,
    first: ConfigError,
) -> Result<DynamicMessage, ConfigError> {
    if !normalize(value, desc) {
        return Err(first);
    }
    let mut track = serde_path_to_error::Track::new();
    let value = std::mem::take(value);
    match DynamicMessage::deserialize(
        desc.clone(),
        serde_path_to_error::Deserializer::new(value, &mut track),
    ) {
        Ok(msg) => Ok(msg),
        Err(e) => {
            let path = path_string(&track.path());
            if first.path() == Some(path.as_str()) {
                Err(first)
            } else {
                Err(parse_error(origin, &path, e.to_string()))
            }
        }
    }
}

/// Rewrites, in place, what Envoy's parser accepts and prost-reflect's does not: enum names in
/// another case, and numbers or booleans where a string is expected (YAML `prefix: 123`; the
/// streaming path reads those as strings already). Returns whether anything changed.
pub(crate) fn normalize(value: &mut serde_json::Value, desc: &MessageDescriptor) -> bool {
    let serde_json::Value::Object(map) = value else {
        return false;
    };
    match desc.full_name() {
        "google.protobuf.Any" => {
            let Some(type_name) = map.get("@type").and_then(|t| t.as_str()).map(type_name_of)
            else {
                return false;
            };
            let Some(inner) = desc.parent_pool().get_message_by_name(type_name) else {
                return false;
            };
            if has_special_json(inner.full_name()) {
                return map.get_mut("value").is_some_and(|v| normalize(v, &inner));
            }
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                if key != "@type" {
                    changed |= normalize_field(&inner, key, v);
                }
            }
            changed
        }
        name if has_special_json(name) => false,
        _ => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                changed |= normalize_field(desc, key, v);
            }
            changed
        }
    }
}

fn normalize_field(desc: &MessageDescriptor, key: &str, value: &mut serde_json::Value) -> bool {
    let Some(field) = desc
        .get_field_by_name(key)
        .or_else(|| desc.get_field_by_json_name(key))
    else {
        return false;
    };
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else {
            return false;
        };
        let value_kind = entry.map_entry_value_field().kind();
        let serde_json::Value::Object(entries) = value else {
            return false;
        };
        let mut changed = false;
        for v in entries.values_mut() {
            changed |= normalize_value(&value_kind, v);
        }
        changed
    } else if field.is_list() {
        let serde_json::Value::Array(items) = value else {
            return false;
        };
        let mut changed = false;
        for v in items {
            changed |= normalize_value(&kind, v);
        }
        changed
    } else {
        normalize_value(&kind, value)
    }
}

fn normalize_value(kind: &Kind, value: &mut serde_json::Value) -> bool {
    match (kind, &*value) {
        (Kind::Enum(e), serde_json::Value::String(s)) => {
            if e.get_value_by_name(s).is_some() {
                return false;
            }
            let upper = s.to_ascii_uppercase();
            if e.get_value_by_name(&upper).is_none() {
                return false;
            }
            *value = serde_json::Value::String(upper);
            true
        }
        (Kind::String, serde_json::Value::Number(n)) => {
            *value = serde_json::Value::String(n.to_string());
            true
        }
        (Kind::String, serde_json::Value::Bool(b)) => {
            *value = serde_json::Value::String(b.to_string());
            true
        }
        (Kind::Message(m), _) => normalize(value, m),
        _ => false,
    }
}

/// Well-known types whose JSON form is not an object of their fields.
fn has_special_json(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Any"
            | "google.protobuf.Duration"
            | "google.protobuf.Timestamp"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Empty"
            | "google.protobuf.BoolValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
    )
}

/// `type.googleapis.com/a.b.C` → `a.b.C` (protobuf only looks after the last `/`).
pub(crate) fn type_name_of(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, name)| name)
}

/// A binary bootstrap is checked for fields this build does not know, as Envoy's static
/// validation does; text formats already refuse them while parsing.
pub(crate) fn reject_unknown_wire_fields(
    msg: &DynamicMessage,
    path: &FieldPath,
    origin: Origin<'_>,
) -> Result<(), ConfigError> {
    if let Some(unknown) = msg.unknown_fields().next() {
        return Err(parse_error(
            origin,
            path.as_str(),
            format!(
                "unknown field number {} in {}",
                unknown.number(),
                msg.descriptor().full_name()
            ),
        ));
    }
    for (field, value) in msg.fields() {
        let fpath = path.field(field.name());
        match value {
            prost_reflect::Value::Message(m) => reject_unknown_wire_fields(m, &fpath, origin)?,
            prost_reflect::Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let prost_reflect::Value::Message(m) = item {
                        reject_unknown_wire_fields(m, &fpath.index(i), origin)?;
                    }
                }
            }
            prost_reflect::Value::Map(entries) => {
                for v in entries.values() {
                    if let prost_reflect::Value::Message(m) = v {
                        reject_unknown_wire_fields(m, &fpath, origin)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A JSON value (from YAML or JSON) → the message `desc`, as a control plane converts a
/// `google.protobuf.Struct` into the proto it stands for (Istio's `BuildXDSObjectFromStruct`):
/// with `strict` false, fields this build does not know are dropped rather than refused
/// (protojson's `DiscardUnknown`). Every `@type` inside must resolve in the pool. Enum names
/// in another case are accepted, as everywhere else.
pub(crate) fn message_from_json(
    value: &serde_json::Value,
    desc: &MessageDescriptor,
    strict: bool,
    origin: &str,
) -> Result<DynamicMessage, ConfigError> {
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(strict);
    let origin = Origin::Resource(origin);
    let attempt = |value: &serde_json::Value| {
        let mut track = serde_path_to_error::Track::new();
        DynamicMessage::deserialize_with_options(
            desc.clone(),
            serde_path_to_error::Deserializer::new(value, &mut track),
            &options,
        )
        .map_err(|e| parse_error(origin, &path_string(&track.path()), e.to_string()))
    };
    match attempt(value) {
        Ok(msg) => Ok(msg),
        Err(first) => {
            let mut normalized = value.clone();
            if !normalize(&mut normalized, desc) {
                return Err(first);
            }
            attempt(&normalized).map_err(|e| if e.path() == first.path() { first } else { e })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_envoy_file_name_rules() {
        assert_eq!(format_of(Path::new("a.yaml")), Format::Yaml);
        assert_eq!(format_of(Path::new("a.YML")), Format::Yaml);
        assert_eq!(format_of(Path::new("a.json")), Format::Json);
        assert_eq!(format_of(Path::new("envoy.conf")), Format::OtherAsJson);
        assert_eq!(format_of(Path::new("a.pb")), Format::ProtoBinary);
        assert_eq!(format_of(Path::new("a.pb_text")), Format::ProtoText);
    }

    #[test]
    fn type_name_is_after_last_slash() {
        assert_eq!(type_name_of("type.googleapis.com/a.B"), "a.B");
        assert_eq!(type_name_of("example.com/x/a.B"), "a.B");
        assert_eq!(type_name_of("a.B"), "a.B");
    }
}
