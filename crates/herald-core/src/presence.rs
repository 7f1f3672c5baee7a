//! Presence: which users have live sockets, and how many.
//!
//! Each server instance records every live connection with a time-to-live and refreshes the
//! records well before they lapse; a crashed instance stops refreshing, so its users go offline
//! by themselves when the TTL runs out — no ghosts, no cleanup job. The Redis implementation
//! (in `herald-redis`) keeps the records where every herald instance and Python can read them;
//! [`InMemoryPresence`] serves a single process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::Result;

/// How long a presence record lives unless refreshed.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);

/// A store of live connections per user.
#[async_trait]
pub trait Presence: Send + Sync + std::fmt::Debug + 'static {
    /// Records (or refreshes) each `(username, connection)` as live for `ttl`.
    async fn touch(&self, entries: &[(String, String)], ttl: Duration) -> Result<()>;

    /// Forgets one connection (its socket closed cleanly).
    async fn remove(&self, username: &str, connection: &str) -> Result<()>;

    /// How many live connections `username` has (0 = offline).
    async fn connections(&self, username: &str) -> Result<usize>;

    /// The live connections of `username` (their channel names), sorted.
    async fn connection_names(&self, username: &str) -> Result<Vec<String>>;

    /// Every user with at least one live connection, sorted.
    async fn online_users(&self) -> Result<Vec<String>>;
}

/// Presence for one process.
#[derive(Debug, Default)]
pub struct InMemoryPresence {
    users: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl InMemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryPresence::default()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Instant>>> {
        crate::sync::lock(&self.users)
    }
}

#[async_trait]
impl Presence for InMemoryPresence {
    async fn touch(&self, entries: &[(String, String)], ttl: Duration) -> Result<()> {
        let until = Instant::now() + ttl;
        let mut users = self.users();
        for (user, conn) in entries {
            users
                .entry(user.clone())
                .or_default()
                .insert(conn.clone(), until);
        }
        Ok(())
    }

    async fn remove(&self, username: &str, connection: &str) -> Result<()> {
        let mut users = self.users();
        if let Some(conns) = users.get_mut(username) {
            conns.remove(connection);
            if conns.is_empty() {
                users.remove(username);
            }
        }
        Ok(())
    }

    async fn connections(&self, username: &str) -> Result<usize> {
        let now = Instant::now();
        Ok(self
            .users()
            .get(username)
            .map_or(0, |c| c.values().filter(|t| **t > now).count()))
    }

    async fn connection_names(&self, username: &str) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut names: Vec<String> = self.users().get(username).map_or_else(Vec::new, |c| {
            c.iter()
                .filter(|(_, t)| **t > now)
                .map(|(name, _)| name.clone())
                .collect()
        });
        names.sort();
        Ok(names)
    }

    async fn online_users(&self) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut users = self.users();
        users.retain(|_, conns| {
            conns.retain(|_, t| *t > now);
            !conns.is_empty()
        });
        let mut names: Vec<String> = users.keys().cloned().collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(u: &str, c: &str) -> (String, String) {
        (u.to_owned(), c.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn records_lapse_without_refresh() {
        let p = InMemoryPresence::new();
        p.touch(
            &[entry("a", "c1"), entry("a", "c2"), entry("b", "c3")],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(p.connections("a").await.unwrap(), 2);
        assert_eq!(p.connection_names("a").await.unwrap(), ["c1", "c2"]);
        assert_eq!(p.online_users().await.unwrap(), ["a", "b"]);
        tokio::time::advance(Duration::from_secs(5)).await;
        p.touch(&[entry("b", "c3")], Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(p.connections("a").await.unwrap(), 0);
        assert_eq!(p.online_users().await.unwrap(), ["b"]);
    }

    #[tokio::test]
    async fn remove_takes_one_connection_offline() {
        let p = InMemoryPresence::new();
        p.touch(&[entry("a", "c1"), entry("a", "c2")], DEFAULT_PRESENCE_TTL)
            .await
            .unwrap();
        p.remove("a", "c1").await.unwrap();
        assert_eq!(p.connections("a").await.unwrap(), 1);
        p.remove("a", "c2").await.unwrap();
        assert!(p.online_users().await.unwrap().is_empty());
    }
}
