//! Skips polling a source that has not been woken since it last said `Pending`.
//!
//! A connection's task wakes for one reason at a time (mostly a group message in its inbox),
//! but `select!` polls every branch on every wake-up. For an idle branch that is not free:
//! the socket read goes through tokio-tungstenite's waker proxies and the split halves'
//! lock, the layer receive and the shutdown wait each lock a `Notify`'s waiter list. In a
//! 300k frames/s broadcast profile those polls were about a third of the server's user time.
//!
//! A [`Gate`] hands its source a waker of its own. The source is polled again only after that
//! waker fired, or after it last returned `Ready` (it may have more ready without a new
//! wake-up, e.g. frames already in tungstenite's read buffer).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

#[derive(Debug, Default)]
struct Signal {
    /// The source may make progress: set by its waker and after a `Ready`.
    ready: AtomicBool,
    /// The task polling through the gate.
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One gated source of a task (see the module docs).
#[derive(Debug)]
pub(crate) struct Gate {
    signal: Arc<Signal>,
    waker: Waker,
}

impl Gate {
    /// A gate that lets the first poll through.
    pub(crate) fn new() -> Self {
        let signal = Arc::new(Signal {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&signal));
        Gate { signal, waker }
    }

    /// Polls the source with `poll` if it was woken (or `Ready`) since its last `Pending`;
    /// otherwise `Pending` without touching it. The source sees the gate's waker, which wakes
    /// the task in `cx`.
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered before the flag is read: a wake-up that lands after the swap below still
        // reaches this task.
        self.signal.task.register(cx.waker());
        if !self.signal.ready.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut gated = Context::from_waker(&self.waker);
        let out = poll(&mut gated);
        if out.is_ready() {
            self.signal.ready.store(true, Ordering::Release);
        }
        out
    }
}

/// A task waker for tests that counts its wake-ups.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct CountingWaker(std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl CountingWaker {
    /// A waker and the counter behind it.
    pub(crate) fn new() -> (Waker, Arc<CountingWaker>) {
        let count = Arc::new(CountingWaker::default());
        (Waker::from(Arc::clone(&count)), count)
    }

    /// Wake-ups so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    #[test]
    fn a_pending_source_is_polled_again_only_after_its_waker_fired() {
        let (task_waker, task) = CountingWaker::new();
        let mut cx = Context::from_waker(&task_waker);
        let gate = Gate::new();
        let polls = Cell::new(0);
        let source_waker: RefCell<Option<Waker>> = RefCell::new(None);
        let poll_source = |cx: &mut Context<'_>, ready: bool| {
            polls.set(polls.get() + 1);
            *source_waker.borrow_mut() = Some(cx.waker().clone());
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        };

        assert!(gate.poll(&mut cx, |cx| poll_source(cx, false)).is_pending());
        // Not woken: the source is not polled, however often the task is.
        assert!(gate.poll(&mut cx, |cx| poll_source(cx, true)).is_pending());
        assert!(gate.poll(&mut cx, |cx| poll_source(cx, true)).is_pending());
        assert_eq!(polls.get(), 1);
        assert_eq!(task.count(), 0);

        // The source's waker wakes the task and opens the gate.
        source_waker.take().unwrap().wake();
        assert_eq!(task.count(), 1);
        assert!(gate.poll(&mut cx, |cx| poll_source(cx, true)).is_ready());
        // After Ready it is polled again without a wake-up (it may have more).
        assert!(gate.poll(&mut cx, |cx| poll_source(cx, false)).is_pending());
        assert_eq!(polls.get(), 3);
        assert!(gate.poll(&mut cx, |cx| poll_source(cx, true)).is_pending());
        assert_eq!(polls.get(), 3);
    }
}
