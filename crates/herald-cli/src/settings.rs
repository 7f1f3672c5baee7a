//! Flags, `HERALD_*` environment variables and the optional TOML file, merged into one view:
//! every `*Opts` struct (one per TOML table), the file (read once, in `main`) and the one merge,
//! [`FileSettings`]'s `merge_*`. The other modules only read the merged options.
//!
//! Precedence: a flag (or its `HERALD_*` variable, which clap treats as the same thing) beats the
//! TOML file, which beats the library default. Every layer option keeps the channels_redis kwarg
//! name in TOML (`group_expiry`, `symmetric_encryption_keys`, ...) so a `CHANNEL_LAYERS` config
//! can be copied over by eye.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use herald_django::{DjangoAuthConfig, SessionEngine};
use herald_server::{RateLimit, ServerConfig};
use serde::Deserialize;

/// Which Python backend the layer must be compatible with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    /// `channels_redis.core.RedisChannelLayer` (sorted sets; the default).
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer` (PUBLISH/SUBSCRIBE).
    Pubsub,
    /// In-process only (no Redis): for trying herald out; other processes cannot reach it.
    Memory,
}

/// Channel layer options, shared by `serve` and every sending subcommand.
#[derive(Args, Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LayerOpts {
    /// Redis host URLs (redis://, rediss://, unix://), in CHANNEL_LAYERS order; repeat or
    /// comma-separate. None given: `serve` runs on the in-memory layer.
    #[arg(long = "redis", env = "HERALD_REDIS", value_delimiter = ',')]
    pub(crate) hosts: Vec<String>,
    /// Python backend to be compatible with [default: core when hosts are given, else memory].
    #[arg(long, env = "HERALD_BACKEND", value_enum)]
    pub(crate) backend: Option<Backend>,
    /// Key prefix (channels_redis `prefix`) [default: asgi].
    #[arg(long, env = "HERALD_PREFIX")]
    pub(crate) prefix: Option<String>,
    /// Message lifetime in seconds (`expiry`) [default: 60].
    #[arg(long, env = "HERALD_EXPIRY")]
    pub(crate) expiry: Option<u64>,
    /// Group membership lifetime in seconds (`group_expiry`) [default: 86400].
    #[arg(long, env = "HERALD_GROUP_EXPIRY")]
    pub(crate) group_expiry: Option<u64>,
    /// Default channel capacity (`capacity`) [default: 100].
    #[arg(long, env = "HERALD_CAPACITY")]
    pub(crate) capacity: Option<usize>,
    /// Per-channel capacity (`channel_capacity`): `GLOB=N` or `re:REGEX=N`, first match wins.
    #[arg(
        long = "channel-capacity",
        env = "HERALD_CHANNEL_CAPACITY",
        value_delimiter = ','
    )]
    pub(crate) channel_capacity: Vec<String>,
    /// Fernet keys (`symmetric_encryption_keys`); the first encrypts, all decrypt.
    #[arg(
        long = "encryption-key",
        env = "HERALD_ENCRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) symmetric_encryption_keys: Vec<String>,
    /// Random bytes before each stored message (`random_prefix_length`) [default: 12].
    #[arg(long, env = "HERALD_RANDOM_PREFIX_LENGTH")]
    pub(crate) random_prefix_length: Option<usize>,
    /// `msgpack` or `json` (`serializer_format`) [default: msgpack].
    #[arg(long = "serializer", env = "HERALD_SERIALIZER")]
    pub(crate) serializer_format: Option<String>,
    /// Groups recorded for missed-message recovery: `GLOB=MESSAGES/SECONDS` (kept per group),
    /// first match wins; `on` is user_*=100/300,task_*=20/3600 [default: none].
    #[arg(long = "history", env = "HERALD_HISTORY", value_delimiter = ',')]
    pub(crate) history: Vec<String>,
}

impl LayerOpts {
    /// Fills every option not given on the command line from `file`.
    fn or(self, file: LayerOpts) -> LayerOpts {
        LayerOpts {
            hosts: join_sentinel_pieces(or_vec(self.hosts, file.hosts)),
            backend: self.backend.or(file.backend),
            prefix: self.prefix.or(file.prefix),
            expiry: self.expiry.or(file.expiry),
            group_expiry: self.group_expiry.or(file.group_expiry),
            capacity: self.capacity.or(file.capacity),
            channel_capacity: or_vec(self.channel_capacity, file.channel_capacity),
            symmetric_encryption_keys: or_vec(
                self.symmetric_encryption_keys,
                file.symmetric_encryption_keys,
            ),
            random_prefix_length: self.random_prefix_length.or(file.random_prefix_length),
            serializer_format: self.serializer_format.or(file.serializer_format),
            history: or_vec(self.history, file.history),
        }
    }

    /// The backend in effect: explicit, else `core` with hosts and `memory` without.
    pub(crate) fn backend(&self) -> Backend {
        self.backend.unwrap_or(if self.hosts.is_empty() {
            Backend::Memory
        } else {
            Backend::Core
        })
    }
}

/// Re-joins a `sentinel://H:P,H:P/MASTER` host that the comma delimiter of `--redis` and
/// `HERALD_REDIS` split apart: a piece without `://` continues a preceding Sentinel host whose
/// `/MASTER` has not been seen yet. Every other piece is a host of its own.
pub(crate) fn join_sentinel_pieces(pieces: Vec<String>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match hosts.last_mut() {
            Some(last)
                if !piece.contains("://")
                    && last
                        .strip_prefix("sentinel://")
                        .is_some_and(|rest| !rest.contains('/')) =>
            {
                last.push(',');
                last.push_str(&piece);
            }
            _ => hosts.push(piece),
        }
    }
    hosts
}

