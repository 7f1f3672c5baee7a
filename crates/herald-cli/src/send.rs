//! `herald send | notify | file | broadcast | group-send`: the guide's helpers from the shell.

use anyhow::{Context, bail};
use clap::Args;
use herald_core::Message;
use herald_core::messaging::{FileNotice, Messenger, NotificationType};
use herald_core::value::Map;

use crate::layer;
use crate::settings::LayerOpts;

/// Options every sender shares.
#[derive(Args, Debug, Clone)]
pub(crate) struct SendCommon {
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    /// Extra data as a JSON object (the guide's `data=`).
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Print a JSON report instead of Python's `True`/count.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `herald send --user U MESSAGE`: `ws_send_message`.
#[derive(Args, Debug, Clone)]
pub(crate) struct SendArgs {
    /// Username to send to (group `user_{username}`).
    #[arg(long, short)]
    pub(crate) user: String,
    /// The message text.
    pub(crate) message: String,
    #[command(flatten)]
    pub(crate) common: SendCommon,
}

/// `herald notify --user U --type success [--title T] MESSAGE`: `ws_send_notification`.
#[derive(Args, Debug, Clone)]
pub(crate) struct NotifyArgs {
    /// Username to send to.
    #[arg(long, short)]
    pub(crate) user: String,
    /// success, error, info or warning.
    #[arg(long = "type", short = 't', default_value = "info")]
    pub(crate) notification_type: String,
    /// Optional title.
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// The notification text.
    pub(crate) message: String,
    #[command(flatten)]
    pub(crate) common: SendCommon,
}

/// `herald file --user U URL [--name N] [--size BYTES] [--message M]`: `ws_send_file`.
#[derive(Args, Debug, Clone)]
pub(crate) struct FileArgs {
    /// Username to send to.
    #[arg(long, short)]
    pub(crate) user: String,
    /// URL or path of the file.
    pub(crate) file_url: String,
    /// File name to show [default: the URL's last segment].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Size in bytes.
    #[arg(long)]
    pub(crate) size: Option<u64>,
    /// Message [default: "File ready for download"].
    #[arg(long)]
    pub(crate) message: Option<String>,
    #[command(flatten)]
    pub(crate) common: SendCommon,
}

/// `herald broadcast --user A --user B MESSAGE`: `ws_broadcast_message`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BroadcastArgs {
    /// Usernames (repeat, or comma-separate).
    #[arg(long = "user", short, value_delimiter = ',', required = true)]
    pub(crate) users: Vec<String>,
    /// The message text.
    pub(crate) message: String,
    #[command(flatten)]
    pub(crate) common: SendCommon,
}

/// `herald group-send GROUP JSON`: a raw `group_send` of any message with a `type`.
#[derive(Args, Debug, Clone)]
pub(crate) struct GroupSendArgs {
    /// The group, e.g. `task_42`.
    pub(crate) group: String,
    /// The message as a JSON object with a "type", e.g. '{"type": "task.update", "progress": 25}'.
    pub(crate) message: String,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    /// Print a JSON report instead of `True`.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses `--data`: it must be a JSON object.
pub(crate) fn parse_data(data: Option<&str>) -> anyhow::Result<Option<Map>> {
    let Some(text) = data else { return Ok(None) };
    let json: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("--data is not valid JSON: {text}"))?;
    match Message::from_json(&json) {
        Some(msg) => Ok(Some(msg.into_map())),
        None => bail!("--data must be a JSON object, got {text}"),
    }
}

fn parse_message(text: &str) -> anyhow::Result<Message> {
    let json: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("message is not valid JSON: {text}"))?;
    let msg = Message::from_json(&json).with_context(|| "message must be a JSON object")?;
    if msg.msg_type().is_none() {
        bail!("message must have a string \"type\" (e.g. \"task.update\"), got {text}");
    }
    Ok(msg)
}

fn report(json: bool, group: &str, r: herald_core::GroupSendReport) {
    if json {
        let out = serde_json::json!({
            "ok": true, "group": group, "members": r.members, "over_capacity": r.over_capacity,
        });
        println!("{out}");
    } else {
        // The Python helpers return True once the layer accepted the message.
        println!("True");
    }
}

async fn messenger(opts: &LayerOpts) -> anyhow::Result<Messenger> {
    Ok(Messenger::new(layer::build(opts, false)?.layer))
}

pub(crate) async fn send(args: SendArgs) -> anyhow::Result<()> {
    let data = parse_data(args.common.data.as_deref())?;
    let m = messenger(&args.common.layer).await?;
    let r = m.send_message(&args.user, &args.message, data).await?;
    report(
        args.common.json,
        &herald_core::messaging::user_group(&args.user),
        r,
    );
    Ok(())
}

pub(crate) async fn notify(args: NotifyArgs) -> anyhow::Result<()> {
    let kind: NotificationType = args.notification_type.parse()?;
    let data = parse_data(args.common.data.as_deref())?;
    let m = messenger(&args.common.layer).await?;
    let r = m
        .send_notification(&args.user, &args.message, kind, args.title.as_deref(), data)
        .await?;
    report(
        args.common.json,
        &herald_core::messaging::user_group(&args.user),
        r,
    );
    Ok(())
}

pub(crate) async fn file(args: FileArgs) -> anyhow::Result<()> {
    let mut notice = FileNotice::new(&args.file_url);
    if let Some(name) = &args.name {
        notice = notice.with_file_name(name);
    }
    if let Some(size) = args.size {
        notice = notice.with_file_size(size);
    }
    if let Some(message) = &args.message {
        notice = notice.with_message(message);
    }
    if let Some(data) = parse_data(args.common.data.as_deref())? {
        notice = notice.with_data(data);
    }
    let m = messenger(&args.common.layer).await?;
    let r = m.send_file(&args.user, notice).await?;
    report(
        args.common.json,
        &herald_core::messaging::user_group(&args.user),
        r,
    );
    Ok(())
}

pub(crate) async fn broadcast(args: BroadcastArgs) -> anyhow::Result<()> {
    let data = parse_data(args.common.data.as_deref())?;
    let m = messenger(&args.common.layer).await?;
    let sent = m.broadcast_message(&args.message, &args.users, data).await;
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({"sent": sent, "users": args.users.len()})
        );
    } else {
        println!("{sent}");
    }
    if sent < args.users.len() {
        bail!(
            "{} of {} sends failed",
            args.users.len() - sent,
            args.users.len()
        );
    }
    Ok(())
}

pub(crate) async fn group_send(args: GroupSendArgs) -> anyhow::Result<()> {
    let msg = parse_message(&args.message)?;
    let m = messenger(&args.layer).await?;
    let r = m.group_send(&args.group, msg).await?;
    report(args.json, &args.group, r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_must_be_a_json_object() {
        assert!(parse_data(None).unwrap().is_none());
        assert_eq!(
            parse_data(Some(r#"{"count": 100}"#))
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert!(parse_data(Some("[1]")).is_err());
        assert!(parse_data(Some("{nope")).is_err());
    }

    #[test]
    fn group_messages_need_a_type() {
        assert!(parse_message(r#"{"type": "task.update"}"#).is_ok());
        assert!(parse_message(r#"{"progress": 1}"#).is_err());
        assert!(parse_message("3").is_err());
    }
}
