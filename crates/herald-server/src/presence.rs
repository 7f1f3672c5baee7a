//! Presence for the server: every accepted socket with an identity is recorded in a
//! [`Presence`] store while it lives, refreshed in one batch every third of the TTL, and removed
//! when it closes. A server that dies stops refreshing; its records lapse after the TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use herald_core::presence::Presence;
use tracing::{debug, warn};

/// The live sockets of this server, mirrored into a [`Presence`] store.
#[derive(Debug)]
pub(crate) struct PresenceRegistry {
    store: Arc<dyn Presence>,
    ttl: Duration,
    /// channel name → username.
    live: Mutex<HashMap<Arc<str>, String>>,
    refresher_started: AtomicBool,
}

impl PresenceRegistry {
    pub(crate) fn new(store: Arc<dyn Presence>, ttl: Duration) -> Arc<Self> {
        Arc::new(PresenceRegistry {
            store,
            ttl,
            live: Mutex::new(HashMap::new()),
            refresher_started: AtomicBool::new(false),
        })
    }

    /// The store presence is written to.
    pub(crate) fn store(&self) -> &Arc<dyn Presence> {
        &self.store
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, String>> {
        herald_core::sync::lock(&self.live)
    }

    /// Records an accepted socket; the returned guard removes it when dropped.
    pub(crate) fn open(self: &Arc<Self>, channel: Arc<str>, username: &str) -> PresenceGuard {
        self.live()
            .insert(Arc::clone(&channel), username.to_owned());
        if !self.refresher_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh_loop(Arc::downgrade(self)));
        }
        let store = Arc::clone(&self.store);
        let entry = [(username.to_owned(), channel.to_string())];
        let ttl = self.ttl;
        // Written right away (not at the next refresh) so "is user online?" is true as soon as
        // the socket is accepted.
        tokio::spawn(async move {
            if let Err(err) = store.touch(&entry, ttl).await {
                warn!(error = %err, "presence touch failed");
            }
        });
        PresenceGuard {
            registry: Arc::clone(self),
            channel,
            username: username.to_owned(),
            closed: false,
        }
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.live()
            .iter()
            .map(|(c, u)| (u.clone(), c.to_string()))
            .collect()
    }
}

/// The shortest refresh period, whatever the TTL: a tiny TTL must not turn the refresher into
/// a busy loop against the store.
const MIN_REFRESH_PERIOD: Duration = Duration::from_millis(100);

/// Touches every live socket every `ttl / 3` until the registry is gone.
async fn refresh_loop(registry: Weak<PresenceRegistry>) {
    loop {
        let Some(period) = registry.upgrade().map(|r| r.ttl / 3) else {
            return;
        };
        tokio::time::sleep(period.max(MIN_REFRESH_PERIOD)).await;
        let Some(reg) = registry.upgrade() else {
            return;
        };
        let entries = reg.snapshot();
        if entries.is_empty() {
            continue;
        }
        match reg.store.touch(&entries, reg.ttl).await {
            Ok(()) => debug!(sockets = entries.len(), "presence refreshed"),
            Err(err) => warn!(error = %err, "presence refresh failed"),
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
    username: String,
    closed: bool,
}

impl PresenceGuard {
    /// Removes the socket now and waits for the store to confirm.
    pub(crate) async fn close(mut self) {
        self.closed = true;
        self.registry.live().remove(&self.channel);
        if let Err(err) = self
            .registry
            .store
            .remove(&self.username, &self.channel)
            .await
        {
            warn!(error = %err, "presence remove failed");
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.registry.live().remove(&self.channel);
        let store = Arc::clone(&self.registry.store);
        let username = std::mem::take(&mut self.username);
        let channel = self.channel.to_string();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(err) = store.remove(&username, &channel).await {
                    warn!(error = %err, "presence remove failed");
                }
            });
        }
    }
}
