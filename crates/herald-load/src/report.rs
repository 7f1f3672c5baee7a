//! The results of a run, serialized as one JSON line for the benchmark scripts.

use std::collections::BTreeMap;

use serde::Serialize;

/// Outcome of the connect phase.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ConnectReport {
    /// Sockets attempted.
    pub attempted: u64,
    /// Handshakes that completed (HTTP 101).
    pub connected: u64,
    /// Handshakes that failed or timed out.
    pub failed: u64,
    /// Failure reasons (`timeout`, `http_403`, `io_connection_refused`, ...) with counts.
    pub failures: BTreeMap<String, u64>,
    /// From the first attempt to the last successful handshake, in milliseconds.
    pub time_to_all_connected_ms: f64,
    /// Median time of one connect + handshake, in milliseconds.
    pub handshake_p50_ms: f64,
    /// 99th percentile time of one connect + handshake, in milliseconds.
    pub handshake_p99_ms: f64,
    /// Server RSS before the first connect, in bytes.
    pub rss_before_bytes: Option<u64>,
    /// Server RSS right after the connect phase, in bytes.
    pub rss_connected_bytes: Option<u64>,
}

/// Latency percentiles from `sent_at` to arrival, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[non_exhaustive]
pub struct LatencyReport {
    /// Frames that carried a numeric `sent_at`.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct LoadReport {
    /// The connect phase.
    pub connect: ConnectReport,
    /// Frames received over all sockets (text and binary; pings and pongs not counted).
    pub frames: u64,
    /// The expected frame count, if one was set.
    pub expected_frames: Option<u64>,
    /// True if `expected_frames` was reached before the deadline.
    pub complete: bool,
    /// From the first frame to the last one, in seconds.
    pub window_s: f64,
    /// `frames / window_s` (0 with fewer than two frames).
    pub frames_per_s: f64,
    /// `sent_at` → arrival latency.
    pub latency: LatencyReport,
    /// Bytes read from all sockets during the receive phase: the frames as sent on the wire
    /// (headers included, compressed when `permessage-deflate` was agreed), plus pings.
    pub wire_bytes: u64,
    /// Sockets the server closed or dropped during the receive phase.
    pub disconnects: u64,
    /// Length of the receive phase, in seconds.
    pub receive_phase_s: f64,
    /// CPU seconds (user + system) the server process used during the receive phase, with
    /// `--server-pid` (Linux, 10 ms resolution): for an idle run, what holding the sockets
    /// costs (pings included), without the handshakes.
    pub server_cpu_receive_s: Option<f64>,
    /// Server RSS at the end of the receive phase, in bytes.
    pub rss_end_bytes: Option<u64>,
    /// `(rss_end - rss_before) / connected`, in bytes: what one open socket costs the server.
    pub rss_per_socket_bytes: Option<f64>,
}
