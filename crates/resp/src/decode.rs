//! The resumable RESP2 decoder.
//!
//! Invariant between calls: the bytes of the frame being decoded sit at the front of the
//! caller's buffer, from offset 0, and the decoder remembers how far it got as offsets into
//! that buffer (`pos`, the open-array stack, the completed nodes). New bytes are only appended
//! by the caller, so every offset stays valid and nothing already read is looked at again,
//! except for the CR of a line terminator whose LF had not arrived yet. Bulk payloads are
//! skipped by their declared length, never scanned. Once a frame is complete it is split off
//! the buffer in one `split_to`, and the value is built as slices of that one `Bytes`.

use bytes::{Bytes, BytesMut};

use crate::inline;
use crate::value::{Frame, RespValue};

/// Default [`Limits::max_bulk_len`]: Redis's own `proto-max-bulk-len`, and the size Envoy 1.40
/// was observed to wait for.
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Default [`Limits::max_array_len`] (Envoy's hardened per-array cap).
pub const DEFAULT_MAX_ARRAY_LEN: usize = 2_000_000;
/// Default [`Limits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Default [`Limits::max_inline_len`]: Redis's `PROTO_INLINE_MAX_SIZE`.
pub const DEFAULT_MAX_INLINE_LEN: usize = 64 * 1024;

/// Capacity of the per-decoder scratch vectors kept after a frame; a decoder that once saw a
/// huge array gives the excess back instead of holding it for the connection's lifetime.
const RETAINED_SCRATCH_CAPACITY: usize = 1024;

/// Which side of the conversation the decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecoderMode {
    /// Downstream requests: a top-level inline command line is accepted.
    Request,
    /// Upstream replies: RESP types only.
    Reply,
}

/// Bounds on what one frame may declare. Exceeding any of them is a protocol error reported
/// as soon as the offending header (or line prefix) has been read, before its payload arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Longest bulk string; also bounds simple-string and error lines.
    pub max_bulk_len: usize,
    /// Most elements in one array (and most arguments in one inline command).
    pub max_array_len: usize,
    /// Deepest array nesting; a top-level array is depth 1.
    pub max_depth: usize,
    /// Longest inline command line, terminator excluded.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
        }
    }
}

/// A protocol error. The texts are Envoy's internal (logged) ones; clients of the proxy only
/// ever see `downstream protocol error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// The first byte of a value is not a RESP2 type (nor, for requests, an inline line).
    #[error("invalid value type")]
    InvalidValueType,
    /// A non-digit in an integer or a length.
    #[error("invalid integer character")]
    InvalidIntegerCharacter,
    /// A CR not followed by LF.
    #[error("expected new line")]
    ExpectedNewLine,
    /// A bulk payload not followed by CR.
    #[error("expected carriage return")]
    ExpectedCarriageReturn,
    /// An integer outside `i64`, or a length outside `u64`.
    #[error("integer overflow")]
    IntegerOverflow,
    /// `:\r\n`, `$\r\n`, `*-\r\n`...
    #[error("integer with no digits")]
    IntegerNoDigits,
    /// A length below -1.
    #[error("invalid negative count/length")]
    InvalidNegativeLength,
    /// A bulk string longer than [`Limits::max_bulk_len`].
    #[error("bulk string length exceeds maximum")]
    BulkTooLong,
    /// A simple string or error line longer than [`Limits::max_bulk_len`].
    #[error("simple string length exceeds maximum")]
    SimpleStringTooLong,
    /// An array longer than [`Limits::max_array_len`].
    #[error("element count exceeds maximum")]
    ElementCountExceeded,
    /// Arrays nested deeper than [`Limits::max_depth`].
    #[error("nesting depth exceeds maximum")]
    DepthExceeded,
    /// An inline command with an unterminated quote, or a closing quote glued to more text.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline command line longer than [`Limits::max_inline_len`].
    #[error("inline request too long")]
    InlineTooLong,
}

