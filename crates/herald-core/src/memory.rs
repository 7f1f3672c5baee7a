//! [`InMemoryLayer`]: a single-process layer with the semantics of Channels'
//! `InMemoryChannelLayer` (capacity, message expiry, group expiry).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::capacity::{Capacities, CapacityRule};
use crate::error::{Error, ErrorKind, Result};
use crate::layer::{ChannelLayer, Deliver, GroupSendReport};
use crate::message::{ASGI_CHANNEL_KEY, Message};
use crate::names::{random_hex_id, require_valid_channel_name, require_valid_group_name};

/// Default message lifetime (Python kwarg `expiry`).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
/// Default group membership lifetime (Python kwarg `group_expiry`).
pub const DEFAULT_GROUP_EXPIRY: Duration = Duration::from_secs(86400);
/// Default per-channel capacity (Python kwarg `capacity`).
pub const DEFAULT_CAPACITY: usize = 100;

/// Configuration of an [`InMemoryLayer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InMemoryConfig {
    /// Message lifetime (`expiry`).
    pub expiry: Duration,
    /// Group membership lifetime (`group_expiry`).
    pub group_expiry: Duration,
    /// Default capacity (`capacity`).
    pub capacity: usize,
    /// Per-name overrides (`channel_capacity`), first match wins.
    pub channel_capacity: Vec<CapacityRule>,
}

impl Default for InMemoryConfig {
    fn default() -> Self {
        InMemoryConfig {
            expiry: DEFAULT_EXPIRY,
            group_expiry: DEFAULT_GROUP_EXPIRY,
            capacity: DEFAULT_CAPACITY,
            channel_capacity: Vec::new(),
        }
    }
}

impl InMemoryConfig {
    /// Sets `expiry`.
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets `group_expiry`.
    pub fn with_group_expiry(mut self, group_expiry: Duration) -> Self {
        self.group_expiry = group_expiry;
        self
    }

    /// Sets `capacity`.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Adds a `channel_capacity` rule (tried after the ones already added).
    pub fn with_channel_capacity(mut self, rule: CapacityRule) -> Self {
        self.channel_capacity.push(rule);
        self
    }
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<(Instant, Message)>,
    notify: Arc<Notify>,
}

