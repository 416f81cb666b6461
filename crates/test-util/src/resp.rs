//! A small RESP2 reply model and parser for the test client.
//!
//! It re-parses from the start of its buffer on every call: test traffic is small, and a parser
//! this simple is easy to trust as an oracle for the real codec.

use std::fmt;

/// Largest bulk string the test client accepts; a reply beyond it is a bug in the peer.
const MAX_TEST_BULK_LEN: usize = 64 * 1024 * 1024;

/// One RESP2 reply as a client sees it.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`
    Simple(Vec<u8>),
    /// `-text`
    Error(Vec<u8>),
    /// `:n`
    Integer(i64),
    /// `$n` + data
    Bulk(Vec<u8>),
    /// `$-1`
    Null,
    /// `*-1` (kept apart from `Null` so tests can see Envoy's null-array re-encoding)
    NullArray,
    /// `*n` + elements
    Array(Vec<Reply>),
    /// RESP3 `%n` + key/value pairs
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~n` + elements
    Set(Vec<Reply>),
    /// RESP3 `,<text>`
    Double(String),
    /// RESP3 `#t` / `#f`
    Boolean(bool),
    /// RESP3 `=n` + `fmt:` + data: (format, data)
    Verbatim(String, Vec<u8>),
    /// RESP3 `(<digits>`
    BigNumber(String),
    /// RESP3 `_`
    Null3,
}

// === impl Reply ===

impl Reply {
    pub fn simple(s: &str) -> Self {
        Reply::Simple(s.as_bytes().to_vec())
    }

    pub fn err(s: &str) -> Self {
        Reply::Error(s.as_bytes().to_vec())
    }

    pub fn bulk(s: impl AsRef<[u8]>) -> Self {
        Reply::Bulk(s.as_ref().to_vec())
    }

    pub fn int(n: i64) -> Self {
        Reply::Integer(n)
    }

    pub fn ok() -> Self {
        Reply::simple("OK")
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The text of a simple string, error or bulk string (lossy UTF-8).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(b) | Reply::Error(b) | Reply::Bulk(b) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// Canonical encoding (RESP3 types in RESP3).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.push(b'-');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) | Reply::Set(items) => {
                let kind = if matches!(self, Reply::Set(_)) {
                    '~'
                } else {
                    '*'
                };
                out.extend_from_slice(format!("{kind}{}\r\n", items.len()).as_bytes());
                for item in items {
                    item.encode_into(out);
                }
            }
            Reply::Map(pairs) => {
                out.extend_from_slice(format!("%{}\r\n", pairs.len()).as_bytes());
                for (k, v) in pairs {
                    k.encode_into(out);
                    v.encode_into(out);
                }
            }
            Reply::Double(d) => out.extend_from_slice(format!(",{d}\r\n").as_bytes()),
            Reply::BigNumber(n) => out.extend_from_slice(format!("({n}\r\n").as_bytes()),
            Reply::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Verbatim(format, data) => {
                out.extend_from_slice(format!("={}\r\n{format}:", data.len() + 4).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null3 => out.extend_from_slice(b"_\r\n"),
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{}", escape(s)),
            Reply::Error(s) => write!(f, "-{}", escape(s)),
            Reply::Integer(n) => write!(f, ":{n}"),
            Reply::Bulk(b) => write!(f, "${:?}", escape(b)),
            Reply::Null => write!(f, "(nil)"),
            Reply::NullArray => write!(f, "(nil array)"),
            Reply::Array(items) => f.debug_list().entries(items).finish(),
            Reply::Set(items) => {
                write!(f, "~")?;
                f.debug_list().entries(items).finish()
            }
            Reply::Map(pairs) => f
                .debug_map()
                .entries(pairs.iter().map(|(k, v)| (k, v)))
                .finish(),
            Reply::Double(d) => write!(f, ",{d}"),
            Reply::BigNumber(n) => write!(f, "({n}"),
            Reply::Boolean(b) => write!(f, "#{b}"),
            Reply::Verbatim(format, data) => write!(f, "={format}:{:?}", escape(data)),
            Reply::Null3 => write!(f, "(null)"),
        }
    }
}

