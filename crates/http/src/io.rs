//! A socket plus its read buffer, counting bytes into the stats the owner chose.

use std::io;

use bytes::BytesMut;
use redvoy_stats::Counter;
use redvoy_tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::READ_CHUNK;

/// One side of an exchange. `buf` holds bytes read but not consumed yet (a pipelined next
/// request, the start of a body); readers consume from it before reading the socket again.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) buf: BytesMut,
    rx: Counter,
    tx: Counter,
}

// === impl Conn ===

impl Conn {
    pub(crate) fn new(stream: Stream, rx: Counter, tx: Counter) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            rx,
            tx,
        }
    }

    /// Reads once (at most `READ_CHUNK` bytes) into `buf`; 0 means end of stream.
    /// Cancel-safe: an interrupted read loses no data.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        let n = (&mut self.stream)
            .take(READ_CHUNK as u64)
            .read_buf(&mut self.buf)
            .await?;
        self.rx.add(n as u64);
        Ok(n)
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await?;
        // A TLS stream may hold bytes back until flushed (a plain socket holds none).
        self.stream.flush().await?;
        self.tx.add(data.len() as u64);
        Ok(())
    }
}
