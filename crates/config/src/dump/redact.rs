//! Envoy's `MessageUtil::redact`, applied to every admin dump: fields marked
//! `(udpa.annotations.sensitive)` (and everything under them) lose their value: strings and
//! bytes become `[redacted]`, other scalars are cleared. `Any`s are unpacked and repacked;
//! TypedStructs are converted to their message through JSON and back, which also makes their
//! JSON canonical (`2.5s` comes back as `2.500s`, `prefer_master` as `PREFER_MASTER`).

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MapKey,
    ReflectMessage, Value,
};

use super::json;

const REDACTED: &str = "[redacted]";
const SENSITIVE: &str = "udpa.annotations.sensitive";
const ANY: &str = "google.protobuf.Any";
const STRUCT: &str = "google.protobuf.Struct";
const TYPED_STRUCTS: &[&str] = &["xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"];
/// Nesting beyond which the walk stops (proto decoding limits recursion to 100 already).
const MAX_DEPTH: usize = 200;

pub(crate) fn redact(msg: &mut DynamicMessage) {
    let ext = msg
        .descriptor()
        .parent_pool()
        .get_extension_by_name(SENSITIVE);
    walk(msg, false, ext.as_ref(), 0);
}

fn is_sensitive(field: &FieldDescriptor, ext: Option<&ExtensionDescriptor>) -> bool {
    let Some(ext) = ext else { return false };
    let options = field.options();
    options.has_extension(ext) && options.get_extension(ext).as_bool() == Some(true)
}

fn walk(
    msg: &mut DynamicMessage,
    ancestor_sensitive: bool,
    ext: Option<&ExtensionDescriptor>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let full_name = msg.descriptor().full_name().to_owned();
    if full_name == ANY {
        redact_any(msg, ancestor_sensitive, ext, depth);
        return;
    }
    if TYPED_STRUCTS.contains(&full_name.as_str()) {
        redact_typed_struct(msg, ancestor_sensitive, ext, depth);
        return;
    }
    for field in msg.descriptor().fields() {
        let sensitive = ancestor_sensitive || is_sensitive(&field, ext);
        if field.is_map() {
            let value_kind = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                _ => continue,
            };
            let Value::Map(entries) = msg.get_field_mut(&field) else {
                continue;
            };
            let keys: Vec<MapKey> = entries.keys().cloned().collect();
            for key in keys {
                if let Some(v) = entries.get_mut(&key) {
                    match v {
                        Value::Message(m) => walk(m, sensitive, ext, depth + 1),
                        _ if sensitive => redact_scalar(v, &value_kind),
                        _ => {}
                    }
                }
            }
        } else if let Kind::Message(_) = field.kind() {
            if field.is_list() {
                if let Value::List(items) = msg.get_field_mut(&field) {
                    for item in items {
                        if let Value::Message(m) = item {
                            walk(m, sensitive, ext, depth + 1);
                        }
                    }
                }
            } else if msg.has_field(&field) {
                if let Value::Message(m) = msg.get_field_mut(&field) {
                    walk(m, sensitive, ext, depth + 1);
                }
            }
        } else if sensitive {
            let kind = field.kind();
            if matches!(kind, Kind::String | Kind::Bytes) {
                if field.is_list() {
                    if let Value::List(items) = msg.get_field_mut(&field) {
                        for item in items {
                            redact_scalar(item, &kind);
                        }
                    }
                } else if msg.has_field(&field) {
                    redact_scalar(msg.get_field_mut(&field), &kind);
                }
            } else {
                msg.clear_field(&field);
            }
        }
    }
}

fn redact_scalar(v: &mut Value, kind: &Kind) {
    *v = match kind {
        Kind::String => Value::String(REDACTED.to_owned()),
        Kind::Bytes => Value::Bytes(REDACTED.as_bytes().to_vec().into()),
        // Other map values: Envoy clears them, i.e. back to the default.
        other => Value::default_value(other),
    };
}

fn type_url_of(msg: &DynamicMessage) -> String {
    msg.get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Unknown types are left alone, as in Envoy.
fn redact_any(
    any: &mut DynamicMessage,
    sensitive: bool,
    ext: Option<&ExtensionDescriptor>,
    depth: usize,
) {
    let type_url = type_url_of(any);
    let name = type_url
        .rsplit_once('/')
        .map_or(type_url.as_str(), |(_, n)| n);
    let Some(desc) = any.descriptor().parent_pool().get_message_by_name(name) else {
        opaque(any, &type_url);
        return;
    };
    let bytes = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let Ok(mut inner) = DynamicMessage::decode(desc, bytes) else {
        return;
    };
    walk(&mut inner, sensitive, ext, depth + 1);
    any.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
}

/// An `Any` of a type this build does not know (Istio's `stats.PluginConfig` in a dynamic
/// listener) cannot be printed as JSON; Envoy then answers the whole `/config_dump` with a
/// plain-text error, which breaks `istioctl`. redvoy shows it as an empty
/// `udpa.type.v1.TypedStruct` naming the type instead.
fn opaque(any: &mut DynamicMessage, type_url: &str) {
    let pool = any.descriptor().parent_pool().clone();
    let Some(desc) = pool.get_message_by_name(TYPED_STRUCTS[1]) else {
        return;
    };
    let mut ts = DynamicMessage::new(desc);
    ts.set_field_by_name("type_url", Value::String(type_url.to_owned()));
    any.set_field_by_name(
        "type_url",
        Value::String(format!("type.googleapis.com/{}", TYPED_STRUCTS[1])),
    );
    any.set_field_by_name("value", Value::Bytes(ts.encode_to_vec().into()));
}

/// Envoy reifies a TypedStruct (Struct → JSON → message), redacts, and writes it back
/// (message → JSON with proto field names → Struct). Left alone when the type is unknown or
/// the Struct does not convert.
fn redact_typed_struct(
    ts: &mut DynamicMessage,
    sensitive: bool,
    ext: Option<&ExtensionDescriptor>,
    depth: usize,
) {
    let type_url = type_url_of(ts);
    let name = type_url
        .rsplit_once('/')
        .map_or(type_url.as_str(), |(_, n)| n);
    let pool = ts.descriptor().parent_pool().clone();
    let (Some(desc), Some(struct_desc)) = (
        pool.get_message_by_name(name),
        pool.get_message_by_name(STRUCT),
    ) else {
        return;
    };
    let fields = match ts
        .get_field_by_name("value")
        .and_then(|v| v.as_message().cloned())
    {
        Some(fields) => fields,
        None => DynamicMessage::new(struct_desc.clone()),
    };
    let Ok(mut as_json) = serde_json::to_value(&fields) else {
        return;
    };
    crate::parse::normalize(&mut as_json, &desc);
    let Ok(mut typed) =
        DynamicMessage::deserialize_with_options(desc, as_json, &DeserializeOptions::new())
    else {
        return;
    };
    walk(&mut typed, sensitive, ext, depth + 1);
    let Ok(back) = typed.serialize_with_options(serde_json::value::Serializer, &json::options())
    else {
        return;
    };
    let Ok(back) = DynamicMessage::deserialize(struct_desc, back) else {
        return;
    };
    ts.set_field_by_name("value", Value::Message(back));
}
