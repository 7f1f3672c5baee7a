//! The HTTP publish API and delivery-acknowledged test_connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{STEP, TestServer, memory_layer, tasks_builder, within};
use herald_core::presence::{InMemoryPresence, Presence};
use herald_messaging::Messenger;
use herald_server::{PublishAccess, ServerConfig};
use herald_test_support::eventually;
use herald_test_support::ws::{recv_text, send_text, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "publish-secret";

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    within(stream.write_all(req.as_bytes())).await.unwrap();
    let mut buf = Vec::new();
    within(stream.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

async fn server(presence: Option<Arc<InMemoryPresence>>) -> TestServer {
    let mut builder =
        tasks_builder(ServerConfig::default()).publish(PublishAccess::Bearer(TOKEN.to_owned()));
    if let Some(store) = presence {
        builder = builder.presence(store as Arc<dyn Presence>, Duration::from_secs(30));
    }
    TestServer::start(builder, memory_layer()).await
}

#[tokio::test]
async fn publish_is_off_by_default() {
    let server = TestServer::start(tasks_builder(ServerConfig::default()), memory_layer()).await;
    let (status, _) = request(server.addr, "POST", "/api/publish", Some(TOKEN), "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn publish_needs_the_bearer_token() {
    let server = server(None).await;
    let body = r#"{"user": "amadmin", "message": {"type": "user.message", "message": "x"}}"#;
    assert_eq!(
        request(server.addr, "POST", "/api/publish", None, body)
            .await
            .0,
        401
    );
    assert_eq!(
        request(server.addr, "POST", "/api/publish", Some("wrong"), body)
            .await
            .0,
        401
    );
    assert_eq!(
        request(server.addr, "POST", "/api/publish", Some(TOKEN), body)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn publish_to_user_users_and_group_reaches_the_sockets() {
    let server = server(None).await;
    let mut amadmin = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;

    let body = r#"{"user": "amadmin", "message": {"type": "user.message", "message": "hi"}}"#;
    let (status, out) = request(server.addr, "POST", "/api/publish", Some(TOKEN), body).await;
    assert_eq!(status, 200);
    assert_eq!(out["members"], 1);
    assert_eq!(out["groups"], 1);
    assert_eq!(
        recv_text(&mut amadmin).await,
        r#"{"type": "user_message", "message": "hi"}"#
    );

    let body = r#"{"users": ["amadmin", "bob", "nobody"], "message": {"type": "user.notification", "notification_type": "warning", "message": "Disk space low"}}"#;
    let (status, out) = request(server.addr, "POST", "/api/publish", Some(TOKEN), body).await;
    assert_eq!(
        (status, out["groups"].clone(), out["members"].clone()),
        (200, 3.into(), 2.into())
    );
    assert!(recv_text(&mut amadmin).await.contains("Disk space low"));
    assert!(recv_text(&mut bob).await.contains("Disk space low"));

    send_text(&mut bob, r#"{"action": "subscribe", "task_id": "7"}"#).await;
    assert!(recv_text(&mut bob).await.contains("subscribed"));
    let body = r#"{"group": "task_7", "message": {"type": "task.complete", "task_id": "7"}}"#;
    let (status, out) = request(server.addr, "POST", "/api/publish", Some(TOKEN), body).await;
    assert_eq!((status, out["members"].clone()), (200, 1.into()));
    assert_eq!(
        recv_text(&mut bob).await,
        r#"{"type": "task_complete", "task_id": "7"}"#
    );
}

#[tokio::test]
async fn bad_publish_bodies_are_400_with_a_reason() {
    let server = server(None).await;
    for (body, why) in [
        ("not json", "JSON object"),
        (r#"{"user": "a"}"#, "\"message\""),
        (r#"{"user": "a", "message": {"no": "type"}}"#, "\"type\""),
        (r#"{"message": {"type": "x"}}"#, "name a target"),
        (
            r#"{"group": "bad group", "message": {"type": "x"}}"#,
            "Group name must be",
        ),
        (
            r#"{"users": "amadmin", "message": {"type": "x"}}"#,
            "list of strings",
        ),
    ] {
        let (status, out) = request(server.addr, "POST", "/api/publish", Some(TOKEN), body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            out["error"].as_str().unwrap().contains(why),
            "{body}: {out}"
        );
    }
    let (status, _) = request(server.addr, "GET", "/api/publish", Some(TOKEN), "").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn presence_api_and_broadcast_to_everyone_online() {
    let store = Arc::new(InMemoryPresence::new());
    let server = server(Some(store.clone())).await;
    let (_, out) = request(
        server.addr,
        "GET",
        "/api/presence?user=amadmin",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(
        out,
        serde_json::json!({"user": "amadmin", "online": false, "connections": 0})
    );

    let mut a = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut b = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    eventually(
        STEP,
        "store.online_users().await.unwrap().len() == 2",
        || async { store.online_users().await.unwrap().len() == 2 },
    )
    .await;
    let (_, out) = request(
        server.addr,
        "GET",
        "/api/presence?user=amadmin",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(out["connections"], 1);
    let (_, out) = request(server.addr, "GET", "/api/presence", Some(TOKEN), "").await;
    assert_eq!(
        out,
        serde_json::json!({"count": 2, "users": ["amadmin", "bob"]})
    );

    let body = r#"{"online": true, "message": {"type": "user.message", "message": "System update in 5 minutes!"}}"#;
    let (status, out) = request(server.addr, "POST", "/api/publish", Some(TOKEN), body).await;
    assert_eq!((status, out["members"].clone()), (200, 2.into()));
    assert!(recv_text(&mut a).await.contains("System update"));
    assert!(recv_text(&mut b).await.contains("System update"));
}

#[tokio::test]
async fn test_connection_counts_sockets_that_received_it() {
    let presence = Arc::new(InMemoryPresence::new());
    let server = server(Some(Arc::clone(&presence))).await;
    let store: Arc<dyn Presence> = presence.clone();
    let messenger = Messenger::new(Arc::clone(&server.layer)).with_presence(store);
    let wait = Duration::from_secs(2);
    assert_eq!(
        within(messenger.test_connection("amadmin", wait))
            .await
            .unwrap(),
        0
    );

    let mut one = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut two = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    eventually(
        STEP,
        "presence.connections(\"amadmin\").await.unwrap() == 2",
        || async { presence.connections("amadmin").await.unwrap() == 2 },
    )
    .await;
    assert_eq!(
        within(messenger.test_connection("amadmin", wait))
            .await
            .unwrap(),
        2
    );
    for ws in [&mut one, &mut two] {
        let frame: serde_json::Value = serde_json::from_str(&recv_text(ws).await).unwrap();
        assert_eq!(frame["type"], "user_notification");
        assert_eq!(frame["title"], "WebSocket Test");
        // The notification is exactly the guide's: nothing added for the count.
        let mut keys: Vec<&str> = frame
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "data",
                "message",
                "notification_type",
                "timestamp",
                "title",
                "type",
                "username"
            ],
            "{frame}"
        );
    }
}
