//! Run with: cargo run -p examples --release --example idle_memory -- 2000
//!
//! (optional second argument: the server's `read_buffer_size` in bytes, default 512)
//!
//! Measures the server's resident memory per idle WebSocket: the server (the guide's
//! `/ws/tasks/` consumer on an in-memory layer) runs in this process; the clients run in a
//! child process (this same binary in `client` mode, raw TCP handshakes, nothing else) so
//! their buffers do not count. Each socket is a distinct user, so each holds a channel, a
//! `user_<name>` membership and its task. Linux only (reads `/proc/self/status`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use herald_server::{App, ServerConfig, TasksConsumer, TrustedHeaderAuthenticator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS line")?
        .parse()?)
}

/// Opens `n` sockets to `addr`, prints `ready`, and holds them until stdin closes.
async fn client(addr: &str, n: usize) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!(
            "GET /ws/tasks/ HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             X-Remote-User: user{i}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut buf).await?;
            if read == 0 {
                bail!("server closed during handshake {i}");
            }
            got.extend_from_slice(&buf[..read]);
        }
        if !got.starts_with(b"HTTP/1.1 101") {
            bail!("handshake {i} refused: {}", String::from_utf8_lossy(&got));
        }
        sockets.push(stream);
    }
    println!("ready");
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    drop(sockets);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        let addr = args.get(2).context("client <addr> <n>")?;
        let n = args.get(3).context("client <addr> <n>")?.parse()?;
        return client(addr, n).await;
    }
    let n: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let read_buffer: usize = args
        .get(2)
        .map_or(Ok(herald_server::config::DEFAULT_READ_BUFFER_SIZE), |s| {
            s.parse()
        })?;

    let app = App::builder()
        .layer(Arc::new(herald_core::InMemoryLayer::new(
            Default::default(),
        )?))
        .authenticator(TrustedHeaderAuthenticator::new())
        .config(ServerConfig::default().with_read_buffer_size(read_buffer))
        .route("/ws/tasks/", TasksConsumer::default)
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(herald_server::serve(listener, app.clone(), async {
        let _ = stopped.await;
    }));

    let exe = std::env::current_exe()?;
    let spawn = |count: usize| -> anyhow::Result<tokio::process::Child> {
        Ok(tokio::process::Command::new(&exe)
            .args(["client", &addr, &count.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?)
    };
    let wait_ready = |child: &mut tokio::process::Child| {
        let stdout = child.stdout.take();
        async move {
            let mut lines = BufReader::new(stdout.context("no stdout")?).lines();
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await??
                .unwrap_or_default();
            anyhow::ensure!(line == "ready", "client failed: {line:?}");
            anyhow::Ok(())
        }
    };
    let wait_open = |expected: u64| {
        let app = app.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while app.metrics().connections_current() != expected {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "sockets did not open"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        }
    };

    // Warm up allocator arenas and runtime structures with a first batch.
    let warm = 200;
    let mut warm_child = spawn(warm)?;
    wait_ready(&mut warm_child).await?;
    wait_open(warm as u64).await?;
    let before = rss_kib()?;

    let mut child = spawn(n)?;
    wait_ready(&mut child).await?;
    wait_open((warm + n) as u64).await?;
    // Let every connection task settle into its idle select.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib()?;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    println!("alive tasks: {tasks}");

    let per_socket = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "{n} idle sockets (read buffer {read_buffer} B): RSS {before} KiB -> {after} KiB, {:.0} bytes ({:.2} KiB) per socket",
        per_socket,
        per_socket / 1024.0
    );

    drop(child);
    drop(warm_child);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server).await???;
    Ok(())
}
