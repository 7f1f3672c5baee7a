//! `RedisPubSubLayer` against a real `redis-server`: the channels_redis `tests/test_pubsub.py`
//! scenarios, the wire format seen by a raw Redis client, sharding, encryption, reconnection.

use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::StreamExt;
use herald_core::{ChannelLayer, ErrorKind, Map, Message, Value};
use herald_redis::internals::consistent_hash;
use herald_redis::{RedisPubSubConfig, RedisPubSubLayer, SerializerFormat};
use herald_test_support::RedisServer;
use tokio::time::{Instant, timeout};

/// Bound on anything that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for (Python's test uses 1 s).
const QUIET: Duration = Duration::from_millis(300);

fn layer_on(urls: &[String]) -> RedisPubSubLayer {
    RedisPubSubLayer::new(RedisPubSubConfig::default().with_hosts(urls.iter().cloned())).unwrap()
}

fn layer(server: &RedisServer) -> RedisPubSubLayer {
    layer_on(&[server.url()])
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    timeout(WAIT, client.get_multiplexed_async_connection())
        .await
        .unwrap()
        .unwrap()
}

/// `PUBSUB NUMSUB name`: how many connections are subscribed to `name`.
async fn numsub(url: &str, name: &str) -> usize {
    let mut conn = connection(url).await;
    let (_, count): (String, usize) = timeout(
        WAIT,
        redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(name)
            .query_async(&mut conn),
    )
    .await
    .unwrap()
    .unwrap();
    count
}

/// Polls `PUBSUB NUMSUB` until it equals `want`, within [`WAIT`].
async fn wait_numsub(url: &str, name: &str, want: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = numsub(url, name).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {got} subscribers, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish_raw(url: &str, name: &str, payload: &[u8]) -> usize {
    let mut conn = connection(url).await;
    timeout(
        WAIT,
        redis::cmd("PUBLISH")
            .arg(name)
            .arg(payload)
            .query_async(&mut conn),
    )
    .await
    .unwrap()
    .unwrap()
}

/// A raw subscriber, for checking what goes over the wire.
async fn raw_subscriber(url: &str, name: &str) -> redis::aio::PubSub {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = timeout(WAIT, client.get_async_pubsub())
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, pubsub.subscribe(name))
        .await
        .unwrap()
        .unwrap();
    pubsub
}

async fn next_raw(pubsub: &mut redis::aio::PubSub) -> Vec<u8> {
    let msg = timeout(WAIT, pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    msg.get_payload_bytes().to_vec()
}

async fn recv(layer: &RedisPubSubLayer, channel: &str) -> Message {
    timeout(WAIT, layer.receive(channel))
        .await
        .unwrap()
        .unwrap()
}

async fn assert_nothing(layer: &RedisPubSubLayer, channel: &str) {
    if let Ok(got) = timeout(QUIET, layer.receive(channel)).await {
        panic!("{channel} unexpectedly received {got:?}");
    }
}

/// `{"a": True, "b": None, "c": {"d": []}}`, the vector of channels_redis `test_serialize`.
fn vector_message() -> Message {
    let mut inner = Map::new();
    inner.insert("d".into(), Value::Array(Vec::new()));
    Message::new()
        .with("a", true)
        .with("b", Value::Nil)
        .with("c", Value::Map(inner))
}

const VECTOR_MSGPACK: &[u8] = b"\x83\xa1a\xc3\xa1b\xc0\xa1c\x81\xa1d\x90";

#[tokio::test]
async fn new_channel_is_prefix_specific_hex_and_subscribed_on_return() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let name = timeout(WAIT, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    let hex = name.strip_prefix("asgispecific.").unwrap();
    assert_eq!(hex.len(), 32);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    // Subscribed before new_channel returned, so a publish right now is not lost.
    assert_eq!(numsub(&server.url(), &name).await, 1);
    let other = timeout(WAIT, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(name, other);
}

#[tokio::test]
async fn send_receive_round_trips() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    let msg = Message::with_type("test.message").with("text", "Ahoy-hoy!");
    timeout(WAIT, layer.send(&channel, msg.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&layer, &channel).await, msg);
}

#[tokio::test]
async fn messages_arrive_in_order() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    for n in 1..=3 {
        let msg = Message::with_type("test.message").with("n", n);
        timeout(WAIT, layer.send(&channel, msg))
            .await
            .unwrap()
            .unwrap();
    }
    for n in 1..=3 {
        assert_eq!(recv(&layer, &channel).await.get("n"), Some(&Value::Int(n)));
    }
}

