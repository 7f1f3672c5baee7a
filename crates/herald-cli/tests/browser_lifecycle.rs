//! How `task-notifications.js` keeps its link honest, in a real headless Chromium against the
//! real `herald serve`: a stopped server noticed by the heartbeat, a network cut through the
//! DevTools protocol, handshakes refused for an expired Django session or a foreign Origin
//! (no reconnect storm, an `unauthorized` event, a login resumes), a 4401 the server sends to
//! an open socket (`herald disconnect`: `unauthorized`, no reconnect), the page lifecycle events,
//! a hidden tab that does not spin, and the ES module, the package and its type declarations.
//!
//! Needs what `browser_client.rs` needs (see `support/browser.rs`); the refused-cookie test
//! also needs the compat venv (the real Django logs the user in).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use herald_test_support::{compat_python, free_port};
use serde_json::{Value, json};
use tokio::process::Command;

use support::browser::{
    Browser, Served, WS_OPEN, browser_dir, herald_cli, metric, missing, serve_page,
};
use support::django::{SECRET, SiteDb};
use support::{Herald, TIMEOUT, herald};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// Options the page sets before the client loads.
async fn preconfigure(browser: &mut Browser, options: Value) {
    let script = format!("window.taskNotificationsConfig = {options};");
    browser.ok(json!({"op": "init", "script": script})).await;
}

/// Records every lifecycle event as `window.__ev` entries `[type, code, reason, at]`.
const RECORD_EVENTS: &str = "window.__ev = [];\
     ['open', 'close', 'reconnecting', 'unauthorized'].forEach(t => taskNotifications.on(t,\
       e => __ev.push([t, e.code === undefined ? null : e.code, e.reason || null, Date.now()])));\
     window.__first = taskNotifications.ws;";

/// `herald send --server <base> --user demo <text>` through the publish API.
async fn send_demo(server: &Served, text: &str) {
    let out = herald(&["send", "--server", &server.url(""), "--user", "demo", text]).await;
    assert!(out.status.success(), "{out:?}");
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A stopped process keeps its sockets but answers nothing: only the heartbeat can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_noticed_within_the_heartbeat_bound_and_the_client_comes_back() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let server = Served::start_with(loopback(), &[]).await;
    preconfigure(
        &mut browser,
        json!({"heartbeatInterval": 500, "heartbeatTimeout": 1000, "connectTimeout": 1000,
               "initialDelay": 200, "maxDelay": 400}),
    )
    .await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    browser
        .eval(&format!(
            "{RECORD_EVENTS} window.__pongs = 0; window.__all = 0;\
             taskNotifications.on('pong', () => {{ __pongs += 1; }});\
             taskNotifications.on('*', () => {{ __all += 1; }});"
        ))
        .await;
    // While the server answers, the heartbeat runs quietly: pings go out, their pongs are not
    // handed to the page, and the socket stays.
    let frames_before = metric(server.addr, "herald_frames_in_total").await;
    sleep_ms(1800).await;
    let frames = metric(server.addr, "herald_frames_in_total").await - frames_before;
    assert!(
        frames >= 2,
        "only {frames} pings in 1.8 s at a 500 ms interval"
    );
    let quiet = browser
        .eval("[__ev.length, __pongs, __all, taskNotifications.ws === __first, taskNotifications.state]")
        .await;
    assert_eq!(quiet, json!([0, 0, 0, true, "open"]));
    // A page's own ping still gets its pong.
    browser
        .eval("taskNotifications.send({action: 'ping'})")
        .await;
    browser.wait("__pongs === 1").await;

    let stopped_at = browser.eval("Date.now()").await.as_u64().unwrap();
    server.signal("STOP").await;
    let drop = browser
        .wait("__ev.find(e => e[0] === 'close' && e[2] === 'heartbeat timeout')")
        .await;
    let noticed_after = drop[3].as_u64().unwrap() - stopped_at;
    assert_eq!(drop[1], 4000, "{drop}");
    // interval + timeout = 1500 ms, plus slack for a loaded machine (TCP alone: minutes).
    assert!(
        noticed_after <= 3000,
        "dead link noticed after {noticed_after} ms"
    );
    // Meanwhile handshakes hang (the kernel still accepts TCP): the connect timeout gives up on
    // each and the client keeps retrying; a silent server is not a refusal.
    browser
        .wait("__ev.filter(e => e[2] === 'connect timeout').length >= 2")
        .await;
    assert_ne!(
        browser.eval("taskNotifications.state").await,
        "unauthorized"
    );

    server.signal("CONT").await;
    browser
        .wait("taskNotifications.state === 'open' && taskNotifications.ws !== __first")
        .await;
    send_demo(&server, "Back after a stop").await;
    browser
        .element(".herald-toast-info", "Back after a stop")
        .await;
    browser.assert_clean_console().await;
    browser.quit().await;
}

