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
//! Over Server-Sent Events ([`AppBuilder::sse_route`](crate::AppBuilder::sse_route),
//! `/sse/tasks/`) the same consumer runs with the client frames taken from the URL: one
//! `subscribe` per `?task=ID`, or with `?recover=1` one `resume` whose `groups` are the
//! `Last-Event-ID` header (or `?last_event_id=`) plus `task_<id>` for each `?task=ID`; each event's
//! `id:` is then the positions of every group, as a `resume` names them.
//!
//! Access: anonymous handshakes are refused with HTTP 403 (close before accept). On connect the
//! socket joins `user_{username}`; it joins `task_{id}` only when it subscribes. A client never
//! names a `user_*` group itself, so it can only receive its own user group and the tasks it
//! subscribed to. Every membership is discarded on disconnect.

use async_trait::async_trait;
use herald_core::names::is_valid_group_name;
use herald_core::pyjson::{self, Loaded, LoadsError};
use herald_core::{Message, Offset, Position, Value};
use herald_messaging::{ACK_TYPE, PROBE_TYPE, task_group, user_group};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::warn;

use crate::consumer::{Consumer, Frame, Handled, handler_name};
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
    /// Set at connect when the client asked for positions (`?recover=1`).
    recovery: Option<Recovery>,
}

/// The query parameter (`/ws/tasks/?recover=1`) by which a client asks for positions and
/// resume (see the module docs).
pub const RECOVER_PARAM: &str = "recover";

/// A socket whose client asked for positions: what it has been sent per recorded group.
#[derive(Debug)]
struct Recovery {
    user_group: String,
    /// The user group is joined at the client's first `resume`, so that its replay and the
    /// live messages meet without a gap.
    joined_user: bool,
    /// The last position sent per recorded group: a live message at or before it (it was
    /// replayed already) is not sent again.
    sent: HashMap<String, Position>,
}

impl Recovery {
    /// True if `position` of `group` was sent already (same epoch, not after the last sent).
    fn seen(&self, group: &str, position: &Position) -> bool {
        self.sent
            .get(group)
            .is_some_and(|last| last.epoch == position.epoch && position.offset <= last.offset)
    }

    fn mark(&mut self, group: &str, position: &Position) {
        if !self.seen(group, position) {
            self.sent.insert(group.to_owned(), position.clone());
        }
    }
}

/// A position as a client sends it back: `{"epoch": "…", "offset": "<ms>-<seq>"}`.
fn parse_position(value: &Loaded) -> Option<Position> {
    let epoch = value.get("epoch")?.as_str()?;
    let offset: Offset = value.get("offset")?.as_str()?.parse().ok()?;
    Some(Position {
        epoch: Arc::from(epoch),
        offset,
    })
}

/// Replays what `groups` missed (each with the client's position, if any), merged into the
/// order they were recorded in, then tells the client per group whether that covered the gap
/// (`herald.resumed`). Without a position a task group sends its latest message (a page that
/// subscribes after the task ended still learns its result) and the user group nothing (the
/// page has just loaded its state).
async fn replay(
    ctx: &mut Context,
    recovery: &mut Recovery,
    groups: Vec<(String, Option<Position>)>,
) -> Result<()> {
    let mut outcomes = Vec::with_capacity(groups.len());
    let mut messages = Vec::new();
    // All groups read at one moment (see `ChannelLayer::replay_many`).
    let targets: Vec<(&str, Option<&Position>)> = groups
        .iter()
        .map(|(g, s)| (g.as_str(), s.as_ref()))
        .collect();
    let replays = match ctx.layer().replay_many(&targets).await {
        Ok(replays) => replays,
        Err(err) => {
            warn!(error = %err, "cannot replay recorded groups");
            vec![None; groups.len()]
        }
    };
    for ((group, since), replay) in groups.into_iter().zip(replays) {
        let is_user = group == recovery.user_group;
        let Some(replay) = replay else {
            outcomes.push((group, false, None));
            continue;
        };
        let latest = replay.messages.last().map(|r| r.position.clone());
        let recovered = replay.recovered;
        let mut replayed = replay.messages;
        if !recovered {
            // The gap cannot be filled: the page refetches its state, so a part of the gap
            // would only show stale messages. A task still shows its latest state.
            let keep = if is_user { 0 } else { 1 };
            replayed.drain(..replayed.len().saturating_sub(keep));
        }
        if since.is_some() || !is_user {
            messages.extend(replayed);
        } else if let Some(latest) = &latest {
            // The page has just loaded its state: what came before counts as seen.
            recovery.mark(&group, latest);
        }
        // The position to keep: the newest recorded one, else the client's own if it still
        // holds, else the moment of the read (nothing recorded yet, or a gap that is lost).
        let at = latest
            .or(since.filter(|_| recovered))
            .unwrap_or_else(|| Position {
                epoch: Arc::clone(&replay.epoch),
                offset: replay.start,
            });
        outcomes.push((group, recovered, Some(at)));
    }
    // Offsets come from one log per shard: sorting by them restores the send order across
    // groups.
    messages.sort_by_key(|r| r.position.offset);
    for recorded in messages {
        let handler = recorded.message.msg_type().and_then(handler_name);
        if recovery.seen(&recorded.group, &recorded.position)
            || !handler.is_some_and(|h| FORWARDED_HANDLERS.contains(&h.as_str()))
        {
            continue;
        }
        recovery.mark(&recorded.group, &recorded.position);
        ctx.forward_recorded(recorded)?;
    }
    for (group, recovered, at) in outcomes {
        let (epoch, offset) = match at {
            Some(at) => (json!(&*at.epoch), json!(at.offset.to_string())),
            None => (serde_json::Value::Null, serde_json::Value::Null),
        };
        ctx.send_json(&json!({
            "type": RESUMED_TYPE,
            "group": group,
            "recovered": recovered,
            "epoch": epoch,
            "offset": offset,
        }))?;
    }
    Ok(())
}

