//! [`RedisPubSubLayer`]: a layer wire-compatible with Python's
//! `channels_redis.pubsub.RedisPubSubChannelLayer` (channels_redis 4.3.0, `pubsub.py`).
//!
//! This is a different protocol from [`RedisChannelLayer`](crate::RedisChannelLayer)'s sorted
//! sets, and the two do not interoperate: every channel and every group is a Redis Pub/Sub
//! channel, `send` and `group_send` are `PUBLISH`, and a process `SUBSCRIBE`s to the channels it
//! created and to the groups its channels joined. Nothing is stored in Redis: a message published
//! while no process is subscribed (or while the connection is down) is lost, there is no
//! capacity and no expiry.
//!
//! # Wire format (what a Python peer sees)
//! * `new_channel` names are `<prefix>specific.<32 hex>` (`asgispecific.<hex>` by default, no
//!   `!`), subscribed before the name is returned.
//! * A channel name is the Pub/Sub channel verbatim; a group `g` is the Pub/Sub channel
//!   `<prefix>__group__<g>` (`asgi__group__g`).
//! * The payload is the serializer's bytes (msgpack by default, or JSON), optionally a Fernet
//!   token, with **no** random prefix; Fernet tokens are decrypted without a TTL.
//! * The shard of a name is `crc32(name) & 0xFFF` scaled to the host count (the same function as
//!   the core layer), applied to the Pub/Sub channel name (for groups, to `asgi__group__g`).
//!
//! # Deviations from Python (all deliberate)
//! * Names are validated with Channels' rules (Python's pubsub layer validates nothing).
//! * A cancelled [`receive`](ChannelLayer::receive) loses nothing and keeps the subscription:
//!   Rust servers cancel `receive` in every `select!`, so cleanup belongs to
//!   [`close_channel`](ChannelLayer::close_channel), which unsubscribes the channel and removes
//!   it from its local groups. Python unsubscribes when `receive` is cancelled.
//! * A `new_channel` prefix without a trailing `.` gets one (`"specific"` → `asgispecific.<hex>`,
//!   as Python's default `"specific."` gives). Python concatenates a custom prefix as is.
//! * A payload that cannot be decrypted or decoded, or that is not a map, is logged and dropped
//!   instead of being raised out of `receive`.
//! * Each local channel buffers at most [`RedisPubSubConfig::channel_buffer`] messages, dropping
//!   the oldest (Python's per-channel queues are unbounded).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use herald_core::names::{random_hex_id, require_valid_channel_name, require_valid_group_name};
use herald_core::sync::lock;
use herald_core::{
    ASGI_CHANNEL_KEY, ChannelLayer, Deliver, Error, ErrorKind, GroupSendReport, Message, Result,
};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, debug_span, trace, warn};

use redis::aio::{PubSubSink, PubSubStream};

use crate::buffer::Buffer;
use crate::codec::{Codec, SerializerFormat};
use crate::config::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_HOST, DEFAULT_PREFIX, DEFAULT_RECONNECT_MAX_DELAY,
    DEFAULT_RECONNECT_MIN_DELAY, DEFAULT_RESPONSE_TIMEOUT, HostSpec,
};
use crate::connection::Shard as Connections;
use crate::error::{config_error, redis_error};
use crate::hashing::consistent_hash;
use crate::receive::Outage;

/// Default per-channel local buffer (Herald knob; Python's queues are unbounded).
pub const DEFAULT_CHANNEL_BUFFER: NonZeroUsize = NonZeroUsize::new(1000).unwrap();

