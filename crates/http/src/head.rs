//! HTTP/1.1 message heads: parsing (bounded, via `httparse`), framing rules, and the heads
//! redvoy writes (Envoy's header order and reason phrases).

use crate::body::Framing;
use crate::io::Conn;
use crate::{MAX_HEADERS_BYTES, MAX_HEADERS_COUNT};

/// Why no request head could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// Clean end of stream, or one in the middle of a head (nothing to answer).
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// More than `MAX_HEADERS_BYTES` or `MAX_HEADERS_COUNT`: Envoy's 431.
    #[error("request headers too large")]
    TooLarge,
    #[error("malformed message")]
    Malformed,
}

/// A parsed request head. Header names are lowercased, as Envoy forwards them.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: String,
    pub(crate) path: String,
    /// HTTP/1.0: Envoy (without `accept_http_10`) answers 426.
    pub(crate) http10: bool,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) framing: Framing,
    /// `connection: close` from the client.
    pub(crate) close: bool,
    pub(crate) expect_continue: bool,
    pub(crate) host: Option<String>,
}

/// A parsed upstream response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) transfer_chunked: bool,
    pub(crate) content_length: Option<u64>,
}

/// Headers that describe one hop and are never forwarded as received.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

fn lowercase_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

/// `content-length` (all copies equal) and whether `transfer-encoding` ends in `chunked`.
/// `Err` for anything Envoy's codec refuses: a bad or conflicting length, another coding.
fn framing_headers(headers: &[(String, Vec<u8>)]) -> Result<(Option<u64>, bool), HeadError> {
    let mut length: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    for (name, value) in headers {
        match name.as_str() {
            "content-length" => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(HeadError::Malformed)?;
                if length.is_some_and(|l| l != v) {
                    return Err(HeadError::Malformed);
                }
                length = Some(v);
            }
            "transfer-encoding" => te = Some(value),
            _ => {}
        }
    }
    let chunked = match te {
        None => false,
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"chunked") => true,
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"identity") => false,
        Some(_) => return Err(HeadError::Malformed),
    };
    Ok((length, chunked))
}

