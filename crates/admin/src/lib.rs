//! The admin HTTP port (Envoy's `admin.address`): `/ready`, `/stats`, `/quitquitquit`, `/help`,
//! answered with Envoy 1.40's status codes, content types and bodies.
//!
//! Owns: the HTTP/1.1 listener and the endpoints. Must not depend on the data path; what it
//! shows comes from the stats store and from the `AdminState` the binary hands it.

#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

mod handlers;
mod http;

/// Connections served at once. The admin port is for operators and agents; once this many are
/// open, accepting pauses until one closes.
pub const MAX_CONNECTIONS: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// After an error answer, unread request bytes are drained for at most this long (and at most
/// `LINGER_BYTES`) before closing: closing with unread input sends a reset that can destroy the
/// answer before the client reads it.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What the endpoints read and act on.
pub struct AdminState {
    pub stats: redvoy_stats::Store,
    /// `/ready`: 200 `LIVE` when set, 503 `PRE_INITIALIZING` otherwise.
    pub ready: Arc<AtomicBool>,
    /// `/quitquitquit` sends `true`; `serve` stops accepting once it is `true`.
    pub shutdown: watch::Sender<bool>,
}

/// Serves the admin endpoints on `listener` until `state.shutdown` becomes `true`. Connections
/// already open finish their current request on their own tasks.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    let state = Arc::new(state);
    let mut quit = state.shutdown.subscribe();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()), // the semaphore is never closed
            },
            _ = quit.wait_for(|q| *q) => return Ok(()),
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = quit.wait_for(|q| *q) => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, &state).await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

/// Answers requests on one connection, in order, until the client closes, asks to close, is
/// idle for `IDLE_TIMEOUT`, or sends something unparseable.
async fn connection(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let read = tokio::time::timeout(
            http::IDLE_TIMEOUT,
            http::read_request(&mut stream, &mut buf),
        )
        .await;
        let req = match read {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(req))) => req,
            Ok(Err(http::RequestError::Io(e))) => return Err(e),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "admin: bad request");
                if let Some(resp) = e.response() {
                    stream.write_all(&resp.encode(true, true)).await?;
                }
                return linger_close(stream).await;
            }
        };
        let resp = handlers::handle(&req, state);
        let with_body = req.method != "HEAD";
        stream
            .write_all(&resp.encode(with_body, !req.keep_alive))
            .await?;
        if !req.keep_alive {
            return stream.shutdown().await;
        }
    }
}

/// Half-closes, then discards what the client is still sending, within bounds.
async fn linger_close(mut stream: TcpStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let drain = async {
        let mut scratch = [0u8; 8 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    Ok(())
}
