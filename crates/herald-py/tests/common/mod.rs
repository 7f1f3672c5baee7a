//! Runs the `herald` package's Python under pytest, from the compat venv, against servers
//! these tests start.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_test_support::workspace_root;

/// The channels_redis release whose own tests run against herald (the pinned one).
pub const CHANNELS_REDIS: &str = "channels_redis==4.3.0";

/// What a pytest run printed and how it ended.
#[derive(Debug)]
pub struct PytestRun {
    pub success: bool,
    pub output: String,
}

impl PytestRun {
    /// The count before `word` in pytest's summary line (`51 passed, 6 deselected in 3.1s`).
    pub fn count(&self, word: &str) -> usize {
        let summary = self
            .output
            .lines()
            .rev()
            .find(|line| {
                line.contains(" in ") && (line.contains("passed") || line.contains("failed"))
            })
            .unwrap_or_default();
        summary
            .split([',', '='])
            .filter_map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next()?.parse::<usize>().ok()?;
                (words.next()? == word).then_some(n)
            })
            .sum()
    }

    /// Panics with the output unless pytest succeeded with nothing failed.
    pub fn assert_green(&self) {
        assert!(
            self.success
                && self.count("failed") == 0
                && self.count("error") == 0
                && self.count("errors") == 0,
            "pytest failed:\n{}",
            self.output
        );
    }
}

/// Runs `python -m pytest ARGS` in `cwd` with `env`, killed after `limit`.
pub fn pytest(
    python: &Path,
    cwd: &Path,
    args: &[&str],
    env: &[(&str, String)],
    limit: Duration,
) -> PytestRun {
    let mut child = Command::new(python)
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-rfEX"])
        .args(args)
        .current_dir(cwd)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    // Shown by nextest when the test fails.
    eprintln!("{output}");
    let Some(status) = status else {
        panic!("pytest did not finish within {limit:?}:\n{output}");
    };
    PytestRun {
        success: status.success(),
        output,
    }
}

/// The `tests/` directory of channels_redis's source distribution, unpacked into `into`.
///
/// The sdist is fetched from PyPI with pip the first time and kept in the venv
/// (`tests/compat/.venv/sdist/`); its code is never committed here.
pub fn channels_redis_tests(python: &Path, into: &Path) -> PathBuf {
    let cache = workspace_root().join("tests/compat/.venv/sdist");
    std::fs::create_dir_all(&cache).unwrap();
    let name = CHANNELS_REDIS.replace("==", "-");
    let sdist = cache.join(format!("{name}.tar.gz"));
    if !sdist.is_file() {
        // Downloaded beside the cache and renamed, so parallel tests never read half a file.
        let staging = tempfile::tempdir_in(&cache).unwrap();
        let out = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
            ])
            .args(["--no-binary", ":all:", CHANNELS_REDIS, "-d"])
            .arg(staging.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip download {CHANNELS_REDIS} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(staging.path().join(format!("{name}.tar.gz")), &sdist).unwrap();
    }
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')",
        ])
        .arg(&sdist)
        .arg(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    into.join(name)
}
