//! The per-connection task: one `select!` loop over shutdown, outbound writes, client frames,
//! layer messages and timers, then the close sequence (close frame, `disconnect`, group
//! cleanup).
//!
//! The loop ([`Connection::run`]) only waits and routes; each thing it does is a named step,
//! the way hyper's dispatcher splits reading from writing and flushing:
//! * **write** ([`poll_write`]) and **flush** ([`poll_flush`]): queued frames go to the sink in
//!   batches, flushed after every [`WRITE_BATCH`] and when the queue is empty;
//! * **read** (`Connection::read`): a client frame, a read error or a close, to
//!   [`Consumer::receive`] through the rate limit;
//! * **dispatch inbox** (`Connection::dispatch_inbox`): up to [`INBOX_BATCH`] layer messages
//!   per wake-up, each to [`Consumer::handle`];
//! * **keep-alive** ([`KeepAlive`]): Daphne's ping interval and timeout and
//!   `websocket_timeout`;
//! * **close** (`Connection::close`) and **finish** (`Connection::finish`): the close
//!   handshake, then `disconnect`, group cleanup and presence.
//!
//! The loop is generic over any `Sink`/`Stream` of tungstenite messages, so consumers are
//! tested over in-memory channels; the server passes the two halves of a
//! `tokio_tungstenite::WebSocketStream`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage, error::ProtocolError,
};
use tracing::{Instrument, debug, debug_span, trace, warn};

use crate::close::{
    CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_INVALID_PAYLOAD, CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR, CLOSE_RATE_LIMITED, CLOSE_TOO_BIG, close_frame,
};
use crate::config::ServerConfig;
use crate::consumer::{Consumer, Handled};
use crate::context::{Context, State};
use crate::deflate::{InflateError, Negotiated};
use crate::fanout::LayerEvent;
use crate::frame::{Frame, SharedText};
use crate::gate::Gate;
use crate::groups::{Delivery, Inbox};
use crate::limits::{CapPermit, TokenBucket};
use crate::metrics::{DropReason, Metrics};
use crate::presence::PresenceGuard;
use crate::shutdown::ShutdownSignal;

/// Frames handed to tungstenite between flushes: bounds its internal write buffer, and lets a
/// socket that fell behind write several frames per syscall.
const WRITE_BATCH: usize = 16;
/// Layer messages handled per wake-up before the loop looks at its other branches again: a
/// busy group must not keep the loop from the client's frames and the timers.
const INBOX_BATCH: usize = 16;

/// An accepted connection waiting for its socket. Made by [`App::connect`](crate::App::connect).
pub struct Connection {
    consumer: Box<dyn Consumer>,
    ctx: Context,
    _permit: CapPermit,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClosed,
    /// The consumer called [`Context::close`].
    ConsumerClosed,
    /// Server shutdown (close code 1001).
    Shutdown,
    /// The outbound queue overflowed ([`CLOSE_SLOW_CONSUMER`](crate::CLOSE_SLOW_CONSUMER)).
    SlowConsumer,
    /// The inbound rate limit was exceeded ([`CLOSE_RATE_LIMITED`](crate::CLOSE_RATE_LIMITED)).
    RateLimited,
    /// A frame or message exceeded the size limits (1009).
    TooBig,
    /// The client broke the protocol (1002) or sent a text message that is not UTF-8 (1007).
    InvalidFrame,
    /// No pong arrived within `ping_timeout`; the TCP connection was dropped.
    PingTimeout,
    /// `websocket_timeout` elapsed (1000).
    Lifetime,
    /// A consumer handler returned an error (1011).
    HandlerError,
    /// The connection dropped without a close handshake (1006).
    Dropped,
    /// Its session ended (session re-validation, 4401) or a `herald.disconnect` message
    /// closed it.
    Revoked,
}

/// How a connection ended: the reason and the code passed to `disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Closed {
    /// Why it ended.
    pub reason: CloseReason,
    /// The code given to [`Consumer::disconnect`].
    pub code: Option<u16>,
}

enum Ending {
    /// The server closes with `code`; `read_reply` is false when the read side is unusable.
    Close {
        code: u16,
        reason: CloseReason,
        read_reply: bool,
    },
    /// The client sent a close frame (its code, `None` if it had none).
    ClientClosed(Option<u16>),
    /// No close handshake possible.
    Dropped(CloseReason),
}

