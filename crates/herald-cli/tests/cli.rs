//! `herald` end to end: the real binary, a real redis-server, real WebSocket clients.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use herald_test_support::RedisServer;
use herald_test_support::ws::recv_json;
use support::{Herald, herald, ws_connect_as};

#[tokio::test(flavor = "multi_thread")]
async fn send_reaches_the_users_socket_through_redis() {
    let redis = RedisServer::start();
    let server = Herald::start(&[
        "--redis",
        &redis.url(),
        "--trusted-user-header",
        "x-remote-user",
    ])
    .await;
    let mut ws = ws_connect_as(server.addr, "amadmin").await;

    let out = herald(&[
        "send",
        "--redis",
        &redis.url(),
        "--user",
        "amadmin",
        "Hello from the shell!",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent to group user_amadmin: 1 channel"
    );

    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_message");
    assert_eq!(frame["username"], "amadmin");
    assert_eq!(frame["message"], "Hello from the shell!");
    assert_eq!(frame["data"], serde_json::json!({}));
    assert!(frame["timestamp"].as_str().unwrap().contains('T'));
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_file_and_group_send_arrive_as_the_guide_shows() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Herald::start(&["--redis", &url, "--trusted-user-header", "x-remote-user"]).await;
    let mut ws = ws_connect_as(server.addr, "amadmin").await;

    let out = herald(&[
        "notify",
        "--redis",
        &url,
        "--user",
        "amadmin",
        "--type",
        "success",
        "--title",
        "Report Ready",
        "--data",
        r#"{"count": 100}"#,
        "Report generated successfully!",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_notification");
    assert_eq!(frame["notification_type"], "success");
    assert_eq!(frame["title"], "Report Ready");
    assert_eq!(frame["data"]["count"], 100);

    let out = herald(&[
        "file",
        "--redis",
        &url,
        "--user",
        "amadmin",
        "--size",
        "156789",
        "/media/exports/data.csv",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_file");
    assert_eq!(frame["file_name"], "data.csv");
    assert_eq!(frame["file_size"], 156789);
    assert_eq!(frame["message"], "File ready for download");

    // A task subscription, then a Celery-style progress update via group-send.
    herald_test_support::ws::send_json(
        &mut ws,
        serde_json::json!({"action": "subscribe", "task_id": "t42"}),
    )
    .await;
    let ack = recv_json(&mut ws).await;
    assert_eq!(ack["task_id"], "t42");
    let out = herald(&[
        "group-send",
        "--redis",
        &url,
        "task_t42",
        r#"{"type": "task.update", "task_id": "t42", "progress": 25}"#,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "task_update");
    assert_eq!(frame["progress"], 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_counts_like_python_and_reaches_each_user() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Herald::start(&["--redis", &url, "--trusted-user-header", "x-remote-user"]).await;
    let mut a = ws_connect_as(server.addr, "alice").await;
    let mut b = ws_connect_as(server.addr, "bob").await;
    let out = herald(&[
        "broadcast",
        "--redis",
        &url,
        "--user",
        "alice,bob",
        "Maintenance in 10 minutes",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent to 2 of 2 users"
    );
    assert_eq!(
        recv_json(&mut a).await["message"],
        "Maintenance in 10 minutes"
    );
    assert_eq!(
        recv_json(&mut b).await["message"],
        "Maintenance in 10 minutes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_fail_with_a_clear_error() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dead = format!("http://127.0.0.1:{}", herald_test_support::free_port());
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "notify", "--redis", &url, "--user", "u", "--type", "loud", "x",
            ],
            "unknown notification type",
        ),
        (
            &[
                "send", "--redis", &url, "--user", "u", "--data", "{nope", "x",
            ],
            "--data is not valid JSON",
        ),
        (
            &["send", "--redis", &url, "--user", "u", "--data", "[1]", "x"],
            "--data must be a JSON object",
        ),
        (
            &[
                "group-send",
                "--redis",
                &url,
                "bad group",
                r#"{"type": "x"}"#,
            ],
            "Group name must be",
        ),
        (
            &["group-send", "--redis", &url, "g", r#"{"no": "type"}"#],
            "\"type\"",
        ),
        (
            &["send", "--server", &dead, "--user", "u", "x"],
            "no Redis configured",
        ),
        (
            &[
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--trusted-proxy",
                "10.0.0.0/33",
            ],
            "trusted proxy \"10.0.0.0/33\"",
        ),
    ];
    for (args, expected) in cases {
        let out = herald(args).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = herald(&["send", "--redis", "localhost:6379", "--user", "u", "x"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with redis://"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_defaults_work_with_nothing_else_running() {
    // No Redis, no Django: the in-memory layer, /healthz up, /ws/tasks/ refuses the anonymous.
    let server = Herald::start(&[]).await;
    let health = support::http_get(server.addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let url = format!("ws://{}/ws/tasks/", server.addr);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn toml_file_configures_serve_and_flags_win() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "[layer]\nhosts = [\"{}\"]\nprefix = \"filepfx\"\n\n[server]\ntrusted_user_header = \"x-remote-user\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let server = Herald::start(&["--config", path.to_str().unwrap()]).await;
    let mut ws = ws_connect_as(server.addr, "amadmin").await;
    // A sender with another prefix does not reach it; one with the file's prefix does.
    let url = redis.url();
    let out = herald(&[
        "send", "--redis", &url, "--prefix", "other", "--user", "amadmin", "lost",
    ])
    .await;
    assert!(out.status.success());
    let out = herald(&[
        "send",
        "--config",
        path.to_str().unwrap(),
        "--user",
        "amadmin",
        "found",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(recv_json(&mut ws).await["message"], "found");
    let nothing = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(nothing.is_err(), "unexpected frame {nothing:?}");

    std::fs::write(&path, "[layer]\nprefx = \"typo\"\n").unwrap();
    let out = herald(&[
        "send",
        "--config",
        path.to_str().unwrap(),
        "--user",
        "u",
        "x",
    ])
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("prefx"));
}
