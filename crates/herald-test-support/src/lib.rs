//! Test support for Herald: a real `redis-server` per test on an ephemeral port.
//!
//! # Layout
//! * [`RedisServer`] — spawns `redis-server` (from `$HERALD_REDIS_SERVER_BIN` or `PATH`), waits
//!   for `PING`/`+PONG` with a deadline, retries on a port clash, kills it on drop and prints its
//!   log when the owning test panics.
//! * [`SentinelServer`] — `redis-server --sentinel` monitoring a [`RedisServer`], optionally
//!   password-protected, for Sentinel host tests.
//! * [`free_port`] — a loopback port nobody listens on right now.
//! * [`compat_python`] — the Python of the pinned compat venv (`tests/compat/`), or why not.
//! * [`eventually`] — waits for a condition with a deadline, for every crate's tests.
//! * [`django`] — the Django test project (`tests/compat/django_project`): settings, `manage.py`,
//!   `herald_fixture`.
//! * [`ws`] — WebSocket client helpers (connect, next frame, send, close code), each step bounded.
//! * [`PostgresServer`] — a private PostgreSQL cluster (initdb + pg_ctl) with TLS on, for
//!   server settings the machine's own cluster must not get.
//!
//! It hands out URLs and ports, never layer types, so any crate's tests can use it.

pub mod django;
mod poll;
mod postgres;
pub mod ws;

pub use poll::{POLL_INTERVAL, eventually};
pub use postgres::{PostgresServer, postgres_bin_dir};

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(5);
/// How many times a port clash is retried with a new port.
const PORT_TRIES: usize = 5;

/// A loopback port that was free a moment ago (bind `127.0.0.1:0`, read it, drop the listener).
///
/// A machine whose ephemeral range is momentarily exhausted (a load test next door leaving
/// thousands of sockets in TIME_WAIT) answers `AddrInUse` even for port 0; that is retried for a
/// few seconds before failing.
pub fn free_port() -> u16 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => return listener.local_addr().unwrap().port(),
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => panic!("cannot bind 127.0.0.1:0 (ephemeral ports exhausted?): {err}"),
        }
    }
}

/// The `redis-server` binary: `$HERALD_REDIS_SERVER_BIN`, else `redis-server` on `PATH`.
///
/// # Panics
/// If neither exists, with an install hint: a missing Redis is a failure, never a skip.
pub fn redis_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HERALD_REDIS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "redis-server not found: install it (`apt-get install -y redis-server`) or set \
         HERALD_REDIS_SERVER_BIN to its path"
    );
}

/// A `redis-server` child process on `127.0.0.1:<ephemeral port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with persistence off. Panics (with the server log) if it cannot start.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments (e.g. `["--requirepass", "x"]`).
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let bin = redis_server_bin();
        let mut last_log = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            match Self::spawn(&bin, port, dir, extra) {
                Ok(server) => return server,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("redis-server failed to start:\n{log}"),
            }
        }
        panic!("redis-server: no free port after {PORT_TRIES} tries:\n{last_log}");
    }

    /// Starts a server on a given port (for restart tests that need the same address again).
    /// Returns the log on failure.
    pub fn start_on_port(port: u16, extra: &[&str]) -> Result<RedisServer, String> {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn(&redis_server_bin(), port, dir, extra)
    }

    fn spawn(
        bin: &Path,
        port: u16,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> Result<RedisServer, String> {
        let log_path = dir.path().join("redis.log");
        let mut child = Command::new(bin)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log_path)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {status}\n{stderr}{log}"));
            }
            if ping(port) {
                return Ok(RedisServer { child, port, dir });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("no PONG within {READY_DEADLINE:?}\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url_db(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server now (SIGKILL) and waits for it; the port becomes free.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the last lines of a server's log, for a test that is failing (its servers are being
/// dropped while the thread panics).
fn print_log_tail(server: &str, port: u16, log: &str) {
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!("--- {server} :{port} log (last {} lines) ---", tail.len());
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tail("redis-server", self.port, &self.log());
        }
        self.kill();
    }
}

/// A Redis Sentinel (`redis-server <conf> --sentinel`) on `127.0.0.1:<ephemeral port>`,
/// monitoring one master; killed on drop.
#[derive(Debug)]
pub struct SentinelServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SentinelServer {
    /// Starts a Sentinel that monitors `127.0.0.1:<master_port>` as `master_name` (quorum 1).
    /// With `password`, clients must `AUTH` to the Sentinel itself (Python's
    /// `sentinel_kwargs={"password": …}`). Panics with the log if it cannot start.
    pub fn start(master_name: &str, master_port: u16, password: Option<&str>) -> SentinelServer {
        let requirepass = password.map(|pw| format!("requirepass {pw}"));
        let extra: Vec<&str> = requirepass.as_deref().into_iter().collect();
        Self::start_with_conf(master_name, master_port, 1, &extra, password)
    }