/// `cli` unless it is empty, else `file`.
fn or_vec<T>(cli: Vec<T>, file: Vec<T>) -> Vec<T> {
    if cli.is_empty() { file } else { cli }
}

/// One `channel_capacity` entry parsed from `GLOB=N` or `re:REGEX=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapacitySpec {
    pub(crate) pattern: String,
    pub(crate) is_regex: bool,
    pub(crate) capacity: usize,
}

/// Parses `GLOB=N` / `re:REGEX=N`; the number is after the last `=`.
pub(crate) fn parse_capacity(spec: &str) -> anyhow::Result<CapacitySpec> {
    let (pattern, n) = spec
        .rsplit_once('=')
        .with_context(|| format!("channel capacity {spec:?} must look like PATTERN=N"))?;
    let capacity: usize = n
        .trim()
        .parse()
        .with_context(|| format!("channel capacity {spec:?}: {n:?} is not a whole number"))?;
    if capacity == 0 {
        bail!("channel capacity {spec:?}: capacity must be at least 1");
    }
    let (pattern, is_regex) = match pattern.strip_prefix("re:") {
        Some(re) => (re, true),
        None => (pattern, false),
    };
    if pattern.is_empty() {
        bail!("channel capacity {spec:?}: empty pattern");
    }
    Ok(CapacitySpec {
        pattern: pattern.to_owned(),
        is_regex,
        capacity,
    })
}

/// Django's `TIME_ZONE` (`--time-zone`, `HERALD_TIME_ZONE`, `[django] time_zone`): the zone in
/// which the guide's `datetime.now().isoformat()` stamps are local time. Django makes it the
/// process's zone at start-up (`TZ`, with `USE_TZ` on or off) and refuses a name that is not a
/// file under `/usr/share/zoneinfo`; this looks the name up in the same system database, with
/// the same exact spelling.
#[derive(Debug, Clone)]
pub(crate) struct TimeZone {
    zone: jiff::tz::TimeZone,
}

