//! Where layer operations run, and how their results reach asyncio.
//!
//! Every operation runs on one process-wide tokio runtime: a current-thread runtime driven
//! by its own thread (`herald-py-io`), started on first use. The Redis connections live there
//! too, not in any asyncio event loop, so a layer made in one loop works in the next, and
//! `async_to_sync(layer.group_send)` called again and again never meets "Event loop is
//! closed" (channels_redis keeps a connection pool per loop and must close it with the loop).
//! One thread, not a pool: an operation is an encode and one Redis round trip, and a hop
//! between worker threads would cost more than it saves on 1–2 cores (herald-redis measured
//! its sequential `group_send` at 9k/s on a 2-worker runtime against 16k/s on one thread).
//! herald-redis runs its readers on a thread of their own anyway.
//!
//! An async operation is handed the `asyncio.Future` it completes and the [`Bridge`] of the
//! future's event loop. When the operation is done, its result is queued on the bridge, and
//! the first result of a batch wakes the loop:
//! * normally through a pipe whose read end the loop watches (`loop.add_reader`): the loop
//!   thread then calls [`Bridge::drain`], which sets every queued future's result right there.
//!   Two thread switches per operation (to the runtime and back), no GIL taken off the loop
//!   thread, and 64 operations finishing together wake the loop once;
//! * for loops without `add_reader` (Windows' proactor loop), through the *completer*: one
//!   thread that takes the GIL and calls `loop.call_soon_threadsafe(_resolve, results)`.
//!
//! pyo3-async-runtimes does this job with two task spawns, a `spawn_blocking` and a
//! `call_soon_threadsafe` per result, and it lets the Rust future run on when Python cancels
//! it; here a cancelled `receive` is aborted (see [`Operation`](crate::layer::Operation)).

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use herald_core::sync::lock;
use herald_core::{GroupSendReport, Message};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::convert::message_to_py;
use crate::errors::to_py_err;

/// What a finished operation hands back to Python.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `None`.
    Unit,
    /// A received message, as a `dict`.
    Message(Message),
    /// `(members, over_capacity)` of a `group_send`.
    Report(GroupSendReport),
}

impl Outcome {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Outcome::Unit => py.None(),
            Outcome::Message(message) => message_to_py(py, &message)?.into_any().unbind(),
            Outcome::Report(report) => (report.members, report.over_capacity)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
        })
    }
}

/// A finished operation waiting for its loop.
struct Done {
    future: Py<PyAny>,
    result: herald_core::Result<Outcome>,
}

impl Done {
    /// `(future, value, error)` for `_resolve`.
    fn into_item(self, py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        let (value, error) = match self
            .result
            .map_err(to_py_err)
            .and_then(|outcome| outcome.into_py(py))
        {
            Ok(value) => (value, py.None()),
            Err(err) => (py.None(), err.into_value(py).into_any()),
        };
        (self.future, value, error).into_pyobject(py)
    }
}

/// How a bridge wakes its loop.
enum Wake {
    /// A byte down the pipe the loop watches.
    Pipe(Mutex<std::io::PipeWriter>),
    /// The completer thread, through `loop.call_soon_threadsafe`.
    Completer(Py<PyAny>),
}

/// The part of a bridge the runtime holds.
struct Shared {
    queue: Mutex<Vec<Done>>,
    wake: Wake,
}

impl Shared {
    /// Queues a result; the first of a batch wakes the loop.
    fn push(self: &Arc<Self>, done: Done) {
        let first = {
            let mut queue = lock(&self.queue);
            queue.push(done);
            queue.len() == 1
        };
        if !first {
            return;
        }
        match &self.wake {
            // One byte per batch: the pipe cannot fill up while the loop drains it. A failed
            // write means the read end is gone with its loop: nobody waits for these results.
            Wake::Pipe(writer) => {
                let _ = lock(writer).write(&[1]);
            }
            Wake::Completer(_) => {
                let _ = completer().send(Arc::clone(self));
            }
        }
    }

    fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *lock(&self.queue))
    }
}

