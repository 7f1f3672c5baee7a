//! The per-connection task: one `select!` loop over shutdown, outbound writes, client frames,
//! layer messages and timers, then the close sequence (close frame, `disconnect`, group
//! cleanup).
//!
//! The loop is generic over any `Sink`/`Stream` of tungstenite messages, so consumers are
//! tested over in-memory channels; the server passes the two halves of a
//! `tokio_tungstenite::WebSocketStream`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use herald_core::Message;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage, error::ProtocolError,
};
use tracing::{Instrument, debug, debug_span, trace, warn};

use crate::app::discard_all;
use crate::consumer::{Consumer, Frame, Handled};
use crate::context::{
    CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_RATE_LIMITED,
    CLOSE_TOO_BIG, Context, State, close_frame,
};
use crate::fanout::SharedText;
use crate::gate::Gate;
use crate::groups::{Delivery, Inbox};
use crate::limits::{CapPermit, TokenBucket};
use crate::metrics::{DropReason, Metrics};
use crate::shutdown::ShutdownSignal;

/// Frames handed to tungstenite between flushes; bounds its internal write buffer.
const WRITE_BATCH: usize = 16;
/// Group messages handled per wake-up before the loop looks at its other branches again.
const INBOX_BATCH: usize = 16;

/// An accepted connection waiting for its socket. Made by [`App::connect`](crate::App::connect).
pub struct Connection {
    consumer: Box<dyn Consumer>,
    ctx: Context,
    _permit: crate::limits::CapPermit,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// RFC 6455 1007: a text message that is not valid UTF-8.
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// RFC 6455 1002: a protocol violation (bad opcode, RSV bits, unmasked or stray frame).
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

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

/// Writes queued frames: `poll_ready` before taking a frame from the queue, so a frame leaves
/// the queue only when the sink has room for it (nothing is lost if this future is dropped).
fn drive_writes<Si>(
    sink: &mut Si,
    queue: &mut std::collections::VecDeque<WsMessage>,
    needs_flush: &mut bool,
    metrics: &Metrics,
    cx: &mut TaskContext<'_>,
) -> Poll<Result<(), WsError>>
where
    Si: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut batch = 0;
    while !queue.is_empty() {
        if batch == WRITE_BATCH {
            ready!(Pin::new(&mut *sink).poll_flush(cx))?;
            *needs_flush = false;
            batch = 0;
        }
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        let Some(frame) = queue.pop_front() else {
            break;
        };
        if frame.is_text() || frame.is_binary() {
            Metrics::incr(&metrics.frames_out);
            trace!(bytes = frame.len(), "write frame");
        }
        Pin::new(&mut *sink).start_send(frame)?;
        *needs_flush = true;
        batch += 1;
    }
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
        discard_all(&mut self.ctx).await;
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
            .map(|(registry, id)| registry.open(Arc::clone(&channel), &id.username));
        // Layer messages, the socket's own channel and its groups in one order: filled by
        // the layer (see `groups`), bounded.
        let mut inbox = self.ctx.inbox.take();
        let start = Instant::now();
        let mut bucket = config.rate_limit.map(|l| TokenBucket::new(l, start));
        let lifetime_deadline = config.websocket_timeout.map(|t| start + t);
        let mut last_seen = start;
        let mut ping_sent: Option<Instant> = None;
        let next_deadline = |last_seen: Instant, ping_sent: Option<Instant>| {
            let keepalive = match ping_sent {
                Some(sent) => sent + config.ping_timeout,
                None => last_seen + config.ping_interval,
            };
            lifetime_deadline.map_or(keepalive, |l| l.min(keepalive))
        };
        let timer = tokio::time::sleep_until(next_deadline(last_seen, ping_sent));
        tokio::pin!(timer);
        let mut needs_flush = false;
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
        // Reason for a server-initiated close decided by the runtime (not the consumer).
        let mut forced: Option<CloseReason> = None;

