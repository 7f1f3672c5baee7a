//! Sockets end when the session ends: the open sockets' credentials, checked again every
//! [`session_revalidation`](crate::ServerConfig::session_revalidation), and the close of the
//! sockets whose session no longer logs their user in.
//!
//! Daphne (and Channels' `AuthMiddlewareStack`) read the session once, at the handshake: a user
//! who logs out, whose session expires or whose password changes keeps receiving messages on the
//! sockets already open. Here every accepted socket whose [`Identity`] carries a
//! [`Credential`] is tracked; a round takes a snapshot of the table (one lock, no await under
//! it), asks the [`Authenticator`] about the *distinct* credentials in batches of
//! [`BATCH`] (10,000 sockets of 10,000 sessions are ten calls, each a few queries for the
//! Django authenticator), yields to the runtime between batches, and closes the sockets whose
//! credential now logs in nobody, or another user, with
//! [`CLOSE_UNAUTHORIZED`](crate::CLOSE_UNAUTHORIZED). The close goes through the socket's inbox
//! ([`InboxSender::close`]), ahead of its queued messages.
//!
//! A round whose backend fails ([`AuthError`], a batch that does not answer within
//! [`BATCH_TIMEOUT`]) closes nothing for the credentials it could not check: a database that
//! is down is not a logout. The failure is logged once (a `warn`; an `info` when a round
//! succeeds again) and counted on `/metrics`.
//!
//! The same module counts the sockets closed by a `herald.disconnect` control message (see
//! the runtime's dispatch step), which is the other way a socket is closed for its user's sake.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use herald_core::sync::lock;
use tracing::{debug, info, warn};

use crate::auth::{AuthError, Authenticator, Credential, Identity, SessionState};
use crate::close::CLOSE_UNAUTHORIZED;
use crate::groups::InboxSender;

/// Distinct credentials per [`Authenticator::revalidate`] call: large enough that a round of
/// 10,000 sessions is forty calls, small enough that one call's queries stay short and what
/// it decodes (rows, sessions, users) stays a few hundred KiB the next call reuses.
pub(crate) const BATCH: usize = 250;

/// How long one batch may take before the round gives up on it (and on the rest of the round):
/// a backend that hangs must not pile rounds up.
pub(crate) const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// One open socket being tracked.
#[derive(Debug)]
struct Tracked {
    credential: Credential,
    user_id: Arc<str>,
    inbox: InboxSender,
}

/// The counters behind the `herald_session_revalidation_*` and `herald_disconnect_closes_total`
/// lines of `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    rounds: AtomicU64,
    failed_rounds: AtomicU64,
    checked: AtomicU64,
    closed: AtomicU64,
    last_round_micros: AtomicU64,
    disconnect_closes: AtomicU64,
}

/// The sockets to re-validate, and the counters. One per [`App`](crate::App).
#[derive(Debug)]
pub(crate) struct Sessions {
    authenticator: Arc<dyn Authenticator>,
    /// `None`: nothing is tracked and no round runs.
    interval: Option<Duration>,
    live: Mutex<HashMap<u64, Tracked>>,
    next_id: AtomicU64,
    started: AtomicBool,
    /// The last round failed (so the next failure is not logged again).
    failing: AtomicBool,
    counters: Counters,
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// Sockets whose credential got an answer.
    pub(crate) checked: u64,
    /// Sockets closed because their credential no longer logs their user in.
    pub(crate) closed: u64,
    /// Sockets that could not be checked (backend error, timeout, [`SessionState::Unknown`]).
    pub(crate) unchecked: u64,
}