#[tokio::test]
async fn payload_is_bare_msgpack_like_python_test_serialize() {
    let server = RedisServer::start();
    let mut raw = raw_subscriber(&server.url(), "wire.check").await;
    let layer = layer(&server);
    timeout(WAIT, layer.send("wire.check", vector_message()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_raw(&mut raw).await, VECTOR_MSGPACK);
}

#[tokio::test]
async fn json_payload_is_python_json_dumps() {
    let server = RedisServer::start();
    let mut raw = raw_subscriber(&server.url(), "wire.json").await;
    let layer = RedisPubSubLayer::new(
        RedisPubSubConfig::default()
            .with_hosts([server.url()])
            .with_serializer_format(SerializerFormat::Json),
    )
    .unwrap();
    timeout(WAIT, layer.send("wire.json", vector_message()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next_raw(&mut raw).await,
        br#"{"a": true, "b": null, "c": {"d": []}}"#
    );
}

#[tokio::test]
async fn python_shaped_payload_is_received() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    assert_eq!(
        publish_raw(&server.url(), &channel, VECTOR_MSGPACK).await,
        1
    );
    let got = recv(&layer, &channel).await;
    assert_eq!(got, vector_message());
}

#[tokio::test]
async fn undecodable_payload_is_dropped_and_channel_keeps_working() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    // A bare string (Python's test sends one) is valid msgpack but not a message map; 0xc1 is
    // never valid msgpack.
    publish_raw(&server.url(), &channel, b"\xa5hello").await;
    publish_raw(&server.url(), &channel, b"\xc1").await;
    publish_raw(&server.url(), &channel, VECTOR_MSGPACK).await;
    assert_eq!(recv(&layer, &channel).await, vector_message());
}

#[tokio::test]
async fn groups_basic_delivers_to_members_only() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let mut channels = Vec::new();
    for _ in 0..3 {
        let channel = layer.new_channel("specific").await.unwrap();
        timeout(WAIT, layer.group_add("test-group", &channel))
            .await
            .unwrap()
            .unwrap();
        channels.push(channel);
    }
    timeout(WAIT, layer.group_discard("test-group", &channels[1]))
        .await
        .unwrap()
        .unwrap();
    let msg = Message::with_type("message.1");
    let report = timeout(WAIT, layer.group_send("test-group", msg.clone()))
        .await
        .unwrap()
        .unwrap();
    // One subscribed connection (this process) got the publish.
    assert_eq!(report.members, 1);
    assert_eq!(recv(&layer, &channels[0]).await, msg);
    assert_eq!(recv(&layer, &channels[2]).await, msg);
    assert_nothing(&layer, &channels[1]).await;
}

#[tokio::test]
async fn group_send_publishes_on_prefixed_group_channel() {
    let server = RedisServer::start();
    let mut raw = raw_subscriber(&server.url(), "myapp__group__chat").await;
    let layer = RedisPubSubLayer::new(
        RedisPubSubConfig::default()
            .with_hosts([server.url()])
            .with_prefix("myapp"),
    )
    .unwrap();
    assert_eq!(layer.group_channel("chat"), "myapp__group__chat");
    timeout(WAIT, layer.group_send("chat", vector_message()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_raw(&mut raw).await, VECTOR_MSGPACK);
    let channel = layer.new_channel("specific").await.unwrap();
    assert!(channel.starts_with("myappspecific."), "{channel}");
}

#[tokio::test]
async fn group_add_needs_a_channel_of_this_layer() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let err = timeout(WAIT, layer.group_add("g", "asgispecific.notours"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_invalid_name());
    assert_eq!(numsub(&server.url(), "asgi__group__g").await, 0);
}

#[tokio::test]
async fn discard_before_add_is_a_no_op() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    timeout(WAIT, layer.group_discard("never-joined", &channel))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, layer.group_add("never-joined", &channel))
        .await
        .unwrap()
        .unwrap();
    layer
        .group_send("never-joined", Message::with_type("x"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &channel).await.msg_type(), Some("x"));
}

#[tokio::test]
async fn group_is_unsubscribed_when_its_last_local_member_leaves() {
    let server = RedisServer::start();
    let url = server.url();
    let layer = layer(&server);
    let a = layer.new_channel("specific").await.unwrap();
    let b = layer.new_channel("specific").await.unwrap();
    layer.group_add("room", &a).await.unwrap();
    layer.group_add("room", &b).await.unwrap();
    assert_eq!(numsub(&url, "asgi__group__room").await, 1);
    layer.group_discard("room", &a).await.unwrap();
    assert_eq!(numsub(&url, "asgi__group__room").await, 1);
    layer.group_discard("room", &b).await.unwrap();
    assert_eq!(numsub(&url, "asgi__group__room").await, 0);
}

