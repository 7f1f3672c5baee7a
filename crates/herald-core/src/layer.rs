//! The [`ChannelLayer`] trait: the operations of Channels' `BaseChannelLayer` plus groups/flush.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::history::{Position, Recorded, Replay};
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

/// Where a layer hands the messages of an [attached](ChannelLayer::attach) channel.
///
/// A layer calls [`deliver`](Self::deliver) from the task that took the messages in (a Redis
/// reader, or the sender itself for the in-memory layer), in the order it took them in, and
/// never concurrently for channels it reads together. So an implementation must not block or
/// wait: it queues, bounded, and wakes whoever drains the queue.
pub trait Deliver: Send + Sync + std::fmt::Debug + 'static {
    /// The next messages for the channel, oldest first (consecutive messages for the same
    /// channel may come in one call).
    fn deliver(&self, messages: &[Message]);

    /// The next recorded messages of a group's history (see
    /// [`ChannelLayer::history_channel`]), oldest first, with their positions. The default
    /// drops the positions and calls [`deliver`](Self::deliver).
    fn deliver_recorded(&self, recorded: &[Recorded]) {
        let messages: Vec<Message> = recorded.iter().map(|r| r.message.clone()).collect();
        self.deliver(&messages);
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

    /// Hands every message for `channel`, a process-specific channel this layer made with
    /// [`new_channel`](Self::new_channel), to `sink` as the layer takes it in, instead of
    /// buffering it for [`receive`](Self::receive). Messages already buffered go to `sink`
    /// first. [`close_channel`](Self::close_channel) detaches it.
    ///
    /// Order: the messages of all the channels attached to one layer reach their sinks in one
    /// order, the order in which the layer took them in — for the Redis layer, the order of
    /// the senders' scores within each shard, as Python's one sorted set per process gives a
    /// Daphne consumer. A socket whose own channel and group channels share one sink therefore
    /// sees one sender's messages in the order they were sent, whichever groups they went to,
    /// provided the channels were made with prefixes from
    /// [`colocated_prefixes`](Self::colocated_prefixes).
    ///
    /// Herald extension (Channels has only `receive`): a handle on the hot path costs no name
    /// check and no lookup per message.
    ///
    /// # Errors
    /// `InvalidName` if `channel` is not a process-specific channel of this layer.
    async fn attach(&self, channel: &str, sink: Arc<dyn Deliver>) -> Result<()>;

    /// `count` channel prefixes whose channels this layer reads together with the channels of
    /// [`DEFAULT_NEW_CHANNEL_PREFIX`], so that [`attach`](Self::attach)'s order holds across
    /// all of them. `base.k0`, `base.k1`, … unless the layer must choose (the Redis layer
    /// with several shards picks names that its senders write to one shard).
    fn colocated_prefixes(&self, base: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{base}.k{i}")).collect()
    }

    /// Adds a channel to a group (refreshing its membership time if already present).
    async fn group_add(&self, group: &str, channel: &str) -> Result<()>;

    /// Removes a channel from a group; not an error if it was not a member.
    async fn group_discard(&self, group: &str, channel: &str) -> Result<()>;

    /// Sends a message to every channel in a group. Full channels are skipped, not an error.
    async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport>;

    /// [`group_send`](Self::group_send) of each `(group, message)`, in the given order: one
    /// result per entry, in the same order. A channel gets its messages in the order given
    /// here, whichever of its groups they went to; a full channel is skipped as by
    /// `group_send`; an invalid name or message fails only its own entry.
    ///
    /// Herald extension, for senders of many messages at once (per-user notifications): the
    /// Redis layer puts the calls into one pipeline per shard instead of one round trip each.
    /// The default sends them one after the other.
    async fn group_send_many(&self, sends: Vec<(String, Message)>) -> Vec<Result<GroupSendReport>> {
        let mut results = Vec::with_capacity(sends.len());
        for (group, message) in sends {
            results.push(self.group_send(&group, message).await);
        }
        results
    }

    /// Deletes every channel, group and buffered message of this layer.
    async fn flush(&self) -> Result<()>;

    /// Forgets a local channel: its buffered messages are dropped and memory is released.
    ///
    /// Herald extension (Python discards a buffer when its `receive` is cancelled); servers call
    /// it when a connection ends.
    fn close_channel(&self, channel: &str);

    /// Gives back what this layer holds for the whole fleet before the process exits (the
    /// Redis layer with history: the capture lease, so another server takes over at once).
    /// Herald extension; the default has nothing to give back. Python layers have `close()`
    /// for their connection pools; this one's connections close when it is dropped.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// The channel that records `group`'s messages in a history shared by every server on this
    /// layer, if the layer keeps one for this group (`None` by default). Added to the group
    /// (`group_add`) and [attached](Self::attach), it delivers each message sent to the group
    /// once, through [`Deliver::deliver_recorded`], with its [`Position`].
    fn history_channel(&self, group: &str) -> Option<String> {
        let _ = group;
        None
    }

    /// What `group`'s history holds after `since` (without `since`: its latest message), or
    /// `None` if the layer keeps no history for the group (the default).
    async fn replay(&self, group: &str, since: Option<&Position>) -> Result<Option<Replay>> {
        let mut replays = self.replay_many(&[(group, since)]).await?;
        Ok(replays.pop().flatten())
    }

    /// [`replay`](Self::replay) for several groups, read at one moment: merged by offset,
    /// the replays are one prefix of the recorded history, and what comes after arrives
    /// live. One entry per target, `None` where the layer keeps no history (all, by default).
    async fn replay_many(
        &self,
        targets: &[(&str, Option<&Position>)],
    ) -> Result<Vec<Option<Replay>>> {
        Ok(vec![None; targets.len()])
    }

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
