//! The HTTP publish API, for backends that are not Python: JSON in, counts out.
//!
//! Off unless [`AppBuilder::publish`](crate::AppBuilder::publish) enables it.
//!
//! | request | body / query | answer |
//! |---|---|---|
//! | `POST /api/publish` | `{"user": "u"}` or `{"users": ["a","b"]}` or `{"group": "task_1"}` or `{"groups": [...]}` or `{"online": true}`, plus `"message": {"type": "user.message", ...}` | `{"ok": true, "groups": n, "members": m, "over_capacity": k}` |
//! | `GET /api/presence?user=u` | | `{"user": "u", "online": true, "connections": 2}` |
//! | `GET /api/presence` | | `{"users": ["a", "b"], "count": 2}` |
//! | `POST /api/disconnect` | a target as for publish (`{"user": "u"}`, ...), plus `"code": 4401` (optional: 1000 or 3000–4999, default 4401) | `{"ok": true, "groups": n, "members": m}`: a `herald.disconnect` message to each group, which closes their sockets on every herald instance |
//! | `GET /api/connections?user=u` | | `{"user": "u", "count": 1, "connections": [{"connection": "specific…", "instance": "web-1:8700", "address": "10.0.0.7:51234", "since": 1764500000.5, "groups": ["user_u"]}]}` |
//! | `GET /api/connections` | | `{"sockets": 3, "users": 2, "instances": [{"instance": "web-1:8700", "sockets": 3, "users": 2}]}` |
//! | `POST /api/test-connection` | `{"user": "u", "wait": 3}` (seconds, 1–30, default 3) | `{"user": "u", "sockets": 1}`: sockets that acknowledged the guide's test notification |
//!
//! Users map to their `user_{username}` groups, exactly like the guide's Python helpers; the
//! message is sent as given (it must be a JSON object with a string `"type"`). `online` sends to
//! every user the presence store lists. Every request needs `Authorization: Bearer <token>`
//! (401 otherwise), or, for the loopback-only demo mode, a loopback client address.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value as Json, json};
use subtle::ConstantTimeEq;
use tracing::{debug, warn};

use herald_core::Message;
use herald_core::names::require_valid_group_name;
use herald_messaging::{DEFAULT_DISCONNECT_CODE, Messenger, is_disconnect_code, user_group};

use crate::app::AppInner;

/// `POST` a message here.
pub const PUBLISH_PATH: &str = "/api/publish";
/// `GET` presence here.
pub const PRESENCE_PATH: &str = "/api/presence";
/// `GET` the fleet's connections here (from the presence store, every instance's).
pub const CONNECTIONS_PATH: &str = "/api/connections";
/// `POST {"user": …}` here: the guide's test notification, counting the sockets that got it.
pub const TEST_CONNECTION_PATH: &str = "/api/test-connection";
/// `POST {"user": …, "code": 4401}` here: close the user's sockets on every instance.
pub const DISCONNECT_PATH: &str = "/api/disconnect";
/// Largest accepted request body.
pub const MAX_PUBLISH_BODY: usize = 1024 * 1024;

/// Who may call the publish API.
#[derive(Clone)]
#[non_exhaustive]
pub enum PublishAccess {
    /// Requests must carry `Authorization: Bearer <token>`.
    Bearer(String),
    /// Any client on a loopback address (for `herald serve --demo`, which only binds loopback).
    LoopbackOnly,
}

impl std::fmt::Debug for PublishAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        match self {
            PublishAccess::Bearer(_) => f.write_str("Bearer(***)"),
            PublishAccess::LoopbackOnly => f.write_str("LoopbackOnly"),
        }
    }
}

pub(crate) fn is_api_path(path: &str) -> bool {
    path == PUBLISH_PATH
        || path == PRESENCE_PATH
        || path == TEST_CONNECTION_PATH
        || path == DISCONNECT_PATH
        || path == CONNECTIONS_PATH
}

type Body = Full<Bytes>;

fn json_response(status: StatusCode, value: &Json) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({"ok": false, "error": message}))
}

fn allowed(access: &PublishAccess, req: &Request<Incoming>, peer: SocketAddr) -> bool {
    match access {
        PublishAccess::LoopbackOnly => peer.ip().is_loopback(),
        PublishAccess::Bearer(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes()))),
    }
}

