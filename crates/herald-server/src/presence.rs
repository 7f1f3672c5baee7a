//! Presence for the server: every accepted socket with an identity is recorded in a
//! [`Presence`] store while it lives, refreshed in one batch every third of the TTL, and removed
//! when it closes. A server that dies stops refreshing; its records lapse after the TTL.
//!
//! Each record carries its details ([`ConnectionInfo`]: this instance's name, the client
//! address, since when, the groups), written when the socket opens; a change of groups marks
//! the socket and the background task writes every marked socket in one batch shortly after.
//! What a socket costs here is its entry in `live` (user, since, address).
//!
//! With [`PresenceEvents`] (the online/offline webhook) the store's announcing methods decide,
//! fleet-wide, who came online and who went offline, and the background task also sweeps the
//! due offline announcements, whether or not this instance holds sockets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use herald_core::presence::{ConnectionInfo, Presence, unix_now};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

/// A fleet-wide presence transition (see [`PresenceEvents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceChange {
    /// The user's first socket in the fleet opened.
    Online,
    /// The user's last socket in the fleet closed (and stayed closed for the debounce
    /// interval), or lapsed with a crashed instance.
    Offline,
}

impl PresenceChange {
    /// `"online"` or `"offline"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceChange::Online => "online",
            PresenceChange::Offline => "offline",
        }
    }
}

/// Receives fleet-wide online/offline transitions (see
/// [`AppBuilder::presence_events`](crate::AppBuilder::presence_events)). Each transition is
/// reported by exactly one instance of the fleet.
pub trait PresenceEvents: Send + Sync + std::fmt::Debug + 'static {
    /// `user` changed state at `at` (Unix seconds). Called on the server's tasks: it must not
    /// block (queue the work).
    fn changed(&self, user: &str, change: PresenceChange, at: f64);
}

/// How the server announces transitions.
#[derive(Debug)]
pub(crate) struct Announcer {
    pub(crate) events: Arc<dyn PresenceEvents>,
    /// How long a user's last socket must stay closed before "offline".
    pub(crate) debounce: Duration,
}

impl Announcer {
    fn fire(&self, users: &[String], change: PresenceChange) {
        let at = unix_now();
        for user in users {
            debug!(user = %user, change = change.as_str(), "presence change");
            self.events.changed(user, change, at);
        }
    }
}

/// One live socket.
#[derive(Debug)]
struct Live {
    username: Arc<str>,
    since: f64,
    address: Option<SocketAddr>,
}

/// The live sockets of this server, mirrored into a [`Presence`] store.
#[derive(Debug)]
pub(crate) struct PresenceRegistry {
    store: Arc<dyn Presence>,
    ttl: Duration,
    instance: String,
    announcer: Option<Announcer>,
    /// channel name → the socket.
    live: Mutex<HashMap<Arc<str>, Live>>,
    /// Sockets whose groups changed since the last write, with their groups.
    dirty: Mutex<HashMap<Arc<str>, Vec<String>>>,
    /// Wakes the background task to write `dirty`.
    wake: Arc<Notify>,
    started: AtomicBool,
}

impl PresenceRegistry {
    pub(crate) fn new(
        store: Arc<dyn Presence>,
        ttl: Duration,
        instance: String,
        announcer: Option<Announcer>,
    ) -> Arc<Self> {
        Arc::new(PresenceRegistry {
            store,
            ttl,
            instance,
            announcer,
            live: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
        })
    }

    /// The store presence is written to.
    pub(crate) fn store(&self) -> &Arc<dyn Presence> {
        &self.store
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Live>> {
        herald_core::sync::lock(&self.live)
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<String>>> {
        herald_core::sync::lock(&self.dirty)
    }

    /// Starts the background task (refresh, batched detail writes, offline sweep) once.
    pub(crate) fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(background(Arc::downgrade(self), Arc::clone(&self.wake)));
        }
    }

    /// True if online/offline transitions are announced (the sweep must run from the start).
    pub(crate) fn announces(&self) -> bool {
        self.announcer.is_some()
    }

    fn info(&self, channel: &str, live: &Live, groups: Vec<String>) -> ConnectionInfo {
        ConnectionInfo::new(&*live.username, channel)
            .with_instance(self.instance.as_str())
            .with_address(live.address.map(|a| a.to_string()))
            .with_since(live.since)
            .with_groups(groups)
    }

