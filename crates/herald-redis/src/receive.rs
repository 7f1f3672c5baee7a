//! The receive path: reader tasks that drain Redis, and the router that hands messages to
//! per-channel buffers.
//!
//! * **Specific channels** (`prefix.<client prefix>!local`): all channels of this layer with
//!   one `new_channel` prefix share one Redis key (`asgispecific.<cp>!`). One reader task per
//!   key *per shard* drains it — every shard when there are ≥ 2, because Python's `send()`
//!   hashes the full channel name and so writes to arbitrary shards. A
//!   reader pops many messages per round trip (`BZMPOP <brpop_timeout> 1 key MIN COUNT N` on
//!   Redis ≥ 7; `ZPOPMIN key N` then `BZPOPMIN key <brpop_timeout>` when empty on older
//!   servers) and routes each by its
//!   `__asgi_channel__` (a string after `send`, a list after `group_send`) into bounded
//!   buffers. A full buffer drops its oldest message (Python's `BoundedQueue`), so a slow
//!   channel never blocks the others or the reader.
//! * **General channels** (no `!`): a work queue shared with other processes. A reader task
//!   per channel pops only while some `receive` is waiting (like Python's `receive_single`,
//!   which BZPOPMINs one round-robin shard until a message arrives), and parks what it popped in
//!   the channel's buffer so a cancelled `receive` loses nothing.
//! * Garbage members (short, bad msgpack/JSON, bad Fernet token, missing or odd
//!   `__asgi_channel__`) are counted, logged at warn without payload, and skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::sync::lock;
use herald_core::{ASGI_CHANNEL_KEY, Deliver, Message, Recorded, Value};
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, trace, warn};

use crate::buffer::Buffer;
use crate::codec::{Codec, DecodeError};
use crate::connection::Shard;
use crate::history::{History, HistoryConfig};
use crate::keys::Keys;

/// A point-in-time copy of the layer's counters, for a server's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Members popped from Redis and decoded successfully.
    pub received: u64,
    /// Messages handed to a local buffer (a list target counts once per listed local channel).
    pub delivered: u64,
    /// Members shorter than the random prefix.
    pub decode_short_member: u64,
    /// Members whose Fernet token was rejected (bad key, expired, corrupt).
    pub decode_fernet: u64,
    /// Members whose msgpack/JSON body was invalid or not a map.
    pub decode_body: u64,
    /// Members on a specific key without a usable `__asgi_channel__` (missing, or not a str or
    /// a list of str).
    pub decode_channel: u64,
    /// Messages dropped because a local buffer was full (oldest dropped first).
    pub buffer_drops: u64,
    /// Messages for local channels that are unknown (closed or never created here).
    pub unknown_channel_drops: u64,
    /// Successful reconnects of reader connections after a failure.
    pub reconnects: u64,
    /// Memberships re-added (periodic refresh and after reconnects), counted per member.
    pub memberships_refreshed: u64,
    /// History messages this server took out of the history keys into the log.
    pub history_captured: u64,
    /// History messages this server recorded in their group's history first (summed over the
    /// servers of a fleet: each message once).
    pub history_recorded: u64,
    /// History messages handed back by replays.
    pub history_replayed: u64,
    /// Replays that could not cover the asked gap (other epoch, or trimmed).
    pub history_unrecoverable: u64,
    /// Log entries gone (trimmed) before this server could record them.
    pub history_log_missed: u64,
}

