//! `herald serve`: the WebSocket server, configured from flags, `HERALD_*` and the TOML file.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::Args;
use herald_core::presence::{DEFAULT_PRESENCE_TTL, InMemoryPresence, Presence};
use herald_django::{DjangoAuth, DjangoAuthConfig, SessionEngine};
use herald_redis::RedisChannelLayer;
use herald_server::{
    AnonymousAuthenticator, App, AuthError, Authenticator, HandshakeRequest, HealthCheck, Identity,
    MetricsSource, PublishAccess, RateLimit, ServerConfig, TasksConsumer,
    TrustedHeaderAuthenticator,
};
use serde::Deserialize;
use tracing::{info, warn};

use crate::demo;
use crate::layer;
use crate::settings::{LayerOpts, load_file, or_vec};

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
        }
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
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

/// `herald serve` flags.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) server: ServerOpts,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) django: DjangoOpts,
    /// Serve the demo page at /demo/ and let anonymous browsers on this machine in as user
    /// "demo" (local trials only; requires a loopback --bind).
    #[arg(long)]
    pub(crate) demo: bool,
}

/// Adapts [`DjangoAuth`] to the server's [`Authenticator`] hook.
#[derive(Debug)]
struct DjangoAuthenticator(DjangoAuth);

#[async_trait]
impl Authenticator for DjangoAuthenticator {
    async fn authenticate(
        &self,
        request: &HandshakeRequest,
    ) -> Result<Option<Identity>, AuthError> {
        // Channels' CookieMiddleware reads the first Cookie header only.
        match self.0.authenticate(request.header("cookie")).await {
            Ok(user) => Ok(user.map(|u| Identity::new(u.username, u.user_id))),
            Err(err) => Err(AuthError::with_source("django authentication failed", err)),
        }
    }
}

/// The Django database as a readiness dependency: `SELECT 1` (session mode only; with
/// `signed_cookies` the user table is still read from it).
#[derive(Debug)]
struct DjangoDatabase(DjangoAuth);

#[async_trait]
impl HealthCheck for DjangoDatabase {
    fn name(&self) -> &str {
        "django_database"
    }

    async fn check(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.ping().await?)
    }
}

/// Layer statistics on `/metrics`.
#[derive(Debug)]
struct RedisMetrics(Arc<RedisChannelLayer>);

impl MetricsSource for RedisMetrics {
    fn extra_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = self.0.stats();
        let counters = [
            (
                "herald_layer_received_total",
                "Messages popped from Redis and decoded.",
                s.received,
            ),
            (
                "herald_layer_delivered_total",
                "Messages handed to local channel buffers.",
                s.delivered,
            ),
            (
                "herald_layer_buffer_drops_total",
                "Messages dropped because a local buffer was full.",
                s.buffer_drops,
            ),
            (
                "herald_layer_unknown_channel_drops_total",
                "Messages for closed or unknown local channels.",
                s.unknown_channel_drops,
            ),
            (
                "herald_redis_reconnects_total",
                "Reader reconnects after a Redis failure.",
                s.reconnects,
            ),
            (
                "herald_layer_memberships_refreshed_total",
                "Group memberships re-added.",
                s.memberships_refreshed,
            ),
            (
                "herald_history_captured_total",
                "Messages of recorded groups this server took from Redis into the history log.",
                s.history_captured,
            ),
            (
                "herald_history_recorded_total",
                "Messages this server recorded in their group's history first (a fleet's sum \
                 counts each message once).",
                s.history_recorded,
            ),
            (
                "herald_history_replayed_total",
                "Recorded messages handed back by replays.",
                s.history_replayed,
            ),
            (
                "herald_history_unrecoverable_total",
                "Replays whose gap the history no longer covered (other epoch, or trimmed).",
                s.history_unrecoverable,
            ),
            (
                "herald_history_log_missed_total",
                "History log entries trimmed before this server could record them.",
                s.history_log_missed,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP herald_layer_decode_errors_total Redis members that could not be decoded.\n\
             # TYPE herald_layer_decode_errors_total counter"
        );
        for (reason, value) in [
            ("short_member", s.decode_short_member),
            ("fernet", s.decode_fernet),
            ("body", s.decode_body),
            ("channel", s.decode_channel),
        ] {
            let _ = writeln!(
                out,
                "herald_layer_decode_errors_total{{reason=\"{reason}\"}} {value}"
            );
        }
    }
}

/// The merged options `serve` runs with.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) server: ServerOpts,
    pub(crate) layer: LayerOpts,
    pub(crate) django: DjangoOpts,
    pub(crate) demo: bool,
}

