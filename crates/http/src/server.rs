//! The connection manager: one downstream connection, its requests in turn, the router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redvoy_config::model;
use redvoy_stats::Store;
use redvoy_tls::Stream;
use redvoy_upstream::{Cluster, Host};
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::{self, BodyError, Framing};
use crate::head::{self, HeadError, RequestHead, UpstreamRequest};
use crate::io::Conn;
use crate::route::{Action, RouteTable};
use crate::stats::HcmStats;
use crate::DOWNSTREAM_IDLE_TIMEOUT;

const NO_HEALTHY_UPSTREAM: &[u8] = b"no healthy upstream";
const UPSTREAM_TIMEOUT: &[u8] = b"upstream request timeout";
const RESET_BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. \
                                    reset reason: ";

/// One compiled `HttpConnectionManager`: the route table and its stats. Immutable; shared by
/// every connection of the listener (a config change builds a new one).
#[derive(Debug)]
pub struct Hcm {
    routes: RouteTable,
    stats: HcmStats,
}

impl Hcm {
    pub fn new(config: &model::HttpConnectionManager, store: &Store) -> Self {
        Self {
            routes: RouteTable::new(&config.virtual_hosts),
            stats: HcmStats::new(store, &config.stat_prefix),
        }
    }

    pub fn stats(&self) -> &HcmStats {
        &self.stats
    }
}

/// Who ended a downstream connection (`downstream_cx_destroy_local` / `_remote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Local,
    Remote,
}

/// Keeps `downstream_cx_active` and the destroy counters right however the connection's task
/// ends (including being dropped by a worker shutting down).
struct CxGuard<'a> {
    stats: &'a HcmStats,
    start: Instant,
    end: End,
}

impl Drop for CxGuard<'_> {
    fn drop(&mut self) {
        let s = self.stats;
        s.downstream_cx_active.dec();
        s.downstream_cx_http1_active.dec();
        s.downstream_cx_destroy.inc();
        match self.end {
            End::Local => s.downstream_cx_destroy_local.inc(),
            End::Remote => s.downstream_cx_destroy_remote.inc(),
        }
        s.downstream_cx_length_ms
            .record(self.start.elapsed().as_millis() as u64);
    }
}

/// Serves one downstream HTTP/1.1 connection until either side closes it. `clusters` resolves
/// a route's cluster name against the current configuration (called once per request, so a
/// cluster swap reaches existing connections on their next request).
pub async fn serve_connection<F>(stream: Stream, hcm: Arc<Hcm>, clusters: F)
where
    F: Fn(&str) -> Option<Arc<Cluster>>,
{
    let stats = &hcm.stats;
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    stats.downstream_cx_http1_total.inc();
    stats.downstream_cx_http1_active.inc();
    let mut guard = CxGuard {
        stats,
        start: Instant::now(),
        end: End::Local,
    };
    let _ = stream.tcp().set_nodelay(true);
    let mut down = Conn::new(
        stream,
        stats.downstream_cx_rx_bytes_total.clone(),
        stats.downstream_cx_tx_bytes_total.clone(),
    );
    guard.end = connection_loop(&hcm, &clusters, &mut down).await;
}

async fn connection_loop<F>(hcm: &Hcm, clusters: &F, down: &mut Conn) -> End
where
    F: Fn(&str) -> Option<Arc<Cluster>>,
{
    let stats = &hcm.stats;
    loop {
        let head =
            match tokio::time::timeout(DOWNSTREAM_IDLE_TIMEOUT, head::read_request(down)).await {
                Err(_) => {
                    stats.downstream_cx_idle_timeout.inc();
                    return End::Local;
                }
                Ok(Ok(head)) => head,
                Ok(Err(HeadError::Closed | HeadError::Io(_))) => return End::Remote,
                Ok(Err(e @ (HeadError::TooLarge | HeadError::Malformed))) => {
                    debug!(error = %e, "downstream protocol error");
                    stats.downstream_cx_protocol_error.inc();
                    let (status, body): (u16, &[u8]) = match e {
                        HeadError::TooLarge => (431, b"Request Header Fields Too Large"),
                        _ => (400, b"Bad Request"),
                    };
                    let mut rq = RequestScope::start(stats);
                    let _ = down
                        .write_all(&head::local_reply(status, body, true, false))
                        .await;
                    rq.complete(status);
                    return End::Local;
                }
            };
        match serve_request(hcm, clusters, down, head).await {
            Ok(true) => {}
            Ok(false) => return End::Local,
            Err(end) => return end,
        }
    }
}

