//! [`App`]: the layer, the authenticator, the config and the routes, built once and shared by
//! every connection; plus the socket-independent half of a handshake ([`App::connect`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_core::presence::Presence;
use herald_core::{ChannelLayer, DEFAULT_NEW_CHANNEL_PREFIX};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::auth::{AnonymousAuthenticator, Authenticator, HandshakeRequest};
use crate::config::ServerConfig;
use crate::consumer::ConsumerFactory;
use crate::context::{Context, State};
use crate::error::{Error, ErrorKind, Result};
use crate::groups::{Dispatcher, GroupTable};
use crate::health::{Health, HealthCheck, Readiness};
use crate::limits::ConnectionCaps;
use crate::metrics::{Metrics, MetricsSource};
use crate::origin::origin_allowed;
use crate::presence::{Announcer, PresenceEvents, PresenceRegistry};
use crate::publish::PublishAccess;
use crate::routing;
use crate::runtime::Connection;
use crate::sessions::Sessions;

/// Shared state behind an [`App`].
pub(crate) struct AppInner {
    pub(crate) layer: Arc<dyn ChannelLayer>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) config: ServerConfig,
    pub(crate) routes: HashMap<String, Arc<dyn ConsumerFactory>>,
    /// Event-stream routes (`/sse/tasks/`): the consumer of a WebSocket route, over SSE.
    pub(crate) sse_routes: HashMap<String, Arc<dyn ConsumerFactory>>,
    pub(crate) metrics: Metrics,
    pub(crate) metrics_sources: Vec<Arc<dyn MetricsSource>>,
    pub(crate) caps: Arc<ConnectionCaps>,
    /// Serve the demo page (`/demo/`); see [`AppBuilder::demo_page`].
    pub(crate) demo_page: bool,
    /// Live sockets mirrored into a presence store; see [`AppBuilder::presence`].
    pub(crate) presence: Option<Arc<PresenceRegistry>>,
    /// Who may use the publish API; `None` = off. See [`AppBuilder::publish`].
    pub(crate) publish: Option<PublishAccess>,
    /// Local group table; `None` when `group_multiplexing` is off.
    pub(crate) groups: Option<Arc<GroupTable>>,
    /// Fans layer messages out to the sockets' inboxes, in the layer's order (see `groups`).
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// The layer's and every [`HealthCheck`]'s state: `/readyz`, 1013 refusals.
    pub(crate) health: Arc<Health>,
    /// Open sockets' credentials, checked again every `session_revalidation` (see `sessions`).
    pub(crate) sessions: Arc<Sessions>,
}

impl std::fmt::Debug for AppInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("layer", &self.layer)
            .field("authenticator", &self.authenticator)
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A configured server application: what [`serve`](crate::serve) runs. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use herald_core::InMemoryLayer;
/// use herald_server::{App, ServerConfig, StaticTokenAuthenticator, TasksConsumer, Identity};
///
/// let app = App::builder()
///     .layer(Arc::new(InMemoryLayer::new(Default::default()).unwrap()))
///     .authenticator(StaticTokenAuthenticator::new().with_token("t", Identity::new("amadmin", "1")))
///     .config(ServerConfig::default().with_allowed_origins(["localhost"]))
///     .route("/ws/tasks/", TasksConsumer::default)
///     .build()
///     .unwrap();
/// assert_eq!(app.metrics().connections_current(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct App {
    pub(crate) inner: Arc<AppInner>,
}

