//! Shared harness for the Django integration tests: run the test project's management commands
//! (`tests/compat/django_project`) with the compat venv's Python, and the scenarios every
//! session engine / database must pass. Each scenario checks Herald against the real Django:
//! `herald_fixture` makes the session, and `herald_whoami` (Django's own `get_user` and Channels'
//! `get_user`, rolled back) says what Django decides for the same cookie.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(unreachable_pub, reason = "a test helper module, not an API")]

pub mod scenarios;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use herald_django::{AuthOutcome, AuthenticatedUser, DjangoAuth, DjangoAuthConfig, SessionEngine};

/// `SECRET_KEY` of the test sites.
pub const SECRET: &str = "django-insecure-herald-django-tests";
/// A key that was rotated out (`SECRET_KEY_FALLBACKS`).
pub const OLD_SECRET: &str = "herald-django-tests-old-secret-key";
/// How long one `manage.py` run may take (migrate on PostgreSQL is the slowest).
pub const MANAGE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long one `authenticate` may take.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

/// `tests/compat/django_project`, found from this crate's own manifest directory.
pub fn project_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/compat/django_project")
}

/// The test project, run with one set of environment variables.
#[derive(Debug, Clone)]
pub struct Django {
    python: PathBuf,
    env: BTreeMap<String, String>,
}

impl Django {
    pub fn new(python: PathBuf, database_url: &str) -> Self {
        let mut env = BTreeMap::new();
        env.insert("DATABASE_URL".to_owned(), database_url.to_owned());
        env.insert("SECRET_KEY".to_owned(), SECRET.to_owned());
        Django { python, env }
    }

    /// A copy with one more environment variable.
    pub fn with_env(&self, key: &str, value: &str) -> Self {
        let mut copy = self.clone();
        copy.env.insert(key.to_owned(), value.to_owned());
        copy
    }

    /// `python manage.py <args>` in the project directory with the site's settings.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.program(&self.python);
        cmd.arg("manage.py").args(args);
        cmd
    }

    /// The venv's `daphne` executable.
    pub fn daphne(&self) -> PathBuf {
        self.python.with_file_name("daphne")
    }

    /// `program` (from the venv) in the project directory with the site's settings.
    pub fn program(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.current_dir(project_dir())
            // Settings come from these variables only, never from the caller's environment.
            .env_remove("SECRET_KEY_FALLBACKS")
            .env_remove("SESSION_ENGINE")
            .env_remove("AUTHENTICATION_BACKENDS")
            .env_remove("REDIS_URL")
            .env_remove("CHANNEL_LAYERS_PREFIX")
            .env_remove("CHANNEL_LAYERS_SYMMETRIC_ENCRYPTION_KEYS")
            .env_remove("SESSION_COOKIE_AGE")
            .env("DJANGO_SETTINGS_MODULE", "herald_site.settings")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(&self.env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `manage.py <args>` and returns stdout; panics with stderr if it fails.
    pub async fn manage(&self, args: &[&str]) -> String {
        let output = tokio::time::timeout(MANAGE_TIMEOUT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("manage.py {args:?} timed out"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "manage.py {args:?} failed ({}):\n{stderr}",
            output.status
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `herald_fixture <args>`: a user logged in through `django.contrib.auth.login`.
    pub async fn fixture(&self, args: &[&str]) -> Fixture {
        let mut full = vec!["herald_fixture"];
        full.extend_from_slice(args);
        let out = self.manage(&full).await;
        let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
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
