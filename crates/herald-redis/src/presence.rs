//! Presence in Redis: which users have live sockets, readable by every herald instance and by
//! Python (`ZCOUNT asgi:presence:user:<name> <now> +inf`).
//!
//! Layout (see [`Keys::presence_user_key`](crate::keys::Keys::presence_user_key)):
//! * `<prefix>:presence:user:<username>` — ZSET, member = connection (channel) name, score = the
//!   Unix time the record lapses. Lives on the shard of `hash(username)`.
//! * `<prefix>:presence:conn:<username>` — HASH, connection name → details JSON (instance,
//!   address, since, groups), next to the user's ZSET. Written when a socket opens or its
//!   groups change; the periodic refresh only extends its expiry.
//! * `<prefix>:presence:users` — ZSET, member = username, score = when that user's latest record
//!   lapses. Lives on the shard of `hash("presence")`.
//! * `<prefix>:presence:announced` — ZSET on every shard, only with announcements (the
//!   online/offline webhook): the users announced online whose ZSET lives on that shard,
//!   scored by when their offline may fall due. The scripts in [`scripts`](crate::scripts)
//!   (`PRESENCE_TOUCH`, `PRESENCE_REMOVE`, `PRESENCE_OFFLINE`) read and change it together with
//!   the user's ZSET in one atomic step, so each transition is seen by one instance only.
//!
//! The per-user keys also get an `EXPIRE` of twice the TTL on every touch, so an instance that
//! crashes leaves nothing behind for long: its records stop being refreshed, their scores fall
//! into the past (readers ignore and trim them), and the keys themselves expire.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Result;
use herald_core::presence::{ConnectionInfo, Presence};
use redis::Script;

use crate::hashing::consistent_hash;
use crate::layer::{RedisChannelLayer, now_f64};
use crate::scripts;

/// The shard-selection key of the users index.
const USERS_INDEX_HASH_KEY: &[u8] = b"presence";

/// Connections per script call: one call holds its shard for its whole run, so a refresh of
/// many thousand sockets goes in slices.
const TOUCH_CHUNK: usize = 1000;

/// Users read per pipeline when listing every connection.
const LIST_CHUNK: usize = 500;

/// Announced users looked at per shard and sweep.
const OFFLINE_SWEEP_LIMIT: usize = 1000;

static TOUCH: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::PRESENCE_TOUCH));
static REMOVE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::PRESENCE_REMOVE));
static OFFLINE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::PRESENCE_OFFLINE));

impl RedisChannelLayer {
    fn presence_user_shard(&self, username: &str) -> usize {
        consistent_hash(username.as_bytes(), self.shard_count())
    }

    fn presence_index_shard(&self) -> usize {
        consistent_hash(USERS_INDEX_HASH_KEY, self.shard_count())
    }
}

/// A user's presence key lives this many record TTLs (and at least this many seconds): each
/// record carries its own deadline, so the key only has to outlive the newest record and then
/// disappear by itself if every instance stops refreshing it.
const KEY_TTL_FACTOR: u64 = 2;

/// One connection to record: `details` empty keeps what is stored.
struct Touch<'a> {
    user: &'a str,
    connection: &'a str,
    details: String,
}

