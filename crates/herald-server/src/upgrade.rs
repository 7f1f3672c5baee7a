//! The WebSocket handshake, and the only place that touches hyper upgrades: validate the
//! upgrade request, run [`App::connect`](crate::App::connect), answer 101 (or the rejection
//! status), then wrap the upgraded I/O in a `tokio_tungstenite::WebSocketStream` tuned so an
//! idle socket is cheap.
//! `routing` hands it every upgrade request that is not for a built-in endpoint.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::{debug, warn};

use crate::app::{Handshake, Rejection};
use crate::close::{CLOSE_TRY_AGAIN_LATER, TRY_AGAIN_LATER_REASON};
use crate::config::ServerConfig;
use crate::deflate::{InflateStream, Negotiated};
use crate::metrics::Metrics;
use crate::routing::{Body, ConnInfo, text_response};

/// tungstenite buffers writes up to this many bytes before writing to the socket; the runtime
/// flushes after every batch anyway, so this only coalesces small frames.
const WRITE_BUFFER_SIZE: usize = 4 * 1024;

/// The tungstenite settings for a server socket.
fn ws_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        // Allocated per socket up front: small keeps idle sockets cheap; it grows on demand
        // while a large frame is read.
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        // Frames are bounded by the runtime's outbound queue, not by tungstenite.
        .max_write_buffer_size(usize::MAX)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_frame_size)
}

pub(crate) fn rejection_response(rejection: Rejection) -> Response<Body> {
    let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::FORBIDDEN);
    let body = match rejection {
        Rejection::NotFound => "Not Found\n",
        Rejection::Origin | Rejection::Denied | Rejection::Timeout => "Access denied\n",
        Rejection::AuthError | Rejection::ConsumerError => "Internal Server Error\n",
        Rejection::ConnectionLimit => "Too Many Connections\n",
        Rejection::UnsupportedVersion => "Unsupported WebSocket version\n",
        _ => "Bad Request\n",
    };
    let mut resp = text_response(status, body);
    if rejection == Rejection::UnsupportedVersion {
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    resp
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Checks the RFC 6455 handshake fields; returns the client's key.
fn validate_upgrade(req: &Request<Incoming>) -> Result<HeaderValue, Rejection> {
    if req.method() != Method::GET
        || !header_has_token(req, header::UPGRADE, "websocket")
        || !header_has_token(req, header::CONNECTION, "upgrade")
    {
        return Err(Rejection::BadRequest);
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Rejection::UnsupportedVersion);
    }
    match req.headers().get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(key.clone()),
        _ => Err(Rejection::BadRequest),
    }
}

/// Answers an upgrade request: the handshake, then the socket's task.
pub(crate) async fn websocket(mut req: Request<Incoming>, info: ConnInfo) -> Response<Body> {
    let metrics = &info.app.inner.metrics;
    let key = match validate_upgrade(&req) {
        Ok(key) => key,
        Err(rejection) => {
            Metrics::incr(&metrics.handshakes_rejected);
            return rejection_response(rejection);
        }
    };
    if let Some(dependency) = info.app.inner.health.refusal_rechecked().await {
        Metrics::incr(&metrics.handshakes_rejected);
        debug!(dependency, "dependency down: handshake closed with 1013");
        let on_upgrade = hyper::upgrade::on(&mut req);
        drop(req);
        return try_again_later(&key, on_upgrade, info);
    }
    let request = info.handshake_request(&req);
    let deflate = if info.app.config().permessage_deflate {
        Negotiated::from_offers(
            req.headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    } else {
        None
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);

    let mut connection = match info.app.connect(request).await {
        Ok(Handshake::Accepted(connection)) => connection,
        Ok(Handshake::Rejected(rejection)) => {
            debug!(status = rejection.status(), reason = ?rejection, "handshake refused");
            if rejection == Rejection::ConsumerError {
                // Usually the layer (a group_add in connect): have it checked now, so the next
                // handshakes get 1013 instead of the same failure.
                info.app.inner.health.nudge();
            }
            return rejection_response(rejection);
        }
        Err(err) => {
            warn!(error = %err, "handshake failed");
            info.app.inner.health.nudge();
            Metrics::incr(&metrics.handshakes_rejected);
            return rejection_response(Rejection::ConsumerError);
        }
    };

    let mut resp = switching_protocols(&key);
    if let Some(protocol) = connection.subprotocol()
        && let Ok(value) = HeaderValue::from_str(protocol)
    {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(negotiated) = &deflate
        && let Ok(value) = HeaderValue::from_str(&negotiated.response())
    {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        connection.set_deflate(*negotiated);
    }

    let ConnInfo {
        app,
        shutdown,
        token,
        ..
    } = info;
    tokio::spawn(async move {
        // Held until the socket's task ends, so `serve` waits for it on shutdown.
        let _token = token;
        let config = app.config();
        match tokio::time::timeout(config.handshake_timeout, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                let io = TokioIo::new(upgraded);
                if let Some(negotiated) = deflate {
                    let io = InflateStream::server(io, &negotiated, config.max_message_size);
                    let ws =
                        WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(config)))
                            .await;
                    let (sink, stream) = ws.split();
                    connection.run(sink, stream, shutdown).await;
                } else {
                    let ws =
                        WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(config)))
                            .await;
                    let (sink, stream) = ws.split();
                    connection.run(sink, stream, shutdown).await;
                }
            }
            Ok(Err(err)) => {
                debug!(error = %err, "upgrade failed");
                connection.abandon().await;
            }
            Err(_) => {
                debug!("upgrade timed out");
                connection.abandon().await;
            }
        }
    });
    resp
}

/// The `101 Switching Protocols` answer to a valid upgrade with client key `key`.
fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// Accepts the upgrade and closes the socket at once with 1013 "try again later": a browser
/// cannot read the HTTP status of a refused handshake (it only sees an error and 1006), but it
/// does see a close code, which the browser client answers by retrying with backoff.
fn try_again_later(
    key: &HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    info: ConnInfo,
) -> Response<Body> {
    tokio::spawn(async move {
        // Held until the close is done, so `serve` waits for it on shutdown.
        let _token = info.token;
        let config = info.app.config();
        let Ok(Ok(upgraded)) = tokio::time::timeout(config.handshake_timeout, on_upgrade).await
        else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config(config)),
        )
        .await;
        let frame = CloseFrame {
            code: CloseCode::from(CLOSE_TRY_AGAIN_LATER),
            reason: TRY_AGAIN_LATER_REASON.into(),
        };
        // Send the close, then read until the client's close reply ends the stream.
        let close = async {
            ws.close(Some(frame)).await?;
            while ws.next().await.transpose()?.is_some() {}
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
        };
        if let Ok(Err(err)) = tokio::time::timeout(config.close_timeout, close).await {
            debug!(error = %err, "closing a refused socket failed");
        }
    });
    switching_protocols(key)
}
