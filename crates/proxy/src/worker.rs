//! Workers: `--concurrency` threads, each with its own single-threaded event loop, its own
//! listener sockets (SO_REUSEPORT) and its own upstream connections. Nothing on the data path is
//! shared between workers except immutable config and atomic stats.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::LocalSet;
use tracing::{debug, warn};

use crate::client::{ClientConfig, CommandStatsCache};
use crate::drain::ListenerControl;
use crate::filter::FilterConfig;
use crate::listener_stats::ListenerStats;
use crate::pool::ClusterPool;
use crate::session::{self, WorkerFilter};

/// Accept backlog of every listener socket.
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after an accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

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

/// A listener as one worker runs it.
pub struct WorkerListener {
    pub name: String,
    pub socket: std::net::TcpListener,
    pub filter: Arc<FilterConfig>,
    pub stats: Arc<ListenerStats>,
    pub control: Arc<ListenerControl>,
}

/// Runs one worker until `shutdown` becomes true. Blocks the calling thread.
pub fn run_worker(
    id: usize,
    listeners: Vec<WorkerListener>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        for listener in listeners {
            let socket = TcpListener::from_std(listener.socket)?;
            let filter = Rc::new(worker_filter(listener.filter));
            let name = listener.name;
            let control = listener.control;
            tokio::task::spawn_local(accept_loop(
                id,
                name,
                socket,
                filter,
                listener.stats,
                control,
            ));
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    })
}

fn worker_filter(config: Arc<FilterConfig>) -> WorkerFilter {
    let settings = &config.settings;
    let pools = config
        .pools
        .iter()
        .map(|spec| {
            let spec = spec.as_ref()?;
            let client_config = Rc::new(ClientConfig {
                connect_timeout: spec.connect_timeout,
                op_timeout: settings.op_timeout,
                prelude: spec.prelude.clone(),
                prelude_replies: spec.prelude_replies,
                max_buffer_size_before_flush: settings.max_buffer_size_before_flush as usize,
                buffer_flush_timeout: settings.buffer_flush_timeout,
                cluster_stats: spec.cluster.stats.clone(),
                upstream_rq_time: spec.upstream_rq_time.clone(),
                command_stats: spec
                    .command_stats
                    .as_ref()
                    .map(|(store, cluster)| CommandStatsCache::new(store.clone(), cluster)),
            });
            Some(ClusterPool::new(
                Arc::clone(&spec.cluster),
                client_config,
                settings.enable_hashtagging,
            ))
        })
        .collect();
    WorkerFilter { config, pools }
}

async fn accept_loop(
    worker: usize,
    name: String,
    socket: TcpListener,
    filter: Rc<WorkerFilter>,
    stats: Arc<ListenerStats>,
    control: Arc<ListenerControl>,
) {
    let mut stop = control.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => {
                debug!(worker, listener = %name, "listener stopped accepting");
                // Dropping the socket closes this worker's share of the port.
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!(worker, listener = %name, %peer, "accepted");
                let stats = Arc::clone(&stats);
                let filter = Rc::clone(&filter);
                let control = Arc::clone(&control);
                tokio::task::spawn_local(async move {
                    let opened = std::time::Instant::now();
                    let per_worker = stats.workers.get(worker);
                    stats.downstream_cx_total.inc();
                    stats.downstream_cx_active.inc();
                    stats.connections_accepted_per_socket_event.record(1);
                    if let Some(w) = per_worker {
                        w.downstream_cx_total.inc();
                        w.downstream_cx_active.inc();
                    }
                    session::run(stream, filter, control).await;
                    stats.downstream_cx_active.dec();
                    stats.downstream_cx_destroy.inc();
                    stats
                        .downstream_cx_length_ms
                        .record(opened.elapsed().as_millis() as u64);
                    if let Some(w) = per_worker {
                        w.downstream_cx_active.dec();
                    }
                });
            }
            Err(e) => {
                warn!(worker, listener = %name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
