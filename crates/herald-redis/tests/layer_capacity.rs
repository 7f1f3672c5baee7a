//! Capacity: channels_redis tests/test_core.py 3, 4, 14, 15.

mod common;

use std::time::Duration;

use common::*;
use herald_core::capacity::CapacityRule;
use herald_core::{ChannelLayer, ErrorKind};
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;
use redis::AsyncCommands;
use tokio::time::timeout;

fn config(server: &RedisServer) -> RedisLayerConfig {
    RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_capacity(3)
        .with_brpop_timeout(Duration::from_secs(1))
}

#[tokio::test]
async fn fourth_send_to_a_capacity_three_channel_is_channel_full() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    for _ in 0..3 {
        timeout(T, layer.send("test-channel-1", msg("test.message", "")))
            .await
            .unwrap()
            .unwrap();
    }
    let err = timeout(T, layer.send("test-channel-1", msg("test.message", "")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChannelFull);
    assert!(err.is_channel_full());
    let mut conn = raw(&server.url()).await;
    let n: i64 = conn.zcard("asgitest-channel-1").await.unwrap();
    assert_eq!(n, 3, "nothing is written when full");
}

#[tokio::test]
async fn channel_capacity_rules_override_the_default() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(
        config(&server)
            .with_channel_capacity(CapacityRule::glob("one", 1).unwrap())
            .with_channel_capacity(CapacityRule::regex("tin", 2).unwrap()),
    )
    .unwrap();
    layer.send("one", msg("x", "")).await.unwrap();
    assert!(
        layer
            .send("one", msg("x", ""))
            .await
            .unwrap_err()
            .is_channel_full()
    );
    layer.send("tiny", msg("x", "")).await.unwrap();
    layer.send("tiny", msg("x", "")).await.unwrap();
    assert!(
        layer
            .send("tiny", msg("x", ""))
            .await
            .unwrap_err()
            .is_channel_full()
    );
    // "one" is a glob: anchored at both ends, so "one-more" gets the default 3.
    for _ in 0..3 {
        layer.send("one-more", msg("x", "")).await.unwrap();
    }
}

#[tokio::test]
async fn group_send_over_capacity_drops_the_fourth_message() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    // A general channel: nothing drains it until someone receives, like Python's lazy receive.
    layer
        .group_add("test-group", "test-gr-chan-1")
        .await
        .unwrap();
    let mut overs = Vec::new();
    for i in 1..=4 {
        let r = layer
            .group_send("test-group", msg("message", &i.to_string()))
            .await
            .unwrap();
        overs.push(r.over_capacity);
    }
    assert_eq!(
        overs,
        [0, 0, 0, 1],
        "Python logs '1 of 1 channels over capacity in group test-group'"
    );
    for i in 1..=3 {
        let got = recv(&layer, "test-gr-chan-1").await;
        assert_eq!(
            got.get("text").unwrap().as_str(),
            Some(i.to_string().as_str())
        );
    }
    recv_nothing(&layer, "test-gr-chan-1", Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn group_send_over_capacity_counts_per_key() {
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    layer.group_add("test-group", "channel_1").await.unwrap();
    layer.group_add("test-group", "channel_2").await.unwrap();
    layer.send("channel_2", msg("message", "0")).await.unwrap();
    let mut overs = Vec::new();
    for i in 1..=3 {
        let r = layer
            .group_send("test-group", msg("message", &i.to_string()))
            .await
            .unwrap();
        assert_eq!(r.members, 2);
        overs.push(r.over_capacity);
    }
    assert_eq!(
        overs,
        [0, 0, 1],
        "Python logs '1 of 2 channels over capacity in group test-group'"
    );
    for i in 1..=3 {
        let got = recv(&layer, "channel_1").await;
        assert_eq!(
            got.get("text").unwrap().as_str(),
            Some(i.to_string().as_str())
        );
    }
    for i in 0..=2 {
        let got = recv(&layer, "channel_2").await;
        assert_eq!(
            got.get("text").unwrap().as_str(),
            Some(i.to_string().as_str())
        );
    }
    recv_nothing(&layer, "channel_2", Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn capacity_is_shared_by_a_foreign_process_key() {
    // Specific channels of one process share one key: capacity counts all of them.
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    for local in ["a", "b", "c"] {
        layer
            .send(&format!("specific.feedface!{local}"), msg("x", ""))
            .await
            .unwrap();
    }
    let err = layer
        .send("specific.feedface!d", msg("x", ""))
        .await
        .unwrap_err();
    assert!(err.is_channel_full());
}

/// A `tracing` writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Python logs `"1 of 1 channels over capacity in group test-group"` at INFO; so do we.
#[tokio::test(flavor = "current_thread")]
async fn over_capacity_is_logged_at_info_like_python() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // current_thread runtime: the whole test runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = RedisServer::start();
    let layer = RedisChannelLayer::new(config(&server)).unwrap();
    layer
        .group_add("test-group", "test-gr-chan-1")
        .await
        .unwrap();
    for i in 1..=4 {
        layer
            .group_send("test-group", msg("message", &i.to_string()))
            .await
            .unwrap();
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("over capacity"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("INFO"), "{}", lines[0]);
    assert!(
        lines[0].contains("1 of 1 channels over capacity in group test-group"),
        "{}",
        lines[0]
    );
}
