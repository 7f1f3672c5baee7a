//! Secrets never reach the logs: `herald serve` runs with `RUST_LOG=trace` while a Django user
//! connects with a real session cookie, forged and refused handshakes come in, and the publish
//! API is called with the right token, a wrong one and none. Its whole stderr must contain
//! neither the `SECRET_KEY`, nor any cookie value, nor any token.
//!
//! Needs the compat venv (real Django makes the session); skips with a reason without it, and
//! fails under `HERALD_REQUIRE_COMPAT=1`.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald_test_support::ws::{recv_json, send_json};
use herald_test_support::{RedisServer, compat_python};
use support::django::{Django, SECRET};
use support::{Herald, TIMEOUT, bin, handshake_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PUBLISH_TOKEN: &str = "publish-token-7f3a9c1e5b2d";
const WRONG_TOKEN: &str = "wrong-token-4c8e2a6f0d1b";
const ALLOWED_ORIGIN: &str = "https://app.example.com";

async fn publish(addr: SocketAddr, token: Option<&str>, body: &str) -> u16 {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let resp = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `herald serve` with `RUST_LOG=trace` and stderr captured in `log`.
async fn start_tracing(args: &[&str], log: &std::path::Path) -> Herald {
    let port = herald_test_support::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = tokio::process::Command::new(bin())
        .arg("serve")
        .args(["--bind", &addr.to_string()])
        .args(args)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut server = Herald { addr, child };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "herald serve exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if handshake_status_or_none(addr).await == Some(403) {
            return server;
        }
        assert!(Instant::now() < deadline, "herald serve did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of an anonymous handshake, or `None` while nothing listens.
async fn handshake_status_or_none(addr: SocketAddr) -> Option<u16> {
    if tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .is_err()
    {
        return None;
    }
    Some(handshake_status(addr, None, Some(ALLOWED_ORIGIN)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_cookies_and_tokens_never_appear_in_trace_logs() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &redis.url());
    let alice = django.fixture(&["--username", "alice"]).await;
    let (cookie_name, session_key) = alice.cookie.split_once('=').unwrap();
    assert!(session_key.len() >= 8, "{}", alice.cookie);

    let log = dir.path().join("herald.stderr");
    let redis_url = redis.url();
    let server = start_tracing(
        &[
            "--redis",
            &redis_url,
            "--secret-key",
            SECRET,
            "--django-db",
            &db_url,
            "--publish-token",
            PUBLISH_TOKEN,
            "--allowed-origin",
            ALLOWED_ORIGIN,
        ],
        &log,
    )
    .await;

    // An authenticated socket that exchanges frames and receives a published message.
    let mut req = format!("ws://{}/ws/tasks/", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", alice.cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", ALLOWED_ORIGIN.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    send_json(&mut ws, serde_json::json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    let body = r#"{"user": "alice", "message": {"type": "user.message", "message": "hi"}}"#;
    assert_eq!(publish(server.addr, Some(PUBLISH_TOKEN), body).await, 200);
    assert_eq!(recv_json(&mut ws).await["message"], "hi");

    // Refused: a forged session key, a cookie signed-looking garbage, the right cookie from a
    // foreign Origin, and the publish API without its token or with a wrong one.
    let forged_key = format!("{}zz", &session_key[..session_key.len() - 2]);
    let forged = format!("{cookie_name}={forged_key}");
    let garbage_value = "InvalidSigned:1tX9Qb:Zm9yZ2VkLXNpZ25hdHVyZQ";
    let garbage = format!("{cookie_name}={garbage_value}; csrftoken=csrf-5e1d7a93");
    for cookie in [forged.as_str(), garbage.as_str()] {
        assert_eq!(
            handshake_status(server.addr, Some(cookie), Some(ALLOWED_ORIGIN)).await,
            403,
            "{cookie}"
        );
    }
    assert_eq!(
        handshake_status(
            server.addr,
            Some(&alice.cookie),
            Some("https://evil.example")
        )
        .await,
        403
    );
    assert_eq!(publish(server.addr, None, body).await, 401);
    assert_eq!(publish(server.addr, Some(WRONG_TOKEN), body).await, 401);

    drop(ws);
    let status = server.terminate().await;
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log).unwrap();
    // The log really is at trace level and covers the traffic above.
    assert!(text.contains("TRACE"), "no trace output: {text}");
    assert!(text.lines().count() > 20, "{text}");
    // The refused handshakes and publish calls were logged (by module), so they were checked.
    for target in ["herald_server::upgrade", "herald_server::publish"] {
        assert!(text.contains(target), "nothing from {target}: {text}");
    }
    for (what, secret) in [
        ("SECRET_KEY", SECRET),
        ("session cookie", session_key),
        ("forged session key", forged_key.as_str()),
        ("garbage cookie", garbage_value),
        ("csrf cookie", "csrf-5e1d7a93"),
        ("publish token", PUBLISH_TOKEN),
        ("wrong publish token", WRONG_TOKEN),
    ] {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{what} leaked into the log: {line}");
        }
    }
}
