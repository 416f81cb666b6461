//! Istio's protobuf merge (`istio.io/istio/pkg/proto/merge`), on reflective messages: what an
//! EnvoyFilter `MERGE` does to a listener, a filter chain, a cluster or a filter's typed config.
//!
//! It is `proto.Merge` with one exception: a `google.protobuf.Duration` in the patch replaces
//! the target's whole (Go's merge would keep the target's `nanos` when the patch sets only
//! `seconds`, golang/protobuf#1359). Set scalars overwrite, messages merge recursively,
//! repeated fields append (or, for `MERGE_AND_REPLACE_LIST`, replace), map entries replace.
//! Only fields the patch sets are visited; a proto3 scalar at its default counts as unset, so a
//! patch cannot set a number back to zero — Istio's limitation too. Patch values are converted
//! without unknown fields (see `envoyfilter`), so there are none to carry over.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

const DURATION: &str = "google.protobuf.Duration";

/// How repeated fields of the patch combine with the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lists {
    /// `MERGE`: the patch's entries are appended.
    Append,
    /// `MERGE_AND_REPLACE_LIST`: a list the patch sets replaces the target's.
    Replace,
}

/// Merges `src` into `dst` (both of the same message type; a mismatch is the caller's bug and
/// leaves `dst` unchanged).
pub fn merge(dst: &mut DynamicMessage, src: &DynamicMessage, lists: Lists) {
    if dst.descriptor() != src.descriptor() {
        return;
    }
    for (field, value) in src.fields() {
        match value {
            Value::List(items) => {
                let target = dst.get_field_mut(&field);
                if let Value::List(existing) = target {
                    if lists == Lists::Replace {
                        existing.clear();
                    }
                    existing.extend(items.iter().cloned());
                } else {
                    *target = Value::List(items.clone());
                }
            }
            Value::Map(entries) => {
                let target = dst.get_field_mut(&field);
                if let Value::Map(existing) = target {
                    for (k, v) in entries {
                        existing.insert(k.clone(), v.clone());
                    }
                } else {
                    *target = Value::Map(entries.clone());
                }
            }
            Value::Message(patch) if patch.descriptor().full_name() != DURATION => {
                // `get_field_mut` creates the field (and clears other members of its oneof) when
                // the target lacks it, as Go's `Mutable` does.
                if let Value::Message(existing) = dst.get_field_mut(&field) {
                    merge(existing, patch, lists);
                } else {
                    dst.set_field(&field, value.clone());
                }
            }
            _ => dst.set_field(&field, value.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(name: &str, v: serde_json::Value) -> DynamicMessage {
        redvoy_config::message_from_json(name, &v, true, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    fn json_of(m: &DynamicMessage) -> serde_json::Value {
        let opts = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
        m.serialize_with_options(serde_json::value::Serializer, &opts)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";

    #[test]
    fn scalars_overwrite_messages_merge_lists_append() {
        let mut dst = msg(
            CLUSTER,
            json!({"name": "a", "connect_timeout": "1.5s", "lb_policy": "MAGLEV",
                   "circuit_breakers": {"thresholds": [{"max_connections": 1}]},
                   "common_http_protocol_options": {"idle_timeout": "3s"}}),
        );
        let src = msg(
            CLUSTER,
            json!({"connect_timeout": "2s",
                   "circuit_breakers": {"thresholds": [{"max_connections": 2}]},
                   "common_http_protocol_options": {"max_headers_count": 10}}),
        );
        merge(&mut dst, &src, Lists::Append);
        assert_eq!(
            json_of(&dst),
            json!({"name": "a", "connect_timeout": "2s", "lb_policy": "MAGLEV",
                   "circuit_breakers": {"thresholds": [{"max_connections": 1}, {"max_connections": 2}]},
                   "common_http_protocol_options": {"idle_timeout": "3s", "max_headers_count": 10}})
        );
        let replace = msg(
            CLUSTER,
            json!({"circuit_breakers": {"thresholds": [{"max_connections": 3}]}}),
        );
        merge(&mut dst, &replace, Lists::Replace);
        assert_eq!(
            json_of(&dst)["circuit_breakers"],
            json!({"thresholds": [{"max_connections": 3}]})
        );
    }

    #[test]
    fn a_oneof_member_replaces_the_other() {
        let mut dst = msg(CLUSTER, json!({"name": "a", "type": "STATIC"}));
        let src = msg(
            CLUSTER,
            json!({"cluster_type": {"name": "envoy.clusters.redis"}}),
        );
        merge(&mut dst, &src, Lists::Append);
        assert_eq!(
            json_of(&dst),
            json!({"name": "a", "cluster_type": {"name": "envoy.clusters.redis"}})
        );
    }
}
