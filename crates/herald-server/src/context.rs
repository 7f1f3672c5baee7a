//! [`Context`]: what a consumer can do — Channels' `self.accept()`, `self.send(...)`,
//! `self.close(code)`, `self.channel_layer.group_*`, `self.channel_name` and `self.scope`.
//!
//! Sends never wait for the socket: frames go into a bounded per-socket queue that the
//! runtime drains. A client that does not read lets the queue fill; the socket is then closed
//! with [`CLOSE_SLOW_CONSUMER`] and the rest of the server is
//! unaffected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::names::require_valid_group_name;
use herald_core::pyjson;
use herald_core::{ChannelLayer, GroupSendReport, Message, Position, Recorded};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::Data as OpData;
use tracing::{trace, warn};

use crate::app::AppInner;
use crate::auth::{HandshakeRequest, Identity};
use crate::close::{CLOSE_NORMAL, CLOSE_SLOW_CONSUMER};
use crate::deflate::{self, Negotiated};
use crate::error::{Error, ErrorKind, Result};
use crate::fanout::{self, LayerEvent};
use crate::frame::SharedText;
use crate::groups::{Inbox, InboxSender, next_member_id};

/// How long a closing socket's group cleanup may take: a Redis that hangs must not keep the
/// connection's task (and its memory) alive; the memberships then lapse with `group_expiry`.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Connecting,
    Open,
    /// The server decided to close with this code (frames queued before stay queued unless
    /// the close is for a slow consumer).
    Closing(u16),
}

/// A connection's handle to the socket and the channel layer, passed to every
/// [`Consumer`](crate::Consumer) method.
pub struct Context {
    shared: Arc<AppInner>,
    channel_name: String,
    request: HandshakeRequest,
    identity: Option<Identity>,
    state: State,
    subprotocol: Option<String>,
    pub(crate) outbound: VecDeque<WsMessage>,
    max_outbound: usize,
    pub(crate) slow_consumer: bool,
    groups: Vec<String>,
    /// This connection's key in the local group table.
    member_id: u64,
    /// The sending half of the socket's inbox: the layer delivers the socket's own channel
    /// into it (attached on connect), and every group channel it joined (multiplexed) too, so
    /// the socket sees the messages in the order the layer took them in.
    inbox_tx: InboxSender,
    pub(crate) inbox: Option<Inbox>,
    /// The layer message being handled, while [`Consumer::handle`](crate::Consumer::handle)
    /// runs: forwarding it uses the frame every socket shares (see `fanout`).
    handling: Option<Arc<LayerEvent>>,
    /// The `permessage-deflate` agreement of the socket's handshake, if any: frames long
    /// enough go out compressed.
    deflate: Option<Negotiated>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("channel_name", &self.channel_name)
            .field("path", &self.request.path())
            .field("user", &self.identity.as_ref().map(|i| &i.username))
            .field("state", &self.state)
            .field("queued", &self.outbound.len())
            .field("groups", &self.groups)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(
        shared: Arc<AppInner>,
        channel_name: String,
        request: HandshakeRequest,
        identity: Option<Identity>,
    ) -> Self {
        let max_outbound = shared.config.max_outbound_frames.get();
        let (inbox_tx, inbox) = Inbox::new(shared.config.group_inbox_capacity.get());
        Context {
            member_id: next_member_id(),
            inbox_tx,
            inbox: Some(inbox),
            shared,
            channel_name,
            request,
            identity,
            state: State::Connecting,
            subprotocol: None,
            outbound: VecDeque::new(),
            max_outbound,
            slow_consumer: false,
            groups: Vec::new(),
            handling: None,
            deflate: None,
        }
    }

    /// Sets (or clears) the layer message being handled.
    /// Compress outbound frames as the handshake agreed.
    pub(crate) fn set_deflate(&mut self, negotiated: Negotiated) {
        self.deflate = Some(negotiated);
    }

