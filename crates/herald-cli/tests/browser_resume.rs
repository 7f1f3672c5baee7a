//! Missed-message recovery as a page sees it: `task-notifications.js` in a real headless
//! Chromium against the real `herald serve --demo --redis` (which records `user_*` and `task_*`
//! by default), a real `redis-server`, and the pinned Python channels_redis as the sender. The
//! network is cut through the DevTools protocol, the page is left and reloaded, Redis is
//! restarted: each message is shown once and in order, and a lost gap becomes a `resync` event.
//!
//! Needs what `browser_client.rs` needs (see `support/browser.rs`) and the compat venv.

mod fault_common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fault_common::{PythonPeer, python_hosts};
use herald_test_support::{RedisServer, compat_python, free_port};
use serde_json::{Value, json};

use support::browser::{Browser, Served, WS_OPEN, serve_page};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// Runs before the page's scripts on every navigation: short backoff, toasts that stay, and
/// handlers hooked the moment the client defines its global (a resume's replay can arrive
/// before a test could add them). `__got`: `[kind, what, had a herald key]` per shown message;
/// `__ev`: `[event, group or task, recovered]` per recovery event and subscription.
const RECORDER: &str = "window.taskNotificationsConfig = {initialDelay: 200, maxDelay: 1000, toastDuration: 0};\
    window.__got = []; window.__ev = [];\
    Object.defineProperty(window, 'taskNotifications', {configurable: true,\
      get() { return window.__tn; },\
      set(tn) {\
        window.__tn = tn;\
        tn.on('user_message', m => __got.push(['u', m.message, 'herald' in m]));\
        tn.on('task_update', m => __got.push(['t', m.n, 'herald' in m]));\
        tn.on('task_complete', m => __got.push(['c', m.message, 'herald' in m]));\
        ['resumed', 'resync', 'subscribed'].forEach(t => tn.on(t, e => __ev.push(\
          [t, e.group || String(e.task_id), e.recovered === undefined ? null : e.recovered])));\
        tn.on('*', m => { if (m.type === 'herald.resumed') __ev.push(['leaked', m.group, null]); });\
      }});";

struct Setup {
    // Field order = drop order: the browser and the server go before Redis.
    browser: Browser,
    peer: PythonPeer,
    server: Served,
    redis: RedisServer,
    python: std::path::PathBuf,
}

async fn setup() -> Option<Setup> {
    let python = compat_python()?;
    let mut browser = Browser::launch().await?;
    let redis = RedisServer::start();
    let server =
        Served::start_with(loopback(), &["--redis", &redis.url(), "--history", "on"]).await;
    let peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    browser.ok(json!({"op": "init", "script": RECORDER})).await;
    Some(Setup {
        browser,
        peer,
        server,
        redis,
        python,
    })
}

/// Opens the demo page and waits until its resume was answered for the user group.
async fn open_demo(s: &mut Setup) {
    s.browser.open(&s.server.url("/demo/")).await;
    s.browser.wait(WS_OPEN).await;
    s.browser
        .wait("__ev.some(e => e[0] === 'resumed' && e[1] === 'user_demo')")
        .await;
}

async fn user_message(s: &mut Setup, text: &str) {
    s.peer
        .group_send(
            "user_demo",
            json!({"type": "user.message", "username": "demo", "message": text}),
        )
        .await;
}

async fn got(s: &mut Setup) -> Vec<Value> {
    serde_json::from_value(s.browser.eval("__got").await).unwrap()
}

