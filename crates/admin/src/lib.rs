//! The admin HTTP port (Envoy's `admin.address`).
//!
//! Owns: the HTTP/1.1 listener and the endpoints. Must not depend on the data path; what it
//! shows comes from the stats store and from the `AdminState` the binary hands it.

#![forbid(unsafe_code)]

// API CONTRACT (implemented by the admin owner):
// pub struct AdminState { pub stats: redvoy_stats::Store,
//                         pub ready: Arc<AtomicBool>,          // /ready: 200 "LIVE\n" vs 503 "PRE_INITIALIZING\n"
//                         pub shutdown: tokio::sync::watch::Sender<bool> }  // /quitquitquit sets true
// pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) -> std::io::Result<()>;
