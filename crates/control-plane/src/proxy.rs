//! Who is asking: a proxy's identity, read from the xDS `Node` the way istiod reads it
//! (`pilot/pkg/model/context.go`): namespace and labels from the node metadata (`NAMESPACE`,
//! `LABELS`), falling back to the node id `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};

/// The namespace of a proxy that says nothing about itself.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What EnvoyFilter selection needs to know about a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyIdentity {
    /// The node id, as sent.
    pub id: String,
    /// The proxy's config namespace.
    pub namespace: String,
    /// Workload labels (`workloadSelector` matches these).
    pub labels: BTreeMap<String, String>,
    /// String-valued node metadata (`match.proxy.metadata` compares these).
    pub metadata: BTreeMap<String, String>,
    /// `ISTIO_VERSION` (`match.proxy.proxyVersion`).
    pub istio_version: String,
}

impl ProxyIdentity {
    /// The identity of `node`.
    pub fn from_node(node: &Node) -> Self {
        let empty = Struct::default();
        let meta = node.metadata.as_ref().unwrap_or(&empty);
        let mut metadata = BTreeMap::new();
        let mut labels = BTreeMap::new();
        for (k, v) in &meta.fields {
            match &v.kind {
                Some(Kind::StringValue(s)) => {
                    metadata.insert(k.clone(), s.clone());
                }
                Some(Kind::StructValue(s)) if k == "LABELS" => {
                    for (lk, lv) in &s.fields {
                        if let Some(Kind::StringValue(s)) = &lv.kind {
                            labels.insert(lk.clone(), s.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let namespace = metadata
            .get("NAMESPACE")
            .cloned()
            .filter(|n| !n.is_empty())
            .or_else(|| namespace_from_id(&node.id))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let istio_version = metadata.get("ISTIO_VERSION").cloned().unwrap_or_default();
        Self {
            id: node.id.clone(),
            namespace,
            labels,
            metadata,
            istio_version,
        }
    }
}

/// `sidecar~10.0.0.1~client-5d9.redis~redis.svc.cluster.local` → `redis`.
fn namespace_from_id(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('~').collect();
    if parts.len() != 4 {
        return None;
    }
    parts[2]
        .split_once('.')
        .map(|(_, ns)| ns.to_owned())
        .or_else(|| parts[3].split('.').next().map(str::to_owned))
        .filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    #[test]
    fn metadata_wins_over_the_node_id() {
        let mut fields = std::collections::HashMap::new();
        fields.insert("NAMESPACE".to_owned(), string("redis"));
        fields.insert("ISTIO_VERSION".to_owned(), string("1.28.0"));
        let mut labels = std::collections::HashMap::new();
        labels.insert("app".to_owned(), string("redis-client"));
        fields.insert(
            "LABELS".to_owned(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        let node = Node {
            id: "sidecar~10.0.0.1~c.other~other.svc.cluster.local".to_owned(),
            metadata: Some(Struct { fields }),
            ..Node::default()
        };
        let p = ProxyIdentity::from_node(&node);
        assert_eq!(p.namespace, "redis");
        assert_eq!(
            p.labels.get("app").map(String::as_str),
            Some("redis-client")
        );
        assert_eq!(p.istio_version, "1.28.0");
    }

    #[test]
    fn namespace_from_the_node_id_or_default() {
        let node = |id: &str| Node {
            id: id.to_owned(),
            ..Node::default()
        };
        assert_eq!(
            ProxyIdentity::from_node(&node(
                "sidecar~10.0.0.1~c-5d9.redis~redis.svc.cluster.local"
            ))
            .namespace,
            "redis"
        );
        assert_eq!(
            ProxyIdentity::from_node(&node("redvoy")).namespace,
            DEFAULT_NAMESPACE
        );
    }
}
