//! The test project's `OptsIO.ws_utils` (the guide's helpers) through real channels_redis and a
//! real `redis-server`: each helper's message must be exactly the dict the guide shows, keys in
//! the guide's order, with a `datetime.now().isoformat()` timestamp.

mod common;

use std::time::Duration;

use common::Django;
use herald_test_support::RedisServer;

/// Sends with every helper, then receives on a channel subscribed to `user_amadmin` and
/// `user_user1`; prints `{"results": [...], "messages": [...]}`.
const SCRIPT: &str = r#"
import json
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from OptsIO import ws_utils as w

layer = get_channel_layer()
ch = async_to_sync(layer.new_channel)()
for u in ("amadmin", "user1"):
    async_to_sync(layer.group_add)(f"user_{u}", ch)
results = [
    w.ws_send_message("amadmin", "Your report is ready!"),
    w.ws_connect(username="amadmin", message="Something to say", data={"count": 100}),
    w.ws_send_notification("amadmin", "Report generated successfully!", "success", "Report Ready"),
    w.ws_send_notification("amadmin", "System maintenance scheduled"),
    w.ws_send_file(username="amadmin", file_url="/media/exports/data.csv", file_name="data.csv",
                   message="Your export is ready", file_size=156789),
    w.ws_send_file("amadmin", "/media/reports/monthly_report.xlsx?v=2"),
    w.ws_broadcast_message("System maintenance in 10 minutes", usernames=["amadmin", "user1", "bad name!"]),
    w.test_websocket_connection("amadmin"),
    w.ws_send_notification("amadmin", "not sent", "bogus"),
]
# One event loop for all receives: channels_redis keeps its receive buffer per loop.
async def receive_all():
    return [await layer.receive(ch) for _ in range(9)]

messages = async_to_sync(receive_all)()
print(json.dumps({"results": results, "messages": messages}))
"#;

const MESSAGE_KEYS: &[&str] = &["type", "username", "message", "data", "timestamp"];
const NOTIFICATION_KEYS: &[&str] = &[
    "type",
    "username",
    "notification_type",
    "title",
    "message",
    "data",
    "timestamp",
];
const FILE_KEYS: &[&str] = &[
    "type",
    "username",
    "message",
    "file_url",
    "file_name",
    "file_size",
    "data",
    "timestamp",
];

fn is_python_isoformat(s: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SS with optional .ffffff, no offset (naive local time).
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    (b.len() == 19 || b.len() == 26)
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b.len() == 19 || (b[19] == b'.' && digits(20..26)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_utils_send_the_guides_dicts_through_channels_redis() {
    let Some(python) = herald_test_support::compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db)
        .with_env("REDIS_URL", &redis.url())
        .with_env("CHANNEL_LAYERS_PREFIX", "herald-ws-utils");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        django.manage(&["shell", "-c", SCRIPT]),
    )
    .await
    .unwrap();
    // `shell` may print its auto-import summary first; the JSON is the last line.
    let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(
        json["results"],
        serde_json::json!([true, true, true, true, true, true, 2, true, false])
    );
    let messages = json["messages"].as_array().unwrap();
    let keys =
        |m: &serde_json::Value| -> Vec<String> { m.as_object().unwrap().keys().cloned().collect() };
    let without_ts = |m: &serde_json::Value| {
        let mut m = m.clone();
        let ts = m.as_object_mut().unwrap().remove("timestamp").unwrap();
        assert!(is_python_isoformat(ts.as_str().unwrap()), "{ts}");
        m
    };
    let expected = [
        (
            MESSAGE_KEYS,
            serde_json::json!({"type": "user.message", "username": "amadmin",
                "message": "Your report is ready!", "data": {}}),
        ),
        (
            MESSAGE_KEYS,
            serde_json::json!({"type": "user.message", "username": "amadmin",
                "message": "Something to say", "data": {"count": 100}}),
        ),
        (
            NOTIFICATION_KEYS,
            serde_json::json!({"type": "user.notification", "username": "amadmin",
                "notification_type": "success", "title": "Report Ready",
                "message": "Report generated successfully!", "data": {}}),
        ),
        (
            NOTIFICATION_KEYS,
            serde_json::json!({"type": "user.notification", "username": "amadmin",
                "notification_type": "info", "title": "",
                "message": "System maintenance scheduled", "data": {}}),
        ),
        (
            FILE_KEYS,
            serde_json::json!({"type": "user.file", "username": "amadmin",
                "message": "Your export is ready", "file_url": "/media/exports/data.csv",
                "file_name": "data.csv", "file_size": 156789, "data": {}}),
        ),
        (
            FILE_KEYS,
            serde_json::json!({"type": "user.file", "username": "amadmin",
                "message": "File ready for download",
                "file_url": "/media/reports/monthly_report.xlsx?v=2",
                "file_name": "monthly_report.xlsx", "file_size": null, "data": {}}),
        ),
        (
            MESSAGE_KEYS,
            serde_json::json!({"type": "user.message", "username": "amadmin",
                "message": "System maintenance in 10 minutes", "data": {}}),
        ),
        (
            MESSAGE_KEYS,
            serde_json::json!({"type": "user.message", "username": "user1",
                "message": "System maintenance in 10 minutes", "data": {}}),
        ),
        (
            NOTIFICATION_KEYS,
            serde_json::json!({"type": "user.notification", "username": "amadmin",
                "notification_type": "info", "title": "WebSocket Test",
                "message": "WebSocket connection test for amadmin", "data": {"test": true}}),
        ),
    ];
    assert_eq!(messages.len(), expected.len());
    for (i, (got, (order, want))) in messages.iter().zip(expected.iter()).enumerate() {
        assert_eq!(keys(got), *order, "message {i} key order");
        assert_eq!(without_ts(got), *want, "message {i}");
    }
}

#[test]
fn isoformat_check_accepts_only_python_shapes() {
    assert!(is_python_isoformat("2025-11-17T10:30:00"));
    assert!(is_python_isoformat("2025-11-17T10:30:00.123456"));
    assert!(!is_python_isoformat("2025-11-17 10:30:00"));
    assert!(!is_python_isoformat("2025-11-17T10:30:00+00:00"));
    assert!(!is_python_isoformat("2025-11-17T10:30:00.123"));
}
