//! Encode once, send to many: [`LayerEvent`], one layer message as the server fans it out.
//!
//! A `group_send` to a group with N local sockets reaches this process once, as one
//! [`Message`]. The dispatcher (`groups.rs`) wraps it in one [`LayerEvent`] and offers the
//! same `Arc` to every member's inbox. The event carries what the server derives from the
//! message for every socket: the handler name its `type` maps to (computed when the event is
//! made) and the JSON frame (written by the first socket that forwards it). The others queue a
//! reference-counted clone of the same bytes, so N sockets cost one encode and one buffer,
//! with no lock and no lookup however far apart they run.
//!
//! The layer may also hand one message to several sinks: without group multiplexing a group
//! message lists every local socket's channel, and the layer delivers the same [`Message`] (one
//! `Arc`) to each socket's sink. The dispatcher's [`Events`] finds the event it already made for
//! that message, so those sockets share one frame too.
//!
//! The cache lives here, in the server, not on [`Message`]: the layer's message type stays a
//! plain dict, and what the server keeps per message can grow (see [`LayerEvent`]) without
//! the layer crates knowing.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use herald_core::{Map, Message, Position, Recorded};

use crate::consumer::handler_name;
use crate::frame::SharedText;
use herald_core::pyjson::{self, BytesAsNumbers};

/// One layer message as the server hands it to its sockets: made once per message by the
/// dispatcher and shared, behind an `Arc`, by every inbox it reaches.
///
/// A plain struct on purpose: what the server derives once per message goes here, next to the
/// frame. A message of a recorded group carries its place in the group's history, and a second
/// frame for the sockets that asked for positions (see [`tagged`]).
#[derive(Debug)]
pub(crate) struct LayerEvent {
    message: Message,
    /// The Channels handler name of the message's `type`; `None`: no string `type`, or a
    /// malformed one (see [`handler_name`]).
    handler: Option<Box<str>>,
    /// `json.dumps({**message, "type": handler})`, written by the first socket forwarding it.
    frame: OnceLock<SharedText>,
    /// The recorded group and position, for a message of a recorded group.
    recorded: Option<(Arc<str>, Position)>,
    /// The frame with the position appended, written by the first socket that wants it.
    tagged: OnceLock<SharedText>,
}

impl LayerEvent {
    /// Wraps a message fresh from the layer; its handler name is derived here, once.
    pub(crate) fn new(message: Message) -> Arc<Self> {
        Arc::new(Self::make(message, None))
    }

    /// Wraps a recorded message with its group and position.
    pub(crate) fn recorded(recorded: Recorded) -> Arc<Self> {
        Arc::new(Self::make(
            recorded.message,
            Some((recorded.group, recorded.position)),
        ))
    }

    fn make(message: Message, recorded: Option<(Arc<str>, Position)>) -> Self {
        let handler = message
            .msg_type()
            .and_then(handler_name)
            .map(String::into_boxed_str);
        LayerEvent {
            message,
            handler,
            frame: OnceLock::new(),
            recorded,
            tagged: OnceLock::new(),
        }
    }

    /// The recorded group and position, if the message came from a recorded group.
    pub(crate) fn position(&self) -> Option<(&str, &Position)> {
        self.recorded.as_ref().map(|(group, p)| (&**group, p))
    }

    /// The frame with its position appended (see [`tagged`]); `None` without a handler name.
    /// Without a position, the plain frame.
    pub(crate) fn tagged_frame(&self) -> Option<SharedText> {
        let Some((group, position)) = &self.recorded else {
            return self.frame();
        };
        let frame = self.frame()?;
        Some(
            self.tagged
                .get_or_init(|| tagged(frame.as_str(), group, position).shared_deflate())
                .clone(),
        )
    }

    /// The layer message.
    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

    /// The handler name of the message's `type`, `None` if it has no usable one.
    pub(crate) fn handler(&self) -> Option<&str> {
        self.handler.as_deref()
    }

    /// True if `message` is this event's message itself (a clone sharing its fields), not a
    /// modified copy. A consumer gets a clone while the event is alive, so modifying it copies
    /// the fields and this turns false: a changed message is never sent the cached bytes.
    fn is(&self, message: &Message) -> bool {
        std::ptr::eq(self.message.map(), message.map())
    }

    /// The JSON frame, encoded the first time any socket asks; `None` without a handler name.
    fn frame(&self) -> Option<SharedText> {
        let handler = self.handler.as_deref()?;
        Some(
            self.frame
                .get_or_init(|| encode(&self.message, handler).shared_deflate())
                .clone(),
        )
    }
}

