//! Disconnecting a user on every instance: two `herald serve` processes on one Redis, the
//! user's sockets on both, and the three ways — `herald disconnect USER`, `POST
//! /api/disconnect`, and a Python channels_redis `group_send` of `{"type":
//! "herald.disconnect"}` — each close every socket of that user (and nobody else's) with the
//! code asked for.

mod support;

use herald_test_support::ws::{Ws, close_code, recv_json, send_json};
use herald_test_support::{RedisServer, compat_python};
use serde_json::json;
use support::{Herald, TIMEOUT, herald, ws_connect_as};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "disconnect-test-token";

async fn two_heralds(redis: &RedisServer) -> [Herald; 2] {
    let url = redis.url();
    let args = [
        "--redis",
        url.as_str(),
        "--trusted-user-header",
        "X-Remote-User",
        "--publish-token",
        TOKEN,
    ];
    [Herald::start(&args).await, Herald::start(&args).await]
}

/// alice on both instances, bob on both.
async fn connect_all(heralds: &[Herald; 2]) -> (Vec<Ws>, Vec<Ws>) {
    let mut alice = Vec::new();
    let mut bob = Vec::new();
    for h in heralds {
        alice.push(ws_connect_as(h.addr, "alice").await);
        bob.push(ws_connect_as(h.addr, "bob").await);
    }
    // Joined: each socket has answered a frame after its group_add.
    for ws in alice.iter_mut().chain(bob.iter_mut()) {
        still_served(ws).await;
    }
    (alice, bob)
}

async fn still_served(ws: &mut Ws) {
    send_json(ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(ws).await["type"], "pong");
}

/// Every alice socket closed with `code`; every bob socket still served.
async fn only_alice_closed(alice: &mut [Ws], bob: &mut [Ws], code: u16) {
    for ws in alice {
        assert_eq!(close_code(ws).await, Some(code));
    }
    for ws in bob {
        still_served(ws).await;
    }
}

/// A raw `POST path` with the bearer token; the status and body.
async fn post(addr: std::net::SocketAddr, path: &str, body: &serde_json::Value) -> (u16, String) {
    let body = body.to_string();
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let resp = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn herald_disconnect_closes_the_users_sockets_on_every_instance() {
    let redis = RedisServer::start();
    let heralds = two_heralds(&redis).await;
    let (mut alice, mut bob) = connect_all(&heralds).await;
    let out = herald(&["disconnect", "alice", "--redis", &redis.url()]).await;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert_eq!(said.trim(), "sent to group user_alice: 2 channels");
    only_alice_closed(&mut alice, &mut bob, 4401).await;

    // Another code, and through a server's publish API when no Redis is given.
    let (mut alice, _) = connect_all(&heralds).await;
    let server = format!("http://{}", heralds[1].addr);
    let out = herald(&[
        "disconnect",
        "alice",
        "--code",
        "4000",
        "--server",
        &server,
        "--token",
        TOKEN,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    only_alice_closed(&mut alice, &mut bob, 4000).await;

    // A code no server may send is refused before anything is sent.
    let out = herald(&[
        "disconnect",
        "bob",
        "--code",
        "1006",
        "--redis",
        &redis.url(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1006"));
    for ws in &mut bob {
        still_served(ws).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn post_api_disconnect_closes_the_users_sockets_on_every_instance() {
    let redis = RedisServer::start();
    let heralds = two_heralds(&redis).await;
    let (mut alice, mut bob) = connect_all(&heralds).await;
    let (status, body) = post(
        heralds[0].addr,
        "/api/disconnect",
        &json!({"user": "alice"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(
        answer["members"], 2,
        "one group channel per instance: {answer}"
    );
    only_alice_closed(&mut alice, &mut bob, 4401).await;

    // Bad input: a clear 400, nothing sent, nothing closed.
    for bad in [
        json!({"user": "bob", "code": 1011}),
        json!({"user": "bob", "code": "4401"}),
        json!({"code": 4401}),
        json!({"user": "bob b"}),
    ] {
        let (status, body) = post(heralds[0].addr, "/api/disconnect", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    for ws in &mut bob {
        still_served(ws).await;
    }
    // Without the token: 401.
    let (status, _) = {
        let mut s = tokio::net::TcpStream::connect(heralds[0].addr)
            .await
            .unwrap();
        let req = "POST /api/disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\
                   Connection: close\r\n\r\n{\"user\": \"bob\"}";
        tokio::time::timeout(TIMEOUT, s.write_all(req.as_bytes()))
            .await
            .unwrap()
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        (out.split_whitespace().nth(1).unwrap().to_owned(), out)
    };
    assert_eq!(status, "401");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_group_send_of_herald_disconnect_closes_the_users_sockets_everywhere() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let heralds = two_heralds(&redis).await;
    let (mut alice, mut bob) = connect_all(&heralds).await;
    // What a Django view runs, unchanged, through channels_redis:
    // async_to_sync(layer.group_send)("user_alice", {"type": "herald.disconnect", "code": 4003})
    let config = json!({"hosts": [{"address": redis.url(), "socket_timeout": null}]});
    let mut peer = support::peer_py(
        &python,
        &config,
        &[
            "group_send",
            "user_alice",
            r#"{"type": "herald.disconnect", "code": 4003}"#,
        ],
    );
    let mut stdout = String::new();
    let read = async {
        peer.stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        peer.wait().await.unwrap()
    };
    let status = tokio::time::timeout(TIMEOUT, read).await.unwrap();
    assert!(status.success(), "{stdout}");
    let reply: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(reply["ok"], true, "{stdout}");
    only_alice_closed(&mut alice, &mut bob, 4003).await;

    // The browser never sees the control message as a frame: the next alice socket gets the
    // next user message, nothing before it.
    let mut again = ws_connect_as(heralds[0].addr, "alice").await;
    still_served(&mut again).await;
    let out = herald(&[
        "send",
        "--user",
        "alice",
        "hello again",
        "--redis",
        &redis.url(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(recv_json(&mut again).await["message"], "hello again");
}
