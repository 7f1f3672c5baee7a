//! Python objects to [`Value`] and back, with the rules of the msgpack that channels_redis
//! uses: `msgpack.packb(message, use_bin_type=True)` on the way in, `msgpack.unpackb(raw=False)`
//! on the way out.
//!
//! In: `None`, `bool`, `int` (−2⁶³ … 2⁶⁴−1, else `OverflowError` as msgpack raises), `float`,
//! `str`, `bytes`/`bytearray`/`memoryview` (bin), `list`/`tuple` (array), `dict` with `str`
//! keys; anything else is a `TypeError` naming the type, as msgpack's "can not serialize". A
//! non-`str` key is refused at once (Python's `packb` would write it and every receiver's
//! `unpackb(strict_map_key=True)` would then fail on it).
//! Out: a `dict`, with lists for arrays (`use_list=True`).

use herald_core::{Map, Message, Value};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

/// Deepest nesting accepted, the limit herald-redis's decoder applies to what it reads.
const MAX_DEPTH: usize = herald_redis::internals::MAX_DEPTH;

/// A message dict as a [`Message`].
///
/// # Errors
/// `AssertionError` if it is not a `dict` (channels_redis: "message is not a dict"), else
/// the errors of the values.
pub(crate) fn message_from_py(message: &Bound<'_, PyAny>) -> PyResult<Message> {
    let Ok(dict) = message.cast::<PyDict>() else {
        return Err(pyo3::exceptions::PyAssertionError::new_err(
            "message is not a dict",
        ));
    };
    Ok(Message::from(map_from_py(dict, 0)?))
}

fn map_from_py(dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<Map> {
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "message keys must be str, not {}",
                key.get_type().name()?
            )));
        };
        map.insert(key.to_str()?.to_owned(), value_from_py(&value, depth + 1)?);
    }
    Ok(map)
}

fn value_from_py(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "message nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Nil);
    }
    // Checked before int: bool is an int subclass.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_str()?.to_owned()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::UInt(u));
        }
        return Err(PyOverflowError::new_err("Integer value out of range"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(Value::Map(map_from_py(d, depth)?));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list
            .iter()
            .map(|item| value_from_py(&item, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|item| value_from_py(&item, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let bytes = obj.call_method0(pyo3::intern!(obj.py(), "tobytes"))?;
        return Ok(Value::Bytes(bytes.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "can not serialize {:?} object",
        obj.get_type().name()?.to_string()
    )))
}

/// A received message as a `dict`.
pub(crate) fn message_to_py<'py>(
    py: Python<'py>,
    message: &Message,
) -> PyResult<Bound<'py, PyDict>> {
    map_to_py(py, message.map())
}

fn map_to_py<'py>(py: Python<'py>, map: &Map) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(PyString::new(py, key), value_to_py(py, value)?)?;
    }
    Ok(dict)
}

fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Nil => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(map) => map_to_py(py, map)?.into_any(),
    })
}

/// A `str` as UTF-8 or `bytes` as they are (what channels_redis hashes).
pub(crate) fn str_or_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err("expected str or bytes"))
}