#[tokio::test]
async fn receive_on_general_channel_subscribes_on_demand_in_every_process() {
    let server = RedisServer::start();
    let url = server.url();
    let sender = layer(&server);
    let first = layer(&server);
    let second = layer(&server);
    let one = tokio::spawn(async move { first.receive("test-channel").await });
    let two = tokio::spawn(async move { second.receive("test-channel").await });
    wait_numsub(&url, "test-channel", 2).await;
    let msg = Message::with_type("broadcast");
    sender.send("test-channel", msg.clone()).await.unwrap();
    // Pub/Sub general channels are broadcasts, not work queues: both get it.
    assert_eq!(timeout(WAIT, one).await.unwrap().unwrap().unwrap(), msg);
    assert_eq!(timeout(WAIT, two).await.unwrap().unwrap().unwrap(), msg);
}

#[tokio::test]
async fn encrypted_payload_is_a_fernet_token_and_keys_rotate() {
    let server = RedisServer::start();
    let url = server.url();
    let config = RedisPubSubConfig::default().with_hosts([url.clone()]);
    let old = RedisPubSubLayer::new(
        config
            .clone()
            .with_symmetric_encryption_keys(["old-key-with-enough-entropy-for-tests"]),
    )
    .unwrap();
    let rotated = RedisPubSubLayer::new(config.clone().with_symmetric_encryption_keys([
        "new-key-with-enough-entropy-for-tests",
        "old-key-with-enough-entropy-for-tests",
    ]))
    .unwrap();
    let clear = RedisPubSubLayer::new(config).unwrap();

    let mut raw = raw_subscriber(&url, "enc.wire").await;
    old.send("enc.wire", vector_message()).await.unwrap();
    let token = next_raw(&mut raw).await;
    // No random prefix in PubSub: the payload is the token itself (0x80 version → "gAAAAA").
    assert!(token.starts_with(b"gAAAAA"), "{token:?}");

    let channel = rotated.new_channel("specific").await.unwrap();
    old.send(&channel, vector_message()).await.unwrap();
    assert_eq!(recv(&rotated, &channel).await, vector_message());

    // A layer without the key drops what it cannot read and keeps going.
    let plain = clear.new_channel("specific").await.unwrap();
    old.send(&plain, Message::with_type("secret"))
        .await
        .unwrap();
    clear
        .send(&plain, Message::with_type("clear"))
        .await
        .unwrap();
    assert_eq!(recv(&clear, &plain).await.msg_type(), Some("clear"));
}

#[tokio::test]
async fn names_are_sharded_by_crc32_of_the_pubsub_channel() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let receiver = layer_on(&urls);
    let sender = layer_on(&urls);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let channel = receiver.new_channel("specific").await.unwrap();
        let shard = consistent_hash(channel.as_bytes(), 3);
        assert_eq!(receiver.shard_of(&channel), shard);
        seen.insert(shard);
        for (i, url) in urls.iter().enumerate() {
            let want = usize::from(i == shard);
            assert_eq!(numsub(url, &channel).await, want, "{channel} on shard {i}");
        }
        let msg = Message::with_type("sharded").with("to", channel.as_str());
        sender.send(&channel, msg.clone()).await.unwrap();
        assert_eq!(recv(&receiver, &channel).await, msg);
    }
    assert!(seen.len() > 1, "8 random names all hashed to one shard");

    let member = receiver.new_channel("specific").await.unwrap();
    receiver.group_add("test-group", &member).await.unwrap();
    let group_shard = consistent_hash(b"asgi__group__test-group", 3);
    for (i, url) in urls.iter().enumerate() {
        let want = usize::from(i == group_shard);
        assert_eq!(numsub(url, "asgi__group__test-group").await, want);
    }
    sender
        .group_send("test-group", Message::with_type("g"))
        .await
        .unwrap();
    assert_eq!(recv(&receiver, &member).await.msg_type(), Some("g"));
}

#[tokio::test]
async fn reconnects_and_resubscribes_after_redis_restarts() {
    let mut server = RedisServer::start();
    let port = server.port();
    let url = server.url();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("test-group", &channel).await.unwrap();
    layer
        .send(&channel, Message::with_type("before"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &channel).await.msg_type(), Some("before"));

    server.kill();
    let _restarted = RedisServer::start_on_port(port, &[]).unwrap();
    // Resubscribed in the background: both names are back without any call on the layer.
    wait_numsub(&url, &channel, 1).await;
    wait_numsub(&url, "asgi__group__test-group", 1).await;

    // The publishing connection died too; the next send reconnects transparently.
    timeout(WAIT, layer.send(&channel, Message::with_type("after")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&layer, &channel).await.msg_type(), Some("after"));
    layer
        .group_send("test-group", Message::with_type("group-after"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &channel).await.msg_type(), Some("group-after"));
    layer.group_discard("test-group", &channel).await.unwrap();
    wait_numsub(&url, "asgi__group__test-group", 0).await;
}

