//! [`RedisChannelLayer`]: composes keys, hashing, codec, scripts, connections and the receive
//! path into Channels' layer API, with the semantics of `channels_redis/core.py` 4.3.0.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use herald_core::capacity::Capacities;
use herald_core::names::{
    is_specific, non_local_name, random_hex_id, require_valid_channel_name,
    require_valid_group_name,
};
use herald_core::sync::lock;
use herald_core::{
    ASGI_CHANNEL_KEY, ChannelLayer, DEFAULT_NEW_CHANNEL_PREFIX, Deliver, GroupSendReport, Message,
    Position, Replay,
};
use indexmap::IndexMap;
use redis::{Script, ScriptInvocation};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::codec::{Codec, Target};
use crate::config::RedisLayerConfig;
use crate::connection::Shard;
use crate::error::{Error, ErrorKind, Result};
use crate::hashing::consistent_hash;
use crate::history::{self, History};
use crate::keys::Keys;
use crate::membership::Memberships;
use crate::reader_thread::ReaderThread;
use crate::receive::{self, Counters, General, LayerStats, ReaderEvent, ReaderSettings, Readers};
use crate::scripts;

/// Groups re-added per pipeline: a server may track many thousands of memberships, and one
/// pipeline per chunk keeps each reply (and Redis's time on it) small.
const REFRESH_PIPELINE_GROUPS: usize = 500;

/// Messages per pipeline in [`ChannelLayer::group_send_many`]: large enough that Redis reads
/// and answers many calls per system call, small enough that one reply (and Redis's time on
/// one pipeline, ~10 ms) stays short.
const SEND_PIPELINE_MESSAGES: usize = 1000;

/// The one-trip calls a `group_send_many` has gathered but not sent yet.
#[derive(Default)]
struct SendPipeline {
    /// Each call with its group.
    calls: Vec<(String, OneTripCall)>,
    /// The index in the `group_send_many` of each of `calls`.
    at: Vec<usize>,
    /// The lowest score the next call may have: scores only grow within one
    /// `group_send_many`, even if it outruns the clock.
    next_score: f64,
}

/// Messages per call of the one-trip script in [`ChannelLayer::group_send_many`]: a channel
/// key shared by many of them (herald's group keys) is trimmed, counted and given its
/// `EXPIRE` once per call: Redis's CPU per message fell from 13-14 to 6-6.5 us against
/// one call each (docs/benchmarks.md). A call holds Redis for its whole run, about half a
/// millisecond for 100 on a quiet CPU.
const MESSAGES_PER_SCRIPT_CALL: usize = 100;

/// How far apart the scores of consecutive messages in one `group_send_many` are, in seconds. A
/// receiver pops a key's members lowest score first, and equal scores in member order, which
/// starts with a random prefix: two messages to one channel in one pipeline need different
/// scores to arrive in order. One microsecond is several steps of an `f64` near today's Unix
/// time (2^-22 s), and a pipeline of [`SEND_PIPELINE_MESSAGES`] spans one millisecond.
const SEND_MANY_SCORE_STEP: f64 = 1e-6;

/// What Python adds to `expiry` for a Fernet token's TTL (`MultiFernet.decrypt(ttl=expiry + 10)`).
const FERNET_TTL_MARGIN: Duration = Duration::from_secs(10);

/// The shortest membership refresh interval: a tiny `group_expiry` in tests must not make the
/// refresher spin.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How many `<base>.k<n>` names [`ChannelLayer::colocated_prefixes`] tries per wanted prefix
/// and shard before giving up (1 in `shards` names lands on a given shard, so 64 times that
/// fails with a probability below 1e-27 per prefix).
const COLOCATED_SEARCH_FACTOR: usize = 64;

/// How long [`ChannelLayer::close`] waits for the home-shard reader to hand the history capture
/// over (one round trip when Redis answers; a reader that is reconnecting does not hold a
/// member anyway).
const CLOSE_HANDOVER_LIMIT: Duration = Duration::from_secs(2);

/// Python `time.time()`.
pub(crate) fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Python: `logger.info("%s of %s channels over capacity in group %s")` on `channels_redis.core`.
fn log_over_capacity(group: &str, over: usize, members: usize) {
    if over > 0 {
        info!(
            group,
            over_capacity = over,
            members,
            "{over} of {members} channels over capacity in group {group}"
        );
    }
}

/// One call of the one-trip `group_send` script, encoded once (see
/// `RedisChannelLayer::one_trip_call`).
struct OneTripCall {
    group_key: String,
    /// The random prefix every member this call writes starts with.
    random: Vec<u8>,
    /// The message's msgpack map entries (the script adds the header and the routing entry).
    entries: Vec<u8>,
    entry_count: usize,
}

/// The state shared by the layer handle and its background tasks.
pub(crate) struct Inner {
    keys: Keys,
    capacities: Capacities,
    /// True if `channel_capacity` has rules (then capacities differ per name).
    has_capacity_rules: bool,
    shards: Arc<[Shard]>,
    client_prefix: String,
    expiry_secs: u64,
    group_expiry_secs: u64,
    refresh_interval: Option<Duration>,
    send_rr: AtomicUsize,
    /// The receive path: decoder, router, counters and the process keys being drained.
    readers: Arc<Readers>,
    /// The readers' reports, taken by the refresher task when it starts.
    reader_events: Mutex<Option<mpsc::UnboundedReceiver<ReaderEvent>>>,
    memberships: Mutex<Memberships>,
    generals: Mutex<HashMap<String, Arc<General>>>,
    tasks: Mutex<Tasks>,
    send_script: Script,
    group_send_script: Script,
    flush_script: Script,
    group_send_one_trip_script: Script,
    sweep_script: Script,
    /// How long a command may take (`response_timeout`).
    response_timeout: Duration,
}