    /// Records an accepted socket; the returned guard removes it when dropped.
    pub(crate) fn open(
        self: &Arc<Self>,
        channel: Arc<str>,
        username: &str,
        address: Option<SocketAddr>,
        groups: &[String],
    ) -> PresenceGuard {
        let live = Live {
            username: Arc::from(username),
            since: unix_now(),
            address,
        };
        let info = self.info(&channel, &live, groups.to_vec());
        self.live().insert(Arc::clone(&channel), live);
        self.start();
        let registry = Arc::clone(self);
        let key = Arc::clone(&channel);
        // Written right away (not at the next refresh) so "is user online?" is true as soon as
        // the socket is accepted.
        tokio::spawn(async move {
            let announce = registry.announcer.is_some();
            let infos = [info];
            match registry.store.record(&infos, registry.ttl, announce).await {
                Ok(online) => {
                    if let Some(a) = &registry.announcer {
                        a.fire(&online, PresenceChange::Online);
                    }
                }
                Err(err) => warn!(error = %err, "presence record failed"),
            }
            // A socket that closed while this write was on its way: its removal may have run
            // first, and this write brought the record back. Remove it again.
            if !registry.live().contains_key(&key) {
                let debounce = registry.announcer.as_ref().map(|a| a.debounce);
                PresenceRegistry::remove(&registry.store, debounce, &infos[0].user, &key).await;
            }
        });
        PresenceGuard {
            registry: Arc::clone(self),
            channel,
            closed: false,
        }
    }

    /// A live socket's groups changed: written with the next batch (within
    /// [`DETAILS_DELAY`]).
    pub(crate) fn groups_changed(&self, channel: &str, groups: &[String]) {
        let Some(key) = self
            .live()
            .get_key_value(channel)
            .map(|(k, _)| Arc::clone(k))
        else {
            return;
        };
        self.dirty().insert(key, groups.to_vec());
        self.wake.notify_one();
    }

    /// The live sockets as (user, channel): one allocation, whatever their number (the names
    /// are shared, not copied).
    fn snapshot(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.live()
            .iter()
            .map(|(c, l)| (Arc::clone(&l.username), Arc::clone(c)))
            .collect()
    }

    /// Writes the details of every socket whose groups changed, in one batch.
    async fn write_dirty(&self) {
        let dirty = std::mem::take(&mut *self.dirty());
        if dirty.is_empty() {
            return;
        }
        let infos: Vec<ConnectionInfo> = {
            let live = self.live();
            dirty
                .into_iter()
                .filter_map(|(c, groups)| live.get(&c).map(|l| self.info(&c, l, groups)))
                .collect()
        };
        if let Err(err) = self.store.record(&infos, self.ttl, false).await {
            warn!(error = %err, "presence details write failed");
        }
    }

    /// Touches every live socket (announcing: and announces who came back online, e.g. after
    /// Redis lost its data).
    async fn refresh(&self) {
        let sockets = self.snapshot();
        // In slices: what the store builds for 10,000 sockets at once was megabytes of small
        // blocks every third of the TTL, memory the allocator kept. A slice's are reused by
        // the next.
        for slice in sockets.chunks(REFRESH_SLICE) {
            let entries: Vec<(&str, &str)> = slice.iter().map(|(u, c)| (&**u, &**c)).collect();
            let result = match &self.announcer {
                Some(a) => self
                    .store
                    .touch_announcing(&entries, self.ttl)
                    .await
                    .map(|online| a.fire(&online, PresenceChange::Online)),
                None => self.store.touch(&entries, self.ttl).await,
            };
            if let Err(err) = result {
                warn!(error = %err, "presence refresh failed");
                return;
            }
        }
        if !sockets.is_empty() {
            debug!(sockets = sockets.len(), "presence refreshed");
        }
    }

    /// Announces the users whose offline fell due, fleet-wide.
    async fn sweep(&self) {
        let Some(a) = &self.announcer else { return };
        match self.store.take_offline().await {
            Ok(offline) => a.fire(&offline, PresenceChange::Offline),
            Err(err) => warn!(error = %err, "presence offline sweep failed"),
        }
    }

    /// Forgets a socket in the store (announcing: starts its user's offline debounce).
    async fn remove(
        store: &Arc<dyn Presence>,
        debounce: Option<Duration>,
        user: &str,
        channel: &str,
    ) {
        let result = match debounce {
            Some(d) => store.remove_announcing(user, channel, d).await,
            None => store.remove(user, channel).await,
        };
        if let Err(err) = result {
            warn!(error = %err, "presence remove failed");
        }
    }

