//! One downstream connection (Envoy's `redis_proxy/proxy_filter` plus `command_splitter_impl`):
//! decodes requests, splits and routes them, and writes replies back strictly in request order.
//!
//! Invariant: every decoded request owns exactly one slot in `PendingQueue`, in arrival order;
//! replies are written only from the front of that queue, so the order of upstream completions
//! never changes the order the client sees.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use redvoy_resp::{
    encode, encode_resp3, DecodeError, Decoder, DecoderMode, Frame, Limits, Resp3Shape, RespValue,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::sleep_until;
use tracing::debug;

use crate::client::{UpstreamClient, UpstreamFailure, UpstreamResult};
use crate::cluster_scope::{self, Aggregation};
use crate::drain::ListenerControl;
use crate::filter::FilterConfig;
use crate::pool::{ClusterPool, Placement};
use crate::resp3;
use crate::supported_commands::{self as commands, CommandClass};
use crate::worker::FilterSource;

/// Requests a session may have in flight before it stops reading from its client. Bounds the
/// memory one client can pin; the client sees TCP backpressure, nothing fails.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Initial read buffer of a session; grows with pipelined input.
const READ_BUFFER: usize = 16 * 1024;
/// Below this much free space the read buffer grows by `READ_BUFFER` before a read.
const MIN_READ_SPACE: usize = 1024;
/// Reply bytes accumulated before they are written even if more replies are ready.
const WRITE_HIGH_WATER: usize = 256 * 1024;

const NO_UPSTREAM_HOST: &str = "no upstream host";
const UPSTREAM_FAILURE: &str = "upstream failure";
const INVALID_REQUEST: &str = "invalid request";
const NOAUTH: &str = "NOAUTH Authentication required.";

/// How one upstream reply reached a request (or why none did).
pub(crate) enum Outcome {
    Reply(Frame),
    Failure,
    NoHost,
}

impl From<UpstreamResult> for Outcome {
    fn from(r: UpstreamResult) -> Self {
        match r {
            Ok(frame) => Outcome::Reply(frame),
            Err(UpstreamFailure::Failure) => Outcome::Failure,
        }
    }
}

/// Where an upstream reply must go: a fragment of one pending request of one session.
pub(crate) struct Completion {
    session: Rc<SessionShared>,
    seq: u64,
    fragment: u32,
}

impl Completion {
    pub(crate) fn complete(self, result: UpstreamResult) {
        self.session
            .complete(self.seq, self.fragment, result.into());
    }
}

enum Reply {
    /// Upstream bytes forwarded as received.
    Raw(Bytes),
    Value(RespValue),
}

/// How the fragment replies of one request are combined.
enum Merge {
    Single,
    Mget(Vec<RespValue>),
    Mset {
        errors: u32,
    },
    Sum {
        sum: i64,
        errors: u32,
    },
    /// One page of a SCAN over every host: the reply's cursor becomes a composite cursor.
    Scan {
        host: usize,
        hosts: usize,
    },
    ClusterScope(Aggregation, Vec<RespValue>),
}

/// What to do after a reply has been written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    /// QUIT: close once everything before has been written.
    Close,
}

struct Slot {
    merge: Merge,
    remaining: u32,
    reply: Option<Reply>,
    /// A proxy-detected error (counts `command.<cmd>.error` instead of `success`).
    error: bool,
    command: Option<usize>,
    started: Instant,
    delay: Option<Duration>,
    after: After,
    /// `Some` for a client that negotiated RESP3: how the reply is converted.
    resp3: Option<Resp3Shape>,
    /// A RESP3 client's EXEC: the shape of each element of the reply.
    exec_shapes: Option<Box<[Resp3Shape]>>,
}

#[derive(Default)]
struct PendingQueue {
    /// Sequence number of `slots[0]`.
    head: u64,
    slots: VecDeque<Slot>,
}

impl PendingQueue {
    /// Takes the front slot if its reply is ready and due. Otherwise returns when a delayed
    /// front reply will be due (`None`: the front waits for upstream, or the queue is empty).
    fn pop_ready(&mut self, now: Instant) -> Result<Slot, Option<Instant>> {
        let front = self.slots.front().ok_or(None)?;
        if front.reply.is_none() {
            return Err(None);
        }
        if let Some(delay) = front.delay {
            let due = front.started + delay;
            if due > now {
                return Err(Some(due));
            }
        }
        let slot = self.slots.pop_front().ok_or(None)?;
        self.head += 1;
        Ok(slot)
    }
}

/// The part of a session that upstream clients reach through `Completion`s.
pub(crate) struct SessionShared {
    queue: RefCell<PendingQueue>,
    /// Wakes the session: a reply is ready, or its listener's drain time is over.
    pub(crate) notify: Notify,
    closed: Cell<bool>,
}

impl SessionShared {
    fn new() -> Rc<Self> {
        Rc::new(Self {
            queue: RefCell::new(PendingQueue::default()),
            notify: Notify::new(),
            closed: Cell::new(false),
        })
    }

