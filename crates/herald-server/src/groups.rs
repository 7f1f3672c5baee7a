//! Group multiplexing: one layer channel per (process, group) standing for every local socket
//! in that group.
//!
//! Python's `group_send` packs one message per process key listing every member channel; with a
//! thousand Herald sockets in `broadcast` that is a ~75 KB message, built by Python and decoded
//! by Herald on every send. Instead, the first local socket to join a group makes a *group
//! channel* ([`GROUP_CHANNEL_PREFIX`]), [attaches](ChannelLayer::attach) it to a sink of the
//! [`Dispatcher`] and adds it to the layer group; the layer hands each message to the sink, and
//! the dispatcher's task wraps it once in a [`LayerEvent`] and offers that `Arc` to every
//! local member's [`Inbox`] (so the frame is still encoded once, see `fanout`). Python's `group_send` then sees a one-member group. The last local member
//! leaving discards the membership and closes the channel.
//!
//! # Order
//! A socket's own channel and every group channel it is in deliver into its one inbox, and
//! the layer calls the sinks in the order it took the messages in (for Redis, the senders'
//! scores, per shard): a sender's `task.complete` to `task_42` and its notification to
//! `user_alice` reach a socket in both in the order they were sent. Between the layer and the
//! inbox there is one FIFO queue and one task (the dispatcher), so nothing can overtake.
//!
//! Works on any [`ChannelLayer`]: the group channel is an ordinary local channel, so
//! herald-redis tracks and refreshes its membership like any socket's.
//!
//! # Locking
//! One `std` mutex guards the table (group → [`Slot`]); it is never held across an await.
//! Each slot has an async `gate` serialising the *link* (new channel + `group_add`): joiners
//! of an unlinked group queue on the gate, the first links it, the others find it linked.
//! Unlinking (last member leaves) does not take the gate: the slot is removed from the table
//! under the table lock in the same critical section that removes its last member, so a later
//! joiner makes a fresh slot with a fresh channel. The old `group_discard(g, ch1)` and the new
//! `group_add(g, ch2)` name different channels and therefore commute in every layer.
//! Invariant (under the table lock): a slot in the table has a link iff it has members.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use herald_core::names::require_valid_group_name;
use herald_core::sync::lock;
use herald_core::{ChannelLayer, Deliver, Message, Recorded};
use tracing::{debug, trace};

use crate::error::Result;
use crate::fanout::{Events, LayerEvent};

/// Prefix of group channel names (`herald.group.<process>!<id>` with one key, else
/// `herald.group.k<n>.<process>!<id>`).
pub(crate) const GROUP_CHANNEL_PREFIX: &str = "herald.group";

/// Which of `count` group-channel prefixes `group` uses: a stable hash of the group name (see
/// `ServerConfig::group_channel_keys`), so a group always uses the same key.
fn prefix_index(group: &str, count: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike `DefaultHasher`'s contract.
    let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % count.max(1) as u64) as usize
}

/// What the inbox hands a connection.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A layer message, shared with every other local member it went to.
    Event(Arc<LayerEvent>),
    /// The inbox overflowed: the connection is a slow consumer.
    Overflow,
    /// Close the socket with this code (session re-validation).
    Close(u16),
}

/// The queue behind one connection's inbox. Empty, it holds no allocation (an idle socket
/// pays only for the `Arc`); after a burst its spare capacity is given back.
#[derive(Debug, Default)]
struct InboxQueue {
    messages: VecDeque<Arc<LayerEvent>>,
    /// The inbox overflowed and the connection has not been told yet.
    overflow: bool,
    /// The receiving half is gone: offers are dropped.
    closed: bool,
    /// The socket must close with this code; reported before anything else.
    close: Option<u16>,
    /// The connection task, parked after it found nothing queued; taken by the next offer.
    /// A plain slot under the queue's lock rather than a `Notify`: a `Notified` future is
    /// registered in and unlinked from a waiter list on every round of the connection's
    /// loop, which showed up in profiles of a 300k frames/s broadcast.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct InboxState {
    queue: Mutex<InboxQueue>,
    capacity: usize,
}

