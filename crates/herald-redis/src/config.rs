//! [`RedisLayerConfig`]: the `CHANNEL_LAYERS["default"]["CONFIG"]` of Python channels_redis,
//! as a plain struct with Python's defaults (`channels_redis/core.py`
//! `RedisChannelLayer.__init__`, 4.3.0).

use std::time::Duration;

use herald_core::capacity::CapacityRule;

use crate::codec::SerializerFormat;
use crate::history::HistoryConfig;

/// Default host list (Python `decode_hosts(None)`): one shard on `redis://localhost:6379`.
pub const DEFAULT_HOST: &str = "redis://localhost:6379";
/// Default key prefix (Python kwarg `prefix`).
pub const DEFAULT_PREFIX: &str = "asgi";
/// Default message lifetime (Python kwarg `expiry`, 60 s).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
/// Default group membership lifetime (Python kwarg `group_expiry`, 86400 s).
pub const DEFAULT_GROUP_EXPIRY: Duration = Duration::from_secs(86400);
/// Default capacity per Redis key and per local receive buffer (Python kwarg `capacity`).
pub const DEFAULT_CAPACITY: usize = 100;
/// Default random prefix of each stored message (Python kwarg `random_prefix_length`).
pub const DEFAULT_RANDOM_PREFIX_LENGTH: usize = crate::codec::DEFAULT_RANDOM_PREFIX_LENGTH;
/// Default BZPOPMIN timeout (Python class attribute `brpop_timeout`, 5 s).
pub const DEFAULT_BRPOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Herald: how often memberships of local channels are re-added (Python has no equivalent;
/// daphne's `websocket_timeout` of 86400 s plays that role there).
pub const DEFAULT_GROUP_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// Herald: how many messages one ZPOPMIN takes after BZPOPMIN woke up.
pub const DEFAULT_RECEIVE_BATCH: usize = 256;
/// Herald: response timeout of non-blocking commands (redis-rs defaults to 500 ms, which a
/// busy Redis or a large `flush` can exceed).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Herald: connect timeout of every connection.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Herald: first delay before a reader reconnects; doubles up to [`DEFAULT_RECONNECT_MAX_DELAY`].
pub const DEFAULT_RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Herald: longest delay between reconnect attempts.
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// One shard: the forms Python's `decode_hosts`/`create_pool` accept (`channels_redis/utils.py`).
///
/// Only the **position** of a host in the list matters for hashing; every participant
/// (Python or Rust) must list the same shards in the same order.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostSpec {
    /// `{"address": url}` or a bare URL string: `redis://[[user]:[password]@]host[:port][/db]`,
    /// `rediss://…` (TLS) or `unix:///path/to/sock[?db=N&password=…]`.
    Url(String),
    /// `{"host": …, "port": …, "db": …, "password": …, "username": …}`, or a `(host, port)` tuple.
    Params {
        /// Host name or IP.
        host: String,
        /// TCP port.
        port: u16,
        /// Database number.
        db: i64,
        /// Password (`AUTH`).
        password: Option<String>,
        /// ACL user name.
        username: Option<String>,
    },
    /// `{"master_name": …, "sentinels": [(host, port)], "sentinel_kwargs": {"password": …}, "db": …,
    /// "password": …}`: the master is looked up through Redis Sentinel on every (re)connect.
    Sentinel(SentinelSpec),
}

impl std::fmt::Debug for HostSpec {
    // Hand-written so passwords never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostSpec::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            HostSpec::Params { host, port, db, .. } => f
                .debug_struct("Params")
                .field("host", host)
                .field("port", port)
                .field("db", db)
                .finish_non_exhaustive(),
            HostSpec::Sentinel(s) => s.fmt(f),
        }
    }
}

fn redact_url(url: &str) -> String {
    // scheme://user:password@host -> scheme://***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

impl HostSpec {
    /// A URL host (`{"address": url}` in Python).
    pub fn url(url: impl Into<String>) -> Self {
        HostSpec::Url(url.into())
    }

    /// A `(host, port)` host on db 0 without a password.
    pub fn host_port(host: impl Into<String>, port: u16) -> Self {
        HostSpec::Params {
            host: host.into(),
            port,
            db: 0,
            password: None,
            username: None,
        }
    }

    /// A Sentinel-managed master.
    pub fn sentinel(spec: SentinelSpec) -> Self {
        HostSpec::Sentinel(spec)
    }
}

impl From<&str> for HostSpec {
    fn from(url: &str) -> Self {
        HostSpec::Url(url.to_owned())
    }
}

impl From<String> for HostSpec {
    fn from(url: String) -> Self {
        HostSpec::Url(url)
    }
}

/// A Sentinel host entry (Python: `{"master_name": …, "sentinels": […], "sentinel_kwargs": …}`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentinelSpec {
    /// The monitored master's name (`master_name`).
    pub master_name: String,
    /// Sentinel addresses (`sentinels`), tried in order.
    pub sentinels: Vec<(String, u16)>,
    /// Password of the Sentinels themselves (`sentinel_kwargs={"password": …}`).
    pub sentinel_password: Option<String>,
    /// ACL user of the Sentinels.
    pub sentinel_username: Option<String>,
    /// Database on the master (`db`).
    pub db: i64,
    /// Password of the master (`password`).
    pub password: Option<String>,
    /// ACL user of the master (`username`).
    pub username: Option<String>,
}

impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("master_name", &self.master_name)
            .field("sentinels", &self.sentinels)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelSpec {
    /// A master named `master_name` found through `sentinels`, db 0, no passwords.
    pub fn new(master_name: impl Into<String>, sentinels: Vec<(String, u16)>) -> Self {
        SentinelSpec {
            master_name: master_name.into(),
            sentinels,
            sentinel_password: None,
            sentinel_username: None,
            db: 0,
            password: None,
            username: None,
        }
    }

    /// Sets the database on the master.
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Sets the master's password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets the Sentinels' own password (`sentinel_kwargs={"password": …}`).
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }
}

/// Configuration of a [`RedisChannelLayer`](crate::RedisChannelLayer); defaults are Python's.
///
/// ```
/// use std::time::Duration;
/// use herald_redis::RedisLayerConfig;
/// let config = RedisLayerConfig::default()
///     .with_hosts(["redis://127.0.0.1:6380/0"])
///     .with_capacity(1000)
///     .with_expiry(Duration::from_secs(30));
/// assert_eq!(config.prefix, "asgi");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisLayerConfig {
    /// Shards, in order (`hosts`). Default: one, [`DEFAULT_HOST`].
    pub hosts: Vec<HostSpec>,
    /// Key prefix (`prefix`).
    pub prefix: String,
    /// Message lifetime (`expiry`), whole seconds on the wire; the Fernet TTL is `expiry + 10`.
    pub expiry: Duration,
    /// Group membership lifetime (`group_expiry`), whole seconds.
    pub group_expiry: Duration,
    /// Default capacity of a channel's Redis key and of each local buffer (`capacity`).
    pub capacity: usize,
    /// Per-name capacities (`channel_capacity`), first match wins.
    pub channel_capacity: Vec<CapacityRule>,
    /// Fernet secrets (`symmetric_encryption_keys`); the first encrypts, all decrypt.
    pub symmetric_encryption_keys: Vec<Vec<u8>>,
    /// Random bytes prepended to every stored message (`random_prefix_length`).
    pub random_prefix_length: usize,
    /// Body format (`serializer_format`).
    pub serializer_format: SerializerFormat,
    /// BZPOPMIN timeout (`brpop_timeout`).
    pub brpop_timeout: Duration,
    /// Herald: how often memberships of this layer's own channels are re-added; `None`
    /// disables it. Clamped to half of `group_expiry`.
    pub group_refresh_interval: Option<Duration>,
    /// Herald: messages taken per ZPOPMIN by a reader.
    pub receive_batch: usize,
    /// Herald: response timeout of non-blocking commands.
    pub response_timeout: Duration,
    /// Herald: connect timeout.
    pub connection_timeout: Duration,
    /// Herald: first reconnect delay (doubling).
    pub reconnect_min_delay: Duration,
    /// Herald: longest reconnect delay.
    pub reconnect_max_delay: Duration,
    /// Herald extension: the groups whose messages are recorded for replay after a reconnect
    /// (see `history.rs`); `None` (the default here) records nothing.
    pub history: Option<HistoryConfig>,
    /// Herald: take messages for this layer's process-specific channels out of Redis only
    /// while a [`receive`](herald_core::ChannelLayer::receive) waits, as channels_redis does,
    /// instead of draining them as they arrive. Then a consumer that does not read leaves
    /// its messages in Redis, where `expiry` trims them and `capacity` refuses later sends
    /// (`ChannelFull`, or "over capacity" for `group_send`), exactly as a channels_redis
    /// sender sees it. For layers used through `receive` (the Python package); channels given
    /// to [`attach`](herald_core::ChannelLayer::attach) would wait for a `receive` that never
    /// comes. Default `false`.
    pub read_on_demand: bool,
}

impl Default for RedisLayerConfig {
    fn default() -> Self {
        RedisLayerConfig {
            hosts: vec![HostSpec::Url(DEFAULT_HOST.to_owned())],
            prefix: DEFAULT_PREFIX.to_owned(),
            expiry: DEFAULT_EXPIRY,
            group_expiry: DEFAULT_GROUP_EXPIRY,
            capacity: DEFAULT_CAPACITY,
            channel_capacity: Vec::new(),
            symmetric_encryption_keys: Vec::new(),
            random_prefix_length: DEFAULT_RANDOM_PREFIX_LENGTH,
            serializer_format: SerializerFormat::Msgpack,
            brpop_timeout: DEFAULT_BRPOP_TIMEOUT,
            group_refresh_interval: Some(DEFAULT_GROUP_REFRESH_INTERVAL),
            receive_batch: DEFAULT_RECEIVE_BATCH,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            reconnect_min_delay: DEFAULT_RECONNECT_MIN_DELAY,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
            history: None,
            read_on_demand: false,
        }
    }
}

