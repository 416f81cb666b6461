//! One downstream connection (Envoy's `redis_proxy/proxy_filter`): reads and decodes requests,
//! hands each to the splitter (`splitter.rs`), and writes replies back strictly in request
//! order from the pending queue (`pending.rs`).
//!
//! Invariant: every decoded request owns exactly one slot in `PendingQueue`, in arrival order;
//! replies are written only from the front of that queue, so the order of upstream completions
//! never changes the order the client sees.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redvoy_resp::{encode, encode_resp3, Command, DecodeError, Resp3Shape, RespValue};
use redvoy_tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
/// Upstream replies this large are written from their own buffer, not copied into the
/// session's.
const DIRECT_WRITE: usize = 64 * 1024;

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
    // Until replies show their size, a new client has two requests in flight (see
    // `dispatch_open`): 100 pipelined GETs of a 4 MiB value cost 8 MiB, not 400.
    conn.session.shared.queue.borrow_mut().reply_estimate = filter.config.buffer_limit / 2;
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
        // The decoder, argument vector and reply buffer: held while the session has work,
        // given back to the worker when it is idle (see `spare.rs`).
        let mut scratch: Option<Box<spare::Scratch>> = None;
        // A large upstream reply, written from the upstream's buffer instead of copied.
        let mut direct: Option<Bytes> = None;
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
                        let limit = newer.config.buffer_limit;
                        if limit != self.session.filter.config.buffer_limit {
                            // A new buffer limit starts its estimate afresh, as a new session's
                            // does (a limit turned on from none would otherwise find 0 there).
                            self.session.shared.queue.borrow_mut().reply_estimate = limit / 2;
                        }
                        self.session.filter = newer;
                    }
                }
            }
            let work = scratch.get_or_insert_with(spare::take_scratch);
            let spare::Scratch {
                decoder,
                args,
                output,
            } = &mut **work;
            // Dispatch what is already buffered, up to the in-flight bounds.
            while !self.session.stop_reading && self.dispatch_open() {
                match decoder.decode_command(input, args) {
                    Ok(Some(Command::Args { raw, verbatim })) => {
                        self.session.on_command(&raw, args, verbatim);
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
            let wake_at = drain(
                &self.session,
                clock::now(),
                output,
                &mut direct,
                &mut close_after_flush,
            );
            if !output.is_empty() || direct.is_some() {
                let chunk: &[u8] = direct.as_deref().unwrap_or(output);
                let n = chunk.len() as u64;
                // downstream_cx_tx_bytes_buffered stays unwritten, as in Envoy, whose writes
                // to a client socket that keeps up never leave bytes buffered.
                if !self.write_replies(&mut stream, chunk).await? {
                    debug!("closing a client that reads none of its replies");
                    filter.config.count_slow_reader_close();
                    return Ok(());
                }
                stats.downstream_cx_tx_bytes_total.add(n);
                output.clear();
                direct = None;
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
            // A request that could not be dispatched stays in the input buffer, and so does
            // the client's next one (TCP backpressure), so reading waits as dispatching does.
            let can_read = !self.session.stop_reading && self.dispatch_open();
            // An idle client holds no buffers: buffers are taken when bytes arrive, so a
            // thousand idle connections cost a few hundred bytes each, not 16 KiB.
            if pending == 0 {
                let mut queue = self.session.shared.queue.borrow_mut();
                // Nothing is pending, so nothing waits either, whatever completed how.
                queue.waiting = 0;
                let slots = std::mem::take(&mut queue.slots);
                drop(queue);
                spare::give_back_queue(slots);
            }
            if output.capacity() > WRITE_HIGH_WATER {
                *output = BytesMut::new();
            }
            if pending == 0 && input.is_empty() {
                if input.capacity() > 0 {
                    spare::give_back_buffer(std::mem::take(input));
                }
                // Between frames (the input is empty) with nothing to write.
                if let Some(work) = scratch.take() {
                    spare::give_back_scratch(work);
                }
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

    /// Whether another request may be dispatched: fewer than `MAX_PENDING_REQUESTS` in flight
    /// and, under a buffer limit, the replies held plus those expected (one estimate for each
    /// request still waiting upstream) below it. A client with nothing in flight may always
    /// send one request.
    fn dispatch_open(&self) -> bool {
        let queue = self.session.shared.queue.borrow();
        let in_flight = queue.slots.len();
        let limit = self.session.filter.config.buffer_limit;
        in_flight == 0
            || (in_flight < MAX_PENDING_REQUESTS
                && (limit == 0
                    || queue.held_bytes + queue.waiting.saturating_mul(queue.reply_estimate)
                        < limit))
    }

    /// Writes `output` to the client (and flushes what TLS holds back). False when the client
    /// was over its buffer limit and its socket took no byte for the slow-reader timeout: a
    /// client that stopped reading, closed as Redis closes one by `client-output-buffer-limit`.
    async fn write_replies(&self, stream: &mut Stream, output: &[u8]) -> std::io::Result<bool> {
        let mut written = 0;
        while written < output.len() {
            let rest = &output[written..];
            match self
                .watch_stall(|cx| Pin::new(&mut *stream).poll_write(cx, rest))
                .await
            {
                Some(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Some(Ok(n)) => written += n,
                Some(Err(e)) => return Err(e),
                None if self.over_limit(output.len() - written) => return Ok(false),
                // Under the limit such a client costs little: wait on.
                None => {}
            }
        }
        // What the TLS layer holds back is sent now, not with the next reply.
        while stream.is_tls() {
            match self
                .watch_stall(|cx| Pin::new(&mut *stream).poll_flush(cx))
                .await
            {
                Some(res) => {
                    res?;
                    break;
                }
                None if self.over_limit(0) => return Ok(false),
                None => {}
            }
        }
        Ok(true)
    }

    /// Whether the client's replies, held and `unwritten` ones, reach its buffer limit.
    fn over_limit(&self, unwritten: usize) -> bool {
        let limit = self.session.filter.config.buffer_limit;
        let held = self.session.shared.queue.borrow().held_bytes;
        limit != 0 && held + unwritten >= limit
    }

    /// Polls a write to the client; `None` once it has waited the slow-reader timeout. The
    /// timer is made only when the write has to wait, so a client that keeps up costs none.
    async fn watch_stall<T>(
        &self,
        mut op: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Option<std::io::Result<T>> {
        let config = &self.session.filter.config;
        let mut stall: Option<Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(res) = op(cx) {
                return Poll::Ready(Some(res));
            }
            if config.buffer_limit == 0 {
                return Poll::Pending;
            }
            if stall.is_none() {
                let Some(timeout) = config.slow_reader_timeout() else {
                    return Poll::Pending;
                };
                stall = Some(Box::pin(tokio::time::sleep(timeout)));
            }
            match stall.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
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

/// Moves every ready reply at the front of the queue into `output`, recording stats; a
/// large upstream reply goes to `direct` instead, alone, so it is written without a copy
/// (a client that does not read then pins one copy of it, not two). Returns when a delayed
/// reply at the front will be due.
pub(crate) fn drain(
    session: &Session,
    now: Instant,
    output: &mut BytesMut,
    direct: &mut Option<Bytes>,
    close: &mut bool,
) -> Option<Instant> {
    let config = &session.filter.config;
    let mut queue = session.shared.queue.borrow_mut();
    while output.len() < WRITE_HIGH_WATER && direct.is_none() {
        let large_next = queue
            .slots
            .front()
            .is_some_and(|s| matches!(&s.reply, Some(Reply::Raw(b)) if b.len() >= DIRECT_WRITE));
        if large_next && !output.is_empty() {
            // Written after what is in `output`, by the next call.
            return None;
        }
        let slot = match queue.pop_ready(now) {
            Ok(slot) => slot,
            Err(wake_at) => return wake_at,
        };
        match (&slot.reply, slot.resp3) {
            // Raw only for RESP2 clients (see `apply`).
            (Some(Reply::Raw(bytes)), _) if bytes.len() >= DIRECT_WRITE => {
                *direct = Some(bytes.clone())
            }
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
            queue.held_bytes = 0;
            queue.waiting = 0;
            return None;
        }
    }
    None
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
