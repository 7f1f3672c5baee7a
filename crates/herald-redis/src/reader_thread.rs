//! The thread the layer's readers run on.
//!
//! A reader's job is to keep its process key drained: channels_redis senders drop a message
//! (silently, from Python) once a key holds `capacity` entries, and one herald process key
//! carries every local channel's messages. On the application's runtime, a reader woken by
//! Redis queues behind whatever else is runnable — during a fan-out, a thousand socket tasks
//! each writing a frame — and a few milliseconds of that at 20k messages/s fills a key of 100.
//! On its own OS thread (a current-thread runtime), the reader is scheduled by the kernel as
//! soon as its reply arrives, however busy the application's workers are.
//!
//! What the readers do there is short: pop a batch, decode, push into the local buffers (whose
//! receivers, on the application's runtime, are woken across runtimes).

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A current-thread runtime on a dedicated thread. Dropping it stops the thread, which
/// cancels every task still on it.
#[derive(Debug)]
pub(crate) struct ReaderThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl ReaderThread {
    /// Starts the thread.
    ///
    /// # Errors
    /// The OS error if the runtime or the thread cannot be created.
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("herald-redis-reader".to_owned())
            .spawn(move || {
                // Runs until the layer drops `stop`; dropping the runtime here (outside any
                // async context) then cancels the readers still on it.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(ReaderThread {
            handle,
            _stop: stop,
        })
    }

    /// Spawns `task` on the reader thread.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn tasks_run_on_their_own_thread_and_stop_with_it() {
        let thread = ReaderThread::start().unwrap();
        let (tx, rx) = oneshot::channel();
        let caller = std::thread::current().id();
        thread.spawn(async move {
            let _ = tx.send(std::thread::current().id());
        });
        let ran_on = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(ran_on, caller);

        // A task still pending when the thread stops is cancelled (its state dropped).
        let (held, gone) = oneshot::channel::<()>();
        let task = thread.spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(thread);
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap_err()
                .is_cancelled()
        );
    }
}