/// DevTools "offline": the client closes at once, makes no attempt while offline, and
/// reconnects as soon as the network is back instead of waiting out its backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_closes_at_once_and_the_network_coming_back_reconnects_now() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let server = Served::start_with(loopback(), &[]).await;
    // Any backoff wait would be 15-30 s: a reconnect within seconds is the 'online' event's.
    preconfigure(
        &mut browser,
        json!({"initialDelay": 30000, "maxDelay": 30000}),
    )
    .await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    browser.eval(RECORD_EVENTS).await;
    assert_eq!(browser.websockets().await, 1);

    browser.network_offline(true).await;
    browser
        .wait("taskNotifications.state === 'offline' && __first.readyState >= 2")
        .await;
    browser.element("#state", "offline").await;
    let closed = browser.eval("__ev.find(e => e[0] === 'close')").await;
    assert_eq!(closed[1], 1000, "{closed}");
    // connect() while offline waits for the network too.
    browser.eval("taskNotifications.connect()").await;
    sleep_ms(1500).await;
    assert_eq!(browser.websockets().await, 1, "an attempt while offline");
    assert_eq!(browser.eval("taskNotifications.state").await, "offline");

    let back_at = browser.eval("Date.now()").await.as_u64().unwrap();
    browser.network_offline(false).await;
    let opened = browser
        .wait("taskNotifications.state === 'open' && __ev.find(e => e[0] === 'open')")
        .await;
    let after = opened[3].as_u64().unwrap() - back_at;
    assert!(
        after < 5000,
        "reconnected {after} ms after the network came back (backoff: 15-30 s)"
    );
    assert_eq!(browser.websockets().await, 2);
    send_demo(&server, "Network is back").await;
    browser
        .element(".herald-toast-info", "Network is back")
        .await;
    browser.screenshot("network-back.png").await;
    browser.assert_clean_console().await;
    browser.quit().await;
}

/// A host app's page (served by [`serve_page`]) that loads the client from Herald at `herald`.
fn app_page(herald: SocketAddr, options: &Value) -> String {
    let mut options = options.clone();
    options["url"] = json!(format!("ws://{herald}/ws/tasks/"));
    format!(
        "<!doctype html><title>app</title>\
         <script>window.taskNotificationsConfig = {options};</script>\
         <script src=\"http://{herald}/static/herald/task-notifications.js\"></script>\
         <script>{RECORD_EVENTS}</script>"
    )
}

/// An expired Django session: Herald refuses the handshake with HTTP 403, which the page only
/// sees as 1006. The client stops after `maxRefusals` attempts with an `unauthorized` event,
/// and a fresh login (the user coming back to the tab) resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_cookie_stops_the_client_without_a_storm_until_a_login() {
    let Some(python) = compat_python() else {
        return;
    };
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let site = SiteDb::start(python, "amadmin").await;
    let expired = site
        .django
        .fixture(&["--username", "amadmin", "--expired"])
        .await;
    // Logged in after that (a fixture run resets the user's password, ending older sessions).
    let login = site.django.fixture(&["--username", "amadmin"]).await;
    let redis_url = site.redis.url();
    let server = Herald::start(&[
        "--redis",
        &redis_url,
        "--secret-key",
        SECRET,
        "--django-db",
        &site.db_url,
    ])
    .await;
    let herald_origin = format!("http://{}", server.addr);
    let cookie_value = |c: &str| c.split_once('=').unwrap().1.to_owned();
    browser
        .cookie(&herald_origin, "sessionid", &cookie_value(&expired.cookie))
        .await;
    let page = serve_page(app_page(
        server.addr,
        &json!({"initialDelay": 200, "maxDelay": 400}),
    ))
    .await;
    browser.open(&format!("http://{page}/")).await;

    let event = browser
        .wait("__ev.find(e => e[0] === 'unauthorized')")
        .await;
    assert_eq!(event[1], 1006, "{event}");
    assert_eq!(
        browser.eval("taskNotifications.state").await,
        "unauthorized"
    );
    assert_eq!(browser.websockets().await, 3);
    // Three sockets and, after the second, the client's one try of the event stream (its
    // fallback), refused by the same authentication.
    assert_eq!(metric(server.addr, "herald_auth_failures_total").await, 4);
    // No storm: ten max-delays later, nothing more; the network coming back is no new login.
    browser
        .eval("window.dispatchEvent(new Event('online'))")
        .await;
    sleep_ms(4000).await;
    assert_eq!(browser.websockets().await, 3);
    assert_eq!(metric(server.addr, "herald_auth_failures_total").await, 4);
    let closes = browser
        .eval("__ev.filter(e => e[0] === 'close').map(e => e[1])")
        .await;
    assert_eq!(closes, json!([1006, 1006, 1006]));

    // The user logs in again in another tab and comes back to this one.
    browser
        .cookie(&herald_origin, "sessionid", &cookie_value(&login.cookie))
        .await;
    browser
        .eval("window.dispatchEvent(new Event('focus'))")
        .await;
    browser.wait(WS_OPEN).await;
    assert_eq!(browser.websockets().await, 4);
    herald_cli(
        &redis_url,
        &[
            "notify",
            "--user",
            "amadmin",
            "--type",
            "success",
            "Welcome back",
        ],
    )
    .await;
    browser
        .element(".herald-toast-success", "Welcome back")
        .await;
    browser.assert_clean_console().await;
    browser.quit().await;
}

