//! Envoy's TLS and HTTP inspectors: before a filter chain is chosen, a connection's first
//! bytes are peeked (never consumed) to learn whether it is TLS, its SNI and ALPN, or whether
//! it speaks HTTP. Bounded by the listener's `listener_filters_timeout` and by the largest
//! ClientHello Envoy accepts.

use std::io;
use std::time::Duration;

use redvoy_config::model;
use redvoy_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};
use redvoy_tls::{inspect_client_hello, Inspection};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::chains::Detected;

/// Envoy's largest ClientHello (`TLS_MAX_CLIENT_HELLO`); a larger one closes the connection.
const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// What the HTTP inspector looks at, at most (a request line longer than this is not HTTP to
/// it).
const MAX_HTTP_INSPECT: usize = 8 * 1024;
/// HTTP/2's connection preface (prior knowledge, `h2c`).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A listener's inspectors, as its chains were compiled.
pub struct Inspectors {
    tls: Option<TlsInspectorStats>,
    http: Option<HttpInspectorStats>,
    timeout: Option<Duration>,
    continue_on_timeout: bool,
}

/// `tls_inspector.*` (Envoy counts them for every listener together, at the root).
struct TlsInspectorStats {
    tls_found: Counter,
    tls_not_found: Counter,
    sni_found: Counter,
    sni_not_found: Counter,
    alpn_found: Counter,
    alpn_not_found: Counter,
    client_hello_too_large: Counter,
    bytes_processed: Histogram,
}

/// `http_inspector.*`.
struct HttpInspectorStats {
    http10_found: Counter,
    http11_found: Counter,
    http2_found: Counter,
    http_not_found: Counter,
    read_error: Counter,
}

/// Why a connection is closed before any filter chain sees it.
pub enum Refused {
    /// The client closed during inspection (`downstream_listener_filter_remote_close`).
    RemoteClose,
    /// `listener_filters_timeout` ran out (`downstream_pre_cx_timeout`).
    Timeout,
    /// A ClientHello above the limit, or a socket error (`downstream_listener_filter_error`).
    Error,
}

/// The listener-level stats the inspection moves.
pub struct PreConnectionStats {
    pub active: Gauge,
    pub timeout: Counter,
    pub remote_close: Counter,
    pub filter_error: Counter,
}

impl Inspectors {
    /// `None` when the listener runs no inspector.
    pub fn new(listener: &model::Listener, store: &Store) -> Option<Self> {
        if !listener.tls_inspector && !listener.http_inspector {
            return None;
        }
        let c = |name: &str| store.counter(name);
        Some(Self {
            tls: listener.tls_inspector.then(|| TlsInspectorStats {
                tls_found: c("tls_inspector.tls_found"),
                tls_not_found: c("tls_inspector.tls_not_found"),
                sni_found: c("tls_inspector.sni_found"),
                sni_not_found: c("tls_inspector.sni_not_found"),
                alpn_found: c("tls_inspector.alpn_found"),
                alpn_not_found: c("tls_inspector.alpn_not_found"),
                client_hello_too_large: c("tls_inspector.client_hello_too_large"),
                bytes_processed: store
                    .histogram("tls_inspector.bytes_processed", HistogramUnit::Unspecified),
            }),
            http: listener.http_inspector.then(|| HttpInspectorStats {
                http10_found: c("http_inspector.http10_found"),
                http11_found: c("http_inspector.http11_found"),
                http2_found: c("http_inspector.http2_found"),
                http_not_found: c("http_inspector.http_not_found"),
                read_error: c("http_inspector.read_error"),
            }),
            timeout: listener.listener_filters_timeout,
            continue_on_timeout: listener.continue_on_listener_filters_timeout,
        })
    }

