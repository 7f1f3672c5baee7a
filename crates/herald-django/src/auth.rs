//! [`DjangoAuth`]: Channels' `AuthMiddlewareStack` (cookie → session → user) in one call.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::header::HeaderValue;

use crate::callback::{Answer, Callback};
use crate::config::{DjangoAuthConfig, SessionEngine};
use crate::cookie::cookie_value;
use crate::db::Database;
use crate::error::Result;
use crate::session::{self, DecodeFailure, SessionData};
use crate::signing::Keys;
use crate::user::{HashCheck, UserRow, can_authenticate, check_session_hash};

/// How many callback requests [`DjangoAuth::check_many`] has in flight at once: the view is a
/// Django process, which must keep serving the site while sockets are re-validated.
pub const CALLBACK_CONCURRENCY: usize = 8;

/// A logged-in Django user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AuthenticatedUser {
    /// The primary key as stored in the session (`_auth_user_id`), e.g. `"1"` or a UUID.
    pub user_id: String,
    /// The `USERNAME_FIELD` value, e.g. `"amadmin"`: the guide's groups are `user_{username}`.
    pub username: String,
}

impl AuthenticatedUser {
    /// A user with this id and username.
    pub fn new(user_id: impl Into<String>, username: impl Into<String>) -> Self {
        AuthenticatedUser {
            user_id: user_id.into(),
            username: username.into(),
        }
    }
}

/// Why a handshake is anonymous. Safe to log: it never carries cookie or session content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// No `Cookie` header.
    NoCookieHeader,
    /// No cookie named `SESSION_COOKIE_NAME`.
    NoSessionCookie,
    /// The session cookie is shorter than 8 characters (`_validate_session_key`).
    InvalidSessionKey,
    /// The `Cookie` header cannot be forwarded (control characters).
    InvalidCookieHeader,
    /// `db`: no `django_session` row with this key and `expire_date > now`.
    SessionNotFound,
    /// The session data signature matches no key (Django logs "Session data corrupted").
    BadSignature,
    /// `signed_cookies`: older than `SESSION_COOKIE_AGE`.
    SessionExpired,
    /// Correctly signed but undecodable data.
    MalformedSession,
    /// The session has no `_auth_user_id` (nobody logged in).
    NotLoggedIn,
    /// No `_auth_user_backend`, or one not in `AUTHENTICATION_BACKENDS`.
    BackendNotAllowed,
    /// No user with that primary key.
    UserNotFound,
    /// `is_active` is false.
    UserInactive,
    /// The session has no `_auth_user_hash`.
    MissingAuthHash,
    /// `_auth_user_hash` matches no key: the password changed after login.
    AuthHashMismatch,
    /// The HTTP callback answered 401 or 403.
    CallbackRefused,
}

impl Refusal {
    /// A short snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCookieHeader => "no_cookie_header",
            Refusal::NoSessionCookie => "no_session_cookie",
            Refusal::InvalidSessionKey => "invalid_session_key",
            Refusal::InvalidCookieHeader => "invalid_cookie_header",
            Refusal::SessionNotFound => "session_not_found",
            Refusal::BadSignature => "bad_signature",
            Refusal::SessionExpired => "session_expired",
            Refusal::MalformedSession => "malformed_session",
            Refusal::NotLoggedIn => "not_logged_in",
            Refusal::BackendNotAllowed => "backend_not_allowed",
            Refusal::UserNotFound => "user_not_found",
            Refusal::UserInactive => "user_inactive",
            Refusal::MissingAuthHash => "missing_auth_hash",
            Refusal::AuthHashMismatch => "auth_hash_mismatch",
            Refusal::CallbackRefused => "callback_refused",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of [`DjangoAuth::check`]: who it is, or why nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthOutcome {
    /// A logged-in, active user whose session auth hash verified.
    Authenticated(AuthenticatedUser),
    /// What Django would call `AnonymousUser`.
    Anonymous(Refusal),
}

impl AuthOutcome {
    /// The user, if authenticated.
    pub fn user(self) -> Option<AuthenticatedUser> {
        match self {
            AuthOutcome::Authenticated(user) => Some(user),
            AuthOutcome::Anonymous(_) => None,
        }
    }

