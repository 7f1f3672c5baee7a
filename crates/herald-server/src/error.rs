//! The server's one opaque [`Error`] and its [`ErrorKind`].
//!
//! Channel-layer failures keep their [`herald_core::ErrorKind`] reachable through
//! [`Error::layer_kind`], so a consumer can still branch on "channel full" or "invalid name"
//! without matching message text.

use std::fmt;

/// A specialized `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. Callers branch on this, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value or the [`App`](crate::App) builder was rejected.
    Config,
    /// The channel layer failed; see [`Error::layer_kind`] for the layer's own kind.
    Layer,
    /// A group or channel name was rejected (Channels' name rules).
    InvalidName,
    /// A message could not be encoded or decoded (JSON).
    Serialization,
    /// Sending or accepting is not allowed in the connection's current state (for example
    /// `send` before `accept`, which Daphne rejects with `ValueError`).
    State,
    /// The socket or connection is closed.
    Closed,
    /// An I/O error on a socket.
    Io,
    /// The HTTP or WebSocket protocol was violated.
    Protocol,
    /// Authentication could not be performed (the backend failed, not "anonymous").
    Auth,
    /// Something did not finish in time.
    Timeout,
    /// A consumer handler failed.
    Consumer,
}

/// An error from the server or a consumer. Opaque: inspect it with [`Error::kind`] and the
/// `is_*` predicates.
pub struct Error {
    kind: ErrorKind,
    layer_kind: Option<herald_core::ErrorKind>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Builds an error of `kind` with a human-readable description.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            layer_kind: None,
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
            layer_kind: None,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The channel layer's own error kind, when this error came from the layer.
    pub fn layer_kind(&self) -> Option<herald_core::ErrorKind> {
        self.layer_kind
    }

    /// True if the configuration or builder was rejected.
    pub fn is_config(&self) -> bool {
        self.kind == ErrorKind::Config
    }

    /// True if a group or channel name was invalid.
    pub fn is_invalid_name(&self) -> bool {
        self.kind == ErrorKind::InvalidName
    }

    /// True if the operation is not allowed in the connection's state.
    pub fn is_state(&self) -> bool {
        self.kind == ErrorKind::State
    }

    /// True if the socket or connection is closed.
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }

    /// True if the channel layer failed.
    pub fn is_layer(&self) -> bool {
        self.kind == ErrorKind::Layer
    }

    /// True if something timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// True if authentication could not be performed.
    pub fn is_auth(&self) -> bool {
        self.kind == ErrorKind::Auth
    }
}

impl From<herald_core::Error> for Error {
    fn from(err: herald_core::Error) -> Self {
        let layer_kind = err.kind();
        let kind = if err.is_invalid_name() {
            ErrorKind::InvalidName
        } else {
            ErrorKind::Layer
        };
        Error {
            kind,
            layer_kind: Some(layer_kind),
            message: "channel layer error".to_owned(),
            source: Some(Box::new(err)),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::with_source(ErrorKind::Io, "i/o error", err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::with_source(ErrorKind::Serialization, "json error", err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(kind) = &self.layer_kind {
            d.field("layer_kind", kind);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_invalid_name_maps_to_invalid_name_kind() {
        let core = herald_core::Error::new(herald_core::ErrorKind::InvalidName, "bad");
        let err = Error::from(core);
        assert!(err.is_invalid_name());
        assert_eq!(err.layer_kind(), Some(herald_core::ErrorKind::InvalidName));
    }

    #[test]
    fn layer_channel_full_maps_to_layer_kind() {
        let core = herald_core::Error::new(herald_core::ErrorKind::ChannelFull, "full");
        let err = Error::from(core);
        assert!(err.is_layer());
        assert_eq!(err.layer_kind(), Some(herald_core::ErrorKind::ChannelFull));
    }
}
