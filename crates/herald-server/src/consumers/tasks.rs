//! The `/ws/tasks/` consumer of the user guide: per-user notifications plus task progress.
//!
//! Protocol (client → server, JSON text frames):
//!
//! | frame                                         | reply                                        |
//! |-----------------------------------------------|----------------------------------------------|
//! | `{"action": "subscribe", "task_id": <id>}`    | `{"type": "subscribed", "task_id": <id>}`    |
//! | `{"action": "unsubscribe", "task_id": <id>}`  | `{"type": "unsubscribed", "task_id": <id>}`  |
//! | `{"action": "ping"}`                          | `{"type": "pong"}`                           |
//! | anything else (bad JSON, not an object, unknown action, an `<id>` that is not a string or number or makes an invalid group name) | `{"type": "error", "message": "..."}`; the socket stays open |
//!
//! Frames are read as Python's `json.loads` reads them ([`herald_core::pyjson::loads`]): `NaN`,
//! `Infinity`, `1e400`, big integers and escaped lone surrogates are accepted, up to
//! [`MAX_DEPTH`](herald_core::pyjson::MAX_DEPTH) levels of nesting (deeper: the error frame
//! `JSON nested too deeply`; a Python consumer under Daphne already dies with `RecursionError`
//! a little before that bound and the socket is dropped). `<id>` is a string or a number
//! (not `true`/`null`); the group is `task_{id}` as a Python f-string writes it (`42` →
//! `task_42`, `1E2` → `task_100.0`, `NaN` → `task_nan`) and the reply echoes the id as
//! `json.dumps` writes the parsed value (`1E2` → `100.0`, `NaN` → `NaN`). A repeated key counts
//! with its last value, as in a Python `dict`.
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
use herald_core::names::is_valid_group_name;
use herald_core::pyjson::{self, Loaded, LoadsError};
use herald_core::{Message, Value};
use herald_messaging::{ACK_TYPE, PROBE_TYPE, task_group, user_group};
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

/// The `task_id` of a (un)subscribe frame, as parsed (echoed in the reply), and its group, or
/// the error text to send back.
fn task_target(frame: &Loaded) -> Result<(Loaded, String), &'static str> {
    let Some(task_id) = frame.get("task_id") else {
        return Err("task_id must be a string or a number");
    };
    // Python's `f"task_{task_id}"`: `str()` of the parsed value.
    let text = match task_id {
        Loaded::Str(s) => s.clone(),
        Loaded::Int(digits) => digits.clone(),
        Loaded::Float(f) => pyjson::float_str(*f),
        _ => return Err("task_id must be a string or a number"),
    };
    let group = task_group(&text);
    if text.is_empty() || !is_valid_group_name(&group) {
        return Err("invalid task_id");
    }
    Ok((task_id.clone(), group))
}

/// `{"type": kind, "task_id": task_id}` as `json.dumps` writes it.
fn task_reply(kind: &str, task_id: Loaded) -> String {
    pyjson::dumps(&Loaded::Object(vec![
        ("type".to_owned(), Loaded::Str(kind.to_owned())),
        ("task_id".to_owned(), task_id),
    ]))
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
        let value = match pyjson::loads(text) {
            Ok(value) => value,
            Err(LoadsError::TooDeep) => return send_error(ctx, "JSON nested too deeply"),
            Err(_) => return send_error(ctx, "invalid JSON"),
        };
        if !matches!(value, Loaded::Object(_)) {
            return send_error(ctx, "expected a JSON object");
        }
        match value.get("action").and_then(Loaded::as_str) {
            Some("subscribe") => match task_target(&value) {
                Ok((task_id, group)) => {
                    ctx.group_add(&group).await?;
                    ctx.send_text(task_reply("subscribed", task_id))
                }
                Err(msg) => send_error(ctx, msg),
            },
            Some("unsubscribe") => match task_target(&value) {
                Ok((task_id, group)) => {
                    ctx.group_discard(&group).await?;
                    ctx.send_text(task_reply("unsubscribed", task_id))
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