/// Builds an [`App`]; everything is validated in [`build`](Self::build).
#[derive(Default)]
pub struct AppBuilder {
    layer: Option<Arc<dyn ChannelLayer>>,
    authenticator: Option<Arc<dyn Authenticator>>,
    config: ServerConfig,
    routes: Vec<(String, Arc<dyn ConsumerFactory>)>,
    /// (event-stream path, WebSocket path it serves).
    sse_routes: Vec<(String, String)>,
    metrics_sources: Vec<Arc<dyn MetricsSource>>,
    demo_page: bool,
    presence: Option<(Arc<dyn Presence>, Duration)>,
    instance: Option<String>,
    presence_events: Option<Announcer>,
    publish: Option<PublishAccess>,
    health_checks: Vec<Arc<dyn HealthCheck>>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("layer", &self.layer)
            .field(
                "routes",
                &self.routes.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AppBuilder {
    /// The channel layer every consumer uses (required).
    pub fn layer(mut self, layer: Arc<dyn ChannelLayer>) -> Self {
        self.layer = Some(layer);
        self
    }

    /// The authenticator (default: [`AnonymousAuthenticator`], everyone anonymous).
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// An authenticator already behind an `Arc`.
    pub fn shared_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// The server configuration (default: [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves WebSocket connections to exactly `path` (e.g. `"/ws/tasks/"`, as in a Channels
    /// `URLRouter` entry) with consumers made by `factory`.
    pub fn route(mut self, path: &str, factory: impl ConsumerFactory) -> Self {
        self.routes.push((path.to_owned(), Arc::new(factory)));
        self
    }

    /// Serves the consumer of the WebSocket route `ws_path` also as Server-Sent Events on
    /// `path` (e.g. `"/sse/tasks/"` for `"/ws/tasks/"`), for browsers behind proxies that
    /// break WebSockets: same handshake (Origin, authentication, caps, `connect`), same frames
    /// as `data:` lines, the client's frames taken from the URL (see the
    /// [`TasksConsumer`](crate::TasksConsumer) docs).
    pub fn sse_route(mut self, path: &str, ws_path: &str) -> Self {
        self.sse_routes.push((path.to_owned(), ws_path.to_owned()));
        self
    }

    /// Adds lines to `/metrics` (e.g. the Redis layer's pool statistics).
    pub fn metrics_source(mut self, source: impl MetricsSource) -> Self {
        self.metrics_sources.push(Arc::new(source));
        self
    }

    /// Serves the demo page at [`DEMO_PATH`](crate::DEMO_PATH) (default: off). The page only
    /// shows what `/ws/tasks/` sends; who may connect is still the authenticator's decision.
    pub fn demo_page(mut self, enabled: bool) -> Self {
        self.demo_page = enabled;
        self
    }

    /// Records every accepted, authenticated socket in `store` for `ttl`, refreshed while it
    /// lives and removed when it closes (default: no presence).
    pub fn presence(mut self, store: Arc<dyn Presence>, ttl: Duration) -> Self {
        self.presence = Some((store, ttl));
        self
    }

    /// The name presence records give this server instance (what `GET /api/connections`
    /// lists sockets under; default: `herald-<process id>`).
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Reports fleet-wide online/offline transitions to `events` (default: none): "online" when
    /// a user's first socket in the fleet opens, "offline" once the last one has been closed for
    /// `debounce` or its record lapsed. Needs [`presence`](Self::presence); every instance
    /// sharing the presence store must enable it, since the store's announcing methods keep
    /// the fleet-wide state.
    pub fn presence_events(mut self, events: Arc<dyn PresenceEvents>, debounce: Duration) -> Self {
        self.presence_events = Some(Announcer { events, debounce });
        self
    }

    /// Enables the HTTP publish API (`POST /api/publish`, `GET /api/presence`) for callers
    /// with `access` (default: off, and the paths answer 404).
    pub fn publish(mut self, access: PublishAccess) -> Self {
        self.publish = Some(access);
        self
    }

    /// Adds a dependency to readiness next to the channel layer (e.g. the Django database):
    /// while its check fails, `/readyz` answers 503 and handshakes are closed with 1013.
    pub fn health_check(mut self, check: impl HealthCheck) -> Self {
        self.health_checks.push(Arc::new(check));
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] if no layer was given, the config is invalid, or a route path is
    /// empty, lacks a leading `/`, is reserved (`/healthz`, `/metrics`, the asset paths) or is registered twice.
    pub fn build(self) -> Result<App> {
        let Some(layer) = self.layer else {
            return Err(Error::new(ErrorKind::Config, "App needs a channel layer"));
        };
        self.config.validate()?;
        let mut routes = HashMap::new();
        for (path, factory) in self.routes {
            if !path.starts_with('/') {
                return Err(Error::new(
                    ErrorKind::Config,
                    "route paths must start with '/'",
                ));
            }
            if routing::is_reserved(&path) {
                return Err(Error::new(
                    ErrorKind::Config,
                    "route path is reserved (/healthz, /metrics, herald assets)",
                ));
            }
            if routes.insert(path, factory).is_some() {
                return Err(Error::new(ErrorKind::Config, "route registered twice"));
            }
        }
        let mut sse_routes = HashMap::new();
        for (path, ws_path) in self.sse_routes {
            let Some(factory) = routes.get(&ws_path).map(Arc::clone) else {
                return Err(Error::new(
                    ErrorKind::Config,
                    "an event-stream route must name a registered WebSocket route",
                ));
            };
            if !path.starts_with('/')
                || routing::is_reserved(&path)
                || routes.contains_key(&path)
                || sse_routes.insert(path, factory).is_some()
            {
                return Err(Error::new(
                    ErrorKind::Config,
                    "event-stream route path is invalid, reserved or registered twice",
                ));
            }
        }
        if self.presence_events.is_some() && self.presence.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "presence events need a presence store",
            ));
        }
        let instance = self
            .instance
            .unwrap_or_else(|| format!("herald-{}", std::process::id()));
        let announcer = self.presence_events;
        let dispatcher = Dispatcher::new();
        let groups = self.config.group_multiplexing.then(|| {
            GroupTable::new(
                Arc::clone(&layer),
                self.config.group_channel_keys,
                Arc::clone(&dispatcher),
            )
        });
        let health = Arc::new(Health::new(
            Arc::clone(&layer),
            self.health_checks,
            self.config.health_interval,
        ));
        let authenticator = self
            .authenticator
            .unwrap_or_else(|| Arc::new(AnonymousAuthenticator));
        let sessions = Sessions::new(Arc::clone(&authenticator), self.config.session_revalidation);
        Ok(App {
            inner: Arc::new(AppInner {
                health,
                groups,
                dispatcher,
                layer,
                sessions,
                authenticator,
                config: self.config,
                routes,
                sse_routes,
                metrics: Metrics::default(),
                metrics_sources: self.metrics_sources,
                caps: Arc::new(ConnectionCaps::default()),
                demo_page: self.demo_page,
                presence: self
                    .presence
                    .map(|(store, ttl)| PresenceRegistry::new(store, ttl, instance, announcer)),
                publish: self.publish,
            }),
        })
    }
}