#[tokio::test]
async fn flush_fails_pending_receives_and_leaves_the_layer_usable() {
    let server = RedisServer::start();
    let url = server.url();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("g", &channel).await.unwrap();
    let pending = {
        let layer = layer.clone();
        let channel = channel.clone();
        tokio::spawn(async move { layer.receive(&channel).await })
    };
    tokio::task::yield_now().await;
    timeout(WAIT, layer.flush()).await.unwrap().unwrap();
    let err = timeout(WAIT, pending).await.unwrap().unwrap().unwrap_err();
    assert!(err.is_closed());
    wait_numsub(&url, &channel, 0).await;
    wait_numsub(&url, "asgi__group__g", 0).await;

    let fresh = layer.new_channel("specific").await.unwrap();
    layer
        .send(&fresh, Message::with_type("again"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &fresh).await.msg_type(), Some("again"));
}

#[tokio::test]
async fn close_channel_unsubscribes_and_leaves_groups() {
    let server = RedisServer::start();
    let url = server.url();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    let stays = layer.new_channel("specific").await.unwrap();
    layer.group_add("solo", &channel).await.unwrap();
    layer.group_add("shared", &channel).await.unwrap();
    layer.group_add("shared", &stays).await.unwrap();
    let pending = {
        let layer = layer.clone();
        let channel = channel.clone();
        tokio::spawn(async move { layer.receive(&channel).await })
    };
    tokio::task::yield_now().await;
    layer.close_channel(&channel);
    let err = timeout(WAIT, pending).await.unwrap().unwrap().unwrap_err();
    assert!(err.is_closed());
    wait_numsub(&url, &channel, 0).await;
    wait_numsub(&url, "asgi__group__solo", 0).await;
    assert_eq!(numsub(&url, "asgi__group__shared").await, 1);
    layer
        .group_send("shared", Message::with_type("still"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &stays).await.msg_type(), Some("still"));
}

#[tokio::test]
async fn cancelled_receive_loses_nothing() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    for _ in 0..3 {
        assert!(
            timeout(Duration::from_millis(20), layer.receive(&channel))
                .await
                .is_err()
        );
    }
    layer
        .send(&channel, Message::with_type("kept"))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &channel).await.msg_type(), Some("kept"));
}

#[tokio::test]
async fn full_channel_buffer_drops_the_oldest() {
    let server = RedisServer::start();
    let layer = RedisPubSubLayer::new(
        RedisPubSubConfig::default()
            .with_hosts([server.url()])
            .with_channel_buffer(NonZeroUsize::new(2).unwrap()),
    )
    .unwrap();
    let slow = layer.new_channel("specific").await.unwrap();
    let marker = layer.new_channel("specific").await.unwrap();
    for n in 1..=3 {
        layer
            .send(&slow, Message::with_type("n").with("n", n))
            .await
            .unwrap();
    }
    // One subscriber connection delivers in publish order: once the marker is here, all three
    // were dispatched.
    layer
        .send(&marker, Message::with_type("marker"))
        .await
        .unwrap();
    recv(&layer, &marker).await;
    assert_eq!(recv(&layer, &slow).await.get("n"), Some(&Value::Int(2)));
    assert_eq!(recv(&layer, &slow).await.get("n"), Some(&Value::Int(3)));
    assert_nothing(&layer, &slow).await;
}

#[tokio::test]
async fn invalid_names_and_reserved_keys_are_rejected() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let err = layer
        .send("bad name", Message::with_type("x"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_name());
    let err = layer
        .group_send("bad!group", Message::with_type("x"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_name());
    let err = layer
        .send(
            "ok.name",
            Message::with_type("x").with("__asgi_channel__", "y"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);
}

#[tokio::test]
async fn ping_answers_while_redis_is_up_and_fails_when_it_is_down() {
    let mut server = RedisServer::start();
    let layer = layer(&server);
    timeout(WAIT, layer.ping()).await.unwrap().unwrap();
    server.kill();
    let err = timeout(Duration::from_secs(10), layer.ping())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Redis | ErrorKind::Timeout),
        "{err:?}"
    );
}
