//! The reconnect benchmarks' client: sockets whose connection is lost and comes back, counting
//! per stream what arrived, what arrived twice or out of order, and how long the replay of what
//! was missed took.
//!
//! Each client is one user (its cookie) with two streams: its user group (`user_<name>`,
//! `data.seq` counted per user) and a broadcast group every client joins (`task_<id>`, joined
//! with the `/ws/tasks/` consumer's `subscribe`; `data.seq` global, `data.stream` names it).
//! The sender is the mixed plan of [`SendPlan::Mixed`](crate::SendPlan::Mixed).
//!
//! * **Cuts** ([`FlakyConfig::cut_every`]): while the fleet is in [`Fleet::start_cuts`], each
//!   client drops its TCP connection at random times (the interval uniform within
//!   `cut_every * (1 ± jitter)`), without a close frame and with `SO_LINGER` 0 (the kernel
//!   sends a reset, as when a network path dies and the peer's next packet is refused), stays
//!   offline for `offline * (1 ± jitter)` and connects again to the same URL.
//! * **Server gone** (a deploy): when the server closes or resets the socket, the client waits
//!   like the browser client's first retry (half of [`FlakyConfig::reconnect_delay`] plus a
//!   random half) and connects to the next URL of [`FlakyConfig::urls`], retrying with doubling
//!   delays (capped at 8x) and rotating through the URLs.
//! * **Recover** ([`FlakyConfig::recover`]): the URL gets `?recover=1` and the first frame is
//!   `{"action": "resume", "groups": {...}}` with the last position the client saw per group
//!   (from the frames' `herald` key and the `herald.resumed` replies), as the browser client
//!   does. Without it the client sends `{"action": "subscribe", "task_id": ...}` on every
//!   connect, like a page that simply reconnects.
//!
//! Replay latency: from a reconnect's completed handshake to the arrival of the last message
//! that was sent (`sent_at`) before that handshake and had not arrived yet, i.e. the last
//! message the client missed while it was away.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::warn;

use crate::config::{MAX_CONNECTIONS, MAX_DURATION};
use crate::error::{Error, ErrorKind, Result};
use crate::latency::{latency_micros, parse_sent_at, unix_now_secs};
use crate::target::require_loopback;

/// Highest latency the histograms track (1 hour), in microseconds.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;
/// A `data.seq` above this is counted as malformed instead of growing a bitmap.
const MAX_SEQ: u64 = 10_000_000;
/// How many lost messages a report lists by name.
pub const MISSING_LISTED: usize = 50;
/// Read buffer per socket (see `swarm.rs`: tungstenite's default is 128 KiB per socket).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Configuration of a reconnect run. Build it with [`FlakyConfig::new`] and the `with_*`
/// setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FlakyConfig {
    /// The `ws://` URLs (loopback only); client `i` starts on `urls[i % len]`.
    pub urls: Vec<String>,
    /// How many clients.
    pub connections: usize,
    /// `Cookie` header values; client `i` uses `cookies[i % len]` (one user per client).
    pub cookies: Vec<String>,
    /// Resume with positions (`?recover=1`, herald) or just reconnect (Daphne).
    pub recover: bool,
    /// The broadcast stream's task id: every client subscribes to `task_<id>`.
    pub broadcast_task: String,
    /// Mean time between cuts while cutting; `None` never cuts.
    pub cut_every: Option<Duration>,
    /// Mean time offline after a cut.
    pub offline: Duration,
    /// Relative jitter of both: uniform within `mean * (1 ± jitter)`, 0..=1.
    pub jitter: f64,
    /// Initial connects in flight at once.
    pub concurrency: NonZeroUsize,
    /// Bound on one connect + handshake + join.
    pub connect_timeout: Duration,
    /// First retry delay after the server went away (half fixed, half random), doubling.
    pub reconnect_delay: Duration,
    /// Seed of the clients' random cut times (client `i` uses `seed + i`).
    pub seed: u64,
}

