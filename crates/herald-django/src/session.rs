//! The session dict: how each `SESSION_ENGINE` stores it and what `django.contrib.auth` keeps in
//! it (spec §8.3–8.4).
//!
//! * `db` / `cached_db`: the cookie holds a session key; `django_session.session_data` holds
//!   `signing.dumps(dict, salt=<session key salt>, compress=True)`, no `max_age` (the row's
//!   `expire_date` is the expiry). The row lookup lives in the private `db` module.
//! * `signed_cookies`: the cookie *is* `signing.dumps(dict, salt=SIGNED_COOKIES_SALT,
//!   compress=True)`, loaded with `max_age = SESSION_COOKIE_AGE`.
//!
//! Django's `SessionBase.decode` never raises (a bad signature is logged as "Session data
//! corrupted" and gives `{}`); we keep the reason so the caller can log *why* a handshake was
//! anonymous.

use std::time::{Duration, SystemTime};

use crate::error::{ErrorKind, Result};
use crate::signing::{self, Keys};

/// `django.contrib.auth.SESSION_KEY`: the user's primary key as a string.
pub const SESSION_KEY: &str = "_auth_user_id";
/// `django.contrib.auth.BACKEND_SESSION_KEY`: the dotted path of the backend that logged in.
pub const BACKEND_SESSION_KEY: &str = "_auth_user_backend";
/// `django.contrib.auth.HASH_SESSION_KEY`: `get_session_auth_hash()` at login time.
pub const HASH_SESSION_KEY: &str = "_auth_user_hash";

/// `SessionBase._validate_session_key`: a key must have at least 8 characters, else the session
/// is treated as absent.
pub const MIN_SESSION_KEY_LEN: usize = 8;

/// The decoded session dict. Its content is secret: never log it.
#[derive(Clone, PartialEq)]
pub struct SessionData(serde_json::Map<String, serde_json::Value>);

impl std::fmt::Debug for SessionData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionData({} keys)", self.0.len())
    }
}

impl SessionData {
    /// Wraps a JSON value; anything but an object is an empty session (Django would fail
    /// `dict` lookups the same way and end up anonymous).
    pub fn from_json(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Object(map) => SessionData(map),
            _ => SessionData(serde_json::Map::new()),
        }
    }

    /// `_auth_user_id`. Django stores a string; a JSON number (hand-written sessions) is
    /// accepted as its decimal string, like `pk.to_python` would.
    pub fn user_id(&self) -> Option<String> {
        match self.0.get(SESSION_KEY)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// `_auth_user_backend`.
    pub fn backend(&self) -> Option<&str> {
        self.0.get(BACKEND_SESSION_KEY)?.as_str()
    }

    /// `_auth_user_hash`; `None` when missing, empty or not a string (Django's
    /// `if not session_hash`).
    pub fn auth_hash(&self) -> Option<&str> {
        self.0
            .get(HASH_SESSION_KEY)?
            .as_str()
            .filter(|s| !s.is_empty())
    }

    /// True when the dict has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `SessionBase._validate_session_key`.
pub fn valid_session_key(key: &str) -> bool {
    key.chars().count() >= MIN_SESSION_KEY_LEN
}

/// Why a stored or cookie session could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeFailure {
    BadSignature,
    Expired,
    Malformed,
}

fn classify(err: &crate::Error) -> DecodeFailure {
    match err.kind() {
        ErrorKind::SignatureExpired => DecodeFailure::Expired,
        ErrorKind::BadSignature => DecodeFailure::BadSignature,
        _ => DecodeFailure::Malformed,
    }
}

/// `SessionBase.decode(session_data)` for db-stored sessions: no `max_age`.
pub(crate) fn decode_stored(
    data: &str,
    keys: &Keys,
    salt: &str,
) -> Result<SessionData, DecodeFailure> {
    signing::loads(data, keys, salt, None)
        .map(SessionData::from_json)
        .map_err(|e| classify(&e))
}

/// `signed_cookies.SessionStore.load()`: the cookie value is the token, `max_age =
/// SESSION_COOKIE_AGE`.
pub(crate) fn decode_signed_cookie(
    cookie: &str,
    keys: &Keys,
    max_age: Duration,
    now: SystemTime,
) -> Result<SessionData, DecodeFailure> {
    signing::loads_at(
        cookie,
        keys,
        crate::config::SIGNED_COOKIES_SALT,
        Some(max_age),
        now,
    )
    .map(SessionData::from_json)
    .map_err(|e| classify(&e))
}

#[cfg(test)]
mod tests {
    //! Vectors from `scripts/gen_vectors.py` (Django 5.2.19, T = 1795634701, SECRET_KEY
    //! `django-insecure-test-secret-key`), session dict
    //! `{"_auth_user_id": "1", "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    //! "_auth_user_hash": "0" * 64}`.
    use super::*;
    use std::time::UNIX_EPOCH;

