//! Message bodies: streamed from one connection to the other in pieces of at most
//! `READ_CHUNK` bytes, decoded from their framing and re-encoded for the other side.

use std::io;

use crate::io::Conn;
use crate::{MAX_CHUNK_LINE, MAX_TRAILERS_BYTES};

/// How the end of a body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

/// Which side broke a body transfer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("source: {0}")]
    Src(io::Error),
    #[error("destination: {0}")]
    Dst(io::Error),
}

fn premature() -> BodyError {
    BodyError::Src(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "body ended early",
    ))
}

fn malformed(what: &str) -> BodyError {
    BodyError::Src(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))
}

/// Copies one body from `src` to `dst`. `chunked_out` re-encodes it with chunked framing
/// (trailers are dropped, as Envoy does for HTTP/1 by default).
pub(crate) async fn copy(
    src: &mut Conn,
    dst: &mut Conn,
    framing: Framing,
    chunked_out: bool,
) -> Result<(), BodyError> {
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => copy_exact(src, dst, n, chunked_out).await?,
        Framing::Chunked => loop {
            let line = read_line(src).await?;
            let size_text = line.split(|b| *b == b';').next().unwrap_or(&[]);
            let size = std::str::from_utf8(size_text)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(|| malformed("bad chunk size"))?;
            if size == 0 {
                skip_trailers(src).await?;
                break;
            }
            copy_exact(src, dst, size, chunked_out).await?;
            if !read_line(src).await?.is_empty() {
                return Err(malformed("missing CRLF after chunk"));
            }
        },
        Framing::Close => loop {
            if src.buf.is_empty() && src.fill().await.map_err(BodyError::Src)? == 0 {
                break;
            }
            let piece = src.buf.split();
            write_piece(dst, &piece, chunked_out).await?;
        },
    }
    if chunked_out && framing != Framing::Empty {
        dst.write_all(b"0\r\n\r\n").await.map_err(BodyError::Dst)?;
    }
    Ok(())
}

async fn copy_exact(
    src: &mut Conn,
    dst: &mut Conn,
    mut remaining: u64,
    chunked_out: bool,
) -> Result<(), BodyError> {
    while remaining > 0 {
        if src.buf.is_empty() && src.fill().await.map_err(BodyError::Src)? == 0 {
            return Err(premature());
        }
        let take = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(src.buf.len());
        let piece = src.buf.split_to(take);
        write_piece(dst, &piece, chunked_out).await?;
        remaining -= take as u64;
    }
    Ok(())
}

async fn write_piece(dst: &mut Conn, data: &[u8], chunked_out: bool) -> Result<(), BodyError> {
    if chunked_out {
        let mut framed = Vec::with_capacity(data.len() + 20);
        framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        framed.extend_from_slice(data);
        framed.extend_from_slice(b"\r\n");
        dst.write_all(&framed).await.map_err(BodyError::Dst)
    } else {
        dst.write_all(data).await.map_err(BodyError::Dst)
    }
}

/// One CRLF- (or LF-) terminated line, without the terminator; at most `MAX_CHUNK_LINE`.
async fn read_line(src: &mut Conn) -> Result<Vec<u8>, BodyError> {
    loop {
        if let Some(pos) = src.buf.iter().position(|b| *b == b'\n') {
            let mut line = src.buf.split_to(pos + 1).to_vec();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
        if src.buf.len() > MAX_CHUNK_LINE {
            return Err(malformed("chunk line too long"));
        }
        if src.fill().await.map_err(BodyError::Src)? == 0 {
            return Err(premature());
        }
    }
}

async fn skip_trailers(src: &mut Conn) -> Result<(), BodyError> {
    let mut total = 0usize;
    loop {
        let line = read_line(src).await?;
        if line.is_empty() {
            return Ok(());
        }
        total += line.len();
        if total > MAX_TRAILERS_BYTES {
            return Err(malformed("trailers too large"));
        }
    }
}
