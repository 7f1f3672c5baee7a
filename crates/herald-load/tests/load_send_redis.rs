//! The Rust sender through a real `redis-server` with herald-redis, received by a second
//! layer instance (a different "process"), as Daphne or herald would receive it.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use herald_core::ChannelLayer;
use herald_load::{SendPlan, Shape, parse_sent_at, run_sender};
use herald_redis::{HostSpec, RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);

fn layer(redis: &RedisServer) -> Arc<RedisChannelLayer> {
    let config = RedisLayerConfig::default().with_hosts([HostSpec::url(redis.url())]);
    Arc::new(RedisChannelLayer::new(config).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_messages_reach_each_users_channel_through_redis() {
    let redis = RedisServer::start();
    let receiver = layer(&redis);
    let users: Vec<String> = (0..10).map(|i| format!("r{i:05}")).collect();
    let mut channels = Vec::new();
    for user in &users {
        let channel = timeout(BOUND, receiver.new_channel("specific"))
            .await
            .unwrap()
            .unwrap();
        timeout(BOUND, receiver.group_add(&format!("user_{user}"), &channel))
            .await
            .unwrap()
            .unwrap();
        channels.push(channel);
    }
    let sender: Arc<dyn ChannelLayer> = layer(&redis);
    let plan = SendPlan::PerUser {
        users: users.clone(),
        per_user: 2,
        batch: NonZeroUsize::new(3).unwrap(),
    };
    let report = timeout(
        BOUND,
        run_sender(sender, &plan, NonZeroUsize::new(4).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.sent, 20);
    assert_eq!(report.errors, 0);
    assert_eq!(report.over_capacity, 0);
    for (user, channel) in users.iter().zip(&channels) {
        for _ in 0..2 {
            let m = timeout(BOUND, receiver.receive(channel))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.msg_type(), Some("user.message"));
            let json = m.to_json().to_string();
            assert!(json.contains(&format!(r#""username":"{user}""#)), "{json}");
            assert!(parse_sent_at(&json).is_some(), "{json}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_counts_errors_instead_of_panicking() {
    let mut redis = RedisServer::start();
    let sender: Arc<dyn ChannelLayer> = layer(&redis);
    redis.kill();
    let plan = SendPlan::Broadcast {
        group: "user_gone".to_owned(),
        count: 3,
        shape: Shape::Bench,
    };
    let report = timeout(
        Duration::from_secs(60),
        run_sender(sender, &plan, NonZeroUsize::MIN),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.sent, 0);
    assert_eq!(report.errors, 3);
}
