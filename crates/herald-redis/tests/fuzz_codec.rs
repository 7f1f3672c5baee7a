//! Hostile bytes from Redis: property tests over the message decoder (msgpack, JSON and
//! Fernet-wrapped), plus a live layer fed seeded random garbage.
//!
//! Every property runs a fixed number of cases from a fixed seed (ChaCha RNG, no failure
//! persistence, `PROPTEST_*` env vars ignored), so CI runs the same inputs every time and stays
//! within a few seconds. "No hang" is asserted as a wall-clock bound on each whole property.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use herald_core::{ChannelLayer, Message, Value};
use herald_redis::internals::{
    Codec, DecodeError, FernetKey, MAX_DEPTH, MsgpackError, json, msgpack,
};
use herald_redis::{RedisChannelLayer, RedisLayerConfig, SerializerFormat};
use herald_test_support::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;

/// Seed shared by every property (any fixed value; changing it changes the inputs).
const SEED: [u8; 32] = *b"herald-issue-6-hostile-bytes-v1!";
/// Generous bound for one whole property in a debug build on a loaded 2-core machine.
const PROPERTY_BUDGET: Duration = Duration::from_secs(20);
const PREFIX: usize = 12;

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        max_shrink_iters: 256,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED))
}

/// Runs `test` over `strategy` with the fixed seed and fails on a counterexample or overrun.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let started = Instant::now();
    let result = runner(cases).run(&strategy, test);
    if let Err(err) = result {
        panic!("{err}");
    }
    assert!(
        started.elapsed() < PROPERTY_BUDGET,
        "{cases} cases took {:?}",
        started.elapsed()
    );
}

fn codecs() -> Vec<Codec> {
    vec![
        Codec::new(SerializerFormat::Msgpack, PREFIX),
        Codec::new(SerializerFormat::Json, PREFIX),
        Codec::new(SerializerFormat::Msgpack, PREFIX).with_encryption_keys(&["fuzz-key"]),
        Codec::new(SerializerFormat::Json, PREFIX).with_encryption_keys(&["fuzz-key"]),
    ]
}

