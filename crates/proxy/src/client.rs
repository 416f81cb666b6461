//! One pipelined connection to one upstream Redis host (Envoy's `common/redis/client_impl`).
//!
//! Requests from every session of a worker are appended to one output buffer and written
//! together; replies are matched to requests in FIFO order. The connection is opened lazily on
//! the first request and re-opened on the next request after it fails. A client lives on one
//! worker thread only (`Rc`, `RefCell`): no lock is ever taken.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use redvoy_resp::{Decoder, DecoderMode, Frame, Limits};
use redvoy_stats::{Counter, Histogram, HistogramUnit, Store};
use redvoy_upstream::{Cluster, ClusterStats, Host, OutlierResult};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{sleep_until, timeout};
use tokio_rustls::client::TlsStream;
use tracing::debug;

use crate::clock;
use crate::pending::{Completion, UpstreamFailure};
use crate::redirect::{RedirectRequest, Redirection, Redirector};

/// Read buffer growth step for upstream replies.
const READ_CHUNK: usize = 64 * 1024;
/// Most a read reserves ahead for a bulk value whose length its header announced; beyond it
/// the buffer grows as bytes arrive.
const MAX_BULK_RESERVE: usize = 16 * 1024 * 1024;
/// A write buffer larger than this (after a burst) is freed once written, not kept.
const RETAINED_WRITE_BUFFER: usize = 1024 * 1024;

/// Settings shared by every client of one (filter, cluster) pool.
pub(crate) struct ClientConfig {
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    /// The cluster's `upstream_connection_options.tcp_keepalive`.
    pub tcp_keepalive: Option<redvoy_config::model::TcpKeepalive>,
    /// Bytes written first on every new connection (`auth ...`, `readonly`); one reply each
    /// is swallowed, unchecked, as Envoy does.
    pub prelude: Bytes,
    pub prelude_replies: usize,
    pub max_buffer_size_before_flush: usize,
    pub buffer_flush_timeout: Duration,
    pub cluster_stats: Arc<ClusterStats>,
    /// `cluster.<name>.redis_cluster.upstream_commands.upstream_rq_time` (µs).
    pub upstream_rq_time: Histogram,
    /// Per-command upstream stats, with `enable_command_stats` only.
    pub command_stats: Option<CommandStatsCache>,
    /// The cluster, when it runs outlier detection: every result is reported to it.
    pub outlier: Option<Arc<Cluster>>,
    /// The cluster, when its circuit breakers set limits redvoy enforces (beyond Envoy):
    /// every request and connection takes a place first.
    pub limits: Option<Arc<Cluster>>,
    /// The cluster's TLS transport socket; `None` for plaintext.
    /// The cluster, when any of its hosts is reached over TLS (each host's socket is its
    /// `transport_socket_matches` entry's, else the cluster's).
    pub tls: Option<Arc<redvoy_upstream::Cluster>>,
}

/// Writes `buf` (how much went is returned), or, with nothing left to write, flushes.
async fn write_or_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
) -> std::io::Result<Option<usize>> {
    if buf.is_empty() {
        wr.flush().await.map(|()| None)
    } else {
        wr.write(buf).await.map(Some)
    }
}

/// A connected upstream socket.
enum Upstream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// `cluster.<name>.redis_cluster.upstream_commands.<cmd>.*`.
pub(crate) struct UpstreamCommandStats {
    total: Counter,
    success: Counter,
    failure: Counter,
    latency: Histogram,
}

/// This worker's handles to the per-command upstream stats of one pool. Envoy creates them on
/// first use, so the store is consulted once per command name per worker, then never again.
pub(crate) struct CommandStatsCache {
    store: Store,
    /// `cluster.<name>.redis_cluster.upstream_commands.`
    prefix: String,
    by_name: RefCell<FxHashMap<&'static str, Rc<UpstreamCommandStats>>>,
}

impl CommandStatsCache {
    pub(crate) fn new(store: Store, cluster: &str) -> Self {
        Self {
            store,
            prefix: format!("cluster.{cluster}.redis_cluster.upstream_commands."),
            by_name: RefCell::new(FxHashMap::default()),
        }
    }

