//! The `envoy.filters.network.redis_proxy` filter: listeners and sessions, the command splitter,
//! the prefix router (with mirroring), transactions, auth, faults, and the per-worker pipelined
//! upstream clients.
//!
//! Owns: the data path. Depends on `resp` (wire format), `config` (domain types only, never
//! protobufs), `stats` (pre-built handles) and `upstream` (hosts and load balancers). Must never
//! take a lock on the request path: everything per-connection lives on one worker thread.

#![forbid(unsafe_code)]

mod client;
mod clock;
mod cluster_scope;
mod conn_limit;
mod drain;
mod faults;
mod filter;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod listener;
mod listener_stats;
mod local_commands;
mod pending;
mod pool;
mod redirect;
mod request;
mod resp3;
mod router;
mod session;
mod session_state;
mod spare;
mod splitter;
mod stats;
mod supported_commands;
mod tcp_proxy;
mod transaction;
mod worker;

pub use conn_limit::{GlobalConnectionLimit, LimitExemptions, ListenerLimit};
pub use drain::{DrainStrategy, ListenerControl};
pub use filter::{FilterConfig, FilterConfigError};
pub use listener::{
    bind_listener, compile_chains, ChainFilter, ChainSet, CompiledChain, ListenerRuntime,
};
pub use listener_stats::{listener_stat_prefix, ListenerStats};
pub use session::MAX_PENDING_REQUESTS;
pub use tcp_proxy::TcpProxyConfig;
pub use worker::{run_worker, WorkerCommand};
