//! A local channel's queue: bounded, drop-oldest (Python's `BoundedQueue`), awaited by
//! `receive` — or, once [attached](herald_core::ChannelLayer::attach), a pass-through to a sink.
//!
//! Both layers use it: the sorted-set layer's router holds one per local channel, the Pub/Sub
//! layer one per subscribed local channel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use herald_core::sync::lock;
use herald_core::{Deliver, Message, Recorded};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Message>,
    closed: bool,
    /// Attached: messages go here instead of `items`.
    sink: Option<Arc<dyn Deliver>>,
}

/// A bounded drop-oldest queue with one `Notify` for its receivers.
#[derive(Debug)]
pub(crate) struct Buffer {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

impl Buffer {
    /// A buffer keeping at most `capacity` messages (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Buffer {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends messages in order (or hands them to the sink); returns how many older ones had
    /// to be dropped. A closed buffer takes nothing.
    pub(crate) fn push_all(&self, messages: &[Message]) -> usize {
        let mut state = lock(&self.state);
        if state.closed || messages.is_empty() {
            return 0;
        }
        if let Some(sink) = &state.sink {
            // Under the lock, so `attach`'s hand-over of the queued messages comes first.
            sink.deliver(messages);
            return 0;
        }
        let mut dropped = 0;
        for message in messages {
            if state.items.len() >= self.capacity {
                state.items.pop_front();
                dropped += 1;
            }
            state.items.push_back(message.clone());
        }
        drop(state);
        // notify_one stores a permit when nobody waits yet, so a receiver that found the queue
        // empty just before this push still wakes up.
        self.notify.notify_one();
        dropped
    }

    /// Like [`push_all`](Self::push_all) for recorded history messages: an attached sink gets
    /// them with their positions, a queue gets the messages.
    pub(crate) fn push_recorded(&self, recorded: &[Recorded]) -> usize {
        let state = lock(&self.state);
        if state.closed || recorded.is_empty() {
            return 0;
        }
        if let Some(sink) = &state.sink {
            sink.deliver_recorded(recorded);
            return 0;
        }
        drop(state);
        let messages: Vec<Message> = recorded.iter().map(|r| r.message.clone()).collect();
        self.push_all(&messages)
    }

    /// Appends one message; true if the oldest one had to be dropped.
    pub(crate) fn push(&self, message: Message) -> bool {
        self.push_all(std::slice::from_ref(&message)) > 0
    }

    /// Hands the queued messages to `sink`, then every later one; a waiting `pop` ends.
    pub(crate) fn attach(&self, sink: Arc<dyn Deliver>) {
        let mut state = lock(&self.state);
        let queued: Vec<Message> = state.items.drain(..).collect();
        if !queued.is_empty() {
            sink.deliver(&queued);
        }
        state.sink = Some(sink);
        drop(state);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).items.is_empty()
    }

    /// Drops what is queued (flush).
    pub(crate) fn clear(&self) {
        lock(&self.state).items.clear();
    }

    /// Takes nothing more and wakes every waiting `pop` with `None`.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.items.clear();
        state.sink = None;
        drop(state);
        self.notify.notify_waiters();
    }

    /// Waits for the next message; `None` once the buffer is closed or attached.
    ///
    /// Cancel-safe: a message leaves the queue only in the same synchronous step that returns
    /// it, so dropping this future loses nothing.
    pub(crate) async fn pop(&self) -> Option<Message> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a push between the check and the await is seen.
            notified.as_mut().enable();
            {
                let mut state = lock(&self.state);
                if let Some(message) = state.items.pop_front() {
                    return Some(message);
                }
                if state.closed || state.sink.is_some() {
                    return None;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Value;
    use std::time::Duration;

    #[test]
    fn drops_oldest_like_bounded_queue() {
        // channels_redis test_receive_buffer_respects_capacity: 10000 in, the last 100 kept.
        let buffer = Buffer::new(100);
        let mut drops = 0;
        for i in 0..10000 {
            if buffer.push(Message::new().with("i", i)) {
                drops += 1;
            }
        }
        assert_eq!(drops, 9900);
        let state = lock(&buffer.state);
        assert_eq!(state.items.len(), 100);
        assert_eq!(
            state.items.front().unwrap().get("i"),
            Some(&Value::Int(9900))
        );
        assert_eq!(
            state.items.back().unwrap().get("i"),
            Some(&Value::Int(9999))
        );
    }

    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<Message>>);

    impl Deliver for Record {
        fn deliver(&self, messages: &[Message]) {
            lock(&self.0).extend_from_slice(messages);
        }
    }

    #[tokio::test]
    async fn attach_hands_over_the_queue_first_and_ends_waiting_pops() {
        let buffer = Arc::new(Buffer::new(8));
        buffer.push(Message::with_type("a"));
        let waiter = {
            let buffer = Arc::clone(&buffer);
            tokio::spawn(async move {
                buffer.pop().await;
                buffer.pop().await
            })
        };
        let record = Arc::new(Record::default());
        tokio::time::timeout(Duration::from_secs(5), async {
            while !buffer.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        buffer.push(Message::with_type("b"));
        buffer.attach(record.clone());
        buffer.push(Message::with_type("c"));
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // The waiter took "a", then either "b" (before the attach) or nothing (ended by it).
        let types: Vec<_> = lock(&record.0)
            .iter()
            .map(|m| m.msg_type().unwrap().to_owned())
            .collect();
        match second {
            Some(b) => {
                assert_eq!(b.msg_type(), Some("b"));
                assert_eq!(types, ["c"]);
            }
            None => assert_eq!(types, ["b", "c"]),
        }
    }

    #[tokio::test]
    async fn closed_buffer_wakes_receivers_and_takes_nothing() {
        let buffer = Arc::new(Buffer::new(2));
        let b = buffer.clone();
        let waiter = tokio::spawn(async move { b.pop().await });
        tokio::task::yield_now().await;
        buffer.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_none());
        assert!(!buffer.push(Message::with_type("late")));
        assert!(buffer.is_empty());
    }
}
