//! Sentinel failover. A primary, a replica and three Sentinels (quorum 2) run
//! on ephemeral ports; two `herald serve` processes reach Redis only through the Sentinels
//! (`sentinel://…/MASTER`). The primary is SIGKILLed; once the Sentinels have promoted the
//! replica, Python channels_redis (through the same Sentinels) and `herald send` reach every
//! socket exactly once, including one that connected after the failover.

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use fault_common::*;
use herald_test_support::{RedisServer, SentinelServer, compat_python, eventually};
use serde_json::json;

const MASTER: &str = "herald-primary";
const TASK: &str = "failover";
/// Sentinel settles a failover in a few seconds with the low timeouts below; this bounds it.
const FAILOVER: Duration = Duration::from_secs(60);

async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap()
    .unwrap()
}

/// `INFO replication` of the server on `port` contains `needle`.
async fn replication_info_has(port: u16, needle: &str) -> bool {
    let mut conn = connect(port).await;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.contains(needle)
}

/// Number of entries of a `SENTINEL <sub> MASTER` list reply.
async fn sentinel_count(port: u16, sub: &str) -> usize {
    let mut conn = connect(port).await;
    let reply: redis::RedisResult<redis::Value> = redis::cmd("SENTINEL")
        .arg(sub)
        .arg(MASTER)
        .query_async(&mut conn)
        .await;
    match reply {
        Ok(redis::Value::Array(items)) => items.len(),
        _ => 0,
    }
}

/// The master port a Sentinel names now.
async fn sentinel_master_port(port: u16) -> Option<u16> {
    let mut conn = connect(port).await;
    let addr: Vec<String> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER)
        .query_async(&mut conn)
        .await
        .ok()?;
    addr.get(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_receive_exactly_once_after_sentinel_fails_over_to_the_replica() {
    let Some(python) = compat_python() else {
        return;
    };
    let mut primary = RedisServer::start();
    let replica =
        RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let synced = eventually(Duration::from_secs(30), "replica in sync", || {
        replication_info_has(replica.port(), "master_link_status:up")
    })
    .await;
    eprintln!("replica in sync after {synced:?}");

    let conf = [
        format!("sentinel down-after-milliseconds {MASTER} 1000"),
        format!("sentinel failover-timeout {MASTER} 5000"),
    ];
    let conf: Vec<&str> = conf.iter().map(String::as_str).collect();
    let sentinels: Vec<SentinelServer> = (0..3)
        .map(|_| SentinelServer::start_with_conf(MASTER, primary.port(), 2, &conf, None))
        .collect();
    // A failover needs every Sentinel to know the replica and a majority of its peers.
    for s in &sentinels {
        let port = s.port();
        eventually(
            Duration::from_secs(40),
            "sentinel discovers the replica and its two peers",
            || async move {
                sentinel_count(port, "replicas").await == 1
                    && sentinel_count(port, "sentinels").await == 2
            },
        )
        .await;
    }

    let addrs: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let herald_url = format!("sentinel://{}/{MASTER}", addrs.join(","));
    let python_config = json!({"hosts": [{
        "master_name": MASTER,
        "sentinels": sentinels.iter().map(|s| json!(["127.0.0.1", s.port()])).collect::<Vec<_>>(),
        "socket_timeout": null,
    }]});

    let heralds = start_heralds(2, &serve_args(&herald_url)).await;
    let mut users = usernames(10);
    let mut clients = connect_spread(&heralds, &users, TASK).await;
    let mut peer = PythonPeer::start(&python, &python_config);
    peer.send_round(TASK, &users, "before").await;
    expect_exactly(&mut clients, &round_keys("before")).await;
    drop(peer);

    // Replication is asynchronous: fail over only once the replica holds the memberships.
    let groups = fleet_groups(&users, TASK);
    let memberships = snapshot_groups(&primary.url(), &groups).await;
    wait_for_groups(
        &replica.url(),
        &groups,
        &memberships,
        Duration::from_secs(10),
    )
    .await;

    primary.kill();
    let killed = Instant::now();
    for s in &sentinels {
        let port = s.port();
        let replica_port = replica.port();
        eventually(FAILOVER, "sentinels promote the replica", || async move {
            sentinel_master_port(port).await == Some(replica_port)
        })
        .await;
    }
    eventually(FAILOVER, "replica takes the master role", || {
        replication_info_has(replica.port(), "role:master")
    })
    .await;
    eprintln!(
        "failover done {:?} after the primary died",
        killed.elapsed()
    );

    // A socket that connects after the failover joins its groups on the new master.
    users.push("late".to_owned());
    clients.push(connect_client(&heralds, 0, "late", TASK).await);

    // A fresh Django process (Python resolves the master through the Sentinels)…
    let mut peer = PythonPeer::start(&python, &python_config);
    peer.send_round(TASK, &users, "after").await;
    expect_exactly(&mut clients, &round_keys("after")).await;
    eprintln!(
        "delivered after failover {:?} after the primary died",
        killed.elapsed()
    );

    // …and herald's own sender, through the same Sentinels.
    let out = support::herald(&[
        "send",
        "--redis",
        &herald_url,
        "--user",
        "u03",
        "via-herald-send",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u03 = clients.iter().position(|c| c.user == "u03").unwrap();
    expect_exactly(
        &mut clients[u03..=u03],
        &["user_message:via-herald-send".to_owned()],
    )
    .await;
    expect_silence(&mut clients, Duration::from_millis(200)).await;
    assert_eq!(
        group_members(&replica.url(), &groups).await.as_deref(),
        Some(&memberships[..]),
        "the promoted replica holds the same memberships"
    );
}
