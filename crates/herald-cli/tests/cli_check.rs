//! `herald check` against real Redis and a real Django database.

mod support;

use herald_test_support::{RedisServer, compat_python, free_port};
use support::django::{Django, SECRET};
use support::herald;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_a_working_setup_and_names_the_cookies_user() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &redis.url());
    let fixture = django.fixture(&["--username", "amadmin"]).await;
    let url = redis.url();
    let base = ["check", "--redis", &url, "--django-db", &db_url];

    let mut args = base.to_vec();
    args.extend(["--secret-key", SECRET, "--cookie", &fixture.cookie]);
    let out = herald(&args).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("ok    channel layer"), "{text}");
    assert!(text.contains("ok    django database"), "{text}");
    assert!(text.contains("authenticates user \"amadmin\""), "{text}");

    // The wrong SECRET_KEY is named as the reason the cookie is refused.
    let mut args = base.to_vec();
    args.extend([
        "--secret-key",
        "not-the-secret",
        "--cookie",
        &fixture.cookie,
    ]);
    let out = herald(&args).await;
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("FAIL  cookie: refused: bad_signature"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_fails_on_unreachable_redis() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let out = herald(&["check", "--redis", &url]).await;
    assert!(!out.status.success());
    let text = stdout(&out);
    // One verdict per item, and the underlying error once.
    let verdicts: Vec<&str> = text.lines().collect();
    assert_eq!(verdicts.len(), 5, "{text}");
    assert!(verdicts[0].starts_with("ok    config"), "{text}");
    assert!(
        verdicts[1].starts_with("FAIL  channel layer: redis host #0")
            && verdicts[1].matches("Connection refused").count() == 1,
        "{text}"
    );
    assert_eq!(
        verdicts[2], "skip  key prefix: needs a reachable channel layer",
        "{text}"
    );
    assert_eq!(
        verdicts[3], "skip  history: needs a reachable channel layer",
        "{text}"
    );
    assert!(verdicts[4].starts_with("warn  django auth"), "{text}");
}

/// `herald check` names the history rules and what Redis holds: nothing before a herald ran,
/// then the epoch, the log, the recorded group and the capture lease.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_the_history_rules_and_what_redis_holds() {
    let redis = RedisServer::start();
    let url = redis.url();
    let history_line = |out: &std::process::Output| {
        let text = stdout(out);
        text.lines()
            .find(|l| l.contains("history:"))
            .unwrap_or_else(|| panic!("no history line:\n{text}"))
            .to_owned()
    };
    let out = herald(&["check", "--redis", &url]).await;
    assert!(history_line(&out).starts_with("ok    history: off"));
    let out = herald(&["check", "--redis", &url, "--history", "on"]).await;
    let line = history_line(&out);
    assert!(
        line.starts_with("ok    history: user_*=100/300s, task_*=20/3600s; Redis 7"),
        "{line}"
    );
    assert!(
        line.contains("epoch not set yet; log 0 entries; 0 recorded groups"),
        "{line}"
    );

    let out = herald(&["check", "--redis", &url, "--history", "none"]).await;
    assert!(history_line(&out).starts_with("ok    history: off"));
    // A malformed rule fails the layer's configuration, naming it.
    let out = herald(&["check", "--redis", &url, "--history", "user_*=ten/5"]).await;
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("FAIL  channel layer: --history \"user_*=ten/5\""),
        "{}",
        stdout(&out)
    );

    let server = support::Herald::start(&[
        "--redis",
        &url,
        "--trusted-user-header",
        "x-remote-user",
        "--history",
        "on",
    ])
    .await;
    let _ws = support::ws_connect_as(server.addr, "alice").await;
    let sent = herald(&["send", "--redis", &url, "--user", "alice", "hello"]).await;
    assert!(sent.status.success());
    let mut line = String::new();
    for _ in 0..50 {
        line = history_line(&herald(&["check", "--redis", &url, "--history", "on"]).await);
        if line.contains("log 1 entries; 1 recorded groups") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(line.contains("log 1 entries; 1 recorded groups"), "{line}");
    assert!(line.contains("a herald holds the capture lease"), "{line}");
    assert!(!line.contains("epoch not set yet"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_the_databases_own_error() {
    let Some(db) = support::postgres::Database::create().await else {
        return;
    };
    let redis = RedisServer::start();
    // A database without Django's tables; the password (trust auth ignores it) is masked.
    let url = db.url().replace("postgres@", "postgres:hunter2@");
    let out = herald(&[
        "check",
        "--redis",
        &redis.url(),
        "--secret-key",
        "k",
        "--django-db",
        &url,
    ])
    .await;
    assert!(!out.status.success());
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("django database"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("FAIL  django database: postgres: db error: ")
            && line.contains("\"django_session\" does not exist"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_warns_when_python_uses_another_prefix() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A group written under the prefix "myapp", as a Python site with prefix="myapp" would.
    let status = tokio::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "ZADD",
            "myapp:group:g",
            "1",
            "specific.x!y",
        ])
        .output()
        .await
        .unwrap();
    assert!(status.status.success());
    let out = herald(&["check", "--redis", &url]).await;
    let text = stdout(&out);
    assert!(text.contains("warn  key prefix"), "{text}");
    assert!(text.contains("myapp"), "{text}");
    let out = herald(&["check", "--redis", &url, "--prefix", "myapp"]).await;
    assert!(
        stdout(&out).contains("ok    key prefix"),
        "{}",
        stdout(&out)
    );
}
