//! Sending the guide's messages from Rust: `user.message`, `user.notification`, `user.file`.
//!
//! The Django guide's helpers (`OptsIO.ws_utils.ws_send_message`, `ws_send_notification`,
//! `ws_send_file`, `ws_broadcast_message`) each build one dict and `group_send` it to
//! `user_{username}`. The builders here produce the same dicts, field for field and in the same
//! order, so a Python consumer or the browser cannot tell who sent them; [`Messenger`] sends them
//! over any [`ChannelLayer`].
//!
//! This is the guide's application protocol, not the channel layer's: `herald-core` stays the
//! layer contract (names, values, the in-memory layer, presence), and the server's `/ws/tasks/`
//! consumer, the `herald` CLI and the load generator take the protocol from here.
//!
//! # Layout
//! * group names: [`user_group`], [`task_group`];
//! * builders: [`user_message`], [`user_notification`], [`user_file`] (with [`FileNotice`] and
//!   [`NotificationType`]), stamped by [`python_isoformat_now`];
//! * delivery probes: [`PROBE_TYPE`] and its answer [`ACK_TYPE`];
//! * the control message [`DISCONNECT_TYPE`] ([`disconnect`]): close a user's sockets;
//! * [`Messenger`]: the Python `ws_utils` helpers over any layer.
//!
//! Errors are `herald_core`'s: every failure here is a layer error or an invalid name or
//! message, which callers holding a `dyn ChannelLayer` already branch on.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use herald_core::names::require_valid_group_name;
use herald_core::presence::Presence;
use herald_core::{ChannelLayer, Error, ErrorKind, GroupSendReport, Map, Message, Result, Value};

/// The group every socket of `username` joins: `user_{username}`.
pub fn user_group(username: &str) -> String {
    format!("user_{username}")
}

/// The group a task's progress goes to: `task_{task_id}`.
pub fn task_group(task_id: &str) -> String {
    format!("task_{task_id}")
}

/// `datetime.now().isoformat()`: local time without offset, microseconds only when non-zero.
pub fn python_isoformat_now() -> String {
    let now = chrono::Local::now().naive_local();
    python_isoformat(now)
}

/// `t.isoformat()` of a naive `datetime`: microseconds only when non-zero (finer digits are
/// dropped, as Python's clock has none).
pub fn python_isoformat(t: chrono::NaiveDateTime) -> String {
    use chrono::Timelike;
    let micros = t.nanosecond() / 1_000 % 1_000_000;
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// The four notification kinds the guide's frontend knows how to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NotificationType {
    /// Green toast.
    Success,
    /// Red toast.
    Error,
    /// Blue toast (the default, as in the guide).
    #[default]
    Info,
    /// Orange toast.
    Warning,
}

impl NotificationType {
    /// The wire string (`"success"`, `"error"`, `"info"`, `"warning"`).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Success => "success",
            NotificationType::Error => "error",
            NotificationType::Info => "info",
            NotificationType::Warning => "warning",
        }
    }
}

impl fmt::Display for NotificationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "success" => Ok(NotificationType::Success),
            "error" => Ok(NotificationType::Error),
            "info" => Ok(NotificationType::Info),
            "warning" => Ok(NotificationType::Warning),
            other => Err(Error::new(
                ErrorKind::InvalidMessage,
                format!(
                    "unknown notification type {other:?}: expected success, error, info or warning"
                ),
            )),
        }
    }
}

/// `{"type": "user.message", "username", "message", "data", "timestamp"}`.
pub fn user_message(username: &str, message: &str, data: Option<Map>) -> Message {
    Message::with_type("user.message")
        .with("username", username)
        .with("message", message)
        .with("data", Value::Map(data.unwrap_or_default()))
        .with("timestamp", python_isoformat_now())
}

/// `{"type": "user.notification", "username", "notification_type", "title", "message", "data",
/// "timestamp"}`; a missing title is the empty string.
pub fn user_notification(
    username: &str,
    message: &str,
    notification_type: NotificationType,
    title: Option<&str>,
    data: Option<Map>,
) -> Message {
    Message::with_type("user.notification")
        .with("username", username)
        .with("notification_type", notification_type.as_str())
        .with("title", title.unwrap_or(""))
        .with("message", message)
        .with("data", Value::Map(data.unwrap_or_default()))
        .with("timestamp", python_isoformat_now())
}

/// The type of the probe [`Messenger::test_connection`] sends to each live herald socket of a
/// user, directly to the socket's own channel (never to a group, so a Daphne consumer never
/// sees it): `{"type": "herald.probe", "reply_to": <channel>}`. Herald's `/ws/tasks/`
/// consumer answers it with [`ACK_TYPE`] and sends the browser nothing.
pub const PROBE_TYPE: &str = "herald.probe";

