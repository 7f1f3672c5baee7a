//! The stored-message envelope, byte for byte as `channels_redis/serializers.py` (4.2.1+)
//! builds it:
//!
//! `serialize(msg)` = body (msgpack or JSON) → Fernet token if keys are configured → prepend
//! `random_prefix_length` random bytes (default 12; the prefix keeps identical messages from
//! collapsing into one sorted-set member). `deserialize` strips the prefix blindly, decrypts
//! with TTL `expiry + 10`, then parses.
//!
//! * msgpack is written by hand to match `msgpack.packb(obj, use_bin_type=True)` (msgpack-python
//!   1.x): smallest int forms, float64 always, `str` → str family, `bytes` → bin family, maps in
//!   insertion order. Decoding matches `unpackb(raw=False, strict_map_key=True)`: str must be
//!   UTF-8, map keys must be strings, float32 is widened, trailing bytes are an error.
//! * JSON matches `json.dumps(obj)` with Python's defaults: separators `", "`/`": "`,
//!   `ensure_ascii=True`, `allow_nan=True`, Python float `repr`; bytes cannot be encoded.
//!
//! Decoding failures are a small `Copy` enum ([`DecodeError`]) so the receive path can count
//! them by reason without allocating.

use std::time::Duration;

use herald_core::{ASGI_CHANNEL_KEY, Map, Message, Value};
use rand::RngCore as _;

use crate::error::{Error, ErrorKind, Result};
use crate::fernet::{FernetError, MultiFernet};

/// Default random prefix length (Python kwarg `random_prefix_length`).
pub(crate) const DEFAULT_RANDOM_PREFIX_LENGTH: usize = 12;
/// Bytes reserved up front for an encoded body: a typical `group_send` message (type, a short
/// text, a few fields) fits, so the common case allocates once.
const BODY_CAPACITY_HINT: usize = 64;
/// Deepest nesting accepted when decoding, to keep hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 512;

/// Which body format a layer writes (Python kwarg `serializer_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SerializerFormat {
    /// `"msgpack"` (the default): `msgpack.packb(use_bin_type=True)`.
    #[default]
    Msgpack,
    /// `"json"`: `json.dumps` with Python defaults; cannot carry bytes.
    Json,
}

impl SerializerFormat {
    /// Parses Python's registry name (`"msgpack"` or `"json"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "msgpack" => Some(SerializerFormat::Msgpack),
            "json" => Some(SerializerFormat::Json),
            _ => None,
        }
    }
}

/// Why a msgpack body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgpackError {
    /// The data ended inside a value.
    Truncated,
    /// A str was not valid UTF-8 (`raw=False` raises).
    InvalidUtf8,
    /// The reserved byte `0xc1`.
    ReservedByte,
    /// An ext type (Python would return `ExtType`/`Timestamp`, which a message cannot hold).
    UnsupportedExt,
    /// A map key that is not a str (`strict_map_key=True`; bin keys are also refused here
    /// because Herald's maps have string keys).
    NonStringKey,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Bytes left after the top-level value (Python raises `ExtraData`).
    TrailingBytes,
}

