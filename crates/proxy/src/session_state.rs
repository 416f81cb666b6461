//! The state of one client's session that the splitter (`splitter.rs`), transactions
//! (`transaction.rs`) and locally answered commands (`local_commands.rs`) read and change, and
//! the helpers that put a request's slot on the pending queue. The connection loop that owns
//! it is in `session.rs`; this file depends on none of them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redvoy_resp::{Resp3Shape, RespValue};

use crate::client::UpstreamClient;
use crate::clock;
use crate::filter::FilterConfig;
use crate::pending::{
    error_value, After, Completion, FragmentMerge, Outcome, Reply, SessionShared, Slot,
    NO_UPSTREAM_HOST,
};
use crate::pool::{ClusterPool, Placement};
use crate::request::Request;

/// Per-worker view of one filter: the compiled config and this worker's pools.
pub struct WorkerFilter {
    pub(crate) config: Arc<FilterConfig>,
    /// Aligned with `FilterConfig::pools`.
    pub(crate) pools: Vec<Option<Rc<ClusterPool>>>,
}

/// One client's session: its filter, pending queue, authentication, transaction and CLIENT
/// state.
pub(crate) struct Session {
    pub(crate) filter: Rc<WorkerFilter>,
    pub(crate) shared: Rc<SessionShared>,
    pub(crate) authenticated: bool,
    pub(crate) tx: Transaction,
    /// QUIT seen or protocol error: read nothing more.
    pub(crate) stop_reading: bool,
    /// What CLIENT answers about this connection; never sent upstream.
    pub(crate) client: ClientInfo,
    /// The RESP3 shape of the request being dispatched (`None` for RESP2 clients); the
    /// slots it pushes carry it.
    pub(crate) resp3_shape: Cell<Option<Resp3Shape>>,
}

impl Session {
    pub(crate) fn new(filter: Rc<WorkerFilter>, client: ClientInfo) -> Self {
        let authenticated = filter.config.passwords.is_empty() && filter.config.username.is_none();
        Session {
            filter,
            shared: SessionShared::new(),
            authenticated,
            tx: Transaction::default(),
            stop_reading: false,
            client,
            resp3_shape: Cell::new(None),
        }
    }

    fn push_slot(&self, slot: Slot) -> u64 {
        let mut q = self.shared.queue.borrow_mut();
        if q.slots.capacity() == 0 {
            q.slots = crate::spare::take_queue();
        }
        let seq = q.head + q.slots.len() as u64;
        if slot.remaining > 0 {
            q.waiting += 1;
        }
        q.slots.push_back(slot);
        seq
    }

    /// A reply the proxy knows at once.
    pub(crate) fn push_ready(&self, reply: RespValue, command: Option<usize>, error: bool) {
        self.push_slot(Slot {
            merge: FragmentMerge::Single,
            remaining: 0,
            reply: Some(Reply::Value(reply)),
            error,
            command,
            started: clock::now(),
            delay: None,
            after: After::Nothing,
            resp3: self.resp3_shape.get(),
            exec_shapes: None,
            bytes: 0,
        });
    }

    pub(crate) fn push_waiting(
        &self,
        merge: FragmentMerge,
        fragments: u32,
        command: Option<usize>,
    ) -> u64 {
        self.push_slot(Slot {
            merge,
            remaining: fragments,
            reply: None,
            error: false,
            command,
            started: clock::now(),
            delay: None,
            after: After::Nothing,
            resp3: self.resp3_shape.get(),
            exec_shapes: None,
            bytes: 0,
        })
    }

    pub(crate) fn completion(&self, seq: u64, fragment: usize) -> Completion {
        Completion {
            session: Rc::clone(&self.shared),
            seq,
            fragment: fragment as u32,
        }
    }

    /// Completes a fragment without an upstream round trip (no route, no host).
    pub(crate) fn complete_now(&self, seq: u64, fragment: usize, outcome: Outcome) {
        self.shared.complete(seq, fragment as u32, outcome);
    }

    /// Changes the pending slot `seq`, if it is still queued.
    pub(crate) fn with_slot(&self, seq: u64, change: impl FnOnce(&mut Slot)) {
        let mut q = self.shared.queue.borrow_mut();
        if let Some(index) = seq.checked_sub(q.head) {
            if let Some(slot) = q.slots.get_mut(index as usize) {
                change(slot);
            }
        }
    }

