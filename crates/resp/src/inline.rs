//! Inline (telnet-style) commands: one line of whitespace-separated arguments, split the way
//! Redis's `sdssplitargs` does it, which is what `redis-cli` users and Envoy's decoder expect.

use bytes::Bytes;

use crate::decode::{DecodeError, Node};

/// C `isspace`: what separates arguments.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// What ends an unquoted argument (a narrower set than `is_space`, as in `sdssplitargs`).
fn ends_token(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` (the line without its terminator, starting at frame offset 0) into arguments
/// and appends them to `out` as an array node followed by one bulk node per argument. Plain
/// arguments are offsets into the frame (zero-copy); quoted ones are unescaped copies.
pub(crate) fn split_args(
    line: &[u8],
    max_args: usize,
    out: &mut Vec<Node>,
) -> Result<(), DecodeError> {
    let header = out.len();
    out.push(Node::EmptyArray);
    let n = line.len();
    let mut p = 0;
    let mut count = 0usize;
    loop {
        while p < n && is_space(line[p]) {
            p += 1;
        }
        if p >= n {
            break;
        }
        count += 1;
        if count > max_args {
            return Err(DecodeError::ElementCountExceeded);
        }
        let start = p;
        while p < n && !ends_token(line[p]) && line[p] != b'"' && line[p] != b'\'' {
            p += 1;
        }
        if p >= n || ends_token(line[p]) {
            out.push(Node::Bulk(start, p));
            // The terminator is consumed with the argument: a NUL is not `is_space`.
            p = (p + 1).min(n);
            continue;
        }
        let mut arg = line[start..p].to_vec();
        p = quoted_tail(line, p, &mut arg)?;
        out.push(Node::Owned(Bytes::from(arg)));
    }
    if count > 0 {
        out[header] = Node::Array(count);
    }
    Ok(())
}

/// Continues an argument at `p` (a quote or an unquoted byte) until its end; returns the
/// offset after it.
fn quoted_tail(line: &[u8], mut p: usize, arg: &mut Vec<u8>) -> Result<usize, DecodeError> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Double,
        Single,
    }
    let n = line.len();
    let mut quote = Quote::None;
    loop {
        let Some(&c) = line.get(p) else {
            return match quote {
                Quote::None => Ok(p),
                _ => Err(DecodeError::UnbalancedQuotes),
            };
        };
        match quote {
            Quote::Double => {
                if c == b'\\' && p + 1 < n {
                    let hex = line
                        .get(p + 2)
                        .and_then(|&h| hex_value(h))
                        .zip(line.get(p + 3).and_then(|&l| hex_value(l)));
                    match (line[p + 1], hex) {
                        (b'x', Some((h, l))) => {
                            arg.push(h * 16 + l);
                            p += 4;
                        }
                        (e, _) => {
                            arg.push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            p += 2;
                        }
                    }
                } else if c == b'"' {
                    // A closing quote must end the argument.
                    if line.get(p + 1).is_some_and(|&next| !is_space(next)) {
                        return Err(DecodeError::UnbalancedQuotes);
                    }
                    return Ok(p + 1);
                } else {
                    arg.push(c);
                    p += 1;
                }
            }
            Quote::Single => {
                if c == b'\\' && line.get(p + 1) == Some(&b'\'') {
                    arg.push(b'\'');
                    p += 2;
                } else if c == b'\'' {
                    if line.get(p + 1).is_some_and(|&next| !is_space(next)) {
                        return Err(DecodeError::UnbalancedQuotes);
                    }
                    return Ok(p + 1);
                } else {
                    arg.push(c);
                    p += 1;
                }
            }
            Quote::None => {
                if ends_token(c) {
                    return Ok(p + 1);
                }
                match c {
                    b'"' => quote = Quote::Double,
                    b'\'' => quote = Quote::Single,
                    _ => arg.push(c),
                }
                p += 1;
            }
        }
    }
}