    fn complete(&self, seq: u64, fragment: u32, outcome: Outcome) {
        if self.closed.get() {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        let Some(index) = seq.checked_sub(queue.head) else {
            return;
        };
        let Some(slot) = queue.slots.get_mut(index as usize) else {
            return;
        };
        apply(slot, fragment as usize, outcome);
        slot.remaining = slot.remaining.saturating_sub(1);
        if slot.remaining == 0 {
            finish(slot);
            drop(queue);
            self.notify.notify_one();
        }
    }
}

fn error_value(text: &str) -> RespValue {
    RespValue::Error(Bytes::copy_from_slice(text.as_bytes()))
}

fn apply(slot: &mut Slot, fragment: usize, outcome: Outcome) {
    match &mut slot.merge {
        Merge::Single => {
            slot.reply = Some(match outcome {
                // A RESP3 client's reply is re-encoded from the value, so only RESP2 ones
                // forward the upstream bytes.
                Outcome::Reply(frame) if frame.verbatim && slot.resp3.is_none() => {
                    Reply::Raw(frame.raw)
                }
                Outcome::Reply(frame) => Reply::Value(frame.value),
                Outcome::Failure => {
                    slot.error = true;
                    Reply::Value(error_value(UPSTREAM_FAILURE))
                }
                Outcome::NoHost => {
                    slot.error = true;
                    Reply::Value(error_value(NO_UPSTREAM_HOST))
                }
            });
        }
        Merge::Mget(values) => {
            let value = match outcome {
                Outcome::Reply(frame) => match frame.value {
                    v @ (RespValue::Bulk(_) | RespValue::Null) => v,
                    e @ RespValue::Error(_) => {
                        slot.error = true;
                        e
                    }
                    _ => {
                        slot.error = true;
                        error_value("upstream protocol error")
                    }
                },
                Outcome::Failure => {
                    slot.error = true;
                    error_value(UPSTREAM_FAILURE)
                }
                Outcome::NoHost => {
                    slot.error = true;
                    error_value(NO_UPSTREAM_HOST)
                }
            };
            if let Some(v) = values.get_mut(fragment) {
                *v = value;
            }
        }
        Merge::Mset { errors } => match outcome {
            Outcome::Reply(Frame {
                value: RespValue::Simple(s),
                ..
            }) if &s[..] == b"OK" => {}
            _ => *errors += 1,
        },
        Merge::Sum { sum, errors } => match outcome {
            Outcome::Reply(Frame {
                value: RespValue::Integer(n),
                ..
            }) => *sum = sum.wrapping_add(n),
            _ => *errors += 1,
        },
        Merge::Scan { .. } => {
            slot.reply = Some(Reply::Value(match outcome {
                Outcome::Reply(frame) => frame.value,
                Outcome::Failure => error_value(UPSTREAM_FAILURE),
                Outcome::NoHost => error_value(NO_UPSTREAM_HOST),
            }));
        }
        Merge::ClusterScope(_, values) => {
            let value = match outcome {
                Outcome::Reply(frame) => frame.value,
                Outcome::Failure => error_value(UPSTREAM_FAILURE),
                Outcome::NoHost => error_value(NO_UPSTREAM_HOST),
            };
            if let Some(v) = values.get_mut(fragment) {
                *v = value;
            }
        }
    }
}

/// Builds the final reply once every fragment is in.
fn finish(slot: &mut Slot) {
    let merged = match std::mem::replace(&mut slot.merge, Merge::Single) {
        Merge::Single => return,
        Merge::Mget(values) => RespValue::Array(values),
        Merge::Mset { errors: 0 } => RespValue::Simple(Bytes::from_static(b"OK")),
        Merge::Sum { sum, errors: 0 } => RespValue::Integer(sum),
        Merge::Mset { errors } | Merge::Sum { errors, .. } => {
            slot.error = true;
            error_value(&format!("finished with {errors} error(s)"))
        }
        Merge::Scan { host, hosts } => {
            let page = match slot.reply.take() {
                Some(Reply::Value(v)) => v,
                _ => error_value(UPSTREAM_FAILURE),
            };
            let page = scan_page(page, host, hosts);
            if matches!(page, RespValue::Error(_)) {
                slot.error = true;
            }
            page
        }
        Merge::ClusterScope(agg, values) => {
            let v = cluster_scope::aggregate(&agg, values);
            if matches!(v, RespValue::Error(_)) {
                slot.error = true;
            }
            v
        }
    };
    slot.reply = Some(Reply::Value(merged));
}

/// A client's transaction: WATCH, MULTI, the queued commands and EXEC/DISCARD all run on
/// connections dedicated to this client, so Redis's promises hold (a concurrent write to a
/// watched key makes EXEC return null). Envoy 1.40 sends WATCH on the shared connection and
/// the transaction on a dedicated one, so WATCH guards nothing.
#[derive(Default)]
struct Transaction {
    /// MULTI seen, EXEC/DISCARD not yet.
    active: bool,
    /// A command was refused while queuing: EXEC answers EXECABORT and commits nothing.
    aborted: bool,
    /// Where the transaction runs (route pool, slot or host), from its first key.
    placement: Option<(usize, Placement)>,
    /// Dedicated connections: the route's pool first, then one per mirror.
    clients: Vec<Rc<UpstreamClient>>,
    /// For each entry of `clients` after the first: mirrors skip reads when set.
    mirror_excludes_reads: Vec<bool>,
    /// RESP3 clients: the reply shape of each command queued upstream, for EXEC's reply.
    queued_shapes: Vec<Resp3Shape>,
}

impl Transaction {
    fn close(&mut self) {
        for c in self.clients.drain(..) {
            c.close_when_idle();
        }
        self.mirror_excludes_reads.clear();
        self.queued_shapes.clear();
        self.active = false;
        self.aborted = false;
        self.placement = None;
    }
}

/// Redis's reply to keys of different slots in one transaction or command.
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Per-worker view of one filter: the compiled config and this worker's pools.
pub struct WorkerFilter {
    pub(crate) config: Arc<FilterConfig>,
    /// Aligned with `FilterConfig::pools`.
    pub(crate) pools: Vec<Option<Rc<ClusterPool>>>,
}

struct Session {
    control: Arc<ListenerControl>,
    filter: Rc<WorkerFilter>,
    /// Where a newer filter comes from after a config push.
    source: FilterSource,
    shared: Rc<SessionShared>,
    authenticated: bool,
    tx: Transaction,
    /// QUIT seen or protocol error: read nothing more.
    stop_reading: bool,
    /// This connection's share of `downstream_cx_rx_bytes_buffered`.
    rx_buffered_reported: u64,
    /// What CLIENT answers about this connection; never sent upstream.
    client: ClientInfo,
    /// The RESP3 shape of the request being dispatched (`None` for RESP2 clients); the
    /// slots it pushes carry it.
    resp3_shape: Cell<Option<Resp3Shape>>,
}

/// Per-connection state Redis keeps for a client (CLIENT SETNAME/SETINFO, HELLO's protocol).
/// It lives in the session because upstream connections are shared: sending it upstream
/// would change every client's connection.
#[derive(Default)]
struct ClientInfo {
    id: u64,
    peer: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    /// RESP version negotiated with HELLO (2 until `HELLO 3`).
    resp: u8,
}

/// Client ids, unique within the process, as Redis numbers its clients.
static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Serves one client connection until it closes.
pub(crate) async fn run(
    stream: TcpStream,
    filter: Rc<WorkerFilter>,
    source: FilterSource,
    control: Arc<ListenerControl>,
) {
    let stats = &filter.config.stats;
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let _ = stream.set_nodelay(true);
    let authenticated = filter.config.passwords.is_empty() && filter.config.username.is_none();
    let client = ClientInfo {
        id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        peer: stream.peer_addr().ok(),
        local: stream.local_addr().ok(),
        resp: 2,
        ..ClientInfo::default()
    };
    let mut session = Session {
        control,
        filter: Rc::clone(&filter),
        source,
        shared: SessionShared::new(),
        authenticated,
        tx: Transaction::default(),
        stop_reading: false,
        rx_buffered_reported: 0,
        client,
        resp3_shape: Cell::new(None),
    };
    let mut input = BytesMut::new();
    if let Err(e) = session.serve(stream, &mut input).await {
        debug!(error = %e, "downstream connection ended");
    }
    stats
        .downstream_cx_rx_bytes_buffered
        .sub(session.rx_buffered_reported);
    session.shared.closed.set(true);
    let abandoned = session.shared.queue.borrow().slots.len() as u64;
    stats.downstream_rq_active.sub(abandoned);
    session.tx.close();
    stats.downstream_cx_active.dec();
}

impl Session {
    async fn serve(&mut self, mut stream: TcpStream, input: &mut BytesMut) -> std::io::Result<()> {
        let (rd, mut wr) = stream.split();
        let mut decoder = Decoder::new(DecoderMode::Request, Limits::default());
        let mut output = BytesMut::new();
        let mut close_after_flush = false;
        let mut close_when_answered = false;
        let mut wrote_since_check = false;
        self.source.register(&self.shared);
        loop {
            if self.control.is_closed() {
                // The drain time of a removed listener is over (the worker woke us).
                self.filter.config.stats.downstream_cx_drain_close.inc();
                return Ok(());
            }
            // A config push reaches this connection on its next request (never in the middle
            // of a transaction, whose connections are pinned). One relaxed load when nothing
            // changed.
            if !self.tx.active && self.tx.clients.is_empty() {
                if let Some(newer) = self.source.changed() {
                    if !Rc::ptr_eq(&newer, &self.filter) {
                        self.filter = newer;
                    }
                }
            }
            // Dispatch what is already buffered, up to the in-flight bound.
            while !self.stop_reading
                && self.shared.queue.borrow().slots.len() < MAX_PENDING_REQUESTS
            {
                match decoder.decode(input) {
                    Ok(Some(frame)) => self.on_request(frame),
                    Ok(None) => break,
                    Err(e) => {
                        self.on_protocol_error(&e);
                        break;
                    }
                }
            }
            let filter = Rc::clone(&self.filter);
            let stats = &filter.config.stats;
            let wake_at = self.drain(&mut output, &mut close_after_flush);
            if !output.is_empty() {
                let n = output.len() as u64;
                // downstream_cx_tx_bytes_buffered stays unwritten, as in Envoy, whose writes
                // to a client socket that keeps up never leave bytes buffered.
                wr.write_all(&output).await?;
                stats.downstream_cx_tx_bytes_total.add(n);
                output.clear();
                wrote_since_check = true;
                // More replies may have become ready while writing.
                continue;
            }
            let idle = self.shared.queue.borrow().slots.is_empty();
            // Envoy's drain close: a draining listener's connections close once every reply
            // they are owed has been written.
            let drain_close = idle && wrote_since_check && self.control.should_drain_close();
            if drain_close {
                self.filter.config.stats.downstream_cx_drain_close.inc();
            }
            wrote_since_check = false;
            if close_after_flush || drain_close || (close_when_answered && idle) {
                wr.shutdown().await?;
                return Ok(());
            }
            let pending = self.shared.queue.borrow().slots.len();
            let can_read = !self.stop_reading && pending < MAX_PENDING_REQUESTS;
            // An idle client holds no buffers: buffers are taken when bytes arrive, so a
            // thousand idle connections cost a few hundred bytes each, not 16 KiB.
            if pending == 0 && input.is_empty() && input.capacity() > 0 {
                *input = BytesMut::new();
            }
            if output.capacity() > WRITE_HIGH_WATER {
                output = BytesMut::new();
            }
            tokio::select! {
                res = rd.readable(), if can_read => {
                    res?;
                    if input.capacity() - input.len() < MIN_READ_SPACE {
                        input.reserve(READ_BUFFER);
                    }
                    let n = match rd.try_read_buf(input) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    };
                    if n == 0 {
                        // The client half-closed: answer what it already sent, then close.
                        self.stop_reading = true;
                        if self.shared.queue.borrow().slots.is_empty() {
                            return Ok(());
                        }
                        close_when_answered = true;
                        continue;
                    }
                    let stats = &self.filter.config.stats;
                    stats.downstream_cx_rx_bytes_total.add(n as u64);
                    // Envoy's accounting: the gauge moves to the read buffer's size as of each
                    // read, and keeps it until the next read or the close.
                    let now_buffered = input.len() as u64;
                    let gauge = &stats.downstream_cx_rx_bytes_buffered;
                    if now_buffered >= self.rx_buffered_reported {
                        gauge.add(now_buffered - self.rx_buffered_reported);
                    } else {
                        gauge.sub(self.rx_buffered_reported - now_buffered);
                    }
                    self.rx_buffered_reported = now_buffered;
                }
                _ = self.shared.notify.notified() => {}
                _ = sleep_until(wake_at.unwrap_or_else(Instant::now).into()), if wake_at.is_some() => {}
            }
        }
    }

