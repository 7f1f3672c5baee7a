//! A uniquely named PostgreSQL database on the local server (127.0.0.1:5432, user postgres).

use std::time::Duration;

const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5";
const TIMEOUT: Duration = Duration::from_secs(30);

/// A database created for one test; call [`Database::drop`] at the end.
#[derive(Debug)]
pub struct Database {
    name: String,
}

impl Database {
    /// Creates the database. Without a reachable server: `None` after saying why, or a panic
    /// under `HERALD_REQUIRE_COMPAT=1`.
    pub async fn create() -> Option<Database> {
        let client = match admin().await {
            Ok(c) => c,
            Err(why) => {
                let msg = format!(
                    "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is unreachable: {why}"
                );
                if std::env::var("HERALD_REQUIRE_COMPAT").as_deref() == Ok("1") {
                    panic!("{msg} (HERALD_REQUIRE_COMPAT=1)");
                }
                eprintln!("SKIPPING postgres test: {msg}");
                return None;
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("herald_cli_e2e_{}_{nanos}", std::process::id());
        tokio::time::timeout(
            TIMEOUT,
            client.batch_execute(&format!("CREATE DATABASE {name}")),
        )
        .await
        .unwrap()
        .unwrap();
        Some(Database { name })
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser connection to this database (for tests that change it behind Django's
    /// back, or make it refuse other connections).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let url = format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={} connect_timeout=5",
            self.name
        );
        let (client, connection) = tokio::time::timeout(
            TIMEOUT,
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await
        .unwrap()
        .unwrap();
        tokio::spawn(connection);
        client
    }

    /// Makes the database refuse new connections and cuts every open one but `keep_pid`'s
    /// (`allow = false`), or accept them again (`allow = true`): a database that is down for
    /// the server under test, while the test itself keeps its connection.
    pub async fn set_reachable(&self, allow: bool, keep_pid: i32) {
        let client = admin().await.unwrap();
        let name = &self.name;
        let mut sql = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow};");
        if !allow {
            sql.push_str(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> {keep_pid};"
            ));
        }
        tokio::time::timeout(TIMEOUT, client.batch_execute(&sql))
            .await
            .unwrap()
            .unwrap();
    }

    /// Drops the database (and any connection still on it).
    pub async fn drop(self) {
        let client = admin().await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        tokio::time::timeout(TIMEOUT, client.batch_execute(&sql))
            .await
            .unwrap()
            .unwrap();
    }
}

async fn admin() -> Result<tokio_postgres::Client, String> {
    let connected = tokio::time::timeout(
        TIMEOUT,
        tokio_postgres::connect(ADMIN_URL, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?;
    let (client, connection) = connected.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}
