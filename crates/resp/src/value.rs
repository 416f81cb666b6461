//! The decoded RESP2 value and the frame that carries it.

use bytes::{Bytes, BytesMut};

use crate::encode;

/// One RESP2 value. String payloads are `Bytes`, so values decoded from the wire share the
/// frame's buffer instead of copying it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RespValue {
    /// `+<text>\r\n`
    Simple(Bytes),
    /// `-<text>\r\n`
    Error(Bytes),
    /// `:<n>\r\n`
    Integer(i64),
    /// `$<len>\r\n<bytes>\r\n`
    Bulk(Bytes),
    /// `$-1\r\n` or `*-1\r\n` on the wire; always encoded as `$-1\r\n`, as Envoy does.
    Null,
    /// `*<n>\r\n` followed by `n` values.
    Array(Vec<RespValue>),
}

// === impl RespValue ===

impl RespValue {
    /// An error reply, e.g. `RespValue::error("ERR unknown command")`.
    pub fn error(msg: impl Into<Bytes>) -> Self {
        RespValue::Error(msg.into())
    }

    /// A simple-string reply, e.g. `RespValue::simple("OK")`.
    pub fn simple(s: impl Into<Bytes>) -> Self {
        RespValue::Simple(s.into())
    }

    /// A bulk string.
    pub fn bulk(b: impl Into<Bytes>) -> Self {
        RespValue::Bulk(b.into())
    }

    /// Appends the RESP2 encoding of `self` to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            RespValue::Simple(s) => encode::simple(out, s),
            RespValue::Error(s) => encode::error(out, s),
            RespValue::Integer(n) => encode::integer(out, *n),
            RespValue::Bulk(b) => encode::bulk(out, b),
            RespValue::Null => encode::null(out),
            RespValue::Array(items) => {
                encode::array_header(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// Exact number of bytes [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            RespValue::Simple(s) | RespValue::Error(s) => 1 + s.len() + 2,
            RespValue::Integer(n) => encode::integer_len(*n),
            RespValue::Bulk(b) => encode::bulk_len(b.len()),
            RespValue::Null => encode::NULL_BYTES.len(),
            RespValue::Array(items) => {
                encode::header_len(items.len())
                    + items.iter().map(RespValue::encoded_len).sum::<usize>()
            }
        }
    }

    /// The payload of a bulk string.
    pub fn as_bulk(&self) -> Option<&Bytes> {
        match self {
            RespValue::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[RespValue]> {
        match self {
            RespValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value of an integer.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            RespValue::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The arguments of a command: `Some` for an array whose every element is a bulk string
    /// (an empty array gives an empty vector), `None` for anything else. Envoy answers the
    /// `None` cases with `invalid request`.
    pub fn into_args(self) -> Option<Vec<Bytes>> {
        let RespValue::Array(items) = self else {
            return None;
        };
        if !items.iter().all(|v| matches!(v, RespValue::Bulk(_))) {
            return None;
        }
        Some(
            items
                .into_iter()
                .filter_map(|v| match v {
                    RespValue::Bulk(b) => Some(b),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Encodes into a fresh buffer of exactly the right size.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }
}

/// One decoded top-level message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Exactly the bytes consumed from the input for this frame.
    pub raw: Bytes,
    /// The decoded value; its strings are slices of `raw` where possible.
    pub value: RespValue,
    /// `raw` equals `value`'s encoding byte for byte, so `raw` may be forwarded as is. False
    /// for inline commands, `*-1`, and numbers written with leading zeros or as `-0`.
    pub verbatim: bool,
}
