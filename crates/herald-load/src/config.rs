//! What a load run connects to, how many sockets, and how long it may take.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::error::Result;
use crate::target::require_loopback;

/// Configuration of one load run. Build it with [`LoadConfig::new`] and the `with_*` setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadConfig {
    /// The `ws://` URL (loopback only), e.g. `ws://127.0.0.1:8000/ws/tasks/`.
    pub url: String,
    /// How many sockets to open.
    pub connections: usize,
    /// `Cookie` header values; socket `i` uses `cookies[i % len]`. Empty = no cookie header.
    pub cookies: Vec<String>,
    /// At most this many handshakes in flight; `None` opens every socket at once (burst).
    pub concurrency: Option<NonZeroUsize>,
    /// Bound on one TCP connect + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Stop as soon as this many frames arrived (over all sockets); `None` holds the sockets
    /// open for the whole [`deadline`](Self::deadline) (idle-memory runs).
    pub expect_frames: Option<u64>,
    /// Bound on the receive phase, counted from [`Swarm::finish`](crate::Swarm::finish).
    pub deadline: Duration,
    /// A text frame each socket sends right after it opens (e.g. a subscribe request).
    pub subscribe: Option<String>,
    /// Process whose resident memory is sampled before connecting, once connected, and at the end.
    pub server_pid: Option<u32>,
    /// How many loopback source addresses (`127.0.0.1`, `127.0.0.2`, ...) sockets are spread
    /// over; `None` picks one per [`DEFAULT_SOCKETS_PER_SOURCE_IP`] sockets, because one source
    /// address only has about 28k ephemeral ports towards one server port.
    pub source_ips: Option<NonZeroUsize>,
    /// `Origin` header value; `None` sends `http://<host:port of the URL>`.
    pub origin: Option<String>,
    /// Offer `permessage-deflate` (as browsers do) and inflate the server's compressed frames.
    pub deflate: bool,
    /// Open Server-Sent Events streams (`GET` of the URL's path, e.g. `/sse/tasks/`, with the
    /// cookie and Origin) instead of WebSockets; each `data:` line counts as a frame.
    pub sse: bool,
}

/// Default [`LoadConfig::connections`].
pub const DEFAULT_CONNECTIONS: usize = 1;
/// Default [`LoadConfig::concurrency`]: 256 handshakes in flight.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// Default [`LoadConfig::connect_timeout`]: 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`LoadConfig::deadline`]: 60 s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// Sockets per loopback source address when [`LoadConfig::source_ips`] is `None`.
pub const DEFAULT_SOCKETS_PER_SOURCE_IP: usize = 20_000;
/// Upper bound on [`LoadConfig::connections`], so a typo cannot exhaust the machine.
pub const MAX_CONNECTIONS: usize = 200_000;
/// Upper bound on [`LoadConfig::deadline`] and [`LoadConfig::connect_timeout`].
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 60);

impl LoadConfig {
    /// A configuration for `url` with every other field at its default.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTarget`](crate::ErrorKind::InvalidTarget) if `url` is not a `ws://`
    /// URL on a loopback address.
    pub fn new(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        require_loopback(&url)?;
        Ok(LoadConfig {
            url,
            connections: DEFAULT_CONNECTIONS,
            cookies: Vec::new(),
            concurrency: NonZeroUsize::new(DEFAULT_CONCURRENCY),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            expect_frames: None,
            deadline: DEFAULT_DEADLINE,
            subscribe: None,
            server_pid: None,
            source_ips: None,
            origin: None,
            deflate: false,
            sse: false,
        })
    }

    /// Sets [`connections`](Self::connections).
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// Sets [`cookies`](Self::cookies).
    pub fn with_cookies(mut self, cookies: Vec<String>) -> Self {
        self.cookies = cookies;
        self
    }

    /// Sets [`concurrency`](Self::concurrency) (`None` = burst).
    pub fn with_concurrency(mut self, concurrency: Option<NonZeroUsize>) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`expect_frames`](Self::expect_frames).
    pub fn with_expect_frames(mut self, frames: Option<u64>) -> Self {
        self.expect_frames = frames;
        self
    }

    /// Sets [`deadline`](Self::deadline).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`subscribe`](Self::subscribe).
    pub fn with_subscribe(mut self, frame: Option<String>) -> Self {
        self.subscribe = frame;
        self
    }

    /// Sets [`server_pid`](Self::server_pid).
    pub fn with_server_pid(mut self, pid: Option<u32>) -> Self {
        self.server_pid = pid;
        self
    }

    /// Sets [`source_ips`](Self::source_ips).
    pub fn with_source_ips(mut self, count: Option<NonZeroUsize>) -> Self {
        self.source_ips = count;
        self
    }

    /// Sets [`origin`](Self::origin).
    pub fn with_origin(mut self, origin: Option<String>) -> Self {
        self.origin = origin;
        self
    }

    /// Sets [`sse`](Self::sse).
    pub fn with_sse(mut self, sse: bool) -> Self {
        self.sse = sse;
        self
    }

    /// Sets [`deflate`](Self::deflate).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }
}
