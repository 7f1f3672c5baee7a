//! `herald test-connection` during a migration: a user with one socket on Daphne and one on
//! `herald serve` gets the same test notification on both (nothing added for the count), and
//! the count is the herald socket that handled it.

mod support;

use std::time::Duration;

use herald_test_support::compat_python;
use herald_test_support::ws::recv_text;
use serde_json::Value;
use support::django::Site;
use support::{herald, ws_connect_browser};

/// Polls `herald online USER` until it reports `expected` (the herald socket's presence
/// record is written just after the handshake).
async fn wait_online(redis_url: &str, user: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = herald(&["online", "--redis", redis_url, user]).await;
        if String::from_utf8_lossy(&out.stdout).trim() == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daphne_socket_and_a_herald_socket_get_the_same_test_notification() {
    let Some(python) = compat_python() else {
        return;
    };
    let site = Site::start(python, "amadmin").await;
    let daphne = site.db.django.daphne().await;
    let cookie = &site.db.fixture.cookie;
    let mut on_herald = ws_connect_browser(&site.herald.addr.to_string(), cookie).await;
    let mut on_daphne = ws_connect_browser(&daphne.host, cookie).await;
    let redis = site.db.redis.url();
    wait_online(&redis, "amadmin", "online (1 connection)").await;

    let out = herald(&["test-connection", "--redis", &redis, "amadmin"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 socket of amadmin received the test message",
        "{out:?}"
    );

    let mut ours: Value = serde_json::from_str(&recv_text(&mut on_herald).await).unwrap();
    let mut theirs: Value = serde_json::from_str(&recv_text(&mut on_daphne).await).unwrap();
    // The test project's consumer forwards the event as it came (`user.notification`); the
    // guide's herald consumer names the handler (`user_notification`). Everything else is the
    // message itself, and must be the same: no key added for the count.
    assert_eq!(ours["type"], "user_notification");
    assert_eq!(theirs["type"], "user.notification");
    ours.as_object_mut().unwrap().remove("type");
    theirs.as_object_mut().unwrap().remove("type");
    assert_eq!(ours, theirs);
    assert_eq!(ours["title"], "WebSocket Test");
    assert!(ours.get("herald_ack").is_none(), "{ours}");
}
