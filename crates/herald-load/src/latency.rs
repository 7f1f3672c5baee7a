//! Finding the sender's `sent_at` timestamp in a frame.
//!
//! This runs once per received frame, at hundreds of thousands of frames per second, on a
//! machine whose other core runs the server under test. A full JSON parse per frame would make
//! the client the bottleneck, so we scan for the key and parse only the number after it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The key whose value is the send time in float Unix seconds.
const SENT_AT_KEY: &[u8] = b"\"sent_at\"";

/// Returns the `sent_at` value (float Unix seconds) found anywhere in a JSON text frame, at any
/// nesting depth (top level or inside `data`), or `None` if the frame has none or it is not a
/// number. The first occurrence wins.
///
/// ```
/// assert_eq!(
///     herald_load::parse_sent_at(r#"{"type": "user_message", "sent_at": 1795634584.25}"#),
///     Some(1795634584.25)
/// );
/// assert_eq!(herald_load::parse_sent_at(r#"{"data": {"sent_at":"x"}}"#), None);
/// ```
pub fn parse_sent_at(frame: &str) -> Option<f64> {
    let bytes = frame.as_bytes();
    let start = find(bytes, SENT_AT_KEY)? + SENT_AT_KEY.len();
    let rest = frame[start..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    let value: f64 = rest[..end].parse().ok()?;
    value.is_finite().then_some(value)
}

/// Now, as float Unix seconds (the same clock Python's `time.time()` reads).
pub fn unix_now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Latency in microseconds from `sent_at` to `now`; a clock step backwards reads as 0.
pub(crate) fn latency_micros(sent_at: f64, now: f64) -> u64 {
    let micros = (now - sent_at) * 1e6;
    if micros.is_finite() && micros > 0.0 {
        micros as u64
    } else {
        0
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_at_is_found_at_top_level_and_nested() {
        assert_eq!(parse_sent_at(r#"{"sent_at":1.5}"#), Some(1.5));
        assert_eq!(
            parse_sent_at(r#"{"type": "user_message", "data": {"sent_at": 1795634584.0433064}}"#),
            Some(1_795_634_584.043_306_4)
        );
        assert_eq!(
            parse_sent_at(r#"{"sent_at" :  2e3 , "x": 1}"#),
            Some(2000.0)
        );
    }

    #[test]
    fn frames_without_a_numeric_sent_at_have_none() {
        assert_eq!(parse_sent_at(r#"{"type": "user_message"}"#), None);
        assert_eq!(parse_sent_at(r#"{"sent_at": null}"#), None);
        assert_eq!(parse_sent_at(r#"{"sent_at": "1.0"}"#), None);
        assert_eq!(parse_sent_at(r#"{"sent_at""#), None);
        assert_eq!(parse_sent_at(""), None);
    }

    #[test]
    fn latency_is_in_microseconds_and_never_negative() {
        assert_eq!(latency_micros(100.0, 100.25), 250_000);
        assert_eq!(latency_micros(100.0, 99.0), 0);
        assert_eq!(latency_micros(f64::NAN, 1.0), 0);
    }
}
