//! Shared helpers for the CLI tests: run the real `herald` binary. WebSocket client helpers
//! are `herald_test_support::ws`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use herald_test_support::ws::{Ws, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Every await in these tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The `herald` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

/// Runs `herald ARGS` to completion.
pub async fn herald(args: &[&str]) -> Output {
    herald_with_env(args, &[]).await
}

/// Runs `herald ARGS` to completion with extra environment variables.
pub async fn herald_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("HERALD_TIME_ZONE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

/// A running `herald serve` on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Herald {
    pub addr: SocketAddr,
    pub child: Child,
}

impl Herald {
    /// Starts `herald serve --bind 127.0.0.1:<free> ARGS` and waits until /healthz answers.
    pub async fn start(args: &[&str]) -> Herald {
        Self::start_with_env(args, &[]).await
    }

    /// As [`Herald::start`] with extra environment variables.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Herald {
        Self::launch(args, env, Stdio::inherit()).await
    }

    /// As [`Herald::start_with_env`] with stderr (the log) written to `log` instead of the
    /// test's own stderr; `RUST_LOG` may be overridden through `env`.
    pub async fn start_with_log(
        args: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Herald {
        Self::launch(args, env, std::fs::File::create(log).unwrap().into()).await
    }

    async fn launch(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Herald {
        let port = herald_test_support::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new(bin())
            .arg("serve")
            .args(["--bind", &addr.to_string()])
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("herald serve exited early with {status}");
            }
            let probe =
                tokio::time::timeout(Duration::from_secs(1), try_http_get(addr, "/healthz")).await;
            if let Ok(Ok(resp)) = probe
                && resp.starts_with("HTTP/1.1 200")
            {
                return Herald { addr, child };
            }
            assert!(
                Instant::now() < deadline,
                "herald serve did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A request with `method` and no body, returning the raw response.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap()
        .unwrap()
}

/// A plain HTTP GET, returning the raw response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    tokio::time::timeout(TIMEOUT, try_http_get(addr, path))
        .await
        .unwrap()
        .unwrap()
}

/// Connects to /ws/tasks/ as `user` through the trusted-header authenticator.
pub async fn ws_connect_as(addr: SocketAddr, user: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws/tasks/")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-remote-user", user.parse().unwrap());
    ws_connect(req).await
}

/// Connects to /ws/tasks/ with a Cookie header.
pub async fn ws_connect_with_cookie(addr: SocketAddr, cookie: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws/tasks/")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    ws_connect(req).await
}

/// Connects to `ws://{host}/ws/tasks/` like a browser on the site: the Cookie header and an
/// `Origin` of `http://127.0.0.1` (which Channels' `AllowedHostsOriginValidator` requires).
pub async fn ws_connect_browser(host: &str, cookie: &str) -> Ws {
    let mut req = format!("ws://{host}/ws/tasks/")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://127.0.0.1".parse().unwrap());
    ws_connect(req).await
}

pub mod browser;
pub mod django;
pub mod sse;

/// Starts `python tests/compat/peer.py --config CONFIG ARGS…` (real channels_redis) with piped
/// stdin/stdout, killed on drop.
pub fn peer_py(python: &std::path::Path, config: &serde_json::Value, args: &[&str]) -> Child {
    Command::new(python)
        .arg(herald_test_support::workspace_root().join("tests/compat/peer.py"))
        .arg("--config")
        .arg(config.to_string())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
pub mod nginx;
pub mod postgres;

/// Performs a raw WebSocket handshake on /ws/tasks/ and returns the HTTP status code.
pub async fn handshake_status(addr: SocketAddr, cookie: Option<&str>, origin: Option<&str>) -> u16 {
    let mut req = format!(
        "GET /ws/tasks/ HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    let status = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        head.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    tokio::time::timeout(TIMEOUT, status).await.unwrap()
}
