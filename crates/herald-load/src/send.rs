//! The Rust sender: the same guide-style `user.message` events as the Python sender
//! (`benches/fanout/sender.py`), stamped with `sent_at`, sent with `group_send` through any
//! [`ChannelLayer`] — `herald-redis`'s `RedisChannelLayer` in the benchmark, the in-memory
//! layer in tests.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_core::{ChannelLayer, Map, Message, Value};
use herald_messaging::{
    FileNotice, NotificationType, user_file, user_group, user_message, user_notification,
};
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::error::{Error, ErrorKind, Result};
use crate::latency::unix_now_secs;

/// Default messages per `group_send_many` call of the per-user plan: with 64 calls in flight,
/// enough that the sender is not what bounds the rate.
pub const DEFAULT_SEND_BATCH: NonZeroUsize = NonZeroUsize::new(200).unwrap();

/// What to send.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SendPlan {
    /// `count` group_sends to one group (e.g. `user_bcast00000` with 1,000 sockets).
    Broadcast {
        /// The group, `user_<username>`.
        group: String,
        /// How many messages.
        count: u64,
        /// What each message looks like.
        shape: Shape,
    },
    /// `per_user` messages to each user's group, in rounds (every user gets message 0 first).
    PerUser {
        /// Usernames; each message goes to `user_<username>`.
        users: Vec<String>,
        /// Messages per user.
        per_user: u64,
        /// Messages per `group_send_many` call (the Redis layer pipelines them); 1 sends each
        /// with its own `group_send`, one round trip per message.
        batch: NonZeroUsize,
    },
    /// Message `i` goes to `users[i % len]` at `i / rate` seconds after the start.
    Paced {
        /// Usernames, in round-robin order.
        users: Vec<String>,
        /// Messages per second over all users.
        rate: f64,
        /// How long to send.
        duration: Duration,
    },
    /// The reconnect benchmarks' load: every user gets `per_user_rate` messages/s in its own
    /// group (user `i` of `n` offset by `i / n` of a period, so the sends are spread evenly),
    /// and `broadcast_group` gets `broadcast_rate` messages/s, for `duration`. Per-user messages
    /// carry `data.seq` counted per user; broadcast messages carry a global `data.seq` and
    /// `data.stream` = the group, which is how a client tells the two streams apart.
    Mixed {
        /// Usernames; each one's messages go to `user_<username>`.
        users: Vec<String>,
        /// Messages per second to each user.
        per_user_rate: f64,
        /// The group every client's socket joins (e.g. `task_bcast`).
        broadcast_group: String,
        /// Messages per second to `broadcast_group`.
        broadcast_rate: f64,
        /// How long to send.
        duration: Duration,
    },
}

/// What a send run did; printed as the sender's JSON line.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct SendReport {
    /// Plan name: `broadcast`, `per-user` or `paced`.
    pub mode: &'static str,
    /// group_sends that returned Ok.
    pub sent: u64,
    /// group_sends that failed (Redis errors, invalid names).
    pub errors: u64,
    /// Deliveries the layer dropped because a channel (or process key) was at capacity.
    pub over_capacity: u64,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// `sent / elapsed_s`.
    pub rate: f64,
    /// Paced and mixed: the latest a message started after its due time, in milliseconds.
    pub schedule_slip_max_ms: f64,
    /// Mixed only: the messages sent to each user (`data.seq` 0..this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_user_each: Option<u64>,
    /// Mixed only: the messages sent to the broadcast group (`data.seq` 0..this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast_count: Option<u64>,
}

/// Totals updated by every in-flight group_send.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    errors: AtomicU64,
    over_capacity: AtomicU64,
}

impl Tally {
    async fn group_send(&self, layer: &dyn ChannelLayer, group: &str, message: Message) {
        let result = layer.group_send(group, message).await;
        self.count(group, result);
    }

    /// One `group_send_many` of `sends`, each result counted as a `group_send`'s.
    async fn group_send_many(&self, layer: &dyn ChannelLayer, sends: Vec<(String, Message)>) {
        let groups: Vec<String> = sends.iter().map(|(g, _)| g.clone()).collect();
        for (group, result) in groups.iter().zip(layer.group_send_many(sends).await) {
            self.count(group, result);
        }
    }

    fn count(&self, group: &str, result: herald_core::Result<herald_core::GroupSendReport>) {
        match result {
            Ok(report) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                self.over_capacity
                    .fetch_add(report.over_capacity as u64, Ordering::Relaxed);
            }
            Err(err) => {
                // Counted; only the first is logged (a dead Redis fails every send).
                if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(error = %err, group, "group_send failed");
                }
            }
        }
    }
}

