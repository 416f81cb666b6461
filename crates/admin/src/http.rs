//! A small HTTP/1.1 server side: request parsing and response writing.
//!
//! Hand-written rather than hyper because the admin port must take request targets as Go
//! clients send them (pilot-agent puts raw `^ | \ ( ) $` in query strings, which strict URI
//! parsers refuse), and because it needs nothing hyper offers beyond that. Everything is
//! bounded: head size, body size, idle time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request line plus headers. Envoy's default `max_request_headers_kb` is 60; beyond it
/// the client gets 431 and the connection is closed.
pub(crate) const MAX_HEAD_BYTES: usize = 60 * 1024;

/// Largest request body kept. Admin requests carry their arguments in the query; a larger body
/// gets 413 and the connection is closed.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Headers per request; more gets 431.
const MAX_HEADERS: usize = 100;

/// Read size per `read` call.
const READ_CHUNK: usize = 8 * 1024;

/// A keep-alive connection that sends nothing for this long, or a request that takes longer
/// than this to arrive, is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl RequestError {
    /// The answer sent before closing, when there is one.
    pub(crate) fn response(&self) -> Option<Response> {
        match self {
            RequestError::Malformed(_) => Some(Response::text(400, "Bad Request")),
            RequestError::HeadTooLarge => {
                Some(Response::text(431, "Request Header Fields Too Large"))
            }
            RequestError::BodyTooLarge => Some(Response::text(413, "Payload Too Large")),
            RequestError::Truncated | RequestError::Io(_) => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path without the query string, as sent (Envoy matches admin paths undecoded).
    pub(crate) path: String,
    /// Query parameters in order, percent-decoded; repeated keys are all kept.
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    /// `/runtime_modify` reads its parameters from a form body when the query has none.
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
    /// Bytes the request took on the wire (head and body), for the connection's rx stats.
    pub(crate) wire_len: usize,
}

impl Request {
    /// The first value of a query parameter (`?usedonly` has the value ""), as Envoy's
    /// `getFirstValue` picks it.
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request from `stream`, keeping bytes of any pipelined next request in `buf`.
/// `Ok(None)` is a clean close between requests.
pub(crate) async fn read_request<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, RequestError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let head_len = loop {
        if let Some(end) = find_head_end(buf) {
            break end;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(RequestError::HeadTooLarge);
        }
        if !fill(stream, buf).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(RequestError::Truncated)
            };
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(RequestError::HeadTooLarge);
    }
    let mut req = parse_head(buf.get(..head_len).unwrap_or_default())?;
    buf.drain(..head_len);

    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = if chunked {
        None
    } else {
        content_length(&req.headers)?
    };
    if (chunked || length.is_some_and(|n| n > 0))
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && buf.is_empty()
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    req.body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        let n = length.unwrap_or(0);
        if n > MAX_BODY_BYTES {
            return Err(RequestError::BodyTooLarge);
        }
        while buf.len() < n {
            if !fill(stream, buf).await? {
                return Err(RequestError::Truncated);
            }
        }
        buf.drain(..n).collect()
    };
    req.wire_len += req.body.len();
    Ok(Some(req))
}

/// Appends what the peer sent next; `false` at end of stream.
async fn fill<S>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<bool>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(n > 0)
}

/// Index just past the blank line ending the head (CRLF or bare LF line ends).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = buf.get(line_start..i).unwrap_or_default();
        if line.is_empty() || line == b"\r" {
            // A blank line before any request line is tolerated noise (RFC 9112 §2.2).
            if line_start > 0 {
                return Some(i + 1);
            }
        }
        line_start = i + 1;
    }
    None
}