impl LayerStats {
    /// All decode failures together.
    pub fn decode_errors(&self) -> u64 {
        self.decode_short_member + self.decode_fernet + self.decode_body + self.decode_channel
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) decode_short_member: AtomicU64,
    pub(crate) decode_fernet: AtomicU64,
    pub(crate) decode_body: AtomicU64,
    pub(crate) decode_channel: AtomicU64,
    pub(crate) buffer_drops: AtomicU64,
    pub(crate) unknown_channel_drops: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) memberships_refreshed: AtomicU64,
    pub(crate) history_captured: AtomicU64,
    pub(crate) history_recorded: AtomicU64,
    pub(crate) history_replayed: AtomicU64,
    pub(crate) history_unrecoverable: AtomicU64,
    pub(crate) history_log_missed: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> LayerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LayerStats {
            received: get(&self.received),
            delivered: get(&self.delivered),
            decode_short_member: get(&self.decode_short_member),
            decode_fernet: get(&self.decode_fernet),
            decode_body: get(&self.decode_body),
            decode_channel: get(&self.decode_channel),
            buffer_drops: get(&self.buffer_drops),
            unknown_channel_drops: get(&self.unknown_channel_drops),
            reconnects: get(&self.reconnects),
            memberships_refreshed: get(&self.memberships_refreshed),
            history_captured: get(&self.history_captured),
            history_recorded: get(&self.history_recorded),
            history_replayed: get(&self.history_replayed),
            history_unrecoverable: get(&self.history_unrecoverable),
            history_log_missed: get(&self.history_log_missed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn decode_error(&self, err: DecodeError) -> &'static str {
        match err {
            DecodeError::ShortMember => {
                Self::add(&self.decode_short_member, 1);
                "short_member"
            }
            DecodeError::Fernet(_) => {
                Self::add(&self.decode_fernet, 1);
                "fernet"
            }
            _ => {
                Self::add(&self.decode_body, 1);
                "body"
            }
        }
    }
}

/// Local channels by full name.
#[derive(Debug)]
pub(crate) struct Router {
    channels: Mutex<HashMap<String, Arc<Buffer>>>,
    capacity: usize,
}

impl Router {
    pub(crate) fn new(capacity: usize) -> Self {
        Router {
            channels: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The buffer of `channel`, created if needed.
    pub(crate) fn buffer(&self, channel: &str) -> Arc<Buffer> {
        let mut channels = lock(&self.channels);
        let buffer = channels
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Buffer::new(self.capacity)));
        Arc::clone(buffer)
    }

    /// Sends `channel`'s messages to `sink` from now on, the buffered ones first (see
    /// [`Buffer::attach`]).
    pub(crate) fn attach(&self, channel: &str, sink: Arc<dyn Deliver>) {
        self.buffer(channel).attach(sink);
    }

    /// Drops a channel's buffer and wakes its receivers with "closed".
    pub(crate) fn close(&self, channel: &str) -> bool {
        let removed = lock(&self.channels).remove(channel);
        if let Some(buffer) = &removed {
            buffer.close();
        }
        removed.is_some()
    }

    /// Empties every buffer (flush).
    pub(crate) fn clear_all(&self) {
        for buffer in lock(&self.channels).values() {
            buffer.clear();
        }
    }

    /// Number of registered channels.
    pub(crate) fn len(&self) -> usize {
        lock(&self.channels).len()
    }

    /// Delivers decoded messages, in order, to their target names. Consecutive messages for
    /// one channel go to it in one call, so an attached sink gets them as one batch. The
    /// router lock is held throughout, so a channel cannot be attached or closed halfway
    /// through a batch; a sink must not call back into the layer.
    fn deliver(&self, routed: Vec<(Target, Message)>, counters: &Counters) {
        let channels = lock(&self.channels);
        let mut run: Vec<Message> = Vec::new();
        let mut run_buffer: Option<&Arc<Buffer>> = None;
        let flush = |buffer: &Buffer, run: &mut Vec<Message>| {
            let dropped = buffer.push_all(run);
            Counters::add(&counters.buffer_drops, dropped as u64);
            Counters::add(&counters.delivered, run.len() as u64);
            run.clear();
        };
        for (target, message) in routed {
            for name in target.names() {
                let Some(buffer) = channels.get(name) else {
                    Counters::add(&counters.unknown_channel_drops, 1);
                    trace!(channel = %name, "message for unknown local channel dropped");
                    continue;
                };
                if !run_buffer.is_some_and(|b| Arc::ptr_eq(b, buffer))
                    && let Some(previous) = run_buffer.replace(buffer)
                {
                    flush(previous, &mut run);
                }
                run.push(message.clone());
            }
        }
        if let Some(buffer) = run_buffer {
            flush(buffer, &mut run);
        }
    }
}