/// What a decoded member must look like: decoding succeeded only for a map.
fn decoded_is_sane(codec: &Codec, data: &[u8]) -> Result<(), TestCaseError> {
    match codec.decode_detailed(data) {
        Ok(message) => {
            // A message is a map: it must re-encode without error.
            prop_assert!(codec.encode(&message).is_ok());
        }
        Err(DecodeError::ShortMember) => prop_assert!(data.len() < PREFIX),
        Err(_) => {}
    }
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A Fernet token for `plain` that the `fuzz-key` codecs accept, so the fuzzed bytes reach the
/// msgpack/JSON decoder behind the decryption.
fn fernet_wrapped(plain: &[u8], iv: [u8; 16]) -> Vec<u8> {
    let mut member = vec![b'p'; PREFIX];
    member.extend_from_slice(
        FernetKey::derive(b"fuzz-key")
            .encrypt_with(plain, now(), iv)
            .as_bytes(),
    );
    member
}

/// Arbitrary message values, including the awkward ones (deep nesting, NaN, bytes, big ints).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((".{0,6}", inner), 0..6)
                .prop_map(|kv| Value::Map(kv.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = Message> {
    proptest::collection::vec(("[a-z_]{1,8}", value()), 0..6).prop_map(|kv| {
        let mut m = Message::with_type("fuzz.message");
        for (k, v) in kv {
            m.insert(k.as_str(), v);
        }
        m
    })
}

#[test]
fn arbitrary_bytes_never_panic_any_decoder() {
    let codecs = codecs();
    check(
        2_000,
        proptest::collection::vec(any::<u8>(), 0..512),
        |data| {
            for codec in &codecs {
                decoded_is_sane(codec, &data)?;
            }
            let _ = msgpack::unpack(&data);
            let _ = json::parse(&data);
            Ok(())
        },
    );
}

#[test]
fn garbage_behind_a_valid_fernet_token_never_panics() {
    let codecs = codecs();
    check(
        1_000,
        (
            proptest::collection::vec(any::<u8>(), 0..256),
            any::<[u8; 16]>(),
        ),
        |(plain, iv)| {
            let member = fernet_wrapped(&plain, iv);
            for codec in &codecs[2..] {
                decoded_is_sane(codec, &member)?;
            }
            // The unencrypted codecs see base64 text: never a valid map.
            prop_assert!(codecs[0].decode_detailed(&member).is_err());
            Ok(())
        },
    );
}

#[test]
fn encoded_messages_round_trip_and_their_mutations_never_panic() {
    let codecs = codecs();
    check(
        500,
        (
            message(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            any::<prop::sample::Index>(),
        ),
        |(msg, flips, cut)| {
            for codec in &codecs {
                // JSON cannot carry bytes or non-finite floats: those are refused at encode.
                let Ok(data) = codec.encode(&msg) else {
                    prop_assert_eq!(codec.format(), SerializerFormat::Json);
                    continue;
                };
                let back = codec.decode(&data);
                prop_assert!(back.is_ok(), "own encoding rejected: {:?}", back.err());
                if codec.format() == SerializerFormat::Msgpack {
                    let back = back.unwrap();
                    prop_assert_eq!(back.msg_type(), Some("fuzz.message"));
                    prop_assert_eq!(back.len(), msg.len());
                }
                let mut mutated = data.clone();
                for (at, byte) in &flips {
                    let i = at.index(mutated.len());
                    mutated[i] ^= byte | 1;
                }
                decoded_is_sane(codec, &mutated)?;
                decoded_is_sane(codec, &data[..cut.index(data.len() + 1)])?;
            }
            Ok(())
        },
    );
}

/// Headers that promise more than the data holds must not allocate what they promise.
#[test]
fn huge_declared_lengths_and_deep_nesting_are_refused_quickly() {
    let started = Instant::now();
    let promises: [&[u8]; 6] = [
        &[0xdd, 0xff, 0xff, 0xff, 0xff],       // array32 of 4 Gi entries
        &[0xdf, 0xff, 0xff, 0xff, 0xff],       // map32 of 4 Gi entries
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], // str32 of 4 GiB
        &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00], // bin32 of 4 GiB
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01], // ext32
        &[0xdc, 0xff, 0xff],                   // array16 of 65535 missing entries
    ];
    for data in promises {
        assert!(msgpack::unpack(data).is_err(), "{data:x?}");
    }
    // One level past the limit, and far past it (a stack overflow would abort the test).
    for depth in [MAX_DEPTH + 2, 1_000_000] {
        let data = vec![0x91u8; depth];
        assert_eq!(msgpack::unpack(&data), Err(MsgpackError::TooDeep));
        let json_deep = "[".repeat(depth);
        assert!(json::parse(json_deep.as_bytes()).is_none());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A live layer fed seeded random garbage in its process key: every member is counted under
/// exactly one reject reason, and good messages interleaved with it are all delivered.
#[tokio::test]
async fn live_layer_counts_every_random_garbage_member_and_keeps_delivering() {
    let server = RedisServer::start();
    let config = RedisLayerConfig::default()
        .with_hosts([server.url()])
        .with_capacity(10_000)
        .with_brpop_timeout(Duration::from_secs(1));
    let layer = RedisChannelLayer::new(config).unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    let key = layer.keys().channel_key(&ch);
    let codec = Codec::new(SerializerFormat::Msgpack, PREFIX);
    let mut conn = raw(&server.url()).await;
    let mut rng = rand::rngs::StdRng::from_seed(SEED);

    const ROUNDS: usize = 20;
    const GARBAGE_PER_ROUND: usize = 25;
    let mut score = now() as f64;
    for round in 0..ROUNDS {
        let mut members: Vec<Vec<u8>> = Vec::new();
        for i in 0..GARBAGE_PER_ROUND {
            let len = rng.random_range(0..64);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // A unique tail keeps the members distinct in the sorted set; the msgpack body then
            // always has trailing bytes or is otherwise not a routable map.
            junk.extend_from_slice(format!("{round}:{i}").as_bytes());
            members.push(junk);
        }
        for junk in members {
            score += 1.0;
            let _: () = tokio::time::timeout(Duration::from_secs(10), conn.zadd(&key, junk, score))
                .await
                .unwrap()
                .unwrap();
        }
        let mut good = Message::with_type("good");
        good.insert("round", Value::Int(round as i64));
        good.insert("__asgi_channel__", Value::Str(ch.clone()));
        score += 1.0;
        let _: () = tokio::time::timeout(
            Duration::from_secs(10),
            conn.zadd(&key, codec.encode(&good).unwrap(), score),
        )
        .await
        .unwrap()
        .unwrap();
        let got = recv(&layer, &ch).await;
        assert_eq!(got.msg_type(), Some("good"));
        assert_eq!(got.get("round"), Some(&Value::Int(round as i64)));
    }
    let stats = layer.stats();
    let garbage = (ROUNDS * GARBAGE_PER_ROUND) as u64;
    assert_eq!(stats.decode_errors(), garbage, "{stats:?}");
    assert_eq!(
        stats.decode_short_member + stats.decode_body + stats.decode_channel + stats.decode_fernet,
        garbage,
        "{stats:?}"
    );
    // The short members alone (< 12 bytes with the tail) are a sizeable share.
    assert!(
        stats.decode_short_member > 0 && stats.decode_body > 0,
        "{stats:?}"
    );
}
