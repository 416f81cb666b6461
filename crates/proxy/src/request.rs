//! One decoded request as the splitter, transactions and local commands see it, and the bytes
//! sent upstream for it.

use bytes::{Bytes, BytesMut};
use redvoy_resp::encode;

use crate::supported_commands::CommandSpec;

/// One decoded request, borrowed while it is being dispatched.
pub(crate) struct Request<'a> {
    pub(crate) args: &'a [Bytes],
    pub(crate) raw: &'a Bytes,
    pub(crate) verbatim: bool,
    /// Lowercased command name.
    pub(crate) cmd: &'a str,
    /// The command's facts, looked up once.
    pub(crate) spec: CommandSpec,
    /// Listed in `custom_commands`.
    pub(crate) custom: bool,
    /// Where the request's `command.<name>.*` stats are (`multi` inside a transaction).
    pub(crate) stats: Option<usize>,
}

/// The request as received, re-encoded only when the bytes on the wire were not canonical.
pub(crate) fn whole_request(r: &Request<'_>) -> Bytes {
    if r.verbatim && !r.raw.is_empty() {
        return r.raw.clone();
    }
    let mut out = BytesMut::new();
    let parts: Vec<&[u8]> = r.args.iter().map(|a| &a[..]).collect();
    encode::command(&mut out, &parts);
    out.freeze()
}

/// The request with `args[key_index]` replaced by the routed key (prefix removed, formatted).
pub(crate) fn request_bytes(r: &Request<'_>, key_index: usize, routed_key: &[u8]) -> Bytes {
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