/// The type of a probe's answer: `{"type": "herald.ack", "username", "channel"}`.
pub const ACK_TYPE: &str = "herald.ack";

/// The type of the control message that closes sockets instead of reaching the browser:
/// `{"type": "herald.disconnect", "code": 4401}` (`code` optional, 4401 by default; 1000 or
/// 3000–4999). Sent to `user_{username}`, it closes that user's sockets on every herald
/// instance. Python sends it unchanged through channels_redis:
/// `async_to_sync(layer.group_send)("user_alice", {"type": "herald.disconnect"})`.
pub const DISCONNECT_TYPE: &str = "herald.disconnect";

/// The close code a [`DISCONNECT_TYPE`] message without a `code` closes with: 4401, "log in
/// again" (the browser client stops and emits `unauthorized`).
pub const DEFAULT_DISCONNECT_CODE: u16 = 4401;

/// Can a [`DISCONNECT_TYPE`] message ask for `code`: 1000, or the registered and application
/// ranges 3000–4999 (RFC 6455 §7.4.2: the others are reserved, or not for a server to send).
pub fn is_disconnect_code(code: u16) -> bool {
    code == 1000 || (3000..=4999).contains(&code)
}

/// `{"type": "herald.disconnect", "code": code}`: see [`DISCONNECT_TYPE`].
pub fn disconnect(code: u16) -> Message {
    Message::with_type(DISCONNECT_TYPE).with("code", i64::from(code))
}

/// The default text of a file notification, as in the guide.
pub const DEFAULT_FILE_MESSAGE: &str = "File ready for download";

/// A file-ready notice; build with [`FileNotice::new`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct FileNotice {
    /// URL or path of the file (`file_url`).
    pub file_url: String,
    /// Name to show; derived from the URL's last path segment when `None`.
    pub file_name: Option<String>,
    /// Text to show; [`DEFAULT_FILE_MESSAGE`] when `None`.
    pub message: Option<String>,
    /// Size in bytes, `None` when unknown.
    pub file_size: Option<u64>,
    /// Extra data.
    pub data: Option<Map>,
}

impl FileNotice {
    /// A notice for `file_url` with every optional field unset.
    pub fn new(file_url: &str) -> Self {
        FileNotice {
            file_url: file_url.to_owned(),
            ..FileNotice::default()
        }
    }

    /// Sets the displayed file name.
    pub fn with_file_name(mut self, name: &str) -> Self {
        self.file_name = Some(name.to_owned());
        self
    }

    /// Sets the message text.
    pub fn with_message(mut self, message: &str) -> Self {
        self.message = Some(message.to_owned());
        self
    }

    /// Sets the size in bytes.
    pub fn with_file_size(mut self, size: u64) -> Self {
        self.file_size = Some(size);
        self
    }

    /// Sets extra data.
    pub fn with_data(mut self, data: Map) -> Self {
        self.data = Some(data);
        self
    }
}

/// The file name a URL points at: its last path segment, query and fragment removed.
pub fn file_name_from_url(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    path.rsplit('/').next().unwrap_or("").to_owned()
}

/// `{"type": "user.file", "username", "message", "file_url", "file_name", "file_size", "data",
/// "timestamp"}`.
pub fn user_file(username: &str, notice: FileNotice) -> Message {
    let file_name = notice
        .file_name
        .unwrap_or_else(|| file_name_from_url(&notice.file_url));
    Message::with_type("user.file")
        .with("username", username)
        .with(
            "message",
            notice.message.as_deref().unwrap_or(DEFAULT_FILE_MESSAGE),
        )
        .with("file_url", notice.file_url)
        .with("file_name", file_name)
        .with("file_size", notice.file_size)
        .with("data", Value::Map(notice.data.unwrap_or_default()))
        .with("timestamp", python_isoformat_now())
}

/// Sends the guide's messages over any channel layer.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use herald_core::{ChannelLayer, InMemoryLayer};
/// use herald_messaging::Messenger;
/// let layer = Arc::new(InMemoryLayer::new(Default::default()).unwrap());
/// let ch = layer.new_channel("specific").await.unwrap();
/// layer.group_add("user_amadmin", &ch).await.unwrap();
/// let messenger = Messenger::new(layer.clone());
/// messenger.send_message("amadmin", "Your report is ready!", None).await.unwrap();
/// let got = layer.receive(&ch).await.unwrap();
/// assert_eq!(got.get("message").and_then(|v| v.as_str()), Some("Your report is ready!"));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Messenger {
    layer: Arc<dyn ChannelLayer>,
    presence: Option<Arc<dyn Presence>>,
}

impl Messenger {
    /// A messenger sending through `layer`.
    pub fn new(layer: Arc<dyn ChannelLayer>) -> Self {
        Messenger {
            layer,
            presence: None,
        }
    }

