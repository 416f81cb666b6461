//! RESP wire codec: a resumable, zero-copy RESP2 decoder (requests and replies, with inline
//! commands on the request side) and an encoder.
//!
//! Owns: framing, size limits, protocol-error kinds. Must never depend on anything but `bytes`
//! (and `thiserror`): it is shared by the proxy, the upstream clients and the test tools.
//! (`memchr` is the one addition: a leaf crate for line scanning on the hot path.)
//!
//! ```
//! use bytes::BytesMut;
//! use redvoy_resp::{Decoder, DecoderMode, Limits, RespValue};
//!
//! let mut decoder = Decoder::new(DecoderMode::Request, Limits::default());
//! let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4"[..]);
//! let get = decoder.decode(&mut buf)?.expect("complete");
//! assert!(get.verbatim); // `get.raw` may be forwarded as is
//! assert_eq!(get.value.into_args().expect("bulk strings").len(), 2);
//! let ping = decoder.decode(&mut buf)?.expect("complete"); // an inline command
//! assert!(!ping.verbatim);
//! assert_eq!(ping.value, RespValue::Array(vec![RespValue::bulk("PING")]));
//! assert_eq!(decoder.decode(&mut buf)?, None); // the rest has not arrived yet
//! buf.extend_from_slice(b"\r\nPING\r\n");
//! assert_eq!(decoder.decode(&mut buf)?.expect("complete").value, ping.value);
//! # Ok::<(), redvoy_resp::DecodeError>(())
//! ```

#![forbid(unsafe_code)]

mod decode;
pub mod encode;
mod inline;
mod resp3;
mod value;

pub use decode::{
    Command, DecodeError, Decoder, DecoderMode, Limits, DEFAULT_MAX_ARRAY_LEN,
    DEFAULT_MAX_BULK_LEN, DEFAULT_MAX_DEPTH, DEFAULT_MAX_INLINE_LEN,
};
pub use resp3::{encode_resp3, map_header, Resp3Shape};
pub use value::{Frame, RespValue};
