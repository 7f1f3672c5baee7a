//! `herald serve`: builds the app from the merged settings ([`ServeArgs`]), the auth glue,
//! the listener and the signals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use herald_core::presence::{DEFAULT_PRESENCE_TTL, InMemoryPresence, Presence};
use herald_django::{AuthOutcome, DjangoAuth, Webhook, WebhookConfig};
use herald_redis::RedisChannelLayer;
use herald_server::{
    AnonymousAuthenticator, App, AuthError, Authenticator, Credential, HandshakeRequest,
    HealthCheck, Identity, MetricsSource, PresenceChange, PresenceEvents, PublishAccess,
    SessionState, TasksConsumer, TrustedHeaderAuthenticator,
};
use tracing::{info, warn};

use crate::demo;
use crate::layer;
use crate::settings::{DEFAULT_BIND, FileSettings, ServeArgs, WebhookOpts};

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
        let header = request.header("cookie");
        match self.0.authenticate(header).await {
            Ok(user) => Ok(user.map(|u| {
                let identity = Identity::new(u.username, u.user_id);
                // What session re-validation asks about later (the session key; the header
                // for the callback).
                match self.0.credential(header) {
                    Some(credential) => identity.with_credential(credential),
                    None => identity,
                }
            })),
            Err(err) => Err(AuthError::with_source("django authentication failed", err)),
        }
    }

    /// The sessions again, in one batch (see `DjangoAuth::check_many`): logged out, expired,
    /// password changed or deactivated is [`SessionState::Gone`]; a callback that did not
    /// answer for a cookie is [`SessionState::Unknown`].
    async fn revalidate(&self, credentials: &[Credential]) -> Result<Vec<SessionState>, AuthError> {
        let keys: Vec<&str> = credentials.iter().map(Credential::as_str).collect();
        let outcomes =
            self.0.check_many(&keys).await.map_err(|err| {
                AuthError::with_source("django session re-validation failed", err)
            })?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome.map(AuthOutcome::user) {
                Some(Some(user)) => SessionState::User(user.user_id),
                Some(None) => SessionState::Gone,
                None => SessionState::Unknown,
            })
            .collect())
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

/// The online/offline webhook as the server's presence hook: events are queued, never awaited.
#[derive(Debug)]
struct WebhookEvents(Webhook);

impl PresenceEvents for WebhookEvents {
    fn changed(&self, user: &str, change: PresenceChange, at: f64) {
        self.0.push(change.as_str(), user, at);
    }
}

/// The webhook's counters on `/metrics`.
#[derive(Debug)]
struct WebhookMetrics(Webhook);

impl MetricsSource for WebhookMetrics {
    fn extra_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = self.0.stats();
        for (name, help, value) in [
            (
                "herald_webhook_sent_total",
                "Online/offline events the webhook receiver accepted.",
                s.sent,
            ),
            (
                "herald_webhook_failed_total",
                "Online/offline events given up after every retry.",
                s.failed,
            ),
            (
                "herald_webhook_retried_total",
                "Online/offline webhook deliveries retried.",
                s.retried,
            ),
            (
                "herald_webhook_dropped_total",
                "Online/offline events dropped because the webhook queue was full.",
                s.dropped,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP herald_webhook_queued Online/offline events waiting for delivery.\n\
             # TYPE herald_webhook_queued gauge\nherald_webhook_queued {}",
            s.queued
        );
    }
}

/// How long a user's last socket stays closed before "offline" unless `--online-debounce`
/// says otherwise: a page reload reconnects well within it.
const DEFAULT_ONLINE_DEBOUNCE: Duration = Duration::from_secs(3);

/// The webhook from `--online-webhook*`, started, with its debounce; `None` without a URL.
fn webhook(opts: &WebhookOpts) -> anyhow::Result<Option<(Webhook, Duration)>> {
    let Some(url) = &opts.url else {
        if opts.secret.is_some() {
            bail!("--online-webhook-secret needs --online-webhook");
        }
        return Ok(None);
    };
    let Some(secret) = &opts.secret else {
        bail!("--online-webhook needs --online-webhook-secret (the receiver checks its signature)");
    };
    let debounce = match opts.debounce {
        None => DEFAULT_ONLINE_DEBOUNCE,
        Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
        Some(s) => bail!("--online-debounce {s}: expected a number of seconds, 0 or more"),
    };
    let mut config = WebhookConfig::new(url, secret);
    if let Some(n) = opts.queue {
        config = config.with_queue_capacity(n);
    }
    Ok(Some((Webhook::start(config)?, debounce)))
}

/// This instance's name in presence records (`herald connections`): the host name and the
/// port, which tell the instances of a fleet apart whether they share a machine or not.
pub(crate) fn instance_name(bind: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    format!("{host}:{}", bind.port())
}

/// The shortest `--presence-ttl`: records are refreshed well inside the TTL, and Redis keys
/// expire in whole seconds.
const MIN_PRESENCE_TTL: Duration = Duration::from_secs(1);

/// Builds the app `serve` runs.
pub(crate) fn build_app(r: &ServeArgs) -> anyhow::Result<App> {
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
        .sse_route("/sse/tasks/", "/ws/tasks/")
        .demo_page(r.demo);
    if let Some(database) = database {
        builder = builder.health_check(database);
    }
    let ttl = r
        .server
        .presence_ttl
        .map_or(DEFAULT_PRESENCE_TTL, Duration::from_secs);
    if ttl < MIN_PRESENCE_TTL {
        bail!("--presence-ttl must be at least 1 second");
    }
    let presence: Arc<dyn Presence> = match &built.redis {
        // Redis: every herald instance and Python read the same records.
        Some(redis) => redis.clone(),
        None => Arc::new(InMemoryPresence::new()),
    };
    builder = builder.presence(presence, ttl);
    let bind = r
        .server
        .bind
        .unwrap_or_else(|| DEFAULT_BIND.parse().unwrap());
    builder = builder.instance(instance_name(bind));
    if let Some((hook, debounce)) = webhook(&r.webhook)? {
        builder = builder
            .presence_events(Arc::new(WebhookEvents(hook.clone())), debounce)
            .metrics_source(WebhookMetrics(hook));
    }
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

pub(crate) async fn run(args: ServeArgs, file: FileSettings) -> anyhow::Result<()> {
    let resolved = file.merge_serve(args)?;
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
