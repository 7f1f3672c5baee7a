//! Python's `json` text both ways.
//!
//! Writing: the one `json.dumps` writer of the workspace (default arguments: `", "`/`": "`
//! separators, strings with `ensure_ascii=True` escapes, floats as `repr(float)`, `NaN` and
//! `Infinity` allowed). It serves the Redis layer's `json` serializer (bytes stored in Redis)
//! and the server's frames (bytes sent to browsers), which must both match Python byte for
//! byte. The two differ only on `bytes`, which `json.dumps` refuses: the serializer refuses them
//! too ([`RefuseBytes`]), a frame writes them as an array of numbers ([`BytesAsNumbers`]).
//! [`write_value`] and [`write_map`] write a [`Value`], [`write_serde`] a `serde_json` value and
//! [`dumps`] a [`Loaded`] one; all three share [`write_str`], [`write_float`] and the separators.
//!
//! Reading: [`loads`], what Python's `json.loads` accepts and returns, for text that clients
//! send to a Python consumer.

use std::convert::Infallible;
use std::fmt::{self, Write as _};

use crate::value::{Map, Value};

mod loads;

pub use loads::{Loaded, LoadsError, MAX_DEPTH, MAX_INT_DIGITS, loads};

/// How the writer handles a `bytes` value, which Python's `json.dumps` refuses.
pub trait BytesPolicy {
    /// What writing bytes can fail with ([`Infallible`] when it cannot).
    type Error;
    /// Writes `bytes` or refuses them.
    ///
    /// # Errors
    /// [`Self::Error`] when the policy refuses bytes.
    fn write_bytes(out: &mut String, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Bytes are refused, as Python does: what the layer's `json` serializer stores must be what
/// Python's `json.dumps` could have written.
#[derive(Debug, Clone, Copy)]
pub enum RefuseBytes {}

impl BytesPolicy for RefuseBytes {
    type Error = BytesRefused;
    fn write_bytes(_: &mut String, _: &[u8]) -> Result<(), BytesRefused> {
        Err(BytesRefused)
    }
}

/// Bytes become an array of their numbers (`b"\x01\x02"` → `[1, 2]`), like
/// [`Value::to_json`]: a frame to a browser carries whatever a layer message holds.
#[derive(Debug, Clone, Copy)]
pub enum BytesAsNumbers {}

impl BytesPolicy for BytesAsNumbers {
    type Error = Infallible;
    fn write_bytes(out: &mut String, bytes: &[u8]) -> Result<(), Infallible> {
        write_array(out, bytes, |out, byte| {
            let _ = write!(out, "{byte}");
            Ok(())
        })
    }
}

/// A `bytes` value met under [`RefuseBytes`]; Python raises "Object of type bytes is not JSON
/// serializable".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesRefused;

impl fmt::Display for BytesRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes cannot be serialized as JSON")
    }
}

impl std::error::Error for BytesRefused {}

/// `json.dumps(value)` of a channel-layer value, bytes handled by `B`.
///
/// # Errors
/// `B::Error` for a [`Value::Bytes`] that `B` refuses.
pub fn write_value<B: BytesPolicy>(out: &mut String, value: &Value) -> Result<(), B::Error> {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) => B::write_bytes(out, b)?,
        Value::Array(items) => write_array(out, items, write_value::<B>)?,
        Value::Map(map) => write_map::<B>(out, map, None)?,
    }
    Ok(())
}

/// `json.dumps(map)`, optionally with the value of `"type"` replaced by `type_override` (kept in
/// its position): what a consumer's `json.dumps({**event, "type": ...})` writes.
///
/// # Errors
/// As [`write_value`].
pub fn write_map<B: BytesPolicy>(
    out: &mut String,
    map: &Map,
    type_override: Option<&str>,
) -> Result<(), B::Error> {
    out.push('{');
    write_members::<B>(out, map, type_override)?;
    out.push('}');
    Ok(())
}

/// The members of [`write_map`] without the braces (`"a": 1, "b": 2`), for a writer that
/// appends members of its own (the layer's `__asgi_channel__`).
///
/// # Errors
/// As [`write_value`].
pub fn write_members<B: BytesPolicy>(
    out: &mut String,
    map: &Map,
    type_override: Option<&str>,
) -> Result<(), B::Error> {
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        match type_override {
            Some(t) if k == "type" => write_str(out, t),
            _ => write_value::<B>(out, v)?,
        }
    }
    Ok(())
}

/// `json.dumps(value)` of a `serde_json` value (insertion order kept).
pub fn write_serde(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value as J;
    match value {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                write_float(out, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        J::String(s) => write_str(out, s),
        J::Array(items) => {
            let Ok(()) = write_array(out, items, |out, item| {
                write_serde(out, item);
                Ok::<(), Infallible>(())
            });
        }
        J::Object(members) => {
            let Ok(()) = write_object(
                out,
                members.iter().map(|(k, v)| (k.as_str(), v)),
                |out, v| {
                    write_serde(out, v);
                    Ok::<(), Infallible>(())
                },
            );
        }
    }
}

/// [`write_serde`] into a new string.
pub fn dumps_serde(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_serde(&mut out, value);
    out
}

/// `[a, b]`: Python's item separator.
fn write_array<T, E>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut write_item: impl FnMut(&mut String, T) -> Result<(), E>,
) -> Result<(), E> {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_item(out, item)?;
    }
    out.push(']');
    Ok(())
}

/// `{"k": v}`: Python's item and key separators.
fn write_object<'a, T, E>(
    out: &mut String,
    members: impl IntoIterator<Item = (&'a str, T)>,
    mut write_member: impl FnMut(&mut String, T) -> Result<(), E>,
) -> Result<(), E> {
    out.push('{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_member(out, v)?;
    }
    out.push('}');
    Ok(())
}

