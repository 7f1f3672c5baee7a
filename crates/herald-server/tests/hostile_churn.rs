//! Memory under churn: sockets ws_connect, receive a group message and disconnect in a loop; the
//! process's resident set must stay flat after warm-up.
//!
//! The only test in its binary so that no other test's allocations show up in `VmRSS`. It runs
//! for `HERALD_CHURN_SECS` seconds (default 20, of which the first quarter is warm-up); the
//! 5-minute version against the real binary is `benches/soak/run.sh`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use herald_core::Message;
use herald_server::ServerConfig;
use herald_server::tungstenite::Message as WsMessage;
use herald_test_support::eventually;
use herald_test_support::ws::{close_code, recv_text, send_text, ws_connect};

/// Concurrent client loops (each: ws_connect, receive, close).
const CLIENTS: usize = 8;
/// Allowed RSS growth after warm-up (observed: under 1 MiB over ~16k cycles; a leak of 300
/// bytes per connection would exceed it).
const MAX_GROWTH_KIB: u64 = 4 * 1024;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn one_cycle(server: &TestServer, user: &str, token: &str, n: u64) {
    let mut ws = ws_connect(&server.url(&format!("/ws/tasks/?token={token}"))).await;
    // The pong proves the socket joined its user group before the group_send (messages for
    // other sockets of the same user may arrive first).
    send_text(&mut ws, r#"{"action": "ping"}"#).await;
    while recv_text(&mut ws).await != r#"{"type": "pong"}"# {}
    let text = format!("churn {n}");
    let msg = Message::with_type("user.message").with("message", text.as_str());
    within(server.layer.group_send(&format!("user_{user}"), msg))
        .await
        .unwrap();
    // Another loop of the same user may also deliver to this socket: skip those.
    let want = format!(r#"{{"type": "user_message", "message": "{text}"}}"#);
    while recv_text(&mut ws).await != want {}
    within(ws.send(WsMessage::Close(None))).await.unwrap();
    let _ = close_code(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_connections_keep_memory_flat() {
    let total = Duration::from_secs(
        std::env::var("HERALD_CHURN_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let warm_up = total / 4;
    let server = std::sync::Arc::new(TestServer::tasks(ServerConfig::default()).await);
    let started = Instant::now();
    let mut loops = Vec::new();
    for i in 0..CLIENTS {
        let server = server.clone();
        loops.push(tokio::spawn(async move {
            let (user, token) = if i % 2 == 0 {
                ("amadmin", "amadmin-token")
            } else {
                ("bob", "bob-token")
            };
            let mut cycles = 0u64;
            while started.elapsed() < total {
                one_cycle(&server, user, token, (i as u64) << 32 | cycles).await;
                cycles += 1;
            }
            cycles
        }));
    }
    // Sample RSS once a second; the baseline is the largest sample of the warm-up's last second.
    let mut baseline = None;
    let mut samples = Vec::new();
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib();
        samples.push((started.elapsed().as_secs(), rss));
        if baseline.is_none() && started.elapsed() >= warm_up {
            baseline = Some(rss);
        }
    }
    let mut cycles = 0;
    for l in loops {
        cycles += tokio::time::timeout(STEP + total, l)
            .await
            .unwrap()
            .unwrap();
    }
    let app = server.app.clone();
    eventually(STEP, "open == 0", || {
        let open = app.metrics().connections_current();
        async move { open == 0 }
    })
    .await;
    let baseline = baseline.unwrap();
    let peak_after = samples
        .iter()
        .filter(|(t, _)| *t as f64 > warm_up.as_secs_f64())
        .map(|(_, rss)| *rss)
        .max()
        .unwrap_or(baseline);
    let end = samples.last().unwrap().1;
    eprintln!(
        "churn: {cycles} connect/receive/close cycles in {total:?}; rss KiB baseline {baseline}, \
         peak after warm-up {peak_after}, end {end}; samples {samples:?}"
    );
    assert!(
        cycles > 100,
        "only {cycles} cycles: the loop itself is stuck"
    );
    assert_eq!(server.app.metrics().connections_total(), cycles);
    assert!(
        peak_after.saturating_sub(baseline) < MAX_GROWTH_KIB,
        "rss grew {} KiB after warm-up",
        peak_after - baseline
    );
}
