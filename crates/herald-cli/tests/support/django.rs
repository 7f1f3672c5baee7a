//! The Django test project (`tests/compat/django_project`) run with the compat venv's Python.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use herald_test_support::django::{DjangoProject, MANAGE_TIMEOUT};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `SECRET_KEY` the test sites share with herald.
pub const SECRET: &str = "django-insecure-herald-cli-e2e";
/// One Django site: a database URL, a Redis URL and any extra settings.
#[derive(Debug, Clone)]
pub struct Django {
    project: DjangoProject,
}

/// A running Daphne, killed on drop.
#[derive(Debug)]
pub struct Daphne {
    /// `127.0.0.1:PORT`.
    pub host: String,
    _child: tokio::process::Child,
}

/// What `herald_fixture` printed.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub cookie: String,
    pub user_id: String,
    pub username: String,
}

impl Django {
    pub fn new(python: PathBuf, database_url: &str, redis_url: &str) -> Django {
        let project = DjangoProject::new(python)
            .with_env("DATABASE_URL", database_url)
            .with_env("REDIS_URL", redis_url)
            .with_env("SECRET_KEY", SECRET);
        Django { project }
    }

    /// A copy with one more environment variable.
    pub fn with_env(self, key: &str, value: &str) -> Django {
        Django {
            project: self.project.with_env(key, value),
        }
    }

    /// The environment the project runs with (for other processes of the same site).
    pub fn env(&self) -> &BTreeMap<String, String> {
        self.project.env()
    }

    /// Runs `manage.py ARGS`; panics with stderr on failure; returns stdout.
    pub async fn manage(&self, args: &[&str]) -> String {
        self.project.manage(args).await
    }

    /// `herald_fixture ARGS`: a user logged in through django.contrib.auth.login.
    pub async fn fixture(&self, args: &[&str]) -> Fixture {
        let json = self.project.fixture_json(args).await;
        let field = |k: &str| json[k].as_str().unwrap().to_owned();
        Fixture {
            cookie: field("cookie"),
            user_id: field("user_id"),
            username: field("username"),
        }
    }

    /// Starts Daphne serving the site (`herald_site.asgi`, `/ws/tasks/` behind
    /// `AuthMiddlewareStack`) on a free loopback port; killed on drop.
    pub async fn daphne(&self) -> Daphne {
        let mut child = self
            .project
            .program(&self.project.venv_program("daphne"))
            .args(["-b", "127.0.0.1", "-p", "0", "herald_site.asgi:application"])
            // Daphne says where it listens at INFO.
            .env("DJANGO_LOG_LEVEL", "INFO")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(MANAGE_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.split("Listening on TCP address ").nth(1) {
                    return addr
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .trim()
                        .parse::<u16>()
                        .unwrap();
                }
            }
            panic!("daphne exited before listening");
        })
        .await
        .unwrap();
        // Keep draining Daphne's log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Daphne {
            host: format!("127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// Runs Python code in `manage.py shell` (the guide's "from the Django shell").
    pub async fn shell(&self, code: &str) -> String {
        self.manage(&["shell", "-c", code]).await
    }
}

/// Runs `scenario` with the Django project on a fresh SQLite file and its own Redis: the
/// SQLite half of a test that runs on both databases.
pub async fn on_sqlite(
    python: PathBuf,
    scenario: impl AsyncFnOnce(&Django, &str, &herald_test_support::RedisServer),
) {
    let redis = herald_test_support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &redis.url());
    scenario(&django, &db_url, &redis).await;
}

/// The same on a fresh PostgreSQL database, dropped afterwards (see
/// [`Database::create`](super::postgres::Database::create) for a server that is not there).
pub async fn on_postgres(
    python: PathBuf,
    scenario: impl AsyncFnOnce(&Django, &str, &herald_test_support::RedisServer),
) {
    let Some(db) = super::postgres::Database::create().await else {
        return;
    };
    let redis = herald_test_support::RedisServer::start();
    let django = Django::new(python, &db.url(), &redis.url());
    scenario(&django, &db.url(), &redis).await;
    db.drop().await;
}

/// A test site without herald: its Redis and the Django project on SQLite with one logged-in
/// user.
#[derive(Debug)]
pub struct SiteDb {
    pub redis: herald_test_support::RedisServer,
    pub db_url: String,
    pub django: Django,
    pub fixture: Fixture,
    _dir: tempfile::TempDir,
}

impl SiteDb {
    /// Starts it with `username` logged in.
    pub async fn start(python: PathBuf, username: &str) -> SiteDb {
        let redis = herald_test_support::RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
        let django = Django::new(python, &db_url, &redis.url());
        let fixture = django.fixture(&["--username", username]).await;
        SiteDb {
            redis,
            db_url,
            django,
            fixture,
            _dir: dir,
        }
    }
}

/// A [`SiteDb`] with `herald serve` reading its sessions.
#[derive(Debug)]
pub struct Site {
    pub db: SiteDb,
    pub herald: super::Herald,
}

impl Site {
    /// Starts it all with `username` logged in.
    pub async fn start(python: PathBuf, username: &str) -> Site {
        let db = SiteDb::start(python, username).await;
        let herald = super::Herald::start(&[
            "--redis",
            &db.redis.url(),
            "--secret-key",
            SECRET,
            "--django-db",
            &db.db_url,
        ])
        .await;
        Site { db, herald }
    }
}
