//! [`Message`]: the dict that travels through a channel layer.

use std::sync::Arc;

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
///
/// What a consumer or server derives from a message (a handler name, an encoded frame) is
/// theirs to keep: the message itself is only the dict.
#[derive(Clone, Default, PartialEq)]
pub struct Message(Arc<Map>);

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Message").field(&*self.0).finish()
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

    /// The fields for modification, copied first if shared.
    fn map_mut(&mut self) -> &mut Map {
        Arc::make_mut(&mut self.0)
    }

    /// Removes a field, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        if !self.0.contains_key(key) {
            return None;
        }
        self.map_mut().shift_remove(key)
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// True if the field is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The `"type"` field, if it is a string.
    pub fn msg_type(&self) -> Option<&str> {
        self.get("type").and_then(Value::as_str)
    }

    /// The fields in order.
    pub fn map(&self) -> &Map {
        &self.0
    }

    /// The fields, owned (copied only if the map is shared).
    pub fn into_map(self) -> Map {
        Arc::unwrap_or_clone(self.0)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The message as a JSON object (see [`Value::to_json`] for bytes and floats).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
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
        Message(Arc::new(map))
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
    fn remove_keeps_order() {
        let mut m = Message::with_type("x").with("a", 1).with("b", 2);
        m.remove("a");
        assert_eq!(m.map().keys().collect::<Vec<_>>(), ["type", "b"]);
    }
}