    /// `name` is the command's upstream stat name (`CommandSpec::upstream_stat`): Envoy
    /// buckets every command outside the simple, eval, sum, mget and mset sets as `unknown`
    /// (custom commands, auth, multi, cluster-scope commands...).
    fn get(&self, name: &'static str) -> Rc<UpstreamCommandStats> {
        if let Some(stats) = self.by_name.borrow().get(name) {
            return Rc::clone(stats);
        }
        let p = format!("{}{name}.", self.prefix);
        let stats = Rc::new(UpstreamCommandStats {
            total: self.store.counter(&format!("{p}total")),
            success: self.store.counter(&format!("{p}success")),
            failure: self.store.counter(&format!("{p}failure")),
            latency: self
                .store
                .histogram(&format!("{p}latency"), HistogramUnit::Microseconds),
        });
        self.by_name.borrow_mut().insert(name, Rc::clone(&stats));
        stats
    }
}

/// What a pooled request keeps so that a MOVED/ASK reply can resend it elsewhere.
struct Resendable {
    request: Bytes,
    stat: &'static str,
    hops: u8,
}

struct PendingRequest {
    /// `None` for replies nobody waits for: mirrors, the connection prelude.
    completion: Option<Completion>,
    /// Set on pooled clients of a pool with `enable_redirection`.
    resend: Option<Resendable>,
    sent_at: Instant,
    counted: bool,
    /// Took a place under the cluster's enforced limits; gives it back when it ends.
    holds_place: bool,
    command_stats: Option<Rc<UpstreamCommandStats>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnState {
    /// No connection; the next request opens one.
    Idle,
    Connecting,
    Connected,
}

struct Inner {
    state: ConnState,
    out: BytesMut,
    pending: VecDeque<PendingRequest>,
    /// op_timeout deadline; armed while requests are pending.
    deadline: Option<Instant>,
    /// When the first byte of the current unflushed batch was queued (write batching).
    batch_started: Option<Instant>,
}

pub(crate) struct UpstreamClient {
    host: Arc<Host>,
    config: Rc<ClientConfig>,
    inner: RefCell<Inner>,
    wake: Notify,
    /// Set when the owner wants the connection closed once nothing is pending (host removed,
    /// transaction finished).
    close_when_idle: Cell<bool>,
    /// The pool of a pooled client (empty for a transaction's dedicated connection): it
    /// follows MOVED/ASK and counts failures for Redis Cluster refreshes.
    pool: Weak<dyn Redirector>,
    /// `enable_redirection` on a pooled client.
    redirects: bool,
    /// Why the connection is being closed, for outlier detection (set where it is decided).
    close_reason: Cell<Option<OutlierResult>>,
    /// Requests queued while the connection opens, counted against an enforced
    /// `max_pending_requests` until it opens or fails.
    waiting: Cell<u64>,
    /// Requests sent and requests answered (or failed) not yet in the in-flight gauges (see
    /// `report_in_flight`).
    unreported_sent: Cell<u64>,
    unreported_done: Cell<u64>,
}

// === impl UpstreamClient ===

impl UpstreamClient {
    pub(crate) fn new(
        host: Arc<Host>,
        config: Rc<ClientConfig>,
        pool: Weak<dyn Redirector>,
        redirects: bool,
    ) -> Rc<Self> {
        Rc::new(Self {
            host,
            config,
            inner: RefCell::new(Inner {
                state: ConnState::Idle,
                out: BytesMut::new(),
                pending: VecDeque::new(),
                deadline: None,
                batch_started: None,
            }),
            wake: Notify::new(),
            close_when_idle: Cell::new(false),
            pool,
            redirects,
            close_reason: Cell::new(None),
            waiting: Cell::new(0),
            unreported_sent: Cell::new(0),
            unreported_done: Cell::new(0),
        })
    }

    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Queues an encoded request whose upstream stat name is `stat` (see
    /// [`CommandStatsCache::get`]). The reply (or failure) goes to `completion`.
    pub(crate) fn send(
        self: &Rc<Self>,
        request: &[u8],
        completion: Option<Completion>,
        stat: &'static str,
    ) {
        let resend = self.redirects.then(|| Resendable {
            request: Bytes::copy_from_slice(request),
            stat,
            hops: 0,
        });
        self.enqueue(request, completion, stat, resend, true);
    }

    /// Sends a request that a MOVED/ASK reply sent here; after ASK, `asking` goes first (its
    /// reply is discarded, as in Envoy).
    pub(crate) fn send_redirected(self: &Rc<Self>, ask: bool, r: RedirectRequest) {
        if ask {
            // Part of the redirected request: it takes no limit place of its own, so it can
            // never be refused while the request it prepares goes through.
            self.enqueue(b"*1\r\n$6\r\nasking\r\n", None, "unknown", None, false);
        }
        let resend = self.redirects.then(|| Resendable {
            request: r.request.clone(),
            stat: r.stat,
            hops: r.hops,
        });
        self.enqueue(&r.request, r.completion, r.stat, resend, true);
    }

    fn enqueue(
        self: &Rc<Self>,
        request: &[u8],
        completion: Option<Completion>,
        stat: &'static str,
        resend: Option<Resendable>,
        limited: bool,
    ) {
        if self.host_known_bad() {
            // Beyond Envoy: a host is only chosen while it is known bad when nothing better
            // exists for the key (panic mode, a slot's only primary). Envoy would send the
            // request and have the client wait op_timeout for a hung host; the answer would be
            // the same `upstream failure`, so it is given at once.
            self.config.cluster_stats.upstream_cx_none_healthy.inc();
            if let Some(c) = completion {
                c.complete(Err(UpstreamFailure::Failure));
            }
            return;
        }
        let mut holds_place = false;
        if let (Some(cluster), true) = (&self.config.limits, limited) {
            let connecting = self.inner.borrow().state != ConnState::Connected;
            if let Err(overflow) = cluster.try_start_redis_request(connecting) {
                // Never sent: the client learns at once which limit it hit.
                if let Some(c) = completion {
                    c.complete(Err(UpstreamFailure::Overflow(overflow)));
                }
                return;
            }
            if connecting {
                self.waiting.set(self.waiting.get() + 1);
            }
            holds_place = true;
        }
        let now = clock::now();
        let command_stats = self.config.command_stats.as_ref().map(|c| c.get(stat));
        if let Some(cs) = &command_stats {
            cs.total.inc();
        }
        let (spawn, connected) = {
            let mut inner = self.inner.borrow_mut();
            if inner.pending.is_empty() {
                inner.deadline = Some(now + self.config.op_timeout);
            }
            if inner.out.is_empty() {
                inner.batch_started = Some(now);
            }
            inner.out.extend_from_slice(request);
            inner.pending.push_back(PendingRequest {
                completion,
                resend,
                sent_at: now,
                counted: true,
                holds_place,
                command_stats,
            });
            let connected = inner.state == ConnState::Connected;
            let spawn = inner.state == ConnState::Idle;
            if spawn {
                inner.state = ConnState::Connecting;
            }
            (spawn, connected)
        };
        self.config.cluster_stats.upstream_rq_total.inc();
        // LEAST_REQUEST balancing reads the host's rq_active for the very next request: it
        // moves at once, as in Envoy; the other in-flight counts wait for the loop.
        self.host.stats.rq_active.fetch_add(1, Ordering::Relaxed);
        self.unreported_sent.set(self.unreported_sent.get() + 1);
        if !connected {
            // No connection loop runs yet to report it: the gauges move now.
            self.report_in_flight();
        }
        if spawn {
            let this = Rc::clone(self);
            tokio::task::spawn_local(clock::Fresh::new(async move { this.run().await }));
        } else {
            self.wake.notify_one();
        }
    }

    /// Whether the host is known not to answer: failed by health checks that timed out (it
    /// hangs), or ejected by outlier detection.
    fn host_known_bad(&self) -> bool {
        self.host.health.known_bad()
    }

    /// Whether no request is waiting for a reply.
    pub(crate) fn is_idle(&self) -> bool {
        self.inner.borrow().pending.is_empty()
    }

    /// Asks the connection to close once every pending reply has been delivered.
    pub(crate) fn close_when_idle(&self) {
        self.close_when_idle.set(true);
        self.wake.notify_one();
    }

    /// Opens the connection (under an enforced `max_connections`, when set) and serves it.
    async fn run(self: Rc<Self>) {
        let Some(cluster) = self.config.limits.clone() else {
            return self.connect_and_serve().await;
        };
        if let Err(overflow) = cluster.try_open_redis_connection(&self.host) {
            self.fail_all_with(UpstreamFailure::Overflow(overflow));
            return;
        }
        Rc::clone(&self).connect_and_serve().await;
        cluster.close_redis_connection(&self.host);
    }

    async fn connect_and_serve(self: Rc<Self>) {
        let addr = self.host.address;
        let stats = &self.config.cluster_stats;
        stats.upstream_cx_total.inc();
        self.host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        // Envoy counts a connection as active from the moment it is created.
        stats.upstream_cx_active.inc();
        self.host.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let connected = timeout(self.config.connect_timeout, TcpStream::connect(addr)).await;
        if !matches!(connected, Ok(Ok(_))) {
            stats.upstream_cx_active.dec();
            self.host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        }
        let stream = match connected {
            Ok(Ok(s)) => {
                redvoy_upstream::set_tcp_keepalive(&s, self.config.tcp_keepalive.as_ref());
                s
            }
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "upstream connect failed");
                return self.connect_failed(false);
            }
            Err(_) => {
                debug!(%addr, "upstream connect timeout");
                return self.connect_failed(true);
            }
        };
        let _ = stream.set_nodelay(true);
        // A TLS cluster: the handshake completes the connect, within what is left of
        // connect_timeout; a failed handshake is a failed connect, never a plaintext one.
        let stream = match self
            .config
            .tls
            .as_ref()
            .and_then(|cluster| cluster.tls_for(&self.host))
        {
            None => Upstream::Plain(stream),
            Some(tls) => {
                let Some(connector) = tls.connector() else {
                    debug!(%addr, "upstream TLS secrets not ready");
                    stats.upstream_cx_active.dec();
                    self.host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
                    return self.connect_failed(false);
                };
                let left = self
                    .config
                    .connect_timeout
                    .saturating_sub(started.elapsed());
                match timeout(left, connector.connect(stream, addr)).await {
                    Ok(Ok(s)) => Upstream::Tls(Box::new(s)),
                    outcome => {
                        if let Ok(Err(e)) = &outcome {
                            debug!(%addr, error = %e, "upstream TLS handshake failed");
                        }
                        stats.upstream_cx_active.dec();
                        self.host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
                        return self.connect_failed(outcome.is_err());
                    }
                }
            }
        };
        self.stop_waiting();
        {
            let mut inner = self.inner.borrow_mut();
            inner.state = ConnState::Connected;
            if !self.config.prelude.is_empty() {
                // The prelude goes before everything queued while connecting.
                let mut out = BytesMut::with_capacity(self.config.prelude.len() + inner.out.len());
                out.extend_from_slice(&self.config.prelude);
                out.extend_from_slice(&inner.out);
                inner.out = out;
                for _ in 0..self.config.prelude_replies {
                    inner.pending.push_front(PendingRequest {
                        completion: None,
                        resend: None,
                        sent_at: Instant::now(),
                        counted: false,
                        holds_place: false,
                        command_stats: None,
                    });
                }
            }
        }
        let local_close = match stream {
            Upstream::Plain(s) => self.serve(s, addr).await,
            Upstream::Tls(s) => self.serve_tls(*s, addr).await,
        };
        // Envoy's redis client reports a remote close to outlier detection only when requests
        // were waiting on the connection: an idle connection the server closed is no failure.
        let active_rq = !self.inner.borrow().pending.is_empty();
        match self.close_reason.take() {
            Some(reason) => self.report(reason),
            None if !local_close && active_rq => {
                self.report_failure(OutlierResult::LocalOriginConnectFailed)
            }
            None => {}
        }
        stats.upstream_cx_active.dec();
        self.host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        self.record_destroy(local_close);
        self.fail_all();
    }

