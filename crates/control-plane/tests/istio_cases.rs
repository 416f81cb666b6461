//! Istio's own EnvoyFilter cases (`pilot/pkg/networking/core/envoyfilter/*_test.go`), ported as
//! data in `tests/istio_cases/`: input listeners or clusters + EnvoyFilters → Istio's expected
//! output, compared as protos (through their JSON form, so field order and Any encoding do not
//! matter).

use std::collections::BTreeMap;
use std::path::Path;

use prost_reflect::DynamicMessage;
use redvoy_control_plane::envoyfilter::{self, PatchContext};
use redvoy_control_plane::proxy::ProxyIdentity;
use serde_json::Value;

const LISTENER: &str = "envoy.config.listener.v3.Listener";
const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/istio_cases")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn message(full_name: &str, v: &Value) -> DynamicMessage {
    redvoy_config::message_from_json(full_name, v, true, "fixture")
        .unwrap_or_else(|e| panic!("fixture {v}: {e}"))
}

fn json_of(m: &DynamicMessage) -> Value {
    let opts = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    m.serialize_with_options(serde_json::value::Serializer, &opts)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn normalized(full_name: &str, items: &Value) -> Vec<Value> {
    items
        .as_array()
        .map(|a| a.iter().map(|v| json_of(&message(full_name, v))).collect())
        .unwrap_or_default()
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn proxy_of(case: &Value) -> ProxyIdentity {
    let p = &case["proxy"];
    let metadata = strings(&p["metadata"]);
    ProxyIdentity {
        id: "test".to_owned(),
        namespace: p["namespace"].as_str().unwrap_or("default").to_owned(),
        labels: strings(&p["labels"]),
        istio_version: metadata.get("ISTIO_VERSION").cloned().unwrap_or_default(),
        metadata,
    }
}

fn filters_of(case: &Value) -> Vec<envoyfilter::EnvoyFilter> {
    case["envoyfilters"]
        .as_array()
        .unwrap_or_else(|| panic!("no envoyfilters"))
        .iter()
        .map(|ef| {
            let meta = &ef["metadata"];
            envoyfilter::parse_envoy_filter(
                meta["name"].as_str().unwrap_or_default(),
                meta["namespace"].as_str().unwrap_or("default"),
                meta["creationTimestamp"].as_str().unwrap_or_default(),
                &ef["spec"],
            )
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// The case's EnvoyFilters selected for its proxy (istiod's `EnvoyFilters(proxy)`).
fn patches_of(case: &Value) -> envoyfilter::MergedPatches {
    envoyfilter::select(
        &filters_of(case),
        &proxy_of(case),
        case["root_namespace"].as_str().unwrap_or("istio-system"),
    )
}

fn context_of(case: &Value) -> PatchContext {
    PatchContext::parse(case["context"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn diff(name: &str, want: &[Value], got: &[Value]) -> Option<String> {
    if want == got {
        return None;
    }
    let pretty = |v: &[Value]| serde_json::to_string_pretty(v).unwrap_or_default();
    Some(format!(
        "case {name:?}:\n--- want\n{}\n--- got\n{}",
        pretty(want),
        pretty(got)
    ))
}

#[test]
fn istio_listener_patch_cases() {
    let file = load("listener_patch.yaml");
    let cases = file["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases"));
    assert!(cases.len() >= 5);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or_default();
        let patches = patches_of(case);
        let input: Vec<DynamicMessage> = case["listeners"]
            .as_array()
            .map(|a| a.iter().map(|v| message(LISTENER, v)).collect())
            .unwrap_or_default();
        let out = envoyfilter::apply_listener_patches(
            context_of(case),
            &patches,
            input,
            case["skip_adds"].as_bool().unwrap_or(false),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<Value> = out.iter().map(json_of).collect();
        if let Some(d) = diff(
            name,
            &normalized(LISTENER, &case["expected_listeners"]),
            &got,
        ) {
            failures.push(d);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn istio_cluster_patch_cases() {
    let file = load("cluster_patch.yaml");
    let cases = file["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases"));
    assert!(cases.len() >= 4);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or_default();
        let patches = patches_of(case);
        let hosts: Vec<String> = case["cluster_hosts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let ctx = context_of(case);
        let mut out = Vec::new();
        for c in case["clusters"].as_array().into_iter().flatten() {
            if let Some(c) =
                envoyfilter::apply_cluster_merge(ctx, &patches, message(CLUSTER, c), &hosts)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            {
                out.push(c);
            }
        }
        out.extend(envoyfilter::inserted_clusters(ctx, &patches));
        let got: Vec<Value> = out.iter().map(json_of).collect();
        if let Some(d) = diff(name, &normalized(CLUSTER, &case["expected_clusters"]), &got) {
            failures.push(d);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn istio_cluster_match_cases() {
    let file = load("cluster_patch.yaml");
    let cases = file["match_cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no match_cases"));
    for case in cases {
        let m: envoyfilter::ClusterMatch =
            serde_json::from_value(case["match"].clone()).unwrap_or_else(|e| panic!("{e}"));
        let hosts: Vec<String> = case["hosts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            envoyfilter::cluster_match(
                case["cluster"].as_str().unwrap_or_default(),
                Some(&m),
                &hosts
            ),
            case["expected"].as_bool().unwrap_or_default(),
            "{}",
            case["name"]
        );
    }
}
