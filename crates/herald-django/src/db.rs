//! Reading `django_session` and the user table, on PostgreSQL (tokio-postgres) or SQLite
//! (rusqlite, on the blocking pool). Read-only: we never write, so the session is never deleted
//! or re-keyed the way Channels/Django would on a failed check.
//!
//! Expiry follows `SessionStore._get_session_from_db`: a row counts only if
//! `expire_date > now`. Django (`USE_TZ = True`, the default since 5.0) stores UTC: a
//! `timestamptz` on PostgreSQL, compared with `now()`; text `YYYY-MM-DD HH:MM:SS[.ffffff]` on
//! SQLite, compared as text with the current UTC time in the same format, like Django's own query.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::config::{DatabaseUrl, DjangoAuthConfig, quote_identifier};
use crate::error::{Error, ErrorKind, Result};
use crate::user::UserRow;

/// Session keys (or user ids) per query of a batched re-validation on PostgreSQL: the keys go
/// in one array parameter, so only the statement's run time bounds a batch.
pub(crate) const POSTGRES_BATCH: usize = 5000;
/// The same on SQLite, one `?` per key: below the 999 variables old SQLite builds allow.
pub(crate) const SQLITE_BATCH: usize = 500;

/// The SQL both engines run, built once from validated identifiers.
#[derive(Debug, Clone)]
struct Queries {
    session: String,
    user: String,
    /// PostgreSQL: every unexpired row among `$1` (an array). SQLite: the text before the
    /// `IN (...)` list, completed per batch by [`Queries::sqlite_in`].
    sessions: String,
    /// As `sessions`, for users; the first column is the primary key as text.
    users: String,
    has_is_active: bool,
}

impl Queries {
    fn new(config: &DjangoAuthConfig, postgres: bool) -> Self {
        let (p1, p2) = if postgres {
            ("$1", "now()")
        } else {
            ("?1", "?2")
        };
        let session = format!(
            "SELECT session_data FROM {} WHERE session_key = {p1} AND expire_date > {p2}",
            quote_identifier(&config.session_table)
        );
        let mut columns = vec![
            quote_identifier(&config.username_column),
            quote_identifier(&config.password_column),
        ];
        if let Some(active) = &config.is_active_column {
            columns.push(quote_identifier(active));
        }
        let user = format!(
            "SELECT {} FROM {} WHERE {} = {p1}",
            columns.join(", "),
            quote_identifier(&config.user_table),
            quote_identifier(&config.user_id_column)
        );
        let table = quote_identifier(&config.session_table);
        let id = quote_identifier(&config.user_id_column);
        let (sessions, users) = if postgres {
            (
                format!(
                    "SELECT session_key, session_data FROM {table} \
                     WHERE session_key = ANY($1) AND expire_date > now()"
                ),
                format!(
                    "SELECT {id}::text, {} FROM {} WHERE {id} = ANY($1)",
                    columns.join(", "),
                    quote_identifier(&config.user_table),
                ),
            )
        } else {
            (
                // ?1 is the time; the keys are ?2, ?3, ...
                format!(
                    "SELECT session_key, session_data FROM {table} \
                     WHERE expire_date > ?1 AND session_key IN "
                ),
                format!(
                    "SELECT CAST({id} AS TEXT), {} FROM {} WHERE {id} IN ",
                    columns.join(", "),
                    quote_identifier(&config.user_table),
                ),
            )
        };
        Queries {
            session,
            user,
            sessions,
            users,
            has_is_active: config.is_active_column.is_some(),
        }
    }

    /// `prefix` completed with `(?first, ..., ?first+n-1)`.
    fn sqlite_in(prefix: &str, first: usize, n: usize) -> String {
        let mut sql = String::with_capacity(prefix.len() + 6 * n + 2);
        sql.push_str(prefix);
        sql.push('(');
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&(first + i).to_string());
        }
        sql.push(')');
        sql
    }
}

/// A PostgreSQL array literal (`{"a","b"}`) of `items`, sent as text so the server reads it as
/// an array of whatever the column's type is, like [`AsText`] for one value.
fn pg_array_literal(items: &[&str]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 3).sum::<usize>() + 2);
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The session/user database.
#[derive(Debug)]
pub(crate) enum Database {
    Postgres(Box<Postgres>),
    Sqlite(Sqlite),
}