impl RedisLayerConfig {
    /// Sets [`read_on_demand`](Self::read_on_demand).
    pub fn with_read_on_demand(mut self, on_demand: bool) -> Self {
        self.read_on_demand = on_demand;
        self
    }

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

    /// Sets `expiry`.
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets `group_expiry`.
    pub fn with_group_expiry(mut self, group_expiry: Duration) -> Self {
        self.group_expiry = group_expiry;
        self
    }

    /// Sets `capacity`.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Adds a `channel_capacity` rule, tried after those already added.
    pub fn with_channel_capacity(mut self, rule: CapacityRule) -> Self {
        self.channel_capacity.push(rule);
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

    /// Sets `random_prefix_length` (0 disables the prefix).
    pub fn with_random_prefix_length(mut self, length: usize) -> Self {
        self.random_prefix_length = length;
        self
    }

    /// Sets `serializer_format`.
    pub fn with_serializer_format(mut self, format: SerializerFormat) -> Self {
        self.serializer_format = format;
        self
    }

    /// Sets the BZPOPMIN timeout (`brpop_timeout`).
    pub fn with_brpop_timeout(mut self, timeout: Duration) -> Self {
        self.brpop_timeout = timeout;
        self
    }

    /// Sets which groups are recorded for replay (`None`: none).
    pub fn with_history(mut self, history: Option<HistoryConfig>) -> Self {
        self.history = history;
        self
    }

    /// Sets how often memberships of local channels are re-added (`None` disables).
    pub fn with_group_refresh_interval(mut self, interval: Option<Duration>) -> Self {
        self.group_refresh_interval = interval;
        self
    }

    /// Sets how many messages a reader takes per ZPOPMIN.
    pub fn with_receive_batch(mut self, batch: usize) -> Self {
        self.receive_batch = batch;
        self
    }

    /// Sets the response timeout of non-blocking commands.
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

    /// Checks the values `RedisChannelLayer::new` relies on.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::error::config_error;
        if let Some(history) = &self.history {
            history.validate()?;
        }
        if self.hosts.is_empty() {
            return Err(config_error("hosts must list at least one Redis host"));
        }
        if self.capacity == 0 {
            return Err(config_error("capacity must be at least 1"));
        }
        if self.expiry.as_secs() == 0 {
            return Err(config_error("expiry must be at least 1 second"));
        }
        if self.group_expiry.as_secs() == 0 {
            return Err(config_error("group_expiry must be at least 1 second"));
        }
        if self.brpop_timeout.is_zero() {
            // BZPOPMIN 0 blocks forever, and the reader could never notice a shutdown.
            return Err(config_error("brpop_timeout must be positive"));
        }
        if self.receive_batch == 0 {
            return Err(config_error("receive_batch must be at least 1"));
        }
        if self.reconnect_min_delay.is_zero() || self.reconnect_max_delay < self.reconnect_min_delay
        {
            return Err(config_error(
                "reconnect delays must be positive and min <= max",
            ));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if let HostSpec::Sentinel(s) = host
                && s.sentinels.is_empty()
            {
                return Err(config_error(format!("host {i}: sentinel list is empty")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pythons() {
        let c = RedisLayerConfig::default();
        assert_eq!(c.hosts, vec![HostSpec::url("redis://localhost:6379")]);
        assert_eq!(c.prefix, "asgi");
        assert_eq!(c.expiry, Duration::from_secs(60));
        assert_eq!(c.group_expiry, Duration::from_secs(86400));
        assert_eq!(c.capacity, 100);
        assert_eq!(c.random_prefix_length, 12);
        assert_eq!(c.serializer_format, SerializerFormat::Msgpack);
        assert_eq!(c.brpop_timeout, Duration::from_secs(5));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validation_rejects_unusable_values() {
        let empty: [&str; 0] = [];
        for bad in [
            RedisLayerConfig::default().with_hosts(empty),
            RedisLayerConfig::default().with_capacity(0),
            RedisLayerConfig::default().with_expiry(Duration::from_millis(10)),
            RedisLayerConfig::default().with_brpop_timeout(Duration::ZERO),
            RedisLayerConfig::default().with_receive_batch(0),
            RedisLayerConfig::default()
                .with_hosts([HostSpec::sentinel(SentinelSpec::new("m", vec![]))]),
        ] {
            assert!(bad.validate().unwrap_err().is_config(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_passwords() {
        let host = HostSpec::url("redis://user:secret@h:1/0");
        assert!(!format!("{host:?}").contains("secret"));
        let spec = SentinelSpec::new("m", vec![("h".into(), 1)]).with_password("secret");
        assert!(!format!("{spec:?}").contains("secret"));
    }
}
