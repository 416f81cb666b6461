//! Read buffers, pending queues and parsing scratch of this worker's idle sessions, handed to
//! the next session that has bytes to read or a request to queue. A session with nothing
//! pending gives them back, so idle clients hold none, and a client that goes idle after every
//! reply (`-P 1`, or a pipeline fully answered) reuses them instead of allocating per request.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::thread::LocalKey;

use bytes::{Bytes, BytesMut};
use redvoy_resp::{Decoder, DecoderMode, Limits};

use crate::pending::Slot;

/// Buffers (and queues) kept per worker: enough for the clients that are busy at once on a worker;
/// beyond that a buffer is freed (at most 64 × 16 KiB per worker).
const KEPT: usize = 64;
/// A queue that grew beyond this many slots (a deep pipeline) is freed, not kept.
const KEPT_QUEUE_CAPACITY: usize = 64;
/// Argument slots and reply-buffer bytes a kept scratch may hold on to.
const KEPT_ARGS: usize = 16;
const KEPT_OUTPUT: usize = 16 * 1024;

/// What a session needs only while it has work: its request decoder (at a frame boundary when
/// given back), the argument vector requests are decoded into, and the buffer replies are
/// encoded into.
pub(crate) struct Scratch {
    pub(crate) decoder: Decoder,
    pub(crate) args: Vec<Bytes>,
    pub(crate) output: BytesMut,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            decoder: Decoder::new(DecoderMode::Request, Limits::default()),
            args: Vec::new(),
            output: BytesMut::new(),
        }
    }
}

thread_local! {
    static SPARE_BUFFERS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SPARE_QUEUES: RefCell<Vec<VecDeque<Slot>>> = const { RefCell::new(Vec::new()) };
    // Boxes, as sessions hold them: handing one over moves a pointer, not the decoder.
    #[allow(clippy::vec_box)]
    static SPARE_SCRATCH: RefCell<Vec<Box<Scratch>>> = const { RefCell::new(Vec::new()) };
}

/// A decoder, argument vector and reply buffer, from an idle session when there is one.
pub(crate) fn take_scratch() -> Box<Scratch> {
    take(&SPARE_SCRATCH)
}

/// Keeps an idle session's scratch (its decoder between frames, its vector and buffer empty)
/// for the next busy session; what grew large is freed instead.
pub(crate) fn give_back_scratch(mut scratch: Box<Scratch>) {
    debug_assert!(scratch.args.is_empty() && scratch.output.is_empty());
    if scratch.args.capacity() > KEPT_ARGS {
        scratch.args = Vec::new();
    }
    if scratch.output.capacity() > KEPT_OUTPUT {
        scratch.output = BytesMut::new();
    }
    keep(&SPARE_SCRATCH, scratch);
}

/// An empty pending queue, with room from an earlier session when there is one.
pub(crate) fn take_queue() -> VecDeque<Slot> {
    take(&SPARE_QUEUES)
}

/// Keeps an idle session's empty queue for the next session that queues a request.
pub(crate) fn give_back_queue(queue: VecDeque<Slot>) {
    if queue.is_empty() && queue.capacity() > 0 && queue.capacity() <= KEPT_QUEUE_CAPACITY {
        keep(&SPARE_QUEUES, queue);
    }
}

/// A spare read buffer, or an empty one (allocated by the read's `reserve`).
pub(crate) fn take_buffer() -> BytesMut {
    take(&SPARE_BUFFERS)
}

/// Keeps an empty buffer for the next reader. A buffer whose bytes are still referenced by
/// a request in flight is kept too: its next `reserve` allocates afresh only if they are.
pub(crate) fn give_back_buffer(buffer: BytesMut) {
    debug_assert!(buffer.is_empty());
    keep(&SPARE_BUFFERS, buffer);
}

fn take<T: Default>(pool: &'static LocalKey<RefCell<Vec<T>>>) -> T {
    pool.with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default()
}

fn keep<T>(pool: &'static LocalKey<RefCell<Vec<T>>>, item: T) {
    pool.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(item);
        }
    });
}
