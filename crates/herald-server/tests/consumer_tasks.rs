//! `TasksConsumer` and the runtime without sockets: `App::connect` + `Connection::run` over
//! in-memory channels (axum's "generic over Sink/Stream" testing style).

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use common::{memory_layer, tasks_builder, within};
use futures_util::{Sink, Stream};
use herald_core::{ChannelLayer, Message};
use herald_server::tungstenite::{Error as WsError, Message as WsMessage};
use herald_server::{
    App, CloseReason, Closed, Connection, Handshake, HandshakeRequest, Rejection, ServerConfig,
    shutdown,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The client's end of an in-memory socket.
struct Peer {
    to_server: mpsc::UnboundedSender<Result<WsMessage, WsError>>,
    from_server: mpsc::UnboundedReceiver<WsMessage>,
    run: JoinHandle<Closed>,
    trigger: shutdown::ShutdownTrigger,
}

struct ChannelSink(mpsc::UnboundedSender<WsMessage>);

impl Sink<WsMessage> for ChannelSink {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), WsError> {
        self.0.send(item).map_err(|_| WsError::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

/// A sink that never has room: a client that does not read at all.
struct StuckSink;

impl Sink<WsMessage> for StuckSink {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Pending
    }
    fn start_send(self: Pin<&mut Self>, _: WsMessage) -> Result<(), WsError> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Pending
    }
}

struct ChannelStream(mpsc::UnboundedReceiver<Result<WsMessage, WsError>>);

impl Stream for ChannelStream {
    type Item = Result<WsMessage, WsError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn app(config: ServerConfig, layer: &Arc<dyn ChannelLayer>) -> App {
    tasks_builder(config)
        .layer(Arc::clone(layer))
        .build()
        .unwrap()
}

/// An accepted connection for `path`, not running yet.
async fn accept(app: &App, path: &str) -> Box<Connection> {
    let Handshake::Accepted(conn) = within(app.connect(HandshakeRequest::new(path)))
        .await
        .unwrap()
    else {
        panic!("handshake refused")
    };
    conn
}

async fn open(app: &App, path: &str) -> Peer {
    let conn = accept(app, path).await;
    let (to_server, server_rx) = mpsc::unbounded_channel();
    let (server_tx, from_server) = mpsc::unbounded_channel();
    let (trigger, signal) = shutdown::channel();
    let run = tokio::spawn(conn.run(ChannelSink(server_tx), ChannelStream(server_rx), signal));
    Peer {
        to_server,
        from_server,
        run,
        trigger,
    }
}

impl Peer {
    fn send(&self, text: &str) {
        self.to_server.send(Ok(WsMessage::text(text))).unwrap();
    }

    async fn recv_text(&mut self) -> String {
        match within(self.from_server.recv()).await.unwrap() {
            WsMessage::Text(t) => t.as_str().to_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    async fn closed(self) -> Closed {
        within(self.run).await.unwrap()
    }
}

#[tokio::test]
async fn anonymous_connect_is_denied_before_accept() {
    let layer = memory_layer();
    let app = app(ServerConfig::default(), &layer);
    let outcome = within(app.connect(HandshakeRequest::new("/ws/tasks/")))
        .await
        .unwrap();
    assert!(matches!(outcome, Handshake::Rejected(Rejection::Denied)));
    assert_eq!(Rejection::Denied.status(), 403);
}

#[tokio::test]
async fn subscribe_forward_and_client_close_over_channels() {
    let layer = memory_layer();
    let app = app(ServerConfig::default(), &layer);
    let mut peer = open(&app, "/ws/tasks/?token=amadmin-token").await;

    peer.send(r#"{"action": "subscribe", "task_id": "42"}"#);
    assert_eq!(
        peer.recv_text().await,
        r#"{"type": "subscribed", "task_id": "42"}"#
    );
    let update = Message::with_type("task.update")
        .with("task_id", "42")
        .with("progress", 75);
    within(layer.group_send("task_42", update)).await.unwrap();
    assert_eq!(
        peer.recv_text().await,
        r#"{"type": "task_update", "task_id": "42", "progress": 75}"#
    );

    peer.to_server.send(Ok(WsMessage::Close(None))).unwrap();
    let closed = peer.closed().await;
    assert_eq!(closed.reason, CloseReason::ClientClosed);
    // A close frame without a status code is reported as None, like Daphne.
    assert_eq!(closed.code, None);
    let report = within(layer.group_send("task_42", Message::with_type("x")))
        .await
        .unwrap();
    assert_eq!(report.members, 0);
}

/// Frames as Python's `json.loads` reads them, task ids as a Python f-string writes them and
/// echoes as `json.dumps` writes them (expected replies: CPython 3.11.7's `json.dumps` of the
/// parsed id, groups its `f"task_{task_id}"`).
#[tokio::test]
async fn numeric_task_ids_and_python_json_over_channels() {
    let layer = memory_layer();
    let app = app(ServerConfig::default(), &layer);
    let mut peer = open(&app, "/ws/tasks/?token=amadmin-token").await;
    let cases = [
        ("42", "42", "task_42"),
        ("1.5", "1.5", "task_1.5"),
        ("1E2", "100.0", "task_100.0"),
        ("-0", "0", "task_0"),
        ("NaN", "NaN", "task_nan"),
        ("-Infinity", "-Infinity", "task_-inf"),
        ("1e400", "Infinity", "task_inf"),
        ("1e-5", "1e-05", "task_1e-05"),
        (
            "123456789012345678901234567890",
            "123456789012345678901234567890",
            "task_123456789012345678901234567890",
        ),
    ];
    for (sent, echoed, group) in cases {
        peer.send(&format!(
            r#"{{"action": "subscribe", "x": ["\ud800", {}], "task_id": {sent}}}"#,
            "[".repeat(150) + &"]".repeat(150)
        ));
        assert_eq!(
            peer.recv_text().await,
            format!(r#"{{"type": "subscribed", "task_id": {echoed}}}"#),
            "for {sent}"
        );
        let report = within(layer.group_send(group, Message::with_type("task.update")))
            .await
            .unwrap();
        assert_eq!(report.members, 1, "{group}");
        assert_eq!(peer.recv_text().await, r#"{"type": "task_update"}"#);
    }
    for (frame, reply) in [
        // 1e16 is "1e+16" in Python: '+' is not allowed in a group name.
        (
            r#"{"action": "subscribe", "task_id": 1e16}"#,
            r#"{"type": "error", "message": "invalid task_id"}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": true}"#,
            r#"{"type": "error", "message": "task_id must be a string or a number"}"#,
        ),
        (r#"{"action": "ping", "n": NaN}"#, r#"{"type": "pong"}"#),
        (
            r#"{"action": "ping", "x": [1,]}"#,
            r#"{"type": "error", "message": "invalid JSON"}"#,
        ),
    ] {
        peer.send(frame);
        assert_eq!(peer.recv_text().await, reply, "for {frame}");
    }
    let deep = format!(
        r#"{{"action": "ping", "x": {}}}"#,
        "[".repeat(herald_core::pyjson::MAX_DEPTH) + &"]".repeat(herald_core::pyjson::MAX_DEPTH)
    );
    peer.send(&deep);
    assert_eq!(
        peer.recv_text().await,
        r#"{"type": "error", "message": "JSON nested too deeply"}"#
    );
    peer.send(r#"{"action": "unsubscribe", "task_id": 42}"#);
    assert_eq!(
        peer.recv_text().await,
        r#"{"type": "unsubscribed", "task_id": 42}"#
    );
    let report = within(layer.group_send("task_42", Message::with_type("x")))
        .await
        .unwrap();
    assert_eq!(report.members, 0);
}

#[tokio::test]
async fn stream_end_is_an_abnormal_close_1006() {
    let layer = memory_layer();
    let app = app(ServerConfig::default(), &layer);
    let peer = open(&app, "/ws/tasks/?token=bob-token").await;
    drop(peer.to_server);
    let closed = within(peer.run).await.unwrap();
    assert_eq!(closed.reason, CloseReason::Dropped);
    assert_eq!(closed.code, Some(1006));
    drop(peer.trigger);
}

#[tokio::test]
async fn shutdown_signal_closes_with_1001() {
    let layer = memory_layer();
    let app = app(ServerConfig::default(), &layer);
    let mut peer = open(&app, "/ws/tasks/?token=amadmin-token").await;
    peer.trigger.trigger();
    match within(peer.from_server.recv()).await.unwrap() {
        WsMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close, got {other:?}"),
    }
    // The client answers the close handshake.
    peer.to_server.send(Ok(WsMessage::Close(None))).unwrap();
    let closed = peer.closed().await;
    assert_eq!(closed.reason, CloseReason::Shutdown);
    assert_eq!(closed.code, Some(1001));
}

#[tokio::test]
async fn stuck_sink_is_closed_as_slow_consumer_within_close_timeout() {
    let layer = memory_layer();
    let config = ServerConfig::default()
        .with_max_outbound_frames(std::num::NonZeroUsize::new(4).unwrap())
        .with_close_timeout(Duration::from_millis(100));
    let app = app(config, &layer);
    let conn = accept(&app, "/ws/tasks/?token=amadmin-token").await;
    let (_to_server, server_rx) = mpsc::unbounded_channel();
    let (_trigger, signal) = shutdown::channel();
    let run = tokio::spawn(conn.run(StuckSink, ChannelStream(server_rx), signal));
    for i in 0..5 {
        let msg = Message::with_type("user.message").with("n", i);
        within(layer.group_send("user_amadmin", msg)).await.unwrap();
    }
    let closed = within(run).await.unwrap();
    assert_eq!(closed.reason, CloseReason::SlowConsumer);
    assert_eq!(closed.code, Some(4008));
    assert_eq!(app.metrics().slow_consumer_closes(), 1);
}

#[tokio::test]
async fn one_group_send_is_encoded_once_and_shared_by_every_socket() {
    // Multiplexed (default): one layer member for both sockets; off: one per socket.
    for (multiplexing, members) in [(true, 1), (false, 2)] {
        one_group_send_shared(multiplexing, members).await;
    }
}

async fn one_group_send_shared(multiplexing: bool, members: usize) {
    let layer = memory_layer();
    let app = app(
        ServerConfig::default().with_group_multiplexing(multiplexing),
        &layer,
    );
    let mut a = open(&app, "/ws/tasks/?token=amadmin-token").await;
    let mut b = open(&app, "/ws/tasks/?token=amadmin-token").await;
    let msg = Message::with_type("user.message").with("message", "shared");
    let report = within(layer.group_send("user_amadmin", msg)).await.unwrap();
    assert_eq!(report.members, members);
    let (WsMessage::Text(ta), WsMessage::Text(tb)) = (
        within(a.from_server.recv()).await.unwrap(),
        within(b.from_server.recv()).await.unwrap(),
    ) else {
        panic!("expected text frames")
    };
    assert_eq!(
        ta.as_str(),
        r#"{"type": "user_message", "message": "shared"}"#
    );
    // Same allocation: the JSON was encoded once for both sockets.
    assert_eq!(ta.as_str().as_ptr(), tb.as_str().as_ptr());
}

/// An idle socket costs mostly this future (docs/architecture.md), so it must stay small: when
/// `run` was an `async fn` around `run_inner`, both kept a copy of the connection and the
/// release build's future was 3.2 KiB instead of 1.1 KiB.
#[tokio::test]
async fn an_idle_connection_future_stays_small() {
    let layer = memory_layer();
    let app = app(ServerConfig::default(), &layer);
    let conn = accept(&app, "/ws/tasks/?token=bob-token").await;
    let (_to_server, server_rx) = mpsc::unbounded_channel();
    let (server_tx, _from_server) = mpsc::unbounded_channel();
    let (_trigger, signal) = shutdown::channel();
    let run = conn.run(ChannelSink(server_tx), ChannelStream(server_rx), signal);
    let size = std::mem::size_of_val(&run);
    assert!(size <= 1536, "connection future is {size} bytes");
}