/// `downstream_rq_active` and the completion stats of one request.
struct RequestScope<'a> {
    stats: &'a HcmStats,
    start: Instant,
    done: bool,
}

impl<'a> RequestScope<'a> {
    fn start(stats: &'a HcmStats) -> Self {
        stats.downstream_rq_total.inc();
        stats.downstream_rq_http1_total.inc();
        stats.downstream_rq_active.inc();
        Self {
            stats,
            start: Instant::now(),
            done: false,
        }
    }

    /// The response was sent completely with this status.
    fn complete(&mut self, status: u16) {
        self.stats.record_status(status);
        self.stats.downstream_rq_completed.inc();
        self.stats
            .downstream_rq_time
            .record(self.start.elapsed().as_millis() as u64);
        self.done = true;
    }
}

impl Drop for RequestScope<'_> {
    fn drop(&mut self) {
        self.stats.downstream_rq_active.dec();
        if !self.done {
            self.stats.downstream_cx_destroy_active_rq.inc();
        }
    }
}

/// Serves one request. `Ok(keep_alive)`, or `Err` when the connection must end now.
async fn serve_request<F>(
    hcm: &Hcm,
    clusters: &F,
    down: &mut Conn,
    req: RequestHead,
) -> Result<bool, End>
where
    F: Fn(&str) -> Option<Arc<Cluster>>,
{
    let stats = &hcm.stats;
    let mut rq = RequestScope::start(stats);
    let head_only = req.method == "HEAD";
    let has_body = req.framing != Framing::Empty;

    // A reply sent before the request body was read: the connection cannot be reused.
    let reply =
        |status: u16, body: &[u8], close: bool| head::local_reply(status, body, close, head_only);

    if req.http10 {
        write(down, &reply(426, b"Upgrade Required", true)).await?;
        rq.complete(426);
        return Ok(false);
    }
    let Some(host) = req.host.as_deref() else {
        stats.downstream_cx_protocol_error.inc();
        write(down, &reply(400, b"", true)).await?;
        rq.complete(400);
        return Ok(false);
    };
    if req.expect_continue {
        write(down, b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }

    stats.rq_total.inc();
    let close_after_local = req.close || has_body;
    let Some(route) = hcm.routes.route(host, &req.path) else {
        stats.no_route.inc();
        write(down, &reply(404, b"", close_after_local)).await?;
        rq.complete(404);
        return Ok(!close_after_local);
    };
    let (cluster_name, prefix_rewrite, timeout) = match &route.action {
        Action::Direct { status, body } => {
            stats.rq_direct_response.inc();
            let body = body.as_deref().unwrap_or_default();
            write(down, &reply(*status, body, close_after_local)).await?;
            rq.complete(*status);
            return Ok(!close_after_local);
        }
        Action::Cluster {
            cluster,
            prefix_rewrite,
            timeout,
        } => (cluster, prefix_rewrite, *timeout),
    };

    let Some(cluster) = clusters(cluster_name) else {
        stats.no_cluster.inc();
        write(down, &reply(503, b"", close_after_local)).await?;
        rq.complete(503);
        return Ok(!close_after_local);
    };
    let picked = cluster
        .host_set_guard()
        .choose_host(rand::random())
        .cloned();
    let Some(upstream_host) = picked else {
        cluster.stats.upstream_cx_none_healthy.inc();
        write(down, &reply(503, NO_HEALTHY_UPSTREAM, close_after_local)).await?;
        rq.complete(503);
        return Ok(!close_after_local);
    };

    let rewritten = prefix_rewrite
        .as_deref()
        .map(|rw| route.rewrite(&req.path, rw));
    let upstream_head = head::upstream_request(
        &req,
        &UpstreamRequest {
            path: rewritten.as_deref().unwrap_or(&req.path),
            original_path: rewritten.as_ref().map(|_| req.path.as_str()),
            timeout_ms: timeout.map(|t| t.as_millis()),
            chunked: req.framing == Framing::Chunked,
        },
    );
    let mut progress = Progress {
        request_body_done: !has_body,
        response_started: false,
    };
    let exchange = Exchange {
        cluster: &cluster,
        host: &upstream_host,
        head: &upstream_head,
        req: &req,
        head_only,
    };
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, exchange.run(down, &mut progress))
            .await
            .unwrap_or(Err(ExchangeError::Timeout)),
        None => exchange.run(down, &mut progress).await,
    };
    let (status, body): (u16, Vec<u8>) = match result {
        Ok(status) => {
            cluster.stats.upstream_rq_completed.inc();
            rq.complete(status);
            return Ok(!req.close);
        }
        Err(ExchangeError::Downstream) => return Err(End::Remote),
        Err(e) if progress.response_started => {
            // Too late for a local reply: Envoy resets the stream, closing the connection.
            debug!(error = ?e, "upstream failed after the response started");
            if matches!(e, ExchangeError::Timeout) {
                cluster.stats.upstream_rq_timeout.inc();
            }
            stats.rq_reset_after_downstream_response_started.inc();
            return Err(End::Local);
        }
        Err(ExchangeError::Timeout) => {
            cluster.stats.upstream_rq_timeout.inc();
            upstream_host
                .stats
                .rq_timeout
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (504, UPSTREAM_TIMEOUT.to_vec())
        }
        Err(ExchangeError::Reset(reason)) => {
            (503, format!("{RESET_BEFORE_HEADERS}{reason}").into_bytes())
        }
    };
    cluster.stats.upstream_rq_completed.inc();
    let close = req.close || !progress.request_body_done;
    write(down, &reply(status, &body, close)).await?;
    rq.complete(status);
    Ok(!close)
}