pub(crate) fn resolve(
    args: ServeArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Resolved> {
    let file = load_file(config)?;
    crate::settings::TimeZone::from_setting(file.django.time_zone.as_deref())?;
    Ok(Resolved {
        server: args.server.or(file.server),
        layer: args.layer.or(file.layer),
        django: args.django.or(file.django),
        demo: args.demo,
    })
}

/// Builds the app `serve` runs.
pub(crate) fn build_app(r: &Resolved) -> anyhow::Result<App> {
    let built = layer::build(&r.layer, true)?;
    let mut database = None;
    let authenticator: Arc<dyn Authenticator> = if let Some(header) = &r.server.trusted_user_header
    {
        if r.django.configured() {
            bail!("--trusted-user-header and Django authentication are mutually exclusive");
        }
        let name = header
            .to_ascii_lowercase()
            .parse()
            .with_context(|| format!("invalid header name {header:?}"))?;
        Arc::new(TrustedHeaderAuthenticator::new().with_user_header(name))
    } else if r.django.configured() {
        let auth = DjangoAuth::new(r.django.auth_config()?)?;
        if r.django.auth_callback.is_none() {
            database = Some(DjangoDatabase(auth.clone()));
        }
        Arc::new(DjangoAuthenticator(auth))
    } else {
        if !r.demo {
            warn!(
                "no authentication configured: every /ws/tasks/ handshake will be refused with \
                 403. To try herald on this machine run `herald serve --demo`; to serve a \
                 Django site pass --redis, --secret-key and --django-db (or --auth-callback), \
                 as flags, HERALD_* variables or a --config TOML file (see herald serve --help)"
            );
        }
        Arc::new(AnonymousAuthenticator)
    };
    let authenticator = if r.demo {
        demo::authenticator(authenticator)
    } else {
        authenticator
    };
    let mut builder = App::builder()
        .layer(built.layer.clone())
        .shared_authenticator(authenticator)
        .config(r.server.server_config()?)
        .route("/ws/tasks/", TasksConsumer::default)
        .demo_page(r.demo);
    if let Some(database) = database {
        builder = builder.health_check(database);
    }
    let ttl = r
        .server
        .presence_ttl
        .map_or(DEFAULT_PRESENCE_TTL, Duration::from_secs);
    if ttl < Duration::from_secs(1) {
        bail!("--presence-ttl must be at least 1 second");
    }
    let presence: Arc<dyn Presence> = match &built.redis {
        // Redis: every herald instance and Python read the same records.
        Some(redis) => redis.clone(),
        None => Arc::new(InMemoryPresence::new()),
    };
    builder = builder.presence(presence, ttl);
    match (&r.server.publish_token, r.demo) {
        (Some(token), _) if token.is_empty() => bail!("--publish-token must not be empty"),
        (Some(token), _) => builder = builder.publish(PublishAccess::Bearer(token.clone())),
        // The demo binds loopback only; its publish API is what `herald send` uses when there
        // is no Redis.
        (None, true) => builder = builder.publish(PublishAccess::LoopbackOnly),
        (None, false) => {}
    }
    if let Some(redis) = built.redis {
        builder = builder.metrics_source(RedisMetrics(redis));
    }
    Ok(builder.build()?)
}

/// The accept backlog. tokio's default (1024) overflows when thousands of browsers reconnect at
/// once (e.g. after a deploy), and overflowing SYNs turn into client-side connect failures; the
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn listen(bind: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Like std's bind: a restarted herald can take its port back while old sockets linger in
    // TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves once SIGTERM or Ctrl-C arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    info!("shutdown signal received");
}

pub(crate) async fn run(args: ServeArgs, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let resolved = resolve(args, config)?;
    let app = build_app(&resolved)?;
    let bind = resolved
        .server
        .bind
        .unwrap_or_else(|| DEFAULT_BIND.parse().unwrap());
    if resolved.demo {
        demo::check_bind(bind)?;
    }
    let listener = match listen(bind) {
        Ok(l) => l,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {bind}: the address is already in use (another herald, or a \
             Django runserver?); choose another with --bind HOST:PORT (or HERALD_BIND)"
        ),
        Err(err) => {
            return Err(err).with_context(|| {
                format!("cannot listen on {bind} (choose another with --bind HOST:PORT)")
            });
        }
    };
    info!(
        addr = %listener.local_addr()?,
        backend = ?resolved.layer.backend(),
        "herald serving /ws/tasks/, /healthz, /readyz and /metrics"
    );
    if resolved.demo {
        demo::announce(listener.local_addr()?, &resolved.layer);
    }
    let layer = Arc::clone(app.layer());
    herald_server::serve(listener, app, shutdown_signal()).await?;
    // Gives back what the layer holds for the fleet (the history capture lease), so another
    // server takes over at once instead of when the lease runs out.
    if let Err(err) = layer.close().await {
        warn!(error = %err, "cannot release the layer's fleet resources");
    }
    Ok(())
}
