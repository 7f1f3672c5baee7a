//! Redis key layout, byte for byte as Python channels_redis 4.3.0 builds it.
//!
//! | purpose | key | Python |
//! |---|---|---|
//! | channel queue (ZSET) | `prefix + non_local_name(channel)` — **no separator** | `core.py` `send` / `receive_single` |
//! | group (ZSET) | `prefix + ":group:" + group` | `core.py` `RedisChannelLayer._group_key` |
//! | receive backup (ZSET, Python receivers only) | channel key + `"$inflight"` | `core.py` `receive_single` |
//! | flush pattern | `prefix + "*"` | `core.py` `flush` |
//!
//! Every other module asks [`Keys`] for a key; nothing else concatenates one.

use herald_core::names::non_local_name;

/// What separates a group key's layer prefix from the group name (`asgi:group:chat`).
const GROUP_INFIX: &str = ":group:";

/// A `SCAN MATCH` pattern for the group keys of every layer prefix.
pub const ANY_GROUP_KEY_PATTERN: &str = "*:group:*";

/// The layer prefix of a group key: `asgi` for `asgi:group:chat`.
pub fn group_key_prefix(key: &str) -> Option<&str> {
    key.split_once(GROUP_INFIX).map(|(prefix, _)| prefix)
}

/// Suffix of Python's receive backup key (`<channel key>$inflight`).
pub(crate) const INFLIGHT_SUFFIX: &str = "$inflight";

