//! The user half of `django.contrib.auth.get_user`: backend allow-list, `is_active`, and the
//! session auth hash (spec §5.4, §8.3).
//!
//! Django HTTP (`django.contrib.auth.get_user`, 4.1+) compares `_auth_user_hash` with
//! `get_session_auth_hash()` under `SECRET_KEY` and then under each of `SECRET_KEY_FALLBACKS`.
//! Channels' `channels.auth.get_user` only tries `SECRET_KEY`, so after a key rotation Channels
//! logs WebSocket users out (and deletes their session) while HTTP keeps them logged in.
//! **We follow Django HTTP**: a hash made with a fallback key is accepted, and we never delete or
//! modify the session (Django would re-key it on the next HTTP request).

use crate::signing::{Keys, constant_time_eq, hex, salted_hmac};

/// The `key_salt` of `AbstractBaseUser.get_session_auth_hash`.
pub const SESSION_AUTH_HASH_SALT: &str =
    "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash";

/// Backends that log in inactive users (`user_can_authenticate` returns `True`).
const ALLOW_INACTIVE_BACKENDS: &[&str] = &[
    "django.contrib.auth.backends.AllowAllUsersModelBackend",
    "django.contrib.auth.backends.AllowAllUsersRemoteUserBackend",
];

/// `user.get_session_auth_hash()` computed with `secret`: 64 hex chars of
/// `salted_hmac(SESSION_AUTH_HASH_SALT, password, secret, "sha256")` over the **stored** password
/// hash string (e.g. `pbkdf2_sha256$…`).
pub fn session_auth_hash(password: &str, secret: &str) -> String {
    hex(&salted_hmac(
        SESSION_AUTH_HASH_SALT,
        password.as_bytes(),
        secret,
    ))
}

/// Which key, if any, made a session's `_auth_user_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashCheck {
    /// Made with `SECRET_KEY`.
    Current,
    /// Made with one of `SECRET_KEY_FALLBACKS` (Django HTTP accepts and re-keys).
    Fallback,
    /// The session has no hash (Django: `if not session_hash` → logged out).
    Missing,
    /// No key reproduces it: the password changed since login, or the hash is forged.
    Mismatch,
}

/// Mirrors the hash part of `django.contrib.auth.get_user` (Django 5.2).
pub(crate) fn check_session_hash(stored: Option<&str>, password: &str, keys: &Keys) -> HashCheck {
    let Some(stored) = stored else {
        return HashCheck::Missing;
    };
    let mut keys_iter = keys.all();
    if let Some(current) = keys_iter.next()
        && constant_time_eq(
            stored.as_bytes(),
            session_auth_hash(password, current).as_bytes(),
        )
    {
        return HashCheck::Current;
    }
    for fallback in keys_iter {
        if constant_time_eq(
            stored.as_bytes(),
            session_auth_hash(password, fallback).as_bytes(),
        ) {
            return HashCheck::Fallback;
        }
    }
    HashCheck::Mismatch
}

/// `ModelBackend.user_can_authenticate`: `is_active` must not be false, unless the backend is
/// one of Django's `AllowAllUsers*` backends.
pub(crate) fn can_authenticate(backend: &str, is_active: Option<bool>) -> bool {
    ALLOW_INACTIVE_BACKENDS.contains(&backend) || is_active.unwrap_or(true)
}

/// A user row as read from the database.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub(crate) username: String,
    pub(crate) password: String,
    /// `None` when the model has no `is_active` column.
    pub(crate) is_active: Option<bool>,
}

impl std::fmt::Debug for UserRow {
    // The password hash is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("username", &self.username)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! Vectors from `scripts/gen_vectors.py` (Django 5.2.19, SECRET_KEY
    //! `django-insecure-test-secret-key`, SECRET_KEY_FALLBACKS `["old-secret-key-before-rotation"]`).
    use super::*;

    const K: &str = "django-insecure-test-secret-key";
    const OLD: &str = "old-secret-key-before-rotation";
    const PASSWORD: &str = "pbkdf2_sha256$870000$salt$hash=";
    // out("session_hash_pbkdf2", User("pbkdf2_sha256$870000$salt$hash=").get_session_auth_hash())
    const HASH_K: &str = "e4b6d402befae36a468d50b3439ba2d846bd054c04075c0319a1d27604d455e9";
    // out("session_hash_fallbacks", list(User("pbkdf2_sha256$870000$salt$hash=").get_session_auth_fallback_hash()))
    const HASH_OLD: &str = "ce25fd4e5ecfe70bd4fb284c52df616559e1c04649bc25bd11f61bd286a184b1";

    #[test]
    fn session_auth_hash_matches_django() {
        assert_eq!(session_auth_hash(PASSWORD, K), HASH_K);
        assert_eq!(session_auth_hash(PASSWORD, OLD), HASH_OLD);
        // out("session_hash_unusable", User("!unusablePasswordXYZ").get_session_auth_hash())
        assert_eq!(
            session_auth_hash("!unusablePasswordXYZ", K),
            "cab3ec63b9acc56a9005c836f750d5ed7b8701a2e3a7252cccdbf6a42bcb2bd4"
        );
    }

    #[test]
    fn hash_check_tries_current_then_fallbacks() {
        let rotated = Keys::new(K).with_fallbacks([OLD]);
        assert_eq!(
            check_session_hash(Some(HASH_K), PASSWORD, &rotated),
            HashCheck::Current
        );
        assert_eq!(
            check_session_hash(Some(HASH_OLD), PASSWORD, &rotated),
            HashCheck::Fallback
        );
        // Without the fallback (what Channels does) the old hash is a mismatch.
        assert_eq!(
            check_session_hash(Some(HASH_OLD), PASSWORD, &Keys::new(K)),
            HashCheck::Mismatch
        );
    }

    #[test]
    fn changed_password_or_missing_hash_is_refused() {
        let keys = Keys::new(K);
        let other = "pbkdf2_sha256$870000$salt$other=";
        assert_eq!(
            check_session_hash(Some(HASH_K), other, &keys),
            HashCheck::Mismatch
        );
        assert_eq!(
            check_session_hash(None, PASSWORD, &keys),
            HashCheck::Missing
        );
        assert_eq!(
            check_session_hash(Some(&HASH_K[..63]), PASSWORD, &keys),
            HashCheck::Mismatch
        );
    }

    #[test]
    fn inactive_users_need_an_allow_all_backend() {
        let model = "django.contrib.auth.backends.ModelBackend";
        assert!(can_authenticate(model, Some(true)));
        assert!(!can_authenticate(model, Some(false)));
        assert!(can_authenticate(model, None));
        assert!(can_authenticate(
            "django.contrib.auth.backends.AllowAllUsersModelBackend",
            Some(false)
        ));
    }

    #[test]
    fn user_row_debug_hides_the_password() {
        let row = UserRow {
            username: "amadmin".into(),
            password: PASSWORD.into(),
            is_active: Some(true),
        };
        assert!(!format!("{row:?}").contains("pbkdf2"));
    }
}
