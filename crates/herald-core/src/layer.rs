//! The [`ChannelLayer`] trait: the operations of Channels' `BaseChannelLayer` plus groups/flush.

use async_trait::async_trait;

use crate::error::Result;
use crate::message::Message;

/// The default `prefix` of [`ChannelLayer::new_channel`], as in Python (`"specific"`).
pub const DEFAULT_NEW_CHANNEL_PREFIX: &str = "specific";

/// What a `group_send` did, for callers that want more than Python's `None`.
///
/// Python only logs `"<over> of <members> channels over capacity in group <g>"` at INFO and
/// returns nothing; over-capacity deliveries are dropped, never raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSendReport {
    /// Channels that were members of the group when the message was sent.
    pub members: usize,
    /// Deliveries dropped because the target channel (or its shared process key) was full.
    pub over_capacity: usize,
}

impl GroupSendReport {
    /// A report for `members` members of which `over_capacity` deliveries were dropped.
    pub fn new(members: usize, over_capacity: usize) -> Self {
        GroupSendReport {
            members,
            over_capacity,
        }
    }
}

/// A channel layer: named queues plus groups of channels, as in Django Channels.
///
/// Implemented by [`InMemoryLayer`](crate::InMemoryLayer) (one process) and by the Redis layers
/// in `herald-redis` (wire-compatible with Python `channels_redis`). Servers hold an
/// `Arc<dyn ChannelLayer>` so the backend is chosen at start-up.
///
/// All names are validated with Channels' rules before anything else happens; a bad name is an
/// error of kind [`InvalidName`](crate::ErrorKind::InvalidName).
#[async_trait]
pub trait ChannelLayer: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a new process-specific channel name (`"<prefix>.<process id>!<local id>"`) that
    /// only this layer instance can [`receive`](Self::receive) on.
    async fn new_channel(&self, prefix: &str) -> Result<String>;

    /// Sends a message to a channel.
    ///
    /// # Errors
    /// [`ChannelFull`](crate::ErrorKind::ChannelFull) if the channel is at capacity (nothing is
    /// stored); `InvalidName`; `InvalidMessage` if the message contains `__asgi_channel__`.
    async fn send(&self, channel: &str, message: Message) -> Result<()>;

    /// Waits for the next message on a channel.
    ///
    /// # Cancellation safety
    /// Cancel-safe: a message is only taken from the channel's buffer when the future completes,
    /// so dropping the future (e.g. in a `select!`) loses nothing.
    async fn receive(&self, channel: &str) -> Result<Message>;

    /// Adds a channel to a group (refreshing its membership time if already present).
    async fn group_add(&self, group: &str, channel: &str) -> Result<()>;

    /// Removes a channel from a group; not an error if it was not a member.
    async fn group_discard(&self, group: &str, channel: &str) -> Result<()>;

    /// Sends a message to every channel in a group. Full channels are skipped, not an error.
    async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport>;

    /// Deletes every channel, group and buffered message of this layer.
    async fn flush(&self) -> Result<()>;

    /// Forgets a local channel: its buffered messages are dropped and memory is released.
    ///
    /// Herald extension (Python discards a buffer when its `receive` is cancelled); servers call
    /// it when a connection ends.
    fn close_channel(&self, channel: &str);

    /// Checks that the layer's backend answers (e.g. a Redis `PING` on every shard), within a
    /// bounded time. Herald extension, used by the server's health monitor for readiness; the
    /// default (an in-process layer) is always reachable.
    ///
    /// # Errors
    /// The backend's error (for Redis: [`Redis`](crate::ErrorKind::Redis) or
    /// [`Timeout`](crate::ErrorKind::Timeout)) naming what did not answer.
    ///
    /// # Cancellation safety
    /// Cancel-safe: it only reads.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
