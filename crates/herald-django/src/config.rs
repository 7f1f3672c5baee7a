//! [`DjangoAuthConfig`]: the Django settings Herald needs to authenticate like Django does.
//!
//! Every knob mirrors one Django setting (named in its `DEFAULT_*` const) so a deployment can copy
//! values from `settings.py`. The library never reads env vars or files; the CLI maps flags onto
//! this struct. [`DjangoAuth::new`](crate::DjangoAuth::new) validates it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::tls::PgTls;

/// `SESSION_COOKIE_NAME`.
pub const DEFAULT_SESSION_COOKIE_NAME: &str = "sessionid";
/// `SESSION_COOKIE_AGE` (two weeks): `max_age` of a `signed_cookies` session.
pub const DEFAULT_SESSION_COOKIE_AGE: Duration = Duration::from_secs(1_209_600);
/// The session data salt: `"django.contrib.sessions." + SessionStore.__qualname__`, the same for
/// the stock `db`, `cached_db`, `cache` and `file` engines. A project whose `SESSION_ENGINE`
/// module defines its store under another class name (`class MyStore(SessionStore)`) uses
/// `django.contrib.sessions.MyStore`.
pub const DEFAULT_SESSION_KEY_SALT: &str = "django.contrib.sessions.SessionStore";
/// The salt of the `signed_cookies` engine (its module path), fixed by Django.
pub const SIGNED_COOKIES_SALT: &str = "django.contrib.sessions.backends.signed_cookies";
/// The table of `django.contrib.sessions.models.Session`.
pub const DEFAULT_SESSION_TABLE: &str = "django_session";
/// `AUTH_USER_MODEL`'s table (`auth.User`).
pub const DEFAULT_USER_TABLE: &str = "auth_user";
/// The user model's primary key column.
pub const DEFAULT_USER_ID_COLUMN: &str = "id";
/// `USERNAME_FIELD`'s column.
pub const DEFAULT_USERNAME_COLUMN: &str = "username";
/// `AbstractBaseUser.password`'s column (the stored hash the session auth hash covers).
pub const DEFAULT_PASSWORD_COLUMN: &str = "password";
/// The `is_active` column (`ModelBackend.user_can_authenticate`).
pub const DEFAULT_IS_ACTIVE_COLUMN: &str = "is_active";
/// `AUTHENTICATION_BACKENDS`.
pub const DEFAULT_AUTHENTICATION_BACKENDS: &[&str] = &["django.contrib.auth.backends.ModelBackend"];
/// How long connecting to or querying the database may take.
pub const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an HTTP callback may take, connect to last body byte.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// `SESSION_ENGINE`: where the session dict lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SessionEngine {
    /// `django.contrib.sessions.backends.db` (Django's default): a row in `django_session`.
    /// Also right for `cached_db`, which writes every session through to that table.
    #[default]
    Db,
    /// `django.contrib.sessions.backends.signed_cookies`: the cookie is the signed dict.
    SignedCookies,
}

impl SessionEngine {
    /// The Django module path (`SESSION_ENGINE` value) of this engine.
    pub fn django_path(self) -> &'static str {
        match self {
            SessionEngine::Db => "django.contrib.sessions.backends.db",
            SessionEngine::SignedCookies => "django.contrib.sessions.backends.signed_cookies",
        }
    }
}

impl fmt::Display for SessionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.django_path())
    }
}

impl FromStr for SessionEngine {
    type Err = Error;

    /// Accepts the short names `db`, `cached_db`, `signed_cookies` and the full module paths.
    fn from_str(s: &str) -> Result<Self> {
        let short = s
            .strip_prefix("django.contrib.sessions.backends.")
            .unwrap_or(s);
        match short {
            "db" | "cached_db" => Ok(SessionEngine::Db),
            "signed_cookies" => Ok(SessionEngine::SignedCookies),
            other => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "unsupported SESSION_ENGINE {other:?}: expected db, cached_db or \
                     signed_cookies (use the HTTP callback for any other engine)"
                ),
            )),
        }
    }
}