fn parse_head(head: &[u8]) -> Result<Request, RequestError> {
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines
        .next()
        .ok_or(RequestError::Malformed("no request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(RequestError::Malformed("bad method"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(RequestError::Malformed("unsupported HTTP version")),
    };

    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Err(RequestError::Malformed("folded header"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(RequestError::Malformed("header without colon"))?;
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(RequestError::Malformed("bad header name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(RequestError::HeadTooLarge);
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }

    let connection = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let keep_alive = if http10 {
        connection.iter().any(|t| t == "keep-alive")
    } else {
        !connection.iter().any(|t| t == "close")
    };

    let (path, query) = split_target(target)?;
    Ok(Request {
        method: method.to_owned(),
        path,
        query,
        headers,
        body: Vec::new(),
        keep_alive,
        wire_len: head.len(),
    })
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits a request target into path and decoded query parameters. Bytes are taken as sent:
/// Go clients do not encode `^ | \` and Envoy accepts them.
fn split_target(target: &str) -> Result<(String, Vec<(String, String)>), RequestError> {
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(RequestError::Malformed("bad request target"));
    }
    // Absolute form (`GET http://host/stats HTTP/1.1`), as a proxy-minded client may send.
    let target = match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains(['/', '?']) => {
            rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
        }
        _ => target,
    };
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok((path.to_owned(), parse_params(query)))
}

/// `a=1&b&c=%20` into decoded pairs, in order (`b` has the value "").
pub(crate) fn parse_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes; an invalid escape stays as it is and `+` stays a plus, as in
/// Envoy's query parsing.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, RequestError> {
    let mut length = None;
    for (_, v) in headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let n: usize = v
            .parse()
            .map_err(|_| RequestError::Malformed("bad content-length"))?;
        if length.is_some_and(|m| m != n) {
            return Err(RequestError::Malformed("conflicting content-length"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// Reads a chunked body (chunk extensions and trailers are skipped).
async fn read_chunked<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<Vec<u8>, RequestError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| RequestError::Malformed("bad chunk size"))?;
        if size == 0 {
            // Trailer section, up to the blank line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(RequestError::BodyTooLarge);
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await? {
                return Err(RequestError::Truncated);
            }
        }
        body.extend(buf.drain(..size));
        if buf.get(..2) != Some(b"\r\n") {
            return Err(RequestError::Malformed("chunk not followed by CRLF"));
        }
        buf.drain(..2);
    }
}

async fn read_line<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<String, RequestError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return String::from_utf8(line.to_vec())
                .map_err(|_| RequestError::Malformed("not UTF-8"));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(RequestError::HeadTooLarge);
        }
        if !fill(stream, buf).await? {
            return Err(RequestError::Truncated);
        }
    }
}

/// What a handler answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
}

pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";
/// What `/config_dump` errors and `/memory/tcmalloc` carry (no charset).
pub(crate) const TEXT_PLAIN_BARE: &str = "text/plain";
pub(crate) const APPLICATION_JSON: &str = "application/json";
pub(crate) const TEXT_HTML: &str = "text/html; charset=UTF-8";

impl Response {
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT_PLAIN,
            body: body.into().into_bytes(),
        }
    }

    pub(crate) fn json(body: String) -> Self {
        Self {
            status: 200,
            content_type: APPLICATION_JSON,
            body: body.into_bytes(),
        }
    }

    pub(crate) fn typed(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type,
            body: body.into().into_bytes(),
        }
    }

    /// Status line, Envoy's admin headers, then the body (none for HEAD). Envoy streams with
    /// chunked encoding; a content-length is equivalent to every client and simpler.
    pub(crate) fn encode(&self, with_body: bool, close: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\n\
                 content-type: {}\r\n\
                 cache-control: no-cache, max-age=0\r\n\
                 x-content-type-options: nosniff\r\n\
                 date: {}\r\n\
                 server: envoy\r\n\
                 content-length: {}\r\n",
                self.status,
                reason(self.status),
                self.content_type,
                http_date(SystemTime::now()),
                self.body.len(),
            )
            .as_bytes(),
        );
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if with_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// RFC 9110 IMF-fixdate, e.g. `Sun, 22 Nov 2026 03:15:31 GMT`.
pub(crate) fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS.get((days % 7) as usize).unwrap_or(&"Thu"),
        day,
        MONTHS.get((month - 1) as usize).unwrap_or(&"Jan"),
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, RequestError> {
        let end = find_head_end(raw.as_bytes()).expect("complete head");
        parse_head(&raw.as_bytes()[..end])
    }

    #[test]
    fn raw_regex_characters_survive_in_the_query() {
        let req = parse(
            "GET /stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started) HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.path, "/stats");
        assert_eq!(req.param("usedonly"), Some(""));
        assert_eq!(
            req.param("filter"),
            Some("^(server\\.state|listener_manager\\.workers_started)")
        );
        assert!(req.keep_alive);
    }

    #[test]
    fn query_decoding_follows_envoy() {
        let req = parse(
            "GET /stats?filter=%5Eserver%5C.live%&x=a+b&filter=second&=v&&k HTTP/1.0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.param("filter"), Some("^server\\.live%"));
        assert_eq!(req.param("x"), Some("a+b"));
        assert_eq!(req.param("k"), Some(""));
        assert!(!req.keep_alive, "HTTP/1.0 closes by default");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn absolute_targets_and_fragments_are_reduced_to_the_path() {
        let req = parse("GET http://127.0.0.1:15000/ready?x=1#frag HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(req.path, "/ready");
        assert_eq!(req.param("x"), Some("1"));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for raw in [
            "GET /ready\r\n\r\n",
            "GET /ready HTTP/2.0\r\n\r\n",
            "GET  /ready HTTP/1.1\r\n\r\n",
            "GET /ready HTTP/1.1\r\nbad header\r\n\r\n",
            "GET /ready HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            "GET /ready HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let r = parse(raw).and_then(|req| content_length(&req.headers).map(|_| req));
            assert!(
                matches!(r, Err(RequestError::Malformed(_))),
                "{raw:?} gave {r:?}"
            );
        }
    }

    #[test]
    fn connection_header_controls_keep_alive() {
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_317_331);
        assert_eq!(http_date(t), "Sun, 22 Nov 2026 03:15:31 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