/// Configuration of a [`RedisPubSubLayer`], mirroring the kwargs of Python's
/// `RedisPubSubChannelLayer` (`hosts`, `prefix`, `symmetric_encryption_keys`,
/// `serializer_format`), with the same defaults as [`RedisLayerConfig`](crate::RedisLayerConfig).
///
/// Python also accepts (and ignores) `on_disconnect`/`on_reconnect` and any other kwarg; they
/// have had no effect since channels_redis 4.0, so they have no counterpart here.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisPubSubConfig {
    /// Shards; the order is the shard index and must match every peer's (`hosts`).
    pub hosts: Vec<HostSpec>,
    /// Prepended to `new_channel` names and group channel names (`prefix`).
    pub prefix: String,
    /// Fernet keys; the first encrypts, all decrypt (`symmetric_encryption_keys`).
    pub symmetric_encryption_keys: Vec<Vec<u8>>,
    /// Payload serializer (`serializer_format`).
    pub serializer_format: SerializerFormat,
    /// Messages buffered per local channel before the oldest is dropped (Herald only).
    pub channel_buffer: NonZeroUsize,
    /// Response timeout of `PUBLISH`, `SUBSCRIBE` and `UNSUBSCRIBE`.
    pub response_timeout: Duration,
    /// Connect timeout.
    pub connection_timeout: Duration,
    /// First delay before re-making a lost subscriber connection; doubles up to
    /// `reconnect_max_delay`.
    pub reconnect_min_delay: Duration,
    /// Longest delay between two reconnection attempts.
    pub reconnect_max_delay: Duration,
}

impl Default for RedisPubSubConfig {
    fn default() -> Self {
        RedisPubSubConfig {
            hosts: vec![HostSpec::url(DEFAULT_HOST)],
            prefix: DEFAULT_PREFIX.to_owned(),
            symmetric_encryption_keys: Vec::new(),
            serializer_format: SerializerFormat::Msgpack,
            channel_buffer: DEFAULT_CHANNEL_BUFFER,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            reconnect_min_delay: DEFAULT_RECONNECT_MIN_DELAY,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
        }
    }
}

impl RedisPubSubConfig {
    /// Sets `hosts` (URLs convert directly; use [`HostSpec`] for the other forms).
    pub fn with_hosts<H: Into<HostSpec>>(mut self, hosts: impl IntoIterator<Item = H>) -> Self {
        self.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets `symmetric_encryption_keys` (`str` keys are used as their UTF-8 bytes).
    pub fn with_symmetric_encryption_keys<K: AsRef<[u8]>>(
        mut self,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        self.symmetric_encryption_keys = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// Sets `serializer_format`.
    pub fn with_serializer_format(mut self, format: SerializerFormat) -> Self {
        self.serializer_format = format;
        self
    }

    /// Sets the per-channel local buffer size.
    pub fn with_channel_buffer(mut self, size: NonZeroUsize) -> Self {
        self.channel_buffer = size;
        self
    }

    /// Sets the response timeout of Pub/Sub commands.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets the reconnect backoff bounds.
    pub fn with_reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min_delay = min;
        self.reconnect_max_delay = max;
        self
    }
}

/// The `new_channel` name: `prefix + channel_prefix + uuid4 hex`, mirroring `pubsub.py`
/// `RedisPubSubLoopLayer.new_channel` (`f"{self.prefix}{prefix}{uuid.uuid4().hex}"`).
///
/// Deviation: a `channel_prefix` without a trailing `.` gets one, so the trait's default
/// `"specific"` yields Python's default `asgispecific.<hex>`.
fn specific_name(layer_prefix: &str, channel_prefix: &str) -> String {
    let dot = if channel_prefix.ends_with('.') {
        ""
    } else {
        "."
    };
    format!("{layer_prefix}{channel_prefix}{dot}{}", random_hex_id())
}

/// The Pub/Sub channel of a group: `prefix + "__group__" + group`, mirroring `pubsub.py`
/// `RedisPubSubLoopLayer._get_group_channel_name`.
fn group_channel(layer_prefix: &str, group: &str) -> String {
    format!("{layer_prefix}__group__{group}")
}

/// A channel layer over Redis Pub/Sub, wire-compatible with Python's `RedisPubSubChannelLayer`.
///
/// Cheap to clone (one shared state). Connections are opened lazily: one publishing connection
/// and one subscriber connection per shard. A lost subscriber connection is re-made in the
/// background (backing off between the configured reconnect delays) and every channel and
/// group is subscribed again; messages published meanwhile are lost, as in Python.
///
/// ```no_run
/// # async fn run() -> herald_core::Result<()> {
/// use herald_core::{ChannelLayer, Message};
/// use herald_redis::{RedisPubSubConfig, RedisPubSubLayer};
///
/// let layer = RedisPubSubLayer::new(
///     RedisPubSubConfig::default().with_hosts(["redis://127.0.0.1:6379"]),
/// )?;
/// let me = layer.new_channel("specific").await?; // "asgispecific.<hex>", already subscribed
/// layer.group_add("chat", &me).await?;
/// layer.group_send("chat", Message::with_type("chat.message").with("text", "hi")).await?;
/// let msg = layer.receive(&me).await?;
/// assert_eq!(msg.msg_type(), Some("chat.message"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisPubSubLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    prefix: String,
    connection_timeout: Duration,
    response_timeout: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    codec: Codec,
    channel_buffer: usize,
    shards: Vec<Shard>,
    local: Mutex<Local>,
}

