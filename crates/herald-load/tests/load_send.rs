//! The Rust sender against the in-memory layer: every planned message reaches the group
//! members, stamped with `sent_at`.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use herald_core::{ChannelLayer, InMemoryConfig, InMemoryLayer};
use herald_load::{ErrorKind, SendPlan, Shape, parse_sent_at, run_sender};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);

fn layer(capacity: usize) -> Arc<InMemoryLayer> {
    Arc::new(InMemoryLayer::new(InMemoryConfig::default().with_capacity(capacity)).unwrap())
}

/// Joins one new channel per username to `user_<username>`.
async fn join(layer: &InMemoryLayer, users: &[String]) -> Vec<String> {
    let mut channels = Vec::new();
    for user in users {
        let channel = layer.new_channel("specific").await.unwrap();
        layer
            .group_add(&format!("user_{user}"), &channel)
            .await
            .unwrap();
        channels.push(channel);
    }
    channels
}

async fn drain(layer: &InMemoryLayer, channel: &str, n: usize) -> Vec<String> {
    let mut frames = Vec::new();
    for _ in 0..n {
        let m = timeout(BOUND, layer.receive(channel))
            .await
            .unwrap()
            .unwrap();
        frames.push(m.to_json().to_string());
    }
    frames
}

#[tokio::test]
async fn per_user_plan_sends_each_user_its_messages() {
    let layer = layer(100);
    let users: Vec<String> = (0..5).map(|i| format!("u{i:05}")).collect();
    let channels = join(&layer, &users).await;
    let plan = SendPlan::PerUser {
        users: users.clone(),
        per_user: 3,
        batch: NonZeroUsize::new(4).unwrap(),
    };
    let dyn_layer: Arc<dyn ChannelLayer> = layer.clone();
    let report = timeout(
        BOUND,
        run_sender(dyn_layer, &plan, NonZeroUsize::new(4).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.sent, 15);
    assert_eq!(report.errors, 0);
    assert_eq!(report.over_capacity, 0);
    for (user, channel) in users.iter().zip(&channels) {
        for frame in drain(&layer, channel, 3).await {
            assert!(
                frame.contains(&format!(r#""username":"{user}""#)),
                "{frame}"
            );
            assert!(parse_sent_at(&frame).is_some(), "{frame}");
        }
    }
}

#[tokio::test]
async fn broadcast_plan_reaches_every_member_and_counts_drops() {
    // Capacity 4: of 6 broadcasts, each member keeps 4 and 2 are dropped per member.
    let layer = layer(4);
    let users = vec!["bcast00000".to_owned(); 3];
    let channels = join(&layer, &users).await;
    let plan = SendPlan::Broadcast {
        group: "user_bcast00000".to_owned(),
        count: 6,
        shape: Shape::Bench,
    };
    let dyn_layer: Arc<dyn ChannelLayer> = layer.clone();
    let report = timeout(BOUND, run_sender(dyn_layer, &plan, NonZeroUsize::MIN))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.sent, 6);
    assert_eq!(report.over_capacity, 6);
    for channel in &channels {
        assert_eq!(drain(&layer, channel, 4).await.len(), 4);
    }
}

#[tokio::test]
async fn paced_plan_sends_rate_times_duration_round_robin() {
    let layer = layer(100);
    let users: Vec<String> = (0..4).map(|i| format!("p{i:05}")).collect();
    let channels = join(&layer, &users).await;
    let plan = SendPlan::Paced {
        users: users.clone(),
        rate: 200.0,
        duration: Duration::from_millis(100),
    };
    let dyn_layer: Arc<dyn ChannelLayer> = layer.clone();
    let report = timeout(
        BOUND,
        run_sender(dyn_layer, &plan, NonZeroUsize::new(8).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.sent, 20);
    // 20 messages at 200/s take at least 95 ms from the first to the last start.
    assert!(report.elapsed_s >= 0.095, "{report:?}");
    for channel in &channels {
        assert_eq!(drain(&layer, channel, 5).await.len(), 5);
    }
}

#[tokio::test]
async fn empty_user_list_is_a_config_error() {
    let dyn_layer: Arc<dyn ChannelLayer> = layer(10);
    let plan = SendPlan::PerUser {
        users: Vec::new(),
        per_user: 1,
        batch: NonZeroUsize::MIN,
    };
    let err = timeout(BOUND, run_sender(dyn_layer, &plan, NonZeroUsize::MIN))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}
