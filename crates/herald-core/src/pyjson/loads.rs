//! Python's `json.loads` (CPython 3.11's C scanner, default arguments): what it accepts, what it
//! refuses and the values it returns.
//!
//! Beyond RFC 8259 it accepts `NaN`, `Infinity` and `-Infinity`, numbers out of `f64` range
//! (`1e400` is `inf`), integers of any size up to Python's 4,300-digit conversion limit, and
//! escaped lone surrogates (`"\ud800"`, which a browser's `JSON.stringify` writes for a broken
//! string). Like Python it refuses control characters inside strings, trailing commas, leading
//! zeros, a leading `+`, a byte-order mark and anything after the document.
//!
//! The parser is iterative, so nesting costs heap, not stack; it stops at [`MAX_DEPTH`].

use std::fmt;

/// Deepest nesting of arrays and objects [`loads`] accepts: Python's default recursion limit.
///
/// Python has no bound of its own: its scanner recurses and raises `RecursionError` at the
/// interpreter's recursion limit, less the frames already on the stack. `json.loads` called at
/// top level takes 994 levels, the test project's consumer under Daphne 973 (measured with
/// CPython 3.11.7); deeper, the consumer dies and Daphne drops the socket. Herald therefore
/// accepts everything Python does and a little more, and refuses a deeper document with
/// [`LoadsError::TooDeep`] (the caller keeps serving).
pub const MAX_DEPTH: usize = 1000;

/// Python's default `sys.get_int_max_str_digits()`: `json.loads` raises `ValueError` for an
/// integer with more digits.
pub const MAX_INT_DIGITS: usize = 4300;

/// A value as Python's `json.loads` returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// `None`.
    Null,
    /// `True` / `False`.
    Bool(bool),
    /// An `int`, as the decimal digits `str(int)` writes (`-0` becomes `0`).
    Int(String),
    /// A `float`, possibly `nan` or infinite.
    Float(f64),
    /// A `str`. An escaped lone surrogate, which a Rust string cannot hold, becomes U+FFFD;
    /// such a string never equals a key or name the caller looks for (all ASCII), so no
    /// decision changes, but it is not echoed byte for byte.
    Str(String),
    /// A `list`.
    Array(Vec<Loaded>),
    /// A `dict`, as its members appear in the text (a repeated key appears twice; see
    /// [`Loaded::get`]).
    Object(Vec<(String, Loaded)>),
}

impl Loaded {
    /// The value of `key` in an object: the last one for a repeated key, as Python's `dict`
    /// keeps it. `None` for a missing key or a non-object.
    pub fn get(&self, key: &str) -> Option<&Loaded> {
        match self {
            Loaded::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|m| &m.1),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Loaded::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Why [`loads`] refused a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadsError {
    /// Python raises `JSONDecodeError` at this byte offset.
    Syntax {
        /// Byte offset of the offending character.
        at: usize,
    },
    /// An integer longer than [`MAX_INT_DIGITS`] (Python: `ValueError`).
    IntTooLong,
    /// Nested deeper than [`MAX_DEPTH`] (Python: `RecursionError`, somewhat deeper).
    TooDeep,
}

impl fmt::Display for LoadsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadsError::Syntax { at } => write!(f, "invalid JSON at byte {at}"),
            LoadsError::IntTooLong => {
                write!(f, "integer longer than {MAX_INT_DIGITS} digits")
            }
            LoadsError::TooDeep => write!(f, "JSON nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

impl std::error::Error for LoadsError {}

/// `json.loads(text)`.
///
/// ```
/// use herald_core::pyjson::{Loaded, loads};
/// let v = loads(r#"{"task_id": 1E2, "x": NaN}"#).unwrap();
/// assert_eq!(v.get("task_id"), Some(&Loaded::Float(100.0)));
/// assert!(loads("[1,]").is_err());
/// ```
///
/// # Errors
/// [`LoadsError`] where Python raises, and beyond [`MAX_DEPTH`].
pub fn loads(text: &str) -> Result<Loaded, LoadsError> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    let v = p.document()?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(p.err());
    }
    Ok(v)
}

/// An array or object being filled; for an object, the key whose value is being parsed.
enum Open {
    Array(Vec<Loaded>),
    Object(Vec<(String, Loaded)>, String),
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn err(&self) -> LoadsError {
        LoadsError::Syntax { at: self.i }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Python's `WHITESPACE`: space, tab, newline, carriage return only.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// One value with everything nested in it, without recursion: `open` holds the arrays and
    /// objects not closed yet.
    fn document(&mut self) -> Result<Loaded, LoadsError> {
        let mut open: Vec<Open> = Vec::new();
        'value: loop {
            self.skip_ws();
            let mut done = match self.peek() {
                Some(b'[') | Some(b'{') => {
                    // Python enters a recursion level for every array and object, empty or not.
                    if open.len() >= MAX_DEPTH {
                        return Err(LoadsError::TooDeep);
                    }
                    let is_array = self.peek() == Some(b'[');
                    self.i += 1;
                    self.skip_ws();
                    match (is_array, self.peek()) {
                        (true, Some(b']')) => {
                            self.i += 1;
                            Loaded::Array(Vec::new())
                        }
                        (false, Some(b'}')) => {
                            self.i += 1;
                            Loaded::Object(Vec::new())
                        }
                        (true, _) => {
                            open.push(Open::Array(Vec::new()));
                            continue 'value;
                        }
                        (false, _) => {
                            let key = self.key()?;
                            open.push(Open::Object(Vec::new(), key));
                            continue 'value;
                        }
                    }
                }
                _ => self.scalar()?,
            };
            // `done` is complete: hand it to the innermost open container, closing every
            // container that ends right after it.
            loop {
                let Some(top) = open.last_mut() else {
                    return Ok(done);
                };
                match top {
                    Open::Array(items) => items.push(done),
                    Open::Object(members, key) => members.push((std::mem::take(key), done)),
                }
                self.skip_ws();
                match (self.peek(), top) {
                    (Some(b','), Open::Array(_)) => {
                        self.i += 1;
                        continue 'value;
                    }
                    (Some(b','), Open::Object(_, key)) => {
                        self.i += 1;
                        self.skip_ws();
                        *key = self.key()?;
                        continue 'value;
                    }
                    (Some(b']'), Open::Array(_)) | (Some(b'}'), Open::Object(..)) => {
                        self.i += 1;
                        done = match open.pop() {
                            Some(Open::Array(items)) => Loaded::Array(items),
                            Some(Open::Object(members, _)) => Loaded::Object(members),
                            None => unreachable!("`top` was borrowed from `open`"),
                        };
                    }
                    _ => return Err(self.err()),
                }
            }
        }
    }

