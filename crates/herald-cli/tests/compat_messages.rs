//! What `herald send | notify | file | broadcast` put on the wire is exactly what the guide's
//! Python helpers (`OptsIO.ws_utils`) put there, and a Python consumer receives it.

mod support;

use std::time::Duration;

use herald_test_support::{RedisServer, compat_python};
use support::django::Django;
use support::{herald, herald_with_env};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Python's `datetime.now().isoformat()`: `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
fn is_isoformat(ts: &str) -> bool {
    let b = ts.as_bytes();
    let head = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    let tail = &ts[19.min(ts.len())..];
    head && (tail.is_empty() || (tail.len() == 7 && tail.starts_with('.')))
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_senders_match_the_python_helpers_and_reach_a_python_consumer() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();

    // A Python consumer (real channels_redis) in both users' groups.
    let mut listener = Listener::start(&python, &url, "user_amadmin,user_bob", 6).await;

    let sends: [&[&str]; 5] = [
        &[
            "send",
            "--user",
            "amadmin",
            "--data",
            r#"{"count": 100, "status": "success"}"#,
            "Processing complete",
        ],
        &[
            "notify",
            "--user",
            "amadmin",
            "--type",
            "warning",
            "--title",
            "Warning",
            "Disk space low",
        ],
        &[
            "notify",
            "--user",
            "amadmin",
            "System maintenance scheduled",
        ],
        &[
            "file",
            "--user",
            "amadmin",
            "--message",
            "Your export is ready",
            "--size",
            "156789",
            "/media/exports/data.csv",
        ],
        &[
            "broadcast",
            "--user",
            "amadmin,bob",
            "New feature deployed!",
        ],
    ];
    for args in sends {
        let mut full = args.to_vec();
        full.extend(["--redis", &url]);
        let out = herald(&full).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let mut received = Vec::new();
    for _ in 0..6 {
        let event = listener.next().await;
        assert_eq!(event["event"], "message", "{event}");
        received.push(event["message"].clone());
    }

    // The same calls through the guide's Python helpers (message builders only, no send).
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &url);
    let expected = django
        .shell(
            "import json\n\
             from OptsIO.ws_utils import user_message, user_notification, user_file\n\
             print(json.dumps([\n\
               user_message('amadmin', 'Processing complete', data={'count': 100, 'status': 'success'}),\n\
               user_notification('amadmin', 'Disk space low', 'warning', 'Warning'),\n\
               user_notification('amadmin', 'System maintenance scheduled'),\n\
               user_file('amadmin', '/media/exports/data.csv', message='Your export is ready', file_size=156789),\n\
               user_message('amadmin', 'New feature deployed!'),\n\
               user_message('bob', 'New feature deployed!'),\n\
             ]))\n",
        )
        .await;
    // `manage.py shell` may print its own lines first (e.g. auto-imports); the JSON is last.
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(expected.trim().lines().last().unwrap()).unwrap();

    // The Python consumer may see amadmin's and bob's broadcast copies in either order.
    let sort_key = |m: &serde_json::Value| {
        (
            m["type"].to_string(),
            m["message"].to_string(),
            m["username"].to_string(),
        )
    };
    let mut received = received;
    let mut expected = expected;
    received.sort_by_key(sort_key);
    expected.sort_by_key(sort_key);
    for (got, want) in received.iter().zip(&expected) {
        let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
        // Same keys in the same order, same values; timestamps differ only in time.
        let got_keys: Vec<_> = got.keys().collect();
        let want_keys: Vec<_> = want.keys().collect();
        assert_eq!(got_keys, want_keys);
        for (k, v) in want {
            if k == "timestamp" {
                assert!(is_isoformat(got[k].as_str().unwrap()), "{}", got[k]);
            } else {
                assert_eq!(&got[k], v, "field {k}");
            }
        }
    }
}

