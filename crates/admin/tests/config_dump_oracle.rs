//! `/config_dump` against Envoy 1.40 itself: `testdata/config_dump/backend_dump.json` is what
//! Envoy answered to `/config_dump?include_eds` for a bootstrap with two redis_proxy listeners
//! and two STATIC clusters; each `caseN.txt` is what it answered to one query (`cases.json`).
//! A backend that returns that dump must give the same status, content type and JSON (node
//! `extensions` removed on both sides to keep the files small; `FieldMask` debug strings, which
//! protobuf randomises per process, compared by their fixed part).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use redvoy_admin::{
    serve, AdminBackend, AdminError, AdminState, ClusterStatus, ConfigDump, ConfigDumpQuery,
    DrainRequest, ListenerStatus, LogChange, LogLevel, MemoryStats, RuntimeView, ServerInfo,
    ServerState,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/config_dump")
}

struct Replay {
    dump: Value,
}

impl AdminBackend for Replay {
    fn config_dump(&self, query: &ConfigDumpQuery) -> Result<ConfigDump, AdminError> {
        let include_eds = query.include_eds;
        let mut dump = self.dump.clone();
        if !include_eds {
            let configs = dump["configs"].as_array_mut().unwrap();
            configs
                .retain(|c| c["@type"] != "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump");
        }
        Ok(ConfigDump::Full(dump.to_string()))
    }
    fn clusters(&self) -> Vec<ClusterStatus> {
        Vec::new()
    }
    fn listeners(&self) -> Vec<ListenerStatus> {
        Vec::new()
    }
    fn server_info(&self) -> ServerInfo {
        unimplemented!("not used")
    }
    fn drain_listeners(&self, _: DrainRequest) {}
    fn runtime(&self) -> RuntimeView {
        RuntimeView::default()
    }
    fn runtime_modify(&self, _: &[(String, String)]) -> Result<(), AdminError> {
        Ok(())
    }
    fn memory(&self) -> MemoryStats {
        MemoryStats::default()
    }
    fn loggers(&self) -> Vec<(String, LogLevel)> {
        Vec::new()
    }
    fn set_log_levels(&self, _: LogChange) {}
}

/// One request, `Connection: close`, whole response read: (status, content type, body).
async fn get(addr: std::net::SocketAddr, target: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap()
        .to_owned();
    (status, content_type, body.to_owned())
}

fn strip_extensions(mut v: Value) -> Value {
    if let Some(configs) = v.get_mut("configs").and_then(Value::as_array_mut) {
        for c in configs {
            if let Some(node) = c
                .pointer_mut("/bootstrap/node")
                .and_then(Value::as_object_mut)
            {
                node.remove("extensions");
            }
        }
    }
    v
}

#[tokio::test]
async fn config_dump_matches_envoy() {
    let dump: Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("backend_dump.json")).unwrap(),
    )
    .unwrap();
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("cases.json")).unwrap())
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, _quit) = tokio::sync::watch::channel(false);
    let state = AdminState {
        stats: redvoy_stats::Store::new(),
        server: Arc::new(ServerState::new()),
        shutdown,
        backend: Arc::new(Replay { dump }),
    };
    tokio::spawn(serve(listener, state));

    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 30);
    for case in cases {
        let query = case["query"].as_str().unwrap();
        let expected =
            std::fs::read_to_string(testdata().join(case["file"].as_str().unwrap())).unwrap();
        let (status, content_type, body) = get(addr, &format!("/config_dump?{query}")).await;
        assert_eq!(
            u64::from(status),
            case["status"].as_u64().unwrap(),
            "{query}: {body}"
        );
        assert_eq!(
            content_type,
            case["content_type"].as_str().unwrap(),
            "{query}"
        );
        if content_type == "application/json" {
            let ours = strip_extensions(serde_json::from_str(&body).unwrap());
            let envoys: Value = serde_json::from_str(&expected).unwrap();
            assert_eq!(ours, envoys, "{query}");
            assert!(body.ends_with("\n"), "{query}");
        } else if let Some(fixed) = expected.strip_prefix("FieldMask goo.gle/debug") {
            let tail = fixed.split_once('\n').unwrap().1;
            assert!(body.ends_with(tail), "{query}: {body}");
        } else {
            assert_eq!(body, expected, "{query}");
        }
    }
}