/// What the loop keeps between rounds, apart from the consumer and its context.
struct LoopState {
    /// Why the server is closing, when the runtime decided it (not the consumer).
    forced: Option<CloseReason>,
    /// Frames went into the sink since its last flush.
    needs_flush: bool,
    /// The keep-alive asked for a ping. A flag, not a queued frame: an idle socket's first
    /// ping would otherwise allocate its outbound queue, for good.
    ping_due: bool,
    /// The inbound rate limit, if configured.
    bucket: Option<TokenBucket>,
    keepalive: KeepAlive,
}

/// What the keep-alive timer asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// `websocket_timeout` elapsed: close with 1000 (Daphne).
    Lifetime,
    /// No pong (or any frame) within `ping_timeout` of our ping: drop the connection.
    PingTimeout,
    /// Nothing heard for `ping_interval`: send a ping.
    Ping,
    /// Woken early (a frame reset the clock): nothing to do.
    Wait,
}

/// Keep-alive timers fire on this grid: the sockets whose pings fall due within one step are
/// woken together, instead of each waking the runtime on its own (10,000 sockets pinged every
/// 20–30 s come due ~400 times a second; parking and expiring timers was a tenth of the idle
/// server's CPU samples).
const KEEPALIVE_GRAIN: Duration = Duration::from_millis(100);

/// `deadline`, rounded up to the next step of [`KEEPALIVE_GRAIN`] (steps counted from the
/// first call, one grid for the whole process). A timer may fire up to one step late, never
/// early: [`KeepAlive::tick`] decides from the real clock.
fn coarse(deadline: Instant) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let grain = KEEPALIVE_GRAIN.as_nanos();
    let past = deadline.saturating_duration_since(origin).as_nanos() % grain;
    if past == 0 {
        deadline
    } else {
        deadline + Duration::from_nanos(u64::try_from(grain - past).unwrap_or(0))
    }
}

/// The keep-alive clock: Daphne's `ping_interval` / `ping_timeout` and `websocket_timeout`.
/// Any frame from the client counts as a sign of life and cancels an outstanding ping.
#[derive(Debug)]
struct KeepAlive {
    last_seen: Instant,
    ping_sent: Option<Instant>,
    lifetime_deadline: Option<Instant>,
    ping_interval: Duration,
    ping_timeout: Duration,
}

impl KeepAlive {
    fn new(start: Instant, config: &ServerConfig) -> Self {
        KeepAlive {
            last_seen: start,
            ping_sent: None,
            lifetime_deadline: config.websocket_timeout.map(|t| start + t),
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
        }
    }

    /// When the timer should fire next.
    fn deadline(&self) -> Instant {
        let keepalive = match self.ping_sent {
            Some(sent) => sent + self.ping_timeout,
            None => self.last_seen + self.ping_interval,
        };
        self.lifetime_deadline
            .map_or(keepalive, |l| l.min(keepalive))
    }

    /// A frame arrived at `now`.
    fn seen(&mut self, now: Instant) {
        self.last_seen = now;
        self.ping_sent = None;
    }

    /// The timer fired at `now`; a [`Tick::Ping`] counts as sent.
    fn tick(&mut self, now: Instant) -> Tick {
        if self.lifetime_deadline.is_some_and(|d| now >= d) {
            Tick::Lifetime
        } else if let Some(sent) = self.ping_sent {
            if now >= sent + self.ping_timeout {
                Tick::PingTimeout
            } else {
                Tick::Wait
            }
        } else if now >= self.last_seen + self.ping_interval {
            self.ping_sent = Some(now);
            Tick::Ping
        } else {
            Tick::Wait
        }
    }
}