#[derive(Default)]
struct Tasks {
    /// The process-key readers, one per shard (started with the first process key).
    readers: Vec<JoinHandle<()>>,
    generals: HashMap<String, JoinHandle<()>>,
    refresher: Option<JoinHandle<()>>,
    /// Where the readers run (started with the first reader); `None` if it could not be
    /// started, and then they run on the caller's runtime.
    reader_thread: Option<ReaderThread>,
    shut_down: bool,
}

impl Tasks {
    /// Spawns a reader on the reader thread, starting it if needed.
    fn spawn_reader<F>(&mut self, task: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.reader_thread.is_none() {
            match ReaderThread::start() {
                Ok(thread) => self.reader_thread = Some(thread),
                Err(err) => {
                    warn!(error = %err, "cannot start the reader thread; readers share the runtime");
                }
            }
        }
        match &self.reader_thread {
            Some(thread) => thread.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

impl Inner {
    fn ring(&self) -> usize {
        self.shards.len()
    }

    fn shard_of(&self, name: &str) -> usize {
        consistent_hash(name.as_bytes(), self.ring())
    }

    /// True if `channel` is one of this layer's own process-specific channels.
    fn is_local(&self, channel: &str) -> bool {
        is_specific(channel)
            && non_local_name(channel)
                .strip_suffix('!')
                .is_some_and(|head| head.ends_with(&self.client_prefix))
    }

    /// Makes sure the process key of `non_local` is drained: the first key starts one reader
    /// per shard, a later one wakes them so they read it at once.
    fn ensure_reader(self: &Arc<Self>, non_local: &str) {
        let key = self.keys.channel_key(non_local);
        let mut tasks = lock(&self.tasks);
        if tasks.shut_down {
            return;
        }
        let Some(_first) = self.readers.add_process_key(key) else {
            return;
        };
        if tasks.readers.is_empty() {
            drop(tasks);
            self.ensure_started();
        } else {
            let readers = Arc::clone(&self.readers);
            tasks.spawn_reader(async move {
                for shard in 0..readers.shards.len() {
                    readers.wake(shard).await;
                }
            });
        }
    }

    /// Starts the readers (one per shard, plus the history log's) and the refresher, once.
    fn ensure_started(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        if tasks.shut_down || !tasks.readers.is_empty() {
            return;
        }
        for shard in 0..self.ring() {
            let span = debug_span!("layer.reader", shard);
            let reader = receive::process_reader(Arc::clone(&self.readers), shard);
            let handle = tasks.spawn_reader(reader.instrument(span));
            tasks.readers.push(handle);
        }
        drop(tasks);
        self.ensure_refresher();
    }

    /// Starts the history log's reader, once, when the first history channel is attached: a
    /// process that only sends or receives on its own channels (`herald check`,
    /// `test-connection`) neither reads the log nor takes the capture lease.
    fn ensure_history(self: &Arc<Self>) {
        let Some(history) = self.readers.history.as_ref() else {
            return;
        };
        self.ensure_started();
        let mut tasks = lock(&self.tasks);
        if tasks.shut_down || !history.activate() {
            return;
        }
        let span = debug_span!("layer.history_log");
        let reader = history::log_reader(Arc::clone(&self.readers));
        let handle = tasks.spawn_reader(reader.instrument(span));
        tasks.readers.push(handle);
        // The home shard's reader may be in its blocking wait: it starts capturing now.
        let readers = Arc::clone(&self.readers);
        let home = history.home();
        tasks.spawn_reader(async move { readers.wake(home).await });
    }

    fn general(self: &Arc<Self>, channel: &str) -> Arc<General> {
        let mut generals = lock(&self.generals);
        if let Some(g) = generals.get(channel) {
            return g.clone();
        }
        let general = Arc::new(General::new(self.readers.router.buffer(channel)));
        generals.insert(channel.to_owned(), general.clone());
        let mut tasks = lock(&self.tasks);
        if !tasks.shut_down {
            let span = debug_span!("layer.general_reader", channel = %channel);
            let handle = tasks.spawn_reader(
                receive::general_reader(
                    Arc::clone(&self.readers),
                    channel.to_owned(),
                    general.clone(),
                )
                .instrument(span),
            );
            tasks.generals.insert(channel.to_owned(), handle);
        }
        general
    }

    /// Starts the task that puts memberships back: periodically before `group_expiry`
    /// lapses (if configured), and for a shard whose reader reconnected.
    fn ensure_refresher(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        if tasks.shut_down || tasks.refresher.is_some() {
            return;
        }
        let Some(mut events) = lock(&self.reader_events).take() else {
            return;
        };
        // Weak: the task must not keep a dropped layer alive.
        let inner = Arc::downgrade(self);
        let interval = self.refresh_interval;
        let history_interval = self.readers.history.as_ref().map(History::refresh_every);
        tasks.refresher = Some(tokio::spawn(async move {
            let every = |interval: Duration| {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.reset(); // the first tick after one interval, not at once
                ticker
            };
            let mut ticker = interval.map(every);
            let mut history_ticker = history_interval.map(every);
            loop {
                let (only_shard, recorded_only) = tokio::select! {
                    event = events.recv() => match event {
                        Some(ReaderEvent::Reconnected(shard)) => (Some(shard), false),
                        None => return,
                    },
                    _ = async { ticker.as_mut().unwrap().tick().await }, if ticker.is_some() => (None, false),
                    _ = async { history_ticker.as_mut().unwrap().tick().await },
                        if history_ticker.is_some() => (None, true),
                };
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                inner.refresh_memberships(only_shard, recorded_only).await;
            }
        }));
    }

    /// Re-adds tracked memberships whose group lives on `only_shard` (all shards if `None`):
    /// `ZADD group <now> ch…` + `EXPIRE group <group_expiry>`, as `group_add` does. With
    /// `recorded_only`, only the history channels' memberships: those are re-added often, so
    /// that another server's sweep after its last socket left sees them in use.
    pub(crate) async fn refresh_memberships(&self, only_shard: Option<usize>, recorded_only: bool) {
        let history = self.readers.history.as_ref();
        let is_recorded = |channel: &str| history.is_some_and(|h| h.group_of(channel).is_some());
        let mut snapshot =
            lock(&self.memberships).snapshot(|g| only_shard.is_none_or(|s| self.shard_of(g) == s));
        if recorded_only {
            for (_, channels) in &mut snapshot {
                channels.retain(|c| is_recorded(c));
            }
            snapshot.retain(|(_, channels)| !channels.is_empty());
        }
        if snapshot.is_empty() {
            return;
        }
        let mut by_shard: HashMap<usize, Vec<(String, Vec<String>)>> = HashMap::new();
        for (group, channels) in snapshot {
            by_shard
                .entry(self.shard_of(&group))
                .or_default()
                .push((group, channels));
        }
        for (shard, groups) in by_shard {
            // Bounded pipelines: a server may track many thousands of memberships.
            for chunk in groups.chunks(REFRESH_PIPELINE_GROUPS) {
                let score = now_f64();
                let mut pipe = redis::pipe();
                let mut members = 0u64;
                for (group, channels) in chunk {
                    let key = self.keys.group_key(group);
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(&key);
                    for channel in channels {
                        zadd.arg(score).arg(channel);
                    }
                    members += channels.len() as u64;
                    pipe.add_command(zadd).ignore();
                    pipe.cmd("EXPIRE")
                        .arg(&key)
                        .arg(self.group_expiry_secs)
                        .ignore();
                }
                let result = self.shards[shard]
                    .run("refresh memberships", |mut c| {
                        let pipe = pipe.clone();
                        async move { pipe.query_async::<()>(&mut c).await }
                    })
                    .await;
                match result {
                    Ok(()) => Counters::add(&self.readers.counters.memberships_refreshed, members),
                    Err(err) => warn!(shard, error = %err, "cannot re-add group memberships"),
                }
            }
        }
    }

    /// After `keep`, removes `channel` from `group` unless this server tracks it again or any
    /// server re-added it within `keep` (its score is the time of the last add).
    fn sweep_later(self: &Arc<Self>, group: &str, channel: &str, keep: Duration) {
        let inner = Arc::downgrade(self);
        let (group, channel) = (group.to_owned(), channel.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if lock(&inner.memberships).contains(&group, &channel) {
                return;
            }
            let key = inner.keys.group_key(&group);
            let before = now_f64() - keep.as_secs_f64();
            let script = &inner.sweep_script;
            let result = inner.shards[inner.shard_of(&group)]
                .run("sweep history membership", |mut c| {
                    let mut invocation = script.prepare_invoke();
                    invocation.key(&key).arg(&channel).arg(before);
                    async move { invocation.invoke_async::<u8>(&mut c).await }
                })
                .await;
            match result {
                Ok(removed) => debug!(group, removed, "history membership swept"),
                Err(err) => warn!(group, error = %err, "cannot sweep a history membership"),
            }
        });
    }

    fn shutdown(&self) {
        let mut tasks = lock(&self.tasks);
        tasks.shut_down = true;
        for handle in tasks.readers.drain(..) {
            handle.abort();
        }
        for (_, handle) in tasks.generals.drain() {
            handle.abort();
        }
        if let Some(handle) = tasks.refresher.take() {
            handle.abort();
        }
        // Stops the thread (its runtime drops the aborted readers).
        tasks.reader_thread = None;
    }
}

/// A channel layer on Redis sorted sets, wire-compatible with Python `channels_redis` 4.3.0's
/// `RedisChannelLayer`: Python and Herald processes can share one Redis and exchange `send`,
/// `group_send` and groups in both directions.
///
/// ```no_run
/// # async fn demo() -> herald_redis::Result<()> {
/// use herald_core::{ChannelLayer, Message};
/// use herald_redis::{RedisChannelLayer, RedisLayerConfig};
/// let layer = RedisChannelLayer::new(
///     RedisLayerConfig::default().with_hosts(["redis://127.0.0.1:6379"]),
/// )?;
/// let me = layer.new_channel("specific").await?;
/// layer.group_add("chat", &me).await?;
/// layer.group_send("chat", Message::with_type("chat.message").with("text", "hi")).await?;
/// let msg = layer.receive(&me).await?;
/// assert_eq!(msg.msg_type(), Some("chat.message"));
/// # Ok(()) }
/// ```
///
/// Deviations from Python, all deliberate:
/// * `send` to a specific channel writes to the shard of `hash(non_local_name)`, where the
///   owner listens, not `hash(full name)` (which loses messages with ≥ 2
///   shards). Herald also drains its own key on every shard, so Python senders still reach it.
/// * `send` runs its trim/count/add/expire as one atomic script; `group_send` trims each key
///   inside its script, on the right shard.
/// * Undecodable messages are logged and skipped instead of raising out of `receive`.
/// * Memberships of this layer's channels are re-added after a reconnect and periodically.
/// * Messages for a local channel nobody created or that was closed are dropped (counted),
///   where Python would buffer them forever.
///
/// Dropping the layer stops its background tasks.
pub struct RedisChannelLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannelLayer")
            .field("prefix", &self.inner.keys.prefix())
            .field("client_prefix", &self.inner.client_prefix)
            .field("shards", &self.inner.ring())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisChannelLayer {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl RedisChannelLayer {
    /// Builds a layer. Nothing connects until the first operation.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty host list, an unparsable host, a zero capacity or
    /// expiry, and the other checks of [`RedisLayerConfig`].
    pub fn new(config: RedisLayerConfig) -> Result<Self> {
        config.validate()?;
        let shards = config
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                Shard::new(i, host, config.response_timeout, config.connection_timeout)
            })
            .collect::<Result<Vec<_>>>()?;
        let codec = Codec::new(config.serializer_format, config.random_prefix_length)
            .with_encryption_keys(&config.symmetric_encryption_keys)
            // Python: MultiFernet.decrypt(ttl=expiry + 10).
            .with_ttl(Some(config.expiry + FERNET_TTL_MARGIN));
        let refresh_interval = config
            .group_refresh_interval
            .map(|i| i.min(config.group_expiry / 2).max(MIN_REFRESH_INTERVAL));
        let keys = Keys::new(config.prefix.clone());
        let shards: Arc<[Shard]> = Arc::from(shards);
        let client_prefix = random_hex_id();
        let (events, reader_events) = mpsc::unbounded_channel();
        let readers = Readers::new(
            codec,
            keys.clone(),
            Arc::clone(&shards),
            &client_prefix,
            config.capacity,
            ReaderSettings {
                brpop_timeout: config.brpop_timeout,
                receive_batch: config.receive_batch,
                reconnect_min_delay: config.reconnect_min_delay,
                reconnect_max_delay: config.reconnect_max_delay,
                history: config.history.clone(),
                read_on_demand: config.read_on_demand,
            },
            events,
        );
        let inner = Inner {
            keys,
            capacities: Capacities::new(config.capacity, config.channel_capacity.clone()),
            has_capacity_rules: !config.channel_capacity.is_empty(),
            shards,
            client_prefix,
            expiry_secs: config.expiry.as_secs(),
            group_expiry_secs: config.group_expiry.as_secs(),
            refresh_interval,
            send_rr: AtomicUsize::new(0),
            readers: Arc::new(readers),
            reader_events: Mutex::new(Some(reader_events)),
            memberships: Mutex::new(Memberships::default()),
            generals: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Tasks::default()),
            send_script: Script::new(scripts::SEND),
            group_send_script: Script::new(scripts::GROUP_SEND),
            flush_script: Script::new(scripts::FLUSH),
            group_send_one_trip_script: Script::new(scripts::GROUP_SEND_ONE_TRIP),
            sweep_script: Script::new(history::SWEEP),
            response_timeout: config.response_timeout,
        };
        Ok(RedisChannelLayer {
            inner: Arc::new(inner),
        })
    }