    /// The refusal, if anonymous.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            AuthOutcome::Authenticated(_) => None,
            AuthOutcome::Anonymous(r) => Some(*r),
        }
    }
}

/// Authenticates WebSocket handshakes exactly as Channels' `AuthMiddlewareStack` would (with
/// Django HTTP's `SECRET_KEY_FALLBACKS` handling), or through an HTTP callback.
///
/// Cheap to clone (an `Arc` inside); share one per server.
#[derive(Debug, Clone)]
pub struct DjangoAuth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    Session(Box<SessionAuth>),
    Callback(Callback),
}

#[derive(Debug)]
struct SessionAuth {
    keys: Keys,
    cookie_name: String,
    engine: SessionEngine,
    session_salt: String,
    cookie_age: Duration,
    backends: Vec<String>,
    db: Database,
}

impl DjangoAuth {
    /// Validates `config` and builds the authenticator. Does not connect: the database is opened
    /// on first use (see [`DjangoAuth::ping`] to check it at startup).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for a missing secret key or database URL,
    /// an unsupported URL, an empty setting or a table/column name that is not a plain SQL
    /// identifier.
    pub fn new(config: DjangoAuthConfig) -> Result<Self> {
        let inner = if let Some(url) = &config.callback_url {
            Inner::Callback(Callback::new(url, config.callback_timeout)?)
        } else {
            let url = config.validate_session_mode()?;
            let db = Database::new(url, &config)?;
            Inner::Session(Box::new(SessionAuth {
                keys: Keys::new(config.secret_key).with_fallbacks(config.secret_key_fallbacks),
                cookie_name: config.session_cookie_name,
                engine: config.session_engine,
                session_salt: config.session_key_salt,
                cookie_age: config.session_cookie_age,
                backends: config.authentication_backends,
                db,
            }))
        };
        Ok(DjangoAuth {
            inner: Arc::new(inner),
        })
    }

    /// The user behind the **first** `Cookie` header of a handshake, `Ok(None)` for anonymous.
    /// Channels decodes the header as latin-1; a server holding raw bytes can use
    /// [`cookie::latin1`](crate::cookie::latin1) to do the same.
    ///
    /// # Errors
    /// Only when our side fails: [`ErrorKind::Database`](crate::ErrorKind::Database),
    /// [`ErrorKind::Callback`](crate::ErrorKind::Callback) or
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). A server should then refuse the
    /// handshake (Daphne would fail it with 500) rather than treat the user as anonymous.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is written anywhere, and an abandoned database or HTTP request is
    /// dropped.
    pub async fn authenticate(
        &self,
        cookie_header: Option<&str>,
    ) -> Result<Option<AuthenticatedUser>> {
        Ok(self.check(cookie_header).await?.user())
    }

    /// Like [`authenticate`](Self::authenticate), but says why a handshake is anonymous.
    ///
    /// # Errors
    /// As [`authenticate`](Self::authenticate).
    pub async fn check(&self, cookie_header: Option<&str>) -> Result<AuthOutcome> {
        let outcome = match &*self.inner {
            Inner::Session(auth) => auth.check(cookie_header).await,
            Inner::Callback(callback) => check_callback(callback, cookie_header).await,
        };
        match &outcome {
            Ok(AuthOutcome::Authenticated(user)) => {
                tracing::debug!(user_id = %user.user_id, "django auth: authenticated");
            }
            Ok(AuthOutcome::Anonymous(reason)) => {
                tracing::debug!(%reason, "django auth: anonymous");
            }
            // Logged where it is handled (the caller refuses the handshake).
            Err(_) => {}
        }
        outcome
    }

    /// What a handshake with this `Cookie` header can be checked again by later, with
    /// [`check_many`](Self::check_many): the session cookie's value (the session key, or the
    /// whole signed session for `signed_cookies`), or, in callback mode, the header itself.
    /// `None` when there is nothing to check (no header, no session cookie).
    ///
    /// The value is a secret: never log it.
    pub fn credential(&self, cookie_header: Option<&str>) -> Option<String> {
        let header = cookie_header?;
        match &*self.inner {
            Inner::Session(auth) => cookie_value(header, &auth.cookie_name),
            Inner::Callback(_) => Some(header.to_owned()),
        }
    }

    /// Checks many [`credential`](Self::credential)s at once, one outcome per credential in
    /// order: what [`check`](Self::check) would answer for a handshake with it now. This is how
    /// open sockets are re-validated: a user who logged out (session row deleted), whose
    /// session expired, whose password changed or who was deactivated is now `Anonymous`.
    ///
    /// Session mode answers every credential with one query per batch of session keys (5,000 on
    /// PostgreSQL, 500 on SQLite; none for `signed_cookies`, whose session is the cookie) and
    /// one per batch of user ids. Callback mode asks the view once per credential,
    /// [`CALLBACK_CONCURRENCY`] at a time; a credential the view did not answer for (timeout,
    /// error) is `None`.
    ///
    /// # Errors
    /// Session mode: as [`authenticate`](Self::authenticate) — the whole batch is unanswered
    /// when the database fails. Callback mode never fails as a whole.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`check`](Self::check).
    pub async fn check_many(&self, credentials: &[&str]) -> Result<Vec<Option<AuthOutcome>>> {
        match &*self.inner {
            Inner::Session(auth) => Ok(auth
                .check_many(credentials)
                .await?
                .into_iter()
                .map(Some)
                .collect()),
            Inner::Callback(callback) => {
                use futures_util::StreamExt as _;
                // The requests are made up front (nothing runs until polled): a stream of
                // futures, not a closure in the stream, keeps the future `Send` for callers
                // behind `async_trait`.
                let asks: Vec<_> = credentials
                    .iter()
                    .map(|header| check_callback(callback, Some(header)))
                    .collect();
                Ok(futures_util::stream::iter(asks)
                    .buffered(CALLBACK_CONCURRENCY)
                    .map(Result::ok)
                    .collect()
                    .await)
            }
        }
    }

    /// Checks that the database (session mode) is reachable. Does nothing in callback mode: the
    /// view needs a cookie to answer anything meaningful.
    ///
    /// # Errors
    /// [`ErrorKind::Database`](crate::ErrorKind::Database) or
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    pub async fn ping(&self) -> Result<()> {
        match &*self.inner {
            Inner::Session(auth) => auth.db.ping().await,
            Inner::Callback(_) => Ok(()),
        }
    }
}

