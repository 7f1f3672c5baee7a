//! Missed-message recovery end to end: real Redis, real `herald serve` processes, the pinned
//! Python channels_redis as the sender. A client that opted in (`/ws/tasks/?recover=1`) and
//! comes back, to the same or to another instance, gets what it missed in the order it was
//! sent, nothing twice, and then the live stream without a gap.

mod fault_common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fault_common::*;
use herald_test_support::ws::{Ws, recv_json_within, send_json, ws_connect};
use herald_test_support::{RedisServer, compat_python};
use serde_json::{Value, json};
use support::Herald;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Connects as `user` to `/ws/tasks/?recover=1`.
async fn connect_recovering(addr: SocketAddr, user: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws/tasks/?recover=1")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-remote-user", user.parse().unwrap());
    ws_connect(req).await
}

async fn herald(redis: &RedisServer) -> Herald {
    Herald::start(&[
        "--redis",
        &redis.url(),
        "--trusted-user-header",
        "x-remote-user",
        "--history",
        "on",
    ])
    .await
}

/// What the client keeps: the last position per group, from frames and `herald.resumed`.
#[derive(Debug, Default)]
struct Positions(serde_json::Map<String, Value>);

impl Positions {
    fn keep(&mut self, frame: &Value) {
        let tag = if frame["type"] == "herald.resumed" {
            frame
        } else {
            &frame["herald"]
        };
        let group = tag["group"].as_str().expect("a group").to_owned();
        self.0.insert(
            group,
            json!({"epoch": tag["epoch"], "offset": tag["offset"]}),
        );
    }

    fn resume(&self) -> Value {
        json!({"action": "resume", "groups": Value::Object(self.0.clone())})
    }
}

/// Receives frames until `resumed` `herald.resumed` replies have come; returns the numbered
/// frames and the replies.
async fn until_resumed(
    ws: &mut Ws,
    resumed: usize,
    positions: &mut Positions,
) -> (Vec<usize>, Vec<Value>) {
    until_resumed_with(ws, resumed, 0, positions).await
}

/// Receives frames until `resumed` replies and at least `numbered` numbered frames have come
/// (a message the server had not yet recorded when the replay read comes live, after the
/// replies).
async fn until_resumed_with(
    ws: &mut Ws,
    resumed: usize,
    numbered: usize,
    positions: &mut Positions,
) -> (Vec<usize>, Vec<Value>) {
    let (mut numbers, mut replies) = (Vec::new(), Vec::new());
    while replies.len() < resumed || numbers.len() < numbered {
        let frame = recv_json_within(ws, DELIVERY).await;
        positions.keep(&frame);
        if frame["type"] == "herald.resumed" {
            replies.push(frame);
        } else {
            numbers.push(number_of(&frame));
        }
    }
    (numbers, replies)
}

async fn receive_numbers(ws: &mut Ws, count: usize, positions: &mut Positions) -> Vec<usize> {
    let mut got = Vec::new();
    for _ in 0..count {
        let frame = recv_json_within(ws, DELIVERY).await;
        assert!(frame["herald"]["offset"].is_string(), "positioned: {frame}");
        positions.keep(&frame);
        got.push(number_of(&frame));
    }
    got
}

async fn nothing_more(ws: &mut Ws) {
    if let Ok(Some(Ok(frame))) =
        tokio::time::timeout(GRACE, futures_util::StreamExt::next(ws)).await
        && !matches!(frame, tokio_tungstenite::tungstenite::Message::Ping(_))
    {
        panic!("unexpected frame after the expected ones: {frame:?}");
    }
}

/// First visit: resume with nothing, subscribe to a task; three live messages.
async fn first_visit(addr: SocketAddr, peer: &mut PythonPeer) -> (Ws, Positions) {
    let mut ws = connect_recovering(addr, "alice").await;
    let mut positions = Positions::default();
    send_json(&mut ws, json!({"action": "resume"})).await;
    let (replayed, replies) = until_resumed(&mut ws, 1, &mut positions).await;
    assert!(replayed.is_empty());
    assert_eq!(replies[0]["group"], "user_alice");
    assert_eq!(replies[0]["recovered"], true);
    send_json(&mut ws, json!({"action": "subscribe", "task_id": "t1"})).await;
    let reply = recv_json_within(&mut ws, DELIVERY).await;
    assert_eq!(reply, json!({"type": "subscribed", "task_id": "t1"}));
    let (replayed, replies) = until_resumed(&mut ws, 1, &mut positions).await;
    assert!(replayed.is_empty(), "a new task has no latest state");
    assert_eq!(replies[0]["group"], "task_t1");
    for n in 0..3 {
        let group = ["user_alice", "task_t1"][n % 2];
        peer.group_send(group, numbered(group, n)).await;
    }
    assert_eq!(
        receive_numbers(&mut ws, 3, &mut positions).await,
        vec![0, 1, 2]
    );
    (ws, positions)
}

