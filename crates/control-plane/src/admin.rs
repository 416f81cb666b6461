//! The control plane's HTTP port: `/stats`, `/stats/prometheus`, `/debug/config` (what each
//! connected proxy is sent, and why), `/debug/status` (the last reading's errors), `/ready`.
//! A minimal HTTP/1.1 responder: one GET per connection, bounded request size and time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::server::Shared;

/// A request head larger than this is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that has not sent its request head by then, or not read the answer, is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors, say), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the admin port until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!("admin accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &shared).await {
                debug!("admin connection: {e}");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if buf.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await;
    if !matches!(head, Ok(Ok(true))) {
        return Ok(());
    }
    let line = String::from_utf8_lossy(&buf);
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let (status, content_type, body) = route(path, shared);
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(READ_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn route(path: &str, shared: &Shared) -> (&'static str, &'static str, String) {
    match path {
        "/stats" => ("200 OK", "text/plain", shared.stats.render_text()),
        "/stats/prometheus" => (
            "200 OK",
            "text/plain; version=0.0.4",
            shared.stats.render_prometheus(),
        ),
        // Ready once a reading has succeeded: before that nothing is served.
        "/ready" if shared.world().generation > 0 => ("200 OK", "text/plain", "LIVE\n".to_owned()),
        "/ready" => (
            "503 Service Unavailable",
            "text/plain",
            "PRE_INITIALIZING: no valid configuration read yet (see /debug/status)\n".to_owned(),
        ),
        "/debug/status" => ("200 OK", "application/json", status(shared).to_string()),
        "/debug/config" => (
            "200 OK",
            "application/json",
            debug_config(shared).to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "endpoints: /stats /stats/prometheus /debug/config /debug/status /ready\n".to_owned(),
        ),
    }
}

fn status(shared: &Shared) -> serde_json::Value {
    let world = shared.world();
    let errors = shared
        .last_errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    json!({
        "generation": world.generation,
        "files": world.inputs.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "services": world.inputs.services.len(),
        "envoy_filters": world.inputs.envoy_filters.iter().map(|f| format!("{}/{}", f.namespace, f.name)).collect::<Vec<_>>(),
        "ignored": world.inputs.ignored,
        "notes": world.generated.notes,
        "warnings": world.warnings,
        "vips": world.generated.vips,
        "last_rejected_errors": errors,
        "serving": if errors.is_empty() { "the current files" } else { "the last good reading (the current files were refused)" },
    })
}

fn debug_config(shared: &Shared) -> serde_json::Value {
    let world = shared.world();
    let mut proxies = Vec::new();
    for p in shared.connected() {
        let entry = match world.snapshot_for(&p) {
            Ok(s) => json!({
                "node_id": p.id,
                "namespace": p.namespace,
                "labels": p.labels,
                "envoy_filters": s.envoy_filters,
                "warnings": s.warnings,
                "listeners": s.listeners.iter().map(|r| json!({"version": r.version, "resource": r.json})).collect::<Vec<_>>(),
                "clusters": s.clusters.iter().map(|r| json!({"version": r.version, "resource": r.json})).collect::<Vec<_>>(),
                "endpoints": s.endpoints.values().map(|r| json!({"version": r.version, "resource": r.json})).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"node_id": p.id, "namespace": p.namespace, "error": e}),
        };
        proxies.push(entry);
    }
    json!({"generation": world.generation, "proxies": proxies})
}
