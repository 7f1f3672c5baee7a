//! The `herald-load` binary end to end: one JSON line, the sender hook, early stop when the
//! sender fails, and the loopback rule.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herald_load::unix_now_secs;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const BOUND: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_herald-load");

/// Sends two stamped frames to every socket as soon as it opens, then keeps it open.
async fn start_server() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/tasks/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                for n in 0..2 {
                    let frame = format!(
                        r#"{{"type":"user_message","n":{n},"sent_at":{}}}"#,
                        unix_now_secs()
                    );
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
                // Hold the socket until the client goes away.
                let _ = futures_util::StreamExt::next(&mut ws).await;
            });
        }
    });
    (url, task)
}

async fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = timeout(
        BOUND,
        Command::new(BIN).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap()
    .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_one_json_line_with_frames_and_the_senders_output() {
    let (url, server) = start_server().await;
    let (code, stdout) = run(&[
        "--url",
        &url,
        "--connections",
        "5",
        "--expect-frames",
        "10",
        "--deadline",
        "20",
        "--label",
        "test/cli",
        "--",
        "sh",
        "-c",
        r#"echo '{"sent": 7}'"#,
    ])
    .await;
    server.abort();
    assert_eq!(code, Some(0), "{stdout}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["frames"], 10);
    assert_eq!(report["complete"], true);
    assert_eq!(report["connect"]["connected"], 5);
    assert_eq!(report["latency"]["samples"], 10);
    assert_eq!(report["label"], "test/cli");
    assert_eq!(report["sender"]["exit_code"], 0);
    assert_eq!(report["sender"]["output"]["sent"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sender_ends_the_run_before_the_deadline() {
    let (url, server) = start_server().await;
    let started = Instant::now();
    let (code, stdout) = run(&[
        "--url",
        &url,
        "--connections",
        "2",
        "--expect-frames",
        "1000",
        "--deadline",
        "25",
        "--",
        "sh",
        "-c",
        "exit 3",
    ])
    .await;
    server.abort();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["frames"], 4);
    assert_eq!(report["sender"]["exit_code"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_stop_ends_the_run_once_frames_stop_arriving() {
    let (url, server) = start_server().await;
    let started = Instant::now();
    let (code, stdout) = run(&[
        "--url",
        &url,
        "--connections",
        "2",
        "--expect-frames",
        "1000",
        "--deadline",
        "25",
        "--quiet-stop",
        "1",
        "--",
        "true",
    ])
    .await;
    server.abort();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["frames"], 4);
    assert_eq!(report["complete"], false);
}

#[tokio::test]
async fn non_loopback_targets_and_redis_urls_are_refused() {
    let (code, _) = run(&["--url", "ws://192.0.2.1:8000/ws/tasks/"]).await;
    assert_ne!(code, Some(0));
    let (code, _) = run(&[
        "send",
        "broadcast",
        "--redis-url",
        "redis://192.0.2.1:6379",
        "--group",
        "user_x",
    ])
    .await;
    assert_ne!(code, Some(0));
}