/// Printable form of arbitrary bytes: printable ASCII (quotes included) as is, `\\`, `\r`,
/// `\n`, `\t` escaped, anything else as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the front of `buf`. `Ok(None)`: incomplete. On success returns the
/// reply and the number of bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], pos: usize) -> Result<Option<(Reply, usize)>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, after_line)) = read_line(buf, pos + 1) else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(line.to_vec()), after_line))),
        b'-' => Ok(Some((Reply::Error(line.to_vec()), after_line))),
        b':' => Ok(Some((Reply::Integer(parse_int(line)?), after_line))),
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Null, after_line)));
            }
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if len > MAX_TEST_BULK_LEN {
                return Err(format!("bulk length {len} beyond the test client's limit"));
            }
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            Ok(Some((Reply::Bulk(buf[after_line..end].to_vec()), end + 2)))
        }
        b'~' => Ok(parse_many(buf, after_line, parse_int(line)?)?
            .map(|(items, next)| (Reply::Set(items), next))),
        b'%' => {
            let pairs = parse_int(line)?;
            Ok(
                parse_many(buf, after_line, pairs.saturating_mul(2))?.map(|(items, next)| {
                    let mut it = items.into_iter();
                    let mut map = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        map.push((k, v));
                    }
                    (Reply::Map(map), next)
                }),
            )
        }
        b'*' => {
            let count = parse_int(line)?;
            if count < 0 {
                return Ok(Some((Reply::NullArray, after_line)));
            }
            let mut items = Vec::new();
            let mut next = after_line;
            for _ in 0..count {
                match parse_at(buf, next)? {
                    Some((item, after)) => {
                        items.push(item);
                        next = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(items), next)))
        }
        b'_' => Ok(Some((Reply::Null3, after_line))),
        b',' => Ok(Some((
            Reply::Double(String::from_utf8_lossy(line).into_owned()),
            after_line,
        ))),
        b'(' => Ok(Some((
            Reply::BigNumber(String::from_utf8_lossy(line).into_owned()),
            after_line,
        ))),
        b'#' => match line {
            b"t" => Ok(Some((Reply::Boolean(true), after_line))),
            b"f" => Ok(Some((Reply::Boolean(false), after_line))),
            _ => Err(format!("bad boolean {:?}", escape(line))),
        },
        b'=' => {
            let len = usize::try_from(parse_int(line)?).map_err(|e| e.to_string())?;
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            let body = &buf[after_line..end];
            if len < 4 || body[3] != b':' {
                return Err("verbatim string without a format".into());
            }
            let format = String::from_utf8_lossy(&body[..3]).into_owned();
            Ok(Some((Reply::Verbatim(format, body[4..].to_vec()), end + 2)))
        }
        other => Err(format!("unexpected reply type byte {:?}", escape(&[other]))),
    }
}

/// Parses `n` consecutive replies from `pos`.
fn parse_many(buf: &[u8], mut pos: usize, n: i64) -> Result<Option<(Vec<Reply>, usize)>, String> {
    let mut items = Vec::new();
    for _ in 0..n {
        match parse_at(buf, pos)? {
            Some((item, after)) => {
                items.push(item);
                pos = after;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((items, pos)))
}

/// Returns the line starting at `from` (without CRLF) and the offset after its CRLF.
fn read_line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let idx = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..idx], from + idx + 2))
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer line {:?}", escape(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_partials() {
        let reply = Reply::Array(vec![
            Reply::bulk("a"),
            Reply::Null,
            Reply::int(-3),
            Reply::err("ERR x"),
            Reply::Array(vec![]),
            Reply::NullArray,
            Reply::ok(),
        ]);
        let bytes = reply.encode();
        for cut in 0..bytes.len() {
            assert_eq!(parse_reply(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse_reply(&bytes).unwrap(), Some((reply, bytes.len())));
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(
            encode_command(&["GET", "k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn escapes_control_bytes_only() {
        assert_eq!(escape(b"'a\"\r\n\\\x01"), "'a\"\\r\\n\\\\\\x01");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_reply(b"!x\r\n").is_err());
        assert!(parse_reply(b":x\r\n").is_err());
    }
}
