//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use herald_core::{ChannelLayer, Message};
use redis::aio::MultiplexedConnection;

/// Bound for every await in these tests.
pub const T: Duration = Duration::from_secs(5);

/// A raw connection to inspect or seed Redis like a foreign (e.g. Python) peer would.
pub async fn raw(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    tokio::time::timeout(T, client.get_multiplexed_async_connection())
        .await
        .unwrap()
        .unwrap()
}

/// Receives with the standard bound, panicking on timeout or error.
pub async fn recv(layer: &impl ChannelLayer, channel: &str) -> Message {
    tokio::time::timeout(T, layer.receive(channel))
        .await
        .unwrap_or_else(|_| panic!("nothing received on {channel}"))
        .unwrap()
}

/// Asserts that nothing arrives on `channel` within `within`.
pub async fn recv_nothing(layer: &impl ChannelLayer, channel: &str, within: Duration) {
    if let Ok(got) = tokio::time::timeout(within, layer.receive(channel)).await {
        panic!("unexpected message on {channel}: {got:?}");
    }
}

/// A message `{"type": t, "text": text}`.
pub fn msg(t: &str, text: &str) -> Message {
    Message::with_type(t).with("text", text)
}

/// Python's `time.time()`.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
