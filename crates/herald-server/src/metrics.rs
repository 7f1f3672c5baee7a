//! Atomic counters and their Prometheus text exposition (`GET /metrics`).
//!
//! Counters are plain relaxed atomics: each is independent and only ever read for reporting,
//! so no ordering between them is needed. The channel layer's own numbers come in through
//! [`MetricsSource`], because this crate cannot see `herald-redis` types.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Adds lines to the `/metrics` page: implemented by the CLI for the Redis layer.
///
/// ```
/// use herald_server::MetricsSource;
/// #[derive(Debug)]
/// struct Pool;
/// impl MetricsSource for Pool {
///     fn extra_metrics(&self, out: &mut String) {
///         out.push_str("# TYPE redis_pool_connections gauge\nredis_pool_connections 4\n");
///     }
/// }
/// ```
pub trait MetricsSource: Send + Sync + std::fmt::Debug + 'static {
    /// Appends complete Prometheus text-format lines (with `# TYPE` comments) to `out`.
    fn extra_metrics(&self, out: &mut String);
}

/// Why an outbound layer message was dropped instead of sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The message had no string `type`.
    MissingType,
    /// The handler name would start with `_` (Channels: "Malformed type in message").
    MalformedType,
    /// No handler for the type on this route (Channels raises; Herald counts and drops).
    UnknownType,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::MissingType => "missing_type",
            DropReason::MalformedType => "malformed_type",
            DropReason::UnknownType => "unknown_type",
        }
    }

    const ALL: [DropReason; 3] = [
        DropReason::MissingType,
        DropReason::MalformedType,
        DropReason::UnknownType,
    ];
}

