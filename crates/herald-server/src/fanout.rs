//! Encode once, send to many: [`SharedText`], and the frame memo kept on a message.
//!
//! A `group_send` to a group with N local sockets hands every socket a clone of the *same*
//! [`Message`] (the map is behind an `Arc`, in the in-memory layer, in `herald-redis`'s
//! process-channel fan-out and in the group readers alike). The first socket to forward it
//! encodes the JSON and stores it in the message's memo ([`Message::memo`], shared by all its
//! clones); the others queue a reference-counted clone of the same bytes, so N sockets cost
//! one encode and one buffer, with no lock and no lookup however far apart they run.

use herald_core::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;

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

/// The JSON frame of a message for one handler name (the `type` a consumer sends on).
#[derive(Debug)]
struct FrameMemo {
    handler: String,
    text: SharedText,
}

/// The frame for `message` sent as `handler`, encoded by `encode` only the first time any
/// clone of the message asks for it.
pub(crate) fn frame_once(
    message: &Message,
    handler: &str,
    encode: impl Fn(&Message) -> String,
) -> SharedText {
    let memo = message.memo(|| FrameMemo {
        handler: handler.to_owned(),
        text: SharedText::from(encode(message)),
    });
    match memo {
        Some(memo) if memo.handler == handler => memo.text.clone(),
        // Another handler name (or another memo type) claimed the memo first: encode.
        _ => SharedText::from(encode(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn clones_of_one_message_are_encoded_once_and_share_the_bytes() {
        let encodes = AtomicUsize::new(0);
        let encode = |m: &Message| {
            encodes.fetch_add(1, Ordering::Relaxed);
            m.to_json().to_string()
        };
        let msg = Message::with_type("user.message").with("message", "hi");
        let a = frame_once(&msg.clone(), "user_message", encode);
        let b = frame_once(&msg.clone(), "user_message", encode);
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());

        // Another handler name is encoded for itself, not served the memo.
        let c = frame_once(&msg, "other", encode);
        assert_eq!(encodes.load(Ordering::Relaxed), 2);
        assert_ne!(a.as_str().as_ptr(), c.as_str().as_ptr());
    }

    #[test]
    fn a_modified_clone_is_encoded_again() {
        let msg = Message::with_type("x").with("n", 1);
        let encode = |m: &Message| m.to_json().to_string();
        let first = frame_once(&msg, "x", encode);
        let mut changed = msg.clone();
        changed.insert("n", 2);
        let second = frame_once(&changed, "x", encode);
        assert_ne!(first, second);
        assert_eq!(frame_once(&msg, "x", encode), first);
    }
}