/// `json.dumps` of a string (`ensure_ascii=True`): everything outside `' '..='~'` is escaped.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python `float.__repr__` (`json.dumps` uses it): shortest round-trip digits, scientific
/// notation when the decimal exponent is `< -4` or `>= 16`, `NaN`/`Infinity` for non-finite.
pub fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits too: "d.ddde<exp>".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = usize::try_from(exp).unwrap_or(0) + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    }
}

/// [`write_float`] into a new string: Python's `repr(f)`.
pub fn float_repr(f: f64) -> String {
    let mut out = String::new();
    write_float(&mut out, f);
    out
}

/// Python's `str(f)` (what an f-string writes): `repr(f)` except `nan`, `inf` and `-inf`
/// where `json.dumps` writes `NaN`, `Infinity` and `-Infinity`.
pub fn float_str(f: f64) -> String {
    if f.is_nan() {
        "nan".to_owned()
    } else if f.is_infinite() {
        (if f > 0.0 { "inf" } else { "-inf" }).to_owned()
    } else {
        float_repr(f)
    }
}

/// `json.dumps(value)` of a [`Loaded`] value (default arguments). A string that had a lone
/// surrogate is written with U+FFFD in its place (see [`Loaded::Str`]).
pub fn dumps(value: &Loaded) -> String {
    let mut out = String::new();
    write_loaded(&mut out, value);
    out
}

fn write_loaded(out: &mut String, value: &Loaded) {
    match value {
        Loaded::Null => out.push_str("null"),
        Loaded::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Loaded::Int(digits) => out.push_str(digits),
        Loaded::Float(f) => write_float(out, *f),
        Loaded::Str(s) => write_str(out, s),
        Loaded::Array(items) => {
            let Ok(()) = write_array(out, items, |out, item| {
                write_loaded(out, item);
                Ok::<(), Infallible>(())
            });
        }
        Loaded::Object(members) => {
            let Ok(()) = write_object(
                out,
                members.iter().map(|(k, v)| (k.as_str(), v)),
                |out, v| {
                    write_loaded(out, v);
                    Ok::<(), Infallible>(())
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        for (f, want) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float_repr(f), want);
        }
    }

    /// `str(f)` from CPython 3.11.7: what `f"task_{f}"` writes.
    #[test]
    fn float_str_is_python_str() {
        for (f, want) in [
            (100.0, "100.0"),
            (1.5, "1.5"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (1e-5, "1e-05"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(float_str(f), want);
        }
    }

    /// `json.dumps(json.loads(text))` from CPython 3.11.7.
    #[test]
    fn dumps_of_loads_matches_python() {
        for (text, want) in [
            (
                r#"{"task_id":1E2,"n":[NaN,-Infinity,1e400,-0,-0.0]}"#,
                r#"{"task_id": 100.0, "n": [NaN, -Infinity, Infinity, 0, -0.0]}"#,
            ),
            (r#""caf\u00e9 \ud83d\ude00""#, r#""caf\u00e9 \ud83d\ude00""#),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("[{}, [], null, true]", "[{}, [], null, true]"),
        ] {
            assert_eq!(dumps(&loads(text).unwrap()), want, "{text}");
        }
    }

    #[test]
    fn strings_escape_like_ensure_ascii() {
        let mut out = String::new();
        write_str(&mut out, "a\"\u{e9}\u{1f600}\n");
        assert_eq!(out, r#""a\"\u00e9\ud83d\ude00\n""#);
    }

    /// Expected strings are `repr(f)` from CPython 3.11.7.
    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (100.0, "100.0"),
        ];
        for (f, expected) in cases {
            assert_eq!(float_repr(f), expected, "{f}");
        }
    }

    /// Expected strings are `json.dumps(...)` from CPython 3.11.7.
    #[test]
    fn serde_strings_and_objects_match_json_dumps() {
        let v = serde_json::json!({"type": "pong", "msg": "caf\u{e9} \u{1f600}\n\"x\"\u{7f}", "n": [1, 2.5, null, true]});
        assert_eq!(
            dumps_serde(&v),
            r#"{"type": "pong", "msg": "caf\u00e9 \ud83d\ude00\n\"x\"\u007f", "n": [1, 2.5, null, true]}"#
        );
        assert_eq!(dumps_serde(&serde_json::json!({})), "{}");
        assert_eq!(dumps_serde(&serde_json::json!([])), "[]");
    }

    fn typed_map() -> Map {
        let mut m = Map::new();
        m.insert("a".into(), Value::Int(1));
        m.insert("type".into(), Value::from("user.message"));
        m.insert("b".into(), Value::Bytes(vec![1, 2]));
        m
    }

    #[test]
    fn map_type_override_keeps_position() {
        let mut out = String::new();
        let Ok(()) = write_map::<BytesAsNumbers>(&mut out, &typed_map(), Some("user_message"));
        assert_eq!(out, r#"{"a": 1, "type": "user_message", "b": [1, 2]}"#);
    }

    /// Python: `json.dumps({"b": b"x"})` raises `TypeError`.
    #[test]
    fn refuse_bytes_refuses_nested_bytes() {
        let mut out = String::new();
        let nested = Value::Array(vec![Value::Int(1), Value::Map(typed_map())]);
        assert_eq!(
            write_value::<RefuseBytes>(&mut out, &nested),
            Err(BytesRefused)
        );
        let mut out = String::new();
        write_value::<RefuseBytes>(&mut out, &Value::Array(vec![Value::Nil, Value::from("x")]))
            .unwrap();
        assert_eq!(out, r#"[null, "x"]"#);
    }
}
