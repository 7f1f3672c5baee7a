//! Recorded group history: every message sent to a recorded group is taken out of Redis once,
//! by whichever server gets it first, kept for a while with an offset, and delivered by every
//! server to its own sockets of the group.
//!
//! How it fits channels_redis without changing the Python senders:
//!
//! 1. **One member per recorded group for the whole fleet.** A recorded group gets the member
//!    channel `herald.history.k<n>!<group>` ([`History::channel`]); channels_redis keeps all
//!    `X!…` channels in the one sorted set of `X!`, so `group_send` writes the message once
//!    into `asgiherald.history.k<n>!`, however many servers hold sockets of the group, and
//!    `__asgi_channel__` names the group.
//! 2. **Taken and logged in one step.** A server's reader of the home shard runs the
//!    [`CAPTURE`] script: it pops every history key, merges the members by the senders'
//!    scores and appends them to one stream, the *log* (`asgiherald.history.log`), in one
//!    atomic step. A message is never out of Redis and unlogged, except the one member a
//!    reader's blocking wait (`BZPOPMIN`) was handed after an idle spell, until its next
//!    round trip passes it to the script (see `docs/reliability.md`).
//! 3. **Every server reads the log** ([`log_reader`]) with `XREAD` from its last id (the log
//!    is not consumed), decodes each entry, records it in its group's stream (the [`INDEX`]
//!    script, idempotent: the stream id is the log id, so the servers that record the same
//!    entry after the first change nothing; the age limit is applied apart, by [`TRIM`]),
//!    and hands it, with its [`Position`], to the
//!    group's attached sink. The log id is therefore the message's offset everywhere.
//! 4. **Replay** ([`History::replay`]) reads a group's stream after an offset and says whether
//!    it covers the gap (same epoch, nothing after it trimmed).
//!
//! The *epoch* (`asgiherald.history.epoch`, a random id set if absent) goes away with a flush
//! or a Redis restart without persistence; a new one tells clients that their offsets mean
//! nothing any more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::sync::lock;
use herald_core::{ASGI_CHANNEL_KEY, Message, Offset, Position, Recorded, Replay, Value};
use redis::Script;
use redis::aio::MultiplexedConnection;
use tracing::{debug, info, trace, warn};

use crate::codec::Codec;
use crate::connection::Shard;
use crate::error::{Error, ErrorKind, Result};
use crate::hashing::consistent_hash;
use crate::keys::Keys;
use crate::receive::{Counters, Outage, Readers};

/// How long one recorded group keeps its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// The groups it applies to: a glob where `*` matches any run of characters
    /// (`user_*`, `task_*`, `*`).
    pub pattern: String,
    /// At most this many messages per group are kept (the oldest go first).
    pub max_len: usize,
    /// Messages older than this are dropped, and a group's history that received nothing for
    /// this long is deleted.
    pub max_age: Duration,
}

impl HistoryRule {
    /// A rule for the groups matching `pattern`.
    pub fn new(pattern: impl Into<String>, max_len: usize, max_age: Duration) -> Self {
        HistoryRule {
            pattern: pattern.into(),
            max_len,
            max_age,
        }
    }

    fn matches(&self, group: &str) -> bool {
        glob_matches(&self.pattern, group)
    }
}

/// Which groups are recorded and for how long. The first matching rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The rules, first match wins; a group matching none is not recorded.
    pub rules: Vec<HistoryRule>,
}

/// The default retention of `user_*` groups: a reconnect, a reload or a short outage.
pub(crate) const DEFAULT_USER_RETENTION: (usize, Duration) = (100, Duration::from_secs(300));
/// The default retention of `task_*` groups: long enough that a page opened after a task ended
/// still learns its result (a task's history is its latest state).
pub(crate) const DEFAULT_TASK_RETENTION: (usize, Duration) = (20, Duration::from_secs(3600));

impl Default for HistoryConfig {
    /// `user_*`: 100 messages / 5 minutes; `task_*`: 20 messages / 1 hour.
    fn default() -> Self {
        HistoryConfig {
            rules: vec![
                HistoryRule::new("user_*", DEFAULT_USER_RETENTION.0, DEFAULT_USER_RETENTION.1),
                HistoryRule::new("task_*", DEFAULT_TASK_RETENTION.0, DEFAULT_TASK_RETENTION.1),
            ],
        }
    }
}

