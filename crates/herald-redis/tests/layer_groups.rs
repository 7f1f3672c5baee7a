//! Groups: channels_redis tests/test_core.py 9, 10, 12 plus the wire effects of group_add.

mod common;

use std::time::Duration;

use common::*;
use herald_core::ChannelLayer;
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;
use redis::AsyncCommands;
use tokio::time::timeout;

fn layer(server: &RedisServer) -> RedisChannelLayer {
    RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([server.url()])
            .with_capacity(3)
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap()
}

#[tokio::test]
async fn group_send_reaches_members_but_not_discarded_ones() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let c1 = layer.new_channel("test-gr-chan-1").await.unwrap();
    let c2 = layer.new_channel("test-gr-chan-2").await.unwrap();
    let c3 = layer.new_channel("test-gr-chan-3").await.unwrap();
    for c in [&c1, &c2, &c3] {
        timeout(T, layer.group_add("test-group", c))
            .await
            .unwrap()
            .unwrap();
    }
    timeout(T, layer.group_discard("test-group", &c2))
        .await
        .unwrap()
        .unwrap();
    let report = timeout(T, layer.group_send("test-group", msg("message.1", "")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.members, 2);
    assert_eq!(report.over_capacity, 0);
    assert_eq!(recv(&layer, &c1).await.msg_type(), Some("message.1"));
    assert_eq!(recv(&layer, &c3).await.msg_type(), Some("message.1"));
    recv_nothing(&layer, &c2, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn group_send_to_a_full_general_channel_does_not_raise() {
    let server = RedisServer::start();
    let layer = layer(&server);
    timeout(T, layer.group_add("test-group", "test-gr-chan-1"))
        .await
        .unwrap()
        .unwrap();
    let mut over = 0;
    for i in 0..5 {
        let report = timeout(
            T,
            layer.group_send("test-group", msg("message.1", &i.to_string())),
        )
        .await
        .unwrap()
        .unwrap();
        over += report.over_capacity;
    }
    assert_eq!(
        over, 2,
        "capacity 3: the 4th and 5th deliveries are dropped"
    );
}

#[tokio::test]
async fn channels_sharing_a_process_key_all_receive_one_group_send() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let chans: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(layer.new_channel("specific").await.unwrap());
        }
        v
    };
    for c in &chans {
        layer.group_add("test-group", c).await.unwrap();
    }
    let report = timeout(T, layer.group_send("test-group", msg("message.1", "fan")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.members, 3);
    for c in &chans {
        assert_eq!(
            recv(&layer, c).await.get("text").unwrap().as_str(),
            Some("fan")
        );
    }
}

#[tokio::test]
async fn group_add_writes_the_python_zset_with_expiry() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let ch = layer.new_channel("specific").await.unwrap();
    let before = now();
    layer.group_add("chat", &ch).await.unwrap();
    let mut conn = raw(&server.url()).await;
    let score: f64 = conn.zscore("asgi:group:chat", &ch).await.unwrap();
    assert!(
        score >= before - 0.001 && score <= now() + 0.001,
        "score is float time.time()"
    );
    let ttl: i64 = conn.ttl("asgi:group:chat").await.unwrap();
    assert!((86390..=86400).contains(&ttl), "ttl {ttl}");
    layer.group_discard("chat", &ch).await.unwrap();
    let n: i64 = conn.zcard("asgi:group:chat").await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn discard_before_add_and_empty_group_send_are_no_ops() {
    let server = RedisServer::start();
    let layer = layer(&server);
    layer.group_discard("nobody", "some.channel").await.unwrap();
    let report = layer.group_send("nobody", msg("x", "")).await.unwrap();
    assert_eq!((report.members, report.over_capacity), (0, 0));
}

#[tokio::test]
async fn memberships_of_local_channels_are_tracked_until_discard_or_close() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let a = layer.new_channel("specific").await.unwrap();
    let b = layer.new_channel("specific").await.unwrap();
    layer.group_add("g1", &a).await.unwrap();
    layer.group_add("g2", &a).await.unwrap();
    layer.group_add("g1", &b).await.unwrap();
    // Foreign and general channels are not ours to keep alive.
    layer.group_add("g1", "plain.channel").await.unwrap();
    layer.group_add("g1", "specific.0123!x").await.unwrap();
    assert_eq!(layer.tracked_memberships(), 3);
    layer.group_discard("g1", &b).await.unwrap();
    assert_eq!(layer.tracked_memberships(), 2);
    layer.close_channel(&a);
    assert_eq!(layer.tracked_memberships(), 0);
}

#[tokio::test]
async fn group_members_older_than_group_expiry_are_skipped() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([server.url()])
            .with_group_expiry(Duration::from_secs(1))
            .with_group_refresh_interval(None),
    )
    .unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    layer.group_add("g", &ch).await.unwrap();
    // Backdate the membership like a join 10 s ago.
    let mut conn = raw(&server.url()).await;
    let _: () = conn.zadd("asgi:group:g", &ch, now() - 10.0).await.unwrap();
    let report = layer.group_send("g", msg("x", "")).await.unwrap();
    assert_eq!(report.members, 0);
    recv_nothing(&layer, &ch, Duration::from_millis(300)).await;
}

/// The one-round-trip group_send builds its members in Lua; they must be the very bytes the
/// codec (and Python's `packb`) would write, after the random prefix.
#[tokio::test]
async fn server_side_group_send_members_match_the_codec_bytes() {
    use herald_core::{Message, Value};
    use herald_redis::internals::Target;
    let server = RedisServer::start();
    let layer = layer(&server);
    let mut conn = raw(&server.url()).await;
    // 20 names on one foreign key (array16 header) and a 17-entry message (map16 header).
    let names: Vec<String> = (0..20)
        .map(|i| format!("specific.feedface!n{i:02}"))
        .collect();
    for n in &names {
        layer.group_add("wire", n).await.unwrap();
    }
    layer.group_add("wire", "plain.channel").await.unwrap();
    let mut msg = Message::with_type("wire.check").with("bytes", vec![0u8, 1, 2]);
    for i in 0..15 {
        msg.insert(&format!("k{i}"), Value::Float(f64::from(i) / 3.0));
    }
    let report = layer.group_send("wire", msg.clone()).await.unwrap();
    assert_eq!(report.members, 21);
    // ZRANGE order: equal scores would sort by name; ours differ, so sort to compare.
    let mut listed: Vec<String> = conn.zrange("asgi:group:wire", 0, -1).await.unwrap();
    listed.retain(|n| n.starts_with("specific."));
    let codec = herald_redis::internals::Codec::new(herald_redis::SerializerFormat::Msgpack, 12);
    let expected = codec
        .encode_routed(msg.map(), Target::Many(&listed))
        .unwrap();
    let stored: Vec<Vec<u8>> = conn.zrange("asgispecific.feedface!", 0, -1).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0][12..], &expected[12..]);
    let plain: Vec<Vec<u8>> = conn.zrange("asgiplain.channel", 0, -1).await.unwrap();
    let expected = codec
        .encode_routed(msg.map(), Target::Many(&["plain.channel".to_owned()]))
        .unwrap();
    assert_eq!(&plain[0][12..], &expected[12..]);
    assert_eq!(
        layer.codec().decode(&plain[0]).unwrap().get("k14"),
        msg.get("k14")
    );
}
