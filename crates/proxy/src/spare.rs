//! Read buffers and pending queues of this worker's idle sessions, handed to the next session
//! that has bytes to read or a request to queue. A session with nothing pending gives both
//! back, so idle clients hold neither, and a client that goes idle after every reply (`-P 1`,
//! or a pipeline fully answered) reuses them instead of allocating per request.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::thread::LocalKey;

use bytes::BytesMut;

use crate::pending::Slot;

/// Buffers (and queues) kept per worker: enough for the clients that are busy at once on a worker;
/// beyond that a buffer is freed (at most 64 × 16 KiB per worker).
const KEPT: usize = 64;
/// A queue that grew beyond this many slots (a deep pipeline) is freed, not kept.
const KEPT_QUEUE_CAPACITY: usize = 64;

thread_local! {
    static SPARE_BUFFERS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SPARE_QUEUES: RefCell<Vec<VecDeque<Slot>>> = const { RefCell::new(Vec::new()) };
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
