//! [`ServerConfig`]: every knob of the WebSocket server, with Daphne's defaults where Daphne has
//! the knob.
//!
//! The CLI maps flags and `HERALD_*` environment variables onto this struct; the library never
//! reads the environment. Validation happens in [`AppBuilder::build`](crate::AppBuilder::build).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
pub use crate::forwarded::TrustedProxy;

/// Maximum time a connection may spend before the WebSocket is accepted (Daphne
/// `--websocket_connect_timeout`, whose CLI default is 5 s). Elapsing answers HTTP 403, as Daphne does.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Maximum lifetime of an accepted socket (Daphne `--websocket_timeout`, 86400 s); on expiry the
/// server closes with 1000.
pub const DEFAULT_WEBSOCKET_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Idle time before the server pings the client (Daphne `--ping-interval`, 20 s).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Time to wait for a pong (or any frame) after a ping before dropping the connection (Daphne
/// `--ping-timeout`, 30 s).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest accepted message, reassembled (Daphne 4.2.2 `--websocket-max-message-size`, 1 MiB).
/// Larger messages close the socket with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// Largest accepted single frame (Daphne 4.2.2 `--websocket-max-frame-size`, 1 MiB).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;
/// Initial read buffer per socket. Herald-specific: kept small so an idle socket is cheap
/// (browsers send a few short JSON frames); it grows to the frame's size while a larger frame
/// is read.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 512;
/// The smallest read buffer [`ServerConfig::validate`] accepts: below this tungstenite reads a
/// frame header and its first bytes in several syscalls.
const MIN_READ_BUFFER_SIZE: usize = 128;
/// Frames that may wait for a slow client before the socket is closed with
/// [`CLOSE_SLOW_CONSUMER`](crate::CLOSE_SLOW_CONSUMER). Herald-specific: Daphne buffers without limit.
pub const DEFAULT_MAX_OUTBOUND_FRAMES: usize = 256;
/// Sustained inbound frames per second per socket before [`CLOSE_RATE_LIMITED`](crate::CLOSE_RATE_LIMITED).
/// Herald-specific (Daphne has no limit); generous so browser apps never hit it.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 100;
/// Inbound burst allowed on top of the sustained rate.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 200;
/// How long a closing socket waits for the client's close reply (and for queued frames to
/// drain) before the TCP connection is dropped.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long graceful shutdown waits for sockets to close and run `disconnect` (Daphne
/// `--application-close-timeout`, 10 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the health monitor checks the channel layer and the other dependencies behind
/// `/readyz` (Herald extension).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest health interval [`ServerConfig::validate`] accepts: the checks talk to the layer
/// and the database, which a faster loop would only load.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// Join layer groups with one channel per (process, group) and fan out locally (Herald-specific,
/// default on). Python's `group_send` then sends one message per group instead of one listing
/// every local socket. Off: every socket joins the layer group with its own channel, as Channels.
pub const DEFAULT_GROUP_MULTIPLEXING: bool = true;
/// Group messages that may wait for one socket's runtime when [`DEFAULT_GROUP_MULTIPLEXING`] is
/// on; overflowing closes the socket with [`CLOSE_SLOW_CONSUMER`](crate::CLOSE_SLOW_CONSUMER).
/// Herald-specific. The runtime moves inbox messages to the outbound queue as soon as it runs,
/// so the inbox only fills when the server itself lags (a broadcast burst on busy cores); it
/// tolerates as many messages as [`DEFAULT_MAX_OUTBOUND_FRAMES`] and costs nothing while empty.
pub const DEFAULT_GROUP_INBOX_CAPACITY: usize = 256;
/// With [`DEFAULT_GROUP_MULTIPLEXING`], how many channel keys a process spreads its group
/// channels over (a group always uses the same one, so its messages stay in order).
/// Herald-specific. A channels_redis sender skips a channel whose key holds `capacity`
/// (default 100) messages, and every process-specific channel of one prefix shares one key: on
/// one key, a sender with 64 `group_send`s in flight to different users can fill it between two
/// of the reader's round trips and messages are lost. Each key has its own reader (one blocking
/// Redis connection per key and shard).
pub const DEFAULT_GROUP_CHANNEL_KEYS: usize = 8;
/// How often the sessions behind open sockets are checked again (Herald extension; Daphne
/// checks the session at the handshake only). A socket whose session no longer logs its user in
/// (logout, expiry, password change, deactivation) is closed with
/// [`CLOSE_UNAUTHORIZED`](crate::CLOSE_UNAUTHORIZED). Only sockets whose [`Identity`](crate::Identity)
/// carries a [`Credential`](crate::Credential) are checked, through
/// [`Authenticator::revalidate`](crate::Authenticator::revalidate).
pub const DEFAULT_SESSION_REVALIDATION: Duration = Duration::from_secs(30);
/// The shortest re-validation interval [`ServerConfig::validate`] accepts: each round reads every
/// open socket's session.
const MIN_SESSION_REVALIDATION: Duration = Duration::from_millis(100);

/// An inbound token bucket: `per_second` sustained, `burst` on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens refilled per second.
    pub per_second: NonZeroU32,
    /// Bucket size.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A limit of `per_second` sustained frames with bursts of `burst`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] if either is 0.
    pub fn new(per_second: u32, burst: u32) -> Result<Self> {
        match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
            (Some(per_second), Some(burst)) => Ok(RateLimit { per_second, burst }),
            _ => Err(Error::new(
                ErrorKind::Config,
                "rate limit per_second and burst must be at least 1",
            )),
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: NonZeroU32::new(DEFAULT_RATE_LIMIT_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(DEFAULT_RATE_LIMIT_BURST).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Configuration of the WebSocket server.
///
/// ```
/// use std::time::Duration;
/// use herald_server::ServerConfig;
/// let config = ServerConfig::default()
///     .with_ping_interval(Duration::from_secs(10))
///     .with_allowed_origins(["example.com", ".example.org"]);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_WEBSOCKET_TIMEOUT`]; `None` = unlimited (Daphne `-1`).
    pub websocket_timeout: Option<Duration>,
    /// See [`DEFAULT_PING_INTERVAL`].
    pub ping_interval: Duration,
    /// See [`DEFAULT_PING_TIMEOUT`].
    pub ping_timeout: Duration,
    /// See [`DEFAULT_MAX_MESSAGE_SIZE`]; `None` = unlimited (Daphne `0`).
    pub max_message_size: Option<usize>,
    /// See [`DEFAULT_MAX_FRAME_SIZE`]; `None` = unlimited (Daphne `0`).
    pub max_frame_size: Option<usize>,
    /// See [`DEFAULT_READ_BUFFER_SIZE`].
    pub read_buffer_size: usize,
    /// See [`DEFAULT_MAX_OUTBOUND_FRAMES`].
    pub max_outbound_frames: NonZeroUsize,
    /// Inbound rate limit; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Accepted sockets per authenticated user; `None` = unlimited. Excess handshakes get HTTP 429.
    pub max_connections_per_user: Option<NonZeroUsize>,
    /// Accepted sockets per client IP; `None` = unlimited. Excess handshakes get HTTP 429.
    pub max_connections_per_ip: Option<NonZeroUsize>,
    /// Origin patterns checked like Channels' `OriginValidator` (usually Django's
    /// `ALLOWED_HOSTS`); `None` = no check, which is Daphne's own behaviour.
    pub allowed_origins: Option<Vec<String>>,
    /// See [`DEFAULT_CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// See [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed. A request from one of them gets
    /// the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy as its client
    /// address (`scope["client"]`, the per-IP cap, the connection's log span), with port 0;
    /// every other request keeps its TCP peer, whatever headers it sends. Empty (the default):
    /// the header is never read. Deviation from Daphne: `--proxy-headers` takes the leftmost
    /// entry from any peer, which a client can forge.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// See [`DEFAULT_HEALTH_INTERVAL`].
    pub health_interval: Duration,
    /// See [`DEFAULT_GROUP_MULTIPLEXING`].
    pub group_multiplexing: bool,
    /// See [`DEFAULT_GROUP_INBOX_CAPACITY`].
    pub group_inbox_capacity: NonZeroUsize,
    /// See [`DEFAULT_GROUP_CHANNEL_KEYS`].
    pub group_channel_keys: NonZeroUsize,
    /// See [`DEFAULT_SESSION_REVALIDATION`]; `None`: sessions are checked at the handshake only.
    pub session_revalidation: Option<Duration>,
    /// Accept `permessage-deflate` (RFC 7692) when a client offers it; off by default
    /// (Daphne does not offer it). See the `deflate` module for what is compressed.
    pub permessage_deflate: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            websocket_timeout: Some(DEFAULT_WEBSOCKET_TIMEOUT),
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            max_frame_size: Some(DEFAULT_MAX_FRAME_SIZE),
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            max_outbound_frames: NonZeroUsize::new(DEFAULT_MAX_OUTBOUND_FRAMES)
                .unwrap_or(NonZeroUsize::MIN),
            rate_limit: Some(RateLimit::default()),
            max_connections_per_user: None,
            max_connections_per_ip: None,
            allowed_origins: None,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            trusted_proxies: Vec::new(),
            health_interval: DEFAULT_HEALTH_INTERVAL,
            group_multiplexing: DEFAULT_GROUP_MULTIPLEXING,
            group_inbox_capacity: NonZeroUsize::new(DEFAULT_GROUP_INBOX_CAPACITY)
                .unwrap_or(NonZeroUsize::MIN),
            group_channel_keys: NonZeroUsize::new(DEFAULT_GROUP_CHANNEL_KEYS)
                .unwrap_or(NonZeroUsize::MIN),
            session_revalidation: Some(DEFAULT_SESSION_REVALIDATION),
            permessage_deflate: false,
        }
    }
}