impl TimeZone {
    /// Looks `name` up; an unknown or misspelt zone is an error.
    pub(crate) fn new(name: &str) -> anyhow::Result<TimeZone> {
        let zone = jiff::tz::TimeZone::get(name)
            .ok()
            .filter(|zone| zone.iana_name() == Some(name))
            .with_context(|| {
                format!(
                    "unknown time zone {name:?}: expected an IANA name such as \"Europe/Paris\" \
                     (Django's TIME_ZONE) from the system's zoneinfo database"
                )
            })?;
        Ok(TimeZone { zone })
    }

    /// The setting if given, else `None` (the machine's zone).
    pub(crate) fn from_setting(name: Option<&str>) -> anyhow::Result<Option<TimeZone>> {
        name.map(TimeZone::new).transpose()
    }

    /// `datetime.now().isoformat()` in a Django process with this `TIME_ZONE`.
    pub(crate) fn isoformat_now(&self) -> String {
        let now = chrono::Utc::now();
        let offset = jiff::Timestamp::from_microsecond(now.timestamp_micros())
            .map(|t| self.zone.to_offset(t).seconds())
            .unwrap_or(0);
        herald_messaging::python_isoformat(
            now.naive_utc() + chrono::TimeDelta::seconds(offset.into()),
        )
    }
}

/// The default bind address. Not Daphne's 8000: that is also Django `runserver`'s, and a
/// Django developer trying herald has runserver open there (nor 8001, where the Channels docs
/// put Daphne behind a proxy). The senders look for the publish API here too.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:8700";

/// `[server]` options.
#[derive(Args, Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerOpts {
    /// Address to listen on [default: 127.0.0.1:8700].
    #[arg(long, short = 'b', env = "HERALD_BIND")]
    pub(crate) bind: Option<SocketAddr>,
    /// Allowed Origin patterns, like Django's ALLOWED_HOSTS ("example.com", ".example.com",
    /// `https://example.com:8443`, "*"); none = no Origin check (Daphne's behaviour).
    #[arg(
        long = "allowed-origin",
        env = "HERALD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) allowed_origins: Vec<String>,
    /// Seconds between server pings [default: 20].
    #[arg(long, env = "HERALD_PING_INTERVAL")]
    pub(crate) ping_interval: Option<u64>,
    /// Seconds to wait for a pong before dropping the socket [default: 30].
    #[arg(long, env = "HERALD_PING_TIMEOUT")]
    pub(crate) ping_timeout: Option<u64>,
    /// Seconds a handshake may take [default: 5].
    #[arg(long, env = "HERALD_HANDSHAKE_TIMEOUT")]
    pub(crate) handshake_timeout: Option<u64>,
    /// Largest message in bytes, 0 = unlimited [default: 1048576].
    #[arg(long, env = "HERALD_MAX_MESSAGE_SIZE")]
    pub(crate) max_message_size: Option<usize>,
    /// Largest frame in bytes, 0 = unlimited [default: 1048576].
    #[arg(long, env = "HERALD_MAX_FRAME_SIZE")]
    pub(crate) max_frame_size: Option<usize>,
    /// Frames queued per socket before it is closed as a slow consumer.
    #[arg(long, env = "HERALD_MAX_OUTBOUND_FRAMES")]
    pub(crate) max_outbound_frames: Option<NonZeroUsize>,
    /// Inbound frames per second per socket (0 = no limit).
    #[arg(long, env = "HERALD_RATE_LIMIT")]
    pub(crate) rate_limit: Option<u32>,
    /// Inbound burst size per socket.
    #[arg(long, env = "HERALD_RATE_BURST")]
    pub(crate) rate_burst: Option<u32>,
    /// Sockets per user (excess handshakes get HTTP 429).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER")]
    pub(crate) max_connections_per_user: Option<NonZeroUsize>,
    /// Sockets per client IP (excess handshakes get HTTP 429).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP")]
    pub(crate) max_connections_per_ip: Option<NonZeroUsize>,
    /// Reverse proxies (address or CIDR: 127.0.0.1, 10.0.0.0/8) whose X-Forwarded-For is
    /// believed: the rightmost entry that is not one of them becomes the client address (per-IP
    /// cap, logs). Repeat or comma-separate; none = the header is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "HERALD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub(crate) trusted_proxies: Vec<String>,
    /// Trust a reverse proxy's user header (e.g. X-Remote-User) instead of Django sessions.
    #[arg(long, env = "HERALD_TRUSTED_USER_HEADER")]
    pub(crate) trusted_user_header: Option<String>,
    /// Enable the HTTP publish API (POST /api/publish, GET /api/presence) for callers sending
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, env = "HERALD_PUBLISH_TOKEN", hide_env_values = true)]
    pub(crate) publish_token: Option<String>,
    /// Seconds a presence record lives without refresh (a crashed instance's users go offline
    /// after this) [default: 30].
    #[arg(long, env = "HERALD_PRESENCE_TTL")]
    pub(crate) presence_ttl: Option<u64>,
    /// Seconds between health checks of Redis and the Django database (/readyz) [default: 2].
    #[arg(long, env = "HERALD_HEALTH_INTERVAL")]
    pub(crate) health_interval: Option<u64>,
    /// Seconds between checks of open sockets' Django sessions: a socket whose user logged
    /// out, expired, changed password or was deactivated is closed with 4401; 0 = off
    /// [default: 30].
    #[arg(long, env = "HERALD_SESSION_REVALIDATION")]
    pub(crate) session_revalidation: Option<u64>,
    /// Compress frames with permessage-deflate for clients that offer it (browsers do): about
    /// a third of the bytes for JSON notifications, for some CPU; off by default, as in Daphne.
    #[arg(
        long,
        env = "HERALD_PERMESSAGE_DEFLATE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) permessage_deflate: Option<bool>,
}