impl Router {
    /// Hands recorded history messages to their (history) channels' buffers, consecutive ones
    /// for one channel in one call. A history channel nobody here attached is normal (this
    /// server has no socket in that group): skipped silently.
    pub(crate) fn deliver_recorded(
        &self,
        routed: impl IntoIterator<Item = (String, Recorded)>,
        counters: &Counters,
    ) {
        let channels = lock(&self.channels);
        let mut run: Vec<Recorded> = Vec::new();
        let mut run_buffer: Option<&Arc<Buffer>> = None;
        let flush = |buffer: &Buffer, run: &mut Vec<Recorded>| {
            let dropped = buffer.push_recorded(run);
            Counters::add(&counters.buffer_drops, dropped as u64);
            Counters::add(&counters.delivered, run.len() as u64);
            run.clear();
        };
        for (channel, recorded) in routed {
            let Some(buffer) = channels.get(&channel) else {
                continue;
            };
            if !run_buffer.is_some_and(|b| Arc::ptr_eq(b, buffer))
                && let Some(previous) = run_buffer.replace(buffer)
            {
                flush(previous, &mut run);
            }
            run.push(recorded);
        }
        if let Some(buffer) = run_buffer {
            flush(buffer, &mut run);
        }
    }
}

/// The local channel(s) a message names in `__asgi_channel__`.
enum Target {
    One(String),
    Many(Vec<String>),
}

impl Target {
    fn names(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Target::One(name) => (Some(name.as_str()), &[][..]),
            Target::Many(names) => (None, names.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// What the readers of one layer share: the decoder, the router, the counters, the shards, the
/// process keys to drain and how to wait. The layer owns one and hands it to every reader;
/// the readers report back only through [`ReaderEvent`]s.
pub(crate) struct Readers {
    pub(crate) codec: Codec,
    pub(crate) keys: Keys,
    pub(crate) shards: Arc<[Shard]>,
    pub(crate) router: Router,
    pub(crate) counters: Counters,
    brpop_timeout: Duration,
    receive_batch: usize,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    receive_rr: AtomicUsize,
    /// The process keys (`asgi<prefix>.<client prefix>!`) every shard's reader drains.
    process_keys: Mutex<Arc<[String]>>,
    wake_key: String,
    events: mpsc::UnboundedSender<ReaderEvent>,
    /// The recorded history, if configured (see `history.rs`).
    pub(crate) history: Option<History>,
    /// With `read_on_demand`: the `receive` calls waiting, which the process readers wait for.
    demand: Option<Demand>,
}

/// Receivers waiting on a layer that reads on demand.
#[derive(Debug, Default)]
struct Demand {
    waiting: AtomicUsize,
    changed: Notify,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("shards", &self.shards.len())
            .field("process_keys", &*lock(&self.process_keys))
            .finish_non_exhaustive()
    }
}

/// What a reader tells its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReaderEvent {
    /// The reader of this shard reconnected after a failure: Redis may have restarted without
    /// persistence, so the layer puts its group memberships back.
    Reconnected(usize),
}

/// How the readers read; see [`Readers::new`].
pub(crate) struct ReaderSettings {
    pub(crate) brpop_timeout: Duration,
    pub(crate) receive_batch: usize,
    pub(crate) reconnect_min_delay: Duration,
    pub(crate) reconnect_max_delay: Duration,
    /// The groups to record, if any.
    pub(crate) history: Option<HistoryConfig>,
    /// Pop from the process keys only while a `receive` waits (`RedisLayerConfig::read_on_demand`).
    pub(crate) read_on_demand: bool,
}

impl Readers {
    /// The readers' shared state; their events go to `events`.
    pub(crate) fn new(
        codec: Codec,
        keys: Keys,
        shards: Arc<[Shard]>,
        client_prefix: &str,
        capacity: usize,
        settings: ReaderSettings,
        events: mpsc::UnboundedSender<ReaderEvent>,
    ) -> Self {
        let history = settings.history.map(|config| {
            History::new(
                config,
                &keys,
                &codec,
                shards.len(),
                client_prefix,
                settings.brpop_timeout,
            )
        });
        Readers {
            history,
            wake_key: keys.wake_key(client_prefix),
            codec,
            keys,
            shards,
            router: Router::new(capacity),
            counters: Counters::default(),
            brpop_timeout: settings.brpop_timeout,
            receive_batch: settings.receive_batch.max(1),
            reconnect_min_delay: settings.reconnect_min_delay,
            reconnect_max_delay: settings.reconnect_max_delay,
            receive_rr: AtomicUsize::new(0),
            process_keys: Mutex::new(Arc::from(Vec::new())),
            events,
            demand: settings.read_on_demand.then(Demand::default),
        }
    }