/// Serves one API request (the path is already known to be an API path).
pub(crate) async fn handle(
    app: &Arc<AppInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(access) = &app.publish else {
        return error(StatusCode::NOT_FOUND, "the publish API is not enabled");
    };
    if !allowed(access, &req, peer) {
        debug!(%peer, "publish api: unauthorized");
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, PUBLISH_PATH) => publish(app, req).await,
        (&Method::GET, PRESENCE_PATH) => presence(app, req.uri().query()).await,
        (&Method::POST, TEST_CONNECTION_PATH) => test_connection(app, req).await,
        (&Method::POST, DISCONNECT_PATH) => disconnect(app, req).await,
        (&Method::GET, CONNECTIONS_PATH) => connections(app, req.uri().query()).await,
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /api/publish, GET /api/presence, GET /api/connections, POST \
             /api/test-connection or POST /api/disconnect",
        ),
    }
}

/// The request body as a JSON object, or the error response.
async fn json_body(
    req: Request<Incoming>,
) -> Result<serde_json::Map<String, Json>, Response<Body>> {
    let body = match Limited::new(req.into_body(), MAX_PUBLISH_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over 1 MiB or unreadable",
            ));
        }
    };
    let Ok(Json::Object(body)) = serde_json::from_slice::<Json>(&body) else {
        return Err(error(StatusCode::BAD_REQUEST, "body must be a JSON object"));
    };
    Ok(body)
}

/// How long `test-connection` waits for the sockets' answers when the body names no `wait`
/// (seconds, the CLI's default too).
const DEFAULT_TEST_WAIT_SECS: u64 = 3;
/// The longest `wait` a caller may ask for (seconds): the request holds a connection and a
/// layer channel that long.
const MAX_TEST_WAIT_SECS: u64 = 30;

/// The guide's `test_websocket_connection`, run inside this server: works without Redis.
async fn test_connection(app: &Arc<AppInner>, req: Request<Incoming>) -> Response<Body> {
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(user) = body.get("user").and_then(Json::as_str) else {
        return error(StatusCode::BAD_REQUEST, "\"user\" must be a string");
    };
    let wait = match body.get("wait").map(Json::as_u64) {
        None => DEFAULT_TEST_WAIT_SECS,
        Some(Some(s @ 1..=MAX_TEST_WAIT_SECS)) => s,
        Some(_) => return error(StatusCode::BAD_REQUEST, "\"wait\" must be 1 to 30 seconds"),
    };
    if let Err(e) = require_valid_group_name(&user_group(user)) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let mut messenger = Messenger::new(Arc::clone(&app.layer));
    if let Some(presence) = &app.presence {
        // Which sockets the user has: the probe goes to each of them.
        messenger = messenger.with_presence(Arc::clone(presence.store()));
    }
    match messenger
        .test_connection(user, std::time::Duration::from_secs(wait))
        .await
    {
        Ok(n) => json_response(StatusCode::OK, &json!({"user": user, "sockets": n})),
        Err(err) => {
            warn!(error = %err, "publish api: test connection failed");
            error(
                StatusCode::BAD_GATEWAY,
                &format!("test connection failed: {err}"),
            )
        }
    }
}

/// A `herald.disconnect` to the targets' groups: the same control message Python can
/// `group_send`, so every herald instance closes its own sockets of those groups.
async fn disconnect(app: &Arc<AppInner>, req: Request<Incoming>) -> Response<Body> {
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let code = match body.get("code") {
        None => DEFAULT_DISCONNECT_CODE,
        Some(c) => match c.as_u64().and_then(|c| u16::try_from(c).ok()) {
            Some(c) if is_disconnect_code(c) => c,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "\"code\" must be 1000 or 3000-4999",
                );
            }
        },
    };
    let groups = match targets(app, &body).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    send_to_groups(app, &groups, &herald_messaging::disconnect(code)).await
}

async fn publish(app: &Arc<AppInner>, req: Request<Incoming>) -> Response<Body> {
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(message) = body.get("message").and_then(Message::from_json) else {
        return error(StatusCode::BAD_REQUEST, "\"message\" must be a JSON object");
    };
    if message.msg_type().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "\"message\" needs a string \"type\"",
        );
    }
    let groups = match targets(app, &body).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    send_to_groups(app, &groups, &message).await
}

