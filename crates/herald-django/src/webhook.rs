//! The presence webhook: tells a Django view that a user came online or went offline.
//!
//! Each event is `POST`ed as JSON, `{"event": "online"|"offline", "user": "alice", "at":
//! 1764500000.25}` (`at` in Unix seconds), with [`SIGNATURE_HEADER`] set to `sha256=` and the
//! hex HMAC-SHA256 of the exact body bytes under the shared secret, and [`EVENT_HEADER`] to the
//! event name. The view checks the signature with `hmac.compare_digest` and answers any 2xx.
//!
//! [`Webhook::push`] never waits: events go into a bounded queue (the oldest is dropped, and
//! counted, when it is full) that one task delivers in order. A failed delivery (no
//! connection, a timeout, a non-2xx answer) is retried with exponential backoff until
//! `max_attempts`, then counted as failed; later events wait behind it, so a receiver sees each
//! instance's events in the order they happened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use sha2::Sha256;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::error::{Error, ErrorKind, Result};
use crate::http::Target;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";
/// The header carrying the event name (`online` or `offline`), also in the body.
pub const EVENT_HEADER: &str = "X-Herald-Event";
/// Events kept waiting for delivery before the oldest is dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// How long one delivery may take (connect, send, answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries of one event before it counts as failed (the first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// The wait before the first retry; each further retry waits twice as long.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two retries.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where and how events are delivered.
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// The receiving view, `http://` only.
    pub url: String,
    /// The HMAC-SHA256 key (must not be empty).
    pub secret: String,
    /// See [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// See [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// See [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// See [`DEFAULT_INITIAL_BACKOFF`].
    pub initial_backoff: Duration,
    /// See [`DEFAULT_MAX_BACKOFF`].
    pub max_backoff: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("queue_capacity", &self.queue_capacity)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// Delivery to `url`, signed with `secret`, with the default limits.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// Sets the queue capacity.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets the per-delivery timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the deliveries per event.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the first and the longest wait between retries.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }
}

/// Counters of one [`Webhook`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookStats {
    /// Events the receiver accepted (2xx).
    pub sent: u64,
    /// Events given up after `max_attempts`.
    pub failed: u64,
    /// Deliveries retried (one per retry).
    pub retried: u64,
    /// Events dropped because the queue was full (the oldest go).
    pub dropped: u64,
    /// Events waiting now.
    pub queued: u64,
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: the [`SIGNATURE_HEADER`] value.
///
/// ```
/// let sig = herald_django::webhook::signature(b"key", br#"{"event":"online"}"#);
/// assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
/// ```
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use std::fmt::Write;
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac takes any key");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The JSON body of one event.
pub fn event_body(event: &str, user: &str, at: f64) -> String {
    serde_json::json!({"event": event, "user": user, "at": at}).to_string()
}

/// One event waiting for delivery.
#[derive(Debug)]
struct Event {
    name: &'static str,
    body: Bytes,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    config: WebhookConfig,
    target: Target,
    queue: Mutex<VecDeque<Event>>,
    /// Wakes the delivery task: an event was queued, or the webhook is gone.
    wake: Arc<Notify>,
    counters: Counters,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the delivery task see that the webhook is gone and end.
        self.wake.notify_one();
    }
}

/// A running presence webhook: a bounded queue and the task delivering it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhook {
    inner: Arc<Inner>,
}

impl Webhook {
    /// Validates `config` and starts the delivery task on the current tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a URL that is not `http://`, an empty secret, a zero queue
    /// capacity, timeout or attempt count.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(config: WebhookConfig) -> Result<Webhook> {
        let target = Target::parse(&config.url, "webhook url")?;
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("webhook: {why}"));
        if config.secret.is_empty() {
            return Err(bad("the secret must not be empty"));
        }
        if config.queue_capacity == 0 || config.max_attempts == 0 || config.timeout.is_zero() {
            return Err(bad("queue capacity, attempts and timeout must be positive"));
        }
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            config,
            target,
            queue: Mutex::new(VecDeque::new()),
            wake: Arc::clone(&wake),
            counters: Counters::default(),
        });
        tokio::spawn(deliver(Arc::downgrade(&inner), wake));
        Ok(Webhook { inner })
    }

    /// Queues one event for delivery; never waits. A full queue drops its oldest event.
    pub fn push(&self, event: &'static str, user: &str, at: f64) {
        let body = Bytes::from(event_body(event, user, at));
        let mut queue = herald_lock(&self.inner.queue);
        if queue.len() >= self.inner.config.queue_capacity {
            queue.pop_front();
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(Event { name: event, body });
        drop(queue);
        self.inner.wake.notify_one();
    }

    /// The counters.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.inner.counters;
        WebhookStats {
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            queued: herald_lock(&self.inner.queue).len() as u64,
        }
    }
}