    /// Starts a Sentinel that monitors `127.0.0.1:<master_port>` as `master_name` with `quorum`,
    /// with extra configuration lines (e.g. `sentinel down-after-milliseconds <name> 1000` for a
    /// failover test with several Sentinels). `password` is the Sentinel's own `requirepass`,
    /// used for the readiness `PING`; pass its `requirepass` line in `extra` too.
    /// Panics with the log if it cannot start.
    pub fn start_with_conf(
        master_name: &str,
        master_port: u16,
        quorum: u32,
        extra: &[&str],
        password: Option<&str>,
    ) -> SentinelServer {
        let bin = redis_server_bin();
        let mut last_log = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let log_path = dir.path().join("sentinel.log");
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n",
                dir.path().display(),
                log_path.display()
            );
            for line in extra {
                conf.push_str(line);
                conf.push('\n');
            }
            let conf_path = dir.path().join("sentinel.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(&bin)
                .arg(&conf_path)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_log = format!(
                        "exited with {status}\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if ping_auth(port, password) {
                    return SentinelServer { child, port, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sentinel: no PONG within {READY_DEADLINE:?}\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if !last_log.contains("Address already in use") {
                panic!("sentinel failed to start:\n{last_log}");
            }
        }
        panic!("sentinel: no free port after {PORT_TRIES} tries:\n{last_log}");
    }

    /// The Sentinel's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Sentinel's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sentinel :{} log ---\n{}", self.port, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `AUTH <password>` (if any) then `PING`, expecting `+OK` and `+PONG`.
fn ping_auth(port: u16, password: Option<&str>) -> bool {
    let Some(password) = password else {
        return ping(port);
    };
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(format!("AUTH {password}\r\nPING\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    let ok = stream.read_exact(&mut buf).is_ok() && &buf == b"+OK\r\n+PONG\r\n";
    let _ = stream.shutdown(Shutdown::Both);
    ok
}

/// Sends one inline `PING` and checks for `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    let ok = stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n";
    let _ = stream.shutdown(Shutdown::Both);
    ok
}

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// The Python interpreter of the compat venv built by `tests/compat/setup.sh`.
///
/// `$HERALD_COMPAT_PYTHON` if set, else `<workspace>/tests/compat/.venv/bin/python`.
/// Returns `None` (after printing why) when it is missing and `HERALD_REQUIRE_COMPAT` is not
/// `1`, so a local run can go on without Python.
///
/// # Panics
/// When the interpreter is missing and `HERALD_REQUIRE_COMPAT=1` (CI): a compat test that cannot
/// find Python fails, it never passes silently.
pub fn compat_python() -> Option<PathBuf> {
    let python = std::env::var_os("HERALD_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tests/compat/.venv/bin/python"));
    if python.is_file() {
        return Some(python);
    }
    let why = format!(
        "compat python {} not found: run tests/compat/setup.sh (or set HERALD_COMPAT_PYTHON)",
        python.display()
    );
    if std::env::var("HERALD_REQUIRE_COMPAT").as_deref() == Ok("1") {
        panic!("{why} (HERALD_REQUIRE_COMPAT=1)");
    }
    eprintln!("SKIPPING compat test: {why}");
    None
}

/// The compat venv's Python (see [`compat_python`]) with the `herald` package (python/)
/// importable, as `scripts/test.sh` builds it there with maturin.
///
/// Returns `None` (after printing why) when either is missing and `HERALD_REQUIRE_COMPAT` is
/// not `1`.
///
/// # Panics
/// When the package is missing and `HERALD_REQUIRE_COMPAT=1` (CI).
pub fn herald_package_python() -> Option<PathBuf> {
    let python = compat_python()?;
    let probe = Command::new(&python)
        .args(["-c", "import herald.layers"])
        .output()
        .unwrap();
    if probe.status.success() {
        return Some(python);
    }
    let why = format!(
        "the herald package is not installed in {}: scripts/test.sh builds it, or run \
         `cd python && VIRTUAL_ENV=../tests/compat/.venv ../tests/compat/.venv/bin/maturin develop`\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    if std::env::var("HERALD_REQUIRE_COMPAT").as_deref() == Ok("1") {
        panic!("{why} (HERALD_REQUIRE_COMPAT=1)");
    }
    eprintln!("SKIPPING herald package test: {why}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_answers_and_stops() {
        let mut server = RedisServer::start();
        assert!(ping(server.port()));
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        server.kill();
        assert!(!ping(server.port()));
    }

    #[test]
    fn sentinel_starts_with_a_password() {
        let master = RedisServer::start();
        let sentinel = SentinelServer::start("mymaster", master.port(), Some("pw"));
        assert!(ping_auth(sentinel.port(), Some("pw")));
        assert!(!ping(sentinel.port()), "PING without AUTH must be refused");
    }

    #[test]
    fn two_servers_get_different_ports() {
        let a = RedisServer::start();
        let b = RedisServer::start();
        assert_ne!(a.port(), b.port());
    }
}
