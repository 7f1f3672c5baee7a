//! `group_send_many`: the pipelined path (one host, plain msgpack, no `channel_capacity` rules)
//! and the one-by-one path (several hosts, rules, encryption) keep every channel's order,
//! report capacity as `group_send` does, and fail only the entries that are invalid.

mod common;

use std::time::Duration;

use common::*;
use herald_core::capacity::CapacityRule;
use herald_core::{ChannelLayer, ErrorKind, GroupSendReport, Message, Value};
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;
use redis::AsyncCommands;
use tokio::time::timeout;

/// More than one pipeline's worth of calls (the layer sends 1,000 per pipeline).
const USERS: usize = 30;
const PER_USER: usize = 50;

fn config(servers: &[RedisServer]) -> RedisLayerConfig {
    RedisLayerConfig::default()
        .with_hosts(servers.iter().map(RedisServer::url))
        .with_brpop_timeout(Duration::from_secs(1))
}

fn numbered(n: usize) -> Message {
    Message::with_type("user.message").with("n", n as i64)
}

fn number(message: &Message) -> usize {
    message.get("n").and_then(Value::as_i64).unwrap() as usize
}

/// `USERS` groups of one receiver channel each, `PER_USER` messages per group sent in rounds
/// with one `group_send_many`; every channel gets its messages once, in order. The channels
/// share the receiver's process key, so its capacity must hold every message.
async fn rounds_arrive_in_order(config: RedisLayerConfig) {
    let config = config.with_capacity(USERS * PER_USER);
    let receiver = RedisChannelLayer::new(config.clone()).unwrap();
    let sender = RedisChannelLayer::new(config).unwrap();
    let mut channels = Vec::new();
    for user in 0..USERS {
        let channel = receiver.new_channel("specific").await.unwrap();
        timeout(T, receiver.group_add(&format!("user_u{user}"), &channel))
            .await
            .unwrap()
            .unwrap();
        channels.push(channel);
    }
    let sends: Vec<(String, Message)> = (0..PER_USER)
        .flat_map(|n| (0..USERS).map(move |user| (format!("user_u{user}"), numbered(n))))
        .collect();
    let results = timeout(T * 4, sender.group_send_many(sends)).await.unwrap();
    assert_eq!(results.len(), USERS * PER_USER);
    for result in results {
        assert_eq!(result.unwrap(), GroupSendReport::new(1, 0));
    }
    for channel in &channels {
        let got: Vec<usize> = {
            let mut got = Vec::new();
            for _ in 0..PER_USER {
                got.push(number(&recv(&receiver, channel).await));
            }
            got
        };
        assert_eq!(got, (0..PER_USER).collect::<Vec<_>>(), "{channel}");
        recv_nothing(&receiver, channel, Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_rounds_arrive_in_order() {
    let server = RedisServer::start();
    rounds_arrive_in_order(config(std::slice::from_ref(&server))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_over_three_hosts_arrive_in_order() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    rounds_arrive_in_order(config(&servers)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_with_capacity_rules_arrive_in_order() {
    let server = RedisServer::start();
    let config = config(std::slice::from_ref(&server))
        .with_channel_capacity(CapacityRule::glob("specific.*", USERS * PER_USER).unwrap());
    rounds_arrive_in_order(config).await;
}

/// The same five messages to a capacity-3 channel, once as five `group_send`s and once as one
/// `group_send_many`: the same reports, and three members stored each time.
#[tokio::test]
async fn full_channels_are_reported_as_by_group_send() {
    let server = RedisServer::start();
    let layer =
        RedisChannelLayer::new(config(std::slice::from_ref(&server)).with_capacity(3)).unwrap();
    // General channels: nobody drains them, so they stay full.
    layer.group_add("single", "full-single").await.unwrap();
    layer.group_add("many", "full-many").await.unwrap();
    let mut singles = Vec::new();
    for n in 0..5 {
        singles.push(layer.group_send("single", numbered(n)).await.unwrap());
    }
    let sends = (0..5).map(|n| ("many".to_owned(), numbered(n))).collect();
    let many: Vec<GroupSendReport> = (layer.group_send_many(sends).await.into_iter())
        .map(Result::unwrap)
        .collect();
    assert_eq!(many, singles);
    assert_eq!(
        many.iter().map(|r| r.over_capacity).collect::<Vec<_>>(),
        [0, 0, 0, 1, 1]
    );
    let mut conn = raw(&server.url()).await;
    for key in ["asgifull-single", "asgifull-many"] {
        let n: i64 = conn.zcard(key).await.unwrap();
        assert_eq!(n, 3, "{key}");
    }
    // The three stored are the first three, in order.
    for n in 0..3 {
        assert_eq!(number(&recv(&layer, "full-many").await), n);
    }
}

/// An invalid group name or message fails its own entry; the others are sent.
#[tokio::test]
async fn invalid_entries_fail_alone() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(std::slice::from_ref(&server))).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("user_ok", &channel).await.unwrap();
    let reserved = numbered(9).with("__asgi_channel__", "x");
    let results = layer
        .group_send_many(vec![
            ("user_ok".to_owned(), numbered(0)),
            ("not a group".to_owned(), numbered(1)),
            ("user_ok".to_owned(), reserved),
            ("user_nobody".to_owned(), numbered(2)),
            ("user_ok".to_owned(), numbered(3)),
        ])
        .await;
    let kinds: Vec<Result<GroupSendReport, ErrorKind>> = results
        .into_iter()
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            Ok(GroupSendReport::new(1, 0)),
            Err(ErrorKind::InvalidName),
            Err(ErrorKind::InvalidMessage),
            Ok(GroupSendReport::new(0, 0)),
            Ok(GroupSendReport::new(1, 0)),
        ]
    );
    assert_eq!(number(&recv(&layer, &channel).await), 0);
    assert_eq!(number(&recv(&layer, &channel).await), 3);
    recv_nothing(&layer, &channel, Duration::from_millis(200)).await;
}

/// A script Redis lost (`SCRIPT FLUSH`) is loaded again by the pipeline itself.
#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(std::slice::from_ref(&server))).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("user_a", &channel).await.unwrap();
    let send_two = |from: usize| {
        (from..from + 2)
            .map(|n| ("user_a".to_owned(), numbered(n)))
            .collect::<Vec<_>>()
    };
    for result in layer.group_send_many(send_two(0)).await {
        result.unwrap();
    }
    let mut conn = raw(&server.url()).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    for result in layer.group_send_many(send_two(2)).await {
        result.unwrap();
    }
    for n in 0..4 {
        assert_eq!(number(&recv(&layer, &channel).await), n);
    }
}