/// `_herald.Bridge(loop)`: where the operations started from one asyncio event loop report
/// back (see the module doc). `herald.layers` makes one per loop and registers
/// [`fileno`](Self::fileno) with `loop.add_reader(fd, bridge.drain)`, or calls
/// [`use_completer`](Self::use_completer) if the loop cannot watch file descriptors.
#[pyclass(module = "herald._herald")]
pub(crate) struct Bridge {
    shared: Arc<Shared>,
    reader: Option<std::io::PipeReader>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

#[pymethods]
impl Bridge {
    #[new]
    fn new() -> PyResult<Self> {
        let (reader, writer) = std::io::pipe()?;
        Ok(Bridge {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                wake: Wake::Pipe(Mutex::new(writer)),
            }),
            reader: Some(reader),
        })
    }

    /// The read end of the wake-up pipe, for `loop.add_reader`; the caller makes it
    /// non-blocking (`os.set_blocking(fd, False)`).
    fn fileno(&self) -> PyResult<i32> {
        self.reader
            .as_ref()
            .map(|r| r.as_raw_fd())
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("bridge uses the completer"))
    }

    /// Switches to waking `event_loop` through `call_soon_threadsafe` (before any use).
    fn use_completer(&mut self, event_loop: Py<PyAny>) {
        self.reader = None;
        self.shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            wake: Wake::Completer(event_loop),
        });
    }

    /// Completes every queued future. Called by the loop when the pipe is readable.
    fn drain(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(reader) = &mut self.reader {
            // Empty the pipe first: a result queued after this read writes a new byte.
            let mut buf = [0u8; 256];
            loop {
                match reader.read(&mut buf) {
                    Ok(n) if n == buf.len() => continue,
                    Ok(_) => break,
                    Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        for done in self.shared.take() {
            resolve_one(&done.into_item(py)?)?;
        }
        Ok(())
    }
}

impl Bridge {
    /// The handle operations complete through.
    pub(crate) fn target(&self) -> Target {
        Target(Arc::clone(&self.shared))
    }
}

/// Where one operation reports its result.
pub(crate) struct Target(Arc<Shared>);

/// Sets `future`'s result or exception from `(future, value, error)`, unless it was cancelled.
fn resolve_one(item: &Bound<'_, PyTuple>) -> PyResult<()> {
    let py = item.py();
    let future = item.get_item(0)?;
    if future
        .call_method0(pyo3::intern!(py, "cancelled"))?
        .is_truthy()?
    {
        return Ok(());
    }
    let error = item.get_item(2)?;
    if error.is_none() {
        future.call_method1(pyo3::intern!(py, "set_result"), (item.get_item(1)?,))?;
    } else {
        future.call_method1(pyo3::intern!(py, "set_exception"), (error,))?;
    }
    Ok(())
}

/// `_resolve(items)`: [`resolve_one`] for each `(future, value, error)`; the completer
/// schedules it on the loop thread.
#[pyfunction]
fn _resolve(items: &Bound<'_, PyList>) -> PyResult<()> {
    for item in items.iter() {
        resolve_one(&item.cast_into::<PyTuple>()?)?;
    }
    Ok(())
}

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Registers `Bridge` and `_resolve`, and keeps a handle to `_resolve` for the completer.
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Bridge>()?;
    m.add_function(wrap_pyfunction!(_after_fork, m)?)?;
    let resolve = wrap_pyfunction!(_resolve, m)?;
    m.add_function(resolve.clone())?;
    let _ = RESOLVE.set(m.py(), resolve.into_any().unbind());
    Ok(())
}

/// The completer thread's queue, started on first use (and again in a forked child).
static COMPLETER: Mutex<Option<Sender<Arc<Shared>>>> = Mutex::new(None);

fn completer() -> Sender<Arc<Shared>> {
    let mut completer = lock(&COMPLETER);
    completer
        .get_or_insert_with(|| {
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("herald-py-completer".to_owned())
                .spawn(move || complete_forever(rx))
                .unwrap_or_else(|err| panic!("cannot start the herald completer thread: {err}"));
            tx
        })
        .clone()
}

fn complete_forever(rx: Receiver<Arc<Shared>>) {
    while let Ok(shared) = rx.recv() {
        Python::attach(|py| {
            let Wake::Completer(event_loop) = &shared.wake else {
                return;
            };
            let Some(resolve) = RESOLVE.get(py) else {
                return;
            };
            let items: Vec<_> = shared
                .take()
                .into_iter()
                .filter_map(|done| done.into_item(py).ok())
                .collect();
            let Ok(items) = PyList::new(py, items) else {
                return;
            };
            // A closed loop raises RuntimeError here: nobody waits for these results.
            let _ = event_loop.bind(py).call_method1(
                pyo3::intern!(py, "call_soon_threadsafe"),
                (resolve.bind(py), items),
            );
        });
    }
}

/// The runtime's handle, started on first use (and again in a forked child).
static RUNTIME: Mutex<Option<Handle>> = Mutex::new(None);

/// The runtime every operation runs on (see the module doc).
pub(crate) fn runtime() -> Handle {
    let mut runtime = lock(&RUNTIME);
    runtime
        .get_or_insert_with(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                // Without a timer or I/O driver nothing could run; Python shows the panic as
                // an exception at the first operation.
                .unwrap_or_else(|err| panic!("cannot start the herald runtime: {err}"));
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("herald-py-io".to_owned())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .unwrap_or_else(|err| panic!("cannot start the herald runtime thread: {err}"));
            handle
        })
        .clone()
}

/// `_after_fork()`: forgets the runtime and completer threads, which a forked child does not
/// have (Celery's prefork pool, gunicorn `--preload`); the next operation starts new ones.
/// `herald.layers` calls it from `os.register_at_fork(after_in_child=…)` and rebuilds its
/// layers, whose connections belonged to the parent's runtime.
#[pyfunction]
fn _after_fork() {
    // The parent's runtime and sender are leaked, not dropped: dropping them would wait for
    // threads that do not exist here.
    std::mem::forget(lock(&RUNTIME).take());
    std::mem::forget(lock(&COMPLETER).take());
}

/// Runs `operation` on the runtime and completes `future` through `target`.
pub(crate) fn spawn<F>(target: Target, future: Py<PyAny>, operation: F) -> JoinHandle<()>
where
    F: Future<Output = herald_core::Result<Outcome>> + Send + 'static,
{
    runtime().spawn(async move {
        let result = operation.await;
        target.0.push(Done { future, result });
    })
}

/// Runs `operation` to completion on the runtime, blocking this thread without the GIL.
pub(crate) fn block_on<T, F>(py: Python<'_>, operation: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = herald_core::Result<T>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(operation.await);
    });
    py.detach(move || rx.recv())
        .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the herald runtime stopped"))?
        .map_err(to_py_err)
}