    /// Where [`test_connection`](Self::test_connection) finds a user's live herald sockets.
    pub fn with_presence(mut self, presence: Arc<dyn Presence>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// The layer messages go through.
    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.layer
    }

    /// `ws_send_message`: a `user.message` to `user_{username}`.
    ///
    /// # Errors
    /// `InvalidName` if `user_{username}` is not a valid group name; layer errors.
    pub async fn send_message(
        &self,
        username: &str,
        message: &str,
        data: Option<Map>,
    ) -> Result<GroupSendReport> {
        self.to_user(username, user_message(username, message, data))
            .await
    }

    /// `ws_send_notification`: a typed `user.notification`.
    pub async fn send_notification(
        &self,
        username: &str,
        message: &str,
        notification_type: NotificationType,
        title: Option<&str>,
        data: Option<Map>,
    ) -> Result<GroupSendReport> {
        let msg = user_notification(username, message, notification_type, title, data);
        self.to_user(username, msg).await
    }

    /// `ws_send_file`: a `user.file` download notice.
    pub async fn send_file(&self, username: &str, notice: FileNotice) -> Result<GroupSendReport> {
        self.to_user(username, user_file(username, notice)).await
    }

    /// `ws_broadcast_message`: a `user.message` to each user; returns how many sends succeeded.
    /// A user whose send fails (e.g. an invalid name) is logged and skipped, as in Python.
    /// The sends go through [`send_many`](Self::send_many).
    pub async fn broadcast_message<S: AsRef<str>>(
        &self,
        message: &str,
        usernames: &[S],
        data: Option<Map>,
    ) -> usize {
        let messages = usernames
            .iter()
            .map(|u| {
                let u = u.as_ref();
                (u.to_owned(), user_message(u, message, data.clone()))
            })
            .collect();
        let results = self.send_many(messages).await;
        let mut ok = 0;
        for (username, result) in usernames.iter().zip(results) {
            match result {
                Ok(_) => ok += 1,
                Err(err) => {
                    let username = username.as_ref();
                    tracing::warn!(error = %err, username, "broadcast send failed");
                }
            }
        }
        ok
    }

    /// Each `(username, message)` to `user_{username}`, in order, through
    /// [`ChannelLayer::group_send_many`]: the Redis layer pipelines them (one round trip per
    /// thousand messages instead of one each). One result per entry, in the same order; a
    /// user's messages arrive in the order given; an invalid name fails only its entry.
    pub async fn send_many(
        &self,
        messages: Vec<(String, Message)>,
    ) -> Vec<Result<GroupSendReport>> {
        let sends = messages
            .into_iter()
            .map(|(username, message)| (user_group(&username), message))
            .collect();
        self.layer.group_send_many(sends).await
    }

