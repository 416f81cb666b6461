//! Offline checks of the dump; `tests/config_dump.rs` compares with a real Envoy.

use std::time::Duration;

use super::*;
use crate::{load_bootstrap, LoadOptions};

fn load(fixture: &str) -> model::Bootstrap {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    load_bootstrap(&LoadOptions {
        config_path: Some(path),
        ..LoadOptions::default()
    })
    .unwrap()
}

fn at() -> SystemTime {
    // 2026-01-02T03:04:05.678901Z: Envoy keeps milliseconds.
    UNIX_EPOCH + Duration::new(1_767_323_045, 678_901_234)
}

fn dump(b: &model::Bootstrap, query: DumpOptions) -> Result<serde_json::Value, DumpError> {
    render_config_dump(b, at(), &query).map(|t| serde_json::from_str(&t).unwrap())
}

#[test]
fn trackers_in_envoy_order_with_millisecond_timestamps() {
    let text =
        render_config_dump(&load("good/article.yaml"), at(), &DumpOptions::default()).unwrap();
    assert!(
        text.starts_with("{\n \"configs\": [\n  {\n   \"@type\""),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let types: Vec<&str> = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    assert_eq!(v["configs"][0]["last_updated"], "2026-01-02T03:04:05.678Z");
    let node = &v["configs"][0]["bootstrap"]["node"];
    assert_eq!(node["user_agent_name"], "envoy");
    assert_eq!(
        node["user_agent_build_version"]["version"],
        serde_json::json!({"major_number": 1, "minor_number": 40})
    );
    // Durations as Envoy prints them.
    assert_eq!(
        v["configs"][1]["static_clusters"][0]["cluster"]["connect_timeout"],
        "0.250s"
    );
}

#[test]
fn errors_carry_envoys_status_and_text() {
    let b = load("good/article.yaml");
    let q = |resource: Option<&str>, mask: Option<&str>, name_regex: Option<&str>| DumpOptions {
        resource: resource.map(str::to_owned),
        mask: mask.map(str::to_owned),
        name_regex: name_regex.map(str::to_owned),
        include_eds: false,
    };
    let e = dump(&b, q(Some("foo"), None, None)).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (404, "foo not found in config dump")
    );
    let e = dump(&b, q(Some("version_info"), None, None)).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (
            400,
            "version_info is not a repeated field. Use ?mask=version_info to get only this field"
        )
    );
    let e = dump(&b, q(None, Some("static_clusters.cluster"), None)).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (
            400,
            "FieldMask static_clusters.cluster could not be successfully applied to any configs."
        )
    );
    let e = dump(&b, q(Some("static_clusters"), Some("cluster"), None)).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e
        .message
        .ends_with("paths: \"cluster\"\n could not be successfully used."));
    let e = dump(&b, q(None, None, Some("("))).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(
        e.message
            .starts_with("INVALID_ARGUMENT: Error while parsing name_regex from (: "),
        "{}",
        e.message
    );
    // An empty resource list is an empty ConfigDump.
    assert_eq!(
        dump(&b, q(Some("dynamic_active_clusters"), None, None)).unwrap(),
        serde_json::json!({})
    );
}

#[test]
fn mask_and_resource_shapes() {
    let b = load("good/article.yaml");
    let v = dump(
        &b,
        DumpOptions {
            resource: Some("static_clusters".to_owned()),
            mask: Some("cluster.name".to_owned()),
            ..DumpOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        v["configs"][1],
        serde_json::json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
            "cluster": {
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "redis-envoy-002"
            }
        })
    );
    // A mask is applied to each dump; those it does not fit are left out.
    let v = dump(
        &b,
        DumpOptions {
            mask: Some("bootstrap.node.id".to_owned()),
            ..DumpOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": {"node": {}}
        }]})
    );
    // `name_regex` must match the whole name.
    let v = dump(
        &b,
        DumpOptions {
            resource: Some("static_clusters".to_owned()),
            name_regex: Some("redis-envoy-00".to_owned()),
            ..DumpOptions::default()
        },
    )
    .unwrap();
    assert_eq!(v, serde_json::json!({}));
}