    /// A connect (or TLS handshake) that failed or timed out: counted as Envoy counts it, and
    /// everything queued fails.
    fn connect_failed(&self, timed_out: bool) {
        let stats = &self.config.cluster_stats;
        if timed_out {
            self.report(OutlierResult::LocalOriginTimeout);
            stats.upstream_cx_connect_timeout.inc();
        } else {
            self.report_failure(OutlierResult::LocalOriginConnectFailed);
        }
        stats.upstream_cx_connect_fail.inc();
        self.host
            .stats
            .cx_connect_fail
            .fetch_add(1, Ordering::Relaxed);
        // Envoy counts a refused connect as a remote close of that connection, a timed-out one
        // as a local close.
        self.record_destroy(timed_out);
        self.fail_all();
    }

    /// Envoy's `upstream_cx_destroy*` counters for a connection that is going away.
    fn record_destroy(&self, local: bool) {
        let stats = &self.config.cluster_stats;
        let active_rq = !self.inner.borrow().pending.is_empty();
        stats.upstream_cx_destroy.inc();
        if local {
            stats.upstream_cx_destroy_local.inc();
        } else {
            stats.upstream_cx_destroy_remote.inc();
        }
        if active_rq {
            stats.upstream_cx_destroy_with_active_rq.inc();
            if local {
                stats.upstream_cx_destroy_local_with_active_rq.inc();
            } else {
                stats.upstream_cx_destroy_remote_with_active_rq.inc();
            }
        }
    }