    /// This layer instance's 32-hex process id (Python `client_prefix`).
    pub fn client_prefix(&self) -> &str {
        &self.inner.client_prefix
    }

    /// The key builder of this layer's prefix ([`internals`](crate::internals): not covered
    /// by semver).
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The codec this layer stores messages with ([`internals`](crate::internals): not
    /// covered by semver).
    pub fn codec(&self) -> &Codec {
        &self.inner.readers.codec
    }

    /// One shard's connection, for modules that keep their own keys (presence).
    pub(crate) fn shard(&self, index: usize) -> &Shard {
        &self.inner.shards[index]
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.ring()
    }

    /// A snapshot of the receive-path counters.
    pub fn stats(&self) -> LayerStats {
        self.inner.readers.counters.snapshot()
    }

    /// Number of (group, channel) memberships this layer keeps alive.
    pub fn tracked_memberships(&self) -> usize {
        lock(&self.inner.memberships).len()
    }

    /// Number of local channels with a buffer.
    pub fn local_channels(&self) -> usize {
        self.inner.readers.router.len()
    }

    /// Re-adds every tracked membership now (also done periodically and after reconnects).
    pub async fn refresh_memberships(&self) {
        self.inner.refresh_memberships(None, false).await;
    }

    /// True if `group_send` can be done in one round trip (`scripts::GROUP_SEND_ONE_TRIP`):
    /// everything lives on one shard, messages are plain msgpack and every channel has the
    /// default capacity.
    fn is_one_trip(&self) -> bool {
        let inner = &self.inner;
        let codec = &inner.readers.codec;
        inner.ring() == 1
            && !inner.has_capacity_rules
            && codec.format() == crate::codec::SerializerFormat::Msgpack
            && !codec.is_encrypted()
    }

    /// The arguments of one call of the one-trip script for `message` to `group`; `None`
    /// when the layer or the message does not allow it (see [`Self::is_one_trip`]).
    fn one_trip_call(&self, group: &str, message: &Message) -> Result<Option<OneTripCall>> {
        let inner = &self.inner;
        if !self.is_one_trip() || message.len() >= usize::from(u16::MAX) {
            return Ok(None);
        }
        let Some(entries) = inner.readers.codec.msgpack_entries(message.map())? else {
            return Ok(None);
        };
        Ok(Some(OneTripCall {
            group_key: inner.keys.group_key(group),
            random: inner.readers.codec.random_prefix(),
            entries,
            entry_count: message.len(),
        }))
    }

    /// One call of the one-trip script for `calls`, in order, message `i` scored
    /// `first_score + i` [`SEND_MANY_SCORE_STEP`]s (`first_score` is Python's `time.time()`,
    /// which also sets the trim thresholds).
    fn one_trip_invocation<'a, 'c>(
        &'a self,
        calls: impl ExactSizeIterator<Item = &'c OneTripCall>,
        first_score: f64,
    ) -> ScriptInvocation<'a> {
        let inner = &self.inner;
        let mut invocation = inner.group_send_one_trip_script.prepare_invoke();
        invocation
            .arg(inner.keys.prefix())
            .arg(inner.capacities.default_capacity())
            .arg(inner.expiry_secs)
            .arg(first_score as i64 - inner.expiry_secs as i64)
            .arg(first_score as i64 - inner.group_expiry_secs as i64);
        for (i, call) in calls.enumerate() {
            invocation
                .key(&call.group_key)
                .arg(&call.random[..])
                .arg(&call.entries[..])
                .arg(call.entry_count)
                .arg(first_score + i as f64 * SEND_MANY_SCORE_STEP);
        }
        invocation
    }

