//! A real headless Chromium for the browser tests: Debian's `/usr/bin/chromium` behind
//! `tests/browser/driver.mjs` (playwright-core, never a downloaded browser), and
//! `herald serve --demo` on a chosen address so a test can stop and restart it.
//!
//! Needs `chromium` (apt), `node` and `npm ci` in `tests/browser`. When one is missing the
//! tests print why and pass locally; under `HERALD_REQUIRE_COMPAT=1` (CI) they fail with an
//! install hint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald_test_support::workspace_root;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{TIMEOUT, bin, herald};

/// Upper bound for one browser command (each also has its own, shorter, in-page timeout).
pub const BROWSER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Starting Chromium.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn required() -> bool {
    std::env::var("HERALD_REQUIRE_COMPAT").as_deref() == Ok("1")
}

/// Panics under `HERALD_REQUIRE_COMPAT=1`, else says why the test does nothing.
pub fn missing(why: &str) {
    let hint = "install with: apt-get install chromium nodejs npm && (cd tests/browser && npm ci)";
    assert!(!required(), "{why}; {hint} (HERALD_REQUIRE_COMPAT=1)");
    eprintln!("SKIPPING browser test: {why}; {hint}");
}

pub fn browser_dir() -> PathBuf {
    workspace_root().join("tests/browser")
}

pub fn screenshot_path(name: &str) -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    };
    target
        .join("browser")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A headless Chromium behind the JSON-lines driver; killed on drop.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Browser {
    /// Launches the driver, or returns `None` (after [`missing`]) if a prerequisite is absent.
    pub async fn launch() -> Option<Browser> {
        let chromium =
            std::env::var("HERALD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !Path::new(&chromium).is_file() {
            missing(&format!("no Chromium at {chromium}"));
            return None;
        }
        if !browser_dir().join("node_modules/playwright-core").is_dir() {
            missing("tests/browser/node_modules/playwright-core is not installed");
            return None;
        }
        let spawned = Command::new("node")
            .arg("driver.mjs")
            .current_dir(browser_dir())
            .env("HERALD_CHROMIUM", &chromium)
            .env("HERALD_BROWSER_MAX_SECS", "240")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                missing(&format!("cannot run node: {err}"));
                return None;
            }
        };
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(LAUNCH_TIMEOUT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_default();
        let ready: Value = serde_json::from_str(&first).unwrap_or(Value::Null);
        assert_eq!(
            ready["ready"], true,
            "browser driver failed to start: {first}"
        );
        eprintln!("chromium {}", ready["version"]);
        Some(Browser {
            child,
            stdin,
            lines,
            next_id: 0,
        })
    }

    pub async fn call(&mut self, mut cmd: Value) -> Result<Value, String> {
        self.next_id += 1;
        cmd["id"] = json!(self.next_id);
        let line = format!("{cmd}\n");
        let exchange = async {
            self.stdin.write_all(line.as_bytes()).await.unwrap();
            self.stdin.flush().await.unwrap();
            loop {
                let Some(reply) = self.lines.next_line().await.unwrap() else {
                    return Err("browser driver exited".to_owned());
                };
                let reply: Value = serde_json::from_str(&reply).unwrap();
                if reply["id"] == cmd["id"] {
                    return if reply["ok"] == true {
                        Ok(reply["result"].clone())
                    } else {
                        Err(reply["error"].as_str().unwrap_or("?").to_owned())
                    };
                }
            }
        };
        tokio::time::timeout(BROWSER_CALL_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no reply within {BROWSER_CALL_TIMEOUT:?}")))
    }

    /// Runs `cmd`; on failure panics with the error and the page's console log.
    pub async fn ok(&mut self, cmd: Value) -> Value {
        match self.call(cmd.clone()).await {
            Ok(v) => v,
            Err(err) => {
                let logs = self.call(json!({"op": "logs"})).await;
                panic!("browser {cmd} failed: {err}\npage console: {logs:#?}");
            }
        }
    }

    pub async fn open(&mut self, url: &str) {
        let r = self.ok(json!({"op": "open", "url": url})).await;
        assert_eq!(r["status"], 200, "{url}");
    }

    pub async fn eval(&mut self, expr: &str) -> Value {
        self.ok(json!({"op": "eval", "expr": expr})).await
    }

    pub async fn wait(&mut self, expr: &str) -> Value {
        self.ok(json!({"op": "wait", "expr": expr, "timeout": 15000}))
            .await
    }

    /// The last visible element matching `selector` that contains `text`.
    pub async fn element(&mut self, selector: &str, text: &str) -> Value {
        self.ok(json!({"op": "element", "selector": selector, "text": text, "timeout": 15000}))
            .await
    }

    /// Resizes the page (e.g. 390 x 844, a phone).
    pub async fn viewport(&mut self, width: u32, height: u32) {
        self.ok(json!({"op": "viewport", "width": width, "height": height}))
            .await;
    }

    pub async fn screenshot(&mut self, name: &str) {
        let path = screenshot_path(name);
        self.ok(json!({"op": "screenshot", "path": path})).await;
        eprintln!("screenshot: {path}");
    }

    /// The console log; fails the test on page errors or CSP violations.
    pub async fn assert_clean_console(&mut self) -> Vec<String> {
        let logs: Vec<String> =
            serde_json::from_value(self.ok(json!({"op": "logs"})).await).unwrap();
        for line in &logs {
            assert!(
                !line.starts_with("pageerror") && !line.contains("Content Security Policy"),
                "page reported: {line}\nfull console: {logs:#?}"
            );
        }
        logs
    }

    /// Cuts (`true`) or restores the page's network through the DevTools protocol.
    pub async fn network_offline(&mut self, offline: bool) {
        self.ok(json!({"op": "network", "offline": offline})).await;
    }

    /// Adds `name=value` for every path of `url`'s host.
    pub async fn cookie(&mut self, url: &str, name: &str, value: &str) {
        self.ok(json!({"op": "cookies", "cookies": [{"name": name, "value": value, "url": url}]}))
            .await;
    }

    /// How many WebSockets the page has opened so far, as Chromium saw them.
    pub async fn websockets(&mut self) -> usize {
        let list = self.ok(json!({"op": "websockets"})).await;
        list.as_array().unwrap().len()
    }

    pub async fn quit(mut self) {
        let _ = self.call(json!({"op": "quit"})).await;
        let _ = tokio::time::timeout(TIMEOUT, self.child.wait()).await;
    }
}

