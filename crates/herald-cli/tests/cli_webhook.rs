//! The online/offline webhook end to end: `herald serve --online-webhook` processes on one
//! Redis, and a real HTTP receiver (a small tokio server here) that checks each signature with
//! its own HMAC-SHA256.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_test_support::ws::recv_json;
use herald_test_support::{RedisServer, eventually, free_port};
use hmac::{Hmac, Mac};
use serde_json::Value as Json;
use sha2::Sha256;
use support::{Herald, herald, http_get, ws_connect_as};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "webhook-s3cret";

/// One request the receiver got.
#[derive(Debug)]
struct Hook {
    event_header: String,
    signature: String,
    body: Vec<u8>,
}

impl Hook {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// (event, user) after checking the signature and the body's shape.
    fn checked(&self) -> (String, String) {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&self.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(self.signature, format!("sha256={hex}"), "bad signature");
        let json = self.json();
        let event = json["event"].as_str().unwrap().to_owned();
        assert_eq!(self.event_header, event);
        let at = json["at"].as_f64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - at).abs() < 60.0, "at {at} is not now");
        (event, json["user"].as_str().unwrap().to_owned())
    }
}

/// A plain HTTP/1.1 receiver answering 204 to every POST, handing each request to the test.
struct Receiver {
    hooks: mpsc::UnboundedReceiver<Hook>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let (tx, hooks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(hook) = read_request(&mut stream).await {
                        let _ = stream
                            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                            .await;
                        let _ = tx.send(hook);
                    }
                });
            }
        });
        Receiver { hooks, _task: task }
    }

    /// The next request, within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Hook> {
        tokio::time::timeout(wait, self.hooks.recv())
            .await
            .ok()
            .flatten()
    }

    async fn next(&mut self) -> Hook {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("no webhook request within 10 s")
    }

    /// Asserts that nothing arrives for `wait`.
    async fn none_within(&mut self, wait: Duration) {
        if let Some(hook) = self.next_within(wait).await {
            panic!("unexpected webhook {}", String::from_utf8_lossy(&hook.body));
        }
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Hook> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    assert!(
        head.starts_with("POST /herald/presence/ HTTP/1.1\r\n"),
        "{head}"
    );
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap();
    assert_eq!(header("content-type"), "application/json");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Hook {
        event_header: header("x-herald-event"),
        signature: header("x-herald-signature"),
        body: buf[head_end..head_end + length].to_vec(),
    })
}

fn hook_url(addr: SocketAddr) -> String {
    format!("http://{addr}/herald/presence/")
}