impl FlakyConfig {
    /// A configuration for `urls` (at least one) with every other field at its default: one
    /// client, no cookie, no recovery, broadcast task `bcast`, no cuts, 2 s offline, jitter 0.5,
    /// 32 connects in flight, 30 s connect timeout, 1 s reconnect delay.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTarget`] if a URL is not `ws://` on loopback, [`ErrorKind::Config`]
    /// for no URL.
    pub fn new(urls: Vec<String>) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::new(ErrorKind::Config, "at least one URL is needed"));
        }
        for url in &urls {
            require_loopback(url)?;
        }
        Ok(FlakyConfig {
            urls,
            connections: 1,
            cookies: Vec::new(),
            recover: false,
            broadcast_task: "bcast".to_owned(),
            cut_every: None,
            offline: Duration::from_secs(2),
            jitter: 0.5,
            concurrency: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            connect_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(1),
            seed: 1,
        })
    }

    /// Sets [`connections`](Self::connections).
    pub fn with_connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Sets [`cookies`](Self::cookies).
    pub fn with_cookies(mut self, cookies: Vec<String>) -> Self {
        self.cookies = cookies;
        self
    }

    /// Sets [`recover`](Self::recover).
    pub fn with_recover(mut self, recover: bool) -> Self {
        self.recover = recover;
        self
    }

    /// Sets [`broadcast_task`](Self::broadcast_task).
    pub fn with_broadcast_task(mut self, task: impl Into<String>) -> Self {
        self.broadcast_task = task.into();
        self
    }

    /// Sets [`cut_every`](Self::cut_every) and [`offline`](Self::offline).
    pub fn with_cuts(mut self, every: Option<Duration>, offline: Duration) -> Self {
        self.cut_every = every;
        self.offline = offline;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`concurrency`](Self::concurrency).
    pub fn with_concurrency(mut self, concurrency: NonZeroUsize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`reconnect_delay`](Self::reconnect_delay).
    pub fn with_reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::new(ErrorKind::Config, msg.to_owned()));
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return bad("connections out of range");
        }
        if self.cookies.is_empty() {
            return bad("every client needs a session cookie (one user per client)");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad("jitter must be within 0..=1");
        }
        if self.connect_timeout.is_zero()
            || self.connect_timeout > MAX_DURATION
            || self.offline > MAX_DURATION
            || self
                .cut_every
                .is_some_and(|c| c.is_zero() || c > MAX_DURATION)
        {
            return bad("durations out of range");
        }
        if self.broadcast_task.is_empty() {
            return bad("the broadcast task id is empty");
        }
        Ok(())
    }
}

/// What the fleet is doing; every client follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, no cuts.
    Calm,
    /// Cutting at random.
    Cutting,
    /// Close and hand the tally back.
    Stop,
}

/// State every client updates.
#[derive(Debug)]
struct Shared {
    /// Distinct messages received, over all clients and streams.
    distinct: AtomicU64,
    /// The total to reach (`u64::MAX` until [`Fleet::expect`]).
    expected: AtomicU64,
    /// Signalled when `distinct` reaches `expected`.
    done: Notify,
}

impl Shared {
    fn count_distinct(&self) {
        let now = self.distinct.fetch_add(1, Ordering::Relaxed) + 1;
        if now == self.expected.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

/// The two streams of a client.
const USER: usize = 0;
const BROADCAST: usize = 1;

/// Sequence numbers seen on one stream of one client.
#[derive(Debug, Default)]
struct StreamTally {
    seen: Vec<bool>,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    max_seq: Option<u64>,
}

impl StreamTally {
    /// Records `seq`; true if it had not been seen before.
    fn record(&mut self, seq: u64) -> bool {
        let i = seq as usize;
        if self.seen.len() <= i {
            self.seen.resize(i + 1, false);
        }
        if self.seen[i] {
            self.duplicates += 1;
            return false;
        }
        self.seen[i] = true;
        self.distinct += 1;
        if self.max_seq.is_some_and(|max| seq < max) {
            self.out_of_order += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |max| max.max(seq)));
        true
    }

    /// Sequence numbers below `expected` that never arrived.
    fn missing_of(&self, expected: u64) -> impl Iterator<Item = u64> + '_ {
        (0..expected).filter(|seq| !self.seen.get(*seq as usize).copied().unwrap_or(false))
    }

