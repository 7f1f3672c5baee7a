//! `herald-load`: open N WebSocket connections to a loopback server, optionally run a sender
//! command once they are all open, count frames and latency, print one JSON line.
//! `herald-load send ...` is the Rust sender: guide-style messages through herald-redis.
//!
//! Run with e.g.
//! `herald-load --url ws://127.0.0.1:8000/ws/tasks/ --connections 1000 --cookies-file c.txt
//!  --expect-frames 100000 --deadline 120 --server-pid 1234 -- python sender.py broadcast`
//! `herald-load send broadcast --redis-url redis://127.0.0.1:6379 --group user_x --count 100`

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use herald_core::ChannelLayer;
use herald_core::capacity::CapacityRule;
use herald_load::{
    DEFAULT_SEND_BATCH, FlakyConfig, Fleet, LoadConfig, SendPlan, Shape, Swarm, raise_nofile_limit,
    require_loopback, run_sender,
};
use herald_redis::{HostSpec, RedisChannelLayer, RedisLayerConfig};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tracing_subscriber::EnvFilter;

/// How long the sender may keep running after the receive phase ended.
const SENDER_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "herald-load",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The Rust sender: group_send guide-style `user.message`s with `sent_at` via herald-redis.
    Send {
        #[command(subcommand)]
        plan: PlanArgs,
    },
    /// The reconnect benchmarks' client: one user per client, its user stream plus a broadcast
    /// stream, connections cut at random or lost to a deploy; counts delivered, duplicates,
    /// out-of-order and replay latency.
    Flaky(FlakyArgs),
}

#[derive(Debug, Subcommand)]
enum PlanArgs {
    /// `--count` group_sends to one group.
    Broadcast {
        /// Group name, `user_<username>`.
        #[arg(long)]
        group: String,
        /// Messages to send.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// What each message looks like: bench, toast, notification, file or task.
        #[arg(long, default_value = "bench", value_parser = parse_shape)]
        shape: Shape,
        #[command(flatten)]
        common: SendCommon,
    },
    /// `--per-user` messages to every user in `--users-file`.
    PerUser {
        /// One username per line.
        #[arg(long)]
        users_file: PathBuf,
        /// Messages per user.
        #[arg(long, default_value_t = 10)]
        per_user: u64,
        /// Messages per pipelined `group_send_many` call (1 = one `group_send` round trip per
        /// message, the path before pipelining).
        #[arg(long, default_value_t = DEFAULT_SEND_BATCH)]
        batch: NonZeroUsize,
        #[command(flatten)]
        common: SendCommon,
    },
    /// `--rate` messages/s, round-robin over the users, for `--duration` seconds.
    Paced {
        /// One username per line.
        #[arg(long)]
        users_file: PathBuf,
        /// Messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[command(flatten)]
        common: SendCommon,
    },
    /// The reconnect benchmarks' load: `--per-user-rate` messages/s to every user in
    /// `--users-file` and `--broadcast-rate` messages/s to `--broadcast-group`.
    Mixed {
        /// One username per line.
        #[arg(long)]
        users_file: PathBuf,
        /// Messages per second to each user.
        #[arg(long, default_value_t = 1.0)]
        per_user_rate: f64,
        /// The group every client joins.
        #[arg(long, default_value = "task_bcast")]
        broadcast_group: String,
        /// Messages per second to the broadcast group.
        #[arg(long, default_value_t = 2.0)]
        broadcast_rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[command(flatten)]
        common: SendCommon,
    },
}

