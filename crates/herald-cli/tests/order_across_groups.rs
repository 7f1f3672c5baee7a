//! One Python sender's messages to several groups of one socket arrive in the order they were
//! sent, as with Daphne (where a consumer's messages all pass through one sorted set): a
//! paused server that wakes to a backlog, the guide's Celery pattern (a large `task.complete`
//! then the user's notification), and a burst over three groups.

mod fault_common;
mod support;

use std::time::Duration;

use fault_common::*;
use herald_test_support::ws::{Ws, recv_json_within, send_json};
use herald_test_support::{RedisServer, compat_python};
use serde_json::json;
use support::Herald;

/// A socket of `alice` in `user_alice`, `task_a` and `task_b`.
async fn alice(herald: &Herald) -> Ws {
    let client = connect_client(std::slice::from_ref(herald), 0, "alice", "a").await;
    let mut ws = client.ws;
    send_json(&mut ws, json!({"action": "subscribe", "task_id": "b"})).await;
    let reply = recv_json_within(&mut ws, DELIVERY).await;
    assert_eq!(reply, json!({"type": "subscribed", "task_id": "b"}));
    ws
}

async fn receive_numbers(ws: &mut Ws, count: usize) -> Vec<usize> {
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(number_of(&recv_json_within(ws, DELIVERY).await));
    }
    got
}

fn signal(herald: &Herald, signal: &str) {
    let pid = herald.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

const GROUPS: [&str; 3] = ["user_alice", "task_a", "task_b"];

/// A Redis, a herald on it, alice's socket in the three groups and a Python sender.
async fn start(python: &std::path::Path) -> (RedisServer, Herald, Ws, PythonPeer) {
    let redis = RedisServer::start();
    let herald = Herald::start(&[
        "--redis",
        &redis.url(),
        "--trusted-user-header",
        "x-remote-user",
    ])
    .await;
    let ws = alice(&herald).await;
    let peer = PythonPeer::start(python, &json!({"hosts": python_hosts(&[redis.url()])}));
    (redis, herald, ws, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_delivers_a_backlog_over_three_groups_in_send_order() {
    let Some(python) = compat_python() else {
        return;
    };
    let (_redis, herald, mut ws, mut peer) = start(&python).await;
    for run in 0..8 {
        // Stopped, herald cannot read: all 16 messages wait in Redis, spread over the keys
        // of its group channels, and are taken in at once when it resumes.
        signal(&herald, "-STOP");
        for n in 0..16 {
            let group = GROUPS[n % 3];
            peer.group_send(group, numbered(group, n)).await;
        }
        signal(&herald, "-CONT");
        let got = receive_numbers(&mut ws, 16).await;
        assert_eq!(got, (0..16).collect::<Vec<_>>(), "run {run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_task_result_then_the_users_notification_arrive_in_that_order() {
    let Some(python) = compat_python() else {
        return;
    };
    let (_redis, _herald, mut ws, mut peer) = start(&python).await;
    let result = "x".repeat(600_000);
    for round in 0..3 {
        // The guide's Celery task: the result to the task group, then the notification.
        peer.group_send(
            "task_a",
            json!({"type": "task.complete", "task_id": "a", "result": {"data": result, "round": round}}),
        )
        .await;
        peer.group_send(
            "user_alice",
            json!({"type": "user.notification", "username": "alice", "notification_type": "success",
                   "title": "", "message": "Task completed successfully!", "data": {"round": round},
                   "timestamp": "2026-01-01T00:00:00"}),
        )
        .await;
        let first = recv_json_within(&mut ws, DELIVERY).await;
        let second = recv_json_within(&mut ws, DELIVERY).await;
        assert_eq!(first["type"], "task_complete", "round {round}");
        assert_eq!(first["result"]["round"], round);
        assert_eq!(first["result"]["data"].as_str().unwrap().len(), 600_000);
        assert_eq!(second["type"], "user_notification", "round {round}");
        assert_eq!(second["data"]["round"], round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_three_groups_arrives_in_send_order() {
    let Some(python) = compat_python() else {
        return;
    };
    let (_redis, _herald, mut ws, mut peer) = start(&python).await;
    // 90 rounds of three messages, one per group, as fast as the Python sender goes.
    let count = 270;
    let receiver = tokio::spawn(async move { receive_numbers(&mut ws, count).await });
    for n in 0..count {
        let group = GROUPS[n % 3];
        peer.group_send(group, numbered(group, n)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (0..count).collect::<Vec<_>>());
}