/// Why a handshake was refused, and the HTTP status it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No route for the path: 404.
    NotFound,
    /// The Origin check failed: 403 (Channels' `WebsocketDenier`).
    Origin,
    /// The consumer closed (or did not accept) in `connect`: 403 "Access denied", as Daphne.
    Denied,
    /// The authenticator failed: 500, as Daphne when the app raises before accept.
    AuthError,
    /// `connect` returned an error: 500.
    ConsumerError,
    /// Per-user or per-IP cap reached: 429.
    ConnectionLimit,
    /// The handshake timeout elapsed: 403, as Daphne's `websocket_connect_timeout`.
    Timeout,
    /// The request is not a valid WebSocket upgrade: 400.
    BadRequest,
    /// Unsupported `Sec-WebSocket-Version`: 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
}

impl Rejection {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Rejection::NotFound => 404,
            Rejection::Origin | Rejection::Denied | Rejection::Timeout => 403,
            Rejection::AuthError | Rejection::ConsumerError => 500,
            Rejection::ConnectionLimit => 429,
            Rejection::BadRequest => 400,
            Rejection::UnsupportedVersion => 426,
        }
    }
}

/// The outcome of [`App::connect`].
#[derive(Debug)]
pub enum Handshake {
    /// The consumer accepted: run the [`Connection`] on a socket.
    Accepted(Box<Connection>),
    /// Refused before accept.
    Rejected(Rejection),
}