impl Queue {
    fn new() -> Self {
        Queue {
            items: VecDeque::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        while self.items.front().is_some_and(|(exp, _)| *exp <= now) {
            self.items.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<String, Queue>,
    /// Attached channels: their messages go to the sink, never to a queue.
    sinks: HashMap<String, Arc<dyn Deliver>>,
    groups: HashMap<String, HashMap<String, Instant>>,
}

/// A channel layer that lives in one process's memory.
///
/// Use it for tests, development and single-process deployments; it is what `herald serve`
/// runs on when no Redis is configured.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use herald_core::{ChannelLayer, InMemoryLayer, Message};
/// let layer = InMemoryLayer::new(Default::default()).unwrap();
/// let ch = layer.new_channel("specific").await.unwrap();
/// layer.group_add("user_amadmin", &ch).await.unwrap();
/// layer.group_send("user_amadmin", Message::with_type("user.message")).await.unwrap();
/// assert_eq!(layer.receive(&ch).await.unwrap().msg_type(), Some("user.message"));
/// # });
/// ```
#[derive(Debug)]
pub struct InMemoryLayer {
    expiry: Duration,
    group_expiry: Duration,
    capacities: Capacities,
    state: Mutex<State>,
}

impl InMemoryLayer {
    /// Builds a layer.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] if `capacity` is 0.
    pub fn new(config: InMemoryConfig) -> Result<Self> {
        if config.capacity == 0 {
            return Err(Error::new(ErrorKind::Config, "capacity must be at least 1"));
        }
        Ok(InMemoryLayer {
            expiry: config.expiry,
            group_expiry: config.group_expiry,
            capacities: Capacities::new(config.capacity, config.channel_capacity),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Pushes under the lock; returns false if the channel is full.
    fn push(&self, state: &mut State, channel: &str, message: Message, now: Instant) -> bool {
        let queue = state
            .channels
            .entry(channel.to_owned())
            .or_insert_with(Queue::new);
        queue.drop_expired(now);
        if queue.items.len() >= self.capacities.get(channel) {
            return false;
        }
        queue.items.push_back((now + self.expiry, message));
        // notify_one stores a permit if nobody waits yet, so a receiver that checked the queue
        // just before this push still wakes up.
        queue.notify.notify_one();
        true
    }
}

fn check_message(message: &Message) -> Result<()> {
    if message.contains_key(ASGI_CHANNEL_KEY) {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            "message must not contain the reserved key __asgi_channel__",
        ));
    }
    Ok(())
}

#[async_trait]
impl ChannelLayer for InMemoryLayer {
    async fn new_channel(&self, prefix: &str) -> Result<String> {
        let name = format!("{prefix}.inmemory!{}", random_hex_id());
        require_valid_channel_name(&name)?;
        Ok(name)
    }

    async fn send(&self, channel: &str, message: Message) -> Result<()> {
        require_valid_channel_name(channel)?;
        check_message(&message)?;
        let now = Instant::now();
        let mut state = self.state();
        if let Some(sink) = state.sinks.get(channel).cloned() {
            // Delivered by the sender itself, outside the lock: a sink may take its own locks.
            drop(state);
            sink.deliver(std::slice::from_ref(&message));
            return Ok(());
        }
        if self.push(&mut state, channel, message, now) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ChannelFull,
                format!("channel {channel} is full"),
            ))
        }
    }

    async fn receive(&self, channel: &str) -> Result<Message> {
        require_valid_channel_name(channel)?;
        loop {
            let notify = {
                let mut state = self.state();
                let queue = state
                    .channels
                    .entry(channel.to_owned())
                    .or_insert_with(Queue::new);
                queue.drop_expired(Instant::now());
                if let Some((_, msg)) = queue.items.pop_front() {
                    if !queue.items.is_empty() {
                        // Pass the wake-up on: a concurrent receiver may be waiting too.
                        queue.notify.notify_one();
                    }
                    return Ok(msg);
                }
                queue.notify.clone()
            };
            notify.notified().await;
        }
    }

    async fn attach(&self, channel: &str, sink: Arc<dyn Deliver>) -> Result<()> {
        require_valid_channel_name(channel)?;
        if !channel.contains(".inmemory!") {
            return Err(Error::new(
                ErrorKind::InvalidName,
                format!("channel {channel} was not made by this layer's new_channel"),
            ));
        }
        let buffered: Vec<Message> = {
            let mut state = self.state();
            state.sinks.insert(channel.to_owned(), Arc::clone(&sink));
            state
                .channels
                .remove(channel)
                .map(|q| q.items.into_iter().map(|(_, m)| m).collect())
                .unwrap_or_default()
        };
        if !buffered.is_empty() {
            sink.deliver(&buffered);
        }
        Ok(())
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<()> {
        require_valid_group_name(group)?;
        require_valid_channel_name(channel)?;
        let mut state = self.state();
        state
            .groups
            .entry(group.to_owned())
            .or_default()
            .insert(channel.to_owned(), Instant::now() + self.group_expiry);
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<()> {
        require_valid_group_name(group)?;
        require_valid_channel_name(channel)?;
        let mut state = self.state();
        if let Some(members) = state.groups.get_mut(group) {
            members.remove(channel);
            if members.is_empty() {
                state.groups.remove(group);
            }
        }
        Ok(())
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<GroupSendReport> {
        require_valid_group_name(group)?;
        check_message(&message)?;
        let now = Instant::now();
        let mut state = self.state();
        let members: Vec<String> = match state.groups.get_mut(group) {
            Some(members) => {
                members.retain(|_, expires| *expires > now);
                members.keys().cloned().collect()
            }
            None => Vec::new(),
        };
        let mut over = 0;
        let mut sinks = Vec::new();
        for member in &members {
            if let Some(sink) = state.sinks.get(member) {
                sinks.push(Arc::clone(sink));
            } else if !self.push(&mut state, member, message.clone(), now) {
                over += 1;
            }
        }
        drop(state);
        for sink in sinks {
            sink.deliver(std::slice::from_ref(&message));
        }
        if over > 0 {
            tracing::info!(
                group,
                over_capacity = over,
                members = members.len(),
                "channels over capacity in group"
            );
        }
        Ok(GroupSendReport::new(members.len(), over))
    }

    async fn flush(&self) -> Result<()> {
        let mut state = self.state();
        state.groups.clear();
        // Queues stay registered so receivers waiting on them keep working; only contents go.
        for queue in state.channels.values_mut() {
            queue.items.clear();
        }
        Ok(())
    }

    fn close_channel(&self, channel: &str) {
        let mut state = self.state();
        state.channels.remove(channel);
        state.sinks.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(capacity: usize) -> InMemoryLayer {
        InMemoryLayer::new(InMemoryConfig::default().with_capacity(capacity)).unwrap()
    }

    async fn recv(layer: &InMemoryLayer, ch: &str) -> Message {
        tokio::time::timeout(Duration::from_secs(1), layer.receive(ch))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn send_receive_is_fifo() {
        let layer = layer(10);
        for i in 0..3 {
            layer
                .send("test-channel", Message::with_type("m").with("n", i))
                .await
                .unwrap();
        }
        for i in 0..3 {
            assert_eq!(recv(&layer, "test-channel").await.get("n"), Some(&i.into()));
        }
    }

    #[tokio::test]
    async fn send_over_capacity_is_channel_full() {
        let layer = layer(3);
        for _ in 0..3 {
            layer.send("c", Message::with_type("m")).await.unwrap();
        }
        let err = layer.send("c", Message::with_type("m")).await.unwrap_err();
        assert!(err.is_channel_full());
    }

    #[tokio::test]
    async fn channel_capacity_overrides_default() {
        let config = InMemoryConfig::default()
            .with_capacity(10)
            .with_channel_capacity(CapacityRule::glob("one", 1).unwrap());
        let layer = InMemoryLayer::new(config).unwrap();
        layer.send("one", Message::with_type("m")).await.unwrap();
        assert!(
            layer
                .send("one", Message::with_type("m"))
                .await
                .unwrap_err()
                .is_channel_full()
        );
        layer.send("two", Message::with_type("m")).await.unwrap();
        layer.send("two", Message::with_type("m")).await.unwrap();
    }

    #[tokio::test]
    async fn groups_deliver_to_members_only() {
        let layer = layer(10);
        let a = layer.new_channel("specific").await.unwrap();
        let b = layer.new_channel("specific").await.unwrap();
        let c = layer.new_channel("specific").await.unwrap();
        for ch in [&a, &b, &c] {
            layer.group_add("g", ch).await.unwrap();
        }
        layer.group_discard("g", &b).await.unwrap();
        let report = layer
            .group_send("g", Message::with_type("hello"))
            .await
            .unwrap();
        assert_eq!(report, GroupSendReport::new(2, 0));
        assert_eq!(recv(&layer, &a).await.msg_type(), Some("hello"));
        assert_eq!(recv(&layer, &c).await.msg_type(), Some("hello"));
        let none = tokio::time::timeout(Duration::from_millis(50), layer.receive(&b)).await;
        assert!(none.is_err());
    }

    #[tokio::test]
    async fn group_send_skips_full_channels() {
        let layer = layer(1);
        layer.group_add("g", "plain").await.unwrap();
        let first = layer
            .group_send("g", Message::with_type("a"))
            .await
            .unwrap();
        let second = layer
            .group_send("g", Message::with_type("b"))
            .await
            .unwrap();
        assert_eq!(first.over_capacity, 0);
        assert_eq!(second.over_capacity, 1);
        assert_eq!(recv(&layer, "plain").await.msg_type(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn messages_expire() {
        let layer =
            InMemoryLayer::new(InMemoryConfig::default().with_expiry(Duration::from_secs(3)))
                .unwrap();
        layer.send("c", Message::with_type("first")).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        layer.send("c", Message::with_type("second")).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(recv(&layer, "c").await.msg_type(), Some("second"));
    }

    #[tokio::test(start_paused = true)]
    async fn group_membership_expires() {
        let layer =
            InMemoryLayer::new(InMemoryConfig::default().with_group_expiry(Duration::from_secs(5)))
                .unwrap();
        layer.group_add("g", "c").await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        let report = layer
            .group_send("g", Message::with_type("x"))
            .await
            .unwrap();
        assert_eq!(report.members, 0);
    }

    #[tokio::test]
    async fn receive_wakes_on_later_send() {
        let layer = Arc::new(layer(10));
        let waiter = {
            let layer = layer.clone();
            tokio::spawn(async move { layer.receive("c").await })
        };
        tokio::task::yield_now().await;
        layer.send("c", Message::with_type("late")).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg.msg_type(), Some("late"));
    }

    #[tokio::test]
    async fn reserved_key_and_bad_names_are_rejected() {
        let layer = layer(10);
        let msg = Message::with_type("x").with(ASGI_CHANNEL_KEY, "c");
        assert_eq!(
            layer.send("c", msg).await.unwrap_err().kind(),
            ErrorKind::InvalidMessage
        );
        assert!(
            layer
                .send("=+135!", Message::new())
                .await
                .unwrap_err()
                .is_invalid_name()
        );
        assert!(
            layer
                .group_add("bad group", "c")
                .await
                .unwrap_err()
                .is_invalid_name()
        );
    }

    /// A sink that records what it is given, in order, for every channel attached to it.
    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<Message>>);

    impl Deliver for Record {
        fn deliver(&self, messages: &[Message]) {
            self.0.lock().unwrap().extend_from_slice(messages);
        }
    }

    #[tokio::test]
    async fn attached_channels_get_buffered_then_live_messages_in_send_order() {
        let layer = layer(10);
        let own = layer.new_channel("specific").await.unwrap();
        let group_ch = layer.new_channel("herald.group.k0").await.unwrap();
        layer.group_add("user_a", &group_ch).await.unwrap();
        layer.group_add("task_1", &own).await.unwrap();
        layer
            .send(&own, Message::with_type("m").with("n", 0))
            .await
            .unwrap();
        let record = Arc::new(Record::default());
        layer.attach(&own, record.clone()).await.unwrap();
        layer.attach(&group_ch, record.clone()).await.unwrap();
        for n in 1..7 {
            let group = if n % 2 == 0 { "user_a" } else { "task_1" };
            let report = layer
                .group_send(group, Message::with_type("m").with("n", n))
                .await
                .unwrap();
            assert_eq!(report, GroupSendReport::new(1, 0));
        }
        let got: Vec<_> = record
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.get("n").cloned())
            .collect();
        let want: Vec<_> = (0..7).map(|n| Some(crate::Value::Int(n))).collect();
        assert_eq!(got, want);
        // Closed: nothing more reaches the sink.
        layer.close_channel(&own);
        layer.send(&own, Message::with_type("m")).await.unwrap();
        assert_eq!(record.0.lock().unwrap().len(), 7);
        assert!(
            layer
                .attach("plain", record)
                .await
                .unwrap_err()
                .is_invalid_name()
        );
    }

    #[tokio::test]
    async fn close_channel_drops_buffer() {
        let layer = layer(10);
        layer.send("c", Message::with_type("x")).await.unwrap();
        layer.close_channel("c");
        let none = tokio::time::timeout(Duration::from_millis(50), layer.receive("c")).await;
        assert!(none.is_err());
    }
}