    pub(crate) fn set_delay(&self, seq: u64, delay: Duration) {
        self.with_slot(seq, |slot| slot.delay = Some(delay));
    }

    pub(crate) fn next_seq(&self) -> u64 {
        let q = self.shared.queue.borrow();
        q.head + q.slots.len() as u64
    }

    pub(crate) fn wrong_arity(&self, r: &Request<'_>) {
        let text = format!(
            "wrong number of arguments for '{}' command",
            String::from_utf8_lossy(&r.args[0])
        );
        self.push_ready(error_value(&text), r.stats, true);
    }

    pub(crate) fn no_host(&self, r: &Request<'_>) {
        self.push_ready(error_value(NO_UPSTREAM_HOST), r.stats, true);
    }

    pub(crate) fn pool(&self, index: usize) -> Option<&ClusterPool> {
        self.filter.pools.get(index)?.as_deref()
    }
}

/// Per-connection state Redis keeps for a client (CLIENT SETNAME/SETINFO, HELLO's protocol).
/// It lives in the session because upstream connections are shared: sending it upstream
/// would change every client's connection.
#[derive(Default)]
pub(crate) struct ClientInfo {
    pub(crate) id: u64,
    pub(crate) peer: Option<std::net::SocketAddr>,
    pub(crate) local: Option<std::net::SocketAddr>,
    /// CLIENT SETNAME / SETINFO: boxed, and only once a client sets one, as most never do and
    /// every idle connection would carry the room.
    pub(crate) names: Option<Box<ClientNames>>,
    /// RESP version negotiated with HELLO (2 until `HELLO 3`).
    pub(crate) resp: u8,
}

/// The names a client gives itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientNames {
    pub(crate) name: Option<Bytes>,
    pub(crate) lib_name: Option<Bytes>,
    pub(crate) lib_ver: Option<Bytes>,
}

impl ClientInfo {
    pub(crate) fn names(&self) -> &ClientNames {
        static NONE: ClientNames = ClientNames {
            name: None,
            lib_name: None,
            lib_ver: None,
        };
        self.names.as_deref().unwrap_or(&NONE)
    }

    pub(crate) fn names_mut(&mut self) -> &mut ClientNames {
        self.names.get_or_insert_with(Box::default)
    }
}

/// A client's transaction: WATCH, MULTI, the queued commands and EXEC/DISCARD all run on
/// connections dedicated to this client, so Redis's promises hold (a concurrent write to a
/// watched key makes EXEC return null). Envoy 1.40 sends WATCH on the shared connection and
/// the transaction on a dedicated one, so WATCH guards nothing.
#[derive(Default)]
pub(crate) struct Transaction {
    /// MULTI seen, EXEC/DISCARD not yet.
    pub(crate) active: bool,
    /// A command was refused while queuing: EXEC answers EXECABORT and commits nothing.
    pub(crate) aborted: bool,
    /// Dedicated connections: the route's pool first, then one per mirror.
    pub(crate) clients: Vec<Rc<UpstreamClient>>,
    /// The rest, only while a transaction runs: every idle connection would carry the room.
    pub(crate) detail: Option<Box<TransactionDetail>>,
}

#[derive(Default)]
pub(crate) struct TransactionDetail {
    /// Where the transaction runs (route pool, slot or host), from its first key.
    pub(crate) placement: Option<(usize, Placement)>,
    /// For each entry of `clients` after the first: mirrors skip reads when set.
    pub(crate) mirror_excludes_reads: Vec<bool>,
    /// RESP3 clients: the reply shape of each command queued upstream, for EXEC's reply.
    pub(crate) queued_shapes: Vec<Resp3Shape>,
}

impl Transaction {
    pub(crate) fn close(&mut self) {
        for c in self.clients.drain(..) {
            c.close_when_idle();
        }
        self.detail = None;
        self.active = false;
        self.aborted = false;
    }

    pub(crate) fn detail(&mut self) -> &mut TransactionDetail {
        self.detail.get_or_insert_with(Box::default)
    }

    pub(crate) fn placement(&self) -> Option<(usize, Placement)> {
        self.detail.as_ref().and_then(|d| d.placement)
    }

    pub(crate) fn mirror_excludes_reads(&self) -> &[bool] {
        self.detail
            .as_ref()
            .map_or(&[], |d| d.mirror_excludes_reads.as_slice())
    }
}