impl App {
    /// Starts building an app.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The channel layer.
    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.inner.layer
    }

    /// Whether every dependency (the layer and each [`HealthCheck`]) answered its last check:
    /// what `/readyz` answers. Checks run while [`serve`](crate::serve) runs.
    pub fn readiness(&self) -> Readiness {
        self.inner.health.readiness()
    }

    /// The `/metrics` page: the server's counters followed by every [`MetricsSource`].
    pub fn render_metrics(&self) -> String {
        // About the size of the server's own counters, so the page is written without regrowing.
        const METRICS_PAGE_CAPACITY: usize = 4096;
        let mut out = String::with_capacity(METRICS_PAGE_CAPACITY);
        self.inner.metrics.render(&mut out);
        self.inner.health.render_metrics(&mut out);
        self.inner.sessions.render_metrics(&mut out);
        for source in &self.inner.metrics_sources {
            source.extra_metrics(&mut out);
        }
        out
    }

    /// Runs the socket-independent part of a WebSocket handshake: route, Origin check,
    /// authentication, connection caps, a new channel name, and the consumer's `connect`,
    /// all within `handshake_timeout`.
    ///
    /// The server calls this before answering the upgrade request; tests call it directly
    /// and then [`Connection::run`] the result over in-memory channels.
    ///
    /// # Errors
    /// [`ErrorKind::Layer`] if the layer cannot create a channel name.
    pub async fn connect(&self, request: HandshakeRequest) -> Result<Handshake> {
        // The route, resolved once per handshake on the decoded path (`scope["path"]`, what
        // Channels' `URLRouter` matches). No route can take a reserved path (see `build`).
        let Some(factory) = self.inner.routes.get(request.path()).map(Arc::clone) else {
            Metrics::incr(&self.inner.metrics.handshakes_rejected);
            return Ok(Handshake::Rejected(Rejection::NotFound));
        };
        self.connect_to(factory, request, true).await
    }

    /// [`connect`](Self::connect) with the route resolved; `check_origin` false skips the
    /// Origin check (an event stream without `Origin`, see `sse`).
    pub(crate) async fn connect_to(
        &self,
        factory: Arc<dyn ConsumerFactory>,
        request: HandshakeRequest,
        check_origin: bool,
    ) -> Result<Handshake> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.config.handshake_timeout;
        let metrics = &inner.metrics;
        let reject = |r: Rejection| {
            Metrics::incr(&metrics.handshakes_rejected);
            Ok(Handshake::Rejected(r))
        };

        if check_origin
            && let Some(patterns) = &inner.config.allowed_origins
            && !origin_allowed(request.origin().as_deref(), patterns)
        {
            Metrics::incr(&metrics.origin_rejects);
            debug!(path = request.path(), "origin rejected");
            return reject(Rejection::Origin);
        }

        let identity =
            match tokio::time::timeout_at(deadline, inner.authenticator.authenticate(&request))
                .await
            {
                Err(_) => return reject(Rejection::Timeout),
                Ok(Err(err)) => {
                    Metrics::incr(&metrics.auth_failures);
                    warn!(error = %err, "authenticator failed");
                    return reject(Rejection::AuthError);
                }
                Ok(Ok(identity)) => identity,
            };

        let user_cap = inner
            .config
            .max_connections_per_user
            .zip(identity.as_ref())
            .map(|(max, id)| (id.username.as_str(), max.get()));
        let ip_cap = inner
            .config
            .max_connections_per_ip
            .zip(request.client())
            .map(|(max, addr)| (addr.ip(), max.get()));
        let permit = match inner.caps.acquire(user_cap, ip_cap) {
            Ok(permit) => permit,
            Err(which) => {
                Metrics::incr(&metrics.connection_limit_rejects);
                debug!(cap = ?which, "connection cap reached");
                return reject(Rejection::ConnectionLimit);
            }
        };

        let channel_name = inner.layer.new_channel(DEFAULT_NEW_CHANNEL_PREFIX).await?;
        let anonymous = identity.is_none();
        let mut ctx = Context::new(Arc::clone(inner), channel_name, request, identity);
        if let Err(err) = ctx.attach_channel().await {
            inner.layer.close_channel(ctx.channel_name());
            return Err(err);
        }
        let mut consumer = factory.create(ctx.request());
        // The consumer's connect may have joined groups before failing or timing out; ctx stays
        // outside the timed future so those memberships can be discarded either way.
        let outcome = tokio::time::timeout_at(deadline, consumer.connect(&mut ctx)).await;
        let rejection = match (outcome, ctx.state()) {
            (Ok(Ok(())), State::Open) => None,
            (Ok(Ok(())), _) => {
                if anonymous {
                    Metrics::incr(&metrics.auth_failures);
                }
                Some(Rejection::Denied)
            }
            (Ok(Err(err)), _) => {
                warn!(error = %err, "consumer connect failed");
                Some(Rejection::ConsumerError)
            }
            (Err(_), _) => Some(Rejection::Timeout),
        };
        if let Some(rejection) = rejection {
            ctx.discard_all().await;
            return reject(rejection);
        }
        // The headers are rarely read after connect; packed, they cost one small allocation
        // for the socket's lifetime instead of a header map.
        ctx.pack_request_headers();
        Ok(Handshake::Accepted(Box::new(Connection::new(
            consumer, ctx, permit,
        ))))
    }
}