/// What [`Decoder::decode_command`] decoded.
#[derive(Debug)]
pub enum Command {
    /// A command of bulk strings, now in the caller's `args`. `raw` is its bytes as received;
    /// `verbatim` as in [`Frame`].
    Args { raw: Bytes, verbatim: bool },
    /// Any other request shape, decoded as a whole.
    Other(Frame),
}

/// A completed value of the frame in progress, in pre-order, as offsets from the frame start.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Simple(usize, usize),
    Error(usize, usize),
    Integer(i64),
    Bulk(usize, usize),
    /// An inline argument that had quotes or escapes, hence no slice of the frame.
    Owned(Bytes),
    Null,
    EmptyArray,
    /// A non-empty array; its elements are the next nodes.
    Array(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberKind {
    Array,
    Bulk,
    Integer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Simple,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a type byte at `pos`.
    ValueStart,
    /// Reading the decimal after `*`, `$` or `:`; digits before `pos` are folded into `value`.
    Number {
        kind: NumberKind,
        negative: bool,
        value: u64,
        digits: u32,
        canonical: bool,
    },
    /// A `+`/`-` line starting at `start`; no CR before `scan`.
    Line {
        kind: LineKind,
        start: usize,
        scan: usize,
    },
    /// A bulk payload at `start..start + len`, followed by CRLF.
    BulkBody { start: usize, len: usize },
    /// An inline line starting at 0; no LF before `scan`.
    Inline { scan: usize },
}

impl State {
    fn number(kind: NumberKind) -> Self {
        State::Number {
            kind,
            negative: false,
            value: 0,
            digits: 0,
            canonical: true,
        }
    }
}

/// Resumable RESP2 decoder for one byte stream (one per connection and direction).
#[derive(Debug)]
pub struct Decoder {
    mode: DecoderMode,
    limits: Limits,
    state: State,
    /// Next unread offset for `ValueStart` and `Number`.
    pos: usize,
    /// Buffer length at the last `Ok(None)`; a shorter buffer means the caller broke the
    /// contract, and the decoder starts over rather than index past the end.
    seen: usize,
    /// Elements still expected by each open array, innermost last.
    open: Vec<usize>,
    nodes: Vec<Node>,
    /// False once anything makes `raw` differ from the re-encoded value.
    verbatim: bool,
    /// Scratch for `build`, kept to avoid an allocation per frame.
    builder: Vec<(Vec<RespValue>, usize)>,
}

// === impl Decoder ===

impl Decoder {
    /// A decoder for one direction of one connection; `limits` bound every frame it accepts.
    pub fn new(mode: DecoderMode, limits: Limits) -> Self {
        Decoder {
            mode,
            limits,
            state: State::ValueStart,
            pos: 0,
            seen: 0,
            open: Vec::new(),
            nodes: Vec::new(),
            verbatim: true,
            builder: Vec::new(),
        }
    }

    pub fn mode(&self) -> DecoderMode {
        self.mode
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True while the decoder holds progress on a partial frame, i.e. its last `decode`
    /// returned `Ok(None)` on a non-empty buffer. At end of stream, a non-empty buffer is the
    /// caller's sign of a truncated frame whatever this says.
    pub fn in_frame(&self) -> bool {
        self.seen > 0
    }

    /// After `Ok(None)` inside a bulk payload: the buffer length at which that payload (and its
    /// CRLF) will be complete. A reader that reserves it at once receives a large value into
    /// one buffer of the right size, instead of growing one by doubling and copying.
    pub fn bulk_end_hint(&self) -> Option<usize> {
        match self.state {
            State::BulkBody { start, len } => start.checked_add(len)?.checked_add(2),
            _ => None,
        }
    }

    /// Forgets any frame in progress; the next `decode` starts at the buffer's front.
    #[inline]
    pub fn reset(&mut self) {
        self.state = State::ValueStart;
        self.pos = 0;
        self.seen = 0;
        self.open.clear();
        self.nodes.clear();
        self.verbatim = true;
        if self.nodes.capacity() > RETAINED_SCRATCH_CAPACITY {
            self.nodes.shrink_to(RETAINED_SCRATCH_CAPACITY);
        }
        if self.open.capacity() > RETAINED_SCRATCH_CAPACITY {
            self.open.shrink_to(RETAINED_SCRATCH_CAPACITY);
        }
        if self.builder.capacity() > RETAINED_SCRATCH_CAPACITY {
            self.builder.shrink_to(RETAINED_SCRATCH_CAPACITY);
        }
    }

    /// Takes the next complete frame off the front of `buf`. `Ok(None)`: need more bytes; the
    /// progress made so far is kept, so the next call (with more bytes appended to the same
    /// buffer) does not re-parse what was already read. On error nothing is consumed and the
    /// decoder is reset; the stream is not recoverable and the connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(len) = self.progress(buf)? else {
            return Ok(None);
        };
        let raw = buf.split_to(len).freeze();
        Ok(Some(self.finish_frame(raw)))
    }

    /// [`Decoder::decode`] for requests on the hot path: a command of bulk strings (what every
    /// client library sends) goes straight into `args` (cleared first, its allocation reused),
    /// with no `RespValue` tree and no per-request vector; anything else (an inline command, a
    /// nested array) comes back as a [`Frame`].
    pub fn decode_command(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
    ) -> Result<Option<Command>, DecodeError> {
        let Some(len) = self.progress(buf)? else {
            return Ok(None);
        };
        let raw = buf.split_to(len).freeze();
        let flat = match self.nodes.split_first() {
            Some((Node::Array(n), rest)) => {
                rest.len() == *n && rest.iter().all(|node| matches!(node, Node::Bulk(..)))
            }
            _ => false,
        };
        if !flat {
            return Ok(Some(Command::Other(self.finish_frame(raw))));
        }
        args.clear();
        args.extend(self.nodes[1..].iter().map(|node| match node {
            Node::Bulk(start, end) => raw.slice(*start..*end),
            _ => Bytes::new(),
        }));
        let verbatim = self.verbatim;
        self.reset();
        Ok(Some(Command::Args { raw, verbatim }))
    }

    /// Parses what `buf` holds; `Some(n)`: a frame of `n` bytes is complete (its nodes are in
    /// `self.nodes`).
    fn progress(&mut self, buf: &BytesMut) -> Result<Option<usize>, DecodeError> {
        if buf.len() < self.seen {
            self.reset();
        }
        let fresh = self.pos == 0 && self.state == State::ValueStart;
        let progress = if fresh && buf.first() == Some(&b'*') {
            match self.fast_array(buf) {
                Some(len) => Ok(Some(len)),
                None => self.advance(buf),
            }
        } else {
            self.advance(buf)
        };
        match progress {
            Ok(None) => {
                self.seen = buf.len();
                Ok(None)
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
            done => done,
        }
    }

    /// The frame whose nodes `progress` left, over its bytes `raw`; resets for the next one.
    fn finish_frame(&mut self, raw: Bytes) -> Frame {
        let value = self.build(&raw);
        let verbatim = self.verbatim;
        self.reset();
        Frame {
            raw,
            value,
            verbatim,
        }
    }

    /// The common request shape, `*<n>` followed by `n` bulk strings, all canonical and already
    /// in the buffer, without the general state machine. It stops at the first element that is
    /// anything else (or incomplete) and leaves its progress in the decoder's state, so
    /// `advance` carries on from that element: nothing is parsed twice but that element's short
    /// header. `Some(n)`: the frame is complete and `n` bytes long.
    fn fast_array(&mut self, buf: &[u8]) -> Option<usize> {
        let limits = self.limits;
        let (n, mut p) = canonical_len(buf, 1)?;
        if n == 0 || n > limits.max_array_len || limits.max_depth == 0 {
            return None;
        }
        self.nodes.push(Node::Array(n));
        let mut remaining = n;
        while remaining > 0 {
            if buf.get(p) != Some(&b'$') {
                break;
            }
            let Some((len, start)) = canonical_len(buf, p + 1) else {
                break;
            };
            if len > limits.max_bulk_len {
                break;
            }
            let end = start.saturating_add(len);
            if buf.get(end..end.saturating_add(2)) != Some(&b"\r\n"[..]) {
                break;
            }
            self.nodes.push(Node::Bulk(start, end));
            remaining -= 1;
            p = end + 2;
        }
        self.pos = p;
        if remaining == 0 {
            return Some(p);
        }
        self.open.push(remaining);
        None
    }

    /// Runs the state machine over `buf`; `Some(n)`: a frame of `n` bytes is complete.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let limits = self.limits;
        let mut p = self.pos;
        let mut state = self.state;
        let done = 'parse: loop {
            match state {
                State::ValueStart => {
                    let Some(&c) = buf.get(p) else {
                        break 'parse None;
                    };
                    p += 1;
                    state = match c {
                        b'*' => State::number(NumberKind::Array),
                        b'$' => State::number(NumberKind::Bulk),
                        b':' => State::number(NumberKind::Integer),
                        b'+' => State::Line {
                            kind: LineKind::Simple,
                            start: p,
                            scan: p,
                        },
                        b'-' => State::Line {
                            kind: LineKind::Error,
                            start: p,
                            scan: p,
                        },
                        // Offset 0 is the frame start, so this is a top-level value. Envoy
                        // takes alphanumerics, space and quotes as the start of an inline
                        // command; CR and LF start an empty line, which Redis ignores.
                        _ if p == 1
                            && self.mode == DecoderMode::Request
                            && (c.is_ascii_alphanumeric()
                                || matches!(c, b' ' | b'"' | b'\'' | b'\r' | b'\n')) =>
                        {
                            State::Inline { scan: 0 }
                        }
                        _ => return Err(DecodeError::InvalidValueType),
                    };
                }

                State::Number {
                    kind,
                    mut negative,
                    mut value,
                    mut digits,
                    mut canonical,
                } => {
                    loop {
                        let Some(&c) = buf.get(p) else {
                            state = State::Number {
                                kind,
                                negative,
                                value,
                                digits,
                                canonical,
                            };
                            break 'parse None;
                        };
                        match c {
                            b'0'..=b'9' => {
                                if digits == 1 && value == 0 {
                                    canonical = false;
                                }
                                value = value
                                    .checked_mul(10)
                                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                                    .ok_or(DecodeError::IntegerOverflow)?;
                                digits = digits.saturating_add(1);
                                p += 1;
                            }
                            b'-' if digits == 0 && !negative => {
                                negative = true;
                                p += 1;
                            }
                            b'\r' => {
                                if digits == 0 {
                                    return Err(DecodeError::IntegerNoDigits);
                                }
                                let Some(&lf) = buf.get(p + 1) else {
                                    state = State::Number {
                                        kind,
                                        negative,
                                        value,
                                        digits,
                                        canonical,
                                    };
                                    break 'parse None;
                                };
                                if lf != b'\n' {
                                    return Err(DecodeError::ExpectedNewLine);
                                }
                                p += 2;
                                break;
                            }
                            _ => return Err(DecodeError::InvalidIntegerCharacter),
                        }
                    }
                    if !canonical {
                        self.verbatim = false;
                    }
                    let node = match kind {
                        NumberKind::Integer => {
                            let n = if negative {
                                if value == 0 {
                                    // `:-0` re-encodes as `:0`.
                                    self.verbatim = false;
                                }
                                if value > 1u64 << 63 {
                                    return Err(DecodeError::IntegerOverflow);
                                }
                                // Two's complement: 2^63 wraps to exactly `i64::MIN`.
                                0i64.wrapping_sub_unsigned(value)
                            } else {
                                i64::try_from(value).map_err(|_| DecodeError::IntegerOverflow)?
                            };
                            Node::Integer(n)
                        }
                        NumberKind::Bulk if negative => {
                            if value != 1 {
                                return Err(DecodeError::InvalidNegativeLength);
                            }
                            Node::Null
                        }
                        NumberKind::Bulk => {
                            let len = usize::try_from(value)
                                .ok()
                                .filter(|&len| len <= limits.max_bulk_len)
                                .ok_or(DecodeError::BulkTooLong)?;
                            state = State::BulkBody { start: p, len };
                            continue 'parse;
                        }
                        NumberKind::Array if negative => {
                            if value != 1 {
                                return Err(DecodeError::InvalidNegativeLength);
                            }
                            // `*-1` re-encodes as `$-1`, as Envoy forwards it.
                            self.verbatim = false;
                            Node::Null
                        }
                        NumberKind::Array => {
                            if self.open.len() >= limits.max_depth {
                                return Err(DecodeError::DepthExceeded);
                            }
                            let n = usize::try_from(value)
                                .ok()
                                .filter(|&n| n <= limits.max_array_len)
                                .ok_or(DecodeError::ElementCountExceeded)?;
                            if n == 0 {
                                Node::EmptyArray
                            } else {
                                self.nodes.push(Node::Array(n));
                                self.open.push(n);
                                state = State::ValueStart;
                                continue 'parse;
                            }
                        }
                    };
                    if self.complete(node) {
                        break 'parse Some(p);
                    }
                    state = State::ValueStart;
                }

                State::BulkBody { start, len } => {
                    let end = start.saturating_add(len);
                    let Some(&cr) = buf.get(end) else {
                        break 'parse None;
                    };
                    if cr != b'\r' {
                        return Err(DecodeError::ExpectedCarriageReturn);
                    }
                    let Some(&lf) = buf.get(end + 1) else {
                        break 'parse None;
                    };
                    if lf != b'\n' {
                        return Err(DecodeError::ExpectedNewLine);
                    }
                    p = end + 2;
                    if self.complete(Node::Bulk(start, end)) {
                        break 'parse Some(p);
                    }
                    state = State::ValueStart;
                }

                State::Line { kind, start, scan } => {
                    let rest = buf.get(scan..).unwrap_or_default();
                    let Some(i) = memchr::memchr(b'\r', rest) else {
                        if buf.len() - start > limits.max_bulk_len {
                            return Err(DecodeError::SimpleStringTooLong);
                        }
                        state = State::Line {
                            kind,
                            start,
                            scan: buf.len(),
                        };
                        break 'parse None;
                    };
                    let cr = scan + i;
                    if cr - start > limits.max_bulk_len {
                        return Err(DecodeError::SimpleStringTooLong);
                    }
                    let Some(&lf) = buf.get(cr + 1) else {
                        state = State::Line {
                            kind,
                            start,
                            scan: cr,
                        };
                        break 'parse None;
                    };
                    if lf != b'\n' {
                        return Err(DecodeError::ExpectedNewLine);
                    }
                    p = cr + 2;
                    if memchr::memchr(b'\n', &buf[start..cr]).is_some() {
                        // A bare LF in the line is re-encoded as a space (see `encode::simple`).
                        self.verbatim = false;
                    }
                    let node = match kind {
                        LineKind::Simple => Node::Simple(start, cr),
                        LineKind::Error => Node::Error(start, cr),
                    };
                    if self.complete(node) {
                        break 'parse Some(p);
                    }
                    state = State::ValueStart;
                }

                State::Inline { scan } => {
                    let rest = buf.get(scan..).unwrap_or_default();
                    let Some(i) = memchr::memchr(b'\n', rest) else {
                        // The line is at least `len - 1` long (its last byte may be the CR).
                        if buf.len().saturating_sub(1) > limits.max_inline_len {
                            return Err(DecodeError::InlineTooLong);
                        }
                        state = State::Inline { scan: buf.len() };
                        break 'parse None;
                    };
                    let lf = scan + i;
                    let line_end = if lf > 0 && buf[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    if line_end > limits.max_inline_len {
                        return Err(DecodeError::InlineTooLong);
                    }
                    self.verbatim = false;
                    inline::split_args(&buf[..line_end], limits.max_array_len, &mut self.nodes)?;
                    break 'parse Some(lf + 1);
                }
            }
        };
        self.pos = p;
        self.state = state;
        Ok(done)
    }

    /// Records a completed value; true when it completes the whole frame.
    fn complete(&mut self, node: Node) -> bool {
        self.nodes.push(node);
        while let Some(remaining) = self.open.last_mut() {
            *remaining -= 1;
            if *remaining > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }

    /// Turns the recorded nodes into the value, slicing payloads out of `raw`.
    fn build(&mut self, raw: &Bytes) -> RespValue {
        // A lone leaf (the usual reply) or a flat array (the usual command) needs no stack.
        if self.nodes.len() == 1 {
            let value = leaf(&self.nodes[0], raw);
            self.nodes.clear();
            return value;
        }
        if let Some(&Node::Array(n)) = self.nodes.first() {
            if self.nodes.len() == n + 1 {
                let mut items = Vec::with_capacity(n);
                for node in &self.nodes[1..] {
                    items.push(leaf(node, raw));
                }
                self.nodes.clear();
                return RespValue::Array(items);
            }
        }
        let mut stack = std::mem::take(&mut self.builder);
        let mut root = RespValue::Null;
        for node in self.nodes.drain(..) {
            let mut value = match node {
                Node::Array(n) => {
                    stack.push((Vec::with_capacity(n), n));
                    continue;
                }
                leaf_node => leaf(&leaf_node, raw),
            };
            // Fold the value into its parent, closing every array it completes.
            loop {
                let Some((items, remaining)) = stack.last_mut() else {
                    root = value;
                    break;
                };
                items.push(value);
                *remaining -= 1;
                if *remaining > 0 {
                    break;
                }
                let Some((items, _)) = stack.pop() else {
                    break;
                };
                value = RespValue::Array(items);
            }
        }
        self.builder = stack;
        root
    }
}

/// The value of a node that has no children (`Array` nodes are handled by the caller; one
/// reaching here would be a bug, and decodes as an empty array rather than panicking).
#[inline(always)]
fn leaf(node: &Node, raw: &Bytes) -> RespValue {
    match *node {
        Node::Simple(s, e) => RespValue::Simple(raw.slice(s..e)),
        Node::Error(s, e) => RespValue::Error(raw.slice(s..e)),
        Node::Integer(n) => RespValue::Integer(n),
        Node::Bulk(s, e) => RespValue::Bulk(raw.slice(s..e)),
        Node::Owned(ref b) => RespValue::Bulk(b.clone()),
        Node::Null => RespValue::Null,
        Node::EmptyArray | Node::Array(_) => RespValue::Array(Vec::new()),
    }
}

/// Parses a canonical non-negative decimal (no sign, no leading zero) followed by CRLF at
/// `buf[p..]`: `Some((value, offset after the LF))`. `None` for anything else, including
/// incomplete input; the general state machine then decides.
#[inline(always)]
fn canonical_len(buf: &[u8], mut p: usize) -> Option<(usize, usize)> {
    let first = *buf.get(p)?;
    if !first.is_ascii_digit() {
        return None;
    }
    let mut value = usize::from(first - b'0');
    p += 1;
    loop {
        let c = *buf.get(p)?;
        if c.is_ascii_digit() {
            if value == 0 {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(usize::from(c - b'0'))?;
            p += 1;
        } else if c == b'\r' {
            if *buf.get(p + 1)? != b'\n' {
                return None;
            }
            return Some((value, p + 2));
        } else {
            return None;
        }
    }
}
