//! One order for every attached channel: messages that senders wrote to several process keys
//! of this layer reach the sinks in the senders' score order, however many keys and batches.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use herald_core::{ChannelLayer, Deliver, Message, Value};
use herald_redis::internals::{Codec, Keys, consistent_hash};
use herald_redis::{RedisChannelLayer, RedisLayerConfig, SerializerFormat};
use herald_test_support::{RedisServer, eventually};

/// Records every delivery, in order, for all the channels attached to it.
#[derive(Debug, Default)]
struct Record(Mutex<Vec<Message>>);

impl Deliver for Record {
    fn deliver(&self, messages: &[Message]) {
        self.0.lock().unwrap().extend_from_slice(messages);
    }
}

impl Record {
    fn numbers(&self) -> Vec<i64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.get("n").and_then(Value::as_i64).unwrap())
            .collect()
    }
}

/// The socket's own channel and three group channels, all attached to one record.
async fn attached(layer: &RedisChannelLayer, record: &Arc<Record>) -> Vec<String> {
    let mut channels = vec![layer.new_channel("specific").await.unwrap()];
    for prefix in layer.colocated_prefixes("herald.group", 3) {
        channels.push(layer.new_channel(&prefix).await.unwrap());
    }
    for channel in &channels {
        let sink: Arc<dyn Deliver> = record.clone();
        layer.attach(channel, sink).await.unwrap();
    }
    channels
}

/// Writes `count` messages numbered from `first`, spread irregularly over `channels`' keys
/// with rising scores, in one MULTI: the layer's readers see all of them at once, as after a
/// pause of the server.
async fn write_interleaved(url: &str, channels: &[String], first: i64, count: i64) {
    let codec = Codec::new(SerializerFormat::Msgpack, 12);
    let keys = Keys::new("asgi");
    let base = now();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for n in first..first + count {
        // 0, 3, 2, 1, 0, 3, … and runs of two on one key now and then.
        let channel = &channels[((n * 3 + n / 5) % channels.len() as i64) as usize];
        let mut message = Message::with_type("m").with("n", n);
        let target = if channel.starts_with("specific.") {
            Value::Str(channel.clone())
        } else {
            // What group_send writes: always a list.
            Value::Array(vec![Value::Str(channel.clone())])
        };
        message.insert("__asgi_channel__", target);
        let member = codec.encode(&message).unwrap();
        let score = base + (n - first) as f64 * 0.000_5;
        pipe.cmd("ZADD")
            .arg(keys.channel_key(channel))
            .arg(score)
            .arg(member)
            .ignore();
    }
    let mut conn = raw(url).await;
    let () = tokio::time::timeout(T, pipe.query_async(&mut conn))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_several_process_keys_arrive_in_score_order_across_batches() {
    let server = RedisServer::start();
    // A batch of 4 per key: most snapshots truncate some key, so the merge must hold back
    // what scores above a truncated key's last member.
    let config = RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_receive_batch(4)
        // Long: the readers must learn of each new key by the wake-up, not by a timeout.
        .with_brpop_timeout(Duration::from_secs(30));
    let layer = RedisChannelLayer::new(config).unwrap();
    let record = Arc::new(Record::default());
    let channels = attached(&layer, &record).await;
    let mut sent = 0;
    for round in 0..5 {
        let count = 10 + round * 9;
        write_interleaved(&server.url(), &channels, sent, count).await;
        sent += count;
        eventually(T, "every message delivered", || async {
            record.numbers().len() == sent as usize
        })
        .await;
    }
    assert_eq!(record.numbers(), (0..sent).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_shards_the_colocated_keys_live_on_one_shard_and_keep_order() {
    let servers = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let config = RedisLayerConfig::default()
        .with_hosts(servers.iter().map(RedisServer::url))
        .with_brpop_timeout(Duration::from_secs(1));
    let layer = RedisChannelLayer::new(config).unwrap();
    let record = Arc::new(Record::default());
    let channels = attached(&layer, &record).await;
    // A channels_redis sender picks the shard by hashing the non-local name: all four keys
    // must hash to the same shard.
    let shard_of = |channel: &str| {
        let non_local = &channel[..=channel.find('!').unwrap()];
        consistent_hash(non_local.as_bytes(), 3)
    };
    let home = shard_of(&channels[0]);
    for channel in &channels {
        assert_eq!(shard_of(channel), home, "{channel} is on another shard");
    }
    write_interleaved(&servers[home].url(), &channels, 0, 48).await;
    eventually(T, "every message delivered", || async {
        record.numbers().len() == 48
    })
    .await;
    assert_eq!(record.numbers(), (0..48).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_hands_over_the_buffered_messages_first() {
    let server = RedisServer::start();
    let config = RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_brpop_timeout(Duration::from_secs(1));
    let layer = RedisChannelLayer::new(config).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    for n in 0..2 {
        let message = Message::with_type("m").with("n", n);
        layer.send(&channel, message).await.unwrap();
    }
    eventually(T, "both buffered", || async {
        layer.stats().delivered == 2
    })
    .await;
    let record = Arc::new(Record::default());
    let sink: Arc<dyn Deliver> = record.clone();
    layer.attach(&channel, sink).await.unwrap();
    layer
        .send(&channel, Message::with_type("m").with("n", 2))
        .await
        .unwrap();
    eventually(T, "the third delivered", || async {
        record.numbers().len() == 3
    })
    .await;
    assert_eq!(record.numbers(), [0, 1, 2]);
    // An attached channel is not received on; a foreign channel cannot be attached.
    let err = layer.receive(&channel).await.unwrap_err();
    assert_eq!(err.kind(), herald_core::ErrorKind::Closed);
    let foreign: Arc<dyn Deliver> = record.clone();
    let err = layer
        .attach("specific.0123456789abcdef!x", foreign)
        .await
        .unwrap_err();
    assert!(err.is_invalid_name());
}
