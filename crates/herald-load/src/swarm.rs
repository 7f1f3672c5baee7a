//! The sockets: a connect phase, one reader task per socket, and a bounded finish.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use herald_server::deflate::{self, InflateStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use crate::config::{DEFAULT_SOCKETS_PER_SOURCE_IP, LoadConfig, MAX_CONNECTIONS, MAX_DURATION};
use crate::error::{Error, ErrorKind, Result};
use crate::latency::{latency_micros, parse_sent_at, unix_now_secs};
use crate::report::{ConnectReport, LatencyReport, LoadReport};
use crate::rss::{read_cpu_seconds, read_rss_bytes};
use crate::target::require_loopback;

/// Highest latency the histograms track (1 hour), in microseconds; larger values are clamped.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;
/// Read buffer per socket. tungstenite allocates its 128 KiB default up front, which would be
/// 6 GiB of client memory at 50k sockets; our frames are a few hundred bytes.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// State every reader task updates.
#[derive(Debug)]
struct Shared {
    frames: AtomicU64,
    /// Bytes read from every socket (see [`Counted`]).
    wire_bytes: AtomicU64,
    disconnects: AtomicU64,
    expect: Option<u64>,
    /// Signalled once when `frames` reaches `expect`.
    done: Notify,
    /// The clock all frame times are measured on (nanoseconds since this instant).
    epoch: Instant,
}

/// What one reader task hands back when it stops.
#[derive(Debug)]
struct ReaderTally {
    /// Latencies in microseconds, merged into one HDR histogram at the end. Not a histogram
    /// per socket: at 1 µs..1 h and 3 significant figures each is ~190 KiB, so with 1,000
    /// sockets every record touched a cold cache line (13 % of the client's CPU in a 300k
    /// frames/s profile, on the same 2 cores as the server it measures).
    latency: Vec<u32>,
    first_frame_ns: Option<u64>,
    last_frame_ns: u64,
}

/// Outcome of one socket's connect phase.
enum Connected {
    Open { handshake: Duration },
    Failed { reason: String },
}

/// Reads a running [`Swarm`]'s frame count; cheap to clone.
#[derive(Debug, Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

impl Progress {
    /// Frames received so far.
    pub fn frames(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }
}

/// An open set of load sockets. Created by [`Swarm::connect`], consumed by [`Swarm::finish`].
#[derive(Debug)]
pub struct Swarm {
    config: LoadConfig,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    readers: Vec<JoinHandle<ReaderTally>>,
    connect: ConnectReport,
    /// [`Shared::wire_bytes`] when the connect phase ended (the handshakes' share).
    wire_at_connect: u64,
}

