//! Small accessors for reflective (`prost_reflect::DynamicMessage`) Envoy resources, shared by
//! generation and patching.

use prost_reflect::{DynamicMessage, Value};

/// A string field (empty when unset).
pub fn str_field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A message field, `None` when unset.
pub fn message_field(msg: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !msg.has_field_by_name(name) {
        return None;
    }
    msg.get_field_by_name(name)
        .and_then(|v| v.as_message().cloned())
}

/// The messages of a repeated field.
pub fn list_of(msg: &DynamicMessage, name: &str) -> Vec<DynamicMessage> {
    msg.get_field_by_name(name)
        .and_then(|v| {
            v.as_list().map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_message().cloned())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Sets a repeated field (clears it when `items` is empty, which proto3 cannot tell apart).
pub fn set_list(msg: &mut DynamicMessage, name: &str, items: Vec<DynamicMessage>) {
    if items.is_empty() {
        msg.clear_field_by_name(name);
    } else {
        msg.set_field_by_name(
            name,
            Value::List(items.into_iter().map(Value::Message).collect()),
        );
    }
}