/// A parsed `DATABASE_URL`.
#[derive(Clone)]
pub(crate) enum DatabaseUrl {
    Postgres(Box<tokio_postgres::Config>, PgTls),
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseUrl {
    // tokio_postgres::Config's Debug already redacts the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(c, tls) => f.debug_tuple("Postgres").field(c).field(tls).finish(),
            DatabaseUrl::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
        }
    }
}

impl DatabaseUrl {
    /// Parses `postgres://…`/`postgresql://…` (libpq URL; `sslmode` and `sslrootcert` as in
    /// [`crate::tls`]) or `sqlite:` URLs
    /// the way dj-database-url reads them: `sqlite:///relative/db.sqlite3` is relative to the
    /// working directory, `sqlite:////abs/db.sqlite3` is absolute.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("database URL: {why}"));
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (url, tls) = PgTls::split_url(url)?;
            let config = tokio_postgres::Config::from_str(&url).map_err(|e| {
                Error::with_source(ErrorKind::Config, "database URL: invalid postgres URL", e)
            })?;
            return Ok(DatabaseUrl::Postgres(Box::new(config), tls));
        }
        if let Some(rest) = url.strip_prefix("sqlite://") {
            // dj-database-url drops the first '/' of the URL path.
            let path = rest.strip_prefix('/').unwrap_or(rest);
            if path.is_empty() || path == ":memory:" {
                return Err(bad(
                    "sqlite needs a file path (sqlite:////abs/path.sqlite3)",
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        Err(bad(
            "expected postgres://, postgresql:// or sqlite:// (secrets not shown)",
        ))
    }
}

/// Everything [`DjangoAuth`](crate::DjangoAuth) needs, mirroring Django settings.
///
/// Two modes:
/// * **session** (default): read the session like Django does (`SECRET_KEY`, `SESSION_ENGINE`,
///   the database), then the user. Needs [`secret_key`](Self::secret_key) and
///   [`database_url`](Self::database_url) (the user table is read even with `signed_cookies`).
/// * **callback**: with [`callback_url`](Self::callback_url) set, forward the `Cookie` header to
///   a Django view instead; nothing else is needed.
///
/// ```
/// use herald_django::{DjangoAuth, DjangoAuthConfig};
/// let auth = DjangoAuth::new(
///     DjangoAuthConfig::default()
///         .with_secret_key("django-insecure-…")
///         .with_secret_key_fallbacks(["old-key"])
///         .with_database_url("postgres://postgres@127.0.0.1:5432/app"),
/// )
/// .unwrap();
/// # drop(auth);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct DjangoAuthConfig {
    /// `SECRET_KEY`. Required in session mode.
    pub secret_key: String,
    /// `SECRET_KEY_FALLBACKS`: older keys still accepted for signatures and session auth hashes.
    pub secret_key_fallbacks: Vec<String>,
    /// `SESSION_COOKIE_NAME`; default [`DEFAULT_SESSION_COOKIE_NAME`].
    pub session_cookie_name: String,
    /// `SESSION_ENGINE`; default [`SessionEngine::Db`].
    pub session_engine: SessionEngine,
    /// `DATABASES["default"]` as a URL: `postgres://user:pass@host:port/name` or
    /// `sqlite:////absolute/path.sqlite3` (dj-database-url rules; three slashes = relative).
    /// PostgreSQL takes libpq's `sslmode` (`disable`, `prefer` (default), `require`,
    /// `verify-ca`, `verify-full`) and `sslrootcert=/path/ca.pem` (default: the system roots).
    pub database_url: Option<String>,
    /// Salt of the session data; default [`DEFAULT_SESSION_KEY_SALT`].
    pub session_key_salt: String,
    /// The sessions table; default [`DEFAULT_SESSION_TABLE`].
    pub session_table: String,
    /// The user table (`AUTH_USER_MODEL`'s `db_table`); default [`DEFAULT_USER_TABLE`].
    /// May be schema-qualified (`schema.table`).
    pub user_table: String,
    /// The user primary key column; default [`DEFAULT_USER_ID_COLUMN`].
    pub user_id_column: String,
    /// The username column; default [`DEFAULT_USERNAME_COLUMN`].
    pub username_column: String,
    /// The password column; default [`DEFAULT_PASSWORD_COLUMN`].
    pub password_column: String,
    /// The `is_active` column, or `None` for a user model without one (Django then treats every
    /// user as active). Default [`DEFAULT_IS_ACTIVE_COLUMN`].
    pub is_active_column: Option<String>,
    /// `AUTHENTICATION_BACKENDS`; default [`DEFAULT_AUTHENTICATION_BACKENDS`].
    pub authentication_backends: Vec<String>,
    /// `SESSION_COOKIE_AGE`: `max_age` of `signed_cookies` sessions; default
    /// [`DEFAULT_SESSION_COOKIE_AGE`].
    pub session_cookie_age: Duration,
    /// Database connect/query timeout; default [`DEFAULT_DATABASE_TIMEOUT`].
    pub database_timeout: Duration,
    /// `http://host:port/path` of a Django view answering 200 `{"username", "user_id"}` or
    /// 401/403. Selects callback mode.
    pub callback_url: Option<String>,
    /// Timeout of one callback request; default [`DEFAULT_CALLBACK_TIMEOUT`].
    pub callback_timeout: Duration,
}

impl Default for DjangoAuthConfig {
    fn default() -> Self {
        DjangoAuthConfig {
            secret_key: String::new(),
            secret_key_fallbacks: Vec::new(),
            session_cookie_name: DEFAULT_SESSION_COOKIE_NAME.to_owned(),
            session_engine: SessionEngine::default(),
            database_url: None,
            session_key_salt: DEFAULT_SESSION_KEY_SALT.to_owned(),
            session_table: DEFAULT_SESSION_TABLE.to_owned(),
            user_table: DEFAULT_USER_TABLE.to_owned(),
            user_id_column: DEFAULT_USER_ID_COLUMN.to_owned(),
            username_column: DEFAULT_USERNAME_COLUMN.to_owned(),
            password_column: DEFAULT_PASSWORD_COLUMN.to_owned(),
            is_active_column: Some(DEFAULT_IS_ACTIVE_COLUMN.to_owned()),
            authentication_backends: DEFAULT_AUTHENTICATION_BACKENDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            session_cookie_age: DEFAULT_SESSION_COOKIE_AGE,
            database_timeout: DEFAULT_DATABASE_TIMEOUT,
            callback_url: None,
            callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
        }
    }
}

impl fmt::Debug for DjangoAuthConfig {
    // Secrets and the database URL (which may hold a password) are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DjangoAuthConfig")
            .field("secret_key", &"<redacted>")
            .field("secret_key_fallbacks", &self.secret_key_fallbacks.len())
            .field("session_cookie_name", &self.session_cookie_name)
            .field("session_engine", &self.session_engine)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("session_key_salt", &self.session_key_salt)
            .field("session_table", &self.session_table)
            .field("user_table", &self.user_table)
            .field("user_id_column", &self.user_id_column)
            .field("username_column", &self.username_column)
            .field("password_column", &self.password_column)
            .field("is_active_column", &self.is_active_column)
            .field("authentication_backends", &self.authentication_backends)
            .field("session_cookie_age", &self.session_cookie_age)
            .field("database_timeout", &self.database_timeout)
            .field("callback_url", &self.callback_url)
            .field("callback_timeout", &self.callback_timeout)
            .finish()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident: String) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.$field = value.into();
            self
        }
    };
    ($(#[$doc:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$field = value;
            self
        }
    };
}

