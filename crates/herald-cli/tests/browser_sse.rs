//! The browser client's Server-Sent Events fallback in a real headless Chromium: the page's
//! WebSockets always fail (as behind a proxy that breaks them), the client notices that the
//! event stream answers, switches to an `EventSource` on `/sse/tasks/` of the real
//! `herald serve --demo --redis`, and the page shows what the CLI sends. Screenshots go to
//! `target/browser/`.
//!
//! Needs `chromium` (apt), `node` and `npm ci` in `tests/browser`; see `support::browser`.

mod support;

use herald_test_support::{RedisServer, free_port};
use serde_json::json;

use support::browser::{Browser, Served, herald_cli, metric};

/// Runs before the page's scripts: every WebSocket fails its handshake (an error, then close
/// 1006 before open, which is all a page sees of a proxy refusing the upgrade), and the
/// client retries quickly.
const BLOCK_WEBSOCKETS: &str = "
  window.__wsAttempts = 0;
  window.WebSocket = function (url) {
    window.__wsAttempts += 1;
    const ws = { url: url, readyState: 0, send() {}, close() {} };
    setTimeout(() => {
      ws.readyState = 3;
      if (ws.onerror) ws.onerror({});
      if (ws.onclose) ws.onclose({ code: 1006, reason: '', wasClean: false });
    }, 20);
    return ws;
  };
  window.taskNotificationsConfig = { initialDelay: 100, maxDelay: 400 };
";

const SSE_OPEN: &str = "window.taskNotifications && taskNotifications.transport === 'sse' && \
                        taskNotifications.ws && taskNotifications.ws.readyState === 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_falls_back_to_server_sent_events_when_websockets_keep_failing() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Served::start(([127, 0, 0, 1], free_port()).into(), &url).await;

    browser
        .ok(json!({"op": "init", "script": BLOCK_WEBSOCKETS}))
        .await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(SSE_OPEN).await;
    let attempts = browser.eval("window.__wsAttempts").await;
    assert_eq!(
        attempts, 2,
        "falls back after sseAfter (2) failed handshakes"
    );
    assert_eq!(
        metric(server.addr, "herald_sse_connections_current").await,
        1
    );

    herald_cli(
        &url,
        &["send", "--user", "demo", "Hello through the fallback"],
    )
    .await;
    browser
        .element(".herald-toast", "Hello through the fallback")
        .await;

    // A task subscribed over the event stream reopens it with the task in its URL.
    browser
        .eval("(taskNotifications.subscribeTask('sse-1'), true)")
        .await;
    // The new stream, not the one it replaces (still open for a moment): its URL names the task
    // (as `task=` or, when recovering, among the positions).
    browser
        .wait(&format!(
            "{SSE_OPEN} && taskNotifications.ws.url.includes('sse-1')"
        ))
        .await;
    herald_cli(
        &url,
        &[
            "group-send",
            "task_sse-1",
            r#"{"type": "task.complete", "task_id": "sse-1", "message": "Export finished"}"#,
        ],
    )
    .await;
    browser.element(".herald-toast", "Export finished").await;
    browser.screenshot("sse-fallback.png").await;

    let logs = browser.assert_clean_console().await;
    assert!(
        logs.iter().any(|l| l.contains("using Server-Sent Events")),
        "{logs:#?}"
    );
    // Still on the event stream, with one stream open, and no WebSocket tried since.
    assert_eq!(browser.eval("window.__wsAttempts").await, 2);
    assert_eq!(
        metric(server.addr, "herald_sse_connections_current").await,
        1
    );
    browser.quit().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_websocket_never_falls_back_and_sse_uses_only_the_event_stream() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Served::start(([127, 0, 0, 1], free_port()).into(), &url).await;

    let never =
        format!("{BLOCK_WEBSOCKETS} window.taskNotificationsConfig.transport = 'websocket';");
    browser.ok(json!({"op": "init", "script": never})).await;
    browser.open(&server.url("/demo/")).await;
    // The server answers while every handshake fails: after `maxRefusals` (3) the client
    // takes it for a refusal and stops, as before the fallback existed.
    browser
        .wait("window.taskNotifications && taskNotifications.state === 'unauthorized'")
        .await;
    assert_eq!(browser.eval("window.__wsAttempts").await, 3);
    assert_eq!(
        browser.eval("taskNotifications.transport").await,
        "websocket"
    );
    assert_eq!(metric(server.addr, "herald_sse_connections_total").await, 0);

    // 'sse' from the start: no WebSocket at all.
    let forced = format!("{BLOCK_WEBSOCKETS} window.taskNotificationsConfig.transport = 'sse';");
    browser.ok(json!({"op": "init", "script": forced})).await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(SSE_OPEN).await;
    assert_eq!(browser.eval("window.__wsAttempts").await, 0);
    herald_cli(&url, &["send", "--user", "demo", "Forced stream"]).await;
    browser.element(".herald-toast", "Forced stream").await;
    browser.quit().await;
    drop(server);
}