async fn write(down: &mut Conn, data: &[u8]) -> Result<(), End> {
    down.write_all(data).await.map_err(|_| End::Remote)
}

/// What one upstream exchange has done so far (read after a timeout cancelled it).
struct Progress {
    request_body_done: bool,
    response_started: bool,
}

#[derive(Debug)]
enum ExchangeError {
    /// The route timeout expired.
    Timeout,
    /// The upstream connection failed or was reset; Envoy's reset reason.
    Reset(&'static str),
    /// The downstream client went away.
    Downstream,
}

struct Exchange<'a> {
    cluster: &'a Cluster,
    host: &'a Arc<Host>,
    head: &'a [u8],
    req: &'a RequestHead,
    head_only: bool,
}

impl Exchange<'_> {
    /// Connects, sends the request (streaming its body), and streams the response back.
    /// Returns the status sent downstream.
    async fn run(&self, down: &mut Conn, progress: &mut Progress) -> Result<u16, ExchangeError> {
        let cs = &self.cluster.stats;
        // One upstream connection per request: both `max_connections` and `max_requests`
        // bound it. Envoy would queue up to `max_pending_requests`; redvoy answers at once.
        let breakers = &self.cluster.config.circuit_breakers.default;
        let Some(_slot) = self
            .cluster
            .try_open_connection(breakers.max_connections.min(breakers.max_requests))
        else {
            cs.upstream_rq_pending_overflow.inc();
            return Err(ExchangeError::Reset("overflow"));
        };
        let mut up = self.connect().await?;
        let _cx = GaugeGuard::new(cs.upstream_cx_active.get());
        let _active = GaugeGuard::new(cs.upstream_rq_active.get());
        cs.upstream_rq_total.inc();
        self.host
            .stats
            .rq_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

        let sent = Instant::now();
        up.write_all(self.head)
            .await
            .map_err(|_| ExchangeError::Reset("connection termination"))?;
        let chunked_request = self.req.framing == Framing::Chunked;
        match body::copy(down, &mut up, self.req.framing, chunked_request).await {
            Ok(()) => progress.request_body_done = true,
            Err(BodyError::Src(_)) => return Err(ExchangeError::Downstream),
            Err(BodyError::Dst(_)) => return Err(ExchangeError::Reset("connection termination")),
        }

        let rsp = match head::read_response(&mut up).await {
            Ok(rsp) => rsp,
            Err(HeadError::Closed | HeadError::Io(_)) => {
                return Err(ExchangeError::Reset("connection termination"))
            }
            Err(HeadError::TooLarge | HeadError::Malformed) => {
                cs.upstream_cx_protocol_error.inc();
                return Err(ExchangeError::Reset("protocol error"));
            }
        };
        let no_body = self.head_only
            || rsp.status == 204
            || rsp.status == 304
            || (100..200).contains(&rsp.status);
        let framing = if no_body {
            Framing::Empty
        } else if rsp.transfer_chunked {
            Framing::Chunked
        } else {
            match rsp.content_length {
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        // Envoy re-frames an unknown-length (close-delimited) body as chunked.
        let chunked_out = matches!(framing, Framing::Chunked | Framing::Close);
        let head = head::downstream_response(
            &rsp,
            sent.elapsed().as_millis(),
            self.req.close,
            chunked_out && !self.head_only,
        );
        progress.response_started = true;
        down.write_all(&head)
            .await
            .map_err(|_| ExchangeError::Downstream)?;
        match body::copy(&mut up, down, framing, chunked_out).await {
            Ok(()) => {}
            Err(BodyError::Src(_)) => return Err(ExchangeError::Reset("connection termination")),
            Err(BodyError::Dst(_)) => return Err(ExchangeError::Downstream),
        }
        Ok(rsp.status)
    }

    async fn connect(&self) -> Result<Conn, ExchangeError> {
        let cs = &self.cluster.stats;
        if self.cluster.tls_for(self.host).is_some() {
            // Never plaintext to a host the config says to reach over TLS.
            tls_refused_once(&self.cluster.name);
            cs.upstream_cx_connect_fail.inc();
            return Err(ExchangeError::Reset("connection failure"));
        }
        let addr: SocketAddr = self.host.address;
        cs.upstream_cx_total.inc();
        self.host
            .stats
            .cx_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let connect_timeout = self.cluster.config.connect_timeout;
        let started = Instant::now();
        let stream =
            match tokio::time::timeout(nonzero(connect_timeout), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%addr, error = %e, "upstream connect failed");
                    cs.upstream_cx_connect_fail.inc();
                    self.host
                        .stats
                        .cx_connect_fail
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(ExchangeError::Reset("remote connection failure"));
                }
                Err(_) => {
                    cs.upstream_cx_connect_fail.inc();
                    cs.upstream_cx_connect_timeout.inc();
                    self.host
                        .stats
                        .cx_connect_fail
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(ExchangeError::Reset("connection timeout"));
                }
            };
        cs.upstream_cx_connect_ms
            .record(started.elapsed().as_millis() as u64);
        let _ = stream.set_nodelay(true);
        redvoy_upstream::set_tcp_keepalive(&stream, self.cluster.config.tcp_keepalive.as_ref());
        Ok(Conn::new(
            Stream::Plain(stream),
            cs.upstream_cx_rx_bytes_total.get().clone(),
            cs.upstream_cx_tx_bytes_total.get().clone(),
        ))
    }
}

/// A zero `connect_timeout` would fail every connect; treat it as Envoy's minimum tick.
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

struct GaugeGuard<'a>(&'a redvoy_stats::Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a redvoy_stats::Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Logs, once per process, that an HTTP route's cluster asks for TLS, which the router does not
/// speak yet: its requests fail instead of going out in plaintext.
fn tls_refused_once(cluster: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            cluster,
            "the HTTP router does not speak TLS yet: requests to this TLS cluster fail \
             (never sent in plaintext)"
        );
    });
}
