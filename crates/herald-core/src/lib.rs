//! Herald's core: the [`ChannelLayer`] trait, the [`Message`] and [`Value`] types, Channels'
//! name rules and an [`InMemoryLayer`].
//!
//! Herald replaces Daphne + `channels_redis` for Django apps that push real-time messages with
//! `channel_layer.group_send(...)`. Everything here is backend-neutral; `herald-redis` provides
//! layers that are wire-compatible with Python's `channels_redis`.
//!
//! # Layout
//! * [`error`] — the one opaque [`Error`] with [`ErrorKind`], shared across the trait boundary so
//!   callers can branch on `is_channel_full()` whatever the backend.
//! * [`value`] — [`Value`], every msgpack value Python can send (str and bytes kept apart).
//! * [`message`] — [`Message`], the cheaply clonable dict that travels through a layer.
//! * [`names`] — Channels' channel/group name validation and `non_local_name`.
//! * [`presence`] — the [`Presence`](presence::Presence) trait (live sockets per user, with a TTL so
//!   a crashed instance leaves no ghosts) and its in-memory implementation.
//! * [`capacity`] — `channel_capacity` glob/regex rules, first match wins.
//! * [`pyjson`] — Python `json.dumps` string and float text, for the layer's json serializer
//!   and the server's frames alike; and `json.loads`, for what clients send.
//! * [`layer`] — the [`ChannelLayer`] trait.
//! * [`memory`] — [`InMemoryLayer`], for tests and single-process use.
//!
//! The user guide's application protocol (the `user.*` builders, `Messenger`, the delivery
//! probes) is not here: it is the `herald-messaging` crate, on top of this one.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use herald_core::{ChannelLayer, InMemoryLayer, Message};
//! let layer = InMemoryLayer::new(Default::default()).unwrap();
//! layer.send("test-channel", Message::with_type("hello")).await.unwrap();
//! let msg = layer.receive("test-channel").await.unwrap();
//! assert_eq!(msg.msg_type(), Some("hello"));
//! # });
//! ```

pub mod capacity;
pub mod error;
pub mod history;
pub mod layer;
pub mod memory;
pub mod message;
pub mod names;
pub mod presence;
pub mod pyjson;
pub mod sync;
pub mod value;

pub use error::{Error, ErrorKind, Result};
pub use history::{Offset, Position, Recorded, Replay};
pub use layer::{ChannelLayer, DEFAULT_NEW_CHANNEL_PREFIX, Deliver, GroupSendReport};
pub use memory::{InMemoryConfig, InMemoryLayer};
pub use message::{ASGI_CHANNEL_KEY, Message};
pub use value::{Map, Value};