/// Why a stored member could not be turned into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the random prefix.
    ShortMember,
    /// The Fernet token was rejected.
    Fernet(FernetError),
    /// The msgpack body was invalid.
    Msgpack(MsgpackError),
    /// The JSON body was invalid.
    Json,
    /// The body was valid but not a map (Python messages are dicts).
    NotAMap,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::ShortMember => f.write_str("member shorter than the random prefix"),
            DecodeError::Fernet(e) => write!(f, "invalid fernet token ({e:?})"),
            DecodeError::Msgpack(e) => write!(f, "invalid msgpack ({e:?})"),
            DecodeError::Json => f.write_str("invalid json"),
            DecodeError::NotAMap => f.write_str("message is not a map"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Where a stored message is routed: the `__asgi_channel__` entry Python appends last.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// No entry (a `send` to a general channel).
    None,
    /// A string (a `send` to a specific channel).
    One(&'a str),
    /// A list (every `group_send` delivery, even to one or to general channels).
    Many(&'a [String]),
}

/// Encodes and decodes stored messages like channels_redis's serializer.
///
/// ```
/// use herald_core::Message;
/// use herald_redis::SerializerFormat;
/// use herald_redis::internals::Codec;
/// let codec = Codec::new(SerializerFormat::Msgpack, 12);
/// let bytes = codec.encode(&Message::with_type("x")).unwrap();
/// assert_eq!(&bytes[12..], b"\x81\xa4type\xa1x");
/// assert_eq!(codec.decode(&bytes).unwrap().msg_type(), Some("x"));
/// ```
#[derive(Debug, Clone)]
pub struct Codec {
    format: SerializerFormat,
    random_prefix_length: usize,
    fernet: Option<MultiFernet>,
    ttl_secs: Option<u64>,
}

impl Codec {
    /// A codec without encryption. `random_prefix_length` 0 means no prefix (PubSub).
    pub fn new(format: SerializerFormat, random_prefix_length: usize) -> Self {
        Codec {
            format,
            random_prefix_length,
            fernet: None,
            ttl_secs: None,
        }
    }

    /// Encrypts with a MultiFernet derived from `keys` (Python `symmetric_encryption_keys`);
    /// an empty list leaves encryption off.
    pub fn with_encryption_keys<S: AsRef<[u8]>>(mut self, keys: &[S]) -> Self {
        self.fernet = MultiFernet::from_secrets(keys);
        self
    }

    /// The Fernet TTL used when decrypting: `Some(expiry + 10 s)` in the core layer, `None`
    /// (no age check) in PubSub. Whole seconds, like Python.
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl_secs = ttl.map(|d| d.as_secs());
        self
    }

    /// The body format.
    pub fn format(&self) -> SerializerFormat {
        self.format
    }

    /// The random prefix length.
    pub fn random_prefix_length(&self) -> usize {
        self.random_prefix_length
    }

    /// True if messages are Fernet-encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.fernet.is_some()
    }

    /// Serializes a message (prefix + body or token).
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] for values the format cannot carry (bytes in JSON,
    /// lengths ≥ 2³²).
    pub fn encode(&self, message: &Message) -> Result<Vec<u8>> {
        self.encode_routed(message.map(), Target::None)
    }

    /// Serializes a message with `__asgi_channel__` appended as its last entry.
    pub fn encode_routed(&self, map: &Map, target: Target<'_>) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.random_prefix_length + BODY_CAPACITY_HINT);
        if self.random_prefix_length > 0 {
            out.resize(self.random_prefix_length, 0);
            rand::rng().fill_bytes(&mut out);
        }
        match &self.fernet {
            None => self.write_body(&mut out, map, target)?,
            Some(fernet) => {
                let mut body = Vec::with_capacity(BODY_CAPACITY_HINT);
                self.write_body(&mut body, map, target)?;
                out.extend_from_slice(fernet.encrypt(&body).as_bytes());
            }
        }
        Ok(out)
    }

    /// The msgpack map *entries* of `map` (no header), for scripts that assemble the envelope
    /// server-side; `None` if this codec does not write plain msgpack (JSON or encrypted).
    pub(crate) fn msgpack_entries(&self, map: &Map) -> Result<Option<Vec<u8>>> {
        if self.format != SerializerFormat::Msgpack || self.fernet.is_some() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(BODY_CAPACITY_HINT);
        for (k, v) in map {
            msgpack::pack_str(&mut out, k)?;
            msgpack::pack(&mut out, v)?;
        }
        Ok(Some(out))
    }

    /// Fresh random prefix bytes.
    pub(crate) fn random_prefix(&self) -> Vec<u8> {
        let mut out = vec![0; self.random_prefix_length];
        rand::rng().fill_bytes(&mut out);
        out
    }

    fn write_body(&self, out: &mut Vec<u8>, map: &Map, target: Target<'_>) -> Result<()> {
        match self.format {
            SerializerFormat::Msgpack => msgpack::write_message(out, map, target),
            SerializerFormat::Json => {
                let mut s = String::with_capacity(BODY_CAPACITY_HINT);
                json::write_message(&mut s, map, target)?;
                out.extend_from_slice(s.as_bytes());
                Ok(())
            }
        }
    }

    /// Deserializes a stored member into a message (with `__asgi_channel__` still in it).
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] wrapping the [`DecodeError`].
    pub fn decode(&self, data: &[u8]) -> Result<Message> {
        self.decode_detailed(data)
            .map_err(|e| Error::with_source(ErrorKind::Serialization, "cannot decode message", e))
    }

    /// Like [`decode`](Self::decode) but with the cheap reason, for counters.
    pub fn decode_detailed(&self, data: &[u8]) -> std::result::Result<Message, DecodeError> {
        if data.len() < self.random_prefix_length {
            return Err(DecodeError::ShortMember);
        }
        let body = &data[self.random_prefix_length..];
        let plain;
        let body = match &self.fernet {
            None => body,
            Some(fernet) => {
                plain = fernet
                    .decrypt(body, self.ttl_secs)
                    .map_err(DecodeError::Fernet)?;
                &plain[..]
            }
        };
        let value = match self.format {
            SerializerFormat::Msgpack => msgpack::unpack(body).map_err(DecodeError::Msgpack)?,
            SerializerFormat::Json => json::parse(body).ok_or(DecodeError::Json)?,
        };
        match value {
            Value::Map(map) => Ok(Message::from(map)),
            _ => Err(DecodeError::NotAMap),
        }
    }
}

