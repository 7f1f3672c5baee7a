//! Every WebSocket close code the server sends or reports, in one table.
//!
//! | code | constant | when |
//! |------|----------|------|
//! | 1000 | [`CLOSE_NORMAL`] | consumer `close()` without a code; `websocket_timeout` expired (Daphne) |
//! | 1001 | [`CLOSE_GOING_AWAY`] | server shutdown |
//! | 1002 | [`CLOSE_PROTOCOL_ERROR`] | the client broke the protocol: bad opcode, RSV bits, an unmasked or stray frame (RFC 6455 §7.4.1) |
//! | 1006 | [`CLOSE_ABNORMAL`] | never sent: what `disconnect` is given when the connection dropped without a close frame, a missed pong included |
//! | 1007 | [`CLOSE_INVALID_PAYLOAD`] | a text message that is not UTF-8 (RFC 6455 §7.4.1) |
//! | 1008 | [`CLOSE_RATE_LIMITED`] | inbound rate limit exceeded ("policy violation") |
//! | 1009 | [`CLOSE_TOO_BIG`] | frame or message over `max_frame_size` / `max_message_size` |
//! | 1011 | [`CLOSE_INTERNAL_ERROR`] | a consumer handler or the layer failed after accept (Daphne) |
//! | 1013 | [`CLOSE_TRY_AGAIN_LATER`] | the handshake came while the layer (or another [`HealthCheck`](crate::HealthCheck)) was down; retry with backoff |
//! | 4008 | [`CLOSE_SLOW_CONSUMER`] | the client did not read and its outbound queue (or its inbox) overflowed |
//! | 4401 | [`CLOSE_UNAUTHORIZED`] | the session no longer logs the user in (logout, expiry, password change, deactivation; found by session re-validation), or a `herald.disconnect` message without a code: log in again before reconnecting |
//!
//! A `herald.disconnect` layer message (`herald disconnect`, `POST /api/disconnect`, or a
//! `group_send` from Python) closes every socket of the group with its `code` (1000 or
//! 3000–4999; default 4401).
//!
//! tungstenite reports 1002 and 1007 conditions as read errors but sends no close frame
//! itself; Daphne (autobahn) sends these codes, so the runtime does. A missed pong drops the
//! TCP connection without a close frame (autobahn's behaviour). Before accept, refusals are
//! HTTP statuses, not close codes (see [`Rejection`](crate::Rejection)).

use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Close code for a normal close and for `websocket_timeout` expiry (Daphne's default).
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code for server shutdown: 1001 "going away".
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// RFC 6455 1002: a protocol violation (bad opcode, RSV bits, unmasked or stray frame).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Code reported to `disconnect` when the connection dropped without a close frame.
pub const CLOSE_ABNORMAL: u16 = 1006;
/// RFC 6455 1007: a text message that is not valid UTF-8.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code sent when a client exceeds the inbound rate limit: 1008 "policy violation".
pub const CLOSE_RATE_LIMITED: u16 = 1008;
/// Close code for an oversized frame or message: 1009 "message too big".
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when a consumer handler fails: 1011, as Daphne after accept.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;
/// Close code for a handshake refused because a dependency is down: 1013 "Try Again Later"
/// (RFC 6455 registry). The browser client reconnects with backoff on it.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close reason sent with [`CLOSE_TRY_AGAIN_LATER`].
pub const TRY_AGAIN_LATER_REASON: &str = "try again later";
/// Close code sent when a socket's outbound queue overflows (the client reads too slowly).
/// Herald-specific (4000–4999 is the application range); Daphne buffers without limit.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code for a socket whose user must log in again: its session ended (logout, expiry,
/// password change, `is_active` false; see
/// [`ServerConfig::session_revalidation`](crate::ServerConfig::session_revalidation)) or it was
/// told to disconnect (`herald.disconnect`). Herald-specific, after HTTP 401; the browser client
/// stops, emits `unauthorized` and does not reconnect until the page has logged in again.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// A close frame with `code` and an empty reason.
pub(crate) fn close_frame(code: u16) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    }))
}
