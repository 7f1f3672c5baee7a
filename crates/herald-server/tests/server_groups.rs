//! The `/ws/tasks/` consumer end to end: the guide's message types, task subscriptions,
//! isolation between users, and membership cleanup.

mod common;

use common::*;
use herald_core::{Map, Message, Value};
use herald_server::ServerConfig;
use herald_test_support::eventually;
use herald_test_support::ws::{recv_text, send_text, ws_connect};

fn data(pairs: &[(&str, Value)]) -> Value {
    let mut map = Map::new();
    for (k, v) in pairs {
        map.insert((*k).to_owned(), v.clone());
    }
    Value::Map(map)
}

/// The guide's three user message shapes (field order as in the guide).
fn guide_messages() -> Vec<(Message, &'static str)> {
    vec![
        (
            Message::with_type("user.message")
                .with("username", "amadmin")
                .with("message", "Your message here")
                .with("data", data(&[]))
                .with("timestamp", "2025-11-17T10:30:00"),
            r#"{"type": "user_message", "username": "amadmin", "message": "Your message here", "data": {}, "timestamp": "2025-11-17T10:30:00"}"#,
        ),
        (
            Message::with_type("user.notification")
                .with("username", "amadmin")
                .with("notification_type", "success")
                .with("title", "Title")
                .with("message", "Your message here")
                .with(
                    "data",
                    data(&[("count", Value::Int(100)), ("status", "success".into())]),
                )
                .with("timestamp", "2025-11-17T10:30:00"),
            r#"{"type": "user_notification", "username": "amadmin", "notification_type": "success", "title": "Title", "message": "Your message here", "data": {"count": 100, "status": "success"}, "timestamp": "2025-11-17T10:30:00"}"#,
        ),
        (
            Message::with_type("user.file")
                .with("username", "amadmin")
                .with("message", "File ready for download")
                .with("file_url", "/media/reports/report.xlsx")
                .with("file_name", "report.xlsx")
                .with("file_size", 123456)
                .with("data", data(&[]))
                .with("timestamp", "2025-11-17T10:30:00"),
            r#"{"type": "user_file", "username": "amadmin", "message": "File ready for download", "file_url": "/media/reports/report.xlsx", "file_name": "report.xlsx", "file_size": 123456, "data": {}, "timestamp": "2025-11-17T10:30:00"}"#,
        ),
    ]
}

#[tokio::test]
async fn guide_user_messages_arrive_as_exact_json_frames() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut ws).await;
    for (message, expected) in guide_messages() {
        let report = within(server.layer.group_send("user_amadmin", message))
            .await
            .unwrap();
        assert_eq!(report.members, 1);
        assert_eq!(recv_text(&mut ws).await, expected);
    }
}

#[tokio::test]
async fn non_ascii_text_is_escaped_like_json_dumps() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut ws).await;
    let msg = Message::with_type("user.message")
        .with("message", "Información \"lista\"\n")
        .with("progress", 12.5);
    within(server.layer.group_send("user_amadmin", msg))
        .await
        .unwrap();
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "user_message", "message": "Informaci\u00f3n \"lista\"\n", "progress": 12.5}"#
    );
}

#[tokio::test]
async fn subscribe_acks_and_forwards_task_events_until_unsubscribe() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    send_text(&mut ws, r#"{"action": "subscribe", "task_id": "abc-123"}"#).await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "subscribed", "task_id": "abc-123"}"#
    );
    assert_eq!(group_members(&server.layer, "task_abc-123").await, 1);

    let events = [
        (
            Message::with_type("task.update")
                .with("task_id", "abc-123")
                .with("status", "processing")
                .with("message", "Processing step 1...")
                .with("progress", 25),
            r#"{"type": "task_update", "task_id": "abc-123", "status": "processing", "message": "Processing step 1...", "progress": 25}"#,
        ),
        (
            Message::with_type("task.complete")
                .with("task_id", "abc-123")
                .with("status", "completed")
                .with("message", "Task complete!")
                .with("result", data(&[("count", Value::Int(100))])),
            r#"{"type": "task_complete", "task_id": "abc-123", "status": "completed", "message": "Task complete!", "result": {"count": 100}}"#,
        ),
        (
            Message::with_type("task.error")
                .with("task_id", "abc-123")
                .with("status", "failed")
                .with("error", "boom"),
            r#"{"type": "task_error", "task_id": "abc-123", "status": "failed", "error": "boom"}"#,
        ),
    ];
    for (message, expected) in events {
        within(server.layer.group_send("task_abc-123", message))
            .await
            .unwrap();
        assert_eq!(recv_text(&mut ws).await, expected);
    }

    send_text(
        &mut ws,
        r#"{"action": "unsubscribe", "task_id": "abc-123"}"#,
    )
    .await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "unsubscribed", "task_id": "abc-123"}"#
    );
    assert_eq!(group_members(&server.layer, "task_abc-123").await, 0);
    within(server.layer.group_send(
        "task_abc-123",
        Message::with_type("task.update").with("progress", 50),
    ))
    .await
    .unwrap();
    // The pong is the next frame: the update after unsubscribe was not delivered.
    sync(&mut ws).await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let cases = [
        (
            "not json",
            r#"{"type": "error", "message": "invalid JSON"}"#,
        ),
        (
            "[1, 2]",
            r#"{"type": "error", "message": "expected a JSON object"}"#,
        ),
        (
            r#"{"action": "dance"}"#,
            r#"{"type": "error", "message": "unknown action"}"#,
        ),
        (
            r#"{"task_id": "x"}"#,
            r#"{"type": "error", "message": "unknown action"}"#,
        ),
        (
            r#"{"action": "subscribe"}"#,
            r#"{"type": "error", "message": "task_id must be a string or a number"}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": "has spaces"}"#,
            r#"{"type": "error", "message": "invalid task_id"}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": ""}"#,
            r#"{"type": "error", "message": "invalid task_id"}"#,
        ),
    ];
    for (frame, expected) in cases {
        send_text(&mut ws, frame).await;
        assert_eq!(recv_text(&mut ws).await, expected, "for {frame}");
    }
    within(futures_util::SinkExt::send(
        &mut ws,
        herald_server::tungstenite::Message::binary(vec![1u8, 2, 3]),
    ))
    .await
    .unwrap();
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "error", "message": "binary frames are not supported"}"#
    );
    sync(&mut ws).await;
    // Only the user group was ever joined.
    assert_eq!(group_members(&server.layer, "user_amadmin").await, 1);
}

