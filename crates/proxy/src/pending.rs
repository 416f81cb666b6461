//! The in-order pending queue (one slot per decoded request, replies written only from its
//! front) and how the replies of a request's fragments merge into one reply.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redvoy_resp::{Frame, Resp3Shape, RespValue};
use tokio::sync::Notify;

use crate::cluster_scope::{self, Aggregation};

/// Error replies Envoy's redis_proxy makes up, byte for byte.
pub(crate) const NO_UPSTREAM_HOST: &str = "no upstream host";
pub(crate) const UPSTREAM_FAILURE: &str = "upstream failure";
pub(crate) const INVALID_REQUEST: &str = "invalid request";
pub(crate) const NOAUTH: &str = "NOAUTH Authentication required.";
pub(crate) const NOPROTO: &str = "NOPROTO unsupported protocol version";

/// Why an upstream request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamFailure {
    /// Connect failure, timeout, or the connection closed with the request pending.
    Failure,
    /// Refused by an enforced circuit-breaker limit (beyond Envoy), never sent.
    Overflow(redvoy_upstream::Overflow),
}

pub(crate) type UpstreamResult = Result<Frame, UpstreamFailure>;

/// How one upstream reply reached a request (or why none did).
pub(crate) enum Outcome {
    Reply(Frame),
    Failure,
    NoHost,
    /// Refused by an enforced circuit-breaker limit: the error text says which.
    Overflow(&'static str),
}

impl From<UpstreamResult> for Outcome {
    fn from(r: UpstreamResult) -> Self {
        match r {
            Ok(frame) => Outcome::Reply(frame),
            Err(UpstreamFailure::Failure) => Outcome::Failure,
            Err(UpstreamFailure::Overflow(o)) => Outcome::Overflow(o.message()),
        }
    }
}

/// Where an upstream reply must go: a fragment of one pending request of one session.
pub(crate) struct Completion {
    pub(crate) session: Rc<SessionShared>,
    pub(crate) seq: u64,
    pub(crate) fragment: u32,
}

impl Completion {
    pub(crate) fn complete(self, result: UpstreamResult) {
        self.session
            .complete(self.seq, self.fragment, result.into());
    }
}

pub(crate) enum Reply {
    /// Upstream bytes forwarded as received.
    Raw(Bytes),
    Value(RespValue),
}

/// How the fragment replies of one request are combined.
pub(crate) enum FragmentMerge {
    Single,
    Mget(Vec<RespValue>),
    Mset {
        errors: u32,
    },
    Sum {
        sum: i64,
        errors: u32,
    },
    /// One page of a SCAN over every host: the reply's cursor becomes a composite cursor.
    Scan {
        host: usize,
        hosts: usize,
    },
    ClusterScope(Aggregation, Vec<RespValue>),
}

/// What to do after a reply has been written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Nothing,
    /// QUIT: close once everything before has been written.
    Close,
}

pub(crate) struct Slot {
    pub(crate) merge: FragmentMerge,
    pub(crate) remaining: u32,
    pub(crate) reply: Option<Reply>,
    /// A proxy-detected error (counts `command.<cmd>.error` instead of `success`).
    pub(crate) error: bool,
    pub(crate) command: Option<usize>,
    pub(crate) started: Instant,
    pub(crate) delay: Option<Duration>,
    pub(crate) after: After,
    /// `Some` for a client that negotiated RESP3: how the reply is converted.
    pub(crate) resp3: Option<Resp3Shape>,
    /// A RESP3 client's EXEC: the shape of each element of the reply.
    pub(crate) exec_shapes: Option<Box<[Resp3Shape]>>,
    /// Upstream reply bytes this slot holds (all fragments'), in `PendingQueue::held_bytes`.
    pub(crate) bytes: usize,
}