impl ServerOpts {
    fn or(self, file: ServerOpts) -> ServerOpts {
        ServerOpts {
            bind: self.bind.or(file.bind),
            allowed_origins: or_vec(self.allowed_origins, file.allowed_origins),
            ping_interval: self.ping_interval.or(file.ping_interval),
            ping_timeout: self.ping_timeout.or(file.ping_timeout),
            handshake_timeout: self.handshake_timeout.or(file.handshake_timeout),
            max_message_size: self.max_message_size.or(file.max_message_size),
            max_frame_size: self.max_frame_size.or(file.max_frame_size),
            max_outbound_frames: self.max_outbound_frames.or(file.max_outbound_frames),
            rate_limit: self.rate_limit.or(file.rate_limit),
            rate_burst: self.rate_burst.or(file.rate_burst),
            max_connections_per_user: self
                .max_connections_per_user
                .or(file.max_connections_per_user),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip),
            trusted_proxies: or_vec(self.trusted_proxies, file.trusted_proxies),
            trusted_user_header: self.trusted_user_header.or(file.trusted_user_header),
            publish_token: self.publish_token.or(file.publish_token),
            presence_ttl: self.presence_ttl.or(file.presence_ttl),
            health_interval: self.health_interval.or(file.health_interval),
            session_revalidation: self.session_revalidation.or(file.session_revalidation),
            permessage_deflate: self.permessage_deflate.or(file.permessage_deflate),
        }
    }

    /// The server's [`ServerConfig`] from these options.
    pub(crate) fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = ServerConfig::default();
        if !self.allowed_origins.is_empty() {
            c = c.with_allowed_origins(self.allowed_origins.clone());
        }
        if let Some(s) = self.ping_interval {
            c = c.with_ping_interval(Duration::from_secs(s));
        }
        if let Some(s) = self.ping_timeout {
            c = c.with_ping_timeout(Duration::from_secs(s));
        }
        if let Some(s) = self.handshake_timeout {
            c = c.with_handshake_timeout(Duration::from_secs(s));
        }
        if let Some(n) = self.max_message_size {
            c = c.with_max_message_size((n > 0).then_some(n));
        }
        if let Some(n) = self.max_frame_size {
            c = c.with_max_frame_size((n > 0).then_some(n));
        }
        if let Some(n) = self.max_outbound_frames {
            c = c.with_max_outbound_frames(n);
        }
        match (self.rate_limit, self.rate_burst) {
            (Some(0), _) => c = c.with_rate_limit(None),
            (None, None) => {}
            (rate, burst) => {
                let d = RateLimit::default();
                let rate = rate.unwrap_or(d.per_second.get());
                let limit = RateLimit::new(rate, burst.unwrap_or(rate.max(d.burst.get())))?;
                c = c.with_rate_limit(Some(limit));
            }
        }
        if let Some(s) = self.health_interval {
            if s == 0 {
                bail!("--health-interval must be at least 1 second");
            }
            c = c.with_health_interval(Duration::from_secs(s));
        }
        if let Some(s) = self.session_revalidation {
            c = c.with_session_revalidation((s > 0).then(|| Duration::from_secs(s)));
        }
        if let Some(on) = self.permessage_deflate {
            c = c.with_permessage_deflate(on);
        }
        c = c.with_max_connections_per_user(self.max_connections_per_user);
        c = c.with_max_connections_per_ip(self.max_connections_per_ip);
        let proxies = self
            .trusted_proxies
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<_>, _>>()?;
        c = c.with_trusted_proxies(proxies);
        c.validate()?;
        Ok(c)
    }
}

