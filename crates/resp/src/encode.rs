//! RESP2 encoder primitives, for callers that write replies or commands without building a
//! [`RespValue`](crate::RespValue) tree first (fan-out sub-requests, locally generated replies).
//!
//! Every function appends to `out`; none of them can fail.

use bytes::{BufMut, BytesMut};

/// Longest decimal rendering of an `i64` / `u64` (`-9223372036854775808` is 20 bytes, `u64::MAX`
/// is 20 digits).
const MAX_DECIMAL_LEN: usize = 20;

/// `$-1\r\n`: Envoy writes every null, including a null array received as `*-1`, this way.
pub(crate) const NULL_BYTES: &[u8] = b"$-1\r\n";

/// Writes `+<s>\r\n`. A CR or LF in `s` is written as a space, as Redis writes its error
/// texts: the proxy's texts quote what the client sent (`unknown command '<name>'`), and a line
/// break there would end the reply early and make the rest of it look like more replies.
pub fn simple(out: &mut BytesMut, s: &[u8]) {
    line(out, b'+', s);
}

/// Writes `-<s>\r\n`. Same restriction as [`simple`].
pub fn error(out: &mut BytesMut, s: &[u8]) {
    line(out, b'-', s);
}

/// Writes `:<n>\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    let mut tmp = [0u8; MAX_DECIMAL_LEN];
    let digits = fmt_i64(&mut tmp, n);
    out.reserve(digits.len() + 3);
    out.put_u8(b':');
    out.put_slice(digits);
    out.put_slice(b"\r\n");
}

/// Writes `$<len>\r\n<s>\r\n`.
pub fn bulk(out: &mut BytesMut, s: &[u8]) {
    let mut tmp = [0u8; MAX_DECIMAL_LEN];
    let digits = fmt_u64(&mut tmp, s.len() as u64);
    out.reserve(digits.len() + s.len() + 5);
    out.put_u8(b'$');
    out.put_slice(digits);
    out.put_slice(b"\r\n");
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

/// Writes `$-1\r\n` (Envoy's only null encoding).
pub fn null(out: &mut BytesMut) {
    out.put_slice(NULL_BYTES);
}

/// Writes `*<n>\r\n`; the caller then writes the `n` elements.
pub fn array_header(out: &mut BytesMut, n: usize) {
    header(out, b'*', n);
}

/// Writes a command as an array of bulk strings, e.g. `["get", "foo"]` becomes
/// `*2\r\n$3\r\nget\r\n$3\r\nfoo\r\n`.
pub fn command(out: &mut BytesMut, args: &[&[u8]]) {
    out.reserve(command_len(args));
    array_header(out, args.len());
    for arg in args {
        bulk(out, arg);
    }
}

/// Encoded length of [`command`]`(args)`.
pub fn command_len(args: &[&[u8]]) -> usize {
    let mut len = header_len(args.len());
    for arg in args {
        len += bulk_len(arg.len());
    }
    len
}

fn line(out: &mut BytesMut, kind: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(kind);
    if s.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            s.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.put_slice(s);
    }
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, n: usize) {
    let mut tmp = [0u8; MAX_DECIMAL_LEN];
    let digits = fmt_u64(&mut tmp, n as u64);
    out.reserve(digits.len() + 3);
    out.put_u8(kind);
    out.put_slice(digits);
    out.put_slice(b"\r\n");
}

/// Length of `*<n>\r\n` (or `$<n>\r\n`).
pub(crate) fn header_len(n: usize) -> usize {
    1 + decimal_len(n as u64) + 2
}

/// Length of a bulk string of `n` payload bytes.
pub(crate) fn bulk_len(n: usize) -> usize {
    header_len(n) + n + 2
}

/// Length of `:<n>\r\n`.
pub(crate) fn integer_len(n: i64) -> usize {
    let sign = usize::from(n < 0);
    1 + sign + decimal_len(n.unsigned_abs()) + 2
}

pub(crate) fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Renders `n` at the end of `tmp`, returning the digits.
fn fmt_u64(tmp: &mut [u8; MAX_DECIMAL_LEN], mut n: u64) -> &[u8] {
    let mut i = MAX_DECIMAL_LEN;
    loop {
        i -= 1;
        // `n % 10 < 10`, so the narrowing cannot lose anything.
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &tmp[i..]
}

fn fmt_i64(tmp: &mut [u8; MAX_DECIMAL_LEN], n: i64) -> &[u8] {
    // `unsigned_abs` keeps `i64::MIN` representable; 19 digits plus the sign still fit in 20.
    let digits_start = MAX_DECIMAL_LEN - decimal_len(n.unsigned_abs());
    fmt_u64(tmp, n.unsigned_abs());
    if n < 0 {
        tmp[digits_start - 1] = b'-';
        &tmp[digits_start - 1..]
    } else {
        &tmp[digits_start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn primitives() {
        assert_eq!(enc(|o| simple(o, b"OK")), b"+OK\r\n");
        assert_eq!(enc(|o| error(o, b"ERR x")), b"-ERR x\r\n");
        // A line break quoted from a client would end the reply early.
        assert_eq!(
            enc(|o| error(o, b"ERR unknown command 'a\r\nb'")),
            b"-ERR unknown command 'a  b'\r\n".to_vec()
        );
        assert_eq!(enc(|o| simple(o, b"a\nb")), b"+a b\r\n");
        assert_eq!(enc(|o| integer(o, 0)), b":0\r\n");
        assert_eq!(enc(|o| integer(o, -1)), b":-1\r\n");
        assert_eq!(
            enc(|o| integer(o, i64::MIN)),
            b":-9223372036854775808\r\n".to_vec()
        );
        assert_eq!(
            enc(|o| integer(o, i64::MAX)),
            b":9223372036854775807\r\n".to_vec()
        );
        assert_eq!(enc(|o| bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(enc(|o| bulk(o, b"foo")), b"$3\r\nfoo\r\n");
        assert_eq!(enc(null), b"$-1\r\n");
        assert_eq!(enc(|o| array_header(o, 12)), b"*12\r\n");
        assert_eq!(
            enc(|o| command(o, &[b"get", b"foo"])),
            b"*2\r\n$3\r\nget\r\n$3\r\nfoo\r\n".to_vec()
        );
        assert_eq!(command_len(&[b"get", b"foo"]), 22);
    }

    #[test]
    fn lengths_match_rendering() {
        for n in [0i64, 1, 9, 10, 99, 100, -1, -9, -10, i64::MAX, i64::MIN] {
            assert_eq!(integer_len(n), enc(|o| integer(o, n)).len(), "{n}");
        }
        for n in [0usize, 9, 10, 1 << 20] {
            assert_eq!(header_len(n), enc(|o| array_header(o, n)).len());
        }
    }
}