    /// Waits for the next message of a local channel's buffer. Reading on demand, this
    /// `receive` is what lets the process readers pop from Redis while it waits.
    /// Cancel-safe (see [`Buffer::pop`]).
    pub(crate) async fn receive_local(&self, buffer: &Buffer) -> Option<Message> {
        let Some(demand) = &self.demand else {
            return buffer.pop().await;
        };
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        demand.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&demand.waiting);
        demand.changed.notify_waiters();
        buffer.pop().await
    }

    /// Returns at once unless reading on demand with no `receive` waiting; then waits for one.
    async fn until_wanted(&self) {
        let Some(demand) = &self.demand else {
            return;
        };
        loop {
            let changed = demand.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a `receive` arriving in between wakes us.
            changed.as_mut().enable();
            if demand.waiting.load(Ordering::Acquire) > 0 {
                return;
            }
            changed.await;
        }
    }

    fn ring(&self) -> usize {
        self.shards.len()
    }

    /// The blocking wait in milliseconds (`XREAD BLOCK`).
    pub(crate) fn brpop_timeout_ms(&self) -> u64 {
        u64::try_from(self.brpop_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A connection for a blocking reader of `shard`, retried with `backoff` until it opens;
    /// each failure goes to `outage` (logged once, then reminders).
    pub(crate) async fn connect(
        &self,
        shard: usize,
        outage: &mut Outage,
        backoff: &mut Backoff,
    ) -> MultiplexedConnection {
        loop {
            match self.shards[shard]
                .open(self.blocking_response_timeout())
                .await
            {
                Ok(conn) => return conn,
                Err(err) => {
                    outage.failed(&err);
                    backoff.wait().await;
                }
            }
        }
    }

    /// Blocking reads may take `brpop_timeout`; allow a margin before calling the link dead.
    pub(crate) fn blocking_response_timeout(&self) -> Duration {
        self.brpop_timeout + BLOCKING_REPLY_MARGIN
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.reconnect_min_delay, self.reconnect_max_delay)
    }

    /// Adds a process key to drain; returns false if it was already there, and whether it is
    /// the first one.
    pub(crate) fn add_process_key(&self, key: String) -> Option<bool> {
        let mut keys = lock(&self.process_keys);
        if keys.contains(&key) {
            return None;
        }
        let first = keys.is_empty();
        let mut grown = keys.to_vec();
        grown.push(key);
        *keys = Arc::from(grown);
        Some(first)
    }

    fn process_keys(&self) -> Arc<[String]> {
        Arc::clone(&lock(&self.process_keys))
    }

    /// Makes `shard`'s reader look at the key set again now, instead of after its blocking
    /// wait: the wait also watches the wake key, and this adds a member to it.
    pub(crate) async fn wake(&self, shard: usize) {
        let key = &self.wake_key;
        let woken = self.shards[shard]
            .run("wake reader", |mut c| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("ZADD").arg(key).arg(0).arg("wake").ignore();
                // A process that dies leaves no wake key behind for long.
                pipe.cmd("EXPIRE")
                    .arg(key)
                    .arg(WAKE_KEY_EXPIRY_SECS)
                    .ignore();
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        if let Err(err) = woken {
            // The reader is down or reconnecting; it reads the new key set when it is back.
            debug!(shard, error = %err, "cannot wake the reader");
        }
    }

    /// Takes `__asgi_channel__` out of a decoded member; `None` (counted, logged) for garbage.
    fn decode(&self, member: &[u8]) -> Option<(Target, Message)> {
        let mut message = match self.codec.decode_detailed(member) {
            Ok(m) => m,
            Err(err) => {
                let reason = self.counters.decode_error(err);
                warn!(reason, error = %err, len = member.len(), "skipping undecodable message");
                return None;
            }
        };
        Counters::add(&self.counters.received, 1);
        let target = match message.remove(ASGI_CHANNEL_KEY) {
            Some(Value::Str(name)) => Some(Target::One(name)),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Target::Many),
            _ => None,
        };
        match target {
            Some(target) => Some((target, message)),
            None => {
                Counters::add(&self.counters.decode_channel, 1);
                warn!("skipping message without a usable __asgi_channel__");
                None
            }
        }
    }

    /// Pops up to a batch from every key in one atomic step (`MULTI`, `ZPOPMIN key n` per
    /// key, `EXEC`): what one sender wrote before something in this snapshot is in it too, or
    /// was in an earlier one.
    async fn snapshot(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &[String],
    ) -> redis::RedisResult<Vec<Vec<Popped>>> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            pipe.cmd("ZPOPMIN").arg(key).arg(self.receive_batch);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
        Ok(replies.into_iter().map(popped_with_scores).collect())
    }