impl RedisChannelLayer {
    /// Records `items` (one script call per shard and slice), then the users index; returns
    /// the users announced online.
    async fn touch_items(
        &self,
        items: Vec<Touch<'_>>,
        ttl: Duration,
        announce: bool,
    ) -> Result<Vec<String>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let until = now_f64() + ttl.as_secs_f64();
        let key_ttl = (ttl.as_secs() * KEY_TTL_FACTOR).max(KEY_TTL_FACTOR);
        let keys = self.keys();
        let announced = keys.presence_announced_key();
        let mut users: Vec<&str> = items.iter().map(|t| t.user).collect();
        users.sort_unstable();
        users.dedup();
        let mut by_shard: BTreeMap<usize, Vec<Touch<'_>>> = BTreeMap::new();
        for item in items {
            by_shard
                .entry(self.presence_user_shard(item.user))
                .or_default()
                .push(item);
        }
        let mut online = Vec::new();
        for (shard, items) in &by_shard {
            for chunk in items.chunks(TOUCH_CHUNK) {
                let key_pairs: Vec<(String, String)> = chunk
                    .iter()
                    .map(|t| {
                        (
                            keys.presence_user_key(t.user),
                            keys.presence_info_key(t.user),
                        )
                    })
                    .collect();
                let came: Vec<String> = self
                    .shard(*shard)
                    .run("presence touch", |mut c| {
                        let mut invocation = TOUCH.prepare_invoke();
                        invocation
                            .key(&announced)
                            .arg(until)
                            .arg(key_ttl)
                            .arg(if announce { "1" } else { "0" });
                        for (t, (user_key, info_key)) in chunk.iter().zip(&key_pairs) {
                            invocation
                                .key(user_key)
                                .key(info_key)
                                .arg(t.user)
                                .arg(t.connection)
                                .arg(&t.details);
                        }
                        async move { invocation.invoke_async(&mut c).await }
                    })
                    .await?;
                online.extend(came);
            }
        }
        // The users index: one multi-member ZADD per slice, not one command per user. A
        // refresh of 10,000 users as 10,000 pipelined commands built a request of several MiB
        // every third of the TTL, memory the allocator then kept.
        let index = keys.presence_users_key();
        let index_shard = self.shard(self.presence_index_shard());
        for (i, chunk) in users.chunks(TOUCH_CHUNK).enumerate() {
            let members: Vec<(f64, &str)> = chunk.iter().map(|u| (until, *u)).collect();
            let last = (i + 1) * TOUCH_CHUNK >= users.len();
            index_shard
                .run("presence index", |mut c| {
                    let mut pipe = redis::pipe();
                    pipe.zadd_multiple(&index, &members).ignore();
                    if last {
                        pipe.expire(&index, key_ttl as i64).ignore();
                    }
                    async move { pipe.query_async::<()>(&mut c).await }
                })
                .await?;
        }
        Ok(online)
    }

    /// Forgets one connection; `due` starts the offline debounce (announcing).
    async fn remove_connection(
        &self,
        username: &str,
        connection: &str,
        due: Option<f64>,
    ) -> Result<()> {
        let keys = self.keys();
        let (key, info, announced) = (
            keys.presence_user_key(username),
            keys.presence_info_key(username),
            keys.presence_announced_key(),
        );
        let now = now_f64();
        let due = due.map(|d| d.to_string()).unwrap_or_default();
        let live: i64 = self
            .shard(self.presence_user_shard(username))
            .run("presence remove", |mut c| {
                let mut invocation = REMOVE.prepare_invoke();
                invocation
                    .key(&key)
                    .key(&info)
                    .key(&announced)
                    .arg(connection)
                    .arg(now)
                    .arg(username)
                    .arg(&due);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        if live == 0 {
            let index = keys.presence_users_key();
            self.shard(self.presence_index_shard())
                .run("presence index remove", |mut c| {
                    let index = index.clone();
                    async move {
                        redis::cmd("ZREM")
                            .arg(&index)
                            .arg(username)
                            .query_async::<()>(&mut c)
                            .await
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// The live connections of `users` (all on `shard`) with their details, in one pipeline.
    async fn infos_on(&self, shard: usize, users: &[&str]) -> Result<Vec<ConnectionInfo>> {
        let now = now_f64();
        let keys = self.keys();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(keys.presence_user_key(user))
                .arg(format!("({now}"))
                .arg("+inf");
            pipe.hgetall(keys.presence_info_key(user));
        }
        type Reply = Vec<(Vec<String>, std::collections::HashMap<String, String>)>;
        let replies: Reply = self
            .shard(shard)
            .run("presence list", |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut infos = Vec::new();
        for (user, (live, details)) in users.iter().zip(replies) {
            for conn in live {
                let d = details.get(&conn).map(String::as_str);
                infos.push(ConnectionInfo::from_details(user, &conn, d));
            }
        }
        Ok(infos)
    }
}

#[async_trait]
impl Presence for RedisChannelLayer {
    async fn touch(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<()> {
        self.touch_announcing_if(entries, ttl, false)
            .await
            .map(drop)
    }

    async fn remove(&self, username: &str, connection: &str) -> Result<()> {
        self.remove_connection(username, connection, None).await
    }

    async fn connections(&self, username: &str) -> Result<usize> {
        let key = self.keys().presence_user_key(username);
        let now = now_f64();
        let live: i64 = self
            .shard(self.presence_user_shard(username))
            .run("presence count", |mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("ZCOUNT")
                        .arg(&key)
                        .arg(format!("({now}"))
                        .arg("+inf")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(usize::try_from(live).unwrap_or(0))
    }

    async fn connection_names(&self, username: &str) -> Result<Vec<String>> {
        let key = self.keys().presence_user_key(username);
        self.live_members(self.presence_user_shard(username), key)
            .await
    }

    async fn online_users(&self) -> Result<Vec<String>> {
        let index = self.keys().presence_users_key();
        self.live_members(self.presence_index_shard(), index).await
    }

    async fn record(
        &self,
        infos: &[ConnectionInfo],
        ttl: Duration,
        announce: bool,
    ) -> Result<Vec<String>> {
        let items = infos
            .iter()
            .map(|i| Touch {
                user: &i.user,
                connection: &i.connection,
                details: i.details_json(),
            })
            .collect();
        self.touch_items(items, ttl, announce).await
    }

    async fn touch_announcing(
        &self,
        entries: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Vec<String>> {
        self.touch_announcing_if(entries, ttl, true).await
    }

    async fn remove_announcing(
        &self,
        username: &str,
        connection: &str,
        debounce: Duration,
    ) -> Result<()> {
        let due = now_f64() + debounce.as_secs_f64();
        self.remove_connection(username, connection, Some(due))
            .await
    }

    async fn take_offline(&self) -> Result<Vec<String>> {
        let keys = self.keys();
        let announced = keys.presence_announced_key();
        let mut offline = Vec::new();
        for shard in 0..self.shard_count() {
            let now = now_f64();
            let due: Vec<String> = self
                .shard(shard)
                .run("presence offline due", |mut c| {
                    let announced = announced.clone();
                    async move {
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(&announced)
                            .arg("-inf")
                            .arg(now)
                            .arg("LIMIT")
                            .arg(0)
                            .arg(OFFLINE_SWEEP_LIMIT)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            for user in due {
                let key = keys.presence_user_key(&user);
                let taken: u8 = self
                    .shard(shard)
                    .run("presence offline", |mut c| {
                        let mut invocation = OFFLINE.prepare_invoke();
                        invocation.key(&announced).key(&key).arg(&user).arg(now);
                        async move { invocation.invoke_async(&mut c).await }
                    })
                    .await?;
                if taken == 1 {
                    offline.push(user);
                }
            }
        }
        offline.sort();
        Ok(offline)
    }

    async fn connection_infos(&self, username: Option<&str>) -> Result<Vec<ConnectionInfo>> {
        let users = match username {
            Some(u) => vec![u.to_owned()],
            None => self.online_users().await?,
        };
        let mut by_shard: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for user in &users {
            by_shard
                .entry(self.presence_user_shard(user))
                .or_default()
                .push(user);
        }
        let mut infos = Vec::new();
        for (shard, users) in by_shard {
            for chunk in users.chunks(LIST_CHUNK) {
                infos.extend(self.infos_on(shard, chunk).await?);
            }
        }
        infos.sort_by(|a, b| (&a.user, &a.connection).cmp(&(&b.user, &b.connection)));
        Ok(infos)
    }
}

impl RedisChannelLayer {
    async fn touch_announcing_if(
        &self,
        entries: &[(&str, &str)],
        ttl: Duration,
        announce: bool,
    ) -> Result<Vec<String>> {
        let items = entries
            .iter()
            .map(|(user, conn)| Touch {
                user,
                connection: conn,
                details: String::new(),
            })
            .collect();
        self.touch_items(items, ttl, announce).await
    }

    /// The members of a presence sorted set whose expiry score is still ahead, sorted.
    async fn live_members(&self, shard: usize, key: String) -> Result<Vec<String>> {
        let now = now_f64();
        let mut members: Vec<String> = self
            .shard(shard)
            .run("presence members", |mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&key)
                        .arg(format!("({now}"))
                        .arg("+inf")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        members.sort();
        Ok(members)
    }
}
