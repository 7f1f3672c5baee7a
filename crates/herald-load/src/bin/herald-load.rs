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
use herald_load::{LoadConfig, SendPlan, Swarm, raise_nofile_limit, require_loopback, run_sender};
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
}

#[derive(Debug, clap::Args)]
struct SendCommon {
    /// channels_redis host (loopback only).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// group_sends in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// channels_redis `capacity` (default: channels_redis's 100).
    #[arg(long)]
    capacity: Option<usize>,
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
    if let Some(Command::Send { plan }) = cli.command {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(send(plan));
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
        let mut child = tokio::process::Command::new(&args.sender[0])
            .args(&args.sender[1..])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start sender {:?}", args.sender[0]))?;
        let mut stdout = child.stdout.take().unwrap();
        let output = tokio::spawn(async move {
            let mut buf = String::new();
            let _ = stdout.read_to_string(&mut buf).await;
            buf
        });
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
        let parsed: Value = serde_json::from_str(last).unwrap_or_else(|_| json!(last));
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

async fn send(plan: PlanArgs) -> anyhow::Result<()> {
    let (plan, common) = match plan {
        PlanArgs::Broadcast {
            group,
            count,
            common,
        } => (SendPlan::Broadcast { group, count }, common),
        PlanArgs::PerUser {
            users_file,
            per_user,
            common,
        } => (
            SendPlan::PerUser {
                users: read_lines(&users_file)?,
                per_user,
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
    };
    require_loopback_redis(&common.redis_url)?;
    let mut config =
        RedisLayerConfig::default().with_hosts([HostSpec::url(common.redis_url.clone())]);
    if let Some(capacity) = common.capacity {
        config = config.with_capacity(capacity);
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

/// The Redis URL must point at loopback too: checked with the ws:// rule on its host part.
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
