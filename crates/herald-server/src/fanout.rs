//! Encode once, send to many: [`SharedText`], and the frame memo kept on a message.
//!
//! A `group_send` to a group with N local sockets hands every socket a clone of the *same*
//! [`Message`] (the map is behind an `Arc`, in the in-memory layer, in `herald-redis`'s
//! process-channel fan-out and in the group readers alike). The first socket to forward it
//! encodes the JSON and stores it in the message's memo ([`Message::memo`], shared by all its
//! clones); the others queue a reference-counted clone of the same bytes, so N sockets cost
//! one encode and one buffer, with no lock and no lookup however far apart they run.

use std::sync::{Arc, OnceLock};

use herald_core::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::consumer::handler_name;

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

/// What the server derives from a layer message once, for every socket it reaches: the
/// handler name its `type` maps to and, once a consumer forwards it, its JSON frame. Both
/// follow from the message's own fields, so clones can share them (a modified clone gets a
/// fresh memo).
#[derive(Debug)]
struct Derived {
    /// `None`: no string `type`, or a malformed one (see [`handler_name`]).
    handler: Option<Arc<str>>,
    frame: OnceLock<SharedText>,
}

fn derive(message: &Message) -> Derived {
    Derived {
        handler: message.msg_type().and_then(handler_name).map(Arc::from),
        frame: OnceLock::new(),
    }
}

/// Runs `f` on `message`'s derived values: the memo shared by its clones, or (if the memo
/// holds another type) values derived for this call only.
fn with_derived<R>(message: &Message, f: impl FnOnce(&Derived) -> R) -> R {
    match message.memo(|| derive(message)) {
        Some(derived) => f(derived),
        None => f(&derive(message)),
    }
}

/// The handler name of `message`'s `type`, computed once for all clones of the message.
pub(crate) fn handler_once(message: &Message) -> Option<Arc<str>> {
    with_derived(message, |derived| derived.handler.clone())
}

/// The JSON frame of `message` (with `type` as `handler`), encoded by `encode` only the first
/// time any clone of the message asks for it.
pub(crate) fn frame_once(
    message: &Message,
    encode: impl FnOnce(&Message, &str) -> String,
) -> Option<SharedText> {
    with_derived(message, |derived| {
        let handler = derived.handler.as_deref()?;
        Some(
            derived
                .frame
                .get_or_init(|| SharedText::from(encode(message, handler)))
                .clone(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn encode(m: &Message, handler: &str) -> String {
        m.clone().with("type", handler).to_json().to_string()
    }

    #[test]
    fn clones_of_one_message_are_encoded_once_and_share_the_bytes() {
        let encodes = AtomicUsize::new(0);
        let counted = |m: &Message, h: &str| {
            encodes.fetch_add(1, Ordering::Relaxed);
            encode(m, h)
        };
        let msg = Message::with_type("user.message").with("message", "hi");
        let a = frame_once(&msg.clone(), counted).unwrap();
        let b = frame_once(&msg.clone(), counted).unwrap();
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        assert!(a.as_str().contains("user_message"));
        let h1 = handler_once(&msg).unwrap();
        let h2 = handler_once(&msg.clone()).unwrap();
        assert_eq!(&*h1, "user_message");
        assert!(Arc::ptr_eq(&h1, &h2));
    }

    #[test]
    fn a_modified_clone_is_derived_again() {
        let msg = Message::with_type("x.y").with("n", 1);
        let first = frame_once(&msg, encode).unwrap();
        let mut changed = msg.clone();
        changed.insert("n", 2);
        let second = frame_once(&changed, encode).unwrap();
        assert_ne!(first, second);
        assert_eq!(frame_once(&msg, encode).unwrap(), first);
        changed.insert("type", "other.kind");
        assert_eq!(handler_once(&changed).as_deref(), Some("other_kind"));
        assert_eq!(handler_once(&msg).as_deref(), Some("x_y"));
    }

    #[test]
    fn messages_without_a_usable_type_have_no_handler_or_frame() {
        for msg in [
            Message::new(),
            Message::with_type("_private.x"),
            Message::new().with("type", 3),
        ] {
            assert!(handler_once(&msg).is_none());
            assert!(frame_once(&msg, encode).is_none());
        }
    }
}