/// What a sender's messages look like: the benchmark's minimal one, or one of the guide's
/// message shapes (for measuring what the frame size changes, e.g. compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Shape {
    /// `user.message` "bench" with `data.seq` (about 150 bytes as JSON).
    #[default]
    Bench,
    /// `ws_send_message`: a `user.message` toast with a sentence of text.
    Toast,
    /// `ws_send_notification`: a typed `user.notification` with a title and a few data fields.
    Notification,
    /// `ws_send_file`: a `user.file` download notice.
    File,
    /// A Celery task's `task.update` (status, message, progress).
    Task,
}

impl Shape {
    /// Message `seq` for `username`, stamped with `sent_at` now; every shape carries
    /// `data.seq` (in `data`, or at the top level for `task.update`).
    pub fn message(self, username: &str, seq: u64) -> Message {
        let mut data = Map::new();
        data.insert("seq".to_owned(), Value::from(seq));
        let message = match self {
            Shape::Bench => return bench_message(username, seq),
            Shape::Toast => user_message(
                username,
                &format!("Your report \"Quarterly sales {seq}\" is ready to download."),
                Some(data),
            ),
            Shape::Notification => {
                data.insert("order_id".to_owned(), Value::from(10_000 + seq));
                data.insert("status".to_owned(), Value::from("shipped"));
                data.insert(
                    "url".to_owned(),
                    Value::from(format!("/orders/{}/", 10_000 + seq)),
                );
                user_notification(
                    username,
                    &format!(
                        "Order #{} has shipped and will arrive on Thursday.",
                        10_000 + seq
                    ),
                    NotificationType::Success,
                    Some("Order shipped"),
                    Some(data),
                )
            }
            Shape::File => user_file(
                username,
                FileNotice::new(&format!("/media/exports/sales-2026-q3-{seq}.xlsx"))
                    .with_message("Your export is ready")
                    .with_file_size(1_482_113)
                    .with_data(data),
            ),
            Shape::Task => Message::with_type("task.update")
                .with("task_id", "5f0c2a8e-8d3b-4b51-9c1e-2f7d41a9c6b0")
                .with("status", "processing")
                .with(
                    "message",
                    format!("Processing step {} of 40...", seq % 40 + 1),
                )
                .with("progress", Value::from(seq % 100))
                .with("seq", Value::from(seq)),
        };
        message.with("sent_at", unix_now_secs())
    }
}

/// The benchmark message for `username`: `user.message` with `data.seq` and a `sent_at`
/// stamped now (float Unix seconds), exactly the fields the Python sender sends.
pub(crate) fn bench_message(username: &str, seq: u64) -> Message {
    let mut data = Map::new();
    data.insert("seq".to_owned(), Value::from(seq));
    user_message(username, "bench", Some(data)).with("sent_at", unix_now_secs())
}

/// The mixed plan's broadcast message: `user.message` with `data.seq` (global) and
/// `data.stream` = the group, stamped with `sent_at`.
pub(crate) fn broadcast_message(group: &str, seq: u64) -> Message {
    let mut data = Map::new();
    data.insert("seq".to_owned(), Value::from(seq));
    data.insert("stream".to_owned(), Value::from(group));
    user_message("", "bench", Some(data)).with("sent_at", unix_now_secs())
}

