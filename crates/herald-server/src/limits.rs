//! Per-socket inbound token bucket and the per-user / per-IP connection caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::config::RateLimit;

/// A token bucket: `burst` tokens, refilled at `per_second`. One token per data frame.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.get());
        TokenBucket {
            tokens: burst,
            burst,
            per_second: f64::from(limit.per_second.get()),
            last: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_user: HashMap<String, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open-socket counts per user and per IP.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCaps {
    // std Mutex: short map updates only, never held across an await.
    counts: Mutex<Counts>,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CapExceeded {
    User,
    Ip,
}

/// Holds one slot of each applicable cap; released on drop.
#[derive(Debug)]
pub(crate) struct CapPermit {
    caps: Arc<ConnectionCaps>,
    user: Option<String>,
    ip: Option<IpAddr>,
}

impl ConnectionCaps {
    /// Reserves a slot for `user` and `ip` if both are under their cap (`None` caps are
    /// unlimited and not tracked).
    pub(crate) fn acquire(
        self: &Arc<Self>,
        user: Option<(&str, usize)>,
        ip: Option<(IpAddr, usize)>,
    ) -> Result<CapPermit, CapExceeded> {
        let Ok(mut counts) = self.counts.lock() else {
            return Err(CapExceeded::Ip);
        };
        if let Some((ip, max)) = ip
            && counts.per_ip.get(&ip).copied().unwrap_or(0) >= max
        {
            return Err(CapExceeded::Ip);
        }
        if let Some((user, max)) = user
            && counts.per_user.get(user).copied().unwrap_or(0) >= max
        {
            return Err(CapExceeded::User);
        }
        if let Some((ip, _)) = ip {
            *counts.per_ip.entry(ip).or_default() += 1;
        }
        if let Some((user, _)) = user {
            *counts.per_user.entry(user.to_owned()).or_default() += 1;
        }
        Ok(CapPermit {
            caps: Arc::clone(self),
            user: user.map(|(u, _)| u.to_owned()),
            ip: ip.map(|(ip, _)| ip),
        })
    }
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        let Ok(mut counts) = self.caps.counts.lock() else {
            return;
        };
        if let Some(ip) = self.ip
            && let Some(n) = counts.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
        if let Some(user) = &self.user
            && let Some(n) = counts.per_user.get_mut(user)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_user.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit::new(10, 3).unwrap(), start);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start));
        // 100 ms at 10/s refills exactly one token.
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn bucket_never_exceeds_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit::new(1000, 2).unwrap(), start);
        let later = start + Duration::from_secs(60);
        assert!(bucket.try_take(later));
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn caps_refuse_over_limit_and_release_on_drop() {
        let caps = Arc::new(ConnectionCaps::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = caps.acquire(Some(("alice", 1)), Some((ip, 5))).unwrap();
        assert_eq!(
            caps.acquire(Some(("alice", 1)), Some((ip, 5))).unwrap_err(),
            CapExceeded::User
        );
        let b = caps.acquire(Some(("bob", 1)), Some((ip, 2))).unwrap();
        assert_eq!(
            caps.acquire(Some(("carol", 1)), Some((ip, 2))).unwrap_err(),
            CapExceeded::Ip
        );
        drop(a);
        drop(b);
        let _again = caps.acquire(Some(("alice", 1)), Some((ip, 1))).unwrap();
    }
}