    /// Drains the process keys on one connection until it fails, handing messages to the
    /// router in the senders' score order. `merge` holds what was popped but may not be handed
    /// over yet; it outlives the connection, so a reconnect loses none of it.
    ///
    /// On the history's home shard each round also takes the history keys into the log
    /// ([`History::capture`]); the messages come back through the log reader.
    async fn drain(
        &self,
        conn: &mut MultiplexedConnection,
        merge: &mut Merge,
        shard: usize,
    ) -> redis::RedisResult<()> {
        let history = self.history.as_ref().filter(|h| h.home() == shard);
        let timeout = match history {
            Some(_) => timeout_arg(History::wait_of(self.brpop_timeout)),
            None => timeout_arg(self.brpop_timeout),
        };
        loop {
            let mut captured = 0;
            // Only the lease holder waits on the history keys.
            let mut capturing = false;
            if let Some(history) = history.filter(|h| h.is_active()) {
                // Nothing is captured before the log reader knows where it starts, or it
                // would skip what this server logged.
                history.log_started().await;
                (captured, capturing) = history.capture(conn, merge.held_history.as_ref()).await?;
                merge.held_history = None;
                history.captured_while_closing();
                Counters::add(&self.counters.history_captured, captured as u64);
            }
            if !merge.has_pending() {
                // Reading on demand, members stay in Redis until a `receive` waits, as with
                // channels_redis: capacity refuses senders and expiry trims there. (A member a
                // blocked BZPOPMIN took meanwhile is pending and goes out first.)
                self.until_wanted().await;
            }
            let keys = self.process_keys();
            let mut took_nothing = true;
            if !keys.is_empty() {
                let snapshot = self.snapshot(conn, &keys).await?;
                took_nothing = snapshot.iter().all(Vec::is_empty);
                let ready = merge.round(snapshot, self.receive_batch);
                if !ready.is_empty() {
                    trace!(count = ready.len(), "popped batch");
                    let routed: Vec<_> = ready.iter().filter_map(|m| self.decode(m)).collect();
                    self.router.deliver(routed, &self.counters);
                }
            }
            if !took_nothing || merge.has_pending() || captured > 0 {
                continue;
            }
            // Nothing anywhere: wait for the first member of any key (or a wake-up), then take
            // a snapshot at once. The member popped here is merged with that snapshot (a
            // history member goes to the next capture).
            let history_keys = history
                .filter(|_| capturing)
                .map(History::keys)
                .unwrap_or_default();
            let mut wait = redis::cmd("BZPOPMIN");
            wait.arg(&*keys)
                .arg(history_keys)
                .arg(&self.wake_key)
                .arg(&timeout);
            let reply: redis::Value = wait.query_async(conn).await?;
            if let Some((key, popped)) = blocked_member(reply)
                && key != self.wake_key.as_bytes()
            {
                if history_keys.iter().any(|k| k.as_bytes() == key) {
                    merge.held_history = Some((popped.member, popped.score));
                } else {
                    merge.hold(popped);
                }
            }
        }
    }
}

/// Extra time a blocking read's reply may take beyond its own timeout before the connection is
/// considered dead.
const BLOCKING_REPLY_MARGIN: Duration = Duration::from_secs(5);

/// How long a wake key outlives its last use (a process that dies leaves it behind).
const WAKE_KEY_EXPIRY_SECS: u64 = 60;

/// One popped member with its score (the sender's `time.time()`).
#[derive(Debug, Clone, PartialEq)]
struct Popped {
    member: Vec<u8>,
    score: f64,
}

/// Puts the members popped from several keys back into one order: the senders' scores.
///
/// A snapshot holds at most `batch` members per key. When a key gave a full batch, it may hold
/// more, and its next members can score lower than what other keys gave; so only members
/// scoring at most the lowest last score of such a key are handed over, the rest wait for the
/// next snapshot (taken at once) and are merged with it. Ties keep the order they were popped
/// in.
#[derive(Debug, Default)]
struct Merge {
    pending: Vec<Popped>,
    /// A history member a blocking wait popped, for the next capture (with its score).
    held_history: Option<(Vec<u8>, f64)>,
}

