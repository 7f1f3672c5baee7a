//! [`PostgresServer`]: a private PostgreSQL cluster (`initdb` + `pg_ctl`) in a temporary
//! directory on an ephemeral port, for tests that need server settings the machine's own cluster
//! must not get (TLS on, `hostssl`-only `pg_hba.conf`). The machine's cluster is never touched.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::{PORT_TRIES, free_port};

/// The PostgreSQL server binaries: `$HERALD_PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout) that has `initdb`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HERALD_PG_BIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A private PostgreSQL cluster with TLS on, stopped (`pg_ctl stop -m immediate`) on drop.
///
/// Trust authentication throughout (`user=postgres`, no password). Over the unix socket in
/// [`socket_dir`](Self::socket_dir) anything goes (for setting the database up); over TCP on
/// `127.0.0.1:`[`port`](Self::port) the given `pg_hba.conf` lines decide.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    run_as_postgres: bool,
}

impl PostgresServer {
    /// Starts a cluster serving TLS with `cert_pem` (chain) and `key_pem`, with
    /// `hba_tcp_lines` as the TCP part of `pg_hba.conf` (e.g. `"hostssl all all 127.0.0.1/32
    /// trust"`).
    ///
    /// Returns `None` after saying why when no PostgreSQL server binaries are installed.
    ///
    /// # Panics
    /// When the binaries are missing and `HERALD_REQUIRE_COMPAT=1`, or the cluster cannot
    /// start (with its log).
    pub fn start_tls(cert_pem: &str, key_pem: &str, hba_tcp_lines: &str) -> Option<Self> {
        let Some(bin) = postgres_bin_dir() else {
            let why = "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: install \
                       them (apt-get install -y postgresql) or set HERALD_PG_BIN_DIR";
            if std::env::var("HERALD_REQUIRE_COMPAT").as_deref() == Ok("1") {
                panic!("{why} (HERALD_REQUIRE_COMPAT=1)");
            }
            eprintln!("SKIPPING private postgres test: {why}");
            return None;
        };
        // initdb and postgres refuse to run as root: use the `postgres` system user then.
        let run_as_postgres = is_root();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        // postgres refuses a key that others can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut server = PostgresServer {
            bin,
            dir,
            port: 0,
            run_as_postgres,
        };
        if run_as_postgres {
            server.checked(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(server.dir.path()),
            );
        }
        let data = server.data_dir();
        server.checked(server.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ]));
        let hba = format!("local all all trust\n{hba_tcp_lines}\n");
        let socket_dir = server.socket_dir();
        let common = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             ssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\nmax_connections = 20\n\
             shared_buffers = 16MB\n",
            socket_dir.display(),
            cert.display(),
            key.display()
        );
        let mut last_log = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let conf = format!("{common}port = {port}\n");
            // Rewriting existing files keeps their owner (postgres when run as root).
            let base = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            let base = base
                .split("\n# herald test settings\n")
                .next()
                .unwrap_or("")
                .to_owned();
            std::fs::write(
                data.join("postgresql.conf"),
                format!("{base}\n# herald test settings\n{conf}"),
            )
            .unwrap();
            std::fs::write(data.join("pg_hba.conf"), &hba).unwrap();
            let log = server.dir.path().join("postgres.log");
            let out = server
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "30", "start"])
                .output()
                .unwrap();
            if out.status.success() {
                server.port = port;
                return Some(server);
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            if !last_log.contains("already in use") {
                panic!(
                    "private postgres did not start: {}\n{last_log}",
                    describe(&out)
                );
            }
        }
        panic!("private postgres: no free port after {PORT_TRIES} tries:\n{last_log}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the unix socket (a libpq `host=`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null()).current_dir(self.dir.path());
        cmd
    }

    fn checked(&self, cmd: &mut Command) {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?} failed: {}", describe(&out));
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::print_log_tail("private postgres", self.port, &self.log());
        }
        if self.port != 0 {
            let data = self.data_dir();
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
