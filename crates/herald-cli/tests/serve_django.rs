//! The end-to-end proof: a Django user logged in by the real Django connects to
//! `herald serve` with its session cookie, and the guide's Python helpers reach the socket.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use herald_test_support::ws::{recv_json, send_json};
use herald_test_support::{RedisServer, compat_python};
use support::django::{Django, SECRET};
use support::{Herald, ws_connect_with_cookie};

fn django_flags<'a>(db_url: &'a str, redis_url: &'a str) -> Vec<&'a str> {
    vec![
        "--redis",
        redis_url,
        "--secret-key",
        SECRET,
        "--django-db",
        db_url,
    ]
}

/// The shared scenario: cookie → socket → every guide helper and a task subscription.
async fn guide_helpers_reach_the_socket(django: &Django, db_url: &str, redis: &RedisServer) {
    let fixture = django.fixture(&["--username", "amadmin"]).await;
    let url = redis.url();
    let server = Herald::start(&django_flags(db_url, &url)).await;
    let mut ws = ws_connect_with_cookie(server.addr, &fixture.cookie).await;

    django
        .shell(
            "from OptsIO.ws_utils import ws_send_message, ws_send_notification, ws_send_file\n\
             assert ws_send_message('amadmin', 'Hello from the Django shell!')\n\
             assert ws_send_notification('amadmin', 'Task completed successfully!', 'success', 'Done')\n\
             assert ws_send_file('amadmin', '/media/reports/monthly_report.xlsx', file_size=156789)\n",
        )
        .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["type"], "user_message");
    assert_eq!(m["message"], "Hello from the Django shell!");
    assert_eq!(m["username"], "amadmin");
    let n = recv_json(&mut ws).await;
    assert_eq!(n["type"], "user_notification");
    assert_eq!(n["notification_type"], "success");
    assert_eq!(n["title"], "Done");
    let f = recv_json(&mut ws).await;
    assert_eq!(f["type"], "user_file");
    assert_eq!(f["file_name"], "monthly_report.xlsx");
    assert_eq!(f["file_size"], 156789);

    // The guide's Celery pattern: progress to task_<id> for a subscribed socket.
    send_json(
        &mut ws,
        serde_json::json!({"action": "subscribe", "task_id": "abc-123"}),
    )
    .await;
    let ack = recv_json(&mut ws).await;
    assert_eq!(ack["task_id"], "abc-123");
    django
        .shell(
            "from asgiref.sync import async_to_sync\n\
             from channels.layers import get_channel_layer\n\
             async_to_sync(get_channel_layer().group_send)('task_abc-123', {'type': 'task.update', \
             'task_id': 'abc-123', 'status': 'processing', 'message': 'Processing step 1...', \
             'progress': 25})\n",
        )
        .await;
    let u = recv_json(&mut ws).await;
    assert_eq!(u["type"], "task_update");
    assert_eq!(u["progress"], 25);
    assert_eq!(u["status"], "processing");
}

#[tokio::test(flavor = "multi_thread")]
async fn django_sqlite_session_user_receives_guide_messages() {
    let Some(python) = compat_python() else {
        return;
    };
    support::django::on_sqlite(python, guide_helpers_reach_the_socket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn django_postgres_session_user_receives_guide_messages() {
    let Some(python) = compat_python() else {
        return;
    };
    support::django::on_postgres(python, guide_helpers_reach_the_socket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_handshakes_get_403_and_join_nothing() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &redis.url());
    let good = django.fixture(&["--username", "alice"]).await;
    let changed = django
        .fixture(&[
            "--username",
            "bob",
            "--no-migrate",
            "--change-password",
            "new-pass-123",
        ])
        .await;
    let inactive = django
        .fixture(&["--username", "carol", "--no-migrate", "--deactivate"])
        .await;
    let expired = django
        .fixture(&["--username", "dave", "--no-migrate", "--expired"])
        .await;
    let url = redis.url();
    let mut flags = django_flags(&db_url, &url);
    flags.extend(["--allowed-origin", "app.example.com"]);
    let server = Herald::start(&flags).await;

    let forged = format!("{}x", good.cookie);
    for cookie in [
        "",
        "sessionid=",
        forged.as_str(),
        changed.cookie.as_str(),
        inactive.cookie.as_str(),
        expired.cookie.as_str(),
    ] {
        let status =
            support::handshake_status(server.addr, Some(cookie), Some("http://app.example.com"))
                .await;
        assert_eq!(status, 403, "cookie {cookie:?}");
    }
    // A good cookie from a foreign Origin is refused too; from the right one it is accepted.
    let status = support::handshake_status(
        server.addr,
        Some(&good.cookie),
        Some("https://evil.example.net"),
    )
    .await;
    assert_eq!(status, 403);
    let status = support::handshake_status(
        server.addr,
        Some(&good.cookie),
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(status, 101);

    // Nothing refused joined a group: only alice's accepted (and closed) socket ever did.
    let metrics = support::http_get(server.addr, "/metrics").await;
    assert!(metrics.contains("herald_auth_failures_total"), "{metrics}");
    let groups = redis_keys(&redis, "asgi:group:*").await;
    assert!(
        groups.iter().all(|k| k == "asgi:group:user_alice"),
        "{groups:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_herald_processes_on_one_redis_both_deliver() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &redis.url());
    let fixture = django.fixture(&["--username", "amadmin"]).await;
    let url = redis.url();
    let one = Herald::start(&django_flags(&db_url, &url)).await;
    let two = Herald::start(&django_flags(&db_url, &url)).await;
    let mut a = ws_connect_with_cookie(one.addr, &fixture.cookie).await;
    let mut b = ws_connect_with_cookie(two.addr, &fixture.cookie).await;
    django
        .shell("from OptsIO.ws_utils import ws_send_message\nassert ws_send_message('amadmin', 'both tabs')\n")
        .await;
    assert_eq!(recv_json(&mut a).await["message"], "both tabs");
    assert_eq!(recv_json(&mut b).await["message"], "both tabs");
    // Exactly once each.
    for ws in [&mut a, &mut b] {
        let extra = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
        assert!(extra.is_err(), "duplicate delivery {extra:?}");
    }
}

async fn redis_keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let out = tokio::time::timeout(
        support::TIMEOUT,
        tokio::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "--raw", "KEYS", pattern])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
