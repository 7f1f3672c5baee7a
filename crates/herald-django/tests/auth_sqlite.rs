//! `db` sessions on SQLite: Herald's verdict for sessions made by the real Django, compared with
//! Django's own. Needs the compat venv (`tests/compat/setup.sh`).

mod common;

use std::time::Duration;

use common::{SECRET, Site, check, scenarios};
use herald_django::signing::{self, Keys};
use herald_django::{AuthOutcome, DjangoAuth, DjangoAuthConfig, ErrorKind, Refusal, SessionEngine};

/// A fresh SQLite file (removed with the returned directory) and the site using it.
fn site() -> Option<(tempfile::TempDir, Site)> {
    let python = herald_test_support::compat_python()?;
    let dir = tempfile::tempdir().unwrap();
    // An absolute path gives four slashes: sqlite:////tmp/…/db.sqlite3 (dj-database-url rules).
    let url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    Some((dir, Site::new(python, &url, SessionEngine::Db)))
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_dir, site)) = site() else { return };
            scenarios::$name(&site).await;
        }
    )*};
}

scenario_tests!(
    valid_session_authenticates_like_django,
    missing_and_forged_cookies_are_anonymous,
    session_signed_with_another_secret_is_refused,
    expired_session_is_anonymous,
    password_changed_after_login_is_anonymous,
    inactive_user_is_anonymous,
    backend_must_be_in_authentication_backends,
    rotated_secret_is_accepted_through_fallbacks,
);

#[tokio::test]
async fn missing_database_file_is_an_error_not_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("absent.sqlite3").display());
    let auth = DjangoAuth::new(
        DjangoAuthConfig::default()
            .with_secret_key(SECRET)
            .with_database_url(url),
    )
    .unwrap();
    let fut = auth.authenticate(Some("sessionid=0123456789abcdefghijklmnopqrstuv"));
    let err = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database);
    let ping = tokio::time::timeout(Duration::from_secs(10), auth.ping())
        .await
        .unwrap();
    assert!(ping.unwrap_err().is_database());
}

#[tokio::test]
async fn unmigrated_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.sqlite3");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x INTEGER)")
        .unwrap();
    let auth = DjangoAuth::new(
        DjangoAuthConfig::default()
            .with_secret_key(SECRET)
            .with_database_url(format!("sqlite:///{}", path.display())),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), auth.ping())
        .await
        .unwrap()
        .unwrap();
    let fut = auth.authenticate(Some("sessionid=0123456789abcdefghijklmnopqrstuv"));
    let err = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_database(), "{err:?}");
}

/// Sessions written by hand into Django's table (as a buggy or foreign writer might): odd user ids
/// are "no such user", never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_sessions_with_odd_user_ids_find_no_user() {
    let Some((dir, site)) = site() else { return };
    let f = site.django.fixture(&[]).await;
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite3")).unwrap();
    let auth = site.auth();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (i, user_id) in [
        serde_json::json!("not-a-number"),
        serde_json::json!("999999"),
        serde_json::json!(f.user.user_id.parse::<i64>().unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        let data = signing::dumps_at(
            &serde_json::json!({
                "_auth_user_id": user_id,
                "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                "_auth_user_hash": "0".repeat(64),
            }),
            &Keys::new(SECRET),
            "django.contrib.sessions.SessionStore",
            true,
            now,
        );
        let key = format!("handwritten{i:021}");
        conn.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date) \
             VALUES (?1, ?2, datetime('now', '+1 day'))",
            rusqlite::params![key, data],
        )
        .unwrap();
        let outcome = check(&auth, Some(&format!("sessionid={key}"))).await;
        let expected = if i < 2 {
            Refusal::UserNotFound
        } else {
            // A numeric id finds the real user; the fake hash then fails.
            Refusal::AuthHashMismatch
        };
        assert_eq!(outcome, AuthOutcome::Anonymous(expected), "user id {i}");
    }
}
