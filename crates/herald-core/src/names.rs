//! Channel and group name rules, mirroring `channels/layers.py` (channels 4.3.2)
//! `BaseChannelLayer.require_valid_channel_name` / `require_valid_group_name`.
//!
//! Python's rules, and where we deliberately differ:
//! * length in code points must be `< 100`;
//! * channel: `^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$`, group: `^[a-zA-Z\d\-_.]+$`.
//! * Python's `$` also matches before one trailing `\n`, so Python accepts `"foo\n"`. We reject
//!   it: a name with a newline is never produced by Channels itself and is unsafe in logs.
//! * `\d`/`\w` are Unicode-aware in both Python `re` and the `regex` crate; the `regex` crate's
//!   `\w` additionally admits combining marks and connector punctuation after the `!`, which is
//!   looser than Python only in the local part that never leaves the owning process.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, ErrorKind, Result};

/// Names must be shorter than this many characters (Python `MAX_NAME_LENGTH = 100`).
pub const MAX_NAME_LENGTH: usize = 100;

static CHANNEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?\z").unwrap());
static GROUP_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\A[a-zA-Z\d\-_.]+\z").unwrap());

fn invalid(what: &str, name: &str) -> Error {
    // Same sentence as Python's TypeError, so operators recognise it; the offending name is
    // appended (debug-quoted, so control characters cannot forge log lines).
    Error::new(
        ErrorKind::InvalidName,
        format!(
            "{what} name must be a valid unicode string with length < {MAX_NAME_LENGTH} \
             containing only ASCII alphanumerics, hyphens, underscores, or periods, not {name:?}"
        ),
    )
}

/// True if `name` is a valid channel name.
pub fn is_valid_channel_name(name: &str) -> bool {
    name.chars().count() < MAX_NAME_LENGTH && CHANNEL_NAME.is_match(name)
}

/// True if `name` is a valid group name.
pub fn is_valid_group_name(name: &str) -> bool {
    name.chars().count() < MAX_NAME_LENGTH && GROUP_NAME.is_match(name)
}

/// Checks a channel name; the error has kind [`ErrorKind::InvalidName`].
///
/// ```
/// use herald_core::names::require_valid_channel_name;
/// assert!(require_valid_channel_name("specific.abc!def").is_ok());
/// assert!(require_valid_channel_name("=+135!").unwrap_err().is_invalid_name());
/// ```
pub fn require_valid_channel_name(name: &str) -> Result<()> {
    if is_valid_channel_name(name) {
        Ok(())
    } else {
        Err(invalid("Channel", name))
    }
}

/// Checks a group name; the error has kind [`ErrorKind::InvalidName`].
pub fn require_valid_group_name(name: &str) -> Result<()> {
    if is_valid_group_name(name) {
        Ok(())
    } else {
        Err(invalid("Group", name))
    }
}

/// The part of a channel name up to and including the first `!`, or the whole name.
///
/// Mirrors `channels_redis/core.py` `RedisChannelLayer.non_local_name`: all specific channels of
/// one process share this prefix, and with it one Redis key.
pub fn non_local_name(name: &str) -> &str {
    match name.find('!') {
        Some(i) => &name[..=i],
        None => name,
    }
}

/// True if `name` is a process-specific channel (contains `!`).
pub fn is_specific(name: &str) -> bool {
    name.contains('!')
}

/// A fresh 32-hex-digit id, as Python's `uuid.uuid4().hex`.
pub fn random_hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_channels_own_names() {
        for name in [
            "test-channel-1",
            "specific.cc6df996908d40cbbafb93456272a015!af5af32fc479450f83d7b5275e7108cd",
            "a!",
            "user_amadmin",
            "a.b-c_d",
            // Python's \d is Unicode-aware: Arabic-Indic digits pass, and \w after the '!'.
            "\u{0661}\u{0662}",
            "x!\u{e9}t\u{e9}",
        ] {
            assert!(is_valid_channel_name(name), "{name}");
        }
    }

    #[test]
    fn rejects_what_python_rejects() {
        for name in [
            "",
            "=+135!",
            "!a",
            "a!b!c",
            "a b",
            "a/b",
            "caf\u{e9}",
            "a!b c",
        ] {
            assert!(!is_valid_channel_name(name), "{name}");
        }
        assert!(!is_valid_group_name("a!b"));
        assert!(!is_valid_group_name(""));
    }

    #[test]
    fn length_limit_is_in_characters() {
        assert!(is_valid_group_name(&"a".repeat(99)));
        assert!(!is_valid_group_name(&"a".repeat(100)));
        assert!(is_valid_channel_name(&format!("a!{}", "\u{e9}".repeat(97))));
        assert!(!is_valid_channel_name(&format!(
            "a!{}",
            "\u{e9}".repeat(98)
        )));
    }

    #[test]
    fn trailing_newline_is_rejected_deliberately() {
        assert!(!is_valid_group_name("foo\n"));
    }

    #[test]
    fn error_kind_is_invalid_name() {
        let err = require_valid_group_name("a b").unwrap_err();
        assert!(err.is_invalid_name());
        assert!(err.to_string().starts_with("Group name must be"));
    }

    #[test]
    fn non_local_name_cuts_after_first_bang() {
        assert_eq!(non_local_name("specific.abc!def"), "specific.abc!");
        assert_eq!(non_local_name("plain"), "plain");
        assert_eq!(non_local_name("a!"), "a!");
    }
}