/// `[django]` options: how sockets are authenticated.
#[derive(Args, Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DjangoOpts {
    /// Django's SECRET_KEY (enables session-cookie authentication).
    #[arg(long, env = "HERALD_SECRET_KEY", hide_env_values = true)]
    pub(crate) secret_key: Option<String>,
    /// Django's SECRET_KEY_FALLBACKS.
    #[arg(
        long = "secret-key-fallback",
        env = "HERALD_SECRET_KEY_FALLBACKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) secret_key_fallbacks: Vec<String>,
    /// SESSION_ENGINE: db, cached_db or signed_cookies [default: db].
    #[arg(long, env = "HERALD_SESSION_ENGINE")]
    pub(crate) session_engine: Option<String>,
    /// SESSION_COOKIE_NAME [default: sessionid].
    #[arg(long, env = "HERALD_SESSION_COOKIE_NAME")]
    pub(crate) session_cookie_name: Option<String>,
    /// The Django database: postgres://user@host/db or sqlite:///path/to/db.sqlite3.
    #[arg(long = "django-db", env = "HERALD_DJANGO_DB", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// The user table [default: auth_user].
    #[arg(long, env = "HERALD_USER_TABLE")]
    pub(crate) user_table: Option<String>,
    /// The username column [default: username].
    #[arg(long, env = "HERALD_USERNAME_COLUMN")]
    pub(crate) username_column: Option<String>,
    /// AUTHENTICATION_BACKENDS [default: django.contrib.auth.backends.ModelBackend].
    #[arg(
        long = "auth-backend",
        env = "HERALD_AUTH_BACKENDS",
        value_delimiter = ','
    )]
    pub(crate) authentication_backends: Vec<String>,
    /// Ask this Django URL who the cookie belongs to instead of reading sessions directly.
    #[arg(long, env = "HERALD_AUTH_CALLBACK")]
    pub(crate) auth_callback: Option<String>,
    /// TIME_ZONE, read from the file only: the senders use it (their `--time-zone`), and
    /// `serve` checks it so a shared file with a wrong zone fails at start-up everywhere.
    #[arg(skip)]
    pub(crate) time_zone: Option<String>,
}

