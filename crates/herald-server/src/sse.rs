//! Server-Sent Events: a WebSocket route's stream over `EventSource`, for networks whose
//! proxies break WebSockets. The only file that writes `text/event-stream`.
//!
//! `GET /sse/tasks/` runs the same handshake as `/ws/tasks/` ([`App::connect`](crate::App::connect):
//! Origin, authentication, caps, the consumer's `connect`) and then the same
//! [`Connection`](crate::Connection) loop, over a sink and a stream that stand in for the
//! socket's halves:
//! * a text frame becomes one event, its JSON as the `data:` line;
//! * the runtime's keep-alive ping becomes a comment line (`:`), and counts as answered: the
//!   stream is one-way, so a dead reader shows as a write that fails or a pipe that stays full;
//! * a close frame becomes an `event: close` with `{"code": …}` and ends the response, which
//!   makes `EventSource` reconnect after the `retry:` hint (sent first);
//! * the client's frames are the ones its URL implies, handed to the consumer at start: the
//!   `resume` of recover mode (`?recover=1`, positions from `Last-Event-ID`) and a subscribe
//!   per `?task=ID`.
//!
//! In recover mode every event that changes a position carries `id:` = the positions of all the
//! stream's recorded groups as the JSON object of a `resume` frame's `groups`
//! (`{"user_alice": {"epoch": "…", "offset": "…"}, …}`), so the `Last-Event-ID` of an
//! `EventSource` reconnect resumes every group at once, with the WebSocket resume's guarantees.
//!
//! Origin: a browser sends `Origin` on a cross-origin `EventSource` but not on a same-origin
//! one, so a present `Origin` gets the WebSocket check, and without one the page's origin is the
//! request's `Host`, checked against the same patterns; a request that `Sec-Fetch-Site` says came
//! from another site (an `<img>` or `<script>` tag, which could not read the stream anyway) is
//! refused. A cross-origin page whose `Origin` passed may read the answer (CORS with
//! credentials), a refusal's status included.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use herald_core::names::is_valid_group_name;
use herald_core::sync::lock;
use http_body_util::Full;
use hyper::body::{Body as HttpBody, Frame as BodyFrame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tracing::{debug, warn};

use crate::app::{Handshake, Rejection};
use crate::auth::HandshakeRequest;
use crate::consumer::ConsumerFactory;
use crate::metrics::Metrics;
use crate::origin::origin_allowed;
use crate::routing::{Body, ConnInfo, text_response};

/// The `retry:` hint: how long `EventSource` waits before it reconnects after the stream
/// ended (a shutdown, a close) or a dependency was down.
pub const SSE_RETRY: Duration = Duration::from_secs(3);
/// The query parameter that subscribes the stream to a task (`?task=42&task=43`).
pub const SSE_TASK_PARAM: &str = "task";
/// The query parameter that carries positions when there is no `Last-Event-ID` header (a page
/// that opens a new `EventSource` with the id it saw last).
pub const SSE_LAST_EVENT_ID_PARAM: &str = "last_event_id";
/// At most this many `?task=` per stream: each is a frame through the inbound rate limit.
pub const SSE_MAX_TASKS: usize = 50;
/// Bytes of events waiting for hyper before the sink stops taking frames; then the runtime's
/// outbound queue fills and a reader that does not read is closed as a slow consumer.
const PIPE_CAPACITY: usize = 16 * 1024;
/// The positions token is ignored above this size (a header that long is not ours).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The event-stream body of a response.
#[derive(Debug)]
pub(crate) struct SseBody {
    pipe: Arc<Mutex<Pipe>>,
}

/// The bytes between the connection's loop (the sink) and hyper (the body).
#[derive(Debug, Default)]
struct Pipe {
    buf: BytesMut,
    /// The sink wrote its close: the body ends once `buf` is taken.
    ended: bool,
    /// The sink or stream went away without a close: the body fails, hyper drops the
    /// connection instead of ending the response cleanly.
    aborted: bool,
    /// hyper dropped the body: the client is gone.
    gone: bool,
    /// The runtime wrote a ping the stream has not answered yet.
    pong_due: bool,
    body_waker: Option<Waker>,
    writer_waker: Option<Waker>,
    reader_waker: Option<Waker>,
}

impl Pipe {
    fn wake_body(&mut self) {
        if let Some(w) = self.body_waker.take() {
            w.wake();
        }
    }

    fn wake_writer_and_reader(&mut self) {
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        let mut pipe = lock(&self.pipe);
        if !pipe.buf.is_empty() {
            let chunk = pipe.buf.split().freeze();
            if let Some(w) = pipe.writer_waker.take() {
                w.wake();
            }
            return Poll::Ready(Some(Ok(BodyFrame::data(chunk))));
        }
        if pipe.aborted {
            return Poll::Ready(Some(Err(std::io::Error::other("event stream cut"))));
        }
        if pipe.ended {
            return Poll::Ready(None);
        }
        pipe.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let pipe = lock(&self.pipe);
        pipe.ended && pipe.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let mut pipe = lock(&self.pipe);
        pipe.gone = true;
        pipe.wake_writer_and_reader();
    }
}

/// The positions a recover-mode stream has sent, per recorded group: its events' `id:`.
#[derive(Debug, Default)]
struct Positions {
    groups: BTreeMap<String, (String, String)>,
}

impl Positions {
    /// Notes the position a frame carries (a forwarded message's `"herald"` key, or a
    /// `herald.resumed` reply); true if it changed the token.
    fn note(&mut self, text: &str) -> bool {
        const RESUMED: &str = r#"{"type": "herald.resumed", "#;
        const TAG: &str = r#", "herald": {"group": "#;
        let (group, epoch, offset) = if text.starts_with(RESUMED) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
                return false;
            };
            let Some(group) = value.get("group").and_then(|g| g.as_str()) else {
                return false;
            };
            let epoch = value.get("epoch").and_then(|e| e.as_str());
            let offset = value.get("offset").and_then(|o| o.as_str());
            match epoch.zip(offset) {
                Some((e, o)) => (group.to_owned(), e.to_owned(), o.to_owned()),
                // Nothing recorded for the group: no position to keep.
                None => return self.groups.remove(group).is_some(),
            }
        } else if let Some(at) = text.rfind(TAG) {
            // The key is the frame's last: `, "herald": {…}}`.
            let Some(tag) = text[at + 12..].strip_suffix('}') else {
                return false;
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(tag) else {
                return false;
            };
            let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            match (field("group"), field("epoch"), field("offset")) {
                (Some(g), Some(e), Some(o)) => (g, e, o),
                _ => return false,
            }
        } else {
            return false;
        };
        let position = (epoch, offset);
        if self.groups.get(&group) == Some(&position) {
            return false;
        }
        self.groups.insert(group, position);
        true
    }

    /// The token: `{"group": {"epoch": "…", "offset": "…"}, …}`.
    fn token(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .groups
            .iter()
            .map(|(g, (e, o))| (g.clone(), serde_json::json!({"epoch": e, "offset": o})))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// Appends one event: `id:` if given, the text as `data:` lines (JSON has no raw line breaks,
/// but any other text is split as the format requires).
fn write_event(buf: &mut BytesMut, event: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(event) = event {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(event.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    if let Some(id) = id {
        buf.extend_from_slice(b"id: ");
        buf.extend_from_slice(id.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    for line in data.split(['\n', '\r']) {
        buf.extend_from_slice(b"data: ");
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    buf.extend_from_slice(b"\n");
}

/// The runtime's sink: frames in, event-stream bytes into the pipe.
struct SseSink {
    pipe: Arc<Mutex<Pipe>>,
    /// `Some` in recover mode.
    positions: Option<Positions>,
}

impl Sink<WsMessage> for SseSink {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        let mut pipe = lock(&self.pipe);
        if pipe.gone {
            return Poll::Ready(Err(WsError::ConnectionClosed));
        }
        if pipe.buf.len() >= PIPE_CAPACITY {
            pipe.writer_waker = Some(cx.waker().clone());
            pipe.wake_body();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), WsError> {
        let this = self.get_mut();
        let mut pipe = lock(&this.pipe);
        if pipe.gone {
            return Err(WsError::ConnectionClosed);
        }
        match item {
            WsMessage::Text(text) => {
                let id = this.positions.as_mut().and_then(|p| {
                    let changed = p.note(text.as_str());
                    changed.then(|| p.token())
                });
                write_event(&mut pipe.buf, None, id.as_deref(), text.as_str());
            }
            WsMessage::Ping(_) => {
                pipe.buf.extend_from_slice(b":\n\n");
                pipe.pong_due = true;
                if let Some(w) = pipe.reader_waker.take() {
                    w.wake();
                }
            }
            WsMessage::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                write_event(
                    &mut pipe.buf,
                    Some("close"),
                    None,
                    &format!(r#"{{"code": {code}}}"#),
                );
                pipe.ended = true;
                if let Some(w) = pipe.reader_waker.take() {
                    w.wake();
                }
            }
            // No binary events; pongs and raw frames have no meaning here.
            WsMessage::Binary(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        let mut pipe = lock(&self.pipe);
        if pipe.gone {
            return Poll::Ready(Err(WsError::ConnectionClosed));
        }
        pipe.wake_body();
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        let mut pipe = lock(&self.pipe);
        pipe.ended = true;
        pipe.wake_body();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SseSink {
    fn drop(&mut self) {
        let mut pipe = lock(&self.pipe);
        if !pipe.ended {
            // The loop gave up without a close it could write (a full pipe): cut the
            // connection rather than end a response the client would take as complete.
            pipe.aborted = true;
        }
        pipe.wake_body();
    }
}

/// The runtime's stream: the frames the URL implies, then a pong per keep-alive comment,
/// then the end once the response ended or the client left.
struct SseStream {
    pipe: Arc<Mutex<Pipe>>,
    opening: VecDeque<String>,
}

impl Stream for SseStream {
    type Item = Result<WsMessage, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(frame) = this.opening.pop_front() {
            return Poll::Ready(Some(Ok(WsMessage::Text(frame.into()))));
        }
        let mut pipe = lock(&this.pipe);
        if pipe.gone || pipe.ended || pipe.aborted {
            return Poll::Ready(None);
        }
        if pipe.pong_due {
            pipe.pong_due = false;
            return Poll::Ready(Some(Ok(WsMessage::Pong(Default::default()))));
        }
        pipe.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The client frames a stream's URL and headers stand for (the `/ws/tasks/` protocol).
fn opening_frames(request: &HandshakeRequest) -> Result<VecDeque<String>, Rejection> {
    let tasks: Vec<String> = request
        .query_params(SSE_TASK_PARAM)
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    if tasks.len() > SSE_MAX_TASKS {
        return Err(Rejection::BadRequest);
    }
    let mut frames = VecDeque::new();
    if request
        .query_param(crate::consumers::tasks::RECOVER_PARAM)
        .as_deref()
        == Some("1")
    {
        let token = request
            .header("last-event-id")
            .map(str::to_owned)
            .or_else(|| request.query_param(SSE_LAST_EVENT_ID_PARAM))
            .filter(|t| t.len() <= MAX_TOKEN_LEN);
        // An unreadable token counts as none: the resume then starts from now.
        let mut groups = match token.map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
            Some(Ok(serde_json::Value::Object(groups))) => groups,
            _ => serde_json::Map::new(),
        };
        for task in &tasks {
            // A name the resume would refuse would fail the whole resume (the user group
            // included): such a task is left out, as a WebSocket client would get an error.
            let group = herald_messaging::task_group(task);
            if is_valid_group_name(&group) {
                groups.entry(group).or_insert(serde_json::Value::Null);
            }
        }
        frames.push_back(serde_json::json!({"action": "resume", "groups": groups}).to_string());
    } else {
        for task in tasks {
            frames
                .push_back(serde_json::json!({"action": "subscribe", "task_id": task}).to_string());
        }
    }
    Ok(frames)
}

fn event_stream_headers(resp: &mut Response<impl Sized>) {
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx: do not buffer this response even where `proxy_buffering` is on.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

fn retry_line() -> String {
    format!("retry: {}\n\n", SSE_RETRY.as_millis())
}

/// The Origin rule of an event stream (see the module docs): `Ok(true)` when the WebSocket
/// check applies (an `Origin` header), `Ok(false)` when it was done here: a request without
/// `Origin` is same-origin, so the page's origin is this request's `Host`, checked against the
/// same patterns (with either scheme: TLS may end at a proxy).
fn origin_rule(request: &HandshakeRequest, patterns: Option<&[String]>) -> Result<bool, Rejection> {
    if request.origin().is_some() {
        return Ok(true);
    }
    if !matches!(
        request.header("sec-fetch-site"),
        None | Some("same-origin" | "none")
    ) {
        return Err(Rejection::Origin);
    }
    let Some(patterns) = patterns else {
        return Ok(false);
    };
    let host = request.header("host").unwrap_or_default();
    let allowed = ["http", "https"]
        .iter()
        .any(|scheme| origin_allowed(Some(&format!("{scheme}://{host}")), patterns));
    if allowed {
        Ok(false)
    } else {
        Err(Rejection::Origin)
    }
}

/// Answers `GET` on an event-stream route served by `factory`.
pub(crate) async fn event_stream(
    req: Request<Incoming>,
    info: ConnInfo,
    factory: Arc<dyn ConsumerFactory>,
) -> Response<Either> {
    let metrics = &info.app.inner.metrics;
    if req.method() != Method::GET {
        let mut resp = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp.map(Either::Full);
    }
    if let Some(dependency) = info.app.inner.health.refusal_rechecked().await {
        Metrics::incr(&metrics.handshakes_rejected);
        debug!(dependency, "dependency down: event stream told to retry");
        // EventSource gives up on an error status but reconnects after a stream that ends:
        // the 1013 of the WebSocket route.
        let mut resp = Response::new(Full::new(Bytes::from(retry_line())));
        event_stream_headers(&mut resp);
        return resp.map(Either::Full);
    }
    let request = info.handshake_request(&req);
    drop(req);
    let refuse = |rejection: Rejection| {
        Metrics::incr(&metrics.handshakes_rejected);
        crate::upgrade::rejection_response(rejection).map(Either::Full)
    };
    let check_origin = match origin_rule(&request, info.app.config().allowed_origins.as_deref()) {
        Ok(check) => check,
        Err(rejection) => {
            Metrics::incr(&metrics.origin_rejects);
            return refuse(rejection);
        }
    };
    let opening = match opening_frames(&request) {
        Ok(frames) => frames,
        Err(rejection) => return refuse(rejection),
    };
    let recover = request
        .query_param(crate::consumers::tasks::RECOVER_PARAM)
        .as_deref()
        == Some("1");
    // A page on another origin may read the answer (the stream, or a refusal's status, which
    // its client needs to tell a refusal from a server that is down) when its Origin passed
    // the check: a configured match, or no check at all, where the WebSocket route too takes
    // any origin.
    let cors = request
        .origin()
        .filter(|o| {
            info.app
                .config()
                .allowed_origins
                .as_ref()
                .is_none_or(|patterns| origin_allowed(Some(o), patterns))
        })
        .and_then(|o| HeaderValue::from_str(&o).ok());

    let connection = match info.app.connect_to(factory, request, check_origin).await {
        Ok(Handshake::Accepted(connection)) => connection,
        Ok(Handshake::Rejected(rejection)) => {
            debug!(status = rejection.status(), reason = ?rejection, "event stream refused");
            if rejection == Rejection::ConsumerError {
                info.app.inner.health.nudge();
            }
            let mut resp = crate::upgrade::rejection_response(rejection).map(Either::Full);
            allow_origin(&mut resp, cors);
            return resp;
        }
        Err(err) => {
            warn!(error = %err, "event stream handshake failed");
            info.app.inner.health.nudge();
            let mut resp = refuse(Rejection::ConsumerError);
            allow_origin(&mut resp, cors);
            return resp;
        }
    };

    let pipe = Arc::new(Mutex::new(Pipe {
        buf: BytesMut::from(retry_line().as_bytes()),
        ..Pipe::default()
    }));
    let sink = SseSink {
        pipe: Arc::clone(&pipe),
        positions: recover.then(Positions::default),
    };
    let stream = SseStream {
        pipe: Arc::clone(&pipe),
        opening,
    };
    let ConnInfo {
        app,
        shutdown,
        token,
        ..
    } = info;
    tokio::spawn(async move {
        // Held until the stream's task ends, so `serve` waits for it on shutdown.
        let _token = token;
        let metrics = &app.inner.metrics;
        Metrics::incr(&metrics.sse_connections_total);
        Metrics::incr(&metrics.sse_connections_current);
        connection.run(sink, stream, shutdown).await;
        metrics
            .sse_connections_current
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });

    let mut resp = Response::new(Either::Sse(SseBody { pipe }));
    event_stream_headers(&mut resp);
    allow_origin(&mut resp, cors);
    resp
}

/// Lets the page of `origin` read the response with its cookies (CORS).
fn allow_origin(resp: &mut Response<Either>, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        let headers = resp.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The body of any response: a whole one, or an event stream.
#[derive(Debug)]
pub(crate) enum Either {
    Full(Body),
    Sse(SseBody),
}

impl HttpBody for Either {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Either::Full(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Either::Sse(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Either::Full(body) => body.is_end_stream(),
            Either::Sse(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Either::Full(body) => body.size_hint(),
            Either::Sse(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_tagged_frames_and_resumed_replies() {
        let mut p = Positions::default();
        assert!(!p.note(r#"{"type": "pong"}"#));
        assert!(p.note(
            r#"{"type": "user_message", "message": "hi", "herald": {"group": "user_a", "epoch": "5f", "offset": "17-2"}}"#
        ));
        assert_eq!(p.token(), r#"{"user_a":{"epoch":"5f","offset":"17-2"}}"#);
        assert!(p.note(
            r#"{"type": "herald.resumed", "group": "task_1", "recovered": true, "epoch": "5f", "offset": "18-0"}"#
        ));
        assert!(!p.note(
            r#"{"type": "herald.resumed", "group": "task_1", "recovered": true, "epoch": "5f", "offset": "18-0"}"#
        ));
        assert_eq!(
            p.token(),
            r#"{"task_1":{"epoch":"5f","offset":"18-0"},"user_a":{"epoch":"5f","offset":"17-2"}}"#
        );
        // A group with nothing recorded has no position to keep.
        assert!(p.note(
            r#"{"type": "herald.resumed", "group": "task_1", "recovered": false, "epoch": null, "offset": null}"#
        ));
        assert_eq!(p.token(), r#"{"user_a":{"epoch":"5f","offset":"17-2"}}"#);
    }

    #[test]
    fn events_split_line_breaks_into_data_lines() {
        let mut buf = BytesMut::new();
        write_event(&mut buf, None, Some("7"), "{\"a\": 1}");
        write_event(&mut buf, Some("close"), None, "x\ny\r\nz");
        assert_eq!(
            &buf[..],
            b"id: 7\ndata: {\"a\": 1}\n\nevent: close\ndata: x\ndata: y\ndata: \ndata: z\n\n"
        );
    }

    #[test]
    fn without_origin_the_host_is_checked_and_other_sites_are_refused() {
        let patterns = ["app.example.com".to_owned()];
        let patterns = Some(&patterns[..]);
        let with_origin = HandshakeRequest::new("/sse/tasks/")
            .with_header("origin", "https://evil.example")
            .with_header("host", "app.example.com");
        // The WebSocket check, done by App::connect_to.
        assert_eq!(origin_rule(&with_origin, patterns), Ok(true));
        let same_origin = HandshakeRequest::new("/sse/tasks/")
            .with_header("host", "app.example.com:8443")
            .with_header("sec-fetch-site", "same-origin");
        assert_eq!(origin_rule(&same_origin, patterns), Ok(false));
        let other_host = HandshakeRequest::new("/sse/tasks/").with_header("host", "127.0.0.1:8700");
        assert_eq!(origin_rule(&other_host, patterns), Err(Rejection::Origin));
        assert_eq!(
            origin_rule(&other_host, None),
            Ok(false),
            "no check configured"
        );
        let cross_site = HandshakeRequest::new("/sse/tasks/")
            .with_header("host", "app.example.com")
            .with_header("sec-fetch-site", "cross-site");
        assert_eq!(origin_rule(&cross_site, patterns), Err(Rejection::Origin));
        assert_eq!(origin_rule(&cross_site, None), Err(Rejection::Origin));
    }

    #[test]
    fn the_url_becomes_resume_or_subscribe_frames() {
        let plain = HandshakeRequest::new("/sse/tasks/?task=42&task=a%20b&task=");
        assert_eq!(
            Vec::from(opening_frames(&plain).unwrap()),
            [
                r#"{"action":"subscribe","task_id":"42"}"#,
                r#"{"action":"subscribe","task_id":"a b"}"#
            ]
        );
        let token = r#"{"user_a":{"epoch":"5f","offset":"17-2"}}"#;
        let resume = HandshakeRequest::new("/sse/tasks/?recover=1&task=42")
            .with_header("last-event-id", token);
        assert_eq!(
            Vec::from(opening_frames(&resume).unwrap()),
            [
                r#"{"action":"resume","groups":{"user_a":{"epoch":"5f","offset":"17-2"},"task_42":null}}"#
            ]
        );
        let garbage =
            HandshakeRequest::new("/sse/tasks/?recover=1").with_header("last-event-id", "nope");
        assert_eq!(
            Vec::from(opening_frames(&garbage).unwrap()),
            [r#"{"action":"resume","groups":{}}"#]
        );
        let many = format!(
            "/sse/tasks/?{}",
            vec!["task=1"; SSE_MAX_TASKS + 1].join("&")
        );
        assert_eq!(
            opening_frames(&HandshakeRequest::new(&many)).unwrap_err(),
            Rejection::BadRequest
        );
    }
}
