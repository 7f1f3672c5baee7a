//! Presence in Redis: which users have live sockets, readable by every herald instance and by
//! Python (`ZCOUNT asgi:presence:user:<name> <now> +inf`).
//!
//! Layout (see [`Keys::presence_user_key`](crate::keys::Keys::presence_user_key)):
//! * `<prefix>:presence:user:<username>` — ZSET, member = connection (channel) name, score = the
//!   Unix time the record lapses. Lives on the shard of `hash(username)`.
//! * `<prefix>:presence:users` — ZSET, member = username, score = when that user's latest record
//!   lapses. Lives on the shard of `hash("presence")`.
//!
//! Both keys also get an `EXPIRE` of twice the TTL on every touch, so an instance that crashes
//! leaves nothing behind for long: its records stop being refreshed, their scores fall into the
//! past (readers ignore and trim them), and the keys themselves expire.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Result;
use herald_core::presence::Presence;

use crate::hashing::consistent_hash;
use crate::layer::{RedisChannelLayer, now_f64};

/// The shard-selection key of the users index.
const USERS_INDEX_HASH_KEY: &[u8] = b"presence";

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

#[async_trait]
impl Presence for RedisChannelLayer {
    async fn touch(&self, entries: &[(String, String)], ttl: Duration) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let until = now_f64() + ttl.as_secs_f64();
        let key_ttl = (ttl.as_secs() * KEY_TTL_FACTOR).max(KEY_TTL_FACTOR);
        let keys = self.keys();
        // Group by shard so each shard gets one pipelined round trip.
        let mut by_shard: BTreeMap<usize, Vec<(String, &str)>> = BTreeMap::new();
        for (user, conn) in entries {
            by_shard
                .entry(self.presence_user_shard(user))
                .or_default()
                .push((keys.presence_user_key(user), conn.as_str()));
        }
        for (shard, items) in by_shard {
            let mut pipe = redis::pipe();
            for (key, conn) in &items {
                pipe.zadd(key, *conn, until).ignore();
                pipe.expire(key, key_ttl as i64).ignore();
            }
            self.shard(shard)
                .run("presence touch", |mut c| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async::<()>(&mut c).await }
                })
                .await?;
        }
        let index = keys.presence_users_key();
        let mut pipe = redis::pipe();
        let mut users: Vec<&str> = entries.iter().map(|(u, _)| u.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            pipe.zadd(&index, user, until).ignore();
        }
        pipe.expire(&index, key_ttl as i64).ignore();
        self.shard(self.presence_index_shard())
            .run("presence index", |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
    }

    async fn remove(&self, username: &str, connection: &str) -> Result<()> {
        let key = self.keys().presence_user_key(username);
        let now = now_f64();
        let live: i64 = self
            .shard(self.presence_user_shard(username))
            .run("presence remove", |mut c| {
                let key = key.clone();
                async move {
                    let (live,): (i64,) = redis::pipe()
                        .zrem(&key, connection)
                        .ignore()
                        .zrembyscore(&key, "-inf", now)
                        .ignore()
                        .zcard(&key)
                        .query_async(&mut c)
                        .await?;
                    Ok(live)
                }
            })
            .await?;
        if live == 0 {
            let index = self.keys().presence_users_key();
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
}

impl RedisChannelLayer {
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