/// The mutex policy of the workspace (a poisoned queue is still a consistent queue); this
/// crate has no Herald dependency, so it is spelled out here.
fn herald_lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    /// One delivery of `event`.
    async fn post(&self, event: &Event) -> Result<()> {
        let failed = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| {
            Error::with_source(ErrorKind::Webhook, format!("webhook: {what}"), e)
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.target.path_and_query.as_str())
            .header(HOST, self.target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(self.config.secret.as_bytes(), &event.body),
            )
            .header(EVENT_HEADER, event.name)
            .header(
                USER_AGENT,
                concat!("herald-django/", env!("CARGO_PKG_VERSION")),
            )
            .header(CONNECTION, "close")
            .body(Full::new(event.body.clone()))
            .map_err(|e| failed("request", e.into()))?;
        let exchange = async {
            let response = self
                .target
                .send(request)
                .await
                .map_err(|(what, e)| failed(what, e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(Error::new(
                    ErrorKind::Webhook,
                    format!("webhook answered {status}"),
                ));
            }
            Ok(())
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "webhook did not answer in time",
            )),
        }
    }
}

/// Delivers the queue in order, retrying each event with backoff, until the webhook is gone.
async fn deliver(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let event = loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            if let Some(event) = herald_lock(&strong.queue).pop_front() {
                break event;
            }
            drop(strong);
            // notify_one keeps a permit when nobody waits, so a push between the check and
            // here still wakes this.
            wake.notified().await;
        };
        let mut backoff = None;
        for attempt in 1.. {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            match strong.post(&event).await {
                Ok(()) => {
                    strong.counters.sent.fetch_add(1, Ordering::Relaxed);
                    debug!(event = event.name, attempt, "webhook delivered");
                    break;
                }
                Err(err) if attempt < strong.config.max_attempts => {
                    if attempt == 1 {
                        warn!(error = %err, event = event.name, "webhook delivery failed; retrying");
                    } else {
                        debug!(error = %err, attempt, "webhook retry failed");
                    }
                    strong.counters.retried.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.map_or(strong.config.initial_backoff, |b: Duration| {
                        (b * 2).min(strong.config.max_backoff)
                    });
                    backoff = Some(wait);
                    drop(strong);
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    strong.counters.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %err, event = event.name, attempts = attempt, "webhook delivery given up");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_sha256_of_the_body() {
        // Python: hmac.new(b"key", b"The quick brown fox jumps over the lazy dog",
        //                  hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn body_is_compact_json() {
        assert_eq!(
            event_body("online", "alice", 1.5),
            r#"{"event":"online","user":"alice","at":1.5}"#
        );
    }

    #[tokio::test]
    async fn bad_configs_are_refused() {
        for config in [
            WebhookConfig::new("https://h/x", "s"),
            WebhookConfig::new("http://h/x", ""),
            WebhookConfig::new("http://h/x", "s").with_queue_capacity(0),
            WebhookConfig::new("http://h/x", "s").with_max_attempts(0),
        ] {
            assert!(Webhook::start(config).unwrap_err().is_config());
        }
        assert!(!format!("{:?}", WebhookConfig::new("http://h/", "s3cret")).contains("s3cret"));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_it() {
        // Nothing listens on port 9 of loopback: deliveries fail and the queue backs up.
        let config = WebhookConfig::new("http://127.0.0.1:9/", "s")
            .with_queue_capacity(2)
            .with_backoff(Duration::from_secs(60), Duration::from_secs(60));
        let hook = Webhook::start(config).unwrap();
        for i in 0..5 {
            hook.push("online", &format!("u{i}"), 1.0);
        }
        let stats = hook.stats();
        // The task may already hold one event; the rest is bounded by the capacity.
        assert!(stats.queued <= 2, "{stats:?}");
        assert!(stats.dropped >= 2, "{stats:?}");
        assert_eq!(stats.sent, 0);
    }
}
