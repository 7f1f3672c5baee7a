//! Helpers shared by the `fault_*` tests: many sockets on several `herald serve` processes,
//! exactly-once delivery checks, Redis membership polling and a Python channels_redis peer.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::{Herald, ws_connect_as};
use herald_test_support::ws::{Ws, recv_json, send_json};

/// How long a socket may take to see a message that should reach it (loaded 2-core machine).
pub const DELIVERY: Duration = Duration::from_secs(20);
/// How long every socket must stay silent after its expected messages (no duplicates).
pub const GRACE: Duration = Duration::from_secs(2);
/// How long herald may take to put its memberships back after Redis returns.
pub const RESTORE: Duration = Duration::from_secs(15);

/// `herald serve` flags for a test fleet: trusted-header auth and these Redis hosts.
pub fn serve_args(redis: &str) -> Vec<String> {
    vec![
        "--redis".to_owned(),
        redis.to_owned(),
        "--trusted-user-header".to_owned(),
        "x-remote-user".to_owned(),
    ]
}

/// Starts `n` herald processes with the same flags.
pub async fn start_heralds(n: usize, args: &[String]) -> Vec<Herald> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Herald::start(&args).await);
    }
    out
}

/// One browser: a user's socket on one herald instance.
#[derive(Debug)]
pub struct Client {
    pub user: String,
    pub instance: usize,
    pub ws: Ws,
}

/// `u00`, `u01`, … (their groups are `user_u00`, …)
pub fn usernames(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i:02}")).collect()
}

/// Connects each user to instance `i % heralds.len()` and subscribes it to `task_id`.
pub async fn connect_spread(heralds: &[Herald], users: &[String], task_id: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let instance = i % heralds.len();
        clients.push(connect_client(heralds, instance, user, task_id).await);
    }
    clients
}

/// Connects `user` to `heralds[instance]` and subscribes it to `task_id`. When this returns, the
/// memberships are in Redis: herald adds `user_<name>` before it accepts and answers
/// `subscribed` after the `group_add`.
pub async fn connect_client(
    heralds: &[Herald],
    instance: usize,
    user: &str,
    task_id: &str,
) -> Client {
    let mut ws = ws_connect_as(heralds[instance].addr, user).await;
    send_json(&mut ws, json!({"action": "subscribe", "task_id": task_id})).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(
        reply,
        json!({"type": "subscribed", "task_id": task_id}),
        "{user}"
    );
    Client {
        user: user.to_owned(),
        instance,
        ws,
    }
}

/// What identifies a delivered frame: `task_update:<round>` or `user_message:<message>`.
pub fn frame_key(frame: &Value) -> String {
    let kind = frame["type"].as_str().unwrap_or("?");
    let tag = match kind {
        "task_update" => frame["round"].as_str().unwrap_or("?"),
        "user_message" => frame["message"].as_str().unwrap_or("?"),
        _ => "?",
    };
    format!("{kind}:{tag}")
}

/// The keys a client expects for one round: the shared task update and its own user message.
pub fn round_keys(round: &str) -> Vec<String> {
    vec![
        format!("task_update:{round}"),
        format!("user_message:{round}"),
    ]
}

/// The next text frame as JSON before `deadline`; `Err` says why there was none.
async fn next_frame(ws: &mut Ws, deadline: Instant) -> Result<Value, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return Err("timed out".to_owned()),
            Ok(None) => return Err("socket ended".to_owned()),
            Ok(Some(Err(err))) => return Err(format!("socket error: {err}")),
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| format!("bad JSON: {e}"));
            }
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(other))) => return Err(format!("unexpected frame {other:?}")),
        }
    }
}

/// Every client receives exactly `expected` (any order, each once) within [`DELIVERY`], then
/// nothing else for [`GRACE`]. Panics naming every client that did not.
pub async fn expect_exactly(clients: &mut [Client], expected: &[String]) {
    let deadline = Instant::now() + DELIVERY;
    let results = join_all(clients.iter_mut().map(|c| async move {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        while expected.iter().any(|k| !seen.contains_key(k)) {
            match next_frame(&mut c.ws, deadline).await {
                Ok(frame) => {
                    let key = frame_key(&frame);
                    if !expected.contains(&key) || seen.contains_key(&key) {
                        return Err(format!(
                            "{} (instance {}): unexpected or duplicate {frame}",
                            c.user, c.instance
                        ));
                    }
                    seen.insert(key, 1);
                }
                Err(why) => {
                    return Err(format!(
                        "{} (instance {}): {why} after {:?}",
                        c.user,
                        c.instance,
                        seen.keys().collect::<Vec<_>>()
                    ));
                }
            }
        }
        Ok(())
    }))
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "{} of {} sockets did not get exactly {expected:?}:\n{}",
        failures.len(),
        clients.len(),
        failures.join("\n")
    );
    expect_silence(clients, GRACE).await;
}