impl Swarm {
    /// Opens `config.connections` sockets and returns when every handshake has completed or
    /// failed. Each socket counts frames from the moment it opens.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTarget`] for a non-loopback URL, [`ErrorKind::Config`] for zero or
    /// too many connections or out-of-range durations. Failed handshakes are not errors: they
    /// are counted in [`ConnectReport::failures`].
    ///
    /// # Cancel safety
    /// Dropping the future aborts nothing already spawned until the runtime shuts down; use it
    /// to completion.
    pub async fn connect(config: LoadConfig) -> Result<Swarm> {
        let addr = require_loopback(&config.url)?;
        validate(&config)?;
        let n = config.connections;
        let shared = Arc::new(Shared {
            frames: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            expect: config.expect_frames,
            done: Notify::new(),
            epoch: Instant::now(),
        });
        if config.expect_frames == Some(0) {
            shared.done.notify_one();
        }
        let rss_before = config.server_pid.and_then(|pid| read_rss_bytes(pid).ok());
        let (stop, stop_rx) = watch::channel(false);
        let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel();
        let limit = config
            .concurrency
            .map(|c| Arc::new(Semaphore::new(c.get())));
        let sources = source_addresses(addr, n, config.source_ips.map(|c| c.get()));
        let origin = config
            .origin
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_write_buffer_size(64 * 1024);

        let started = Instant::now();
        let mut readers = Vec::with_capacity(n);
        for i in 0..n {
            let cookie = (!config.cookies.is_empty())
                .then(|| config.cookies[i % config.cookies.len()].clone());
            let socket = SocketPlan {
                url: config.url.clone(),
                addr,
                source: (sources.len() > 1).then(|| sources[i % sources.len()]),
                cookie,
                origin: origin.clone(),
                subscribe: config.subscribe.clone(),
                timeout: config.connect_timeout,
                ws_config,
                deflate: config.deflate,
                sse: config.sse,
                shared: Arc::clone(&shared),
            };
            readers.push(tokio::spawn(run_socket(
                socket,
                limit.clone(),
                outcome_tx.clone(),
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        drop(outcome_tx);

        let mut report = ConnectReport {
            attempted: n as u64,
            rss_before_bytes: rss_before,
            ..ConnectReport::default()
        };
        let mut handshakes = new_histogram();
        let mut last_ok = Duration::ZERO;
        // Every socket reports exactly once (its connect is bounded by `connect_timeout` after
        // it gets a permit), so this loop ends; `None` means every sender is gone.
        while let Some(outcome) = outcome_rx.recv().await {
            match outcome {
                Connected::Open { handshake } => {
                    report.connected += 1;
                    last_ok = started.elapsed();
                    record(&mut handshakes, handshake.as_micros() as u64);
                }
                Connected::Failed { reason } => {
                    report.failed += 1;
                    *report.failures.entry(reason).or_insert(0) += 1;
                }
            }
            if report.connected + report.failed == n as u64 {
                break;
            }
        }
        report.time_to_all_connected_ms = millis(last_ok.as_micros() as u64);
        report.handshake_p50_ms = millis(handshakes.value_at_quantile(0.5));
        report.handshake_p99_ms = millis(handshakes.value_at_quantile(0.99));
        report.rss_connected_bytes = config.server_pid.and_then(|pid| read_rss_bytes(pid).ok());
        debug!(
            connected = report.connected,
            failed = report.failed,
            "connect phase finished"
        );
        let wire_at_connect = shared.wire_bytes.load(Ordering::Relaxed);
        Ok(Swarm {
            config,
            shared,
            stop,
            readers,
            connect: report,
            wire_at_connect,
        })
    }

    /// The connect-phase results (available before [`finish`](Self::finish)).
    pub fn connect_report(&self) -> &ConnectReport {
        &self.connect
    }

    /// Frames received so far.
    pub fn frames(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }

    /// A handle that reads the frame count while [`finish`](Self::finish) runs (e.g. to stop
    /// a run once frames stop arriving).
    pub fn progress(&self) -> Progress {
        Progress {
            shared: self.shared.clone(),
        }
    }

    /// Waits until the expected number of frames arrived or the deadline passed (holding the
    /// sockets open for the whole deadline if no count is expected), samples the server's RSS,
    /// closes every socket and returns the report.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future leaves reader tasks running until the runtime ends.
    pub async fn finish(self) -> LoadReport {
        self.finish_or(std::future::pending()).await
    }

    /// Like [`finish`](Self::finish), but also stops early when `abort` completes (e.g. the
    /// sender process failed, so the expected frames will never come).
    ///
    /// # Cancel safety
    /// Not cancel safe, like [`finish`](Self::finish).
    pub async fn finish_or(self, abort: impl Future<Output = ()>) -> LoadReport {
        let cpu_at_start = (self.config.server_pid).and_then(|pid| read_cpu_seconds(pid).ok());
        let phase = Instant::now();
        let wait = async {
            match self.config.expect_frames {
                Some(_) => self.shared.done.notified().await,
                // Idle run: hold the sockets open for the whole deadline.
                None => std::future::pending().await,
            }
        };
        // Branch order does not matter: whichever finishes first ends the receive phase.
        let complete = tokio::select! {
            r = tokio::time::timeout(self.config.deadline, wait) => {
                r.is_ok() && self.config.expect_frames.is_some()
            }
            () = abort => false,
        };
        let receive_phase = phase.elapsed();
        let rss_end = self
            .config
            .server_pid
            .and_then(|pid| read_rss_bytes(pid).ok());
        let cpu_at_end = (self.config.server_pid).and_then(|pid| read_cpu_seconds(pid).ok());
        // Readers select on this before their socket, so they stop promptly even mid-flood.
        let _ = self.stop.send(true);
        let mut latency = new_histogram();
        let mut first: Option<u64> = None;
        let mut last = 0_u64;
        for reader in self.readers {
            match reader.await {
                Ok(tally) => {
                    for micros in tally.latency {
                        record(&mut latency, u64::from(micros));
                    }
                    if let Some(f) = tally.first_frame_ns {
                        first = Some(first.map_or(f, |cur| cur.min(f)));
                    }
                    last = last.max(tally.last_frame_ns);
                }
                Err(err) => warn!(error = %err, "load reader task failed"),
            }
        }
        let frames = self.shared.frames.load(Ordering::Relaxed);
        let window_s = first.map_or(0.0, |f| (last.saturating_sub(f)) as f64 / 1e9);
        let frames_per_s = if frames > 1 && window_s > 0.0 {
            frames as f64 / window_s
        } else {
            0.0
        };
        let rss_per_socket_bytes = match (self.connect.rss_before_bytes, rss_end) {
            (Some(before), Some(end)) if self.connect.connected > 0 => {
                Some((end as f64 - before as f64) / self.connect.connected as f64)
            }
            _ => None,
        };
        LoadReport {
            frames,
            expected_frames: self.config.expect_frames,
            complete,
            window_s,
            frames_per_s,
            latency: LatencyReport {
                samples: latency.len(),
                p50_ms: millis(latency.value_at_quantile(0.5)),
                p90_ms: millis(latency.value_at_quantile(0.9)),
                p99_ms: millis(latency.value_at_quantile(0.99)),
                max_ms: millis(latency.max()),
                mean_ms: latency.mean() / 1000.0,
            },
            disconnects: self.shared.disconnects.load(Ordering::Relaxed),
            wire_bytes: self.shared.wire_bytes.load(Ordering::Relaxed) - self.wire_at_connect,
            receive_phase_s: receive_phase.as_secs_f64(),
            server_cpu_receive_s: cpu_at_start.zip(cpu_at_end).map(|(a, b)| b - a),
            rss_end_bytes: rss_end,
            rss_per_socket_bytes,
            connect: self.connect,
        }
    }
}

fn validate(config: &LoadConfig) -> Result<()> {
    let bad = |msg: String| Err(Error::new(ErrorKind::Config, msg));
    if config.connections == 0 || config.connections > MAX_CONNECTIONS {
        return bad(format!(
            "connections must be 1..={MAX_CONNECTIONS}, got {}",
            config.connections
        ));
    }
    if config.deadline > MAX_DURATION || config.connect_timeout > MAX_DURATION {
        return bad(format!(
            "deadline and connect timeout must be <= {MAX_DURATION:?}"
        ));
    }
    if config.connect_timeout.is_zero() {
        return bad("connect timeout must be positive".to_owned());
    }
    Ok(())
}

/// Loopback source addresses: `127.0.0.1`, `127.0.0.2`, ... for an IPv4 target (all of
/// `127.0.0.0/8` is local on Linux), just the unspecified address for IPv6.
fn source_addresses(target: SocketAddr, n: usize, wanted: Option<usize>) -> Vec<SocketAddr> {
    match target.ip() {
        IpAddr::V4(_) => {
            let count = wanted
                .unwrap_or_else(|| n.div_ceil(DEFAULT_SOCKETS_PER_SOURCE_IP))
                .clamp(1, 250);
            (0..count)
                .map(|k| SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1 + k as u8).into(), 0))
                .collect()
        }
        IpAddr::V6(v6) => vec![SocketAddr::new(v6.into(), 0)],
    }
}

/// Everything one socket needs to connect.
struct SocketPlan {
    url: String,
    addr: SocketAddr,
    /// `None`: let `connect()` pick the source address and port.
    source: Option<SocketAddr>,
    cookie: Option<String>,
    origin: String,
    subscribe: Option<String>,
    timeout: Duration,
    ws_config: WebSocketConfig,
    deflate: bool,
    /// Read the URL's path as a Server-Sent Events stream instead of a WebSocket.
    sse: bool,
    shared: Arc<Shared>,
}

type WsStream = tokio_tungstenite::WebSocketStream<ClientIo>;

/// A socket's TCP stream with every byte read counted into [`Shared::wire_bytes`].
struct Counted {
    inner: TcpStream,
    shared: Arc<Shared>,
}

/// A client socket's byte stream: plain, or behind the inflate layer when it offered
/// `permessage-deflate` (frames the server did not compress pass that layer unchanged).
enum ClientIo {
    Plain(Counted),
    Deflate(Box<InflateStream<Counted>>),
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            this.shared.wire_bytes.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ClientIo::Deflate(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ClientIo::Deflate(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ClientIo::Deflate(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ClientIo::Deflate(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects one socket, reports the outcome, then counts frames until told to stop.
async fn run_socket(
    plan: SocketPlan,
    limit: Option<Arc<Semaphore>>,
    outcome: mpsc::UnboundedSender<Connected>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ReaderTally {
    let mut tally = ReaderTally {
        latency: Vec::new(),
        first_frame_ns: None,
        last_frame_ns: 0,
    };
    let permit = match &limit {
        Some(sem) => sem.clone().acquire_owned().await.ok(),
        None => None,
    };
    let begun = Instant::now();
    if plan.sse {
        let result = tokio::time::timeout(plan.timeout, open_sse(&plan)).await;
        drop(permit);
        return match result {
            Ok(Ok((stream, rest))) => {
                let _ = outcome.send(Connected::Open {
                    handshake: begun.elapsed(),
                });
                drop(outcome);
                read_sse(stream, rest, &shared, &mut stop, tally).await
            }
            Ok(Err(reason)) => {
                let _ = outcome.send(Connected::Failed { reason });
                tally
            }
            Err(_) => {
                let _ = outcome.send(Connected::Failed {
                    reason: "timeout".to_owned(),
                });
                tally
            }
        };
    }
    let result = tokio::time::timeout(plan.timeout, open(&plan)).await;
    drop(permit);
    let mut ws = match result {
        Ok(Ok(ws)) => {
            let _ = outcome.send(Connected::Open {
                handshake: begun.elapsed(),
            });
            ws
        }
        Ok(Err(reason)) => {
            let _ = outcome.send(Connected::Failed { reason });
            return tally;
        }
        Err(_) => {
            let _ = outcome.send(Connected::Failed {
                reason: "timeout".to_owned(),
            });
            return tally;
        }
    };
    drop(outcome);
    if let Some(frame) = plan.subscribe
        && ws.send(Message::text(frame)).await.is_err()
    {
        shared.disconnects.fetch_add(1, Ordering::Relaxed);
        return tally;
    }
    loop {
        // `biased`: the stop signal is checked first so a flood cannot starve shutdown.
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let now_ns = shared.epoch.elapsed().as_nanos() as u64;
                    if let Some(sent_at) = parse_sent_at(text.as_str()) {
                        let micros = latency_micros(sent_at, unix_now_secs());
                        tally.latency.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    count_frame(&shared, &mut tally, now_ns);
                }
                Some(Ok(Message::Binary(_))) => {
                    let now_ns = shared.epoch.elapsed().as_nanos() as u64;
                    count_frame(&shared, &mut tally, now_ns);
                }
                // tungstenite answers pings itself on the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    tally
}

fn count_frame(shared: &Shared, tally: &mut ReaderTally, now_ns: u64) {
    tally.first_frame_ns.get_or_insert(now_ns);
    tally.last_frame_ns = now_ns;
    let total = shared.frames.fetch_add(1, Ordering::Relaxed) + 1;
    if Some(total) == shared.expect {
        shared.done.notify_one();
    }
}

/// TCP connect from the planned source address, then the WebSocket handshake.
async fn open(plan: &SocketPlan) -> std::result::Result<WsStream, String> {
    let stream = tcp_connect(plan).await?;
    let mut request = plan
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    let headers = request.headers_mut();
    if let Some(cookie) = &plan.cookie {
        let value = HeaderValue::from_str(cookie).map_err(|_| "bad_cookie".to_owned())?;
        headers.insert("cookie", value);
    }
    if let Ok(origin) = HeaderValue::from_str(&plan.origin) {
        headers.insert("origin", origin);
    }
    let stream = Counted {
        inner: stream,
        shared: Arc::clone(&plan.shared),
    };
    let stream = if plan.deflate {
        headers.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static(deflate::CLIENT_OFFER),
        );
        ClientIo::Deflate(Box::new(InflateStream::client(stream, None)))
    } else {
        ClientIo::Plain(stream)
    };
    match tokio_tungstenite::client_async_with_config(request, stream, Some(plan.ws_config)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            Err(format!("http_{}", response.status().as_u16()))
        }
        Err(tungstenite::Error::Io(e)) => Err(io_reason(&e)),
        Err(e) => Err(format!("handshake: {e}")),
    }
}

/// Opens a Server-Sent Events stream: `GET` of the URL's path with the cookie and Origin, as
/// an `EventSource` sends it. Returns the connection and the body bytes read with the head.
async fn open_sse(plan: &SocketPlan) -> std::result::Result<(Counted, Vec<u8>), String> {
    let stream = tcp_connect(plan).await?;
    let mut stream = Counted {
        inner: stream,
        shared: Arc::clone(&plan.shared),
    };
    let target = plan
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let mut head = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nOrigin: {}\r\n",
        plan.addr, plan.origin
    );
    if let Some(cookie) = &plan.cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| io_reason(&e))?;
    let mut got = Vec::with_capacity(512);
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if got.len() > 16 * 1024 {
            return Err("sse_head_too_long".to_owned());
        }
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.map_err(|e| io_reason(&e))?;
        if n == 0 {
            return Err("sse_closed".to_owned());
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("http_{status}"));
    }
    if !head.contains("transfer-encoding: chunked") {
        return Err("sse_not_chunked".to_owned());
    }
    Ok((stream, got[end..].to_vec()))
}

/// Counts the events of an open stream (each `data:` line is one frame) until told to stop.
async fn read_sse(
    mut stream: Counted,
    rest: Vec<u8>,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    mut tally: ReaderTally,
) -> ReaderTally {
    let mut body = SseBody::default();
    let on_data = |data: &str, tally: &mut ReaderTally| {
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        if let Some(sent_at) = parse_sent_at(data) {
            let micros = latency_micros(sent_at, unix_now_secs());
            tally
                .latency
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        count_frame(shared, tally, now_ns);
    };
    body.feed(&rest, |d| on_data(d, &mut tally));
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => body.feed(&buf[..n], |d| on_data(d, &mut tally)),
                _ => {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    tally
}

/// A chunked `text/event-stream` body, decoded into its `data:` lines.
#[derive(Debug, Default)]
struct SseBody {
    /// Bytes of the current chunk still to come; `None` while reading a chunk-size line.
    chunk_left: Option<usize>,
    /// The chunk-size line so far.
    size_line: Vec<u8>,
    /// CRLF bytes after a chunk's data still to skip.
    crlf_left: usize,
    /// The event-stream line so far.
    line: Vec<u8>,
}

impl SseBody {
    fn feed(&mut self, mut bytes: &[u8], mut on_data: impl FnMut(&str)) {
        while !bytes.is_empty() {
            if self.crlf_left > 0 {
                let n = self.crlf_left.min(bytes.len());
                self.crlf_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            match self.chunk_left {
                None => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    if byte == b'\n' {
                        let line = String::from_utf8_lossy(&self.size_line);
                        let size = line.trim().split(';').next().unwrap_or("");
                        self.chunk_left = usize::from_str_radix(size, 16).ok();
                        self.size_line.clear();
                    } else {
                        self.size_line.push(byte);
                    }
                }
                Some(left) => {
                    let n = left.min(bytes.len());
                    for &byte in &bytes[..n] {
                        if byte == b'\n' {
                            if let Some(data) = self.line.strip_prefix(b"data:") {
                                on_data(String::from_utf8_lossy(data).trim_start());
                            }
                            self.line.clear();
                        } else {
                            self.line.push(byte);
                        }
                    }
                    bytes = &bytes[n..];
                    if left == n {
                        self.chunk_left = None;
                        self.crlf_left = 2;
                    } else {
                        self.chunk_left = Some(left - n);
                    }
                }
            }
        }
    }
}

/// TCP connect from the planned source address.
async fn tcp_connect(plan: &SocketPlan) -> std::result::Result<TcpStream, String> {
    let socket = match plan.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_reason(&e))?;
    // Only bind when spreading over several source addresses: bind(port 0) searches the
    // ephemeral range for a port no bound socket uses, which gets slower with every open
    // socket (minutes at 20k) and fails with EADDRINUSE under a burst, while connect() picks
    // ports by 4-tuple and stays fast.
    if let Some(source) = plan.source {
        socket.bind(source).map_err(|e| io_reason(&e))?;
    }
    let stream = socket.connect(plan.addr).await.map_err(|e| io_reason(&e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
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

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_spread_over_enough_source_addresses() {
        let target: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(source_addresses(target, 1_000, None).len(), 1);
        let many = source_addresses(target, 50_000, None);
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], "127.0.0.3:0".parse().unwrap());
        assert_eq!(source_addresses(target, 10, Some(4)).len(), 4);
        let v6: SocketAddr = "[::1]:8000".parse().unwrap();
        assert_eq!(source_addresses(v6, 50_000, None).len(), 1);
    }

    #[test]
    fn an_event_stream_split_anywhere_yields_each_data_line_once() {
        let events = ": keep-alive\n\nid: 1\ndata: {\"n\": 1}\n\ndata: {\"n\": 2}\n\n";
        let (a, b) = events.split_at(20);
        let mut body_bytes = Vec::new();
        for chunk in [a, b] {
            body_bytes.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        // Split the chunked body at every position: the result never changes.
        for cut in 0..body_bytes.len() {
            let mut body = SseBody::default();
            let mut seen = Vec::new();
            body.feed(&body_bytes[..cut], |d| seen.push(d.to_owned()));
            body.feed(&body_bytes[cut..], |d| seen.push(d.to_owned()));
            assert_eq!(seen, [r#"{"n": 1}"#, r#"{"n": 2}"#], "cut at {cut}");
        }
    }

    #[test]
    fn zero_connections_is_a_config_error() {
        let config = LoadConfig::new("ws://127.0.0.1:1/")
            .unwrap()
            .with_connections(0);
        assert_eq!(validate(&config).unwrap_err().kind(), ErrorKind::Config);
    }
}
