//! `/config_dump` against the real thing: each fixture is loaded by Envoy 1.40 (admin and
//! listeners moved to port 0) and by redvoy, and every query below must give the same status
//! and, parsed as JSON, the same document, apart from the differences listed in
//! [`normalize`]. Skipped when no `envoy` is on PATH (`make test` installs one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use redvoy_config::{
    load_bootstrap, read_discovery_file, render_config_dump, render_config_dump_dynamic,
    render_config_dump_with_hosts, DumpHealth, DumpHost, DumpOptions, DumpedResource,
    DynamicClusterDump, DynamicDump, DynamicListenerDump, LoadOptions,
};
use serde_json::Value;

/// How long Envoy may take to write its admin address (it starts in ~0.1 s).
const ENVOY_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Time given to Envoy's first DNS resolutions (`localhost`) before comparing endpoints.
const DNS_SETTLE: Duration = Duration::from_millis(1500);

/// The queries compared, as istioctl and operators send them (already percent-decoded).
const QUERIES: &[&str] = &[
    "",
    "include_eds",
    "mask=static_clusters",
    "mask=bootstrap",
    "mask=bootstrap.node.id",
    "mask=version_info,static_listeners",
    "mask=dynamic_active_clusters,dynamic_warming_clusters,static_clusters",
    "mask=dynamic_listeners,static_listeners",
    "mask=dynamic_route_configs,static_route_configs",
    "mask=dynamic_active_secrets,dynamic_warming_secrets",
    "mask=static_clusters.cluster",
    "mask=foo",
    "mask=",
    "mask=static_clusters,,bootstrap",
    "resource=static_clusters",
    "resource=static_listeners&mask=listener.name,last_updated",
    "resource=static_clusters&mask=cluster.load_assignment.cluster_name",
    "resource=static_clusters&mask=cluster",
    "resource=static_clusters&mask=foo,bar",
    "resource=dynamic_active_clusters",
    "resource=static_secrets",
    "resource=foo",
    "resource=version_info",
    "resource=bootstrap",
    "resource=static_endpoint_configs",
    "resource=static_endpoint_configs&include_eds",
    "include_eds&mask=static_endpoint_configs",
    "name_regex=redis.*",
    "name_regex=.*st.*&include_eds",
    "name_regex=redis_listener&resource=static_listeners",
    "name_regex=(",
];

/// Fixtures compared. Relative paths in them (DataSource files) are relative to the crate
/// directory, the working directory of both this test and the Envoy it starts.
const FIXTURES: &[&str] = &[
    "good/article.yaml",
    "good/envoy_examples_redis.yaml",
    "good/full.yaml",
    "good/typed_struct_xds.yaml",
    "good/typed_struct_udpa.yaml",
    "good/istio_stats_runtime.yaml",
    "good/eds_localities.yaml",
    "good/article.json",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn envoy_available() -> bool {
    Command::new("envoy").arg("--version").output().is_ok()
}

/// The fixture with admin and listeners on port 0, written as JSON text under the fixture's
/// own extension (JSON is YAML, so a `.yaml` copy is still read with YAML's rules).
fn with_free_ports(fixture: &str, dir: &Path) -> PathBuf {
    let path = crate_dir().join("tests/fixtures").join(fixture);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: Value = if fixture.ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_saphyr::from_str(&text).unwrap()
    };
    doc["admin"]["address"] = serde_json::json!({
        "socket_address": {"address": "127.0.0.1", "port_value": 0}
    });
    if let Some(listeners) = doc["static_resources"]["listeners"].as_array_mut() {
        for l in listeners {
            l["address"]["socket_address"]["port_value"] = Value::from(0);
        }
    }
    let name = Path::new(fixture).file_name().unwrap();
    let out = dir.join(name);
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    out
}