#[derive(Debug, clap::Args)]
struct FlakyArgs {
    /// Target URL (ws:// on loopback); repeat it for several servers (client i starts on
    /// URL i mod count and moves to the next one when its server goes away).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Clients (one socket each).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// One Cookie header value per line; client i uses line i mod count (one user each).
    #[arg(long)]
    cookies_file: PathBuf,
    /// Connect to `?recover=1` and resume with the last position per group (herald).
    #[arg(long)]
    recover: bool,
    /// Task id of the broadcast stream (`task_<id>`).
    #[arg(long, default_value = "bcast")]
    broadcast_task: String,
    /// Mean seconds between random cuts while the sender runs; 0 = no cuts.
    #[arg(long, default_value_t = 0.0)]
    cut_every: f64,
    /// Mean seconds offline after a cut.
    #[arg(long, default_value_t = 2.0)]
    offline: f64,
    /// Relative jitter of both (uniform within mean * (1 ± jitter)).
    #[arg(long, default_value_t = 0.5)]
    jitter: f64,
    /// Initial connects in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds allowed for one connect + handshake + join.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// First retry delay (seconds) after the server went away, half fixed, half random.
    #[arg(long, default_value_t = 1.0)]
    reconnect_delay: f64,
    /// After the sender exited, stop once no new message arrived for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    quiet_stop: f64,
    /// Seconds the run may last after the sender exited.
    #[arg(long, default_value_t = 60.0)]
    deadline: f64,
    /// Seconds the sender may run.
    #[arg(long, default_value_t = 600.0)]
    sender_timeout: f64,
    /// Seed of the random cut times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Free-form label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Sender command (e.g. `herald-load send mixed ...`), started once every client joined;
    /// its last stdout line must be the JSON report with `per_user_each` and `broadcast_count`.
    #[arg(last = true, required = true)]
    sender: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct SendCommon {
    /// channels_redis host (loopback only); repeat for a sharded layer, in the order of
    /// `CHANNEL_LAYERS` `hosts` (the crc32 ring picks shards by position).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: Vec<String>,
    /// group_sends in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// channels_redis `capacity` (default: channels_redis's 100).
    #[arg(long)]
    capacity: Option<usize>,
    /// channels_redis `channel_capacity` entry, `GLOB=N` (repeatable, first match wins), e.g.
    /// `herald.history.*=1000` as the reliability docs advise for recorded groups.
    #[arg(long = "channel-capacity")]
    channel_capacity: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Target URL; must be ws:// on a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws/tasks/")]
    url: String,
    /// Number of sockets to open.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// File with one Cookie header value per line (e.g. `sessionid=...`); socket i uses line
    /// i mod count. A line without `=` is taken as a bare `sessionid`.
    #[arg(long)]
    cookies_file: Option<PathBuf>,
    /// Handshakes in flight at once (ignored with --burst).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Open every socket at once.
    #[arg(long)]
    burst: bool,
    /// Seconds allowed for one TCP connect + handshake.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Stop once this many frames arrived; without it the sockets are held for --deadline.
    #[arg(long)]
    expect_frames: Option<u64>,
    /// Seconds the receive phase may last.
    #[arg(long, default_value_t = 60.0)]
    deadline: f64,
    /// Text frame every socket sends once it is open.
    #[arg(long)]
    subscribe: Option<String>,
    /// Offer permessage-deflate, as browsers do (the server compresses only when it runs
    /// with --permessage-deflate); the report's wire_bytes then shows what it saved.
    #[arg(long)]
    deflate: bool,
    /// Open Server-Sent Events streams on the URL's path (e.g. ws://HOST/sse/tasks/) instead
    /// of WebSockets; each event counts as a frame.
    #[arg(long)]
    sse: bool,
    /// Server process whose VmRSS is sampled.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Loopback source addresses to spread sockets over (default: one per 20k sockets).
    #[arg(long)]
    source_ips: Option<NonZeroUsize>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// After the sender exited, stop once no frame arrived for this many seconds (messages
    /// dropped by the server or the layer never come; waiting for the deadline proves nothing).
    #[arg(long)]
    quiet_stop: Option<f64>,
    /// Free-form label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Sender command, started once every socket is connected.
    #[arg(last = true)]
    sender: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Send { plan }) => {
            return tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?
                .block_on(send(plan));
        }
        Some(Command::Flaky(args)) => {
            if args.threads == 0 {
                bail!("--threads must be at least 1");
            }
            raise_nofile_limit(args.connections as u64 * 2 + 1024)?;
            return tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads)
                .enable_all()
                .build()?
                .block_on(flaky(args));
        }
        None => {}
    }
    let args = cli.load;
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let nofile = raise_nofile_limit(args.connections as u64 + 1024)?;
    if nofile < args.connections as u64 + 64 {
        bail!(
            "RLIMIT_NOFILE is {nofile}, too low for {} sockets",
            args.connections
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cookies = match &args.cookies_file {
        Some(path) => read_cookies(path)?,
        None => Vec::new(),
    };
    let config = LoadConfig::new(args.url.clone())?
        .with_connections(args.connections)
        .with_cookies(cookies)
        .with_concurrency(if args.burst {
            None
        } else {
            NonZeroUsize::new(args.concurrency)
        })
        .with_connect_timeout(Duration::from_secs_f64(args.connect_timeout))
        .with_expect_frames(args.expect_frames)
        .with_deadline(Duration::from_secs_f64(args.deadline))
        .with_subscribe(args.subscribe.clone())
        .with_deflate(args.deflate)
        .with_sse(args.sse)
        .with_server_pid(args.server_pid)
        .with_source_ips(args.source_ips);

    let swarm = Swarm::connect(config).await?;
    let connect = swarm.connect_report();
    eprintln!(
        "herald-load: {} connected, {} failed in {:.0} ms",
        connect.connected, connect.failed, connect.time_to_all_connected_ms
    );

    let (report, sender) = if args.sender.is_empty() {
        (swarm.finish().await, Value::Null)
    } else {
        let (mut child, output) = spawn_sender(&args.sender)?;
        let (status_tx, status_rx) = tokio::sync::watch::channel(None);
        let waiter = tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = status_tx.send(status);
            child
        });
        // Stop early if the sender failed. A successful sender may finish long before the
        // last frame is delivered, so then we only stop once frames have gone quiet.
        let mut exit_rx = status_rx.clone();
        let progress = swarm.progress();
        let quiet = args.quiet_stop.map(Duration::from_secs_f64);
        let abort = async move {
            let status = loop {
                if let Some(status) = *exit_rx.borrow_and_update() {
                    break status;
                }
                if exit_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            if !status.success() {
                return;
            }
            let Some(quiet) = quiet else {
                return std::future::pending().await;
            };
            let mut seen = progress.frames();
            loop {
                tokio::time::sleep(quiet).await;
                let now = progress.frames();
                if now == seen {
                    return;
                }
                seen = now;
            }
        };
        let report = swarm.finish_or(abort).await;
        let status = match tokio::time::timeout(SENDER_GRACE, waiter).await {
            Ok(Ok(_child)) => *status_rx.borrow(),
            // Still running after the grace period: dropping the handle's child kills it.
            _ => None,
        };
        let parsed = sender_report(output).await;
        (
            report,
            json!({
                "exit_code": status.and_then(|s| s.code()),
                "output": parsed,
            }),
        )
    };

    let mut line = serde_json::to_value(&report)?;
    if let Value::Object(map) = &mut line {
        map.insert("label".to_owned(), json!(args.label));
        map.insert("connections".to_owned(), json!(args.connections));
        map.insert("sender".to_owned(), sender);
    }
    println!("{line}");
    Ok(())
}

