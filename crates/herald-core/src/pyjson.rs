//! Python's `json` text both ways.
//!
//! Writing: the `json.dumps` primitives, strings with `ensure_ascii=True` escapes and floats as
//! `repr(float)`. Shared by the Redis layer's `json` serializer (bytes stored in Redis) and the
//! server's frames (bytes sent to browsers), which must both match Python byte for byte; [`dumps`]
//! writes a [`Loaded`] value with them.
//!
//! Reading: [`loads`], what Python's `json.loads` accepts and returns, for text that clients
//! send to a Python consumer.

use std::fmt::Write as _;

mod loads;

pub use loads::{Loaded, LoadsError, MAX_DEPTH, MAX_INT_DIGITS, loads};

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
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_loaded(out, item);
            }
            out.push(']');
        }
        Loaded::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_loaded(out, v);
            }
            out.push('}');
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
}
