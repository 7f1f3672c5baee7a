//! The frames a connection exchanges with its client: [`Frame`] (what a consumer receives) and
//! [`SharedText`] (a text payload cheap to clone, what fan-out queues on every socket).
//!
//! Its own module so that the consumer trait (`consumer.rs`) and encode-once fan-out
//! (`fanout.rs`) both build on it without depending on each other.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A data frame from the client (`websocket.receive` with `text` or `bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (`text_data`).
    Text(SharedText),
    /// A binary frame (`bytes_data`).
    Binary(Bytes),
}

impl Frame {
    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t.as_str()),
            Frame::Binary(_) => None,
        }
    }
}

/// A text frame payload that is cheap to clone (reference-counted UTF-8 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SharedText(Utf8Bytes);

impl SharedText {
    /// A frame from a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Self {
        SharedText(Utf8Bytes::from_static(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty frame (Daphne silently does not send those).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_inner(self) -> Utf8Bytes {
        self.0
    }

    pub(crate) fn from_inner(inner: Utf8Bytes) -> Self {
        SharedText(inner)
    }
}

impl From<String> for SharedText {
    fn from(s: String) -> Self {
        SharedText(Utf8Bytes::from(s))
    }
}

impl From<&str> for SharedText {
    fn from(s: &str) -> Self {
        SharedText(Utf8Bytes::from(s))
    }
}

impl std::fmt::Display for SharedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
