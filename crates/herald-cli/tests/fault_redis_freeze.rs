//! the other kind of "unreachable": a Redis that hangs without closing its
//! connections (SIGSTOP, as a silent network partition looks to herald) for longer than
//! herald's blocking-read timeout, then resumes with its data intact. Sockets on two herald
//! processes stay open, and what Python sends after Redis resumes reaches each exactly once.

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use fault_common::*;
use herald_test_support::{RedisServer, compat_python};
use serde_json::json;

const SOCKETS: usize = 20;
const TASK: &str = "frozen";
/// Longer than a reader's blocking-read deadline (`brpop_timeout` 5 s + 5 s), so herald's
/// readers time out and reconnect while Redis is frozen.
const FREEZE: Duration = Duration::from_secs(12);

/// Sends `signal` to the redis-server process.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Resumes a stopped Redis even when the test panics, so nothing is left stopped behind it.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_receive_exactly_once_after_redis_hangs_longer_than_the_read_timeout() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let pid: u32 = {
        let client = redis::Client::open(url.as_str()).unwrap();
        let info = async {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut conn)
                .await
                .unwrap()
        };
        let info = tokio::time::timeout(Duration::from_secs(5), info)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let heralds = start_heralds(2, &serve_args(&url)).await;
    let users = usernames(SOCKETS);
    let mut clients = connect_spread(&heralds, &users, TASK).await;
    let groups = fleet_groups(&users, TASK);
    let before = snapshot_groups(&url, &groups).await;

    // Start Python first, so its start-up is not part of what the test measures.
    let mut peer = PythonPeer::start(
        &python,
        &json!({"hosts": python_hosts(std::slice::from_ref(&url))}),
    );
    peer.send_round(TASK, &users, "before").await;
    expect_exactly(&mut clients, &round_keys("before")).await;

    signal(pid, "-STOP");
    let frozen = Frozen(pid);
    // Every socket stays open and silent while Redis hangs.
    expect_silence(&mut clients, FREEZE).await;
    drop(frozen);
    let resumed = Instant::now();

    assert_eq!(
        group_members(&url, &groups).await.as_deref(),
        Some(&before[..]),
        "the memberships survive a freeze"
    );
    peer.send_round(TASK, &users, "after").await;
    expect_exactly(&mut clients, &round_keys("after")).await;
    eprintln!(
        "after a {FREEZE:?} freeze, delivered {:?} after Redis resumed",
        resumed.elapsed()
    );
    // The freeze outlasted every blocking read, so each herald's readers did reconnect.
    for h in &heralds {
        let reconnects = metric(h, "herald_redis_reconnects_total").await.unwrap();
        assert!(reconnects >= 1.0, "herald {} never reconnected", h.addr);
    }
}