fn read_cookies(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read cookies file {}", path.display()))?;
    let cookies: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            if l.contains('=') {
                l.to_owned()
            } else {
                format!("sessionid={l}")
            }
        })
        .collect();
    if cookies.is_empty() {
        bail!("cookies file {} has no cookies", path.display());
    }
    Ok(cookies)
}

/// `--shape`: one of the [`Shape`] names.
fn parse_shape(name: &str) -> Result<Shape, String> {
    match name {
        "bench" => Ok(Shape::Bench),
        "toast" => Ok(Shape::Toast),
        "notification" => Ok(Shape::Notification),
        "file" => Ok(Shape::File),
        "task" => Ok(Shape::Task),
        _ => Err(format!(
            "unknown shape {name:?}: expected bench, toast, notification, file or task"
        )),
    }
}

async fn send(plan: PlanArgs) -> anyhow::Result<()> {
    let (plan, common) = match plan {
        PlanArgs::Broadcast {
            group,
            count,
            shape,
            common,
        } => (
            SendPlan::Broadcast {
                group,
                count,
                shape,
            },
            common,
        ),
        PlanArgs::PerUser {
            users_file,
            per_user,
            batch,
            common,
        } => (
            SendPlan::PerUser {
                users: read_lines(&users_file)?,
                per_user,
                batch,
            },
            common,
        ),
        PlanArgs::Paced {
            users_file,
            rate,
            duration,
            common,
        } => (
            SendPlan::Paced {
                users: read_lines(&users_file)?,
                rate,
                duration: Duration::from_secs_f64(duration),
            },
            common,
        ),
        PlanArgs::Mixed {
            users_file,
            per_user_rate,
            broadcast_group,
            broadcast_rate,
            duration,
            common,
        } => (
            SendPlan::Mixed {
                users: read_lines(&users_file)?,
                per_user_rate,
                broadcast_group,
                broadcast_rate,
                duration: Duration::from_secs_f64(duration),
            },
            common,
        ),
    };
    for url in &common.redis_url {
        require_loopback_redis(url)?;
    }
    let mut config = RedisLayerConfig::default().with_hosts(
        common
            .redis_url
            .iter()
            .map(|url| HostSpec::url(url.clone())),
    );
    if let Some(capacity) = common.capacity {
        config = config.with_capacity(capacity);
    }
    for spec in &common.channel_capacity {
        let (pattern, n) = spec
            .rsplit_once('=')
            .with_context(|| format!("--channel-capacity {spec:?} must look like GLOB=N"))?;
        let n: usize = n
            .parse()
            .with_context(|| format!("--channel-capacity {spec:?}: {n:?} is not a number"))?;
        config = config.with_channel_capacity(CapacityRule::glob(pattern, n)?);
    }
    let layer: Arc<dyn ChannelLayer> = Arc::new(RedisChannelLayer::new(config)?);
    let concurrency = NonZeroUsize::new(common.concurrency).unwrap_or(NonZeroUsize::MIN);
    let report = run_sender(layer, &plan, concurrency).await?;
    println!("{}", serde_json::to_string(&report)?);
    if report.sent == 0 && report.errors > 0 {
        bail!("every group_send failed ({} errors)", report.errors);
    }
    Ok(())
}