/// Builds the Redis keys of one layer prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (Python kwarg `prefix`, default `"asgi"`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue key of a channel: `prefix + non_local_name(channel)`, no separator.
    ///
    /// All specific channels of one process (`specific.<client prefix>!<local>`) share the key
    /// `asgispecific.<client prefix>!`. Mirrors `core.py` `send` (`channel_key = self.prefix +
    /// self.non_local_name(channel)`).
    pub fn channel_key(&self, channel: &str) -> String {
        let name = non_local_name(channel);
        let mut key = String::with_capacity(self.prefix.len() + name.len());
        key.push_str(&self.prefix);
        key.push_str(name);
        key
    }

    /// Herald's wake-up key for the readers of process `client_prefix`
    /// (`prefix + "herald.wake.<client prefix>!"`, a name in this process's own channel
    /// namespace, so nobody else writes it). A reader blocked on its process keys also blocks on
    /// this one; a member added here makes it look at a key set that has grown.
    pub fn wake_key(&self, client_prefix: &str) -> String {
        self.channel_key(&format!("herald.wake.{client_prefix}!"))
    }

    /// The key of a group: `prefix + ":group:" + group`.
    ///
    /// Mirrors `core.py` `RedisChannelLayer._group_key` (which returns it UTF-8 encoded).
    pub fn group_key(&self, group: &str) -> String {
        format!("{}{GROUP_INFIX}{group}", self.prefix)
    }

    /// Python's receive backup key for a channel key (`key + "$inflight"`); Herald never writes
    /// it, [`flush`](crate::RedisChannelLayer) deletes it with everything else under the prefix.
    pub fn inflight_key(&self, channel_key: &str) -> String {
        format!("{channel_key}{INFLIGHT_SUFFIX}")
    }

    /// Herald presence: the live connections of one user, `prefix + ":presence:user:" + name`.
    ///
    /// A sorted set of connection (channel) names scored by the Unix time their record lapses;
    /// no Python counterpart (channels_redis has no presence). Read it from Python with
    /// `ZCOUNT asgi:presence:user:<name> <now> +inf`.
    pub fn presence_user_key(&self, username: &str) -> String {
        format!("{}:presence:user:{username}", self.prefix)
    }

    /// Herald presence: every user with a live connection, `prefix + ":presence:users"`,
    /// scored by the Unix time the user's latest record lapses.
    pub fn presence_users_key(&self) -> String {
        format!("{}:presence:users", self.prefix)
    }

    /// Herald presence: the details of one user's connections (instance, address, since,
    /// groups), `prefix + ":presence:conn:" + name`. A hash from connection name to a JSON
    /// object, on the shard of the user's record key, expiring with it.
    pub fn presence_info_key(&self, username: &str) -> String {
        format!("{}:presence:conn:{username}", self.prefix)
    }

    /// Herald presence: the users announced online (the online/offline webhook),
    /// `prefix + ":presence:announced"`, one per shard for the users whose record key lives
    /// there. A sorted set scored by when the user's offline may fall due.
    pub fn presence_announced_key(&self) -> String {
        format!("{}:presence:announced", self.prefix)
    }

    /// The stream into which the history channels' messages are taken, in order, before every
    /// server reads them.
    pub fn history_log_key(&self) -> String {
        format!("{}herald.history.log", self.prefix)
    }

    /// The key holding the current epoch of the recorded history (gone with a flush or a
    /// restart without persistence, and then chosen anew).
    pub fn history_epoch_key(&self) -> String {
        format!("{}herald.history.epoch", self.prefix)
    }

    /// The counter that numbers the log's entries, so that a log reader notices entries that
    /// were trimmed before it read them.
    pub fn history_seq_key(&self) -> String {
        format!("{}herald.history.seq", self.prefix)
    }

    /// The lease of the one server that takes the history keys into the log.
    pub fn history_lease_key(&self) -> String {
        format!("{}herald.history.lease", self.prefix)
    }

    /// The stream holding `group`'s recorded history.
    pub fn history_stream_key(&self, group: &str) -> String {
        format!("{}:history:{group}", self.prefix)
    }

    /// The `KEYS` pattern `flush` deletes: `prefix + "*"` (mirrors `core.py` `flush`). Like
    /// Python, a prefix `asgi` also matches another layer's `asgi2…` keys.
    pub fn flush_pattern(&self) -> String {
        format!("{}*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_of_any_prefix_are_found_and_split() {
        let key = Keys::new("myapp").group_key("chat");
        assert_eq!(group_key_prefix(&key), Some("myapp"));
        assert_eq!(group_key_prefix("asgispecific.abc!"), None);
        assert_eq!(ANY_GROUP_KEY_PATTERN, "*:group:*");
    }

    #[test]
    fn group_key_has_colon_group_colon() {
        // channels_redis tests: test_default_group_key_format / test_custom_group_key_format.
        assert_eq!(
            Keys::new("asgi").group_key("test_group"),
            "asgi:group:test_group"
        );
        assert_eq!(
            Keys::new("test_prefix").group_key("test_group"),
            "test_prefix:group:test_group"
        );
    }

    #[test]
    fn channel_key_has_no_separator_and_stops_at_bang() {
        let keys = Keys::new("asgi");
        assert_eq!(
            keys.channel_key(
                "specific.cc6df996908d40cbbafb93456272a015!af5af32fc479450f83d7b5275e7108cd"
            ),
            "asgispecific.cc6df996908d40cbbafb93456272a015!"
        );
        assert_eq!(keys.channel_key("plain.channel"), "asgiplain.channel");
    }

    #[test]
    fn inflight_and_flush_pattern() {
        let keys = Keys::new("asgi");
        assert_eq!(
            keys.inflight_key("asgispecific.x!"),
            "asgispecific.x!$inflight"
        );
        assert_eq!(keys.flush_pattern(), "asgi*");
    }

    #[test]
    fn presence_keys_live_under_the_prefix() {
        let keys = Keys::new("asgi");
        assert_eq!(
            keys.presence_user_key("amadmin"),
            "asgi:presence:user:amadmin"
        );
        assert_eq!(keys.presence_users_key(), "asgi:presence:users");
        assert_eq!(
            keys.presence_info_key("amadmin"),
            "asgi:presence:conn:amadmin"
        );
        assert_eq!(keys.presence_announced_key(), "asgi:presence:announced");
    }
}
