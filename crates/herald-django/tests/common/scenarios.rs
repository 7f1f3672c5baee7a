//! The outcomes every session setup must reproduce, each checked against Django itself.

use herald_django::{AuthOutcome, DjangoAuth, Refusal, SessionEngine};

use super::{OLD_SECRET, SECRET, Site, check};

const MODEL_BACKEND: &str = "django.contrib.auth.backends.ModelBackend";
const REMOTE_USER_BACKEND: &str = "django.contrib.auth.backends.RemoteUserBackend";

fn refused(reason: Refusal) -> AuthOutcome {
    AuthOutcome::Anonymous(reason)
}

/// Django and Channels both see nobody for this header.
async fn assert_django_says_anonymous(site: &Site, header: &str) {
    let oracle = site.django.whoami(header).await;
    assert_eq!(oracle.django, None, "Django HTTP disagrees: {oracle:?}");
    assert_eq!(oracle.channels, None, "Channels disagrees: {oracle:?}");
}

pub async fn valid_session_authenticates_like_django(site: &Site) {
    let f = site.django.fixture(&[]).await;
    let auth = site.auth();
    let outcome = check(&auth, Some(&f.header())).await;
    assert_eq!(outcome, AuthOutcome::Authenticated(f.user.clone()));
    // The bare cookie works too, and checking twice gives the same answer (nothing consumed).
    let again = tokio::time::timeout(super::AUTH_TIMEOUT, auth.authenticate(Some(&f.cookie)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.as_ref(), Some(&f.user));
    let oracle = site.django.whoami(&f.header()).await;
    assert_eq!(oracle.django.as_ref(), Some(&f.user));
    assert_eq!(oracle.channels.as_ref(), Some(&f.user));
}

pub async fn missing_and_forged_cookies_are_anonymous(site: &Site) {
    let f = site.django.fixture(&[]).await;
    let auth = site.auth();
    assert_eq!(check(&auth, None).await, refused(Refusal::NoCookieHeader));
    let other_cookies = "csrftoken=abcdefabcdef; theme=dark";
    assert_eq!(
        check(&auth, Some(other_cookies)).await,
        refused(Refusal::NoSessionCookie)
    );
    let short = "sessionid=abc1234";
    assert_eq!(
        check(&auth, Some(short)).await,
        refused(Refusal::InvalidSessionKey)
    );
    let (forged, reason) = match site.engine {
        SessionEngine::Db => (
            "sessionid=0123456789abcdefghijklmnopqrstuv".to_owned(),
            Refusal::SessionNotFound,
        ),
        _ => {
            // Flip the last signature character of a genuine token.
            let mut token = f.session_key.clone();
            let last = token.pop().unwrap();
            token.push(if last == 'A' { 'B' } else { 'A' });
            (format!("sessionid={token}"), Refusal::BadSignature)
        }
    };
    assert_eq!(check(&auth, Some(&forged)).await, refused(reason));
    // The genuine session still works: a forged attempt did not disturb it.
    assert_eq!(
        check(&auth, Some(&f.cookie)).await,
        AuthOutcome::Authenticated(f.user.clone())
    );
    assert_django_says_anonymous(site, &forged).await;
}

pub async fn session_signed_with_another_secret_is_refused(site: &Site) {
    let other = site
        .django
        .with_env("SECRET_KEY", "another-project-entirely");
    let f = other.fixture(&[]).await;
    let auth = site.auth();
    assert_eq!(
        check(&auth, Some(&f.header())).await,
        refused(Refusal::BadSignature)
    );
    assert_django_says_anonymous(site, &f.header()).await;
}

pub async fn expired_session_is_anonymous(site: &Site) {
    let f = site.django.fixture(&["--expired"]).await;
    let auth = site.auth();
    let reason = match site.engine {
        SessionEngine::Db => Refusal::SessionNotFound,
        _ => Refusal::SessionExpired,
    };
    assert_eq!(check(&auth, Some(&f.header())).await, refused(reason));
    assert_django_says_anonymous(site, &f.header()).await;
}

pub async fn password_changed_after_login_is_anonymous(site: &Site) {
    let f = site
        .django
        .fixture(&["--change-password", "a-brand-new-password"])
        .await;
    let auth = site.auth();
    assert_eq!(
        check(&auth, Some(&f.header())).await,
        refused(Refusal::AuthHashMismatch)
    );
    // Unlike Channels we never flush: the session is still there for a second look.
    assert_eq!(
        check(&auth, Some(&f.header())).await,
        refused(Refusal::AuthHashMismatch)
    );
    assert_django_says_anonymous(site, &f.header()).await;
}

pub async fn inactive_user_is_anonymous(site: &Site) {
    let auth = site.auth();
    let created_inactive = site
        .django
        .fixture(&["--username", "inactive_from_start", "--inactive"])
        .await;
    let deactivated = site
        .django
        .fixture(&[
            "--username",
            "deactivated_later",
            "--no-migrate",
            "--deactivate",
        ])
        .await;
    for f in [created_inactive, deactivated] {
        assert_eq!(
            check(&auth, Some(&f.header())).await,
            refused(Refusal::UserInactive)
        );
        assert_django_says_anonymous(site, &f.header()).await;
    }
}

pub async fn backend_must_be_in_authentication_backends(site: &Site) {
    let f = site
        .django
        .fixture(&["--backend", REMOTE_USER_BACKEND])
        .await;
    let auth = site.auth();
    assert_eq!(
        check(&auth, Some(&f.header())).await,
        refused(Refusal::BackendNotAllowed)
    );
    assert_django_says_anonymous(site, &f.header()).await;

    // Listed in AUTHENTICATION_BACKENDS on both sides: accepted by both.
    let both = [MODEL_BACKEND, REMOTE_USER_BACKEND];
    let auth = DjangoAuth::new(site.config().with_authentication_backends(both)).unwrap();
    let outcome = check(&auth, Some(&f.header())).await;
    assert_eq!(outcome, AuthOutcome::Authenticated(f.user.clone()));
    let oracle = site
        .django
        .with_env("AUTHENTICATION_BACKENDS", &both.join(","))
        .whoami(&f.header())
        .await;
    assert_eq!(oracle.django.as_ref(), Some(&f.user));
}

pub async fn rotated_secret_is_accepted_through_fallbacks(site: &Site) {
    // Logged in before the rotation: session data and auth hash both made with the old key.
    let f = site
        .django
        .with_env("SECRET_KEY", OLD_SECRET)
        .fixture(&[])
        .await;
    let rotated = DjangoAuth::new(site.config().with_secret_key_fallbacks([OLD_SECRET])).unwrap();
    let outcome = check(&rotated, Some(&f.header())).await;
    assert_eq!(outcome, AuthOutcome::Authenticated(f.user.clone()));
    // Without the fallback the old session is just a bad signature.
    let unrotated = site.auth();
    assert_eq!(
        check(&unrotated, Some(&f.header())).await,
        refused(Refusal::BadSignature)
    );
    // Django HTTP agrees with us; Channels alone logs the user out (the documented difference).
    let oracle = site
        .django
        .with_env("SECRET_KEY", SECRET)
        .with_env("SECRET_KEY_FALLBACKS", OLD_SECRET)
        .whoami(&f.header())
        .await;
    assert_eq!(oracle.django.as_ref(), Some(&f.user));
    assert_eq!(oracle.channels, None);
}

/// Re-validation's batch answers exactly what a handshake with each cookie would get now, and
/// sees a change made after the first check (the session ended).
pub async fn check_many_answers_like_check(site: &Site) {
    let valid = site.django.fixture(&["--username", "many_valid"]).await;
    let other = site
        .django
        .fixture(&["--username", "many_other", "--no-migrate"])
        .await;
    let expired = site
        .django
        .fixture(&["--username", "many_expired", "--no-migrate", "--expired"])
        .await;
    let changed = site
        .django
        .fixture(&[
            "--username",
            "many_changed",
            "--no-migrate",
            "--change-password",
            "a-brand-new-password",
        ])
        .await;
    let inactive = site
        .django
        .fixture(&[
            "--username",
            "many_inactive",
            "--no-migrate",
            "--deactivate",
        ])
        .await;
    let auth = site.auth();
    let mut headers = vec![
        valid.header(),
        other.header(),
        expired.header(),
        changed.header(),
        inactive.header(),
        "sessionid=0123456789abcdefghijklmnopqrstuv".to_owned(),
        "sessionid=abc1234".to_owned(),
        // The same session twice: answered twice.
        valid.cookie.clone(),
    ];
    headers.push(other.cookie.clone());
    let credentials: Vec<String> = headers
        .iter()
        .map(|h| auth.credential(Some(h)).unwrap())
        .collect();
    assert_eq!(credentials[0], valid.session_key);
    let keys: Vec<&str> = credentials.iter().map(String::as_str).collect();
    let many = tokio::time::timeout(super::AUTH_TIMEOUT, auth.check_many(&keys))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(many.len(), headers.len());
    for (header, outcome) in headers.iter().zip(&many) {
        assert_eq!(
            outcome.as_ref(),
            Some(&check(&auth, Some(header)).await),
            "{header}"
        );
    }
    assert_eq!(
        many[0],
        Some(AuthOutcome::Authenticated(valid.user.clone()))
    );
    assert_eq!(
        many[1],
        Some(AuthOutcome::Authenticated(other.user.clone()))
    );
    assert!(
        many[2..7]
            .iter()
            .all(|o| o.as_ref().is_some_and(|o| o.refusal().is_some()))
    );
    assert_eq!(auth.credential(None), None);
    // An empty batch costs nothing and answers nothing.
    assert!(auth.check_many(&[]).await.unwrap().is_empty());
}