    /// Moves every ready reply at the front of the queue into `output`, recording stats.
    /// Returns when a delayed reply at the front will be due.
    fn drain(&mut self, output: &mut BytesMut, close: &mut bool) -> Option<Instant> {
        let config = &self.filter.config;
        let now = Instant::now();
        let mut queue = self.shared.queue.borrow_mut();
        while output.len() < WRITE_HIGH_WATER {
            let slot = match queue.pop_ready(now) {
                Ok(slot) => slot,
                Err(wake_at) => return wake_at,
            };
            match (&slot.reply, slot.resp3) {
                // Raw only for RESP2 clients (see `apply`).
                (Some(Reply::Raw(bytes)), _) => output.extend_from_slice(bytes),
                (Some(Reply::Value(v)), None) => v.encode(output),
                (Some(Reply::Value(v)), Some(shape)) => {
                    encode_for_resp3(v, shape, slot.exec_shapes.as_deref(), output)
                }
                (None, _) => {}
            }
            config.stats.downstream_rq_active.dec();
            if let Some(cs) = slot.command.and_then(|i| config.stats.command_at(i)) {
                if slot.error {
                    cs.error.inc();
                } else {
                    cs.success.inc();
                }
                if slot.delay.is_some() {
                    cs.delay_fault.inc();
                }
                let elapsed = slot.started.elapsed();
                cs.latency.record(if config.stats.latency_in_micros {
                    elapsed.as_micros() as u64
                } else {
                    elapsed.as_millis() as u64
                });
            }
            if slot.after == After::Close {
                *close = true;
                // Nothing after QUIT is answered.
                let dropped = queue.slots.len() as u64;
                queue.slots.clear();
                config.stats.downstream_rq_active.sub(dropped);
                return None;
            }
        }
        None
    }

    fn on_protocol_error(&mut self, e: &DecodeError) {
        debug!(error = %e, "downstream protocol error");
        self.filter.config.stats.downstream_cx_protocol_error.inc();
        self.stop_reading = true;
        self.push_ready(error_value("downstream protocol error"), None, true);
        if let Some(last) = self.shared.queue.borrow_mut().slots.back_mut() {
            last.after = After::Close;
        }
        // drain() decrements downstream_rq_active for every slot; this one is not a request.
        self.filter.config.stats.downstream_rq_active.inc();
    }

    // === slot helpers ===

    fn push_slot(&self, slot: Slot) -> u64 {
        let mut q = self.shared.queue.borrow_mut();
        let seq = q.head + q.slots.len() as u64;
        q.slots.push_back(slot);
        seq
    }

    /// A reply the proxy knows at once.
    fn push_ready(&self, reply: RespValue, command: Option<usize>, error: bool) {
        self.push_slot(Slot {
            merge: Merge::Single,
            remaining: 0,
            reply: Some(Reply::Value(reply)),
            error,
            command,
            started: Instant::now(),
            delay: None,
            after: After::Nothing,
            resp3: self.resp3_shape.get(),
            exec_shapes: None,
        });
    }

    fn push_waiting(&self, merge: Merge, fragments: u32, command: Option<usize>) -> u64 {
        self.push_slot(Slot {
            merge,
            remaining: fragments,
            reply: None,
            error: false,
            command,
            started: Instant::now(),
            delay: None,
            after: After::Nothing,
            resp3: self.resp3_shape.get(),
            exec_shapes: None,
        })
    }

    fn completion(&self, seq: u64, fragment: usize) -> Completion {
        Completion {
            session: Rc::clone(&self.shared),
            seq,
            fragment: fragment as u32,
        }
    }

    /// Completes a fragment without an upstream round trip (no route, no host).
    fn complete_now(&self, seq: u64, fragment: usize, outcome: Outcome) {
        self.shared.complete(seq, fragment as u32, outcome);
    }

    /// Changes the pending slot `seq`, if it is still queued.
    fn with_slot(&self, seq: u64, change: impl FnOnce(&mut Slot)) {
        let mut q = self.shared.queue.borrow_mut();
        if let Some(index) = seq.checked_sub(q.head) {
            if let Some(slot) = q.slots.get_mut(index as usize) {
                change(slot);
            }
        }
    }

    fn set_delay(&self, seq: u64, delay: Duration) {
        self.with_slot(seq, |slot| slot.delay = Some(delay));
    }

    fn next_seq(&self) -> u64 {
        let q = self.shared.queue.borrow();
        q.head + q.slots.len() as u64
    }

    // === request handling (Envoy's InstanceImpl::makeRequest order) ===