impl DjangoOpts {
    fn or(self, file: DjangoOpts) -> DjangoOpts {
        DjangoOpts {
            secret_key: self.secret_key.or(file.secret_key),
            secret_key_fallbacks: or_vec(self.secret_key_fallbacks, file.secret_key_fallbacks),
            session_engine: self.session_engine.or(file.session_engine),
            session_cookie_name: self.session_cookie_name.or(file.session_cookie_name),
            database_url: self.database_url.or(file.database_url),
            user_table: self.user_table.or(file.user_table),
            username_column: self.username_column.or(file.username_column),
            authentication_backends: or_vec(
                self.authentication_backends,
                file.authentication_backends,
            ),
            auth_callback: self.auth_callback.or(file.auth_callback),
            time_zone: self.time_zone.or(file.time_zone),
        }
    }

    /// True if any Django authentication is configured.
    pub(crate) fn configured(&self) -> bool {
        self.secret_key.is_some() || self.auth_callback.is_some()
    }

    pub(crate) fn auth_config(&self) -> anyhow::Result<DjangoAuthConfig> {
        let mut c = DjangoAuthConfig::default();
        if let Some(k) = &self.secret_key {
            c = c.with_secret_key(k.clone());
        }
        if !self.secret_key_fallbacks.is_empty() {
            c = c.with_secret_key_fallbacks(self.secret_key_fallbacks.clone());
        }
        if let Some(e) = &self.session_engine {
            c = c.with_session_engine(e.parse::<SessionEngine>()?);
        }
        if let Some(n) = &self.session_cookie_name {
            c = c.with_session_cookie_name(n.clone());
        }
        if let Some(u) = &self.database_url {
            c = c.with_database_url(u.clone());
        }
        if let Some(t) = &self.user_table {
            c = c.with_user_table(t.clone());
        }
        if let Some(col) = &self.username_column {
            c = c.with_username_column(col.clone());
        }
        if !self.authentication_backends.is_empty() {
            c = c.with_authentication_backends(self.authentication_backends.clone());
        }
        if let Some(u) = &self.auth_callback {
            c = c.with_callback_url(u.clone());
        }
        Ok(c)
    }
}

/// `[webhook]` options: the online/offline webhook to Django.
#[derive(Args, Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct WebhookOpts {
    /// POST signed {"event": "online"|"offline", "user": …, "at": …} here when a user's first
    /// socket in the fleet opens and after their last one closed (http:// only; every instance
    /// needs the same setting).
    #[arg(long = "online-webhook", env = "HERALD_ONLINE_WEBHOOK")]
    pub(crate) url: Option<String>,
    /// The HMAC-SHA256 key of the X-Herald-Signature header (required with --online-webhook).
    #[arg(
        long = "online-webhook-secret",
        env = "HERALD_ONLINE_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub(crate) secret: Option<String>,
    /// Seconds the last socket must stay closed before "offline" (a reload does not count)
    /// [default: 3].
    #[arg(long = "online-debounce", env = "HERALD_ONLINE_DEBOUNCE")]
    pub(crate) debounce: Option<f64>,
    /// Events waiting for delivery before the oldest is dropped [default: 1000].
    #[arg(long = "online-webhook-queue", env = "HERALD_ONLINE_WEBHOOK_QUEUE")]
    pub(crate) queue: Option<usize>,
}

impl WebhookOpts {
    fn or(self, file: WebhookOpts) -> WebhookOpts {
        WebhookOpts {
            url: self.url.or(file.url),
            secret: self.secret.or(file.secret),
            debounce: self.debounce.or(file.debounce),
            queue: self.queue.or(file.queue),
        }
    }
}

/// `herald serve` flags (also `herald check`'s); after [`FileSettings::merge_serve`], the options
/// `serve` runs with.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) server: ServerOpts,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) django: DjangoOpts,
    #[command(flatten)]
    pub(crate) webhook: WebhookOpts,
    /// Serve the demo page at /demo/ and let anonymous browsers on this machine in as user
    /// "demo" (local trials only; requires a loopback --bind).
    #[arg(long)]
    pub(crate) demo: bool,
}