/// `herald serve` flags for a webhook to `receiver` with `debounce` seconds.
fn flags(redis: &str, receiver: SocketAddr, debounce: &str) -> Vec<String> {
    [
        "--redis",
        redis,
        "--trusted-user-header",
        "x-remote-user",
        "--presence-ttl",
        "2",
        "--online-webhook",
        &hook_url(receiver),
        "--online-debounce",
        debounce,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn start(flags: &[String], extra: &[&str]) -> Herald {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Herald::start_with_env(&args, &[("HERALD_ONLINE_WEBHOOK_SECRET", SECRET)]).await
}

/// A counter of `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let page = http_get(addr, "/metrics").await;
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

#[tokio::test(flavor = "multi_thread")]
async fn online_on_the_first_socket_a_reload_fires_nothing_offline_after_the_debounce() {
    let redis = RedisServer::start();
    let at = loopback();
    let mut receiver = Receiver::start(at).await;
    let server = start(&flags(&redis.url(), at, "1"), &[]).await;

    let first = ws_connect_as(server.addr, "alice").await;
    assert_eq!(
        receiver.next().await.checked(),
        ("online".into(), "alice".into())
    );
    // A second socket: still the same online user.
    let second = ws_connect_as(server.addr, "alice").await;
    drop(first);
    receiver.none_within(Duration::from_millis(1500)).await;

    // A reload: the last socket closes and a new one opens well within the debounce.
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = ws_connect_as(server.addr, "alice").await;
    receiver.none_within(Duration::from_millis(2500)).await;

    // Closed for good: offline once, not before the debounce.
    let closed = Instant::now();
    drop(third);
    let hook = receiver.next().await;
    assert_eq!(hook.checked(), ("offline".into(), "alice".into()));
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "{:?}",
        closed.elapsed()
    );
    receiver.none_within(Duration::from_millis(1500)).await;
    assert_eq!(metric(server.addr, "herald_webhook_sent_total").await, 2);
    assert_eq!(metric(server.addr, "herald_webhook_dropped_total").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_fire_one_event_per_transition_and_a_killed_ones_users_go_offline() {
    let redis = RedisServer::start();
    let at = loopback();
    let mut receiver = Receiver::start(at).await;
    let flags = flags(&redis.url(), at, "1");
    let one = start(&flags, &[]).await;
    let mut two = start(&flags, &[]).await;

    // First sockets of alice on both instances at once: one "online".
    let (a1, a2) = tokio::join!(
        ws_connect_as(one.addr, "alice"),
        ws_connect_as(two.addr, "alice")
    );
    assert_eq!(
        receiver.next().await.checked(),
        ("online".into(), "alice".into())
    );
    let bob = ws_connect_as(two.addr, "bob").await;
    assert_eq!(
        receiver.next().await.checked(),
        ("online".into(), "bob".into())
    );
    receiver.none_within(Duration::from_millis(1000)).await;

    // One of alice's two sockets closes: she is still online in the fleet.
    drop(a1);
    receiver.none_within(Duration::from_millis(2000)).await;

    // SIGKILL instance two: alice's last socket and bob's vanish without a close; their
    // records lapse (TTL 2 s) and instance one's sweep announces both, once each.
    two.child.start_kill().unwrap();
    let mut offline = vec![
        receiver.next().await.checked(),
        receiver.next().await.checked(),
    ];
    offline.sort();
    assert_eq!(
        offline,
        [
            ("offline".to_owned(), "alice".to_owned()),
            ("offline".to_owned(), "bob".to_owned())
        ]
    );
    receiver.none_within(Duration::from_millis(1500)).await;
    drop((a2, bob));
    assert_eq!(metric(one.addr, "herald_webhook_failed_total").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_comes_up_late_gets_the_event_retried() {
    let redis = RedisServer::start();
    let at = loopback();
    let server = start(&flags(&redis.url(), at, "1"), &[]).await;
    let _ws = ws_connect_as(server.addr, "alice").await;
    // Nothing listens yet: the delivery fails and is retried with backoff.
    eventually(Duration::from_secs(10), "a retry", || async {
        metric(server.addr, "herald_webhook_retried_total").await >= 1
    })
    .await;
    assert_eq!(metric(server.addr, "herald_webhook_sent_total").await, 0);
    let mut receiver = Receiver::start(at).await;
    assert_eq!(
        receiver.next().await.checked(),
        ("online".into(), "alice".into())
    );
    eventually(Duration::from_secs(5), "sent counted", || async {
        metric(server.addr, "herald_webhook_sent_total").await == 1
    })
    .await;
    assert_eq!(metric(server.addr, "herald_webhook_failed_total").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_comes_up_fills_a_bounded_queue_and_serving_goes_on() {
    let redis = RedisServer::start();
    let url = redis.url();
    let at = loopback();
    let server = start(&flags(&url, at, "1"), &["--online-webhook-queue", "2"]).await;
    let mut sockets = Vec::new();
    for i in 0..6 {
        sockets.push(ws_connect_as(server.addr, &format!("user{i}")).await);
    }
    // Six "online" events, one in delivery (retrying), at most two queued: the oldest dropped.
    eventually(Duration::from_secs(10), "drops counted", || async {
        metric(server.addr, "herald_webhook_dropped_total").await >= 3
    })
    .await;
    assert!(metric(server.addr, "herald_webhook_queued").await <= 2);
    assert_eq!(metric(server.addr, "herald_webhook_sent_total").await, 0);
    // The server keeps serving: new sockets, messages, health.
    let mut ws = ws_connect_as(server.addr, "late").await;
    let out = herald(&["send", "--redis", &url, "--user", "late", "still here"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(recv_json(&mut ws).await["message"], "still here");
    assert!(
        http_get(server.addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_without_its_secret_is_refused_at_start() {
    let out = herald(&[
        "serve",
        "--online-webhook",
        "http://127.0.0.1:9/x",
        "--bind",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--online-webhook-secret"), "{err}");
}

/// Runs the receiving view documented in docs/deploy.md §11 (the `python` block, unchanged)
/// under the compat venv's Django on each `(body, signature)`; returns the status codes.
async fn documented_view_statuses(
    python: &std::path::Path,
    requests: &[(Vec<u8>, String)],
) -> Vec<u16> {
    let deploy =
        std::fs::read_to_string(herald_test_support::workspace_root().join("docs/deploy.md"))
            .unwrap();
    let section = deploy.split("## 11.").nth(1).unwrap();
    let view = section
        .split("```python\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("view.py"), view).unwrap();
    let driver = r#"
import json, sys
import django
from django.conf import settings
settings.configure(HERALD_WEBHOOK_SECRET=sys.argv[2], ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__)
urlpatterns = []
django.setup()
from django.test import RequestFactory
ns = {}
exec(open(sys.argv[1]).read(), ns)
for line in sys.stdin:
    req = json.loads(line)
    request = RequestFactory().post("/herald/presence/", data=bytes.fromhex(req["body"]),
                                    content_type="application/json",
                                    HTTP_X_HERALD_SIGNATURE=req["signature"])
    print(ns["herald_presence"](request).status_code, flush=True)
"#;
    std::fs::write(dir.path().join("driver.py"), driver).unwrap();
    let input: String = requests
        .iter()
        .map(|(body, sig)| {
            let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}\n", serde_json::json!({"body": hex, "signature": sig}))
        })
        .collect();
    let mut child = tokio::process::Command::new(python)
        .arg(dir.path().join("driver.py"))
        .arg(dir.path().join("view.py"))
        .arg(SECRET)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_django_view_accepts_herald_signatures_and_refuses_forgeries() {
    let Some(python) = herald_test_support::compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let at = loopback();
    let mut receiver = Receiver::start(at).await;
    let server = start(&flags(&redis.url(), at, "1"), &[]).await;
    let _ws = ws_connect_as(server.addr, "alice").await;
    let hook = receiver.next().await;
    hook.checked();
    let mut forged = hook.body.clone();
    let n = forged.len();
    forged[n - 2] ^= 1; // another `at`
    let requests = [
        (hook.body.clone(), hook.signature.clone()),
        (forged, hook.signature.clone()),
        (hook.body.clone(), "sha256=00".to_owned()),
        (hook.body.clone(), String::new()),
    ];
    assert_eq!(
        documented_view_statuses(&python, &requests).await,
        [204, 403, 403, 403]
    );
}