/// `herald-load flaky`: join every client, start the sender and the cuts, stop the cuts when
/// the sender exits, wait for the stragglers, print one JSON line.
async fn flaky(args: FlakyArgs) -> anyhow::Result<()> {
    let cookies = read_cookies(&args.cookies_file)?;
    let cut_every = (args.cut_every > 0.0).then(|| Duration::from_secs_f64(args.cut_every));
    let config = FlakyConfig::new(args.urls.clone())?
        .with_connections(args.connections)
        .with_cookies(cookies)
        .with_recover(args.recover)
        .with_broadcast_task(args.broadcast_task.clone())
        .with_cuts(cut_every, Duration::from_secs_f64(args.offline))
        .with_jitter(args.jitter)
        .with_concurrency(NonZeroUsize::new(args.concurrency).unwrap_or(NonZeroUsize::MIN))
        .with_connect_timeout(Duration::from_secs_f64(args.connect_timeout))
        .with_reconnect_delay(Duration::from_secs_f64(args.reconnect_delay))
        .with_seed(args.seed);
    let fleet = Fleet::connect(config).await?;
    let connect = fleet.connect_report();
    eprintln!(
        "herald-load: {} of {} clients joined in {:.0} ms, failures {:?}",
        connect.joined, connect.attempted, connect.time_to_all_joined_ms, connect.failures
    );
    let (mut child, output) = spawn_sender(&args.sender)?;
    fleet.start_cuts();
    // The deploy scenario's script waits for this line to start its timeline.
    eprintln!("herald-load: sender started");
    let status =
        tokio::time::timeout(Duration::from_secs_f64(args.sender_timeout), child.wait()).await;
    fleet.stop_cuts();
    let exit_code = match status {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = child.kill().await;
            None
        }
    };
    let parsed = sender_report(output).await;
    let per_user = parsed.get("per_user_each").and_then(Value::as_u64);
    let broadcast = parsed.get("broadcast_count").and_then(Value::as_u64);
    let (per_user, broadcast) = match (per_user, broadcast) {
        (Some(p), Some(b)) => (p, b),
        _ => bail!("the sender's last line has no per_user_each/broadcast_count: {parsed}"),
    };
    eprintln!("herald-load: sender exited ({exit_code:?}); waiting for the last messages");
    fleet.expect(per_user, broadcast);
    fleet
        .settle(
            Duration::from_secs_f64(args.quiet_stop),
            Duration::from_secs_f64(args.deadline),
        )
        .await;
    let report = fleet.finish(per_user, broadcast).await;
    let mut line = serde_json::to_value(&report)?;
    if let Value::Object(map) = &mut line {
        map.insert("label".to_owned(), json!(args.label));
        map.insert("connections".to_owned(), json!(args.connections));
        map.insert("urls".to_owned(), json!(args.urls.len()));
        map.insert(
            "cut_every_s".to_owned(),
            json!(cut_every.map(|c| c.as_secs_f64())),
        );
        map.insert("offline_s".to_owned(), json!(args.offline));
        map.insert(
            "sender".to_owned(),
            json!({"exit_code": exit_code, "output": parsed}),
        );
    }
    println!("{line}");
    Ok(())
}

/// The Redis URL must point at loopback too: checked with the ws:// rule on its host part.
/// Starts the sender command (`argv`, not empty) with its stdout collected by a task, which
/// yields everything it printed once it exits.
fn spawn_sender(
    argv: &[String],
) -> anyhow::Result<(tokio::process::Child, tokio::task::JoinHandle<String>)> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start sender {:?}", argv[0]))?;
    let mut stdout = child.stdout.take().unwrap();
    let output = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = stdout.read_to_string(&mut buf).await;
        buf
    });
    Ok((child, output))
}

/// The sender's report: the last non-empty line of its stdout, as JSON if it is JSON, else as
/// a string (waits at most [`SENDER_GRACE`] for the output to end).
async fn sender_report(output: tokio::task::JoinHandle<String>) -> Value {
    let text = tokio::time::timeout(SENDER_GRACE, output)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|_| json!(last))
}

fn require_loopback_redis(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("redis://")
        .with_context(|| format!("only redis:// URLs are supported: {url}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = if host.contains(':') || host.starts_with('[') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    };
    require_loopback(&format!("ws://{host}/"))?;
    Ok(())
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}