/// The TOML file: one table per component.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileSettings {
    /// `[layer]`: channel layer options.
    pub(crate) layer: LayerOpts,
    /// `[server]`: WebSocket server options.
    pub(crate) server: ServerOpts,
    /// `[django]`: authentication options.
    pub(crate) django: DjangoOpts,
    /// `[webhook]`: the online/offline webhook.
    pub(crate) webhook: WebhookOpts,
}

/// The one merge of flags (and their `HERALD_*` variables) over the file: each subcommand's
/// options with every gap filled from the file's table for it.
impl FileSettings {
    /// `online`, `group-send`, `test-connection`: the layer options.
    pub(crate) fn merge_layer(self, layer: LayerOpts) -> LayerOpts {
        layer.or(self.layer)
    }

    /// `send`, `notify`, `file`, `broadcast`: the layer options and Django's `TIME_ZONE`
    /// (`--time-zone` over `[django] time_zone`).
    pub(crate) fn merge_sender(
        self,
        layer: LayerOpts,
        time_zone: Option<String>,
    ) -> (LayerOpts, Option<String>) {
        (layer.or(self.layer), time_zone.or(self.django.time_zone))
    }

    /// `serve` and `check`: every table. The file's `time_zone` is checked although `serve`
    /// does not use it, so a shared file with a wrong zone fails at start-up everywhere.
    pub(crate) fn merge_serve(self, args: ServeArgs) -> anyhow::Result<ServeArgs> {
        TimeZone::from_setting(self.django.time_zone.as_deref())?;
        Ok(ServeArgs {
            server: args.server.or(self.server),
            layer: args.layer.or(self.layer),
            django: args.django.or(self.django),
            webhook: args.webhook.or(self.webhook),
            demo: args.demo,
        })
    }
}

