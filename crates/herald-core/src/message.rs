//! [`Message`]: the dict that travels through a channel layer.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use crate::value::{Map, Value};

/// The key channels_redis adds to route a stored message to its local channel(s).
///
/// Reserved: a message given to `send`/`group_send` must not contain it (Python asserts this).
pub const ASGI_CHANNEL_KEY: &str = "__asgi_channel__";

/// A channel-layer message: an ordered map with string keys, usually carrying a `"type"`.
///
/// Cloning is cheap: the map is shared (`Arc`) and copied only when a clone is modified, so
/// fanning one message out to many local channels does not copy it per channel — the same way
/// channels_redis hands one dict object to every listed channel.
#[derive(Clone, Default)]
pub struct Message(Arc<Inner>);

/// The shared part of a message: its fields and a memo that every clone sees.
#[derive(Default)]
struct Inner {
    map: Map,
    /// Something derived from `map` once for all clones (see [`Message::memo`]). Never copied:
    /// a clone that is modified gets a fresh, empty memo.
    memo: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Clone for Inner {
    // Only reached through `Arc::make_mut`, i.e. right before a modification.
    fn clone(&self) -> Self {
        Inner {
            map: self.map.clone(),
            memo: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Message").field(&self.0.map).finish()
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.0.map == other.0.map
    }
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Message::default()
    }

    /// A message holding only `{"type": msg_type}`.
    ///
    /// ```
    /// use herald_core::Message;
    /// let msg = Message::with_type("user.message").with("message", "hi");
    /// assert_eq!(msg.msg_type(), Some("user.message"));
    /// ```
    pub fn with_type(msg_type: &str) -> Self {
        Message::new().with("type", msg_type)
    }

    /// Adds (or replaces) a field, builder style.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds (or replaces) a field. A new key goes last, an existing one keeps its place.
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) -> Option<Value> {
        self.map_mut().insert(key.to_owned(), value.into())
    }

    /// The fields for modification: copied if shared, and the memo is dropped either way.
    fn map_mut(&mut self) -> &mut Map {
        let inner = Arc::make_mut(&mut self.0);
        inner.memo = OnceLock::new();
        &mut inner.map
    }

    /// Removes a field, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        if !self.0.map.contains_key(key) {
            return None;
        }
        self.map_mut().shift_remove(key)
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.map.get(key)
    }

    /// True if the field is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.map.contains_key(key)
    }

    /// The `"type"` field, if it is a string.
    pub fn msg_type(&self) -> Option<&str> {
        self.get("type").and_then(Value::as_str)
    }

    /// The fields in order.
    pub fn map(&self) -> &Map {
        &self.0.map
    }

    /// A value derived from this message once and shared by all its clones: the first call
    /// stores `init()`, later calls (on any clone) return it. A clone that is modified starts
    /// with no memo. One memo per message: `None` if it holds another type than `T`.
    ///
    /// Herald's server uses it to encode a group message's JSON frame once for all the
    /// sockets it goes to.
    ///
    /// ```
    /// use herald_core::Message;
    /// let a = Message::with_type("user.message");
    /// let b = a.clone();
    /// assert_eq!(*a.memo(|| 1u32).unwrap(), 1);
    /// assert_eq!(*b.memo(|| 2u32).unwrap(), 1); // computed once, seen by every clone
    /// assert!(b.memo(|| "text").is_none()); // a different type: not memoised
    /// ```
    pub fn memo<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0
            .memo
            .get_or_init(|| Arc::new(init()))
            .downcast_ref::<T>()
    }

    /// The fields, owned (copied only if the map is shared).
    pub fn into_map(self) -> Map {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => inner.map,
            Err(shared) => shared.map.clone(),
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.map.len()
    }

    /// True if there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }

    /// The message as a JSON object (see [`Value::to_json`] for bytes and floats).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// Builds a message from a JSON object; `None` if `json` is not an object.
    pub fn from_json(json: &serde_json::Value) -> Option<Message> {
        match Value::from_json(json) {
            Value::Map(map) => Some(Message::from(map)),
            _ => None,
        }
    }
}

impl From<Map> for Message {
    fn from(map: Map) -> Self {
        Message(Arc::new(Inner {
            map,
            memo: OnceLock::new(),
        }))
    }
}

impl From<Message> for Value {
    fn from(msg: Message) -> Self {
        Value::Map(msg.into_map())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_until_modified() {
        let a = Message::with_type("x").with("n", 1);
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        b.insert("n", 2);
        assert_eq!(a.get("n"), Some(&Value::Int(1)));
        assert_eq!(b.get("n"), Some(&Value::Int(2)));
    }

    #[test]
    fn a_memo_is_shared_by_clones_and_dropped_by_a_modification() {
        let a = Message::with_type("x").with("n", 1);
        let b = a.clone();
        assert_eq!(a.memo(|| String::from("one")).unwrap(), "one");
        assert_eq!(b.memo(|| String::from("two")).unwrap(), "one");

        // A modified clone (shared: copied) starts without a memo; the original keeps its own.
        let mut c = a.clone();
        c.insert("n", 2);
        assert_eq!(c.memo(|| String::from("three")).unwrap(), "three");
        assert_eq!(a.memo(|| String::from("four")).unwrap(), "one");

        // A modified unshared message drops its memo too.
        let mut d = Message::with_type("y");
        assert_eq!(*d.memo(|| 1u8).unwrap(), 1);
        d.remove("type");
        assert_eq!(*d.memo(|| 2u8).unwrap(), 2);
        assert_eq!(a, b);
    }

    #[test]
    fn remove_keeps_order() {
        let mut m = Message::with_type("x").with("a", 1).with("b", 2);
        m.remove("a");
        assert_eq!(m.map().keys().collect::<Vec<_>>(), ["type", "b"]);
    }
}