/// The reply to `resume` (and to `subscribe` with positions), once per group.
pub const RESUMED_TYPE: &str = "herald.resumed";

/// The groups of a `resume` frame that this socket may resume: its user group and task
/// groups, each with the client's position (`null`/missing/malformed: none).
fn resume_targets(
    frame: &Loaded,
    user_group: &str,
) -> std::result::Result<Vec<(String, Option<Position>)>, String> {
    let mut targets = vec![(user_group.to_owned(), None)];
    match frame.get("groups") {
        None | Some(Loaded::Null) => {}
        Some(Loaded::Object(entries)) => {
            for (group, position) in entries {
                let allowed = group == user_group
                    || (group.starts_with("task_") && is_valid_group_name(group));
                if !allowed {
                    return Err(format!("cannot resume group {group:?}"));
                }
                let position = parse_position(position);
                match targets.iter_mut().find(|(g, _)| g == group) {
                    Some(target) => target.1 = position,
                    None => targets.push((group.clone(), position)),
                }
            }
        }
        Some(_) => return Err("groups must be an object".to_owned()),
    }
    Ok(targets)
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
        let group = user_group(&username);
        if ctx.request().query_param(RECOVER_PARAM).as_deref() == Some("1") {
            if !is_valid_group_name(&group) {
                return Err(herald_core::Error::new(
                    herald_core::ErrorKind::InvalidName,
                    format!("invalid group name {group:?}"),
                )
                .into());
            }
            // The user group is joined at the client's `resume`.
            self.recovery = Some(Recovery {
                user_group: group,
                joined_user: false,
                sent: HashMap::new(),
            });
            return ctx.accept();
        }
        // A username that makes an invalid group name fails here, as group_add raises in
        // Python (HTTP 500 before accept).
        ctx.group_add(&group).await?;
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
                    ctx.send_text(task_reply("subscribed", task_id))?;
                    if let Some(recovery) = &mut self.recovery {
                        let since = value.get("since").and_then(parse_position);
                        replay(ctx, recovery, vec![(group, since)]).await?;
                    }
                    Ok(())
                }
                Err(msg) => send_error(ctx, msg),
            },
            Some("unsubscribe") => match task_target(&value) {
                Ok((task_id, group)) => {
                    ctx.group_discard(&group).await?;
                    if let Some(recovery) = &mut self.recovery {
                        recovery.sent.remove(&group);
                    }
                    ctx.send_text(task_reply("unsubscribed", task_id))
                }
                Err(msg) => send_error(ctx, msg),
            },
            Some("resume") => {
                let Some(recovery) = &mut self.recovery else {
                    return send_error(ctx, "resume needs /ws/tasks/?recover=1");
                };
                let targets = match resume_targets(&value, &recovery.user_group) {
                    Ok(targets) => targets,
                    Err(msg) => return send_error(ctx, &msg),
                };
                // Joined before the replay reads: what arrives from now on comes live, and
                // everything before is in the history the replay reads (the server records a
                // message before it delivers it). Live messages the replay also returned are
                // dropped in `handle`.
                for (group, _) in &targets {
                    if *group != recovery.user_group || !recovery.joined_user {
                        ctx.group_add(group).await?;
                    }
                }
                recovery.joined_user = true;
                replay(ctx, recovery, targets).await
            }
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
            match (&mut self.recovery, ctx.recorded_position()) {
                (Some(recovery), Some((group, position))) => {
                    if !recovery.seen(group, position) {
                        let (group, position) = (group.to_owned(), position.clone());
                        ctx.forward_json_with_position(&message)?;
                        recovery.mark(&group, &position);
                    }
                }
                _ => ctx.forward_json(&message)?,
            }
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