impl Database {
    /// # Errors
    /// [`ErrorKind::Config`] when the TLS roots of a PostgreSQL URL cannot be read.
    pub(crate) fn new(url: DatabaseUrl, config: &DjangoAuthConfig) -> Result<Self> {
        Ok(match url {
            DatabaseUrl::Postgres(pg, tls) => Database::Postgres(Box::new(Postgres {
                config: *pg,
                tls: tls.connector()?,
                queries: Queries::new(config, true),
                timeout: config.database_timeout,
                conn: tokio::sync::Mutex::new(None),
            })),
            DatabaseUrl::Sqlite(path) => Database::Sqlite(Sqlite {
                path,
                queries: Queries::new(config, false),
                timeout: config.database_timeout,
                conn: Arc::new(Mutex::new(None)),
            }),
        })
    }

    /// `session_data` of an unexpired row, or `None`.
    pub(crate) async fn session_data(&self, session_key: &str) -> Result<Option<String>> {
        match self {
            Database::Postgres(pg) => pg.session_data(session_key).await,
            Database::Sqlite(sq) => sq.session_data(session_key).await,
        }
    }

    /// The user with primary key `user_id`, or `None` (also for an id that is not even of the
    /// key's type, where Django's `pk.to_python` would have failed).
    pub(crate) async fn user(&self, user_id: &str) -> Result<Option<UserRow>> {
        match self {
            Database::Postgres(pg) => pg.user(user_id).await,
            Database::Sqlite(sq) => sq.user(user_id).await,
        }
    }

    /// `session_data` of every unexpired row among `keys`, by key: one query per
    /// [`POSTGRES_BATCH`] / [`SQLITE_BATCH`] keys.
    pub(crate) async fn sessions_data(&self, keys: &[&str]) -> Result<HashMap<String, String>> {
        let mut found = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(self.batch_size()) {
            found.extend(match self {
                Database::Postgres(pg) => pg.sessions_data(batch).await?,
                Database::Sqlite(sq) => sq.sessions_data(batch).await?,
            });
        }
        Ok(found)
    }

    /// The users among `ids`, by primary key as text. An id the batch did not find (deleted, or
    /// spelt differently from the database's text form) is absent: callers look it up on its
    /// own with [`Database::user`], as the handshake did.
    pub(crate) async fn users(&self, ids: &[&str]) -> Result<HashMap<String, UserRow>> {
        let mut found = HashMap::with_capacity(ids.len());
        for batch in ids.chunks(self.batch_size()) {
            found.extend(match self {
                Database::Postgres(pg) => pg.users(batch).await?,
                Database::Sqlite(sq) => sq.users(batch).await?,
            });
        }
        Ok(found)
    }

    /// Keys per batched query: [`POSTGRES_BATCH`] or [`SQLITE_BATCH`] (the parameter limits).
    fn batch_size(&self) -> usize {
        match self {
            Database::Postgres(_) => POSTGRES_BATCH,
            Database::Sqlite(_) => SQLITE_BATCH,
        }
    }

    /// Connects (if needed) and runs a trivial query.
    pub(crate) async fn ping(&self) -> Result<()> {
        match self {
            Database::Postgres(pg) => {
                let conn = pg.client().await?;
                pg.bounded(conn.client.simple_query("SELECT 1")).await?;
                Ok(())
            }
            Database::Sqlite(sq) => sq.run(|conn, _| conn.execute_batch("SELECT 1")).await,
        }
    }
}

fn db_error(what: &str, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::with_source(ErrorKind::Database, what.to_owned(), err)
}

/// A string parameter sent in text format, so PostgreSQL parses it as whatever type the column
/// has (integer, bigint, uuid, varchar) — the user id arrives as a string from the session.
#[derive(Debug)]
struct AsText<'a>(&'a str);

impl ToSql for AsText<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One lazily (re)connected PostgreSQL client. tokio-postgres pipelines concurrent queries on
/// one connection, which is plenty for one lookup per handshake.
#[derive(Debug)]
pub(crate) struct Postgres {
    config: tokio_postgres::Config,
    /// `None` for `sslmode=disable`.
    tls: Option<crate::tls::Connector>,
    queries: Queries,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Arc<PgConn>>>,
}

/// A connection with its statements prepared once (one round trip per lookup afterwards).
#[derive(Debug)]
struct PgConn {
    client: tokio_postgres::Client,
    session: tokio_postgres::Statement,
    user: tokio_postgres::Statement,
    sessions: tokio_postgres::Statement,
    users: tokio_postgres::Statement,
}