    fn on_request(&mut self, frame: Frame) {
        // An Rc clone (not the shared Arc) keeps the config borrowable while `self` is mutated.
        // An empty inline line (a bare CRLF or LF, as `redis-cli --pipe` input files and
        // telnet users produce) is not a request: Redis ignores it, and so do we.
        if frame.raw.first() != Some(&b'*')
            && matches!(&frame.value, RespValue::Array(a) if a.is_empty())
        {
            return;
        }
        let filter = Rc::clone(&self.filter);
        let config = &filter.config;
        let stats = &config.stats;
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        let Frame {
            raw,
            value,
            verbatim,
        } = frame;
        let Some(args) = value.into_args().filter(|a| !a.is_empty()) else {
            stats.splitter_invalid_request.inc();
            self.push_ready(error_value(INVALID_REQUEST), None, true);
            return;
        };
        let mut lower = [0u8; 32];
        let owned;
        let cmd: &str = match commands::lowercase_into(&args[0], &mut lower) {
            Some(c) => c,
            None => {
                owned = String::from_utf8_lossy(&args[0]).to_lowercase();
                &owned
            }
        };
        let class = commands::class_of(cmd).or_else(|| {
            config
                .custom_commands
                .contains(cmd)
                .then_some(CommandClass::Simple)
        });
        let Some(class) = class else {
            stats.splitter_unsupported_command.inc();
            // Redis discards a transaction in which a command was rejected.
            self.tx.aborted |= self.tx.active;
            let mut text = b"ERR unknown command '".to_vec();
            text.extend_from_slice(&args[0]);
            text.extend_from_slice(b"', with args beginning with: ");
            if let Some(first) = args.get(1) {
                text.extend_from_slice(first);
            }
            self.push_ready(RespValue::Error(Bytes::from(text)), None, true);
            return;
        };

        let shape = |resp: u8| (resp == 3).then(|| resp3::shape_for(cmd, &args));
        self.resp3_shape.set(shape(self.client.resp));
        if cmd == "auth" {
            let reply = self.auth(&args);
            self.push_ready(reply, None, false);
            return;
        }
        if cmd == "hello" {
            let reply = self.hello(&args);
            // The reply is in the protocol HELLO chose.
            self.resp3_shape.set(shape(self.client.resp));
            self.push_ready(reply, None, false);
            return;
        }
        if config.require_resp3 && self.client.resp != 3 && cmd != "quit" {
            // `protocol_version: RESP3`: HELLO 3 first (a bare HELLO does not negotiate).
            self.push_ready(
                error_value("NOPROTO unsupported protocol version"),
                None,
                true,
            );
            return;
        }
        if !self.authenticated {
            self.push_ready(error_value(NOAUTH), None, true);
            return;
        }
        match cmd {
            "client" => {
                let reply = self.client_command(&args);
                self.push_ready(reply, None, false);
                return;
            }
            "ping" => {
                self.push_ready(RespValue::Simple(Bytes::from_static(b"PONG")), None, false);
                return;
            }
            "echo" => {
                let reply = if args.len() == 2 {
                    RespValue::Bulk(args[1].clone())
                } else {
                    error_value(INVALID_REQUEST)
                };
                self.push_ready(reply, None, false);
                return;
            }
            "time" => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let reply = RespValue::Array(vec![
                    RespValue::Bulk(Bytes::from(now.as_secs().to_string())),
                    RespValue::Bulk(Bytes::from(now.as_micros().to_string())),
                ]);
                self.push_ready(reply, None, false);
                return;
            }
            "scan" if args.len() < 2 => {
                let text = format!(
                    "ERR wrong number of arguments for '{}' command",
                    String::from_utf8_lossy(&args[0])
                );
                self.push_ready(error_value(&text), None, true);
                return;
            }
            "quit" => {
                self.push_ready(RespValue::Simple(Bytes::from_static(b"OK")), None, false);
                if let Some(last) = self.shared.queue.borrow_mut().slots.back_mut() {
                    last.after = After::Close;
                }
                self.stop_reading = true;
                return;
            }
            _ => {}
        }
        if args.len() < 2
            && !commands::valid_without_args(cmd)
            && class != CommandClass::Transaction
        {
            stats.splitter_invalid_request.inc();
            self.tx.aborted |= self.tx.active;
            self.push_ready(error_value(INVALID_REQUEST), None, true);
            return;
        }

