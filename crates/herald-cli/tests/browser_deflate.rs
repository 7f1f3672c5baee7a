//! `permessage-deflate` with a real headless Chromium: `herald serve --permessage-deflate`
//! accepts the extension Chromium offers on every WebSocket, the page's notifications arrive
//! compressed and intact, and what the page sends (task subscriptions, which Chromium
//! compresses with its context kept across messages) is inflated and understood. Without the
//! flag the same page gets no extension. Screenshots go to `target/browser/`.
//!
//! Needs `chromium` (apt), `node` and `npm ci` in `tests/browser`; see `support::browser`.

mod support;

use std::time::Duration;

use herald_test_support::{RedisServer, eventually, free_port};

use support::browser::{Browser, Served, herald_cli, metric};

const OPEN: &str = "window.taskNotifications && taskNotifications.ws && \
                    taskNotifications.ws.readyState === 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_negotiates_deflate_and_both_directions_work() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Served::start_with(
        ([127, 0, 0, 1], free_port()).into(),
        &["--redis", &url, "--permessage-deflate"],
    )
    .await;

    browser.open(&server.url("/demo/")).await;
    browser.wait(OPEN).await;
    assert_eq!(
        browser.eval("taskNotifications.ws.extensions").await,
        "permessage-deflate; server_no_context_takeover"
    );

    let long = "Your export is ready: 12,345 rows in reports/2026-11.csv, download it from \
                the reports page before it expires tomorrow.";
    herald_cli(&url, &["send", "--user", "demo", long]).await;
    browser.element(".herald-toast", long).await;
    assert!(metric(server.addr, "herald_frames_deflated_total").await >= 1);

    // Two subscriptions, sent compressed by Chromium (the second refers back into the
    // first), then a task message for each: delivered only if both were understood.
    let before = metric(server.addr, "herald_frames_in_total").await;
    browser
        .eval(
            "(taskNotifications.subscribeTask('deflate-task-1'), \
              taskNotifications.subscribeTask('deflate-task-2'), true)",
        )
        .await;
    eventually(
        Duration::from_secs(15),
        "both subscriptions read",
        || async { metric(server.addr, "herald_frames_in_total").await >= before + 2 },
    )
    .await;
    for task in ["deflate-task-1", "deflate-task-2"] {
        let message = format!(
            r#"{{"type": "task.complete", "task_id": "{task}", "message": "Finished {task} with all of its rows exported"}}"#
        );
        herald_cli(&url, &["group-send", &format!("task_{task}"), &message]).await;
        browser
            .element(
                ".herald-toast",
                &format!("Finished {task} with all of its rows exported"),
            )
            .await;
    }
    browser.screenshot("deflate.png").await;
    browser.assert_clean_console().await;
    drop(server);

    // Without the flag Chromium's offer is declined.
    let plain = Served::start(([127, 0, 0, 1], free_port()).into(), &url).await;
    browser.open(&plain.url("/demo/")).await;
    browser.wait(OPEN).await;
    assert_eq!(browser.eval("taskNotifications.ws.extensions").await, "");
    browser.quit().await;
    drop(plain);
}
