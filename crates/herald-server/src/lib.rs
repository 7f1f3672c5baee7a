//! Herald's WebSocket server and consumer runtime: what Daphne + Channels' consumers do for a
//! Django app, in Rust, on any [`ChannelLayer`](herald_core::ChannelLayer).
//!
//! You write a [`Consumer`] the way you write an `AsyncWebsocketConsumer` (`connect`,
//! `receive`, `disconnect`, one handler per layer message type), register it on a path of an
//! [`App`], and [`serve`] the app on a bound listener. The guide's `/ws/tasks/` consumer ships
//! as [`TasksConsumer`].
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use herald_core::{ChannelLayer, InMemoryLayer};
//! use herald_messaging as messaging;
//! use herald_server::{App, Identity, ServerConfig, StaticTokenAuthenticator, TasksConsumer};
//!
//! let layer: Arc<dyn ChannelLayer> = Arc::new(InMemoryLayer::new(Default::default()).unwrap());
//! let app = App::builder()
//!     .layer(Arc::clone(&layer))
//!     .authenticator(StaticTokenAuthenticator::new().with_token("t0k", Identity::new("amadmin", "1")))
//!     .config(ServerConfig::default())
//!     .route("/ws/tasks/", TasksConsumer::default)
//!     .build()
//!     .unwrap();
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(herald_server::serve(listener, app, async { stopped.await.ok(); }));
//!
//! let url = format!("ws://{addr}/ws/tasks/?token=t0k");
//! let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
//! // Connected means `user_amadmin` has a member: what `ws_send_message('amadmin', ...)` does.
//! let msg = messaging::user_message("amadmin", "Your report is ready!", None);
//! layer.group_send("user_amadmin", msg).await.unwrap();
//! let frame = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
//! assert!(frame.to_text().unwrap().starts_with(r#"{"type": "user_message", "username": "amadmin""#));
//!
//! ws.close(None).await.unwrap();
//! stop.send(()).unwrap();
//! tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
//! # });
//! ```
//!
//! # Layout
//! * [`config`] — [`ServerConfig`]: Daphne's knobs and defaults (ping 20 s/30 s, 1 MiB
//!   frames, 5 s handshake) plus Herald's limits (queue, rate, caps).
//! * [`error`] — the one opaque [`Error`] with [`ErrorKind`].
//! * `server` — [`serve`]: the accept loop on hyper 1, one task per TCP connection.
//! * `routing` — the HTTP router: `/healthz`, `/readyz`, `/metrics`, the publish API, assets,
//!   404; upgrade requests go on to `upgrade`.
//! * `upgrade` — the WebSocket handshake: the only code touching hyper upgrades and tungstenite's
//!   handshake.
//! * `sse` — the same routes over Server-Sent Events ([`AppBuilder::sse_route`]): the
//!   event-stream body, and the sink/stream pair the connection loop runs on instead of a socket.
//! * `assets` — the browser client [`CLIENT_JS_PATH`] (and its ES module [`CLIENT_MJS_PATH`]) and
//!   the opt-in demo page [`DEMO_PATH`].
//! * `app` — [`App`]/[`AppBuilder`] and [`App::connect`], the socket-independent handshake
//!   (route, origin, auth, caps, `connect`).
//! * [`consumer`] — the [`Consumer`] trait and Channels' type → handler dispatch.
//! * `frame` — [`Frame`] (a client's data frame) and [`SharedText`] (a text payload cheap to
//!   clone).
//! * [`context`] — [`Context`]: accept, send, close, groups, identity, request; the group
//!   cleanup when the socket ends.
//! * [`close`] — every close code, in one table.
//! * [`deflate`] — `permessage-deflate`: the negotiation, compress-once for fan-out frames,
//!   and the stream layer that inflates what the client compressed before tungstenite reads it.
//! * `runtime` — [`Connection::run`]: the per-connection `select!` loop, its steps (read,
//!   dispatch inbox, write, flush, keep-alive) and the close sequence.
//! * [`shutdown`] — the shutdown signal and the drain tracker.
//! * [`metrics`] — atomic counters, Prometheus text, and the [`MetricsSource`] hook.
//! * [`auth`] — [`HandshakeRequest`], [`Identity`], the [`Authenticator`] hook and two real
//!   implementations.
//! * [`origin`] — Channels' `OriginValidator` rules.
//! * `limits` — the inbound token bucket and per-user / per-IP caps.
//! * `presence` — live sockets mirrored into a [`Presence`](herald_core::presence::Presence)
//!   store (see [`AppBuilder::presence`]).
//! * `publish` — the opt-in HTTP publish API ([`PublishAccess`]): JSON in, counts out.
//! * `fanout` — encode-once fan-out: the per-message `LayerEvent` every inbox shares (handler
//!   name, JSON frame).
//! * `health` — readiness: the monitor task that checks the layer and every [`HealthCheck`],
//!   `/readyz`, and the 1013 refusal while a dependency is down.
//! * `groups` — group multiplexing: one layer channel per (process, group), fanned out to the
//!   local sockets' inboxes (see [`ServerConfig::group_multiplexing`]).
//! * `sessions` — session re-validation: open sockets' credentials checked again in batches,
//!   4401 for the ones whose session ended; the `herald.disconnect` counter.
//! * [`consumers`] — ready-made consumers: [`TasksConsumer`] for the guide's `/ws/tasks/`.
//!
//! # Close codes
//! The [`close`] module has the table: 1000, 1001, 1002, 1006 (reported, never sent), 1007,
//! 1008, 1009, 1011, 1013 and Herald's 4008 for a slow consumer and 4401 for a session that
//! ended (or a `herald.disconnect`). Before accept, refusals are
//! HTTP statuses: 403 (origin, consumer closed, handshake timeout — as Daphne), 404, 429
//! (caps), 500 (auth backend or `connect` failed).

