//! Presence across herald processes, the publish API from the shell, and test-connection.

mod support;

use std::time::{Duration, Instant};

use herald_test_support::RedisServer;
use herald_test_support::ws::recv_json;
use support::{Herald, herald, ws_connect_as};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `herald online USER` until it prints `expected` (no fixed sleeps).
async fn wait_online(redis_url: &str, user: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = herald(&["online", "--redis", redis_url, user]).await;
        assert!(out.status.success(), "{out:?}");
        if stdout(&out) == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user}: still {:?}, want {expected:?}",
            stdout(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_spans_instances_and_a_killed_instance_goes_offline_within_the_ttl() {
    let redis = RedisServer::start();
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--trusted-user-header",
        "x-remote-user",
        "--presence-ttl",
        "2",
    ];
    let one = Herald::start(&flags).await;
    let mut two = Herald::start(&flags).await;
    let _a = ws_connect_as(one.addr, "alice").await;
    let _b = ws_connect_as(two.addr, "alice").await;
    let _c = ws_connect_as(two.addr, "bob").await;
    wait_online(&url, "alice", "online (2 connections)").await;
    let out = herald(&["online", "--redis", &url]).await;
    assert_eq!(stdout(&out), "alice\nbob");

    // SIGKILL: no clean disconnect, no presence removal. The records lapse after the TTL.
    let killed_at = Instant::now();
    two.child.start_kill().unwrap();
    wait_online(&url, "bob", "offline (0 connections)").await;
    wait_online(&url, "alice", "online (1 connection)").await;
    // Documented bound: TTL (2 s) plus read slack.
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_connection_counts_receiving_sockets() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Herald::start(&["--redis", &url, "--trusted-user-header", "x-remote-user"]).await;
    let out = herald(&["test-connection", "--redis", &url, "--wait", "1", "amadmin"]).await;
    assert!(!out.status.success());
    assert_eq!(
        stdout(&out),
        "0 sockets of amadmin received the test message"
    );
    let mut ws = ws_connect_as(server.addr, "amadmin").await;
    let out = herald(&["test-connection", "--redis", &url, "amadmin"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "1 socket of amadmin received the test message"
    );
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["title"], "WebSocket Test");
    assert!(frame.get("herald_ack").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn senders_use_the_publish_api_with_its_token() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Herald::start(&[
        "--redis",
        &url,
        "--trusted-user-header",
        "x-remote-user",
        "--publish-token",
        "s3cret",
    ])
    .await;
    let api = format!("http://{}", server.addr);
    let mut ws = ws_connect_as(server.addr, "amadmin").await;

    let out = herald(&[
        "notify", "--server", &api, "--user", "amadmin", "--type", "error", "boom",
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong or missing --token"));

    let out = herald(&[
        "notify",
        "--server",
        &api,
        "--token",
        "s3cret",
        "--user",
        "amadmin",
        "--type",
        "error",
        "--json",
        "Failed to process file",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["members"], 1);
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_notification");
    assert_eq!(frame["notification_type"], "error");
    assert_eq!(frame["message"], "Failed to process file");

    let out = herald(&["online", "--server", &api, "--token", "s3cret", "amadmin"]).await;
    assert_eq!(stdout(&out), "online (1 connection)");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_quick_start_works_without_redis() {
    // README quick start: `herald serve --demo`, then `herald send --user demo "Hello"`.
    let server = Herald::start(&["--demo"]).await;
    let api = format!("http://{}", server.addr);
    let url = format!("ws://{}/ws/tasks/", server.addr);
    let (mut ws, _) = tokio::time::timeout(support::TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    let out = herald(&["send", "--server", &api, "--user", "demo", "Hello"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "sent to group user_demo: 1 channel");
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_message");
    assert_eq!(frame["message"], "Hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_connection_works_across_three_shards() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let hosts = urls.join(",");
    let server =
        Herald::start(&["--redis", &hosts, "--trusted-user-header", "x-remote-user"]).await;
    let _ws = ws_connect_as(server.addr, "amadmin").await;
    for _ in 0..3 {
        // Each run picks a new ack channel; whichever shard the ack lands on, it is read.
        let out = herald(&["test-connection", "--redis", &hosts, "amadmin"]).await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            stdout(&out),
            "1 socket of amadmin received the test message"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_connection_without_redis_goes_through_the_server() {
    let server = Herald::start(&["--demo"]).await;
    let api = format!("http://{}", server.addr);
    let base = [
        "test-connection",
        "--server",
        api.as_str(),
        "--wait",
        "1",
        "demo",
    ];
    let out = herald(&base).await;
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "0 sockets of demo received the test message");
    let url = format!("ws://{}/ws/tasks/", server.addr);
    let (mut ws, _) = tokio::time::timeout(support::TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    let out = herald(&base).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "1 socket of demo received the test message");
    assert_eq!(recv_json(&mut ws).await["title"], "WebSocket Test");
}
