//! Run with: cargo run -p examples --example broadcast
//!
//! The user guide end to end, in one process: the `/ws/tasks/` server, three browser-like
//! clients, and the Rust counterparts of `ws_send_message`, `ws_send_notification`,
//! `ws_send_file`, `ws_broadcast_message` and a Celery task's `task.update`/`task.complete`.
//! Prints every frame each client receives, then keeps serving until Ctrl-C
//! (tokens: `amadmin-token`, `user1-token`, `user2-token`). Set `BROADCAST_ADDR` to listen
//! elsewhere.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_core::{ChannelLayer, InMemoryLayer, Message};
use herald_messaging::{FileNotice, Messenger, NotificationType};
use herald_server::{App, Identity, ServerConfig, StaticTokenAuthenticator, TasksConsumer};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Client) -> anyhow::Result<String> {
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

    let layer: Arc<dyn ChannelLayer> = Arc::new(InMemoryLayer::new(Default::default())?);
    let users = ["amadmin", "user1", "user2"];
    let mut auth = StaticTokenAuthenticator::new();
    for (id, user) in users.iter().enumerate() {
        auth = auth.with_token(
            format!("{user}-token"),
            Identity::new(*user, id.to_string()),
        );
    }
    let app = App::builder()
        .layer(Arc::clone(&layer))
        .authenticator(auth)
        .config(ServerConfig::default())
        .route("/ws/tasks/", TasksConsumer::default)
        .build()?;

    let addr = std::env::var("BROADCAST_ADDR").unwrap_or_else(|_| "127.0.0.1:8767".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let base = format!("ws://{}/ws/tasks/", listener.local_addr()?);
    let server = tokio::spawn(herald_server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    }));

    // The browsers: each opens /ws/tasks/ with its token; amadmin also watches a task.
    let mut clients = Vec::new();
    for user in users {
        let url = format!("{base}?token={user}-token");
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await??;
        clients.push((user, ws));
    }
    let (_, admin) = &mut clients[0];
    admin
        .send(WsMessage::text(
            r#"{"action": "subscribe", "task_id": "report-42"}"#,
        ))
        .await?;
    println!("amadmin sees {}", next_text(admin).await?);

    // The Django side, from Rust.
    let messenger = Messenger::new(Arc::clone(&layer));
    messenger
        .send_message("amadmin", "Your report is ready!", None)
        .await?;
    messenger
        .send_notification(
            "amadmin",
            "Report generated successfully!",
            NotificationType::Success,
            Some("Report Ready"),
            None,
        )
        .await?;
    messenger
        .send_file(
            "amadmin",
            FileNotice::new("/media/reports/sales_2025.xlsx").with_file_size(156_789),
        )
        .await?;
    let reached = messenger
        .broadcast_message("System maintenance in 10 minutes", &users, None)
        .await;
    println!("broadcast reached {reached} users");
    for (progress, kind) in [(50, "task.update"), (100, "task.complete")] {
        let event = Message::with_type(kind)
            .with("task_id", "report-42")
            .with(
                "status",
                if progress == 100 {
                    "completed"
                } else {
                    "processing"
                },
            )
            .with("progress", progress);
        layer.group_send("task_report-42", event).await?;
    }

    // amadmin: message, notification, file, broadcast, two task events. Others: the broadcast.
    for _ in 0..6 {
        let (_, admin) = &mut clients[0];
        println!("amadmin sees {}", next_text(admin).await?);
    }
    for (user, ws) in clients.iter_mut().skip(1) {
        println!("{user:<7} sees {}", next_text(ws).await?);
    }
    for (_, mut ws) in clients {
        ws.close(None).await?;
    }

    println!("guide server on {base}?token=<user>-token — Ctrl-C to stop");
    server.await??;
    Ok(())
}