async fn check_callback(callback: &Callback, cookie_header: Option<&str>) -> Result<AuthOutcome> {
    let Some(header) = cookie_header else {
        return Ok(AuthOutcome::Anonymous(Refusal::NoCookieHeader));
    };
    let Ok(value) = HeaderValue::from_str(header) else {
        return Ok(AuthOutcome::Anonymous(Refusal::InvalidCookieHeader));
    };
    Ok(match callback.ask(&value).await? {
        Answer::User { user_id, username } => {
            AuthOutcome::Authenticated(AuthenticatedUser { user_id, username })
        }
        Answer::Refused(_) => AuthOutcome::Anonymous(Refusal::CallbackRefused),
    })
}

impl SessionAuth {
    async fn check(&self, cookie_header: Option<&str>) -> Result<AuthOutcome> {
        use AuthOutcome::Anonymous;
        let Some(header) = cookie_header else {
            return Ok(Anonymous(Refusal::NoCookieHeader));
        };
        let Some(key) = cookie_value(header, &self.cookie_name) else {
            return Ok(Anonymous(Refusal::NoSessionCookie));
        };
        if !session::valid_session_key(&key) {
            return Ok(Anonymous(Refusal::InvalidSessionKey));
        }
        let session = match self.load_session(&key).await? {
            Ok(session) => session,
            Err(refusal) => return Ok(Anonymous(refusal)),
        };
        self.user_from_session(&session).await
    }

    /// Loads the session dict, or says why there is none.
    async fn load_session(&self, key: &str) -> Result<Result<SessionData, Refusal>> {
        let decoded = match self.engine {
            SessionEngine::Db => {
                let Some(data) = self.db.session_data(key).await? else {
                    return Ok(Err(Refusal::SessionNotFound));
                };
                session::decode_stored(&data, &self.keys, &self.session_salt)
            }
            SessionEngine::SignedCookies => {
                session::decode_signed_cookie(key, &self.keys, self.cookie_age, SystemTime::now())
            }
        };
        Ok(decoded.map_err(refusal_of))
    }