impl HistoryConfig {
    /// The rule for `group`, if it is recorded.
    pub fn rule_for(&self, group: &str) -> Option<&HistoryRule> {
        self.rules.iter().find(|rule| rule.matches(group))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for rule in &self.rules {
            if rule.pattern.is_empty() || rule.max_len == 0 || rule.max_age < Duration::from_secs(1)
            {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "history rule {:?}: needs a pattern, at least 1 message and at least 1 s",
                        rule.pattern
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `*` matches any run of characters, everything else itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How many sorted sets the history channels are spread over: each holds at most the site's
/// `capacity` messages between two reader rounds, so one shared key would drop messages of a
/// busy fleet. Every server must use the same names, so it is fixed.
pub(crate) const HISTORY_KEYS: usize = 32;

/// How many entries the log keeps (approximately): the log only carries messages from the
/// server that took them to the others, which read it within milliseconds; this is slack for
/// a server that falls behind or reconnects.
const LOG_MAX_LEN: usize = 10_000;

/// Members popped per history key per capture; what a full key holds beyond it goes back and
/// is taken next round (in order: see [`CAPTURE`]).
const CAPTURE_BATCH: usize = 1_000;

/// The capture lease lasts this many of the holder's blocking waits: a holder that is gone
/// (killed) is replaced after at most that long.
const LEASE_WAITS: u32 = 3;

/// The longest blocking wait of a home-shard reader when history is on: a server without
/// the lease tries to take it this often, so a killed holder is replaced within
/// `LEASE_WAITS + 1` of these.
const HISTORY_WAIT: Duration = Duration::from_secs(1);

/// Bounds of [`History::refresh_every`].
const MIN_REFRESH: Duration = Duration::from_millis(200);
const MAX_REFRESH: Duration = Duration::from_secs(60);

/// Log entries read per `XREAD`.
const LOG_READ_BATCH: usize = 512;

/// At most this many messages per replay (a rule's `max_len` above it is cut to it).
const REPLAY_LIMIT: usize = 10_000;

/// Pops every history key (`KEYS[4..]`), merges the members by score and appends them to the
/// log (`KEYS[1]`) in one atomic step, if the caller holds the capture lease (`KEYS[2]`).
///
/// `ARGV`: log max length, members per key, the caller's id, the lease in ms, `1` if the
/// caller may take the lease (`0` once it is closing), then optionally a member and its score
/// that the caller's blocking wait already popped. One server at a time
/// captures: two capturing servers would each hold a member their blocking waits popped and
/// log them in whichever order their next calls arrive. The lease is taken when free and
/// renewed by every call of its holder. A key that gave a full batch may hold members scoring
/// below what other keys gave: members above the lowest last score of such a key go back where
/// they were and wait for the next call. Each logged entry also gets the next number of the
/// counter `KEYS[3]` (field `n`), so that a log reader can tell that entries were trimmed
/// before it read them. Returns `{logged, 1}` for the lease holder; a caller without the lease
/// gets `{logged, 0}` and logs only the member it holds, if any, so that it is not lost.
pub(crate) const CAPTURE: &str = r"
local items = {}
local cutoff = math.huge
if ARGV[6] then
  items[1] = {tonumber(ARGV[7]), 0, 0, ARGV[6], ARGV[7]}
end
local holder = redis.call('GET', KEYS[2])
local leader = 0
if ARGV[5] == '1' and (not holder or holder == ARGV[3]) then
  leader = 1
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  for i = 4, #KEYS do
    local popped = redis.call('ZPOPMIN', KEYS[i], ARGV[2])
    for j = 1, #popped, 2 do
      items[#items + 1] = {tonumber(popped[j + 1]), i, j, popped[j], popped[j + 1]}
    end
    if #popped >= 2 * tonumber(ARGV[2]) then
      local last = tonumber(popped[#popped])
      if last < cutoff then cutoff = last end
    end
  end
end
table.sort(items, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
local logged = {}
for _, item in ipairs(items) do
  if item[1] <= cutoff or item[2] == 0 then
    logged[#logged + 1] = item[4]
  else
    redis.call('ZADD', KEYS[item[2]], item[5], item[4])
  end
end
if #logged > 0 then
  local n = redis.call('INCRBY', KEYS[3], #logged) - #logged
  for k, member in ipairs(logged) do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', member, 'n', n + k)
  end
end
return {#logged, leader}
";

/// Records log entries in their groups' streams. `KEYS` are the group streams, one per entry;
/// `ARGV` has four values per entry: the log id, how many entries the group keeps, the
/// stream's expiry in seconds (`0`: not on this entry, a later one of the same group sets it)
/// and the member.
///
/// The stream id is the log id, so recording an entry a second time (another server got there
/// first) fails Redis's "id must grow" rule and changes nothing. The count limit is applied by
/// `XADD` itself; the age limit by [`TRIM`], run for each recently written group a few times
/// per retention rather than on every entry. Returns how many entries were recorded here.
pub(crate) const INDEX: &str = r"
local added = 0
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local ok = redis.pcall('XADD', KEYS[i], 'MAXLEN', ARGV[b + 2], ARGV[b + 1], 'm', ARGV[b + 4])
  if type(ok) ~= 'table' or not ok.err then
    added = added + 1
  end
  if ARGV[b + 3] ~= '0' then
    redis.call('EXPIRE', KEYS[i], ARGV[b + 3])
  end
end
return added
";

/// Drops what is older than its rule's age from group streams (`KEYS`; `ARGV`: the age in ms
/// per stream), keeping the newest such entry as a fence: a client whose last message is that
/// one can still be told that it missed nothing. Ages are measured on Redis's clock, which
/// also makes the log ids. Returns how many entries were dropped.
pub(crate) const TRIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dropped = 0
for i = 1, #KEYS do
  local limit = now - tonumber(ARGV[i])
  if limit > 0 then
    local fence = redis.call('XREVRANGE', KEYS[i], '(' .. limit .. '-0', '-', 'COUNT', 1)
    if #fence > 0 then
      dropped = dropped + redis.call('XTRIM', KEYS[i], 'MINID', fence[1][1])
    end
  end
end
return dropped
";

/// Reads several groups' streams (`KEYS[2..]`) in one atomic step, so that all of them show
/// the history recorded up to one moment: a replay merged across groups is then one prefix of
/// the log, and what comes after it arrives live (read one by one, a later group's read could
/// see entries an earlier one missed, and those would overtake the earlier group's live ones).
/// `ARGV`: a fresh epoch to set if Redis has none (`KEYS[1]`), then per stream the id to read
/// after (empty: its latest entry only) and at most how many. Returns the epoch, Redis's clock
/// in ms, and per stream how many entries it ever took (Redis 7; empty before), its first id,
/// its length and the entries. A Redis without an epoch (first use, or restarted and
/// not yet seen by the log reader, which sets it the same way) gets `ARGV[3]`: an answer never
/// carries an empty epoch that the next one would contradict.
pub(crate) const REPLAY: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {epoch, now}
for i = 2, #KEYS do
  local after, limit = ARGV[2 * i - 2], ARGV[2 * i - 1]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    out[#out + 1] = {'', '', 0, {}}
  else
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    local added, first, len = '', '', 0
    for j = 1, #info, 2 do
      local k = info[j]
      if k == 'entries-added' then added = tostring(info[j + 1])
      elseif k == 'length' then len = info[j + 1]
      elseif k == 'first-entry' and info[j + 1] then first = info[j + 1][1] end
    end
    local entries
    if after == '' then
      entries = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
    else
      entries = redis.call('XRANGE', KEYS[i], '(' .. after, '+', 'COUNT', limit)
    end
    out[#out + 1] = {added, first, len, entries}
  end
end
return out
";

/// Deletes the lease `KEYS[1]` if `ARGV[1]` holds it; returns 1 if it did.
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Removes member `ARGV[1]` from group `KEYS[1]` if its score (the time of its last add) is
/// below `ARGV[2]`; returns 1 if it did.
pub(crate) const SWEEP: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// The recorded history of one layer: its configuration, key names and scripts. Owned by the
/// layer's [`Readers`].
#[derive(Debug)]
pub(crate) struct History {
    config: HistoryConfig,
    /// The shard holding the history keys, the log and every group's stream.
    home: usize,
    /// The non-local names `herald.history.k<n>` of the history channels (without `!`).
    names: Vec<String>,
    /// Their sorted sets, in the same order.
    keys: Vec<String>,
    log_key: String,
    seq_key: String,
    epoch_key: String,
    lease_key: String,
    /// This server's id in the capture lease.
    me: String,
    lease: Duration,
    stream_keys: Keys,
    /// Decodes logged members without Fernet's time limit: a replay may read a message minutes
    /// after it was sent, which is the point.
    codec: Codec,
    /// The epoch last read from Redis.
    epoch: Mutex<Option<Arc<str>>>,
    capture: Script,
    index: Script,
    trim: Script,
    replay: Script,
    release: Script,
    /// Set by [`release`](Self::release): this server takes the lease no more.
    closing: AtomicBool,
    /// Set by [`activate`](Self::activate).
    active: AtomicBool,
    /// True once the log reader knows where it starts: this server captures nothing before,
    /// or the log reader would skip what it captured.
    log_started: tokio::sync::watch::Sender<bool>,
    /// True once the home-shard reader has run a capture after [`closing`](Self::closing)
    /// was set: whatever its last blocking wait popped from the history keys is logged, and
    /// it waits on them no more.
    handed_over: tokio::sync::watch::Sender<bool>,
}

/// The non-local names of the history channels: `herald.history.k<n>` for the first
/// [`HISTORY_KEYS`] values of `n` whose keys channels_redis writes to shard 0, so that one
/// reader merges all of them (every server computes the same list).
fn history_names(ring: usize) -> Vec<String> {
    let on_home = (0..)
        .map(|n| format!("herald.history.k{n}"))
        .filter(|name| consistent_hash(format!("{name}!").as_bytes(), ring) == 0);
    on_home.take(HISTORY_KEYS).collect()
}

impl History {
    pub(crate) fn new(
        config: HistoryConfig,
        keys: &Keys,
        codec: &Codec,
        ring: usize,
        me: &str,
        wait: Duration,
    ) -> Self {
        let names = history_names(ring.max(1));
        History {
            lease_key: keys.history_lease_key(),
            me: me.to_owned(),
            // The holder renews it at least once per blocking wait.
            lease: Self::wait_of(wait) * LEASE_WAITS,
            config,
            home: 0,
            keys: names
                .iter()
                .map(|name| keys.channel_key(&format!("{name}!")))
                .collect(),
            names,
            log_key: keys.history_log_key(),
            seq_key: keys.history_seq_key(),
            epoch_key: keys.history_epoch_key(),
            stream_keys: keys.clone(),
            codec: codec.clone().with_ttl(None),
            epoch: Mutex::new(None),
            capture: Script::new(CAPTURE),
            index: Script::new(INDEX),
            trim: Script::new(TRIM),
            replay: Script::new(REPLAY),
            release: Script::new(RELEASE),
            closing: AtomicBool::new(false),
            active: AtomicBool::new(false),
            log_started: tokio::sync::watch::Sender::new(false),
            handed_over: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The blocking wait of a home-shard reader, given the layer's.
    pub(crate) fn wait_of(wait: Duration) -> Duration {
        wait.min(HISTORY_WAIT).max(Duration::from_millis(10))
    }

    /// Marks this server as serving recorded groups (a history channel is attached); true the
    /// first time. Only such a server reads the log and takes the capture lease.
    pub(crate) fn activate(&self) -> bool {
        !self.active.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until the log reader knows where it starts reading.
    pub(crate) async fn log_started(&self) {
        let mut started = self.log_started.subscribe();
        // Err only if the sender is gone, i.e. with the layer.
        let _ = started.wait_for(|started| *started).await;
    }

    /// Stops capturing (at shutdown): takes the lease no more, and tells the home-shard reader
    /// so. The reader's next capture logs the member its blocking wait may hold, without the
    /// lease, and then [`handed_over`](Self::handed_over) returns.
    pub(crate) fn stop_capturing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Called by the home-shard reader after each capture: once closing, its capture took the
    /// lease no more and logged what it held.
    pub(crate) fn captured_while_closing(&self) {
        if self.is_closing() {
            self.handed_over.send_replace(true);
        }
    }

    /// Waits until the home-shard reader has logged what it held and stopped waiting on the
    /// history keys (see [`stop_capturing`](Self::stop_capturing)), at most `limit`; false if
    /// it did not in time (its Redis is down, say).
    pub(crate) async fn handed_over(&self, limit: Duration) -> bool {
        let mut done = self.handed_over.subscribe();
        tokio::time::timeout(limit, done.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Gives the capture lease up if this server holds it (at shutdown), so another server
    /// takes over at its next round instead of after the lease runs out.
    pub(crate) async fn release(&self, shard: &Shard) -> Result<()> {
        self.stop_capturing();
        let released: u8 = shard
            .run("release the capture lease", |mut c| {
                let mut invocation = self.release.prepare_invoke();
                invocation.key(&self.lease_key).arg(&self.me);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        if released == 1 {
            info!("history capture lease released");
        }
        Ok(())
    }

    pub(crate) fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// How often servers re-add the history memberships they use: a third of the shortest
    /// retention, so a sweep (a retention after another server's last socket left) never
    /// finds a membership in use older than that.
    pub(crate) fn refresh_every(&self) -> Duration {
        let shortest = self.config.rules.iter().map(|r| r.max_age).min();
        (shortest.unwrap_or(MAX_REFRESH) / 3).clamp(MIN_REFRESH, MAX_REFRESH)
    }

    pub(crate) fn home(&self) -> usize {
        self.home
    }

    /// The sorted sets a home-shard reader waits on besides its own keys.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The history channel of `group`, if it is recorded and the name fits Channels' limit.
    pub(crate) fn channel(&self, group: &str) -> Option<String> {
        self.config.rule_for(group)?;
        let index = consistent_hash(group.as_bytes(), self.names.len());
        let channel = format!("{}!{group}", self.names[index]);
        herald_core::names::is_valid_channel_name(&channel).then_some(channel)
    }

    /// The group of a history channel name, if it is one of ours.
    pub(crate) fn group_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let (head, group) = channel.split_once('!')?;
        self.names.iter().any(|n| n == head).then_some(group)
    }

    /// Takes what the history keys hold into the log (plus `held`, a member a blocking wait
    /// popped) if this server holds the capture lease; returns how many members were logged
    /// and whether it holds the lease.
    pub(crate) async fn capture(
        &self,
        conn: &mut MultiplexedConnection,
        held: Option<&(Vec<u8>, f64)>,
    ) -> redis::RedisResult<(usize, bool)> {
        let mut invocation = self.capture.prepare_invoke();
        invocation
            .key(&self.log_key)
            .key(&self.lease_key)
            .key(&self.seq_key);
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
            .arg(LOG_MAX_LEN)
            .arg(CAPTURE_BATCH)
            .arg(&self.me)
            .arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX))
            .arg(if self.is_closing() { "0" } else { "1" });
        if let Some((member, score)) = held {
            // The score as Rust prints an f64: shortest form that reads back exactly.
            invocation.arg(member.as_slice()).arg(format!("{score:?}"));
        }
        let (logged, leader): (usize, u8) = invocation.invoke_async(conn).await?;
        Ok((logged, leader == 1))
    }

    /// Sets the epoch if Redis has none (first use, flush, restart without persistence) and
    /// returns it; true if it differs from the one seen before.
    async fn refresh_epoch(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<(Arc<str>, bool)> {
        let fresh = fresh_epoch();
        let (epoch,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&self.epoch_key)
            .arg(&fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.epoch_key)
            .query_async(conn)
            .await?;
        let epoch: Arc<str> = Arc::from(epoch);
        let mut seen = lock(&self.epoch);
        let changed = seen.as_ref().is_some_and(|old| *old != epoch);
        *seen = Some(Arc::clone(&epoch));
        Ok((epoch, changed))
    }

    fn current_epoch(&self) -> Arc<str> {
        lock(&self.epoch).clone().unwrap_or_else(|| Arc::from(""))
    }

    /// What each group's stream holds after its position (its latest entry without one), and
    /// whether that covers everything since; all read in one step (see [`REPLAY`]). `None`
    /// for a group this layer does not record.
    pub(crate) async fn replay_many(
        &self,
        shard: &Shard,
        counters: &Counters,
        targets: &[(&str, Option<&Position>)],
    ) -> Result<Vec<Option<Replay>>> {
        let recorded: Vec<(usize, &str, Option<&Position>, &HistoryRule)> = targets
            .iter()
            .enumerate()
            .filter_map(|(i, (group, since))| {
                self.config
                    .rule_for(group)
                    .map(|rule| (i, *group, *since, rule))
            })
            .collect();
        let mut out: Vec<Option<Replay>> = vec![None; targets.len()];
        if recorded.is_empty() {
            return Ok(out);
        }
        let fresh_epoch = fresh_epoch();
        let reply: redis::Value = shard
            .run("replay history", |mut c| {
                let mut invocation = self.replay.prepare_invoke();
                invocation.key(&self.epoch_key).arg(&fresh_epoch);
                for (_, group, since, rule) in &recorded {
                    invocation
                        .key(self.stream_keys.history_stream_key(group))
                        .arg(since.map(|p| p.offset.to_string()).unwrap_or_default())
                        .arg(rule.max_len.min(REPLAY_LIMIT));
                }
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let parsed = ReplayReply::parse(reply, recorded.len())
            .ok_or_else(|| Error::new(ErrorKind::Redis, "unexpected reply of the replay script"))?;
        let epoch: Arc<str> = Arc::from(parsed.epoch.as_str());
        // Log ids come from this Redis's clock (`XADD *`), never below its time: an entry
        // logged after this read has an id of at least `now-0`, which is after `start`.
        let start = Offset::new(parsed.now_ms.saturating_sub(1), u64::MAX);
        for ((index, group, since, rule), (coverage, entries)) in
            recorded.into_iter().zip(parsed.streams)
        {
            let group_name: Arc<str> = Arc::from(group);
            let mut messages = Vec::with_capacity(entries.len());
            for Entry {
                id: offset, member, ..
            } in entries
            {
                match self.codec.decode_detailed(&member) {
                    Ok(mut message) => {
                        message.remove(ASGI_CHANNEL_KEY);
                        messages.push(Recorded {
                            group: Arc::clone(&group_name),
                            position: Position {
                                epoch: Arc::clone(&epoch),
                                offset,
                            },
                            message,
                        });
                    }
                    Err(err) => {
                        let reason = counters.decode_error(err);
                        warn!(group, %offset, reason, "skipping undecodable recorded message");
                    }
                }
            }
            let recovered = match since {
                None => true,
                Some(since) => covers(&coverage, since, &epoch, rule),
            };
            Counters::add(&counters.history_replayed, messages.len() as u64);
            if !recovered {
                Counters::add(&counters.history_unrecoverable, 1);
            }
            out[index] = Some(Replay {
                epoch: Arc::clone(&epoch),
                recovered,
                messages,
                start,
            });
        }
        Ok(out)
    }
}

/// What the replay script says about a stream besides its entries.
#[derive(Debug, Default, PartialEq)]
struct Coverage {
    now_ms: u64,
    /// How many entries the stream ever took (Redis 7 and later; `None` before).
    added: Option<u64>,
    first: Option<Offset>,
    len: u64,
    exists: bool,
}

/// A new random epoch id, for a Redis that has none.
fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// True if a stream with `coverage` still holds everything recorded after `since`.
///
/// Trimming removes the oldest entries, and keeps one entry more than the rule's length plus
/// an age fence (see [`TRIM`]); so the stream covers the gap if it still holds `since`'s
/// entry or an older one. If it starts after `since`, it covers the gap only if it never
/// trimmed anything and is not a stream made anew after an idle spell (`since` within the
/// retention); when unsure, the answer is no: a client told to refetch loses nothing, one
/// that skips silently does.
fn covers(coverage: &Coverage, since: &Position, epoch: &str, rule: &HistoryRule) -> bool {
    if *since.epoch != *epoch {
        return false;
    }
    let age_ms = u64::try_from(rule.max_age.as_millis()).unwrap_or(u64::MAX);
    let old = since.offset.ms.saturating_add(age_ms) < coverage.now_ms;
    let first = match coverage.first {
        Some(first) if coverage.exists => first,
        // No stream: nothing was recorded within the retention.
        _ => return !old,
    };
    if first <= since.offset {
        return true;
    }
    if old {
        return false;
    }
    match coverage.added {
        Some(added) => added == coverage.len,
        None => coverage.len < kept(rule),
    }
}

/// How many entries a group's stream keeps: one more than the rule's length, so that a client
/// that saw the oldest of the last `max_len` can be told it missed nothing.
fn kept(rule: &HistoryRule) -> u64 {
    u64::try_from(rule.max_len)
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// One stream entry as read.
#[derive(Debug)]
struct Entry {
    id: Offset,
    /// The field `m`: the member as channels_redis stored it.
    member: Vec<u8>,
    /// The field `n` of log entries: their number (see [`CAPTURE`]).
    seq: Option<u64>,
}

/// A stream's entries as read.
type Entries = Vec<Entry>;

struct ReplayReply {
    epoch: String,
    now_ms: u64,
    streams: Vec<(Coverage, Entries)>,
}

impl ReplayReply {
    fn parse(reply: redis::Value, count: usize) -> Option<Self> {
        let redis::Value::Array(items) = reply else {
            return None;
        };
        let mut items = items.into_iter();
        let epoch = text(items.next()?)?;
        let now_ms = int(items.next()?)?;
        let mut streams = Vec::with_capacity(count);
        for item in items {
            let redis::Value::Array(parts) = item else {
                return None;
            };
            let mut parts = parts.into_iter();
            let added = text(parts.next()?)?;
            let first = text(parts.next()?)?;
            let len = int(parts.next()?)?;
            let entries = stream_entries(parts.next()?)?;
            streams.push((
                Coverage {
                    now_ms,
                    added: added.parse().ok(),
                    exists: !first.is_empty(),
                    first: first.parse().ok(),
                    len,
                },
                entries,
            ));
        }
        (streams.len() == count).then_some(ReplayReply {
            epoch,
            now_ms,
            streams,
        })
    }
}

fn text(value: redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        redis::Value::SimpleString(s) => Some(s),
        redis::Value::Okay => Some("OK".into()),
        redis::Value::Nil => Some(String::new()),
        _ => None,
    }
}

fn int(value: redis::Value) -> Option<u64> {
    match value {
        redis::Value::Int(n) => u64::try_from(n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `[[id, [field, value, …]], …]` → entries (the fields `m` and `n`).
fn stream_entries(value: redis::Value) -> Option<Entries> {
    let redis::Value::Array(entries) = value else {
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let redis::Value::Array(parts) = entry else {
            return None;
        };
        let mut parts = parts.into_iter();
        let id: Offset = text(parts.next()?)?.parse().ok()?;
        let redis::Value::Array(fields) = parts.next()? else {
            return None;
        };
        let mut fields = fields.into_iter();
        let (mut member, mut seq) = (None, None);
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if let (redis::Value::BulkString(name), redis::Value::BulkString(value)) = (name, value)
            {
                match name.as_slice() {
                    b"m" => member = Some(value),
                    b"n" => {
                        seq = std::str::from_utf8(&value)
                            .ok()
                            .and_then(|n| n.parse().ok())
                    }
                    _ => {}
                }
            }
        }
        out.push(Entry {
            id,
            member: member?,
            seq,
        });
    }
    Some(out)
}

/// The `XREAD` reply for one stream → its entries.
fn xread_entries(reply: redis::Value) -> Option<Entries> {
    match reply {
        redis::Value::Nil => Some(Vec::new()),
        // RESP2: [[stream, entries]]
        redis::Value::Array(streams) => {
            let first = streams.into_iter().next()?;
            let redis::Value::Array(pair) = first else {
                return None;
            };
            stream_entries(pair.into_iter().nth(1)?)
        }
        // RESP3: {stream: entries}
        redis::Value::Map(streams) => stream_entries(streams.into_iter().next()?.1),
        _ => None,
    }
}

/// The id of the log's last entry (`0-0` if it has none).
async fn log_end(log_key: &str, conn: &mut MultiplexedConnection) -> redis::RedisResult<Offset> {
    let reply: redis::Value = redis::cmd("XREVRANGE")
        .arg(log_key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(stream_entries(reply)
        .and_then(|entries| entries.first().map(|entry| entry.id))
        .unwrap_or_default())
}

/// One decoded log entry: where it goes and what it is.
struct Logged {
    channel: String,
    recorded: Recorded,
    /// The member as the log holds it, recorded as is in the group's stream.
    member: Arc<[u8]>,
    /// The index of the group's rule in the configuration.
    rule: usize,
}

/// The groups written lately, per rule, whose streams the age limit has to be applied to
/// ([`TRIM`]): every group written since a rule's last trim, trimmed once per third of its
/// age (within [`MIN_REFRESH`]..[`MAX_REFRESH`]). A message therefore outlives its rule's age
/// by at most that period; a group written once and never again expires whole instead (the
/// stream's expiry, set at each write).
struct Trimmer {
    /// Per rule: the age in ms, the period, when the next trim is due, the groups written.
    rules: Vec<TrimRule>,
}

struct TrimRule {
    age_ms: u64,
    every: Duration,
    due: tokio::time::Instant,
    groups: std::collections::HashSet<String>,
}

impl Trimmer {
    fn new(config: &HistoryConfig) -> Self {
        let now = tokio::time::Instant::now();
        Trimmer {
            rules: config
                .rules
                .iter()
                .map(|rule| {
                    let every = (rule.max_age / 3).clamp(MIN_REFRESH, MAX_REFRESH);
                    TrimRule {
                        age_ms: u64::try_from(rule.max_age.as_millis()).unwrap_or(u64::MAX),
                        every,
                        due: now + every,
                        groups: Default::default(),
                    }
                })
                .collect(),
        }
    }

    fn note(&mut self, rule: usize, group: &str) {
        if let Some(rule) = self.rules.get_mut(rule)
            && !rule.groups.contains(group)
        {
            rule.groups.insert(group.to_owned());
        }
    }

    /// How long until the next trim that has groups to trim, if any.
    fn next_due(&self) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        self.rules
            .iter()
            .filter(|rule| !rule.groups.is_empty())
            .map(|rule| rule.due.saturating_duration_since(now))
            .min()
    }

    /// Trims the groups of every rule that is due.
    async fn run_due(
        &mut self,
        history: &History,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let now = tokio::time::Instant::now();
        for rule in &mut self.rules {
            if rule.due > now {
                continue;
            }
            rule.due = now + rule.every;
            let groups: Vec<String> = rule.groups.drain().collect();
            for chunk in groups.chunks(LOG_READ_BATCH) {
                let mut invocation = history.trim.prepare_invoke();
                for group in chunk {
                    invocation
                        .key(history.stream_keys.history_stream_key(group))
                        .arg(rule.age_ms);
                }
                let dropped: u64 = invocation.invoke_async(conn).await?;
                trace!(groups = chunk.len(), dropped, "history age trim");
            }
        }
        Ok(())
    }
}

/// Every server's reader of the log: reads it from its last id, records each entry in its
/// group's stream and hands it to the group's local sink. Runs until aborted.
pub(crate) async fn log_reader(readers: Arc<Readers>) {
    let Some(history) = readers.history.as_ref() else {
        return;
    };
    let home = history.home();
    let mut backoff = readers.backoff();
    let mut outage = Outage::new("history log reader", home);
    // Where the log ends now: what is before was taken before this server listened.
    let mut last: Option<Offset> = None;
    // The number of the last entry read (see `CAPTURE`), to notice entries trimmed unread.
    let mut last_seq: Option<u64> = None;
    let mut trimmer = Trimmer::new(history.config());
    let block = Duration::from_millis(readers.brpop_timeout_ms());
    loop {
        let mut conn = readers.connect(home, &mut outage, &mut backoff).await;
        let run = async {
            let (epoch, changed) = history.refresh_epoch(&mut conn).await?;
            if changed {
                info!(%epoch, "history epoch changed (Redis flushed or restarted without persistence)");
                // A new log: its ids have nothing to do with the old one's.
                last = Some(Offset::default());
                last_seq = None;
            }
            let start = match last {
                Some(position) => position,
                None => log_end(&history.log_key, &mut conn).await?,
            };
            let position = last.insert(start);
            history.log_started.send_replace(true);
            outage.recovered();
            backoff.reset();
            loop {
                // Wake up for the next age trim even while the log is idle.
                let wait = trimmer.next_due().map_or(block, |due| due.min(block));
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
                let reply: redis::Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(LOG_READ_BATCH)
                    .arg("BLOCK")
                    .arg(wait_ms)
                    .arg("STREAMS")
                    .arg(&history.log_key)
                    .arg(position.to_string())
                    .query_async(&mut conn)
                    .await?;
                let Some(entries) = xread_entries(reply) else {
                    warn!("unexpected XREAD reply from the history log");
                    continue;
                };
                if entries.is_empty() {
                    trimmer.run_due(history, &mut conn).await?;
                    // Idle: a flush or restart may have replaced the epoch meanwhile.
                    let (_, changed) = history.refresh_epoch(&mut conn).await?;
                    if changed {
                        *position = Offset::default();
                        last_seq = None;
                    }
                    continue;
                }
                if let Some(entry) = entries.last() {
                    *position = entry.id;
                }
                let missed = count_missed(&mut last_seq, &entries);
                if missed > 0 {
                    Counters::add(&readers.counters.history_log_missed, missed);
                    warn!(
                        missed,
                        "history log entries trimmed before this server read them"
                    );
                }
                let logged = decode_entries(history, &readers, &history.current_epoch(), entries);
                index(history, &readers.counters, &mut conn, &logged).await?;
                for entry in &logged {
                    trimmer.note(entry.rule, &entry.recorded.group);
                }
                readers.router.deliver_recorded(
                    logged.into_iter().map(|l| (l.channel, l.recorded)),
                    &readers.counters,
                );
                trimmer.run_due(history, &mut conn).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), redis::RedisError>(())
        };
        if let Err(err) = run.await {
            outage.failed(&err);
            backoff.wait().await;
        }
    }
}

/// How many log entries are missing between the last one read (`last_seq`) and `entries`,
/// judged by their numbers; updates `last_seq`. Entries without a number (logged by an older
/// server) are not judged.
fn count_missed(last_seq: &mut Option<u64>, entries: &[Entry]) -> u64 {
    let mut missed = 0;
    for seq in entries.iter().filter_map(|entry| entry.seq) {
        if let Some(last) = *last_seq
            && seq > last + 1
        {
            missed += seq - last - 1;
        }
        *last_seq = Some(seq);
    }
    missed
}

fn decode_entries(
    history: &History,
    readers: &Readers,
    epoch: &Arc<str>,
    entries: Entries,
) -> Vec<Logged> {
    let mut out = Vec::with_capacity(entries.len());
    for Entry {
        id: offset, member, ..
    } in entries
    {
        let mut message: Message = match history.codec.decode_detailed(&member) {
            Ok(m) => m,
            Err(err) => {
                let reason = readers.counters.decode_error(err);
                warn!(%offset, reason, "skipping undecodable history message");
                continue;
            }
        };
        let member: Arc<[u8]> = Arc::from(member);
        let at = At {
            offset,
            epoch,
            member: &member,
        };
        match message.remove(ASGI_CHANNEL_KEY) {
            Some(Value::Str(name)) => push_logged(history, &mut out, name, &at, message),
            // A list names several channels of one key: for history keys, several groups.
            Some(Value::Array(names)) => {
                for name in names {
                    if let Value::Str(name) = name {
                        push_logged(history, &mut out, name, &at, message.clone());
                    }
                }
            }
            _ => {
                Counters::add(&readers.counters.decode_channel, 1);
                warn!(%offset, "skipping history message without a usable __asgi_channel__");
            }
        }
    }
    out
}

/// Where a log entry is: its offset, the epoch, the member.
struct At<'a> {
    offset: Offset,
    epoch: &'a Arc<str>,
    member: &'a Arc<[u8]>,
}

fn push_logged(
    history: &History,
    out: &mut Vec<Logged>,
    channel: String,
    at: &At<'_>,
    message: Message,
) {
    let Some(group) = history.group_of(&channel) else {
        debug!(
            channel,
            "history log entry for a channel that is not a history channel"
        );
        return;
    };
    let Some(rule) = history.config.rules.iter().position(|r| r.matches(group)) else {
        trace!(
            group,
            "history log entry for a group this server does not record"
        );
        return;
    };
    out.push(Logged {
        recorded: Recorded {
            group: Arc::from(group),
            position: Position {
                epoch: Arc::clone(at.epoch),
                offset: at.offset,
            },
            message,
        },
        member: Arc::clone(at.member),
        rule,
        channel,
    });
}

/// Records decoded log entries in their groups' streams (idempotent across servers).
async fn index(
    history: &History,
    counters: &Counters,
    conn: &mut MultiplexedConnection,
    logged: &[Logged],
) -> redis::RedisResult<()> {
    // Bounded script calls: a burst of thousands of entries is several calls.
    for chunk in logged.chunks(LOG_READ_BATCH) {
        // The expiry is set once per group and call, on its last entry.
        let mut expiring = std::collections::HashSet::with_capacity(chunk.len());
        let last_of_group: Vec<bool> = chunk
            .iter()
            .rev()
            .map(|entry| expiring.insert(&*entry.recorded.group))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut invocation = history.index.prepare_invoke();
        for (entry, last) in chunk.iter().zip(last_of_group) {
            let rule = &history.config.rules[entry.rule];
            let expire_secs = if last {
                rule.max_age.as_secs().max(1) + 1
            } else {
                0
            };
            invocation
                .key(
                    history
                        .stream_keys
                        .history_stream_key(&entry.recorded.group),
                )
                .arg(entry.recorded.position.offset.to_string())
                .arg(kept(rule))
                .arg(expire_secs)
                .arg(&*entry.member);
        }
        let added: u64 = invocation.invoke_async(conn).await?;
        Counters::add(&counters.history_recorded, added);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_documented_patterns() {
        assert!(glob_matches("user_*", "user_amadmin"));
        assert!(glob_matches("user_*", "user_"));
        assert!(!glob_matches("user_*", "task_1"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("task_*_done", "task_42_done"));
        assert!(!glob_matches("task_*_done", "task_42_don"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*b*c", "acb"));
    }

    #[test]
    fn history_channels_are_stable_and_map_back_to_their_group() {
        let keys = Keys::new("asgi");
        let codec = Codec::new(Default::default(), 12);
        let history = History::new(
            HistoryConfig::default(),
            &keys,
            &codec,
            1,
            "me",
            Duration::from_secs(5),
        );
        let channel = history.channel("user_amadmin").unwrap();
        assert!(channel.starts_with("herald.history.k"), "{channel}");
        assert_eq!(history.group_of(&channel), Some("user_amadmin"));
        assert_eq!(history.channel("user_amadmin").unwrap(), channel);
        assert_eq!(history.channel("broadcast"), None, "not a recorded pattern");
        assert_eq!(
            history.channel(&format!("user_{}", "x".repeat(90))),
            None,
            "too long"
        );
        assert_eq!(history.keys().len(), HISTORY_KEYS);
        // With three shards every history key is one channels_redis writes to shard 0.
        for name in history_names(3) {
            assert_eq!(consistent_hash(format!("{name}!").as_bytes(), 3), 0);
        }
    }

    #[test]
    fn numbered_log_entries_reveal_what_was_trimmed_unread() {
        let entry = |seq: Option<u64>| Entry {
            id: Offset::default(),
            member: Vec::new(),
            seq,
        };
        let mut last = None;
        assert_eq!(
            count_missed(&mut last, &[entry(Some(7)), entry(Some(8))]),
            0
        );
        assert_eq!(count_missed(&mut last, &[entry(Some(9))]), 0);
        assert_eq!(count_missed(&mut last, &[entry(Some(12)), entry(None)]), 2);
        assert_eq!(last, Some(12));
        // A counter that starts again (a flushed Redis) is no gap.
        assert_eq!(count_missed(&mut last, &[entry(Some(1))]), 0);
        assert_eq!(count_missed(&mut last, &[entry(Some(3))]), 1);
    }

    fn rule() -> HistoryRule {
        HistoryRule::new("user_*", 100, Duration::from_secs(300))
    }

    fn at(epoch: &str, ms: u64) -> Position {
        Position {
            epoch: Arc::from(epoch),
            offset: Offset::new(ms, 0),
        }
    }

    #[test]
    fn coverage_says_when_a_gap_cannot_be_filled() {
        let now = 1_000_000_000;
        let rule = rule();
        let stream = |first: u64, added: Option<u64>, len: u64| Coverage {
            now_ms: now,
            added,
            first: Some(Offset::new(first, 0)),
            len,
            exists: true,
        };
        // The stream still holds the position's entry, or an older one.
        assert!(covers(
            &stream(now - 30, Some(500), 101),
            &at("e", now - 20),
            "e",
            &rule
        ));
        assert!(covers(
            &stream(now - 20, Some(500), 101),
            &at("e", now - 20),
            "e",
            &rule
        ));
        // Another epoch.
        assert!(!covers(
            &stream(now - 30, None, 5),
            &at("old", now - 20),
            "e",
            &rule
        ));
        // Starts after the position and trimmed: entries between may be gone.
        assert!(!covers(
            &stream(now - 10, Some(500), 101),
            &at("e", now - 20),
            "e",
            &rule
        ));
        // Starts after the position, never trimmed, recent: nothing missed.
        assert!(covers(
            &stream(now - 10, Some(5), 5),
            &at("e", now - 20),
            "e",
            &rule
        ));
        // … but older than the retention: maybe a stream made anew after an idle spell.
        assert!(!covers(
            &stream(now - 10, Some(5), 5),
            &at("e", now - 400_000),
            "e",
            &rule
        ));
        // A Redis that cannot say what it trimmed: only a stream that is not full.
        assert!(covers(
            &stream(now - 10, None, 5),
            &at("e", now - 20),
            "e",
            &rule
        ));
        assert!(!covers(
            &stream(now - 10, None, 101),
            &at("e", now - 20),
            "e",
            &rule
        ));
        // No stream: nothing recorded within the retention, so nothing missed if recent.
        let gone = Coverage {
            now_ms: now,
            ..Coverage::default()
        };
        assert!(covers(&gone, &at("e", now - 1_000), "e", &rule));
        assert!(!covers(&gone, &at("e", now - 400_000), "e", &rule));
    }
}