/// `group_send` of `message` to each group; the publish answer with the counts.
async fn send_to_groups(
    app: &Arc<AppInner>,
    groups: &[String],
    message: &Message,
) -> Response<Body> {
    let (mut members, mut over) = (0, 0);
    for group in groups {
        match app.layer.group_send(group, message.clone()).await {
            Ok(r) => {
                members += r.members;
                over += r.over_capacity;
            }
            Err(err) => {
                warn!(error = %err, group, "publish api: group_send failed");
                return error(
                    StatusCode::BAD_GATEWAY,
                    &format!("group_send failed: {err}"),
                );
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "groups": groups.len(), "members": members, "over_capacity": over}),
    )
}

/// The groups a publish body names; a bad name is a 400 before anything is sent.
async fn targets(
    app: &Arc<AppInner>,
    body: &serde_json::Map<String, Json>,
) -> Result<Vec<String>, Response<Body>> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    let mut groups = Vec::new();
    if let Some(user) = body.get("user") {
        groups.push(user_group(
            user.as_str()
                .ok_or_else(|| bad("\"user\" must be a string"))?,
        ));
    }
    if let Some(users) = body.get("users") {
        let users = users
            .as_array()
            .ok_or_else(|| bad("\"users\" must be a list of strings"))?;
        for u in users {
            groups.push(user_group(
                u.as_str()
                    .ok_or_else(|| bad("\"users\" must be a list of strings"))?,
            ));
        }
    }
    if let Some(list) = body.get("groups") {
        let list = list
            .as_array()
            .ok_or_else(|| bad("\"groups\" must be a list of strings"))?;
        for g in list {
            let g = g
                .as_str()
                .ok_or_else(|| bad("\"groups\" must be a list of strings"))?;
            groups.push(g.to_owned());
        }
    }
    if let Some(group) = body.get("group") {
        groups.push(
            group
                .as_str()
                .ok_or_else(|| bad("\"group\" must be a string"))?
                .to_owned(),
        );
    }
    if body.get("online").and_then(Json::as_bool) == Some(true) {
        let Some(registry) = &app.presence else {
            return Err(error(
                StatusCode::NOT_IMPLEMENTED,
                "presence is not enabled",
            ));
        };
        let users = registry.store().online_users().await.map_err(|e| {
            error(
                StatusCode::BAD_GATEWAY,
                &format!("presence lookup failed: {e}"),
            )
        })?;
        groups.extend(users.iter().map(|u| user_group(u)));
    } else if groups.is_empty() {
        return Err(bad(
            "name a target: \"user\", \"users\", \"group\", \"groups\" or \"online\": true",
        ));
    }
    for g in &groups {
        require_valid_group_name(g).map_err(|e| bad(&e.to_string()))?;
    }
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// The `user` query parameter, decoded.
fn user_param(query: Option<&str>) -> Option<String> {
    query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "user")
            .map(|(_, v)| percent_decode(v))
    })
}

/// `GET /api/connections[?user=U]`: `herald connections`' report, fleet-wide.
async fn connections(app: &Arc<AppInner>, query: Option<&str>) -> Response<Body> {
    let Some(registry) = &app.presence else {
        return error(StatusCode::NOT_IMPLEMENTED, "presence is not enabled");
    };
    let user = user_param(query);
    match herald_core::presence::connections_report(&**registry.store(), user.as_deref()).await {
        Ok(report) => json_response(StatusCode::OK, &report),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("presence lookup failed: {e}"),
        ),
    }
}

async fn presence(app: &Arc<AppInner>, query: Option<&str>) -> Response<Body> {
    let Some(registry) = &app.presence else {
        return error(StatusCode::NOT_IMPLEMENTED, "presence is not enabled");
    };
    let user = user_param(query);
    let store = registry.store();
    match user {
        Some(user) => match store.connections(&user).await {
            Ok(n) => json_response(
                StatusCode::OK,
                &json!({"user": user, "online": n > 0, "connections": n}),
            ),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                &format!("presence lookup failed: {e}"),
            ),
        },
        None => match store.online_users().await {
            Ok(users) => json_response(
                StatusCode::OK,
                &json!({"count": users.len(), "users": users}),
            ),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                &format!("presence lookup failed: {e}"),
            ),
        },
    }
}

/// `%XX` and `+` decoding for one query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b+c"), "a@b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn token_is_never_printed() {
        let s = format!("{:?}", PublishAccess::Bearer("s3cret".into()));
        assert!(!s.contains("s3cret"));
    }
}
