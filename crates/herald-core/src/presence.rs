//! Presence: which users have live sockets, and how many.
//!
//! Each server instance records every live connection with a time-to-live and refreshes the
//! records well before they lapse; a crashed instance stops refreshing, so its users go offline
//! by themselves when the TTL runs out — no ghosts, no cleanup job. The Redis implementation
//! (in `herald-redis`) keeps the records where every herald instance and Python can read them;
//! [`InMemoryPresence`] serves a single process.
//!
//! A record may carry details ([`ConnectionInfo`]: the instance holding the socket, the client
//! address, when it connected, its groups), written when the socket opens and when its groups
//! change, never on the periodic refresh.
//!
//! **Announcements.** The `*_announcing` methods and [`Presence::take_offline`] keep fleet-wide
//! online/offline state next to the records: a user is *announced online* by the first live
//! connection anywhere, and *announced offline* once no live connection is left and the last
//! one closed at least a debounce interval ago (or lapsed, for a crashed instance). Each
//! transition is handed to exactly one caller, whichever instance makes it, so a fleet fires one
//! webhook per event. Every instance sharing a store must then use the announcing methods.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use crate::error::Result;

/// How long a presence record lives unless refreshed.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);

/// The current Unix time in seconds, as Python's `time.time()`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What presence records about one live connection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The user the socket belongs to.
    pub user: String,
    /// The socket's channel name (what `group_send` and `send` reach it by).
    pub connection: String,
    /// The server instance holding the socket (empty if unknown).
    pub instance: String,
    /// The client's address as the server saw it (after trusted proxies), if known.
    pub address: Option<String>,
    /// When the socket was accepted, in Unix seconds (0 if unknown).
    pub since: f64,
    /// The groups the socket belongs to, in join order.
    pub groups: Vec<String>,
}

impl ConnectionInfo {
    /// A connection of `user` with no details yet.
    pub fn new(user: impl Into<String>, connection: impl Into<String>) -> Self {
        ConnectionInfo {
            user: user.into(),
            connection: connection.into(),
            instance: String::new(),
            address: None,
            since: 0.0,
            groups: Vec::new(),
        }
    }

    /// Sets the instance holding the socket.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// Sets the client address.
    pub fn with_address(mut self, address: Option<String>) -> Self {
        self.address = address;
        self
    }

    /// Sets when the socket was accepted (Unix seconds).
    pub fn with_since(mut self, since: f64) -> Self {
        self.since = since;
        self
    }

    /// Sets the socket's groups.
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }

    /// The details as stored next to the record: a JSON object with `instance`, `address`,
    /// `since` and `groups` (user and connection are the record's own keys).
    pub fn details_json(&self) -> String {
        crate::pyjson::dumps_serde(&json!({
            "instance": self.instance,
            "address": self.address,
            "since": self.since,
            "groups": self.groups,
        }))
    }

    /// Reads details written by [`details_json`](Self::details_json); what is missing or
    /// malformed stays unknown (a record written by an older herald has no details).
    pub fn from_details(user: &str, connection: &str, details: Option<&str>) -> Self {
        let mut info = ConnectionInfo::new(user, connection);
        let Some(Ok(Json::Object(d))) = details.map(serde_json::from_str::<Json>) else {
            return info;
        };
        info.instance = d
            .get("instance")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        info.address = d.get("address").and_then(Json::as_str).map(str::to_owned);
        info.since = d.get("since").and_then(Json::as_f64).unwrap_or(0.0);
        info.groups = d
            .get("groups")
            .and_then(Json::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        info
    }

    /// The JSON object `GET /api/connections?user=U` and `herald connections U --json` list.
    pub fn to_json(&self) -> Json {
        json!({
            "connection": self.connection,
            "instance": self.instance,
            "address": self.address,
            "since": self.since,
            "groups": self.groups,
        })
    }
}

