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
    check_many_answers_like_check,
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

/// A project whose session store class is not called `SessionStore` signs with another salt
/// (`django.contrib.sessions.<ClassName>`); `with_session_key_salt` follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_store_class_needs_its_session_key_salt() {
    let Some((_dir, site)) = site() else { return };
    let site = Site {
        django: site
            .django
            .with_env("SESSION_ENGINE", "OptsIO.custom_session"),
        ..site
    };
    let f = site.django.fixture(&[]).await;
    let default_salt = site.auth();
    assert_eq!(
        check(&default_salt, Some(&f.header())).await,
        AuthOutcome::Anonymous(Refusal::BadSignature)
    );
    let custom = DjangoAuth::new(
        site.config()
            .with_session_key_salt("django.contrib.sessions.MyStore"),
    )
    .unwrap();
    assert_eq!(
        check(&custom, Some(&f.header())).await,
        AuthOutcome::Authenticated(f.user.clone())
    );
    let oracle = site.django.whoami(&f.header()).await;
    assert_eq!(oracle.django.as_ref(), Some(&f.user));
}

/// `cached_db` writes every session through to `django_session`, so the `db` reader serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_sessions_are_read_from_the_table() {
    let Some((_dir, site)) = site() else { return };
    let site = Site {
        django: site.django.with_env("SESSION_ENGINE", "cached_db"),
        ..site
    };
    let f = site.django.fixture(&[]).await;
    let auth = DjangoAuth::new(
        site.config().with_session_engine(
            "django.contrib.sessions.backends.cached_db"
                .parse()
                .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(
        check(&auth, Some(&f.header())).await,
        AuthOutcome::Authenticated(f.user.clone())
    );
}

/// Everything is logged at TRACE here, yet no secret, cookie, session key, session data or
/// password hash reaches the log; the refusal reason does.
#[tokio::test]
async fn logs_carry_reasons_never_secrets() {
    let Some((dir, site)) = site() else { return };
    let good = site.django.fixture(&[]).await;
    let changed = site
        .django
        .fixture(&[
            "--username",
            "changed",
            "--no-migrate",
            "--change-password",
            "x",
        ])
        .await;
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite3")).unwrap();
    let (session_data, password): (String, String) = conn
        .query_row(
            "SELECT s.session_data, u.password FROM django_session s, auth_user u \
             WHERE s.session_key = ?1 AND u.username = 'amadmin'",
            [&good.session_key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();

    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let buffer = buffer.clone();
        move || LogWriter(buffer.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let auth = DjangoAuth::new(
        site.config()
            .with_secret_key_fallbacks([common::OLD_SECRET]),
    )
    .unwrap();
    let forged = "sessionid=0123456789abcdefghijklmnopqrstuv";
    assert!(check(&auth, Some(&good.header())).await.user().is_some());
    assert_eq!(
        check(&auth, Some(forged)).await.refusal(),
        Some(Refusal::SessionNotFound)
    );
    assert_eq!(
        check(&auth, Some(&changed.header())).await.refusal(),
        Some(Refusal::AuthHashMismatch)
    );
    drop(_guard);

    let log = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    assert!(log.contains("auth_hash_mismatch"), "{log}");
    assert!(log.contains("session_not_found"), "{log}");
    for secret in [
        SECRET,
        common::OLD_SECRET,
        good.session_key.as_str(),
        changed.session_key.as_str(),
        "0123456789abcdefghijklmnopqrstuv",
        session_data.as_str(),
        password.as_str(),
    ] {
        assert!(!log.contains(secret), "log leaks {secret:?}:\n{log}");
    }
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