    /// Pumps requests and replies until the connection ends. Returns true when we closed it.
    async fn serve(&self, mut stream: TcpStream, addr: SocketAddr) -> bool {
        let (rd, wr) = stream.split();
        self.pump::<_, _, false>(rd, wr, addr).await
    }

    /// [`Self::serve`] over TLS.
    async fn serve_tls(&self, stream: TlsStream<TcpStream>, addr: SocketAddr) -> bool {
        let (rd, wr) = tokio::io::split(stream);
        self.pump::<_, _, true>(rd, wr, addr).await
    }

    /// The connection's loop. With `FLUSH` (TLS), a write may leave records buffered in the
    /// session when the socket is full: they are flushed before the loop waits for more
    /// requests. Plaintext writes go straight to the socket, so that branch compiles away.
    async fn pump<R, W, const FLUSH: bool>(&self, mut rd: R, mut wr: W, addr: SocketAddr) -> bool
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut unflushed = false;
        let mut decoder = Decoder::new(DecoderMode::Reply, Limits::default());
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut wbuf = BytesMut::new();
        let stats = &self.config.cluster_stats;
        loop {
            self.report_in_flight();
            let (deadline, flush_at) = {
                let mut inner = self.inner.borrow_mut();
                if inner.pending.is_empty() && self.close_when_idle.get() {
                    return true;
                }
                let mut flush_at = None;
                if wbuf.is_empty() && !inner.out.is_empty() {
                    let threshold = self.config.max_buffer_size_before_flush;
                    let due = inner
                        .batch_started
                        .map(|t| t + self.config.buffer_flush_timeout);
                    if threshold == 0
                        || inner.out.len() >= threshold
                        || due.is_none_or(|d| d <= clock::now())
                    {
                        // The two buffers trade places: neither is ever given away, so
                        // batching allocates nothing once both have grown.
                        std::mem::swap(&mut wbuf, &mut inner.out);
                        if inner.out.capacity() > RETAINED_WRITE_BUFFER {
                            inner.out = BytesMut::new();
                        }
                        inner.batch_started = None;
                    } else {
                        flush_at = due;
                    }
                }
                (inner.deadline, flush_at)
            };
            tokio::select! {
                res = rd.read_buf(&mut rbuf) => {
                    match res {
                        Ok(0) => {
                            debug!(%addr, "upstream closed the connection");
                            return false;
                        }
                        Ok(_) => {
                            // Envoy 1.40's redis client attaches no byte counters to its
                            // connections (upstream_cx_{rx,tx}_bytes_total stay 0): same here.
                            loop {
                                match decoder.decode(&mut rbuf) {
                                    Ok(Some(frame)) => {
                                        if !self.on_reply(frame) {
                                            stats.upstream_cx_protocol_error.inc();
                                            self.close_reason
                                                .set(Some(OutlierResult::ExtOriginRequestFailed));
                                            return true;
                                        }
                                    }
                                    Ok(None) => break,
                                    Err(e) => {
                                        debug!(%addr, error = %e, "upstream protocol error");
                                        stats.upstream_cx_protocol_error.inc();
                                        self.close_reason
                                            .set(Some(OutlierResult::ExtOriginRequestFailed));
                                        return true;
                                    }
                                }
                            }
                            match decoder.bulk_end_hint() {
                                // A large value: one buffer of its size, so the reply that
                                // keeps it pins no more than it (a slow client's replies). Up
                                // to a bound: a header alone must not reserve 512 MiB.
                                Some(end) if end > rbuf.capacity() => {
                                    rbuf.reserve((end - rbuf.len()).min(MAX_BULK_RESERVE));
                                }
                                _ if rbuf.capacity() - rbuf.len() < 4096 => {
                                    rbuf.reserve(READ_CHUNK);
                                }
                                _ => {}
                            }
                        }
                        Err(e) => {
                            debug!(%addr, error = %e, "upstream read failed");
                            return false;
                        }
                    }
                }
                res = write_or_flush(&mut wr, &wbuf), if !wbuf.is_empty() || (FLUSH && unflushed) => {
                    match res {
                        Ok(Some(n)) => {
                            wbuf.advance(n);
                            unflushed = FLUSH;
                        }
                        Ok(None) => unflushed = false,
                        Err(e) => {
                            debug!(%addr, error = %e, "upstream write failed");
                            return false;
                        }
                    }
                }
                _ = self.wake.notified(), if wbuf.is_empty() => {
                    // Other requests are in flight, so other clients are active: let the
                    // worker poll its sockets once more before writing, so that the requests
                    // of every client that became readable meanwhile share this write (SET
                    // -P 1 over 50 clients: +17 %). A lone client is not delayed.
                    if self.inner.borrow().pending.len() > 1 {
                        tokio::task::yield_now().await;
                    }
                }
                _ = sleep_until(flush_at.unwrap_or_else(Instant::now).into()), if flush_at.is_some() => {}
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    debug!(%addr, "upstream op timeout");
                    self.close_reason.set(Some(OutlierResult::LocalOriginTimeout));
                    stats.upstream_rq_timeout.inc();
                    self.host.stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
            clock::refresh();
        }
    }

