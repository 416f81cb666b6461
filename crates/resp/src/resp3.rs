//! RESP3 encoding of RESP2 replies, for clients that negotiated `HELLO 3`.
//!
//! Upstream connections speak RESP2 (shared by every client, whatever protocol each chose), so
//! a RESP3 client's replies are converted here, by the shape Redis 7 gives that command's
//! reply in RESP3: maps for HGETALL and CONFIG GET, sets for SMEMBERS, doubles for scores,
//! `_` for nulls, verbatim strings for INFO. The caller picks the [`Resp3Shape`] from the
//! command; a reply that does not fit its shape (an error, a null, an odd-length array) is
//! encoded with [`Resp3Shape::Plain`].

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use crate::encode;
use crate::RespValue;

/// How a RESP2 reply is written in RESP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resp3Shape {
    /// Same types; nulls become `_`.
    #[default]
    Plain,
    /// A flat `[k1, v1, k2, v2, ...]` array becomes a map.
    Map,
    /// A map merged from several servers' flat arrays (CONFIG GET through the proxy): a key
    /// keeps its first value, as a map's keys are unique.
    MergedMap,
    /// An array becomes a set.
    Set,
    /// A bulk string holding a number becomes a double.
    Double,
    /// An array of numbers (or nulls) becomes an array of doubles (ZMSCORE).
    Doubles,
    /// A flat `[member, score, ...]` array becomes an array of `[member, double]` pairs.
    ScorePairs,
    /// A flat `[field, value, ...]` array becomes an array of `[field, value]` pairs.
    Pairs,
    /// An array whose element `index` is a score: that element becomes a double
    /// (`ZPOPMIN key` -> `[member, score]`, `BZPOPMIN` -> `[key, member, score]`, `ZRANK
    /// WITHSCORE` -> `[rank, score]`).
    ScoreAt(usize),
    /// An array of flat maps (XINFO GROUPS, XINFO CONSUMERS).
    Maps,
    /// A bulk string becomes a verbatim string of format `txt` (INFO, CLIENT INFO).
    Verbatim,
    /// `[[key, entries], ...]` (XREAD, XREADGROUP) becomes a map of key to entries.
    KeyedMap,
}

/// Appends the RESP3 encoding of `value` in `shape` to `out`.
pub fn encode_resp3(value: &RespValue, shape: Resp3Shape, out: &mut BytesMut) {
    match (shape, value) {
        (_, RespValue::Null) => out.put_slice(b"_\r\n"),
        (Resp3Shape::Map, RespValue::Array(items)) if items.len() % 2 == 0 => {
            map_header(out, items.len() / 2);
            for item in items {
                encode_resp3(item, Resp3Shape::Plain, out);
            }
        }
        (Resp3Shape::MergedMap, RespValue::Array(items)) if items.len() % 2 == 0 => {
            let mut seen = std::collections::HashSet::new();
            let pairs: Vec<&[RespValue]> = items
                .chunks(2)
                .filter(|pair| seen.insert(&pair[0]))
                .collect();
            map_header(out, pairs.len());
            for pair in pairs {
                encode_resp3(&pair[0], Resp3Shape::Plain, out);
                encode_resp3(&pair[1], Resp3Shape::Plain, out);
            }
        }
        (Resp3Shape::Set, RespValue::Array(items)) => {
            aggregate_header(out, b'~', items.len());
            for item in items {
                encode_resp3(item, Resp3Shape::Plain, out);
            }
        }
        (Resp3Shape::Double, RespValue::Bulk(b)) if parse_double(b).is_some() => double(out, b),
        (Resp3Shape::Doubles, RespValue::Array(items)) => {
            encode::array_header(out, items.len());
            for item in items {
                encode_resp3(item, Resp3Shape::Double, out);
            }
        }
        (Resp3Shape::ScorePairs | Resp3Shape::Pairs, RespValue::Array(items))
            if items.len() % 2 == 0 =>
        {
            let second = if shape == Resp3Shape::ScorePairs {
                Resp3Shape::Double
            } else {
                Resp3Shape::Plain
            };
            encode::array_header(out, items.len() / 2);
            for pair in items.chunks(2) {
                encode::array_header(out, 2);
                encode_resp3(&pair[0], Resp3Shape::Plain, out);
                encode_resp3(&pair[1], second, out);
            }
        }
        (Resp3Shape::ScoreAt(index), RespValue::Array(items)) => {
            encode::array_header(out, items.len());
            for (i, item) in items.iter().enumerate() {
                let shape = if i == index {
                    Resp3Shape::Double
                } else {
                    Resp3Shape::Plain
                };
                encode_resp3(item, shape, out);
            }
        }
        (Resp3Shape::Maps, RespValue::Array(items)) => {
            encode::array_header(out, items.len());
            for item in items {
                encode_resp3(item, Resp3Shape::Map, out);
            }
        }
        (Resp3Shape::Verbatim, RespValue::Bulk(b)) => {
            out.put_u8(b'=');
            put_len(out, b.len() + 4);
            out.put_slice(b"txt:");
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        (Resp3Shape::KeyedMap, RespValue::Array(items))
            if items
                .iter()
                .all(|i| matches!(i, RespValue::Array(kv) if kv.len() == 2)) =>
        {
            map_header(out, items.len());
            for item in items {
                if let RespValue::Array(kv) = item {
                    for v in kv {
                        encode_resp3(v, Resp3Shape::Plain, out);
                    }
                }
            }
        }
        (_, RespValue::Array(items)) => {
            encode::array_header(out, items.len());
            for item in items {
                encode_resp3(item, Resp3Shape::Plain, out);
            }
        }
        (_, other) => other.encode(out),
    }
}

/// A map header, `%<pairs>\r\n`.
pub fn map_header(out: &mut BytesMut, pairs: usize) {
    aggregate_header(out, b'%', pairs);
}

fn aggregate_header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    put_len(out, n);
}

