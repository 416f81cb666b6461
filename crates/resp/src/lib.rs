//! RESP wire codec: a resumable, zero-copy RESP2 decoder (requests and replies, with inline
//! commands on the request side) and an encoder.
//!
//! Owns: framing, size limits, protocol-error kinds. Must never depend on anything but `bytes`
//! (and `thiserror`): it is shared by the proxy, the upstream clients and the test tools.

#![forbid(unsafe_code)]

// API CONTRACT (implemented by the codec owner; other crates code against exactly this):
//
// pub enum RespValue { Simple(Bytes), Error(Bytes), Integer(i64), Bulk(Bytes), Null, Array(Vec<RespValue>) }
//   - `*-1` and `$-1` both decode to `Null`; `Null` always encodes as `$-1\r\n` (Envoy does this).
//   impl RespValue { pub fn encode(&self, out: &mut BytesMut); pub fn encoded_len(&self) -> usize;
//                    pub fn error(msg: impl Into<Bytes>) -> Self; pub fn simple(..); pub fn bulk(..) }
// pub struct Frame { pub raw: Bytes, pub value: RespValue, pub verbatim: bool }
//   - `raw` is exactly the bytes consumed for this frame; `verbatim` is true when `raw` equals
//     `value.encode()` byte for byte (false for inline commands, `*-1`, non-canonical numbers...),
//     so the proxy may forward `raw` instead of re-encoding.
// pub enum DecoderMode { Request, Reply }   // Request: top-level inline commands accepted.
// pub struct Limits { pub max_bulk_len: usize, pub max_array_len: usize, pub max_depth: usize,
//                     pub max_inline_len: usize }  + impl Default (512 MiB, 2_000_000, 64, 64 KiB)
// pub struct Decoder; impl Decoder {
//     pub fn new(mode: DecoderMode, limits: Limits) -> Self;
//     /// Takes the next complete frame off the front of `buf`. `Ok(None)`: need more bytes; the
//     /// progress made so far is kept, so the next call does not re-parse what was already read.
//     pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError>;
// }
// pub enum DecodeError (thiserror, Display = Envoy's texts: "invalid value type", ...)
// pub mod encode { simple, error, integer, bulk, null, array_header, command(&[&[u8]]) -> into &mut BytesMut }
