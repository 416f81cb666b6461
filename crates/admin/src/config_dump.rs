//! `/config_dump`'s `?resource=`, `?mask=` and `?name_regex=`, applied to the JSON the backend
//! renders, with Envoy 1.40's semantics (`source/server/admin/config_dump_handler.cc`):
//!
//! - `name_regex` (RE2, whole-name match) keeps the resources of each dump whose name matches;
//!   the bootstrap is never filtered.
//! - Without `resource`, the mask is a protobuf `FieldMask` applied to each top-level dump; a
//!   dump for which any path is invalid is left out, and if none is left the answer is 400.
//! - With `resource` (a repeated field of one of the dumps), each element is returned as its
//!   own Any; a mask path whose first segment is the element's single `Any` field reaches into
//!   the packed resource (`cluster.name`). An invalid mask is a 400.
//!
//! Field validity needs the proto schema: the `envoy.admin.v3` dump messages are described
//! here; other messages are asked of the backend (`AdminBackend::proto_field`), and paths below
//! a message neither knows are accepted.

use std::collections::BTreeMap;

use crate::backend::{FieldLookup, FieldShape};
use crate::json::Json;

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
const ANY: &str = "google.protobuf.Any";
const TIMESTAMP: &str = "google.protobuf.Timestamp";
const UPDATE_FAILURE_STATE: &str = "envoy.admin.v3.UpdateFailureState";

/// What the query asked for.
#[derive(Debug, Default)]
pub(crate) struct Query<'a> {
    pub(crate) resource: Option<&'a str>,
    pub(crate) mask: Option<&'a str>,
    /// Whole-name matcher (already anchored).
    pub(crate) name_regex: Option<regex::Regex>,
}

/// A field of a known message: name, repeated, message type (None = scalar or enum).
type FieldDef = (&'static str, bool, Option<&'static str>);