/// Runs `plan` with at most `concurrency` group_sends in flight.
///
/// # Errors
/// [`ErrorKind::Config`] for an empty user list or a non-positive rate. Failed group_sends are
/// not errors: they are counted in [`SendReport::errors`].
pub async fn run_sender(
    layer: Arc<dyn ChannelLayer>,
    plan: &SendPlan,
    concurrency: NonZeroUsize,
) -> Result<SendReport> {
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let mut slip = Duration::ZERO;
    let mut mixed_counts = None;
    let mode = match plan {
        SendPlan::Broadcast {
            group,
            count,
            shape,
        } => {
            let username = group.strip_prefix("user_").unwrap_or(group).to_owned();
            let jobs: Vec<(String, String, u64)> = (0..*count)
                .map(|seq| (group.clone(), username.clone(), seq))
                .collect();
            run_jobs(&layer, &tally, jobs, *shape, concurrency, NonZeroUsize::MIN).await;
            "broadcast"
        }
        SendPlan::PerUser {
            users,
            per_user,
            batch,
        } => {
            require_users(users)?;
            let jobs = (0..*per_user)
                .flat_map(|seq| users.iter().map(move |u| (user_group(u), u.clone(), seq)))
                .collect();
            run_jobs(&layer, &tally, jobs, Shape::Bench, concurrency, *batch).await;
            "per-user"
        }
        SendPlan::Paced {
            users,
            rate,
            duration,
        } => {
            require_users(users)?;
            if !(rate.is_finite() && *rate > 0.0) {
                return Err(Error::new(ErrorKind::Config, "rate must be positive"));
            }
            slip = run_paced(&layer, &tally, users, *rate, *duration, concurrency).await;
            "paced"
        }
        SendPlan::Mixed {
            users,
            per_user_rate,
            broadcast_group,
            broadcast_rate,
            duration,
        } => {
            require_users(users)?;
            let positive = |r: f64| r.is_finite() && r > 0.0;
            if !positive(*per_user_rate) || !(positive(*broadcast_rate) || *broadcast_rate == 0.0) {
                return Err(Error::new(
                    ErrorKind::Config,
                    "the per-user rate must be positive and the broadcast rate not negative",
                ));
            }
            let schedule = mixed_schedule(
                users.len(),
                *per_user_rate,
                *broadcast_rate,
                duration.as_secs_f64(),
            );
            mixed_counts = Some((
                (duration.as_secs_f64() * per_user_rate) as u64,
                (duration.as_secs_f64() * broadcast_rate) as u64,
            ));
            slip = run_mixed(
                &layer,
                &tally,
                users,
                broadcast_group,
                schedule,
                concurrency,
            )
            .await;
            "mixed"
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let sent = tally.sent.load(Ordering::Relaxed);
    Ok(SendReport {
        mode,
        sent,
        errors: tally.errors.load(Ordering::Relaxed),
        over_capacity: tally.over_capacity.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        rate: if elapsed > 0.0 {
            sent as f64 / elapsed
        } else {
            0.0
        },
        schedule_slip_max_ms: slip.as_secs_f64() * 1000.0,
        per_user_each: mixed_counts.map(|(each, _)| each),
        broadcast_count: mixed_counts.map(|(_, count)| count),
    })
}

fn require_users(users: &[String]) -> Result<()> {
    if users.is_empty() {
        return Err(Error::new(ErrorKind::Config, "the user list is empty"));
    }
    Ok(())
}

/// `concurrency` workers take jobs (group, username, seq) in order from a shared index, `batch`
/// at a time: one `group_send` per job with a batch of 1, else one `group_send_many` per batch.
async fn run_jobs(
    layer: &Arc<dyn ChannelLayer>,
    tally: &Arc<Tally>,
    jobs: Vec<(String, String, u64)>,
    shape: Shape,
    concurrency: NonZeroUsize,
    batch: NonZeroUsize,
) {
    let batch = batch.get();
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let batches = jobs.len().div_ceil(batch).max(1);
    let workers: Vec<_> = (0..concurrency.get().min(batches))
        .map(|_| {
            let (layer, tally, jobs, next) =
                (layer.clone(), tally.clone(), jobs.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start >= jobs.len() {
                        break;
                    }
                    let taken = &jobs[start..(start + batch).min(jobs.len())];
                    if let [(group, username, seq)] = taken {
                        tally
                            .group_send(layer.as_ref(), group, shape.message(username, *seq))
                            .await;
                        continue;
                    }
                    let sends = taken
                        .iter()
                        .map(|(group, username, seq)| {
                            (group.clone(), shape.message(username, *seq))
                        })
                        .collect();
                    tally.group_send_many(layer.as_ref(), sends).await;
                }
            })
        })
        .collect();
    for worker in workers {
        if let Err(err) = worker.await {
            warn!(error = %err, "sender worker failed");
        }
    }
}

/// Starts message `i` at `start + i / rate`; returns the largest start delay past its due time.
async fn run_paced(
    layer: &Arc<dyn ChannelLayer>,
    tally: &Arc<Tally>,
    users: &[String],
    rate: f64,
    duration: Duration,
    concurrency: NonZeroUsize,
) -> Duration {
    let total = (rate * duration.as_secs_f64()) as u64;
    let permits = Arc::new(Semaphore::new(concurrency.get()));
    let start = tokio::time::Instant::now();
    let mut slip = Duration::ZERO;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        // Waiting for a permit (too many sends in flight) shows up as schedule slip.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        slip = slip.max(tokio::time::Instant::now().saturating_duration_since(due));
        let username = users[(i % users.len() as u64) as usize].clone();
        let (layer, tally) = (layer.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let group = user_group(&username);
            tally
                .group_send(layer.as_ref(), &group, bench_message(&username, i))
                .await;
            drop(permit);
        }));
    }
    for task in tasks {
        if let Err(err) = task.await {
            warn!(error = %err, "paced send task failed");
        }
    }
    slip
}

/// One send of the mixed plan: at `due_s` seconds after the start, message `seq` to user
/// `Some(index)` or to the broadcast group (`None`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct MixedSend {
    due_s: f64,
    user: Option<usize>,
    seq: u64,
}

