//! Shared harness for the Django integration tests: run the test project's management commands
//! (`tests/compat/django_project`) with the compat venv's Python, and the scenarios every
//! session engine / database must pass. Each scenario checks Herald against the real Django:
//! `herald_fixture` makes the session, and `herald_whoami` (Django's own `get_user` and Channels'
//! `get_user`, rolled back) says what Django decides for the same cookie.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(unreachable_pub, reason = "a test helper module, not an API")]

pub mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use herald_django::{AuthOutcome, AuthenticatedUser, DjangoAuth, DjangoAuthConfig, SessionEngine};
use herald_test_support::django::DjangoProject;

/// `SECRET_KEY` of the test sites.
pub const SECRET: &str = "django-insecure-herald-django-tests";
/// A key that was rotated out (`SECRET_KEY_FALLBACKS`).
pub const OLD_SECRET: &str = "herald-django-tests-old-secret-key";
/// How long one `authenticate` may take.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

/// The test project, run with one set of environment variables.
#[derive(Debug, Clone)]
pub struct Django {
    project: DjangoProject,
}

impl Django {
    pub fn new(python: PathBuf, database_url: &str) -> Self {
        let project = DjangoProject::new(python)
            .with_env("DATABASE_URL", database_url)
            .with_env("SECRET_KEY", SECRET);
        Django { project }
    }

    /// A copy with one more environment variable.
    pub fn with_env(&self, key: &str, value: &str) -> Self {
        Django {
            project: self.project.clone().with_env(key, value),
        }
    }

    /// `python manage.py <args>` in the project directory with the site's settings.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.project.manage_command(args)
    }

    /// The venv's `daphne` executable.
    pub fn daphne(&self) -> PathBuf {
        self.project.venv_program("daphne")
    }

    /// `program` (from the venv) in the project directory with the site's settings.
    pub fn program(&self, program: &std::path::Path) -> tokio::process::Command {
        self.project.program(program)
    }

    /// Runs `manage.py <args>` and returns stdout; panics with stderr if it fails.
    pub async fn manage(&self, args: &[&str]) -> String {
        self.project.manage(args).await
    }

    /// `herald_fixture <args>`: a user logged in through `django.contrib.auth.login`.
    pub async fn fixture(&self, args: &[&str]) -> Fixture {
        let json = self.project.fixture_json(args).await;
        let field = |k: &str| json[k].as_str().unwrap().to_owned();
        Fixture {
            cookie: field("cookie"),
            session_key: field("session_key"),
            user: AuthenticatedUser::new(field("user_id"), field("username")),
        }
    }

    /// `herald_whoami`: what Django HTTP and Channels decide for `cookie_header`.
    pub async fn whoami(&self, cookie_header: &str) -> Oracle {
        let out = self
            .manage(&["herald_whoami", "--cookie", cookie_header])
            .await;
        let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let user = |v: &serde_json::Value| {
            v.as_object().map(|o| {
                AuthenticatedUser::new(
                    o["user_id"].as_str().unwrap(),
                    o["username"].as_str().unwrap(),
                )
            })
        };
        Oracle {
            django: user(&json["django"]),
            channels: user(&json["channels"]),
        }
    }
}

/// A session made by `herald_fixture`.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `sessionid=<key>`.
    pub cookie: String,
    pub session_key: String,
    pub user: AuthenticatedUser,
}

impl Fixture {
    /// A realistic browser header carrying the session cookie among others.
    pub fn header(&self) -> String {
        format!("csrftoken=abcdefabcdef; {}; theme=dark", self.cookie)
    }
}

/// Django's own verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oracle {
    /// `django.contrib.auth.get_user`.
    pub django: Option<AuthenticatedUser>,
    /// `channels.auth.get_user`.
    pub channels: Option<AuthenticatedUser>,
}

/// A Django site: the project with one database and one session engine.
#[derive(Debug, Clone)]
pub struct Site {
    pub django: Django,
    pub database_url: String,
    pub engine: SessionEngine,
}

impl Site {
    pub fn new(python: PathBuf, database_url: &str, engine: SessionEngine) -> Self {
        let mut django = Django::new(python, database_url);
        if engine == SessionEngine::SignedCookies {
            django = django.with_env("SESSION_ENGINE", "signed_cookies");
        }
        Site {
            django,
            database_url: database_url.to_owned(),
            engine,
        }
    }

    /// The Herald config matching the site's settings.
    pub fn config(&self) -> DjangoAuthConfig {
        DjangoAuthConfig::default()
            .with_secret_key(SECRET)
            .with_database_url(&self.database_url)
            .with_session_engine(self.engine)
    }

    pub fn auth(&self) -> DjangoAuth {
        DjangoAuth::new(self.config()).unwrap()
    }
}

/// `auth.check(header)` with a timeout; panics on `Err`.
pub async fn check(auth: &DjangoAuth, header: Option<&str>) -> AuthOutcome {
    tokio::time::timeout(AUTH_TIMEOUT, auth.check(header))
        .await
        .unwrap()
        .unwrap()
}

/// A fresh unique name (`prefix_<pid>_<nanos>_<n>`), for databases and usernames.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