    /// Distinct sequence numbers below `expected`.
    fn delivered_of(&self, expected: u64) -> u64 {
        self.seen
            .iter()
            .take(expected as usize)
            .filter(|s| **s)
            .count() as u64
    }
}

/// What one client hands back.
#[derive(Debug, Default)]
struct ClientTally {
    id: usize,
    joined: bool,
    streams: [StreamTally; 2],
    cuts: u64,
    server_closes: u64,
    reconnects: u64,
    reconnect_failures: BTreeMap<String, u64>,
    not_recovered: u64,
    error_frames: u64,
    malformed: u64,
    latency: Vec<u32>,
    replay: Vec<u32>,
}

/// One open connection and what its replay measurement needs.
struct Conn {
    ws: WsStream,
    url: usize,
    /// Unix time and instant at which the handshake completed.
    handshake_unix: f64,
    handshake_at: Instant,
    /// A reconnect (not the client's first connection).
    reconnect: bool,
    /// Arrival of the newest message sent before the handshake that had not arrived before.
    last_missed: Option<Instant>,
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One client's fixed plan.
struct ClientPlan {
    id: usize,
    cookie: String,
    urls: Arc<Vec<(String, SocketAddr)>>,
    config: Arc<FlakyConfig>,
}

/// Per-client state kept across connections.
struct ClientState {
    tally: ClientTally,
    /// The last position seen per recorded group: `(epoch, offset)`.
    positions: HashMap<String, (String, String)>,
    rng: StdRng,
}

/// Clients connected and joined, following the fleet's phase until [`Fleet::finish`].
#[derive(Debug)]
pub struct Fleet {
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    clients: Vec<JoinHandle<ClientTally>>,
    connect: FleetConnect,
    started: Instant,
}

/// The initial connect phase.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct FleetConnect {
    /// Clients attempted.
    pub attempted: u64,
    /// Clients connected and joined to both streams.
    pub joined: u64,
    /// Clients whose first connect failed, by reason (they take no part in the counts).
    pub failures: BTreeMap<String, u64>,
    /// Time until the last client joined, in milliseconds.
    pub time_to_all_joined_ms: f64,
}

/// Counts of one stream over all clients.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct StreamReport {
    /// Messages sent to the clients that joined (sent per client x clients).
    pub expected: u64,
    /// Distinct expected messages that arrived.
    pub delivered: u64,
    /// `delivered / expected` in percent.
    pub delivered_pct: f64,
    /// Messages that arrived again after their first arrival.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same stream.
    pub out_of_order: u64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Everything a reconnect run measured.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct FlakyReport {
    /// The initial connect phase.
    pub connect: FleetConnect,
    /// Whether the clients resumed with positions.
    pub recover: bool,
    /// The per-user stream.
    pub user: StreamReport,
    /// The broadcast stream.
    pub broadcast: StreamReport,
    /// Both streams.
    pub total: StreamReport,
    /// True if every expected message arrived before the deadline.
    pub complete: bool,
    /// Cuts made by the clients.
    pub cuts: u64,
    /// Connections the server closed or reset.
    pub server_closes: u64,
    /// Successful reconnects.
    pub reconnects: u64,
    /// Failed reconnect attempts, by reason.
    pub reconnect_failures: BTreeMap<String, u64>,
    /// `herald.resumed` replies with `recovered: false` on a reconnect.
    pub not_recovered: u64,
    /// `{"type": "error"}` frames and other unexpected frames.
    pub error_frames: u64,
    /// Messages without a usable `data.seq`.
    pub malformed: u64,
    /// The first [`MISSING_LISTED`] messages that never arrived, as `client <i> <stream> seq
    /// <n>` (client `i` used cookie `i`; the stream is `user` or `broadcast`), to find them in
    /// the server logs and Redis.
    pub missing: Vec<String>,
    /// From a reconnect's handshake to the arrival of the last message it had missed.
    pub replay: Percentiles,
    /// `sent_at` to arrival, every distinct message.
    pub latency: Percentiles,
    /// Seconds from the first join to the end.
    pub run_s: f64,
}

