//! `_herald.Layer`: herald-redis's [`RedisChannelLayer`] for Python.
//!
//! Each async operation takes the [`Bridge`] of the caller's event loop and an
//! `asyncio.Future` of that loop, and returns at once; the future completes when Redis has
//! answered (see `runtime`). The
//! Python class `herald.layers.RedisChannelLayer` makes the coroutines of the Channels API
//! out of these, so their shapes stay simple here.

use std::sync::{Arc, Mutex};

use herald_core::ChannelLayer;
use herald_redis::RedisChannelLayer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::task::JoinHandle;

use crate::config::layer_config;
use crate::convert::message_from_py;
use crate::errors::to_py_err;
use crate::runtime::{self, Bridge, Outcome};
use crate::serializer::Serializer;

/// A running operation that Python may cancel.
///
/// `cancel()` aborts the Rust side: for `receive`, a message is then left in the channel's
/// buffer for the next `receive` (herald-redis's `receive` takes a message only when it
/// completes), where a Rust future left running would take it for a caller that is gone.
#[pyclass(frozen, module = "herald._herald")]
#[derive(Debug)]
pub(crate) struct Operation {
    handle: Mutex<Option<JoinHandle<()>>>,
}

#[pymethods]
impl Operation {
    /// Aborts the operation if it is still running.
    fn cancel(&self) {
        if let Some(handle) = herald_core::sync::lock(&self.handle).take() {
            handle.abort();
        }
    }
}

/// A channels_redis-compatible Redis channel layer (see the module doc).
#[pyclass(frozen, module = "herald._herald")]
#[derive(Debug)]
pub(crate) struct Layer {
    layer: Arc<RedisChannelLayer>,
}

impl Layer {
    fn spawn<F, Fut>(&self, bridge: &Bridge, future: Py<PyAny>, op: F) -> JoinHandle<()>
    where
        F: FnOnce(Arc<RedisChannelLayer>) -> Fut,
        Fut: std::future::Future<Output = herald_core::Result<Outcome>> + Send + 'static,
    {
        runtime::spawn(bridge.target(), future, op(Arc::clone(&self.layer)))
    }
}

#[pymethods]
impl Layer {
    #[new]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python's keyword arguments, one to one"
    )]
    fn new(
        hosts: Vec<Bound<'_, PyDict>>,
        prefix: String,
        expiry: f64,
        group_expiry: f64,
        capacity: usize,
        channel_capacity: Vec<(Bound<'_, PyAny>, usize)>,
        symmetric_encryption_keys: Vec<Vec<u8>>,
        random_prefix_length: usize,
        serializer_format: &str,
    ) -> PyResult<Self> {
        let config = layer_config(
            &hosts,
            prefix,
            expiry,
            group_expiry,
            capacity,
            &channel_capacity,
            symmetric_encryption_keys,
            random_prefix_length,
            serializer_format,
        )?;
        let layer = RedisChannelLayer::new(config).map_err(to_py_err)?;
        Ok(Layer {
            layer: Arc::new(layer),
        })
    }

    /// The 32-hex process id in this layer's channel names (Python `client_prefix`).
    #[getter]
    fn client_prefix(&self) -> &str {
        self.layer.client_prefix()
    }

    /// The Redis key of a group (Python `_group_key`), as bytes.
    fn group_key<'py>(&self, py: Python<'py>, group: &str) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.layer.keys().group_key(group).as_bytes())
    }

    /// A new process-specific channel name that this layer receives on.
    fn new_channel(&self, py: Python<'_>, prefix: &str) -> PyResult<String> {
        let layer = Arc::clone(&self.layer);
        let prefix = prefix.to_owned();
        // No I/O: it registers the channel and starts the readers on the runtime.
        runtime::block_on(py, async move { layer.new_channel(&prefix).await })
    }

    /// `send(channel, message)`, completing `future`.
    fn send(
        &self,
        bridge: PyRef<'_, Bridge>,
        future: Py<PyAny>,
        channel: String,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let message = message_from_py(message)?;
        self.spawn(&bridge, future, |layer| async move {
            layer.send(&channel, message).await.map(|()| Outcome::Unit)
        });
        Ok(())
    }

    /// `send` without an event loop: blocks this thread (not the GIL) until Redis answered.
    fn send_sync(&self, py: Python<'_>, channel: &str, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let message = message_from_py(message)?;
        let layer = Arc::clone(&self.layer);
        let channel = channel.to_owned();
        runtime::block_on(py, async move { layer.send(&channel, message).await })
    }

    /// `receive(channel)`, completing `future` with the message dict. The returned
    /// [`Operation`] aborts it when the caller is cancelled.
    fn receive(&self, bridge: PyRef<'_, Bridge>, future: Py<PyAny>, channel: String) -> Operation {
        let handle = self.spawn(&bridge, future, |layer| async move {
            layer.receive(&channel).await.map(Outcome::Message)
        });
        Operation {
            handle: Mutex::new(Some(handle)),
        }
    }

    /// `group_add(group, channel)`, completing `future`.
    fn group_add(
        &self,
        bridge: PyRef<'_, Bridge>,
        future: Py<PyAny>,
        group: String,
        channel: String,
    ) {
        self.spawn(&bridge, future, |layer| async move {
            layer
                .group_add(&group, &channel)
                .await
                .map(|()| Outcome::Unit)
        });
    }

    /// `group_discard(group, channel)`, completing `future`.
    fn group_discard(
        &self,
        bridge: PyRef<'_, Bridge>,
        future: Py<PyAny>,
        group: String,
        channel: String,
    ) {
        self.spawn(&bridge, future, |layer| async move {
            layer
                .group_discard(&group, &channel)
                .await
                .map(|()| Outcome::Unit)
        });
    }

    /// `group_send(group, message)`, completing `future` with `(members, over_capacity)`.
    fn group_send(
        &self,
        bridge: PyRef<'_, Bridge>,
        future: Py<PyAny>,
        group: String,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let message = message_from_py(message)?;
        self.spawn(&bridge, future, |layer| async move {
            layer.group_send(&group, message).await.map(Outcome::Report)
        });
        Ok(())
    }

    /// `group_send` without an event loop; returns `(members, over_capacity)`.
    fn group_send_sync(
        &self,
        py: Python<'_>,
        group: &str,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<(usize, usize)> {
        let message = message_from_py(message)?;
        let layer = Arc::clone(&self.layer);
        let group = group.to_owned();
        let report = runtime::block_on(py, async move { layer.group_send(&group, message).await })?;
        Ok((report.members, report.over_capacity))
    }

    /// `flush()`, completing `future`.
    fn flush(&self, bridge: PyRef<'_, Bridge>, future: Py<PyAny>) {
        self.spawn(&bridge, future, |layer| async move {
            layer.flush().await.map(|()| Outcome::Unit)
        });
    }

    /// The serializer this layer stores messages with (`serialize`/`deserialize`).
    fn serializer(&self) -> Serializer {
        Serializer::from_codec(self.layer.codec().clone())
    }

    /// Forgets a local channel and its buffered messages.
    fn close_channel(&self, channel: &str) {
        self.layer.close_channel(channel);
    }
}
