//! The user guide's Celery example run for real: a Celery worker (Redis broker) runs
//! `process_large_file`, which calls `ws_send_notification`, and the logged-in user's socket on
//! herald gets the notification.

mod support;

use std::process::Stdio;
use std::time::Duration;

use herald_test_support::django::django_project_dir;
use herald_test_support::ws::recv_json_within;
use herald_test_support::{RedisServer, compat_python};
use support::django::{Django, SECRET};
use support::{Herald, ws_connect_with_cookie};

#[tokio::test(flavor = "multi_thread")]
async fn celery_task_notifies_the_user_through_herald() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    // Channel layer on db 0, Celery broker on db 1 of the same server, as a small site would.
    let layer_url = redis.url_db(0);
    let broker_url = redis.url_db(1);
    let django =
        Django::new(python.clone(), &db_url, &layer_url).with_env("CELERY_BROKER_URL", &broker_url);
    let fixture = django.fixture(&["--username", "amadmin"]).await;
    let server = Herald::start(&[
        "--redis",
        &layer_url,
        "--secret-key",
        SECRET,
        "--django-db",
        &db_url,
    ])
    .await;
    let mut ws = ws_connect_with_cookie(server.addr, &fixture.cookie).await;

    let mut worker = tokio::process::Command::new(&python)
        .args([
            "-m",
            "celery",
            "-A",
            "herald_site",
            "worker",
            "--pool=solo",
            "--concurrency=1",
        ])
        .args([
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ])
        .current_dir(django_project_dir())
        .envs(django.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let csv = dir.path().join("import.csv");
    std::fs::write(&csv, "id,name\n1,a\n2,b\n\n").unwrap();
    let missing = dir.path().join("missing.csv");
    django
        .shell(&format!(
            "from OptsIO.tasks import process_large_file\n\
             process_large_file.delay({:?}, 'amadmin')\n\
             process_large_file.delay({:?}, 'amadmin')\n",
            csv.display().to_string(),
            missing.display().to_string()
        ))
        .await;

    // The worker may still be starting: allow it time, but bounded.
    let ok = recv_json_within(&mut ws, Duration::from_secs(60)).await;
    assert_eq!(ok["type"], "user_notification", "{ok}");
    assert_eq!(ok["notification_type"], "success");
    assert_eq!(ok["title"], "Processing Complete");
    assert_eq!(ok["message"], "File processed: 3 records imported");
    assert_eq!(ok["data"], serde_json::json!({"count": 3}));

    let failed = recv_json_within(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(failed["notification_type"], "error");
    assert_eq!(failed["title"], "Processing Failed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("Error processing file:")
    );

    let _ = worker.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await;
}
