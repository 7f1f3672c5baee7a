//! Graceful shutdown: clients see 1001, `disconnect` runs, groups are discarded, `serve` returns.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use herald_server::{Consumer, Context, Result, ServerConfig};
use herald_test_support::eventually;
use herald_test_support::ws::{close_code, recv_text, send_text, ws_connect};

#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Option<u16>>>>);

#[derive(Debug)]
struct Recording(Recorder);

#[async_trait]
impl Consumer for Recording {
    async fn connect(&mut self, ctx: &mut Context) -> Result<()> {
        ctx.group_add("recorders").await?;
        ctx.accept()
    }

    async fn disconnect(&mut self, _ctx: &mut Context, code: Option<u16>) -> Result<()> {
        self.0.0.lock().unwrap().push(code);
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_runs_disconnect_and_discards_groups() {
    let recorder = Recorder::default();
    let for_factory = recorder.clone();
    let builder = tasks_builder(ServerConfig::default())
        .route("/ws/rec/", move || Recording(for_factory.clone()));
    let server = TestServer::start(builder, memory_layer()).await;
    let layer = server.layer.clone();
    let app = server.app.clone();

    let mut tasks = ws_connect(&server.url("/ws/tasks/?token=amadmin-token")).await;
    send_text(&mut tasks, r#"{"action": "subscribe", "task_id": "t9"}"#).await;
    recv_text(&mut tasks).await;
    let mut rec_a = ws_connect(&server.url("/ws/rec/")).await;
    let mut rec_b = ws_connect(&server.url("/ws/rec/")).await;
    // Group multiplexing: one layer member stands for both local sockets.
    assert_eq!(group_members(&layer, "recorders").await, 1);
    assert_eq!(app.metrics().connections_current(), 3);

    let addr = server.addr;
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(close_code(&mut tasks).await, Some(1001));
    assert_eq!(close_code(&mut rec_a).await, Some(1001));
    assert_eq!(close_code(&mut rec_b).await, Some(1001));
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(*recorder.0.lock().unwrap(), vec![Some(1001), Some(1001)]);
    assert_eq!(group_members(&layer, "recorders").await, 0);
    assert_eq!(group_members(&layer, "user_amadmin").await, 0);
    assert_eq!(group_members(&layer, "task_t9").await, 0);
    assert_eq!(app.metrics().connections_current(), 0);
    // The listener is closed: new connections are refused.
    assert!(within(tokio::net::TcpStream::connect(addr)).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_client_never_answers_the_close() {
    // A client that never reads cannot complete the close handshake; close_timeout bounds it.
    let config = ServerConfig::default()
        .with_close_timeout(Duration::from_millis(200))
        .with_shutdown_timeout(Duration::from_secs(5));
    let server = TestServer::tasks(config).await;
    let _silent = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    let app = server.app.clone();
    eventually(STEP, "n == 1", || {
        let n = app.metrics().connections_current();
        async move { n == 1 }
    })
    .await;
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.metrics().connections_current(), 0);
}