/// The connections report shared by `GET /api/connections` and `herald connections`: with a
/// user, that user's connections; without, the number of sockets and users per instance.
///
/// # Errors
/// What the store's [`connection_infos`](Presence::connection_infos) returns.
pub async fn connections_report(store: &dyn Presence, user: Option<&str>) -> Result<Json> {
    let infos = store.connection_infos(user).await?;
    if let Some(user) = user {
        let list: Vec<Json> = infos.iter().map(ConnectionInfo::to_json).collect();
        return Ok(json!({"user": user, "count": list.len(), "connections": list}));
    }
    // instance → (sockets, distinct users); the infos come sorted by user.
    let mut per: std::collections::BTreeMap<&str, (usize, Vec<&str>)> = Default::default();
    for info in &infos {
        let entry = per.entry(info.instance.as_str()).or_default();
        entry.0 += 1;
        if entry.1.last() != Some(&info.user.as_str()) {
            entry.1.push(info.user.as_str());
        }
    }
    let mut users: Vec<&str> = infos.iter().map(|i| i.user.as_str()).collect();
    users.dedup();
    let instances: Vec<Json> = per
        .into_iter()
        .map(|(instance, (sockets, users))| {
            json!({"instance": instance, "sockets": sockets, "users": users.len()})
        })
        .collect();
    Ok(json!({"sockets": infos.len(), "users": users.len(), "instances": instances}))
}

/// A store of live connections per user.
#[async_trait]
pub trait Presence: Send + Sync + std::fmt::Debug + 'static {
    /// Records (or refreshes) each `(username, connection)` as live for `ttl`. Borrowed pairs:
    /// a refresh of every socket of a server must not copy every name first.
    async fn touch(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<()>;

    /// Forgets one connection (its socket closed cleanly).
    async fn remove(&self, username: &str, connection: &str) -> Result<()>;

    /// How many live connections `username` has (0 = offline).
    async fn connections(&self, username: &str) -> Result<usize>;

    /// The live connections of `username` (their channel names), sorted.
    async fn connection_names(&self, username: &str) -> Result<Vec<String>>;

    /// Every user with at least one live connection, sorted.
    async fn online_users(&self) -> Result<Vec<String>>;

    /// Records each connection as live for `ttl`, like [`touch`](Self::touch), and replaces its
    /// details. With `announce`, also does what [`touch_announcing`](Self::touch_announcing)
    /// does and returns the users it announced online.
    async fn record(
        &self,
        infos: &[ConnectionInfo],
        ttl: Duration,
        announce: bool,
    ) -> Result<Vec<String>>;

    /// [`touch`](Self::touch), and announces online every user of `entries` not announced yet:
    /// returns those users. Each announcement is returned to one caller only, fleet-wide.
    async fn touch_announcing(
        &self,
        entries: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Vec<String>>;

    /// [`remove`](Self::remove); if that left the user no live connection, their offline
    /// announcement falls due after `debounce` (unless a connection comes back before).
    async fn remove_announcing(
        &self,
        username: &str,
        connection: &str,
        debounce: Duration,
    ) -> Result<()>;

    /// The announced users whose offline fell due (last connection closed `debounce` ago, or
    /// every record lapsed) and who still have no live connection; they stop being announced.
    /// Each is returned to one caller only, fleet-wide.
    async fn take_offline(&self) -> Result<Vec<String>>;

    /// The live connections with their details: `username`'s, or everyone's; sorted by user,
    /// then connection.
    async fn connection_infos(&self, username: Option<&str>) -> Result<Vec<ConnectionInfo>>;
}

/// One live connection in [`InMemoryPresence`].
#[derive(Debug)]
struct Record {
    until: Instant,
    info: Option<ConnectionInfo>,
}

#[derive(Debug, Default)]
struct State {
    /// user → connection → record.
    users: HashMap<String, HashMap<String, Record>>,
    /// Announced users → when their offline may fall due (see the module docs).
    announced: HashMap<String, Instant>,
}

impl State {
    /// The user's live connections after dropping the lapsed ones.
    fn live(&mut self, user: &str, now: Instant) -> usize {
        let Some(conns) = self.users.get_mut(user) else {
            return 0;
        };
        conns.retain(|_, r| r.until > now);
        let n = conns.len();
        if n == 0 {
            self.users.remove(user);
        }
        n
    }

    fn announce(&mut self, user: &str, until: Instant, online: &mut Vec<String>) {
        match self.announced.get_mut(user) {
            Some(due) => *due = (*due).max(until),
            None => {
                self.announced.insert(user.to_owned(), until);
                online.push(user.to_owned());
            }
        }
    }

    fn touch(&mut self, user: &str, conn: &str, until: Instant) {
        self.users
            .entry(user.to_owned())
            .or_default()
            .entry(conn.to_owned())
            .and_modify(|r| r.until = until)
            .or_insert(Record { until, info: None });
    }
}

/// Presence for one process.
#[derive(Debug, Default)]
pub struct InMemoryPresence {
    state: Mutex<State>,
}

impl InMemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryPresence::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    fn touch_all(&self, entries: &[(&str, &str)], ttl: Duration, announce: bool) -> Vec<String> {
        let until = Instant::now() + ttl;
        let mut state = self.state();
        let mut online = Vec::new();
        for (user, conn) in entries {
            state.touch(user, conn, until);
            if announce {
                state.announce(user, until, &mut online);
            }
        }
        online
    }

    fn remove_conn(&self, username: &str, connection: &str, debounce: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(conns) = state.users.get_mut(username) {
            conns.remove(connection);
        }
        if state.live(username, now) == 0
            && let Some(debounce) = debounce
            && let Some(due) = state.announced.get_mut(username)
        {
            *due = now + debounce;
        }
    }
}

