//! Per-channel capacity lookup, mirroring `channels/layers.py` `compile_capacities` and
//! `get_capacity` (channels 4.3.2).
//!
//! Python keys are either compiled regexes (kept as-is, matched with `re.match`: anchored at the
//! start only) or glob strings (compiled with `fnmatch.translate`: anchored at both ends). The
//! first pattern in insertion order that matches wins; otherwise the default capacity applies.

use regex::Regex;

use crate::error::{Error, ErrorKind, Result};

/// One `channel_capacity` entry: which names it matches and the capacity it gives them.
#[derive(Debug, Clone)]
pub struct CapacityRule {
    source: String,
    regex: Regex,
    capacity: usize,
}

impl CapacityRule {
    /// A glob rule, as a plain string key in Python's `channel_capacity` dict
    /// (`*` any run including `.` and `!`, `?` one character, `[seq]`/`[!seq]` classes).
    pub fn glob(pattern: &str, capacity: usize) -> Result<Self> {
        let regex = Regex::new(&glob_to_regex(pattern)).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("invalid channel_capacity glob {pattern:?}"),
                e,
            )
        })?;
        Ok(CapacityRule {
            source: pattern.to_owned(),
            regex,
            capacity,
        })
    }

    /// A regex rule, as a `re.compile(...)` key in Python: matched at the start of the name only
    /// (like `re.match`), so end it with `$` to anchor the end.
    pub fn regex(pattern: &str, capacity: usize) -> Result<Self> {
        let regex = Regex::new(&format!(r"\A(?:{pattern})")).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("invalid channel_capacity regex {pattern:?}"),
                e,
            )
        })?;
        Ok(CapacityRule {
            source: pattern.to_owned(),
            regex,
            capacity,
        })
    }

    /// The pattern as configured.
    pub fn pattern(&self) -> &str {
        &self.source
    }

    /// The capacity this rule grants.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True if the rule applies to `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        self.regex.is_match(channel)
    }
}

/// The default capacity plus ordered overrides.
#[derive(Debug, Clone)]
pub struct Capacities {
    default: usize,
    rules: Vec<CapacityRule>,
}

impl Capacities {
    /// Capacities with `default` for every channel and the given rules tried in order.
    pub fn new(default: usize, rules: Vec<CapacityRule>) -> Self {
        Capacities { default, rules }
    }

    /// The capacity for a full channel name: the first matching rule's, else the default.
    pub fn get(&self, channel: &str) -> usize {
        self.rules
            .iter()
            .find(|r| r.matches(channel))
            .map_or(self.default, |r| r.capacity)
    }

    /// The default capacity.
    pub fn default_capacity(&self) -> usize {
        self.default
    }
}

/// Translates a shell glob the way Python's `fnmatch.translate` does, anchored at both ends.
fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from(r"\A(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                // Consecutive stars are one star.
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                // Find the closing bracket; a ']' right after '[' or '[!' is literal.
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str(r"\[");
                } else {
                    let mut class: String = chars[i..j].iter().collect();
                    i = j + 1;
                    let negate = class.starts_with('!');
                    if negate {
                        class.remove(0);
                    }
                    let escaped = class.replace('\\', r"\\").replace('[', r"\[");
                    out.push('[');
                    if negate {
                        out.push('^');
                    }
                    out.push_str(&escaped);
                    out.push(']');
                }
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out.push_str(r")\z");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_fully_anchored() {
        let rule = CapacityRule::glob("http.response!*", 10).unwrap();
        assert!(rule.matches("http.response!abc"));
        assert!(!rule.matches("xhttp.response!abc"));
        let rule = CapacityRule::glob("one", 1).unwrap();
        assert!(rule.matches("one"));
        assert!(!rule.matches("one-more"));
    }

    #[test]
    fn glob_classes_and_question_mark() {
        let rule = CapacityRule::glob("chan[0-9]?", 1).unwrap();
        assert!(rule.matches("chan1x"));
        assert!(!rule.matches("chanx1"));
        let rule = CapacityRule::glob("a[!b]", 1).unwrap();
        assert!(rule.matches("ac"));
        assert!(!rule.matches("ab"));
        let rule = CapacityRule::glob("a.b", 1).unwrap();
        assert!(!rule.matches("axb"), "dot is literal in a glob");
    }

    #[test]
    fn regexes_anchor_at_start_only() {
        let rule = CapacityRule::regex(r"tiny", 1).unwrap();
        assert!(rule.matches("tiny-and-more"));
        assert!(!rule.matches("not-tiny"));
    }

    #[test]
    fn first_match_wins_then_default() {
        let caps = Capacities::new(
            100,
            vec![
                CapacityRule::glob("tiny*", 1).unwrap(),
                CapacityRule::glob("tin*", 5).unwrap(),
            ],
        );
        assert_eq!(caps.get("tiny"), 1);
        assert_eq!(caps.get("tin"), 5);
        assert_eq!(caps.get("other"), 100);
    }

    #[test]
    fn bad_regex_is_a_config_error() {
        assert!(CapacityRule::regex("(", 1).unwrap_err().is_config());
    }
}