    pub(crate) fn set_handling(&mut self, event: Option<Arc<LayerEvent>>) {
        self.handling = event;
    }

    /// Has the layer deliver this socket's own channel into its inbox.
    pub(crate) async fn attach_channel(&self) -> Result<()> {
        let sink = self.shared.dispatcher.socket_sink(&self.inbox_tx);
        self.shared.layer.attach(&self.channel_name, sink).await?;
        Ok(())
    }

    /// The sending half of the socket's inbox (session re-validation closes through it).
    pub(crate) fn inbox_sender(&self) -> &InboxSender {
        &self.inbox_tx
    }

    /// See [`HandshakeRequest::pack_headers`].
    pub(crate) fn pack_request_headers(&mut self) {
        self.request.pack_headers();
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn shared(&self) -> &Arc<AppInner> {
        &self.shared
    }

    pub(crate) fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The group inbox overflowed: closes the socket as a slow consumer, exactly as an
    /// outbound queue overflow does.
    pub(crate) fn inbox_overflowed(&mut self) {
        self.slow_consumer = true;
        self.outbound.clear();
        self.force_close(CLOSE_SLOW_CONSUMER);
    }

    /// Discards every group this context joined and forgets its channel: the cleanup after
    /// `disconnect` (or after a refused handshake). Bounded by a timeout so a stuck layer
    /// cannot hold the connection's task forever.
    pub(crate) async fn discard_all(&mut self) {
        let layer = Arc::clone(&self.shared.layer);
        let table = self.shared.groups.clone();
        let member = self.member_id;
        let groups = std::mem::take(&mut self.groups);
        let channel = self.channel_name.as_str();
        let cleanup = async {
            for group in &groups {
                let discarded = match &table {
                    // The last local member of a group discards the group channel's membership.
                    Some(table) => table.leave(group, member).await,
                    None => layer
                        .group_discard(group, channel)
                        .await
                        .map_err(Into::into),
                };
                if let Err(err) = discarded {
                    warn!(error = %err, group = %group, "group_discard failed on disconnect");
                }
            }
        };
        if tokio::time::timeout(DISCARD_TIMEOUT, cleanup)
            .await
            .is_err()
        {
            warn!(
                groups = groups.len(),
                "group_discard timed out on disconnect"
            );
        }
        layer.close_channel(channel);
    }

    /// Marks the socket as closing with `code` without going through the consumer.
    pub(crate) fn force_close(&mut self, code: u16) {
        if !matches!(self.state, State::Closing(_)) {
            self.state = State::Closing(code);
        }
    }

    /// This connection's channel name (`self.channel_name`), unique to the socket.
    pub fn channel_name(&self) -> &str {
        &self.channel_name
    }

    /// The authenticated user (`scope["user"]`), `None` if anonymous.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The handshake request (`scope`: path, query string, headers, client address).
    pub fn request(&self) -> &HandshakeRequest {
        &self.request
    }

    /// The channel layer (`self.channel_layer`), for sends to other channels.
    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.shared.layer
    }

    /// True once [`accept`](Self::accept) has been called and the socket is not closing.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Accepts the WebSocket (`self.accept()`). Only meaningful in `connect`; later calls are
    /// no-ops.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] if [`close`](Self::close) was already called.
    pub fn accept(&mut self) -> Result<()> {
        match self.state {
            State::Connecting => {
                self.state = State::Open;
                Ok(())
            }
            State::Open => Ok(()),
            State::Closing(_) => Err(Error::new(ErrorKind::Closed, "accept after close")),
        }
    }

    /// Accepts with a subprotocol (`self.accept(subprotocol)`); it must be one the client
    /// offered in `Sec-WebSocket-Protocol`.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] if the client did not offer it; as [`accept`](Self::accept).
    pub fn accept_subprotocol(&mut self, protocol: &str) -> Result<()> {
        if !self.request.subprotocols().iter().any(|p| p == protocol) {
            return Err(Error::new(
                ErrorKind::Protocol,
                "subprotocol was not offered by the client",
            ));
        }
        self.accept()?;
        self.subprotocol = Some(protocol.to_owned());
        Ok(())
    }

