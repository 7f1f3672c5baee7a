//! Recorded group history against a real Redis: each message sent to a recorded group is
//! recorded once, however many servers share the group, every server delivers it with the
//! same offset, and a replay returns what came after a position or says it cannot.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use herald_core::capacity::CapacityRule;
use herald_core::{ChannelLayer, Deliver, Message, Offset, Position, Recorded, Value};
use herald_redis::{HistoryConfig, HistoryRule, RedisChannelLayer, RedisLayerConfig};
use herald_test_support::{RedisServer, compat_python, eventually, workspace_root};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Every recorded delivery, in order.
#[derive(Debug, Default)]
struct Record(Mutex<Vec<Recorded>>);

impl Deliver for Record {
    fn deliver(&self, messages: &[Message]) {
        panic!("a history channel delivered without positions: {messages:?}");
    }

    fn deliver_recorded(&self, recorded: &[Recorded]) {
        self.0.lock().unwrap().extend_from_slice(recorded);
    }
}

impl Record {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn numbers(&self) -> Vec<i64> {
        self.0.lock().unwrap().iter().map(number).collect()
    }

    fn offsets(&self) -> Vec<Offset> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.position.offset)
            .collect()
    }

    fn get(&self, i: usize) -> Recorded {
        self.0.lock().unwrap()[i].clone()
    }
}

fn number(recorded: &Recorded) -> i64 {
    recorded.message.get("n").and_then(Value::as_i64).unwrap()
}

fn layer_with(server: &RedisServer, history: HistoryConfig) -> RedisChannelLayer {
    let config = RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_history(Some(history));
    RedisChannelLayer::new(config).unwrap()
}

fn layer(server: &RedisServer) -> RedisChannelLayer {
    layer_with(server, HistoryConfig::default())
}

/// Joins `group` through its history channel and records what it delivers.
async fn listen(layer: &RedisChannelLayer, group: &str) -> Arc<Record> {
    let channel = layer.history_channel(group).expect("a recorded group");
    let record = Arc::new(Record::default());
    let sink: Arc<dyn Deliver> = record.clone();
    layer.attach(&channel, sink).await.unwrap();
    layer.group_add(group, &channel).await.unwrap();
    record
}

async fn send_numbered(sender: &RedisChannelLayer, group: &str, numbers: std::ops::Range<i64>) {
    for n in numbers {
        let message = Message::with_type("user.message").with("n", n);
        let report = sender.group_send(group, message).await.unwrap();
        assert_eq!(report.over_capacity, 0, "message {n} dropped");
    }
}

async fn wait_for(record: &Record, count: usize) {
    eventually(T, &format!("{count} recorded deliveries"), || async {
        record.len() >= count
    })
    .await;
    assert_eq!(record.len(), count, "more deliveries than messages");
}

async fn xlen(url: &str, key: &str) -> usize {
    let mut conn = raw(url).await;
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_record_each_message_once_and_all_deliver_it_in_order() {
    let server = RedisServer::start();
    let servers = [layer(&server), layer(&server), layer(&server)];
    let mut records = Vec::new();
    for layer in &servers {
        records.push(listen(layer, "user_alice").await);
    }
    let sender = layer(&server);
    send_numbered(&sender, "user_alice", 0..300).await;
    for record in &records {
        wait_for(record, 300).await;
        assert_eq!(record.numbers(), (0..300).collect::<Vec<_>>());
    }
    let offsets = records[0].offsets();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets grow");
    for record in &records[1..] {
        assert_eq!(
            record.offsets(),
            offsets,
            "one offset per message everywhere"
        );
    }
    let stats: Vec<_> = servers.iter().map(RedisChannelLayer::stats).collect();
    let captured: u64 = stats.iter().map(|s| s.history_captured).sum();
    let recorded: u64 = stats.iter().map(|s| s.history_recorded).sum();
    assert_eq!(captured, 300, "each message taken once: {stats:?}");
    assert_eq!(recorded, 300, "each message recorded once: {stats:?}");
    // The user_* retention keeps the last 100, plus one to tell a client that saw the oldest
    // of them that it missed nothing.
    assert_eq!(xlen(&server.url(), "asgi:history:user_alice").await, 101);
}

#[tokio::test]
async fn replay_returns_what_came_after_a_position_or_the_latest() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let record = listen(&layer, "task_7").await;
    send_numbered(&layer, "task_7", 0..10).await;
    wait_for(&record, 10).await;
    let third = record.get(3).position;

    let replay = layer.replay("task_7", Some(&third)).await.unwrap().unwrap();
    assert!(replay.recovered);
    assert_eq!(replay.epoch, third.epoch);
    let replayed: Vec<i64> = replay.messages.iter().map(number).collect();
    assert_eq!(replayed, (4..10).collect::<Vec<_>>());
    for (replayed, live) in replay.messages.iter().zip(4..) {
        assert_eq!(
            *replayed,
            record.get(live),
            "same message, same position as live"
        );
    }

    let latest = layer.replay("task_7", None).await.unwrap().unwrap();
    assert_eq!(latest.messages.len(), 1);
    assert_eq!(number(&latest.messages[0]), 9);

    let last = record.get(9).position;
    let nothing = layer.replay("task_7", Some(&last)).await.unwrap().unwrap();
    assert!(nothing.recovered && nothing.messages.is_empty());

    assert_eq!(
        layer.replay("broadcast", None).await.unwrap(),
        None,
        "not recorded"
    );
    assert!(layer.replay("bad group!", None).await.is_err());
}

