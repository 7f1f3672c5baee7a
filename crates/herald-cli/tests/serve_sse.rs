//! `/sse/tasks/`: the `/ws/tasks/` stream over Server-Sent Events, end to end against real
//! `herald serve` processes and a real Redis (and the test Django site for the session
//! cookie), read by a plain HTTP client as `EventSource` reads it.

mod support;

use std::time::Duration;

use herald_test_support::{RedisServer, compat_python, eventually};
use serde_json::{Value, json};
use support::Herald;
use support::django::{SECRET, SiteDb};
use support::sse::{Event, EventStream};

/// Sends `message` (a JSON object with a type) to `group` through Redis, as Django would.
async fn group_send(redis: &str, group: &str, message: Value) {
    let out = support::herald(&["group-send", "--redis", redis, group, &message.to_string()]).await;
    assert!(out.status.success(), "{out:?}");
}

fn numbered(n: usize) -> Value {
    json!({"type": "user.message", "message": n.to_string()})
}

fn number_of(event: &Event) -> usize {
    event.json()["message"].as_str().unwrap().parse().unwrap()
}

async fn metric(herald: &Herald, name: &str) -> u64 {
    support::browser::metric(herald.addr, name).await
}

/// Waits until the gauge `name` reads `value`.
async fn eventually_metric(herald: &Herald, name: &str, value: u64) {
    eventually(Duration::from_secs(10), name, || async move {
        metric(herald, name).await == value
    })
    .await;
}

