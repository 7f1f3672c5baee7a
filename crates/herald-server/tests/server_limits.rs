//! Limits: frame size (1009), inbound rate (1008), slow consumers (4008), keepalive, lifetime.

mod common;

use std::num::NonZeroUsize;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use herald_core::Message;
use herald_server::tungstenite::Message as WsMessage;
use herald_server::{RateLimit, ServerConfig};
use herald_test_support::eventually;
use herald_test_support::ws::{close_code, recv_text, send_text, ws_connect};

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let config = ServerConfig::default()
        .with_max_message_size(Some(1024))
        .with_max_frame_size(Some(1024));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut ws).await;
    let big = "x".repeat(4096);
    within(ws.send(WsMessage::text(big))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
    assert_eq!(server.app.metrics().oversize_closes(), 1);
    let layer = server.layer.clone();
    eventually(
        STEP,
        "group_members(&layer, \"user_amadmin\").await == 0",
        || {
            let layer = layer.clone();
            async move { group_members(&layer, "user_amadmin").await == 0 }
        },
    )
    .await;
}

#[tokio::test]
async fn frames_within_the_limit_are_accepted() {
    let config = ServerConfig::default()
        .with_max_message_size(Some(1024))
        .with_max_frame_size(Some(1024));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let padded = format!(r#"{{"action": "ping", "pad": "{}"}}"#, "x".repeat(900));
    send_text(&mut ws, &padded).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
}

#[tokio::test]
async fn flooding_client_is_closed_with_1008() {
    let config = ServerConfig::default().with_rate_limit(Some(RateLimit::new(5, 10).unwrap()));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    // Far more than the burst, sent back to back (the server may close mid-way: ignore errors).
    for _ in 0..100 {
        if within(ws.send(WsMessage::text(r#"{"action": "ping"}"#)))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut pongs = 0;
    let code = loop {
        match within(ws.next()).await {
            Some(Ok(WsMessage::Text(_))) => pongs += 1,
            Some(Ok(WsMessage::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(1008));
    assert!(pongs <= 11, "served {pongs} frames past a burst of 10");
    assert_eq!(server.app.metrics().rate_limit_closes(), 1);
}

#[tokio::test]
async fn steady_client_under_the_rate_is_not_closed() {
    let config = ServerConfig::default().with_rate_limit(Some(RateLimit::new(1000, 50).unwrap()));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    for _ in 0..40 {
        sync(&mut ws).await;
    }
    assert_eq!(server.app.metrics().rate_limit_closes(), 0);
}

#[tokio::test]
async fn never_reading_client_is_closed_as_slow_consumer_while_others_still_receive() {
    let config = ServerConfig::default()
        .with_max_outbound_frames(NonZeroUsize::new(8).unwrap())
        .with_close_timeout(Duration::from_secs(10));
    let server = TestServer::tasks(config).await;
    let mut slow = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    sync(&mut slow).await;
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    sync(&mut bob).await;

    // 64 KiB messages until the slow socket's kernel buffers and queue are full. Bob gets a
    // message every 20 sends and must keep receiving it promptly.
    let payload = "p".repeat(64 * 1024);
    let mut sent = 0;
    while server.app.metrics().slow_consumer_closes() == 0 {
        assert!(sent < 5_000, "slow consumer never detected");
        let msg = Message::with_type("user.message").with("message", payload.as_str());
        within(server.layer.group_send("user_amadmin", msg))
            .await
            .unwrap();
        sent += 1;
        if sent % 20 == 0 {
            let note = Message::with_type("user.message").with("message", "hi bob");
            within(server.layer.group_send("user_bob", note))
                .await
                .unwrap();
            assert_eq!(
                recv_text(&mut bob).await,
                r#"{"type": "user_message", "message": "hi bob"}"#
            );
        }
        // Let the socket tasks run between sends (no sleep: just a scheduler turn).
        tokio::task::yield_now().await;
    }

    // Bob is unaffected after the close too.
    let note = Message::with_type("user.message").with("message", "after");
    within(server.layer.group_send("user_bob", note))
        .await
        .unwrap();
    assert_eq!(
        recv_text(&mut bob).await,
        r#"{"type": "user_message", "message": "after"}"#
    );

    // The slow client finally reads: what was already in flight, then the 4008 close.
    assert_eq!(close_code(&mut slow).await, Some(4008));
    assert_eq!(server.app.metrics().slow_consumer_closes(), 1);
}

#[tokio::test]
async fn idle_socket_is_pinged_and_stays_open_while_it_answers() {
    let config = ServerConfig::default()
        .with_ping_interval(Duration::from_millis(50))
        .with_ping_timeout(Duration::from_millis(500));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let mut pings = 0;
    while pings < 3 {
        match within(ws.next()).await.unwrap().unwrap() {
            // tungstenite answers the ping when it is read.
            WsMessage::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    sync(&mut ws).await;
    assert_eq!(server.app.metrics().ping_timeouts(), 0);
}

#[tokio::test]
async fn client_that_never_answers_pings_is_dropped() {
    let config = ServerConfig::default()
        .with_ping_interval(Duration::from_millis(50))
        .with_ping_timeout(Duration::from_millis(100));
    let server = TestServer::tasks(config).await;
    // Never polled, so it never answers the server's pings.
    let _mute = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    let app = server.app.clone();
    eventually(STEP, "timeouts == 1 && open == 0", || {
        let (timeouts, open) = (
            app.metrics().ping_timeouts(),
            app.metrics().connections_current(),
        );
        async move { timeouts == 1 && open == 0 }
    })
    .await;
    assert_eq!(group_members(&server.layer, "user_amadmin").await, 0);
}

#[tokio::test]
async fn websocket_timeout_closes_with_1000() {
    let config = ServerConfig::default().with_websocket_timeout(Some(Duration::from_millis(200)));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn ping_flood_is_rate_limited_too() {
    let config = ServerConfig::default().with_rate_limit(Some(RateLimit::new(5, 10).unwrap()));
    let server = TestServer::tasks(config).await;
    let mut ws = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    for _ in 0..100 {
        if within(ws.send(WsMessage::Ping(Default::default())))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(server.app.metrics().rate_limit_closes(), 1);
}