/// `herald serve --demo --bind ADDR [--redis URL]`, killed on drop.
pub struct Served {
    pub addr: SocketAddr,
    pub child: Child,
}

impl Served {
    /// With `--redis redis_url`.
    pub async fn start(addr: SocketAddr, redis_url: &str) -> Served {
        Self::start_with(addr, &["--redis", redis_url]).await
    }

    pub async fn start_with(addr: SocketAddr, args: &[&str]) -> Served {
        let mut child = Command::new(bin())
            .args(["serve", "--demo", "--bind", &addr.to_string()])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("herald serve exited early with {status}");
            }
            if healthy(addr).await {
                return Served { addr, child };
            }
            assert!(
                Instant::now() < deadline,
                "herald serve did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the browser sees its socket drop without a close frame (1006).
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process: a stopped server keeps its sockets
    /// and accepts TCP connections (the kernel does) but answers nothing, like a dead link.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub async fn healthy(addr: SocketAddr) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}

/// A host app's web server (Django's, in production) on a free loopback port: answers every
/// GET with `html`. Its origin differs from Herald's (another port), as when the site and
/// Herald are on different hosts; the browser still sends Herald the site's cookies (same host).
pub async fn serve_page(html: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let html: std::sync::Arc<str> = html.into();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(html.as_bytes()).await;
            });
        }
    });
    addr
}

/// The value of the counter `name` on `addr`'s `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let page = super::http_get(addr, "/metrics").await;
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {page}"))
}

/// Runs the herald CLI against `redis_url` and checks it reported success.
pub async fn herald_cli(redis_url: &str, args: &[&str]) {
    let mut all = vec![args[0], "--redis", redis_url];
    all.extend_from_slice(&args[1..]);
    let out = herald(&all).await;
    assert!(
        out.status.success(),
        "herald {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const WS_OPEN: &str =
    "window.taskNotifications && taskNotifications.ws && taskNotifications.ws.readyState === 1";
