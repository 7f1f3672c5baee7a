//! The frames a connection exchanges with its client: [`Frame`] (what a consumer receives) and
//! [`SharedText`] (a text payload cheap to clone, what fan-out queues on every socket).
//!
//! Its own module so that the consumer trait (`consumer.rs`) and encode-once fan-out
//! (`fanout.rs`) both build on it without depending on each other.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::deflate;

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
///
/// A fan-out frame also carries a shared slot for its `permessage-deflate` form, so the one
/// frame every socket of a group gets is compressed once, by the first socket that needs it.
#[derive(Debug, Clone, Default)]
pub struct SharedText {
    text: Utf8Bytes,
    deflated: Option<Arc<OnceLock<Option<Bytes>>>>,
}

impl PartialEq for SharedText {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SharedText {}

impl std::hash::Hash for SharedText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl SharedText {
    /// A frame from a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Self {
        SharedText {
            text: Utf8Bytes::from_static(s),
            deflated: None,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// True for an empty frame (Daphne silently does not send those).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The same text with a compression slot its clones share: for a frame many sockets get.
    pub(crate) fn shared_deflate(mut self) -> Self {
        self.deflated = Some(Arc::default());
        self
    }

    /// The text compressed on its own (see [`deflate::compress`]): once per fan-out frame,
    /// else per call. `None` when compressing does not shrink it.
    pub(crate) fn deflated(&self) -> Option<Bytes> {
        match &self.deflated {
            Some(slot) => slot
                .get_or_init(|| deflate::compress(self.as_str().as_bytes()))
                .clone(),
            None => deflate::compress(self.as_str().as_bytes()),
        }
    }

    pub(crate) fn into_inner(self) -> Utf8Bytes {
        self.text
    }

    pub(crate) fn from_inner(text: Utf8Bytes) -> Self {
        SharedText {
            text,
            deflated: None,
        }
    }
}

impl From<String> for SharedText {
    fn from(s: String) -> Self {
        SharedText::from_inner(Utf8Bytes::from(s))
    }
}

impl From<&str> for SharedText {
    fn from(s: &str) -> Self {
        SharedText::from_inner(Utf8Bytes::from(s))
    }
}

impl std::fmt::Display for SharedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fanout_frame_is_compressed_once_for_all_its_clones() {
        let text = r#"{"type": "user_message", "username": "amadmin", "message": "Your report is ready! It has 12,345 rows."}"#;
        let shared = SharedText::from(text).shared_deflate();
        let clone = shared.clone();
        let (a, b) = (shared.deflated().unwrap(), clone.deflated().unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one compression, the same bytes");
        // A frame without the slot compresses per call, to the same bytes.
        let plain = SharedText::from(text);
        let c = plain.deflated().unwrap();
        assert_ne!(c.as_ptr(), a.as_ptr());
        assert_eq!(c, a);
        assert_eq!(shared, plain, "equality is the text's");
    }
}
