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

/// `err` and its causes as one line, each cause once (many errors, this crate's included,
/// already repeat their source in their own text; `anyhow`'s `{:#}` would print it again), with
/// passwords in URLs and `password=` options masked.
///
/// ```
/// let io = std::io::Error::other("Connection refused (os error 111)");
/// let err = herald_core::Error::with_source(herald_core::ErrorKind::Redis, "redis send failed", io);
/// assert_eq!(herald_core::error::error_chain(&err), "redis send failed: Connection refused (os error 111)");
/// ```
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    mask_secrets(&out)
}

/// Replaces the password of every `scheme://user:password@` and the value of every
/// `password=` option in `text` with `***`.
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; a password sits between
        // its first ':' and its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut masked = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let (head, tail) = rest.split_at(i + "password=".len());
        masked.push_str(head);
        let end = tail
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        if end > 0 {
            masked.push_str("***");
        }
        rest = &tail[end..];
    }
    masked.push_str(rest);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_adds_each_cause_once() {
        #[derive(Debug)]
        struct Db(std::io::Error);
        impl fmt::Display for Db {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("db error")
            }
        }
        impl std::error::Error for Db {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let db = || Db(std::io::Error::other("FATAL: role \"x\" does not exist"));
        assert_eq!(
            error_chain(&db()),
            "db error: FATAL: role \"x\" does not exist"
        );
        let wrapped = Error::with_source(ErrorKind::Redis, "postgres", db());
        assert_eq!(
            error_chain(&wrapped),
            "postgres: db error: FATAL: role \"x\" does not exist"
        );
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(
            mask_secrets("cannot reach redis://:s3cret@h:6379/0 or postgres://u:pw@db/app"),
            "cannot reach redis://:***@h:6379/0 or postgres://u:***@db/app"
        );
        assert_eq!(
            mask_secrets("sentinel://h:1/m?db=1&password=x&y=1 password=z"),
            "sentinel://h:1/m?db=1&password=***&y=1 password=***"
        );
        assert_eq!(mask_secrets("redis://h:1 user@x"), "redis://h:1 user@x");
    }

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