impl Merge {
    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Keeps a member popped outside a snapshot for the next round.
    fn hold(&mut self, popped: Popped) {
        self.pending.push(popped);
    }

    /// Merges a snapshot (one list per key, each in score order) with what is pending; returns
    /// the members that can be handed over, in order.
    fn round(&mut self, snapshot: Vec<Vec<Popped>>, batch: usize) -> Vec<Vec<u8>> {
        let cutoff = snapshot
            .iter()
            .filter(|popped| popped.len() >= batch)
            .filter_map(|popped| popped.last().map(|p| p.score))
            .fold(f64::INFINITY, f64::min);
        let mut all = std::mem::take(&mut self.pending);
        all.extend(snapshot.into_iter().flatten());
        // Stable: equal scores keep pending-first, then key order.
        all.sort_by(|a, b| a.score.total_cmp(&b.score));
        let split = all.partition_point(|p| p.score <= cutoff);
        self.pending = all.split_off(split);
        all.into_iter().map(|p| p.member).collect()
    }
}

/// Members and scores of a `ZPOPMIN key count` reply (RESP2 flat `[m, s, m, s]` or RESP3
/// pairs).
fn popped_with_scores(reply: redis::Value) -> Vec<Popped> {
    let mut out = Vec::new();
    if let redis::Value::Array(items) = reply {
        let mut iter = items.into_iter();
        while let Some(item) = iter.next() {
            match item {
                redis::Value::BulkString(member) => {
                    let score = iter.next().and_then(score_of).unwrap_or(f64::INFINITY);
                    out.push(Popped { member, score });
                }
                redis::Value::Array(pair) => {
                    let mut pair = pair.into_iter();
                    if let Some(redis::Value::BulkString(member)) = pair.next() {
                        let score = pair.next().and_then(score_of).unwrap_or(f64::INFINITY);
                        out.push(Popped { member, score });
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A score as Redis sends it: a string in RESP2 (`"1795634584.0384157"`, `"inf"`), a double
/// in RESP3.
fn score_of(value: redis::Value) -> Option<f64> {
    match value {
        redis::Value::BulkString(text) => std::str::from_utf8(&text).ok()?.parse().ok(),
        redis::Value::Double(score) => Some(score),
        redis::Value::Int(score) => Some(score as f64),
        _ => None,
    }
}

/// The key and member of a `BZPOPMIN key… timeout` reply (`nil` on timeout, else
/// `[key, member, score]`).
fn blocked_member(reply: redis::Value) -> Option<(Vec<u8>, Popped)> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let (Some(redis::Value::BulkString(key)), Some(redis::Value::BulkString(member))) =
        (items.next(), items.next())
    else {
        return None;
    };
    let score = items.next().and_then(score_of).unwrap_or(f64::INFINITY);
    Some((key, Popped { member, score }))
}

/// BZPOPMIN's timeout argument: integer seconds when whole (Redis 5 accepts only those).
fn timeout_arg(timeout: Duration) -> String {
    if timeout.subsec_nanos() == 0 {
        timeout.as_secs().to_string()
    } else {
        format!("{}", timeout.as_secs_f64())
    }
}

/// Exponential backoff between reconnect attempts.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// First reminder that a dependency is still down; later ones double up to
/// [`OUTAGE_REMINDER_MAX`].
const OUTAGE_REMINDER_MIN: Duration = Duration::from_secs(30);
/// Longest gap between two "still down" reminders.
const OUTAGE_REMINDER_MAX: Duration = Duration::from_secs(600);

/// Logs a connection's state changes, not its retries: one warning when it goes down, one
/// line when it is back, and reminders with a doubling interval in between.
#[derive(Debug)]
pub(crate) struct Outage {
    what: &'static str,
    shard: usize,
    since: Option<tokio::time::Instant>,
    next_reminder: Duration,
}

impl Outage {
    pub(crate) fn new(what: &'static str, shard: usize) -> Self {
        Outage {
            what,
            shard,
            since: None,
            next_reminder: OUTAGE_REMINDER_MIN,
        }
    }

    /// A connection attempt or the connection failed.
    pub(crate) fn failed(&mut self, err: &dyn std::fmt::Display) {
        let now = tokio::time::Instant::now();
        match self.since {
            None => {
                self.since = Some(now);
                self.next_reminder = OUTAGE_REMINDER_MIN;
                warn!(shard = self.shard, error = %err, "{} lost redis; retrying quietly", self.what);
            }
            Some(since) if now.duration_since(since) >= self.next_reminder => {
                warn!(
                    shard = self.shard,
                    error = %err,
                    down_for = ?now.duration_since(since),
                    "{} still cannot reach redis",
                    self.what
                );
                self.next_reminder = (self.next_reminder * 2).min(OUTAGE_REMINDER_MAX);
            }
            Some(_) => {}
        }
    }

    /// Connected again; true if it had been down.
    pub(crate) fn recovered(&mut self) -> bool {
        match self.since.take() {
            Some(since) => {
                info!(
                    shard = self.shard,
                    down_for = ?since.elapsed(),
                    "{} reconnected to redis",
                    self.what
                );
                true
            }
            None => false,
        }
    }
}

/// The reader of every process key on one shard; runs until aborted.
///
/// One reader per shard, not per key: messages that one sender wrote to several of this
/// process's keys (a user group and a task group on different group-channel keys, and the
/// socket's own channel) are taken in one snapshot and handed over in the order they were
/// sent. Channels_redis writes all the keys of one process to one shard (it hashes the
/// non-local name), except Python's own `send()` to a specific channel, which hashes the full
/// name; so every shard is drained, and the order holds per shard.
pub(crate) async fn process_reader(readers: Arc<Readers>, shard: usize) {
    let mut backoff = readers.backoff();
    let mut outage = Outage::new("channel reader", shard);
    let mut merge = Merge::default();
    loop {
        let mut conn = readers.connect(shard, &mut outage, &mut backoff).await;
        if outage.recovered() {
            Counters::add(&readers.counters.reconnects, 1);
            // The layer puts the memberships back; the receiver is gone only with the layer.
            let _ = readers.events.send(ReaderEvent::Reconnected(shard));
        }
        backoff.reset();
        if let Err(err) = readers.drain(&mut conn, &mut merge, shard).await {
            outage.failed(&err);
            backoff.wait().await;
        }
    }
}

/// A general channel's reader state.
#[derive(Debug)]
pub(crate) struct General {
    pub(crate) buffer: Arc<Buffer>,
    waiting: AtomicUsize,
    demand: Notify,
}

impl General {
    pub(crate) fn new(buffer: Arc<Buffer>) -> Self {
        General {
            buffer,
            waiting: AtomicUsize::new(0),
            demand: Notify::new(),
        }
    }

    /// Waits for a message, telling the reader task there is demand while waiting.
    /// Cancel-safe (see [`Buffer::pop`]).
    pub(crate) async fn receive(&self) -> Option<Message> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _guard = Waiting(&self.waiting);
        self.demand.notify_one();
        self.buffer.pop().await
    }

    fn wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0 && self.buffer.is_empty()
    }
}

/// The reader of one general channel; pops only while a `receive` waits. Runs until aborted.
pub(crate) async fn general_reader(readers: Arc<Readers>, channel: String, general: Arc<General>) {
    let key = readers.keys.channel_key(&channel);
    let timeout = timeout_arg(readers.brpop_timeout);
    let mut backoff = readers.backoff();
    let mut outages: HashMap<usize, Outage> = HashMap::new();
    let mut conns: HashMap<usize, MultiplexedConnection> = HashMap::new();
    loop {
        while !general.wanted() {
            // notify_one from `receive` leaves a permit if it fires before we wait.
            general.demand.notified().await;
        }
        // Python: each receive_single picks the next shard round-robin and keeps polling it.
        let shard = readers.receive_rr.fetch_add(1, Ordering::Relaxed) % readers.ring();
        let outage = outages
            .entry(shard)
            .or_insert_with(|| Outage::new("general channel reader", shard));
        loop {
            let conn = match conns.get_mut(&shard) {
                Some(c) => c,
                None => match readers.shards[shard]
                    .open(readers.blocking_response_timeout())
                    .await
                {
                    Ok(c) => {
                        outage.recovered();
                        conns.entry(shard).or_insert(c)
                    }
                    Err(err) => {
                        outage.failed(&err);
                        backoff.wait().await;
                        continue;
                    }
                },
            };
            let reply: redis::RedisResult<redis::Value> = redis::cmd("BZPOPMIN")
                .arg(&key)
                .arg(&timeout)
                .query_async(conn)
                .await;
            match reply {
                Ok(reply) => {
                    backoff.reset();
                    if let Some((_, popped)) = blocked_member(reply) {
                        match readers.codec.decode_detailed(&popped.member) {
                            Ok(mut message) => {
                                Counters::add(&readers.counters.received, 1);
                                message.remove(ASGI_CHANNEL_KEY);
                                if general.buffer.push(message) {
                                    Counters::add(&readers.counters.buffer_drops, 1);
                                }
                                Counters::add(&readers.counters.delivered, 1);
                            }
                            Err(err) => {
                                let reason = readers.counters.decode_error(err);
                                warn!(key = %key, reason, error = %err, "skipping undecodable message");
                                continue;
                            }
                        }
                        break;
                    }
                    if !general.wanted() {
                        break;
                    }
                }
                Err(err) => {
                    outage.failed(&err);
                    conns.remove(&shard);
                    backoff.wait().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zpopmin_and_bzpopmin_replies_in_both_protocols() {
        use redis::Value as V;
        let p = |m: &[u8], score: f64| Popped {
            member: m.to_vec(),
            score,
        };
        let resp2 = V::Array(vec![
            V::BulkString(b"a".to_vec()),
            V::BulkString(b"1.5".to_vec()),
            V::BulkString(b"b".to_vec()),
            V::BulkString(b"inf".to_vec()),
        ]);
        assert_eq!(
            popped_with_scores(resp2),
            vec![p(b"a", 1.5), p(b"b", f64::INFINITY)]
        );
        let resp3 = V::Array(vec![V::Array(vec![
            V::BulkString(b"a".to_vec()),
            V::Double(1.5),
        ])]);
        assert_eq!(popped_with_scores(resp3), vec![p(b"a", 1.5)]);
        assert_eq!(popped_with_scores(V::Nil), vec![]);
        assert_eq!(blocked_member(V::Nil), None);
        let blocked = V::Array(vec![
            V::BulkString(b"key".to_vec()),
            V::BulkString(b"m".to_vec()),
            V::BulkString(b"1795634584.0384157".to_vec()),
        ]);
        assert_eq!(
            blocked_member(blocked),
            Some((b"key".to_vec(), p(b"m", 1_795_634_584.038_415_7)))
        );
    }

    fn popped(items: &[(&str, f64)]) -> Vec<Popped> {
        items
            .iter()
            .map(|(m, score)| Popped {
                member: m.as_bytes().to_vec(),
                score: *score,
            })
            .collect()
    }

    fn names(members: Vec<Vec<u8>>) -> Vec<String> {
        members
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    }

    #[test]
    fn a_snapshot_of_several_keys_is_handed_over_in_score_order() {
        let mut merge = Merge::default();
        let ready = merge.round(
            vec![
                popped(&[("u0", 1.0), ("u2", 3.0), ("u4", 5.0)]),
                popped(&[("t1", 2.0), ("t3", 4.0)]),
                popped(&[]),
            ],
            10,
        );
        assert_eq!(names(ready), ["u0", "t1", "u2", "t3", "u4"]);
        assert!(!merge.has_pending());
    }

    #[test]
    fn members_above_a_full_keys_last_score_wait_for_the_next_snapshot() {
        let mut merge = Merge::default();
        // Key A gave a full batch (2) up to score 3: it may hold 4 next, so B's 5 waits.
        let ready = merge.round(
            vec![
                popped(&[("a1", 1.0), ("a3", 3.0)]),
                popped(&[("b2", 2.0), ("b5", 5.0)]),
            ],
            2,
        );
        assert_eq!(names(ready), ["a1", "b2", "a3"]);
        assert!(merge.has_pending());
        let ready = merge.round(vec![popped(&[("a4", 4.0)]), popped(&[])], 2);
        assert_eq!(names(ready), ["a4", "b5"]);
        assert!(!merge.has_pending());
        // A member popped by the blocking wait is merged with the snapshot after it.
        merge.hold(popped(&[("w7", 7.0)]).remove(0));
        let ready = merge.round(vec![popped(&[("x6", 6.0)]), popped(&[("y8", 8.0)])], 2);
        assert_eq!(names(ready), ["x6", "w7", "y8"]);
    }

    #[test]
    fn timeout_argument_is_whole_seconds_when_possible() {
        assert_eq!(timeout_arg(Duration::from_secs(5)), "5");
        assert_eq!(timeout_arg(Duration::from_millis(250)), "0.25");
    }
}
