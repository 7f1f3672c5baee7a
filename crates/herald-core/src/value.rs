//! [`Value`]: every value a Python peer can put in a channel-layer message.
//!
//! channels_redis packs messages with `msgpack.packb(use_bin_type=True)` and unpacks them with
//! `raw=False, strict_map_key=True`, so on the wire a Python `str` and `bytes` are different types,
//! ints keep their sign and width, floats are float64, and map keys are always strings. `Value`
//! keeps exactly those distinctions so a message can cross Rust unchanged and go back to Python.

use indexmap::IndexMap;

/// An ordered map with string keys, the shape of every message and nested dict.
///
/// Insertion order is kept because Python dicts keep it and msgpack writes maps in that order;
/// byte-identical re-encoding depends on it.
pub type Map = IndexMap<String, Value>;

/// A msgpack value as Python's `msgpack` 1.x produces and accepts it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// Python `None` (msgpack nil).
    #[default]
    Nil,
    /// Python `bool`.
    Bool(bool),
    /// A Python `int` in `i64` range.
    Int(i64),
    /// A Python `int` in `(i64::MAX, u64::MAX]`, which msgpack stores as uint64.
    UInt(u64),
    /// Python `float` (msgpack float64; float32 is widened when decoded).
    Float(f64),
    /// Python `str` (msgpack str family).
    Str(String),
    /// Python `bytes` (msgpack bin family).
    Bytes(Vec<u8>),
    /// Python `list` or `tuple` (msgpack array).
    Array(Vec<Value>),
    /// Python `dict` with `str` keys (msgpack map).
    Map(Map),
}

impl Value {
    /// The string inside a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside a [`Value::Int`], or a [`Value::UInt`] that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The bytes inside a [`Value::Bytes`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The map inside a [`Value::Map`].
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The elements of a [`Value::Array`].
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// True for [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// Converts to JSON the way a browser-facing consumer sends it (`json.dumps` of the dict).
    ///
    /// JSON has no bytes type; [`Value::Bytes`] becomes an array of numbers, and non-finite floats
    /// (which `json.dumps` writes as the non-standard `NaN`/`Infinity`) become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// Converts from JSON: integers stay integers, other numbers become floats.
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i.into())
    }
}

impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Value::UInt(u), Value::Int)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Nil, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_ints_and_order() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"z":1,"a":[1.5,null,true],"m":{"k":"v"}}"#).unwrap();
        let value = Value::from_json(&json);
        let Value::Map(map) = &value else {
            panic!("not a map")
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(map["z"], Value::Int(1));
        assert_eq!(value.to_json(), json);
    }

    #[test]
    fn bytes_become_number_arrays_in_json() {
        assert_eq!(
            Value::Bytes(vec![0, 255]).to_json(),
            serde_json::json!([0, 255])
        );
    }

    #[test]
    fn large_unsigned_stays_unsigned() {
        assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
        assert_eq!(Value::from(5u64), Value::Int(5));
    }
}