/// Reads the TOML file at `path`; unknown keys are errors so typos do not pass silently.
pub(crate) fn load_file(path: Option<&Path>) -> anyhow::Result<FileSettings> {
    let Some(path) = path else {
        return Ok(FileSettings::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The `--config` flag, shared by every subcommand.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct ConfigFile {
    /// TOML file with `[layer]`, `[server]`, `[django]` and `[webhook]` tables; flags and
    /// `HERALD_*` win over it.
    #[arg(long = "config", env = "HERALD_CONFIG", global = true)]
    pub(crate) path: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_separated_sentinels_stay_one_host() {
        let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            join_sentinel_pieces(split(
                "redis://a:1,sentinel://:pw@h:1,h:2,h:3/mymaster?db=2,redis://b:2"
            )),
            [
                "redis://a:1",
                "sentinel://:pw@h:1,h:2,h:3/mymaster?db=2",
                "redis://b:2"
            ]
        );
        // A stray piece after a complete host stays separate (and fails to parse later).
        assert_eq!(
            join_sentinel_pieces(split("sentinel://h:1/m,h:2")),
            ["sentinel://h:1/m", "h:2"]
        );
    }

    #[test]
    fn flags_beat_file_and_file_fills_gaps() {
        let cli = LayerOpts {
            prefix: Some("cli".into()),
            ..LayerOpts::default()
        };
        let file = LayerOpts {
            prefix: Some("file".into()),
            expiry: Some(30),
            hosts: vec!["redis://h:1".into()],
            ..LayerOpts::default()
        };
        let merged = cli.or(file);
        assert_eq!(merged.prefix.as_deref(), Some("cli"));
        assert_eq!(merged.expiry, Some(30));
        assert_eq!(merged.hosts, ["redis://h:1"]);
        assert_eq!(merged.backend(), Backend::Core);
    }

    #[test]
    fn merges_fill_each_subcommand_from_its_tables() {
        let file = || -> FileSettings {
            toml::from_str(
                "[layer]\nprefix = \"file\"\n[server]\nping_interval = 7\n\
                 [django]\ntime_zone = \"Europe/Paris\"\nsecret_key = \"s\"\n",
            )
            .unwrap()
        };
        let (layer, zone) = file().merge_sender(LayerOpts::default(), Some("UTC".into()));
        assert_eq!(layer.prefix.as_deref(), Some("file"));
        assert_eq!(zone.as_deref(), Some("UTC"));
        let (_, zone) = file().merge_sender(LayerOpts::default(), None);
        assert_eq!(zone.as_deref(), Some("Europe/Paris"));
        let serve = ServeArgs {
            server: ServerOpts::default(),
            layer: LayerOpts::default(),
            django: DjangoOpts::default(),
            webhook: WebhookOpts::default(),
            demo: false,
        };
        let merged = file().merge_serve(serve.clone()).unwrap();
        assert_eq!(merged.server.ping_interval, Some(7));
        let revalidation: FileSettings =
            toml::from_str("[server]\nsession_revalidation = 0\n").unwrap();
        let off = revalidation.merge_serve(serve.clone()).unwrap();
        assert_eq!(
            off.server.server_config().unwrap().session_revalidation,
            None
        );
        let deflate: FileSettings =
            toml::from_str("[server]\npermessage_deflate = true\n").unwrap();
        let on = deflate.merge_serve(serve.clone()).unwrap();
        assert!(on.server.server_config().unwrap().permessage_deflate);
        let default = ServerOpts::default().server_config().unwrap();
        assert!(!default.permessage_deflate);
        assert_eq!(
            default.session_revalidation,
            Some(herald_server::config::DEFAULT_SESSION_REVALIDATION)
        );
        assert_eq!(merged.django.secret_key.as_deref(), Some("s"));
        let hooked: FileSettings = toml::from_str(
            "[webhook]\nurl = \"http://app/herald/presence/\"\nsecret = \"k\"\ndebounce = 1.5\n",
        )
        .unwrap();
        let merged = hooked.merge_serve(serve.clone()).unwrap();
        assert_eq!(merged.webhook.debounce, Some(1.5));
        assert_eq!(merged.webhook.secret.as_deref(), Some("k"));
        let bad: FileSettings = toml::from_str("[django]\ntime_zone = \"Mars/Base\"\n").unwrap();
        assert!(bad.merge_serve(serve).is_err());
    }

    #[test]
    fn no_hosts_means_memory() {
        assert_eq!(LayerOpts::default().backend(), Backend::Memory);
    }

    #[test]
    fn capacity_specs_parse_globs_and_regexes() {
        assert_eq!(
            parse_capacity("http.response!*=10").unwrap(),
            CapacitySpec {
                pattern: "http.response!*".into(),
                is_regex: false,
                capacity: 10
            }
        );
        let re = parse_capacity("re:^a=b$=3").unwrap();
        assert_eq!(
            (re.pattern.as_str(), re.is_regex, re.capacity),
            ("^a=b$", true, 3)
        );
        assert!(parse_capacity("nope").is_err());
        assert!(parse_capacity("x=0").is_err());
        assert!(parse_capacity("x=abc").is_err());
    }

    #[test]
    fn time_zones_are_checked_like_django() {
        assert!(TimeZone::new("Asia/Kathmandu").is_ok());
        assert!(TimeZone::new("UTC").is_ok());
        for wrong in ["Mars/Base", "asia/kathmandu", "", "+05:45", "../etc/passwd"] {
            let err = TimeZone::new(wrong).unwrap_err().to_string();
            assert!(err.contains("unknown time zone"), "{wrong}: {err}");
        }
        assert!(TimeZone::from_setting(None).unwrap().is_none());
        let file: FileSettings =
            toml::from_str("[django]\ntime_zone = \"Europe/Paris\"\n").unwrap();
        assert_eq!(file.django.time_zone.as_deref(), Some("Europe/Paris"));
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let err = toml::from_str::<FileSettings>("[layer]\nprefx = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("prefx"));
        let ok: FileSettings =
            toml::from_str("[layer]\nhosts = [\"redis://a\"]\ngroup_expiry = 5\n").unwrap();
        assert_eq!(ok.layer.group_expiry, Some(5));
    }
}
