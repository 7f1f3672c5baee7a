//! What `herald` prints for a newcomer and for a log pipeline: no ANSI colour codes when the
//! log is not a terminal, JSON lines with `--log-format json`, an in-use port that names
//! `--bind`, a bare `serve` that says how to try and configure it, and a sender error that
//! names its cause once.

mod support;

use std::process::Stdio;

use herald_test_support::free_port;
use support::{Herald, TIMEOUT, bin, herald};

/// Runs `herald serve ARGS` with the log in a file, stops it, and returns the log.
async fn serve_log(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.log");
    let server = Herald::start_with_log(args, env, &path).await;
    // The monitor's first check is logged (or not) right after start; /readyz settles it.
    let ready = support::http_get(server.addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1"), "{ready}");
    server.terminate().await;
    std::fs::read_to_string(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_carry_no_colour_codes_when_not_a_terminal() {
    let log = serve_log(&[], &[("RUST_LOG", "info")]).await;
    assert!(log.contains("herald serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a piped log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_parse_from_the_flag_and_the_variable() {
    for (args, env) in [
        (vec!["--log-format", "json"], vec![("RUST_LOG", "info")]),
        (
            vec![],
            vec![("RUST_LOG", "info"), ("HERALD_LOG_FORMAT", "json")],
        ),
    ] {
        let log = serve_log(&args, &env).await;
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let serving = lines
            .iter()
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("herald serving"))
            })
            .unwrap_or_else(|| panic!("no 'herald serving' line in {log}"));
        assert_eq!(serving["level"], "INFO");
        assert!(
            serving["fields"]["addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_a_taken_port_names_the_bind_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = herald(&["serve", "--bind", &addr]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains("--bind"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_serve_says_how_to_try_and_how_to_configure() {
    let log = serve_log(&[], &[("RUST_LOG", "warn")]).await;
    assert!(
        log.contains("herald serve --demo") && log.contains("--redis") && log.contains("--config"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_send_names_its_cause_once() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let out = herald(&["send", "--redis", &url, "--user", "amadmin", "hi"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn senders_default_to_the_port_serve_defaults_to_which_is_not_djangos() {
    // Nothing is started: the error names where the sender looked, which must be where a bare
    // `herald serve` listens, and not Django runserver's 8000.
    let child = tokio::process::Command::new(bin())
        .args(["send", "--user", "demo", "hi"])
        .env_remove("HERALD_SERVER")
        .env_remove("HERALD_REDIS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let help = herald(&["serve", "--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    let default = help
        .split("[default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap();
    assert!(default.starts_with("127.0.0.1:"), "{help}");
    assert_ne!(default, "127.0.0.1:8000", "Django runserver's port");
    assert!(err.contains(&format!("http://{default}")), "{err}");
}
