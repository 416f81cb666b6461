//! Loopback ports, bounded polling and a minimal HTTP/1.1 client for admin endpoints.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bound on one admin HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many ports one test process may hand out before giving up looking for fresh ones.
const PORT_ATTEMPTS: usize = 64;

/// Ports already handed out by this process: the kernel may give a just-released ephemeral
/// port again, and two servers of one test must never be told to use the same one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released), never the same twice in
/// one process.
pub fn free_port() -> u16 {
    for _ in 0..PORT_ATTEMPTS {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"))
            .port();
        let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after {PORT_ATTEMPTS} attempts");
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, or panics after `timeout`
/// saying what was awaited.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    try_wait_for(timeout, &mut check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Like [`wait_for`] but returns `None` on timeout.
pub fn try_wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// True if something accepts TCP connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// An HTTP response from an admin endpoint.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

// === impl HttpResponse ===

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `content-type` header, or `""`.
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

/// Sends `METHOD path` over HTTP/1.1 (Connection: close) to `127.0.0.1:port` and reads the
/// whole response. `path` is written as given: query strings with raw `^ | \` reach the server unencoded, as
/// pilot-agent sends them.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<HttpResponse> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    exchange(stream, &format!("127.0.0.1:{port}"), method, path)
}

/// Like [`http`], over a Unix stream socket (an admin `address.pipe`).
pub fn http_unix(socket: &Path, method: &str, path: &str) -> std::io::Result<HttpResponse> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    exchange(stream, "localhost", method, path)
}

fn exchange(
    mut stream: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
) -> std::io::Result<HttpResponse> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP status line in {head:?}")))?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    // A HEAD answer announces a body it does not send.
    let body = if method == "HEAD" {
        String::new()
    } else if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(HttpResponse {
        status,
        body,
        headers,
    })
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> std::io::Result<String> {
    let bad = || std::io::Error::other("bad chunked HTTP body");
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n").ok_or_else(bad)?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad())?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(bad)?;
        out.push_str(chunk);
        body = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or_else(bad)?;
    }
}

/// A loopback port whose connects hang: a listener with an accept queue of one that never
/// accepts, and that one place taken. A connection attempt to it stays in progress until the
/// connector's own timeout (a host that never answers the handshake).
pub struct Blackhole {
    _listener: socket2::Socket,
    _filler: std::net::TcpStream,
    port: u16,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let listener =
            Socket::new(Domain::IPV4, Type::STREAM, None).unwrap_or_else(|e| panic!("socket: {e}"));
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        listener
            .bind(&any.into())
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
        // Linux keeps backlog + 1 connections waiting: 0 admits exactly one.
        listener.listen(0).unwrap_or_else(|e| panic!("listen: {e}"));
        let port = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("blackhole local address"));
        let filler = std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("fill the blackhole's queue: {e}"));
        Blackhole {
            _listener: listener,
            _filler: filler,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