/// Away, then back on `back_to`: the missed messages in send order, then live, nothing twice.
async fn come_back(back_to: SocketAddr, peer: &mut PythonPeer, positions: &mut Positions) {
    for n in 3..10 {
        let group = ["user_alice", "task_t1"][n % 2];
        peer.group_send(group, numbered(group, n)).await;
    }
    let mut ws = connect_recovering(back_to, "alice").await;
    send_json(&mut ws, positions.resume()).await;
    let (replayed, replies) = until_resumed_with(&mut ws, 2, 7, positions).await;
    assert_eq!(replayed, (3..10).collect::<Vec<_>>());
    for reply in &replies {
        assert_eq!(reply["recovered"], true, "{reply}");
    }
    peer.group_send("task_t1", numbered("task_t1", 10)).await;
    peer.group_send("user_alice", numbered("user_alice", 11))
        .await;
    assert_eq!(receive_numbers(&mut ws, 2, positions).await, vec![10, 11]);
    nothing_more(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_comes_back_gets_what_it_missed_in_order_then_live() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let herald = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let (ws, mut positions) = first_visit(herald.addr, &mut peer).await;
    drop(ws);
    come_back(herald.addr, &mut peer, &mut positions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_instance_after_its_own_stops() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let first = herald(&redis).await;
    let second = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let (_ws, mut positions) = first_visit(first.addr, &mut peer).await;
    // A deploy: SIGTERM, the socket is closed, the client comes back elsewhere.
    first.terminate().await;
    come_back(second.addr, &mut peer, &mut positions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_client_is_told_to_refetch() {
    let Some(python) = compat_python() else {
        return;
    };
    let mut redis = RedisServer::start();
    let port = redis.port();
    let herald = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let (ws, mut positions) = first_visit(herald.addr, &mut peer).await;
    drop(ws);
    drop(peer);
    redis.kill();
    let _redis = RedisServer::start_on_port(port, &[]).unwrap();
    // Herald reconnects and picks a new epoch; the old positions mean nothing now.
    let mut replies = Vec::new();
    for _ in 0..100 {
        let mut ws = connect_recovering(herald.addr, "alice").await;
        send_json(&mut ws, positions.resume()).await;
        let (_, got) = until_resumed(&mut ws, 2, &mut Positions::default()).await;
        if got
            .iter()
            .all(|r| r["epoch"].is_string() && r["epoch"] != positions.0["user_alice"]["epoch"])
        {
            replies = got;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(replies.len(), 2, "a new epoch after the restart");
    for reply in &replies {
        assert_eq!(reply["recovered"], false, "{reply}");
    }
    positions.keep(&replies[0]);
}

/// A client that did not opt in still gets the plain frame, byte for byte, from a recorded
/// group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_did_not_opt_in_gets_the_same_bytes() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let herald = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let mut ws = support::ws_connect_as(herald.addr, "alice").await;
    peer.group_send(
        "user_alice",
        json!({"type": "user.message", "message": "hi", "n": 1}),
    )
    .await;
    let text = herald_test_support::ws::recv_text(&mut ws).await;
    assert_eq!(text, r#"{"type": "user_message", "message": "hi", "n": 1}"#);
}

async fn lease_holder(redis: &RedisServer) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "GET",
            "asgiherald.history.lease",
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The herald holding the capture lease is SIGKILLed: another takes over when the lease runs
/// out, and a client on that one receives every message sent meanwhile, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_capture_holder_is_replaced_and_nothing_is_lost() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let mut holder = herald(&redis).await;
    // The first herald with a socket takes the lease.
    let mut held = connect_recovering(holder.addr, "alice").await;
    send_json(&mut held, json!({"action": "resume"})).await;
    until_resumed(&mut held, 1, &mut Positions::default()).await;
    let first_holder = lease_holder(&redis).await;
    assert!(!first_holder.is_empty(), "a lease holder");
    let other = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let mut positions = Positions::default();
    let mut ws = connect_recovering(other.addr, "alice").await;
    send_json(&mut ws, json!({"action": "resume"})).await;
    until_resumed(&mut ws, 1, &mut positions).await;
    for n in 0..5 {
        peer.group_send("user_alice", numbered("user_alice", n))
            .await;
    }
    assert_eq!(
        receive_numbers(&mut ws, 5, &mut positions).await,
        (0..5).collect::<Vec<_>>()
    );

    holder.child.start_kill().unwrap();
    holder.child.wait().await.unwrap();
    for n in 5..40 {
        peer.group_send("user_alice", numbered("user_alice", n))
            .await;
    }
    assert_eq!(
        receive_numbers(&mut ws, 35, &mut positions).await,
        (5..40).collect::<Vec<_>>()
    );
    nothing_more(&mut ws).await;
    let now = lease_holder(&redis).await;
    assert!(
        !now.is_empty() && now != first_holder,
        "the other herald holds it now"
    );
}

/// A page opened after its task ended (a reload, another tab) subscribes and at once gets the
/// task's latest message, its result, and nothing older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_subscribed_after_it_ended_shows_its_result() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let herald = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let (first, _) = first_visit(herald.addr, &mut peer).await;
    peer.group_send(
        "task_t1",
        json!({"type": "task.complete", "task_id": "t1", "result": {"rows": 42}}),
    )
    .await;
    drop(first);

    let mut page = connect_recovering(herald.addr, "alice").await;
    send_json(&mut page, json!({"action": "resume"})).await;
    until_resumed(&mut page, 1, &mut Positions::default()).await;
    send_json(&mut page, json!({"action": "subscribe", "task_id": "t1"})).await;
    let reply = recv_json_within(&mut page, DELIVERY).await;
    assert_eq!(reply, json!({"type": "subscribed", "task_id": "t1"}));
    let latest = recv_json_within(&mut page, DELIVERY).await;
    assert_eq!(latest["type"], "task_complete", "{latest}");
    assert_eq!(latest["result"], json!({"rows": 42}));
    assert_eq!(latest["herald"]["group"], "task_t1");
    let resumed = recv_json_within(&mut page, DELIVERY).await;
    assert_eq!(resumed["type"], "herald.resumed");
    assert_eq!(resumed["offset"], latest["herald"]["offset"]);
    nothing_more(&mut page).await;
}

/// A group that had nothing recorded when the client resumed: the position in its
/// `herald.resumed` reply still covers what comes while the client is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_for_a_group_with_nothing_recorded_yet_is_a_position_to_resume_from() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let herald = herald(&redis).await;
    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&[redis.url()])}));
    let mut ws = connect_recovering(herald.addr, "alice").await;
    let mut positions = Positions::default();
    send_json(
        &mut ws,
        json!({"action": "resume", "groups": {"task_t2": null}}),
    )
    .await;
    let (replayed, replies) = until_resumed(&mut ws, 2, &mut positions).await;
    assert!(replayed.is_empty());
    assert!(
        replies.iter().all(|r| r["offset"].is_string()),
        "{replies:?}"
    );
    drop(ws);
    for n in 0..4 {
        let group = ["user_alice", "task_t2"][n % 2];
        peer.group_send(group, numbered(group, n)).await;
    }
    let mut ws = connect_recovering(herald.addr, "alice").await;
    let resume = positions.resume();
    send_json(&mut ws, resume.clone()).await;
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + DELIVERY;
    while frames
        .iter()
        .filter(|f: &&Value| f["type"] != "herald.resumed")
        .count()
        < 4
        || frames
            .iter()
            .filter(|f| f["type"] == "herald.resumed")
            .count()
            < 2
    {
        match tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut ws)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                frames.push(serde_json::from_str::<Value>(&text).unwrap());
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("after {resume}: {frames:#?}, then {other:?}"),
        }
    }
    let replayed: Vec<usize> = frames
        .iter()
        .filter(|f| f["type"] != "herald.resumed")
        .map(number_of)
        .collect();
    assert_eq!(replayed, vec![0, 1, 2, 3], "after {resume}: {frames:#?}");
    for frame in &frames {
        if frame["type"] == "herald.resumed" {
            assert_eq!(frame["recovered"], true, "after {resume}: {frames:#?}");
        }
    }
    nothing_more(&mut ws).await;
}