    /// Takes a socket out of `live`: its user, if it was there.
    fn take(&self, channel: &str) -> Option<String> {
        self.dirty().remove(channel);
        self.live().remove(channel).map(|l| l.username.to_string())
    }
}

/// Sockets touched per store call in a refresh: what one call builds (its entries, the
/// store's request) stays small enough that the next call reuses the same memory.
const REFRESH_SLICE: usize = 250;

/// The shortest refresh period, whatever the TTL: a tiny TTL must not turn the refresher into
/// a busy loop against the store.
const MIN_REFRESH_PERIOD: Duration = Duration::from_millis(100);

/// How long group changes are gathered before they are written together: a page that joins
/// several task groups at once costs one write.
pub(crate) const DETAILS_DELAY: Duration = Duration::from_millis(200);

/// How often the offline announcements are swept: half the debounce, within these bounds.
const SWEEP_PERIOD_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(1));

/// Refreshes every live socket every `ttl / 3`, writes group changes, and sweeps offline
/// announcements, until the registry is gone.
async fn background(registry: Weak<PresenceRegistry>, wake: Arc<Notify>) {
    let Some((refresh_period, sweep_period)) = registry.upgrade().map(|r| {
        let refresh = (r.ttl / 3).max(MIN_REFRESH_PERIOD);
        let sweep = r
            .announcer
            .as_ref()
            .map(|a| (a.debounce / 2).clamp(SWEEP_PERIOD_BOUNDS.0, SWEEP_PERIOD_BOUNDS.1));
        (refresh, sweep)
    }) else {
        return;
    };
    let mut next_refresh = Instant::now() + refresh_period;
    let mut next_sweep = sweep_period.map(|p| Instant::now() + p);
    loop {
        let until = next_sweep.map_or(next_refresh, |s| s.min(next_refresh));
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = wake.notified() => tokio::time::sleep(DETAILS_DELAY).await,
        }
        let Some(reg) = registry.upgrade() else {
            return;
        };
        reg.write_dirty().await;
        let now = Instant::now();
        if now >= next_refresh {
            reg.refresh().await;
            next_refresh = Instant::now() + refresh_period;
        }
        if let (Some(due), Some(period)) = (next_sweep, sweep_period)
            && now >= due
        {
            reg.sweep().await;
            next_sweep = Some(Instant::now() + period);
        }
    }
}

/// Removes a socket from presence when the connection ends: [`close`](Self::close) on the normal
/// path (awaited, so a graceful shutdown finishes it before the process exits), `Drop` as the
/// fallback however else the task ends.
#[derive(Debug)]
pub(crate) struct PresenceGuard {
    registry: Arc<PresenceRegistry>,
    channel: Arc<str>,
    closed: bool,
}

impl PresenceGuard {
    fn debounce(&self) -> Option<Duration> {
        self.registry.announcer.as_ref().map(|a| a.debounce)
    }

    /// Removes the socket now and waits for the store to confirm.
    pub(crate) async fn close(mut self) {
        self.closed = true;
        if let Some(user) = self.registry.take(&self.channel) {
            let debounce = self.debounce();
            PresenceRegistry::remove(&self.registry.store, debounce, &user, &self.channel).await;
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let Some(user) = self.registry.take(&self.channel) else {
            return;
        };
        let store = Arc::clone(&self.registry.store);
        let debounce = self.debounce();
        let channel = self.channel.to_string();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                PresenceRegistry::remove(&store, debounce, &user, &channel).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_core::presence::InMemoryPresence;

    use super::*;

    #[tokio::test]
    async fn refreshes_keep_every_socket_of_several_slices_online() {
        // A TTL that lapses several times over while the test waits: only the refreshes,
        // slice after slice, keep the sockets past the first slice online.
        let store: Arc<dyn Presence> = Arc::new(InMemoryPresence::default());
        let registry = PresenceRegistry::new(
            Arc::clone(&store),
            Duration::from_millis(300),
            "test".to_owned(),
            None,
        );
        let sockets = REFRESH_SLICE * 2 + 345;
        let guards: Vec<PresenceGuard> = (0..sockets)
            .map(|i| registry.open(Arc::from(format!("c!{i}")), &format!("u{i}"), None, &[]))
            .collect();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(store.online_users().await.unwrap().len(), sockets);
        assert_eq!(
            store
                .connections(&format!("u{}", sockets - 1))
                .await
                .unwrap(),
            1
        );
        drop(guards);
    }
}
