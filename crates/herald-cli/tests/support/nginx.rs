//! nginx in the foreground on an ephemeral loopback port, with a configuration taken from
//! `docs/deploy.md`, killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `docs/deploy.md`, inside
/// its code fence.
pub fn deploy_doc_block(name: &str) -> String {
    let path = herald_test_support::workspace_root().join("docs/deploy.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("{begin} not in docs/deploy.md"));
    let stop = doc
        .find(&end)
        .unwrap_or_else(|| panic!("{end} not in docs/deploy.md"));
    let block = &doc[start + begin.len()..stop];
    // Drop the ``` fence lines.
    let body: Vec<&str> = block
        .trim()
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect();
    body.join("\n") + "\n"
}

/// `s` with `from` replaced by `to`, which must occur exactly once (so the doc cannot change
/// under the test unnoticed).
pub fn replace_once(s: &str, from: &str, to: &str) -> String {
    assert_eq!(
        s.matches(from).count(),
        1,
        "{from:?} must occur once in:\n{s}"
    );
    s.replacen(from, to, 1)
}

/// The nginx binary: `$HERALD_NGINX_BIN`, else `nginx` on `PATH` or in `/usr/sbin`.
fn nginx_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("HERALD_NGINX_BIN") {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `http_conf` (what goes inside `http { }`) after replacing `listen`
    /// with a free loopback port. `None` after saying why when nginx is not installed; a panic
    /// instead under `HERALD_REQUIRE_COMPAT=1`.
    pub async fn start(http_conf: &str, listen: &str) -> Option<Nginx> {
        let Some(bin) = nginx_bin() else {
            let why = "nginx not found: install it (apt-get install -y nginx-light; \
                       scripts/setup.sh does) or set HERALD_NGINX_BIN";
            if std::env::var("HERALD_REQUIRE_COMPAT").as_deref() == Ok("1") {
                panic!("{why} (HERALD_REQUIRE_COMPAT=1)");
            }
            eprintln!("SKIPPING nginx test: {why}");
            return None;
        };
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = herald_test_support::free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let d = dir.path().display();
            let http = replace_once(http_conf, listen, &format!("listen {addr};"));
            // One process in the foreground (no master/worker split, so no user switch when
            // run as root); every path nginx writes is in the temporary directory.
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    \
                 proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
                 uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n{http}}}\n"
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    last_log =
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    break;
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Some(Nginx { addr, child, dir });
                }
                assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx did not start:\n{last_log}");
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- nginx error log ---\n{}", self.error_log());
        }
        let _ = self.child.start_kill();
    }
}