#[tokio::test]
async fn a_gap_trimmed_by_length_or_age_or_another_epoch_is_unrecoverable() {
    let server = RedisServer::start();
    let history = HistoryConfig {
        rules: vec![
            HistoryRule::new("user_*", 5, Duration::from_secs(300)),
            HistoryRule::new("task_*", 100, Duration::from_secs(1)),
        ],
    };
    let layer = layer_with(&server, history);

    let user = listen(&layer, "user_bob").await;
    send_numbered(&layer, "user_bob", 0..12).await;
    wait_for(&user, 12).await;
    let early = layer
        .replay("user_bob", Some(&user.get(2).position))
        .await
        .unwrap()
        .unwrap();
    assert!(!early.recovered, "3..6 were trimmed by length");
    let late = layer
        .replay("user_bob", Some(&user.get(8).position))
        .await
        .unwrap()
        .unwrap();
    assert!(late.recovered);
    assert_eq!(
        late.messages.iter().map(number).collect::<Vec<_>>(),
        vec![9, 10, 11]
    );
    let other_epoch = Position {
        epoch: Arc::from("another"),
        offset: user.get(8).position.offset,
    };
    let replay = layer
        .replay("user_bob", Some(&other_epoch))
        .await
        .unwrap()
        .unwrap();
    assert!(!replay.recovered, "offsets of another epoch mean nothing");

    let task = listen(&layer, "task_1").await;
    send_numbered(&layer, "task_1", 0..2).await;
    wait_for(&task, 2).await;
    for n in 2..4 {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        send_numbered(&layer, "task_1", n..n + 1).await;
        wait_for(&task, n as usize + 1).await;
    }
    // The age limit drops 0 and 1, keeping 2 as the fence: the trim runs a third of the age
    // after the group's last writes.
    eventually(
        Duration::from_secs(5),
        "message 1 dropped by age",
        || async {
            let aged = layer
                .replay("task_1", Some(&task.get(0).position))
                .await
                .unwrap()
                .unwrap();
            !aged.recovered
        },
    )
    .await;
    let fenced = layer
        .replay("task_1", Some(&task.get(2).position))
        .await
        .unwrap()
        .unwrap();
    assert!(fenced.recovered, "nothing after message 2 was dropped");
    assert_eq!(
        fenced.messages.iter().map(number).collect::<Vec<_>>(),
        vec![3]
    );
    let stats = layer.stats();
    assert_eq!(stats.history_unrecoverable, 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_changes_the_epoch() {
    let mut server = RedisServer::start();
    let port = server.port();
    let layer = layer(&server);
    let record = listen(&layer, "user_carol").await;
    send_numbered(&layer, "user_carol", 0..3).await;
    wait_for(&record, 3).await;
    let before = record.get(2).position;

    server.kill();
    let _server = RedisServer::start_on_port(port, &[]).unwrap();
    // The layer reconnects, puts the membership back and picks a new epoch; a message sent
    // after that is delivered in the new epoch.
    eventually(
        Duration::from_secs(10),
        "delivery after the restart",
        || async {
            let _ = layer
                .group_send(
                    "user_carol",
                    Message::with_type("user.message").with("n", 3),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            record.len() > 3
        },
    )
    .await;
    let after = record.get(3).position;
    assert_ne!(after.epoch, before.epoch);
    let replay = layer
        .replay("user_carol", Some(&before))
        .await
        .unwrap()
        .unwrap();
    assert!(!replay.recovered, "the old epoch's history is gone");
    assert_eq!(replay.epoch, after.epoch);
}

#[tokio::test]
async fn garbage_in_a_history_key_is_skipped_and_counted() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let record = listen(&layer, "user_dave").await;
    let channel = layer.history_channel("user_dave").unwrap();
    let key = format!("asgi{}", &channel[..=channel.find('!').unwrap()]);
    let mut conn = raw(&server.url()).await;
    let () = redis::cmd("ZADD")
        .arg(&key)
        .arg(now())
        .arg(b"not a channels_redis message at all".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    send_numbered(&layer, "user_dave", 0..2).await;
    wait_for(&record, 2).await;
    assert_eq!(record.numbers(), vec![0, 1]);
    assert_eq!(layer.stats().decode_errors(), 1);
}

/// Python's channels_redis sends to two recorded groups, alternating: one server delivers
/// both in the order they were sent, and each group's replay has its own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_group_sends_are_recorded_in_send_order() {
    let Some(python) = compat_python() else {
        assert!(
            std::env::var_os("HERALD_REQUIRE_COMPAT").is_none(),
            "HERALD_REQUIRE_COMPAT is set but the compat venv's Python is missing"
        );
        eprintln!("SKIPPING: no compat Python (run scripts/setup.sh)");
        return;
    };
    let server = RedisServer::start();
    let layer = layer(&server);
    let record = Arc::new(Record::default());
    for group in ["user_erin", "task_99"] {
        let channel = layer.history_channel(group).unwrap();
        let sink: Arc<dyn Deliver> = record.clone();
        layer.attach(&channel, sink).await.unwrap();
        layer.group_add(group, &channel).await.unwrap();
    }
    let config = serde_json::json!({"hosts": [server.url()]}).to_string();
    let mut peer = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/compat/peer.py"))
        .args(["--layer", "core", "--config", &config, "repl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = peer.stdin.take().unwrap();
    let mut replies = BufReader::new(peer.stdout.take().unwrap()).lines();
    for n in 0..40 {
        let group = if n % 2 == 0 { "user_erin" } else { "task_99" };
        let line = serde_json::json!({
            "op": "group_send",
            "group": group,
            "message": {"type": "task.update", "n": n},
        });
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let reply = tokio::time::timeout(T, replies.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            reply.contains("\"ok\": true") || reply.contains("\"ok\":true"),
            "{reply}"
        );
    }
    drop(stdin);
    wait_for(&record, 40).await;
    assert_eq!(record.numbers(), (0..40).collect::<Vec<_>>());
    let user = layer.replay("user_erin", None).await.unwrap().unwrap();
    assert_eq!(number(&user.messages[0]), 38);
    let first = record.get(0).position;
    let task = layer
        .replay("task_99", Some(&first))
        .await
        .unwrap()
        .unwrap();
    let numbers: Vec<i64> = task.messages.iter().map(number).collect();
    assert_eq!(numbers, (1..40).step_by(2).collect::<Vec<_>>());
    assert!(task.messages.iter().all(|r| &*r.group == "task_99"));
}

async fn member_score(url: &str, group: &str, channel: &str) -> Option<f64> {
    let mut conn = raw(url).await;
    redis::cmd("ZSCORE")
        .arg(format!("asgi:group:{group}"))
        .arg(channel)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn short_user_retention(seconds: u64) -> HistoryConfig {
    HistoryConfig {
        rules: vec![HistoryRule::new(
            "user_*",
            100,
            Duration::from_secs(seconds),
        )],
    }
}

/// A user whose only tab is reconnecting has no socket anywhere: the group keeps its fleet
/// member, so messages are recorded for the retention window, then the member is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_goes_on_for_the_retention_after_the_last_socket_left() {
    let server = RedisServer::start();
    let layer = layer_with(&server, short_user_retention(2));
    let record = listen(&layer, "user_frank").await;
    send_numbered(&layer, "user_frank", 0..1).await;
    wait_for(&record, 1).await;
    let seen = record.get(0).position;
    let channel = layer.history_channel("user_frank").unwrap();
    layer.group_discard("user_frank", &channel).await.unwrap();
    layer.close_channel(&channel);

    send_numbered(&layer, "user_frank", 1..3).await;
    eventually(T, "both messages recorded while offline", || async {
        let replay = layer
            .replay("user_frank", Some(&seen))
            .await
            .unwrap()
            .unwrap();
        replay.recovered && replay.messages.iter().map(number).eq([1, 2])
    })
    .await;
    assert_eq!(record.len(), 1, "nothing delivered to the detached sink");

    let url = server.url();
    eventually(Duration::from_secs(6), "the membership swept", || async {
        member_score(&url, "user_frank", &channel).await.is_none()
    })
    .await;
}

/// One server's last socket leaving must not stop the delivery to another server that still
/// has sockets in the group: that server re-adds the membership more often than the sweep
/// looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_spares_a_membership_another_server_uses() {
    let server = RedisServer::start();
    let leaving = layer_with(&server, short_user_retention(1));
    let staying = layer_with(&server, short_user_retention(1));
    let _gone = listen(&leaving, "user_gina").await;
    let record = listen(&staying, "user_gina").await;
    let channel = leaving.history_channel("user_gina").unwrap();
    leaving.group_discard("user_gina", &channel).await.unwrap();
    leaving.close_channel(&channel);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        member_score(&server.url(), "user_gina", &channel)
            .await
            .is_some()
    );
    send_numbered(&leaving, "user_gina", 0..3).await;
    wait_for(&record, 3).await;
}

/// A server that stops (SIGTERM, a deploy) gives the capture lease back: the others go on
/// recording and delivering at once, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_server_hands_the_capture_over() {
    let server = RedisServer::start();
    let first = layer(&server);
    let record_first = listen(&first, "user_hana").await;
    send_numbered(&first, "user_hana", 0..2).await;
    wait_for(&record_first, 2).await;
    assert!(
        first.stats().history_captured > 0,
        "the first server holds the lease"
    );
    let second = layer(&server);
    let record = listen(&second, "user_hana").await;

    first.close().await.unwrap();
    let mut conn = raw(&server.url()).await;
    let holder: Option<String> = redis::cmd("GET")
        .arg("asgiherald.history.lease")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(
        holder.as_deref(),
        Some(first.client_prefix()),
        "lease given back"
    );
    let sender = layer(&server);
    send_numbered(&sender, "user_hana", 2..50).await;
    wait_for(&record, 48).await;
    assert_eq!(record.numbers(), (2..50).collect::<Vec<_>>());
    let (before, after) = (first.stats(), second.stats());
    assert_eq!(before.history_captured + after.history_captured, 50);
    // The closing server logs at most the member its last blocking wait held.
    assert!(after.history_captured >= 47, "{before:?} {after:?}");
}

/// `herald serve`'s SIGTERM path: the capture holder's layer is closed (`close()` gives the
/// lease back) and dropped (its readers are aborted) while messages to a recorded group keep
/// coming, paced so that its reader waits on the history keys between them (`BZPOPMIN`).
/// Every message must still reach the other server, in order. Found by the rolling-deploy
/// benchmark (`benches/fanout/run.sh`, scenario `deploy`), which lost one message in each of
/// two runs, sent while the capture holder shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_holder_closed_under_load_loses_nothing() {
    for round in 0..10 {
        let server = RedisServer::start();
        let group = format!("user_round{round}");
        let first = layer(&server);
        let record_first = listen(&first, &group).await;
        send_numbered(&first, &group, 0..1).await;
        wait_for(&record_first, 1).await;
        assert!(
            first.stats().history_captured > 0,
            "the first server holds the lease"
        );
        let second = layer(&server);
        let record = listen(&second, &group).await;
        // Room in the history keys for what is sent while the lease changes hands (the
        // reliability docs' advice for a busy fleet), so that only a lost member can fail.
        let sender = RedisChannelLayer::new(
            RedisLayerConfig::default()
                .with_hosts([server.url()])
                .with_channel_capacity(CapacityRule::glob("herald.history.*", 10_000).unwrap()),
        )
        .unwrap();
        let total = 300;
        let sending = {
            let group = group.clone();
            tokio::spawn(async move {
                for n in 1..total {
                    send_numbered(&sender, &group, n..n + 1).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        eventually(T, "the second server delivers", || async {
            record.len() >= 50
        })
        .await;
        first.close().await.unwrap();
        drop(first);
        tokio::time::timeout(T * 4, sending).await.unwrap().unwrap();
        let expected: Vec<i64> = (1..total).collect();
        let _ = tokio::time::timeout(T * 2, async {
            while record.len() < expected.len() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let got = record.numbers();
        let lost: Vec<i64> = expected
            .iter()
            .copied()
            .filter(|n| !got.contains(n))
            .collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?}");
        assert_eq!(got, expected, "round {round}");
    }
}
