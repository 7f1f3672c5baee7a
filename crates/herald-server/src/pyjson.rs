//! JSON text exactly as Python's `json.dumps(obj)` writes it with default arguments.
//!
//! Channels consumers send `json.dumps(...)` (and `AsyncJsonWebsocketConsumer.encode_json` is
//! `json.dumps`), so browsers have always received `{"type": "pong"}` with `", "` / `": "`
//! separators, `ensure_ascii=True` escapes and Python's float `repr`. Herald writes the same
//! bytes so a client (or a test) comparing frames cannot tell the servers apart.

use std::fmt::Write as _;

use herald_core::{Map, Value};

pub(crate) use herald_core::pyjson::{write_float, write_str};

/// A channel-layer value as `json.dumps` would write it. `bytes` (which `json.dumps` refuses)
/// become an array of numbers, like [`Value::to_json`].
pub(crate) fn write_value(out: &mut String, v: &Value) {
    match v {
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
        Value::Bytes(b) => {
            out.push('[');
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{byte}");
            }
            out.push(']');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Map(m) => write_map(out, m, None),
    }
}

/// A map, optionally replacing the value of `"type"` (kept in its position).
pub(crate) fn write_map(out: &mut String, m: &Map, type_override: Option<&str>) {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        match type_override {
            Some(t) if k == "type" => write_str(out, t),
            _ => write_value(out, v),
        }
    }
    out.push('}');
}

/// A `serde_json` value as `json.dumps` would write it (insertion order kept).
pub(crate) fn write_json(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
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
        J::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        J::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_json(out, v);
            }
            out.push('}');
        }
    }
}

/// `json.dumps(value)` for a `serde_json` value.
pub(crate) fn dumps(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(f: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, f);
        s
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
            assert_eq!(float(f), expected, "{f}");
        }
    }

    /// Expected strings are `json.dumps(...)` from CPython 3.11.7.
    #[test]
    fn strings_and_objects_match_json_dumps() {
        let v = serde_json::json!({"type": "pong", "msg": "caf\u{e9} \u{1f600}\n\"x\"\u{7f}", "n": [1, 2.5, null, true]});
        assert_eq!(
            dumps(&v),
            r#"{"type": "pong", "msg": "caf\u00e9 \ud83d\ude00\n\"x\"\u007f", "n": [1, 2.5, null, true]}"#
        );
        assert_eq!(dumps(&serde_json::json!({})), "{}");
        assert_eq!(dumps(&serde_json::json!([])), "[]");
    }

    #[test]
    fn map_type_override_keeps_position() {
        let mut m = Map::new();
        m.insert("a".into(), Value::Int(1));
        m.insert("type".into(), Value::from("user.message"));
        m.insert("b".into(), Value::Bytes(vec![1, 2]));
        let mut out = String::new();
        write_map(&mut out, &m, Some("user_message"));
        assert_eq!(out, r#"{"a": 1, "type": "user_message", "b": [1, 2]}"#);
    }
}
