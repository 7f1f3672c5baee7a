//! Graceful shutdown: one trigger, a signal every connection watches, and a tracker that
//! tells [`serve`](crate::serve) when every connection task has finished.
//!
//! Order on shutdown (see `server.rs`): stop accepting, trigger the signal, every socket queues
//! a 1001 close, waits (bounded by `close_timeout`) for the client's reply, runs the consumer's
//! `disconnect` and discards its group memberships; `serve` returns when all are done or
//! `shutdown_timeout` elapsed.

use tokio::sync::{mpsc, watch};

/// Fires the [`ShutdownSignal`]s made with it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Tells every connection to close with 1001.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// Resolves when shutdown starts. Cheap to clone (one per connection).
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

/// A connected trigger/signal pair.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (trigger, mut signal) = herald_server::shutdown::channel();
/// assert!(!signal.is_triggered());
/// trigger.trigger();
/// signal.wait().await;
/// assert!(signal.is_triggered());
/// # });
/// ```
pub fn channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), ShutdownSignal(rx))
}

impl ShutdownSignal {
    /// True once shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown is triggered. If the trigger is dropped without firing, waits
    /// forever (a dropped trigger is not a shutdown request).
    ///
    /// # Cancellation safety
    /// Cancel-safe: it only observes a flag.
    pub async fn wait(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Held by every connection task; [`TaskTracker::wait_idle`] returns once all are dropped
/// (mini-redis's `shutdown_complete` channel pattern).
#[derive(Debug, Clone)]
pub(crate) struct TaskToken(
    #[expect(dead_code, reason = "held only for its drop")] mpsc::Sender<()>,
);

#[derive(Debug)]
pub(crate) struct TaskTracker {
    token: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<()>,
}

impl TaskTracker {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        TaskTracker {
            token: Some(tx),
            done: rx,
        }
    }

    pub(crate) fn token(&self) -> Option<TaskToken> {
        self.token.clone().map(TaskToken)
    }

    /// Drops the tracker's own sender and waits until every token is gone.
    pub(crate) async fn wait_idle(&mut self) {
        self.token = None;
        // recv() returns None once every Sender (token) has been dropped.
        let _ = self.done.recv().await;
    }
}
