//! [`eventually`]: the one way a test waits for a condition, with a deadline and no fixed sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] checks again: short enough that a test waits at most this much longer
/// than the condition takes, long enough not to spin (a check may be a Redis round trip).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `check` every [`POLL_INTERVAL`] until it returns true and returns how long that took;
/// panics with `what` once `within` has passed. A check that is still running at the deadline
/// is abandoned (so a hung check cannot hang the test).
///
/// Uses tokio's clock, so it also works in tests with paused time.
///
/// # Panics
/// If `check` is not true within `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let deadline = start + within;
    loop {
        if tokio::time::timeout_at(deadline, check())
            .await
            .unwrap_or(false)
        {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut calls = 0;
        eventually(Duration::from_secs(5), "third call", || {
            calls += 1;
            let done = calls >= 3;
            async move { done }
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for: never")]
    async fn panics_with_what_after_the_deadline() {
        eventually(Duration::from_millis(50), "never", || async { false }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for: hung check")]
    async fn a_hung_check_cannot_hang_the_test() {
        eventually(Duration::from_millis(50), "hung check", || {
            std::future::pending::<bool>()
        })
        .await;
    }
}
