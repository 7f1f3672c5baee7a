//! Authenticate a WebSocket handshake exactly as Django + Channels' `AuthMiddlewareStack` would,
//! with no change to the Django app.
//!
//! Give [`DjangoAuth`] the `SECRET_KEY` (and `SECRET_KEY_FALLBACKS`), the `SESSION_ENGINE` and the
//! database URL; hand it the handshake's first `Cookie` header; get back the logged-in user or
//! `None`. For setups it cannot read directly, [`DjangoAuthConfig::callback_url`] asks a Django
//! view instead.
//!
//! # Why a separate crate
//! `herald-server` must not depend on a database driver (nor on Django's formats): it only knows
//! an auth hook. This crate holds the drivers (tokio-postgres, rusqlite) and everything Django,
//! behind a plain async API with no Herald types, and `herald-cli` glues it to the server's hook.
//! A deployment that authenticates some other way never compiles a database client.
//!
//! # What "exactly" means
//! Cookie parsing, session loading and the user checks follow Django 5.2 (`parse_cookie`,
//! `SessionStore`, `django.contrib.auth.get_user`), verified against the real Django in the
//! tests. Two deliberate differences from Channels 4.3:
//! * hashes made with a `SECRET_KEY_FALLBACKS` key are accepted, like Django HTTP (Channels logs
//!   the user out after a key rotation);
//! * nothing is ever written: a failed check does not delete the session (Channels calls
//!   `session.flush()`), and a fallback-key session is not re-keyed (the next HTTP request does
//!   that).
//!
//! Any backend listed in `AUTHENTICATION_BACKENDS` is treated like `ModelBackend` (look the user
//! up by primary key, refuse `is_active = false`, except for Django's `AllowAllUsers*`
//! backends); a custom backend with other rules needs the HTTP callback. Sessions are assumed to
//! use the JSON serializer and `USE_TZ = True` (Django's defaults).
//!
//! # Layout
//! * [`signing`] — `django.core.signing` / `salted_hmac`: the token format, keys and fallbacks.
//! * [`cookie`] — `django.http.parse_cookie`.
//! * [`session`] — session payloads per engine and the `_auth_user_*` keys.
//! * `db` — the `django_session` and user-table queries on PostgreSQL and SQLite (read-only).
//! * `tls` — PostgreSQL over rustls, with libpq's `sslmode`/`sslrootcert` read from the URL.
//! * [`user`] — `_auth_user_hash`, `is_active` and the backend allow-list.
//! * `http` — the one HTTP client (hyper, HTTP/1.1, plain http) of the callback and the webhook.
//! * `callback` — the HTTP callback authenticator's request and answers.
//! * [`webhook`] — the presence webhook: signed JSON events, a bounded queue, retries.
//! * [`config`] — [`DjangoAuthConfig`], mirroring the Django settings.
//! * [`error`] — the opaque [`Error`] with [`ErrorKind`].
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), herald_django::Error> {
//! use herald_django::{DjangoAuth, DjangoAuthConfig};
//! let auth = DjangoAuth::new(
//!     DjangoAuthConfig::default()
//!         .with_secret_key("django-insecure-…")
//!         .with_database_url("sqlite:////srv/app/db.sqlite3"),
//! )?;
//! match auth.authenticate(Some("sessionid=9w3n…")).await? {
//!     Some(user) => println!("user_{} connected", user.username),
//!     None => println!("anonymous: refuse the handshake"),
//! }
//! # Ok(()) }
//! ```
//!
//! Never logs secrets, cookies or session data: refusals are logged at debug with their
//! [`Refusal`] reason only.

mod auth;
mod callback;
pub mod config;
pub mod cookie;
mod db;
pub mod error;
mod http;
pub mod session;
pub mod signing;
mod tls;
pub mod user;
pub mod webhook;

pub use auth::{AuthOutcome, AuthenticatedUser, CALLBACK_CONCURRENCY, DjangoAuth, Refusal};
pub use config::{DjangoAuthConfig, SessionEngine};
pub use error::{Error, ErrorKind, Result};
pub use webhook::{Webhook, WebhookConfig, WebhookStats};