    /// Hands one reply to the oldest pending request. False when nothing was pending.
    fn on_reply(&self, frame: Frame) -> bool {
        let request = {
            let mut inner = self.inner.borrow_mut();
            let Some(request) = inner.pending.pop_front() else {
                return false;
            };
            // Envoy re-arms op_timeout after every reply while requests remain.
            inner.deadline = if inner.pending.is_empty() {
                None
            } else {
                Some(clock::now() + self.config.op_timeout)
            };
            request
        };
        // Every reply, error replies included, is a success for outlier detection.
        self.report(OutlierResult::ExtOriginRequestSuccess);
        if request.counted {
            self.unreported_done.set(self.unreported_done.get() + 1);
            self.host.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
            if let (Some(cluster), true) = (&self.config.limits, request.holds_place) {
                cluster.finish_redis_request();
            }
            // Envoy 1.40's redis client leaves the host's rq_success/rq_error at zero.
            let is_error = matches!(frame.value, redvoy_resp::RespValue::Error(_));
            let micros = clock::elapsed(request.sent_at).as_micros() as u64;
            self.config.upstream_rq_time.record(micros);
            if let Some(cs) = &request.command_stats {
                if is_error {
                    cs.failure.inc();
                } else {
                    cs.success.inc();
                }
                cs.latency.record(micros);
            }
        }
        if let (Some(resend), redvoy_resp::RespValue::Error(text)) = (request.resend, &frame.value)
        {
            if let Some(pool) = self.pool.upgrade() {
                match Redirection::parse(text) {
                    Some(Redirection::Moved(target) | Redirection::Ask(target)) => {
                        let ask = text.starts_with(b"ASK");
                        let retry = RedirectRequest {
                            request: resend.request,
                            completion: request.completion,
                            stat: resend.stat,
                            hops: resend.hops.saturating_add(1),
                        };
                        // On failure Envoy passes the original MOVED/ASK error through.
                        if let Err(back) = pool.redirect(ask, target, retry) {
                            if let Some(c) = back.completion {
                                c.complete(Ok(frame));
                            }
                        }
                        return true;
                    }
                    Some(Redirection::ClusterDown) => {
                        pool.on_request_failure();
                        if let Some(c) = request.completion {
                            c.complete(Err(UpstreamFailure::Failure));
                        }
                        return true;
                    }
                    None => {}
                }
            }
        }
        if let Some(c) = request.completion {
            c.complete(Ok(frame));
        }
        true
    }

