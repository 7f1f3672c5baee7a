//! Security: a socket only ever receives its own user's group and the tasks it subscribed to; a
//! client cannot make the server send to anyone else; Origin lookalikes and concurrent
//! handshakes cannot get past the Origin check or the connection caps.
//!
//! server_groups.rs and server_handshake.rs cover the plain cases (one user group each, a wrong
//! Origin, sequential caps); this file throws hostile input at the same rules.

mod common;

use std::num::NonZeroUsize;

use common::*;
use futures_util::SinkExt;
use herald_core::Message;
use herald_server::ServerConfig;
use herald_server::tungstenite::Message as WsMessage;
use herald_test_support::eventually;
use herald_test_support::ws::{Ws, recv_text, refused_status, send_text, ws_connect};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Task ids chosen to collide with, traverse to or pattern-match other users' groups.
const HOSTILE_TASK_IDS: &[&str] = &[
    "../user_bob",
    "user_bob",
    "/user_bob",
    "..",
    "*",
    "user_*",
    "bob",
    "task_user_bob",
    "x\nuser_bob",
    "user_bob\u{0}",
    "usér_bob",
    "asgi:group:user_bob",
    "user_bob ",
    "specific.abc!def",
];

/// Every frame a hostile client might try to get relayed or to impersonate a layer message.
fn hostile_frames() -> Vec<String> {
    let mut frames: Vec<String> = HOSTILE_TASK_IDS
        .iter()
        .flat_map(|id| {
            let id = serde_json::to_string(id).unwrap();
            [
                format!(r#"{{"action": "subscribe", "task_id": {id}}}"#),
                format!(r#"{{"action": "unsubscribe", "task_id": {id}}}"#),
            ]
        })
        .collect();
    frames.extend(
        [
            r#"{"type": "user.message", "message": "spoof", "username": "bob"}"#,
            r#"{"action": "subscribe", "task_id": "t", "group": "user_bob"}"#,
            r#"{"action": "group_send", "group": "user_bob", "message": {"type": "user.message"}}"#,
            r#"{"action": "send", "channel": "user_bob", "message": "spoof"}"#,
            r#"{"type": "websocket.send", "text": "spoof", "__asgi_channel__": "user_bob"}"#,
            r#"{"__asgi_group__": "user_bob", "type": "user.message", "message": "spoof"}"#,
        ]
        .map(str::to_owned),
    );
    frames.push(format!(
        r#"{{"action": "subscribe", "task_id": "{}"}}"#,
        "a".repeat(300)
    ));
    frames
}

/// Reads replies until the pong that follows them; fails if any reply is not addressed to
/// this socket's own request (an ack, an error, or the pong).
async fn replies_until_pong(ws: &mut Ws) -> Vec<serde_json::Value> {
    send_text(ws, r#"{"action": "ping"}"#).await;
    let mut replies = Vec::new();
    loop {
        let text = recv_text(ws).await;
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if value["type"] == "pong" {
            return replies;
        }
        let t = value["type"].as_str().unwrap_or_default().to_owned();
        assert!(
            ["subscribed", "unsubscribed", "error", "pong"].contains(&t.as_str()),
            "unexpected frame {text}"
        );
        replies.push(value);
    }
}

#[tokio::test]
async fn hostile_task_ids_never_reach_another_users_group() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut mallory = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    sync(&mut bob).await;

    for id in HOSTILE_TASK_IDS {
        let frame = serde_json::json!({"action": "subscribe", "task_id": id}).to_string();
        send_text(&mut mallory, &frame).await;
        let reply: serde_json::Value =
            serde_json::from_str(&recv_text(&mut mallory).await).unwrap();
        match reply["type"].as_str() {
            // Accepted ids are namespaced under task_: harmless.
            Some("subscribed") => assert_eq!(reply["task_id"], *id),
            Some("error") => {}
            other => panic!("{id:?}: unexpected reply {other:?}"),
        }
    }
    sync(&mut mallory).await;

    // Bob's group still has exactly bob in it, and bob's messages reach only bob.
    assert_eq!(group_members(&server.layer, "user_bob").await, 1);
    within(server.layer.group_send(
        "user_bob",
        Message::with_type("user.message").with("message", "secret for bob"),
    ))
    .await
    .unwrap();
    assert_eq!(
        recv_text(&mut bob).await,
        r#"{"type": "user_message", "message": "secret for bob"}"#
    );
    // Mallory's next frame is her own pong: nothing of bob's was queued before it.
    sync(&mut mallory).await;

    // Bob's task events stay his too: bob subscribes to a task mallory did not.
    send_text(
        &mut bob,
        r#"{"action": "subscribe", "task_id": "bob-private"}"#,
    )
    .await;
    assert_eq!(
        recv_text(&mut bob).await,
        r#"{"type": "subscribed", "task_id": "bob-private"}"#
    );
    within(server.layer.group_send(
        "task_bob-private",
        Message::with_type("task.update").with("progress", 10),
    ))
    .await
    .unwrap();
    let update = recv_text(&mut bob).await;
    assert!(update.contains(r#""type": "task_update""#), "{update}");
    sync(&mut mallory).await;
}

#[tokio::test]
async fn no_frame_from_a_client_reaches_another_socket() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut mallory = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    // Both on the same task: a relay, if there were one, would show up here.
    for ws in [&mut mallory, &mut bob] {
        send_text(ws, r#"{"action": "subscribe", "task_id": "shared"}"#).await;
        assert_eq!(
            recv_text(ws).await,
            r#"{"type": "subscribed", "task_id": "shared"}"#
        );
    }
    let frames_out_before = server.app.metrics().frames_out();
    let frames = hostile_frames();
    for frame in &frames {
        send_text(&mut mallory, frame).await;
    }
    within(mallory.send(WsMessage::binary(
        br#"{"type": "user.message", "message": "spoof"}"#.to_vec(),
    )))
    .await
    .unwrap();
    // Every reply went back to mallory herself.
    let replies = replies_until_pong(&mut mallory).await;
    assert_eq!(replies.len(), frames.len() + 1);
    // Bob got nothing at all: his next frame is his own pong.
    sync(&mut bob).await;
    // Server-wide, the frames written were mallory's replies, her pong and bob's pong only.
    assert_eq!(
        server.app.metrics().frames_out() - frames_out_before,
        replies.len() as u64 + 2
    );
    // Mallory's memberships never included bob's group.
    assert_eq!(group_members(&server.layer, "user_bob").await, 1);
}

fn with_origin(
    url: &str,
    origin: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    req
}

#[tokio::test]
async fn origin_lookalikes_are_refused() {
    let config = ServerConfig::default().with_allowed_origins([
        "example.com",
        ".example.org",
        "https://app.example.net",
    ]);
    let server = TestServer::tasks(config).await;
    let url = server.url("/ws/tasks/?token=amadmin-token");
    // (A scheme-less pattern compares hostnames only, as Channels does: `file://example.com`
    // passes "example.com" there too; browsers send `null` for file pages.)
    let lookalikes = [
        "https://example.com.evil.com",
        "https://evilexample.com",
        "https://example.com@evil.com",
        "https://evil.com#example.com",
        "https://evil.com/?next=https://example.com",
        "https://evil.com/example.com",
        "https://example.org.evil.com",
        "https://notexample.org",
        "http://app.example.net",
        "https://app.example.net:8443",
        "https://app.example.net.evil.com",
        "example.com",
        "null",
        "",
    ];
    for origin in lookalikes {
        let status = match within(tokio_tungstenite::connect_async(with_origin(&url, origin))).await
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(other) => panic!("{origin:?}: {other:?}"),
            Ok(_) => 101,
        };
        assert_eq!(status, 403, "{origin:?}");
    }
    assert_eq!(
        server.app.metrics().origin_rejects(),
        lookalikes.len() as u64
    );
    assert_eq!(group_members(&server.layer, "user_amadmin").await, 0);
    assert_eq!(server.app.metrics().connections_current(), 0);
    // The real ones still pass.
    for origin in [
        "https://example.com",
        "http://EXAMPLE.com:8000",
        "https://deep.sub.example.org",
        "https://app.example.net",
        "https://app.example.net:443",
    ] {
        let (mut ws, _) = within(tokio_tungstenite::connect_async(with_origin(&url, origin)))
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        sync(&mut ws).await;
    }
}

/// Handshakes that race each other cannot overshoot the per-user or per-IP cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handshakes_cannot_exceed_the_caps() {
    for (config, cap) in [
        (
            ServerConfig::default().with_max_connections_per_user(NonZeroUsize::new(3)),
            3,
        ),
        (
            ServerConfig::default().with_max_connections_per_ip(NonZeroUsize::new(4)),
            4,
        ),
    ] {
        let server = TestServer::tasks(config).await;
        let url = server.url("/ws/tasks/?token=amadmin-token");
        let attempts: Vec<_> = (0..24)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    match within(tokio_tungstenite::connect_async(url)).await {
                        Ok((ws, _)) => Ok(ws),
                        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                            Err(resp.status().as_u16())
                        }
                        Err(other) => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let mut open = Vec::new();
        let mut refused = 0;
        for a in attempts {
            match within(a).await.unwrap() {
                Ok(ws) => open.push(ws),
                Err(status) => {
                    assert_eq!(status, 429);
                    refused += 1;
                }
            }
        }
        assert_eq!(open.len(), cap);
        assert_eq!(refused, 24 - cap);
        assert_eq!(server.app.metrics().connections_current(), cap as u64);
        assert_eq!(
            server.app.metrics().connection_limit_rejects(),
            (24 - cap) as u64
        );
        for ws in &mut open {
            sync(ws).await;
        }
        // Closing frees the slots again.
        for mut ws in open {
            within(ws.close(None)).await.unwrap();
        }
        let app = server.app.clone();
        eventually(STEP, "current == 0", || {
            let current = app.metrics().connections_current();
            async move { current == 0 }
        })
        .await;
        let mut again = ws_connect(&url).await;
        sync(&mut again).await;
    }
}

/// Without trusted proxies (the default) the per-IP cap keys on the TCP peer: a client cannot
/// dodge it with made-up `X-Forwarded-For` headers.
#[tokio::test]
async fn forged_forwarded_for_cannot_dodge_the_per_ip_cap() {
    let config = ServerConfig::default().with_max_connections_per_ip(NonZeroUsize::new(2));
    let server = TestServer::tasks(config).await;
    let url = server.url("/ws/tasks/?token=amadmin-token");
    let mut open = Vec::new();
    for i in 0..2 {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", format!("203.0.113.{i}").parse().unwrap());
        let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.unwrap();
        sync(&mut ws).await;
        open.push(ws);
    }
    for forged in ["198.51.100.7", "198.51.100.8, 10.0.0.1", "::1", "garbage"] {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", forged.parse().unwrap());
        req.headers_mut()
            .insert("x-real-ip", forged.parse().unwrap());
        assert_eq!(refused_status(req).await, 429, "{forged}");
    }
    assert_eq!(server.app.metrics().connections_current(), 2);
}

/// Records the client address of every handshake, then defers to the test tokens.
#[derive(Debug, Clone, Default)]
struct SeenClients(std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>);

#[async_trait::async_trait]
impl herald_server::Authenticator for SeenClients {
    async fn authenticate(
        &self,
        request: &herald_server::HandshakeRequest,
    ) -> Result<Option<herald_server::Identity>, herald_server::AuthError> {
        self.0.lock().unwrap().push(request.client().unwrap());
        tokens().authenticate(request).await
    }
}

impl SeenClients {
    fn last_ip(&self) -> std::net::IpAddr {
        self.0.lock().unwrap().last().unwrap().ip()
    }
}

/// A WebSocket handshake from the local address `source` (any 127.0.0.0/8 address is this
/// host), with an optional `X-Forwarded-For`; the socket, or the refusal's HTTP status.
async fn connect_from(source: &str, url: &str, forwarded_for: Option<&str>) -> Result<Ws, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let stream = within(socket.connect(addr)).await.unwrap();
    let mut req = url.into_client_request().unwrap();
    if let Some(xff) = forwarded_for {
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    match within(tokio_tungstenite::client_async(req, stream)).await {
        Ok((mut ws, _)) => {
            sync(&mut ws).await;
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(other) => panic!("expected a handshake or an HTTP refusal, got {other:?}"),
    }
}

/// With 127.0.0.1 as the trusted proxy, a request from it is the rightmost untrusted
/// `X-Forwarded-For` hop (what the proxy appended, not what the client made up in front of
/// it), for the per-IP cap and `scope["client"]`; a request from any other peer (127.0.0.2
/// here) is its TCP peer whatever it sends.
#[tokio::test]
async fn trusted_proxy_forwards_the_rightmost_untrusted_hop() {
    let seen = SeenClients::default();
    let config = ServerConfig::default()
        .with_max_connections_per_ip(NonZeroUsize::new(1))
        .with_trusted_proxies(["127.0.0.1".parse().unwrap()]);
    let builder = herald_server::App::builder()
        .authenticator(seen.clone())
        .config(config)
        .route("/ws/tasks/", herald_server::TasksConsumer::default);
    let server = TestServer::start(builder, memory_layer()).await;
    let url = server.url("/ws/tasks/?token=amadmin-token");

    // Through the trusted proxy: two clients, one socket each under a cap of 1.
    let _a = connect_from("127.0.0.1", &url, Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(seen.last_ip().to_string(), "203.0.113.1");
    let _b = connect_from("127.0.0.1", &url, Some("203.0.113.2"))
        .await
        .unwrap();
    assert_eq!(seen.last_ip().to_string(), "203.0.113.2");
    // The same client with a made-up address in front is still 203.0.113.1: refused.
    let status = connect_from("127.0.0.1", &url, Some("198.51.100.9, 203.0.113.1"))
        .await
        .unwrap_err();
    assert_eq!(status, 429);
    assert_eq!(seen.last_ip().to_string(), "203.0.113.1");

    // From an untrusted peer the header is ignored: both are 127.0.0.2.
    let _c = connect_from("127.0.0.2", &url, Some("203.0.113.3"))
        .await
        .unwrap();
    assert_eq!(seen.last_ip().to_string(), "127.0.0.2");
    let status = connect_from("127.0.0.2", &url, Some("203.0.113.4"))
        .await
        .unwrap_err();
    assert_eq!(status, 429);
    assert_eq!(seen.last_ip().to_string(), "127.0.0.2");
    assert_eq!(server.app.metrics().connections_current(), 3);
}