pub mod auth;
pub mod close;
pub mod config;
pub mod consumer;
pub mod consumers;
pub mod context;
pub mod deflate;
pub mod error;
pub mod metrics;
pub mod origin;
pub mod shutdown;

mod app;
mod assets;
mod fanout;
mod forwarded;
mod frame;
mod gate;
mod groups;
mod health;
mod limits;
mod presence;
mod publish;
mod routing;
mod runtime;
mod server;
mod sessions;
mod sse;
mod upgrade;

pub use app::{App, AppBuilder, Handshake, Rejection};
pub use assets::{
    CLIENT_JS, CLIENT_JS_PATH, CLIENT_MAX_AGE_SECS, CLIENT_MJS, CLIENT_MJS_PATH, DEMO_FILE_PATH,
    DEMO_JS_PATH, DEMO_PATH,
};
pub use auth::{
    AnonymousAuthenticator, AuthError, Authenticator, Credential, HandshakeRequest, Identity,
    SessionState, StaticTokenAuthenticator, TrustedHeaderAuthenticator,
};
pub use close::{
    CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_INVALID_PAYLOAD, CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR, CLOSE_RATE_LIMITED, CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER, CLOSE_UNAUTHORIZED, TRY_AGAIN_LATER_REASON,
};
pub use config::{RateLimit, ServerConfig};
pub use consumer::{Consumer, ConsumerFactory, Handled, handler_name};
pub use consumers::tasks::TasksConsumer;
pub use context::Context;
pub use error::{Error, ErrorKind, Result};
pub use frame::{Frame, SharedText};
pub use health::{CHANNEL_LAYER, HealthCheck, MAX_REMINDER_INTERVAL, READYZ_PATH, Readiness};
pub use metrics::{DropReason, Metrics, MetricsSource};
pub use presence::{PresenceChange, PresenceEvents};
pub use publish::{
    CONNECTIONS_PATH, DISCONNECT_PATH, MAX_PUBLISH_BODY, PRESENCE_PATH, PUBLISH_PATH,
    PublishAccess, TEST_CONNECTION_PATH,
};
pub use routing::{HEALTHZ_PATH, METRICS_PATH};
pub use runtime::{CloseReason, Closed, Connection};
pub use server::serve;
pub use sse::{SSE_LAST_EVENT_ID_PARAM, SSE_MAX_TASKS, SSE_RETRY, SSE_TASK_PARAM};
/// The WebSocket library used for frames; [`Connection::run`] takes its message type.
pub use tokio_tungstenite::tungstenite;
