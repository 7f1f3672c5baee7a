//! Redis restarts: readers reconnect, memberships come back, delivery resumes.

mod common;

use std::time::Duration;

use common::*;
use herald_core::{ChannelLayer, Message};
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::{RedisServer, eventually};
use redis::AsyncCommands;

fn config(server: &RedisServer) -> RedisLayerConfig {
    RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_brpop_timeout(Duration::from_secs(1))
        .with_reconnect_delay(Duration::from_millis(20), Duration::from_millis(200))
}

async fn member_present(url: &str, group_key: &str, channel: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    let score: Option<f64> = conn.zscore(group_key, channel).await.unwrap_or(None);
    score.is_some()
}

#[tokio::test]
async fn restart_without_persistence_readds_memberships_and_delivery_resumes() {
    let mut server = RedisServer::start();
    let port = server.port();
    let url = server.url();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    layer.group_add("chat", &ch).await.unwrap();
    layer
        .group_send("chat", Message::with_type("before"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &ch).await.msg_type(), Some("before"));

    server.kill();
    let server = RedisServer::start_on_port(port, &[]).unwrap();
    assert_eq!(server.url(), url);

    eventually(Duration::from_secs(10), "membership re-added", || {
        member_present(&url, "asgi:group:chat", &ch)
    })
    .await;
    assert!(layer.stats().reconnects >= 1);
    assert!(layer.stats().memberships_refreshed >= 1);
    // The shared command connection is stale too: the first group_send must reconnect.
    let report = tokio::time::timeout(T, layer.group_send("chat", Message::with_type("after")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.members, 1);
    assert_eq!(recv(&layer, &ch).await.msg_type(), Some("after"));
}

#[tokio::test]
async fn memberships_are_refreshed_periodically() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(
        config(&server).with_group_refresh_interval(Some(Duration::from_millis(200))),
    )
    .unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    layer.group_add("chat", &ch).await.unwrap();
    let url = server.url();
    let mut conn = raw(&url).await;
    let _: () = conn.del("asgi:group:chat").await.unwrap();
    eventually(Duration::from_secs(5), "membership refreshed", || {
        member_present(&url, "asgi:group:chat", &ch)
    })
    .await;
    let ttl: i64 = conn.ttl("asgi:group:chat").await.unwrap();
    assert!(
        ttl > 86000,
        "refresh also sets EXPIRE group_expiry, ttl {ttl}"
    );
    // Discarded memberships stay gone.
    layer.group_discard("chat", &ch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!member_present(&server.url(), "asgi:group:chat", &ch).await);
}

#[tokio::test]
async fn sends_fail_while_redis_is_down_and_work_after_it_returns() {
    let mut server = RedisServer::start();
    let port = server.port();
    let layer =
        RedisChannelLayer::new(config(&server).with_connection_timeout(Duration::from_millis(500)))
            .unwrap();
    layer.send("plain", Message::with_type("x")).await.unwrap();
    server.kill();
    let err = tokio::time::timeout(T, layer.send("plain", Message::with_type("x")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_redis() || err.is_timeout(), "{err:?}");
    let _server = RedisServer::start_on_port(port, &[]).unwrap();
    tokio::time::timeout(T, layer.send("plain", Message::with_type("y")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&layer, "plain").await.msg_type(), Some("y"));
}
