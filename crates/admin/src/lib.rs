//! The admin port (Envoy's `admin.address`, TCP or `pipe`): every endpoint Envoy 1.40 lists in
//! `/help`, with its paths, methods, status codes, content types and bodies, so that
//! pilot-agent, istioctl, Prometheus and operators cannot tell redvoy from Envoy.
//!
//! Owns: the HTTP/1.1 server, query parsing (raw `^ | \` as Go clients send them), the server
//! state `/healthcheck/*` flips, and the rendering of every answer — text and JSON — including
//! `/config_dump`'s `resource`/`mask`/`name_regex` applied to the JSON dump.
//! Must not depend on: the data path, the config crate or protobufs. What it shows comes from
//! the stats store and from an [`AdminBackend`] the binary implements with plain data.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

mod backend;
mod handlers;
mod http;
mod json;
mod listener_stats;
mod re2;
mod render;

use listener_stats::AdminListenerStats;

pub use backend::{
    Address, AdminBackend, AdminError, CertificateDetails, ClusterStatus, CommandLineOptions,
    ConfigDumpQuery, ContextCertificates, DrainRequest, DrainStrategy, HealthFlags, HostStat,
    HostStatus, IpVersion, ListenerStatus, Locality, LogChange, LogLevel, MemoryStats, Mode,
    OutlierInfo, RuntimeEntry, RuntimeView, ServerInfo, StatKind, Thresholds,
};

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

/// Envoy 1.40's loggers in the order `/logging` lists them (`Logger::Registry`). istioctl only
/// checks that the names it changes appear; a backend can list these to look like Envoy.
pub const ENVOY_LOGGERS: &[&str] = &[
    "a2a",
    "admin",
    "ai_protocol_manager",
    "alternate_protocols_cache",
    "aws",
    "assert",
    "backtrace",
    "basic_auth",
    "cache_filter",
    "client",
    "config",
    "connection",
    "conn_handler",
    "compression",
    "credential_injector",
    "decompression",
    "dns",
    "dubbo",
    "envoy_bug",
    "ext_authz",
    "ext_proc",
    "rocketmq",
    "file",
    "filter",
    "forward_proxy",
    "geolocation",
    "grpc",
    "happy_eyeballs",
    "hc",
    "health_checker",
    "http",
    "http2",
    "hystrix",
    "init",
    "io",
    "jwt",
    "json_rpc",
    "kafka",
    "key_value_store",
    "lua",
    "local_rate_limit",
    "main",
    "matcher",
    "mcp",
    "misc",
    "mongo",
    "multi_connection",
    "notification",
    "oauth2",
    "quic",
    "quic_stream",
    "pool",
    "rate_limit_quota",
    "rbac",
    "rds",
    "redis",
    "router",
    "runtime",
    "stats",
    "secret",
    "sse",
    "tap",
    "testing",
    "thrift",
    "tracing",
    "upstream",
    "udp",
    "wasm",
    "websocket",
    "golang",
    "stats_sinks",
    "dynamic_modules",
    "ip_tagging",
];

/// `envoy.admin.v3.ServerInfo.State`; the discriminant is the `server.state` gauge value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Live => "LIVE",
            State::Draining => "DRAINING",
            State::PreInitializing => "PRE_INITIALIZING",
            State::Initializing => "INITIALIZING",
        }
    }

    /// The value of the `server.state` gauge.
    pub fn gauge_value(self) -> u64 {
        self as u64
    }
}

const INIT_PRE: u8 = 0;
const INIT_RUNNING: u8 = 1;
const INIT_DONE: u8 = 2;

/// The server's lifecycle as `/ready`, `/server_info` and the `server.state`/`server.live`
/// gauges show it (Envoy's `Utility::serverState`): `PRE_INITIALIZING` until initialization
/// starts, `INITIALIZING` until it is done, then `LIVE`, or `DRAINING` while
/// `/healthcheck/fail` is in effect. A failed health check before initialization is done does
/// not change the state (observed: `/ready` stays `INITIALIZING`).
///
/// Observed on Envoy 1.40: `/healthcheck/fail` sets `server.live` to 0 at once (this crate does
/// that) while `server.state` only follows at the next stats flush — the binary sets
/// `server.state` to [`ServerState::state`]`.gauge_value()` and `server.live` to
/// [`ServerState::live`] on every flush.
#[derive(Debug, Default)]
pub struct ServerState {
    init: AtomicU8,
    health_check_failed: AtomicBool,
}

// === impl ServerState ===

