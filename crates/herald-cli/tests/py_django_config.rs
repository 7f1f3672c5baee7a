//! `herald.django` in a real Django project (tests/compat/django_project) on SQLite and on
//! PostgreSQL, with herald's layer as its `BACKEND`: `manage.py herald_config` writes a TOML
//! (mode 0600) with which `herald serve` authenticates a real session cookie and delivers a
//! message sent by the app's `ws_send_message`; `manage.py herald_check` passes with it.

mod support;

use std::os::unix::fs::PermissionsExt;

use herald_test_support::ws::recv_json;
use herald_test_support::{RedisServer, herald_package_python};
use support::django::Django;
use support::postgres::Database;
use support::{Herald, ws_connect_browser};

async fn generated_config_serves_the_site(python: std::path::PathBuf, db_url: &str) {
    let redis = RedisServer::start();
    let django = Django::new(python, db_url, &redis.url())
        .with_env("CHANNEL_LAYERS_BACKEND", "herald.layers.RedisChannelLayer");
    let fixture = django.fixture(&["--username", "amadmin"]).await;

    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("herald.toml");
    django
        .manage(&["herald_config", "--output", toml.to_str().unwrap()])
        .await;
    let mode = std::fs::metadata(&toml).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the file holds SECRET_KEY");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains(support::django::SECRET), "{text}");

    let server = Herald::start(&["--config", toml.to_str().unwrap()]).await;
    let mut ws = ws_connect_browser(&server.addr.to_string(), &fixture.cookie).await;
    let sent = django
        .shell(
            "from herald.django.messaging import ws_send_message\n\
             print(ws_send_message('amadmin', 'From the helper', data={'n': 1}))",
        )
        .await;
    // Django 5.2's shell may print its automatic imports first.
    assert_eq!(sent.trim().lines().last(), Some("True"), "{sent}");
    let frame = recv_json(&mut ws).await;
    assert_eq!(frame["type"], "user_message");
    assert_eq!(frame["username"], "amadmin");
    assert_eq!(frame["message"], "From the helper");
    assert_eq!(frame["data"]["n"], 1);

    let out = django
        .manage(&[
            "herald_check",
            "--herald",
            support::bin(),
            "--cookie",
            &fixture.cookie,
        ])
        .await;
    assert!(out.contains("amadmin"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn herald_config_on_sqlite_serves_the_site() {
    let Some(python) = herald_package_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    generated_config_serves_the_site(python, &db_url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn herald_config_on_postgres_serves_the_site() {
    let Some(python) = herald_package_python() else {
        return;
    };
    let Some(db) = Database::create().await else {
        return;
    };
    generated_config_serves_the_site(python, &db.url()).await;
    db.drop().await;
}
