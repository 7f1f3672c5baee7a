//! The [`Consumer`] trait: Channels' `AsyncWebsocketConsumer` in Rust.
//!
//! | Channels (Python)                        | Herald                                              |
//! |------------------------------------------|-----------------------------------------------------|
//! | `async def connect(self)`                | [`Consumer::connect`]                               |
//! | `async def receive(self, text_data, bytes_data)` | [`Consumer::receive`] with a [`Frame`]      |
//! | `async def user_message(self, event)`    | [`Consumer::handle`] called with `"user_message"`   |
//! | `async def disconnect(self, code)`       | [`Consumer::disconnect`]                            |
//! | `self.accept()`, `self.send(...)`, `self.close(code)`, `self.channel_layer.group_add(...)` | methods of [`Context`] |
//!
//! Layer messages are dispatched the Channels way: `type` with `.` replaced by `_` names the
//! handler ([`handler_name`]). Herald's one deliberate difference: a type with no handler is
//! counted (`herald_unknown_message_types_total`) and dropped instead of killing the socket.

use async_trait::async_trait;
use herald_core::Message;

use crate::auth::HandshakeRequest;
use crate::context::Context;
use crate::error::Result;
pub use crate::frame::Frame;

/// Whether [`Consumer::handle`] had a handler for a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The consumer handled the message.
    Yes,
    /// No handler for this type on this consumer: counted and dropped.
    No,
}

/// The handler name for a message type, the Channels way (`channels/consumer.py`
/// `get_handler_name`): `.` becomes `_`; a name starting with `_` is refused (`None`), as
/// Python raises "Malformed type in message (leading underscore)".
///
/// ```
/// use herald_server::handler_name;
/// assert_eq!(handler_name("user.message").as_deref(), Some("user_message"));
/// assert_eq!(handler_name("chat..msg").as_deref(), Some("chat__msg"));
/// assert_eq!(handler_name("_private.x"), None);
/// assert_eq!(handler_name(".x"), None);
/// ```
pub fn handler_name(msg_type: &str) -> Option<String> {
    let name = msg_type.replace('.', "_");
    (!name.starts_with('_')).then_some(name)
}

/// A WebSocket consumer: one instance per connection, its methods called one at a time in
/// arrival order (as Channels runs handlers).
///
/// Every method has a default, so a consumer only writes what it needs. Returning an error
/// from any method closes the socket with 1011 (or answers HTTP 500 from `connect` before
/// accept), as Daphne does when a Python consumer raises.
///
/// ```
/// use async_trait::async_trait;
/// use herald_core::Message;
/// use herald_server::{Consumer, Context, Frame, Handled, Result};
///
/// /// Echoes text frames and forwards `chat.message` layer events.
/// #[derive(Debug, Default)]
/// struct Echo;
///
/// #[async_trait]
/// impl Consumer for Echo {
///     async fn connect(&mut self, ctx: &mut Context) -> Result<()> {
///         ctx.group_add("lobby").await?;
///         ctx.accept()
///     }
///
///     async fn receive(&mut self, ctx: &mut Context, frame: Frame) -> Result<()> {
///         if let Frame::Text(text) = frame {
///             ctx.send_text(text)?;
///         }
///         Ok(())
///     }
///
///     async fn handle(&mut self, ctx: &mut Context, handler: &str, msg: Message) -> Result<Handled> {
///         match handler {
///             "chat_message" => ctx.forward_json(&msg).map(|()| Handled::Yes),
///             _ => Ok(Handled::No),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Consumer: Send + 'static {
    /// Called during the handshake, before the HTTP response. Call [`Context::accept`] to
    /// complete it; returning without accepting (or calling [`Context::close`]) answers HTTP 403
    /// like Channels' close-before-accept. Default: accept.
    async fn connect(&mut self, ctx: &mut Context) -> Result<()> {
        ctx.accept()
    }

    /// Called for every text or binary frame from the client. Default: ignore.
    async fn receive(&mut self, ctx: &mut Context, frame: Frame) -> Result<()> {
        let _ = (ctx, frame);
        Ok(())
    }

    /// Called for every channel-layer message with `handler` = [`handler_name`] of its type.
    /// Return [`Handled::No`] for types this consumer does not handle. Default: none handled.
    async fn handle(
        &mut self,
        ctx: &mut Context,
        handler: &str,
        message: Message,
    ) -> Result<Handled> {
        let _ = (ctx, handler, message);
        Ok(Handled::No)
    }

    /// Called once when the socket is gone, with the close code (the client's, the server's,
    /// or 1006 for an abnormal drop; `None` if the client's close frame had no code, as Daphne
    /// reports). Group memberships made through the [`Context`] are discarded right after,
    /// whatever this method does. Default: nothing.
    async fn disconnect(&mut self, ctx: &mut Context, code: Option<u16>) -> Result<()> {
        let _ = (ctx, code);
        Ok(())
    }
}

/// Makes one [`Consumer`] per connection for a route. Implemented for every
/// `Fn() -> C + Send + Sync`, so `TasksConsumer::default` is a factory.
pub trait ConsumerFactory: Send + Sync + 'static {
    /// A fresh consumer for the connection described by `request`.
    fn create(&self, request: &HandshakeRequest) -> Box<dyn Consumer>;
}

impl<F, C> ConsumerFactory for F
where
    F: Fn() -> C + Send + Sync + 'static,
    C: Consumer,
{
    fn create(&self, _request: &HandshakeRequest) -> Box<dyn Consumer> {
        Box::new(self())
    }
}
