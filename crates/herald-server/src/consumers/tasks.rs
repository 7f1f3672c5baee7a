//! The `/ws/tasks/` consumer of the user guide: per-user notifications plus task progress.
//!
//! Protocol (client → server, JSON text frames):
//!
//! | frame                                         | reply                                        |
//! |-----------------------------------------------|----------------------------------------------|
//! | `{"action": "subscribe", "task_id": "<id>"}`  | `{"type": "subscribed", "task_id": "<id>"}`  |
//! | `{"action": "unsubscribe", "task_id": "<id>"}`| `{"type": "unsubscribed", "task_id": "<id>"}`|
//! | `{"action": "ping"}`                          | `{"type": "pong"}`                           |
//! | anything else (bad JSON, unknown action, a `task_id` that makes an invalid group name) | `{"type": "error", "message": "..."}`; the socket stays open |
//!
//! A `herald.probe` layer message (see [`PROBE_TYPE`]) is answered with a `herald.ack` to its
//! `reply_to` channel and sends the browser nothing: `herald test-connection` counts the
//! sockets that handled its test notification this way, without adding anything to the
//! notification itself (a Daphne consumer of the same user gets the same bytes).
//!
//! Server → client: the layer messages `user.message`, `user.notification`, `user.file`,
//! `task.update`, `task.complete` and `task.error`, as JSON with `type` in handler form
//! (`"user_message"`) and every other field unchanged. All JSON is written exactly as Python's
//! `json.dumps` would.
//!
//! Access: anonymous handshakes are refused with HTTP 403 (close before accept). On connect the
//! socket joins `user_{username}`; it joins `task_{id}` only when it subscribes. A client never
//! names a `user_*` group itself, so it can only receive its own user group and the tasks it
//! subscribed to. Every membership is discarded on disconnect.

use async_trait::async_trait;
use herald_core::messaging::{ACK_TYPE, PROBE_TYPE, task_group, user_group};
use herald_core::names::is_valid_group_name;
use herald_core::{Message, Value};
use serde_json::json;

use crate::consumer::{Consumer, Frame, Handled};
use crate::context::Context;
use crate::error::Result;

/// The handler names forwarded to the browser (layer types with `.` → `_`).
pub const FORWARDED_HANDLERS: [&str; 6] = [
    "user_message",
    "user_notification",
    "user_file",
    "task_update",
    "task_complete",
    "task_error",
];

/// The handler of [`PROBE_TYPE`] messages.
const PROBE_HANDLER: &str = "herald_probe";

/// Answers a probe: `{"type": "herald.ack", "username", "channel"}` to `reply_to`.
async fn acknowledge(ctx: &Context, probe: &Message) {
    let Some(reply_to) = probe.get("reply_to").and_then(Value::as_str) else {
        tracing::debug!("probe without reply_to ignored");
        return;
    };
    let username = ctx
        .identity()
        .map(|i| i.username.clone())
        .unwrap_or_default();
    let ack = Message::with_type(ACK_TYPE)
        .with("username", username)
        .with("channel", ctx.channel_name());
    // Best effort: a probe whose sender stopped waiting must not hurt the socket.
    if let Err(err) = ctx.layer().send(reply_to, ack).await {
        tracing::debug!(error = %err, "delivery ack not sent");
    }
}

/// The guide's `/ws/tasks/` consumer. One per connection; use `TasksConsumer::default` as the
/// route factory.
#[derive(Debug, Default)]
pub struct TasksConsumer {
    _private: (),
}

fn send_error(ctx: &mut Context, message: &str) -> Result<()> {
    ctx.send_json(&json!({"type": "error", "message": message}))
}

/// The `task_id` of a (un)subscribe frame and its group, or the error text to send back.
fn task_target(
    frame: &serde_json::Map<String, serde_json::Value>,
) -> Result<(String, String), &'static str> {
    let Some(task_id) = frame.get("task_id").and_then(serde_json::Value::as_str) else {
        return Err("task_id must be a string");
    };
    let group = task_group(task_id);
    if task_id.is_empty() || !is_valid_group_name(&group) {
        return Err("invalid task_id");
    }
    Ok((task_id.to_owned(), group))
}

#[async_trait]
impl Consumer for TasksConsumer {
    async fn connect(&mut self, ctx: &mut Context) -> Result<()> {
        let Some(username) = ctx.identity().map(|i| i.username.clone()) else {
            // Channels: close before accept -> Daphne answers HTTP 403.
            ctx.close(None);
            return Ok(());
        };
        // A username that makes an invalid group name fails here, as group_add raises in
        // Python (HTTP 500 before accept).
        ctx.group_add(&user_group(&username)).await?;
        ctx.accept()
    }

    async fn receive(&mut self, ctx: &mut Context, frame: Frame) -> Result<()> {
        let Some(text) = frame.as_text() else {
            return send_error(ctx, "binary frames are not supported");
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return send_error(ctx, "invalid JSON");
        };
        let Some(object) = value.as_object() else {
            return send_error(ctx, "expected a JSON object");
        };
        match object.get("action").and_then(serde_json::Value::as_str) {
            Some("subscribe") => match task_target(object) {
                Ok((task_id, group)) => {
                    ctx.group_add(&group).await?;
                    ctx.send_json(&json!({"type": "subscribed", "task_id": task_id}))
                }
                Err(msg) => send_error(ctx, msg),
            },
            Some("unsubscribe") => match task_target(object) {
                Ok((task_id, group)) => {
                    ctx.group_discard(&group).await?;
                    ctx.send_json(&json!({"type": "unsubscribed", "task_id": task_id}))
                }
                Err(msg) => send_error(ctx, msg),
            },
            Some("ping") => ctx.send_json(&json!({"type": "pong"})),
            _ => send_error(ctx, "unknown action"),
        }
    }

    async fn handle(
        &mut self,
        ctx: &mut Context,
        handler: &str,
        message: Message,
    ) -> Result<Handled> {
        if FORWARDED_HANDLERS.contains(&handler) {
            ctx.forward_json(&message)?;
            Ok(Handled::Yes)
        } else if handler == PROBE_HANDLER && message.msg_type() == Some(PROBE_TYPE) {
            // Everything sent to this socket before the probe was handled before it.
            acknowledge(ctx, &message).await;
            Ok(Handled::Yes)
        } else {
            Ok(Handled::No)
        }
    }
}
