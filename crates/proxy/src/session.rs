//! One downstream connection (Envoy's `redis_proxy/proxy_filter`): reads and decodes requests,
//! hands each to the splitter (`splitter.rs`), and writes replies back strictly in request
//! order from the pending queue (`pending.rs`).
//!
//! Invariant: every decoded request owns exactly one slot in `PendingQueue`, in arrival order;
//! replies are written only from the front of that queue, so the order of upstream completions
//! never changes the order the client sees.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redvoy_resp::{
    encode, encode_resp3, Command, DecodeError, Decoder, DecoderMode, Limits, Resp3Shape, RespValue,
};
use redvoy_tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::sleep_until;
use tracing::debug;

use crate::clock;
use crate::drain::ListenerControl;
use crate::pending::{error_value, After, Reply, SessionShared};
use crate::session_state::{ClientInfo, Session, WorkerFilter};
use crate::spare;

/// Requests a session may have in flight before it stops reading from its client. Bounds the
/// memory one client can pin; the client sees TCP backpressure, nothing fails.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Initial read buffer of a session; grows with pipelined input.
const READ_BUFFER: usize = 16 * 1024;
/// Below this much free space the read buffer grows by `READ_BUFFER` before a read.
const MIN_READ_SPACE: usize = 1024;
/// Reply bytes accumulated before they are written even if more replies are ready.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Argument slots an idle session keeps (a few hundred bytes at most).
const RETAINED_ARGS: usize = 8;

/// Client ids, unique within the process, as Redis numbers its clients.
static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What the connection loop needs from the listener that accepted it: the newer filter after
/// a config push, and a place on the list of sessions woken when a drain ends. Implemented by
/// `FilterSource` in `listener/accept.rs`, which this file does not know.
pub(crate) trait FilterUpdates {
    /// The filter that replaces the session's after a config push; `None` while unchanged.
    fn changed(&mut self) -> Option<Rc<WorkerFilter>>;
    /// Lists the session for the wake-up at the end of a drain.
    fn register(&self, session: &Rc<SessionShared>);
}

/// The connection loop's state around the session: what only reading and writing need.
struct Connection<S> {
    session: Session,
    control: Arc<ListenerControl>,
    /// Where a newer filter comes from after a config push.
    source: S,
    /// This connection's share of `downstream_cx_rx_bytes_buffered`.
    rx_buffered_reported: u64,
}

/// Serves one client connection until it closes.
pub(crate) async fn run(
    stream: Stream,
    filter: Rc<WorkerFilter>,
    source: impl FilterUpdates,
    control: Arc<ListenerControl>,
) {
    let stats = &filter.config.stats;
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let _ = stream.tcp().set_nodelay(true);
    let client = ClientInfo {
        id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        peer: stream.tcp().peer_addr().ok(),
        local: stream.tcp().local_addr().ok(),
        resp: 2,
        ..ClientInfo::default()
    };
    let mut conn = Connection {
        session: Session::new(Rc::clone(&filter), client),
        control,
        source,
        rx_buffered_reported: 0,
    };
    let mut input = BytesMut::new();
    if let Err(e) = conn.serve(stream, &mut input).await {
        debug!(error = %e, "downstream connection ended");
    }
    stats
        .downstream_cx_rx_bytes_buffered
        .sub(conn.rx_buffered_reported);
    let session = &mut conn.session;
    session.shared.closed.set(true);
    let abandoned = session.shared.queue.borrow().slots.len() as u64;
    stats.downstream_rq_active.sub(abandoned);
    session.tx.close();
    stats.downstream_cx_active.dec();
}

/// Reads what the client sent into `input`; 0 is end of stream. Cancel-safe. A plaintext
/// client's buffer grows only once bytes are waiting, so idle clients hold none.
///
/// The read itself goes through `AsyncRead`, whose short read (fewer bytes than the buffer had
/// room for) clears the socket's readiness: the socket is drained for this wake-up, so the next
/// read waits for epoll instead of costing a `recvfrom` that returns EAGAIN (`try_read_buf`
/// clears readiness only on EAGAIN, one wasted syscall per request at `-P 1`).
async fn read_some(stream: &mut Stream, input: &mut BytesMut) -> std::io::Result<usize> {
    if input.capacity() == 0 {
        if let Stream::Plain(tcp) = stream {
            tcp.readable().await?;
        }
        *input = spare::take_buffer();
    }
    if input.capacity() - input.len() < MIN_READ_SPACE {
        input.reserve(READ_BUFFER);
    }
    stream.read_buf(input).await
}

