//! Group multiplexing: one layer channel per (process, group) stands for every local
//! socket in the group, and group messages are fanned out locally. Real sockets on
//! `InMemoryLayer`; the slow-member case runs the runtime over in-memory channels.

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures_util::StreamExt as _;
use herald_core::Message;
use herald_core::presence::{InMemoryPresence, Presence};
use herald_messaging::{Messenger, PROBE_TYPE};
use herald_server::tungstenite::Message as WsMessage;
use herald_server::{
    App, CloseReason, Consumer, Context, Handled, Handshake, HandshakeRequest, ServerConfig,
    shutdown,
};
use herald_test_support::eventually;
use herald_test_support::ws::{Ws, close_code, recv_text, send_text, ws_connect};
use tokio::sync::{Semaphore, mpsc};

const GROUP_MSG: &str = r#"{"type": "user_message", "message": "hi"}"#;

fn hi() -> Message {
    Message::with_type("user.message").with("message", "hi")
}

async fn sockets(server: &TestServer, n: usize, query: &str) -> Vec<Ws> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut ws = ws_connect(&server.url(&format!("/ws/tasks/?{query}"))).await;
        sync(&mut ws).await;
        out.push(ws);
    }
    out
}

async fn subscribe(ws: &mut Ws, task: &str) {
    send_text(
        ws,
        &format!(r#"{{"action": "subscribe", "task_id": "{task}"}}"#),
    )
    .await;
    assert_eq!(
        recv_text(ws).await,
        format!(r#"{{"type": "subscribed", "task_id": "{task}"}}"#)
    );
}

#[tokio::test]
async fn sockets_of_a_group_share_one_layer_member_and_each_get_a_group_send_once() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut all = sockets(&server, 6, "token=amadmin-token").await;
    assert_eq!(group_members(&server.layer, "user_amadmin").await, 1);
    for _ in 0..3 {
        let report = within(server.layer.group_send("user_amadmin", hi()))
            .await
            .unwrap();
        assert_eq!(report.members, 1);
    }
    for ws in &mut all {
        for _ in 0..3 {
            assert_eq!(recv_text(ws).await, GROUP_MSG);
        }
        // Nothing more: the pong comes next, not a duplicate.
        sync(ws).await;
    }
}

#[tokio::test]
async fn without_multiplexing_every_socket_is_a_layer_member() {
    let server = TestServer::tasks(ServerConfig::default().with_group_multiplexing(false)).await;
    let mut all = sockets(&server, 3, "token=amadmin-token").await;
    let report = within(server.layer.group_send("user_amadmin", hi()))
        .await
        .unwrap();
    assert_eq!(report.members, 3);
    for ws in &mut all {
        assert_eq!(recv_text(ws).await, GROUP_MSG);
        sync(ws).await;
    }
}

#[tokio::test]
async fn discarding_one_socket_leaves_the_others_in_the_group() {
    for multiplexing in [true, false] {
        let server =
            TestServer::tasks(ServerConfig::default().with_group_multiplexing(multiplexing)).await;
        let mut all = sockets(&server, 3, "token=amadmin-token").await;
        for ws in &mut all {
            subscribe(ws, "t1").await;
        }
        send_text(&mut all[0], r#"{"action": "unsubscribe", "task_id": "t1"}"#).await;
        assert_eq!(
            recv_text(&mut all[0]).await,
            r#"{"type": "unsubscribed", "task_id": "t1"}"#
        );
        let expected = if multiplexing { 1 } else { 2 };
        assert_eq!(group_members(&server.layer, "task_t1").await, expected);
        within(
            server
                .layer
                .group_send("task_t1", Message::with_type("task.update").with("n", 1)),
        )
        .await
        .unwrap();
        for ws in &mut all[1..] {
            assert_eq!(recv_text(ws).await, r#"{"type": "task_update", "n": 1}"#);
        }
        // The unsubscribed socket got nothing (its next frame is the pong).
        sync(&mut all[0]).await;
    }
}

#[tokio::test]
async fn last_local_member_leaving_removes_the_membership() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut all = sockets(&server, 3, "token=amadmin-token").await;
    for ws in &mut all {
        subscribe(ws, "t2").await;
    }
    assert_eq!(group_members(&server.layer, "task_t2").await, 1);
    for ws in &mut all {
        send_text(ws, r#"{"action": "unsubscribe", "task_id": "t2"}"#).await;
        recv_text(ws).await;
    }
    assert_eq!(group_members(&server.layer, "task_t2").await, 0);
    // Closing the sockets removes the user group too (disconnect cleanup).
    assert_eq!(group_members(&server.layer, "user_amadmin").await, 1);
    for mut ws in all {
        within(ws.close(None)).await.unwrap();
        close_code(&mut ws).await;
    }
    let layer = Arc::clone(&server.layer);
    eventually(
        STEP,
        "group_members(&layer, \"user_amadmin\").await == 0",
        || {
            let layer = Arc::clone(&layer);
            async move { group_members(&layer, "user_amadmin").await == 0 }
        },
    )
    .await;
    // Rejoining after the last leave links the group again.
    let mut again = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut again).await;
    within(server.layer.group_send("user_amadmin", hi()))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut again).await, GROUP_MSG);
}