    /// `django.contrib.auth.get_user` minus the writes (Django 5.2, see [`crate::user`]).
    async fn user_from_session(&self, session: &SessionData) -> Result<AuthOutcome> {
        let (user_id, backend) = match self.precheck(session) {
            Ok(found) => found,
            Err(refusal) => return Ok(AuthOutcome::Anonymous(refusal)),
        };
        let user = self.db.user(&user_id).await?;
        Ok(self.judge(session, user_id, backend, user.as_ref()))
    }

    /// The checks before the user lookup: who the session names, and through which allowed
    /// backend.
    fn precheck<'s>(&self, session: &'s SessionData) -> Result<(String, &'s str), Refusal> {
        let user_id = session.user_id().ok_or(Refusal::NotLoggedIn)?;
        let backend = session.backend().ok_or(Refusal::BackendNotAllowed)?;
        if !self.backends.iter().any(|b| b == backend) {
            return Err(Refusal::BackendNotAllowed);
        }
        Ok((user_id, backend))
    }

    /// The checks after the user lookup: the user exists, may log in, and the session's hash
    /// still matches the password.
    fn judge(
        &self,
        session: &SessionData,
        user_id: String,
        backend: &str,
        user: Option<&UserRow>,
    ) -> AuthOutcome {
        use AuthOutcome::Anonymous;
        let Some(user) = user else {
            return Anonymous(Refusal::UserNotFound);
        };
        if !can_authenticate(backend, user.is_active) {
            return Anonymous(Refusal::UserInactive);
        }
        match check_session_hash(session.auth_hash(), &user.password, &self.keys) {
            HashCheck::Current | HashCheck::Fallback => {}
            HashCheck::Missing => return Anonymous(Refusal::MissingAuthHash),
            HashCheck::Mismatch => return Anonymous(Refusal::AuthHashMismatch),
        }
        AuthOutcome::Authenticated(AuthenticatedUser {
            user_id,
            username: user.username.clone(),
        })
    }

    /// [`DjangoAuth::check_many`] in session mode: one query per batch of session keys (none
    /// for `signed_cookies`), one per batch of user ids.
    async fn check_many(&self, keys: &[&str]) -> Result<Vec<AuthOutcome>> {
        use AuthOutcome::Anonymous;
        let stored = match self.engine {
            SessionEngine::Db => {
                let valid: Vec<&str> = keys
                    .iter()
                    .copied()
                    .filter(|k| session::valid_session_key(k))
                    .collect();
                self.db.sessions_data(&valid).await?
            }
            SessionEngine::SignedCookies => HashMap::new(),
        };
        let now = SystemTime::now();
        let sessions: Vec<Result<SessionData, Refusal>> = keys
            .iter()
            .map(|key| {
                if !session::valid_session_key(key) {
                    return Err(Refusal::InvalidSessionKey);
                }
                let decoded = match self.engine {
                    SessionEngine::Db => {
                        let data = stored.get(*key).ok_or(Refusal::SessionNotFound)?;
                        session::decode_stored(data, &self.keys, &self.session_salt)
                    }
                    SessionEngine::SignedCookies => {
                        session::decode_signed_cookie(key, &self.keys, self.cookie_age, now)
                    }
                };
                decoded.map_err(refusal_of)
            })
            .collect();
        let prechecked: Vec<Result<(String, &str), Refusal>> = sessions
            .iter()
            .map(|s| s.as_ref().map_err(|r| *r).and_then(|s| self.precheck(s)))
            .collect();
        let mut ids: Vec<&str> = prechecked
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(id, _)| id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut users = self.db.users(&ids).await?;
        for id in ids {
            // Not found by the batch: ask as the handshake did (a deleted user, or an id
            // whose text differs from the database's form of it).
            if !users.contains_key(id)
                && let Some(row) = self.db.user(id).await?
            {
                users.insert(id.to_owned(), row);
            }
        }
        Ok(sessions
            .iter()
            .zip(prechecked)
            .map(|(session, pre)| match (session, pre) {
                (Ok(session), Ok((user_id, backend))) => {
                    let user = users.get(&user_id);
                    self.judge(session, user_id, backend, user)
                }
                (Err(refusal), _) => Anonymous(*refusal),
                (Ok(_), Err(refusal)) => Anonymous(refusal),
            })
            .collect())
    }
}

