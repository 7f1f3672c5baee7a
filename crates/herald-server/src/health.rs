//! Readiness: what the server depends on (the channel layer, plus any [`HealthCheck`] such as
//! the Django database) and whether each answers right now.
//!
//! Liveness and readiness are apart on purpose. `/healthz` answers `200 ok` while the process
//! serves HTTP at all; restarting herald does not bring Redis back, so a liveness probe must not
//! fail with it. `/readyz` answers `200 ready` only while every dependency answered its last
//! check, else `503` with the reasons: what a load balancer uses to stop sending users here.
//!
//! One monitor task per [`serve`](crate::serve) checks every dependency each
//! [`health_interval`](crate::ServerConfig::health_interval), sooner when a handshake just failed
//! on the layer; a handshake arriving while something is down re-checks it first, so the first
//! browsers after an outage are served. The monitor keeps the state and logs transitions only:
//! one `warn` when a dependency goes down, one `info` when it is back, and in between a reminder
//! after 10 intervals, then after twice as long each time, at most every
//! [`MAX_REMINDER_INTERVAL`]. Never a line per check.
//!
//! While a dependency is down a WebSocket handshake is accepted and at once closed with
//! [`CLOSE_TRY_AGAIN_LATER`](crate::CLOSE_TRY_AGAIN_LATER) (1013): browsers cannot read an HTTP status of a refused
//! handshake, but they do see a close code, and the browser client retries with backoff.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use herald_core::ChannelLayer;
use herald_core::error::error_chain;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::shutdown::ShutdownSignal;

/// Readiness endpoint: `200 ready`, or `503` with the dependencies that are down.
pub const READYZ_PATH: &str = "/readyz";
/// The longest gap between two "still down" reminders.
pub const MAX_REMINDER_INTERVAL: Duration = Duration::from_secs(600);
/// The first "still down" reminder comes after this many check intervals (then the gap doubles).
const FIRST_REMINDER_INTERVALS: u32 = 10;
/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// A handshake while a dependency is down re-checks it if the last check is older than this.
const RECHECK_AFTER: Duration = Duration::from_millis(250);
/// The name the channel layer has in `/readyz`, the logs and `/metrics`.
pub const CHANNEL_LAYER: &str = "channel_layer";

/// Something else the server needs to serve handshakes (e.g. the Django session database),
/// checked by the health monitor next to the channel layer.
///
/// ```
/// use async_trait::async_trait;
/// use herald_server::HealthCheck;
///
/// #[derive(Debug)]
/// struct Database;
///
/// #[async_trait]
/// impl HealthCheck for Database {
///     fn name(&self) -> &str {
///         "database"
///     }
///     async fn check(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///         Ok(()) // e.g. run `SELECT 1`
///     }
/// }
/// ```
#[async_trait]
pub trait HealthCheck: Send + Sync + fmt::Debug + 'static {
    /// A short `snake_case` name for `/readyz`, the logs and the `dependency` label.
    fn name(&self) -> &str;

    /// Succeeds if the dependency answers. The monitor gives up on it after 5 s.
    async fn check(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The layer as a [`HealthCheck`].
#[derive(Debug)]
struct LayerCheck(Arc<dyn ChannelLayer>);

#[async_trait]
impl HealthCheck for LayerCheck {
    fn name(&self) -> &str {
        CHANNEL_LAYER
    }

    async fn check(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.ping().await?)
    }
}

/// One dependency's last known state.
#[derive(Debug)]
struct State {
    /// `None` until the first check finished.
    up: Option<bool>,
    /// The last failure, while down.
    error: String,
    /// When it went down.
    since: Instant,
    /// When the next "still down" reminder is due, and the gap after it.
    next_reminder: Instant,
    reminder_gap: Duration,
}

#[derive(Debug)]
struct Dependency {
    check: Arc<dyn HealthCheck>,
    state: Mutex<State>,
}

/// Every dependency and its state; shared by the monitor, `/readyz`, `/metrics` and handshakes.
#[derive(Debug)]
pub(crate) struct Health {
    deps: Vec<Dependency>,
    interval: Duration,
    /// Wakes the monitor early (a handshake failed on the layer).
    wake: Notify,
    /// When the last check finished. Held across the check: concurrent callers (the monitor,
    /// handshakes while something is down) wait for one check instead of each running one.
    last_check: tokio::sync::Mutex<Option<Instant>>,
}

/// A snapshot of readiness: see [`App::readiness`](crate::App::readiness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    problems: Vec<String>,
}

impl Readiness {
    /// True if every dependency answered its last check.
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line per dependency that is down or not checked yet: `name: error`.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ready() {
            return f.write_str("ready");
        }
        f.write_str("not ready")?;
        for p in &self.problems {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is plain data rewritten whole on every check; a panic elsewhere cannot leave it
    // half-updated in a way that matters, so a poisoned lock is used as is.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Health {
    pub(crate) fn new(
        layer: Arc<dyn ChannelLayer>,
        checks: Vec<Arc<dyn HealthCheck>>,
        interval: Duration,
    ) -> Health {
        let now = Instant::now();
        let deps = std::iter::once(Arc::new(LayerCheck(layer)) as Arc<dyn HealthCheck>)
            .chain(checks)
            .map(|check| Dependency {
                check,
                state: Mutex::new(State {
                    up: None,
                    error: String::new(),
                    since: now,
                    next_reminder: now,
                    reminder_gap: interval,
                }),
            })
            .collect();
        Health {
            deps,
            interval,
            wake: Notify::new(),
            last_check: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn readiness(&self) -> Readiness {
        let problems = self
            .deps
            .iter()
            .filter_map(|d| {
                let s = lock(&d.state);
                match s.up {
                    Some(true) => None,
                    Some(false) => Some(format!("{}: {}", d.check.name(), s.error)),
                    None => Some(format!("{}: not checked yet", d.check.name())),
                }
            })
            .collect();
        Readiness { problems }
    }

    /// The dependency known to be down that makes handshakes pointless, if any. Unknown (not
    /// checked yet) counts as up, so a fresh server does not refuse its first users.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.deps.iter().find_map(|d| {
            let s = lock(&d.state);
            (s.up == Some(false)).then(|| d.check.name().to_owned())
        })
    }