/// A tasks server whose sockets are recorded in an in-memory presence store.
async fn with_presence(multiplexing: bool) -> (TestServer, Arc<InMemoryPresence>) {
    let presence = Arc::new(InMemoryPresence::new());
    let store: Arc<dyn Presence> = presence.clone();
    let builder = tasks_builder(ServerConfig::default().with_group_multiplexing(multiplexing))
        .presence(store, Duration::from_secs(30));
    (TestServer::start(builder, memory_layer()).await, presence)
}

/// The channels of `user`'s live sockets, once `n` are recorded.
async fn socket_channels(presence: &InMemoryPresence, user: &str, n: usize) -> Vec<String> {
    eventually(
        STEP,
        "presence.connections(user).await.unwrap() == n",
        || async { presence.connections(user).await.unwrap() == n },
    )
    .await;
    presence.connection_names(user).await.unwrap()
}

#[tokio::test]
async fn direct_sends_and_probes_are_per_socket_and_a_herald_ack_key_is_just_data() {
    for multiplexing in [true, false] {
        let (server, presence) = with_presence(multiplexing).await;
        let mut all = sockets(&server, 2, "token=amadmin-token").await;
        let channels = socket_channels(&presence, "amadmin", 2).await;
        // A probe to each socket's own channel: each answers with its channel, and sends the
        // browser nothing.
        let reply_to = within(server.layer.new_channel("probe")).await.unwrap();
        for channel in &channels {
            let probe = Message::with_type(PROBE_TYPE).with("reply_to", reply_to.as_str());
            within(server.layer.send(channel, probe)).await.unwrap();
        }
        let mut acked = Vec::new();
        for _ in 0..2 {
            let ack = within(server.layer.receive(&reply_to)).await.unwrap();
            assert_eq!(ack.msg_type(), Some("herald.ack"));
            acked.push(ack.get("channel").unwrap().as_str().unwrap().to_owned());
        }
        acked.sort();
        assert_eq!(acked, channels, "one ack per socket");
        // An application message that happens to carry `herald_ack` keeps it, and nothing is
        // acknowledged to the channel it names.
        let message = hi().with("herald_ack", reply_to.as_str());
        within(server.layer.group_send("user_amadmin", message))
            .await
            .unwrap();
        for ws in &mut all {
            let frame: serde_json::Value = serde_json::from_str(&recv_text(ws).await).unwrap();
            assert_eq!(frame["herald_ack"], reply_to.as_str(), "{frame}");
        }
        // A direct send to one socket's own channel reaches that socket only.
        let direct = Message::with_type("user.message").with("message", "direct");
        within(server.layer.send(&channels[0], direct))
            .await
            .unwrap();
        let mut got = 0;
        for ws in &mut all {
            send_text(ws, r#"{"action": "ping"}"#).await;
            let first = recv_text(ws).await;
            if first == r#"{"type": "user_message", "message": "direct"}"# {
                got += 1;
                assert_eq!(recv_text(ws).await, r#"{"type": "pong"}"#);
            } else {
                assert_eq!(first, r#"{"type": "pong"}"#);
            }
        }
        assert_eq!(got, 1);
        // Nothing was acknowledged for the application message.
        let stray = tokio::time::timeout(STEP / 4, server.layer.receive(&reply_to)).await;
        assert!(stray.is_err(), "unexpected ack {stray:?}");
    }
}

#[tokio::test]
async fn test_connection_counts_every_local_socket() {
    for multiplexing in [true, false] {
        let (server, presence) = with_presence(multiplexing).await;
        let mut all = sockets(&server, 3, "token=amadmin-token").await;
        socket_channels(&presence, "amadmin", 3).await;
        let store: Arc<dyn Presence> = presence.clone();
        let messenger = Messenger::new(Arc::clone(&server.layer)).with_presence(store);
        let acked = within(messenger.test_connection("amadmin", STEP / 2))
            .await
            .unwrap();
        assert_eq!(acked, 3, "multiplexing={multiplexing}");
        for ws in &mut all {
            let frame: serde_json::Value = serde_json::from_str(&recv_text(ws).await).unwrap();
            assert_eq!(frame["title"], "WebSocket Test");
        }
    }
}

/// Joins `slow` and stalls every layer message on a semaphore: its runtime stops draining the
/// group inbox until the test adds permits.
struct Stalling(Arc<Semaphore>);

#[async_trait]
impl Consumer for Stalling {
    async fn connect(&mut self, ctx: &mut Context) -> herald_server::Result<()> {
        ctx.group_add("slow").await?;
        ctx.accept()
    }

    async fn handle(
        &mut self,
        _ctx: &mut Context,
        _handler: &str,
        _message: Message,
    ) -> herald_server::Result<Handled> {
        self.0.acquire().await.unwrap().forget();
        Ok(Handled::Yes)
    }
}

/// Forwards every layer message to the client.
struct Forwarding;

#[async_trait]
impl Consumer for Forwarding {
    async fn connect(&mut self, ctx: &mut Context) -> herald_server::Result<()> {
        ctx.group_add("slow").await?;
        ctx.accept()
    }

    async fn handle(
        &mut self,
        ctx: &mut Context,
        _handler: &str,
        message: Message,
    ) -> herald_server::Result<Handled> {
        ctx.forward_json(&message)?;
        Ok(Handled::Yes)
    }
}

#[tokio::test]
async fn a_member_whose_inbox_overflows_is_closed_with_4008_and_the_others_keep_receiving() {
    let layer = memory_layer();
    let gate = Arc::new(Semaphore::new(0));
    let for_factory = Arc::clone(&gate);
    // The in-memory client never answers the close: do not wait the default 5 s for it.
    let config = ServerConfig::default()
        .with_group_inbox_capacity(NonZeroUsize::new(2).unwrap())
        .with_close_timeout(std::time::Duration::from_millis(100));
    let app = App::builder()
        .layer(Arc::clone(&layer))
        .config(config)
        .route("/stall/", move || Stalling(Arc::clone(&for_factory)))
        .route("/fwd/", || Forwarding)
        .build()
        .unwrap();
    let run = |path: &'static str| {
        let app = app.clone();
        async move {
            let Handshake::Accepted(conn) = within(app.connect(HandshakeRequest::new(path)))
                .await
                .unwrap()
            else {
                panic!("refused")
            };
            let (to_server, from_client) = mpsc::unbounded_channel();
            let (to_client, from_server) = futures_channel();
            let (trigger, signal) = shutdown::channel();
            let task = tokio::spawn(conn.run(to_client, from_client_stream(from_client), signal));
            (task, to_server, from_server, trigger)
        }
    };
    let (slow, _slow_in, _slow_out, _t1) = run("/stall/").await;
    let (fast, fast_in, mut fast_out, _t2) = run("/fwd/").await;
    assert_eq!(group_members(&layer, "slow").await, 1);
    // The probe itself reached the fast socket (and is stalled in the slow one's handler).
    assert!(matches!(
        within(fast_out.recv()).await.unwrap(),
        WsMessage::Text(_)
    ));

    // The stalled socket holds one message in its handler and 2 in its inbox; the rest overflow.
    for n in 0..6 {
        let msg = Message::with_type("x.y").with("n", n);
        within(layer.group_send("slow", msg)).await.unwrap();
        // The fast socket keeps up with every message.
        match within(fast_out.recv()).await.unwrap() {
            WsMessage::Text(t) => assert_eq!(t.as_str(), format!(r#"{{"type": "x_y", "n": {n}}}"#)),
            other => panic!("expected text, got {other:?}"),
        }
    }
    gate.add_permits(10);
    let closed = within(slow).await.unwrap();
    assert_eq!(closed.reason, CloseReason::SlowConsumer);
    assert_eq!(closed.code, Some(4008));
    assert_eq!(app.metrics().slow_consumer_closes(), 1);

    // The group still reaches the fast socket; the slow one left it.
    within(layer.group_send("slow", Message::with_type("x.y").with("n", 9)))
        .await
        .unwrap();
    match within(fast_out.recv()).await.unwrap() {
        WsMessage::Text(t) => assert_eq!(t.as_str(), r#"{"type": "x_y", "n": 9}"#),
        other => panic!("expected text, got {other:?}"),
    }
    drop(fast_in);
    within(fast).await.unwrap();
    assert_eq!(group_members(&layer, "slow").await, 0);
}

type ClientFrames = mpsc::UnboundedReceiver<Result<WsMessage, herald_server::tungstenite::Error>>;

fn from_client_stream(
    rx: ClientFrames,
) -> impl futures_util::Stream<Item = Result<WsMessage, herald_server::tungstenite::Error>> + Unpin
{
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
        .boxed()
}

fn futures_channel() -> (
    impl futures_util::Sink<WsMessage, Error = herald_server::tungstenite::Error> + Unpin,
    mpsc::UnboundedReceiver<WsMessage>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = futures_util::sink::unfold(tx, |tx, msg: WsMessage| async move {
        tx.send(msg)
            .map_err(|_| herald_server::tungstenite::Error::ConnectionClosed)?;
        Ok::<_, herald_server::tungstenite::Error>(tx)
    });
    (Box::pin(sink), rx)
}