        let handler = if self.tx.active { "multi" } else { cmd };
        let command = stats.command_index(handler);
        if let Some(cs) = command.and_then(|i| stats.command_at(i)) {
            cs.total.inc();
        }
        let fault = config.faults.pick(cmd, &config.runtime).cloned();
        if let Some(f) = fault.as_ref().filter(|f| f.error) {
            if let Some(cs) = command.and_then(|i| stats.command_at(i)) {
                cs.error_fault.inc();
            }
            let seq = self.next_seq();
            self.push_ready(error_value("Fault Injected: Error"), command, true);
            if !f.delay.is_zero() {
                self.set_delay(seq, f.delay);
            }
            return;
        }
        let seq = self.next_seq();
        let request = Request {
            args: &args,
            raw: &raw,
            verbatim,
            cmd,
            command,
        };
        if self.tx.active {
            self.in_transaction(&request);
        } else {
            match class {
                CommandClass::Simple => self.simple(&request, 1),
                CommandClass::Eval => {
                    if args.len() < 4 {
                        self.wrong_arity(&request);
                    } else {
                        self.simple(&request, 3)
                    }
                }
                CommandClass::Object => {
                    if args.len() < 3 {
                        self.wrong_arity(&request);
                    } else {
                        self.simple(&request, 2)
                    }
                }
                CommandClass::Mget => self.mget(&request),
                CommandClass::Mset => self.mset(&request),
                CommandClass::SumResult => self.sum(&request),
                CommandClass::Scan => self.scan(&request),
                CommandClass::InfoShard => self.info_shard(&request),
                CommandClass::RandomShard => self.random_shard(&request),
                CommandClass::Select => self.select(&request),
                CommandClass::ClusterScope => self.cluster_scope(&request),
                CommandClass::Transaction => self.transaction(&request),
                CommandClass::Local => {
                    // Every local command was answered above.
                    self.push_ready(error_value(INVALID_REQUEST), command, true);
                }
            }
        }
        if let Some(f) = fault.as_ref().filter(|f| !f.delay.is_zero()) {
            self.set_delay(seq, f.delay);
        }
    }

    fn wrong_arity(&self, r: &Request<'_>) {
        let text = format!(
            "wrong number of arguments for '{}' command",
            String::from_utf8_lossy(&r.args[0])
        );
        self.push_ready(error_value(&text), r.command, true);
    }

    fn no_host(&self, r: &Request<'_>) {
        self.push_ready(error_value(NO_UPSTREAM_HOST), r.command, true);
    }

    fn pool(&self, index: usize) -> Option<&ClusterPool> {
        self.filter.pools.get(index)?.as_deref()
    }

    /// Single-server commands: routed on `args[key_index]`, reply passed through.
    fn simple(&self, r: &Request<'_>, key_index: usize) {
        let key = &r.args[key_index];
        let Some((route, routed_key)) = self.filter.config.router.route(key) else {
            return self.no_host(r);
        };
        let is_read = commands::is_read(r.cmd);
        let Some(client) = self
            .pool(route.pool_for(is_read))
            .and_then(|p| p.client_for_key(&routed_key, is_read))
        else {
            return self.no_host(r);
        };
        let request = request_bytes(r, key_index, &routed_key);
        let seq = self.push_waiting(Merge::Single, 1, r.command);
        client.send(&request, Some(self.completion(seq, 0)), r.cmd);
        for mirror in &route.mirrors {
            if mirror.should_mirror(is_read, &self.filter.config.runtime) {
                if let Some(m) = self
                    .pool(mirror.pool)
                    .and_then(|p| p.client_for_key(&routed_key, is_read))
                {
                    m.send(&request, None, r.cmd);
                }
            }
        }
    }

    /// Fan-out of one sub-command per key (MGET, DEL, EXISTS, TOUCH, UNLINK) or pair (MSET).
    fn fan_out(&self, r: &Request<'_>, merge: Merge, name: &[u8], step: usize) {
        let items = &r.args[1..];
        let fragments = items.len() / step;
        let seq = self.push_waiting(merge, fragments as u32, r.command);
        let is_read = commands::is_read(r.cmd);
        // Fragment names are short command names: lowercase them on the stack.
        let mut lower = [0u8; 32];
        let owned;
        let sub: &str = match commands::lowercase_into(name, &mut lower) {
            Some(s) => s,
            None => {
                owned = String::from_utf8_lossy(name).to_ascii_lowercase();
                &owned
            }
        };
        let sub_is_read = commands::is_read(sub);
        let mut out = BytesMut::new();
        for (i, chunk) in items.chunks(step).enumerate() {
            let Some((route, key)) = self.filter.config.router.route(&chunk[0]) else {
                self.complete_now(seq, i, Outcome::NoHost);
                continue;
            };
            let Some(client) = self
                .pool(route.pool_for(is_read))
                .and_then(|p| p.client_for_key(&key, sub_is_read))
            else {
                self.complete_now(seq, i, Outcome::NoHost);
                continue;
            };
            out.clear();
            let mut parts: Vec<&[u8]> = Vec::with_capacity(step + 1);
            parts.push(name);
            parts.push(&key);
            parts.extend(chunk[1..].iter().map(|b| &b[..]));
            encode::command(&mut out, &parts);
            client.send(&out, Some(self.completion(seq, i)), sub);
            for mirror in &route.mirrors {
                if mirror.should_mirror(sub_is_read, &self.filter.config.runtime) {
                    if let Some(m) = self
                        .pool(mirror.pool)
                        .and_then(|p| p.client_for_key(&key, sub_is_read))
                    {
                        m.send(&out, None, sub);
                    }
                }
            }
        }
    }

    fn mget(&self, r: &Request<'_>) {
        let n = r.args.len() - 1;
        self.fan_out(r, Merge::Mget(vec![RespValue::Null; n]), b"get", 1);
    }

    fn mset(&self, r: &Request<'_>) {
        if !(r.args.len() - 1).is_multiple_of(2) {
            return self.wrong_arity(r);
        }
        self.fan_out(r, Merge::Mset { errors: 0 }, b"set", 2);
    }

    fn sum(&self, r: &Request<'_>) {
        let name = r.args[0].clone();
        self.fan_out(r, Merge::Sum { sum: 0, errors: 0 }, &name, 1);
    }

    /// The pool that commands without a key use: the route of the empty key.
    fn keyless_pool(&self, routing_key: &[u8], is_read: bool) -> Option<&ClusterPool> {
        let (route, _) = self.filter.config.router.route(routing_key)?;
        self.pool(route.pool_for(is_read))
    }

    /// Sends the request unchanged to every shard of `pool`, gathering into `merge`.
    fn broadcast(&self, r: &Request<'_>, pool: &ClusterPool, shards: usize, merge: Merge) {
        let seq = self.push_waiting(merge, shards as u32, r.command);
        let request = whole_request(r);
        for shard in 0..shards {
            match pool.client_for_shard(shard) {
                Some(c) => c.send(&request, Some(self.completion(seq, shard)), r.cmd),
                None => self.complete_now(seq, shard, Outcome::NoHost),
            }
        }
    }

    /// SCAN over every host of the catch-all route's cluster (every primary of a Redis
    /// Cluster), one host after the other, with a composite cursor: a full iteration returns
    /// every key once and ends with cursor 0. Envoy 1.40 sends the cursor to every shard and
    /// concatenates the replies, which no client can iterate.
    fn scan(&self, r: &Request<'_>) {
        let Some(pool) = self.keyless_pool(b"", true) else {
            return self.no_host(r);
        };
        let hosts = pool.shard_count();
        if hosts == 0 {
            return self.no_host(r);
        }
        if hosts as u64 > SCAN_HOSTS {
            let text = format!("ERR SCAN through the proxy covers at most {SCAN_HOSTS} hosts");
            return self.push_ready(error_value(&text), r.command, true);
        }
        let Some((host, cursor)) = split_scan_cursor(&r.args[1]).filter(|(h, _)| *h < hosts) else {
            return self.push_ready(error_value("ERR invalid cursor"), r.command, true);
        };
        let Some(client) = pool.client_for_shard(host) else {
            return self.no_host(r);
        };
        let cursor = cursor.to_string();
        let mut parts: Vec<&[u8]> = r.args.iter().map(|a| &a[..]).collect();
        parts[1] = cursor.as_bytes();
        let mut out = BytesMut::new();
        encode::command(&mut out, &parts);
        let seq = self.push_waiting(Merge::Scan { host, hosts }, 1, r.command);
        client.send(&out, Some(self.completion(seq, 0)), r.cmd);
    }

    fn cluster_scope(&self, r: &Request<'_>) {
        // Envoy answers a missing route or empty cluster before judging the arguments.
        let Some(pool) = self.keyless_pool(b"", commands::is_read(r.cmd)) else {
            return self.no_host(r);
        };
        let shards = pool.shard_count();
        if shards == 0 {
            return self.no_host(r);
        }
        let Some(agg) = cluster_scope::aggregation_for(r.cmd, r.args) else {
            let text = cluster_scope::UNSUPPORTED_CLUSTER_SCOPE_COMMAND;
            return self.push_ready(error_value(text), r.command, true);
        };
        self.broadcast(
            r,
            pool,
            shards,
            Merge::ClusterScope(agg, vec![RespValue::Null; shards]),
        );
    }

    fn info_shard(&self, r: &Request<'_>) {
        if r.args.len() > 3 {
            return self.wrong_arity(r);
        }
        let Some(pool) = self.keyless_pool(b"", true) else {
            return self.no_host(r);
        };
        let shards = pool.shard_count();
        let index = std::str::from_utf8(&r.args[1])
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        let Some(index) = index else {
            let text = "ERR invalid shard_id - must be a numeric shard index";
            return self.push_ready(error_value(text), r.command, true);
        };
        if index >= shards {
            let text = format!(
                "ERR shard_id {index} out of range (0-{})",
                shards.saturating_sub(1)
            );
            return self.push_ready(error_value(&text), r.command, true);
        }
        let Some(client) = pool.client_for_shard(index) else {
            return self.no_host(r);
        };
        let mut out = BytesMut::new();
        let mut parts: Vec<&[u8]> = vec![b"INFO"];
        parts.extend(r.args.get(2).map(|s| &s[..]));
        encode::command(&mut out, &parts);
        let seq = self.push_waiting(Merge::Single, 1, r.command);
        client.send(&out, Some(self.completion(seq, 0)), "info");
    }

    fn random_shard(&self, r: &Request<'_>) {
        if r.cmd == "cluster" {
            let sub = String::from_utf8_lossy(&r.args[1]).to_ascii_lowercase();
            if !commands::CLUSTER_SUBCOMMANDS.contains(&sub.as_str()) {
                let text = format!("ERR cluster subcommand '{sub}' is not supported");
                return self.push_ready(error_value(&text), r.command, true);
            }
        }
        let Some(pool) = self.keyless_pool(b"", true) else {
            return self.no_host(r);
        };
        let shards = pool.shard_count();
        if shards == 0 {
            return self.no_host(r);
        }
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let shard = (micros % shards as u128) as usize;
        let Some(client) = pool.client_for_shard(shard) else {
            return self.no_host(r);
        };
        let seq = self.push_waiting(Merge::Single, 1, r.command);
        client.send(&whole_request(r), Some(self.completion(seq, 0)), r.cmd);
    }

    // === transactions ===

    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH outside a transaction. Replies the proxy makes up
    /// here count only in `command.<cmd>.total`, as in Envoy (neither success nor error).
    fn transaction(&mut self, r: &Request<'_>) {
        match r.cmd {
            "multi" => {
                self.tx.active = true;
                self.tx.aborted = false;
                if self.tx.clients.is_empty() {
                    // Envoy's way: MULTI goes upstream with the first keyed command.
                    self.push_ready(RespValue::Simple(Bytes::from_static(b"OK")), None, false);
                } else {
                    // WATCH opened the connection: MULTI follows it there.
                    self.send_in_transaction(r, true);
                }
            }
            "exec" => self.push_ready(error_value("EXEC without MULTI"), None, true),
            "discard" => self.push_ready(error_value("DISCARD without MULTI"), None, true),
            "watch" if r.args.len() < 2 => self.wrong_arity(r),
            "watch" => {
                let keys = &r.args[1..];
                match self.join_transaction(keys) {
                    Ok(()) => self.send_in_transaction(r, true),
                    Err(reply) => self.push_ready(reply, r.command, true),
                }
            }
            "unwatch" => {
                if self.tx.clients.is_empty() {
                    self.push_ready(RespValue::Simple(Bytes::from_static(b"OK")), None, false);
                } else {
                    self.send_in_transaction(r, true);
                    self.tx.close();
                }
            }
            _ => self.push_ready(error_value(INVALID_REQUEST), None, true),
        }
    }

    /// Checks that `keys` belong where the transaction runs (one slot of a Redis Cluster, one
    /// host otherwise) and opens the dedicated connections with the first key if none are
    /// open yet. The error is the reply for the client.
    fn join_transaction(&mut self, keys: &[Bytes]) -> Result<(), RespValue> {
        let config = Arc::clone(&self.filter.config);
        let mut joined = self.tx.placement;
        for key in keys {
            let Some((route, routed_key)) = config.router.route(key) else {
                return Err(error_value(NO_UPSTREAM_HOST));
            };
            let Some(placement) = self.pool(route.pool).and_then(|p| p.placement(&routed_key))
            else {
                return Err(error_value(NO_UPSTREAM_HOST));
            };
            match joined {
                Some(p) if p != (route.pool, placement) => return Err(error_value(CROSSSLOT)),
                Some(_) => {}
                None => joined = Some((route.pool, placement)),
            }
        }
        if self.tx.clients.is_empty() {
            let Some(key) = keys.first() else {
                return Err(error_value(INVALID_REQUEST));
            };
            if !self.open_transaction(key) {
                return Err(error_value(NO_UPSTREAM_HOST));
            }
        }
        self.tx.placement = joined;
        Ok(())
    }

    /// Opens the dedicated connections of a transaction routed by `key`: the route's primary
    /// pool, then each mirror's.
    fn open_transaction(&mut self, key: &[u8]) -> bool {
        let Some((route, routed_key)) = self.filter.config.router.route(key) else {
            return false;
        };
        let Some(primary) = self
            .pool(route.pool)
            .and_then(|p| p.dedicated_client_for_key(&routed_key))
        else {
            return false;
        };
        let mut clients = vec![primary];
        let mut excludes = Vec::new();
        for mirror in &route.mirrors {
            // The runtime fraction is decided once per transaction.
            if !mirror.should_mirror(false, &self.filter.config.runtime) {
                continue;
            }
            if let Some(m) = self
                .pool(mirror.pool)
                .and_then(|p| p.dedicated_client_for_key(&routed_key))
            {
                clients.push(m);
                excludes.push(mirror.exclude_read_commands);
            }
        }
        self.tx.clients = clients;
        self.tx.mirror_excludes_reads = excludes;
        true
    }

    /// Sends a request on the transaction's dedicated connections; the primary's reply is the
    /// client's.
    fn send_in_transaction(&self, r: &Request<'_>, replied: bool) {
        let request = whole_request(r);
        let is_read = commands::is_read(r.cmd);
        let mut clients = self.tx.clients.iter();
        if let Some(primary) = clients.next() {
            if replied {
                let seq = self.push_waiting(Merge::Single, 1, r.command);
                primary.send(&request, Some(self.completion(seq, 0)), r.cmd);
            } else {
                primary.send(&request, None, r.cmd);
            }
        }
        for (client, excludes_reads) in clients.zip(&self.tx.mirror_excludes_reads) {
            if !(is_read && *excludes_reads) {
                client.send(&request, None, r.cmd);
            }
        }
    }

    /// Sends a command of the proxy's own (MULTI, DISCARD) on the dedicated connections,
    /// its replies dropped.
    fn send_own_in_transaction(&self, name: &'static [u8], cmd: &str) {
        let request = Request {
            args: &[Bytes::from_static(name)],
            raw: &Bytes::new(),
            verbatim: false,
            cmd,
            command: None,
        };
        self.send_in_transaction(&request, false);
    }

    /// Refuses a command while queuing: Redis's rule, the transaction will not commit.
    fn refuse_in_transaction(&mut self, reply: RespValue) {
        self.tx.aborted = true;
        self.push_ready(reply, None, true);
    }

    /// Every command while MULTI is active (Envoy's MULTI handler, with Redis's rules for
    /// refused commands: EXEC then answers EXECABORT and nothing is committed).
    fn in_transaction(&mut self, r: &Request<'_>) {
        let custom = self.filter.config.custom_commands.contains(r.cmd);
        match r.cmd {
            "multi" => {
                return self.push_ready(error_value("MULTI calls can not be nested"), None, true)
            }
            "exec" if self.tx.aborted => {
                if !self.tx.clients.is_empty() {
                    self.send_own_in_transaction(b"DISCARD", "discard");
                }
                self.tx.close();
                return self.push_ready(error_value(EXECABORT), None, true);
            }
            "exec" | "discard" => {
                if self.tx.clients.is_empty() {
                    let reply = if r.cmd == "exec" {
                        RespValue::Array(Vec::new())
                    } else {
                        RespValue::Simple(Bytes::from_static(b"OK"))
                    };
                    self.tx.close();
                    return self.push_ready(reply, None, false);
                }
                let seq = self.next_seq();
                self.send_in_transaction(r, true);
                if r.cmd == "exec" && self.resp3_shape.get().is_some() {
                    let shapes = std::mem::take(&mut self.tx.queued_shapes).into_boxed_slice();
                    self.with_slot(seq, |slot| slot.exec_shapes = Some(shapes));
                }
                self.tx.close();
                return;
            }
            "watch" => {
                return self.push_ready(
                    error_value("ERR WATCH inside MULTI is not allowed"),
                    None,
                    true,
                )
            }
            "unwatch" if self.tx.clients.is_empty() => {
                return self.push_ready(
                    RespValue::Simple(Bytes::from_static(b"QUEUED")),
                    None,
                    false,
                )
            }
            _ => {}
        }
        if !commands::allowed_in_transaction(r.cmd) && !custom {
            let text = format!(
                "'{}' command is not supported within transaction",
                String::from_utf8_lossy(&r.args[0])
            );
            return self.refuse_in_transaction(error_value(&text));
        }
        let keys = transaction_keys(r);
        let opened = self.tx.clients.is_empty();
        if let Err(reply) = self.join_transaction(keys.as_slice()) {
            return self.refuse_in_transaction(reply);
        }
        if opened {
            // Envoy sends MULTI itself, uppercase, and discards its reply.
            self.send_own_in_transaction(b"MULTI", "multi");
        }
        self.send_in_transaction(r, true);
        if let Some(shape) = self.resp3_shape.get() {
            // A RESP3 client's EXEC reply is converted element by element.
            self.tx.queued_shapes.push(shape);
        }
    }

    // === local commands ===

    /// CLIENT, answered for this connection (Envoy 1.40 accepts SETNAME/SETINFO and refuses
    /// the rest; redvoy also answers GETNAME, ID and INFO as Redis would for this client).
    fn client_command(&mut self, args: &[Bytes]) -> RespValue {
        let Some(sub) = args.get(1) else {
            return error_value(INVALID_REQUEST);
        };
        let lower = String::from_utf8_lossy(sub).to_ascii_lowercase();
        let arity = |n: usize| {
            (args.len() != n).then(|| {
                error_value(&format!(
                    "ERR wrong number of arguments for 'client|{lower}' command"
                ))
            })
        };
        match lower.as_str() {
            "setname" => {
                if let Some(e) = arity(3) {
                    return e;
                }
                let name = &args[2];
                if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                    return error_value(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.client.name = (!name.is_empty()).then(|| name.clone());
                RespValue::Simple(Bytes::from_static(b"OK"))
            }
            "getname" => {
                if let Some(e) = arity(2) {
                    return e;
                }
                self.client
                    .name
                    .clone()
                    .map_or(RespValue::Null, RespValue::Bulk)
            }
            "id" => {
                if let Some(e) = arity(2) {
                    return e;
                }
                RespValue::Integer(self.client.id as i64)
            }
            "setinfo" => {
                if let Some(e) = arity(4) {
                    return e;
                }
                let attr = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
                let value = (!args[3].is_empty()).then(|| args[3].clone());
                match attr.as_str() {
                    "lib-name" => self.client.lib_name = value,
                    "lib-ver" => self.client.lib_ver = value,
                    _ => {
                        return error_value(&format!(
                            "ERR Unrecognized option '{}'",
                            String::from_utf8_lossy(&args[2])
                        ))
                    }
                }
                RespValue::Simple(Bytes::from_static(b"OK"))
            }
            "info" => {
                if let Some(e) = arity(2) {
                    return e;
                }
                RespValue::Bulk(Bytes::from(self.client_info_line()))
            }
            _ => error_value(&format!(
                "ERR CLIENT subcommand '{}' is not supported by the proxy",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    /// This client's line in Redis's `CLIENT INFO` format (the fields a proxy can know).
    fn client_info_line(&self) -> String {
        let c = &self.client;
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "id={} addr={} laddr={} name={} db=0 multi={} resp={} lib-name={} lib-ver={}\n",
            c.id,
            addr(c.peer),
            addr(c.local),
            text(&c.name),
            if self.tx.active { 0 } else { -1 },
            c.resp,
            text(&c.lib_name),
            text(&c.lib_ver),
        )
    }

    /// SELECT for this client only. Upstream connections are shared by every client, so a
    /// SELECT sent there would move other clients' keys (Envoy 1.40 does send it); redvoy
    /// serves database 0 and refuses the others.
    fn select(&self, r: &Request<'_>) {
        if r.args.len() != 2 {
            return self.push_ready(
                error_value("ERR wrong number of arguments for 'select' command"),
                r.command,
                true,
            );
        }
        let reply = match std::str::from_utf8(&r.args[1])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(0) => RespValue::Simple(Bytes::from_static(b"OK")),
            Some(_) => error_value(
                "ERR DB index is out of range: the proxy serves database 0 only (SELECT is per client)",
            ),
            None => error_value("ERR value is not an integer or out of range"),
        };
        let error = matches!(reply, RespValue::Error(_));
        self.push_ready(reply, r.command, error);
    }

    fn auth(&mut self, args: &[Bytes]) -> RespValue {
        let config = &self.filter.config;
        if args.len() < 2 {
            return error_value(INVALID_REQUEST);
        }
        if args.len() == 3 {
            return self.auth_user(&args[1], &args[2]);
        }
        if config.passwords.is_empty() {
            return error_value("ERR Client sent AUTH, but no password is set");
        }
        if config.passwords.iter().any(|p| p == &args[1]) {
            self.authenticated = true;
            RespValue::Simple(Bytes::from_static(b"OK"))
        } else {
            self.authenticated = false;
            error_value("ERR invalid password")
        }
    }

    fn auth_user(&mut self, user: &Bytes, pass: &Bytes) -> RespValue {
        let config = &self.filter.config;
        if config.username.is_none() && config.passwords.is_empty() {
            return error_value("ERR Client sent AUTH, but no username-password pair is set");
        }
        let user_ok = match &config.username {
            Some(u) => u == user,
            None => &user[..] == b"default",
        };
        if user_ok && config.passwords.iter().any(|p| p == pass) {
            self.authenticated = true;
            RespValue::Simple(Bytes::from_static(b"OK"))
        } else {
            self.authenticated = false;
            error_value("WRONGPASS invalid username-password pair")
        }
    }

    /// HELLO, answered locally with Envoy's fields. `HELLO 3` switches this client to RESP3
    /// (Envoy 1.40 answers NOPROTO); its replies are then converted from the upstreams' RESP2.
    fn hello(&mut self, args: &[Bytes]) -> RespValue {
        let mut resp = self.client.resp;
        if args.len() < 2 && self.filter.config.require_resp3 && resp != 3 {
            return error_value("NOPROTO unsupported protocol version");
        }
        if let Some(version) = args.get(1) {
            match std::str::from_utf8(version)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(2) if !self.filter.config.require_resp3 => resp = 2,
                Some(3) => resp = 3,
                Some(_) => return error_value("NOPROTO unsupported protocol version"),
                None => {
                    return error_value("ERR Protocol version is not an integer or out of range")
                }
            }
        }
        let mut name = None;
        let mut i = 2;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
            match opt.as_str() {
                "auth" => {
                    if i + 2 >= args.len() {
                        return error_value(
                            "ERR Syntax error: HELLO AUTH requires <username> <password>",
                        );
                    }
                    let reply = self.auth_user(&args[i + 1], &args[i + 2]);
                    if matches!(reply, RespValue::Error(_)) {
                        return reply;
                    }
                    i += 3;
                }
                "setname" => {
                    if i + 1 >= args.len() {
                        return error_value(
                            "ERR Syntax error: HELLO SETNAME requires a <clientname>",
                        );
                    }
                    name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => {
                    return error_value(&format!(
                        "ERR Syntax error: unknown HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    ))
                }
            }
        }
        if !self.authenticated {
            return error_value(NOAUTH);
        }
        if let Some(name) = name {
            self.client.name = (!name.is_empty()).then_some(name);
        }
        self.client.resp = resp;
        let b = |s: &'static [u8]| RespValue::Bulk(Bytes::from_static(s));
        RespValue::Array(vec![
            b(b"server"),
            b(b"envoy-redis-proxy"),
            b(b"version"),
            b(b"6.0.0"),
            b(b"proto"),
            RespValue::Integer(i64::from(resp)),
            b(b"id"),
            RespValue::Integer(0),
            b(b"mode"),
            b(b"standalone"),
            b(b"role"),
            b(b"master"),
            b(b"modules"),
            RespValue::Array(Vec::new()),
        ])
    }
}

/// A RESP3 client's reply; EXEC's array element by element in its commands' shapes.
fn encode_for_resp3(
    value: &RespValue,
    shape: Resp3Shape,
    exec: Option<&[Resp3Shape]>,
    out: &mut BytesMut,
) {
    match (value, exec) {
        (RespValue::Array(items), Some(shapes)) if items.len() == shapes.len() => {
            encode::array_header(out, items.len());
            for (item, shape) in items.iter().zip(shapes) {
                encode_resp3(item, *shape, out);
            }
        }
        _ => encode_resp3(value, shape, out),
    }
}

/// The keys of a command queued in a transaction: every key of the multi-key commands, else
/// the routing key (Envoy's `args[1]`).
fn transaction_keys(r: &Request<'_>) -> Vec<Bytes> {
    let rest = r.args.get(1..).unwrap_or_default();
    match r.cmd {
        "mset" | "msetnx" => rest.iter().step_by(2).cloned().collect(),
        _ if commands::is_multi_key(r.cmd) => rest.to_vec(),
        _ => rest.iter().take(1).cloned().collect(),
    }
}

/// Hosts a composite SCAN cursor can address: the host index is the cursor's remainder.
const SCAN_HOSTS: u64 = 1024;

/// A composite SCAN cursor `host_cursor * SCAN_HOSTS + host` as (host, host_cursor). Cursor 0
/// is host 0's start.
fn split_scan_cursor(cursor: &[u8]) -> Option<(usize, u64)> {
    let n: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    Some(((n % SCAN_HOSTS) as usize, n / SCAN_HOSTS))
}

/// Turns host `host`'s SCAN reply into the client's page: the host's cursor becomes composite,
/// and a finished host hands over to the next one (cursor 0 once the last host is done).
fn scan_page(page: RespValue, host: usize, hosts: usize) -> RespValue {
    let RespValue::Array(mut items) = page else {
        return match page {
            e @ RespValue::Error(_) => e,
            _ => error_value("upstream protocol error"),
        };
    };
    let host_cursor = match items.first().and_then(RespValue::as_bulk) {
        Some(c) if items.len() == 2 => std::str::from_utf8(c)
            .ok()
            .and_then(|c| c.parse::<u64>().ok()),
        _ => None,
    };
    let Some(host_cursor) = host_cursor else {
        return error_value("upstream protocol error");
    };
    let next = if host_cursor != 0 {
        host_cursor
            .checked_mul(SCAN_HOSTS)
            .and_then(|c| c.checked_add(host as u64))
    } else if host + 1 < hosts {
        Some(host as u64 + 1)
    } else {
        Some(0)
    };
    let Some(next) = next else {
        return error_value("ERR cursor of an upstream host too large for the proxy's SCAN");
    };
    items[0] = RespValue::Bulk(Bytes::from(next.to_string()));
    RespValue::Array(items)
}

/// One decoded request, borrowed while it is being dispatched.
struct Request<'a> {
    args: &'a [Bytes],
    raw: &'a Bytes,
    verbatim: bool,
    /// Lowercased command name.
    cmd: &'a str,
    command: Option<usize>,
}

/// The request as received, re-encoded only when the bytes on the wire were not canonical.
fn whole_request(r: &Request<'_>) -> Bytes {
    if r.verbatim && !r.raw.is_empty() {
        return r.raw.clone();
    }
    let mut out = BytesMut::new();
    let parts: Vec<&[u8]> = r.args.iter().map(|a| &a[..]).collect();
    encode::command(&mut out, &parts);
    out.freeze()
}

/// The request with `args[key_index]` replaced by the routed key (prefix removed, formatted).
fn request_bytes(r: &Request<'_>, key_index: usize, routed_key: &[u8]) -> Bytes {
    let original = &r.args[key_index];
    // The router hands back a sub-slice of the original key when it did not rewrite it.
    let unchanged = routed_key.as_ptr() == original.as_ptr() && routed_key.len() == original.len();
    if unchanged {
        return whole_request(r);
    }
    let mut out = BytesMut::new();
    let parts: Vec<&[u8]> = r
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| if i == key_index { routed_key } else { &a[..] })
        .collect();
    encode::command(&mut out, &parts);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn waiting(merge: Merge, fragments: u32) -> Slot {
        Slot {
            merge,
            remaining: fragments,
            reply: None,
            error: false,
            command: None,
            started: Instant::now(),
            delay: None,
            after: After::Nothing,
            resp3: None,
            exec_shapes: None,
        }
    }

    #[test]
    fn composite_scan_cursor() {
        assert_eq!(split_scan_cursor(b"0"), Some((0, 0)));
        assert_eq!(split_scan_cursor(b"2050"), Some((2, 2)));
        assert_eq!(split_scan_cursor(b"x"), None);
        let page = |cursor: &str| {
            RespValue::Array(vec![
                RespValue::Bulk(Bytes::copy_from_slice(cursor.as_bytes())),
                RespValue::Array(vec![]),
            ])
        };
        let cursor_of = |v: RespValue| match v {
            RespValue::Array(items) => items[0].clone(),
            other => other,
        };
        let bulk = |s: &'static str| RespValue::Bulk(Bytes::from_static(s.as_bytes()));
        // A host with more to scan keeps its index; a finished one hands over; the last ends.
        assert_eq!(cursor_of(scan_page(page("7"), 1, 3)), bulk("7169"));
        assert_eq!(cursor_of(scan_page(page("0"), 1, 3)), bulk("2"));
        assert_eq!(cursor_of(scan_page(page("0"), 2, 3)), bulk("0"));
        assert_eq!(
            scan_page(page(&u64::MAX.to_string()), 0, 3),
            error_value("ERR cursor of an upstream host too large for the proxy's SCAN")
        );
        assert_eq!(
            scan_page(RespValue::Integer(1), 0, 1),
            error_value("upstream protocol error")
        );
    }

    fn reply_frame(v: RespValue) -> Outcome {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        Outcome::Reply(Frame {
            raw: out.freeze(),
            value: v,
            verbatim: true,
        })
    }

    fn reply_bytes(slot: &Slot) -> Vec<u8> {
        let mut out = BytesMut::new();
        match &slot.reply {
            Some(Reply::Raw(b)) => out.extend_from_slice(b),
            Some(Reply::Value(v)) => v.encode(&mut out),
            None => {}
        }
        out.to_vec()
    }

    proptest! {
        /// Replies leave in request order whatever order upstreams complete them in, and MGET
        /// fragments land in key order.
        #[test]
        fn reply_order_survives_shuffled_completion(
            shapes in proptest::collection::vec(1u32..5, 1..40),
            seed in any::<u64>(),
        ) {
            let shared = SessionShared::new();
            let mut completions = Vec::new();
            for (seq, fragments) in shapes.iter().enumerate() {
                let merge = if *fragments == 1 {
                    Merge::Single
                } else {
                    Merge::Mget(vec![RespValue::Null; *fragments as usize])
                };
                shared.queue.borrow_mut().slots.push_back(waiting(merge, *fragments));
                for f in 0..*fragments {
                    completions.push((seq as u64, f));
                }
            }
            // Deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..completions.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                completions.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut delivered = Vec::new();
            for (seq, f) in completions {
                let payload = format!("{seq}:{f}");
                shared.complete(seq, f, reply_frame(RespValue::Bulk(Bytes::from(payload))));
                let mut q = shared.queue.borrow_mut();
                while let Ok(slot) = q.pop_ready(Instant::now()) {
                    delivered.push(reply_bytes(&slot));
                }
            }
            prop_assert_eq!(delivered.len(), shapes.len());
            for (seq, (bytes, fragments)) in delivered.iter().zip(&shapes).enumerate() {
                let expected = if *fragments == 1 {
                    RespValue::Bulk(Bytes::from(format!("{seq}:0")))
                } else {
                    RespValue::Array(
                        (0..*fragments)
                            .map(|f| RespValue::Bulk(Bytes::from(format!("{seq}:{f}"))))
                            .collect(),
                    )
                };
                let mut out = BytesMut::new();
                expected.encode(&mut out);
                prop_assert_eq!(bytes, &out.to_vec());
            }
        }
    }

    #[test]
    fn mset_and_sum_merge() {
        let mut slot = waiting(Merge::Mset { errors: 0 }, 2);
        apply(
            &mut slot,
            0,
            reply_frame(RespValue::Simple(Bytes::from_static(b"OK"))),
        );
        apply(&mut slot, 1, Outcome::NoHost);
        finish(&mut slot);
        assert_eq!(reply_bytes(&slot), b"-finished with 1 error(s)\r\n");
        assert!(slot.error);

        let mut slot = waiting(Merge::Sum { sum: 0, errors: 0 }, 2);
        apply(&mut slot, 0, reply_frame(RespValue::Integer(2)));
        apply(&mut slot, 1, reply_frame(RespValue::Integer(3)));
        finish(&mut slot);
        assert_eq!(reply_bytes(&slot), b":5\r\n");
    }

    #[test]
    fn mget_fragment_errors() {
        let mut slot = waiting(Merge::Mget(vec![RespValue::Null; 3]), 3);
        apply(&mut slot, 0, reply_frame(RespValue::Integer(1)));
        apply(&mut slot, 1, Outcome::Failure);
        apply(&mut slot, 2, reply_frame(RespValue::Null));
        finish(&mut slot);
        assert_eq!(
            reply_bytes(&slot),
            b"*3\r\n-upstream protocol error\r\n-upstream failure\r\n$-1\r\n"
        );
    }
}