impl Postgres {
    async fn bounded<T, E>(&self, fut: impl Future<Output = std::result::Result<T, E>>) -> Result<T>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(|e| db_error("postgres", e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "postgres did not answer in time",
            )),
        }
    }

    async fn client(&self) -> Result<Arc<PgConn>> {
        // Held across the connect on purpose: after a disconnect, concurrent handshakes wait for
        // one reconnect instead of each opening a connection. Cancel-safe: dropping the future
        // drops the half-made connection and leaves `None`.
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.client.is_closed()
        {
            return Ok(conn.clone());
        }
        let client = match &self.tls {
            None => self.connect(tokio_postgres::NoTls).await?,
            Some(tls) => self.connect(tls.make.clone()).await?,
        };
        let session = self.bounded(client.prepare(&self.queries.session)).await?;
        let user = self.bounded(client.prepare(&self.queries.user)).await?;
        let sessions = self.bounded(client.prepare(&self.queries.sessions)).await?;
        let users = self.bounded(client.prepare(&self.queries.users)).await?;
        let conn = Arc::new(PgConn {
            client,
            session,
            user,
            sessions,
            users,
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Connects and spawns the connection's task.
    async fn connect<T>(&self, tls: T) -> Result<tokio_postgres::Client>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
        T::Stream: Send + 'static,
    {
        let (client, connection) = self.bounded(self.config.connect(tls)).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "postgres connection for django auth closed");
            }
        });
        Ok(client)
    }

    async fn session_data(&self, key: &str) -> Result<Option<String>> {
        let conn = self.client().await?;
        let row = self
            .bounded(conn.client.query_opt(&conn.session, &[&AsText(key)]))
            .await?;
        row.map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| db_error("django_session.session_data is not text", e))
    }

    async fn sessions_data(&self, keys: &[&str]) -> Result<Vec<(String, String)>> {
        let conn = self.client().await?;
        let keys = pg_array_literal(keys);
        let rows = self
            .bounded(conn.client.query(&conn.sessions, &[&AsText(&keys)]))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(|e| db_error("django_session columns are not text", e))
    }

    async fn users(&self, ids: &[&str]) -> Result<Vec<(String, UserRow)>> {
        let conn = self.client().await?;
        let literal = pg_array_literal(ids);
        let ids = AsText(&literal);
        let params: [&(dyn ToSql + Sync); 1] = [&ids];
        let fut = conn.client.query(&conn.users, &params);
        let rows = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "postgres did not answer in time",
                ));
            }
            Ok(Err(err)) if not_of_key_type(&err) => {
                // An id that is not of the key's type spoils the whole array: the batch finds
                // nobody and each id is looked up on its own (see `Database::users`).
                return Ok(Vec::new());
            }
            Ok(result) => result.map_err(|e| db_error("postgres users query", e))?,
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row
                .try_get(0)
                .map_err(|e| db_error("unexpected user column type", e))?;
            out.push((id, self.user_row(&row, 1)?));
        }
        Ok(out)
    }

    /// The user columns of `row` from column `first` on: username, password, `is_active` when
    /// the table has it.
    fn user_row(&self, row: &tokio_postgres::Row, first: usize) -> Result<UserRow> {
        let bad = |e| db_error("unexpected user column type", e);
        Ok(UserRow {
            username: row.try_get(first).map_err(bad)?,
            password: row.try_get(first + 1).map_err(bad)?,
            is_active: if self.queries.has_is_active {
                Some(row.try_get(first + 2).map_err(bad)?)
            } else {
                None
            },
        })
    }

    async fn user(&self, user_id: &str) -> Result<Option<UserRow>> {
        let conn = self.client().await?;
        let id = AsText(user_id);
        let params: [&(dyn ToSql + Sync); 1] = [&id];
        let fut = conn.client.query_opt(&conn.user, &params);
        let row = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "postgres did not answer in time",
                ));
            }
            Ok(Err(err)) if not_of_key_type(&err) => {
                // "abc" for an integer key: no such user.
                return Ok(None);
            }
            Ok(result) => result.map_err(|e| db_error("postgres user query", e))?,
        };
        row.map(|row| self.user_row(&row, 0)).transpose()
    }
}

/// A user id PostgreSQL could not read as the key's type ("abc" for an integer key).
fn not_of_key_type(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION) | Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE)
    )
}

/// The page cache of herald's SQLite connection, in KiB.
const SQLITE_CACHE_KIB: i64 = 256;

/// One lazily opened read-only SQLite connection, used from the blocking pool.
#[derive(Debug)]
pub(crate) struct Sqlite {
    path: PathBuf,
    queries: Queries,
    timeout: Duration,
    conn: Arc<Mutex<Option<rusqlite::Connection>>>,
}

