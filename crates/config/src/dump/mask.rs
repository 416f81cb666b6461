//! `?mask=`: protobuf's `FieldMaskUtil` (`FromString`, `GetFieldDescriptors`, `TrimMessage`)
//! and Envoy's `trimResourceMessage` (which also masks inside the one `Any` of a resource).

use std::collections::BTreeMap;

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

const ANY: &str = "google.protobuf.Any";

/// A parsed `?mask=`: comma-separated paths, empty ones dropped (`FieldMaskUtil::FromString`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldMask {
    paths: Vec<String>,
}

impl FieldMask {
    pub(crate) fn parse(s: &str) -> Self {
        Self {
            paths: s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// protobuf's `FieldMask::DebugString()`, as Envoy puts it in an error. Real protobuf
    /// starts it with a marker it randomizes per process (`goo.gle/debugstr  `,
    /// `goo.gle/debugonly   `, …); one of them is used here.
    pub(crate) fn debug_string(&self) -> String {
        let mut out = String::from("goo.gle/debugstr  \n");
        for p in &self.paths {
            out.push_str("paths: \"");
            out.push_str(&c_escape(p));
            out.push_str("\"\n");
        }
        out
    }

    /// `checkFieldMaskAndTrimMessage`: false (message untouched) when a path does not name
    /// fields of the message; an empty mask keeps everything, as Envoy's output shows.
    pub(crate) fn check_and_trim(&self, msg: &mut DynamicMessage) -> bool {
        trim_with(&self.paths, msg)
    }

    /// Envoy's `trimResourceMessage` for one `?resource=` entry: paths starting with the
    /// entry's (non-repeated) `Any` field are applied inside the packed message.
    pub(crate) fn trim_resource(&self, msg: &mut DynamicMessage) -> bool {
        let desc = msg.descriptor();
        let mut outer = Vec::new();
        let mut inner = Vec::new();
        let mut any_field = None;
        for path in &self.paths {
            let (first, rest) = path.split_once('.').unwrap_or((path.as_str(), ""));
            let is_any = desc.get_field_by_name(first).is_some_and(|f| {
                !f.is_list() && matches!(f.kind(), Kind::Message(m) if m.full_name() == ANY)
            });
            if is_any {
                // Envoy supports one Any field per resource (true of every admin dump type).
                any_field.get_or_insert_with(|| first.to_owned());
                outer.push(first.to_owned());
                inner.push(rest.to_owned());
            } else {
                outer.push(path.clone());
            }
        }
        if let Some(name) = any_field {
            if let Some(field) = desc.get_field_by_name(&name) {
                if msg.has_field(&field) {
                    if let Value::Message(any) = msg.get_field_mut(&field) {
                        if !trim_any(&inner, any) {
                            return false;
                        }
                    }
                }
            }
        }
        trim_with(&outer, msg)
    }
}

fn trim_any(paths: &[String], any: &mut DynamicMessage) -> bool {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let name = type_url
        .rsplit_once('/')
        .map_or(type_url.as_str(), |(_, n)| n);
    let Some(desc) = any.descriptor().parent_pool().get_message_by_name(name) else {
        return false;
    };
    let bytes = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let Ok(mut inner) = DynamicMessage::decode(desc, bytes) else {
        return false;
    };
    if !trim_with(paths, &mut inner) {
        return false;
    }
    any.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
    true
}

fn trim_with(paths: &[String], msg: &mut DynamicMessage) -> bool {
    let desc = msg.descriptor();
    if !paths.iter().all(|p| names_fields(&desc, p)) {
        return false;
    }
    if paths.is_empty() {
        return true;
    }
    let mut tree = Node::default();
    for p in paths {
        tree.add_path(p);
    }
    tree.trim(msg);
    true
}

/// `FieldMaskUtil::GetFieldDescriptors`: every segment names a field, and only singular
/// message fields can be walked into.
fn names_fields(desc: &MessageDescriptor, path: &str) -> bool {
    let mut current = Some(desc.clone());
    for part in path.split('.') {
        let Some(d) = current.take() else {
            return false;
        };
        let Some(field) = d.get_field_by_name(part) else {
            return false;
        };
        if let Kind::Message(m) = field.kind() {
            if !field.is_list() && !field.is_map() {
                current = Some(m);
            }
        }
    }
    true
}

/// `FieldMaskTree`: a leaf keeps its whole field; a path under an existing leaf adds nothing;
/// a shorter path replaces the longer ones under it.
#[derive(Debug, Default)]
struct Node {
    children: BTreeMap<String, Node>,
}

impl Node {
    fn add_path(&mut self, path: &str) {
        let mut node = self;
        let mut new_branch = false;
        let mut at_root = true;
        for part in path.split('.') {
            if !new_branch && !at_root && node.children.is_empty() {
                return;
            }
            at_root = false;
            if !node.children.contains_key(part) {
                new_branch = true;
            }
            node = node.children.entry(part.to_owned()).or_default();
        }
        node.children.clear();
    }

    /// `FieldMaskTree::TrimMessage`: fields not in the tree are cleared; a set singular message
    /// under a non-leaf node is trimmed in place (and stays set even if left empty).
    fn trim(&self, msg: &mut DynamicMessage) {
        for field in msg.descriptor().fields() {
            match self.children.get(field.name()) {
                None => msg.clear_field(&field),
                Some(child) if !child.children.is_empty() && msg.has_field(&field) => {
                    if let Value::Message(m) = msg.get_field_mut(&field) {
                        child.trim(m);
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// protobuf's `CEscape` for text format strings.
fn c_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_drops_empty_paths() {
        assert_eq!(FieldMask::parse("a,,b").paths, vec!["a", "b"]);
        assert!(FieldMask::parse("").paths.is_empty());
        assert_eq!(
            FieldMask::parse("foo,bar").debug_string(),
            "goo.gle/debugstr  \npaths: \"foo\"\npaths: \"bar\"\n"
        );
    }

    #[test]
    fn tree_keeps_shortest_paths() {
        let mut n = Node::default();
        n.add_path("a.b");
        n.add_path("a");
        assert!(n.children["a"].children.is_empty());
        n.add_path("a.c");
        assert!(n.children["a"].children.is_empty());
        n.add_path("b.c");
        n.add_path("b.d");
        assert_eq!(n.children["b"].children.len(), 2);
    }
}
