//! Path → target: the WebSocket routes registered on the [`App`](crate::App), plus the
//! built-in `/healthz`, `/readyz` and `/metrics` (Prometheus text exposition); 404 otherwise.
//!
//! Routes match the request path exactly, like a Channels `URLRouter` entry
//! `path("ws/tasks/", ...)` (Channels strips the leading `/`; Herald keeps it in both).

use std::sync::Arc;

use crate::app::AppInner;
use crate::assets::{self, Asset};
use crate::consumer::ConsumerFactory;

/// Liveness endpoint: `200 ok` while the process serves HTTP, whatever its dependencies do
/// (readiness is [`READYZ_PATH`](crate::READYZ_PATH)).
pub const HEALTHZ_PATH: &str = "/healthz";
/// Prometheus text exposition of the server's counters.
pub const METRICS_PATH: &str = "/metrics";

pub(crate) enum Target {
    Health,
    Ready,
    Metrics,
    WebSocket(Arc<dyn ConsumerFactory>),
    Asset(&'static Asset),
    Api,
    NotFound,
}

pub(crate) fn is_reserved(path: &str) -> bool {
    path == HEALTHZ_PATH
        || path == crate::health::READYZ_PATH
        || path == METRICS_PATH
        || assets::is_asset_path(path)
        || crate::publish::is_api_path(path)
}

pub(crate) fn resolve(app: &AppInner, path: &str) -> Target {
    match path {
        HEALTHZ_PATH => Target::Health,
        crate::health::READYZ_PATH => Target::Ready,
        METRICS_PATH => Target::Metrics,
        p if crate::publish::is_api_path(p) => Target::Api,
        _ => match assets::lookup(path, app.demo_page) {
            Some(asset) => Target::Asset(asset),
            None => app
                .routes
                .get(path)
                .map_or(Target::NotFound, |f| Target::WebSocket(Arc::clone(f))),
        },
    }
}