/// Waits until the page has shown `n` messages, then a little longer: nothing more may come.
async fn shown(s: &mut Setup, n: usize) -> Vec<Value> {
    s.browser.wait(&format!("__got.length >= {n}")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = got(s).await;
    assert_eq!(got.len(), n, "shown more than expected: {got:?}");
    for entry in &got {
        assert_eq!(entry[2], false, "a handler saw the herald key: {entry}");
    }
    got
}

fn user(text: &str) -> Value {
    json!(["u", text, false])
}

/// A network cut (DevTools offline): what Python sent meanwhile, to the user and to a
/// subscribed task, is shown after the network is back, once each, in send order; a task that
/// completed before the page subscribed (with no position kept) shows its result, only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_loses_nothing_and_shows_each_message_once_in_order() {
    let Some(mut s) = setup().await else {
        return;
    };
    // A page subscribes to a task and goes away, forgetting its positions; the task completes
    // meanwhile (Herald keeps recording a task group for its retention after the last socket
    // left); a fresh page that subscribes then still shows the result.
    open_demo(&mut s).await;
    s.browser
        .eval("taskNotifications.subscribeTask('done')")
        .await;
    s.browser
        .wait("__ev.some(e => e[0] === 'resumed' && e[1] === 'task_done')")
        .await;
    s.browser
        .eval("taskNotifications.close(); sessionStorage.clear()")
        .await;
    s.browser
        .wait("taskNotifications.ws.readyState === 3")
        .await;
    s.peer
        .group_send(
            "task_done",
            json!({"type": "task.complete", "task_id": "done", "message": "Report ready"}),
        )
        .await;
    open_demo(&mut s).await;
    s.browser
        .eval("taskNotifications.subscribeTask('done'); taskNotifications.subscribeTask('t7')")
        .await;
    s.browser
        .wait("__ev.filter(e => e[0] === 'resumed' && e[1].startsWith('task_')).length === 2")
        .await;
    s.browser
        .element(".herald-toast-success", "Report ready")
        .await;
    user_message(&mut s, "m0").await;
    assert_eq!(
        shown(&mut s, 2).await,
        vec![json!(["c", "Report ready", false]), user("m0")]
    );

    s.browser.network_offline(true).await;
    s.browser
        .wait("taskNotifications.state === 'offline'")
        .await;
    for n in 1..=6u64 {
        if n % 3 == 0 {
            s.peer
                .group_send(
                    "task_t7",
                    json!({"type": "task.update", "task_id": "t7", "n": n}),
                )
                .await;
        } else {
            user_message(&mut s, &format!("m{n}")).await;
        }
    }
    s.browser.network_offline(false).await;
    s.browser.wait(WS_OPEN).await;
    let after = shown(&mut s, 8).await;
    assert_eq!(
        after[2..],
        [
            user("m1"),
            user("m2"),
            json!(["t", 3, false]),
            user("m4"),
            user("m5"),
            json!(["t", 6, false]),
        ]
    );
    // Live again, and the toasts match: one per message.
    user_message(&mut s, "m7").await;
    assert_eq!(shown(&mut s, 9).await[8], user("m7"));
    let toasts = s
        .browser
        .eval("Array.from(document.querySelectorAll('.herald-toast-info')).map(t => t.textContent)")
        .await;
    let toasts: Vec<String> = serde_json::from_value(toasts).unwrap();
    let order: Vec<usize> = ["m0", "m1", "m2", "m4", "m5", "m7"]
        .iter()
        .map(|m| {
            let hits: Vec<usize> = (0..toasts.len())
                .filter(|&i| toasts[i].contains(m))
                .collect();
            assert_eq!(hits.len(), 1, "{m} toasts: {toasts:?}");
            hits[0]
        })
        .collect();
    assert!(order.is_sorted(), "toast order {order:?}: {toasts:?}");
    // The reconnect re-subscribed both tasks through the resume (reported as the old
    // 'subscribed' reply was), nothing was lost and herald.resumed never reached '*'.
    let ev = s.browser.eval("__ev").await;
    let ev = ev.as_array().unwrap();
    let count = |kind: &str| ev.iter().filter(|e| e[0] == kind).count();
    assert_eq!(count("resync"), 0, "{ev:?}");
    assert_eq!(count("leaked"), 0, "{ev:?}");
    assert_eq!(count("subscribed"), 4, "{ev:?}");
    assert!(
        ev.iter()
            .filter(|e| e[0] == "resumed")
            .all(|e| e[2] == true),
        "{ev:?}"
    );
    s.browser.screenshot("resume-network-back.png").await;
    s.browser.assert_clean_console().await;
    s.browser.quit().await;
}