/// Percent-encodes everything but unreserved characters, for a query parameter.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn trusted(redis: &RedisServer, extra: &[&str]) -> Herald {
    let mut args = vec![
        "--redis",
        &redis.url(),
        "--trusted-user-header",
        "x-remote-user",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Herald::start(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_opens_a_stream_and_origin_rules_apply() {
    let Some(python) = compat_python() else {
        return;
    };
    let site = SiteDb::start(python, "amadmin").await;
    let redis = site.redis.url();
    let herald = Herald::start(&[
        "--redis",
        &redis,
        "--secret-key",
        SECRET,
        "--django-db",
        &site.db_url,
        "--allowed-origin",
        "127.0.0.1",
    ])
    .await;
    let addr = herald.addr;
    let cookie = site.fixture.cookie.clone();
    let origin = "http://127.0.0.1";

    let mut stream = EventStream::open(
        addr,
        "/sse/tasks/",
        &[("Cookie", &cookie), ("Origin", origin)],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    // A page of an allowed origin may read it with its cookies.
    assert_eq!(stream.header("access-control-allow-origin"), Some(origin));
    assert_eq!(
        stream.header("access-control-allow-credentials"),
        Some("true")
    );
    eventually_metric(&herald, "herald_sse_connections_current", 1).await;

    support::herald(&[
        "send",
        "--redis",
        &redis,
        "--user",
        "amadmin",
        "Hello over SSE",
    ])
    .await;
    let event = stream.next().await.unwrap();
    assert_eq!(stream.retries, [3000]);
    assert_eq!(event.event, None);
    assert_eq!(event.id, None, "no ids without recover mode");
    let frame = event.json();
    assert_eq!(frame["type"], "user_message");
    assert_eq!(frame["message"], "Hello over SSE");
    // The same bytes a WebSocket gets: json.dumps separators.
    assert!(
        event.data.starts_with(r#"{"type": "user_message", "#),
        "{}",
        event.data
    );

    // Same-origin EventSource requests carry no Origin header: allowed.
    let same_origin = EventStream::open(
        addr,
        "/sse/tasks/",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(same_origin.status, 200);

    // Refusals, with the WebSocket handshake's statuses.
    let refused = [
        vec![("Cookie", "sessionid=not-a-session"), ("Origin", origin)],
        vec![("Origin", origin)],
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.example"),
        ],
        // No Origin, but the browser says another site asked (an <img> or <script> tag).
        vec![
            ("Cookie", cookie.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ];
    for headers in refused {
        let refused = EventStream::open(addr, "/sse/tasks/", &headers).await;
        assert_eq!(refused.status, 403, "{headers:?}");
        // An allowed page may read the refusal (its client tells it from a server that is
        // down); a foreign one may not.
        let readable = headers.contains(&("Origin", origin));
        assert_eq!(
            refused.header("access-control-allow-origin").is_some(),
            readable,
            "{headers:?}"
        );
    }
    let post = support::http_request(addr, "POST", "/sse/tasks/").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    drop(same_origin);
    drop(stream);
    eventually_metric(&herald, "herald_sse_connections_current", 0).await;
    assert!(metric(&herald, "herald_sse_connections_total").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_in_the_url_are_subscribed_and_keepalives_hold_an_idle_stream() {
    let redis = RedisServer::start();
    let herald = trusted(&redis, &["--ping-interval", "1", "--ping-timeout", "1"]).await;
    let mut stream = EventStream::open(
        herald.addr,
        "/sse/tasks/?task=7&task=abc-8",
        &[("x-remote-user", "alice")],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.next_json().await,
        json!({"type": "subscribed", "task_id": "7"})
    );
    assert_eq!(
        stream.next_json().await,
        json!({"type": "subscribed", "task_id": "abc-8"})
    );
    // Idle for several ping intervals and past the ping timeout: comments keep it open.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    group_send(
        &redis.url(),
        "task_abc-8",
        json!({"type": "task.update", "task_id": "abc-8", "progress": 50}),
    )
    .await;
    let update = stream.next_json().await;
    assert_eq!(update["type"], "task_update");
    assert_eq!(update["progress"], 50);
    assert!(
        stream.comments >= 2,
        "keep-alive comments: {}",
        stream.comments
    );
    assert_eq!(metric(&herald, "herald_ping_timeouts_total").await, 0);

    // Another user's task group is not this stream's.
    group_send(
        &redis.url(),
        "task_9",
        json!({"type": "task.update", "task_id": "9"}),
    )
    .await;
    group_send(&redis.url(), "user_alice", numbered(1)).await;
    assert_eq!(number_of(&stream.next().await.unwrap()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_every_group_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    let herald = trusted(&redis, &["--history", "on"]).await;
    let user = [("x-remote-user", "alice")];
    let mut stream = EventStream::open(herald.addr, "/sse/tasks/?recover=1&task=7", &user).await;
    assert_eq!(stream.status, 200);
    // A fresh stream: each group answers with the position to start from.
    let mut last_id = None;
    for group in ["user_alice", "task_7"] {
        let event = stream.next().await.unwrap();
        assert_eq!(event.json()["type"], "herald.resumed");
        assert_eq!(event.json()["group"], group);
        last_id = event.id.clone().or(last_id);
    }
    let token: Value = serde_json::from_str(last_id.as_deref().unwrap()).unwrap();
    assert!(token["user_alice"]["epoch"].is_string(), "{token}");
    assert!(token["task_7"]["offset"].is_string(), "{token}");

    for n in 1..=3 {
        group_send(&redis.url(), "user_alice", numbered(n)).await;
    }
    let mut seen = Vec::new();
    for _ in 1..=3 {
        let event = stream.next().await.unwrap();
        assert!(event.id.is_some(), "every positioned event carries an id");
        seen.push(number_of(&event));
        last_id = event.id;
    }
    assert_eq!(seen, [1, 2, 3]);
    drop(stream);

    // Missed while away: two user messages and a task update, interleaved.
    group_send(&redis.url(), "user_alice", numbered(4)).await;
    group_send(
        &redis.url(),
        "task_7",
        json!({"type": "task.update", "task_id": "7", "progress": 70}),
    )
    .await;
    group_send(&redis.url(), "user_alice", numbered(5)).await;
    // All six are in the history before the reconnect, so all three missed ones are replayed
    // (one recorded after the replay read would come live, after `herald.resumed`).
    eventually_metric(&herald, "herald_history_recorded_total", 6).await;

    // EventSource reconnects to the same URL with the id it saw last.
    let last = last_id.clone().unwrap();
    let mut stream = EventStream::open(
        herald.addr,
        "/sse/tasks/?recover=1&task=7",
        &[("x-remote-user", "alice"), ("Last-Event-ID", &last)],
    )
    .await;
    let mut replayed = Vec::new();
    let mut resumed = Vec::new();
    while resumed.len() < 2 {
        let event = stream.next().await.unwrap();
        let frame = event.json();
        last_id = event.id.or(last_id);
        match frame["type"].as_str().unwrap() {
            "herald.resumed" => resumed.push(frame),
            "task_update" => replayed.push("task 70".to_owned()),
            "user_message" => replayed.push(frame["message"].as_str().unwrap().to_owned()),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(replayed, ["4", "task 70", "5"], "send order, once");
    assert!(
        resumed.iter().all(|r| r["recovered"] == true),
        "{resumed:?}"
    );
    group_send(&redis.url(), "user_alice", numbered(6)).await;
    assert_eq!(number_of(&stream.next().await.unwrap()), 6, "then live");
    drop(stream);

    // A position the history cannot cover (another epoch): told to resync, nothing replayed.
    let stale = json!({"user_alice": {"epoch": "0000000000000000", "offset": "1-0"}});
    let mut stream = EventStream::open(
        herald.addr,
        &format!(
            "/sse/tasks/?recover=1&last_event_id={}",
            percent_encode(&stale.to_string())
        ),
        &user,
    )
    .await;
    let reply = stream.next_json().await;
    assert_eq!(reply["type"], "herald.resumed");
    assert_eq!(reply["group"], "user_alice");
    assert_eq!(reply["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_ends_the_stream_with_going_away() {
    let redis = RedisServer::start();
    let herald = trusted(&redis, &[]).await;
    let mut stream =
        EventStream::open(herald.addr, "/sse/tasks/", &[("x-remote-user", "alice")]).await;
    assert_eq!(stream.status, 200);
    eventually_metric(&herald, "herald_sse_connections_current", 1).await;
    let status = herald.terminate().await;
    assert!(status.success(), "{status}");
    let events = stream.until_end(Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.as_deref(), Some("close"));
    assert_eq!(events[0].json(), json!({"code": 1001}));
}