    /// Closes the socket (`self.close(code)`); `None` sends 1000. Before accept, the handshake
    /// is refused with HTTP 403, as Daphne does. Frames queued earlier are still delivered.
    pub fn close(&mut self, code: Option<u16>) {
        match self.state {
            State::Connecting | State::Open => {
                self.state = State::Closing(code.unwrap_or(CLOSE_NORMAL));
            }
            State::Closing(_) => {}
        }
    }

    fn push(&mut self, frame: WsMessage) -> Result<()> {
        match self.state {
            State::Open => {}
            State::Connecting => {
                // Daphne: websocket.send before accept is a ValueError.
                return Err(Error::new(ErrorKind::State, "send before accept"));
            }
            State::Closing(_) => return Err(Error::new(ErrorKind::Closed, "send after close")),
        }
        if self.outbound.len() >= self.max_outbound {
            // The client is not reading: drop what is queued and close it as a slow consumer.
            // Its backlog is its own; other sockets never wait for it.
            self.slow_consumer = true;
            self.outbound.clear();
            self.state = State::Closing(CLOSE_SLOW_CONSUMER);
            return Err(Error::new(
                ErrorKind::Closed,
                "outbound queue full: slow consumer",
            ));
        }
        self.outbound.push_back(frame);
        Ok(())
    }

    /// Queues a text frame (`self.send(text_data=...)`). An empty text is not sent, as in Daphne.
    ///
    /// # Errors
    /// [`ErrorKind::State`] before accept; [`ErrorKind::Closed`] after close or when the queue
    /// overflowed (the socket is then being closed with [`CLOSE_SLOW_CONSUMER`]).
    pub fn send_text(&mut self, text: impl Into<SharedText>) -> Result<()> {
        let text = text.into();
        if text.is_empty() {
            return Ok(());
        }
        trace!(bytes = text.len(), "queue text frame");
        if let Some(negotiated) = self.deflate
            && negotiated.compresses(text.len())
            && let Some(compressed) = text.deflated()
        {
            return self.push(deflate::message_frame(OpData::Text, compressed));
        }
        self.push(WsMessage::Text(text.into_inner()))
    }