/// What this process listens to. Python: `RedisPubSubLoopLayer.channels` / `.groups`.
#[derive(Debug, Default)]
struct Local {
    /// Local channel name → its inbox.
    channels: HashMap<String, Arc<Buffer>>,
    /// Group Pub/Sub channel (`asgi__group__g`) → local member channel names.
    groups: HashMap<String, HashSet<String>>,
}

impl Local {
    /// True if nothing local needs a subscription to `name` any more.
    fn unused(&self, name: &str) -> bool {
        !self.channels.contains_key(name) && !self.groups.contains_key(name)
    }
}

/// One Redis host: a publishing connection and a subscriber connection.
/// Python: `RedisSingleShardConnection`.
#[derive(Debug)]
struct Shard {
    /// How the host is reached (URL, params or Sentinel) and the shared connection that
    /// publishes, re-made after a connection error like the core layer's.
    conn: Connections,
    subscriber: tokio::sync::Mutex<Subscriber>,
}

#[derive(Debug, Default)]
struct Subscriber {
    /// Pub/Sub channels this shard must be subscribed to (Python `_subscribed_to`); re-sent
    /// after a reconnect.
    names: HashSet<String>,
    /// The live connection's command half, if connected.
    sink: Option<PubSubSink>,
    /// Bumped on every new connection and on flush, so a stale reader never reconnects.
    generation: u64,
    /// The task reading the live connection.
    reader: Option<AbortHandle>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Some(reader) = self.subscriber.get_mut().reader.take() {
            reader.abort();
        }
    }
}

