//! The `herald` Python package's layer (`herald.layers.RedisChannelLayer`, driven by
//! tests/compat/peer.py `--layer herald` the way a Django project builds it from settings)
//! and `herald serve` on one real Redis: what the package sends reaches a browser socket, and
//! what herald's senders send reaches a consumer on the package.

mod support;

use std::time::Duration;

use herald_test_support::ws::recv_json;
use herald_test_support::{RedisServer, herald_package_python};
use support::{Herald, herald, ws_connect_as};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn package_group_send_reaches_a_socket_and_herald_send_reaches_a_package_consumer() {
    let Some(python) = herald_package_python() else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let config = serde_json::json!({"hosts": [url]});
    let server = Herald::start(&["--redis", &url, "--trusted-user-header", "x-remote-user"]).await;
    let mut ws = ws_connect_as(server.addr, "amadmin").await;

    // The guide's ws_send_message shape, sent through async_to_sync(group_send).
    let message = serde_json::json!({
        "type": "user.message",
        "message": "Hello from Django",
        "username": "amadmin",
        "data": {"count": 3},
        "timestamp": "2026-01-01T00:00:00",
    });
    let args = [
        "--layer",
        "herald",
        "group_send",
        "user_amadmin",
        &message.to_string(),
    ];
    let peer = support::peer_py(&python, &config, &args);
    let out = tokio::time::timeout(Duration::from_secs(30), peer.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let reply: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_message");
    assert_eq!(frame["message"], "Hello from Django");
    assert_eq!(frame["data"]["count"], 3);

    // A consumer on the package, in user_bob's group, gets what `herald send` sends.
    let args = [
        "--layer", "herald", "listen", "--groups", "user_bob", "--count", "1",
    ];
    let mut listener = support::peer_py(&python, &config, &args);
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await["event"], "ready");
    let out = herald(&["send", "--redis", &url, "--user", "bob", "Hi Bob"]).await;
    assert!(out.status.success(), "{out:?}");
    let got = next_line(&mut lines).await;
    assert_eq!(got["event"], "message");
    assert_eq!(got["message"]["type"], "user.message");
    assert_eq!(got["message"]["message"], "Hi Bob");
    assert_eq!(got["message"]["username"], "bob");
}