#[derive(Default)]
pub(crate) struct PendingQueue {
    /// Sequence number of `slots[0]`.
    pub(crate) head: u64,
    pub(crate) slots: VecDeque<Slot>,
    /// Upstream reply bytes held by the slots, not yet taken for writing: what a client that
    /// does not read makes the proxy keep.
    pub(crate) held_bytes: usize,
    /// What one more upstream reply to this client is expected to weigh, for the buffer limit
    /// (see `session.rs`): the session starts it at half the limit; a completed request
    /// raises it to its reply's size at once, or halves it towards a smaller one; a request
    /// that completed without upstream bytes (refused, failed, timed out) halves it too, as it
    /// brought nothing large: requests behind a dead host go in widening waves instead of two
    /// at a time.
    pub(crate) reply_estimate: usize,
    /// Slots still waiting for upstream replies (the ones the estimate applies to; replies the
    /// proxy makes up itself are ready at once).
    pub(crate) waiting: usize,
}

impl PendingQueue {
    fn learn_reply_size(&mut self, bytes: usize) {
        let e = &mut self.reply_estimate;
        *e = if bytes >= *e {
            bytes
        } else {
            bytes.max(*e / 2)
        };
    }
}

impl PendingQueue {
    /// Takes the front slot if its reply is ready and due. Otherwise returns when a delayed
    /// front reply will be due (`None`: the front waits for upstream, or the queue is empty).
    pub(crate) fn pop_ready(&mut self, now: Instant) -> Result<Slot, Option<Instant>> {
        let front = self.slots.front().ok_or(None)?;
        if front.reply.is_none() {
            return Err(None);
        }
        if let Some(delay) = front.delay {
            let due = front.started + delay;
            if due > now {
                return Err(Some(due));
            }
        }
        let slot = self.slots.pop_front().ok_or(None)?;
        self.head += 1;
        self.held_bytes = self.held_bytes.saturating_sub(slot.bytes);
        Ok(slot)
    }
}

/// The part of a session that upstream clients reach through `Completion`s.
pub(crate) struct SessionShared {
    pub(crate) queue: RefCell<PendingQueue>,
    /// Wakes the session: a reply is ready, or its listener's drain time is over.
    pub(crate) notify: Notify,
    pub(crate) closed: Cell<bool>,
}

impl SessionShared {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self {
            queue: RefCell::new(PendingQueue::default()),
            notify: Notify::new(),
            closed: Cell::new(false),
        })
    }

    pub(crate) fn complete(&self, seq: u64, fragment: u32, outcome: Outcome) {
        if self.closed.get() {
            return;
        }
        let mut guard = self.queue.borrow_mut();
        let Some(index) = seq.checked_sub(guard.head) else {
            return;
        };
        let bytes = match &outcome {
            Outcome::Reply(frame) => frame.raw.len(),
            _ => 0,
        };
        let queue = &mut *guard;
        let Some(slot) = queue.slots.get_mut(index as usize) else {
            return;
        };
        slot.bytes += bytes;
        queue.held_bytes += bytes;
        apply(slot, fragment as usize, outcome);
        slot.remaining = slot.remaining.saturating_sub(1);
        if slot.remaining == 0 {
            finish(slot);
            let bytes = slot.bytes;
            queue.learn_reply_size(bytes);
            queue.waiting = queue.waiting.saturating_sub(1);
            drop(guard);
            // Replies are written from the front only: a later slot completing cannot let the
            // session write anything, so it is not woken for it (it will be once the front
            // completes, and then writes every ready reply in one go).
            if index == 0 {
                self.notify.notify_one();
            }
        }
    }
}

/// An error reply with `text`.
pub(crate) fn error_value(text: &str) -> RespValue {
    RespValue::Error(Bytes::copy_from_slice(text.as_bytes()))
}

/// Hosts a composite SCAN cursor can address: the host index is the cursor's remainder.
pub(crate) const SCAN_HOSTS: u64 = 1024;

/// A composite SCAN cursor `host_cursor * SCAN_HOSTS + host` as (host, host_cursor). Cursor 0
/// is host 0's start.
pub(crate) fn split_scan_cursor(cursor: &[u8]) -> Option<(usize, u64)> {
    let n: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    Some(((n % SCAN_HOSTS) as usize, n / SCAN_HOSTS))
}

