//! herald errors as the exceptions a channels_redis caller catches.
//!
//! | herald [`ErrorKind`] | Python |
//! |---|---|
//! | `ChannelFull` | `channels.exceptions.ChannelFull` (what channels_redis raises) |
//! | `InvalidName` | `TypeError` (Channels' `require_valid_channel_name`) |
//! | `InvalidMessage` | `AssertionError` (channels_redis asserts on the message) |
//! | `Serialization` | `TypeError` (msgpack and `json.dumps` raise it) |
//! | `Config` | `ValueError` |
//! | `Timeout` | `TimeoutError` |
//! | `Redis`, `Io` | `herald.layers.RedisError`, a `ConnectionError` |
//! | `Closed` and others | `RuntimeError` |

use herald_core::{Error, ErrorKind, error::error_chain};
use pyo3::exceptions::{
    PyAssertionError, PyConnectionError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

pyo3::create_exception!(
    _herald,
    RedisError,
    PyConnectionError,
    "Redis refused a command or could not be reached."
);

static CHANNEL_FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The Python exception for a herald error, with the error's full chain as its message.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    let text = error_chain(&err);
    match err.kind() {
        ErrorKind::ChannelFull => Python::attach(|py| {
            match CHANNEL_FULL.import(py, "channels.exceptions", "ChannelFull") {
                Ok(class) => PyErr::from_type(class.clone(), text),
                Err(import_error) => import_error,
            }
        }),
        ErrorKind::InvalidName | ErrorKind::Serialization => PyTypeError::new_err(text),
        ErrorKind::InvalidMessage => PyAssertionError::new_err(text),
        ErrorKind::Config => PyValueError::new_err(text),
        ErrorKind::Timeout => PyTimeoutError::new_err(text),
        ErrorKind::Redis | ErrorKind::Io => RedisError::new_err(text),
        _ => PyRuntimeError::new_err(text),
    }
}
