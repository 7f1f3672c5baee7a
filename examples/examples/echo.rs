//! Run with: cargo run -p examples --example echo
//!
//! The smallest Herald consumer: every text or binary frame is sent straight back. The example
//! serves `ws://127.0.0.1:8765/ws/echo/`, talks to itself once to show it works, then keeps
//! serving until Ctrl-C (try `websocat ws://127.0.0.1:8765/ws/echo/`).
//! Set `ECHO_ADDR` to listen elsewhere (port 0 picks a free port).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use herald_core::InMemoryLayer;
use herald_server::{App, Consumer, Context, Frame, Result, ServerConfig};
use tokio_tungstenite::tungstenite::Message;

/// Channels equivalent:
/// ```python
/// class Echo(AsyncWebsocketConsumer):
///     async def receive(self, text_data=None, bytes_data=None):
///         await self.send(text_data=text_data, bytes_data=bytes_data)
/// ```
#[derive(Debug, Default)]
struct Echo;

#[async_trait]
impl Consumer for Echo {
    // `connect` defaults to accepting, like AsyncWebsocketConsumer.

    async fn receive(&mut self, ctx: &mut Context, frame: Frame) -> Result<()> {
        match frame {
            Frame::Text(text) => ctx.send_text(text),
            Frame::Binary(bytes) => ctx.send_binary(bytes),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let app = App::builder()
        .layer(Arc::new(InMemoryLayer::new(Default::default())?))
        .config(ServerConfig::default())
        .route("/ws/echo/", Echo::default)
        .build()?;

    let addr = std::env::var("ECHO_ADDR").unwrap_or_else(|_| "127.0.0.1:8765".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let url = format!("ws://{}/ws/echo/", listener.local_addr()?);
    let server = tokio::spawn(herald_server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    }));

    // Talk to ourselves once.
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(&url),
    )
    .await??;
    ws.send(Message::text("hello, herald")).await?;
    if let Some(reply) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await? {
        println!("sent \"hello, herald\", got back {:?}", reply?.to_text()?);
    }
    ws.close(None).await?;

    println!("echo server on {url} — Ctrl-C to stop");
    server.await??;
    Ok(())
}