impl Sessions {
    pub(crate) fn new(
        authenticator: Arc<dyn Authenticator>,
        interval: Option<Duration>,
    ) -> Arc<Self> {
        Arc::new(Sessions {
            authenticator,
            interval,
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            started: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    /// Tracks an accepted socket while the returned guard lives; `None` (nothing to do) when
    /// re-validation is off or the identity has no credential. Starts the rounds with the
    /// first tracked socket.
    pub(crate) fn track(
        self: &Arc<Self>,
        identity: Option<&Identity>,
        inbox: &InboxSender,
    ) -> Option<SessionGuard> {
        let interval = self.interval?;
        let identity = identity?;
        let credential = identity.credential()?.clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).insert(
            id,
            Tracked {
                credential,
                user_id: Arc::from(identity.user_id.as_str()),
                inbox: inbox.clone(),
            },
        );
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(revalidate_loop(Arc::downgrade(self), interval));
        }
        Some(SessionGuard {
            sessions: Arc::clone(self),
            id,
        })
    }

    /// Counts a socket closed by a `herald.disconnect` message.
    pub(crate) fn count_disconnect(&self) {
        self.counters
            .disconnect_closes
            .fetch_add(1, Ordering::Relaxed);
    }

    /// One round: every tracked socket's credential checked once, the invalid ones closed.
    pub(crate) async fn round(&self) -> Round {
        let started = Instant::now();
        // The snapshot: one lock, released before the first await. One vector sorted by
        // credential, not a map of small vectors: a round of 10,000 sockets then allocates a
        // few large blocks, which the allocator reuses, instead of thousands of small ones.
        let mut sockets: Vec<(Credential, u64, Arc<str>, InboxSender)> = {
            let live = lock(&self.live);
            live.iter()
                .map(|(id, t)| {
                    (
                        t.credential.clone(),
                        *id,
                        Arc::clone(&t.user_id),
                        t.inbox.clone(),
                    )
                })
                .collect()
        };
        sockets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // The range of sockets of each distinct credential.
        let mut distinct: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, (credential, ..)) in sockets.iter().enumerate() {
            match distinct.last_mut() {
                Some(range) if sockets[range.start].0 == *credential => range.end = i + 1,
                _ => distinct.push(i..i + 1),
            }
        }
        let mut round = Round::default();
        let mut failure: Option<AuthError> = None;
        let mut closed_ids = Vec::new();
        for slice in distinct.chunks(BATCH) {
            let batch: Vec<Credential> = slice.iter().map(|r| sockets[r.start].0.clone()).collect();
            let answer = tokio::time::timeout(BATCH_TIMEOUT, self.authenticator.revalidate(&batch))
                .await
                .unwrap_or_else(|_| Err(AuthError::new("session re-validation timed out")))
                .and_then(|states| {
                    if states.len() == batch.len() {
                        Ok(states)
                    } else {
                        Err(AuthError::new(
                            "the authenticator answered a re-validation batch with the wrong count",
                        ))
                    }
                });
            let states = match answer {
                Ok(states) => states,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            };
            for (range, state) in slice.iter().zip(states) {
                for (_, id, user_id, inbox) in &sockets[range.clone()] {
                    let valid = match &state {
                        SessionState::User(now) => now.as_str() == &**user_id,
                        SessionState::Gone => false,
                        SessionState::Unknown => {
                            round.unchecked += 1;
                            continue;
                        }
                    };
                    round.checked += 1;
                    if !valid {
                        inbox.close(CLOSE_UNAUTHORIZED);
                        closed_ids.push(*id);
                        round.closed += 1;
                    }
                }
            }
            // Let the sockets (and the handshakes) run between batches.
            tokio::task::yield_now().await;
        }
        if failure.is_some() {
            round.unchecked = sockets.len() as u64 - round.checked;
        }
        if !closed_ids.is_empty() {
            // Closing sockets are not checked (or counted) again while they close.
            let mut live = lock(&self.live);
            for id in &closed_ids {
                live.remove(id);
            }
        }
        self.record(&round, failure, started.elapsed());
        round
    }