/// Write step: a due ping, then queued frames to the sink, `poll_ready` before taking each
/// from the queue, so a frame leaves the queue only when the sink has room for it (nothing is
/// lost if this future is dropped); flushes after every [`WRITE_BATCH`] frames and at the end.
fn poll_write<Si>(
    sink: &mut Si,
    queue: &mut std::collections::VecDeque<WsMessage>,
    ping_due: &mut bool,
    needs_flush: &mut bool,
    metrics: &Metrics,
    cx: &mut TaskContext<'_>,
) -> Poll<Result<(), WsError>>
where
    Si: Sink<WsMessage, Error = WsError> + Unpin,
{
    if *ping_due {
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        Pin::new(&mut *sink).start_send(WsMessage::Ping(Default::default()))?;
        *ping_due = false;
        *needs_flush = true;
    }
    let mut batch = 0;
    while !queue.is_empty() {
        if batch == WRITE_BATCH {
            ready!(poll_flush(sink, needs_flush, cx))?;
            batch = 0;
        }
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        let Some(frame) = queue.pop_front() else {
            break;
        };
        if frame.is_text() || frame.is_binary() {
            Metrics::incr(&metrics.frames_out);
            trace!(bytes = frame.len(), "write frame");
        } else if let WsMessage::Frame(_) = frame {
            // Only data messages are queued as ready-made frames: the compressed ones.
            Metrics::incr(&metrics.frames_out);
            Metrics::incr(&metrics.frames_deflated);
            trace!(bytes = frame.len(), "write compressed frame");
        }
        Pin::new(&mut *sink).start_send(frame)?;
        *needs_flush = true;
        batch += 1;
    }
    poll_flush(sink, needs_flush, cx)
}

/// Flush step: flushes the sink if frames went into it since the last flush (and after a
/// ping from the client, whose pong tungstenite queued itself).
fn poll_flush<Si>(
    sink: &mut Si,
    needs_flush: &mut bool,
    cx: &mut TaskContext<'_>,
) -> Poll<Result<(), WsError>>
where
    Si: Sink<WsMessage, Error = WsError> + Unpin,
{
    if *needs_flush {
        ready!(Pin::new(&mut *sink).poll_flush(cx))?;
        *needs_flush = false;
    }
    Poll::Ready(Ok(()))
}

/// The next layer delivery (the socket's own channel and its groups, in the layer's order);
/// pending forever once the inbox is gone. Cancel-safe.
fn poll_delivery(inbox: &mut Option<Inbox>, cx: &mut TaskContext<'_>) -> Poll<Delivery> {
    match inbox {
        Some(inbox) => inbox.poll_recv(cx),
        None => Poll::Pending,
    }
}

/// The handler name of [`herald_messaging::DISCONNECT_TYPE`].
const DISCONNECT_HANDLER: &str = "herald_disconnect";

/// The close code a `herald.disconnect` message asks for: its `code` if it is one a server may
/// send (1000, 3000–4999), else [`herald_messaging::DEFAULT_DISCONNECT_CODE`].
fn disconnect_code(message: &herald_core::Message) -> u16 {
    message
        .get("code")
        .and_then(herald_core::Value::as_i64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| herald_messaging::is_disconnect_code(*c))
        .unwrap_or(herald_messaging::DEFAULT_DISCONNECT_CODE)
}

/// Takes a token for one inbound frame; true when the bucket is empty.
fn rate_limited(bucket: &mut Option<TokenBucket>, now: Instant) -> bool {
    bucket.as_mut().is_some_and(|b| !b.try_take(now))
}