impl ServerConfig {
    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`websocket_timeout`](Self::websocket_timeout).
    pub fn with_websocket_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.websocket_timeout = timeout;
        self
    }

    /// Sets [`ping_interval`](Self::ping_interval).
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`ping_timeout`](Self::ping_timeout).
    pub fn with_ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size).
    pub fn with_max_message_size(mut self, size: Option<usize>) -> Self {
        self.max_message_size = size;
        self
    }

    /// Sets [`max_frame_size`](Self::max_frame_size).
    pub fn with_max_frame_size(mut self, size: Option<usize>) -> Self {
        self.max_frame_size = size;
        self
    }

    /// Sets [`read_buffer_size`](Self::read_buffer_size).
    pub fn with_read_buffer_size(mut self, size: usize) -> Self {
        self.read_buffer_size = size;
        self
    }

    /// Sets [`max_outbound_frames`](Self::max_outbound_frames).
    pub fn with_max_outbound_frames(mut self, frames: NonZeroUsize) -> Self {
        self.max_outbound_frames = frames;
        self
    }

    /// Sets [`rate_limit`](Self::rate_limit).
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets [`max_connections_per_user`](Self::max_connections_per_user).
    pub fn with_max_connections_per_user(mut self, max: Option<NonZeroUsize>) -> Self {
        self.max_connections_per_user = max;
        self
    }

    /// Sets [`max_connections_per_ip`](Self::max_connections_per_ip).
    pub fn with_max_connections_per_ip(mut self, max: Option<NonZeroUsize>) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Turns on origin checking with these patterns (see [`crate::origin`]).
    pub fn with_allowed_origins<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Turns origin checking off (Daphne's behaviour without `OriginValidator`).
    pub fn without_origin_check(mut self) -> Self {
        self.allowed_origins = None;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`health_interval`](Self::health_interval).
    pub fn with_health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// Sets [`trusted_proxies`](Self::trusted_proxies).
    pub fn with_trusted_proxies(mut self, proxies: impl IntoIterator<Item = TrustedProxy>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Sets [`group_multiplexing`](Self::group_multiplexing).
    pub fn with_group_multiplexing(mut self, enabled: bool) -> Self {
        self.group_multiplexing = enabled;
        self
    }

    /// Sets [`group_channel_keys`](Self::group_channel_keys).
    pub fn with_group_channel_keys(mut self, keys: NonZeroUsize) -> Self {
        self.group_channel_keys = keys;
        self
    }

    /// Sets [`group_inbox_capacity`](Self::group_inbox_capacity).
    pub fn with_group_inbox_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.group_inbox_capacity = capacity;
        self
    }

    /// Sets [`session_revalidation`](Self::session_revalidation).
    pub fn with_session_revalidation(mut self, interval: Option<Duration>) -> Self {
        self.session_revalidation = interval;
        self
    }

    /// Sets [`permessage_deflate`](Self::permessage_deflate).
    pub fn with_permessage_deflate(mut self, on: bool) -> Self {
        self.permessage_deflate = on;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a zero duration or size, a frame limit above the message limit,
    /// or an empty origin pattern.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::new(ErrorKind::Config, msg));
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout must be positive");
        }
        if self.websocket_timeout.is_some_and(|t| t.is_zero()) {
            return bad("websocket_timeout must be positive (use None for unlimited)");
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return bad("ping_interval and ping_timeout must be positive");
        }
        if self.max_message_size == Some(0) || self.max_frame_size == Some(0) {
            return bad(
                "max_message_size and max_frame_size must be positive (use None for unlimited)",
            );
        }
        if let (Some(frame), Some(message)) = (self.max_frame_size, self.max_message_size)
            && frame > message
        {
            return bad("max_frame_size must not exceed max_message_size");
        }
        if self.read_buffer_size < MIN_READ_BUFFER_SIZE {
            return bad("read_buffer_size must be at least 128 bytes");
        }
        if self.close_timeout.is_zero() || self.shutdown_timeout.is_zero() {
            return bad("close_timeout and shutdown_timeout must be positive");
        }
        if self.health_interval < MIN_HEALTH_INTERVAL {
            return bad("health_interval must be at least 100 ms");
        }
        if self
            .session_revalidation
            .is_some_and(|i| i < MIN_SESSION_REVALIDATION)
        {
            return bad("session_revalidation must be at least 100 ms (use None for off)");
        }
        if let Some(origins) = &self.allowed_origins
            && origins.iter().any(|o| o.trim().is_empty())
        {
            return bad("allowed_origins must not contain empty patterns");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_daphne_and_validate() {
        let c = ServerConfig::default();
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        assert_eq!(c.ping_timeout, Duration::from_secs(30));
        assert_eq!(c.max_message_size, Some(1_048_576));
        assert_eq!(c.max_frame_size, Some(1_048_576));
        assert_eq!(c.handshake_timeout, Duration::from_secs(5));
        c.validate().unwrap();
    }

    #[test]
    fn zero_ping_interval_is_rejected() {
        let err = ServerConfig::default()
            .with_ping_interval(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn frame_limit_above_message_limit_is_rejected() {
        let err = ServerConfig::default()
            .with_max_message_size(Some(10))
            .with_max_frame_size(Some(20))
            .validate()
            .unwrap_err();
        assert!(err.is_config());
    }

    #[test]
    fn zero_rate_limit_is_rejected() {
        assert!(RateLimit::new(0, 5).unwrap_err().is_config());
        assert!(RateLimit::new(5, 0).unwrap_err().is_config());
    }

    #[test]
    fn empty_origin_pattern_is_rejected() {
        let err = ServerConfig::default()
            .with_allowed_origins([""])
            .validate()
            .unwrap_err();
        assert!(err.is_config());
    }
}
