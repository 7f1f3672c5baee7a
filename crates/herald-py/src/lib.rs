//! `herald._herald`, the compiled half of the Python package `herald`: herald-redis's
//! [`RedisChannelLayer`](herald_redis::RedisChannelLayer) for Python, which
//! `herald.layers.RedisChannelLayer` (python/herald/layers.py) wraps into a drop-in
//! `CHANNEL_LAYERS` backend for Django Channels.
//!
//! Built with maturin (`pip install ./python`); not a Rust library.
//!
//! # Layout
//! * `runtime` — the process-wide tokio runtime every layer operation runs on, and the one
//!   thread that hands finished operations back to asyncio event loops. No state belongs to an
//!   event loop, so a layer works from any loop and across `async_to_sync` calls.
//! * `convert` — Python objects to [`Value`](herald_core::Value) and back, with msgpack's rules
//!   (what `msgpack.packb(use_bin_type=True)` accepts and `unpackb(raw=False)` returns).
//! * `config` — the constructor arguments of `channels_redis.core.RedisChannelLayer`
//!   (already normalised by the Python side) into a [`RedisLayerConfig`](herald_redis::RedisLayerConfig).
//! * `errors` — herald errors as the exceptions channels_redis raises.
//! * `serializer` — herald-redis's codec as channels_redis's serializers.
//! * `layer` — the `Layer` class: each operation as an asyncio future and, for `send` and
//!   `group_send`, as a blocking call that needs no event loop.

use pyo3::prelude::*;

mod config;
mod convert;
mod errors;
mod layer;
mod runtime;
mod serializer;

/// Python `binascii.crc32(value) & 0xFFF` onto `ring_size` shards: channels_redis's
/// `utils._consistent_hash`, from herald-redis's `hashing` module.
#[pyfunction]
fn consistent_hash(value: &Bound<'_, PyAny>, ring_size: usize) -> PyResult<usize> {
    if ring_size == 0 {
        return Err(pyo3::exceptions::PyZeroDivisionError::new_err(
            "ring_size is 0",
        ));
    }
    let bytes = convert::str_or_bytes(value)?;
    Ok(herald_redis::internals::consistent_hash(&bytes, ring_size))
}

#[pymodule]
fn _herald(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<layer::Layer>()?;
    m.add_class::<layer::Operation>()?;
    m.add_class::<serializer::Serializer>()?;
    m.add_function(wrap_pyfunction!(consistent_hash, m)?)?;
    m.add("RedisError", m.py().get_type::<errors::RedisError>())?;
    runtime::install(m)?;
    Ok(())
}
