//! `_herald.Serializer`: herald-redis's [`Codec`] with the interface of channels_redis's
//! `serializers.MsgPackSerializer` and `JSONSerializer` (`serialize(dict) -> bytes`,
//! `deserialize(bytes) -> dict`): random prefix, body and Fernet token exactly as the layers
//! store them in Redis.

use std::time::Duration;

use herald_redis::SerializerFormat;
use herald_redis::internals::Codec;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::{message_from_py, message_to_py};
use crate::errors::to_py_err;

/// A message serializer (see the module doc).
#[pyclass(frozen, module = "herald._herald")]
#[derive(Debug)]
pub(crate) struct Serializer {
    codec: Codec,
}

impl Serializer {
    /// Wraps a layer's codec.
    pub(crate) fn from_codec(codec: Codec) -> Self {
        Serializer { codec }
    }
}

#[pymethods]
impl Serializer {
    /// `Serializer(format, random_prefix_length, symmetric_encryption_keys, ttl)`: `format` is
    /// `"msgpack"` or `"json"`; `ttl` is the Fernet TTL in seconds (channels_redis passes
    /// `expiry + 10`), `None` for none.
    #[new]
    #[pyo3(signature = (format, random_prefix_length, symmetric_encryption_keys, ttl))]
    fn new(
        format: &str,
        random_prefix_length: usize,
        symmetric_encryption_keys: Vec<Vec<u8>>,
        ttl: Option<u64>,
    ) -> PyResult<Self> {
        let format = SerializerFormat::from_name(format).ok_or_else(|| {
            PyValueError::new_err(format!("unknown serializer format {format:?}"))
        })?;
        let codec = Codec::new(format, random_prefix_length)
            .with_encryption_keys(&symmetric_encryption_keys)
            .with_ttl(ttl.map(Duration::from_secs));
        Ok(Serializer { codec })
    }

    /// The stored bytes of `message`.
    fn serialize<'py>(&self, message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let py = message.py();
        let message = message_from_py(message)?;
        let bytes = self.codec.encode(&message).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The message stored as `data`.
    fn deserialize<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyDict>> {
        let message = self.codec.decode(data).map_err(to_py_err)?;
        message_to_py(py, &message)
    }
}