/// An Origin refusal looks the same to the page and is handled the same way; connect() starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_refusal_stops_the_client_and_connect_starts_over() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let server =
        Served::start_with(loopback(), &["--allowed-origin", "https://app.example.com"]).await;
    preconfigure(&mut browser, json!({"initialDelay": 200, "maxDelay": 400})).await;
    browser.open(&server.url("/demo/")).await;
    browser
        .wait("taskNotifications.state === 'unauthorized'")
        .await;
    browser.element("#state", "unauthorized").await;
    assert_eq!(browser.websockets().await, 3);
    // Three sockets and, after the second, the client's one try of the event stream (its
    // fallback), refused by the same Origin rule.
    assert_eq!(metric(server.addr, "herald_origin_rejects_total").await, 4);
    assert_eq!(metric(server.addr, "herald_sse_connections_total").await, 0);
    sleep_ms(2000).await;
    assert_eq!(browser.websockets().await, 3);

    browser.eval(RECORD_EVENTS).await;
    browser.eval("taskNotifications.connect()").await;
    browser
        .wait("__ev.filter(e => e[0] === 'unauthorized').length === 1 && taskNotifications.state === 'unauthorized'")
        .await;
    assert_eq!(browser.websockets().await, 6);
    assert_eq!(metric(server.addr, "herald_origin_rejects_total").await, 8);
    browser.quit().await;
}