    /// `group_send` in one round trip when [`Self::one_trip_call`] allows it; `None` when it
    /// does not, and the general path then does the same in two trips.
    async fn group_send_one_trip(
        &self,
        group: &str,
        message: &Message,
    ) -> Result<Option<GroupSendReport>> {
        let Some(call) = self.one_trip_call(group, message)? else {
            return Ok(None);
        };
        let now = now_f64();
        let reply: Vec<usize> = self.inner.shards[0]
            .run("group_send", |mut c| {
                let invocation = self.one_trip_invocation(std::iter::once(&call), now);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let [members, over] = reply[..] else {
            return Err(Error::new(
                ErrorKind::Redis,
                "the group_send script answered with the wrong count",
            ));
        };
        tracing::Span::current().record("fanout", members);
        log_over_capacity(group, over, members);
        Ok(Some(GroupSendReport::new(members, over)))
    }

    /// The one-trip calls of `calls`, in order, in one pipeline on the (only) shard: first
    /// `SCRIPT LOAD` (a pipeline does not load a missing script and retry, as a single
    /// `EVALSHA` does), then one `EVALSHA` per [`MESSAGES_PER_SCRIPT_CALL`] messages. Redis
    /// runs a connection's commands in the order they arrive, and each call its messages in
    /// order, so the messages to one channel are stored in the order given. One result per
    /// message; a failed call fails its messages, a failed pipeline (connection lost twice,
    /// timeout) all of them.
    ///
    /// Message `i` is scored `first_score + i` [`SEND_MANY_SCORE_STEP`]s.
    async fn group_send_pipelined(
        &self,
        calls: &[(String, OneTripCall)],
        first_score: f64,
    ) -> Vec<Result<GroupSendReport>> {
        let inner = &self.inner;
        let script = &inner.group_send_one_trip_script;
        let chunks: Vec<&[(String, OneTripCall)]> =
            calls.chunks(MESSAGES_PER_SCRIPT_CALL).collect();
        let replies = inner.shards[0]
            .run("group_send pipeline", |mut c| {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                pipe.load_script(script).ignore();
                for (n, chunk) in chunks.iter().enumerate() {
                    let first =
                        first_score + (n * MESSAGES_PER_SCRIPT_CALL) as f64 * SEND_MANY_SCORE_STEP;
                    let invocation = self.one_trip_invocation(chunk.iter().map(|(_, c)| c), first);
                    pipe.invoke_script(&invocation);
                }
                async move {
                    pipe.query_async::<Vec<redis::RedisResult<Vec<usize>>>>(&mut c)
                        .await
                }
            })
            .await;
        let fail_all = |kind: ErrorKind, text: &str| -> Vec<Result<GroupSendReport>> {
            (calls.iter())
                .map(|_| Err(Error::new(kind, text.to_owned())))
                .collect()
        };
        let replies = match replies {
            Ok(replies) if replies.len() == chunks.len() => replies,
            Ok(replies) => {
                warn!(
                    calls = chunks.len(),
                    replies = replies.len(),
                    "group_send pipeline answered with the wrong count"
                );
                return fail_all(
                    ErrorKind::Redis,
                    "the group_send pipeline answered with the wrong count",
                );
            }
            Err(err) => {
                warn!(error = %err, messages = calls.len(), "group_send pipeline failed");
                return fail_all(err.kind(), &err.to_string());
            }
        };
        let mut results = Vec::with_capacity(calls.len());
        for (chunk, reply) in chunks.iter().zip(replies) {
            match reply {
                Ok(counts) if counts.len() == 2 * chunk.len() => {
                    for ((group, _), pair) in chunk.iter().zip(counts.chunks(2)) {
                        let (members, over) = (pair[0], pair[1]);
                        log_over_capacity(group, over, members);
                        results.push(Ok(GroupSendReport::new(members, over)));
                    }
                }
                Ok(_) => results.extend(chunk.iter().map(|_| {
                    Err(Error::new(
                        ErrorKind::Redis,
                        "the group_send script answered with the wrong count",
                    ))
                })),
                Err(err) => {
                    let err = crate::error::redis_error("group_send", err);
                    let (kind, text) = (err.kind(), err.to_string());
                    results.extend(chunk.iter().map(|_| Err(Error::new(kind, text.clone()))));
                }
            }
        }
        results
    }

    /// Sends the pipeline's calls (if any) and puts their results where they belong.
    async fn flush_pipeline(
        &self,
        pipeline: &mut SendPipeline,
        results: &mut [Option<Result<GroupSendReport>>],
    ) {
        if pipeline.calls.is_empty() {
            return;
        }
        let first = now_f64().max(pipeline.next_score);
        pipeline.next_score = first + pipeline.calls.len() as f64 * SEND_MANY_SCORE_STEP;
        let sent = self.group_send_pipelined(&pipeline.calls, first).await;
        for (index, result) in pipeline.at.drain(..).zip(sent) {
            results[index] = Some(result);
        }
        pipeline.calls.clear();
    }

    fn check_message(message: &Message) -> Result<()> {
        if message.contains_key(ASGI_CHANNEL_KEY) {
            return Err(Error::new(
                ErrorKind::InvalidMessage,
                "message must not contain the reserved key __asgi_channel__",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl ChannelLayer for RedisChannelLayer {
    async fn new_channel(&self, prefix: &str) -> Result<String> {
        let name = format!("{prefix}.{}!{}", self.inner.client_prefix, random_hex_id());
        require_valid_channel_name(&name)?;
        self.inner.readers.router.buffer(&name);
        self.inner.ensure_reader(non_local_name(&name));
        Ok(name)
    }

    async fn attach(&self, channel: &str, sink: Arc<dyn Deliver>) -> Result<()> {
        require_valid_channel_name(channel)?;
        let inner = &self.inner;
        if let Some(history) = &inner.readers.history
            && history.group_of(channel).is_some()
        {
            // A history channel is the whole fleet's: nothing to drain here but the log.
            inner.readers.router.attach(channel, sink);
            inner.ensure_history();
            // Every entry logged after this returns is read here: the log reader knows
            // where it starts.
            return match tokio::time::timeout(inner.response_timeout, history.log_started()).await {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    "the history log reader did not start (is Redis reachable?)",
                )),
            };
        }
        if !inner.is_local(channel) {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!("channel {channel} is not a process-specific channel of this layer"),
            ));
        }
        inner.readers.router.attach(channel, sink);
        inner.ensure_reader(non_local_name(channel));
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        let Some(history) = inner.readers.history.as_ref() else {
            return Ok(());
        };
        if history.is_active() {
            // The home-shard reader may be blocked on the history keys: a member that wait
            // pops after this returns would be out of Redis and never logged once the process
            // ends. Wake it, and wait for its next capture, which logs what it holds and waits
            // on those keys no more; only then give the lease up.
            history.stop_capturing();
            inner.readers.wake(history.home()).await;
            if !history.handed_over(CLOSE_HANDOVER_LIMIT).await {
                warn!("the history reader did not hand its capture over in time");
            }
        }
        history.release(&inner.shards[history.home()]).await
    }

    fn history_channel(&self, group: &str) -> Option<String> {
        self.inner.readers.history.as_ref()?.channel(group)
    }

    async fn replay_many(
        &self,
        targets: &[(&str, Option<&Position>)],
    ) -> Result<Vec<Option<Replay>>> {
        for (group, _) in targets {
            require_valid_group_name(group)?;
        }
        let inner = &self.inner;
        let Some(history) = inner.readers.history.as_ref() else {
            return Ok(vec![None; targets.len()]);
        };
        history
            .replay_many(
                &inner.shards[history.home()],
                &inner.readers.counters,
                targets,
            )
            .await
    }

    /// With several shards, the prefixes are chosen so that a channels_redis sender writes
    /// their channels' keys to the same shard as the default prefix's (it picks the shard by
    /// hashing the non-local name), where one reader takes them in one order.
    fn colocated_prefixes(&self, base: &str, count: usize) -> Vec<String> {
        let inner = &self.inner;
        let cp = &inner.client_prefix;
        let home = inner.shard_of(&format!("{DEFAULT_NEW_CHANNEL_PREFIX}.{cp}!"));
        let found: Vec<String> = (0..)
            .take(
                count
                    .saturating_mul(inner.ring())
                    .saturating_mul(COLOCATED_SEARCH_FACTOR)
                    .max(count),
            )
            .map(|n| format!("{base}.k{n}"))
            .filter(|prefix| inner.shard_of(&format!("{prefix}.{cp}!")) == home)
            .take(count)
            .collect();
        if found.len() == count {
            found
        } else {
            (0..count).map(|i| format!("{base}.k{i}")).collect()
        }
    }

    async fn send(&self, channel: &str, message: Message) -> Result<()> {
        require_valid_channel_name(channel)?;
        Self::check_message(&message)?;
        let inner = &self.inner;
        let (target, shard) = if is_specific(channel) {
            // Deviation from Python: hash the non-local name, where receivers listen.
            (
                Target::One(channel),
                inner.shard_of(non_local_name(channel)),
            )
        } else {
            let shard = inner.send_rr.fetch_add(1, Ordering::Relaxed) % inner.ring();
            (Target::None, shard)
        };
        let key = inner.keys.channel_key(channel);
        let member = inner.readers.codec.encode_routed(message.map(), target)?;
        let capacity = inner.capacities.get(channel);
        let now = now_f64();
        let trim = now as i64 - inner.expiry_secs as i64;
        let stored: i64 = inner.shards[shard]
            .run("send", |mut c| {
                let mut invocation = inner.send_script.key(&key);
                invocation
                    .arg(&member[..])
                    .arg(capacity)
                    .arg(now)
                    .arg(inner.expiry_secs)
                    .arg(trim);
                async move { invocation.invoke_async(&mut c).await }
            })
            .instrument(debug_span!("layer.send", channel = %channel, shard))
            .await?;
        if stored == 0 {
            return Err(Error::new(
                ErrorKind::ChannelFull,
                format!("channel {channel} is full"),
            ));
        }
        Ok(())
    }

    async fn receive(&self, channel: &str) -> Result<Message> {
        require_valid_channel_name(channel)?;
        let inner = &self.inner;
        if is_specific(channel) {
            if !inner.is_local(channel) {
                // Python: AssertionError("Wrong client prefix").
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    format!(
                        "channel {channel} does not belong to this layer (wrong client prefix)"
                    ),
                ));
            }
            let buffer = inner.readers.router.buffer(channel);
            inner.ensure_reader(non_local_name(channel));
            inner.readers.receive_local(&buffer).await
        } else {
            inner.general(channel).receive().await
        }
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Closed,
                format!("channel {channel} was closed or is attached"),
            )
        })
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<()> {
        require_valid_group_name(group)?;
        require_valid_channel_name(channel)?;
        let inner = &self.inner;
        let shard = inner.shard_of(group);
        let key = inner.keys.group_key(group);
        let score = now_f64();
        let expiry = inner.group_expiry_secs;
        inner.shards[shard]
            .run("group_add", |mut c| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZADD").arg(&key).arg(score).arg(channel).ignore();
                pipe.cmd("EXPIRE").arg(&key).arg(expiry).ignore();
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .instrument(debug_span!("layer.group_add", group = %group, shard))
            .await?;
        let recorded =
            (inner.readers.history.as_ref()).is_some_and(|h| h.group_of(channel).is_some());
        if inner.is_local(channel) || recorded {
            lock(&inner.memberships).add(group, channel);
            inner.ensure_refresher();
        }
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<()> {
        require_valid_group_name(group)?;
        require_valid_channel_name(channel)?;
        let inner = &self.inner;
        // Stop tracking first so a concurrent refresh cannot put it back afterwards.
        lock(&inner.memberships).discard(group, channel);
        if let Some(rule) = (inner.readers.history.as_ref())
            .filter(|h| h.group_of(channel).is_some())
            .and_then(|h| h.config().rule_for(group))
        {
            // The fleet's member: recording goes on for the retention window (a user whose
            // only tab reconnects has no socket anywhere meanwhile), then a sweep removes it
            // unless some server re-added it since.
            inner.sweep_later(group, channel, rule.max_age);
            return Ok(());
        }
        let shard = inner.shard_of(group);
        let key = inner.keys.group_key(group);
        inner.shards[shard]
            .run("group_discard", |mut c| {
                let cmd = redis::cmd("ZREM").arg(&key).arg(channel).to_owned();
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .instrument(debug_span!("layer.group_discard", group = %group, shard))
            .await
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport> {
        require_valid_group_name(group)?;
        Self::check_message(&message)?;
        let inner = &self.inner;
        let span = debug_span!("layer.group_send", group = %group, fanout = tracing::field::Empty);
        async {
            if let Some(report) = self.group_send_one_trip(group, &message).await? {
                return Ok(report);
            }
            let group_shard = inner.shard_of(group);
            let group_key = inner.keys.group_key(group);
            let trim_group = now_f64() as i64 - inner.group_expiry_secs as i64;
            let raw: Vec<Vec<u8>> = inner.shards[group_shard]
                .run("group_send", |mut c| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(&group_key)
                        .arg(0)
                        .arg(trim_group)
                        .ignore();
                    pipe.cmd("ZRANGE").arg(&group_key).arg(0).arg(-1);
                    async move {
                        let (members,): (Vec<Vec<u8>>,) = pipe.query_async(&mut c).await?;
                        Ok(members)
                    }
                })
                .await?;
            let members: Vec<String> = raw
                .into_iter()
                .filter_map(|m| match String::from_utf8(m) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        warn!(group, "skipping group member that is not UTF-8");
                        None
                    }
                })
                .collect();
            tracing::Span::current().record("fanout", members.len());
            if members.is_empty() {
                return Ok(GroupSendReport::new(0, 0));
            }
            // Bucket by Redis key, in ZRANGE order (core.py _map_channel_keys_to_connection).
            let mut by_key: IndexMap<String, Vec<String>> = IndexMap::new();
            for member in &members {
                by_key
                    .entry(inner.keys.channel_key(member))
                    .or_default()
                    .push(member.clone());
            }
            // Per key: its message (own random prefix / token), capacity of the first member,
            // shard of hash(non_local_name(first member)).
            let mut by_shard: IndexMap<usize, Vec<(String, Vec<u8>, usize)>> = IndexMap::new();
            for (key, names) in &by_key {
                let first = &names[0];
                let member = inner
                    .readers
                    .codec
                    .encode_routed(message.map(), Target::Many(names))?;
                by_shard
                    .entry(inner.shard_of(non_local_name(first)))
                    .or_default()
                    .push((key.clone(), member, inner.capacities.get(first)));
            }
            let now = now_f64();
            let trim = now as i64 - inner.expiry_secs as i64;
            let deliveries = by_shard.into_iter().map(|(shard, entries)| async move {
                inner.shards[shard]
                    .run("group_send", |mut c| {
                        let mut invocation = inner.group_send_script.prepare_invoke();
                        for (key, _, _) in &entries {
                            invocation.key(key);
                        }
                        for (_, member, _) in &entries {
                            invocation.arg(&member[..]);
                        }
                        for (_, _, capacity) in &entries {
                            invocation.arg(*capacity);
                        }
                        invocation.arg(now).arg(inner.expiry_secs).arg(trim);
                        async move { invocation.invoke_async::<usize>(&mut c).await }
                    })
                    .await
            });
            let mut over = 0;
            for result in futures_util::future::join_all(deliveries).await {
                over += result?;
            }
            log_over_capacity(group, over, members.len());
            Ok(GroupSendReport::new(members.len(), over))
        }
        .instrument(span)
        .await
    }

    /// On one shard with plain msgpack and no `channel_capacity` rules (where `group_send`
    /// takes one round trip), the messages go in pipelines of up to 1,000, 100 per call of the
    /// script `group_send` uses, so Redis stores exactly what that many `group_send`s would.
    /// Otherwise they are `group_send`s, one after the other.
    ///
    /// A pipeline whose connection fails is sent once more on a new connection, as every
    /// command of this layer is: the calls Redis had already run are then stored twice.
    async fn group_send_many(&self, sends: Vec<(String, Message)>) -> Vec<Result<GroupSendReport>> {
        let count = sends.len();
        let span = debug_span!("layer.group_send_many", count);
        async move {
            let mut results: Vec<Option<Result<GroupSendReport>>> = Vec::with_capacity(count);
            results.resize_with(count, || None);
            if !self.is_one_trip() {
                // Two round trips each, one after the other: the order holds across groups.
                for (index, (group, message)) in sends.into_iter().enumerate() {
                    results[index] = Some(self.group_send(&group, message).await);
                }
            } else {
                let mut pipeline = SendPipeline::default();
                for (index, (group, message)) in sends.into_iter().enumerate() {
                    let call = require_valid_group_name(&group)
                        .and(Self::check_message(&message))
                        .and_then(|()| self.one_trip_call(&group, &message));
                    match call {
                        Ok(Some(call)) => {
                            pipeline.calls.push((group, call));
                            pipeline.at.push(index);
                        }
                        Ok(None) => {
                            // A message the script cannot take: after what came before it.
                            self.flush_pipeline(&mut pipeline, &mut results).await;
                            results[index] = Some(self.group_send(&group, message).await);
                        }
                        Err(err) => results[index] = Some(Err(err)),
                    }
                    if pipeline.calls.len() == SEND_PIPELINE_MESSAGES {
                        self.flush_pipeline(&mut pipeline, &mut results).await;
                    }
                }
                self.flush_pipeline(&mut pipeline, &mut results).await;
            }
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Error::new(
                            ErrorKind::Closed,
                            "group_send_many lost an entry",
                        ))
                    })
                })
                .collect()
        }
        .instrument(span)
        .await
    }

    async fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        lock(&inner.memberships).clear();
        let pattern = inner.keys.flush_pattern();
        for shard in inner.shards.iter() {
            let deleted: i64 = shard
                .run("flush", |mut c| {
                    let invocation = inner.flush_script.arg(&pattern);
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await?;
            debug!(shard = shard.index(), deleted, "flushed");
        }
        inner.readers.router.clear_all();
        Ok(())
    }

    fn close_channel(&self, channel: &str) {
        let inner = &self.inner;
        lock(&inner.memberships).forget_channel(channel);
        inner.readers.router.close(channel);
        if !is_specific(channel) {
            lock(&inner.generals).remove(channel);
            if let Some(handle) = lock(&inner.tasks).generals.remove(channel) {
                handle.abort();
            }
        }
    }

    /// `PING` on every shard at once, each bounded (see `connection::ping_all`).
    async fn ping(&self) -> Result<()> {
        crate::connection::ping_all(self.inner.shards.iter()).await
    }
}
