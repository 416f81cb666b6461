//! The data path's clock: one reading per task poll instead of one per use.
//!
//! A request used to read the monotonic clock four or five times (slot start, upstream send,
//! reply, op_timeout re-arm, latency); at `-P 16` that was 7 % of the worker's time. Inside a
//! poll of a task wrapped in [`Fresh`] (sessions, upstream connections) the first [`now`]
//! reads the clock and later calls in the same poll reuse it: the requests one wake-up handles
//! share a timestamp, as they share the wake-up. Outside such a poll [`now`] reads the clock
//! every time, so no caller can ever see a time from an earlier poll.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// Whether a [`Fresh`] poll is running, and the time read in it so far.
#[derive(Clone, Copy)]
enum State {
    Outside,
    Polling(Option<Instant>),
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Outside) };
}

/// The current time: the poll's timestamp inside a [`Fresh`] poll, else the clock.
pub(crate) fn now() -> Instant {
    STATE.with(|state| match state.get() {
        State::Outside => Instant::now(),
        State::Polling(Some(t)) => t,
        State::Polling(None) => {
            let t = Instant::now();
            state.set(State::Polling(Some(t)));
            t
        }
    })
}

/// Forgets the poll's timestamp: the next [`now`] reads the clock. Called where a task's loop
/// resumes after waiting, so one loop iteration shares one reading and a loop that runs again
/// in the same poll (a timer that was already due) sees the time move on.
pub(crate) fn refresh() {
    STATE.with(|state| {
        if let State::Polling(Some(_)) = state.get() {
            state.set(State::Polling(None));
        }
    });
}

/// Time since `earlier`, by [`now`].
pub(crate) fn elapsed(earlier: Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

pin_project_lite::pin_project! {
    /// A future whose every poll shares one clock reading (see the module documentation).
    pub(crate) struct Fresh<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Fresh<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for Fresh<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _restore = Restore(STATE.with(|state| state.replace(State::Polling(None))));
        self.project().inner.poll(cx)
    }
}

/// Puts back the state from before a [`Fresh`] poll when the poll ends, by return or by panic
/// (a panicking task must not leave the thread "inside a poll", caching for everyone after).
struct Restore(State);

impl Drop for Restore {
    fn drop(&mut self) {
        // A nested Fresh poll (one wrapped future awaiting another) hands the outer poll a
        // fresh reading, never one from before the inner poll.
        let outer = match self.0 {
            State::Outside => State::Outside,
            State::Polling(_) => State::Polling(None),
        };
        STATE.with(|state| state.set(outer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut f = std::pin::pin!(f);
        f.as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    fn outside() -> bool {
        matches!(STATE.with(Cell::get), State::Outside)
    }

    #[test]
    fn one_reading_per_poll_until_refreshed() {
        let Poll::Ready((a, b, c)) = poll_once(Fresh::new(async {
            let a = now();
            std::thread::sleep(std::time::Duration::from_millis(2));
            let b = now();
            refresh();
            (a, b, now())
        })) else {
            panic!("the future is ready at once");
        };
        assert_eq!(a, b, "one poll shares one reading");
        assert!(c > a, "refresh reads the clock again");
        assert!(outside(), "the poll's state does not outlive it");
    }

    #[test]
    fn a_panicking_poll_leaves_the_thread_outside() {
        let result = std::panic::catch_unwind(|| {
            poll_once(Fresh::new(async {
                now();
                panic!("the task fails");
            }))
        });
        assert!(result.is_err());
        assert!(
            outside(),
            "a panic must not leave readings cached for other code"
        );
        let a = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() > a, "outside a poll every call reads the clock");
    }
}