    /// As [`refusal`](Self::refusal), but a dependency known to be down is checked again first
    /// unless a check finished within [`RECHECK_AFTER`]: a handshake just after Redis came back
    /// is served instead of refused until the monitor's next round.
    pub(crate) async fn refusal_rechecked(&self) -> Option<String> {
        self.refusal()?;
        self.check(Some(RECHECK_AFTER)).await;
        self.refusal()
    }

    /// Checks every dependency, unless one finished less than `fresh` ago.
    async fn check(&self, fresh: Option<Duration>) {
        // Held across the checks on purpose; see `last_check`.
        let mut last = self.last_check.lock().await;
        if let (Some(fresh), Some(at)) = (fresh, *last)
            && at.elapsed() < fresh
        {
            return;
        }
        self.check_all().await;
        *last = Some(Instant::now());
    }

    /// Asks the monitor to check now (e.g. a handshake just failed on the layer).
    pub(crate) fn nudge(&self) {
        self.wake.notify_one();
    }

    /// `herald_dependency_up{dependency="…"}` gauges and `herald_ready`.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP herald_dependency_up 1 if the dependency answered its last health check.\n\
             # TYPE herald_dependency_up gauge"
        );
        for d in &self.deps {
            let up = u8::from(lock(&d.state).up == Some(true));
            let _ = writeln!(
                out,
                "herald_dependency_up{{dependency=\"{}\"}} {up}",
                d.check.name()
            );
        }
        let ready = u8::from(self.readiness().is_ready());
        let _ = writeln!(
            out,
            "# HELP herald_ready 1 if /readyz answers 200.\n# TYPE herald_ready gauge\n\
             herald_ready {ready}"
        );
    }

    /// Checks every dependency once, concurrently, and records (and logs) what changed.
    async fn check_all(&self) {
        let checks = self.deps.iter().map(|d| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, d.check.check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(error_chain(&*err)),
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            self.record(d, result, Instant::now());
        });
        futures_util::future::join_all(checks).await;
    }

    fn record(&self, d: &Dependency, result: Result<(), String>, now: Instant) {
        let name = d.check.name();
        let mut s = lock(&d.state);
        match (s.up, result) {
            (Some(true), Ok(())) => {}
            (None, Ok(())) => s.up = Some(true),
            (Some(false), Ok(())) => {
                s.up = Some(true);
                let down_for = now - s.since;
                info!(
                    dependency = name,
                    down_secs = down_for.as_secs(),
                    "dependency is back: ready again"
                );
            }
            (Some(false), Err(error)) => {
                s.error = error;
                if now >= s.next_reminder {
                    warn!(
                        dependency = name,
                        error = %s.error,
                        down_secs = (now - s.since).as_secs(),
                        "dependency still down: not ready, handshakes closed with 1013"
                    );
                    s.reminder_gap = (s.reminder_gap * 2).min(MAX_REMINDER_INTERVAL);
                    s.next_reminder = now + s.reminder_gap;
                }
            }
            (Some(true) | None, Err(error)) => {
                warn!(
                    dependency = name,
                    error = %error,
                    "dependency down: not ready, handshakes closed with 1013 until it answers"
                );
                s.up = Some(false);
                s.error = error;
                s.since = now;
                s.reminder_gap =
                    (self.interval * FIRST_REMINDER_INTERVALS).min(MAX_REMINDER_INTERVAL);
                s.next_reminder = now + s.reminder_gap;
            }
        }
    }
}

/// Checks every dependency now and then every `interval` (or when nudged) until shutdown.
pub(crate) async fn monitor(health: Arc<Health>, mut shutdown: ShutdownSignal) {
    loop {
        health.check(None).await;
        // Shutdown first: nothing is checked once the server stops.
        tokio::select! {
            biased;
            () = shutdown.wait() => return,
            () = tokio::time::sleep(health.interval) => {}
            () = health.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lists_what_is_down() {
        let layer: Arc<dyn ChannelLayer> =
            Arc::new(herald_core::InMemoryLayer::new(Default::default()).unwrap());
        let health = Health::new(layer, Vec::new(), Duration::from_secs(1));
        assert!(!health.readiness().is_ready());
        assert_eq!(health.refusal(), None);
        let now = Instant::now();
        health.record(&health.deps[0], Err("refused".into()), now);
        assert_eq!(health.refusal().as_deref(), Some(CHANNEL_LAYER));
        assert_eq!(health.readiness().problems(), ["channel_layer: refused"]);
        health.record(&health.deps[0], Ok(()), now);
        assert!(health.readiness().is_ready());
        let mut out = String::new();
        health.render_metrics(&mut out);
        assert!(out.contains("herald_dependency_up{dependency=\"channel_layer\"} 1\n"));
        assert!(out.contains("herald_ready 1\n"));
    }
}
