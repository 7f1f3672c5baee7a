//! `herald connections` and `GET /api/connections`: the fleet's sockets from the presence
//! records, across two `herald serve` processes on one Redis.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_test_support::RedisServer;
use herald_test_support::eventually;
use herald_test_support::ws::{recv_json, send_json};
use serde_json::{Value as Json, json};
use support::{Herald, herald, ws_connect_as};

const TOKEN: &str = "s3cret";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `herald connections --redis URL [USER] --json`.
async fn cli_report(url: &str, user: Option<&str>) -> Json {
    let mut args = vec!["connections", "--redis", url, "--json"];
    args.extend(user);
    let out = herald(&args).await;
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// `GET path` with an optional bearer token: (status, JSON body).
async fn api_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Json) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let text = tokio::time::timeout(support::TIMEOUT, exchange)
        .await
        .unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Json::Null))
}

/// Connection name → instance of a `user` report.
fn by_connection(report: &Json) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["connection"].as_str().unwrap().to_owned(),
                c["instance"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_listed_fleet_wide_and_follow_closes_and_a_killed_instance() {
    let redis = RedisServer::start();
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--trusted-user-header",
        "x-remote-user",
        "--presence-ttl",
        "2",
        "--publish-token",
        TOKEN,
    ];
    let one = Herald::start(&flags).await;
    let mut two = Herald::start(&flags).await;
    let _a1 = ws_connect_as(one.addr, "alice").await;
    let mut a2 = ws_connect_as(two.addr, "alice").await;
    let a3 = ws_connect_as(one.addr, "alice").await;
    let _b = ws_connect_as(two.addr, "bob").await;
    // A group joined after accept reaches the records too (batched).
    send_json(&mut a2, json!({"action": "subscribe", "task_id": 7})).await;
    loop {
        if recv_json(&mut a2).await["type"] == "subscribed" {
            break;
        }
    }

    eventually(
        Duration::from_secs(10),
        "alice's 3 sockets with task_7",
        || {
            let url = url.clone();
            async move {
                let r = cli_report(&url, Some("alice")).await;
                r["count"] == 3
                    && r["connections"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["groups"] == json!(["user_alice", "task_7"]))
            }
        },
    )
    .await;
    let alice = cli_report(&url, Some("alice")).await;
    let (port_one, port_two) = (
        format!(":{}", one.addr.port()),
        format!(":{}", two.addr.port()),
    );
    let instances: Vec<String> = by_connection(&alice).into_iter().map(|(_, i)| i).collect();
    assert_eq!(
        instances.iter().filter(|i| i.ends_with(&port_one)).count(),
        2,
        "{alice}"
    );
    assert_eq!(
        instances.iter().filter(|i| i.ends_with(&port_two)).count(),
        1,
        "{alice}"
    );
    for c in alice["connections"].as_array().unwrap() {
        assert!(
            c["address"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{c}"
        );
        let since = c["since"].as_f64().unwrap();
        assert!(since > 1.7e9, "{c}");
    }

    // The HTTP endpoint of either instance answers the same, fleet-wide.
    let (status, api) = api_get(one.addr, "/api/connections?user=alice", Some(TOKEN)).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(by_connection(&api), by_connection(&alice));
    let (status, counts) = api_get(two.addr, "/api/connections", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(counts, cli_report(&url, None).await);
    assert_eq!(
        (&counts["sockets"], &counts["users"]),
        (&json!(4), &json!(2))
    );
    let per: Vec<(bool, u64, u64)> = counts["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance"].as_str().unwrap().ends_with(&port_one),
                i["sockets"].as_u64().unwrap(),
                i["users"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        per.contains(&(true, 2, 1)) && per.contains(&(false, 2, 2)),
        "{counts}"
    );
    let table = stdout(&herald(&["connections", "--redis", &url]).await);
    assert!(table.starts_with("INSTANCE"), "{table}");
    let last: Vec<&str> = table.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(last, ["total", "4", "2"], "{table}");

    // Without the token, or with a wrong one: 401, nothing listed.
    for token in [None, Some("wrong")] {
        let (status, body) = api_get(one.addr, "/api/connections", token).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.get("instances").is_none());
    }

    // A closed socket disappears at once.
    drop(a3);
    eventually(Duration::from_secs(5), "alice down to 2", || {
        let url = url.clone();
        async move { cli_report(&url, Some("alice")).await["count"] == 2 }
    })
    .await;

    // SIGKILL: no clean close. The killed instance's sockets lapse with the TTL (2 s).
    let killed = Instant::now();
    two.child.start_kill().unwrap();
    eventually(Duration::from_secs(10), "only instance one left", || {
        let url = url.clone();
        async move {
            let r = cli_report(&url, None).await;
            r["sockets"] == 1 && r["users"] == 1
        }
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let bob = cli_report(&url, Some("bob")).await;
    assert_eq!(bob["count"], 0);
    let out = herald(&["connections", "--redis", &url, "bob"]).await;
    assert_eq!(stdout(&out), "bob has no connection");
}