    fn record(&self, round: &Round, failure: Option<AuthError>, took: Duration) {
        let c = &self.counters;
        c.rounds.fetch_add(1, Ordering::Relaxed);
        c.checked.fetch_add(round.checked, Ordering::Relaxed);
        c.closed.fetch_add(round.closed, Ordering::Relaxed);
        c.last_round_micros.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let failed = failure.is_some() || round.unchecked > 0;
        if failed {
            c.failed_rounds.fetch_add(1, Ordering::Relaxed);
            let first = !self.failing.swap(true, Ordering::AcqRel);
            let error = failure.map_or_else(
                || "the authenticator could not check some sessions".to_owned(),
                |e| e.to_string(),
            );
            if first {
                warn!(
                    %error,
                    unchecked = round.unchecked,
                    "session re-validation failed; no socket is closed for it, retrying next round"
                );
            } else {
                debug!(%error, unchecked = round.unchecked, "session re-validation failed again");
            }
        } else if self.failing.swap(false, Ordering::AcqRel) {
            info!(checked = round.checked, "session re-validation works again");
        }
        if round.closed > 0 {
            info!(
                closed = round.closed,
                checked = round.checked,
                "closed sockets whose session ended"
            );
        }
        debug!(
            checked = round.checked,
            closed = round.closed,
            took_ms = took.as_millis() as u64,
            "session re-validation round"
        );
    }

    /// Appends the counters in Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lines = [
            (
                "herald_session_revalidation_rounds_total",
                "counter",
                "Session re-validation rounds run.",
                get(&c.rounds).to_string(),
            ),
            (
                "herald_session_revalidation_failed_rounds_total",
                "counter",
                "Rounds in which some sessions could not be checked (backend down): nothing was closed for them.",
                get(&c.failed_rounds).to_string(),
            ),
            (
                "herald_session_revalidation_checked_total",
                "counter",
                "Sockets whose session was checked again.",
                get(&c.checked).to_string(),
            ),
            (
                "herald_session_revalidation_closed_total",
                "counter",
                "Sockets closed with 4401 because their session no longer logs their user in.",
                get(&c.closed).to_string(),
            ),
            (
                "herald_session_revalidation_last_round_seconds",
                "gauge",
                "How long the last re-validation round took.",
                format!("{:.6}", get(&c.last_round_micros) as f64 / 1e6),
            ),
            (
                "herald_disconnect_closes_total",
                "counter",
                "Sockets closed by a herald.disconnect message.",
                get(&c.disconnect_closes).to_string(),
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

/// Untracks a socket when its connection ends.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.sessions.live).remove(&self.id);
    }
}