/// Makes `document.visibilityState` / `hidden` follow `window.__vis` (headless pages are
/// always visible) and dispatches `visibilitychange`.
const SET_VISIBILITY: &str = "(vis => {\
       if (!window.__visPatched) {\
         window.__visPatched = true;\
         Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => window.__vis});\
         Object.defineProperty(document, 'hidden', {configurable: true, get: () => window.__vis === 'hidden'});\
       }\
       window.__vis = vis;\
       document.dispatchEvent(new Event('visibilitychange'));\
     })";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_lifecycle_events_close_and_reconnect_and_a_hidden_tab_does_not_spin() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let addr = loopback();
    let server = Served::start_with(addr, &[]).await;
    // Long backoff: every reconnect within a second below is a lifecycle event's doing.
    preconfigure(
        &mut browser,
        json!({"initialDelay": 3000, "maxDelay": 3000}),
    )
    .await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    browser.eval(RECORD_EVENTS).await;

    // freeze closes cleanly (the server sees the close) and nothing reconnects; resume does.
    for (sleep, wake) in [
        (
            "document.dispatchEvent(new Event('freeze'))",
            "document.dispatchEvent(new Event('resume'))",
        ),
        (
            "window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))",
            "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))",
        ),
    ] {
        let sockets = browser.websockets().await;
        browser.eval(sleep).await;
        browser
            .wait("taskNotifications.state === 'suspended'")
            .await;
        let closed = browser
            .eval("__ev.filter(e => e[0] === 'close').pop()")
            .await;
        assert_eq!(closed[1], 1000, "{closed}");
        let deadline = std::time::Instant::now() + TIMEOUT;
        while metric(addr, "herald_connections_current").await != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "server never saw the close"
            );
            sleep_ms(50).await;
        }
        sleep_ms(700).await;
        assert_eq!(
            browser.websockets().await,
            sockets,
            "reconnected while suspended"
        );
        let woke_at = browser.eval("Date.now()").await.as_u64().unwrap();
        browser.eval(wake).await;
        let opened = browser
            .wait("taskNotifications.state === 'open' && __ev.filter(e => e[0] === 'open').pop()")
            .await;
        let after = opened[3].as_u64().unwrap() - woke_at;
        // The backoff would wait 1.5-3 s.
        assert!(after < 1500, "reconnected {after} ms after {wake}");
        assert_eq!(browser.websockets().await, sockets + 1);
    }

    // focus on an open socket checks the link with a ping (answered, not shown to the page).
    let frames = metric(addr, "herald_frames_in_total").await;
    browser
        .eval("window.dispatchEvent(new Event('focus'))")
        .await;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while metric(addr, "herald_frames_in_total").await != frames + 1 {
        assert!(std::time::Instant::now() < deadline, "no ping on focus");
        sleep_ms(50).await;
    }

    // A hidden tab whose server is gone waits out its backoff: wake-ups while hidden do not cut
    // it short (a long wait, so any attempt in the window would be theirs).
    browser
        .eval("taskNotifications.configure({initialDelay: 60000, maxDelay: 60000})")
        .await;
    browser.eval(&format!("{SET_VISIBILITY}('hidden')")).await;
    server.kill().await;
    browser
        .wait("taskNotifications.state === 'reconnecting'")
        .await;
    let sockets = browser.websockets().await;
    for _ in 0..3 {
        browser
            .eval(&format!(
                "for (let i = 0; i < 10; i++) {{\
                   window.dispatchEvent(new Event('focus'));\
                   window.dispatchEvent(new PageTransitionEvent('pageshow', {{persisted: false}}));\
                   {SET_VISIBILITY}('hidden');\
                 }}"
            ))
            .await;
        sleep_ms(500).await;
    }
    assert_eq!(browser.websockets().await, sockets, "a hidden tab retried");
    assert_eq!(
        browser.eval("taskNotifications.state").await,
        "reconnecting"
    );

    // Back in front: reconnect now, not in 30-60 s.
    let server = Served::start_with(addr, &[]).await;
    browser.eval(&format!("{SET_VISIBILITY}('visible')")).await;
    browser.wait(WS_OPEN).await;
    assert_eq!(browser.websockets().await, sockets + 1);
    let logs = browser.assert_clean_console().await;
    assert!(
        logs.iter()
            .any(|l| l.contains("WebSocket reconnecting now (visible)")),
        "{logs:#?}"
    );
    send_demo(&server, "Visible again").await;
    browser.element(".herald-toast-info", "Visible again").await;
    browser.quit().await;
}

/// The server ends the session: a `herald.disconnect` (`herald disconnect demo`, 4401 — what
/// session re-validation sends after a logout) stops the client with an `unauthorized` event
/// and no reconnect at all; `connect()`, after a new login, starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4401_from_the_server_stops_the_client_with_unauthorized_and_no_reconnect() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let server = Served::start_with(loopback(), &[]).await;
    preconfigure(&mut browser, json!({"initialDelay": 100, "maxDelay": 200})).await;
    browser.open(&server.url("/demo/")).await;
    browser.wait(WS_OPEN).await;
    browser.eval(RECORD_EVENTS).await;
    let handshakes = metric(server.addr, "herald_connections_total").await;
    let out = herald(&["disconnect", "demo", "--server", &server.url("")]).await;
    assert!(out.status.success(), "{out:?}");
    let event = browser
        .wait("__ev.find(e => e[0] === 'unauthorized')")
        .await;
    assert_eq!(event[1], 4401, "{event}");
    assert_eq!(
        browser.eval("taskNotifications.state").await,
        "unauthorized"
    );
    // Many backoff periods later: not one reconnect attempt reached the server.
    sleep_ms(2000).await;
    assert_eq!(
        browser
            .eval("[__ev.filter(e => e[0] === 'reconnecting').length, __ev.filter(e => e[0] === 'close').map(e => e[1])]")
            .await,
        json!([0, [4401]])
    );
    assert_eq!(
        metric(server.addr, "herald_connections_total").await,
        handshakes
    );
    assert_eq!(
        metric(server.addr, "herald_disconnect_closes_total").await,
        1
    );
    browser.eval("taskNotifications.connect()").await;
    browser
        .wait("taskNotifications.state === 'open' && taskNotifications.ws !== __first")
        .await;
    send_demo(&server, "Back after a new login").await;
    browser
        .element(".herald-toast-info", "Back after a new login")
        .await;
    browser.quit().await;
}