/// Queue capacity kept when the inbox drains empty; more is released.
const INBOX_KEEP_CAPACITY: usize = 16;

/// The sending half of a connection's group inbox; cloned into every group it joins.
#[derive(Debug, Clone)]
pub(crate) struct InboxSender {
    state: Arc<InboxState>,
}

impl InboxSender {
    /// Queues `events` in order without waiting, under one lock and with at most one wake-up.
    /// A full inbox marks the connection as overflowed (one [`Delivery::Overflow`] wakes it)
    /// and drops the rest: a group reader never blocks on one slow socket.
    fn offer_all(&self, events: &[Arc<LayerEvent>]) {
        let mut queue = lock(&self.state.queue);
        if queue.closed {
            return;
        }
        for event in events {
            if queue.messages.len() >= self.state.capacity {
                queue.overflow = true;
                break;
            }
            queue.messages.push_back(Arc::clone(event));
        }
        // Only a receiver that found the queue empty is parked; one that saw messages queued
        // drains them without waiting.
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks the connection to close with `code`, ahead of whatever is queued and whatever the
    /// inbox's capacity; the first request wins.
    pub(crate) fn close(&self, code: u16) {
        let mut queue = lock(&self.state.queue);
        if queue.closed {
            return;
        }
        queue.close.get_or_insert(code);
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half, polled by the connection's runtime.
#[derive(Debug)]
pub(crate) struct Inbox {
    state: Arc<InboxState>,
}

impl Inbox {
    /// A bounded inbox holding at most `capacity` group messages.
    pub(crate) fn new(capacity: usize) -> (InboxSender, Inbox) {
        let state = Arc::new(InboxState {
            queue: Mutex::new(InboxQueue::default()),
            capacity,
        });
        (
            InboxSender {
                state: Arc::clone(&state),
            },
            Inbox { state },
        )
    }

    /// The next delivery. Cancel-safe: nothing leaves the queue until this returns it.
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Delivery {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next delivery, or `Pending` with the task's waker kept for the next offer.
    /// Checking the queue and parking happen under one lock, so an offer cannot slip between
    /// them unseen.
    pub(crate) fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Delivery> {
        let mut queue = lock(&self.state.queue);
        if let Some(delivery) = Self::take(&mut queue) {
            return Poll::Ready(delivery);
        }
        match &mut queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// A delivery that is already queued, without waiting. An overflow is reported before
    /// the messages still queued (the connection is closing as a slow consumer anyway).
    pub(crate) fn try_recv(&mut self) -> Option<Delivery> {
        Self::take(&mut lock(&self.state.queue))
    }

    fn take(queue: &mut InboxQueue) -> Option<Delivery> {
        if let Some(code) = queue.close.take() {
            return Some(Delivery::Close(code));
        }
        if std::mem::take(&mut queue.overflow) {
            return Some(Delivery::Overflow);
        }
        if let Some(event) = queue.messages.pop_front() {
            if queue.messages.is_empty() && queue.messages.capacity() > INBOX_KEEP_CAPACITY {
                queue.messages.shrink_to(INBOX_KEEP_CAPACITY);
            }
            return Some(Delivery::Event(event));
        }
        None
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = lock(&self.state.queue);
        queue.closed = true;
        queue.messages = VecDeque::new();
        queue.waker = None;
    }
}

/// A unique id per connection, the key of its membership in a [`Slot`].
pub(crate) fn next_member_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

type Members = Arc<Mutex<HashMap<u64, InboxSender>>>;

/// What the [`Dispatcher`] does next.
#[derive(Debug)]
enum Job {
    /// A group channel's messages, for every member of the group.
    Group(Members, Vec<Message>),
    /// A socket's own channel's messages.
    Socket(InboxSender, Vec<Message>),
    /// A recorded group's messages with their positions, for every member of the group.
    Recorded(Members, Vec<Recorded>),
}

#[derive(Debug, Default)]
struct DispatchQueue {
    jobs: VecDeque<Job>,
    /// The dispatcher task, parked on an empty queue.
    waker: Option<Waker>,
}

/// Moves the fan-out off the layer's reader: the sinks only queue a job here (one lock, at most
/// one cross-runtime wake-up per batch), and one task on the application's runtime offers the
/// jobs to the inboxes, in the order they came. One task keeps the layer's order; running on the
/// application's workers keeps the reader free to pop Redis, and wakes the sockets from a
/// worker thread, where a wake-up is a local queue push rather than a cross-thread unpark.
#[derive(Debug, Default)]
pub(crate) struct Dispatcher {
    queue: Mutex<DispatchQueue>,
    started: std::sync::atomic::AtomicBool,
}

impl Dispatcher {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Starts the dispatching task on the current runtime, once (the first attach runs on the
    /// application's runtime).
    fn ensure_started(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).run());
        }
    }

    fn push(&self, job: Job) {
        let mut queue = lock(&self.queue);
        queue.jobs.push_back(job);
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A sink for a socket's own channel, delivering into `inbox` through this dispatcher.
    pub(crate) fn socket_sink(self: &Arc<Self>, inbox: &InboxSender) -> Arc<dyn Deliver> {
        self.ensure_started();
        Arc::new(Sink {
            dispatcher: Arc::clone(self),
            target: SinkTarget::Socket(inbox.clone()),
        })
    }

    fn group_sink(self: &Arc<Self>, members: Members) -> Arc<dyn Deliver> {
        self.ensure_started();
        Arc::new(Sink {
            dispatcher: Arc::clone(self),
            target: SinkTarget::Group(members),
        })
    }

    /// Runs the jobs in order, for ever (the task ends with the runtime).
    async fn run(self: Arc<Self>) {
        let mut events = Events::default();
        loop {
            let jobs = std::future::poll_fn(|cx| {
                let mut queue = lock(&self.queue);
                if queue.jobs.is_empty() {
                    match &mut queue.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                Poll::Ready(std::mem::take(&mut queue.jobs))
            })
            .await;
            for job in jobs {
                match job {
                    Job::Group(members, messages) => {
                        // One event per message, whatever the number of members: what every
                        // socket derives from it (handler, frame) is derived once.
                        let events = events.events(messages);
                        let members = lock(&members);
                        trace!(
                            members = members.len(),
                            batch = events.len(),
                            "group messages"
                        );
                        for inbox in members.values() {
                            inbox.offer_all(&events);
                        }
                    }
                    Job::Recorded(members, recorded) => {
                        let events: Vec<_> =
                            recorded.into_iter().map(LayerEvent::recorded).collect();
                        let members = lock(&members);
                        for inbox in members.values() {
                            inbox.offer_all(&events);
                        }
                    }
                    Job::Socket(inbox, messages) => {
                        // Without multiplexing, the layer hands a group message to every
                        // member socket's sink: they share one event.
                        inbox.offer_all(&events.events(messages));
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
enum SinkTarget {
    Group(Members),
    Socket(InboxSender),
}

/// What the layer holds for an attached channel: queues the messages for the [`Dispatcher`].
#[derive(Debug)]
struct Sink {
    dispatcher: Arc<Dispatcher>,
    target: SinkTarget,
}

impl Deliver for Sink {
    /// Runs on the layer's reader: one lock and at most one wake-up.
    fn deliver(&self, messages: &[Message]) {
        let job = match &self.target {
            SinkTarget::Group(members) => Job::Group(Arc::clone(members), messages.to_vec()),
            SinkTarget::Socket(inbox) => Job::Socket(inbox.clone(), messages.to_vec()),
        };
        self.dispatcher.push(job);
    }

    /// A recorded group's messages (the history channel's sink): with their positions.
    fn deliver_recorded(&self, recorded: &[Recorded]) {
        let job = match &self.target {
            SinkTarget::Group(members) => Job::Recorded(Arc::clone(members), recorded.to_vec()),
            SinkTarget::Socket(inbox) => Job::Socket(
                inbox.clone(),
                recorded.iter().map(|r| r.message.clone()).collect(),
            ),
        };
        self.dispatcher.push(job);
    }
}

struct Link {
    channel: Arc<str>,
}

struct Slot {
    /// Serialises linking this slot; held across `new_channel` + `attach` + `group_add`.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Shared with the slot's dispatcher sink; the dispatcher locks it once per job. Only modified
    /// while the table lock is held too (lock order: table, then members).
    members: Members,
    link: Option<Link>,
}

/// The local group table of an [`App`](crate::App).
pub(crate) struct GroupTable {
    layer: Arc<dyn ChannelLayer>,
    slots: Mutex<HashMap<String, Slot>>,
    /// The `new_channel` prefixes the group channels are spread over, chosen by the layer so
    /// that it reads them together with the sockets' own channels (one order for all).
    prefixes: Vec<String>,
    /// Where the group channels' sinks queue their fan-out (shared with the sockets' own
    /// channels, so all keep one order).
    dispatcher: Arc<Dispatcher>,
}

impl std::fmt::Debug for GroupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupTable")
            .field("groups", &self.slots().len())
            .finish_non_exhaustive()
    }
}

/// A link in progress: if it is not committed (error or cancellation), the group channel's
/// membership is discarded and the channel closed in the background.
struct PendingLink {
    layer: Arc<dyn ChannelLayer>,
    group: String,
    channel: Option<Arc<str>>,
    /// The linker, already a member of the slot being linked.
    members: Option<(Members, u64)>,
}

impl Drop for PendingLink {
    fn drop(&mut self) {
        if let Some((members, member)) = self.members.take() {
            lock(&members).remove(&member);
        }
        let Some(channel) = self.channel.take() else {
            return;
        };
        let layer = Arc::clone(&self.layer);
        let group = std::mem::take(&mut self.group);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(err) = layer.group_discard(&group, &channel).await {
                    debug!(error = %err, group = %group, "undoing an unfinished group link failed");
                }
                layer.close_channel(&channel);
            });
        } else {
            layer.close_channel(&channel);
        }
    }
}

/// Closes the group channel even if the unlink is cancelled halfway (e.g. a disconnect
/// cleanup that timed out).
struct CloseOnDrop<'a>(&'a dyn ChannelLayer, Arc<str>);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_channel(&self.1);
    }
}

impl GroupTable {
    pub(crate) fn new(
        layer: Arc<dyn ChannelLayer>,
        keys: NonZeroUsize,
        dispatcher: Arc<Dispatcher>,
    ) -> Arc<Self> {
        let prefixes = layer.colocated_prefixes(GROUP_CHANNEL_PREFIX, keys.get());
        Arc::new(GroupTable {
            layer,
            slots: Mutex::new(HashMap::new()),
            prefixes,
            dispatcher,
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        lock(&self.slots)
    }

    /// Adds a local connection to `group`; on return, group messages reach `inbox`. Joining
    /// twice is a no-op.
    ///
    /// # Errors
    /// `InvalidName` for a bad group name; the layer's error if the first join's `new_channel`
    /// or `group_add` fails (nothing is left behind then).
    pub(crate) async fn join(
        self: &Arc<Self>,
        group: &str,
        member: u64,
        inbox: &InboxSender,
    ) -> Result<()> {
        require_valid_group_name(group)?;
        loop {
            // Fast path: the group is linked, joining is a map insert.
            let gate = {
                let mut slots = self.slots();
                let slot = slots.entry(group.to_owned()).or_insert_with(|| Slot {
                    gate: Arc::default(),
                    members: Members::default(),
                    link: None,
                });
                if slot.link.is_some() {
                    lock(&slot.members).insert(member, inbox.clone());
                    return Ok(());
                }
                Arc::clone(&slot.gate)
            };
            // Held across the layer calls below: only one joiner links a slot; the others wait
            // here and then take the fast path. The table lock is not held meanwhile.
            let _linking = gate.lock().await;
            let members = {
                let mut slots = self.slots();
                match slots.get_mut(group) {
                    // Our slot, still unlinked: we link it (below). We are its member before
                    // the layer knows the group channel, so the first message finds us.
                    Some(slot) if Arc::ptr_eq(&slot.gate, &gate) && slot.link.is_none() => {
                        lock(&slot.members).insert(member, inbox.clone());
                        Arc::clone(&slot.members)
                    }
                    // Linked by the joiner we waited for.
                    Some(slot) if Arc::ptr_eq(&slot.gate, &gate) => {
                        lock(&slot.members).insert(member, inbox.clone());
                        return Ok(());
                    }
                    // The slot was linked, emptied and removed while we waited: start over.
                    _ => continue,
                }
            };
            // Cancellation (e.g. a handshake timeout while `connect` joins) drops this future
            // mid-link; `pending` then undoes whatever reached the layer.
            let mut pending = PendingLink {
                layer: Arc::clone(&self.layer),
                group: group.to_owned(),
                channel: None,
                members: Some((Arc::clone(&members), member)),
            };
            let linked = async {
                // A recorded group has one member channel for the whole fleet (the layer's
                // history channel); any other gets a channel of this process.
                let channel: Arc<str> = match self.layer.history_channel(group) {
                    Some(channel) => channel.into(),
                    None => {
                        let prefix = &self.prefixes[prefix_index(group, self.prefixes.len())];
                        self.layer.new_channel(prefix).await?.into()
                    }
                };
                pending.channel = Some(Arc::clone(&channel));
                let sink = self.dispatcher.group_sink(members);
                self.layer.attach(&channel, sink).await?;
                self.layer.group_add(group, &channel).await?;
                Ok::<_, herald_core::Error>(channel)
            }
            .await;
            let mut slots = self.slots();
            // Nobody removes an unlinked slot but its linker (us, under the gate), so the slot
            // found here is ours.
            let Some(slot) = slots.get_mut(group).filter(|s| Arc::ptr_eq(&s.gate, &gate)) else {
                continue;
            };
            return match linked {
                Ok(channel) => {
                    pending.channel = None;
                    pending.members = None;
                    debug!(group, channel = %channel, "group linked");
                    slot.link = Some(Link { channel });
                    Ok(())
                }
                Err(err) => {
                    slots.remove(group);
                    Err(err.into())
                }
            };
        }
    }

    /// Removes a local connection from `group`. The last member leaving discards the group
    /// channel's membership in the layer and closes the channel.
    ///
    /// # Errors
    /// The layer's `group_discard` error (the local state is already gone then).
    pub(crate) async fn leave(&self, group: &str, member: u64) -> Result<()> {
        let link = {
            let mut slots = self.slots();
            let Some(slot) = slots.get_mut(group) else {
                return Ok(());
            };
            let mut members = lock(&slot.members);
            if members.remove(&member).is_none() || !members.is_empty() {
                return Ok(());
            }
            drop(members);
            // Last member: unlink and forget the slot in this same critical section, so no
            // joiner can attach to a link that is going away.
            slots.remove(group).and_then(|s| s.link)
        };
        let Some(link) = link else {
            return Ok(());
        };
        let _close = CloseOnDrop(&*self.layer, Arc::clone(&link.channel));
        debug!(group, channel = %link.channel, "group unlinked");
        self.layer.group_discard(group, &link.channel).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::InMemoryLayer;
    use herald_core::Value;
    use std::time::Duration;

    async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), fut)
            .await
            .unwrap()
    }

    async fn layer_members(layer: &Arc<dyn ChannelLayer>, group: &str) -> usize {
        let probe = Message::with_type("probe");
        bounded(layer.group_send(group, probe))
            .await
            .unwrap()
            .members
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_joins_and_leaves_keep_at_most_one_membership_and_clean_up() {
        let layer: Arc<dyn ChannelLayer> =
            Arc::new(InMemoryLayer::new(Default::default()).unwrap());
        let table = GroupTable::new(Arc::clone(&layer), NonZeroUsize::MIN, Dispatcher::new());
        let mut tasks = Vec::new();
        for member in 0..32u64 {
            let table = Arc::clone(&table);
            let layer = Arc::clone(&layer);
            tasks.push(tokio::spawn(async move {
                let (tx, _rx) = Inbox::new(8);
                for _ in 0..40 {
                    table.join("g", member, &tx).await.unwrap();
                    // While this member is in, the group is linked exactly once. (On Redis an
                    // old link's discard may still be in flight for a moment; the in-memory
                    // layer discards without yielding, so here the count is exact.)
                    assert_eq!(layer_members(&layer, "g").await, 1);
                    tokio::task::yield_now().await;
                    table.leave("g", member).await.unwrap();
                }
            }));
        }
        for task in tasks {
            bounded(task).await.unwrap();
        }
        assert_eq!(layer_members(&layer, "g").await, 0);
        assert!(table.slots().is_empty());

        // Concurrent first joins link once, and one group_send reaches every inbox once.
        let inboxes: Vec<_> = (0..8).map(|_| Inbox::new(8)).collect();
        let joins = inboxes
            .iter()
            .enumerate()
            .map(|(i, (tx, _))| table.join("h", i as u64, tx));
        for joined in bounded(futures_util::future::join_all(joins)).await {
            joined.unwrap();
        }
        assert_eq!(layer_members(&layer, "h").await, 1);
        for (_, mut rx) in inboxes {
            // The probe sent by layer_members above.
            let delivery = bounded(rx.recv()).await;
            assert!(
                matches!(delivery, Delivery::Event(e) if e.message().msg_type() == Some("probe"))
            );
            assert!(rx.try_recv().is_none());
        }
    }

    #[test]
    fn groups_spread_over_the_keys_and_each_group_keeps_its_key() {
        assert_eq!(prefix_index("user_a", 1), 0);
        let mut used = std::collections::HashSet::new();
        for i in 0..200 {
            let group = format!("user_{i}");
            let index = prefix_index(&group, 8);
            assert_eq!(index, prefix_index(&group, 8));
            assert!(index < 8);
            used.insert(index);
        }
        assert_eq!(used.len(), 8);
    }

    #[tokio::test]
    async fn a_socket_in_several_groups_sees_one_senders_messages_in_send_order() {
        let layer: Arc<dyn ChannelLayer> =
            Arc::new(InMemoryLayer::new(Default::default()).unwrap());
        let dispatcher = Dispatcher::new();
        let table = GroupTable::new(
            Arc::clone(&layer),
            NonZeroUsize::new(8).unwrap(),
            Arc::clone(&dispatcher),
        );
        let (tx, mut rx) = Inbox::new(64);
        let own = layer.new_channel("specific").await.unwrap();
        layer
            .attach(&own, dispatcher.socket_sink(&tx))
            .await
            .unwrap();
        let groups = ["user_a", "task_1", "task_2"];
        for group in groups {
            bounded(table.join(group, 1, &tx)).await.unwrap();
        }
        for n in 0..30 {
            let message = Message::with_type("m").with("n", n);
            if n % 4 == 3 {
                layer.send(&own, message).await.unwrap();
            } else {
                layer
                    .group_send(groups[n as usize % 3], message)
                    .await
                    .unwrap();
            }
        }
        // Through the dispatcher task: wait for each.
        for n in 0..30 {
            match bounded(rx.recv()).await {
                Delivery::Event(e) => assert_eq!(e.message().get("n"), Some(&Value::Int(n))),
                other => panic!("expected message {n}, got {other:?}"),
            }
        }
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn full_inbox_reports_overflow_once_and_drops() {
        let (tx, mut rx) = Inbox::new(2);
        let msg = LayerEvent::new(Message::with_type("x"));
        for _ in 0..5 {
            tx.offer_all(std::slice::from_ref(&msg));
        }
        // The overflow is reported first (the connection closes on it), once.
        assert!(matches!(rx.try_recv(), Some(Delivery::Overflow)));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        assert!(rx.try_recv().is_none());
        tx.offer_all(std::slice::from_ref(&msg));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
    }

    #[test]
    fn a_close_request_goes_ahead_of_a_full_queue_once_and_the_first_code_wins() {
        let (tx, mut rx) = Inbox::new(2);
        let msg = LayerEvent::new(Message::with_type("x"));
        tx.offer_all(&[Arc::clone(&msg), Arc::clone(&msg), msg]);
        tx.close(4401);
        tx.close(4000);
        assert!(matches!(rx.try_recv(), Some(Delivery::Close(4401))));
        assert!(matches!(rx.try_recv(), Some(Delivery::Overflow)));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_closed_inbox_takes_nothing() {
        let (tx, mut rx) = Inbox::new(4);
        let msg = LayerEvent::new(Message::with_type("x"));
        tx.offer_all(std::slice::from_ref(&msg));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        assert!(rx.try_recv().is_none());
        let state = Arc::clone(&tx.state);
        drop(rx);
        tx.offer_all(std::slice::from_ref(&msg));
        assert!(lock(&state.queue).messages.is_empty());
    }

    #[test]
    fn recv_wakes_on_an_offer_made_while_it_waits_and_a_drained_queue_shrinks() {
        let (tx, mut rx) = Inbox::new(1024);
        let (waker, count) = crate::gate::CountingWaker::new();
        let mut cx = std::task::Context::from_waker(&waker);
        let msg = LayerEvent::new(Message::with_type("x"));
        {
            // Polled once by hand: the receiver is parked on the empty queue, for certain,
            // before the offer under test.
            let mut recv = std::pin::pin!(rx.recv());
            assert!(recv.as_mut().poll(&mut cx).is_pending());
            assert_eq!(count.count(), 0);
            tx.offer_all(std::slice::from_ref(&msg));
            assert_eq!(count.count(), 1);
            assert!(matches!(
                recv.as_mut().poll(&mut cx),
                Poll::Ready(Delivery::Event(_))
            ));
        }
        for _ in 0..500 {
            tx.offer_all(std::slice::from_ref(&msg));
        }
        assert!(lock(&tx.state.queue).messages.capacity() >= 500);
        for _ in 0..500 {
            assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        }
        assert!(rx.try_recv().is_none());
        assert!(lock(&tx.state.queue).messages.capacity() <= INBOX_KEEP_CAPACITY);
    }

    #[test]
    fn a_batch_is_queued_in_order_up_to_capacity_then_overflows() {
        let (tx, mut rx) = Inbox::new(3);
        let batch: Vec<Arc<LayerEvent>> = (0..5)
            .map(|i| LayerEvent::new(Message::with_type("x").with("n", i)))
            .collect();
        tx.offer_all(&batch[..2]);
        tx.offer_all(&batch[2..]);
        assert!(matches!(rx.try_recv(), Some(Delivery::Overflow)));
        for i in 0..3 {
            match rx.try_recv() {
                Some(Delivery::Event(e)) => {
                    assert_eq!(e.message().get("n"), Some(&Value::Int(i)));
                }
                other => panic!("expected message {i}, got {other:?}"),
            }
        }
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn only_a_parked_receiver_is_woken_by_an_offer() {
        let (tx, mut rx) = Inbox::new(8);
        let (waker, count) = crate::gate::CountingWaker::new();
        let mut cx = std::task::Context::from_waker(&waker);
        let woken = || count.count();
        let msg = LayerEvent::new(Message::with_type("x"));

        // Nobody parked: queueing wakes nobody, and the queued message is ready at once.
        tx.offer_all(std::slice::from_ref(&msg));
        assert_eq!(woken(), 0);
        assert!(matches!(
            rx.poll_recv(&mut cx),
            Poll::Ready(Delivery::Event(_))
        ));

        // Parked on an empty queue: the next offer wakes it once, later offers do not.
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.offer_all(std::slice::from_ref(&msg));
        tx.offer_all(std::slice::from_ref(&msg));
        assert_eq!(woken(), 1);
        assert!(matches!(
            rx.poll_recv(&mut cx),
            Poll::Ready(Delivery::Event(_))
        ));
        assert!(matches!(
            rx.poll_recv(&mut cx),
            Poll::Ready(Delivery::Event(_))
        ));
    }

    #[test]
    fn draining_makes_room_again() {
        let (tx, mut rx) = Inbox::new(1);
        let msg = LayerEvent::new(Message::with_type("x"));
        tx.offer_all(std::slice::from_ref(&msg));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        tx.offer_all(std::slice::from_ref(&msg));
        assert!(matches!(rx.try_recv(), Some(Delivery::Event(_))));
        assert!(rx.try_recv().is_none());
    }
}