#[async_trait]
impl Presence for InMemoryPresence {
    async fn touch(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<()> {
        self.touch_all(entries, ttl, false);
        Ok(())
    }

    async fn remove(&self, username: &str, connection: &str) -> Result<()> {
        self.remove_conn(username, connection, None);
        Ok(())
    }

    async fn connections(&self, username: &str) -> Result<usize> {
        Ok(self.state().live(username, Instant::now()))
    }

    async fn connection_names(&self, username: &str) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut state = self.state();
        state.live(username, now);
        let mut names: Vec<String> = state
            .users
            .get(username)
            .map_or_else(Vec::new, |c| c.keys().cloned().collect());
        names.sort();
        Ok(names)
    }

    async fn online_users(&self) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut state = self.state();
        state.users.retain(|_, conns| {
            conns.retain(|_, r| r.until > now);
            !conns.is_empty()
        });
        let mut names: Vec<String> = state.users.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    async fn record(
        &self,
        infos: &[ConnectionInfo],
        ttl: Duration,
        announce: bool,
    ) -> Result<Vec<String>> {
        let until = Instant::now() + ttl;
        let mut state = self.state();
        let mut online = Vec::new();
        for info in infos {
            state.users.entry(info.user.clone()).or_default().insert(
                info.connection.clone(),
                Record {
                    until,
                    info: Some(info.clone()),
                },
            );
            if announce {
                state.announce(&info.user, until, &mut online);
            }
        }
        Ok(online)
    }