/// No client receives a text frame for `wait`, and none is closed. Reading keeps the sockets
/// answering herald's pings, as a browser does.
pub async fn expect_silence(clients: &mut [Client], wait: Duration) {
    let deadline = Instant::now() + wait;
    let results = join_all(clients.iter_mut().map(|c| async move {
        match next_frame(&mut c.ws, deadline).await {
            Err(why) if why == "timed out" => Ok(()),
            Err(why) => Err(format!("{} (instance {}): {why}", c.user, c.instance)),
            Ok(frame) => Err(format!("{} (instance {}): got {frame}", c.user, c.instance)),
        }
    }))
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "sockets were not silent for {wait:?}:\n{}",
        failures.join("\n")
    );
}

/// Every client's socket ends (close, error or EOF) within `within`.
pub async fn expect_closed(clients: &mut [Client], within: Duration) {
    let deadline = Instant::now() + within;
    let results = join_all(clients.iter_mut().map(|c| async move {
        match next_frame(&mut c.ws, deadline).await {
            Err(why) if why == "timed out" => Err(format!("{}: still open", c.user)),
            Err(_) => Ok(()),
            Ok(frame) => Err(format!("{}: got {frame}", c.user)),
        }
    }))
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `asgi:group:<name>` (channels_redis's default prefix).
pub fn group_key(group: &str) -> String {
    format!("asgi:group:{group}")
}

/// The members of each group on the Redis at `url` (sorted); `None` while Redis cannot be
/// reached.
pub async fn group_members(url: &str, groups: &[String]) -> Option<Vec<Vec<String>>> {
    let query = async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let mut pipe = redis::pipe();
        for g in groups {
            pipe.cmd("ZRANGE").arg(group_key(g)).arg(0).arg(-1);
        }
        let mut sets = pipe.query_async::<Vec<Vec<String>>>(&mut conn).await.ok()?;
        for set in &mut sets {
            set.sort();
        }
        Some(sets)
    };
    tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .ok()
        .flatten()
}

/// Group memberships as Redis holds them now, asserting every group has at least one member
/// (herald may stand for its local sockets with one channel per group and process).
pub async fn snapshot_groups(url: &str, groups: &[String]) -> Vec<Vec<String>> {
    let members = group_members(url, groups).await.unwrap();
    for (g, m) in groups.iter().zip(&members) {
        assert!(!m.is_empty(), "group {g} has no members in Redis");
    }
    members
}

/// Polls Redis until the groups hold exactly `want` again; returns how long that took.
/// Panics with what it last saw after `within`.
pub async fn wait_for_groups(
    url: &str,
    groups: &[String],
    want: &[Vec<String>],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let seen = group_members(url, groups).await;
        if seen.as_deref() == Some(want) {
            return start.elapsed();
        }
        if start.elapsed() > within {
            let missing: Vec<String> = match &seen {
                Some(seen) => groups
                    .iter()
                    .zip(want.iter().zip(seen))
                    .filter(|(_, (w, s))| w != s)
                    .map(|(g, (w, s))| format!("{g}: want {w:?}, saw {s:?}"))
                    .collect(),
                None => vec!["redis unreachable".to_owned()],
            };
            panic!(
                "group memberships not restored within {within:?}:\n{}",
                missing.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The groups a fleet of clients (all subscribed to `task_id`) is in.
pub fn fleet_groups(users: &[String], task_id: &str) -> Vec<String> {
    let mut out: Vec<String> = users.iter().map(|u| format!("user_{u}")).collect();
    out.push(format!("task_{task_id}"));
    out
}

/// Restarts a killed Redis on its old port (retrying briefly while the port is still held).
pub async fn restart_redis_on(port: u16) -> herald_test_support::RedisServer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match herald_test_support::RedisServer::start_on_port(port, &[]) {
            Ok(server) => return server,
            Err(log) => {
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not restart on :{port}:\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// SIGKILLs a herald process and waits for it to be gone.
pub async fn sigkill(herald: &mut Herald) {
    herald.child.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(10), herald.child.wait())
        .await
        .unwrap()
        .unwrap();
}

/// A value of herald's `/metrics` (the first sample of `name`), if present.
pub async fn metric(herald: &Herald, name: &str) -> Option<f64> {
    let body = crate::support::http_get(herald.addr, "/metrics").await;
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let base = key.split('{').next()?;
        (base == name).then(|| value.parse().ok()).flatten()
    })
}

/// A long-running `peer.py repl`: real Python channels_redis with a given CONFIG.
#[derive(Debug)]
pub struct PythonPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

/// `{"address": URL, "socket_timeout": null}` for each URL (see peer.py on redis-py 8).
pub fn python_hosts(urls: &[String]) -> Value {
    Value::Array(
        urls.iter()
            .map(|u| json!({"address": u, "socket_timeout": null}))
            .collect(),
    )
}

impl PythonPeer {
    /// Starts `python peer.py --config CONFIG repl`.
    pub fn start(python: &Path, config: &Value) -> PythonPeer {
        let mut child = crate::support::peer_py(python, config, &["repl"]);
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        PythonPeer {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its reply (`{"ok": …, "result"|"error": …}`).
    pub async fn call(&mut self, command: Value) -> Value {
        let io = async {
            self.stdin
                .write_all(format!("{command}\n").as_bytes())
                .await
                .unwrap();
            self.stdin.flush().await.unwrap();
            let line = self.stdout.next_line().await.unwrap().unwrap();
            serde_json::from_str::<Value>(&line).unwrap()
        };
        // The first call also pays for Python's start-up and imports.
        tokio::time::timeout(Duration::from_secs(60), io)
            .await
            .unwrap_or_else(|_| panic!("peer.py did not answer {command}"))
    }

    /// `group_send(group, message)`, asserting Python reported success.
    pub async fn group_send(&mut self, group: &str, message: Value) {
        let reply = self
            .call(json!({"op": "group_send", "group": group, "message": message}))
            .await;
        assert_eq!(reply["ok"], json!(true), "group_send {group}: {reply}");
    }

    /// One round as Django code sends it: a `task.update` to `task_<task_id>` and the guide's
    /// `user.message` (as `ws_send_message` builds it) to each user.
    pub async fn send_round(&mut self, task_id: &str, users: &[String], round: &str) {
        self.group_send(
            &format!("task_{task_id}"),
            json!({"type": "task.update", "task_id": task_id, "round": round}),
        )
        .await;
        for user in users {
            self.group_send(
                &format!("user_{user}"),
                json!({"type": "user.message", "username": user, "message": round, "data": {},
                       "timestamp": "2026-01-01T00:00:00"}),
            )
            .await;
        }
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Python code for `manage.py shell`: a `task.update` group_send to `task_<task_id>` and the
/// guide's `ws_send_message(user, round)` to each user; prints the helpers' results as JSON.
pub fn django_round(task_id: &str, users: &[String], round: &str) -> String {
    format!(
        "import json\n\
         from asgiref.sync import async_to_sync\n\
         from channels.layers import get_channel_layer\n\
         from OptsIO.ws_utils import ws_send_message\n\
         async_to_sync(get_channel_layer().group_send)({group:?}, \
         {{'type': 'task.update', 'task_id': {task_id:?}, 'round': {round:?}}})\n\
         print(json.dumps([ws_send_message(u, {round:?}) for u in {users}]))\n",
        group = format!("task_{task_id}"),
        users = serde_json::to_string(users).unwrap(),
    )
}

/// Message `n` of a numbered stream to `group`: a user message (`data.n`) or a task update
/// (`n`), by the group it goes to.
pub fn numbered(group: &str, n: usize) -> Value {
    if group.starts_with("user_") {
        json!({"type": "user.message", "username": "alice", "message": format!("m{n}"),
               "data": {"n": n}, "timestamp": "2026-01-01T00:00:00"})
    } else {
        json!({"type": "task.update", "task_id": &group[5..], "n": n})
    }
}

/// The `n` of a frame made from [`numbered`].
pub fn number_of(frame: &Value) -> usize {
    let n = match frame["type"].as_str() {
        Some("user_message") => &frame["data"]["n"],
        Some("task_update") => &frame["n"],
        _ => panic!("unexpected frame {frame}"),
    };
    n.as_u64().unwrap() as usize
}