/// The identity of a message: the address of its shared fields. Two messages have the same
/// identity only while they are clones of one another (a modified clone is copied first).
fn identity(message: &Message) -> usize {
    std::ptr::from_ref::<Map>(message.map()) as usize
}

/// The dispatcher's events that an inbox may still hold, by message identity, so that a
/// message the layer delivered to several sinks becomes one event (see the module docs).
///
/// An entry is weak: it lives as long as some inbox or socket holds its event, which also
/// keeps the message, and so its identity, from being reused meanwhile. Dead entries are
/// pruned once the table has doubled since the last pruning, so the cost stays constant per
/// message.
#[derive(Debug, Default)]
pub(crate) struct Events {
    made: HashMap<usize, Weak<LayerEvent>>,
    /// Prune when the table grows past this.
    prune_at: usize,
}

/// The table is never pruned below this many entries.
const EVENTS_MIN_PRUNE: usize = 64;

impl Events {
    /// The event of `message`: the one made earlier for a clone of it while that is still
    /// held, else a new one.
    pub(crate) fn event(&mut self, message: Message) -> Arc<LayerEvent> {
        let key = identity(&message);
        if let Some(event) = self.made.get(&key).and_then(Weak::upgrade) {
            return event;
        }
        let event = LayerEvent::new(message);
        self.made.insert(key, Arc::downgrade(&event));
        if self.made.len() > self.prune_at.max(EVENTS_MIN_PRUNE) {
            self.made.retain(|_, event| event.strong_count() > 0);
            self.prune_at = self.made.len() * 2;
        }
        event
    }

    /// The events of a batch the layer delivered to one sink, in order.
    pub(crate) fn events(&mut self, messages: Vec<Message>) -> Vec<Arc<LayerEvent>> {
        messages.into_iter().map(|m| self.event(m)).collect()
    }
}

/// The JSON frame of `message` with `type` in handler form: the cached one when `message` is
/// the event being handled (`current`), else encoded for this call. `None` if it has no
/// usable `type`.
pub(crate) fn frame_of(current: Option<&LayerEvent>, message: &Message) -> Option<SharedText> {
    match current {
        Some(event) if event.is(message) => event.frame(),
        _ => {
            let handler = message.msg_type().and_then(handler_name)?;
            Some(encode(message, &handler))
        }
    }
}

/// The key a recorded message's frame gets for the clients that asked for positions.
pub(crate) const POSITION_KEY: &str = "herald";

/// `frame` (a JSON object) with `"herald": {"group": …, "epoch": …, "offset": …}` appended as
/// its last key, in `json.dumps`'s layout. Group names, epochs and offsets are ASCII letters,
/// digits and `-_.`, so they need no escaping.
pub(crate) fn tagged(frame: &str, group: &str, position: &Position) -> SharedText {
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let separator = if body.ends_with('{') { "" } else { ", " };
    SharedText::from(format!(
        "{body}{separator}\"{POSITION_KEY}\": {{\"group\": \"{group}\", \"epoch\": \"{}\", \"offset\": \"{}\"}}}}",
        position.epoch, position.offset
    ))
}

/// Like [`frame_of`], with the handled event's position appended when it has one (the frame
/// for a client that asked for positions).
pub(crate) fn tagged_frame_of(
    current: Option<&LayerEvent>,
    message: &Message,
) -> Option<SharedText> {
    match current {
        Some(event) if event.is(message) => event.tagged_frame(),
        Some(LayerEvent {
            recorded: Some((group, position)),
            ..
        }) => Some(tagged(frame_of(None, message)?.as_str(), group, position)),
        _ => frame_of(None, message),
    }
}

/// Bytes reserved up front for a frame: the guide's messages are a few hundred bytes, so most
/// need one or two growths at most.
const FRAME_CAPACITY_HINT: usize = 128;