/// Turns host `host`'s SCAN reply into the client's page: the host's cursor becomes composite,
/// and a finished host hands over to the next one (cursor 0 once the last host is done).
pub(crate) fn scan_page(page: RespValue, host: usize, hosts: usize) -> RespValue {
    let RespValue::Array(mut items) = page else {
        return match page {
            e @ RespValue::Error(_) => e,
            _ => error_value("upstream protocol error"),
        };
    };
    let host_cursor = match items.first().and_then(RespValue::as_bulk) {
        Some(c) if items.len() == 2 => std::str::from_utf8(c)
            .ok()
            .and_then(|c| c.parse::<u64>().ok()),
        _ => None,
    };
    let Some(host_cursor) = host_cursor else {
        return error_value("upstream protocol error");
    };
    let next = if host_cursor != 0 {
        host_cursor
            .checked_mul(SCAN_HOSTS)
            .and_then(|c| c.checked_add(host as u64))
    } else if host + 1 < hosts {
        Some(host as u64 + 1)
    } else {
        Some(0)
    };
    let Some(next) = next else {
        return error_value("ERR cursor of an upstream host too large for the proxy's SCAN");
    };
    items[0] = RespValue::Bulk(Bytes::from(next.to_string()));
    RespValue::Array(items)
}

pub(crate) fn apply(slot: &mut Slot, fragment: usize, outcome: Outcome) {
    match &mut slot.merge {
        FragmentMerge::Single => {
            slot.reply = Some(match outcome {
                // A RESP3 client's reply is re-encoded from the value, so only RESP2 ones
                // forward the upstream bytes.
                Outcome::Reply(frame) if frame.verbatim && slot.resp3.is_none() => {
                    Reply::Raw(frame.raw)
                }
                Outcome::Reply(frame) => Reply::Value(frame.value),
                Outcome::Failure => {
                    slot.error = true;
                    Reply::Value(error_value(UPSTREAM_FAILURE))
                }
                Outcome::NoHost => {
                    slot.error = true;
                    Reply::Value(error_value(NO_UPSTREAM_HOST))
                }
                Outcome::Overflow(text) => {
                    slot.error = true;
                    Reply::Value(error_value(text))
                }
            });
        }
        FragmentMerge::Mget(values) => {
            let value = match outcome {
                Outcome::Reply(frame) => match frame.value {
                    v @ (RespValue::Bulk(_) | RespValue::Null) => v,
                    e @ RespValue::Error(_) => {
                        slot.error = true;
                        e
                    }
                    _ => {
                        slot.error = true;
                        error_value("upstream protocol error")
                    }
                },
                Outcome::Failure => {
                    slot.error = true;
                    error_value(UPSTREAM_FAILURE)
                }
                Outcome::NoHost => {
                    slot.error = true;
                    error_value(NO_UPSTREAM_HOST)
                }
                Outcome::Overflow(text) => {
                    slot.error = true;
                    error_value(text)
                }
            };
            if let Some(v) = values.get_mut(fragment) {
                *v = value;
            }
        }
        FragmentMerge::Mset { errors } => match outcome {
            Outcome::Reply(Frame {
                value: RespValue::Simple(s),
                ..
            }) if &s[..] == b"OK" => {}
            _ => *errors += 1,
        },
        FragmentMerge::Sum { sum, errors } => match outcome {
            Outcome::Reply(Frame {
                value: RespValue::Integer(n),
                ..
            }) => *sum = sum.wrapping_add(n),
            _ => *errors += 1,
        },
        FragmentMerge::Scan { .. } => {
            slot.reply = Some(Reply::Value(match outcome {
                Outcome::Reply(frame) => frame.value,
                Outcome::Failure => error_value(UPSTREAM_FAILURE),
                Outcome::NoHost => error_value(NO_UPSTREAM_HOST),
                Outcome::Overflow(text) => error_value(text),
            }));
        }
        FragmentMerge::ClusterScope(_, values) => {
            let value = match outcome {
                Outcome::Reply(frame) => frame.value,
                Outcome::Failure => error_value(UPSTREAM_FAILURE),
                Outcome::NoHost => error_value(NO_UPSTREAM_HOST),
                Outcome::Overflow(text) => error_value(text),
            };
            if let Some(v) = values.get_mut(fragment) {
                *v = value;
            }
        }
    }
}

