//! The Django test project (`tests/compat/django_project`) run with the compat venv's Python:
//! the pieces both herald-django's and herald-cli's tests need. Each crate wraps
//! [`DjangoProject`] with its own secret key and fixture type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::workspace_root;

/// How long one `manage.py` run may take (`migrate` on PostgreSQL is the slowest).
pub const MANAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// Settings variables the project reads that a test must not inherit from the caller's
/// environment: a site's settings come from [`DjangoProject::with_env`] only.
const INHERITED_SETTINGS: [&str; 9] = [
    "SECRET_KEY_FALLBACKS",
    "SESSION_ENGINE",
    "SESSION_COOKIE_AGE",
    "AUTHENTICATION_BACKENDS",
    "REDIS_URL",
    "CHANNEL_LAYERS_PREFIX",
    "CHANNEL_LAYERS_SYMMETRIC_ENCRYPTION_KEYS",
    "TIME_ZONE",
    "USE_TZ",
];

/// `tests/compat/django_project`.
pub fn django_project_dir() -> PathBuf {
    workspace_root().join("tests/compat/django_project")
}

/// The test project with one set of settings (environment variables).
#[derive(Debug, Clone)]
pub struct DjangoProject {
    python: PathBuf,
    env: BTreeMap<String, String>,
}

impl DjangoProject {
    /// The project run by `python` (the compat venv's), with no settings yet.
    pub fn new(python: PathBuf) -> DjangoProject {
        DjangoProject {
            python,
            env: BTreeMap::new(),
        }
    }

    /// With one more setting.
    pub fn with_env(mut self, key: &str, value: &str) -> DjangoProject {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The settings, for other processes of the same site.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The venv's executable `name` (`daphne`, `celery`, ...).
    pub fn venv_program(&self, name: &str) -> PathBuf {
        self.python.with_file_name(name)
    }

    /// `program` in the project directory with the site's settings, killed on drop.
    pub fn program(&self, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.current_dir(django_project_dir());
        for key in INHERITED_SETTINGS {
            cmd.env_remove(key);
        }
        cmd.env("DJANGO_SETTINGS_MODULE", "herald_site.settings")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(&self.env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `python manage.py ARGS` in the project directory with the site's settings.
    pub fn manage_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.program(&self.python);
        cmd.arg("manage.py").args(args);
        cmd
    }

    /// Runs `manage.py ARGS` and returns stdout; panics with stderr if it fails or takes
    /// longer than [`MANAGE_TIMEOUT`].
    pub async fn manage(&self, args: &[&str]) -> String {
        let output = tokio::time::timeout(MANAGE_TIMEOUT, self.manage_command(args).output())
            .await
            .unwrap_or_else(|_| panic!("manage.py {args:?} timed out"))
            .unwrap();
        assert!(
            output.status.success(),
            "manage.py {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `herald_fixture ARGS` (a user logged in through `django.contrib.auth.login`): its JSON
    /// line, with `cookie`, `session_key`, `user_id` and `username`.
    pub async fn fixture_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["herald_fixture"];
        full.extend_from_slice(args);
        serde_json::from_str(self.manage(&full).await.trim()).unwrap()
    }
}
