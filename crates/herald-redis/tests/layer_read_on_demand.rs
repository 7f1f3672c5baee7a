//! `read_on_demand`: messages for a layer's own channels stay in Redis until a `receive`
//! waits, as with channels_redis, so capacity pushes back on senders and expiry trims there.

mod common;

use std::time::Duration;

use common::*;
use herald_core::ChannelLayer;
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::{RedisServer, eventually};
use redis::AsyncCommands;
use tokio::time::timeout;

fn config(server: &RedisServer) -> RedisLayerConfig {
    RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_capacity(3)
        .with_brpop_timeout(Duration::from_secs(1))
}

#[tokio::test]
async fn a_channel_nobody_receives_on_fills_up_in_redis() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server).with_read_on_demand(true)).unwrap();
    let channel = timeout(T, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    timeout(T, layer.group_add("g", &channel))
        .await
        .unwrap()
        .unwrap();
    let mut reports = Vec::new();
    for n in 0..4 {
        let report = timeout(T, layer.group_send("g", msg("m", &n.to_string())))
            .await
            .unwrap()
            .unwrap();
        reports.push(report.over_capacity);
    }
    // The fourth is refused by Redis, as channels_redis's consumer makes it.
    assert_eq!(reports, [0, 0, 0, 1]);
    let key = format!("asgi{}", herald_core::names::non_local_name(&channel));
    let mut conn = raw(&server.url()).await;
    let stored: i64 = conn.zcard(&key).await.unwrap();
    assert_eq!(stored, 3, "nothing leaves Redis before a receive");
    for n in 0..3 {
        assert_eq!(recv(&layer, &channel).await, msg("m", &n.to_string()));
    }
    recv_nothing(&layer, &channel, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn by_default_the_readers_drain_at_once() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    let channel = timeout(T, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    timeout(T, layer.group_add("g", &channel))
        .await
        .unwrap()
        .unwrap();
    for n in 0..4u64 {
        let report = timeout(T, layer.group_send("g", msg("m", &n.to_string())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.over_capacity, 0);
        // Taken out of Redis and into the local buffer with nobody receiving.
        eventually(T, "the reader took the message", || {
            let delivered = layer.stats().delivered;
            async move { delivered == n + 1 }
        })
        .await;
    }
    // The local buffer (capacity 3) kept the latest three.
    for n in 1..4 {
        assert_eq!(recv(&layer, &channel).await, msg("m", &n.to_string()));
    }
}
