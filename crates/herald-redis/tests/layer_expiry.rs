//! Message expiry: channels_redis tests/test_core.py 20–22.

mod common;

use std::time::Duration;

use common::*;
use herald_core::ChannelLayer;
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;
use redis::AsyncCommands;

fn layer(server: &RedisServer, expiry: u64) -> RedisChannelLayer {
    RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([server.url()])
            .with_expiry(Duration::from_secs(expiry))
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap()
}

#[tokio::test]
async fn earliest_message_expires_on_the_next_write() {
    let server = RedisServer::start();
    let layer = layer(&server, 1);
    layer.send("test-channel", msg("x", "First")).await.unwrap();
    // Trims use whole seconds (int(now) - expiry): wait until the first is strictly older.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    layer
        .send("test-channel", msg("x", "Second"))
        .await
        .unwrap();
    layer.send("test-channel", msg("x", "Third")).await.unwrap();
    assert_eq!(
        recv(&layer, "test-channel")
            .await
            .get("text")
            .unwrap()
            .as_str(),
        Some("Second")
    );
    assert_eq!(
        recv(&layer, "test-channel")
            .await
            .get("text")
            .unwrap()
            .as_str(),
        Some("Third")
    );
    recv_nothing(&layer, "test-channel", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn messages_under_the_expiry_all_arrive_in_order() {
    let server = RedisServer::start();
    let layer = layer(&server, 3);
    for text in ["First", "Second", "Third"] {
        layer.send("test-channel", msg("x", text)).await.unwrap();
    }
    for text in ["First", "Second", "Third"] {
        assert_eq!(
            recv(&layer, "test-channel")
                .await
                .get("text")
                .unwrap()
                .as_str(),
            Some(text)
        );
    }
}

#[tokio::test]
async fn group_send_trims_expired_messages() {
    let server = RedisServer::start();
    let layer = layer(&server, 1);
    layer.group_add("test-group", "test-channel").await.unwrap();
    layer
        .group_send("test-group", msg("x", "First"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    layer
        .group_send("test-group", msg("x", "Second"))
        .await
        .unwrap();
    assert_eq!(
        recv(&layer, "test-channel")
            .await
            .get("text")
            .unwrap()
            .as_str(),
        Some("Second")
    );
    recv_nothing(&layer, "test-channel", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn every_write_refreshes_the_key_expiry() {
    let server = RedisServer::start();
    let layer = layer(&server, 60);
    layer.send("test-channel", msg("x", "")).await.unwrap();
    let mut conn = raw(&server.url()).await;
    let ttl: i64 = conn.ttl("asgitest-channel").await.unwrap();
    assert!((55..=60).contains(&ttl), "ttl {ttl}");
}