/// Runs a round every `interval` while the [`Sessions`] (the app) lives. The first round is one
/// interval after the first socket.
async fn revalidate_loop(sessions: Weak<Sessions>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // A slow round delays the next one instead of bunching rounds up.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        if lock(&sessions.live).is_empty() {
            continue;
        }
        sessions.round().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::{Delivery, Inbox};
    use async_trait::async_trait;

    /// Answers from a fixed table; `fail` makes every call an error.
    #[derive(Debug, Default)]
    struct Table {
        users: HashMap<String, String>,
        fail: AtomicBool,
        calls: AtomicU64,
    }

    #[async_trait]
    impl Authenticator for Table {
        async fn authenticate(
            &self,
            _request: &crate::HandshakeRequest,
        ) -> Result<Option<Identity>, AuthError> {
            Ok(None)
        }

        async fn revalidate(
            &self,
            credentials: &[Credential],
        ) -> Result<Vec<SessionState>, AuthError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.fail.load(Ordering::Relaxed) {
                return Err(AuthError::new("database down"));
            }
            Ok(credentials
                .iter()
                .map(|c| match self.users.get(c.as_str()) {
                    Some(u) => SessionState::User(u.clone()),
                    None => SessionState::Gone,
                })
                .collect())
        }
    }

    fn identity(user_id: &str, key: &str) -> Identity {
        Identity::new(format!("u{user_id}"), user_id).with_credential(key)
    }

    fn closed(inbox: &mut Inbox) -> Option<u16> {
        match inbox.try_recv() {
            Some(Delivery::Close(code)) => Some(code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_round_closes_ended_sessions_and_keeps_valid_ones() {
        let table = Arc::new(Table {
            users: [
                ("k-alice".to_owned(), "1".to_owned()),
                ("k-bob".to_owned(), "9".to_owned()),
            ]
            .into(),
            ..Table::default()
        });
        let sessions = Sessions::new(table.clone(), Some(Duration::from_secs(3600)));
        let (tx_a, mut rx_a) = Inbox::new(4);
        let (tx_a2, mut rx_a2) = Inbox::new(4);
        let (tx_b, mut rx_b) = Inbox::new(4);
        let (tx_c, mut rx_c) = Inbox::new(4);
        let _a = sessions.track(Some(&identity("1", "k-alice")), &tx_a);
        // A second tab on the same session: one credential, one check.
        let _a2 = sessions.track(Some(&identity("1", "k-alice")), &tx_a2);
        // The session now belongs to another user id: closed.
        let _b = sessions.track(Some(&identity("2", "k-bob")), &tx_b);
        // Logged out: closed.
        let _c = sessions.track(Some(&identity("3", "k-carol")), &tx_c);
        // No credential or no identity: not tracked at all.
        assert!(
            sessions
                .track(Some(&Identity::new("x", "4")), &tx_c)
                .is_none()
        );
        assert!(sessions.track(None, &tx_c).is_none());

        let round = sessions.round().await;
        assert_eq!(
            round,
            Round {
                checked: 4,
                closed: 2,
                unchecked: 0
            }
        );
        assert_eq!(table.calls.load(Ordering::Relaxed), 1);
        assert_eq!(closed(&mut rx_a), None);
        assert_eq!(closed(&mut rx_a2), None);
        assert_eq!(closed(&mut rx_b), Some(CLOSE_UNAUTHORIZED));
        assert_eq!(closed(&mut rx_c), Some(CLOSE_UNAUTHORIZED));
        // The closed ones are no longer checked.
        assert_eq!(sessions.round().await.checked, 2);
        let mut page = String::new();
        sessions.render_metrics(&mut page);
        assert!(
            page.contains("herald_session_revalidation_rounds_total 2\n"),
            "{page}"
        );
        assert!(
            page.contains("herald_session_revalidation_closed_total 2\n"),
            "{page}"
        );
        assert!(
            page.contains("herald_session_revalidation_checked_total 6\n"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn a_failing_backend_closes_nothing_and_counts_a_failed_round() {
        let table = Arc::new(Table::default());
        table.fail.store(true, Ordering::Relaxed);
        let sessions = Sessions::new(table.clone(), Some(Duration::from_secs(3600)));
        let (tx, mut rx) = Inbox::new(4);
        let _guard = sessions.track(Some(&identity("1", "k-gone")), &tx);
        let round = sessions.round().await;
        assert_eq!(round.closed, 0);
        assert_eq!(round.unchecked, 1);
        assert_eq!(closed(&mut rx), None);
        let mut page = String::new();
        sessions.render_metrics(&mut page);
        assert!(page.contains("herald_session_revalidation_failed_rounds_total 1\n"));
        // Back up: the session (unknown to the table) is gone, and the socket closes now.
        table.fail.store(false, Ordering::Relaxed);
        assert_eq!(sessions.round().await.closed, 1);
        assert_eq!(closed(&mut rx), Some(CLOSE_UNAUTHORIZED));
    }

    #[tokio::test]
    async fn sockets_leave_the_table_when_their_guard_drops_and_off_tracks_nothing() {
        let table = Arc::new(Table::default());
        let sessions = Sessions::new(table.clone(), Some(Duration::from_secs(3600)));
        let (tx, _rx) = Inbox::new(4);
        drop(sessions.track(Some(&identity("1", "k")), &tx));
        assert_eq!(sessions.round().await, Round::default());
        assert_eq!(table.calls.load(Ordering::Relaxed), 0);
        let off = Sessions::new(table, None);
        assert!(off.track(Some(&identity("1", "k")), &tx).is_none());
    }

    #[tokio::test]
    async fn large_rounds_are_asked_in_batches_of_distinct_credentials() {
        let table = Arc::new(Table::default());
        let sessions = Sessions::new(table.clone(), Some(Duration::from_secs(3600)));
        let (tx, _rx) = Inbox::new(4);
        let guards: Vec<_> = (0..2 * BATCH + 1)
            .map(|i| sessions.track(Some(&identity("1", &format!("k{}", i / 2))), &tx))
            .collect();
        let round = sessions.round().await;
        assert_eq!(round.checked, guards.len() as u64);
        // 2·BATCH+1 sockets on BATCH+1 distinct sessions: two calls.
        assert_eq!(table.calls.load(Ordering::Relaxed), 2);
    }
}