fn serialization(message: &str) -> Error {
    Error::new(ErrorKind::Serialization, message)
}

/// msgpack as msgpack-python 1.x packs (`use_bin_type=True`) and unpacks
/// (`raw=False, strict_map_key=True`) it.
pub mod msgpack {
    use super::*;

    /// Packs one value, appending to `out`.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] if a str, bin, array or map has 2³² or more elements
    /// (Python raises `ValueError`).
    pub fn pack(out: &mut Vec<u8>, value: &Value) -> Result<()> {
        match value {
            Value::Nil => out.push(0xc0),
            Value::Bool(false) => out.push(0xc2),
            Value::Bool(true) => out.push(0xc3),
            Value::Int(i) => {
                if *i >= 0 {
                    pack_uint(out, *i as u64)
                } else {
                    pack_negative(out, *i)
                }
            }
            Value::UInt(u) => pack_uint(out, *u),
            Value::Float(f) => {
                out.push(0xcb);
                out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => pack_str(out, s)?,
            Value::Bytes(b) => {
                let n = len32(b.len())?;
                if n <= 0xff {
                    out.extend_from_slice(&[0xc4, n as u8]);
                } else if n <= 0xffff {
                    out.push(0xc5);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                } else {
                    out.push(0xc6);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                out.extend_from_slice(b);
            }
            Value::Array(items) => {
                pack_array_header(out, items.len())?;
                for item in items {
                    pack(out, item)?;
                }
            }
            Value::Map(map) => {
                pack_map_header(out, map.len())?;
                for (k, v) in map {
                    pack_str(out, k)?;
                    pack(out, v)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn write_message(out: &mut Vec<u8>, map: &Map, target: Target<'_>) -> Result<()> {
        let extra = usize::from(!matches!(target, Target::None));
        pack_map_header(out, map.len() + extra)?;
        for (k, v) in map {
            pack_str(out, k)?;
            pack(out, v)?;
        }
        match target {
            Target::None => {}
            Target::One(name) => {
                pack_str(out, ASGI_CHANNEL_KEY)?;
                pack_str(out, name)?;
            }
            Target::Many(names) => {
                pack_str(out, ASGI_CHANNEL_KEY)?;
                pack_array_header(out, names.len())?;
                for name in names {
                    pack_str(out, name)?;
                }
            }
        }
        Ok(())
    }

    fn len32(n: usize) -> Result<u32> {
        u32::try_from(n).map_err(|_| serialization("msgpack object too large (>= 2**32)"))
    }

    fn pack_uint(out: &mut Vec<u8>, u: u64) {
        if u < 0x80 {
            out.push(u as u8);
        } else if u <= 0xff {
            out.extend_from_slice(&[0xcc, u as u8]);
        } else if u <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    }

    fn pack_negative(out: &mut Vec<u8>, i: i64) {
        if i >= -32 {
            out.push(i as i8 as u8);
        } else if i >= i64::from(i8::MIN) {
            out.extend_from_slice(&[0xd0, i as i8 as u8]);
        } else if i >= i64::from(i16::MIN) {
            out.push(0xd1);
            out.extend_from_slice(&(i as i16).to_be_bytes());
        } else if i >= i64::from(i32::MIN) {
            out.push(0xd2);
            out.extend_from_slice(&(i as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    }

    pub(super) fn pack_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
        let n = len32(s.len())?;
        if n < 32 {
            out.push(0xa0 | n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xd9, n as u8]);
        } else if n <= 0xffff {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdb);
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn pack_array_header(out: &mut Vec<u8>, len: usize) -> Result<()> {
        let n = len32(len)?;
        if n < 16 {
            out.push(0x90 | n as u8);
        } else if n <= 0xffff {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdd);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Ok(())
    }

    fn pack_map_header(out: &mut Vec<u8>, len: usize) -> Result<()> {
        let n = len32(len)?;
        if n < 16 {
            out.push(0x80 | n as u8);
        } else if n <= 0xffff {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdf);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Ok(())
    }

    /// Unpacks exactly one value from `data`.
    ///
    /// # Errors
    /// A [`MsgpackError`]; bytes after the value are [`MsgpackError::TrailingBytes`].
    pub fn unpack(data: &[u8]) -> std::result::Result<Value, MsgpackError> {
        let mut reader = Reader { data, pos: 0 };
        let value = reader.value(0)?;
        if reader.pos != data.len() {
            return Err(MsgpackError::TrailingBytes);
        }
        Ok(value)
    }

    struct Reader<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], MsgpackError> {
            let end = self.pos.checked_add(n).ok_or(MsgpackError::Truncated)?;
            let slice = self
                .data
                .get(self.pos..end)
                .ok_or(MsgpackError::Truncated)?;
            self.pos = end;
            Ok(slice)
        }

        fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], MsgpackError> {
            let mut buf = [0u8; N];
            buf.copy_from_slice(self.take(N)?);
            Ok(buf)
        }

        fn u8(&mut self) -> std::result::Result<u8, MsgpackError> {
            Ok(self.array::<1>()?[0])
        }

        fn u16(&mut self) -> std::result::Result<usize, MsgpackError> {
            Ok(usize::from(u16::from_be_bytes(self.array()?)))
        }

        fn u32(&mut self) -> std::result::Result<usize, MsgpackError> {
            Ok(u32::from_be_bytes(self.array()?) as usize)
        }

        fn remaining(&self) -> usize {
            self.data.len() - self.pos
        }

        fn str(&mut self, n: usize) -> std::result::Result<String, MsgpackError> {
            let bytes = self.take(n)?;
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| MsgpackError::InvalidUtf8)
        }

        fn value(&mut self, depth: usize) -> std::result::Result<Value, MsgpackError> {
            if depth > MAX_DEPTH {
                return Err(MsgpackError::TooDeep);
            }
            let b = self.u8()?;
            Ok(match b {
                0x00..=0x7f => Value::Int(i64::from(b)),
                0x80..=0x8f => self.map(usize::from(b & 0x0f), depth)?,
                0x90..=0x9f => self.list(usize::from(b & 0x0f), depth)?,
                0xa0..=0xbf => Value::Str(self.str(usize::from(b & 0x1f))?),
                0xc0 => Value::Nil,
                0xc1 => return Err(MsgpackError::ReservedByte),
                0xc2 => Value::Bool(false),
                0xc3 => Value::Bool(true),
                0xc4 => {
                    let n = usize::from(self.u8()?);
                    Value::Bytes(self.take(n)?.to_vec())
                }
                0xc5 => {
                    let n = self.u16()?;
                    Value::Bytes(self.take(n)?.to_vec())
                }
                0xc6 => {
                    let n = self.u32()?;
                    Value::Bytes(self.take(n)?.to_vec())
                }
                0xc7..=0xc9 | 0xd4..=0xd8 => return Err(MsgpackError::UnsupportedExt),
                0xca => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
                0xcb => Value::Float(f64::from_be_bytes(self.array()?)),
                0xcc => Value::Int(i64::from(self.u8()?)),
                0xcd => Value::Int(i64::from(u16::from_be_bytes(self.array()?))),
                0xce => Value::Int(i64::from(u32::from_be_bytes(self.array()?))),
                0xcf => Value::from(u64::from_be_bytes(self.array()?)),
                0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
                0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
                0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
                0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
                0xd9 => {
                    let n = usize::from(self.u8()?);
                    Value::Str(self.str(n)?)
                }
                0xda => {
                    let n = self.u16()?;
                    Value::Str(self.str(n)?)
                }
                0xdb => {
                    let n = self.u32()?;
                    Value::Str(self.str(n)?)
                }
                0xdc => {
                    let n = self.u16()?;
                    self.list(n, depth)?
                }
                0xdd => {
                    let n = self.u32()?;
                    self.list(n, depth)?
                }
                0xde => {
                    let n = self.u16()?;
                    self.map(n, depth)?
                }
                0xdf => {
                    let n = self.u32()?;
                    self.map(n, depth)?
                }
                0xe0..=0xff => Value::Int(i64::from(b as i8)),
            })
        }

        fn list(&mut self, n: usize, depth: usize) -> std::result::Result<Value, MsgpackError> {
            // Every element takes at least one byte: never pre-allocate more than that.
            let mut items = Vec::with_capacity(n.min(self.remaining()));
            for _ in 0..n {
                items.push(self.value(depth + 1)?);
            }
            Ok(Value::Array(items))
        }

        fn map(&mut self, n: usize, depth: usize) -> std::result::Result<Value, MsgpackError> {
            let mut map = Map::with_capacity(n.min(self.remaining() / 2));
            for _ in 0..n {
                let key = match self.value(depth + 1)? {
                    Value::Str(s) => s,
                    _ => return Err(MsgpackError::NonStringKey),
                };
                let value = self.value(depth + 1)?;
                // Python dicts keep the first position and the last value of a repeated key,
                // and so does IndexMap::insert.
                map.insert(key, value);
            }
            Ok(Value::Map(map))
        }
    }
}

/// JSON as Python's `json.dumps` (defaults) writes it and `json.loads` reads it.
pub mod json {
    use super::*;

    use herald_core::pyjson::{RefuseBytes, write_members, write_str};

    /// The body of a stored message: `json.dumps` of `map` plus the `__asgi_channel__` member
    /// of `target`, written by the workspace's one `json.dumps` writer
    /// ([`herald_core::pyjson`]) with bytes refused, as Python refuses them.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] for [`Value::Bytes`] anywhere in `map` (Python: "Object of
    /// type bytes is not JSON serializable").
    pub(super) fn write_message(out: &mut String, map: &Map, target: Target<'_>) -> Result<()> {
        out.push('{');
        write_members::<RefuseBytes>(out, map, None)
            .map_err(|_| serialization("bytes cannot be serialized with the json serializer"))?;
        if !matches!(target, Target::None) {
            if !map.is_empty() {
                out.push_str(", ");
            }
            write_str(out, ASGI_CHANNEL_KEY);
            out.push_str(": ");
            match target {
                Target::None => {}
                Target::One(name) => write_str(out, name),
                Target::Many(names) => {
                    out.push('[');
                    for (i, name) in names.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        write_str(out, name);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        Ok(())
    }

    /// Parses a JSON document like Python's `json.loads`: integers (`-?(0|[1-9]\d*)` without
    /// fraction or exponent) stay integers, other numbers become floats, and `NaN`,
    /// `Infinity`, `-Infinity` are accepted. Returns `None` on invalid input.
    ///
    /// Differences left: integers beyond 64 bits and lone surrogate escapes (both valid for
    /// Python, not representable in [`Value`]) are rejected; nesting is limited to
    /// [`MAX_DEPTH`].
    pub fn parse(data: &[u8]) -> Option<Value> {
        let text = std::str::from_utf8(data).ok()?;
        let mut parser = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        parser.ws();
        let value = parser.value(0)?;
        parser.ws();
        (parser.pos == parser.s.len()).then_some(value)
    }

    struct Parser<'a> {
        s: &'a [u8],
        pos: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        fn eat(&mut self, lit: &str) -> bool {
            if self.s[self.pos..].starts_with(lit.as_bytes()) {
                self.pos += lit.len();
                true
            } else {
                false
            }
        }

        fn value(&mut self, depth: usize) -> Option<Value> {
            if depth > MAX_DEPTH {
                return None;
            }
            match *self.s.get(self.pos)? {
                b'{' => {
                    self.pos += 1;
                    let mut map = Map::new();
                    self.ws();
                    if self.eat("}") {
                        return Some(Value::Map(map));
                    }
                    loop {
                        self.ws();
                        if self.s.get(self.pos) != Some(&b'"') {
                            return None;
                        }
                        let key = self.string()?;
                        self.ws();
                        if !self.eat(":") {
                            return None;
                        }
                        self.ws();
                        let value = self.value(depth + 1)?;
                        map.insert(key, value);
                        self.ws();
                        if self.eat("}") {
                            return Some(Value::Map(map));
                        }
                        if !self.eat(",") {
                            return None;
                        }
                    }
                }
                b'[' => {
                    self.pos += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.eat("]") {
                        return Some(Value::Array(items));
                    }
                    loop {
                        self.ws();
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        if self.eat("]") {
                            return Some(Value::Array(items));
                        }
                        if !self.eat(",") {
                            return None;
                        }
                    }
                }
                b'"' => self.string().map(Value::Str),
                b'n' if self.eat("null") => Some(Value::Nil),
                b't' if self.eat("true") => Some(Value::Bool(true)),
                b'f' if self.eat("false") => Some(Value::Bool(false)),
                b'N' if self.eat("NaN") => Some(Value::Float(f64::NAN)),
                b'I' if self.eat("Infinity") => Some(Value::Float(f64::INFINITY)),
                b'-' if self.eat("-Infinity") => Some(Value::Float(f64::NEG_INFINITY)),
                b'-' | b'0'..=b'9' => self.number(),
                _ => None,
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
            while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                self.pos += 1;
            }
            self.pos - start
        }

        fn number(&mut self) -> Option<Value> {
            let start = self.pos;
            self.eat("-");
            let int_start = self.pos;
            let n = self.digits();
            // Python's NUMBER_RE: 0 or [1-9]\d*; "01" parses as 0 followed by junk.
            if n == 0 || (n > 1 && self.s[int_start] == b'0') {
                if n > 1 {
                    self.pos = int_start + 1;
                } else {
                    return None;
                }
            }
            let mut float = false;
            if self.s.get(self.pos) == Some(&b'.')
                && self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
            {
                self.pos += 1;
                self.digits();
                float = true;
            }
            if matches!(self.s.get(self.pos), Some(b'e' | b'E')) {
                let save = self.pos;
                self.pos += 1;
                if matches!(self.s.get(self.pos), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.digits() == 0 {
                    self.pos = save;
                } else {
                    float = true;
                }
            }
            let text = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
            if float {
                return text.parse::<f64>().ok().map(Value::Float);
            }
            if let Ok(i) = text.parse::<i64>() {
                return Some(Value::Int(i));
            }
            text.parse::<u64>().ok().map(Value::UInt)
        }

        fn hex4(&mut self) -> Option<u32> {
            let digits = self.s.get(self.pos..self.pos + 4)?;
            let text = std::str::from_utf8(digits).ok()?;
            let v = u32::from_str_radix(text, 16).ok()?;
            self.pos += 4;
            Some(v)
        }

        fn string(&mut self) -> Option<String> {
            self.pos += 1; // the opening quote
            let mut out = String::new();
            loop {
                let start = self.pos;
                while let Some(&b) = self.s.get(self.pos) {
                    // Python (strict=True) rejects raw control characters inside strings.
                    if b == b'"' || b == b'\\' || b < 0x20 {
                        break;
                    }
                    self.pos += 1;
                }
                out.push_str(std::str::from_utf8(&self.s[start..self.pos]).ok()?);
                match *self.s.get(self.pos)? {
                    b'"' => {
                        self.pos += 1;
                        return Some(out);
                    }
                    b'\\' => {
                        self.pos += 1;
                        let esc = *self.s.get(self.pos)?;
                        self.pos += 1;
                        match esc {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let hi = self.hex4()?;
                                let code = if (0xd800..0xdc00).contains(&hi) && self.eat("\\u") {
                                    let lo = self.hex4()?;
                                    if !(0xdc00..0xe000).contains(&lo) {
                                        return None;
                                    }
                                    0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                                } else {
                                    hi
                                };
                                out.push(char::from_u32(code)?);
                            }
                            _ => return None,
                        }
                    }
                    _ => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
