//! A connection, plaintext or TLS, for the callers that do not need the plaintext path's own
//! fast types: the health checker, Redis Cluster discovery, tcp_proxy, the HTTP connection
//! manager and downstream sessions on TLS filter chains.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::ClientTls;

/// The error of a connection whose TLS context has no secrets yet.
pub fn secrets_not_ready() -> io::Error {
    io::Error::other("TLS secrets not ready")
}

pub enum Stream {
    Plain(TcpStream),
    /// TLS this side originated (to an upstream host).
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS this side terminated (from a downstream client).
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `addr` and, with `tls`, completes the handshake (which fails at once
    /// while the context's secrets have not arrived: never plaintext instead).
    pub async fn connect(addr: SocketAddr, tls: Option<&ClientTls>) -> io::Result<Self> {
        let connector = match tls {
            None => None,
            Some(tls) => Some(tls.connector().ok_or_else(secrets_not_ready)?),
        };
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        match connector {
            None => Ok(Self::Plain(tcp)),
            Some(tls) => Ok(Self::Client(Box::new(tls.connect(tcp, addr).await?))),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Client(s) => s.get_ref().0,
            Self::Server(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    /// Whether the peer closed the connection while it was idle (a look at the socket that
    /// consumes nothing, so a TLS session is left intact).
    pub fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut buf = ReadBuf::new(&mut probe);
        match self.tcp().poll_peek(&mut cx, &mut buf) {
            Poll::Ready(Ok(0)) => true,
            Poll::Ready(Ok(_)) | Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
