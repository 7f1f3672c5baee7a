//! scale-out. Three `herald serve` processes share three Redis hosts (the same
//! ordered `hosts` list everywhere, as Django's CHANNEL_LAYERS); 30 users are spread over the
//! instances. Python channels_redis `group_send` to a shared group and to each user's group
//! reaches every socket exactly once. One herald is SIGKILLed: only its own sockets drop, the
//! others keep receiving, and the dropped users reconnect to a surviving instance (as the
//! browser client would through a load balancer) and receive again, exactly once.

mod fault_common;
mod support;

use std::time::Duration;

use fault_common::*;
use herald_test_support::{RedisServer, compat_python};
use serde_json::json;

const INSTANCES: usize = 3;
const USERS: usize = 30;
const TASK: &str = "fleet";
const KILLED: usize = 1;

/// Names of the group keys on one Redis host.
async fn group_keys_on(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let query = async {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(group_key("*"))
            .query_async::<Vec<String>>(&mut conn)
            .await
            .unwrap()
    };
    tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn group_sends_reach_every_socket_once_and_survivors_keep_receiving_after_a_sigkill() {
    let Some(python) = compat_python() else {
        return;
    };
    let redises: Vec<RedisServer> = (0..INSTANCES).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = redises.iter().map(RedisServer::url).collect();
    let mut heralds = start_heralds(INSTANCES, &serve_args(&urls.join(","))).await;
    let users = usernames(USERS);
    let mut clients = connect_spread(&heralds, &users, TASK).await;

    // The groups really are sharded: every host holds some, and together exactly ours.
    let mut total = 0;
    for url in &urls {
        let keys = group_keys_on(url).await;
        assert!(!keys.is_empty(), "no group lives on {url}");
        total += keys.len();
    }
    assert_eq!(
        total,
        USERS + 1,
        "one key per user group plus the task group"
    );

    let mut peer = PythonPeer::start(&python, &json!({"hosts": python_hosts(&urls)}));
    peer.send_round(TASK, &users, "all-up").await;
    expect_exactly(&mut clients, &round_keys("all-up")).await;

    // SIGKILL one instance: its sockets drop, nobody else's.
    sigkill(&mut heralds[KILLED]).await;
    let (mut orphans, mut survivors): (Vec<Client>, Vec<Client>) =
        clients.into_iter().partition(|c| c.instance == KILLED);
    assert_eq!(orphans.len(), USERS / INSTANCES);
    expect_closed(&mut orphans, Duration::from_secs(10)).await;

    peer.send_round(TASK, &users, "one-down").await;
    expect_exactly(&mut survivors, &round_keys("one-down")).await;

    // The dropped users come back the way the browser client does: the old address refuses,
    // the next instance (a load balancer's choice) accepts, and the socket joins its groups.
    let dead = heralds[KILLED].addr;
    let refused =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(dead))
            .await
            .unwrap();
    assert!(refused.is_err(), "the killed instance still accepts");
    let mut clients = survivors;
    for (i, orphan) in orphans.iter().enumerate() {
        let instance = [0, 2][i % 2];
        clients.push(connect_client(&heralds, instance, &orphan.user, TASK).await);
    }
    drop(orphans);

    peer.send_round(TASK, &users, "reconnected").await;
    expect_exactly(&mut clients, &round_keys("reconnected")).await;
    let mut per_instance = [0usize; INSTANCES];
    for c in &clients {
        per_instance[c.instance] += 1;
    }
    assert_eq!(per_instance, [15, 0, 15]);
}
