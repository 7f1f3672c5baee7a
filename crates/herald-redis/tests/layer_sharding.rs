//! Sharding: channels_redis tests/test_core.py 11, 13 (10 shards = db 0–9 of one server) and
//! the direct-send behaviour of Python's `send()` (it hashes the full channel name).

mod common;

use std::time::Duration;

use common::*;
use herald_core::ChannelLayer;
use herald_redis::internals::{Codec, consistent_hash};
use herald_redis::{RedisChannelLayer, RedisLayerConfig, SerializerFormat};
use herald_test_support::RedisServer;
use redis::AsyncCommands;
use tokio::time::timeout;

fn ten_shards(server: &RedisServer) -> RedisLayerConfig {
    RedisLayerConfig::default()
        .with_hosts((0..10).map(|db| server.url_db(db)))
        .with_brpop_timeout(Duration::from_secs(1))
}

#[tokio::test]
async fn groups_work_across_ten_shards() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(ten_shards(&server)).unwrap();
    let c1 = layer.new_channel("test-gr-chan-1").await.unwrap();
    let c2 = layer.new_channel("test-gr-chan-2").await.unwrap();
    let c3 = layer.new_channel("test-gr-chan-3").await.unwrap();
    for c in [&c1, &c2, &c3] {
        layer.group_add("test-group", c).await.unwrap();
    }
    layer.group_discard("test-group", &c2).await.unwrap();
    layer
        .group_send("test-group", msg("message.1", ""))
        .await
        .unwrap();
    layer
        .group_send("test-group", msg("message.2", ""))
        .await
        .unwrap();
    for c in [&c1, &c3] {
        assert_eq!(recv(&layer, c).await.msg_type(), Some("message.1"));
        assert_eq!(recv(&layer, c).await.msg_type(), Some("message.2"));
    }
    recv_nothing(&layer, &c2, Duration::from_secs(1)).await;
    // The group lives on the shard of hash("test-group") = 8 on 10 shards.
    let mut db8 = raw(&server.url_db(8)).await;
    let n: i64 = db8.zcard("asgi:group:test-group").await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn group_send_to_a_hundred_channels_on_ten_shards_is_fast() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(ten_shards(&server)).unwrap();
    let mut chans = Vec::new();
    for i in 0..100 {
        let c = layer.new_channel(&format!("channel{i}")).await.unwrap();
        layer.group_add("test-group", &c).await.unwrap();
        chans.push(c);
    }
    let start = std::time::Instant::now();
    let report = timeout(T, layer.group_send("test-group", msg("message.1", "")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.members, 100);
    for c in &chans {
        assert_eq!(recv(&layer, c).await.msg_type(), Some("message.1"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "Python's bound for 100 channels"
    );
}

#[tokio::test]
async fn direct_send_lands_on_the_shard_of_the_non_local_name() {
    let server = RedisServer::start();
    let receiver = RedisChannelLayer::new(ten_shards(&server)).unwrap();
    let sender = RedisChannelLayer::new(ten_shards(&server)).unwrap();
    let ch = receiver.new_channel("specific").await.unwrap();
    let nonlocal = &ch[..=ch.find('!').unwrap()];
    let expected = consistent_hash(nonlocal.as_bytes(), 10);
    // Stop nobody: just check where the key is written, before the receiver drains it,
    // by sending to a channel of a process that has no reader.
    let foreign = format!("specific.{}!x", "ab".repeat(16));
    sender.send(&foreign, msg("x", "")).await.unwrap();
    let fexp = consistent_hash(format!("specific.{}!", "ab".repeat(16)).as_bytes(), 10);
    for db in 0..10u32 {
        let mut conn = raw(&server.url_db(db)).await;
        let n: i64 = conn
            .zcard(format!("asgispecific.{}!", "ab".repeat(16)))
            .await
            .unwrap();
        assert_eq!(n, i64::from(db as usize == fexp), "db {db}");
    }
    sender.send(&ch, msg("direct", "")).await.unwrap();
    assert_eq!(recv(&receiver, &ch).await.msg_type(), Some("direct"));
    assert!(expected < 10);
}

#[tokio::test]
async fn python_style_sends_to_any_shard_are_still_received() {
    // Python's send() hashes the full channel name, so a message for us
    // may sit on any shard: write one on every shard and receive them all.
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(ten_shards(&server)).unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    let key = layer.keys().channel_key(&ch);
    let codec = Codec::new(SerializerFormat::Msgpack, 12);
    for db in 0..10u32 {
        let mut m = herald_core::Message::with_type("from.python").with("db", i64::from(db));
        m.insert("__asgi_channel__", ch.as_str());
        let member = codec.encode(&m).unwrap();
        let mut conn = raw(&server.url_db(db)).await;
        let _: () = conn.zadd(&key, member, now()).await.unwrap();
    }
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..10 {
        seen.push(recv(&layer, &ch).await.get("db").unwrap().as_i64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn flush_deletes_the_prefix_on_every_shard() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(ten_shards(&server)).unwrap();
    for i in 0..20 {
        layer.send(&format!("chan{i}"), msg("x", "")).await.unwrap();
        layer.group_add(&format!("group{i}"), "chan").await.unwrap();
    }
    let mut other = raw(&server.url_db(3)).await;
    let _: () = other.set("unrelated", 1).await.unwrap();
    layer.flush().await.unwrap();
    for db in 0..10u32 {
        let mut conn = raw(&server.url_db(db)).await;
        let keys: Vec<String> = conn.keys("asgi*").await.unwrap();
        assert!(keys.is_empty(), "db {db}: {keys:?}");
    }
    let kept: i64 = other.get("unrelated").await.unwrap();
    assert_eq!(kept, 1);
}
