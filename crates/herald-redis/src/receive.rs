//! The receive path: reader tasks that drain Redis, and the router that hands messages to
//! per-channel buffers.
//!
//! * **Specific channels** (`prefix.<client prefix>!local`): all channels of this layer with
//!   one `new_channel` prefix share one Redis key (`asgispecific.<cp>!`). One reader task per
//!   key *per shard* drains it — every shard when there are ≥ 2, because Python's `send()`
//!   hashes the full channel name (channels_redis#221) and so writes to arbitrary shards. A
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_core::{ASGI_CHANNEL_KEY, Message, Value};
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tracing::{info, trace, warn};

use crate::codec::DecodeError;
use crate::layer::Inner;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn decode_error(&self, err: DecodeError) -> &'static str {
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

/// A local channel's buffer: bounded, drop-oldest, one `Notify` for its receivers.
#[derive(Debug)]
pub(crate) struct Buffer {
    queue: Mutex<VecDeque<Message>>,
    notify: Notify,
    closed: AtomicBool,
    capacity: usize,
}

impl Buffer {
    fn new(capacity: usize) -> Self {
        Buffer {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            capacity,
        }
    }

    /// Appends a message; returns true if the oldest one had to be dropped.
    pub(crate) fn push(&self, message: Message) -> bool {
        let dropped = {
            let mut queue = lock(&self.queue);
            let dropped = if queue.len() >= self.capacity {
                queue.pop_front();
                true
            } else {
                false
            };
            queue.push_back(message);
            dropped
        };
        // notify_one stores a permit when nobody waits yet, so a receiver that found the queue
        // empty just before this push still wakes up.
        self.notify.notify_one();
        dropped
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.queue).is_empty()
    }

    fn clear(&self) {
        lock(&self.queue).clear();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Waits for the next message; `None` once the channel is closed.
    ///
    /// Cancel-safe: a message leaves the queue only in the same synchronous step that returns
    /// it, so dropping this future loses nothing.
    pub(crate) async fn pop(&self) -> Option<Message> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a push between the check and the await is seen.
            notified.as_mut().enable();
            if let Some(message) = lock(&self.queue).pop_front() {
                return Some(message);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
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
    pub(crate) fn register(&self, channel: &str) -> Arc<Buffer> {
        let mut channels = lock(&self.channels);
        if let Some(buffer) = channels.get(channel) {
            return buffer.clone();
        }
        let buffer = Arc::new(Buffer::new(self.capacity));
        channels.insert(channel.to_owned(), buffer.clone());
        buffer
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

    /// Delivers one decoded message to each target name, under one lock acquisition.
    fn deliver(&self, targets: &[&str], message: Message, counters: &Counters) {
        let channels = lock(&self.channels);
        for name in targets {
            match channels.get(*name) {
                Some(buffer) => {
                    if buffer.push(message.clone()) {
                        Counters::add(&counters.buffer_drops, 1);
                    }
                    Counters::add(&counters.delivered, 1);
                }
                None => {
                    Counters::add(&counters.unknown_channel_drops, 1);
                    trace!(channel = %name, "message for unknown local channel dropped");
                }
            }
        }
    }
}

/// Takes `__asgi_channel__` out of a decoded message and routes it.
fn route(inner: &Inner, key: &str, member: &[u8]) {
    let mut message = match inner.codec.decode_detailed(member) {
        Ok(m) => m,
        Err(err) => {
            let reason = inner.counters.decode_error(err);
            warn!(key, reason, error = %err, len = member.len(), "skipping undecodable message");
            return;
        }
    };
    Counters::add(&inner.counters.received, 1);
    let target = message.remove(ASGI_CHANNEL_KEY);
    match &target {
        Some(Value::Str(name)) => inner
            .router
            .deliver(&[name.as_str()], message, &inner.counters),
        Some(Value::Array(items)) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            match names {
                Some(names) => inner.router.deliver(&names, message, &inner.counters),
                None => bad_channel(inner, key),
            }
        }
        _ => bad_channel(inner, key),
    }
}

fn bad_channel(inner: &Inner, key: &str) {
    Counters::add(&inner.counters.decode_channel, 1);
    warn!(key, "skipping message without a usable __asgi_channel__");
}

/// Members of a `ZPOPMIN key count` reply (RESP2 flat `[m, s, m, s]` or RESP3 pairs).
fn popped_members(reply: redis::Value) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let redis::Value::Array(items) = reply {
        let mut iter = items.into_iter();
        while let Some(item) = iter.next() {
            match item {
                redis::Value::BulkString(member) => {
                    out.push(member);
                    iter.next(); // the score
                }
                redis::Value::Array(pair) => {
                    if let Some(redis::Value::BulkString(member)) = pair.into_iter().next() {
                        out.push(member);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The member of a `BZPOPMIN key timeout` reply (`nil` on timeout, else `[key, member, score]`).
fn blocked_member(reply: redis::Value) -> Option<Vec<u8>> {
    match reply {
        redis::Value::Array(items) => match items.into_iter().nth(1) {
            Some(redis::Value::BulkString(member)) => Some(member),
            _ => None,
        },
        _ => None,
    }
}

/// BZPOPMIN's timeout argument: integer seconds when whole (Redis 5 accepts only those).
fn timeout_arg(timeout: Duration) -> String {
    if timeout.subsec_nanos() == 0 {
        timeout.as_secs().to_string()
    } else {
        format!("{}", timeout.as_secs_f64())
    }
}

/// Members of a `BZMPOP … MIN COUNT n` reply: `nil` on timeout, else
/// `[key, [[member, score], …]]`.
fn bzmpop_members(reply: redis::Value) -> Vec<Vec<u8>> {
    match reply {
        redis::Value::Array(items) => match items.into_iter().nth(1) {
            Some(pairs) => popped_members(pairs),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// True for Redis's reply to a command it does not know (BZMPOP before 7.0).
fn is_unknown_command(err: &redis::RedisError) -> bool {
    err.to_string()
        .to_ascii_lowercase()
        .contains("unknown command")
}

/// Drains `key` on one connection until it fails.
///
/// Redis ≥ 7: `BZMPOP <timeout> 1 key MIN COUNT <batch>`, one round trip per wake-up or per
/// batch. Older servers: `ZPOPMIN key <batch>`, and `BZPOPMIN key <timeout>` when it was empty.
async fn drain(
    inner: &Inner,
    conn: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<()> {
    let timeout = timeout_arg(inner.brpop_timeout);
    let mut bzmpop = true;
    loop {
        if bzmpop {
            let reply: redis::RedisResult<redis::Value> = redis::cmd("BZMPOP")
                .arg(&timeout)
                .arg(1)
                .arg(key)
                .arg("MIN")
                .arg("COUNT")
                .arg(inner.receive_batch)
                .query_async(conn)
                .await;
            match reply {
                Ok(reply) => {
                    let members = bzmpop_members(reply);
                    trace!(key, count = members.len(), "popped batch");
                    for member in &members {
                        route(inner, key, member);
                    }
                }
                Err(err) if is_unknown_command(&err) => bzmpop = false,
                Err(err) => return Err(err),
            }
            continue;
        }
        let reply: redis::Value = redis::cmd("ZPOPMIN")
            .arg(key)
            .arg(inner.receive_batch)
            .query_async(conn)
            .await?;
        let members = popped_members(reply);
        if !members.is_empty() {
            trace!(key, count = members.len(), "popped batch");
            for member in &members {
                route(inner, key, member);
            }
            continue;
        }
        let reply: redis::Value = redis::cmd("BZPOPMIN")
            .arg(key)
            .arg(&timeout)
            .query_async(conn)
            .await?;
        if let Some(member) = blocked_member(reply) {
            route(inner, key, &member);
        }
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

/// The reader of one specific-channel key on one shard; runs until aborted.
pub(crate) async fn specific_reader(inner: Arc<Inner>, shard: usize, key: String) {
    let mut backoff = Backoff::new(inner.reconnect_min_delay, inner.reconnect_max_delay);
    let mut failed = false;
    loop {
        let mut conn = match inner.shards[shard]
            .open(inner.blocking_response_timeout())
            .await
        {
            Ok(conn) => conn,
            Err(err) => {
                warn!(shard, key = %key, error = %err, "reader cannot connect to redis, retrying");
                failed = true;
                backoff.wait().await;
                continue;
            }
        };
        if failed {
            Counters::add(&inner.counters.reconnects, 1);
            info!(shard, key = %key, "reader reconnected to redis");
            // Redis may have restarted without persistence: put our memberships back.
            inner.refresh_memberships(Some(shard)).await;
        }
        backoff.reset();
        if let Err(err) = drain(&inner, &mut conn, &key).await {
            warn!(shard, key = %key, error = %err, "reader lost its redis connection");
            failed = true;
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
pub(crate) async fn general_reader(inner: Arc<Inner>, channel: String, general: Arc<General>) {
    let key = inner.keys.channel_key(&channel);
    let timeout = timeout_arg(inner.brpop_timeout);
    let mut backoff = Backoff::new(inner.reconnect_min_delay, inner.reconnect_max_delay);
    let mut conns: HashMap<usize, MultiplexedConnection> = HashMap::new();
    loop {
        while !general.wanted() {
            // notify_one from `receive` leaves a permit if it fires before we wait.
            general.demand.notified().await;
        }
        // Python: each receive_single picks the next shard round-robin and keeps polling it.
        let shard = inner.next_receive_shard();
        loop {
            let conn = match conns.get_mut(&shard) {
                Some(c) => c,
                None => match inner.shards[shard]
                    .open(inner.blocking_response_timeout())
                    .await
                {
                    Ok(c) => conns.entry(shard).or_insert(c),
                    Err(err) => {
                        warn!(shard, channel = %channel, error = %err, "cannot connect to redis, retrying");
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
                    if let Some(member) = blocked_member(reply) {
                        match inner.codec.decode_detailed(&member) {
                            Ok(mut message) => {
                                Counters::add(&inner.counters.received, 1);
                                message.remove(ASGI_CHANNEL_KEY);
                                if general.buffer.push(message) {
                                    Counters::add(&inner.counters.buffer_drops, 1);
                                }
                                Counters::add(&inner.counters.delivered, 1);
                            }
                            Err(err) => {
                                let reason = inner.counters.decode_error(err);
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
                    warn!(shard, channel = %channel, error = %err, "general reader lost its redis connection");
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
    fn buffer_drops_oldest_like_bounded_queue() {
        // channels_redis test_receive_buffer_respects_capacity: 10000 in, the last 100 kept.
        let buffer = Buffer::new(100);
        let mut drops = 0;
        for i in 0..10000 {
            if buffer.push(Message::new().with("i", i)) {
                drops += 1;
            }
        }
        assert_eq!(drops, 9900);
        let queue = lock(&buffer.queue);
        assert_eq!(queue.len(), 100);
        assert_eq!(queue.front().unwrap().get("i"), Some(&Value::Int(9900)));
        assert_eq!(queue.back().unwrap().get("i"), Some(&Value::Int(9999)));
    }

    #[test]
    fn zpopmin_replies_in_both_protocols() {
        use redis::Value as V;
        let resp2 = V::Array(vec![
            V::BulkString(b"a".to_vec()),
            V::BulkString(b"1.5".to_vec()),
            V::BulkString(b"b".to_vec()),
            V::BulkString(b"2".to_vec()),
        ]);
        assert_eq!(popped_members(resp2), vec![b"a".to_vec(), b"b".to_vec()]);
        let resp3 = V::Array(vec![V::Array(vec![
            V::BulkString(b"a".to_vec()),
            V::Double(1.5),
        ])]);
        assert_eq!(popped_members(resp3), vec![b"a".to_vec()]);
        assert_eq!(blocked_member(V::Nil), None);
        let bzmpop = V::Array(vec![
            V::BulkString(b"key".to_vec()),
            V::Array(vec![
                V::Array(vec![
                    V::BulkString(b"a".to_vec()),
                    V::BulkString(b"1".to_vec()),
                ]),
                V::Array(vec![V::BulkString(b"b".to_vec()), V::Double(2.0)]),
            ]),
        ]);
        assert_eq!(bzmpop_members(bzmpop), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(bzmpop_members(V::Nil).is_empty());
    }

    #[test]
    fn timeout_argument_is_whole_seconds_when_possible() {
        assert_eq!(timeout_arg(Duration::from_secs(5)), "5");
        assert_eq!(timeout_arg(Duration::from_millis(250)), "0.25");
    }

    #[tokio::test]
    async fn closed_buffer_wakes_receivers() {
        let buffer = Arc::new(Buffer::new(2));
        let b = buffer.clone();
        let waiter = tokio::spawn(async move { b.pop().await });
        tokio::task::yield_now().await;
        buffer.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_none());
    }
}
