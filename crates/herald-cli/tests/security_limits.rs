//! The security flags of `herald serve`, end to end through the real binary: per-user and
//! per-IP connection caps (429), the Origin check (403) and the publish token (401), with the
//! refusals visible on `/metrics`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_test_support::RedisServer;
use herald_test_support::ws::{Ws, recv_json, send_json};
use support::{Herald, TIMEOUT, http_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ORIGIN: &str = "https://app.example.com";
const TOKEN: &str = "limits-publish-token";

/// A handshake as `user` from `origin`: the socket, or the HTTP status it was refused with.
async fn open(addr: SocketAddr, user: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/ws/tasks/")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-remote-user", user.parse().unwrap());
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(other) => panic!("{other:?}"),
    }
}

async fn ping(ws: &mut Ws) {
    send_json(ws, serde_json::json!({"action": "ping"})).await;
    assert_eq!(recv_json(ws).await["type"], "pong");
}

async fn publish(addr: SocketAddr, token: Option<&str>, user: &str, text: &str) -> u16 {
    let body =
        serde_json::json!({"user": user, "message": {"type": "user.message", "message": text}})
            .to_string();
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

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let page = http_get(addr, "/metrics").await;
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn caps_origin_and_publish_token_hold_through_the_binary() {
    let redis = RedisServer::start();
    let server = Herald::start(&[
        "--redis",
        &redis.url(),
        "--trusted-user-header",
        "x-remote-user",
        "--max-connections-per-user",
        "2",
        "--max-connections-per-ip",
        "3",
        "--allowed-origin",
        ORIGIN,
        "--publish-token",
        TOKEN,
    ])
    .await;
    let addr = server.addr;

    // Origin first: a foreign or missing Origin is refused whatever the caps say.
    assert_eq!(
        open(addr, "alice", Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        open(addr, "alice", Some("https://app.example.com.evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(open(addr, "alice", None).await.err(), Some(403));

    // Per user: two sockets for alice, the third is 429.
    let mut alice1 = open(addr, "alice", Some(ORIGIN)).await.unwrap();
    let mut alice2 = open(addr, "alice", Some(ORIGIN)).await.unwrap();
    ping(&mut alice1).await;
    ping(&mut alice2).await;
    assert_eq!(open(addr, "alice", Some(ORIGIN)).await.err(), Some(429));
    // Per IP: a third user fits (3 from 127.0.0.1), a fourth socket does not.
    let mut bob = open(addr, "bob", Some(ORIGIN)).await.unwrap();
    ping(&mut bob).await;
    assert_eq!(open(addr, "carol", Some(ORIGIN)).await.err(), Some(429));

    // The publish API: refused without its token or with another, delivered with it — to
    // alice's sockets only.
    assert_eq!(publish(addr, None, "alice", "x").await, 401);
    assert_eq!(
        publish(addr, Some("not-the-token"), "alice", "x").await,
        401
    );
    assert_eq!(publish(addr, Some(TOKEN), "alice", "for alice").await, 200);
    for ws in [&mut alice1, &mut alice2] {
        assert_eq!(recv_json(ws).await["message"], "for alice");
    }
    // Bob's next frame is his own pong: nothing of alice's reached him.
    ping(&mut bob).await;

    // Closing frees the slot (the release is asynchronous: poll with a deadline).
    tokio::time::timeout(TIMEOUT, alice1.close(None))
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut again = loop {
        match open(addr, "alice", Some(ORIGIN)).await {
            Ok(ws) => break ws,
            Err(429) => {
                assert!(Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    ping(&mut again).await;

    assert_eq!(metric(addr, "herald_origin_rejects_total").await, 3);
    assert!(metric(addr, "herald_connection_limit_rejects_total").await >= 2);
    assert_eq!(metric(addr, "herald_connections_current").await, 3);
}