fn put_len(out: &mut BytesMut, n: usize) {
    // BytesMut's fmt::Write never fails.
    let _ = write!(out, "{n}\r\n");
}

/// A double as Redis writes it: the number's text (`inf`/`-inf` for infinities).
fn double(out: &mut BytesMut, text: &[u8]) {
    out.put_u8(b',');
    match text {
        b"+inf" | b"inf" => out.put_slice(b"inf"),
        b"-inf" => out.put_slice(b"-inf"),
        _ => out.put_slice(text),
    }
    out.put_slice(b"\r\n");
}

fn parse_double(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ if s
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enc(v: &RespValue, shape: Resp3Shape) -> String {
        let mut out = BytesMut::new();
        encode_resp3(v, shape, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn bulk(s: &str) -> RespValue {
        RespValue::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn shapes() {
        let flat = RespValue::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2.5")]);
        assert_eq!(
            enc(&flat, Resp3Shape::Map),
            "%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$3\r\n2.5\r\n"
        );
        assert_eq!(
            enc(&flat, Resp3Shape::ScorePairs),
            "*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n"
        );
        assert_eq!(enc(&flat, Resp3Shape::Set).chars().next(), Some('~'));
        let twice = RespValue::Array(vec![bulk("a"), bulk("1"), bulk("a"), bulk("1")]);
        assert_eq!(
            enc(&twice, Resp3Shape::MergedMap),
            "%1\r\n$1\r\na\r\n$1\r\n1\r\n"
        );
        assert_eq!(enc(&RespValue::Null, Resp3Shape::Map), "_\r\n");
        assert_eq!(enc(&bulk("inf"), Resp3Shape::Double), ",inf\r\n");
        assert_eq!(enc(&bulk("x"), Resp3Shape::Double), "$1\r\nx\r\n");
        assert_eq!(enc(&bulk("hi"), Resp3Shape::Verbatim), "=6\r\ntxt:hi\r\n");
        let odd = RespValue::Array(vec![bulk("a")]);
        assert_eq!(enc(&odd, Resp3Shape::Map), "*1\r\n$1\r\na\r\n");
        let nested = RespValue::Array(vec![RespValue::Null, RespValue::Integer(1)]);
        assert_eq!(enc(&nested, Resp3Shape::Plain), "*2\r\n_\r\n:1\r\n");
        let xread = RespValue::Array(vec![RespValue::Array(vec![
            bulk("s"),
            RespValue::Array(vec![]),
        ])]);
        assert_eq!(enc(&xread, Resp3Shape::KeyedMap), "%1\r\n$1\r\ns\r\n*0\r\n");
        assert_eq!(
            enc(
                &RespValue::Error(Bytes::from_static(b"ERR x")),
                Resp3Shape::Map
            ),
            "-ERR x\r\n"
        );
    }
}