    /// `"key"` then `:`, leaving the position at the value.
    fn key(&mut self) -> Result<String, LoadsError> {
        if self.peek() != Some(b'"') {
            return Err(self.err());
        }
        let key = self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.err());
        }
        self.i += 1;
        Ok(key)
    }

    /// Anything but an array or object; mirrors `scan_once_unicode`'s dispatch on the first
    /// character (so `nullx` is `null` followed by extra data, as in Python).
    fn scalar(&mut self) -> Result<Loaded, LoadsError> {
        match self.peek() {
            Some(b'"') => self.string().map(Loaded::Str),
            Some(b'n') if self.eat("null") => Ok(Loaded::Null),
            Some(b't') if self.eat("true") => Ok(Loaded::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Loaded::Bool(false)),
            Some(b'N') if self.eat("NaN") => Ok(Loaded::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(Loaded::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(Loaded::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err()),
        }
    }

    /// `_match_number_unicode`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`, where a
    /// fraction or exponent that is not complete is left for the caller (and then fails there).
    fn number(&mut self) -> Result<Loaded, LoadsError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while let Some(b'0'..=b'9') = p.peek() {
                p.i += 1;
            }
            p.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => {
                self.i = start;
                return Err(self.err());
            }
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') && matches!(self.s.get(self.i + 1), Some(b'0'..=b'9')) {
            self.i += 1;
            digits(self);
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            let e_start = self.i;
            self.i += 1;
            if let Some(b'-' | b'+') = self.peek() {
                self.i += 1;
            }
            if digits(self) > 0 {
                is_float = true;
            } else {
                self.i = e_start;
            }
        }
        let literal = &self.text[start..self.i];
        if is_float {
            // Rust's parse is correctly rounded like Python's `float()`, and gives ±inf / ±0.0
            // out of range as Python does.
            return literal
                .parse::<f64>()
                .map(Loaded::Float)
                .map_err(|_| LoadsError::Syntax { at: start });
        }
        let magnitude = literal.trim_start_matches('-');
        if magnitude.len() > MAX_INT_DIGITS {
            return Err(LoadsError::IntTooLong);
        }
        Ok(Loaded::Int(if magnitude == "0" {
            "0".to_owned()
        } else {
            literal.to_owned()
        }))
    }

    /// A string starting at its opening quote (`scanstring_unicode`, strict).
    fn string(&mut self) -> Result<String, LoadsError> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let run = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // Only ASCII bytes stop the scan, so `run..i` is on char boundaries.
            out.push_str(&self.text[run..self.i]);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let unit = self.hex4()?;
                            out.push(self.unicode_escape(unit)?);
                            continue;
                        }
                        _ => return Err(self.err()),
                    };
                    self.i += 1;
                    out.push(c);
                }
                // A control character, or the text ended inside the string.
                _ => return Err(self.err()),
            }
        }
    }

    /// The four hex digits after `\u`.
    fn hex4(&mut self) -> Result<u32, LoadsError> {
        let hex = self.s.get(self.i..self.i + 4).ok_or_else(|| self.err())?;
        let mut unit = 0;
        for &h in hex {
            let d = (h as char).to_digit(16).ok_or_else(|| self.err())?;
            unit = unit * 16 + d;
        }
        self.i += 4;
        Ok(unit)
    }

    /// The character of a `\uXXXX` escape already read: a high surrogate directly followed by
    /// an escaped low one is one character, as in Python; any other surrogate is lone.
    fn unicode_escape(&mut self, unit: u32) -> Result<char, LoadsError> {
        if (0xd800..0xdc00).contains(&unit) && self.s[self.i..].starts_with(b"\\u") {
            let back = self.i;
            self.i += 2;
            let low = self.hex4()?;
            if (0xdc00..0xe000).contains(&low) {
                let c = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                return Ok(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            // Not a pair: the second escape is read again on its own.
            self.i = back;
        }
        Ok(char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Loaded {
        loads(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn float(text: &str) -> f64 {
        match ok(text) {
            Loaded::Float(f) => f,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    /// Accepted and refused texts as CPython 3.11.7's `json.loads` decides:
    /// `python3 -c 'import json,sys; json.loads(sys.argv[1])' TEXT`.
    #[test]
    fn accepts_and_refuses_like_python() {
        for text in [
            "NaN",
            "Infinity",
            "-Infinity ",
            "1e400",
            " 1 ",
            "-0",
            "0.1e1",
            "1E+2",
            "\"\\ud800\"",
            "\"\\udc00\\ud800\"",
            "\"\u{7f}\u{e9}\"",
            "\"a\\/b\"",
            "{\"a\":1,\"a\":2}",
            "[[], {}, [null, true, false]]",
            "\r\n\t[1]\n",
        ] {
            ok(text);
        }
        for text in [
            "",
            "nan",
            "inf",
            "+1",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "-NaN",
            "[1,]",
            "{\"a\":1,}",
            "{'a':1}",
            "{1:2}",
            "\u{feff}1",
            "\"\t\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"abc",
            "\"\\ud800\\uzzzz\"",
            "tRue",
            "nullx",
            "1_0",
            "0x10",
            "\u{ff11}",
            "[1]]",
            "{}{}",
            "\u{a0}1",
            "[",
        ] {
            assert!(loads(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn numbers_are_python_ints_and_floats() {
        assert_eq!(ok("42"), Loaded::Int("42".into()));
        assert_eq!(ok("-0"), Loaded::Int("0".into()));
        assert_eq!(ok("-12"), Loaded::Int("-12".into()));
        let big = "123456789012345678901234567890";
        assert_eq!(ok(big), Loaded::Int(big.into()));
        assert_eq!(float("1E2"), 100.0);
        assert_eq!(float("1e400"), f64::INFINITY);
        assert_eq!(float("-1e400"), f64::NEG_INFINITY);
        assert_eq!(float("1e-400"), 0.0);
        assert!(float("-0.0").is_sign_negative());
        assert!(float("NaN").is_nan());
        assert_eq!(float("0.1"), 0.1);
        // Python: 4300 digits are an int, 4301 raise ValueError; floats have no such limit.
        assert!(matches!(ok(&"1".repeat(4300)), Loaded::Int(_)));
        assert!(matches!(
            ok(&format!("-{}", "1".repeat(4300))),
            Loaded::Int(_)
        ));
        assert_eq!(loads(&"1".repeat(4301)), Err(LoadsError::IntTooLong));
        assert_eq!(float(&format!("{}.0", "1".repeat(4300))), f64::INFINITY);
    }

    #[test]
    fn strings_decode_escapes_and_pairs() {
        assert_eq!(ok(r#""\ud83d\ude00""#), Loaded::Str("\u{1f600}".into()));
        assert_eq!(ok(r#""\uDBFF\uDFFF""#), Loaded::Str("\u{10ffff}".into()));
        assert_eq!(ok(r#""\u00e9\n\"""#), Loaded::Str("\u{e9}\n\"".into()));
        assert_eq!(ok(r#""\ud800\n""#), Loaded::Str("\u{fffd}\n".into()));
        assert_eq!(
            ok(r#""\udc00\ud800x""#),
            Loaded::Str("\u{fffd}\u{fffd}x".into())
        );
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let v = ok(r#"{"action": "ping", "b": 2, "action": "subscribe"}"#);
        assert_eq!(v.get("action").and_then(Loaded::as_str), Some("subscribe"));
        assert_eq!(v.get("missing"), None);
        assert_eq!(ok("[1]").get("action"), None);
    }

    #[test]
    fn nesting_is_bounded_without_using_the_stack() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        ok(&nested(200));
        ok(&nested(MAX_DEPTH));
        assert_eq!(loads(&nested(MAX_DEPTH + 1)), Err(LoadsError::TooDeep));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        ok(&objects);
        // Far beyond the bound: refused, never a stack overflow.
        assert_eq!(loads(&"[".repeat(1_000_000)), Err(LoadsError::TooDeep));
    }
}