        let ending = loop {
            if let State::Closing(code) = self.ctx.state() {
                let reason = if self.ctx.slow_consumer {
                    Metrics::incr(&metrics.slow_consumer_closes);
                    debug!("slow consumer: outbound queue full");
                    CloseReason::SlowConsumer
                } else {
                    forced.unwrap_or(CloseReason::ConsumerClosed)
                };
                break Ending::Close {
                    code,
                    reason,
                    // After an oversized or invalid frame the read side is unusable.
                    read_reply: !matches!(reason, CloseReason::TooBig | CloseReason::InvalidFrame),
                };
            }
            let has_output = !self.ctx.outbound.is_empty() || needs_flush;
            let outbound = &mut self.ctx.outbound;

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
                    forced = Some(CloseReason::Shutdown);
                    self.ctx.force_close(CLOSE_GOING_AWAY);
                }

                res = std::future::poll_fn(|cx| {
                    drive_writes(&mut sink, outbound, &mut needs_flush, metrics, cx)
                }), if has_output => {
                    if let Err(err) = res {
                        debug!(error = %err, "write failed");
                        break Ending::Dropped(CloseReason::Dropped);
                    }
                }

                frame = std::future::poll_fn(|cx| read_gate.poll(cx, |cx| stream.poll_next_unpin(cx))) => {
                    let msg = match frame {
                        None => break Ending::Dropped(CloseReason::Dropped),
                        Some(Err(WsError::Capacity(err))) => {
                            debug!(error = %err, "frame too big");
                            Metrics::incr(&metrics.oversize_closes);
                            forced = Some(CloseReason::TooBig);
                            self.ctx.force_close(CLOSE_TOO_BIG);
                            continue;
                        }
                        // tungstenite reports these but sends no close frame itself;
                        // RFC 6455 §7.4.1 wants 1007 for a text message that is not UTF-8 and
                        // 1002 for a protocol violation (Daphne/autobahn send them too).
                        Some(Err(WsError::Utf8(err))) => {
                            debug!(error = %err, "text frame is not utf-8");
                            forced = Some(CloseReason::InvalidFrame);
                            self.ctx.force_close(CLOSE_INVALID_PAYLOAD);
                            continue;
                        }
                        Some(Err(WsError::Protocol(err)))
                            if err != ProtocolError::ResetWithoutClosingHandshake =>
                        {
                            debug!(error = %err, "protocol violation");
                            forced = Some(CloseReason::InvalidFrame);
                            self.ctx.force_close(CLOSE_PROTOCOL_ERROR);
                            continue;
                        }
                        Some(Err(err)) => {
                            debug!(error = %err, "read failed");
                            break Ending::Dropped(CloseReason::Dropped);
                        }
                        Some(Ok(msg)) => msg,
                    };
                    last_seen = Instant::now();
                    ping_sent = None;
                    let frame = match msg {
                        WsMessage::Text(text) => Frame::Text(SharedText::from_inner(text)),
                        WsMessage::Binary(bytes) => Frame::Binary(bytes),
                        WsMessage::Ping(_) => {
                            // tungstenite queued the pong; make sure it gets flushed. Pings
                            // spend rate-limit tokens too: each one makes us write a pong.
                            needs_flush = true;
                            if rate_limited(&mut bucket, last_seen) {
                                Metrics::incr(&metrics.rate_limit_closes);
                                debug!("inbound rate limit exceeded by pings");
                                forced = Some(CloseReason::RateLimited);
                                self.ctx.force_close(CLOSE_RATE_LIMITED);
                            }
                            continue;
                        }
                        WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                        WsMessage::Close(close) => {
                            // tungstenite queued the close reply; flushed in the close sequence.
                            break Ending::ClientClosed(close.map(|c| u16::from(c.code)));
                        }
                    };
                    Metrics::incr(&metrics.frames_in);
                    if rate_limited(&mut bucket, last_seen) {
                        Metrics::incr(&metrics.rate_limit_closes);
                        debug!("inbound rate limit exceeded");
                        forced = Some(CloseReason::RateLimited);
                        self.ctx.force_close(CLOSE_RATE_LIMITED);
                        continue;
                    }
                    if let Err(err) = self.consumer.receive(&mut self.ctx, frame).await
                        && !self.ctx.slow_consumer
                    {
                        Metrics::incr(&metrics.handler_errors);
                        warn!(error = %err, channel = %channel, "consumer receive failed");
                        forced = Some(CloseReason::HandlerError);
                        self.ctx.force_close(CLOSE_INTERNAL_ERROR);
                    }
                }

