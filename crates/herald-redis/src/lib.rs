//! A Redis channel layer for Herald, wire-compatible byte for byte with Python
//! `channels_redis` 4.3.0's `RedisChannelLayer`: Django processes and Herald servers can share
//! one Redis and exchange `send`, `group_send` and group memberships in both directions.
//!
//! # Layout
//! Every byte-level decision has its own module, each citing the Python it mirrors:
//! * [`config`] — [`RedisLayerConfig`], Python's kwargs and defaults, and the host forms.
//! * [`error`] — `herald_core`'s one [`Error`], re-exported, plus private `redis` conversions.
//! * [`keys`] — key layout: `prefix + non_local_name`, `prefix:group:<g>`, `$inflight`.
//! * [`hashing`] — the crc32 consistent hash that picks a shard.
//! * [`codec`] — msgpack/JSON bodies, the random prefix, Fernet encryption ([`fernet`]).
//! * [`scripts`] — the Lua scripts, as `const &str`.
//! * `connection` — per-shard connections (URL, host params, Sentinel; blocking reads apart).
//! * `receive` — reader tasks and the router into per-channel buffers; [`LayerStats`].
//! * `membership` — memberships of local channels, re-added after reconnects and periodically.
//! * `presence` — [`Presence`](herald_core::presence::Presence) for the layer: live sockets per
//!   user under `prefix:presence:*`, lapsing when an instance stops refreshing them.
//! * `layer` — [`RedisChannelLayer`], composing all of the above.
//!
//! ```no_run
//! # async fn demo() -> herald_redis::Result<()> {
//! use herald_core::{ChannelLayer, Message};
//! use herald_redis::{RedisChannelLayer, RedisLayerConfig};
//! let layer = RedisChannelLayer::new(RedisLayerConfig::default())?;
//! let channel = layer.new_channel("specific").await?;
//! layer.send(&channel, Message::with_type("hello")).await?;
//! assert_eq!(layer.receive(&channel).await?.msg_type(), Some("hello"));
//! # Ok(()) }
//! ```

pub mod codec;
pub mod config;
mod connection;
pub mod error;
pub mod fernet;
pub mod hashing;
pub mod keys;
mod layer;
mod membership;
mod presence;
pub mod pubsub;
mod receive;
pub mod scripts;

#[cfg(test)]
mod golden;

pub use codec::{Codec, SerializerFormat};
pub use config::{HostSpec, RedisLayerConfig, SentinelSpec};
pub use error::{Error, ErrorKind, Result};
pub use layer::RedisChannelLayer;
pub use pubsub::{RedisPubSubConfig, RedisPubSubLayer};
pub use receive::LayerStats;
