//! Bounded, loopback-only WebSocket load generator for Herald fan-out benchmarks.
//!
//! It opens N real WebSocket connections (each with a real Django session cookie), counts every
//! frame that arrives, and records the latency from the `sent_at` timestamp the sender put into
//! the message to the frame's arrival in an HDR histogram. The same tool measures Daphne and
//! Herald, so both are seen through the same client.
//!
//! A run has two phases, so that a sender can be started in between:
//!
//! 1. [`Swarm::connect`] opens the sockets (all at once, or with a concurrency limit) and
//!    returns once every handshake has finished or failed. Each socket starts counting frames
//!    as soon as it is open.
//! 2. [`Swarm::finish`] waits until the expected number of frames arrived or the deadline
//!    passed, closes the sockets, and returns a [`LoadReport`].
//!
//! ```no_run
//! # async fn demo() -> herald_load::Result<()> {
//! use herald_load::{LoadConfig, Swarm};
//! use std::time::Duration;
//!
//! let config = LoadConfig::new("ws://127.0.0.1:8000/ws/tasks/")?
//!     .with_connections(1_000)
//!     .with_cookies(vec!["sessionid=abc".to_owned()])
//!     .with_expect_frames(Some(100_000))
//!     .with_deadline(Duration::from_secs(60));
//! let swarm = Swarm::connect(config).await?;
//! // ... start the sender here ...
//! let report = swarm.finish().await;
//! println!("{}", serde_json::to_string(&report).unwrap());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! * `config` — [`LoadConfig`]: what to connect to, how many, how long; `DEFAULT_*` consts.
//! * `target` — the loopback-only rule: a run never leaves this machine.
//! * `latency` — finds `sent_at` in a frame without a full JSON parse (the per-frame hot path).
//! * `rss` — reads a process's resident memory from `/proc/<pid>/status`.
//! * `limits` — raises `RLIMIT_NOFILE`, since tens of thousands of sockets need as many fds.
//! * `swarm` — the connections themselves: connect phase, per-socket reader tasks, finish.
//! * `report` — [`LoadReport`], the JSON line the benchmark scripts read.
//! * `send` — the Rust sender: [`run_sender`] sends the Python sender's messages through any
//!   `ChannelLayer` (herald-redis in the benchmark).
//! * `flaky` — the reconnect benchmarks' client ([`Fleet`]): one user per client, a user stream
//!   and a broadcast stream, connections cut at random or lost to a deploy, resumed with
//!   positions against herald; counts delivered, duplicates, out-of-order and replay latency.
//! * `error` — the opaque [`Error`] with its [`ErrorKind`].

mod config;
mod error;
mod flaky;
mod latency;
mod limits;
mod report;
mod rss;
mod send;
mod swarm;
mod target;

pub use config::{
    DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTIONS, DEFAULT_DEADLINE,
    DEFAULT_SOCKETS_PER_SOURCE_IP, LoadConfig, MAX_CONNECTIONS, MAX_DURATION,
};
pub use error::{Error, ErrorKind, Result};
pub use flaky::{
    FlakyConfig, FlakyReport, Fleet, FleetConnect, MISSING_LISTED, Percentiles, StreamReport,
};
pub use latency::{parse_sent_at, unix_now_secs};
pub use limits::raise_nofile_limit;
pub use report::{ConnectReport, LatencyReport, LoadReport};
pub use send::{DEFAULT_SEND_BATCH, SendPlan, SendReport, Shape, run_sender};
pub use swarm::{Progress, Swarm};
pub use target::require_loopback;
