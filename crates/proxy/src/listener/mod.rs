//! Listeners: their filter chains (compiled from config, and Envoy's choice of a chain for a
//! new connection), the runtime state the main thread and the workers share, and each
//! worker's accept loop. Used by the listener manager and by validate mode alike.

mod accept;
mod chains;
mod inspect;
mod runtime;

#[cfg(feature = "fuzzing")]
pub(crate) use accept::worker_filter;
pub(crate) use accept::WorkerListeners;
pub use chains::{compile_chains, ChainFilter, ChainSet, CompiledChain};
pub use runtime::{bind_listener, ListenerRuntime};
