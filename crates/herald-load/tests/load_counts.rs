//! End-to-end runs of the load generator against a small WebSocket server inside the test.
//!
//! The server accepts a socket only if its cookie is `sessionid=good` (like Channels'
//! `AuthMiddlewareStack` + a consumer that refuses anonymous users, answering HTTP 403), and
//! forwards every frame pushed into a broadcast channel to every open socket.

use std::time::Duration;

use futures_util::SinkExt;
use herald_load::{ErrorKind, LoadConfig, Swarm, unix_now_secs};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

const BOUND: Duration = Duration::from_secs(20);

/// The in-test server; dropping it stops the accept loop.
struct TestServer {
    url: String,
    frames: broadcast::Sender<String>,
    accept_loop: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn start_server() -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (frames, _) = broadcast::channel::<String>(4096);
    let tx = frames.clone();
    let accept_loop = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            // Subscribed before the handshake completes, so a client that sees "connected"
            // can never miss a frame sent afterwards.
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                #[expect(
                    clippy::result_large_err,
                    reason = "the signature is tungstenite's handshake callback"
                )]
                let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                    let cookie = req.headers().get("cookie").and_then(|v| v.to_str().ok());
                    if cookie == Some("sessionid=good") {
                        Ok(resp)
                    } else {
                        let mut denied = ErrorResponse::new(Some("Access denied".to_owned()));
                        *denied.status_mut() = StatusCode::FORBIDDEN;
                        Err(denied)
                    }
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
                    return;
                };
                while let Ok(frame) = rx.recv().await {
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TestServer {
        url: format!("ws://{addr}/ws/tasks/"),
        frames,
        accept_loop,
    }
}

fn good_cookie() -> Vec<String> {
    vec!["sessionid=good".to_owned()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_is_counted_and_latency_comes_from_sent_at() {
    let server = start_server().await;
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(20)
        .with_cookies(good_cookie())
        .with_expect_frames(Some(100))
        .with_deadline(Duration::from_secs(10));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swarm.connect_report().connected, 20);
    assert_eq!(swarm.connect_report().failed, 0);

    // Stamped 200 ms in the past, so every latency is at least 200 ms.
    for i in 0..5 {
        let sent_at = unix_now_secs() - 0.2;
        let frame = format!(r#"{{"type": "user_message", "n": {i}, "sent_at": {sent_at}}}"#);
        server.frames.send(frame).unwrap();
    }
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(report.complete);
    assert_eq!(report.frames, 100);
    assert_eq!(report.latency.samples, 100);
    assert!(report.latency.p50_ms >= 199.0, "{:?}", report.latency);
    assert!(report.latency.p99_ms < 5_000.0, "{:?}", report.latency);
    assert!(report.latency.max_ms >= report.latency.p99_ms);
    assert_eq!(report.disconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_without_sent_at_are_counted_but_not_timed() {
    let server = start_server().await;
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(3)
        .with_cookies(good_cookie())
        .with_expect_frames(Some(6))
        .with_deadline(Duration::from_secs(10));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    server
        .frames
        .send(r#"{"type": "user_message"}"#.to_owned())
        .unwrap();
    let stamped = format!(r#"{{"data": {{"sent_at": {}}}}}"#, unix_now_secs());
    server.frames.send(stamped).unwrap();
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(report.complete);
    assert_eq!(report.frames, 6);
    assert_eq!(report.latency.samples, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_handshakes_are_counted_by_reason() {
    let server = start_server().await;
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(10)
        .with_cookies(vec![
            "sessionid=good".to_owned(),
            "sessionid=bad".to_owned(),
        ])
        .with_expect_frames(Some(0));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    let connect = swarm.connect_report().clone();
    assert_eq!(connect.connected, 5);
    assert_eq!(connect.failed, 5);
    assert_eq!(connect.failures.get("http_403"), Some(&5));
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(report.complete);
    assert_eq!(report.frames, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_counts_as_connect_failure() {
    // Bind and drop: nothing listens on this port any more.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let config = LoadConfig::new(format!("ws://127.0.0.1:{port}/"))
        .unwrap()
        .with_connections(4)
        .with_expect_frames(Some(0));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swarm.connect_report().connected, 0);
    assert_eq!(
        swarm.connect_report().failures.get("io_connectionrefused"),
        Some(&4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_mode_opens_every_socket_at_once() {
    let server = start_server().await;
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(300)
        .with_cookies(good_cookie())
        .with_concurrency(None)
        .with_expect_frames(Some(300));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swarm.connect_report().connected, 300);
    assert!(swarm.connect_report().time_to_all_connected_ms > 0.0);
    server.frames.send(r#"{"type":"x"}"#.to_owned()).unwrap();
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(report.complete);
    assert_eq!(report.frames, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_ends_a_run_that_misses_its_frame_count() {
    let server = start_server().await;
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(4)
        .with_cookies(good_cookie())
        .with_expect_frames(Some(1_000))
        .with_deadline(Duration::from_millis(500));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    server.frames.send(r#"{"type":"x"}"#.to_owned()).unwrap();
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(!report.complete);
    assert_eq!(report.frames, 4);
    assert!(report.receive_phase_s >= 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_run_holds_sockets_and_samples_server_rss() {
    let server = start_server().await;
    // The test process is the server here, so its own RSS is what gets sampled.
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(50)
        .with_cookies(good_cookie())
        .with_deadline(Duration::from_millis(200))
        .with_server_pid(Some(std::process::id()));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(!report.complete);
    assert_eq!(report.connect.connected, 50);
    assert!(report.connect.rss_before_bytes.unwrap() > 0);
    assert!(report.rss_end_bytes.unwrap() > 0);
    assert!(report.rss_per_socket_bytes.is_some());
    // Sampled before and after the hold (the readers' CPU may round to 0 ticks).
    assert!(report.server_cpu_receive_s.unwrap() >= 0.0);
    assert_eq!(report.disconnects, 0);
}

#[tokio::test]
async fn server_closing_sockets_counts_disconnects() {
    let server = start_server().await;
    let config = LoadConfig::new(&server.url)
        .unwrap()
        .with_connections(5)
        .with_cookies(good_cookie())
        .with_expect_frames(Some(1))
        .with_deadline(Duration::from_secs(5));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    // Dropping the server's sender ends every forwarding task, which drops its socket.
    drop(server);
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    assert!(!report.complete);
    assert_eq!(report.disconnects, 5);
}

#[test]
fn non_loopback_targets_are_refused_before_any_connect() {
    let err = LoadConfig::new("ws://192.0.2.1:8000/ws/tasks/").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
    assert!(err.is_invalid_target());
}
