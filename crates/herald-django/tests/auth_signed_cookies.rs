//! `SESSION_ENGINE = signed_cookies`: the cookie is the session. Users still live in the
//! database (SQLite here). Compared with the real Django through the compat venv.

mod common;

use std::time::Duration;

use common::{SECRET, Site, check, scenarios};
use herald_django::signing::{self, Keys};
use herald_django::{AuthOutcome, DjangoAuth, Refusal, SessionEngine};

fn site() -> Option<(tempfile::TempDir, Site)> {
    let python = herald_test_support::compat_python()?;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    Some((dir, Site::new(python, &url, SessionEngine::SignedCookies)))
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

/// `SESSION_COOKIE_AGE` is the signed cookie's `max_age`: a shorter age refuses a cookie that the
/// default accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_age_bounds_the_cookie() {
    let Some((_dir, site)) = site() else { return };
    let f = site.django.fixture(&[]).await;
    let token = f.session_key.clone();
    let ts = token.rsplit(':').nth(1).unwrap();
    let signed_at = signing::b62_decode(ts).unwrap();
    // Re-sign the same payload one hour in the past, as Django would have an hour ago.
    let payload = token
        .rsplit_once(':')
        .unwrap()
        .0
        .rsplit_once(':')
        .unwrap()
        .0;
    let hour_old = signing::TimestampSigner::with_keys(
        Keys::new(SECRET),
        herald_django::config::SIGNED_COOKIES_SALT,
    )
    .sign_at(payload, signed_at - 3600);
    let header = format!("sessionid={hour_old}");
    let default_age = site.auth();
    assert_eq!(
        check(&default_age, Some(&header)).await,
        AuthOutcome::Authenticated(f.user.clone())
    );
    let half_hour = DjangoAuth::new(
        site.config()
            .with_session_cookie_age(Duration::from_secs(1800)),
    )
    .unwrap();
    assert_eq!(
        check(&half_hour, Some(&header)).await,
        AuthOutcome::Anonymous(Refusal::SessionExpired)
    );
    // Django agrees under both settings.
    let oracle = site.django.whoami(&header).await;
    assert_eq!(oracle.django.as_ref(), Some(&f.user));
    let oracle = site
        .django
        .with_env("SESSION_COOKIE_AGE", "1800")
        .whoami(&header)
        .await;
    assert_eq!(oracle.django, None);
}

/// A db-engine config cannot read a signed-cookie session (it looks for a row keyed by the
/// whole token) — the engine setting matters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_engine_finds_no_session() {
    let Some((_dir, site)) = site() else { return };
    let f = site.django.fixture(&[]).await;
    let db_engine = DjangoAuth::new(site.config().with_session_engine(SessionEngine::Db)).unwrap();
    assert_eq!(
        check(&db_engine, Some(&f.header())).await,
        AuthOutcome::Anonymous(Refusal::SessionNotFound)
    );
}
