//! SIGTERM on `herald serve`: stop accepting, close sockets with 1001, discard memberships.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use herald_test_support::RedisServer;
use support::{Herald, herald, ws_connect_as};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn zcard(redis: &RedisServer, key: &str) -> i64 {
    let out = tokio::time::timeout(
        support::TIMEOUT,
        tokio::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "ZCARD", key])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_with_1001_and_leaves_no_memberships_or_presence() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Without recorded groups (the default): with them, the fleet's recording member stays
    // for the retention window (next test).
    let server = Herald::start(&["--redis", &url, "--trusted-user-header", "x-remote-user"]).await;
    let mut a = ws_connect_as(server.addr, "amadmin").await;
    let mut b = ws_connect_as(server.addr, "bob").await;
    assert_eq!(zcard(&redis, "asgi:group:user_amadmin").await, 1);
    let online = herald(&["online", "--redis", &url]).await;
    assert_eq!(
        String::from_utf8_lossy(&online.stdout).trim(),
        "amadmin\nbob"
    );

    let addr = server.addr;
    let status = server.terminate().await;
    assert!(status.success(), "herald exited with {status}");
    for ws in [&mut a, &mut b] {
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
            {
                Some(Ok(WsMessage::Close(Some(frame)))) => break u16::from(frame.code),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(code, 1001);
    }
    assert_eq!(zcard(&redis, "asgi:group:user_amadmin").await, 0);
    assert_eq!(zcard(&redis, "asgi:group:user_bob").await, 0);
    let online = herald(&["online", "--redis", &url]).await;
    assert_eq!(String::from_utf8_lossy(&online.stdout).trim(), "");
    // The listener is gone: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A recorded group (`user_*` with `--history on`) keeps one member after the last socket left: the
/// fleet's recording channel, so that a user whose tab is reconnecting (to this server after
/// a restart, or to another) misses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leaves_only_the_fleets_recording_member() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Herald::start(&[
        "--redis",
        &url,
        "--trusted-user-header",
        "x-remote-user",
        "--history",
        "on",
    ])
    .await;
    let _a = ws_connect_as(server.addr, "amadmin").await;
    let status = server.terminate().await;
    assert!(status.success(), "herald exited with {status}");
    let out = tokio::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "ZRANGE",
            "asgi:group:user_amadmin",
            "0",
            "-1",
        ])
        .output()
        .await
        .unwrap();
    let members = String::from_utf8_lossy(&out.stdout);
    let members: Vec<&str> = members.lines().collect();
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(members[0].starts_with("herald.history.k"), "{members:?}");
    assert!(members[0].ends_with("!user_amadmin"), "{members:?}");
}
