//! Run with: cargo run -p examples --example chat
//!
//! A custom route with its own consumer and layer message types — the Channels tutorial's
//! chat room, written the way a Channels user writes `ChatConsumer`:
//!
//! ```python
//! class ChatConsumer(AsyncWebsocketConsumer):
//!     async def connect(self):
//!         self.group = f"chat_{self.scope['url_route']['kwargs']['room']}"
//!         await self.channel_layer.group_add(self.group, self.channel_name)
//!         await self.accept()
//!     async def receive(self, text_data):
//!         await self.channel_layer.group_send(self.group, {"type": "chat.message", ...})
//!     async def chat_message(self, event):
//!         await self.send(text_data=json.dumps({"type": "message", ...}))
//! ```
//!
//! Serves `ws://127.0.0.1:8766/ws/chat/?room=lobby&user=alice`, runs a short two-user demo,
//! then keeps serving until Ctrl-C. Set `CHAT_ADDR` to listen elsewhere.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use herald_core::Message;
use herald_core::names::is_valid_group_name;
use herald_server::{
    App, AuthError, Authenticator, Consumer, Context, Frame, Handled, HandshakeRequest, Identity,
    Result, ServerConfig,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Development-only authentication: whoever says `?user=<name>` is that user. A real
/// deployment plugs in the Django session authenticator instead.
#[derive(Debug)]
struct QueryUser;

#[async_trait]
impl Authenticator for QueryUser {
    async fn authenticate(
        &self,
        req: &HandshakeRequest,
    ) -> std::result::Result<Option<Identity>, AuthError> {
        Ok(req
            .query_param("user")
            .filter(|u| !u.is_empty())
            .map(|u| Identity::new(u.clone(), u)))
    }
}

/// One per socket: remembers its room group and user name.
#[derive(Debug, Default)]
struct ChatConsumer {
    group: String,
    user: String,
}

#[async_trait]
impl Consumer for ChatConsumer {
    async fn connect(&mut self, ctx: &mut Context) -> Result<()> {
        let Some(user) = ctx.identity().map(|i| i.username.clone()) else {
            ctx.close(None); // anonymous: HTTP 403
            return Ok(());
        };
        let room = ctx
            .request()
            .query_param("room")
            .unwrap_or_else(|| "lobby".to_owned());
        let group = format!("chat_{room}");
        if !is_valid_group_name(&group) {
            ctx.close(None);
            return Ok(());
        }
        ctx.group_add(&group).await?;
        ctx.accept()?;
        ctx.group_send(
            &group,
            Message::with_type("chat.join").with("user", user.as_str()),
        )
        .await?;
        self.group = group;
        self.user = user;
        Ok(())
    }

    async fn receive(&mut self, ctx: &mut Context, frame: Frame) -> Result<()> {
        let text = frame.as_text().unwrap_or_default();
        let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let Some(message) = parsed
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(|m| m.as_str())
        else {
            return ctx
                .send_json(&json!({"type": "error", "message": "send {\"message\": \"...\"}"}));
        };
        let event = Message::with_type("chat.message")
            .with("user", self.user.as_str())
            .with("message", message);
        ctx.group_send(&self.group, event).await?;
        Ok(())
    }

    /// One arm per layer message type, like one `async def chat_message(self, event)` each.
    async fn handle(
        &mut self,
        ctx: &mut Context,
        handler: &str,
        event: Message,
    ) -> Result<Handled> {
        let user = event.get("user").and_then(|v| v.as_str()).unwrap_or("?");
        match handler {
            "chat_message" => {
                let message = event.get("message").and_then(|v| v.as_str()).unwrap_or("");
                ctx.send_json(&json!({"type": "message", "user": user, "message": message}))?;
            }
            "chat_join" => ctx.send_json(&json!({"type": "joined", "user": user}))?,
            "chat_leave" => ctx.send_json(&json!({"type": "left", "user": user}))?,
            _ => return Ok(Handled::No),
        }
        Ok(Handled::Yes)
    }

    async fn disconnect(&mut self, ctx: &mut Context, _code: Option<u16>) -> Result<()> {
        // The runtime discards the group right after this returns.
        if !self.group.is_empty() {
            ctx.group_send(
                &self.group,
                Message::with_type("chat.leave").with("user", self.user.as_str()),
            )
            .await?;
        }
        Ok(())
    }
}

async fn next_text<S>(ws: &mut S) -> anyhow::Result<String>
where
    S: futures_util::Stream<
            Item = std::result::Result<WsMessage, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
        if let WsMessage::Text(text) = frame {
            return Ok(text.as_str().to_owned());
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let app = App::builder()
        .layer(Arc::new(herald_core::InMemoryLayer::new(
            Default::default(),
        )?))
        .authenticator(QueryUser)
        .config(ServerConfig::default())
        .route("/ws/chat/", ChatConsumer::default)
        .build()?;

    let addr = std::env::var("CHAT_ADDR").unwrap_or_else(|_| "127.0.0.1:8766".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let base = format!("ws://{}/ws/chat/", listener.local_addr()?);
    let server = tokio::spawn(herald_server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    }));

    // Demo: alice joins, bob joins, alice says hello.
    let connect = |user: &str| {
        let url = format!("{base}?room=lobby&user={user}");
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                tokio_tungstenite::connect_async(url),
            )
            .await
        }
    };
    let (mut alice, _) = connect("alice").await??;
    println!("alice sees {}", next_text(&mut alice).await?);
    let (mut bob, _) = connect("bob").await??;
    println!("bob   sees {}", next_text(&mut bob).await?);
    println!("alice sees {}", next_text(&mut alice).await?);
    alice
        .send(WsMessage::text(r#"{"message": "hello, bob"}"#))
        .await?;
    println!("alice sees {}", next_text(&mut alice).await?);
    println!("bob   sees {}", next_text(&mut bob).await?);
    alice.close(None).await?;
    println!("bob   sees {}", next_text(&mut bob).await?);
    bob.close(None).await?;

    println!("chat server on {base}?room=<room>&user=<name> — Ctrl-C to stop");
    server.await??;
    Ok(())
}