/// `json.dumps({**message, "type": handler})`, byte for byte as Python writes it.
fn encode(message: &Message, handler: &str) -> SharedText {
    let mut out = String::with_capacity(FRAME_CAPACITY_HINT);
    let Ok(()) = pyjson::write_map::<BytesAsNumbers>(&mut out, message.map(), Some(handler));
    SharedText::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_is_encoded_once_and_every_socket_shares_the_bytes() {
        let event = LayerEvent::new(Message::with_type("user.message").with("message", "hi"));
        // Two sockets, each handling its own clone of the message.
        let (a, b) = (event.message().clone(), event.message().clone());
        let first = frame_of(Some(&event), &a).unwrap();
        let second = frame_of(Some(&event), &b).unwrap();
        assert_eq!(first.as_str().as_ptr(), second.as_str().as_ptr());
        assert_eq!(
            first.as_str(),
            r#"{"type": "user_message", "message": "hi"}"#
        );
        assert_eq!(event.handler(), Some("user_message"));
    }

    #[test]
    fn a_modified_clone_is_encoded_again_and_the_cache_is_kept() {
        let event = LayerEvent::new(Message::with_type("x.y").with("n", 1));
        let first = frame_of(Some(&event), event.message()).unwrap();
        let mut changed = event.message().clone();
        changed.insert("n", 2);
        let second = frame_of(Some(&event), &changed).unwrap();
        assert_eq!(second.as_str(), r#"{"type": "x_y", "n": 2}"#);
        assert_eq!(frame_of(Some(&event), event.message()).unwrap(), first);
        changed.insert("type", "other.kind");
        let third = frame_of(Some(&event), &changed).unwrap();
        assert_eq!(third.as_str(), r#"{"type": "other_kind", "n": 2}"#);
    }

    #[test]
    fn a_message_of_another_event_or_none_is_encoded_on_its_own() {
        let event = LayerEvent::new(Message::with_type("a.b"));
        let other = Message::with_type("a.b");
        let cached = frame_of(Some(&event), event.message()).unwrap();
        let fresh = frame_of(Some(&event), &other).unwrap();
        assert_eq!(cached, fresh);
        assert_ne!(cached.as_str().as_ptr(), fresh.as_str().as_ptr());
        assert_eq!(frame_of(None, &other).unwrap(), cached);
    }

    #[test]
    fn clones_of_one_message_make_one_event_while_it_is_held() {
        let mut events = Events::default();
        let message = Message::with_type("user.message");
        let first = events.event(message.clone());
        let again = events.event(message.clone());
        assert!(Arc::ptr_eq(&first, &again));
        // An equal but distinct message is another event.
        let other = events.event(Message::with_type("user.message"));
        assert!(!Arc::ptr_eq(&first, &other));
        // Once no inbox holds the event, the message gets a fresh one.
        drop((first, again));
        let fresh = events.event(message);
        assert_eq!(Arc::strong_count(&fresh), 1);
    }

    #[test]
    fn dead_events_are_pruned_as_the_table_grows() {
        let mut events = Events::default();
        let held: Vec<_> = (0..10)
            .map(|n| events.event(Message::with_type("x").with("n", n)))
            .collect();
        for n in 0..10_000 {
            drop(events.event(Message::with_type("y").with("n", n)));
        }
        // Bounded by the live events, not by every message seen.
        assert!(events.made.len() <= 2 * EVENTS_MIN_PRUNE + held.len());
        for event in &held {
            assert!(Arc::ptr_eq(event, &events.event(event.message().clone())));
        }
    }

    #[test]
    fn a_recorded_message_has_a_tagged_frame_with_its_position() {
        let position = Position {
            epoch: Arc::from("5f0e"),
            offset: herald_core::Offset::new(1_764_489_000_123, 2),
        };
        let event = LayerEvent::recorded(Recorded {
            group: Arc::from("user_amadmin"),
            position,
            message: Message::with_type("user.message").with("message", "hi"),
        });
        assert_eq!(
            event.tagged_frame().unwrap().as_str(),
            r#"{"type": "user_message", "message": "hi", "herald": {"group": "user_amadmin", "epoch": "5f0e", "offset": "1764489000123-2"}}"#
        );
        // The plain frame is unchanged: sockets that did not ask get the same bytes as ever.
        assert_eq!(
            event.frame().unwrap().as_str(),
            r#"{"type": "user_message", "message": "hi"}"#
        );
        let plain = LayerEvent::new(Message::with_type("a.b"));
        assert_eq!(plain.tagged_frame().unwrap().as_str(), r#"{"type": "a_b"}"#);
    }

    #[test]
    fn messages_without_a_usable_type_have_no_handler_or_frame() {
        for msg in [
            Message::new(),
            Message::with_type("_private.x"),
            Message::new().with("type", 3),
        ] {
            let event = LayerEvent::new(msg.clone());
            assert!(event.handler().is_none());
            assert!(frame_of(Some(&event), &msg).is_none());
            assert!(frame_of(None, &msg).is_none());
        }
    }
}
