//! The receive path: routing by `__asgi_channel__`, bounded buffers, garbage skipped.

mod common;

use std::time::Duration;

use common::*;
use herald_core::{ChannelLayer, Message, Value};
use herald_redis::internals::Codec;
use herald_redis::{RedisChannelLayer, RedisLayerConfig, SerializerFormat};
use herald_test_support::{RedisServer, eventually};
use redis::AsyncCommands;

fn config(server: &RedisServer) -> RedisLayerConfig {
    RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_capacity(3)
        .with_brpop_timeout(Duration::from_secs(1))
}

async fn zadd(server: &RedisServer, key: &str, member: Vec<u8>) {
    let mut conn = raw(&server.url()).await;
    let _: () = conn.zadd(key, member, now()).await.unwrap();
}

fn routed(codec: &Codec, t: &str, target: Value) -> Vec<u8> {
    let mut m = Message::with_type(t);
    m.insert("__asgi_channel__", target);
    codec.encode(&m).unwrap()
}

#[tokio::test]
async fn garbage_members_are_counted_and_skipped() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    let key = layer.keys().channel_key(&ch);
    let codec = Codec::new(SerializerFormat::Msgpack, 12);
    let mut bad_msgpack = vec![0u8; 12];
    bad_msgpack.extend_from_slice(&[0x81, 0xc1]);
    let mut not_a_map = vec![0u8; 12];
    not_a_map.push(0x05);
    zadd(&server, &key, b"short".to_vec()).await;
    zadd(&server, &key, bad_msgpack).await;
    zadd(&server, &key, not_a_map).await;
    zadd(
        &server,
        &key,
        codec.encode(&Message::with_type("no.target")).unwrap(),
    )
    .await;
    zadd(&server, &key, routed(&codec, "int.target", Value::Int(5))).await;
    zadd(
        &server,
        &key,
        routed(&codec, "good", Value::Str(ch.clone())),
    )
    .await;
    assert_eq!(recv(&layer, &ch).await.msg_type(), Some("good"));
    let stats = layer.stats();
    assert_eq!(stats.decode_short_member, 1);
    assert_eq!(stats.decode_body, 2);
    assert_eq!(stats.decode_channel, 2);
    assert_eq!(stats.decode_errors(), 5);
    assert_eq!(stats.received, 3);
}

#[tokio::test]
async fn bad_fernet_tokens_are_counted_and_skipped() {
    let server = RedisServer::start();
    let layer =
        RedisChannelLayer::new(config(&server).with_symmetric_encryption_keys(["right"])).unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    let key = layer.keys().channel_key(&ch);
    let wrong = Codec::new(SerializerFormat::Msgpack, 12).with_encryption_keys(&["wrong"]);
    zadd(
        &server,
        &key,
        routed(&wrong, "wrong.key", Value::Str(ch.clone())),
    )
    .await;
    layer
        .send(&ch, Message::with_type("right.key"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &ch).await.msg_type(), Some("right.key"));
    assert_eq!(layer.stats().decode_fernet, 1);
}

#[tokio::test]
async fn a_list_target_fans_out_to_every_listed_local_channel() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    let a = layer.new_channel("specific").await.unwrap();
    let b = layer.new_channel("specific").await.unwrap();
    let key = layer.keys().channel_key(&a);
    let codec = Codec::new(SerializerFormat::Msgpack, 12);
    let target = Value::Array(vec![Value::Str(a.clone()), Value::Str(b.clone())]);
    zadd(&server, &key, routed(&codec, "fan.out", target)).await;
    assert_eq!(recv(&layer, &a).await, Message::with_type("fan.out"));
    assert_eq!(recv(&layer, &b).await, Message::with_type("fan.out"));
}

#[tokio::test]
async fn messages_for_closed_channels_are_dropped_and_counted() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    let gone = layer.new_channel("specific").await.unwrap();
    let alive = layer.new_channel("specific").await.unwrap();
    layer.close_channel(&gone);
    layer.send(&gone, Message::with_type("lost")).await.unwrap();
    layer
        .send(&alive, Message::with_type("kept"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &alive).await.msg_type(), Some("kept"));
    assert_eq!(layer.stats().unknown_channel_drops, 1);
}

#[tokio::test]
async fn a_full_buffer_drops_its_oldest_without_blocking_other_channels() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server).with_capacity(100)).unwrap();
    let slow = layer.new_channel("specific").await.unwrap();
    let fast = layer.new_channel("specific").await.unwrap();
    // Local buffers hold `capacity` (100); Redis also allows 100 per key, so send in rounds
    // and let the reader drain between them.
    for i in 0..250 {
        loop {
            match layer
                .send(&slow, Message::with_type("m").with("i", i))
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_channel_full() => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("{e}"),
            }
        }
    }
    layer.send(&fast, Message::with_type("fast")).await.unwrap();
    assert_eq!(recv(&layer, &fast).await.msg_type(), Some("fast"));
    eventually(T, "all 250 routed", || async {
        layer.stats().delivered >= 251
    })
    .await;
    assert_eq!(layer.stats().buffer_drops, 150);
    for i in 150..250 {
        assert_eq!(
            recv(&layer, &slow).await.get("i").and_then(Value::as_i64),
            Some(i)
        );
    }
}

#[tokio::test]
async fn many_channels_receive_concurrently() {
    let server = RedisServer::start();
    let layer =
        std::sync::Arc::new(RedisChannelLayer::new(config(&server).with_capacity(100)).unwrap());
    let mut chans = Vec::new();
    for _ in 0..200 {
        let c = layer.new_channel("specific").await.unwrap();
        layer.group_add("everyone", &c).await.unwrap();
        chans.push(c);
    }
    let waiters: Vec<_> = chans
        .iter()
        .map(|c| {
            let layer = layer.clone();
            let c = c.clone();
            tokio::spawn(async move { recv(&*layer, &c).await })
        })
        .collect();
    let report = layer
        .group_send("everyone", Message::with_type("hello"))
        .await
        .unwrap();
    assert_eq!(report.members, 200);
    for w in waiters {
        assert_eq!(
            tokio::time::timeout(T, w)
                .await
                .unwrap()
                .unwrap()
                .msg_type(),
            Some("hello")
        );
    }
}

/// Redis < 7 has no BZMPOP: with the command renamed away, readers fall back to
/// ZPOPMIN + BZPOPMIN and still drain in order.
#[tokio::test]
async fn readers_fall_back_when_bzmpop_is_unknown() {
    let server = RedisServer::start_with_args(&["--rename-command", "BZMPOP", ""]);
    let layer = RedisChannelLayer::new(config(&server).with_capacity(100)).unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    for i in 0..50 {
        layer
            .send(&ch, Message::with_type("m").with("i", i))
            .await
            .unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            recv(&layer, &ch).await.get("i").and_then(Value::as_i64),
            Some(i)
        );
    }
    // And a later message after the reader went back to blocking.
    tokio::time::sleep(Duration::from_millis(50)).await;
    layer.send(&ch, Message::with_type("late")).await.unwrap();
    assert_eq!(recv(&layer, &ch).await.msg_type(), Some("late"));
}
