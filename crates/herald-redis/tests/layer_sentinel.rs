//! Sentinel hosts: channels_redis tests/test_sentinel.py against a locally started
//! `redis-server --sentinel` with a Sentinel password (`sentinel_kwargs`).

mod common;

use std::time::Duration;

use common::*;
use herald_core::ChannelLayer;
use herald_redis::{HostSpec, RedisChannelLayer, RedisLayerConfig, SentinelSpec};
use herald_test_support::{RedisServer, SentinelServer};
use redis::AsyncCommands;

fn sentinel_host(sentinel: &SentinelServer, db: i64) -> HostSpec {
    HostSpec::sentinel(
        SentinelSpec::new("sentinel", vec![("127.0.0.1".to_owned(), sentinel.port())])
            .with_sentinel_password("channels_redis")
            .with_db(db),
    )
}

#[tokio::test]
async fn send_receive_and_groups_through_sentinel() {
    let master = RedisServer::start();
    let sentinel = SentinelServer::start("sentinel", master.port(), Some("channels_redis"));
    let layer = RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([sentinel_host(&sentinel, 0)])
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    layer
        .send("test-channel-1", msg("test.message", "Ahoy-hoy!"))
        .await
        .unwrap();
    assert_eq!(
        recv(&layer, "test-channel-1")
            .await
            .get("text")
            .unwrap()
            .as_str(),
        Some("Ahoy-hoy!")
    );
    let c1 = layer.new_channel("specific").await.unwrap();
    let c2 = layer.new_channel("specific").await.unwrap();
    layer.group_add("test-group", &c1).await.unwrap();
    layer.group_add("test-group", &c2).await.unwrap();
    layer.group_discard("test-group", &c2).await.unwrap();
    layer
        .group_send("test-group", msg("message.1", ""))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &c1).await.msg_type(), Some("message.1"));
    recv_nothing(&layer, &c2, Duration::from_millis(500)).await;
    // The data is on the master that Sentinel named.
    let mut conn = raw(&master.url()).await;
    let n: i64 = conn.zcard("asgi:group:test-group").await.unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn ten_sentinel_shards_on_one_master_use_dbs_0_to_9() {
    let master = RedisServer::start();
    let sentinel = SentinelServer::start("sentinel", master.port(), Some("channels_redis"));
    let layer = RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts((0..10).map(|db| sentinel_host(&sentinel, db)))
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let c = layer.new_channel("specific").await.unwrap();
    layer.group_add("test-group", &c).await.unwrap();
    layer
        .group_send("test-group", msg("message.1", ""))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &c).await.msg_type(), Some("message.1"));
    let mut db8 = raw(&master.url_db(8)).await;
    let n: i64 = db8.zcard("asgi:group:test-group").await.unwrap();
    assert_eq!(n, 1, "hash('test-group') on 10 shards is 8");
}

#[tokio::test]
async fn wrong_sentinel_password_is_a_redis_error() {
    let master = RedisServer::start();
    let sentinel = SentinelServer::start("sentinel", master.port(), Some("channels_redis"));
    let host = HostSpec::sentinel(
        SentinelSpec::new("sentinel", vec![("127.0.0.1".to_owned(), sentinel.port())])
            .with_sentinel_password("wrong"),
    );
    let layer = RedisChannelLayer::new(RedisLayerConfig::default().with_hosts([host])).unwrap();
    let err = tokio::time::timeout(T, layer.send("x", msg("x", "")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_redis(), "{err:?}");
}