/// The messages of `envoy/admin/v3/config_dump*.proto` a mask can reach without an Any, plus
/// the well-known types they use.
fn known_fields(message: &str) -> Option<&'static [FieldDef]> {
    const S: Option<&str> = None;
    let fields: &'static [FieldDef] = match message {
        "envoy.admin.v3.ConfigDump" => &[("configs", true, Some(ANY))],
        "envoy.admin.v3.BootstrapConfigDump" => &[
            (
                "bootstrap",
                false,
                Some("envoy.config.bootstrap.v3.Bootstrap"),
            ),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.ClustersConfigDump" => &[
            ("version_info", false, S),
            (
                "static_clusters",
                true,
                Some("envoy.admin.v3.ClustersConfigDump.StaticCluster"),
            ),
            (
                "dynamic_active_clusters",
                true,
                Some("envoy.admin.v3.ClustersConfigDump.DynamicCluster"),
            ),
            (
                "dynamic_warming_clusters",
                true,
                Some("envoy.admin.v3.ClustersConfigDump.DynamicCluster"),
            ),
        ],
        "envoy.admin.v3.ClustersConfigDump.StaticCluster" => &[
            ("cluster", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.ClustersConfigDump.DynamicCluster" => &[
            ("version_info", false, S),
            ("cluster", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        "envoy.admin.v3.ListenersConfigDump" => &[
            ("version_info", false, S),
            (
                "static_listeners",
                true,
                Some("envoy.admin.v3.ListenersConfigDump.StaticListener"),
            ),
            (
                "dynamic_listeners",
                true,
                Some("envoy.admin.v3.ListenersConfigDump.DynamicListener"),
            ),
        ],
        "envoy.admin.v3.ListenersConfigDump.StaticListener" => &[
            ("listener", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.ListenersConfigDump.DynamicListener" => &[
            ("name", false, S),
            (
                "active_state",
                false,
                Some("envoy.admin.v3.ListenersConfigDump.DynamicListenerState"),
            ),
            (
                "warming_state",
                false,
                Some("envoy.admin.v3.ListenersConfigDump.DynamicListenerState"),
            ),
            (
                "draining_state",
                false,
                Some("envoy.admin.v3.ListenersConfigDump.DynamicListenerState"),
            ),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        "envoy.admin.v3.ListenersConfigDump.DynamicListenerState" => &[
            ("version_info", false, S),
            ("listener", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.EndpointsConfigDump" => &[
            (
                "static_endpoint_configs",
                true,
                Some("envoy.admin.v3.EndpointsConfigDump.StaticEndpointConfig"),
            ),
            (
                "dynamic_endpoint_configs",
                true,
                Some("envoy.admin.v3.EndpointsConfigDump.DynamicEndpointConfig"),
            ),
        ],
        "envoy.admin.v3.EndpointsConfigDump.StaticEndpointConfig" => &[
            ("endpoint_config", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.EndpointsConfigDump.DynamicEndpointConfig" => &[
            ("version_info", false, S),
            ("endpoint_config", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        "envoy.admin.v3.RoutesConfigDump" => &[
            (
                "static_route_configs",
                true,
                Some("envoy.admin.v3.RoutesConfigDump.StaticRouteConfig"),
            ),
            (
                "dynamic_route_configs",
                true,
                Some("envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig"),
            ),
        ],
        "envoy.admin.v3.RoutesConfigDump.StaticRouteConfig" => &[
            ("route_config", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig" => &[
            ("version_info", false, S),
            ("route_config", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        "envoy.admin.v3.ScopedRoutesConfigDump" => &[
            (
                "inline_scoped_route_configs",
                true,
                Some("envoy.admin.v3.ScopedRoutesConfigDump.InlineScopedRouteConfigs"),
            ),
            (
                "dynamic_scoped_route_configs",
                true,
                Some("envoy.admin.v3.ScopedRoutesConfigDump.DynamicScopedRouteConfigs"),
            ),
        ],
        "envoy.admin.v3.ScopedRoutesConfigDump.InlineScopedRouteConfigs" => &[
            ("name", false, S),
            ("scoped_route_configs", true, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
        ],
        "envoy.admin.v3.ScopedRoutesConfigDump.DynamicScopedRouteConfigs" => &[
            ("name", false, S),
            ("version_info", false, S),
            ("scoped_route_configs", true, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        "envoy.admin.v3.SecretsConfigDump" => &[
            (
                "static_secrets",
                true,
                Some("envoy.admin.v3.SecretsConfigDump.StaticSecret"),
            ),
            (
                "dynamic_active_secrets",
                true,
                Some("envoy.admin.v3.SecretsConfigDump.DynamicSecret"),
            ),
            (
                "dynamic_warming_secrets",
                true,
                Some("envoy.admin.v3.SecretsConfigDump.DynamicSecret"),
            ),
        ],
        "envoy.admin.v3.SecretsConfigDump.StaticSecret" => &[
            ("name", false, S),
            ("last_updated", false, Some(TIMESTAMP)),
            ("secret", false, Some(ANY)),
        ],
        "envoy.admin.v3.SecretsConfigDump.DynamicSecret" => &[
            ("name", false, S),
            ("version_info", false, S),
            ("last_updated", false, Some(TIMESTAMP)),
            ("secret", false, Some(ANY)),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        "envoy.admin.v3.EcdsConfigDump" => &[(
            "ecds_filters",
            true,
            Some("envoy.admin.v3.EcdsConfigDump.EcdsFilterConfig"),
        )],
        "envoy.admin.v3.EcdsConfigDump.EcdsFilterConfig" => &[
            ("version_info", false, S),
            ("ecds_filter", false, Some(ANY)),
            ("last_updated", false, Some(TIMESTAMP)),
            ("error_state", false, Some(UPDATE_FAILURE_STATE)),
            ("client_status", false, S),
        ],
        UPDATE_FAILURE_STATE => &[
            ("failed_configuration", false, Some(ANY)),
            ("last_update_attempt", false, Some(TIMESTAMP)),
            ("details", false, S),
            ("version_info", false, S),
        ],
        TIMESTAMP => &[("seconds", false, S), ("nanos", false, S)],
        ANY => &[("type_url", false, S), ("value", false, S)],
        _ => return None,
    };
    Some(fields)
}

/// Where the name `?name_regex=` matches sits in each resource wrapper: a path of JSON keys.
fn name_path(element_type: &str) -> Option<&'static [&'static str]> {
    Some(match element_type.rsplit('.').next().unwrap_or_default() {
        "StaticCluster" | "DynamicCluster" => &["cluster", "name"],
        "StaticListener" => &["listener", "name"],
        "StaticEndpointConfig" | "DynamicEndpointConfig" => &["endpoint_config", "cluster_name"],
        "StaticRouteConfig" | "DynamicRouteConfig" => &["route_config", "name"],
        "EcdsFilterConfig" => &["ecds_filter", "name"],
        "DynamicListener"
        | "InlineScopedRouteConfigs"
        | "DynamicScopedRouteConfigs"
        | "StaticSecret"
        | "DynamicSecret" => &["name"],
        _ => return None,
    })
}

/// Field lookup: the admin messages here first, then the backend.
pub(crate) struct Schema<'a> {
    pub(crate) backend: &'a dyn Fn(&str, &str) -> FieldLookup,
}

impl Schema<'_> {
    fn field(&self, message: &str, field: &str) -> FieldLookup {
        match known_fields(message) {
            Some(fields) => fields.iter().find(|(name, _, _)| *name == field).map_or(
                FieldLookup::NoSuchField,
                |(_, repeated, msg)| {
                    FieldLookup::Field(FieldShape {
                        repeated: *repeated,
                        message: msg.map(str::to_owned),
                    })
                },
            ),
            None => (self.backend)(message, field),
        }
    }

    /// `FieldMaskUtil::GetFieldDescriptors`: every segment names a field, and only the last
    /// may be repeated or a non-message.
    fn path_is_valid(&self, message: &str, path: &str) -> bool {
        let segments: Vec<&str> = path.split('.').collect();
        let mut current = message.to_owned();
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return false;
            }
            let last = i + 1 == segments.len();
            match self.field(&current, segment) {
                FieldLookup::NoSuchField => return false,
                FieldLookup::UnknownMessage => return true,
                FieldLookup::Field(shape) => {
                    if last {
                        return true;
                    }
                    match shape.message {
                        Some(m) if !shape.repeated => current = m,
                        _ => return false,
                    }
                }
            }
        }
        true
    }
}

/// A `FieldMask` as a tree; a node without children keeps its whole field.
#[derive(Debug, Default)]
struct MaskTree {
    children: BTreeMap<String, MaskTree>,
}

impl MaskTree {
    fn from_paths<'p>(paths: impl IntoIterator<Item = &'p str>) -> Self {
        let mut root = MaskTree::default();
        for path in paths {
            let mut node = &mut root;
            let segments: Vec<&str> = path.split('.').collect();
            for (i, segment) in segments.iter().enumerate() {
                let is_new = !node.children.contains_key(*segment);
                let child = node.children.entry((*segment).to_owned()).or_default();
                if !is_new && child.children.is_empty() {
                    // A shorter path already keeps this whole field.
                    break;
                }
                if i + 1 == segments.len() {
                    child.children.clear();
                }
                node = child;
            }
        }
        root
    }

    /// `FieldMaskUtil::TrimMessage` on a JSON object: drops members the mask does not name;
    /// an Any's `@type` stays.
    fn trim(&self, value: &mut Json) {
        let Json::Object(members) = value else {
            return;
        };
        members.retain_mut(|(key, v)| {
            if key == "@type" {
                return true;
            }
            match self.children.get(key.as_str()) {
                None => false,
                Some(child) => {
                    if !child.children.is_empty() {
                        child.trim(v);
                    }
                    true
                }
            }
        });
    }
}

/// `FieldMaskUtil::FromString`: comma-separated, empty pieces skipped.
fn mask_paths(mask: &str) -> Vec<&str> {
    mask.split(',').filter(|p| !p.is_empty()).collect()
}

/// The message full name in an Any's `@type`.
fn any_type(value: &Json) -> Option<&str> {
    value
        .get("@type")?
        .as_str()
        .map(|url| url.rsplit('/').next().unwrap_or(url))
}

/// Validates then trims (`checkFieldMaskAndTrimMessage`); `false` when a path is invalid.
fn check_and_trim(schema: &Schema<'_>, message: &str, paths: &[&str], value: &mut Json) -> bool {
    if !paths.iter().all(|p| schema.path_is_valid(message, p)) {
        return false;
    }
    MaskTree::from_paths(paths.iter().copied()).trim(value);
    true
}

/// `trimResourceMessage`: a mask on one resource wrapper, reaching through its single Any.
fn trim_resource(schema: &Schema<'_>, message: &str, paths: &[&str], value: &mut Json) -> bool {
    let mut outer: Vec<String> = Vec::new();
    let mut inner: Vec<String> = Vec::new();
    let mut any_field: Option<String> = None;
    for path in paths {
        let (first, rest) = path.split_once('.').unwrap_or((path, ""));
        let is_any = matches!(
            schema.field(message, first),
            FieldLookup::Field(FieldShape { repeated: false, message: Some(ref m) }) if m == ANY
        );
        if is_any && any_field.as_deref().is_none_or(|f| f == first) {
            any_field = Some(first.to_owned());
            outer.push(first.to_owned());
            inner.push(rest.to_owned());
        } else {
            outer.push((*path).to_owned());
        }
    }
    if let Some(field) = &any_field {
        if let Some(packed) = value.get_mut(field) {
            let inner_type = any_type(packed).unwrap_or_default().to_owned();
            let inner: Vec<&str> = inner.iter().map(String::as_str).collect();
            if !check_and_trim(schema, &inner_type, &inner, packed) {
                return false;
            }
        }
    }
    let outer: Vec<&str> = outer.iter().map(String::as_str).collect();
    check_and_trim(schema, message, &outer, value)
}

/// Removes, from every repeated resource list of a dump, the resources whose name does not
/// match (Envoy's config trackers apply the matcher while building each dump).
fn filter_by_name(dump: &mut Json, matcher: &regex::Regex) {
    let Some(dump_type) = any_type(dump).map(str::to_owned) else {
        return;
    };
    let Some(fields) = known_fields(&dump_type) else {
        return;
    };
    for (field, repeated, element_type) in fields {
        let (true, Some(element_type)) = (*repeated, element_type) else {
            continue;
        };
        let Some(path) = name_path(element_type) else {
            continue;
        };
        if let Some(Json::Array(items)) = dump.get_mut(field) {
            items.retain(|item| {
                let name = path
                    .iter()
                    .try_fold(item, |v, key| v.get(key))
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                matcher.is_match(name)
            });
        }
    }
}

/// Applies the query to the backend's dump. `Err` is Envoy's (status, text body).
pub(crate) fn apply(
    dump: Json,
    query: &Query<'_>,
    schema: &Schema<'_>,
) -> Result<Json, (u16, String)> {
    let mut configs = match dump {
        Json::Object(mut members) => members
            .iter_mut()
            .find(|(k, _)| k == "configs")
            .map(|(_, v)| std::mem::replace(v, Json::Null))
            .and_then(|v| match v {
                Json::Array(items) => Some(items),
                _ => None,
            })
            .unwrap_or_default(),
        _ => return Err((500, "config dump is not a JSON object".to_owned())),
    };
    if let Some(matcher) = &query.name_regex {
        for config in &mut configs {
            filter_by_name(config, matcher);
        }
    }
    let out = match query.resource {
        Some(resource) => resource_dump(configs, resource, query.mask, schema)?,
        None => full_dump(configs, query.mask, schema)?,
    };
    if out.is_empty() {
        // An empty ConfigDump prints as `{}`.
        return Ok(Json::Object(Vec::new()));
    }
    Ok(Json::Object(vec![("configs".to_owned(), Json::Array(out))]))
}

fn full_dump(
    configs: Vec<Json>,
    mask: Option<&str>,
    schema: &Schema<'_>,
) -> Result<Vec<Json>, (u16, String)> {
    let Some(mask) = mask else {
        return Ok(configs);
    };
    let paths = mask_paths(mask);
    let mut out = Vec::new();
    for mut config in configs {
        let message = any_type(&config).unwrap_or_default().to_owned();
        // Masks valid for one dump type are invalid for the others: those are skipped.
        if check_and_trim(schema, &message, &paths, &mut config) {
            out.push(config);
        }
    }
    if out.is_empty() {
        return Err((
            400,
            format!("FieldMask {mask} could not be successfully applied to any configs."),
        ));
    }
    Ok(out)
}

fn resource_dump(
    configs: Vec<Json>,
    resource: &str,
    mask: Option<&str>,
    schema: &Schema<'_>,
) -> Result<Vec<Json>, (u16, String)> {
    for mut config in configs {
        let message = any_type(&config).unwrap_or_default().to_owned();
        let shape = match schema.field(&message, resource) {
            FieldLookup::Field(shape) => shape,
            FieldLookup::NoSuchField | FieldLookup::UnknownMessage => continue,
        };
        if !shape.repeated {
            return Err((
                400,
                format!(
                    "{resource} is not a repeated field. Use ?mask={resource} to get only this field"
                ),
            ));
        }
        let element_type = shape.message.unwrap_or_default();
        let items = match config.get_mut(resource) {
            Some(Json::Array(items)) => std::mem::take(items),
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(items.len());
        for mut item in items {
            if let Some(mask) = mask {
                let paths = mask_paths(mask);
                if !trim_resource(schema, &element_type, &paths, &mut item) {
                    return Err((400, invalid_mask_message(&paths)));
                }
            }
            out.push(pack_any(&element_type, item));
        }
        return Ok(out);
    }
    Err((404, format!("{resource} not found in config dump")))
}

/// Wraps a message as an Any: `@type` first, then its fields.
fn pack_any(message: &str, value: Json) -> Json {
    let mut members = vec![(
        "@type".to_owned(),
        Json::String(format!("{TYPE_URL_PREFIX}{message}")),
    )];
    if let Json::Object(fields) = value {
        members.extend(fields);
    }
    Json::Object(members)
}

/// Envoy prints the mask with protobuf's `DebugString`, whose header and spacing protobuf
/// randomises per process (`goo.gle/debugonly  `, `goo.gle/debugstr  `, …); this is one of the
/// forms observed.
fn invalid_mask_message(paths: &[&str]) -> String {
    let mut text = String::from("FieldMask goo.gle/debugonly  \n");
    for p in paths {
        text.push_str("paths: \"");
        for c in p.chars() {
            match c {
                '"' => text.push_str("\\\""),
                '\\' => text.push_str("\\\\"),
                '\'' => text.push_str("\\'"),
                c => text.push(c),
            }
        }
        text.push_str("\"\n");
    }
    text.push_str(" could not be successfully used.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn no_backend(_: &str, _: &str) -> FieldLookup {
        FieldLookup::UnknownMessage
    }

    /// A backend that knows `Cluster` has `name` (scalar) and `load_assignment` (message).
    fn cluster_backend(message: &str, field: &str) -> FieldLookup {
        if message != "envoy.config.cluster.v3.Cluster" {
            return FieldLookup::UnknownMessage;
        }
        match field {
            "name" => FieldLookup::Field(FieldShape {
                repeated: false,
                message: None,
            }),
            "load_assignment" => FieldLookup::Field(FieldShape {
                repeated: false,
                message: Some("envoy.config.endpoint.v3.ClusterLoadAssignment".into()),
            }),
            _ => FieldLookup::NoSuchField,
        }
    }

    const DUMP: &str = r#"{"configs":[
      {"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
       "bootstrap":{"node":{"id":"n","cluster":"c"},"admin":{"address":{}}},
       "last_updated":"2026-11-22T04:04:44.693Z"},
      {"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
       "static_clusters":[
         {"cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"down_cluster","type":"STATIC"},"last_updated":"t1"},
         {"cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"redis_cluster","type":"STATIC"},"last_updated":"t2"}]},
      {"@type":"type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
       "static_listeners":[{"listener":{"@type":"type.googleapis.com/envoy.config.listener.v3.Listener","name":"l1","address":{"socket_address":{"address":"127.0.0.1","port_value":0}}},"last_updated":"t3"}]},
      {"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}]}"#;

    fn run(
        resource: Option<&str>,
        mask: Option<&str>,
        name: Option<&str>,
        backend: &dyn Fn(&str, &str) -> FieldLookup,
    ) -> Result<String, (u16, String)> {
        let query = Query {
            resource,
            mask,
            name_regex: name.map(|n| regex::Regex::new(&format!("^(?:{n})$")).unwrap()),
        };
        let schema = Schema { backend };
        apply(parse(DUMP).unwrap(), &query, &schema).map(|j| j.pretty())
    }

    fn types(out: &str) -> Vec<String> {
        let v = parse(out).unwrap();
        match v.get("configs") {
            Some(Json::Array(items)) => items
                .iter()
                .map(|i| any_type(i).unwrap().rsplit('.').next().unwrap().to_owned())
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn no_query_returns_everything_pretty() {
        let out = run(None, None, None, &no_backend).unwrap();
        assert_eq!(
            types(&out),
            [
                "BootstrapConfigDump",
                "ClustersConfigDump",
                "ListenersConfigDump",
                "SecretsConfigDump"
            ]
        );
        assert!(out.starts_with("{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump\",\n"));
    }

    #[test]
    fn istioctl_masks() {
        let out = run(
            None,
            Some("dynamic_active_clusters,dynamic_warming_clusters,static_clusters"),
            None,
            &no_backend,
        )
        .unwrap();
        assert_eq!(types(&out), ["ClustersConfigDump"]);
        assert!(out.contains("\"redis_cluster\""));
        // Valid for the secrets dump even though both fields are absent: kept with @type only.
        let out = run(
            None,
            Some("dynamic_active_secrets,dynamic_warming_secrets"),
            None,
            &no_backend,
        )
        .unwrap();
        assert_eq!(
            out,
            "{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.SecretsConfigDump\"\n  }\n ]\n}\n"
        );
        let out = run(None, Some("bootstrap"), None, &no_backend).unwrap();
        assert_eq!(types(&out), ["BootstrapConfigDump"]);
        assert!(!out.contains("last_updated"));
    }

    #[test]
    fn nested_masks_and_empty_submessages() {
        let out = run(None, Some("bootstrap.node.id"), None, &no_backend).unwrap();
        assert_eq!(
            out,
            "{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump\",\n   \"bootstrap\": {\n    \"node\": {\n     \"id\": \"n\"\n    }\n   }\n  }\n ]\n}\n"
        );
        // A present message whose masked field is unset stays as `{}` (observed `"admin": {}`).
        let out = run(
            None,
            Some("bootstrap.admin.profile_path"),
            None,
            &no_backend,
        )
        .unwrap();
        assert!(out.contains("\"admin\": {}"), "{out}");
    }

    #[test]
    fn invalid_masks() {
        for mask in [
            "bogus",
            "configs",
            "static_clusters.cluster.name",
            "bootstrap.node.id,static_clusters",
            "last_updated.seconds.x",
        ] {
            assert_eq!(
                run(None, Some(mask), None, &no_backend),
                Err((
                    400,
                    format!("FieldMask {mask} could not be successfully applied to any configs.")
                )),
                "{mask}"
            );
        }
    }

    #[test]
    fn resource_with_and_without_mask() {
        let out = run(Some("static_clusters"), None, None, &no_backend).unwrap();
        assert_eq!(types(&out), ["StaticCluster", "StaticCluster"]);
        assert!(out.starts_with("{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster\",\n   \"cluster\": {\n    \"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\",\n    \"name\": \"down_cluster\",\n"));

        let out = run(
            Some("static_clusters"),
            Some("cluster.name"),
            None,
            &no_backend,
        )
        .unwrap();
        assert_eq!(
            out,
            "{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster\",\n   \"cluster\": {\n    \"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\",\n    \"name\": \"down_cluster\"\n   }\n  },\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster\",\n   \"cluster\": {\n    \"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\",\n    \"name\": \"redis_cluster\"\n   }\n  }\n ]\n}\n"
        );
        let out = run(
            Some("static_listeners"),
            Some("listener.address.socket_address.port_value,last_updated"),
            None,
            &no_backend,
        )
        .unwrap();
        assert!(out.contains("\"port_value\": 0"));
        assert!(out.contains("\"last_updated\": \"t3\""));
        assert!(!out.contains("\"name\""));
    }

    #[test]
    fn resource_errors() {
        assert_eq!(
            run(Some("bogus"), None, None, &no_backend),
            Err((404, "bogus not found in config dump".into()))
        );
        assert_eq!(
            run(Some("bootstrap"), None, None, &no_backend),
            Err((
                400,
                "bootstrap is not a repeated field. Use ?mask=bootstrap to get only this field"
                    .into()
            ))
        );
        // `cluster` alone leaves an empty inner path, which is not a field.
        assert_eq!(
            run(
                Some("static_clusters"),
                Some("cluster,last_updated.x"),
                None,
                &no_backend
            ),
            Err((
                400,
                "FieldMask goo.gle/debugonly  \npaths: \"cluster\"\npaths: \"last_updated.x\"\n could not be successfully used."
                    .into()
            ))
        );
        assert!(run(Some("static_clusters"), Some("bogus"), None, &no_backend).is_err());
        // With a schema for Cluster, inner paths are checked too.
        assert!(run(
            Some("static_clusters"),
            Some("cluster.bogus"),
            None,
            &cluster_backend
        )
        .is_err());
        assert!(run(
            Some("static_clusters"),
            Some("cluster.name.x"),
            None,
            &cluster_backend
        )
        .is_err());
        assert!(run(
            Some("static_clusters"),
            Some("cluster.name"),
            None,
            &cluster_backend
        )
        .is_ok());
        // An empty repeated field of a known dump is an empty dump.
        assert_eq!(
            run(Some("dynamic_active_clusters"), None, None, &no_backend),
            Ok("{}\n".into())
        );
    }

    #[test]
    fn name_regex_matches_whole_names() {
        let out = run(Some("static_clusters"), None, Some("down"), &no_backend).unwrap();
        assert_eq!(out, "{}\n");
        let out = run(
            Some("static_clusters"),
            Some("cluster.name"),
            Some("down.*"),
            &no_backend,
        )
        .unwrap();
        assert!(out.contains("down_cluster") && !out.contains("redis_cluster"));
        // Without resource: every dump stays, the bootstrap untouched, lists filtered.
        let out = run(None, None, Some("redis_c.*"), &no_backend).unwrap();
        assert_eq!(types(&out).len(), 4);
        assert!(out.contains("redis_cluster") && !out.contains("down_cluster"));
        assert!(!out.contains("\"l1\""));
        assert!(out.contains("\"id\": \"n\""));
    }

    #[test]
    fn mask_tree_merges_prefixes() {
        let t = MaskTree::from_paths(["a.b", "a", "c.d", "c.e"]);
        assert!(t.children["a"].children.is_empty());
        assert_eq!(t.children["c"].children.len(), 2);
        let t = MaskTree::from_paths(["a", "a.b"]);
        assert!(t.children["a"].children.is_empty());
    }
}