impl RedisPubSubLayer {
    /// Builds a layer; no connection is made until the first operation.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] if `hosts` is empty, a host is not a valid Redis URL, or an
    /// encryption key is unusable.
    pub fn new(config: RedisPubSubConfig) -> Result<Self> {
        if config.hosts.is_empty() {
            return Err(config_error("hosts must list at least one Redis host"));
        }
        if config.reconnect_min_delay.is_zero()
            || config.reconnect_max_delay < config.reconnect_min_delay
        {
            return Err(config_error(
                "reconnect delays must be positive and min <= max",
            ));
        }
        let shards = config
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                Ok(Shard {
                    conn: Connections::new(
                        index,
                        host,
                        config.response_timeout,
                        config.connection_timeout,
                    )?,
                    subscriber: tokio::sync::Mutex::new(Subscriber::default()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Python's pubsub serializer: no random prefix, Fernet without TTL.
        let codec = Codec::new(config.serializer_format, 0)
            .with_encryption_keys(&config.symmetric_encryption_keys)
            .with_ttl(None);
        Ok(RedisPubSubLayer {
            inner: Arc::new(Inner {
                prefix: config.prefix,
                connection_timeout: config.connection_timeout,
                response_timeout: config.response_timeout,
                reconnect_min_delay: config.reconnect_min_delay,
                reconnect_max_delay: config.reconnect_max_delay,
                codec,
                channel_buffer: config.channel_buffer.get(),
                shards,
                local: Mutex::new(Local::default()),
            }),
        })
    }

    /// The Pub/Sub channel that carries group `group` (`<prefix>__group__<group>`).
    pub fn group_channel(&self, group: &str) -> String {
        group_channel(&self.inner.prefix, group)
    }

    /// The shard index (position in `hosts`) that carries Pub/Sub channel `name`.
    pub fn shard_of(&self, name: &str) -> usize {
        self.inner.shard_of(name)
    }
}

impl Inner {
    fn shard_of(&self, name: &str) -> usize {
        consistent_hash(name.as_bytes(), self.shards.len())
    }

    /// `PUBLISH name payload` on the name's shard; the number of subscribed connections that
    /// got it. A connection cached before Redis restarted fails once and is re-made, as
    /// redis-py's client reconnects on the next command.
    async fn publish(&self, name: &str, payload: &[u8]) -> Result<usize> {
        let shard = &self.shards[self.shard_of(name)];
        shard
            .conn
            .run("publish", |mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(name)
                    .arg(payload)
                    .query_async::<usize>(&mut conn)
                    .await
            })
            .await
    }

    /// Makes sure shard `index` is subscribed to `name`, connecting if needed.
    async fn subscribe(self: &Arc<Self>, name: &str) -> Result<()> {
        let index = self.shard_of(name);
        // Held across SUBSCRIBE (and a reconnect): per-shard subscription changes are
        // serialised, as by Python's per-shard asyncio.Lock, so `names` always matches what the
        // live connection is subscribed to.
        let mut sub = self.shards[index].subscriber.lock().await;
        if sub.names.contains(name) {
            return Ok(());
        }
        let mut sink = self.connect(index, &mut sub).await?;
        self.bounded("subscribe", self.response_timeout, sink.subscribe(name))
            .await?;
        sub.names.insert(name.to_owned());
        Ok(())
    }

    /// Unsubscribes `name` unless something local still needs it. Checking under the shard
    /// lock closes the race with a concurrent `group_add`/`receive` of the same name, which
    /// records its need before taking that lock.
    async fn unsubscribe_if_unused(&self, name: &str) -> Result<()> {
        let index = self.shard_of(name);
        // Held across UNSUBSCRIBE, see `subscribe`.
        let mut sub = self.shards[index].subscriber.lock().await;
        if !lock(&self.local).unused(name) || !sub.names.remove(name) {
            return Ok(());
        }
        match sub.sink.clone() {
            Some(mut sink) => {
                self.bounded("unsubscribe", self.response_timeout, sink.unsubscribe(name))
                    .await
            }
            // Not connected: the name is gone from `names`, so no reconnect subscribes it.
            None => Ok(()),
        }
    }

    /// The live subscriber connection of shard `index`, making one (and re-subscribing every
    /// name in `sub.names`) if there is none.
    ///
    /// Returns a boxed `Send` future: `connect` spawns `read`, which may call `reconnect`, which
    /// calls `connect`; naming the type breaks that cycle for the compiler's `Send` inference.
    fn connect<'a>(
        self: &'a Arc<Self>,
        index: usize,
        sub: &'a mut Subscriber,
    ) -> Pin<Box<dyn Future<Output = Result<PubSubSink>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(sink) = &sub.sink {
                return Ok(sink.clone());
            }
            let client = self.shards[index]
                .conn
                .client()
                .await
                .map_err(|err| redis_error("connect", err))?;
            let pubsub = self
                .bounded(
                    "connect",
                    self.connection_timeout,
                    client.get_async_pubsub(),
                )
                .await?;
            let (mut sink, stream) = pubsub.split();
            if !sub.names.is_empty() {
                let names: Vec<&String> = sub.names.iter().collect();
                self.bounded("subscribe", self.response_timeout, sink.subscribe(names))
                    .await?;
            }
            sub.generation += 1;
            let reader = tokio::spawn(read(Arc::downgrade(self), index, sub.generation, stream));
            sub.reader = Some(reader.abort_handle());
            sub.sink = Some(sink.clone());
            debug!(
                shard = index,
                subscriptions = sub.names.len(),
                "pubsub subscriber connected"
            );
            Ok(sink)
        })
    }

    /// Awaits a redis call for at most `limit`. The Pub/Sub connection of redis-rs has no
    /// response timeout of its own, and a half-open socket must not hang a `group_add`.
    async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(reply) => reply.map_err(|err| redis_error(what, err)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("redis {what} timed out after {limit:?}"),
            )),
        }
    }

    /// Hands one published payload to the local channel, or to every local member of the
    /// group. Python: `RedisSingleShardConnection._receive_message` (channels first, then
    /// groups).
    fn dispatch(&self, name: &str, payload: &[u8]) {
        let targets: Vec<Arc<Buffer>> = {
            let local = lock(&self.local);
            if let Some(inbox) = local.channels.get(name) {
                vec![inbox.clone()]
            } else if let Some(members) = local.groups.get(name) {
                members
                    .iter()
                    .filter_map(|member| local.channels.get(member).cloned())
                    .collect()
            } else {
                Vec::new()
            }
        };
        if targets.is_empty() {
            return;
        }
        let message = match self.codec.decode(payload) {
            Ok(message) => message,
            Err(err) => {
                warn!(channel = name, error = %err, "dropping undecodable pubsub message");
                return;
            }
        };
        trace!(
            channel = name,
            size = payload.len(),
            fanout = targets.len(),
            "pubsub message"
        );
        for inbox in targets {
            inbox.push(message.clone());
        }
    }

    /// The inbox of `name`, creating it and subscribing if it is new.
    async fn open(self: &Arc<Self>, name: &str) -> Result<Arc<Buffer>> {
        let (inbox, created) = {
            let mut local = lock(&self.local);
            match local.channels.get(name) {
                Some(inbox) => (inbox.clone(), false),
                None => {
                    let inbox = Arc::new(Buffer::new(self.channel_buffer));
                    local.channels.insert(name.to_owned(), inbox.clone());
                    (inbox, true)
                }
            }
        };
        if let Err(err) = self.subscribe(name).await {
            if created {
                lock(&self.local).channels.remove(name);
                inbox.close();
            }
            return Err(err);
        }
        Ok(inbox)
    }
}