struct Envoy {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_envoy(config: &Path, dir: &Path) -> Envoy {
    let admin_file = dir.join(format!(
        "{}.admin",
        config.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&admin_file);
    let child = Command::new("envoy")
        .current_dir(crate_dir())
        .arg("-c")
        .arg(config)
        .args([
            "--use-dynamic-base-id",
            "-l",
            "error",
            "--admin-address-path",
        ])
        .arg(&admin_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut envoy = Envoy {
        child,
        admin: "127.0.0.1:0".parse().unwrap(),
    };
    let deadline = Instant::now() + ENVOY_START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&admin_file) {
            if let Ok(addr) = text.trim().parse() {
                envoy.admin = addr;
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "envoy did not start for {config:?}"
        );
        assert!(
            envoy.child.try_wait().unwrap().is_none(),
            "envoy exited for {config:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    envoy
}

fn options(query: &str) -> DumpOptions {
    let mut o = DumpOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "resource" => o.resource = Some(v.to_owned()),
            "mask" => o.mask = Some(v.to_owned()),
            "name_regex" => o.name_regex = Some(v.to_owned()),
            "include_eds" => o.include_eds = true,
            other => panic!("query key {other}"),
        }
    }
    o
}

/// The differences accepted (documented in the crate's `dump` module):
/// - `last_updated` values (each side's own clock; checked for format separately);
/// - `node.extensions` (Envoy's ~500 compiled-in extensions) and
///   `node.user_agent_build_version.metadata` (build SHA, SSL library).
fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(ts) = map.get_mut("last_updated") {
                let text = ts.as_str().unwrap_or_default();
                let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$").unwrap();
                assert!(re.is_match(text), "timestamp format: {text}");
                *ts = Value::from("<ts>");
            }
            map.remove("extensions");
            if let Some(build) = map.get_mut("user_agent_build_version") {
                if let Some(b) = build.as_object_mut() {
                    b.insert("metadata".to_owned(), Value::from("<build>"));
                }
            }
            for value in map.values_mut() {
                normalize(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// protobuf randomizes the marker starting a `DebugString()` per process.
fn normalize_error(body: &str) -> String {
    let marker = regex::Regex::new(r"goo\.gle/debug\w*\s*\n").unwrap();
    let body = marker.replace_all(body, "<marker>\n").into_owned();
    // RE2 and the `regex` crate word their syntax errors differently.
    match body.find("Error while parsing name_regex from ") {
        Some(i) => {
            let rest = &body[i..];
            let cut = rest.find(": ").map_or(rest.len(), |c| c + 2);
            format!("{}{}<re2 error>", &body[..i], &rest[..cut])
        }
        None => body,
    }
}

/// The hosts Envoy resolved for DNS clusters, as redvoy's cluster manager would report them.
fn envoy_hosts(envoy: &Envoy) -> Vec<(String, Vec<DumpHost>)> {
    let (_, body) = common::get(
        envoy.admin,
        "/config_dump?resource=static_endpoint_configs&include_eds",
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    let mut out = Vec::new();
    for entry in doc["configs"].as_array().cloned().unwrap_or_default() {
        let cla = &entry["endpoint_config"];
        let mut hosts = Vec::new();
        for loc in cla["endpoints"].as_array().cloned().unwrap_or_default() {
            for lb in loc["lb_endpoints"].as_array().cloned().unwrap_or_default() {
                let sa = &lb["endpoint"]["address"]["socket_address"];
                let ip: std::net::IpAddr = sa["address"].as_str().unwrap().parse().unwrap();
                let port = u16::try_from(sa["port_value"].as_u64().unwrap()).unwrap();
                hosts.push(DumpHost {
                    address: SocketAddr::new(ip, port),
                    hostname: lb["endpoint"]["hostname"].as_str().unwrap_or("").to_owned(),
                    weight: u32::try_from(lb["load_balancing_weight"].as_u64().unwrap()).unwrap(),
                    health: match lb["health_status"].as_str() {
                        Some("DEGRADED") => DumpHealth::Degraded,
                        Some("UNHEALTHY") => DumpHealth::Unhealthy,
                        _ => DumpHealth::Healthy,
                    },
                });
            }
        }
        out.push((cla["cluster_name"].as_str().unwrap().to_owned(), hosts));
    }
    out
}

#[test]
fn config_dump_matches_envoy() {
    if !envoy_available() {
        eprintln!("envoy not on PATH: skipping the /config_dump oracle");
        return;
    }
    let dir = std::env::temp_dir().join(format!("redvoy-config-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for fixture in FIXTURES {
        let config = with_free_ports(fixture, &dir);
        let bootstrap = load_bootstrap(&LoadOptions {
            config_path: Some(config.clone()),
            ..LoadOptions::default()
        })
        .unwrap();
        let envoy = start_envoy(&config, &dir);
        std::thread::sleep(DNS_SETTLE);
        let resolved = envoy_hosts(&envoy);
        // Only DNS clusters need hosts from outside; STATIC ones come from the config.
        let dns: Vec<String> = bootstrap
            .clusters
            .iter()
            .filter(|c| c.discovery != redvoy_config::model::DiscoveryType::Static)
            .map(|c| c.name.clone())
            .collect();
        let hosts = |name: &str| {
            if !dns.iter().any(|d| d == name) {
                return None;
            }
            resolved
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, h)| h.clone())
        };
        for query in QUERIES {
            let (status, body) = common::get(envoy.admin, &format!("/config_dump?{query}"));
            let ours = render_config_dump_with_hosts(
                &bootstrap,
                SystemTime::now(),
                &options(query),
                &hosts,
            );
            let case = format!("{fixture} ?{query}");
            match ours {
                Ok(text) if status == 200 => {
                    assert!(text.ends_with("}\n"), "{case}: no trailing newline");
                    let mut mine: Value = serde_json::from_str(&text).unwrap();
                    let mut theirs: Value = serde_json::from_str(&body).unwrap();
                    normalize(&mut mine);
                    normalize(&mut theirs);
                    if mine != theirs {
                        failures.push(format!(
                            "{case}:\n--- redvoy\n{}\n--- envoy\n{}",
                            serde_json::to_string_pretty(&mine).unwrap(),
                            serde_json::to_string_pretty(&theirs).unwrap()
                        ));
                    }
                }
                Ok(_) => failures.push(format!("{case}: redvoy 200, envoy {status} {body}")),
                Err(e) => {
                    if e.status != status || normalize_error(&e.message) != normalize_error(&body) {
                        failures.push(format!(
                            "{case}: redvoy {} {:?}, envoy {status} {body:?}",
                            e.status, e.message
                        ));
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Byte-level format (indentation, key order, number and string spelling): a resource dump
/// without Structs is identical text once timestamps are blanked.
#[test]
fn config_dump_text_matches_envoy() {
    if !envoy_available() {
        eprintln!("envoy not on PATH: skipping the /config_dump text oracle");
        return;
    }
    let dir = std::env::temp_dir().join(format!("redvoy-config-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ts = regex::Regex::new(r#""last_updated": "[^"]*""#).unwrap();
    // No Structs in these answers: Struct keys come out in hash order on both sides.
    for fixture in [
        "good/full.yaml",
        "good/article.yaml",
        "good/eds_localities.yaml",
    ] {
        let config = with_free_ports(fixture, &dir);
        let bootstrap = load_bootstrap(&LoadOptions {
            config_path: Some(config.clone()),
            ..LoadOptions::default()
        })
        .unwrap();
        let envoy = start_envoy(&config, &dir);
        for query in [
            "resource=static_listeners",
            "resource=static_clusters&mask=cluster.name,cluster.connect_timeout,\
             cluster.maglev_lb_config,cluster.load_assignment,last_updated",
            "mask=bootstrap.node.id,bootstrap.node.user_agent_name",
        ] {
            let (status, body) = common::get(envoy.admin, &format!("/config_dump?{query}"));
            assert_eq!(status, 200, "{fixture} ?{query}: {body}");
            let ours = render_config_dump(&bootstrap, SystemTime::now(), &options(query)).unwrap();
            assert_eq!(
                ts.replace_all(&ours, "<ts>"),
                ts.replace_all(&body, "<ts>"),
                "{fixture} ?{query}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const DYN_LDS: &str = r#"
version_info: l1
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: tcp
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
  traffic_direction: OUTBOUND
  filter_chains:
  - filter_chain_match: {destination_port: 6379}
    filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: t
        cluster: eds
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: redis
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.redis_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
        stat_prefix: r
        settings: {op_timeout: 1s}
        prefix_routes: {catch_all_route: {cluster: static}}
"#;

const DYN_CDS: &str = r#"
version_info: c1
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: static
  type: STATIC
  load_assignment:
    cluster_name: static
    endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: eds
  type: EDS
  eds_cluster_config:
    service_name: svc
    eds_config: {path_config_source: {path: EDS_PATH}}
"#;

const DYN_EDS: &str = r#"
version_info: e1
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: svc
  endpoints:
  - locality: {zone: z1}
    lb_endpoints:
    - endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 6379}}}
"#;

/// Listeners, clusters and endpoints from filesystem xDS: Envoy's dump and redvoy's, given the
/// same resources, agree.
#[test]
fn dynamic_config_dump_matches_envoy() {
    if !envoy_available() {
        eprintln!("envoy not on PATH: skipping the dynamic /config_dump oracle");
        return;
    }
    let dir = std::env::temp_dir().join(format!("redvoy-config-dyn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lds = dir.join("lds.yaml");
    let cds = dir.join("cds.yaml");
    let eds = dir.join("eds.yaml");
    std::fs::write(&lds, DYN_LDS).unwrap();
    std::fs::write(&cds, DYN_CDS.replace("EDS_PATH", &eds.to_string_lossy())).unwrap();
    std::fs::write(&eds, DYN_EDS).unwrap();
    let boot = dir.join("boot.yaml");
    std::fs::write(
        &boot,
        format!(
            "node: {{id: \"node-1\", cluster: \"c\"}}\n\
             admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n\
             dynamic_resources:\n\
             \x20 lds_config: {{path_config_source: {{path: {}}}}}\n\
             \x20 cds_config: {{path_config_source: {{path: {}}}}}\n",
            lds.display(),
            cds.display()
        ),
    )
    .unwrap();
    let bootstrap = load_bootstrap(&LoadOptions {
        config_path: Some(boot.clone()),
        ..LoadOptions::default()
    })
    .unwrap();
    let envoy = start_envoy(&boot, &dir);
    std::thread::sleep(Duration::from_millis(500));

    let now = SystemTime::now();
    let resource = |version: &str, value: &bytes::Bytes| DumpedResource {
        version_info: version.to_owned(),
        value: value.clone(),
        last_updated: now,
    };
    let l = read_discovery_file(&lds).unwrap();
    let c = read_discovery_file(&cds).unwrap();
    let e = read_discovery_file(&eds).unwrap();
    let state = DynamicDump {
        lds_version: l.version_info.clone(),
        cds_version: c.version_info.clone(),
        listeners: l
            .resources
            .iter()
            .map(|r| DynamicListenerDump {
                name: r.name.clone(),
                active: Some(resource(&l.version_info, &r.value)),
                ..Default::default()
            })
            .collect(),
        clusters: c
            .resources
            .iter()
            .map(|r| DynamicClusterDump {
                name: r.name.clone(),
                resource: resource(&c.version_info, &r.value),
                warming: false,
            })
            .collect(),
        endpoints: e
            .resources
            .iter()
            .map(|r| resource(&e.version_info, &r.value))
            .collect(),
        secrets: Vec::new(),
    };
    let mut failures = Vec::new();
    for query in [
        "",
        "include_eds",
        "resource=dynamic_listeners",
        "resource=dynamic_active_clusters&mask=cluster.name",
        "resource=dynamic_endpoint_configs&include_eds",
        "mask=version_info",
        "name_regex=tcp",
    ] {
        let (status, body) = common::get(envoy.admin, &format!("/config_dump?{query}"));
        assert_eq!(status, 200, "?{query}: {body}");
        let ours = render_config_dump_dynamic(&bootstrap, &state, now, &options(query), &|_| None)
            .unwrap();
        let mut mine: Value = serde_json::from_str(&ours).unwrap();
        let mut theirs: Value = serde_json::from_str(&body).unwrap();
        normalize(&mut mine);
        normalize(&mut theirs);
        if mine != theirs {
            failures.push(format!(
                "?{query}:\n--- redvoy\n{}\n--- envoy\n{}",
                serde_json::to_string_pretty(&mine).unwrap(),
                serde_json::to_string_pretty(&theirs).unwrap()
            ));
        }
    }
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