fn has_token(headers: &[(String, Vec<u8>)], name: &str, token: &[u8]) -> bool {
    headers.iter().any(|(n, v)| {
        n == name
            && v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Reads one request head from `conn`, leaving any body bytes in `conn.buf`.
pub(crate) async fn read_request(conn: &mut Conn) -> Result<RequestHead, HeadError> {
    loop {
        if !conn.buf.is_empty() {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_COUNT];
            let mut req = httparse::Request::new(&mut storage);
            match req.parse(&conn.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if len > MAX_HEADERS_BYTES {
                        return Err(HeadError::TooLarge);
                    }
                    let head = request_head(&req)?;
                    let _ = conn.buf.split_to(len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {
                    if conn.buf.len() > MAX_HEADERS_BYTES {
                        return Err(HeadError::TooLarge);
                    }
                }
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(_) => return Err(HeadError::Malformed),
            }
        }
        if conn.fill().await? == 0 {
            return Err(HeadError::Closed);
        }
    }
}

fn request_head(req: &httparse::Request<'_, '_>) -> Result<RequestHead, HeadError> {
    let headers = lowercase_headers(req.headers);
    let (length, chunked) = framing_headers(&headers)?;
    // Both at once is a request-smuggling vector; Envoy answers 400.
    if chunked && length.is_some() {
        return Err(HeadError::Malformed);
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let host = headers
        .iter()
        .find(|(n, _)| n == "host")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::to_string);
    Ok(RequestHead {
        method: req.method.unwrap_or("GET").to_string(),
        path: req.path.unwrap_or("/").to_string(),
        http10: req.version == Some(0),
        close: has_token(&headers, "connection", b"close"),
        expect_continue: has_token(&headers, "expect", b"100-continue"),
        framing,
        host,
        headers,
    })
}

/// Reads one upstream response head (1xx interim responses are consumed and skipped, as
/// Envoy does without `proxy_100_continue`).
pub(crate) async fn read_response(conn: &mut Conn) -> Result<ResponseHead, HeadError> {
    loop {
        if !conn.buf.is_empty() {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_COUNT];
            let mut rsp = httparse::Response::new(&mut storage);
            match rsp.parse(&conn.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = rsp.code.unwrap_or(0);
                    let headers = lowercase_headers(rsp.headers);
                    let _ = conn.buf.split_to(len);
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    let (content_length, transfer_chunked) = framing_headers(&headers)?;
                    return Ok(ResponseHead {
                        status,
                        headers,
                        transfer_chunked,
                        content_length,
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if conn.buf.len() > MAX_HEADERS_BYTES {
                        return Err(HeadError::TooLarge);
                    }
                }
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(_) => return Err(HeadError::Malformed),
            }
        }
        if conn.fill().await? == 0 {
            return Err(HeadError::Closed);
        }
    }
}

/// Envoy's reason phrases (`CodeUtility::toString`).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Envoy's local reply. With a body: `content-length`, `content-type: text/plain`, `date`,
/// `server`; without: `date`, `server` and the codec's `content-length: 0` last (after
/// `connection: close`); a HEAD request gets the head only.
pub(crate) fn local_reply(status: u16, body: &[u8], close: bool, head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    if !body.is_empty() {
        push_header(
            &mut out,
            "content-length",
            body.len().to_string().as_bytes(),
        );
        push_header(&mut out, "content-type", b"text/plain");
    }
    push_header(&mut out, "date", crate::date::now().as_bytes());
    push_header(&mut out, "server", b"envoy");
    if close {
        push_header(&mut out, "connection", b"close");
    }
    if body.is_empty() {
        // Envoy's codec: a HEAD answer without a length is announced as chunked.
        if head_only {
            push_header(&mut out, "transfer-encoding", b"chunked");
        } else {
            push_header(&mut out, "content-length", b"0");
        }
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// What the router adds to a forwarded request.
pub(crate) struct UpstreamRequest<'a> {
    pub(crate) path: &'a str,
    pub(crate) original_path: Option<&'a str>,
    pub(crate) timeout_ms: Option<u128>,
    pub(crate) chunked: bool,
}

/// The upstream request head: the client's headers in order (names lowercased, hop-by-hop and
/// `expect` dropped), then `x-forwarded-proto`, `x-request-id`,
/// `x-envoy-expected-rq-timeout-ms`, `x-envoy-original-path`, and the codec's framing.
pub(crate) fn upstream_request(head: &RequestHead, up: &UpstreamRequest<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", head.method, up.path).as_bytes());
    let mut has_xfp = false;
    let mut has_request_id = false;
    for (name, value) in &head.headers {
        if is_hop_by_hop(name) || name == "te" || (name == "expect" && head.expect_continue) {
            continue;
        }
        has_xfp |= name == "x-forwarded-proto";
        has_request_id |= name == "x-request-id";
        push_header(&mut out, name, value);
    }
    if !has_xfp {
        push_header(&mut out, "x-forwarded-proto", b"http");
    }
    if !has_request_id {
        push_header(&mut out, "x-request-id", uuid_v4().as_bytes());
    }
    if let Some(ms) = up.timeout_ms {
        push_header(
            &mut out,
            "x-envoy-expected-rq-timeout-ms",
            ms.to_string().as_bytes(),
        );
    }
    if let Some(original) = up.original_path {
        push_header(&mut out, "x-envoy-original-path", original.as_bytes());
    }
    if up.chunked {
        push_header(&mut out, "transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The downstream response head for an upstream response: its headers in order (hop-by-hop
/// dropped, `date` and `server: envoy` overwritten in place), then
/// `x-envoy-upstream-service-time`, `date` / `server` when the upstream sent none, and the
/// codec's `connection: close` and `transfer-encoding: chunked`.
pub(crate) fn downstream_response(
    rsp: &ResponseHead,
    service_time_ms: u128,
    close: bool,
    chunked: bool,
) -> Vec<u8> {
    let date = crate::date::now();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", rsp.status, reason(rsp.status)).as_bytes());
    let mut has_date = false;
    let mut has_server = false;
    for (name, value) in &rsp.headers {
        match name.as_str() {
            n if is_hop_by_hop(n) => {}
            "date" if !has_date => {
                has_date = true;
                push_header(&mut out, "date", date.as_bytes());
            }
            "server" if !has_server => {
                has_server = true;
                push_header(&mut out, "server", b"envoy");
            }
            "date" | "server" => {}
            // With chunked framing the length is the codec's business (and it must not lie).
            "content-length" if chunked => {}
            _ => push_header(&mut out, name, value),
        }
    }
    push_header(
        &mut out,
        "x-envoy-upstream-service-time",
        service_time_ms.to_string().as_bytes(),
    );
    if !has_date {
        push_header(&mut out, "date", date.as_bytes());
    }
    if !has_server {
        push_header(&mut out, "server", b"envoy");
    }
    if close {
        push_header(&mut out, "connection", b"close");
    }
    if chunked {
        push_header(&mut out, "transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A random (version 4) `x-request-id`.
fn uuid_v4() -> String {
    let v: u128 = rand::random();
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replies_match_envoy_bytes() {
        let r = String::from_utf8(local_reply(503, b"no healthy upstream", false, false)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 503 Service Unavailable");
        assert_eq!(lines[1], "content-length: 19");
        assert_eq!(lines[2], "content-type: text/plain");
        assert!(lines[3].starts_with("date: "));
        assert_eq!(lines[4], "server: envoy");
        assert_eq!(body, "no healthy upstream");
        let r = String::from_utf8(local_reply(404, b"", true, false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\ndate: "));
        assert!(r.ends_with("\r\nserver: envoy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"));
    }

    #[test]
    fn uuid_is_v4() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }
}
