//! The splitter and router without sockets, for the `splitter_router` fuzz target (built only
//! with the `fuzzing` feature). A session decodes a client's bytes as its connection does and
//! dispatches every request; each request the splitter sends upstream gets the reply the
//! caller chooses (MOVED/ASK and CLUSTERDOWN included, so redirection runs too) or fails as a
//! dead connection fails; then the client's replies are taken from the queue as the
//! connection writes them. Upstream connections are never opened: their tasks are spawned on
//! a `LocalSet` that never runs.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redvoy_config::model;
use redvoy_resp::{Command, Decoder, DecoderMode, Frame, Limits};
use redvoy_runtime::Runtime;
use redvoy_stats::Store;
use redvoy_upstream::ClusterManager;

use crate::client::UpstreamClient;
use crate::clock;
use crate::filter::FilterConfig;
use crate::listener::worker_filter;
use crate::session::{drain, MAX_PENDING_REQUESTS};
use crate::session_state::{ClientInfo, Session};

/// Upper bound on reply rounds: a redirection creates a new upstream request, which a MOVED
/// reply may redirect again (up to the hop limit).
const REPLY_ROUNDS: usize = 16;

/// What one run produced, for the fuzz target's checks.
#[derive(Debug, Default)]
pub struct Run {
    /// Requests the splitter took (each owes the client one reply).
    pub dispatched: u64,
    /// The bytes the client would read.
    pub output: Vec<u8>,
    /// A reply closed the connection (QUIT), or the client sent bytes that are not RESP.
    pub closed: bool,
    /// Requests still waiting upstream when the run stopped (out of reply rounds).
    pub unanswered: usize,
    /// How much `downstream_rq_active` moved: zero once every request was answered.
    pub rq_active: i64,
}

/// The names of every command the splitter knows, for building requests.
pub fn command_names() -> Vec<&'static str> {
    crate::supported_commands::all()
        .iter()
        .map(|(name, _)| *name)
        .collect()
}

/// Every redis_proxy filter of a bootstrap, compiled against its clusters.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    filters: Vec<Arc<FilterConfig>>,
    _clusters: ClusterManager,
}

impl Harness {
    /// `None` when the bootstrap builds no redis_proxy filter.
    pub fn new(bootstrap: &model::Bootstrap) -> Option<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let store = Store::with_config(&bootstrap.stats_config).ok()?;
        let layers = Runtime::new(Vec::new(), &store);
        let secrets = redvoy_tls::SecretManager::new(&bootstrap.secrets);
        let clusters = runtime
            .block_on(ClusterManager::without_dns(
                &bootstrap.clusters,
                &store,
                secrets,
            ))
            .ok()?;
        let mut filters = Vec::new();
        for listener in &bootstrap.listeners {
            for chain in &listener.filter_chains {
                if let model::NetworkFilter::RedisProxy(rp) = &chain.filter {
                    let config = FilterConfig::new(
                        rp,
                        &clusters,
                        &store,
                        &layers,
                        listener.per_connection_buffer_limit_bytes,
                    )
                    .ok()?;
                    filters.push(Arc::new(config));
                }
            }
        }
        (!filters.is_empty()).then_some(Self {
            runtime,
            filters,
            _clusters: clusters,
        })
    }

    pub fn filters(&self) -> usize {
        self.filters.len()
    }

    /// One client session on filter `which`: `input` is what the client sends; `reply` gives
    /// the bytes of the next upstream reply (`None`: the connection fails).
    pub fn run(&self, which: usize, input: &[u8], reply: &mut dyn FnMut() -> Option<Bytes>) -> Run {
        let _runtime = self.runtime.enter();
        let local = tokio::task::LocalSet::new();
        let _local = local.enter();
        clock::refresh();
        let config = Arc::clone(&self.filters[which % self.filters.len()]);
        let filter = Rc::new(worker_filter(config));
        let mut session = Session::new(Rc::clone(&filter), ClientInfo::default());
        let mut run = Run::default();
        let active = &filter.config.stats.downstream_rq_active;
        let active_before = active.value() as i64;
        let mut decoder = Decoder::new(DecoderMode::Request, Limits::default());
        let mut buffer = BytesMut::from(input);
        let mut args: Vec<Bytes> = Vec::new();
        while !session.stop_reading
            && session.shared.queue.borrow().slots.len() < MAX_PENDING_REQUESTS
        {
            match decoder.decode_command(&mut buffer, &mut args) {
                Ok(Some(Command::Args { raw, verbatim })) => {
                    session.on_command(&raw, &args, verbatim);
                    args.clear();
                }
                Ok(Some(Command::Other(frame))) => session.on_request(frame),
                Ok(None) => break,
                Err(_) => {
                    run.closed = true;
                    break;
                }
            }
        }
        run.dispatched = session.next_seq();
        for _ in 0..REPLY_ROUNDS {
            let clients = upstream_clients(&filter, &session);
            let mut answered = false;
            for client in clients {
                while client.has_pending() {
                    answered = true;
                    match reply().and_then(decode_one) {
                        Some(frame) => {
                            client.answer(frame);
                        }
                        None => client.fail_pending(),
                    }
                }
            }
            if !answered {
                break;
            }
        }
        run.unanswered = session.shared.queue.borrow().waiting;
        // Delay faults are due by then.
        let later = clock::now() + Duration::from_secs(3600);
        let mut output = BytesMut::new();
        loop {
            let mut direct = None;
            let before = output.len();
            drain(&session, later, &mut output, &mut direct, &mut run.closed);
            if let Some(bytes) = direct {
                output.extend_from_slice(&bytes);
            }
            if output.len() == before || run.closed {
                break;
            }
        }
        run.output = output.to_vec();
        run.rq_active = active.value() as i64 - active_before;
        session.tx.close();
        run
    }
}

/// Every upstream connection the session's requests may wait on: the pools' (hosts of the
/// cluster and hosts met through redirection) and the transaction's own.
fn upstream_clients(
    filter: &crate::session_state::WorkerFilter,
    session: &Session,
) -> Vec<Rc<UpstreamClient>> {
    let mut clients: Vec<Rc<UpstreamClient>> = filter
        .pools
        .iter()
        .flatten()
        .flat_map(|pool| pool.clients())
        .collect();
    clients.extend(session.tx.clients.iter().cloned());
    clients
}

/// The one complete reply in `bytes`, or `None` (which fails the request, as a connection
/// that sent garbage is closed).
fn decode_one(bytes: Bytes) -> Option<Frame> {
    let mut buffer = BytesMut::from(&bytes[..]);
    Decoder::new(DecoderMode::Reply, Limits::default())
        .decode(&mut buffer)
        .ok()
        .flatten()
}