    /// Queues a binary frame (`self.send(bytes_data=...)`). Empty bytes are not sent.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(negotiated) = self.deflate
            && negotiated.compresses(bytes.len())
            && let Some(compressed) = deflate::compress(&bytes)
        {
            return self.push(deflate::message_frame(OpData::Binary, compressed));
        }
        self.push(WsMessage::Binary(bytes))
    }

    /// Queues `json.dumps(value)` as a text frame (`send_json`), byte-for-byte what Python
    /// writes (`", "`/`": "` separators, `\uXXXX` escapes).
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_json(&mut self, value: &serde_json::Value) -> Result<()> {
        self.send_text(pyjson::dumps_serde(value))
    }

    /// Forwards a layer message to the client as JSON with `type` in handler form
    /// (`"user.message"` → `"user_message"`) and every other field unchanged and in order —
    /// what `await self.send(text_data=json.dumps({**event, "type": ...}))` produces.
    ///
    /// When the same message fans out to many sockets it is encoded once and the bytes are
    /// shared: forwarding the message [`handle`](crate::Consumer::handle) was given, unmodified,
    /// reuses the frame the first socket wrote.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text); [`ErrorKind::Serialization`] if it has no string `type`.
    pub fn forward_json(&mut self, message: &Message) -> Result<()> {
        let Some(text) = fanout::frame_of(self.handling.as_deref(), message) else {
            return Err(Error::new(
                ErrorKind::Serialization,
                "layer message has no valid type",
            ));
        };
        self.send_text(text)
    }

    /// The recorded group and position of the layer message being handled, if it came from a
    /// group the layer records (see `ChannelLayer::history_channel`). Herald extension.
    pub fn recorded_position(&self) -> Option<(&str, &Position)> {
        self.handling.as_deref().and_then(LayerEvent::position)
    }

    /// Like [`forward_json`](Self::forward_json), with the message's group and position
    /// appended as the frame's last key, `"herald": {"group", "epoch", "offset"}`, when it
    /// came from a recorded group: the frame for clients that asked for positions. The bytes
    /// are written once per message for all such sockets.
    ///
    /// # Errors
    /// As [`forward_json`](Self::forward_json).
    pub fn forward_json_with_position(&mut self, message: &Message) -> Result<()> {
        let Some(text) = fanout::tagged_frame_of(self.handling.as_deref(), message) else {
            return Err(Error::new(
                ErrorKind::Serialization,
                "layer message has no valid type",
            ));
        };
        self.send_text(text)
    }

    /// Sends a recorded message handed back by a replay, as
    /// [`forward_json_with_position`](Self::forward_json_with_position) would have sent it
    /// live.
    ///
    /// # Errors
    /// As [`forward_json`](Self::forward_json).
    pub fn forward_recorded(&mut self, recorded: Recorded) -> Result<()> {
        let event = LayerEvent::recorded(recorded);
        let Some(text) = event.tagged_frame() else {
            return Err(Error::new(
                ErrorKind::Serialization,
                "recorded message has no valid type",
            ));
        };
        self.send_text(text)
    }

    /// Adds this socket to `group` (`channel_layer.group_add(group, self.channel_name)`).
    /// Memberships made here are discarded automatically when the socket ends.
    ///
    /// With [`group_multiplexing`](crate::ServerConfig::group_multiplexing) (the default) the
    /// layer group gets one channel per process and group, shared by every local socket in
    /// it; the first local join makes that membership, later ones cost no layer call. Group
    /// messages arrive through the socket's bounded inbox, in the order the layer took them in
    /// together with the socket's own channel: one sender's messages to several groups of a
    /// socket arrive in the order they were sent, as with Channels.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] for a name Channels would refuse; [`ErrorKind::Layer`].
    pub async fn group_add(&mut self, group: &str) -> Result<()> {
        match &self.shared.groups {
            // Multiplexed: the socket joins the process's group channel (see `groups`).
            Some(table) => table.join(group, self.member_id, &self.inbox_tx).await?,
            None => {
                self.shared
                    .layer
                    .group_add(group, &self.channel_name)
                    .await?
            }
        }
        if !self.groups.iter().any(|g| g == group) {
            self.groups.push(group.to_owned());
            self.presence_groups_changed();
        }
        Ok(())
    }

    /// Removes this socket from `group`. Multiplexed, the last local member leaving discards
    /// the process's membership.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`]; [`ErrorKind::Layer`].
    pub async fn group_discard(&mut self, group: &str) -> Result<()> {
        match &self.shared.groups {
            Some(table) => {
                require_valid_group_name(group)?;
                table.leave(group, self.member_id).await?;
            }
            None => {
                self.shared
                    .layer
                    .group_discard(group, &self.channel_name)
                    .await?
            }
        }
        let before = self.groups.len();
        self.groups.retain(|g| g != group);
        if self.groups.len() != before {
            self.presence_groups_changed();
        }
        Ok(())
    }

    /// Sends `message` to every member of `group` (`channel_layer.group_send`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`]; [`ErrorKind::Layer`].
    pub async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport> {
        Ok(self.shared.layer.group_send(group, message).await?)
    }

    /// Tells presence the socket's groups changed (a no-op before it is accepted: `open`
    /// records the groups joined in `connect`).
    fn presence_groups_changed(&self) {
        if let Some(registry) = &self.shared.presence
            && self.identity.is_some()
        {
            registry.groups_changed(&self.channel_name, &self.groups);
        }
    }

    /// The groups this socket joined through this context, in join order.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
}