    /// Moves `upstream_rq_active` and the host's `rq_total` by what was sent and answered
    /// since the last call. The connection loop calls it once per iteration, so a batch of
    /// requests or replies costs one update of each shared counter instead of one per request
    /// (they are atomics every worker writes). The host's `rq_active`, which LEAST_REQUEST
    /// balancing reads, moves per request.
    fn report_in_flight(&self) {
        let sent = self.unreported_sent.replace(0);
        if sent > 0 {
            self.config.cluster_stats.upstream_rq_active.add(sent);
            self.host.stats.rq_total.fetch_add(sent, Ordering::Relaxed);
        }
        let done = self.unreported_done.replace(0);
        if done > 0 {
            self.config.cluster_stats.upstream_rq_active.sub(done);
        }
    }

    /// Reports a result to the cluster's outlier detector, if it runs one.
    fn report(&self, result: OutlierResult) {
        if let Some(cluster) = &self.config.outlier {
            cluster.put_outlier_result(&self.host, result);
        }
    }

    /// A connection that went away counts against the host only with requests pending, as
    /// in Envoy's Redis client.
    fn report_failure(&self, result: OutlierResult) {
        if !self.inner.borrow().pending.is_empty() {
            self.report(result);
        }
    }

    /// Requests are queued on this connection (fuzzing: the harness answers them).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn has_pending(&self) -> bool {
        !self.inner.borrow().pending.is_empty()
    }

    /// The harness's dead connection: every queued request fails.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn fail_pending(&self) {
        self.fail_all();
    }

    /// The harness's upstream reply to the oldest queued request.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn answer(&self, frame: Frame) -> bool {
        self.on_reply(frame)
    }

    /// Fails everything pending and returns to `Idle` so the next request reconnects.
    fn fail_all(&self) {
        self.fail_all_with(UpstreamFailure::Failure);
    }

    /// Requests queued while connecting no longer wait (the connection opened or failed).
    fn stop_waiting(&self) {
        if let Some(cluster) = &self.config.limits {
            cluster.stop_waiting_for_connection(self.waiting.replace(0));
        }
    }

    fn fail_all_with(&self, failure: UpstreamFailure) {
        self.stop_waiting();
        let failed: Vec<PendingRequest> = {
            let mut inner = self.inner.borrow_mut();
            inner.state = ConnState::Idle;
            inner.out.clear();
            inner.deadline = None;
            inner.batch_started = None;
            inner.pending.drain(..).collect()
        };
        let pool = self.pool.upgrade();
        for request in failed {
            if request.counted {
                self.unreported_done.set(self.unreported_done.get() + 1);
                self.host.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
                if let (Some(cluster), true) = (&self.config.limits, request.holds_place) {
                    cluster.finish_redis_request();
                }
                // A refusal by a limit says nothing about the upstream.
                if let (Some(pool), UpstreamFailure::Failure) = (&pool, failure) {
                    pool.on_request_failure();
                }
            }
            if let Some(c) = request.completion {
                c.complete(Err(failure));
            }
        }
        self.report_in_flight();
    }
}
