//! Readiness against a real redis-server stopped and restarted under a running `herald serve`:
//! `/healthz` stays 200 (the process is alive), `/readyz` answers 503 with the reason while
//! Redis is down and 200 once it is back, handshakes meanwhile are accepted and closed with
//! 1013, and the log says "down" once and "back" once, not once per failed check.

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use fault_common::{metric, restart_redis_on};
use futures_util::StreamExt;
use herald_test_support::ws::recv_json;
use herald_test_support::{RedisServer, free_port};
use support::{Herald, TIMEOUT, http_get, ws_connect_as};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The monitor's interval in these tests (`--health-interval`).
const INTERVAL: &str = "1";
const DOWN_LINE: &str = "dependency down";
const BACK_LINE: &str = "dependency is back";
const REMINDER_LINE: &str = "dependency still down";

/// Polls `path` until its status line starts with `status`; returns the whole response.
async fn wait_for_status(server: &Herald, path: &str, status: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let resp = http_get(server.addr, path).await;
        // Before the first check every dependency is "not checked yet": not a verdict.
        if resp.starts_with(status) && !resp.contains("not checked yet") {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {status}; last:\n{resp}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The close code of a handshake to /ws/tasks/ as `user`: it must be accepted (101), then the
/// first frame must be a close.
async fn close_code_of_handshake(server: &Herald, user: &str) -> (u16, String) {
    let mut ws = ws_connect_as(server.addr, user).await;
    loop {
        let frame = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match frame {
            WsMessage::Close(Some(close)) => {
                return (u16::from(close.code), close.reason.to_string());
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn count(log: &str, line: &str) -> usize {
    log.lines().filter(|l| l.contains(line)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_redis_and_handshakes_get_1013_while_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("herald.log");
    let mut redis = RedisServer::start();
    let port = redis.port();
    let url = redis.url();
    let server = Herald::start_with_log(
        &[
            "--redis",
            &url,
            "--trusted-user-header",
            "x-remote-user",
            "--health-interval",
            INTERVAL,
        ],
        &[("RUST_LOG", "info")],
        &log_path,
    )
    .await;
    let ready = wait_for_status(&server, "/readyz", "HTTP/1.1 200").await;
    assert!(ready.ends_with("ready\n"), "{ready}");
    assert_eq!(metric(&server, "herald_ready").await, Some(1.0));

    redis.kill();
    let down_at = Instant::now();
    let not_ready = wait_for_status(&server, "/readyz", "HTTP/1.1 503").await;
    assert!(
        not_ready.contains("channel_layer: redis host #0")
            && not_ready.contains("Connection refused"),
        "the reason names the layer and the error:\n{not_ready}"
    );
    let alive = http_get(server.addr, "/healthz").await;
    assert!(alive.starts_with("HTTP/1.1 200"), "liveness: {alive}");
    assert_eq!(metric(&server, "herald_dependency_up").await, Some(0.0));
    assert_eq!(metric(&server, "herald_ready").await, Some(0.0));

    let (code, reason) = close_code_of_handshake(&server, "amadmin").await;
    assert_eq!((code, reason.as_str()), (1013, "try again later"));

    // Several failed checks (one per second) before Redis comes back; fewer than the ten
    // after which the first reminder is due.
    while down_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _redis = restart_redis_on(port).await;
    let ready = wait_for_status(&server, "/readyz", "HTTP/1.1 200").await;
    assert!(ready.ends_with("ready\n"), "{ready}");
    assert_eq!(metric(&server, "herald_dependency_up").await, Some(1.0));

    // Served again: a handshake is accepted and a message sent through Redis reaches it.
    let mut ws = ws_connect_as(server.addr, "amadmin").await;
    let out = support::herald(&["send", "--redis", &url, "--user", "amadmin", "back"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(recv_json(&mut ws).await["message"], "back");

    server.terminate().await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        count(&log, DOWN_LINE),
        1,
        "one line when it went down:\n{log}"
    );
    assert_eq!(
        count(&log, BACK_LINE),
        1,
        "one line when it came back:\n{log}"
    );
    assert_eq!(
        count(&log, REMINDER_LINE),
        0,
        "no reminder within 10 s:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_outage_logs_a_reminder_with_backoff_not_a_line_per_check() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("herald.log");
    // Nothing listens there: Redis is down from the start.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let server = Herald::start_with_log(
        &["--redis", &url, "--health-interval", INTERVAL],
        &[("RUST_LOG", "info")],
        &log_path,
    )
    .await;
    let not_ready = wait_for_status(&server, "/readyz", "HTTP/1.1 503").await;
    assert!(not_ready.contains("channel_layer"), "{not_ready}");
    // About 13 checks: the reminder is due after 10 intervals, the next one 20 later.
    tokio::time::sleep(Duration::from_secs(13)).await;
    server.terminate().await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(count(&log, DOWN_LINE), 1, "{log}");
    assert_eq!(count(&log, REMINDER_LINE), 1, "{log}");
    assert_eq!(count(&log, BACK_LINE), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_django_database_makes_the_server_not_ready() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A PostgreSQL URL where nothing listens.
    let db = format!("postgres://herald@127.0.0.1:{}/app", free_port());
    let server = Herald::start(&[
        "--redis",
        &url,
        "--secret-key",
        "k",
        "--django-db",
        &db,
        "--health-interval",
        INTERVAL,
    ])
    .await;
    let not_ready = wait_for_status(&server, "/readyz", "HTTP/1.1 503").await;
    assert!(
        not_ready.contains("django_database: postgres") && !not_ready.contains("channel_layer"),
        "{not_ready}"
    );
    let mut req = format!("ws://{}/ws/tasks/", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", "sessionid=x".parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    let frame = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WsMessage::Close(Some(close)) = frame else {
        panic!("expected a close frame, got {frame:?}");
    };
    assert_eq!(u16::from(close.code), 1013);
}