    /// `test_websocket_connection`, with an answer: sends the guide's test notification to
    /// `user_{username}` and counts the herald sockets that had it written within `wait`.
    ///
    /// The notification goes to the group unchanged, so every socket of the user — on herald
    /// or on Daphne — gets the same bytes. Then each live herald socket of the user (from the
    /// presence store) gets a [`PROBE_TYPE`] message on its own channel; the socket handles
    /// messages in the order they were sent, so its [`ACK_TYPE`] answer means the notification
    /// was handled first. Returns 0 when the user has no herald socket.
    ///
    /// # Errors
    /// `Config` without [`with_presence`](Self::with_presence); layer errors.
    pub async fn test_connection(
        &self,
        username: &str,
        wait: std::time::Duration,
    ) -> Result<usize> {
        let Some(presence) = &self.presence else {
            return Err(Error::new(
                ErrorKind::Config,
                "test_connection needs a presence store (Messenger::with_presence)",
            ));
        };
        let mut data = Map::new();
        data.insert("test".to_owned(), Value::Bool(true));
        let msg = user_notification(
            username,
            &format!("WebSocket connection test for {username}"),
            NotificationType::Info,
            Some("WebSocket Test"),
            Some(data),
        );
        self.to_user(username, msg).await?;
        let sockets = presence.connection_names(username).await?;
        if sockets.is_empty() {
            return Ok(0);
        }
        // A process-specific channel of this layer: its reader drains the process key on every
        // shard, so the ack arrives whichever shard the consumer's send lands on (a general
        // channel is polled one shard at a time and can miss it with several hosts).
        let ack_channel = self.layer.new_channel("herald.ack").await?;
        let mut expected = 0;
        for socket in &sockets {
            let probe = Message::with_type(PROBE_TYPE).with("reply_to", ack_channel.as_str());
            match self.layer.send(socket, probe).await {
                Ok(()) => expected += 1,
                // A record of a socket that is gone, or a full one: it does not count.
                Err(err) => tracing::debug!(error = %err, socket, "probe not sent"),
            }
        }
        let mut acked = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + wait;
        while acked.len() < expected {
            match tokio::time::timeout_at(deadline, self.layer.receive(&ack_channel)).await {
                Ok(Ok(m)) if m.msg_type() == Some(ACK_TYPE) => {
                    if let Some(channel) = m.get("channel").and_then(Value::as_str) {
                        acked.insert(channel.to_owned());
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    self.layer.close_channel(&ack_channel);
                    return Err(err);
                }
                Err(_) => break,
            }
        }
        self.layer.close_channel(&ack_channel);
        Ok(acked.len())
    }

    /// A raw `group_send` of any message.
    pub async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport> {
        require_valid_group_name(group)?;
        self.layer.group_send(group, message).await
    }

    async fn to_user(&self, username: &str, message: Message) -> Result<GroupSendReport> {
        self.group_send(&user_group(username), message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &Message) -> Vec<&str> {
        m.map().keys().map(String::as_str).collect()
    }

    #[test]
    fn message_has_guide_fields_in_order() {
        let m = user_message("amadmin", "hi", None);
        assert_eq!(
            keys(&m),
            ["type", "username", "message", "data", "timestamp"]
        );
        assert_eq!(m.get("data"), Some(&Value::Map(Map::new())));
    }

    #[test]
    fn notification_has_guide_fields_in_order() {
        let m = user_notification("u", "m", NotificationType::Success, Some("T"), None);
        assert_eq!(
            keys(&m),
            [
                "type",
                "username",
                "notification_type",
                "title",
                "message",
                "data",
                "timestamp"
            ]
        );
        assert_eq!(m.get("notification_type"), Some(&"success".into()));
    }

    #[test]
    fn file_name_is_derived_from_url() {
        let m = user_file("u", FileNotice::new("/media/reports/sales_2025.xlsx?x=1"));
        assert_eq!(m.get("file_name"), Some(&"sales_2025.xlsx".into()));
        assert_eq!(m.get("message"), Some(&DEFAULT_FILE_MESSAGE.into()));
        assert_eq!(m.get("file_size"), Some(&Value::Nil));
        assert_eq!(
            keys(&m),
            [
                "type",
                "username",
                "message",
                "file_url",
                "file_name",
                "file_size",
                "data",
                "timestamp"
            ]
        );
    }

    #[test]
    fn unknown_notification_type_is_rejected() {
        assert!("loud".parse::<NotificationType>().is_err());
        assert_eq!(
            "warning".parse::<NotificationType>().unwrap(),
            NotificationType::Warning
        );
    }

    #[test]
    fn isoformat_matches_python() {
        let t = chrono::NaiveDate::from_ymd_opt(2025, 11, 17)
            .unwrap()
            .and_hms_micro_opt(10, 30, 0, 0)
            .unwrap();
        assert_eq!(python_isoformat(t), "2025-11-17T10:30:00");
        let t = t.with_nanosecond(123_456_000).unwrap();
        assert_eq!(python_isoformat(t), "2025-11-17T10:30:00.123456");
    }

    use chrono::Timelike;

    #[tokio::test]
    async fn send_many_goes_to_each_users_group_in_order() {
        let layer = Arc::new(herald_core::InMemoryLayer::new(Default::default()).unwrap());
        let (a, b) = (
            layer.new_channel("specific").await.unwrap(),
            layer.new_channel("specific").await.unwrap(),
        );
        layer.group_add("user_a", &a).await.unwrap();
        layer.group_add("user_b", &b).await.unwrap();
        let messenger = Messenger::new(layer.clone());
        let text = |n: usize| user_message("x", &n.to_string(), None);
        let results = messenger
            .send_many(vec![
                ("a".to_owned(), text(0)),
                ("b".to_owned(), text(1)),
                ("not valid".to_owned(), text(2)),
                ("a".to_owned(), text(3)),
            ])
            .await;
        let members: Vec<Option<usize>> = results
            .iter()
            .map(|r| r.as_ref().ok().map(|r| r.members))
            .collect();
        assert_eq!(members, [Some(1), Some(1), None, Some(1)]);
        assert!(results[2].as_ref().unwrap_err().is_invalid_name());
        let got = |m: Message| m.get("message").and_then(Value::as_str).map(str::to_owned);
        assert_eq!(got(layer.receive(&a).await.unwrap()).as_deref(), Some("0"));
        assert_eq!(got(layer.receive(&a).await.unwrap()).as_deref(), Some("3"));
        assert_eq!(got(layer.receive(&b).await.unwrap()).as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn broadcast_counts_successes_and_skips_invalid_names() {
        let layer = Arc::new(herald_core::InMemoryLayer::new(Default::default()).unwrap());
        let messenger = Messenger::new(layer);
        let n = messenger
            .broadcast_message("hi", &["a", "b", "not valid"], None)
            .await;
        assert_eq!(n, 2);
    }
}
