//! Workers: `--concurrency` threads, each with its own single-threaded event loop, its own
//! listener sockets (SO_REUSEPORT) and its own upstream connections. Nothing on the data path is
//! shared between workers except immutable config and atomic stats.

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use redvoy_upstream::ClusterManager;
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

use crate::listener::{ListenerRuntime, WorkerListeners};

/// What the main thread asks a worker to do.
pub enum WorkerCommand {
    /// Run a listener: accept on `socket` (this worker's SO_REUSEPORT share), or, without a
    /// socket, only take connections handed off by `use_original_dst` listeners.
    Add {
        listener: Arc<ListenerRuntime>,
        socket: Option<std::net::TcpListener>,
    },
    /// Forget a removed listener for hand-offs (its accept loop ends on its own stop signal).
    Remove(Arc<ListenerRuntime>),
    /// The listener's drain time is over: wake its sessions so that they close.
    CloseConnections(Arc<ListenerRuntime>),
}

/// Runs one worker until `shutdown` becomes true. Blocks the calling thread.
pub fn run_worker(
    id: usize,
    mut commands: mpsc::UnboundedReceiver<WorkerCommand>,
    clusters: Arc<ClusterManager>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    // This thread records stats on the request path: it writes a shard of its own.
    redvoy_stats::claim_shard();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let worker = Rc::new(WorkerListeners::new(id, clusters));
    local.block_on(&runtime, async move {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(WorkerCommand::Add { listener, socket }) => worker.add(listener, socket)?,
                    Some(WorkerCommand::Remove(listener)) => worker.remove(&listener),
                    Some(WorkerCommand::CloseConnections(listener)) => {
                        worker.close_connections(&listener)
                    }
                    None => break,
                },
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        Ok(())
    })
}
