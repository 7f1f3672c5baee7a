//! Where layer operations run, and how their results reach asyncio.
//!
//! Every operation runs on one process-wide tokio runtime (two worker threads, started on
//! first use); the Redis connections live there too, not in any asyncio event loop. So a
//! layer made in one loop works in the next, and `async_to_sync(layer.group_send)` called
//! again and again never meets "Event loop is closed" (channels_redis keeps a connection pool
//! per loop and has to close it with the loop).
//!
//! An async operation is handed the `asyncio.Future` it completes, and its event loop. When
//! the Rust side is done, the result goes to the *completer*, one thread that takes the GIL
//! and calls `loop.call_soon_threadsafe(_resolve, [(future, value, error), …])`, once per loop
//! for every result that finished meanwhile. Tokio workers never wait for the GIL (a Python
//! thread may hold it for a whole switch interval), and 64 operations finishing together
//! wake their loop once, not 64 times.
//!
//! The price is one thread hop per result. pyo3-async-runtimes does the same job with a
//! `spawn_blocking` and a `call_soon_threadsafe` per result and keeps the Rust future running
//! when Python cancels it; a cancelled `receive` here is aborted (see [`Operation`](crate::layer::Operation)).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, Sender, channel};

use herald_core::{GroupSendReport, Message};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::convert::message_to_py;
use crate::errors::to_py_err;

/// Worker threads of the runtime. The work per operation is small (encode, one Redis round
/// trip); two keep Redis replies flowing while one worker is busy encoding.
const WORKER_THREADS: usize = 2;

/// Completions taken per GIL acquisition, so one busy completer cannot starve Python.
const COMPLETION_BATCH: usize = 1024;

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

/// A finished operation on its way to its event loop.
struct Completion {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    result: herald_core::Result<Outcome>,
}

/// The runtime every operation runs on.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("herald-py")
            .enable_all()
            .build()
            // Without threads or a timer there is nothing the module could do; Python shows
            // the panic as an exception at the first operation.
            .unwrap_or_else(|err| panic!("cannot start the herald runtime: {err}"))
    })
}

/// `_resolve(items)`: sets each `(future, value, error)` unless the future was cancelled.
/// Called by the event loop, on its own thread.
#[pyfunction]
fn _resolve(items: &Bound<'_, PyList>) -> PyResult<()> {
    let py = items.py();
    for item in items.iter() {
        let item = item.cast_into::<PyTuple>()?;
        let future = item.get_item(0)?;
        if future
            .call_method0(pyo3::intern!(py, "cancelled"))?
            .is_truthy()?
        {
            continue;
        }
        let error = item.get_item(2)?;
        if error.is_none() {
            future.call_method1(pyo3::intern!(py, "set_result"), (item.get_item(1)?,))?;
        } else {
            future.call_method1(pyo3::intern!(py, "set_exception"), (error,))?;
        }
    }
    Ok(())
}

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Registers `_resolve` and keeps a handle to it for the completer.
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let resolve = wrap_pyfunction!(_resolve, m)?;
    m.add_function(resolve.clone())?;
    let _ = RESOLVE.set(m.py(), resolve.into_any().unbind());
    Ok(())
}

fn completer() -> &'static Sender<Completion> {
    static COMPLETER: OnceLock<Sender<Completion>> = OnceLock::new();
    COMPLETER.get_or_init(|| {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("herald-py-completer".to_owned())
            .spawn(move || complete_forever(rx))
            .unwrap_or_else(|err| panic!("cannot start the herald completer thread: {err}"));
        tx
    })
}

fn complete_forever(rx: Receiver<Completion>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(COMPLETION_BATCH - 1));
        Python::attach(|py| deliver(py, batch));
    }
}

/// Groups a batch by event loop and schedules one `_resolve` call on each.
fn deliver(py: Python<'_>, batch: Vec<Completion>) {
    let Some(resolve) = RESOLVE.get(py) else {
        return;
    };
    let mut by_loop: Vec<(Py<PyAny>, Vec<Py<PyAny>>)> = Vec::new();
    for completion in batch {
        let (value, error) = match completion.result.and_then(|outcome| {
            outcome.into_py(py).map_err(|err| {
                herald_core::Error::new(herald_core::ErrorKind::Serialization, err.to_string())
            })
        }) {
            Ok(value) => (value, py.None()),
            Err(err) => (py.None(), to_py_err(err).into_value(py).into_any()),
        };
        let item = match (completion.future, value, error).into_pyobject(py) {
            Ok(item) => item.into_any().unbind(),
            Err(_) => continue,
        };
        match by_loop
            .iter_mut()
            .find(|(event_loop, _)| event_loop.is(&completion.event_loop))
        {
            Some((_, items)) => items.push(item),
            None => by_loop.push((completion.event_loop, vec![item])),
        }
    }
    for (event_loop, items) in by_loop {
        let Ok(items) = PyList::new(py, items) else {
            continue;
        };
        // A closed loop (its caller gave up, e.g. an `asyncio.run` that ended) raises
        // RuntimeError here: nobody waits for these results any more.
        let _ = event_loop.bind(py).call_method1(
            pyo3::intern!(py, "call_soon_threadsafe"),
            (resolve.bind(py), items),
        );
    }
}

/// Runs `operation` on the runtime and completes `future` (of `event_loop`) with its result.
pub(crate) fn spawn<F>(event_loop: Py<PyAny>, future: Py<PyAny>, operation: F) -> JoinHandle<()>
where
    F: Future<Output = herald_core::Result<Outcome>> + Send + 'static,
{
    let completer = completer();
    runtime().spawn(async move {
        let result = operation.await;
        let _ = completer.send(Completion {
            event_loop,
            future,
            result,
        });
    })
}

/// Runs `operation` to completion on the runtime, blocking this thread without the GIL.
pub(crate) fn block_on<T, F>(py: Python<'_>, operation: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = herald_core::Result<T>> + Send,
{
    py.detach(|| runtime().block_on(operation))
        .map_err(to_py_err)
}
