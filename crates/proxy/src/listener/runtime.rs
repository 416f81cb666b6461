//! A listener as the main thread and every worker share it: its socket (one per worker, with
//! SO_REUSEPORT), its swappable filter chains, its stats and its drain control.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use redvoy_stats::{Counter, Store};
use socket2::{Domain, Protocol, Socket, Type};

use super::chains::ChainSet;
use super::inspect::PreConnectionStats;
use crate::conn_limit::ListenerLimit;
use crate::drain::ListenerControl;
use crate::listener_stats::{listener_stat_prefix, ListenerStats};

/// Accept backlog of every listener socket.
const LISTEN_BACKLOG: i32 = 1024;

/// Opens one listener socket for one worker. Every worker binds the same address with
/// SO_REUSEPORT, so the kernel spreads new connections across workers.
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A listener as the data path runs it: shared by the main thread (which swaps its chains on
/// a config push) and every worker.
pub struct ListenerRuntime {
    pub name: String,
    /// The bound address (port 0 resolved), or the registered one for `bind_to_port: false`.
    pub address: SocketAddr,
    pub use_original_dst: bool,
    /// The global connection limit, and how this listener stands towards it.
    pub(crate) limit: ListenerLimit,
    pub(crate) chains: ArcSwap<ChainSet>,
    /// Bumped by every `set_chains`: sessions compare it (one atomic load) before looking for
    /// a newer filter.
    pub(crate) generation: AtomicU64,
    pub stats: Arc<ListenerStats>,
    pub control: Arc<ListenerControl>,
    pub(crate) no_filter_chain_match: Counter,
    /// What the listener filters move before a chain is chosen.
    pub(crate) pre_cx: PreConnectionStats,
}

impl ListenerRuntime {
    pub fn new(
        name: String,
        address: SocketAddr,
        use_original_dst: bool,
        limit: ListenerLimit,
        chains: ChainSet,
        store: &Store,
        workers: usize,
    ) -> Self {
        let prefix = listener_stat_prefix(&address);
        Self {
            name,
            address,
            use_original_dst,
            limit,
            chains: ArcSwap::from_pointee(chains),
            generation: AtomicU64::new(0),
            stats: Arc::new(ListenerStats::new(store, &address, workers)),
            control: Arc::new(ListenerControl::new()),
            no_filter_chain_match: store
                .counter(&format!("listener.{prefix}.no_filter_chain_match")),
            pre_cx: PreConnectionStats {
                active: store.gauge(&format!("listener.{prefix}.downstream_pre_cx_active")),
                timeout: store.counter(&format!("listener.{prefix}.downstream_pre_cx_timeout")),
                remote_close: store.counter(&format!(
                    "listener.{prefix}.downstream_listener_filter_remote_close"
                )),
                filter_error: store.counter(&format!(
                    "listener.{prefix}.downstream_listener_filter_error"
                )),
            },
        }
    }

    /// Installs new chains: existing connections pick them up on their next request.
    pub fn set_chains(&self, chains: ChainSet) {
        self.chains.store(Arc::new(chains));
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn chains(&self) -> Arc<ChainSet> {
        self.chains.load_full()
    }
}