                delivery = std::future::poll_fn(|cx| poll_delivery(&mut inbox, cx)) => {
                    // Handle what is already queued too (up to a batch): one select! round per
                    // group message would re-poll every other branch each time.
                    let mut next = Some(delivery);
                    let mut handled = 0;
                    while let Some(delivery) = next.take() {
                        match delivery {
                            Delivery::Message(message) => {
                                self.dispatch(message, metrics, &mut forced).await;
                            }
                            Delivery::Overflow => self.ctx.inbox_overflowed(),
                        }
                        handled += 1;
                        if handled < INBOX_BATCH && self.ctx.is_open() {
                            next = inbox.as_mut().and_then(Inbox::try_recv);
                        }
                    }
                }

                () = &mut timer => {
                    let now = Instant::now();
                    if lifetime_deadline.is_some_and(|d| now >= d) {
                        forced = Some(CloseReason::Lifetime);
                        self.ctx.force_close(CLOSE_NORMAL);
                    } else if let Some(sent) = ping_sent {
                        if now >= sent + config.ping_timeout {
                            // autobahn's autoPingTimeout drops the connection without a close
                            // handshake; so do we (disconnect sees 1006).
                            Metrics::incr(&metrics.ping_timeouts);
                            debug!("ping timeout");
                            break Ending::Dropped(CloseReason::PingTimeout);
                        }
                    } else if now >= last_seen + config.ping_interval {
                        self.ctx.outbound.push_back(WsMessage::Ping(Default::default()));
                        ping_sent = Some(now);
                    }
                    timer.as_mut().reset(next_deadline(last_seen, ping_sent));
                }
            }
        };
        drop(inbox);

        let closed = match ending {
            Ending::Close {
                code,
                reason,
                read_reply,
            } => {
                self.ctx.outbound.push_back(close_frame(code));
                let flush_and_wait = async {
                    let flushed = std::future::poll_fn(|cx| {
                        drive_writes(
                            &mut sink,
                            &mut self.ctx.outbound,
                            &mut needs_flush,
                            metrics,
                            cx,
                        )
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
        };
        drop(sink);
        drop(stream);
        if let Err(err) = self.consumer.disconnect(&mut self.ctx, closed.code).await {
            warn!(error = %err, channel = %channel, "consumer disconnect failed");
        }
        discard_all(&mut self.ctx).await;
        if let Some(presence) = presence {
            presence.close().await;
        }
        debug!(reason = ?closed.reason, code = ?closed.code, "websocket closed");
        closed
    }

    /// Channels' dispatch: `type` → handler name → [`Consumer::handle`].
    async fn dispatch(
        &mut self,
        message: Message,
        metrics: &Metrics,
        forced: &mut Option<CloseReason>,
    ) {
        // Computed once per message for all the sockets it fans out to.
        let Some(handler) = crate::fanout::handler_once(&message) else {
            match message.msg_type() {
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
        match self.consumer.handle(&mut self.ctx, &handler, message).await {
            Ok(Handled::Yes) => {}
            Ok(Handled::No) => {
                metrics.inc_drop(DropReason::UnknownType);
                debug!(handler = %handler, "no handler for layer message type; dropped");
            }
            Err(_) if self.ctx.slow_consumer => {}
            Err(err) => {
                Metrics::incr(&metrics.handler_errors);
                warn!(error = %err, handler = %handler, channel = %self.ctx.channel_name(), "consumer handler failed");
                *forced = Some(CloseReason::HandlerError);
                self.ctx.force_close(CLOSE_INTERNAL_ERROR);
            }
        }
    }
}
