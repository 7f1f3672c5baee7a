//! The browser client `task-notifications.js` in a real headless Chromium: a real
//! `redis-server`, the real `herald serve --demo --redis`, Debian's `/usr/bin/chromium` driven
//! by `tests/browser/driver.mjs` (playwright-core, never a downloaded browser), and real
//! senders: the Django test project's `OptsIO.ws_utils` through Python channels_redis, and the
//! `herald notify | send | file | group-send` CLI. Screenshots go to `target/browser/`.
//!
//! Needs `chromium` (apt), `node` and `npm ci` in `tests/browser`, plus the compat venv. When one
//! is missing the tests print why and pass locally; under `HERALD_REQUIRE_COMPAT=1` (CI) they
//! fail with an install hint.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald_test_support::{RedisServer, compat_python, free_port, workspace_root};
use serde_json::json;
use tokio::process::Command;

use support::browser::{Browser, Served, WS_OPEN, herald_cli};
use support::{TIMEOUT, herald};

/// A Django shell start plus one send.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `code` in `manage.py shell` of the Django test project with channels_redis on
/// `redis_url`; returns stdout.
async fn django_shell(python: &Path, redis_url: &str, code: &str) -> String {
    let db = tempfile::tempdir().unwrap();
    let child = Command::new(python)
        .args(["manage.py", "shell", "--no-imports", "-c", code])
        .current_dir(workspace_root().join("tests/compat/django_project"))
        .env_remove("SESSION_ENGINE")
        .env_remove("SECRET_KEY_FALLBACKS")
        .env_remove("AUTHENTICATION_BACKENDS")
        .env("REDIS_URL", redis_url)
        .env(
            "DATABASE_URL",
            format!("sqlite:///{}", db.path().join("db.sqlite3").display()),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(PYTHON_TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "django shell failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_shows_toasts_and_the_file_dialog_for_python_and_cli_senders() {
    let Some(python) = compat_python() else {
        return;
    };
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Served::start(([127, 0, 0, 1], free_port()).into(), &url).await;

    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    browser.element("#state", "open").await;

    // Python: the guide's Django shell flow through channels_redis.
    let said = django_shell(
        &python,
        &url,
        "from OptsIO.ws_utils import ws_send_notification as n, ws_send_message as m\n\
         print(n('demo', 'Report generated successfully!', 'success', 'Report Ready'))\n\
         print(m('demo', 'Hello from the Django shell!'))",
    )
    .await;
    assert_eq!(
        said.split_whitespace().collect::<Vec<_>>(),
        ["True", "True"]
    );
    let ok = browser
        .element(
            ".herald-toast.herald-toast-success",
            "Report generated successfully!",
        )
        .await;
    assert_eq!(ok["attrs"]["role"], "status");
    let title = browser
        .eval("document.querySelector('.herald-toast-success .herald-toast-title').textContent")
        .await;
    assert_eq!(title, "Report Ready");
    browser
        .element(
            ".herald-toast.herald-toast-info",
            "Hello from the Django shell!",
        )
        .await;

    // CLI: every notification colour.
    herald_cli(
        &url,
        &[
            "notify",
            "--user",
            "demo",
            "--type",
            "error",
            "--title",
            "Error",
            "Failed to process file",
        ],
    )
    .await;
    let err = browser
        .element(".herald-toast.herald-toast-error", "Failed to process file")
        .await;
    assert_eq!(err["attrs"]["role"], "alert");
    herald_cli(
        &url,
        &[
            "notify",
            "--user",
            "demo",
            "--type",
            "warning",
            "Disk space low",
        ],
    )
    .await;
    browser
        .element(".herald-toast.herald-toast-warning", "Disk space low")
        .await;

    // Message text is text, never markup.
    let evil = r#"<img src=x onerror="window.__xss=1">pwned"#;
    herald_cli(&url, &["send", "--user", "demo", evil]).await;
    let toast = browser.element(".herald-toast-info", "pwned").await;
    assert!(toast["text"].as_str().unwrap().contains(evil), "{toast}");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('.herald-toasts img').length")
            .await,
        0
    );
    assert_eq!(browser.eval("window.__xss === undefined").await, true);

    // The demo page's '*' handler saw every message.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#events .event').length")
            .await,
        5
    );
    browser.screenshot("toasts.png").await;

    // user_file: the modal with name, human size and a new-tab Download link.
    herald_cli(
        &url,
        &[
            "file",
            "--user",
            "demo",
            "/media/reports/sales_2025.xlsx",
            "--name",
            "sales_2025.xlsx",
            "--size",
            "156789",
            "--message",
            "Your export is ready",
        ],
    )
    .await;
    browser
        .element(".herald-modal .herald-modal-title", "Your export is ready")
        .await;
    let name = browser.element(".herald-modal .herald-file-name", "").await;
    assert_eq!(name["text"], "sales_2025.xlsx");
    let size = browser.element(".herald-modal .herald-file-size", "").await;
    assert_eq!(size["text"], "153.1 KB");
    let link = browser
        .element(".herald-modal a.herald-download", "Download")
        .await;
    assert_eq!(
        link["attrs"]["href"],
        server.url("/media/reports/sales_2025.xlsx")
    );
    assert_eq!(link["attrs"]["target"], "_blank");
    assert!(link["attrs"]["rel"].as_str().unwrap().contains("noopener"));
    assert_eq!(
        browser.eval("document.activeElement.className").await,
        "herald-download"
    );
    browser.screenshot("file-dialog.png").await;
    browser
        .ok(json!({"op": "click", "selector": ".herald-modal .herald-close"}))
        .await;
    browser
        .wait("document.querySelectorAll('.herald-modal').length === 0")
        .await;

    // Python's ws_send_file without a name: derived from the URL, no size line.
    let said = django_shell(
        &python,
        &url,
        "from OptsIO.ws_utils import ws_send_file\n\
         print(ws_send_file('demo', '/media/reports/monthly_report.xlsx'))",
    )
    .await;
    assert_eq!(said.trim(), "True");
    let name = browser.element(".herald-modal .herald-file-name", "").await;
    assert_eq!(name["text"], "monthly_report.xlsx");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('.herald-modal .herald-file-size').length")
            .await,
        0
    );
    browser
        .ok(json!({"op": "click", "selector": ".herald-modal .herald-close"}))
        .await;

    // A javascript: URL is never made a link.
    herald_cli(
        &url,
        &[
            "file",
            "--user",
            "demo",
            "javascript:window.__xss=2",
            "--name",
            "x.txt",
        ],
    )
    .await;
    browser
        .element(".herald-modal .herald-file-name", "x.txt")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('.herald-modal .herald-download').length")
            .await,
        0
    );
    browser
        .ok(json!({"op": "click", "selector": ".herald-modal .herald-close"}))
        .await;

    // Toasts dismiss themselves.
    browser
        .eval("taskNotifications.configure({toastDuration: 600}), true")
        .await;
    herald_cli(&url, &["send", "--user", "demo", "short-lived"]).await;
    browser.element(".herald-toast-info", "short-lived").await;
    browser
        .wait("![...document.querySelectorAll('.herald-toast')].some(t => t.textContent.includes('short-lived'))")
        .await;

    let logs = browser.assert_clean_console().await;
    assert!(
        logs.iter().any(|l| l.contains("WebSocket connected")),
        "{logs:#?}"
    );
    browser.quit().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_a_server_restart_and_resubscribes_its_tasks() {
    let Some(python) = compat_python() else {
        return;
    };
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let server = Served::start(addr, &url).await;

    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    // Short backoff so the test is quick; counters for the lifecycle and the subscribe acks.
    browser
        .eval(
            "taskNotifications.configure({initialDelay: 100, maxDelay: 800});\
             window.__n = {open: 0, close: 0, reconnecting: 0, subscribed: 0};\
             window.__delays = [];\
             taskNotifications.on('reconnecting', e => window.__delays.push(e.delay));\
             ['open', 'close', 'reconnecting', 'subscribed'].forEach(\
               t => taskNotifications.on(t, () => { window.__n[t] += 1; }));\
             taskNotifications.subscribeTask('build-42');\
             window.__first = taskNotifications.ws;",
        )
        .await;
    browser.wait("window.__n.subscribed === 1").await;

    server.kill().await;
    // More failed handshakes than `maxRefusals`: a server that is down is not refusing (its
    // probe gets no answer), so the client keeps trying.
    browser
        .wait("window.__n.close >= 1 && window.__n.reconnecting >= 5")
        .await;
    assert_ne!(
        browser.eval("taskNotifications.state").await,
        "unauthorized"
    );
    browser.element("#state", "reconnecting").await;
    // Equal jitter: attempt n waits between half and all of min(800, 100 * 2^n) ms.
    let delays: Vec<u64> = serde_json::from_value(browser.eval("window.__delays").await).unwrap();
    for (n, d) in delays.iter().enumerate() {
        let cap = (100u64 << n.min(10)).min(800);
        assert!(
            (cap / 2..=cap).contains(d),
            "attempt {n} waited {d} ms: {delays:?}"
        );
    }
    assert_eq!(
        browser.eval("taskNotifications.ws.readyState === 1").await,
        false
    );
    browser.screenshot("reconnecting.png").await;

    let server = Served::start(addr, &url).await;
    browser
        .wait("taskNotifications.ws !== window.__first && taskNotifications.ws.readyState === 1")
        .await;
    // The page subscribed once; the client restored it on the new socket by itself.
    browser
        .wait("window.__n.subscribed === 2 && window.__n.open === 1")
        .await;
    browser.element("#state", "open").await;

    herald_cli(
        &url,
        &["group-send", "task_build-42",
          r#"{"type": "task.complete", "task_id": "build-42", "status": "completed", "message": "Build 42 finished"}"#],
    )
    .await;
    browser
        .element(".herald-toast-success", "Build 42 finished")
        .await;
    let said = django_shell(
        &python,
        &url,
        "from OptsIO.ws_utils import ws_send_notification\n\
         print(ws_send_notification('demo', 'Back online', 'info', 'Notice'))",
    )
    .await;
    assert_eq!(said.trim(), "True");
    browser.element(".herald-toast-info", "Back online").await;
    browser.screenshot("reconnected.png").await;

    // Unsubscribing is also remembered: the next reconnect does not resubscribe.
    let left = browser
        .eval("(taskNotifications.unsubscribeTask('build-42'), taskNotifications.subscribedTasks().length)")
        .await;
    assert_eq!(left, 0);
    browser.assert_clean_console().await;
    browser.quit().await;
    drop(server);
}

/// What a host app (the guide's `UiB.Msg*` helpers) sets up before the client loads.
const HOST_APP: &str = r#"
window.taskNotificationsConfig = {autoConnect: false};
window.UiB = {
  calls: [],
  MsgInfo(m, t) { this.calls.push(['info', m, t]); },
  MsgSuccess(m, t) { this.calls.push(['success', m, t]); },
  MsgError(m, t) { this.calls.push(['error', m, t]); },
  MsgWarning(m, t) { this.calls.push(['warning', m, t]); },
  MsgSwall(f) { this.calls.push(['file', f.fileName, f.sizeText, f.url, f.message]); },
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_can_delay_connecting_and_replace_the_ui() {
    if compat_python().is_none() {
        return;
    }
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Served::start(([127, 0, 0, 1], free_port()).into(), &url).await;

    browser.ok(json!({"op": "init", "script": HOST_APP})).await;
    browser.open(&server.url("/demo/")).await;
    // autoConnect: false holds across the load event and the client's deferred start.
    let idle = browser
        .wait(
            "new Promise(r => setTimeout(() => r(document.readyState === 'complete' && \
             taskNotifications.ws === null && taskNotifications.state === 'idle'), 300))",
        )
        .await;
    assert_eq!(idle, true);

    browser
        .eval(
            "taskNotifications.configure({ui: {\
               info: (m, t) => UiB.MsgInfo(m, t), success: (m, t) => UiB.MsgSuccess(m, t),\
               error: (m, t) => UiB.MsgError(m, t), warning: (m, t) => UiB.MsgWarning(m, t),\
               file: (f) => UiB.MsgSwall(f)}});\
             window.__removed = 0;\
             window.__gone = () => { window.__removed += 1; };\
             taskNotifications.on('user_notification', window.__gone);\
             taskNotifications.off('user_notification', window.__gone);\
             taskNotifications.connect();",
        )
        .await;
    browser.wait(WS_OPEN).await;

    herald_cli(
        &url,
        &[
            "notify",
            "--user",
            "demo",
            "--type",
            "success",
            "--title",
            "Sync Complete",
            "Synchronized 100 records",
        ],
    )
    .await;
    herald_cli(
        &url,
        &["send", "--user", "demo", "Starting data synchronization..."],
    )
    .await;
    herald_cli(
        &url,
        &[
            "file",
            "--user",
            "demo",
            "/media/exports/data.csv",
            "--size",
            "156789",
            "--message",
            "Your export is ready",
        ],
    )
    .await;
    let calls = browser.wait("UiB.calls.length === 3 && UiB.calls").await;
    assert_eq!(
        calls,
        json!([
            ["success", "Synchronized 100 records", "Sync Complete"],
            ["info", "Starting data synchronization...", ""],
            [
                "file",
                "data.csv",
                "153.1 KB",
                server.url("/media/exports/data.csv"),
                "Your export is ready"
            ],
        ])
    );
    // The host's UI replaced the built-in one, and a removed handler stays removed.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('.herald-toast, .herald-modal').length")
            .await,
        0
    );
    assert_eq!(browser.eval("window.__removed").await, 0);
    let sizes = browser
        .eval("[0, 1023, 1024, 156789, 5 * 1024 ** 3, null, -1].map(taskNotifications.formatFileSize)")
        .await;
    assert_eq!(
        sizes,
        json!(["0 B", "1023 B", "1.0 KB", "153.1 KB", "5.0 GB", "", ""])
    );
    browser.assert_clean_console().await;
    browser.quit().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_needs_the_flag_but_the_client_script_is_always_served() {
    let plain = support::Herald::start(&[]).await;
    let demo = support::http_get(plain.addr, "/demo/").await;
    assert!(demo.starts_with("HTTP/1.1 404"), "{demo}");
    let js = support::http_get(plain.addr, "/static/herald/task-notifications.js").await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(
        js.to_ascii_lowercase()
            .contains("content-type: text/javascript; charset=utf-8")
    );
    assert!(js.contains("window.taskNotifications") || js.contains("global.taskNotifications"));
    plain.terminate().await;

    let refused = herald(&["serve", "--demo", "--bind", "0.0.0.0:0"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--demo only binds to loopback"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The README's newcomer flow: `herald serve --demo` (no Redis), open `/demo/`, then
/// `herald send --user demo "Hello"` from another process (through the publish API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_flow_without_redis_shows_the_message() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let server = Served::start_with(([127, 0, 0, 1], free_port()).into(), &[]).await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    let base = server.url("");
    let out = herald(&["send", "--server", &base, "--user", "demo", "Hello"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent to group user_demo: 1 channel"
    );
    browser.element(".herald-toast-info", "Hello").await;
    browser
        .element("#events .event-user_message", "Hello")
        .await;
    browser.screenshot("newcomer.png").await;

    // The file dialog's Download link works on herald's own origin: the demo serves the file.
    let out = herald(&[
        "file",
        "--server",
        &base,
        "--user",
        "demo",
        "--size",
        "84",
        "/demo/report.csv",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    browser
        .element(".herald-modal .herald-file-name", "report.csv")
        .await;
    let status = browser
        .eval("fetch(document.querySelector('.herald-modal .herald-download').href).then(r => r.status)")
        .await;
    assert_eq!(status, 200);
    browser
        .eval("document.querySelector('.herald-modal .herald-close').click()")
        .await;

    // A phone: the commands stay one per line (scrolled, not broken), and a toast does not
    // cover the heading.
    browser.viewport(390, 844).await;
    let out = herald(&["send", "--server", &base, "--user", "demo", "On a phone"]).await;
    assert!(out.status.success(), "{out:?}");
    browser.element(".herald-toast-info", "On a phone").await;
    let layout = browser
        .eval(
            "(() => { const pre = document.querySelector('pre');\
               const h1 = document.querySelector('h1').getBoundingClientRect();\
               const toast = document.querySelector('.herald-toasts').getBoundingClientRect();\
               return {whiteSpace: getComputedStyle(pre).whiteSpace,\
                       pageFits: document.documentElement.scrollWidth <= innerWidth,\
                       toastClearOfHeading: toast.top >= h1.bottom || toast.bottom <= h1.top}; })()",
        )
        .await;
    assert_eq!(
        layout,
        json!({"whiteSpace": "pre", "pageFits": true, "toastClearOfHeading": true})
    );
    browser.screenshot("newcomer-390px.png").await;
    browser.assert_clean_console().await;
    browser.quit().await;
    drop(server);
}

/// A server whose Redis is down accepts handshakes and closes them with 1013; the browser
/// client keeps backing off (its attempt count grows instead of restarting at 1 on every
/// accepted-then-closed socket) and is served once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_backs_off_on_1013_while_redis_is_down_and_connects_once_it_is_back() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let redis_port = free_port();
    let url = format!("redis://127.0.0.1:{redis_port}");
    let server = Served::start_with(
        ([127, 0, 0, 1], free_port()).into(),
        &["--redis", &url, "--health-interval", "1"],
    )
    .await;
    let deadline = Instant::now() + TIMEOUT;
    while !support::http_get(server.addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 503")
    {
        assert!(Instant::now() < deadline, "never not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.open(&server.url("/demo/")).await;
    browser
        .eval(
            "taskNotifications.configure({initialDelay: 100, maxDelay: 800});\
             window.__codes = []; window.__attempts = [];\
             taskNotifications.on('close', e => window.__codes.push(e.code));\
             taskNotifications.on('reconnecting', e => window.__attempts.push(e.attempt));",
        )
        .await;
    browser.wait("window.__attempts.length >= 3").await;
    let codes: Vec<u16> = serde_json::from_value(browser.eval("window.__codes").await).unwrap();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 1013),
        "{codes:?}"
    );
    let attempts: Vec<u64> =
        serde_json::from_value(browser.eval("window.__attempts").await).unwrap();
    assert!(
        attempts.windows(2).all(|w| w[1] == w[0] + 1),
        "the backoff must grow across 1013 closes: {attempts:?}"
    );

    let _redis = RedisServer::start_on_port(redis_port, &[]).unwrap();
    while !support::http_get(server.addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline + TIMEOUT, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Served: a message sent through Redis reaches the page.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = herald(&["send", "--redis", &url, "--user", "demo", "Redis is back"]).await;
        assert!(out.status.success(), "{out:?}");
        if String::from_utf8_lossy(&out.stdout).contains("1 channel") {
            break;
        }
        assert!(Instant::now() < deadline, "the page never joined user_demo");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.element(".herald-toast-info", "Redis is back").await;
    browser.element("#state", "open").await;
    browser.assert_clean_console().await;
    browser.quit().await;
    drop(server);
}