    async fn touch_announcing(
        &self,
        entries: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Vec<String>> {
        Ok(self.touch_all(entries, ttl, true))
    }

    async fn remove_announcing(
        &self,
        username: &str,
        connection: &str,
        debounce: Duration,
    ) -> Result<()> {
        self.remove_conn(username, connection, Some(debounce));
        Ok(())
    }

    async fn take_offline(&self) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut state = self.state();
        let due: Vec<String> = state
            .announced
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(user, _)| user.clone())
            .collect();
        let mut offline = Vec::new();
        for user in due {
            if state.live(&user, now) == 0 {
                state.announced.remove(&user);
                offline.push(user);
            } else if let Some(latest) = state.users[&user].values().map(|r| r.until).max() {
                // Back within the debounce: look again when its newest record would lapse.
                state.announced.insert(user, latest);
            }
        }
        offline.sort();
        Ok(offline)
    }

    async fn connection_infos(&self, username: Option<&str>) -> Result<Vec<ConnectionInfo>> {
        let now = Instant::now();
        let state = self.state();
        let mut infos: Vec<ConnectionInfo> = state
            .users
            .iter()
            .filter(|(user, _)| username.is_none_or(|u| u == user.as_str()))
            .flat_map(|(user, conns)| {
                conns
                    .iter()
                    .filter(|(_, r)| r.until > now)
                    .map(|(conn, r)| {
                        r.info
                            .clone()
                            .unwrap_or_else(|| ConnectionInfo::new(user.as_str(), conn.as_str()))
                    })
            })
            .collect();
        infos.sort_by(|a, b| (&a.user, &a.connection).cmp(&(&b.user, &b.connection)));
        Ok(infos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(u: &'a str, c: &'a str) -> (&'a str, &'a str) {
        (u, c)
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

    #[tokio::test(start_paused = true)]
    async fn announcements_debounce_a_reload_and_follow_lapses() {
        let p = InMemoryPresence::new();
        let ttl = Duration::from_secs(30);
        let debounce = Duration::from_secs(3);
        assert_eq!(
            p.touch_announcing(&[entry("a", "c1")], ttl).await.unwrap(),
            ["a"]
        );
        assert!(
            p.touch_announcing(&[entry("a", "c2")], ttl)
                .await
                .unwrap()
                .is_empty()
        );
        // One of two closes: still online.
        p.remove_announcing("a", "c1", debounce).await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(p.take_offline().await.unwrap().is_empty());
        // A reload: closed, back within the debounce, nothing announced.
        p.remove_announcing("a", "c2", debounce).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let info = ConnectionInfo::new("a", "c3").with_instance("i1");
        assert!(p.record(&[info], ttl, true).await.unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(p.take_offline().await.unwrap().is_empty());
        // Closed for good: offline once, after the debounce.
        p.remove_announcing("a", "c3", debounce).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(p.take_offline().await.unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(p.take_offline().await.unwrap(), ["a"]);
        assert!(p.take_offline().await.unwrap().is_empty());
        // A crashed instance: the record lapses, and that counts as closed.
        assert_eq!(
            p.touch_announcing(&[entry("b", "c9")], ttl).await.unwrap(),
            ["b"]
        );
        tokio::time::advance(ttl + Duration::from_secs(1)).await;
        assert_eq!(p.take_offline().await.unwrap(), ["b"]);
    }

    #[tokio::test]
    async fn details_round_trip_and_report_counts_per_instance() {
        let p = InMemoryPresence::new();
        let info = |u: &str, c: &str, i: &str| {
            ConnectionInfo::new(u, c)
                .with_instance(i)
                .with_address(Some("127.0.0.1:5".into()))
                .with_since(1.5)
                .with_groups(vec![format!("user_{u}")])
        };
        let infos = [
            info("a", "c1", "one"),
            info("a", "c2", "two"),
            info("b", "c3", "two"),
        ];
        p.record(&infos, DEFAULT_PRESENCE_TTL, false).await.unwrap();
        let back = ConnectionInfo::from_details("a", "c1", Some(&infos[0].details_json()));
        assert_eq!(back, infos[0]);
        assert_eq!(
            ConnectionInfo::from_details("a", "c1", Some("garbage")),
            ConnectionInfo::new("a", "c1")
        );
        let report = connections_report(&p, Some("a")).await.unwrap();
        assert_eq!(report["count"], 2);
        assert_eq!(report["connections"][1]["instance"], "two");
        assert_eq!(report["connections"][0]["groups"][0], "user_a");
        let report = connections_report(&p, None).await.unwrap();
        assert_eq!(
            report,
            json!({"sockets": 3, "users": 2, "instances": [
                {"instance": "one", "sockets": 1, "users": 1},
                {"instance": "two", "sockets": 2, "users": 2},
            ]})
        );
    }
}
