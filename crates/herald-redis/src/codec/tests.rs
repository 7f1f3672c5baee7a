//! Codec unit tests against golden bytes made by Python channels_redis 4.3.0
//! (`tests/compat/golden_vectors.py`, output committed as `src/golden.rs`).

use super::*;
use crate::fernet::{FernetKey, MultiFernet};
use crate::golden::{self, Golden};

fn wrap(value: Value) -> Map {
    let mut map = Map::new();
    map.insert("v".to_owned(), value);
    map
}

fn check(name: &str, actual: &[u8], expected: &Golden) {
    match expected {
        Golden::Full(bytes) => assert_eq!(actual, *bytes, "{name}"),
        Golden::Long { head, len, tail } => {
            assert_eq!(actual.len(), *len, "{name} length");
            assert_eq!(&actual[..head.len()], *head, "{name} head");
            assert_eq!(&actual[actual.len() - tail.len()..], *tail, "{name} tail");
        }
    }
}

#[test]
fn msgpack_encoding_matches_python_bytes() {
    let codec = Codec::new(SerializerFormat::Msgpack, 0);
    for (name, value, expected) in golden::msgpack_cases() {
        let bytes = codec.encode(&Message::from(wrap(value))).unwrap();
        check(name, &bytes, &expected);
    }
}

#[test]
fn msgpack_decoding_of_python_bytes_round_trips() {
    let codec = Codec::new(SerializerFormat::Msgpack, 0);
    for (name, value, expected) in golden::msgpack_cases() {
        let Golden::Full(bytes) = expected else {
            continue;
        };
        let decoded = codec.decode(bytes).unwrap();
        match (decoded.get("v").unwrap(), &value) {
            // -0.0 == 0.0, so compare bits for floats.
            (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{name}"),
            (a, b) => assert_eq!(a, b, "{name}"),
        }
    }
}

#[test]
fn spec_msgpack_vectors() {
    let codec = Codec::new(SerializerFormat::Msgpack, 0);
    let msg = Message::new()
        .with("a", true)
        .with("b", Value::Nil)
        .with("c", Value::Map(wrap_d()));
    assert_eq!(
        codec.encode(&msg).unwrap(),
        [
            0x83, 0xa1, 0x61, 0xc3, 0xa1, 0x62, 0xc0, 0xa1, 0x63, 0x81, 0xa1, 0x64, 0x90
        ]
    );
}

fn wrap_d() -> Map {
    let mut map = Map::new();
    map.insert("d".to_owned(), Value::Array(vec![]));
    map
}

#[test]
fn python_deserialize_vector_with_fixed_prefix() {
    // channels_redis tests/test_sentinel.py test_deserialize: 12-byte prefix + msgpack.
    let mut data = vec![
        0x51, 0x0c, 0xbb, 0x3f, 0x51, 0xbc, 0xe3, 0x7c, 0x44, 0xfd, 0x39, 0x00,
    ];
    data.extend_from_slice(&[
        0x83, 0xa1, 0x61, 0xc3, 0xa1, 0x62, 0xc0, 0xa1, 0x63, 0x81, 0xa1, 0x64, 0x90,
    ]);
    let msg = Codec::new(SerializerFormat::Msgpack, 12)
        .decode(&data)
        .unwrap();
    assert_eq!(msg.get("a"), Some(&Value::Bool(true)));
    assert_eq!(msg.get("c"), Some(&Value::Map(wrap_d())));
}

#[test]
fn routed_envelopes_match_python() {
    let codec = Codec::new(SerializerFormat::Msgpack, 0);
    let msg = Message::with_type("chat.message").with("text", "hi");
    let one = codec
        .encode_routed(msg.map(), Target::One("specific.abc!def"))
        .unwrap();
    assert_eq!(one, golden::ROUTED_ONE);
    let names = ["specific.abc!def".to_owned(), "specific.abc!ghi".to_owned()];
    let many = codec
        .encode_routed(msg.map(), Target::Many(&names))
        .unwrap();
    assert_eq!(many, golden::ROUTED_MANY);
    let json = Codec::new(SerializerFormat::Json, 0)
        .encode_routed(msg.map(), Target::Many(&["a.b".to_owned()]))
        .unwrap();
    assert_eq!(json, golden::ROUTED_MANY_JSON.as_bytes());
}

#[test]
fn json_encoding_matches_python_json_dumps() {
    let codec = Codec::new(SerializerFormat::Json, 0);
    for (name, value, expected) in golden::json_cases() {
        let bytes = codec.encode(&Message::from(wrap(value))).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), expected, "{name}");
    }
}

