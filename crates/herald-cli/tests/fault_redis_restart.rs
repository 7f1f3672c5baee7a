//! a Redis restart without persistence (every group is gone) and a Redis that
//! is unreachable for 30 s. Sockets spread over two `herald serve` processes must stay open and
//! receive, exactly once, what Django sends after Redis is back, because herald re-adds its
//! memberships. Daphne + channels_redis leaves every socket deaf here (0 of 100 on this machine).

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use fault_common::*;
use futures_util::StreamExt;
use herald_test_support::{RedisServer, compat_python};
use support::django::Django;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SOCKETS: usize = 50;
const TASK: &str = "shared";

/// The Django test project on `redis_url` (SQLite: the helpers used here never touch the DB).
fn django(python: std::path::PathBuf, dir: &tempfile::TempDir, redis_url: &str) -> Django {
    let db = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    Django::new(python, &db, redis_url)
}

/// Runs one round from the Django shell and checks every helper call returned `want`.
async fn django_send(django: &Django, users: &[String], round: &str, want: bool) {
    let out = django.shell(&django_round(TASK, users, round)).await;
    assert_eq!(
        last_line_json(&out),
        vec![want; users.len()],
        "ws_send_message results"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_receive_exactly_once_after_redis_restarts_without_persistence() {
    let Some(python) = compat_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let port = redis.port();
    let url = redis.url();
    let django = django(python, &dir, &url);
    let heralds = start_heralds(2, &serve_args(&url)).await;
    let users = usernames(SOCKETS);
    let mut clients = connect_spread(&heralds, &users, TASK).await;

    // Baseline: the fleet works before the fault.
    django_send(&django, &users, "before", true).await;
    expect_exactly(&mut clients, &round_keys("before")).await;

    let groups = fleet_groups(&users, TASK);
    let before = snapshot_groups(&url, &groups).await;
    redis.kill();
    let mut redis = restart_redis_on(port).await;
    let back = Instant::now();
    let wiped = group_members(&url, &groups[..1]).await;
    assert_eq!(
        wiped,
        Some(vec![vec![]]),
        "the restarted Redis must be empty"
    );
    let restored = wait_for_groups(&url, &groups, &before, RESTORE).await;
    eprintln!("memberships of {SOCKETS} sockets restored {restored:?} after Redis came back");

    django_send(&django, &users, "after", true).await;
    expect_exactly(&mut clients, &round_keys("after")).await;
    eprintln!(
        "delivered to all {SOCKETS} sockets {:?} after Redis came back",
        back.elapsed()
    );
    for h in &heralds {
        assert!(metric(h, "herald_redis_reconnects_total").await.unwrap() >= 1.0);
    }
    redis.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_survive_thirty_seconds_without_redis_and_receive_exactly_once_after() {
    let Some(python) = compat_python() else {
        return;
    };
    const OUTAGE: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let port = redis.port();
    let url = redis.url();
    let django = django(python, &dir, &url);
    let heralds = start_heralds(2, &serve_args(&url)).await;
    let users = usernames(SOCKETS);
    let mut clients = connect_spread(&heralds, &users, TASK).await;
    let groups = fleet_groups(&users, TASK);
    let before = snapshot_groups(&url, &groups).await;

    redis.kill();
    let down = Instant::now();
    // While Redis is away: every socket stays open and hears nothing, and Django's helpers
    // report failure (messages sent now are lost, as with channels_redis).
    let during = async {
        // ws_send_message logs the exception and returns False; three users keep redis-py's
        // connection retries short.
        let out = django
            .shell(&django_round_users_only(&users[..3], "during"))
            .await;
        assert_eq!(
            last_line_json(&out),
            vec![false; 3],
            "sends while Redis is down must fail"
        );
    };
    // A browser that connects now is turned away at once (its group_add cannot reach Redis);
    // its reconnect loop gets in once Redis is back (below).
    let newcomer = async {
        let mut req = format!("ws://{}/ws/tasks/", heralds[0].addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-remote-user", "newcomer".parse().unwrap());
        let attempt = tokio::time::timeout(
            Duration::from_secs(20),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .unwrap();
        // Before herald's health monitor noticed, the failed group_add answers 5xx; once it
        // has, the handshake is accepted and closed with 1013 "try again later".
        match attempt {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert!(resp.status().is_server_error(), "{}", resp.status());
            }
            Ok((mut ws, _)) => {
                let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                match frame {
                    WsMessage::Close(Some(close)) => assert_eq!(u16::from(close.code), 1013),
                    other => panic!("a handshake while Redis is down must be refused: {other:?}"),
                }
            }
            other => panic!("a handshake while Redis is down must be refused: {other:?}"),
        }
    };
    tokio::join!(expect_silence(&mut clients, OUTAGE), during, newcomer);
    assert!(down.elapsed() >= OUTAGE);

    let mut redis = restart_redis_on(port).await;
    let restored = wait_for_groups(&url, &groups, &before, RESTORE).await;
    eprintln!("after a {OUTAGE:?} outage, memberships restored {restored:?} after Redis came back");

    let mut users = users;
    users.push("newcomer".to_owned());
    clients.push(connect_client(&heralds, 0, "newcomer", TASK).await);
    django_send(&django, &users, "after", true).await;
    expect_exactly(&mut clients, &round_keys("after")).await;
    redis.kill();
}

/// `ws_send_message(u, round)` for each user, printing the results (no group_send, which
/// would raise while Redis is down).
fn django_round_users_only(users: &[String], round: &str) -> String {
    format!(
        "import json\n\
         from OptsIO.ws_utils import ws_send_message\n\
         print(json.dumps([ws_send_message(u, {round:?}) for u in {users}]))\n",
        users = serde_json::to_string(users).unwrap(),
    )
}

/// The JSON list our shell code prints last (Django 5.2's shell may print a line of its own
/// about automatic imports first).
fn last_line_json(out: &str) -> Vec<bool> {
    serde_json::from_str(out.trim().lines().last().unwrap_or_default()).unwrap()
}