impl Sqlite {
    /// Runs `f` on the connection in `spawn_blocking`, opening it first if needed.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, &Queries) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let queries = self.queries.clone();
        let busy = self.timeout;
        let task = tokio::task::spawn_blocking(move || {
            // A std mutex on the blocking pool: never held across an await.
            let mut slot = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.is_none() {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let opened = rusqlite::Connection::open_with_flags(&path, flags)?;
                opened.busy_timeout(busy)?;
                // SQLite's default page cache is 2 MiB; herald reads a few rows per
                // handshake and per re-validation batch, by key, and the file is in the
                // kernel's cache anyway.
                opened.pragma_update(None, "cache_size", SQLITE_CACHE_KIB.wrapping_neg())?;
                *slot = Some(opened);
            }
            let result = match slot.as_ref() {
                Some(c) => f(c, &queries),
                None => unreachable!("connection opened above"),
            };
            if result.is_err() {
                // Reopen next time: the file may have been replaced or repaired.
                *slot = None;
            }
            result
        });
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "sqlite did not answer in time",
            )),
            Ok(Err(join)) => Err(db_error("sqlite task failed", join)),
            Ok(Ok(result)) => result.map_err(|e| db_error("sqlite", e)),
        }
    }

    async fn session_data(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        // Django's SQLite backend stores naive UTC as `str(datetime)`; compare the same text.
        let now = chrono::Utc::now()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string();
        self.run(move |conn, q| {
            use rusqlite::OptionalExtension as _;
            conn.prepare_cached(&q.session)?
                .query_row(rusqlite::params![key, now], |row| row.get::<_, String>(0))
                .optional()
        })
        .await
    }

    async fn sessions_data(&self, keys: &[&str]) -> Result<Vec<(String, String)>> {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let now = chrono::Utc::now()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string();
        self.run(move |conn, q| {
            let sql = Queries::sqlite_in(&q.sessions, 2, keys.len());
            let mut stmt = conn.prepare_cached(&sql)?;
            let params = std::iter::once(&now).chain(keys.iter());
            let rows = stmt.query_map(rusqlite::params_from_iter(params), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn users(&self, ids: &[&str]) -> Result<Vec<(String, UserRow)>> {
        let ids: Vec<String> = ids.iter().map(|k| (*k).to_owned()).collect();
        self.run(move |conn, q| {
            let has_is_active = q.has_is_active;
            let sql = Queries::sqlite_in(&q.users, 1, ids.len());
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(ids.iter()), |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    UserRow {
                        username: row.get(1)?,
                        password: row.get(2)?,
                        is_active: if has_is_active {
                            Some(row.get::<_, bool>(3)?)
                        } else {
                            None
                        },
                    },
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn user(&self, user_id: &str) -> Result<Option<UserRow>> {
        let user_id = user_id.to_owned();
        self.run(move |conn, q| {
            use rusqlite::OptionalExtension as _;
            let has_is_active = q.has_is_active;
            // SQLite's column affinity turns the text "1" into the integer 1 for an INTEGER key.
            conn.prepare_cached(&q.user)?
                .query_row(rusqlite::params![user_id], |row| {
                    Ok(UserRow {
                        username: row.get(0)?,
                        password: row.get(1)?,
                        is_active: if has_is_active {
                            Some(row.get::<_, bool>(2)?)
                        } else {
                            None
                        },
                    })
                })
                .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_quote_configured_identifiers() {
        let config = DjangoAuthConfig::default()
            .with_user_table("accounts.member")
            .with_is_active_column(None);
        let pg = Queries::new(&config, true);
        assert_eq!(
            pg.user,
            "SELECT \"username\", \"password\" FROM \"accounts\".\"member\" WHERE \"id\" = $1"
        );
        assert!(
            pg.session
                .ends_with("session_key = $1 AND expire_date > now()")
        );
        let sq = Queries::new(&DjangoAuthConfig::default(), false);
        assert_eq!(
            sq.user,
            "SELECT \"username\", \"password\", \"is_active\" FROM \"auth_user\" WHERE \"id\" = ?1"
        );
        assert!(sq.session.ends_with("expire_date > ?2"));
        assert_eq!(
            Queries::sqlite_in(&sq.users, 1, 3),
            "SELECT CAST(\"id\" AS TEXT), \"username\", \"password\", \"is_active\" FROM \"auth_user\" \
             WHERE \"id\" IN (?1, ?2, ?3)"
        );
        assert!(
            Queries::new(&DjangoAuthConfig::default(), true)
                .users
                .ends_with("WHERE \"id\" = ANY($1)")
        );
    }

    #[test]
    fn array_literals_quote_every_element() {
        assert_eq!(pg_array_literal(&[]), "{}");
        assert_eq!(pg_array_literal(&["1", "2"]), r#"{"1","2"}"#);
        assert_eq!(
            pg_array_literal(&[r#"a"b\c"#, "{,}"]),
            r#"{"a\"b\\c","{,}"}"#
        );
    }
}