#[test]
fn json_decoding_of_python_text() {
    let codec = Codec::new(SerializerFormat::Json, 0);
    for (name, value, expected) in golden::json_cases() {
        let decoded = codec.decode(expected.as_bytes()).unwrap();
        if let (Value::Float(a), Value::Float(b)) = (decoded.get("v").unwrap(), &value) {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}");
        } else {
            assert_eq!(decoded.get("v").unwrap(), &value, "{name}");
        }
    }
}

#[test]
fn float_repr_matches_python() {
    for (f, expected) in golden::FLOAT_REPRS {
        assert_eq!(herald_core::pyjson::float_repr(*f), *expected);
    }
}

#[test]
fn json_refuses_bytes() {
    let codec = Codec::new(SerializerFormat::Json, 0);
    let err = codec
        .encode(&Message::with_type("x").with("b", vec![1u8]))
        .unwrap_err();
    assert!(err.is_serialization());
}

#[test]
fn random_prefix_is_prepended_and_stripped() {
    let codec = Codec::new(SerializerFormat::Msgpack, 8);
    let msg = Message::with_type("x");
    let a = codec.encode(&msg).unwrap();
    let b = codec.encode(&msg).unwrap();
    assert_eq!(a.len(), 8 + 8);
    assert_eq!(&a[8..], &b[8..]);
    assert_ne!(
        &a[..8],
        &b[..8],
        "two sends of one message must be distinct members"
    );
    assert_eq!(codec.decode(&a).unwrap(), msg);
}

#[test]
fn fernet_key_derivation_and_python_token() {
    let key = FernetKey::derive(golden::FERNET_SECRET.as_bytes());
    assert_eq!(key.to_base64(), golden::FERNET_KEY);
    // Our token for the same (body, time, iv) is byte-identical to Python's, so Python
    // decrypts ours and we decrypt Python's.
    let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
    assert_eq!(
        key.encrypt_with(golden::FERNET_BODY, golden::FERNET_TIMESTAMP, iv),
        golden::FERNET_TOKEN
    );
    let fernet = MultiFernet::from_secrets(&[golden::FERNET_SECRET]).unwrap();
    let plain = fernet
        .decrypt_at(
            golden::FERNET_TOKEN.as_bytes(),
            Some(70),
            golden::FERNET_TIMESTAMP + 5,
        )
        .unwrap();
    assert_eq!(plain, golden::FERNET_BODY);
}

#[test]
fn encrypted_codec_round_trips_and_rejects_other_keys() {
    let codec = Codec::new(SerializerFormat::Msgpack, 4)
        .with_encryption_keys(&["a-test-key"])
        .with_ttl(Some(Duration::from_secs(70)));
    let msg = Message::with_type("x");
    let bytes = codec.encode(&msg).unwrap();
    // Spec 2.4: {"type": "x"} -> a 100-byte token, first token byte 'g'.
    assert_eq!(bytes.len(), 4 + 100);
    assert_eq!(bytes[4], b'g');
    assert_eq!(codec.decode(&bytes).unwrap(), msg);
    let other = Codec::new(SerializerFormat::Msgpack, 4).with_encryption_keys(&["other"]);
    assert_eq!(
        other.decode_detailed(&bytes),
        Err(DecodeError::Fernet(
            crate::fernet::FernetError::BadSignature
        ))
    );
}

