//! Recorded group history: where a message sits in its group's history, and what a layer
//! hands back when a client asks for what it missed.
//!
//! A layer that records history (the Redis layer, for the groups its configuration names)
//! gives every recorded message an [`Offset`] that increases within its group, and reports the
//! history's *epoch*: an id that changes whenever the history may have been lost (Redis
//! flushed, or restarted without persistence). A [`Position`] is the pair; a client that keeps
//! the last position it saw per group can ask for what came after it ([`Replay`]), and is told
//! when the history no longer covers the gap instead of silently skipping it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::message::Message;

/// A message's place in its group's history: `<milliseconds>-<sequence>`, the form of a Redis
/// stream id. Offsets compare in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    /// Milliseconds since the Unix epoch, by the recording server's clock.
    pub ms: u64,
    /// Order among the offsets of the same millisecond.
    pub seq: u64,
}

impl Offset {
    /// The offset `ms-seq`.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Offset { ms, seq }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a text is not an [`Offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOffset(String);

impl fmt::Display for BadOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an offset (<ms>-<seq>): {:?}", self.0)
    }
}

impl std::error::Error for BadOffset {}

impl FromStr for Offset {
    type Err = BadOffset;

    /// Parses `"1764489000123-4"` (a bare `"1764489000123"` means sequence 0, as in Redis).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadOffset(text.chars().take(64).collect());
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Offset {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// An offset within one epoch of a group's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history's epoch when the offset was given.
    pub epoch: Arc<str>,
    /// The offset within that epoch.
    pub offset: Offset,
}

/// A message as recorded in its group's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The group it was sent to.
    pub group: Arc<str>,
    /// Where it was recorded.
    pub position: Position,
    /// The message, without `__asgi_channel__`.
    pub message: Message,
}

/// What a group's history holds after a position (see
/// [`ChannelLayer::replay`](crate::ChannelLayer::replay)).
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The history's current epoch.
    pub epoch: Arc<str>,
    /// True if `messages` is everything recorded after the asked position: same epoch, and
    /// nothing after it was trimmed by the retention. False means the client may have missed
    /// messages and must refetch its state.
    pub recovered: bool,
    /// The recorded messages after the position, oldest first (without a position: the latest
    /// one, if any).
    pub messages: Vec<Recorded>,
    /// A position just before the moment of the read: what the client keeps when it has no
    /// recorded message to keep. Everything recorded later lies after it, and the history
    /// covers the gap from it as long as nothing recorded after it is trimmed (the start of
    /// the epoch instead would look older than the retention, a gap that cannot be covered).
    pub start: Offset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_print_and_order_like_stream_ids() {
        let a: Offset = "1764489000123-4".parse().unwrap();
        assert_eq!(a, Offset::new(1_764_489_000_123, 4));
        assert_eq!(a.to_string(), "1764489000123-4");
        assert_eq!("17".parse::<Offset>().unwrap(), Offset::new(17, 0));
        assert!(Offset::new(5, 9) < Offset::new(6, 0));
        assert!(Offset::new(6, 0) < Offset::new(6, 1));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "+1-0",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad:?} parsed");
        }
    }
}