impl DjangoAuthConfig {
    setter!(
        /// Sets `SECRET_KEY`.
        with_secret_key, secret_key: String);
    setter!(
        /// Sets `SESSION_COOKIE_NAME`.
        with_session_cookie_name, session_cookie_name: String);
    setter!(
        /// Sets `SESSION_ENGINE`.
        with_session_engine, session_engine: SessionEngine);
    setter!(
        /// Sets the session data salt (custom `SessionStore` class names).
        with_session_key_salt, session_key_salt: String);
    setter!(
        /// Sets the sessions table.
        with_session_table, session_table: String);
    setter!(
        /// Sets the user table.
        with_user_table, user_table: String);
    setter!(
        /// Sets the user primary key column.
        with_user_id_column, user_id_column: String);
    setter!(
        /// Sets the username column.
        with_username_column, username_column: String);
    setter!(
        /// Sets the password column.
        with_password_column, password_column: String);
    setter!(
        /// Sets `SESSION_COOKIE_AGE`.
        with_session_cookie_age, session_cookie_age: Duration);
    setter!(
        /// Sets the database connect/query timeout.
        with_database_timeout, database_timeout: Duration);
    setter!(
        /// Sets the callback request timeout.
        with_callback_timeout, callback_timeout: Duration);

    /// Sets `SECRET_KEY_FALLBACKS`.
    pub fn with_secret_key_fallbacks<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.secret_key_fallbacks = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the database URL (see [`database_url`](Self::database_url)).
    pub fn with_database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Sets the `is_active` column; `None` for a user model without one.
    pub fn with_is_active_column(mut self, column: Option<&str>) -> Self {
        self.is_active_column = column.map(str::to_owned);
        self
    }

