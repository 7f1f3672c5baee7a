//! `herald-load`: open N WebSocket connections to a loopback server, optionally run a sender
//! command once they are all open, count frames and latency, print one JSON line.
//!
//! Run with e.g.
//! `herald-load --url ws://127.0.0.1:8000/ws/tasks/ --connections 1000 --cookies-file c.txt
//!  --expect-frames 100000 --deadline 120 --server-pid 1234 -- python sender.py broadcast`

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use herald_load::{LoadConfig, Swarm, raise_nofile_limit};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tracing_subscriber::EnvFilter;

/// How long the sender may keep running after the receive phase ended.
const SENDER_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(name = "herald-load", version, about)]
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
    let args = Args::parse();
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

fn read_cookies(path: &PathBuf) -> anyhow::Result<Vec<String>> {
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