impl Fleet {
    /// Connects every client, joins both streams, and returns when each has joined or failed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTarget`] or [`ErrorKind::Config`] for a bad configuration. Failed
    /// connects are not errors: they are counted in [`FleetConnect::failures`].
    ///
    /// # Cancel safety
    /// Not cancel safe: spawned clients run until the runtime ends.
    pub async fn connect(config: FlakyConfig) -> Result<Fleet> {
        config.validate()?;
        let urls: Vec<(String, SocketAddr)> = config
            .urls
            .iter()
            .map(|u| require_loopback(u).map(|addr| (u.clone(), addr)))
            .collect::<Result<_>>()?;
        let urls = Arc::new(urls);
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            distinct: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
            done: Notify::new(),
        });
        let (phase, phase_rx) = watch::channel(Phase::Calm);
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let limit = Arc::new(Semaphore::new(config.concurrency.get()));
        let started = Instant::now();
        let n = config.connections;
        let mut clients = Vec::with_capacity(n);
        for id in 0..n {
            let plan = ClientPlan {
                id,
                cookie: config.cookies[id % config.cookies.len()].clone(),
                urls: urls.clone(),
                config: config.clone(),
            };
            clients.push(tokio::spawn(run_client(
                plan,
                limit.clone(),
                ready_tx.clone(),
                shared.clone(),
                phase_rx.clone(),
            )));
        }
        drop(ready_tx);
        let mut connect = FleetConnect {
            attempted: n as u64,
            ..FleetConnect::default()
        };
        let mut last = Duration::ZERO;
        // Every client reports once (its first connect is bounded by `connect_timeout`).
        while let Some(outcome) = ready_rx.recv().await {
            match outcome {
                Ok(()) => {
                    connect.joined += 1;
                    last = started.elapsed();
                }
                Err(reason) => *connect.failures.entry(reason).or_insert(0) += 1,
            }
        }
        connect.time_to_all_joined_ms = last.as_secs_f64() * 1000.0;
        Ok(Fleet {
            shared,
            phase,
            clients,
            connect,
            started: Instant::now(),
        })
    }

    /// The initial connect phase's results.
    pub fn connect_report(&self) -> &FleetConnect {
        &self.connect
    }

    /// Starts cutting connections at random (if [`FlakyConfig::cut_every`] is set).
    pub fn start_cuts(&self) {
        let _ = self.phase.send(Phase::Cutting);
    }

    /// Stops cutting; clients that are offline come back after their offline time.
    pub fn stop_cuts(&self) {
        let _ = self.phase.send(Phase::Calm);
    }

    /// Sets the messages each joined client should get: `per_user` on its user stream and
    /// `broadcast` on the broadcast stream.
    pub fn expect(&self, per_user: u64, broadcast: u64) {
        let total = self.connect.joined * (per_user + broadcast);
        self.shared.expected.store(total, Ordering::Relaxed);
        if self.shared.distinct.load(Ordering::Relaxed) >= total {
            self.shared.done.notify_one();
        }
    }

    /// Distinct messages received so far, over all clients.
    pub fn distinct(&self) -> u64 {
        self.shared.distinct.load(Ordering::Relaxed)
    }

    /// Waits until every expected message arrived ([`expect`](Self::expect)), no new message
    /// arrived for `quiet`, or `deadline` passed; true in the first case.
    pub async fn settle(&self, quiet: Duration, deadline: Duration) -> bool {
        let all = self.shared.done.notified();
        let quiet_spell = async {
            let mut seen = self.distinct();
            loop {
                tokio::time::sleep(quiet).await;
                let now = self.distinct();
                if now == seen {
                    return;
                }
                seen = now;
            }
        };
        // Branch order does not matter: whichever ends first ends the wait.
        tokio::select! {
            () = all => true,
            () = quiet_spell => self.distinct() >= self.shared.expected.load(Ordering::Relaxed),
            () = tokio::time::sleep(deadline) => false,
        }
    }

    /// Stops every client and returns the report for `per_user` and `broadcast` messages sent
    /// to each client.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future leaves clients running until the runtime ends.
    pub async fn finish(self, per_user: u64, broadcast: u64) -> FlakyReport {
        let complete = self.distinct() >= self.connect.joined * (per_user + broadcast);
        let _ = self.phase.send(Phase::Stop);
        let mut report = FlakyReport {
            connect: self.connect,
            complete,
            run_s: self.started.elapsed().as_secs_f64(),
            ..FlakyReport::default()
        };
        let mut latency = new_histogram();
        let mut replay = new_histogram();
        for client in self.clients {
            let tally = match client.await {
                Ok(tally) => tally,
                Err(err) => {
                    warn!(error = %err, "flaky client task failed");
                    continue;
                }
            };
            if !tally.joined {
                continue;
            }
            for (stream, expected, name) in [
                (&tally.streams[USER], per_user, "user"),
                (&tally.streams[BROADCAST], broadcast, "broadcast"),
            ] {
                for seq in stream.missing_of(expected) {
                    if report.missing.len() < MISSING_LISTED {
                        report
                            .missing
                            .push(format!("client {} {name} seq {seq}", tally.id));
                    }
                }
            }
            for (stream, expected, out) in [
                (&tally.streams[USER], per_user, &mut report.user),
                (&tally.streams[BROADCAST], broadcast, &mut report.broadcast),
            ] {
                out.expected += expected;
                out.delivered += stream.delivered_of(expected);
                out.duplicates += stream.duplicates;
                out.out_of_order += stream.out_of_order;
            }
            report.cuts += tally.cuts;
            report.server_closes += tally.server_closes;
            report.reconnects += tally.reconnects;
            for (reason, count) in tally.reconnect_failures {
                *report.reconnect_failures.entry(reason).or_insert(0) += count;
            }
            report.not_recovered += tally.not_recovered;
            report.error_frames += tally.error_frames;
            report.malformed += tally.malformed;
            for micros in tally.latency {
                record(&mut latency, u64::from(micros));
            }
            for micros in tally.replay {
                record(&mut replay, u64::from(micros));
            }
        }
        report.total = StreamReport {
            expected: report.user.expected + report.broadcast.expected,
            delivered: report.user.delivered + report.broadcast.delivered,
            duplicates: report.user.duplicates + report.broadcast.duplicates,
            out_of_order: report.user.out_of_order + report.broadcast.out_of_order,
            delivered_pct: 0.0,
        };
        for stream in [&mut report.user, &mut report.broadcast, &mut report.total] {
            stream.delivered_pct = if stream.expected > 0 {
                100.0 * stream.delivered as f64 / stream.expected as f64
            } else {
                0.0
            };
        }
        report.latency = percentiles(&latency);
        report.replay = percentiles(&replay);
        report
    }
}