    /// Sets `AUTHENTICATION_BACKENDS`.
    pub fn with_authentication_backends<I, S>(mut self, backends: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.authentication_backends = backends.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the callback URL, selecting callback mode.
    pub fn with_callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Checks the session-mode settings and parses the database URL.
    pub(crate) fn validate_session_mode(&self) -> Result<DatabaseUrl> {
        let bad = |msg: String| Err(Error::new(ErrorKind::Config, msg));
        if self.secret_key.is_empty() {
            return bad("secret_key (SECRET_KEY) must not be empty".into());
        }
        if self.secret_key_fallbacks.iter().any(String::is_empty) {
            return bad("secret_key_fallbacks must not contain an empty key".into());
        }
        if self.session_cookie_name.is_empty() {
            return bad("session_cookie_name must not be empty".into());
        }
        if self.session_key_salt.is_empty() {
            return bad("session_key_salt must not be empty".into());
        }
        if self.authentication_backends.is_empty() {
            return bad("authentication_backends must list at least one backend".into());
        }
        if self.session_cookie_age.is_zero() || self.database_timeout.is_zero() {
            return bad("session_cookie_age and database_timeout must be positive".into());
        }
        validate_identifier(&self.session_table, true)?;
        validate_identifier(&self.user_table, true)?;
        for column in [
            &self.user_id_column,
            &self.username_column,
            &self.password_column,
        ]
        .into_iter()
        .chain(self.is_active_column.as_ref())
        {
            validate_identifier(column, false)?;
        }
        let Some(url) = &self.database_url else {
            return bad("database_url is required to read the user (and db sessions)".into());
        };
        DatabaseUrl::parse(url)
    }
}

/// A SQL identifier we are willing to interpolate: `[A-Za-z_][A-Za-z0-9_]*`, optionally
/// `schema.name` for tables. They are also double-quoted when used, but a strict whitelist makes
/// injection through configuration impossible.
pub(crate) fn validate_identifier(ident: &str, allow_schema: bool) -> Result<()> {
    let part_ok = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let ok = match ident.split_once('.') {
        Some((schema, name)) if allow_schema => part_ok(schema) && part_ok(name),
        Some(_) => false,
        None => part_ok(ident),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!("{ident:?} is not a plain SQL identifier"),
        ))
    }
}

