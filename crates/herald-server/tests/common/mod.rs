//! Shared test harness: an in-process server on `127.0.0.1:0` with a guard that owns the
//! shutdown sender, plus small WebSocket/HTTP client helpers. Every await is bounded.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_core::{ChannelLayer, InMemoryLayer};
use herald_server::{
    App, AppBuilder, Identity, ServerConfig, StaticTokenAuthenticator, TasksConsumer,
};
use herald_test_support::ws::{Ws, recv_text, send_text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on every single await in tests.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut).await.unwrap()
}

/// A running server; dropping it triggers shutdown.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: App,
    pub layer: Arc<dyn ChannelLayer>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<herald_server::Result<()>>>,
}

impl TestServer {
    pub async fn start(builder: AppBuilder, layer: Arc<dyn ChannelLayer>) -> TestServer {
        let app = builder.layer(Arc::clone(&layer)).build().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(herald_server::serve(listener, app.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            app,
            layer,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// The guide's setup: `/ws/tasks/`, tokens `amadmin-token` → amadmin, `bob-token` → bob.
    pub async fn tasks(config: ServerConfig) -> TestServer {
        TestServer::start(tasks_builder(config), memory_layer()).await
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr)
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn memory_layer() -> Arc<dyn ChannelLayer> {
    Arc::new(InMemoryLayer::new(Default::default()).unwrap())
}

pub fn tokens() -> StaticTokenAuthenticator {
    StaticTokenAuthenticator::new()
        .with_token("amadmin-token", Identity::new("amadmin", "1"))
        .with_token("bob-token", Identity::new("bob", "2"))
}

pub fn tasks_builder(config: ServerConfig) -> AppBuilder {
    App::builder()
        .authenticator(tokens())
        .config(config)
        .route("/ws/tasks/", TasksConsumer::default)
}

/// Sends `{"action":"ping"}` and waits for the pong: everything the server queued before is
/// now read, so "nothing else arrived" can be asserted without sleeping.
pub async fn sync(ws: &mut Ws) {
    send_text(ws, r#"{"action": "ping"}"#).await;
    assert_eq!(recv_text(ws).await, r#"{"type": "pong"}"#);
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    within(stream.write_all(req.as_bytes())).await.unwrap();
    let mut buf = Vec::new();
    within(stream.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Members a `group_send` reached (sends a probe message with an unhandled type).
pub async fn group_members(layer: &Arc<dyn ChannelLayer>, group: &str) -> usize {
    within(layer.group_send(group, herald_core::Message::with_type("probe.unhandled")))
        .await
        .unwrap()
        .members
}