/// Connects, joins, reports, then follows the phase until told to stop.
async fn run_client(
    plan: ClientPlan,
    limit: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<std::result::Result<(), String>>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> ClientTally {
    let config = plan.config.clone();
    let mut state = ClientState {
        tally: ClientTally {
            id: plan.id,
            ..ClientTally::default()
        },
        positions: HashMap::new(),
        rng: StdRng::seed_from_u64(config.seed.wrapping_add(plan.id as u64)),
    };
    let first_url = plan.id % plan.urls.len();
    let permit = limit.acquire_owned().await.ok();
    let first = tokio::time::timeout(
        config.connect_timeout,
        connect_and_join(&plan, &mut state, &shared, first_url, false),
    )
    .await;
    drop(permit);
    let mut conn = match first {
        Ok(Ok(conn)) => {
            let _ = ready.send(Ok(()));
            conn
        }
        Ok(Err(reason)) => {
            let _ = ready.send(Err(reason));
            return state.tally;
        }
        Err(_) => {
            let _ = ready.send(Err("timeout".to_owned()));
            return state.tally;
        }
    };
    drop(ready);
    state.tally.joined = true;
    let mut next_cut = schedule_cut(&config, *phase.borrow(), &mut state.rng, true);
    loop {
        let cut_at = next_cut;
        // Branch order: the phase first so a flood cannot delay the stop; the cut timer before
        // the socket so a busy socket is still cut on time.
        tokio::select! {
            biased;
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == Phase::Stop {
                    finish_conn(&mut state.tally, &conn);
                    return state.tally;
                }
                if now == Phase::Calm {
                    next_cut = None;
                } else if next_cut.is_none() {
                    next_cut = schedule_cut(&config, now, &mut state.rng, true);
                }
            }
            () = sleep_until_opt(cut_at) => {
                finish_conn(&mut state.tally, &conn);
                state.tally.cuts += 1;
                // No close frame; SO_LINGER 0 turns the close into a reset.
                let _ = conn.ws.get_ref().set_zero_linger();
                let url = conn.url;
                drop(conn);
                let offline = jittered(config.offline, config.jitter, &mut state.rng);
                if !sleep_unless_stopped(offline, &mut phase).await {
                    return state.tally;
                }
                match reconnect(&plan, &mut state, &shared, &mut phase, url, Duration::ZERO).await {
                    Some(c) => conn = c,
                    None => return state.tally,
                }
                next_cut = schedule_cut(&config, *phase.borrow(), &mut state.rng, false);
            }
            msg = conn.ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    handle_frame(text.as_str(), &mut state, &shared, &mut conn, &plan.config);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // The server went away (closed, reset, or shut down): try the next URL.
                    finish_conn(&mut state.tally, &conn);
                    state.tally.server_closes += 1;
                    let next = (conn.url + 1) % plan.urls.len();
                    drop(conn);
                    let delay = equal_jitter(config.reconnect_delay, &mut state.rng);
                    match reconnect(&plan, &mut state, &shared, &mut phase, next, delay).await {
                        Some(c) => conn = c,
                        None => return state.tally,
                    }
                    next_cut = schedule_cut(&config, *phase.borrow(), &mut state.rng, false);
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps `duration`; false if the fleet was told to stop meanwhile.
async fn sleep_unless_stopped(duration: Duration, phase: &mut watch::Receiver<Phase>) -> bool {
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        if *phase.borrow_and_update() == Phase::Stop {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return true,
            changed = phase.changed() => if changed.is_err() { return false },
        }
    }
}

/// The next cut while cutting: after a uniform time within `cut_every * (1 ± jitter)`, or for
/// the first cut of a run, uniform within `0..cut_every`, so the fleet's cuts are spread out.
fn schedule_cut(
    config: &FlakyConfig,
    phase: Phase,
    rng: &mut StdRng,
    first: bool,
) -> Option<tokio::time::Instant> {
    let every = config.cut_every?;
    if phase != Phase::Cutting {
        return None;
    }
    let wait = if first {
        every.mul_f64(rng.random_range(0.0..1.0))
    } else {
        jittered(every, config.jitter, rng)
    };
    Some(tokio::time::Instant::now() + wait)
}

/// Uniform within `mean * (1 ± jitter)`.
fn jittered(mean: Duration, jitter: f64, rng: &mut StdRng) -> Duration {
    if jitter <= 0.0 {
        return mean;
    }
    mean.mul_f64(rng.random_range(1.0 - jitter..=1.0 + jitter))
}

/// The browser client's "equal jitter": half of `delay` fixed, half random.
fn equal_jitter(delay: Duration, rng: &mut StdRng) -> Duration {
    delay.mul_f64(0.5 + rng.random_range(0.0..=0.5))
}

/// Connects again, starting at URL `url` after `delay`, retrying with doubling delays (capped
/// at 8x the reconnect delay) and rotating through the URLs. `None` if told to stop.
async fn reconnect(
    plan: &ClientPlan,
    state: &mut ClientState,
    shared: &Shared,
    phase: &mut watch::Receiver<Phase>,
    mut url: usize,
    mut delay: Duration,
) -> Option<Conn> {
    let config = &plan.config;
    let mut attempt = 0_u32;
    loop {
        if !delay.is_zero() && !sleep_unless_stopped(delay, phase).await {
            return None;
        }
        if *phase.borrow() == Phase::Stop {
            return None;
        }
        let outcome = tokio::time::timeout(
            config.connect_timeout,
            connect_and_join(plan, state, shared, url, true),
        )
        .await;
        let reason = match outcome {
            Ok(Ok(conn)) => {
                state.tally.reconnects += 1;
                return Some(conn);
            }
            Ok(Err(reason)) => reason,
            Err(_) => "timeout".to_owned(),
        };
        *state.tally.reconnect_failures.entry(reason).or_insert(0) += 1;
        attempt = (attempt + 1).min(3);
        url = (url + 1) % plan.urls.len();
        delay = equal_jitter(config.reconnect_delay * 2_u32.pow(attempt), &mut state.rng);
    }
}

/// Opens a connection to URL `url` and sends the join frame; the first connection also waits
/// for the join's replies (so the sender starts only once every client is in its groups).
async fn connect_and_join(
    plan: &ClientPlan,
    state: &mut ClientState,
    shared: &Shared,
    url: usize,
    reconnect: bool,
) -> std::result::Result<Conn, String> {
    let (base, addr) = &plan.urls[url];
    let config = &plan.config;
    let target = if config.recover {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}recover=1")
    } else {
        base.clone()
    };
    let ws = open(&target, *addr, &plan.cookie).await?;
    let mut conn = Conn {
        ws,
        url,
        handshake_unix: unix_now_secs(),
        handshake_at: Instant::now(),
        reconnect,
        last_missed: None,
    };
    let frame = join_frame(config, &state.positions);
    conn.ws
        .send(Message::text(frame))
        .await
        .map_err(|e| format!("join: {e}"))?;
    if reconnect {
        return Ok(conn);
    }
    // Herald in recover mode answers with one `herald.resumed` per group (user + broadcast);
    // otherwise one `subscribed`.
    let mut replies_needed = if config.recover { 2 } else { 1 };
    while replies_needed > 0 {
        match conn.ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if handle_frame(text.as_str(), state, shared, &mut conn, config) == Frame::Joined {
                    replies_needed -= 1;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("join: {e}")),
            None => return Err("join: closed".to_owned()),
        }
    }
    Ok(conn)
}

