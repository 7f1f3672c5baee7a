//! `--backend pubsub`: a site on `channels_redis.pubsub.RedisPubSubChannelLayer` switches to
//! herald too.

mod support;

use herald_test_support::ws::recv_json;
use herald_test_support::{RedisServer, compat_python, workspace_root};
use support::{Herald, herald, ws_connect_as};

#[tokio::test(flavor = "multi_thread")]
async fn python_pubsub_group_send_reaches_a_pubsub_herald() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Herald::start(&[
        "--backend",
        "pubsub",
        "--redis",
        &url,
        "--trusted-user-header",
        "x-remote-user",
    ])
    .await;
    let mut ws = ws_connect_as(server.addr, "amadmin").await;

    // From the shell on the same backend.
    let out = herald(&[
        "send",
        "--backend",
        "pubsub",
        "--redis",
        &url,
        "--user",
        "amadmin",
        "hi",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(recv_json(&mut ws).await["message"], "hi");

    // From the real Python pubsub layer.
    let Some(python) = compat_python() else {
        return;
    };
    let config = serde_json::json!({"hosts": [{"address": url, "socket_timeout": null}]});
    let message = r#"{"type": "user.notification", "notification_type": "success", "message": "from python"}"#;
    let out = tokio::time::timeout(
        support::TIMEOUT,
        tokio::process::Command::new(python)
            .arg(workspace_root().join("tests/compat/peer.py"))
            .args(["--layer", "pubsub", "--config", &config.to_string()])
            .args(["group_send", "user_amadmin", message])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_notification");
    assert_eq!(frame["message"], "from python");
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_refuses_core_only_options() {
    let out = herald(&[
        "send",
        "--backend",
        "pubsub",
        "--redis",
        "redis://127.0.0.1:1",
        "--capacity",
        "5",
        "--user",
        "u",
        "x",
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("core-only"));
}