/// Runs `node ARGS` in tests/browser; `None` (after [`missing`]) without node or its modules.
async fn node(args: &[&str]) -> Option<std::process::Output> {
    if !browser_dir().join("node_modules/typescript").is_dir() {
        missing("tests/browser/node_modules/typescript is not installed");
        return None;
    }
    let run = Command::new("node")
        .args(args)
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap()
    {
        Ok(out) => Some(out),
        Err(err) => {
            missing(&format!("cannot run node: {err}"));
            None
        }
    }
}

/// The package as a front-end build sees it: `tests/browser` depends on it by a `file:` link
/// into the repository; TypeScript checks typed uses of every member (and that misuses fail);
/// Node imports it through its `exports` map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_imports_from_the_repository_and_its_declarations_type_check() {
    let Some(tsc) = node(&[
        "node_modules/typescript/bin/tsc",
        "-p",
        "types/tsconfig.json",
    ])
    .await
    else {
        return;
    };
    assert!(
        tsc.status.success(),
        "tsc: {}{}",
        String::from_utf8_lossy(&tsc.stdout),
        String::from_utf8_lossy(&tsc.stderr)
    );
    let imported = node(&[
        "--input-type=module",
        "-e",
        "import tn, { taskNotifications } from 'herald-task-notifications';\
         console.log(JSON.stringify({same: tn === taskNotifications && tn === globalThis.taskNotifications,\
           state: tn.state, size: tn.formatFileSize(156789), keys: Object.keys(tn)}));",
    ])
    .await
    .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    let got: Value = serde_json::from_slice(&imported.stdout).unwrap();
    // Without a document (a server-side import) it defines the client and connects nothing.
    assert_eq!(got["same"], true);
    assert_eq!(got["state"], "idle");
    assert_eq!(got["size"], "153.1 KB");
    // Every runtime member is declared.
    let dts = std::fs::read_to_string(
        herald_test_support::workspace_root()
            .join("crates/herald-server/assets/task-notifications.d.ts"),
    )
    .unwrap();
    for key in got["keys"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            dts.contains(&format!("readonly {key}: ")) || dts.contains(&format!("  {key}(")),
            "{key} is not declared in task-notifications.d.ts"
        );
    }
}

/// A page that only imports the ES module (no bundler), and a page with both the module and
/// the script tag: one client, one socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_es_module_works_without_a_bundler_and_shares_the_script_tags_client() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let server = Served::start_with(loopback(), &[]).await;
    let herald = server.addr;
    let module_only = format!(
        "<!doctype html><title>esm</title><script type=\"module\">\
         import tn, {{ taskNotifications }} from 'http://{herald}/static/herald/task-notifications.mjs';\
         window.__same = tn === taskNotifications && tn === window.taskNotifications;\
         tn.configure({{url: 'ws://{herald}/ws/tasks/'}});\
         tn.on('user_message', (m) => {{ window.__got = m.message; }});\
         </script>"
    );
    let page = serve_page(module_only).await;
    browser.open(&format!("http://{page}/")).await;
    browser.wait(WS_OPEN).await;
    assert_eq!(browser.eval("window.__same").await, true);
    send_demo(&server, "Hello, module").await;
    assert_eq!(browser.wait("window.__got").await, "Hello, module");
    let policies = browser
        .eval("[1000, 1001, 1006, 4000, 1008, 1009, 1011, 1013, 4008, 4401, 4403, 1002].map(taskNotifications.closePolicy)")
        .await;
    assert_eq!(
        policies,
        json!([
            "retry", "retry", "retry", "retry", "backoff", "backoff", "backoff", "backoff",
            "backoff", "reauth", "stop", "backoff"
        ])
    );
    assert_eq!(browser.websockets().await, 1);

    let both = format!(
        "<!doctype html><title>both</title>\
         <script>window.taskNotificationsConfig = {{url: 'ws://{herald}/ws/tasks/'}};</script>\
         <script src=\"http://{herald}/static/herald/task-notifications.js\"></script>\
         <script type=\"module\">\
         import tn from 'http://{herald}/static/herald/task-notifications.mjs';\
         window.__same = tn === window.taskNotifications;\
         </script>"
    );
    let page = serve_page(both).await;
    browser.open(&format!("http://{page}/")).await;
    browser.wait(WS_OPEN).await;
    assert_eq!(
        browser
            .wait("window.__same !== undefined && window.__same")
            .await,
        true
    );
    sleep_ms(500).await;
    assert_eq!(browser.websockets().await, 2, "one socket per page");
    browser.assert_clean_console().await;
    browser.quit().await;
}