/// The frame a client sends right after each handshake.
fn join_frame(config: &FlakyConfig, positions: &HashMap<String, (String, String)>) -> String {
    let task = &config.broadcast_task;
    if !config.recover {
        return json!({"action": "subscribe", "task_id": task}).to_string();
    }
    let mut groups = serde_json::Map::new();
    groups.insert(format!("task_{task}"), Value::Null);
    for (group, (epoch, offset)) in positions {
        groups.insert(group.clone(), json!({"epoch": epoch, "offset": offset}));
    }
    json!({"action": "resume", "groups": groups}).to_string()
}

/// What a frame was, as far as joining is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Joined,
    Other,
}

/// Counts one text frame: a stream message, a join reply, or something unexpected.
fn handle_frame(
    text: &str,
    state: &mut ClientState,
    shared: &Shared,
    conn: &mut Conn,
    config: &FlakyConfig,
) -> Frame {
    let arrived = Instant::now();
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        state.tally.malformed += 1;
        return Frame::Other;
    };
    match value.get("type").and_then(Value::as_str) {
        Some("user_message") => {}
        Some("herald.resumed") => {
            if let (Some(group), Some(epoch), Some(offset)) = (
                value.get("group").and_then(Value::as_str),
                value.get("epoch").and_then(Value::as_str),
                value.get("offset").and_then(Value::as_str),
            ) {
                state
                    .positions
                    .insert(group.to_owned(), (epoch.to_owned(), offset.to_owned()));
            }
            if conn.reconnect && value.get("recovered") != Some(&Value::Bool(true)) {
                state.tally.not_recovered += 1;
            }
            return Frame::Joined;
        }
        Some("subscribed") => return Frame::Joined,
        _ => {
            state.tally.error_frames += 1;
            return Frame::Other;
        }
    }
    let data = value.get("data");
    let Some(seq) = data
        .and_then(|d| d.get("seq"))
        .and_then(Value::as_u64)
        .filter(|s| *s <= MAX_SEQ)
    else {
        state.tally.malformed += 1;
        return Frame::Other;
    };
    let stream = match data.and_then(|d| d.get("stream")) {
        Some(_) => BROADCAST,
        None => USER,
    };
    if config.recover
        && let Some(tag) = value.get("herald")
        && let (Some(group), Some(epoch), Some(offset)) = (
            tag.get("group").and_then(Value::as_str),
            tag.get("epoch").and_then(Value::as_str),
            tag.get("offset").and_then(Value::as_str),
        )
    {
        state
            .positions
            .insert(group.to_owned(), (epoch.to_owned(), offset.to_owned()));
    }
    if state.tally.streams[stream].record(seq) {
        shared.count_distinct();
        if let Some(sent_at) = parse_sent_at(text) {
            let micros = latency_micros(sent_at, unix_now_secs());
            state
                .tally
                .latency
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
            if conn.reconnect && sent_at < conn.handshake_unix {
                conn.last_missed = Some(arrived);
            }
        }
    }
    Frame::Other
}

