//! Encode once, send to many: [`SharedText`] and the per-app encoding cache.
//!
//! A `group_send` to a group with N local sockets hands every socket a clone of the *same*
//! [`Message`] (the map is behind an `Arc`, in the in-memory layer and in `herald-redis`'s
//! process-channel fan-out alike). The first socket to forward it encodes the JSON; the
//! others find the encoded frame in [`FanoutCache`] by pointer identity and queue a
//! reference-counted clone of the same bytes, so N sockets cost one encode and one buffer.

use std::collections::VecDeque;
use std::sync::Mutex;

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

/// How many recently encoded messages are remembered. A fan-out is delivered to all local
/// sockets within microseconds, so a short history catches it while holding little memory.
const CACHE_SLOTS: usize = 64;

/// Recently encoded layer messages, keyed by the identity of their shared map.
#[derive(Debug, Default)]
pub(crate) struct FanoutCache {
    // std Mutex: held only for a short scan, never across an await.
    slots: Mutex<VecDeque<(Message, SharedText)>>,
}

impl FanoutCache {
    /// The encoded frame for `message`, encoding it with `encode` on a miss.
    ///
    /// Identity, not equality: the entry keeps its `Message` clone alive, so its map address
    /// cannot be reused by another message while the entry exists, and a modified clone has a
    /// different map (copy-on-write), so a pointer match always means identical content.
    pub(crate) fn get_or_encode(
        &self,
        message: &Message,
        encode: impl FnOnce(&Message) -> String,
    ) -> SharedText {
        if let Ok(slots) = self.slots.lock()
            && let Some((_, text)) = slots
                .iter()
                .rev()
                .find(|(m, _)| std::ptr::eq(m.map(), message.map()))
        {
            return text.clone();
        }
        // Encode outside the lock; two sockets racing on a miss both encode, which is harmless.
        let text = SharedText::from(encode(message));
        if let Ok(mut slots) = self.slots.lock() {
            if slots.len() == CACHE_SLOTS {
                slots.pop_front();
            }
            slots.push_back((message.clone(), text.clone()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn clones_of_one_message_are_encoded_once() {
        let cache = FanoutCache::default();
        let encodes = AtomicUsize::new(0);
        let msg = Message::with_type("user.message").with("message", "hi");
        let encode = |m: &Message| {
            encodes.fetch_add(1, Ordering::Relaxed);
            m.to_json().to_string()
        };
        let a = cache.get_or_encode(&msg.clone(), encode);
        let b = cache.get_or_encode(&msg.clone(), encode);
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        // Same bytes, same allocation.
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }

    #[test]
    fn equal_but_distinct_messages_are_encoded_separately() {
        let cache = FanoutCache::default();
        let encodes = AtomicUsize::new(0);
        let encode = |m: &Message| {
            encodes.fetch_add(1, Ordering::Relaxed);
            m.to_json().to_string()
        };
        cache.get_or_encode(&Message::with_type("x"), encode);
        cache.get_or_encode(&Message::with_type("x"), encode);
        assert_eq!(encodes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn modified_clone_is_not_served_from_cache() {
        let cache = FanoutCache::default();
        let msg = Message::with_type("x").with("n", 1);
        let first = cache.get_or_encode(&msg, |m| m.to_json().to_string());
        let changed = msg.clone().with("n", 2);
        let second = cache.get_or_encode(&changed, |m| m.to_json().to_string());
        assert_ne!(first, second);
    }
}