#[test]
fn secrets_are_redacted() {
    let text = render_config_dump(&load("good/full.yaml"), at(), &DumpOptions::default()).unwrap();
    for secret in ["\"first\"", "\"alice\"", "c2Vjb25k", "secret.txt", "\"pw\""] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert!(text.contains("\"inline_bytes\": \"W3JlZGFjdGVkXQ==\""));
    // A Struct is opaque to redaction, as in Envoy.
    assert!(text.contains("\"environment_variable\": \"HOME\""));
}

#[test]
fn typed_struct_comes_back_canonical() {
    let v = dump(&load("good/typed_struct_xds.yaml"), DumpOptions::default()).unwrap();
    let tc = &v["configs"][2]["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    assert_eq!(tc["@type"], "type.googleapis.com/xds.type.v3.TypedStruct");
    assert_eq!(tc["value"]["settings"]["op_timeout"], "2.500s");
    assert_eq!(tc["value"]["settings"]["read_policy"], "PREFER_MASTER");
    assert_eq!(
        tc["value"]["settings"]["max_upstream_unknown_connections"],
        7
    );
}

#[test]
fn endpoints_group_by_sorted_locality() {
    let b = load("good/eds_localities.yaml");
    let resolved = |name: &str| {
        (name == "dns").then(|| {
            vec![
                DumpHost {
                    address: "[::1]:1".parse().unwrap(),
                    hostname: "hh".to_owned(),
                    weight: 2,
                    health: DumpHealth::Healthy,
                },
                DumpHost {
                    address: "127.0.0.5:2".parse().unwrap(),
                    hostname: "127.0.0.5".to_owned(),
                    weight: 1,
                    health: DumpHealth::Degraded,
                },
            ]
        })
    };
    let opts = DumpOptions {
        resource: Some("static_endpoint_configs".to_owned()),
        include_eds: true,
        ..DumpOptions::default()
    };
    let text = render_config_dump_with_hosts(&b, at(), &opts, &resolved).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Clusters by name: dns, static.
    let dns = &v["configs"][0]["endpoint_config"];
    assert_eq!(dns["cluster_name"], "dns");
    assert_eq!(
        dns["endpoints"][0]["locality"],
        serde_json::json!({"zone": "a"})
    );
    assert_eq!(
        dns["endpoints"][0]["lb_endpoints"][0]["metadata"],
        serde_json::json!({"filter_metadata": {"m": {"k": "v"}}})
    );
    assert_eq!(
        dns["endpoints"][1]["locality"],
        serde_json::json!({"zone": "z"})
    );
    assert_eq!(
        dns["endpoints"][1]["lb_endpoints"][0]["metadata"],
        serde_json::json!({})
    );
    assert_eq!(dns["policy"]["overprovisioning_factor"], 140);
    // Each host's live coarse health, as Envoy writes it.
    let health: Vec<(String, String)> = dns["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["lb_endpoints"].as_array().unwrap().iter())
        .map(|e| {
            (
                e["endpoint"]["address"]["socket_address"]["address"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                e["health_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        health.contains(&("127.0.0.5".to_owned(), "DEGRADED".to_owned())),
        "{health:?}"
    );
    assert!(
        health.contains(&("::1".to_owned(), "HEALTHY".to_owned())),
        "{health:?}"
    );

    let st = &v["configs"][1]["endpoint_config"];
    let localities: Vec<&serde_json::Value> = st["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["locality"])
        .collect();
    assert_eq!(
        localities,
        [
            &serde_json::json!({}),
            &serde_json::json!({"zone": "b"}),
            &serde_json::json!({"region": "r", "zone": "a"}),
        ]
    );
    assert_eq!(st["endpoints"][1]["load_balancing_weight"], 7);
    assert_eq!(st["endpoints"][0]["load_balancing_weight"], 0);
    let one = &st["endpoints"][1]["lb_endpoints"][1];
    assert_eq!(one["endpoint"]["hostname"], "one");
    assert_eq!(one["load_balancing_weight"], 4);
    assert_eq!(one["health_status"], "HEALTHY");
    assert!(one.get("metadata").is_none());

    // Without resolved hosts a DNS cluster has none, as before Envoy's first resolution.
    let v = dump(&b, opts).unwrap();
    assert!(v["configs"][0]["endpoint_config"]
        .get("endpoints")
        .is_none());
}

#[test]
fn bootstrap_json_alone() {
    let text = render_bootstrap_json(&load("good/full.yaml")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["node"]["user_agent_name"], "whatever");
    assert!(!text.contains("alice"));
}
