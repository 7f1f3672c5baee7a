//! Hostile cookies: property tests over the `Cookie` header parser, `signing::loads` and the
//! session dict accessors. Nothing a client sends may panic or hang them.
//!
//! Every property runs a fixed number of cases from a fixed seed (ChaCha RNG, no failure
//! persistence, `PROPTEST_*` env vars ignored), so CI sees the same inputs on every run.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_django::cookie::{cookie_value, latin1};
use herald_django::session::SessionData;
use herald_django::signing::{self, Keys, MAX_DECOMPRESSED, TimestampSigner};
use herald_django::{ErrorKind, config::SIGNED_COOKIES_SALT};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const SEED: [u8; 32] = *b"herald-issue-6-hostile-cookie-v1";
const PROPERTY_BUDGET: Duration = Duration::from_secs(20);
const SECRET: &str = "fuzz-secret-key";
const T0: i64 = 1_795_634_701;

fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let started = Instant::now();
    if let Err(err) = runner.run(&strategy, test) {
        panic!("{err}");
    }
    assert!(
        started.elapsed() < PROPERTY_BUDGET,
        "{cases} cases took {:?}",
        started.elapsed()
    );
}

fn at(ts: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(ts as u64)
}

fn keys() -> Keys {
    Keys::new(SECRET).with_fallbacks(["old-fuzz-secret"])
}

/// Everything a session consumer reads from a decoded session.
fn read_session(value: serde_json::Value) {
    let session = SessionData::from_json(value);
    let _ = (
        session.user_id(),
        session.backend(),
        session.auth_hash(),
        session.is_empty(),
    );
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        // Dyadic floats only: serde_json's default float parser (no `float_roundtrip`) may be
        // one ulp off for arbitrary doubles, which is not what these properties are about.
        any::<i32>().prop_map(|n| serde_json::json!(f64::from(n) / 8.0)),
        ".{0,16}".prop_map(serde_json::Value::String),
        Just(serde_json::json!("_auth_user_id")),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("_auth_user_id".to_owned()),
                        Just("_auth_user_hash".to_owned()),
                        Just("_auth_user_backend".to_owned()),
                        ".{0,8}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[test]
fn arbitrary_cookie_headers_never_panic_and_find_a_planted_session() {
    check(
        3_000,
        (
            proptest::collection::vec(any::<u8>(), 0..256),
            "[a-zA-Z0-9:._-]{0,40}",
        ),
        |(raw, planted)| {
            let header = latin1(&raw);
            let _ = cookie_value(&header, "sessionid");
            let _ = cookie_value(&header, "");
            // Whatever garbage precedes it, a well-formed last `sessionid` wins.
            let with_session = format!("{header}; sessionid={planted}");
            if !planted.is_empty() && !header.contains('"') && !header.contains('\\') {
                prop_assert_eq!(
                    cookie_value(&with_session, "sessionid"),
                    Some(planted.clone())
                );
            }
            let as_utf8 = String::from_utf8_lossy(&raw);
            let _ = cookie_value(&as_utf8, "sessionid");
            Ok(())
        },
    );
}

#[test]
fn arbitrary_tokens_are_refused_without_panic() {
    let keys = keys();
    check(
        3_000,
        prop_oneof![
            ".{0,200}",
            "[A-Za-z0-9_.:-]{0,120}",
            "[A-Za-z0-9_-]{0,60}:[A-Za-z0-9-]{0,12}:[A-Za-z0-9_-]{0,50}",
        ],
        |token| {
            let got = signing::loads_at(&token, &keys, SIGNED_COOKIES_SALT, None, at(T0));
            // Without the secret an attacker cannot produce a valid signature.
            prop_assert!(got.is_err(), "{token:?} was accepted");
            let _ = signing::b62_decode(&token);
            let _ = signing::b64_decode(&token);
            Ok(())
        },
    );
}

/// Correctly signed garbage (a leaked key, or a bug elsewhere): base64, zlib and JSON decoding
/// must all fail cleanly, and whatever decodes must be readable as a session.
#[test]
fn correctly_signed_garbage_payloads_never_panic() {
    let keys = keys();
    let signer = TimestampSigner::with_keys(keys.clone(), SIGNED_COOKIES_SALT);
    check(
        2_000,
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
            "[ -~]{0,80}",
            any::<i64>(),
        ),
        |(bytes, compressed, text, ts)| {
            let mut payloads = vec![
                signing::b64_encode(&bytes),
                format!(".{}", signing::b64_encode(&bytes)),
                text.clone(),
                format!(".{text}"),
            ];
            if compressed {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&bytes).unwrap();
                payloads.push(format!(".{}", signing::b64_encode(&enc.finish().unwrap())));
            }
            for payload in payloads {
                let token = signer.sign_at(&payload, ts);
                for max_age in [None, Some(Duration::from_secs(1_209_600))] {
                    if let Ok(value) =
                        signing::loads_at(&token, &keys, SIGNED_COOKIES_SALT, max_age, at(T0))
                    {
                        read_session(value);
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn signed_sessions_round_trip_through_loads() {
    let keys = keys();
    check(500, (json_value(), any::<bool>()), |(value, compress)| {
        let token = signing::dumps_at(&value, &keys, SIGNED_COOKIES_SALT, compress, T0);
        let back = signing::loads_at(&token, &keys, SIGNED_COOKIES_SALT, None, at(T0)).unwrap();
        prop_assert_eq!(&back, &value);
        read_session(back);
        // One flipped character anywhere breaks the signature (or the payload): never a panic,
        // never a different accepted session.
        for i in (0..token.len()).step_by(7) {
            let mut forged = token.clone().into_bytes();
            forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).unwrap();
            if forged == token {
                continue;
            }
            if let Ok(other) = signing::loads_at(&forged, &keys, SIGNED_COOKIES_SALT, None, at(T0))
            {
                prop_assert_eq!(&other, &value);
            }
        }
        Ok(())
    });
}

/// A signed zlib bomb is cut at [`MAX_DECOMPRESSED`] instead of inflating without bound.
#[test]
fn signed_decompression_bomb_is_refused_as_malformed() {
    let keys = keys();
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..(MAX_DECOMPRESSED / zeros.len() + 2) {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let token = TimestampSigner::with_keys(keys.clone(), SIGNED_COOKIES_SALT)
        .sign_at(&format!(".{}", signing::b64_encode(&bomb)), T0);
    let started = Instant::now();
    let err = signing::loads_at(&token, &keys, SIGNED_COOKIES_SALT, None, at(T0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Malformed);
    assert!(started.elapsed() < Duration::from_secs(10));
}
