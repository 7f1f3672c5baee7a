//! The HTTP router: what each request on a connection gets. The built-in `/healthz`,
//! `/readyz` and `/metrics` (Prometheus text exposition), the opt-in publish API, the static
//! assets, `426` for a plain GET of a WebSocket route, 404 otherwise — and every other upgrade
//! request goes to `upgrade`, the WebSocket handshake.
//!
//! The WebSocket route itself is resolved once per upgrade, by [`App::connect`](crate::App::connect),
//! on the percent-decoded path (`scope["path"]`, what a Channels `URLRouter` matches). Routes
//! match the path exactly, like a `URLRouter` entry `path("ws/tasks/", ...)` (Channels strips
//! the leading `/`; Herald keeps it in both).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::app::{App, AppInner};
use crate::assets::{self, Asset};
use crate::auth::HandshakeRequest;
use crate::consumer::ConsumerFactory;
use crate::health::READYZ_PATH;
use crate::shutdown::{ShutdownSignal, TaskToken};
use crate::sse::Either;

/// Liveness endpoint: `200 ok` while the process serves HTTP, whatever its dependencies do
/// (readiness is [`READYZ_PATH`](crate::READYZ_PATH)).
pub const HEALTHZ_PATH: &str = "/healthz";
/// Prometheus text exposition of the server's counters.
pub const METRICS_PATH: &str = "/metrics";

/// The body of every response the server writes.
pub(crate) type Body = Full<Bytes>;

/// Everything one HTTP request needs from its connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) app: App,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) shutdown: ShutdownSignal,
    pub(crate) token: Option<TaskToken>,
}

impl ConnInfo {
    /// What the handshake of `req` (a WebSocket upgrade or an event-stream request) passes
    /// to the consumer: path and query, headers, the client's address (after the trusted
    /// proxies' `X-Forwarded-For`) and the server's.
    pub(crate) fn handshake_request<B>(&self, req: &Request<B>) -> HandshakeRequest {
        let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        HandshakeRequest::new(path_and_query)
            .with_headers(req.headers().clone())
            .with_client(crate::forwarded::client_addr(
                req.headers(),
                self.peer,
                &self.app.config().trusted_proxies,
            ))
            .with_server(self.local)
    }
}

/// The endpoints that answer any request on their path, an upgrade request included.
enum Endpoint {
    Health,
    Ready,
    Metrics,
}

/// What a plain (non-upgrade) request to another path gets.
enum Target {
    Asset(&'static Asset),
    /// An event-stream route, served by this consumer.
    Sse(Arc<dyn ConsumerFactory>),
    Api,
    /// A WebSocket route asked for without an upgrade: 426.
    WebSocketOnly,
    NotFound,
}

/// True for the paths no WebSocket route may take.
pub(crate) fn is_reserved(path: &str) -> bool {
    endpoint(path).is_some() || assets::is_asset_path(path) || crate::publish::is_api_path(path)
}

fn endpoint(path: &str) -> Option<Endpoint> {
    match path {
        HEALTHZ_PATH => Some(Endpoint::Health),
        READYZ_PATH => Some(Endpoint::Ready),
        METRICS_PATH => Some(Endpoint::Metrics),
        _ => None,
    }
}

fn resolve(app: &AppInner, path: &str) -> Target {
    if crate::publish::is_api_path(path) {
        return Target::Api;
    }
    if let Some(factory) = app.sse_routes.get(path) {
        return Target::Sse(Arc::clone(factory));
    }
    match assets::lookup(path, app.demo_page) {
        Some(asset) => Target::Asset(asset),
        None if app.routes.contains_key(path) => Target::WebSocketOnly,
        None => Target::NotFound,
    }
}

fn is_upgrade_request(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

/// A `text/plain` response.
pub(crate) fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn endpoint_response(endpoint: Endpoint, app: &App) -> Response<Body> {
    match endpoint {
        Endpoint::Health => text_response(StatusCode::OK, "ok\n"),
        Endpoint::Ready => {
            let readiness = app.readiness();
            let status = if readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text_response(status, format!("{readiness}\n"))
        }
        Endpoint::Metrics => {
            let mut resp = Response::new(Full::new(Bytes::from(app.render_metrics())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
    }
}

/// The hyper service of every connection.
pub(crate) async fn handle_request(
    req: Request<Incoming>,
    info: ConnInfo,
) -> Result<Response<Either>, Infallible> {
    let path = req.uri().path();
    let resp = if let Some(endpoint) = endpoint(path) {
        endpoint_response(endpoint, &info.app)
    } else if is_upgrade_request(&req) {
        crate::upgrade::websocket(req, info).await
    } else {
        match resolve(&info.app.inner, path) {
            Target::Sse(factory) => {
                return Ok(crate::sse::event_stream(req, info, factory).await);
            }
            Target::Asset(asset) => assets::response(asset, &req),
            Target::Api => crate::publish::handle(&info.app.inner, req, info.peer).await,
            Target::WebSocketOnly => text_response(
                StatusCode::UPGRADE_REQUIRED,
                "This path only serves WebSocket connections\n",
            ),
            Target::NotFound => text_response(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    };
    Ok(resp.map(Either::Full))
}