    const K: &str = "django-insecure-test-secret-key";
    const T: u64 = 1_795_634_701;
    // out("session_db", signing.dumps(SESSION, salt="django.contrib.sessions.SessionStore", compress=True))
    const SESSION_DB: &str = ".eJyrVopPLC3JiC8tTi2Kz0xRslIyVNJBFktKTM5OzQNJpGQl5qXn6yXn55UUZSbpgZToQWWL9XzzU1JznKBqUQzISCzOAOo2oBAo1QIAIvYyTQ:1xWIc1:p3bU9EnS_Mqe40kdACCsomJL_eV97ZcZrNzpwyG7Ozc";
    // out("session_custom_store", signing.dumps(SESSION, salt="django.contrib.sessions.MyStore", compress=True))
    const SESSION_CUSTOM: &str = ".eJyrVopPLC3JiC8tTi2Kz0xRslIyVNJBFktKTM5OzQNJpGQl5qXn6yXn55UUZSbpgZToQWWL9XzzU1JznKBqUQzISCzOAOo2oBAo1QIAIvYyTQ:1xWIc1:6bXg50PgyMR_M4KCJ551YhdafZFD3z22eJEyOPGuVzs";
    // out("session_signed_cookie", signing.dumps(SESSION, salt=CookieStore.__module__, compress=True))
    const SESSION_COOKIE: &str = ".eJyrVopPLC3JiC8tTi2Kz0xRslIyVNJBFktKTM5OzQNJpGQl5qXn6yXn55UUZSbpgZToQWWL9XzzU1JznKBqUQzISCzOAOo2oBAo1QIAIvYyTQ:1xWIc1:WLZVjBn3wkRWF_S9k0ULjkZpgoo4e7mcN3HdFt61H6s";

    fn assert_login_dict(s: &SessionData) {
        assert_eq!(s.user_id().as_deref(), Some("1"));
        assert_eq!(
            s.backend(),
            Some("django.contrib.auth.backends.ModelBackend")
        );
        assert_eq!(s.auth_hash(), Some("0".repeat(64).as_str()));
    }

    #[test]
    fn decodes_a_django_db_session() {
        let keys = Keys::new(K);
        let s = decode_stored(SESSION_DB, &keys, "django.contrib.sessions.SessionStore").unwrap();
        assert_login_dict(&s);
    }

    #[test]
    fn custom_store_class_changes_the_salt() {
        let keys = Keys::new(K);
        let s = decode_stored(SESSION_CUSTOM, &keys, "django.contrib.sessions.MyStore").unwrap();
        assert_login_dict(&s);
        let wrong = decode_stored(
            SESSION_CUSTOM,
            &keys,
            "django.contrib.sessions.SessionStore",
        );
        assert_eq!(wrong.unwrap_err(), DecodeFailure::BadSignature);
    }

    #[test]
    fn db_session_ignores_age_but_not_the_key() {
        // Stored data has no max_age: a years-old row is fine if expire_date says so.
        let keys = Keys::new("another-key");
        let err = decode_stored(SESSION_DB, &keys, "django.contrib.sessions.SessionStore");
        assert_eq!(err.unwrap_err(), DecodeFailure::BadSignature);
    }

    #[test]
    fn signed_cookie_session_checks_age() {
        let keys = Keys::new(K);
        let age = Duration::from_secs(1_209_600);
        let fresh = UNIX_EPOCH + Duration::from_secs(T + 1_209_600);
        assert_login_dict(&decode_signed_cookie(SESSION_COOKIE, &keys, age, fresh).unwrap());
        let stale = fresh + Duration::from_secs(1);
        let err = decode_signed_cookie(SESSION_COOKIE, &keys, age, stale).unwrap_err();
        assert_eq!(err, DecodeFailure::Expired);
        // The db salt does not open a signed-cookie session.
        let err = decode_stored(
            SESSION_COOKIE,
            &keys,
            "django.contrib.sessions.SessionStore",
        );
        assert_eq!(err.unwrap_err(), DecodeFailure::BadSignature);
    }

    #[test]
    fn garbage_is_bad_signature_not_a_panic() {
        let keys = Keys::new(K);
        for junk in ["", ":", "abc", "a:b:c", "\u{0}:\u{0}"] {
            assert!(decode_stored(junk, &keys, "s").is_err(), "{junk:?}");
        }
    }

    #[test]
    fn accessors_tolerate_odd_shapes() {
        let s = SessionData::from_json(serde_json::json!({
            "_auth_user_id": 7, "_auth_user_backend": 3, "_auth_user_hash": ""
        }));
        assert_eq!(s.user_id().as_deref(), Some("7"));
        assert_eq!(s.backend(), None);
        assert_eq!(s.auth_hash(), None);
        assert!(SessionData::from_json(serde_json::json!([1, 2])).is_empty());
        assert!(!format!("{s:?}").contains("_auth"));
    }

    #[test]
    fn short_session_keys_are_invalid() {
        assert!(!valid_session_key("1234567"));
        assert!(valid_session_key("12345678"));
    }
}
