//! The one error type shared by every channel layer.
//!
//! The [`ChannelLayer`](crate::ChannelLayer) trait is implemented by several crates, and a caller
//! holding `Arc<dyn ChannelLayer>` must be able to branch on "channel full" without knowing which
//! layer it talks to, so the error lives here and the layer crates re-export it.

use std::fmt;

/// A specialized `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. Callers branch on this, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The channel is at capacity; mirrors Python's `channels.exceptions.ChannelFull`.
    ChannelFull,
    /// A channel or group name failed Channels' validation (Python raises `TypeError`).
    InvalidName,
    /// A message could not be encoded or decoded (msgpack, JSON, Fernet).
    Serialization,
    /// The Redis server answered with an error or the connection to it failed.
    Redis,
    /// An I/O error outside Redis (sockets, files).
    Io,
    /// The layer or channel was closed.
    Closed,
    /// An operation did not finish in time.
    Timeout,
    /// A configuration value was rejected when the component was built.
    Config,
    /// The message is not acceptable (missing `type`, reserved key, not a map).
    InvalidMessage,
}

/// An error from a channel layer. Opaque: inspect it with [`Error::kind`] and the `is_*` predicates.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Builds an error of `kind` with a human-readable description.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Builds an error of `kind` that wraps an underlying cause.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True if the channel was at capacity (Python's `ChannelFull`).
    pub fn is_channel_full(&self) -> bool {
        self.kind == ErrorKind::ChannelFull
    }

    /// True if a channel or group name was invalid.
    pub fn is_invalid_name(&self) -> bool {
        self.kind == ErrorKind::InvalidName
    }

    /// True if a message could not be encoded or decoded.
    pub fn is_serialization(&self) -> bool {
        self.kind == ErrorKind::Serialization
    }

    /// True if Redis failed or could not be reached.
    pub fn is_redis(&self) -> bool {
        self.kind == ErrorKind::Redis
    }

    /// True if the layer or channel is closed.
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }

    /// True if the operation timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// True if a configuration value was rejected.
    pub fn is_config(&self) -> bool {
        self.kind == ErrorKind::Config
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::with_source(ErrorKind::Io, "i/o error", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_kind() {
        let err = Error::new(ErrorKind::ChannelFull, "full");
        assert!(err.is_channel_full());
        assert!(!err.is_redis());
        assert_eq!(err.kind(), ErrorKind::ChannelFull);
    }

    #[test]
    fn display_includes_source() {
        let io = std::io::Error::other("boom");
        let err = Error::with_source(ErrorKind::Io, "reading", io);
        assert_eq!(err.to_string(), "reading: boom");
        assert!(std::error::Error::source(&err).is_some());
    }
}
