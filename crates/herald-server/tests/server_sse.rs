//! Event streams (`AppBuilder::sse_route`) under the WebSocket path's limits: a reader that
//! does not read is cut as a slow consumer, caps count streams and sockets together, and the
//! builder refuses a stream route without its WebSocket route.

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestServer, memory_layer, tasks_builder, within};
use herald_core::Message;
use herald_server::{ErrorKind, HealthCheck, ServerConfig};
use herald_test_support::eventually;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::http::StatusCode;

async fn sse_server(config: ServerConfig) -> TestServer {
    TestServer::start(
        tasks_builder(config).sse_route("/sse/tasks/", "/ws/tasks/"),
        memory_layer(),
    )
    .await
}

/// Sends `GET path` and reads the status line; returns the status and the open connection.
async fn open_stream(server: &TestServer, path: &str) -> (u16, BufReader<TcpStream>) {
    let mut stream = within(TcpStream::connect(server.addr)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    within(stream.write_all(req.as_bytes())).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    within(reader.read_line(&mut line)).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, reader)
}

/// Waits until `value` event streams are open.
async fn sse_streams_reach(server: &TestServer, value: u64) {
    let metrics = server.app.metrics();
    eventually(
        Duration::from_secs(10),
        "open event streams",
        || async move { metrics.sse_connections_current() == value },
    )
    .await;
}

#[tokio::test]
async fn a_stream_nobody_reads_is_cut_as_a_slow_consumer() {
    let config = ServerConfig::default()
        .with_max_outbound_frames(NonZeroUsize::new(8).unwrap())
        .with_close_timeout(Duration::from_secs(1));
    let server = sse_server(config).await;
    let (status, mut slow) = open_stream(&server, "/sse/tasks/?token=amadmin-token").await;
    assert_eq!(status, 200);

    let payload = "p".repeat(64 * 1024);
    let mut sent = 0;
    while server.app.metrics().slow_consumer_closes() == 0 {
        assert!(sent < 5_000, "slow consumer never detected");
        let msg = Message::with_type("user.message").with("message", payload.as_str());
        within(server.layer.group_send("user_amadmin", msg))
            .await
            .unwrap();
        sent += 1;
        tokio::task::yield_now().await;
    }
    // The stream cannot take its close event (its pipe is full): after close_timeout the
    // connection is cut, not ended as a complete response.
    let mut sink = vec![0; 1 << 20];
    let cut = within(async {
        loop {
            match slow.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    cut.await;
    sse_streams_reach(&server, 0).await;
    assert_eq!(server.app.metrics().connections_current(), 0);
}

#[tokio::test]
async fn caps_count_event_streams_and_websockets_together() {
    let config = ServerConfig::default().with_max_connections_per_user(NonZeroUsize::new(1));
    let server = sse_server(config).await;
    let (status, stream) = open_stream(&server, "/sse/tasks/?token=amadmin-token").await;
    assert_eq!(status, 200);
    sse_streams_reach(&server, 1).await;

    let (status, _) = open_stream(&server, "/sse/tasks/?token=amadmin-token").await;
    assert_eq!(status, 429);
    let ws = tokio_tungstenite::connect_async(server.url("/ws/tasks/?token=amadmin-token")).await;
    match ws {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS),
        other => panic!("expected 429, got {other:?}"),
    }
    // Another user is not capped by amadmin's stream.
    let (status, _bob) = open_stream(&server, "/sse/tasks/?token=bob-token").await;
    assert_eq!(status, 200);

    drop(stream);
    // The permit goes with the stream: the same user may connect again.
    sse_streams_reach(&server, 1).await;
    let (status, _) = open_stream(&server, "/sse/tasks/?token=amadmin-token").await;
    assert_eq!(status, 200);
}

/// A dependency the test turns off (true) and on.
#[derive(Debug, Clone, Default)]
struct Switch(Arc<AtomicBool>);

#[async_trait::async_trait]
impl HealthCheck for Switch {
    fn name(&self) -> &str {
        "switch"
    }

    async fn check(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.0.load(Ordering::SeqCst) {
            Err("switched off".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn while_a_dependency_is_down_a_stream_is_told_to_retry_later() {
    let down = Switch::default();
    let builder = tasks_builder(ServerConfig::default())
        .sse_route("/sse/tasks/", "/ws/tasks/")
        .health_check(down.clone());
    let server = TestServer::start(builder, memory_layer()).await;
    down.0.store(true, Ordering::SeqCst);
    // EventSource gives up on an error status; a stream that ends makes it retry: the
    // WebSocket route's 1013.
    let (status, body) = common::http_get(server.addr, "/sse/tasks/?token=amadmin-token").await;
    assert_eq!((status, body.as_str()), (200, "retry: 3000\n\n"));
    assert_eq!(server.app.metrics().sse_connections_total(), 0);

    down.0.store(false, Ordering::SeqCst);
    let app = &server.app;
    eventually(Duration::from_secs(10), "ready again", || async move {
        app.readiness().is_ready()
    })
    .await;
    let (status, _stream) = open_stream(&server, "/sse/tasks/?token=amadmin-token").await;
    assert_eq!(status, 200);
    sse_streams_reach(&server, 1).await;
}

#[tokio::test]
async fn an_event_stream_route_needs_its_websocket_route() {
    let err = tasks_builder(ServerConfig::default())
        .layer(memory_layer())
        .sse_route("/sse/tasks/", "/ws/other/")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = tasks_builder(ServerConfig::default())
        .layer(memory_layer())
        .sse_route("/ws/tasks/", "/ws/tasks/")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}