impl ServerState {
    /// `PRE_INITIALIZING`, health check passing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Initialization (clusters, listeners, xDS) has started.
    pub fn set_initializing(&self) {
        let _ = self.init.compare_exchange(
            INIT_PRE,
            INIT_RUNNING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Initialization is done and the workers run.
    pub fn set_initialized(&self) {
        self.init.store(INIT_DONE, Ordering::Relaxed);
    }

    /// `/healthcheck/fail` (`true`) and `/healthcheck/ok` (`false`).
    pub fn fail_healthcheck(&self, fail: bool) {
        self.health_check_failed.store(fail, Ordering::Relaxed);
    }

    pub fn health_check_failed(&self) -> bool {
        self.health_check_failed.load(Ordering::Relaxed)
    }

    /// `server.live`: 1 unless the health check is failed.
    pub fn live(&self) -> bool {
        !self.health_check_failed()
    }

    pub fn state(&self) -> State {
        match self.init.load(Ordering::Relaxed) {
            INIT_PRE => State::PreInitializing,
            INIT_RUNNING => State::Initializing,
            _ if self.health_check_failed() => State::Draining,
            _ => State::Live,
        }
    }
}

/// What the endpoints read and act on.
pub struct AdminState {
    pub stats: redvoy_stats::Store,
    /// Lifecycle shown by `/ready` and `/server_info`, flipped by `/healthcheck/*`.
    pub server: Arc<ServerState>,
    /// `/quitquitquit` sends `true`; `serve` stops accepting once it is `true`.
    pub shutdown: watch::Sender<bool>,
    /// Everything else the endpoints show or change.
    pub backend: Arc<dyn AdminBackend>,
}

/// Serves the admin endpoints on a TCP `listener` until `state.shutdown` becomes `true`.
/// Connections already open finish their current request on their own tasks.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    serve_on(Listener::Tcp(listener), state).await
}

/// [`serve`] on a Unix socket (`admin.address.pipe`); see [`bind_pipe`].
pub async fn serve_unix(listener: UnixListener, state: AdminState) -> std::io::Result<()> {
    serve_on(Listener::Unix(listener), state).await
}

/// Binds a `pipe` address as Envoy does: `@name` is a Linux abstract socket; otherwise a stale
/// socket file at `path` is removed first, and a non-zero `mode` (e.g. `0o600`) is applied to
/// the new file.
pub fn bind_pipe(path: &str, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(name) = path.strip_prefix('@') {
        return bind_abstract(name);
    }
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    if mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(listener)
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> std::io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(_: &str) -> std::io::Result<UnixListener> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets need Linux",
    ))
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn serve_on(listener: Listener, state: AdminState) -> std::io::Result<()> {
    let listener_stats = Arc::new(AdminListenerStats::new(&state.stats));
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
            r = accept(&listener) => r,
            _ = quit.wait_for(|q| *q) => return Ok(()),
        };
        let state = Arc::clone(&state);
        let stats = Arc::clone(&listener_stats);
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let opened = stats.connection_opened();
                    if let Err(e) = connection(stream, &state, &stats).await {
                        tracing::debug!(%peer, error = %e, "admin connection ended");
                    }
                    stats.connection_closed(opened);
                });
            }
            Ok(Accepted::Unix(stream)) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let opened = stats.connection_opened();
                    if let Err(e) = connection(stream, &state, &stats).await {
                        tracing::debug!(error = %e, "admin connection ended");
                    }
                    stats.connection_closed(opened);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, p)| Accepted::Tcp(s, p)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Answers requests on one connection, in order, until the client closes, asks to close, is
/// idle for `IDLE_TIMEOUT`, or sends something unparseable.
async fn connection<S>(
    mut stream: S,
    state: &AdminState,
    stats: &AdminListenerStats,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let read = tokio::time::timeout(
            http::IDLE_TIMEOUT,
            http::read_request(&mut stream, &mut buf),
        )
        .await;
        let req = match read {
            Err(_) => {
                stats.closed_locally();
                return Ok(());
            }
            Ok(Ok(None)) => {
                stats.closed_remotely();
                return Ok(());
            }
            Ok(Ok(Some(req))) => req,
            Ok(Err(http::RequestError::Io(e))) => return Err(e),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "admin: bad request");
                if let Some(resp) = e.response() {
                    let bytes = resp.encode(true, true);
                    stats.sent(bytes.len());
                    stream.write_all(&bytes).await?;
                }
                stats.closed_locally();
                return linger_close(stream).await;
            }
        };
        stats.request(req.wire_len);
        let resp = handlers::handle(&req, state);
        stats.response(resp.status);
        let with_body = req.method != "HEAD";
        let bytes = resp.encode(with_body, !req.keep_alive);
        stats.sent(bytes.len());
        stream.write_all(&bytes).await?;
        if !req.keep_alive {
            stats.closed_locally();
            return stream.shutdown().await;
        }
    }
}

/// Half-closes, then discards what the client is still sending, within bounds.
async fn linger_close<S>(mut stream: S) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_logger_list_is_complete() {
        assert_eq!(ENVOY_LOGGERS.len(), 73);
        assert_eq!(ENVOY_LOGGERS.first(), Some(&"a2a"));
        assert_eq!(ENVOY_LOGGERS.last(), Some(&"ip_tagging"));
    }

    #[test]
    fn server_state_follows_envoy() {
        let s = ServerState::new();
        assert_eq!(s.state(), State::PreInitializing);
        s.fail_healthcheck(true);
        assert_eq!(s.state(), State::PreInitializing);
        s.set_initializing();
        assert_eq!(s.state(), State::Initializing);
        assert!(!s.live());
        s.set_initialized();
        assert_eq!(s.state(), State::Draining);
        assert_eq!(s.state().gauge_value(), 1);
        s.fail_healthcheck(false);
        assert_eq!((s.state(), s.live()), (State::Live, true));
        s.set_initializing(); // late calls do not go back
        assert_eq!(s.state(), State::Live);
        assert_eq!(
            [
                State::Live,
                State::Draining,
                State::PreInitializing,
                State::Initializing
            ]
            .map(State::gauge_value),
            [0, 1, 2, 3]
        );
    }
}