/// `b - a` for two naive `isoformat()` stamps.
/// `peer.py listen`: a Python consumer (real channels_redis) in `groups`, printing what it
/// receives as JSON lines; ready once it said so. Killed on drop.
struct Listener {
    _peer: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Listener {
    async fn start(python: &std::path::Path, url: &str, groups: &str, count: usize) -> Listener {
        let config = serde_json::json!({"hosts": [{"address": url, "socket_timeout": null}]});
        let count = count.to_string();
        let args = ["listen", "--groups", groups, "--count", &count];
        let mut peer = support::peer_py(python, &config, &args);
        let lines = BufReader::new(peer.stdout.take().unwrap()).lines();
        let mut listener = Listener { _peer: peer, lines };
        assert_eq!(listener.next().await["event"], "ready");
        listener
    }

    /// The next line the consumer printed.
    async fn next(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

fn seconds_between(a: &str, b: &str) -> f64 {
    let parse = |t: &str| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").unwrap();
    (parse(b) - parse(a)).as_seconds_f64()
}

/// Django makes `TIME_ZONE` the process's local time (with `USE_TZ` on or off), so the guide's
/// `datetime.now().isoformat()` is wall-clock time there. `--time-zone`, `HERALD_TIME_ZONE` and
/// `[django] time_zone` make herald's stamps the same; a zone Django would refuse is an error
/// before anything is sent.
#[tokio::test(flavor = "multi_thread")]
async fn cli_timestamps_are_local_time_in_django_time_zone() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();

    // Refused up front: nothing of these reaches the consumer below.
    let out = herald(&[
        "send",
        "--user",
        "amadmin",
        "--time-zone",
        "Mars/Base",
        "--redis",
        &url,
        "x",
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"unknown time zone "Mars/Base""#),
        "{stderr}"
    );
    let out = herald_with_env(
        &["notify", "--user", "amadmin", "--redis", &url, "x"],
        &[("HERALD_TIME_ZONE", "europe/paris")],
    )
    .await;
    assert!(
        !out.status.success(),
        "a misspelt zone is refused, as Django does"
    );
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[django]\ntime_zone = \"Nowhere/City\"\n").unwrap();
    let out = herald(&[
        "serve",
        "--config",
        bad_file.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Nowhere/City"));

    let mut listener = Listener::start(&python, &url, "user_amadmin", 4).await;

    let toml = dir.path().join("herald.toml");
    std::fs::write(&toml, "[django]\ntime_zone = \"Pacific/Chatham\"\n").unwrap();
    let toml = toml.to_str().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &url);
    /// A herald command, its environment, the zone it must stamp in, Django's USE_TZ.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            &["send", "--time-zone", "Asia/Kathmandu", "one"],
            &[],
            "Asia/Kathmandu",
            "1",
        ),
        (
            &["notify", "two"],
            &[("HERALD_TIME_ZONE", "America/St_Johns")],
            "America/St_Johns",
            "1",
        ),
        (
            &["--config", toml, "file", "/media/three.csv"],
            &[],
            "Pacific/Chatham",
            "0",
        ),
        (
            &["broadcast", "--time-zone", "Asia/Kolkata", "four"],
            &[("HERALD_TIME_ZONE", "America/St_Johns")],
            "Asia/Kolkata",
            "1",
        ),
    ];
    for (args, env, zone, use_tz) in cases {
        let mut full = args.to_vec();
        full.extend(["--user", "amadmin", "--redis", &url]);
        let out = herald_with_env(&full, env).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        let ours = listener.next().await["message"]["timestamp"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(is_isoformat(&ours), "{ours}");
        // The guide's helper in a Django process with this TIME_ZONE, a moment later.
        let theirs = django
            .clone()
            .with_env("TIME_ZONE", zone)
            .with_env("USE_TZ", use_tz)
            .shell(
                "from OptsIO.ws_utils import user_message\n\
                 print(user_message('amadmin', 'x')['timestamp'])\n",
            )
            .await;
        let theirs = theirs.trim().lines().last().unwrap();
        let later = seconds_between(&ours, theirs);
        assert!(
            (0.0..60.0).contains(&later),
            "{args:?} in {zone}: herald stamped {ours}, Django {theirs}"
        );
    }
}

#[test]
fn isoformat_check_accepts_python_forms_only() {
    assert!(is_isoformat("2025-11-17T10:30:00"));
    assert!(is_isoformat("2025-11-17T10:30:00.123456"));
    assert!(!is_isoformat("2025-11-17 10:30:00"));
    assert!(!is_isoformat("2025-11-17T10:30:00+00:00"));
}