/// Reads one subscriber connection until it ends, then reconnects.
async fn read(layer: Weak<Inner>, index: usize, generation: u64, mut stream: PubSubStream) {
    while let Some(msg) = stream.next().await {
        let Some(inner) = layer.upgrade() else {
            return;
        };
        inner.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
    }
    drop(stream);
    let mut outage = Outage::new("pubsub subscriber", index);
    outage.failed(&"connection lost");
    reconnect(layer, index, generation, outage).await;
}

/// Reconnects a lost subscriber connection with backoff until connected, flushed, superseded,
/// left with nothing to listen to, or the layer is dropped (only a `Weak` is held while
/// sleeping, so a dropped layer is not kept alive by a Redis that stays down).
async fn reconnect(layer: Weak<Inner>, index: usize, generation: u64, mut outage: Outage) {
    let mut delay = Duration::ZERO;
    loop {
        let Some(inner) = layer.upgrade() else {
            return;
        };
        {
            // Held across the reconnect attempt, see `Inner::subscribe`.
            let mut sub = inner.shards[index].subscriber.lock().await;
            if sub.generation != generation {
                return;
            }
            sub.sink = None;
            if sub.names.is_empty() {
                return;
            }
            match inner.connect(index, &mut sub).await {
                Ok(_) => {
                    outage.recovered();
                    return;
                }
                // Logged when the connection went down and as reminders, not per attempt.
                Err(err) => outage.failed(&err),
            }
        }
        delay = (delay * 2).clamp(inner.reconnect_min_delay, inner.reconnect_max_delay);
        drop(inner);
        tokio::time::sleep(delay).await;
    }
}

fn check_message(message: &Message) -> Result<()> {
    if message.contains_key(ASGI_CHANNEL_KEY) {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            format!("message must not contain the reserved key {ASGI_CHANNEL_KEY}"),
        ));
    }
    Ok(())
}

