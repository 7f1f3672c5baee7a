//! Errors: the layer speaks `herald_core`'s one [`Error`] across the
//! [`ChannelLayer`](herald_core::ChannelLayer) trait boundary, so a caller holding
//! `Arc<dyn ChannelLayer>` can branch on [`Error::is_channel_full`] whatever the backend.
//!
//! This module re-exports it and holds the private conversions from `redis` errors.

pub use herald_core::{Error, ErrorKind, Result};

/// Wraps a `redis` error as [`ErrorKind::Redis`] (or [`ErrorKind::Timeout`] for a response
/// timeout), keeping it as the source. `what` names the operation, e.g. `"group_send"`.
pub(crate) fn redis_error(what: &str, err: redis::RedisError) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Redis
    };
    Error::with_source(kind, format!("redis {what} failed"), err)
}

/// True if the connection that produced `err` should be thrown away and re-made.
pub(crate) fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

/// A configuration error.
pub(crate) fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}
