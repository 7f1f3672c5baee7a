//! The crate's one error type.
//!
//! [`DjangoAuth::authenticate`](crate::DjangoAuth::authenticate) returns `Ok(None)` for every
//! refusal that Django itself would turn into `AnonymousUser` (bad signature, expired session,
//! unknown user, ...). An [`Error`] therefore means *our* side failed: bad configuration, an
//! unreachable database or callback, a timeout. The signing helpers in [`signing`](crate::signing)
//! reuse it with the [`ErrorKind::BadSignature`] / [`ErrorKind::SignatureExpired`] /
//! [`ErrorKind::Malformed`] kinds, mirroring Django's `BadSignature` / `SignatureExpired`.

use std::fmt;

/// A specialized `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. Callers branch on this, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`DjangoAuthConfig`](crate::DjangoAuthConfig) value was rejected by `new()`.
    Config,
    /// The session or user database failed or could not be reached.
    Database,
    /// The HTTP callback failed, could not be reached or answered something unexpected.
    Callback,
    /// A webhook delivery failed: unreachable, or answered other than 2xx.
    Webhook,
    /// An operation did not finish in time.
    Timeout,
    /// A signature did not verify with any key (Django's `signing.BadSignature`).
    BadSignature,
    /// A timestamped signature is older than `max_age` (Django's `signing.SignatureExpired`).
    SignatureExpired,
    /// A correctly signed payload could not be decoded (base64, zlib, JSON, timestamp).
    Malformed,
}

/// An error from Herald's Django integration. Opaque: inspect it with [`Error::kind`] and the
/// `is_*` predicates.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
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

    /// True if the configuration was rejected.
    pub fn is_config(&self) -> bool {
        self.kind == ErrorKind::Config
    }

    /// True if the database failed or could not be reached.
    pub fn is_database(&self) -> bool {
        self.kind == ErrorKind::Database
    }

    /// True if the HTTP callback failed.
    pub fn is_callback(&self) -> bool {
        self.kind == ErrorKind::Callback
    }

    /// True if a webhook delivery failed.
    pub fn is_webhook(&self) -> bool {
        self.kind == ErrorKind::Webhook
    }

    /// True if an operation timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// True for any signature failure, expired ones included — like Python, where
    /// `SignatureExpired` is a subclass of `BadSignature`.
    pub fn is_bad_signature(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::BadSignature | ErrorKind::SignatureExpired
        )
    }

    /// True if a timestamped signature was valid but too old.
    pub fn is_signature_expired(&self) -> bool {
        self.kind == ErrorKind::SignatureExpired
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
    /// The message and every cause below it: tokio-postgres's "error performing TLS handshake"
    /// says nothing without its own source ("invalid peer certificate: UnknownIssuer"). A cause
    /// whose text its parent already shows is not repeated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut shown = String::new();
        let mut next = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = cause.source();
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
    fn expired_counts_as_bad_signature_like_python_subclassing() {
        let err = Error::new(ErrorKind::SignatureExpired, "old");
        assert!(err.is_bad_signature());
        assert!(err.is_signature_expired());
        let err = Error::new(ErrorKind::BadSignature, "forged");
        assert!(err.is_bad_signature());
        assert!(!err.is_signature_expired());
    }

    #[test]
    fn display_includes_source() {
        let err = Error::with_source(ErrorKind::Database, "query", std::io::Error::other("down"));
        assert_eq!(err.to_string(), "query: down");
        assert!(err.is_database());
    }
}