/// Ends a connection's replay measurement.
fn finish_conn(tally: &mut ClientTally, conn: &Conn) {
    if let Some(last) = conn.last_missed {
        let micros = last
            .saturating_duration_since(conn.handshake_at)
            .as_micros();
        tally.replay.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }
}

/// TCP connect and WebSocket handshake with the client's cookie.
async fn open(url: &str, addr: SocketAddr, cookie: &str) -> std::result::Result<WsStream, String> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_reason(&e))?;
    let stream = socket.connect(addr).await.map_err(|e| io_reason(&e))?;
    let _ = stream.set_nodelay(true);
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    let headers = request.headers_mut();
    let value = HeaderValue::from_str(cookie).map_err(|_| "bad_cookie".to_owned())?;
    headers.insert("cookie", value);
    if let Ok(origin) = HeaderValue::from_str(&format!("http://{addr}")) {
        headers.insert("origin", origin);
    }
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            Err(format!("http_{}", response.status().as_u16()))
        }
        Err(tungstenite::Error::Io(e)) => Err(io_reason(&e)),
        Err(e) => Err(format!("handshake: {e}")),
    }
}

fn io_reason(err: &std::io::Error) -> String {
    format!("io_{:?}", err.kind()).to_lowercase()
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).unwrap()
}

fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |micros: u64| micros as f64 / 1000.0;
    Percentiles {
        samples: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_duplicates_and_late_arrivals_once_each() {
        let mut s = StreamTally::default();
        for seq in [0, 1, 3, 2, 3, 4] {
            s.record(seq);
        }
        assert_eq!(s.distinct, 5);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.delivered_of(4), 4);
        assert_eq!(s.delivered_of(10), 5);
    }

    #[test]
    fn the_resume_frame_carries_every_known_position_and_the_broadcast_group() {
        let config = FlakyConfig::new(vec!["ws://127.0.0.1:1/ws/tasks/".to_owned()])
            .unwrap()
            .with_recover(true);
        let mut positions = HashMap::new();
        positions.insert("user_a".to_owned(), ("e".to_owned(), "5-0".to_owned()));
        let frame: Value = serde_json::from_str(&join_frame(&config, &positions)).unwrap();
        assert_eq!(frame["action"], "resume");
        assert_eq!(frame["groups"]["user_a"]["offset"], "5-0");
        assert_eq!(frame["groups"]["task_bcast"], Value::Null);
        let plain = config.with_recover(false);
        let frame: Value = serde_json::from_str(&join_frame(&plain, &positions)).unwrap();
        assert_eq!(frame["action"], "subscribe");
        assert_eq!(frame["task_id"], "bcast");
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(15), 0.5, &mut rng);
            assert!(d >= Duration::from_millis(7_500) && d <= Duration::from_millis(22_500));
            let e = equal_jitter(Duration::from_secs(1), &mut rng);
            assert!(e >= Duration::from_millis(500) && e <= Duration::from_secs(1));
        }
    }
}
