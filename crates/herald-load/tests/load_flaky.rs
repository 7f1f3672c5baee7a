//! The reconnect client (`herald-load flaky`) against small WebSocket servers inside the test:
//! its counts (delivered, duplicates, out of order per stream), its move to the next URL when a
//! server goes away, and its random cuts.
//!
//! A test server answers the client's join frame (`subscribe`: one `subscribed`; `resume`: two
//! `herald.resumed`) and then forwards every frame pushed into its broadcast channel to every
//! joined socket. `drop_all` ends every open connection without a close frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_load::{FlakyConfig, Fleet, unix_now_secs};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const BOUND: Duration = Duration::from_secs(20);

struct TestServer {
    url: String,
    frames: broadcast::Sender<String>,
    /// Bumped to end every open connection.
    kill: watch::Sender<u64>,
    /// Connections that got their join reply.
    joined: Arc<AtomicU64>,
    accept_loop: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws/tasks/", listener.local_addr().unwrap());
        let (frames, _) = broadcast::channel::<String>(1024);
        let (kill, _) = watch::channel(0_u64);
        let joined = Arc::new(AtomicU64::new(0));
        let (tx, kill_rx, joined2) = (frames.clone(), kill.subscribe(), joined.clone());
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, mut kill_rx, joined) = (tx.clone(), kill_rx.clone(), joined2.clone());
                tokio::spawn(async move {
                    kill_rx.borrow_and_update();
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let Some(Ok(Message::Text(join))) = ws.next().await else {
                        return;
                    };
                    // Subscribed before the join reply: a client that saw it misses nothing.
                    let mut rx = tx.subscribe();
                    let replies: Vec<String> = if join.as_str().contains("\"resume\"") {
                        ["user_u1", "task_bcast"]
                            .iter()
                            .map(|g| {
                                format!(
                                    r#"{{"type": "herald.resumed", "group": "{g}", "recovered": true, "epoch": "e", "offset": "1-0"}}"#
                                )
                            })
                            .collect()
                    } else {
                        vec![r#"{"type": "subscribed", "task_id": "bcast"}"#.to_owned()]
                    };
                    for reply in replies {
                        if ws.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                    }
                    joined.fetch_add(1, Ordering::SeqCst);
                    loop {
                        tokio::select! {
                            _ = kill_rx.changed() => return,
                            frame = rx.recv() => match frame {
                                Ok(frame) => {
                                    if ws.send(Message::text(frame)).await.is_err() {
                                        return;
                                    }
                                }
                                Err(_) => return,
                            },
                            msg = ws.next() => if msg.is_none_or(|m| m.is_err()) { return },
                        }
                    }
                });
            }
        });
        TestServer {
            url,
            frames,
            kill,
            joined,
            accept_loop,
        }
    }

    fn push_user(&self, seq: u64) {
        let _ = self.frames.send(format!(
            r#"{{"type": "user_message", "username": "u1", "data": {{"seq": {seq}}}, "sent_at": {}}}"#,
            unix_now_secs()
        ));
    }

    fn push_broadcast(&self, seq: u64) {
        let _ = self.frames.send(format!(
            r#"{{"type": "user_message", "username": "", "data": {{"seq": {seq}, "stream": "task_bcast"}}, "sent_at": {}}}"#,
            unix_now_secs()
        ));
    }

    fn drop_all(&self) {
        self.kill.send_modify(|k| *k += 1);
    }

    async fn wait_joined(&self, n: u64) {
        timeout(BOUND, async {
            while self.joined.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }
}

fn config(urls: &[&TestServer], clients: usize) -> FlakyConfig {
    FlakyConfig::new(urls.iter().map(|s| s.url.clone()).collect())
        .unwrap()
        .with_connections(clients)
        .with_cookies(vec!["sessionid=x".to_owned()])
        .with_connect_timeout(Duration::from_secs(5))
        .with_reconnect_delay(Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_counts_losses_duplicates_and_late_arrivals() {
    let server = TestServer::start().await;
    let fleet = timeout(BOUND, Fleet::connect(config(&[&server], 2)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fleet.connect_report().joined, 2);
    for seq in [0, 1, 1, 3, 2] {
        server.push_user(seq);
    }
    for seq in [0, 2] {
        server.push_broadcast(seq);
    }
    // 5 user messages were sent (seq 4 never arrives) and 3 broadcasts (seq 1 never arrives).
    fleet.expect(5, 3);
    let complete = timeout(
        BOUND,
        fleet.settle(Duration::from_millis(500), Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert!(!complete);
    let report = timeout(BOUND, fleet.finish(5, 3)).await.unwrap();
    assert_eq!(report.user.expected, 10);
    assert_eq!(report.user.delivered, 8);
    assert_eq!(report.user.duplicates, 2);
    assert_eq!(report.user.out_of_order, 2);
    assert_eq!(report.broadcast.expected, 6);
    assert_eq!(report.broadcast.delivered, 4);
    assert_eq!(report.broadcast.out_of_order, 0);
    assert_eq!(report.total.delivered, 12);
    assert!((report.total.delivered_pct - 75.0).abs() < 1e-9);
    assert_eq!(report.latency.samples, 12);
    assert!(!report.complete);
    assert_eq!(
        report.missing,
        [
            "client 0 user seq 4",
            "client 0 broadcast seq 1",
            "client 1 user seq 4",
            "client 1 broadcast seq 1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_goes_away_moves_to_the_next_url() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    // Client 0 starts on a, client 1 on b; both resume (recover mode).
    let fleet = timeout(
        BOUND,
        Fleet::connect(config(&[&a, &b], 2).with_recover(true)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(fleet.connect_report().joined, 2);
    a.drop_all();
    b.wait_joined(2).await;
    b.push_user(0);
    b.push_broadcast(0);
    fleet.expect(1, 1);
    let complete = timeout(
        BOUND,
        fleet.settle(Duration::from_secs(5), Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert!(complete);
    let report = timeout(BOUND, fleet.finish(1, 1)).await.unwrap();
    assert_eq!(report.server_closes, 1);
    assert_eq!(report.reconnects, 1);
    assert_eq!(report.cuts, 0);
    assert_eq!(report.not_recovered, 0);
    assert_eq!(report.total.delivered, 4);
    assert!(report.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_happen_only_while_cutting_and_each_one_reconnects() {
    let server = TestServer::start().await;
    let fleet = timeout(
        BOUND,
        Fleet::connect(
            config(&[&server], 3)
                .with_cuts(Some(Duration::from_millis(200)), Duration::from_millis(50)),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.joined.load(Ordering::SeqCst),
        3,
        "no cut before start_cuts"
    );
    fleet.start_cuts();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fleet.stop_cuts();
    // The last cut's offline spell ends and nothing more is cut.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let joined = server.joined.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.joined.load(Ordering::SeqCst), joined);
    let report = timeout(BOUND, fleet.finish(0, 0)).await.unwrap();
    assert!(report.cuts >= 6, "{report:?}");
    assert_eq!(report.reconnects, report.cuts);
    assert_eq!(joined, 3 + report.cuts);
    assert_eq!(report.server_closes, 0);
}