    /// Peeks until every inspector has decided. On timeout with
    /// `continue_on_listener_filters_timeout`, what is known so far is returned.
    pub async fn inspect(
        &self,
        stream: &TcpStream,
        stats: &PreConnectionStats,
    ) -> Result<Detected, Refused> {
        stats.active.inc();
        let mut detected = Detected::plain();
        let work = self.run(stream, &mut detected);
        let result = match self.timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) if self.continue_on_timeout => Ok(()),
                Err(_) => Err(Refused::Timeout),
            },
        };
        stats.active.dec();
        match result {
            Ok(()) => Ok(detected),
            Err(Refused::Timeout) => {
                stats.timeout.inc();
                Err(Refused::Timeout)
            }
            Err(Refused::RemoteClose) => {
                stats.remote_close.inc();
                Err(Refused::RemoteClose)
            }
            Err(Refused::Error) => {
                stats.filter_error.inc();
                Err(Refused::Error)
            }
        }
    }

    async fn run(&self, stream: &TcpStream, detected: &mut Detected) -> Result<(), Refused> {
        let mut buf = vec![
            0u8;
            if self.tls.is_some() {
                MAX_CLIENT_HELLO
            } else {
                MAX_HTTP_INSPECT
            }
        ];
        let mut tls_pending = self.tls.is_some();
        let mut http_pending = self.http.is_some();
        let mut seen = 0;
        while tls_pending || http_pending {
            let n = match peek_more(stream, &mut buf, seen).await {
                Ok(0) => return Err(Refused::RemoteClose),
                Ok(n) => n,
                Err(_) => {
                    if let Some(http) = &self.http {
                        http.read_error.inc();
                    }
                    return Err(Refused::Error);
                }
            };
            seen = n;
            let bytes = &buf[..n];
            if tls_pending {
                if let Some(stats) = &self.tls {
                    match inspect_client_hello(bytes) {
                        Inspection::NeedMore if n < buf.len() => {}
                        Inspection::NeedMore => {
                            stats.client_hello_too_large.inc();
                            return Err(Refused::Error);
                        }
                        Inspection::NotTls => {
                            tls_pending = false;
                            stats.tls_not_found.inc();
                            stats.bytes_processed.record(n as u64);
                        }
                        Inspection::Tls(hello) => {
                            tls_pending = false;
                            stats.tls_found.inc();
                            stats.bytes_processed.record(n as u64);
                            detected.transport_protocol = "tls";
                            match hello.server_name {
                                Some(name) => {
                                    stats.sni_found.inc();
                                    detected.server_name = Some(name);
                                }
                                None => stats.sni_not_found.inc(),
                            }
                            if hello.alpn.is_empty() {
                                stats.alpn_not_found.inc();
                            } else {
                                stats.alpn_found.inc();
                                detected.application_protocols = hello.alpn;
                            }
                            // The HTTP inspector leaves TLS connections alone.
                            http_pending = false;
                        }
                    }
                }
            }
            // Envoy's HTTP inspector runs after the TLS one has decided.
            if http_pending && !tls_pending {
                if let Some(stats) = &self.http {
                    match detect_http(&bytes[..n.min(MAX_HTTP_INSPECT)]) {
                        HttpDetection::NeedMore if n < MAX_HTTP_INSPECT => {}
                        HttpDetection::NeedMore | HttpDetection::NotHttp => {
                            http_pending = false;
                            stats.http_not_found.inc();
                        }
                        HttpDetection::Found(protocol) => {
                            http_pending = false;
                            match protocol {
                                "http/1.0" => stats.http10_found.inc(),
                                "h2c" => stats.http2_found.inc(),
                                _ => stats.http11_found.inc(),
                            }
                            detected.application_protocols = vec![protocol.to_owned()];
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Peeks into `buf` once more than `seen` bytes are waiting; 0 when the peer closed (even
/// with bytes left unread: a client that half-closed before its first message is done).
async fn peek_more(stream: &TcpStream, buf: &mut [u8], seen: usize) -> io::Result<usize> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        // A peek that finds nothing new reports "would block" to `try_io`, which then clears
        // the readiness (unless an event came meanwhile), so the next wait lasts until more
        // bytes arrive: peeking consumes nothing, and the socket would otherwise stay
        // readable.
        let peeked = stream.try_io(Interest::READABLE, || {
            let mut read = tokio::io::ReadBuf::new(buf);
            match stream.poll_peek(&mut cx, &mut read) {
                std::task::Poll::Ready(Ok(0)) => Ok(0),
                std::task::Poll::Ready(Ok(n)) if n > seen => Ok(n),
                std::task::Poll::Ready(Ok(_)) | std::task::Poll::Pending => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                std::task::Poll::Ready(Err(e)) => Err(e),
            }
        });
        match peeked {
            Ok(n) => return Ok(n),
            // The read side closed and nothing new came: readiness never clears for a closed
            // read side, so waiting again would spin.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                return Ok(0);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Spurious wake-ups cannot starve the worker or the inspection's timeout.
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HttpDetection {
    NeedMore,
    NotHttp,
    /// `http/1.0`, `http/1.1` or `h2c`, as Envoy names them.
    Found(&'static str),
}

/// Whether `bytes` begin an HTTP/1.x request line or HTTP/2's preface.
fn detect_http(bytes: &[u8]) -> HttpDetection {
    if bytes.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(bytes) {
        return HttpDetection::NeedMore;
    }
    if bytes.starts_with(H2_PREFACE) {
        return HttpDetection::Found("h2c");
    }
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        // No line end yet: more may come, unless what is there cannot start a request line.
        let token_so_far = bytes.iter().take_while(|b| is_tchar(**b)).count();
        return if token_so_far == bytes.len() || bytes.get(token_so_far) == Some(&b' ') {
            HttpDetection::NeedMore
        } else {
            HttpDetection::NotHttp
        };
    };
    let line = &bytes[..end];
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return HttpDetection::NotHttp;
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) || target.is_empty() {
        return HttpDetection::NotHttp;
    }
    match version {
        b"HTTP/1.0" => HttpDetection::Found("http/1.0"),
        b"HTTP/1.1" => HttpDetection::Found("http/1.1"),
        _ => HttpDetection::NotHttp,
    }
}

/// RFC 9110's token characters (an HTTP method is a token).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that sends part of a ClientHello and half-closes: the peek reports the close
    /// (it must not spin on a read side that stays readable).
    #[tokio::test]
    async fn a_half_closed_client_ends_the_peek() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&[0x16, 3, 1]).await.unwrap();
        let mut buf = [0u8; 64];
        let first = peek_more(&server, &mut buf, 0).await.unwrap();
        assert_eq!(first, 3);
        client.shutdown().await.unwrap();
        let after = tokio::time::timeout(Duration::from_secs(5), peek_more(&server, &mut buf, 3))
            .await
            .expect("the peek ends");
        assert_eq!(after.unwrap(), 0);
    }

    #[test]
    fn http_is_told_from_redis() {
        assert_eq!(
            detect_http(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            HttpDetection::Found("http/1.1")
        );
        assert_eq!(
            detect_http(b"POST /x HTTP/1.0\r\n"),
            HttpDetection::Found("http/1.0")
        );
        assert_eq!(detect_http(H2_PREFACE), HttpDetection::Found("h2c"));
        assert_eq!(detect_http(b"PRI * HT"), HttpDetection::NeedMore);
        assert_eq!(detect_http(b"GET /health"), HttpDetection::NeedMore);
        // RESP and inline Redis commands are not HTTP.
        assert_eq!(detect_http(b"*1\r\n$4\r\nPING\r\n"), HttpDetection::NotHttp);
        assert_eq!(detect_http(b"PING\r\n"), HttpDetection::NotHttp);
        assert_eq!(detect_http(b"GET foo\r\n"), HttpDetection::NotHttp);
        assert_eq!(detect_http(b"SET a b\r\n"), HttpDetection::NotHttp);
        assert_eq!(detect_http(&[0x16, 3, 1]), HttpDetection::NotHttp);
    }
}
