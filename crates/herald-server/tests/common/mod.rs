//! Shared test harness: an in-process server on `127.0.0.1:0` with a guard that owns the
//! shutdown sender, plus small WebSocket/HTTP client helpers. Every await is bounded.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_core::{ChannelLayer, InMemoryLayer};
use herald_server::tungstenite::Message as WsMessage;
use herald_server::{
    App, AppBuilder, Identity, ServerConfig, StaticTokenAuthenticator, TasksConsumer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

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

pub async fn connect(url: &str) -> Ws {
    let (ws, resp) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// The HTTP status a refused handshake got.
pub async fn refused_status(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> u16 {
    match within(tokio_tungstenite::connect_async(request)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, but the handshake succeeded"),
    }
}

/// Next data or close frame (pings/pongs skipped).
pub async fn next_frame(ws: &mut Ws) -> WsMessage {
    loop {
        let msg = within(ws.next()).await.unwrap().unwrap();
        if !matches!(msg, WsMessage::Ping(_) | WsMessage::Pong(_)) {
            return msg;
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        WsMessage::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    within(ws.send(WsMessage::text(text))).await.unwrap();
}

/// The close code the server sent (reads until a close frame or the end of the stream).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match within(ws.next()).await {
            Some(Ok(WsMessage::Close(frame))) => {
                // Keep polling so tungstenite sends our close reply and sees the TCP close,
                // completing the handshake instead of leaving the server to time out.
                while let Some(Ok(_)) = within(ws.next()).await {}
                return frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends `{"action":"ping"}` and waits for the pong: everything the server queued before is
/// now read, so "nothing else arrived" can be asserted without sleeping.
pub async fn sync(ws: &mut Ws) {
    send_text(ws, r#"{"action": "ping"}"#).await;
    assert_eq!(next_text(ws).await, r#"{"type": "pong"}"#);
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
