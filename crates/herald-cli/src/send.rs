//! `herald send | notify | file | broadcast | group-send`: the guide's helpers from the shell.

use anyhow::{Context, bail};
use clap::Args;
use herald_core::Message;
use herald_core::value::Map;
use herald_messaging::{self as messaging, FileNotice, Messenger, NotificationType};

use crate::client::ApiOpts;
use crate::layer;
use crate::settings::{Backend, LayerOpts, TimeZone};

/// Options every sender shares.
#[derive(Args, Debug, Clone)]
pub(crate) struct SendCommon {
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Extra data as a JSON object (the guide's `data=`).
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Print a JSON report instead of the one-line summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Django's TIME_ZONE (an IANA name such as "Europe/Paris"): `timestamp` is local time there,
    /// as the guide's helpers stamp it [default: this machine's zone].
    #[arg(long = "time-zone", env = "HERALD_TIME_ZONE")]
    pub(crate) time_zone: Option<String>,
}

impl SendCommon {
    /// The checked time zone and `--data`, before anything is sent.
    fn prepare(&self) -> anyhow::Result<(Stamp, Option<Map>)> {
        let zone = TimeZone::from_setting(self.time_zone.as_deref())?;
        Ok((Stamp(zone), parse_data(self.data.as_deref())?))
    }
}

/// Stamps the guide's messages with `datetime.now().isoformat()` in Django's TIME_ZONE.
struct Stamp(Option<TimeZone>);

impl Stamp {
    /// The builders stamp the machine's local time; with a configured zone that `timestamp`
    /// is replaced (in place, so the field order stays the guide's).
    fn apply(&self, message: Message) -> Message {
        match &self.0 {
            Some(zone) => message.with("timestamp", zone.isoformat_now()),
            None => message,
        }
    }
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
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Print a JSON report instead of the one-line summary.
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

fn report(json: bool, groups: &[String], r: &Sent) {
    if json {
        let out = serde_json::json!({
            "ok": true, "groups": r.groups, "members": r.members, "over_capacity": r.over_capacity,
        });
        println!("{out}");
    } else {
        println!("{}", summary(groups, r));
    }
}

/// What a send did, in one line: the group(s) and how many channels were in them. A channel is
/// a socket's, or with group multiplexing one herald process's, so it is not a socket count.
fn summary(groups: &[String], r: &Sent) -> String {
    let target = match groups {
        [one] => format!("group {one}"),
        many => format!("{} groups", many.len()),
    };
    let channels = match r.members {
        0 => "no channel is listening (nobody connected?)".to_owned(),
        1 => "1 channel".to_owned(),
        n => format!("{n} channels"),
    };
    let full = match r.over_capacity {
        0 => String::new(),
        n => format!(", {n} full (skipped)"),
    };
    format!("sent to {target}: {channels}{full}")
}

/// What a send did, whichever way it went.
#[derive(Debug, Default)]
struct Sent {
    groups: usize,
    members: usize,
    over_capacity: usize,
}

/// Where messages go: straight into Redis, or through a herald's publish API when no Redis is
/// configured (e.g. next to `herald serve --demo`).
enum Route {
    Layer(Messenger),
    Api(ApiOpts),
}

fn route(layer_opts: &LayerOpts, api: &ApiOpts) -> anyhow::Result<Route> {
    if layer_opts.backend() == Backend::Memory {
        return Ok(Route::Api(api.clone()));
    }
    Ok(Route::Layer(Messenger::new(
        layer::build(layer_opts, false)?.layer,
    )))
}

impl Route {
    /// `group_send` of `message` to each group (already validated names).
    async fn send(&self, groups: &[String], message: Message) -> anyhow::Result<Sent> {
        for g in groups {
            herald_core::names::require_valid_group_name(g)?;
        }
        match self {
            Route::Layer(m) => {
                let mut sent = Sent::default();
                for g in groups {
                    let r = m.group_send(g, message.clone()).await?;
                    sent.groups += 1;
                    sent.members += r.members;
                    sent.over_capacity += r.over_capacity;
                }
                Ok(sent)
            }
            Route::Api(api) => {
                let out = api
                    .publish(&serde_json::json!({"groups": groups, "message": message.to_json()}))
                    .await?;
                let n = |k: &str| out[k].as_u64().unwrap_or(0) as usize;
                Ok(Sent {
                    groups: n("groups"),
                    members: n("members"),
                    over_capacity: n("over_capacity"),
                })
            }
        }
    }
}

pub(crate) async fn send(args: SendArgs) -> anyhow::Result<()> {
    let (stamp, data) = args.common.prepare()?;
    let msg = stamp.apply(messaging::user_message(&args.user, &args.message, data));
    let groups = [messaging::user_group(&args.user)];
    let r = route(&args.common.layer, &args.common.api)?
        .send(&groups, msg)
        .await?;
    report(args.common.json, &groups, &r);
    Ok(())
}

pub(crate) async fn notify(args: NotifyArgs) -> anyhow::Result<()> {
    let kind: NotificationType = args.notification_type.parse()?;
    let (stamp, data) = args.common.prepare()?;
    let msg = stamp.apply(messaging::user_notification(
        &args.user,
        &args.message,
        kind,
        args.title.as_deref(),
        data,
    ));
    let groups = [messaging::user_group(&args.user)];
    let r = route(&args.common.layer, &args.common.api)?
        .send(&groups, msg)
        .await?;
    report(args.common.json, &groups, &r);
    Ok(())
}

pub(crate) async fn file(args: FileArgs) -> anyhow::Result<()> {
    let (stamp, data) = args.common.prepare()?;
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
    if let Some(data) = data {
        notice = notice.with_data(data);
    }
    let msg = stamp.apply(messaging::user_file(&args.user, notice));
    let groups = [messaging::user_group(&args.user)];
    let r = route(&args.common.layer, &args.common.api)?
        .send(&groups, msg)
        .await?;
    report(args.common.json, &groups, &r);
    Ok(())
}

pub(crate) async fn broadcast(args: BroadcastArgs) -> anyhow::Result<()> {
    let (stamp, data) = args.common.prepare()?;
    let route = route(&args.common.layer, &args.common.api)?;
    let messages: Vec<(String, Message)> = (args.users.iter())
        .map(|user| {
            let msg = stamp.apply(messaging::user_message(user, &args.message, data.clone()));
            (user.clone(), msg)
        })
        .collect();
    // Like ws_broadcast_message, a bad name fails only that user.
    let failed = |user: &str, err: &(dyn std::error::Error + 'static)| {
        eprintln!(
            "herald: send to {user:?} failed: {}",
            herald_core::error::error_chain(err)
        );
    };
    let mut sent = 0;
    match &route {
        // Through Redis: every user's message in one pipelined group_send_many.
        Route::Layer(messenger) => {
            for (user, result) in args.users.iter().zip(messenger.send_many(messages).await) {
                match result {
                    Ok(_) => sent += 1,
                    Err(err) => failed(user, &err),
                }
            }
        }
        Route::Api(_) => {
            for (user, msg) in messages {
                match route.send(&[messaging::user_group(&user)], msg).await {
                    Ok(_) => sent += 1,
                    Err(err) => failed(&user, &*err),
                }
            }
        }
    }
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({"sent": sent, "users": args.users.len()})
        );
    } else {
        println!("sent to {sent} of {} users", args.users.len());
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
    let groups = std::slice::from_ref(&args.group);
    let r = route(&args.layer, &args.api)?.send(groups, msg).await?;
    report(args.json, groups, &r);
    Ok(())
}

/// `herald disconnect USER`: close USER's sockets on every herald instance.
#[derive(Args, Debug, Clone)]
pub(crate) struct DisconnectArgs {
    /// The user whose sockets close (every socket in group `user_{username}`).
    pub(crate) user: String,
    /// The close code: 1000 or 3000-4999. 4401 (the default) tells the browser client to stop
    /// and wait for a new login instead of reconnecting.
    #[arg(long, default_value_t = messaging::DEFAULT_DISCONNECT_CODE, value_parser = parse_close_code)]
    pub(crate) code: u16,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Print a JSON report instead of the one-line summary.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--code`: a code a `herald.disconnect` may carry.
fn parse_close_code(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(code) if messaging::is_disconnect_code(code) => Ok(code),
        _ => Err(format!("{text:?} is not 1000 or 3000-4999")),
    }
}

/// A `herald.disconnect` to the user's group, the control message every herald instance
/// handles by closing its sockets in that group: through Redis, or the publish API.
pub(crate) async fn disconnect(args: DisconnectArgs) -> anyhow::Result<()> {
    let groups = [messaging::user_group(&args.user)];
    let sent = match route(&args.layer, &args.api)? {
        Route::Api(api) => {
            let out = api.disconnect(&args.user, args.code).await?;
            let n = |k: &str| out[k].as_u64().unwrap_or(0) as usize;
            Sent {
                groups: n("groups"),
                members: n("members"),
                over_capacity: n("over_capacity"),
            }
        }
        layer => {
            layer
                .send(&groups, messaging::disconnect(args.code))
                .await?
        }
    };
    report(args.json, &groups, &sent);
    Ok(())
}

/// `herald online [USER]`: presence, from Redis or from a herald's API.
#[derive(Args, Debug, Clone)]
pub(crate) struct OnlineArgs {
    /// The user to ask about; none = list everyone online.
    pub(crate) user: Option<String>,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn online(args: OnlineArgs) -> anyhow::Result<()> {
    use herald_core::presence::Presence;
    let answer = if args.layer.backend() == Backend::Memory {
        args.api.presence(args.user.as_deref()).await?
    } else {
        let redis = layer::redis_layer(&args.layer, "presence needs")?;
        match &args.user {
            Some(u) => {
                let n = redis.connections(u).await?;
                serde_json::json!({"user": u, "online": n > 0, "connections": n})
            }
            None => {
                let users = redis.online_users().await?;
                serde_json::json!({"count": users.len(), "users": users})
            }
        }
    };
    if args.json {
        println!("{answer}");
    } else if args.user.is_some() {
        let n = answer["connections"].as_u64().unwrap_or(0);
        let state = if n > 0 { "online" } else { "offline" };
        println!("{state} ({n} connection{})", if n == 1 { "" } else { "s" });
    } else if let Some(users) = answer["users"].as_array() {
        for u in users {
            println!("{}", u.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// `test-connection --wait` default: a connected browser acknowledges within milliseconds, and
/// 3 s still covers a busy server without making the command feel stuck.
const DEFAULT_TEST_WAIT_SECS: u64 = 3;

/// `herald test-connection USER`: does a socket of USER actually receive messages?
#[derive(Args, Debug, Clone)]
pub(crate) struct TestConnectionArgs {
    /// The user to test.
    pub(crate) user: String,
    /// Seconds to wait for acknowledgements (1 to 30 through the publish API).
    #[arg(long, default_value_t = DEFAULT_TEST_WAIT_SECS)]
    pub(crate) wait: u64,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) api: ApiOpts,
}

pub(crate) async fn test_connection(args: TestConnectionArgs) -> anyhow::Result<()> {
    let wait = std::time::Duration::from_secs(args.wait);
    // Like the senders: without --redis, ask the server (its publish API) to run the test.
    let n = if args.layer.backend() == Backend::Memory {
        let answer = args.api.test_connection(&args.user, wait).await?;
        answer["sockets"].as_u64().unwrap_or(0) as usize
    } else {
        let built = layer::build(&args.layer, false)?;
        let mut messenger = Messenger::new(built.layer);
        if let Some(redis) = built.redis {
            // The presence records say which herald sockets the user has, on every instance.
            messenger = messenger.with_presence(redis);
        }
        messenger.test_connection(&args.user, wait).await?
    };
    println!(
        "{n} socket{} of {} received the test message",
        if n == 1 { "" } else { "s" },
        args.user
    );
    if n == 0 {
        bail!(
            "no socket of {:?} received the test message within {} s",
            args.user,
            args.wait
        );
    }
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
    fn summary_says_where_and_how_many() {
        let one = |members, over_capacity| Sent {
            groups: 1,
            members,
            over_capacity,
        };
        let g = ["user_demo".to_owned()];
        assert_eq!(
            summary(&g, &one(1, 0)),
            "sent to group user_demo: 1 channel"
        );
        assert_eq!(
            summary(&g, &one(3, 1)),
            "sent to group user_demo: 3 channels, 1 full (skipped)"
        );
        assert_eq!(
            summary(&g, &one(0, 0)),
            "sent to group user_demo: no channel is listening (nobody connected?)"
        );
    }

    #[test]
    fn disconnect_codes_are_checked() {
        assert_eq!(parse_close_code("4401"), Ok(4401));
        assert_eq!(parse_close_code("1000"), Ok(1000));
        for bad in ["1006", "2999", "5000", "x", "-1"] {
            assert!(parse_close_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_messages_need_a_type() {
        assert!(parse_message(r#"{"type": "task.update"}"#).is_ok());
        assert!(parse_message(r#"{"progress": 1}"#).is_err());
        assert!(parse_message("3").is_err());
    }
}