/// Decrements `connections_current` however the task ends.
struct LiveGuard<'a>(&'a Metrics);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0
            .connections_current
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Connection {
    pub(crate) fn new(consumer: Box<dyn Consumer>, ctx: Context, permit: CapPermit) -> Self {
        Connection {
            consumer,
            ctx,
            _permit: permit,
        }
    }

    /// Sends frames compressed as the handshake's `permessage-deflate` agreement says.
    pub(crate) fn set_deflate(&mut self, negotiated: Negotiated) {
        self.ctx.set_deflate(negotiated);
    }

    /// The subprotocol the consumer accepted, for the `Sec-WebSocket-Protocol` response header.
    pub fn subprotocol(&self) -> Option<&str> {
        self.ctx.subprotocol()
    }

    /// The connection's channel name.
    pub fn channel_name(&self) -> &str {
        self.ctx.channel_name()
    }

    /// Ends a connection whose socket never materialised (the upgrade failed): runs
    /// `disconnect(1006)` and discards its groups.
    pub async fn abandon(mut self) {
        if let Err(err) = self
            .consumer
            .disconnect(&mut self.ctx, Some(CLOSE_ABNORMAL))
            .await
        {
            warn!(error = %err, "consumer disconnect failed");
        }
        self.ctx.discard_all().await;
    }

    /// Runs the connection until it closes: client frames go to [`Consumer::receive`], layer
    /// messages to [`Consumer::handle`], queued frames to the client; then `disconnect` runs
    /// and every group joined through the [`Context`] is discarded.
    ///
    /// `sink`/`stream` are usually the halves of a `WebSocketStream`; tests pass channels.
    /// The sink must answer pings itself (tungstenite does) — the runtime only flushes.
    ///
    /// The returned future is what a socket costs while it is idle, so it is kept small: the
    /// connection stays boxed (an `async fn` keeps a copy of its by-value arguments), and
    /// the per-connection span is at debug level (an enabled span holds a registry slot and
    /// its formatted fields for the socket's whole life).
    pub fn run<Si, St>(
        self: Box<Self>,
        sink: Si,
        stream: St,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = Closed> + Send
    where
        Si: Sink<WsMessage, Error = WsError> + Unpin + Send,
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin + Send,
    {
        let span = debug_span!(
            "ws.connection",
            peer = ?self.ctx.request().client(),
            path = %self.ctx.request().path(),
            channel = %self.ctx.channel_name(),
        );
        self.run_inner(sink, stream, shutdown).instrument(span)
    }

    /// The loop: waits on every source, hands what arrived to its step, and ends in the
    /// close sequence.
    async fn run_inner<Si, St>(
        mut self: Box<Self>,
        mut sink: Si,
        mut stream: St,
        mut shutdown: ShutdownSignal,
    ) -> Closed
    where
        Si: Sink<WsMessage, Error = WsError> + Unpin + Send,
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin + Send,
    {
        let shared = Arc::clone(self.ctx.shared());
        let config = &shared.config;
        let metrics = &shared.metrics;
        Metrics::incr(&metrics.connections_total);
        Metrics::incr(&metrics.connections_current);
        let _live = LiveGuard(metrics);
        debug!("websocket accepted");

        let channel: Arc<str> = Arc::from(self.ctx.channel_name());
        // Held for the life of the socket: presence is removed however the task ends.
        let presence = shared
            .presence
            .as_ref()
            .zip(self.ctx.identity())
            .map(|(registry, id)| {
                registry.open(
                    Arc::clone(&channel),
                    &id.username,
                    self.ctx.request().client(),
                    self.ctx.groups(),
                )
            });
        // Held for the life of the socket: session re-validation sees it while it is open.
        let _session = shared
            .sessions
            .track(self.ctx.identity(), self.ctx.inbox_sender());
        // Layer messages, the socket's own channel and its groups in one order: filled by
        // the layer (see `groups`), bounded.
        let mut inbox = self.ctx.inbox.take();
        let start = Instant::now();
        let mut state = LoopState {
            forced: None,
            needs_flush: false,
            ping_due: false,
            bucket: config.rate_limit.map(|l| TokenBucket::new(l, start)),
            keepalive: KeepAlive::new(start, config),
        };
        let timer = tokio::time::sleep_until(coarse(state.keepalive.deadline()));
        tokio::pin!(timer);
        // One wait for the socket's life: a fresh `wait()` per round registers in and unlinks
        // from the watch channel's waiter list every time (~9 % of the server's CPU in a
        // 300k frames/s broadcast profile).
        let shutdown = shutdown.wait();
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        // The sources that rarely have anything are polled only after their own waker fired
        // (see `gate`): most wake-ups are layer messages, and polling the socket read and the
        // shutdown wait each time cost a third of the user time.
        let (shutdown_gate, read_gate) = (Gate::new(), Gate::new());

        let ending = loop {
            if let Some(ending) = self.closing(state.forced, metrics) {
                break ending;
            }
            let has_output = !self.ctx.outbound.is_empty() || state.needs_flush || state.ping_due;
            let outbound = &mut self.ctx.outbound;
            let needs_flush = &mut state.needs_flush;
            let ping_due = &mut state.ping_due;

            // Branch order matters (biased):
            // 1. shutdown first, so a draining server starts no new work on this socket;
            // 2. writes before reads: draining the queue is what makes room, and a socket that
            //    keeps reading without writing would overflow its queue spuriously;
            // 3. client frames before layer messages, so a busy group cannot starve the
            //    client's close or pong (the inbox is bounded and overflows into a
            //    slow-consumer close, never into blocking the layer's reader);
            // 4. timers last: they only matter when nothing else is ready.
            tokio::select! {
                biased;

                () = std::future::poll_fn(|cx| shutdown_gate.poll(cx, |cx| shutdown.as_mut().poll(cx))),
                    if !shutdown_seen =>
                {
                    shutdown_seen = true;
                    self.force(&mut state, CloseReason::Shutdown, CLOSE_GOING_AWAY);
                }

                res = std::future::poll_fn(|cx| poll_write(&mut sink, outbound, ping_due, needs_flush, metrics, cx)),
                    if has_output =>
                {
                    if let Err(err) = res {
                        debug!(error = %err, "write failed");
                        break Ending::Dropped(CloseReason::Dropped);
                    }
                }

                frame = std::future::poll_fn(|cx| read_gate.poll(cx, |cx| stream.poll_next_unpin(cx))) => {
                    if let Some(ending) = self.read(frame, &mut state, metrics, &channel).await {
                        break ending;
                    }
                }

                delivery = std::future::poll_fn(|cx| poll_delivery(&mut inbox, cx)) => {
                    self.dispatch_inbox(delivery, &mut inbox, &mut state, metrics).await;
                }

                () = &mut timer => {
                    if let Some(ending) = self.keep_alive(&mut state, metrics) {
                        break ending;
                    }
                    timer.as_mut().reset(coarse(state.keepalive.deadline()));
                }
            }
        };
        drop(inbox);

        let closed = self
            .close(
                ending,
                &mut sink,
                &mut stream,
                &mut state.needs_flush,
                config,
                metrics,
            )
            .await;
        drop(sink);
        drop(stream);
        self.finish(closed, presence, &channel).await;
        closed
    }

    /// Records a close the runtime decided (not the consumer).
    fn force(&mut self, state: &mut LoopState, reason: CloseReason, code: u16) {
        state.forced = Some(reason);
        self.ctx.force_close(code);
    }

    /// How the loop ends once the context is closing (the consumer's or the runtime's call).
    fn closing(&self, forced: Option<CloseReason>, metrics: &Metrics) -> Option<Ending> {
        let State::Closing(code) = self.ctx.state() else {
            return None;
        };
        let reason = if self.ctx.slow_consumer {
            Metrics::incr(&metrics.slow_consumer_closes);
            debug!("slow consumer: outbound queue full");
            CloseReason::SlowConsumer
        } else {
            forced.unwrap_or(CloseReason::ConsumerClosed)
        };
        Some(Ending::Close {
            code,
            reason,
            // After an oversized or invalid frame the read side is unusable.
            read_reply: !matches!(reason, CloseReason::TooBig | CloseReason::InvalidFrame),
        })
    }

    /// Read step: what the socket read returned. `Some` ends the loop.
    async fn read(
        &mut self,
        frame: Option<Result<WsMessage, WsError>>,
        state: &mut LoopState,
        metrics: &Metrics,
        channel: &str,
    ) -> Option<Ending> {
        let msg = match frame {
            None => return Some(Ending::Dropped(CloseReason::Dropped)),
            Some(Err(WsError::Capacity(err))) => {
                debug!(error = %err, "frame too big");
                Metrics::incr(&metrics.oversize_closes);
                self.force(state, CloseReason::TooBig, CLOSE_TOO_BIG);
                return None;
            }
            // tungstenite reports these but sends no close frame itself; RFC 6455 §7.4.1
            // wants 1007 for a text message that is not UTF-8 and 1002 for a protocol
            // violation (Daphne/autobahn send them too).
            Some(Err(WsError::Utf8(err))) => {
                debug!(error = %err, "text frame is not utf-8");
                self.force(state, CloseReason::InvalidFrame, CLOSE_INVALID_PAYLOAD);
                return None;
            }
            Some(Err(WsError::Protocol(err)))
                if err != ProtocolError::ResetWithoutClosingHandshake =>
            {
                debug!(error = %err, "protocol violation");
                self.force(state, CloseReason::InvalidFrame, CLOSE_PROTOCOL_ERROR);
                return None;
            }
            // permessage-deflate: a compressed message that inflates too far, or not at all.
            Some(Err(WsError::Io(err))) if InflateError::of(&err).is_some() => {
                debug!(error = %err, "compressed message refused");
                if InflateError::of(&err) == Some(InflateError::TooBig) {
                    Metrics::incr(&metrics.oversize_closes);
                    self.force(state, CloseReason::TooBig, CLOSE_TOO_BIG);
                } else {
                    self.force(state, CloseReason::InvalidFrame, CLOSE_INVALID_PAYLOAD);
                }
                return None;
            }
            Some(Err(err)) => {
                debug!(error = %err, "read failed");
                return Some(Ending::Dropped(CloseReason::Dropped));
            }
            Some(Ok(msg)) => msg,
        };
        let now = Instant::now();
        state.keepalive.seen(now);
        let frame = match msg {
            WsMessage::Text(text) => Frame::Text(SharedText::from_inner(text)),
            WsMessage::Binary(bytes) => Frame::Binary(bytes),
            WsMessage::Ping(_) => {
                // tungstenite queued the pong; make sure it gets flushed. Pings spend
                // rate-limit tokens too: each one makes us write a pong.
                state.needs_flush = true;
                if rate_limited(&mut state.bucket, now) {
                    Metrics::incr(&metrics.rate_limit_closes);
                    debug!("inbound rate limit exceeded by pings");
                    self.force(state, CloseReason::RateLimited, CLOSE_RATE_LIMITED);
                }
                return None;
            }
            WsMessage::Pong(_) | WsMessage::Frame(_) => return None,
            WsMessage::Close(close) => {
                // tungstenite queued the close reply; flushed in the close sequence.
                return Some(Ending::ClientClosed(close.map(|c| u16::from(c.code))));
            }
        };
        Metrics::incr(&metrics.frames_in);
        if rate_limited(&mut state.bucket, now) {
            Metrics::incr(&metrics.rate_limit_closes);
            debug!("inbound rate limit exceeded");
            self.force(state, CloseReason::RateLimited, CLOSE_RATE_LIMITED);
            return None;
        }
        if let Err(err) = self.consumer.receive(&mut self.ctx, frame).await
            && !self.ctx.slow_consumer
        {
            Metrics::incr(&metrics.handler_errors);
            warn!(error = %err, channel = %channel, "consumer receive failed");
            self.force(state, CloseReason::HandlerError, CLOSE_INTERNAL_ERROR);
        }
        None
    }

    /// Dispatch-inbox step: `first` and what is already queued behind it, up to
    /// [`INBOX_BATCH`] (one `select!` round per group message would re-poll every other
    /// branch each time).
    async fn dispatch_inbox(
        &mut self,
        first: Delivery,
        inbox: &mut Option<Inbox>,
        state: &mut LoopState,
        metrics: &Metrics,
    ) {
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(delivery) = next.take() {
            match delivery {
                Delivery::Event(event) => self.dispatch(event, state, metrics).await,
                Delivery::Overflow => self.ctx.inbox_overflowed(),
                Delivery::Close(code) => {
                    debug!(code, "session ended: closing");
                    self.force(state, CloseReason::Revoked, code);
                }
            }
            handled += 1;
            if handled < INBOX_BATCH && self.ctx.is_open() {
                next = inbox.as_mut().and_then(Inbox::try_recv);
            }
        }
    }

    /// Channels' dispatch: `type` → handler name → [`Consumer::handle`].
    async fn dispatch(&mut self, event: Arc<LayerEvent>, state: &mut LoopState, metrics: &Metrics) {
        // Derived once per message for all the sockets it fans out to.
        let Some(handler) = event.handler() else {
            match event.message().msg_type() {
                None => {
                    metrics.inc_drop(DropReason::MissingType);
                    debug!("layer message without type dropped");
                }
                Some(msg_type) => {
                    metrics.inc_drop(DropReason::MalformedType);
                    debug!(msg_type, "layer message with malformed type dropped");
                }
            }
            return;
        };
        if handler == DISCONNECT_HANDLER {
            // A control message for the runtime, never the consumer's or the browser's.
            let code = disconnect_code(event.message());
            self.ctx.shared().sessions.count_disconnect();
            debug!(code, "herald.disconnect: closing");
            self.force(state, CloseReason::Revoked, code);
            return;
        }
        self.ctx.set_handling(Some(Arc::clone(&event)));
        let handled = self
            .consumer
            .handle(&mut self.ctx, handler, event.message().clone())
            .await;
        self.ctx.set_handling(None);
        match handled {
            Ok(Handled::Yes) => {}
            Ok(Handled::No) => {
                metrics.inc_drop(DropReason::UnknownType);
                debug!(handler = %handler, "no handler for layer message type; dropped");
            }
            Err(_) if self.ctx.slow_consumer => {}
            Err(err) => {
                Metrics::incr(&metrics.handler_errors);
                warn!(error = %err, handler = %handler, channel = %self.ctx.channel_name(), "consumer handler failed");
                self.force(state, CloseReason::HandlerError, CLOSE_INTERNAL_ERROR);
            }
        }
    }

    /// Keep-alive step: the timer fired. `Some` ends the loop.
    fn keep_alive(&mut self, state: &mut LoopState, metrics: &Metrics) -> Option<Ending> {
        match state.keepalive.tick(Instant::now()) {
            Tick::Lifetime => self.force(state, CloseReason::Lifetime, CLOSE_NORMAL),
            Tick::PingTimeout => {
                // autobahn's autoPingTimeout drops the connection without a close handshake;
                // so do we (disconnect sees 1006).
                Metrics::incr(&metrics.ping_timeouts);
                debug!("ping timeout");
                return Some(Ending::Dropped(CloseReason::PingTimeout));
            }
            Tick::Ping => state.ping_due = true,
            Tick::Wait => {}
        }
        None
    }

    /// Close step: the close handshake the ending calls for, bounded by `close_timeout`.
    async fn close<Si, St>(
        &mut self,
        ending: Ending,
        sink: &mut Si,
        stream: &mut St,
        needs_flush: &mut bool,
        config: &ServerConfig,
        metrics: &Metrics,
    ) -> Closed
    where
        Si: Sink<WsMessage, Error = WsError> + Unpin + Send,
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin + Send,
    {
        match ending {
            Ending::Close {
                code,
                reason,
                read_reply,
            } => {
                self.ctx.outbound.push_back(close_frame(code));
                let outbound = &mut self.ctx.outbound;
                let flush_and_wait = async {
                    let flushed = std::future::poll_fn(|cx| {
                        // A ping still due is moot once the close frame goes out.
                        poll_write(&mut *sink, outbound, &mut false, needs_flush, metrics, cx)
                    })
                    .await;
                    if flushed.is_ok() && read_reply {
                        // Wait for the client's close reply (data frames after our close are
                        // ignored, as RFC 6455 allows).
                        while let Some(Ok(msg)) = stream.next().await {
                            if msg.is_close() {
                                break;
                            }
                        }
                    }
                };
                if tokio::time::timeout(config.close_timeout, flush_and_wait)
                    .await
                    .is_err()
                {
                    debug!("close handshake timed out");
                }
                Closed {
                    reason,
                    code: Some(code),
                }
            }
            Ending::ClientClosed(code) => {
                // Data queued after the client's close can no longer be sent.
                self.ctx.outbound.clear();
                let _ = tokio::time::timeout(config.close_timeout, sink.flush()).await;
                Closed {
                    reason: CloseReason::ClientClosed,
                    code,
                }
            }
            Ending::Dropped(reason) => Closed {
                reason,
                code: Some(CLOSE_ABNORMAL),
            },
        }
    }

    /// Finish step: `disconnect`, then the group cleanup and the presence record, whatever
    /// `disconnect` did.
    async fn finish(&mut self, closed: Closed, presence: Option<PresenceGuard>, channel: &str) {
        if let Err(err) = self.consumer.disconnect(&mut self.ctx, closed.code).await {
            warn!(error = %err, channel = %channel, "consumer disconnect failed");
        }
        self.ctx.discard_all().await;
        if let Some(presence) = presence {
            presence.close().await;
        }
        debug!(reason = ?closed.reason, code = ?closed.code, "websocket closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(websocket_timeout: Option<Duration>) -> ServerConfig {
        ServerConfig {
            websocket_timeout,
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(30),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn disconnect_codes_default_to_4401_unless_sendable() {
        let with = |v: herald_core::Value| herald_messaging::disconnect(0).with("code", v);
        assert_eq!(disconnect_code(&herald_messaging::disconnect(4000)), 4000);
        assert_eq!(disconnect_code(&herald_messaging::disconnect(1000)), 1000);
        assert_eq!(
            disconnect_code(&herald_core::Message::with_type("herald.disconnect")),
            4401
        );
        for bad in [1006_i64, 1011, 2999, 5000, -1, 70_000] {
            assert_eq!(disconnect_code(&with(bad.into())), 4401, "{bad}");
        }
        assert_eq!(disconnect_code(&with("4000".into())), 4401);
    }

    #[test]
    fn keepalive_timers_fire_on_a_shared_grid_never_early() {
        let start = Instant::now();
        let grain = KEEPALIVE_GRAIN;
        for offset_ms in [0, 1, 37, 99, 100, 101, 250, 20_000, 20_033] {
            let deadline = start + Duration::from_millis(offset_ms);
            let fired = coarse(deadline);
            assert!(fired >= deadline, "{offset_ms} ms: early");
            assert!(
                fired - deadline < grain,
                "{offset_ms} ms: more than a step late"
            );
            // On the grid: rounding again changes nothing.
            assert_eq!(coarse(fired), fired);
        }
        // Deadlines within one step wake together.
        let a = coarse(start + Duration::from_millis(20_001));
        let b = coarse(start + Duration::from_millis(20_001) + grain / 2);
        assert!(a == b || b - a == grain, "{:?}", b - a);
        let first = coarse(start + Duration::from_millis(5));
        let same = coarse(first - grain + Duration::from_millis(1));
        assert_eq!(first, same);
    }

    #[test]
    fn silence_brings_a_ping_then_a_timeout() {
        let start = Instant::now();
        let mut clock = KeepAlive::new(start, &config(None));
        assert_eq!(clock.deadline(), start + Duration::from_secs(20));
        // Woken early: nothing to do yet.
        assert_eq!(clock.tick(start + Duration::from_secs(5)), Tick::Wait);
        let pinged = start + Duration::from_secs(20);
        assert_eq!(clock.tick(pinged), Tick::Ping);
        assert_eq!(clock.deadline(), pinged + Duration::from_secs(30));
        assert_eq!(clock.tick(pinged + Duration::from_secs(29)), Tick::Wait);
        assert_eq!(
            clock.tick(pinged + Duration::from_secs(30)),
            Tick::PingTimeout
        );
    }

    #[test]
    fn any_frame_cancels_the_ping_and_restarts_the_interval() {
        let start = Instant::now();
        let mut clock = KeepAlive::new(start, &config(None));
        let pinged = start + Duration::from_secs(20);
        assert_eq!(clock.tick(pinged), Tick::Ping);
        let heard = pinged + Duration::from_secs(1);
        clock.seen(heard);
        assert_eq!(clock.deadline(), heard + Duration::from_secs(20));
        // The ping timeout no longer applies; the next ping is due a full interval later.
        assert_eq!(clock.tick(heard + Duration::from_secs(19)), Tick::Wait);
        assert_eq!(clock.tick(heard + Duration::from_secs(20)), Tick::Ping);
    }

    #[test]
    fn the_lifetime_caps_every_deadline_and_wins() {
        let start = Instant::now();
        let mut clock = KeepAlive::new(start, &config(Some(Duration::from_secs(7))));
        assert_eq!(clock.deadline(), start + Duration::from_secs(7));
        assert_eq!(clock.tick(start + Duration::from_secs(7)), Tick::Lifetime);
        // Even with a ping outstanding.
        let mut clock = KeepAlive::new(start, &config(Some(Duration::from_secs(25))));
        assert_eq!(clock.tick(start + Duration::from_secs(20)), Tick::Ping);
        assert_eq!(clock.deadline(), start + Duration::from_secs(25));
        assert_eq!(clock.tick(start + Duration::from_secs(25)), Tick::Lifetime);
    }
}