#[async_trait]
impl ChannelLayer for RedisPubSubLayer {
    /// Creates `<prefix><channel prefix>.<32 hex>` and subscribes to it before returning.
    async fn new_channel(&self, prefix: &str) -> Result<String> {
        let name = specific_name(&self.inner.prefix, prefix);
        require_valid_channel_name(&name)?;
        self.inner.open(&name).await?;
        Ok(name)
    }

    /// `PUBLISH <channel> <payload>` on the channel's shard. Succeeds even if nobody listens.
    async fn send(&self, channel: &str, message: Message) -> Result<()> {
        require_valid_channel_name(channel)?;
        check_message(&message)?;
        let payload = self.inner.codec.encode(&message)?;
        let shard = self.inner.shard_of(channel);
        self.inner
            .publish(channel, &payload)
            .instrument(debug_span!("pubsub.send", channel = %channel, shard))
            .await?;
        Ok(())
    }

    /// Waits for the next message; subscribes first if `channel` is not local yet (so a
    /// general channel is a broadcast to every subscribed process, not a work queue).
    async fn receive(&self, channel: &str) -> Result<Message> {
        require_valid_channel_name(channel)?;
        let existing = lock(&self.inner.local).channels.get(channel).cloned();
        let inbox = match existing {
            Some(inbox) => inbox,
            None => self.inner.open(channel).await?,
        };
        inbox.pop().await.ok_or_else(|| {
            Error::new(
                ErrorKind::Closed,
                "pubsub channel was closed or is attached",
            )
        })
    }