impl<S: FilterUpdates> Connection<S> {
    async fn serve(&mut self, mut stream: Stream, input: &mut BytesMut) -> std::io::Result<()> {
        let mut decoder = Decoder::new(DecoderMode::Request, Limits::default());
        // One argument vector for every request of the connection.
        let mut args: Vec<Bytes> = Vec::new();
        let mut output = BytesMut::new();
        let mut close_after_flush = false;
        let mut close_when_answered = false;
        let mut wrote_since_check = false;
        self.source.register(&self.session.shared);
        loop {
            if self.control.is_closed() {
                // The drain time of a removed listener is over (the worker woke us).
                self.session
                    .filter
                    .config
                    .stats
                    .downstream_cx_drain_close
                    .inc();
                return Ok(());
            }
            // A config push reaches this connection on its next request (never in the middle
            // of a transaction, whose connections are pinned). One atomic load when nothing
            // changed.
            if !self.session.tx.active && self.session.tx.clients.is_empty() {
                if let Some(newer) = self.source.changed() {
                    if !Rc::ptr_eq(&newer, &self.session.filter) {
                        self.session.filter = newer;
                    }
                }
            }
            // Dispatch what is already buffered, up to the in-flight bound.
            while !self.session.stop_reading
                && self.session.shared.queue.borrow().slots.len() < MAX_PENDING_REQUESTS
            {
                match decoder.decode_command(input, &mut args) {
                    Ok(Some(Command::Args { raw, verbatim })) => {
                        self.session.on_command(&raw, &args, verbatim);
                        // The arguments are slices of the read buffer: let it go once the
                        // request is dispatched.
                        args.clear();
                    }
                    Ok(Some(Command::Other(frame))) => self.session.on_request(frame),
                    Ok(None) => break,
                    Err(e) => {
                        self.on_protocol_error(&e);
                        break;
                    }
                }
            }
            let filter = Rc::clone(&self.session.filter);
            let stats = &filter.config.stats;
            let wake_at = self.drain(&mut output, &mut close_after_flush);
            if !output.is_empty() {
                let n = output.len() as u64;
                // downstream_cx_tx_bytes_buffered stays unwritten, as in Envoy, whose writes
                // to a client socket that keeps up never leave bytes buffered.
                stream.write_all(&output).await?;
                if stream.is_tls() {
                    // What the TLS layer holds back is sent now, not with the next reply.
                    stream.flush().await?;
                }
                stats.downstream_cx_tx_bytes_total.add(n);
                output.clear();
                wrote_since_check = true;
                // More replies may have become ready while writing.
                continue;
            }
            let idle = self.session.shared.queue.borrow().slots.is_empty();
            // Envoy's drain close: a draining listener's connections close once every reply
            // they are owed has been written.
            let drain_close = idle && wrote_since_check && self.control.should_drain_close();
            if drain_close {
                self.session
                    .filter
                    .config
                    .stats
                    .downstream_cx_drain_close
                    .inc();
            }
            wrote_since_check = false;
            if close_after_flush || drain_close || (close_when_answered && idle) {
                stream.shutdown().await?;
                return Ok(());
            }
            let pending = self.session.shared.queue.borrow().slots.len();
            let can_read = !self.session.stop_reading && pending < MAX_PENDING_REQUESTS;
            // An idle client holds no buffers: buffers are taken when bytes arrive, so a
            // thousand idle connections cost a few hundred bytes each, not 16 KiB.
            if pending == 0 {
                let slots = std::mem::take(&mut self.session.shared.queue.borrow_mut().slots);
                spare::give_back_queue(slots);
            }
            if pending == 0 && input.is_empty() && input.capacity() > 0 {
                spare::give_back_buffer(std::mem::take(input));
                if args.capacity() > RETAINED_ARGS {
                    args = Vec::new();
                }
            }
            if output.capacity() > WRITE_HIGH_WATER {
                output = BytesMut::new();
            }
            tokio::select! {
                res = read_some(&mut stream, input), if can_read => {
                    let n = res?;
                    if n == 0 {
                        // The client half-closed: answer what it already sent, then close.
                        self.session.stop_reading = true;
                        if self.session.shared.queue.borrow().slots.is_empty() {
                            return Ok(());
                        }
                        close_when_answered = true;
                        continue;
                    }
                    let stats = &self.session.filter.config.stats;
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
                _ = self.session.shared.notify.notified() => {}
                // Boxed: only a delay fault sets a wake-up, and an unboxed timer would sit in
                // every connection's state, idle or not.
                _ = async { Box::pin(sleep_until(wake_at.unwrap_or_else(Instant::now).into())).await }, if wake_at.is_some() => {}
            }
            clock::refresh();
        }
    }

    /// Moves every ready reply at the front of the queue into `output`, recording stats.
    /// Returns when a delayed reply at the front will be due.
    fn drain(&mut self, output: &mut BytesMut, close: &mut bool) -> Option<Instant> {
        let config = &self.session.filter.config;
        let now = clock::now();
        let mut queue = self.session.shared.queue.borrow_mut();
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
                let elapsed = now.saturating_duration_since(slot.started);
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
        self.session
            .filter
            .config
            .stats
            .downstream_cx_protocol_error
            .inc();
        self.session.stop_reading = true;
        self.session
            .push_ready(error_value("downstream protocol error"), None, true);
        if let Some(last) = self.session.shared.queue.borrow_mut().slots.back_mut() {
            last.after = After::Close;
        }
        // drain() decrements downstream_rq_active for every slot; this one is not a request.
        self.session.filter.config.stats.downstream_rq_active.inc();
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