fn refusal_of(failure: DecodeFailure) -> Refusal {
    match failure {
        DecodeFailure::BadSignature => Refusal::BadSignature,
        DecodeFailure::Expired => Refusal::SessionExpired,
        DecodeFailure::Malformed => Refusal::MalformedSession,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_cookie_auth() -> DjangoAuth {
        DjangoAuth::new(
            DjangoAuthConfig::default()
                .with_secret_key("k")
                .with_session_engine(SessionEngine::SignedCookies)
                // Never opened by these tests: every case is refused before the user lookup.
                .with_database_url("sqlite:////nonexistent/herald-django-unit.sqlite3"),
        )
        .unwrap()
    }

    async fn refusal(auth: &DjangoAuth, header: Option<&str>) -> Refusal {
        let fut = auth.check(header);
        let outcome = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .unwrap()
            .unwrap();
        outcome.refusal().unwrap()
    }

    #[tokio::test]
    async fn refuses_before_touching_the_database() {
        let auth = signed_cookie_auth();
        assert_eq!(refusal(&auth, None).await, Refusal::NoCookieHeader);
        assert_eq!(
            refusal(&auth, Some("csrftoken=x")).await,
            Refusal::NoSessionCookie
        );
        assert_eq!(
            refusal(&auth, Some("sessionid=short")).await,
            Refusal::InvalidSessionKey
        );
        let forged = "sessionid=eyJ1IjoxfQ:1xWIc1:l8z-5_Vaf_QpmKrTszJn-phq1KIvsqXcTVQxzQG5qPY";
        assert_eq!(refusal(&auth, Some(forged)).await, Refusal::BadSignature);
    }

    #[tokio::test]
    async fn session_without_login_is_not_logged_in() {
        let auth = signed_cookie_auth();
        let keys = Keys::new("k");
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let token = crate::signing::dumps_at(
            &serde_json::json!({"_csrftoken": "x"}),
            &keys,
            crate::config::SIGNED_COOKIES_SALT,
            true,
            now,
        );
        let header = format!("sessionid={token}");
        assert_eq!(refusal(&auth, Some(&header)).await, Refusal::NotLoggedIn);
        let stale = crate::signing::dumps_at(
            &serde_json::json!({"_auth_user_id": "1"}),
            &keys,
            crate::config::SIGNED_COOKIES_SALT,
            true,
            now - 1_209_601,
        );
        let header = format!("sessionid={stale}");
        assert_eq!(refusal(&auth, Some(&header)).await, Refusal::SessionExpired);
    }

    #[tokio::test]
    async fn unknown_backend_is_refused_before_the_user_lookup() {
        let auth = signed_cookie_auth();
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let token = crate::signing::dumps_at(
            &serde_json::json!({
                "_auth_user_id": "1",
                "_auth_user_backend": "django.contrib.auth.backends.RemoteUserBackend",
            }),
            &Keys::new("k"),
            crate::config::SIGNED_COOKIES_SALT,
            true,
            now,
        );
        let header = format!("sessionid={token}");
        assert_eq!(
            refusal(&auth, Some(&header)).await,
            Refusal::BackendNotAllowed
        );
    }

    #[test]
    fn new_rejects_invalid_config() {
        assert!(
            DjangoAuth::new(DjangoAuthConfig::default())
                .unwrap_err()
                .is_config()
        );
        let bad_cb = DjangoAuthConfig::default().with_callback_url("https://x/");
        assert!(DjangoAuth::new(bad_cb).unwrap_err().is_config());
        // Callback mode needs no secret key or database.
        let cb = DjangoAuthConfig::default().with_callback_url("http://127.0.0.1:1/whoami/");
        assert!(DjangoAuth::new(cb).is_ok());
    }

    #[test]
    fn refusal_names_are_unique() {
        let all = [
            Refusal::NoCookieHeader,
            Refusal::NoSessionCookie,
            Refusal::InvalidSessionKey,
            Refusal::InvalidCookieHeader,
            Refusal::SessionNotFound,
            Refusal::BadSignature,
            Refusal::SessionExpired,
            Refusal::MalformedSession,
            Refusal::NotLoggedIn,
            Refusal::BackendNotAllowed,
            Refusal::UserNotFound,
            Refusal::UserInactive,
            Refusal::MissingAuthHash,
            Refusal::AuthHashMismatch,
            Refusal::CallbackRefused,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