#[test]
fn garbage_is_classified() {
    let codec = Codec::new(SerializerFormat::Msgpack, 12);
    assert_eq!(
        codec.decode_detailed(b"short"),
        Err(DecodeError::ShortMember)
    );
    let mut data = vec![0; 12];
    data.push(0xc1);
    assert_eq!(
        codec.decode_detailed(&data),
        Err(DecodeError::Msgpack(MsgpackError::ReservedByte))
    );
    let mut data = vec![0; 12];
    data.extend_from_slice(&[0x81, 0x01, 0x02]);
    assert_eq!(
        codec.decode_detailed(&data),
        Err(DecodeError::Msgpack(MsgpackError::NonStringKey))
    );
    let mut data = vec![0; 12];
    data.extend_from_slice(&[0x81, 0xa1, b'a']);
    assert_eq!(
        codec.decode_detailed(&data),
        Err(DecodeError::Msgpack(MsgpackError::Truncated))
    );
    let mut data = vec![0; 12];
    data.extend_from_slice(&[0x80, 0x00]);
    assert_eq!(
        codec.decode_detailed(&data),
        Err(DecodeError::Msgpack(MsgpackError::TrailingBytes))
    );
    let mut data = vec![0; 12];
    data.extend_from_slice(&[0xa2, 0xff, 0xfe]);
    assert_eq!(
        codec.decode_detailed(&data),
        Err(DecodeError::Msgpack(MsgpackError::InvalidUtf8))
    );
    let mut data = vec![0; 12];
    data.push(0x01);
    assert_eq!(codec.decode_detailed(&data), Err(DecodeError::NotAMap));
}

#[test]
fn hostile_lengths_and_depth_do_not_allocate_or_overflow() {
    // A map32 claiming 4 billion entries in 5 bytes.
    assert_eq!(
        msgpack::unpack(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
        Err(MsgpackError::Truncated)
    );
    let deep = vec![0x91; MAX_DEPTH + 2];
    assert_eq!(msgpack::unpack(&deep), Err(MsgpackError::TooDeep));
}

#[test]
fn float32_is_widened() {
    let value = msgpack::unpack(&[0xca, 0x3f, 0xc0, 0x00, 0x00]).unwrap();
    assert_eq!(value, Value::Float(1.5));
}

#[test]
fn json_parse_accepts_what_python_json_loads_accepts() {
    let v = json::parse(
        br#" {"a": [NaN, Infinity, -Infinity, -0.5, 1e3, 7, -8], "s": "\u00e9\ud83d\ude00\n\/"} "#,
    )
    .unwrap();
    let Value::Map(map) = v else {
        panic!("not a map")
    };
    let Value::Array(items) = &map["a"] else {
        panic!("not a list")
    };
    assert!(matches!(items[0], Value::Float(f) if f.is_nan()));
    assert_eq!(items[1], Value::Float(f64::INFINITY));
    assert_eq!(items[2], Value::Float(f64::NEG_INFINITY));
    assert_eq!(items[3], Value::Float(-0.5));
    assert_eq!(items[4], Value::Float(1000.0));
    assert_eq!(items[5], Value::Int(7));
    assert_eq!(items[6], Value::Int(-8));
    assert_eq!(map["s"], Value::Str("\u{e9}\u{1f600}\n/".to_owned()));
    assert_eq!(
        json::parse(b"18446744073709551615"),
        Some(Value::UInt(u64::MAX))
    );
}

#[test]
fn json_parse_rejects_what_python_rejects() {
    for bad in [
        &b"01"[..],
        b"[1,]",
        b"{\"a\" 1}",
        b"\"raw\ncontrol\"",
        b"nul",
        b"1 2",
        b"-",
        b"{'a': 1}",
        b"\"\\x\"",
    ] {
        assert_eq!(json::parse(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}