/// Leaving the page and coming back in the same tab: the positions in sessionStorage make the
/// new page show what was sent in between, and nothing it had shown before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_again_in_the_tab_shows_what_came_in_between() {
    let Some(mut s) = setup().await else {
        return;
    };
    open_demo(&mut s).await;
    user_message(&mut s, "before").await;
    assert_eq!(shown(&mut s, 1).await, vec![user("before")]);

    // Another site in the tab: no client, no socket.
    let elsewhere = serve_page("<!doctype html><title>elsewhere</title>".to_owned()).await;
    s.browser.open(&format!("http://{elsewhere}/")).await;
    user_message(&mut s, "while away 1").await;
    user_message(&mut s, "while away 2").await;

    open_demo(&mut s).await;
    assert_eq!(
        shown(&mut s, 2).await,
        vec![user("while away 1"), user("while away 2")]
    );
    // Loaded again (a reload): nothing new, nothing shown twice; then live.
    open_demo(&mut s).await;
    user_message(&mut s, "after reload").await;
    assert_eq!(shown(&mut s, 1).await, vec![user("after reload")]);
    let resync = s.browser.eval("__ev.filter(e => e[0] === 'resync')").await;
    assert_eq!(resync, json!([]));

    // Another user logged in in this tab before: Herald refuses the stored user group, the
    // client drops it and resumes without it.
    s.browser
        .eval(
            "sessionStorage.setItem('herald.positions ws://' + location.host + '/ws/tasks/',\
               JSON.stringify({user: 'user_bob', groups: {user_bob: {epoch: 'e', offset: '1-0'}}}))",
        )
        .await;
    open_demo(&mut s).await;
    user_message(&mut s, "after another login").await;
    assert_eq!(shown(&mut s, 1).await, vec![user("after another login")]);
    let stored = s
        .browser
        .eval("sessionStorage.getItem('herald.positions ws://' + location.host + '/ws/tasks/')")
        .await;
    let stored: Value = serde_json::from_str(stored.as_str().unwrap()).unwrap();
    assert_eq!(stored["user"], "user_demo", "{stored}");
    assert!(stored["groups"].get("user_bob").is_none(), "{stored}");
    s.browser.assert_clean_console().await;
    s.browser.quit().await;
}

/// `recover: false`: the plain protocol (no `?recover=1`, no resume), messages still shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_false_keeps_the_plain_protocol() {
    let Some(mut s) = setup().await else {
        return;
    };
    s.browser
        .ok(json!({"op": "init", "script": "window.taskNotificationsConfig.recover = false;"}))
        .await;
    s.browser.open(&s.server.url("/demo/")).await;
    s.browser.wait(WS_OPEN).await;
    let sockets = s.browser.ok(json!({"op": "websockets"})).await;
    assert_eq!(
        sockets[0]["url"],
        format!("ws://{}/ws/tasks/", s.server.addr),
        "{sockets}"
    );
    user_message(&mut s, "plain").await;
    assert_eq!(shown(&mut s, 1).await, vec![user("plain")]);
    assert_eq!(s.browser.eval("__ev").await, json!([]));
    s.browser.assert_clean_console().await;
    s.browser.quit().await;
}

/// Redis restarted while the page was away: its history is gone, so the page is told to
/// refetch (`resync` for the user group) and then gets live messages as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_makes_the_page_resync() {
    let Some(mut s) = setup().await else {
        return;
    };
    open_demo(&mut s).await;
    user_message(&mut s, "before").await;
    assert_eq!(shown(&mut s, 1).await, vec![user("before")]);

    s.browser.network_offline(true).await;
    s.browser
        .wait("taskNotifications.state === 'offline'")
        .await;
    let port = s.redis.port();
    s.redis.kill();
    s.redis = RedisServer::start_on_port(port, &[]).unwrap();
    // A fresh sender: the old one's connections went with the old Redis.
    s.peer = PythonPeer::start(&s.python, &json!({"hosts": python_hosts(&[s.redis.url()])}));
    s.browser.network_offline(false).await;
    // Herald notices the restart at its own pace (the socket may be refused with 1013
    // meanwhile); each reconnect resumes, and one of them gets the new epoch.
    let mut resynced = false;
    for _ in 0..30 {
        if s.browser
            .eval("__ev.some(e => e[0] === 'resync')")
            .await
            .as_bool()
            .unwrap()
        {
            resynced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if s.browser.eval(WS_OPEN).await == true {
            s.browser.network_offline(true).await;
            s.browser.network_offline(false).await;
        }
    }
    assert!(resynced, "no resync: {}", s.browser.eval("__ev").await);
    let resync = s.browser.eval("__ev.filter(e => e[0] === 'resync')").await;
    assert_eq!(resync[0], json!(["resync", "user_demo", false]), "{resync}");
    s.browser.wait(WS_OPEN).await;
    user_message(&mut s, "after restart").await;
    assert_eq!(shown(&mut s, 2).await[1], user("after restart"));
    s.browser.assert_clean_console().await;
    s.browser.quit().await;
}