#[tokio::test]
async fn users_only_receive_their_own_user_group() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut alice = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    sync(&mut alice).await;
    sync(&mut bob).await;
    within(server.layer.group_send(
        "user_bob",
        Message::with_type("user.message").with("message", "for bob"),
    ))
    .await
    .unwrap();
    assert_eq!(
        recv_text(&mut bob).await,
        r#"{"type": "user_message", "message": "for bob"}"#
    );
    // Alice's next frame is her own pong, not bob's message.
    sync(&mut alice).await;
}

#[tokio::test]
async fn one_group_send_reaches_every_socket_of_the_user() {
    // Multiplexed (default): the layer group has one member standing for the five sockets;
    // off: five members, as Channels.
    for (multiplexing, members) in [(true, 1), (false, 5)] {
        one_group_send_reaches_every_socket(multiplexing, members).await;
    }
}

async fn one_group_send_reaches_every_socket(multiplexing: bool, members: usize) {
    let server =
        TestServer::tasks(ServerConfig::default().with_group_multiplexing(multiplexing)).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
        sync(&mut ws).await;
        sockets.push(ws);
    }
    let report = within(server.layer.group_send(
        "user_amadmin",
        Message::with_type("user.message").with("message", "all tabs"),
    ))
    .await
    .unwrap();
    assert_eq!(report.members, members);
    for ws in &mut sockets {
        assert_eq!(
            recv_text(ws).await,
            r#"{"type": "user_message", "message": "all tabs"}"#
        );
    }
}

#[tokio::test]
async fn unknown_layer_types_are_counted_and_dropped_without_closing() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut ws).await;
    for t in ["chat.message", "_private.x", "websocket.disconnect"] {
        within(
            server
                .layer
                .group_send("user_amadmin", Message::with_type(t)),
        )
        .await
        .unwrap();
    }
    within(
        server
            .layer
            .group_send("user_amadmin", Message::new().with("no", "type")),
    )
    .await
    .unwrap();
    within(server.layer.group_send(
        "user_amadmin",
        Message::with_type("user.message").with("message", "still here"),
    ))
    .await
    .unwrap();
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "user_message", "message": "still here"}"#
    );
    let metrics = server.app.metrics();
    assert_eq!(metrics.unknown_message_types(), 2);
    assert_eq!(metrics.drops(herald_server::DropReason::MalformedType), 1);
    assert_eq!(metrics.drops(herald_server::DropReason::MissingType), 1);
}

#[tokio::test]
async fn disconnect_discards_every_membership() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    for id in ["t1", "t2"] {
        send_text(
            &mut ws,
            &format!(r#"{{"action": "subscribe", "task_id": "{id}"}}"#),
        )
        .await;
        recv_text(&mut ws).await;
    }
    assert_eq!(group_members(&server.layer, "task_t1").await, 1);
    within(ws.close(None)).await.unwrap();
    let layer = server.layer.clone();
    eventually(STEP, "group_members(&layer, \"user_amadmin\").await == 0 && group_members(&layer, \"task_t1\").await == 0 && group_members(&layer, \"task_t2\").await == 0", || {
        let layer = layer.clone();
        async move {
            group_members(&layer, "user_amadmin").await == 0
                && group_members(&layer, "task_t1").await == 0
                && group_members(&layer, "task_t2").await == 0
        }
    })
    .await;
    assert_eq!(server.app.metrics().connections_current(), 0);
}

#[tokio::test]
async fn abrupt_tcp_drop_also_discards_memberships() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut ws).await;
    drop(ws);
    let layer = server.layer.clone();
    eventually(
        STEP,
        "group_members(&layer, \"user_amadmin\").await == 0",
        || {
            let layer = layer.clone();
            async move { group_members(&layer, "user_amadmin").await == 0 }
        },
    )
    .await;
}