/// Builds the final reply once every fragment is in.
pub(crate) fn finish(slot: &mut Slot) {
    let merged = match std::mem::replace(&mut slot.merge, FragmentMerge::Single) {
        FragmentMerge::Single => return,
        FragmentMerge::Mget(values) => RespValue::Array(values),
        FragmentMerge::Mset { errors: 0 } => RespValue::Simple(Bytes::from_static(b"OK")),
        FragmentMerge::Sum { sum, errors: 0 } => RespValue::Integer(sum),
        FragmentMerge::Mset { errors } | FragmentMerge::Sum { errors, .. } => {
            slot.error = true;
            error_value(&format!("finished with {errors} error(s)"))
        }
        FragmentMerge::Scan { host, hosts } => {
            let page = match slot.reply.take() {
                Some(Reply::Value(v)) => v,
                _ => error_value(UPSTREAM_FAILURE),
            };
            let page = scan_page(page, host, hosts);
            if matches!(page, RespValue::Error(_)) {
                slot.error = true;
            }
            page
        }
        FragmentMerge::ClusterScope(agg, values) => {
            let v = cluster_scope::aggregate(&agg, values);
            if matches!(v, RespValue::Error(_)) {
                slot.error = true;
            }
            v
        }
    };
    slot.reply = Some(Reply::Value(merged));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use redvoy_resp::Frame;

    fn waiting(merge: FragmentMerge, fragments: u32) -> Slot {
        Slot {
            merge,
            remaining: fragments,
            reply: None,
            error: false,
            command: None,
            started: Instant::now(),
            delay: None,
            after: After::Nothing,
            resp3: None,
            exec_shapes: None,
            bytes: 0,
        }
    }

    /// The expected reply size for the buffer limit: up at once, down by halves (also after a
    /// request that brought no upstream bytes).
    #[test]
    fn reply_size_estimate() {
        let mut q = PendingQueue {
            reply_estimate: 512 * 1024,
            ..PendingQueue::default()
        };
        q.learn_reply_size(4 << 20);
        assert_eq!(q.reply_estimate, 4 << 20);
        q.learn_reply_size(10);
        assert_eq!(q.reply_estimate, 2 << 20);
        for _ in 0..30 {
            q.learn_reply_size(10);
        }
        assert_eq!(q.reply_estimate, 10);
        q.learn_reply_size(0);
        assert_eq!(q.reply_estimate, 5);
        q.learn_reply_size(4 << 20);
        q.learn_reply_size(0);
        assert_eq!(q.reply_estimate, 2 << 20);
    }

    #[test]
    fn composite_scan_cursor() {
        assert_eq!(split_scan_cursor(b"0"), Some((0, 0)));
        assert_eq!(split_scan_cursor(b"2050"), Some((2, 2)));
        assert_eq!(split_scan_cursor(b"x"), None);
        let page = |cursor: &str| {
            RespValue::Array(vec![
                RespValue::Bulk(Bytes::copy_from_slice(cursor.as_bytes())),
                RespValue::Array(vec![]),
            ])
        };
        let cursor_of = |v: RespValue| match v {
            RespValue::Array(items) => items[0].clone(),
            other => other,
        };
        let bulk = |s: &'static str| RespValue::Bulk(Bytes::from_static(s.as_bytes()));
        // A host with more to scan keeps its index; a finished one hands over; the last ends.
        assert_eq!(cursor_of(scan_page(page("7"), 1, 3)), bulk("7169"));
        assert_eq!(cursor_of(scan_page(page("0"), 1, 3)), bulk("2"));
        assert_eq!(cursor_of(scan_page(page("0"), 2, 3)), bulk("0"));
        assert_eq!(
            scan_page(page(&u64::MAX.to_string()), 0, 3),
            error_value("ERR cursor of an upstream host too large for the proxy's SCAN")
        );
        assert_eq!(
            scan_page(RespValue::Integer(1), 0, 1),
            error_value("upstream protocol error")
        );
    }

    fn reply_frame(v: RespValue) -> Outcome {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        Outcome::Reply(Frame {
            raw: out.freeze(),
            value: v,
            verbatim: true,
        })
    }

    fn reply_bytes(slot: &Slot) -> Vec<u8> {
        let mut out = BytesMut::new();
        match &slot.reply {
            Some(Reply::Raw(b)) => out.extend_from_slice(b),
            Some(Reply::Value(v)) => v.encode(&mut out),
            None => {}
        }
        out.to_vec()
    }

    proptest! {
        /// Replies leave in request order whatever order upstreams complete them in, and MGET
        /// fragments land in key order.
        #[test]
        fn reply_order_survives_shuffled_completion(
            shapes in proptest::collection::vec(1u32..5, 1..40),
            seed in any::<u64>(),
        ) {
            let shared = SessionShared::new();
            let mut completions = Vec::new();
            for (seq, fragments) in shapes.iter().enumerate() {
                let merge = if *fragments == 1 {
                    FragmentMerge::Single
                } else {
                    FragmentMerge::Mget(vec![RespValue::Null; *fragments as usize])
                };
                shared.queue.borrow_mut().slots.push_back(waiting(merge, *fragments));
                for f in 0..*fragments {
                    completions.push((seq as u64, f));
                }
            }
            // Deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..completions.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                completions.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut delivered = Vec::new();
            for (seq, f) in completions {
                let payload = format!("{seq}:{f}");
                shared.complete(seq, f, reply_frame(RespValue::Bulk(Bytes::from(payload))));
                let mut q = shared.queue.borrow_mut();
                while let Ok(slot) = q.pop_ready(Instant::now()) {
                    delivered.push(reply_bytes(&slot));
                }
            }
            prop_assert_eq!(delivered.len(), shapes.len());
            for (seq, (bytes, fragments)) in delivered.iter().zip(&shapes).enumerate() {
                let expected = if *fragments == 1 {
                    RespValue::Bulk(Bytes::from(format!("{seq}:0")))
                } else {
                    RespValue::Array(
                        (0..*fragments)
                            .map(|f| RespValue::Bulk(Bytes::from(format!("{seq}:{f}"))))
                            .collect(),
                    )
                };
                let mut out = BytesMut::new();
                expected.encode(&mut out);
                prop_assert_eq!(bytes, &out.to_vec());
            }
        }
    }

    #[test]
    fn mset_and_sum_merge() {
        let mut slot = waiting(FragmentMerge::Mset { errors: 0 }, 2);
        apply(
            &mut slot,
            0,
            reply_frame(RespValue::Simple(Bytes::from_static(b"OK"))),
        );
        apply(&mut slot, 1, Outcome::NoHost);
        finish(&mut slot);
        assert_eq!(reply_bytes(&slot), b"-finished with 1 error(s)\r\n");
        assert!(slot.error);

        let mut slot = waiting(FragmentMerge::Sum { sum: 0, errors: 0 }, 2);
        apply(&mut slot, 0, reply_frame(RespValue::Integer(2)));
        apply(&mut slot, 1, reply_frame(RespValue::Integer(3)));
        finish(&mut slot);
        assert_eq!(reply_bytes(&slot), b":5\r\n");
    }

    #[test]
    fn mget_fragment_errors() {
        let mut slot = waiting(FragmentMerge::Mget(vec![RespValue::Null; 3]), 3);
        apply(&mut slot, 0, reply_frame(RespValue::Integer(1)));
        apply(&mut slot, 1, Outcome::Failure);
        apply(&mut slot, 2, reply_frame(RespValue::Null));
        finish(&mut slot);
        assert_eq!(
            reply_bytes(&slot),
            b"*3\r\n-upstream protocol error\r\n-upstream failure\r\n$-1\r\n"
        );
    }
}