/// `"schema"."table"` / `"column"`; only call on validated identifiers.
pub(crate) fn quote_identifier(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn session_config() -> DjangoAuthConfig {
        DjangoAuthConfig::default()
            .with_secret_key("k")
            .with_database_url("sqlite:////tmp/db.sqlite3")
    }

    #[test]
    fn defaults_mirror_django_global_settings() {
        let c = DjangoAuthConfig::default();
        assert_eq!(c.session_cookie_name, "sessionid");
        assert_eq!(c.session_engine, SessionEngine::Db);
        assert_eq!(c.session_cookie_age, Duration::from_secs(1_209_600));
        assert_eq!(c.session_key_salt, "django.contrib.sessions.SessionStore");
        assert_eq!(
            c.authentication_backends,
            ["django.contrib.auth.backends.ModelBackend"]
        );
        assert_eq!(c.is_active_column.as_deref(), Some("is_active"));
    }

    #[test]
    fn session_engine_accepts_short_and_full_names() {
        for (s, e) in [
            ("db", SessionEngine::Db),
            ("django.contrib.sessions.backends.db", SessionEngine::Db),
            (
                "django.contrib.sessions.backends.cached_db",
                SessionEngine::Db,
            ),
            ("signed_cookies", SessionEngine::SignedCookies),
            (
                "django.contrib.sessions.backends.signed_cookies",
                SessionEngine::SignedCookies,
            ),
        ] {
            assert_eq!(s.parse::<SessionEngine>().unwrap(), e, "{s}");
        }
        for e in [SessionEngine::Db, SessionEngine::SignedCookies] {
            assert_eq!(e.to_string().parse::<SessionEngine>().unwrap(), e);
        }
        let err = "django.contrib.sessions.backends.cache"
            .parse::<SessionEngine>()
            .unwrap_err();
        assert!(err.is_config());
    }

    #[test]
    fn sqlite_urls_follow_dj_database_url() {
        let abs = DatabaseUrl::parse("sqlite:////tmp/x.sqlite3").unwrap();
        assert!(matches!(abs, DatabaseUrl::Sqlite(p) if p == Path::new("/tmp/x.sqlite3")));
        let rel = DatabaseUrl::parse("sqlite:///db.sqlite3").unwrap();
        assert!(matches!(rel, DatabaseUrl::Sqlite(p) if p == Path::new("db.sqlite3")));
        assert!(DatabaseUrl::parse("sqlite://").unwrap_err().is_config());
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
    }

    #[test]
    fn postgres_urls_parse_and_others_are_rejected() {
        let pg = DatabaseUrl::parse("postgres://postgres:pw@127.0.0.1:5432/app").unwrap();
        match pg {
            DatabaseUrl::Postgres(c, _) => {
                assert_eq!(c.get_dbname(), Some("app"));
                assert_eq!(c.get_user(), Some("postgres"));
                assert!(!format!("{c:?}").contains("pw"));
            }
            DatabaseUrl::Sqlite(_) => panic!("not sqlite"),
        }
        assert!(DatabaseUrl::parse("postgresql://u@h/d").is_ok());
        assert!(DatabaseUrl::parse("postgres://u@h/d?sslmode=disable").is_ok());
        assert!(DatabaseUrl::parse("postgres://u@h/d?sslmode=verify-full").is_ok());
        let tls = DatabaseUrl::parse("postgres://u@h/d?sslmode=sometimes").unwrap_err();
        assert!(tls.is_config());
        assert!(DatabaseUrl::parse("mysql://u@h/d").unwrap_err().is_config());
    }

    #[test]
    fn session_mode_requires_secret_and_database() {
        assert!(session_config().validate_session_mode().is_ok());
        let no_key = session_config().with_secret_key("");
        assert!(no_key.validate_session_mode().unwrap_err().is_config());
        let no_db = DjangoAuthConfig::default().with_secret_key("k");
        assert!(no_db.validate_session_mode().unwrap_err().is_config());
        let empty_fallback = session_config().with_secret_key_fallbacks([""]);
        assert!(empty_fallback.validate_session_mode().is_err());
        let no_backends = session_config().with_authentication_backends(Vec::<String>::new());
        assert!(no_backends.validate_session_mode().is_err());
    }

    #[test]
    fn identifiers_are_whitelisted() {
        assert!(validate_identifier("auth_user", true).is_ok());
        assert!(validate_identifier("accounts.user", true).is_ok());
        assert!(validate_identifier("accounts.user", false).is_err());
        for bad in ["", "1abc", "a b", "x\"; drop table y; --", "a.b.c", "é"] {
            assert!(validate_identifier(bad, true).is_err(), "{bad:?}");
        }
        assert!(
            session_config()
                .with_user_table("users;--")
                .validate_session_mode()
                .is_err()
        );
        assert!(
            session_config()
                .with_is_active_column(Some("active flag"))
                .validate_session_mode()
                .is_err()
        );
        assert_eq!(quote_identifier("s.t"), "\"s\".\"t\"");
    }

    #[test]
    fn debug_redacts_secrets_and_database_url() {
        let c = session_config()
            .with_secret_key("super-secret")
            .with_secret_key_fallbacks(["old-secret"])
            .with_database_url("postgres://u:dbpass@h/d");
        let dbg = format!("{c:?}");
        for secret in ["super-secret", "old-secret", "dbpass"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
    }
}