/// The mixed plan's sends in due order: user `i`'s message `k` at `(k + i / users) / rate`,
/// broadcast `j` at `j / broadcast_rate`; `floor(duration * rate)` messages per stream.
fn mixed_schedule(
    users: usize,
    per_user_rate: f64,
    broadcast_rate: f64,
    duration_s: f64,
) -> Vec<MixedSend> {
    let each = (duration_s * per_user_rate) as u64;
    let broadcasts = (duration_s * broadcast_rate) as u64;
    let mut sends = Vec::with_capacity(users * each as usize + broadcasts as usize);
    for seq in 0..each {
        for user in 0..users {
            sends.push(MixedSend {
                due_s: (seq as f64 + user as f64 / users as f64) / per_user_rate,
                user: Some(user),
                seq,
            });
        }
    }
    for seq in 0..broadcasts {
        sends.push(MixedSend {
            due_s: seq as f64 / broadcast_rate,
            user: None,
            seq,
        });
    }
    sends.sort_by(|a, b| a.due_s.total_cmp(&b.due_s));
    sends
}

/// Starts every send of `schedule` at its due time, like [`run_paced`]; returns the largest
/// start delay past a due time.
async fn run_mixed(
    layer: &Arc<dyn ChannelLayer>,
    tally: &Arc<Tally>,
    users: &[String],
    broadcast_group: &str,
    schedule: Vec<MixedSend>,
    concurrency: NonZeroUsize,
) -> Duration {
    let permits = Arc::new(Semaphore::new(concurrency.get()));
    let start = tokio::time::Instant::now();
    let mut slip = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    for send in schedule {
        let due = start + Duration::from_secs_f64(send.due_s);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        slip = slip.max(tokio::time::Instant::now().saturating_duration_since(due));
        let (group, message) = match send.user {
            Some(i) => (user_group(&users[i]), bench_message(&users[i], send.seq)),
            None => (
                broadcast_group.to_owned(),
                broadcast_message(broadcast_group, send.seq),
            ),
        };
        let (layer, tally) = (layer.clone(), tally.clone());
        tasks.spawn(async move {
            tally.group_send(layer.as_ref(), &group, message).await;
            drop(permit);
        });
        // Reap finished sends as we go, so 100k+ sends do not pile up join handles.
        while tasks.try_join_next().is_some() {}
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(err) = result {
            warn!(error = %err, "mixed send task failed");
        }
    }
    slip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::parse_sent_at;

    #[test]
    fn every_shape_is_a_guide_type_with_seq_and_sent_at() {
        let shapes = [
            (Shape::Bench, "user.message"),
            (Shape::Toast, "user.message"),
            (Shape::Notification, "user.notification"),
            (Shape::File, "user.file"),
            (Shape::Task, "task.update"),
        ];
        for (shape, kind) in shapes {
            let m = shape.message("u00001", 7);
            assert_eq!(m.msg_type(), Some(kind));
            let json = m.to_json().to_string();
            assert!(parse_sent_at(&json).is_some(), "{json}");
            assert!(json.contains(r#""seq":7"#), "{json}");
        }
    }

    #[test]
    fn bench_message_has_the_guide_fields_and_a_fresh_sent_at() {
        let before = unix_now_secs();
        let m = bench_message("u00001", 7);
        assert_eq!(m.msg_type(), Some("user.message"));
        assert_eq!(m.get("username").and_then(Value::as_str), Some("u00001"));
        let json = m.to_json().to_string();
        let sent_at = parse_sent_at(&json).unwrap();
        assert!(sent_at >= before && sent_at <= unix_now_secs());
        assert!(json.contains(r#""seq":7"#), "{json}");
    }

    #[test]
    fn mixed_schedule_spreads_users_and_counts_each_stream_from_zero() {
        let sends = mixed_schedule(4, 1.0, 2.0, 3.0);
        assert_eq!(sends.len(), 4 * 3 + 6);
        assert!(sends.windows(2).all(|w| w[0].due_s <= w[1].due_s));
        let user1: Vec<(f64, u64)> = sends
            .iter()
            .filter(|s| s.user == Some(1))
            .map(|s| (s.due_s, s.seq))
            .collect();
        assert_eq!(user1, [(0.25, 0), (1.25, 1), (2.25, 2)]);
        let broadcast: Vec<u64> = sends
            .iter()
            .filter(|s| s.user.is_none())
            .map(|s| s.seq)
            .collect();
        assert_eq!(broadcast, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn broadcast_message_names_its_stream() {
        let json = broadcast_message("task_bcast", 3).to_json().to_string();
        assert!(json.contains(r#""stream":"task_bcast""#), "{json}");
        assert!(json.contains(r#""seq":3"#), "{json}");
        assert!(parse_sent_at(&json).is_some());
    }
}