/// The server's counters. Shared by every connection through the [`App`](crate::App).
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) connections_current: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) handshakes_rejected: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) frames_deflated: AtomicU64,
    pub(crate) drops: [AtomicU64; 4],
    pub(crate) auth_failures: AtomicU64,
    pub(crate) origin_rejects: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) rate_limit_closes: AtomicU64,
    pub(crate) oversize_closes: AtomicU64,
    pub(crate) ping_timeouts: AtomicU64,
    pub(crate) connection_limit_rejects: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) sse_connections_current: AtomicU64,
    pub(crate) sse_connections_total: AtomicU64,
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    pub(crate) fn inc_drop(&self, reason: DropReason) {
        let idx = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        inc(&self.drops[idx]);
    }

    pub(crate) fn incr(counter: &AtomicU64) {
        inc(counter);
    }

    /// Accepted sockets currently open.
    pub fn connections_current(&self) -> u64 {
        get(&self.connections_current)
    }

    /// Event streams currently open (also counted in
    /// [`connections_current`](Self::connections_current)).
    pub fn sse_connections_current(&self) -> u64 {
        get(&self.sse_connections_current)
    }

    /// Event streams accepted since start (also counted in
    /// [`connections_total`](Self::connections_total)).
    pub fn sse_connections_total(&self) -> u64 {
        get(&self.sse_connections_total)
    }

    /// Sockets accepted since start.
    pub fn connections_total(&self) -> u64 {
        get(&self.connections_total)
    }

    /// Data frames received from clients.
    pub fn frames_in(&self) -> u64 {
        get(&self.frames_in)
    }

    /// Data frames written to clients.
    pub fn frames_out(&self) -> u64 {
        get(&self.frames_out)
    }

    /// Data frames written compressed (`permessage-deflate`).
    pub fn frames_deflated(&self) -> u64 {
        get(&self.frames_deflated)
    }

    /// Layer messages dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        let idx = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        get(&self.drops[idx])
    }

    /// Layer messages whose type had no handler (same as `drops(UnknownType)`).
    pub fn unknown_message_types(&self) -> u64 {
        self.drops(DropReason::UnknownType)
    }

    /// Handshakes refused because the user was anonymous where a route needs a user, or
    /// because the authenticator failed.
    pub fn auth_failures(&self) -> u64 {
        get(&self.auth_failures)
    }

    /// Handshakes refused by the origin check.
    pub fn origin_rejects(&self) -> u64 {
        get(&self.origin_rejects)
    }

    /// Sockets closed because their outbound queue overflowed.
    pub fn slow_consumer_closes(&self) -> u64 {
        get(&self.slow_consumer_closes)
    }

    /// Sockets closed by the inbound rate limit.
    pub fn rate_limit_closes(&self) -> u64 {
        get(&self.rate_limit_closes)
    }

    /// Sockets closed with 1009 for an oversized frame or message.
    pub fn oversize_closes(&self) -> u64 {
        get(&self.oversize_closes)
    }

    /// Sockets dropped because no pong came back in time.
    pub fn ping_timeouts(&self) -> u64 {
        get(&self.ping_timeouts)
    }

    /// Handshakes refused by the per-user or per-IP connection caps.
    pub fn connection_limit_rejects(&self) -> u64 {
        get(&self.connection_limit_rejects)
    }

    /// Handshakes refused for any reason (bad request, origin, auth, consumer refused, caps).
    pub fn handshakes_rejected(&self) -> u64 {
        get(&self.handshakes_rejected)
    }

    /// Consumer handlers that returned an error (the socket is closed with 1011).
    pub fn handler_errors(&self) -> u64 {
        get(&self.handler_errors)
    }

    /// Writes every counter in Prometheus text exposition format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "herald_connections_current",
            "gauge",
            "Accepted WebSocket connections currently open.",
            self.connections_current(),
        );
        metric(
            "herald_connections_total",
            "counter",
            "WebSocket connections accepted since start.",
            self.connections_total(),
        );
        metric(
            "herald_sse_connections_current",
            "gauge",
            "Accepted Server-Sent Events streams currently open (included in herald_connections_current).",
            self.sse_connections_current(),
        );
        metric(
            "herald_sse_connections_total",
            "counter",
            "Server-Sent Events streams accepted since start (included in herald_connections_total).",
            self.sse_connections_total(),
        );
        metric(
            "herald_handshakes_rejected_total",
            "counter",
            "WebSocket handshakes refused before accept.",
            self.handshakes_rejected(),
        );
        metric(
            "herald_frames_in_total",
            "counter",
            "Data frames received from clients.",
            self.frames_in(),
        );
        metric(
            "herald_frames_out_total",
            "counter",
            "Data frames written to clients.",
            self.frames_out(),
        );
        metric(
            "herald_frames_deflated_total",
            "counter",
            "Data frames written compressed with permessage-deflate.",
            self.frames_deflated(),
        );
        metric(
            "herald_auth_failures_total",
            "counter",
            "Handshakes refused for missing or failed authentication.",
            self.auth_failures(),
        );
        metric(
            "herald_origin_rejects_total",
            "counter",
            "Handshakes refused by the Origin check.",
            self.origin_rejects(),
        );
        metric(
            "herald_slow_consumer_closes_total",
            "counter",
            "Sockets closed because their outbound queue overflowed.",
            self.slow_consumer_closes(),
        );
        metric(
            "herald_rate_limit_closes_total",
            "counter",
            "Sockets closed by the inbound rate limit.",
            self.rate_limit_closes(),
        );
        metric(
            "herald_oversize_closes_total",
            "counter",
            "Sockets closed with 1009 for an oversized frame or message.",
            self.oversize_closes(),
        );
        metric(
            "herald_ping_timeouts_total",
            "counter",
            "Sockets dropped because no pong arrived in time.",
            self.ping_timeouts(),
        );
        metric(
            "herald_connection_limit_rejects_total",
            "counter",
            "Handshakes refused by per-user or per-IP caps.",
            self.connection_limit_rejects(),
        );
        metric(
            "herald_handler_errors_total",
            "counter",
            "Consumer handlers that failed (socket closed with 1011).",
            self.handler_errors(),
        );
        metric(
            "herald_unknown_message_types_total",
            "counter",
            "Layer messages whose type has no handler on the route.",
            self.unknown_message_types(),
        );
        let _ = writeln!(
            out,
            "# HELP herald_dropped_messages_total Layer messages dropped instead of sent.\n\
             # TYPE herald_dropped_messages_total counter"
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "herald_dropped_messages_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.drops(reason)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_includes_counters_and_drop_labels() {
        let m = Metrics::default();
        Metrics::incr(&m.frames_in);
        m.inc_drop(DropReason::UnknownType);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("herald_frames_in_total 1\n"));
        assert!(out.contains("herald_dropped_messages_total{reason=\"unknown_type\"} 1\n"));
        assert!(out.contains("herald_unknown_message_types_total 1\n"));
        assert!(out.contains("# TYPE herald_connections_current gauge\n"));
    }
}