    /// Messages of one shard's subscriber connection reach the sinks in the order Redis
    /// published them; there is no order across shards (as in Python).
    async fn attach(&self, channel: &str, sink: Arc<dyn Deliver>) -> Result<()> {
        require_valid_channel_name(channel)?;
        let inbox = lock(&self.inner.local)
            .channels
            .get(channel)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidName,
                    format!("attach() needs a channel made by this layer, not {channel:?}"),
                )
            })?;
        inbox.attach(sink);
        Ok(())
    }

    /// Records local membership and subscribes to the group's Pub/Sub channel.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] if `channel` was not created (or received on) by this layer:
    /// Pub/Sub membership is per process, as Python's `RuntimeError` says.
    async fn group_add(&self, group: &str, channel: &str) -> Result<()> {
        require_valid_group_name(group)?;
        require_valid_channel_name(channel)?;
        let name = self.group_channel(group);
        let added = {
            let mut local = lock(&self.inner.local);
            if !local.channels.contains_key(channel) {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!("group_add() needs a channel of this process, not {channel:?}"),
                ));
            }
            local
                .groups
                .entry(name.clone())
                .or_default()
                .insert(channel.to_owned())
        };
        let span = debug_span!("pubsub.group_add", group = %group, shard = self.shard_of(&name));
        if let Err(err) = self.inner.subscribe(&name).instrument(span).await {
            if added {
                let mut local = lock(&self.inner.local);
                if let Some(members) = local.groups.get_mut(&name) {
                    members.remove(channel);
                    if members.is_empty() {
                        local.groups.remove(&name);
                    }
                }
            }
            return Err(err);
        }
        Ok(())
    }

    /// Forgets local membership; unsubscribes when the last local member leaves.
    async fn group_discard(&self, group: &str, channel: &str) -> Result<()> {
        require_valid_group_name(group)?;
        require_valid_channel_name(channel)?;
        let name = self.group_channel(group);
        let now_empty = {
            let mut local = lock(&self.inner.local);
            let Some(members) = local.groups.get_mut(&name) else {
                return Ok(());
            };
            if !members.remove(channel) {
                return Ok(());
            }
            let empty = members.is_empty();
            if empty {
                local.groups.remove(&name);
            }
            empty
        };
        if now_empty {
            let span =
                debug_span!("pubsub.group_discard", group = %group, shard = self.shard_of(&name));
            self.inner
                .unsubscribe_if_unused(&name)
                .instrument(span)
                .await?;
        }
        Ok(())
    }

    /// `PUBLISH <prefix>__group__<group> <payload>`.
    ///
    /// The report's `members` is the number of subscribed *connections* (processes) that got
    /// the message, as `PUBLISH` returns it: Pub/Sub membership is not visible in Redis.
    async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport> {
        require_valid_group_name(group)?;
        check_message(&message)?;
        let payload = self.inner.codec.encode(&message)?;
        let name = self.group_channel(group);
        let span = debug_span!(
            "pubsub.group_send",
            group = %group,
            shard = self.shard_of(&name),
            fanout = tracing::field::Empty
        );
        let receivers = self
            .inner
            .publish(&name, &payload)
            .instrument(span.clone())
            .await?;
        span.record("fanout", receivers);
        Ok(GroupSendReport::new(receivers, 0))
    }

    /// Forgets every local channel and group (pending `receive`s fail with
    /// [`ErrorKind::Closed`]) and closes all connections. Python: `flush` — nothing is deleted
    /// in Redis because nothing is stored there. The layer stays usable.
    async fn flush(&self) -> Result<()> {
        let old = std::mem::take(&mut *lock(&self.inner.local));
        for inbox in old.channels.values() {
            inbox.close();
        }
        for shard in &self.inner.shards {
            {
                // Held while tearing down, see `Inner::subscribe`.
                let mut sub = shard.subscriber.lock().await;
                sub.names.clear();
                sub.sink = None;
                sub.generation += 1;
                if let Some(reader) = sub.reader.take() {
                    reader.abort();
                }
            }
        }
        Ok(())
    }

    /// Closes a local channel: pending `receive`s fail with [`ErrorKind::Closed`], it leaves
    /// its local groups, and the channel (and any group left without local members) is
    /// unsubscribed in the background.
    fn close_channel(&self, channel: &str) {
        let mut unused = Vec::new();
        {
            let mut local = lock(&self.inner.local);
            if let Some(inbox) = local.channels.remove(channel) {
                inbox.close();
                unused.push(channel.to_owned());
            }
            local.groups.retain(|group, members| {
                if members.remove(channel) && members.is_empty() {
                    unused.push(group.clone());
                    return false;
                }
                true
            });
        }
        if unused.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            debug!("close_channel outside a runtime, subscriptions stay until flush");
            return;
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            for name in unused {
                if let Err(err) = inner.unsubscribe_if_unused(&name).await {
                    debug!(error = %err, "pubsub unsubscribe after close_channel failed");
                }
            }
        });
    }

    /// `PING` on every shard at once, each bounded (see `connection::ping_all`).
    async fn ping(&self) -> Result<()> {
        crate::connection::ping_all(self.inner.shards.iter().map(|s| &s.conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_channel_names_match_python() {
        let name = specific_name("asgi", "specific");
        assert!(name.starts_with("asgispecific."), "{name}");
        let hex = &name["asgispecific.".len()..];
        assert_eq!(hex.len(), 32);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(!name.contains('!'));
        assert!(specific_name("asgi", "specific.").starts_with("asgispecific."));
        assert_eq!(specific_name("asgi", "specific.").len(), name.len());
    }

    #[test]
    fn group_channel_matches_python() {
        assert_eq!(group_channel("asgi", "chat"), "asgi__group__chat");
        assert_eq!(group_channel("myapp", "user_1"), "myapp__group__user_1");
    }

    #[test]
    fn empty_hosts_are_rejected() {
        let err =
            RedisPubSubLayer::new(RedisPubSubConfig::default().with_hosts(Vec::<String>::new()))
                .unwrap_err();
        assert!(err.is_config());
    }

    #[test]
    fn python_defaults() {
        let config = RedisPubSubConfig::default();
        assert_eq!(config.hosts, [HostSpec::url("redis://localhost:6379")]);
        assert_eq!(config.prefix, "asgi");
        assert!(config.symmetric_encryption_keys.is_empty());
    }
}
