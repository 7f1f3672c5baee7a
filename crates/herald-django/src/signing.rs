//! `django.core.signing` and `django.utils.crypto.salted_hmac`, verified byte for byte.
//!
//! Token grammar (spec §8.2): `["."]<b64 JSON or zlib(JSON)>:<b62 timestamp>:<b64 HMAC-SHA256>`.
//! The HMAC key for a salt `s` and secret `k` is `SHA256(s + "signer" + k)`; a signature is checked
//! against `SECRET_KEY` and then each of `SECRET_KEY_FALLBACKS`, each comparison in constant time.
//!
//! Every item mirrors the Django 5.2 function it names; Django 4.2–5.2 share the format. The unit
//! tests at the end use golden tokens made by Django 5.2.19 (`scripts/gen_vectors.py`).
//!
//! ```
//! use herald_django::signing::{self, Signer};
//! let signer = Signer::new("django-insecure-test-secret-key");
//! assert_eq!(signer.unsign("abc:rAsVX7MPjo9cNyK70x4TPbdSva833P2k9yrcJxrD8u0").unwrap(), "abc");
//! assert!(signer.unsign("abc:forged").unwrap_err().is_bad_signature());
//! let dict = signing::loads(
//!     "eyJ1IjoxfQ:1xWIc1:l8z-5_Vaf_QpmKrTszJn-phq1KIvsqXcTVQxzQG5qPY",
//!     &signing::Keys::new("django-insecure-test-secret-key"),
//!     signing::DEFAULT_SALT,
//!     None,
//! )
//! .unwrap();
//! assert_eq!(dict["u"], 1);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind, Result};

/// The separator between value, timestamp and signature (`Signer(sep=":")`).
pub const SEP: char = ':';
/// Default salt of [`loads`]/[`dumps_at`] (`signing.dumps(salt="django.core.signing")`).
pub const DEFAULT_SALT: &str = "django.core.signing";
/// Default salt of a plain [`Signer`]: `"<module>.<ClassName>"` of `django.core.signing.Signer`.
pub const DEFAULT_SIGNER_SALT: &str = "django.core.signing.Signer";
/// Default salt of a [`TimestampSigner`].
pub const DEFAULT_TIMESTAMP_SIGNER_SALT: &str = "django.core.signing.TimestampSigner";
/// Largest decompressed payload accepted from a `.`-prefixed (zlib) token. Django has no limit;
/// ours only guards against a decompression bomb signed with a leaked key.
pub const MAX_DECOMPRESSED: usize = 16 * 1024 * 1024;

const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// urlsafe alphabet, no padding on encode, padding optional on decode (Django re-pads).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `salted_hmac(key_salt, value, secret, algorithm="sha256").digest()`:
/// `HMAC-SHA256(key = SHA256(key_salt + secret), value)`.
pub fn salted_hmac(key_salt: &str, value: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(key_salt.as_bytes());
    hasher.update(secret.as_bytes());
    let derived = hasher.finalize();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&derived).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot be taken.
        unreachable!("hmac accepts any key length")
    });
    mac.update(value);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex, like Python's `.hexdigest()`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// `django.utils.crypto.constant_time_compare`: equal lengths and equal bytes, in time that
/// depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `signing.b64_encode`: urlsafe base64 with the `=` padding stripped.
pub fn b64_encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// `signing.b64_decode`: urlsafe base64, padding optional.
///
/// # Errors
/// [`ErrorKind::Malformed`] if `s` is not base64.
pub fn b64_decode(s: &str) -> Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|e| Error::with_source(ErrorKind::Malformed, "payload is not base64", e))
}

/// `signing.b62_encode`: base62 with the alphabet `0-9A-Za-z`, a leading `-` for negatives.
pub fn b62_encode(n: i64) -> String {
    if n == 0 {
        return "0".to_owned();
    }
    let mut digits = Vec::new();
    let mut rest = n.unsigned_abs();
    while rest > 0 {
        digits.push(BASE62_ALPHABET[(rest % 62) as usize]);
        rest /= 62;
    }
    if n < 0 {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// `signing.b62_decode`.
///
/// # Errors
/// [`ErrorKind::Malformed`] for an empty string, a character outside the alphabet or a value
/// that does not fit in an `i64` (Python would raise `IndexError`/`ValueError` there too, or
/// accept a big int no real timestamp needs).
pub fn b62_decode(s: &str) -> Result<i64> {
    let malformed = || Error::new(ErrorKind::Malformed, "timestamp is not base62");
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1i64, rest),
        None => (1, s),
    };
    if s.is_empty() {
        return Err(malformed());
    }
    let mut value: i64 = 0;
    for c in digits.bytes() {
        let d = BASE62_ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(malformed)?;
        value = value
            .checked_mul(62)
            .and_then(|v| v.checked_add(d as i64))
            .ok_or_else(malformed)?;
    }
    Ok(sign * value)
}

/// The secret keys a signature may have been made with: `SECRET_KEY` first, then each of
/// `SECRET_KEY_FALLBACKS` (Django ≥ 4.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    key: String,
    fallbacks: Vec<String>,
}

impl Keys {
    /// Just `SECRET_KEY`, no fallbacks.
    pub fn new(key: impl Into<String>) -> Self {
        Keys {
            key: key.into(),
            fallbacks: Vec::new(),
        }
    }

    /// Sets `SECRET_KEY_FALLBACKS`.
    pub fn with_fallbacks<I, S>(mut self, fallbacks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fallbacks = fallbacks.into_iter().map(Into::into).collect();
        self
    }

    /// The key new signatures are made with.
    pub fn current(&self) -> &str {
        &self.key
    }

    /// The current key, then each fallback: the order Django tries them in.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.fallbacks.iter().map(String::as_str))
    }
}

impl std::fmt::Debug for Keys {
    // Never print a secret, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("key", &"<redacted>")
            .field("fallbacks", &self.fallbacks.len())
            .finish()
    }
}

/// `django.core.signing.Signer` (algorithm sha256, separator `:`).
#[derive(Debug, Clone)]
pub struct Signer {
    keys: Keys,
    /// The HMAC key salt: the Python `salt` plus `"signer"`.
    hmac_salt: String,
}

impl Signer {
    /// A signer with `key` as `SECRET_KEY`, no fallbacks and the default salt.
    pub fn new(key: impl Into<String>) -> Self {
        Signer::with_keys(Keys::new(key), DEFAULT_SIGNER_SALT)
    }

    /// A signer with explicit keys and salt (`Signer(key=, fallback_keys=, salt=)`).
    pub fn with_keys(keys: Keys, salt: &str) -> Self {
        Signer {
            keys,
            hmac_salt: format!("{salt}signer"),
        }
    }

    /// `Signer.signature(value, key)`: 43 characters of base64 HMAC-SHA256.
    pub fn signature_with(&self, value: &str, key: &str) -> String {
        b64_encode(&salted_hmac(&self.hmac_salt, value.as_bytes(), key))
    }

    /// `Signer.sign(value)` = `value:signature` with the current key.
    pub fn sign(&self, value: &str) -> String {
        format!(
            "{value}{SEP}{}",
            self.signature_with(value, self.keys.current())
        )
    }

    /// `Signer.unsign(signed)`: splits at the last `:` and accepts the signature of any key.
    ///
    /// # Errors
    /// [`ErrorKind::BadSignature`] if there is no `:` or no key produced the signature.
    pub fn unsign<'a>(&self, signed: &'a str) -> Result<&'a str> {
        let Some((value, sig)) = signed.rsplit_once(SEP) else {
            return Err(Error::new(
                ErrorKind::BadSignature,
                "no ':' in signed value",
            ));
        };
        // Try every key even after a match would be faster, but Django stops at the first
        // match too, and which key matched is not secret.
        for key in self.keys.all() {
            if constant_time_eq(sig.as_bytes(), self.signature_with(value, key).as_bytes()) {
                return Ok(value);
            }
        }
        Err(Error::new(
            ErrorKind::BadSignature,
            "signature does not match",
        ))
    }
}

/// `django.core.signing.TimestampSigner`: `value:b62(timestamp):signature`.
#[derive(Debug, Clone)]
pub struct TimestampSigner {
    signer: Signer,
}

impl TimestampSigner {
    /// A timestamp signer with `key`, no fallbacks and the default salt.
    pub fn new(key: impl Into<String>) -> Self {
        TimestampSigner::with_keys(Keys::new(key), DEFAULT_TIMESTAMP_SIGNER_SALT)
    }

    /// A timestamp signer with explicit keys and salt.
    pub fn with_keys(keys: Keys, salt: &str) -> Self {
        TimestampSigner {
            signer: Signer::with_keys(keys, salt),
        }
    }

    /// `TimestampSigner.sign(value)` as if `time.time()` returned `timestamp`.
    pub fn sign_at(&self, value: &str, timestamp: i64) -> String {
        self.signer
            .sign(&format!("{value}{SEP}{}", b62_encode(timestamp)))
    }

    /// `TimestampSigner.sign(value)` now.
    pub fn sign(&self, value: &str) -> String {
        self.sign_at(value, unix_now().floor() as i64)
    }

    /// `TimestampSigner.unsign(value, max_age)` as if `time.time()` were `now`.
    ///
    /// # Errors
    /// [`ErrorKind::BadSignature`] if the signature is wrong, [`ErrorKind::SignatureExpired`]
    /// if `now - timestamp > max_age`, [`ErrorKind::Malformed`] if the timestamp is missing or
    /// not base62.
    pub fn unsign_at<'a>(
        &self,
        signed: &'a str,
        max_age: Option<Duration>,
        now: SystemTime,
    ) -> Result<&'a str> {
        let value = self.signer.unsign(signed)?;
        let Some((value, ts)) = value.rsplit_once(SEP) else {
            return Err(Error::new(
                ErrorKind::Malformed,
                "no timestamp in signed value",
            ));
        };
        let ts = b62_decode(ts)?;
        if let Some(max_age) = max_age {
            // Python: `age = time.time() - timestamp; if age > max_age: raise SignatureExpired`,
            // in floats.
            let age = seconds_since_epoch(now) - ts as f64;
            if age > max_age.as_secs_f64() {
                return Err(Error::new(ErrorKind::SignatureExpired, "signature expired"));
            }
        }
        Ok(value)
    }

    /// `TimestampSigner.unsign(value, max_age)` now.
    ///
    /// # Errors
    /// As [`TimestampSigner::unsign_at`].
    pub fn unsign<'a>(&self, signed: &'a str, max_age: Option<Duration>) -> Result<&'a str> {
        self.unsign_at(signed, max_age, SystemTime::now())
    }
}

/// `signing.loads(s, key, salt, max_age, fallback_keys)` with the JSON serializer.
///
/// # Errors
/// As [`loads_at`].
pub fn loads(
    token: &str,
    keys: &Keys,
    salt: &str,
    max_age: Option<Duration>,
) -> Result<serde_json::Value> {
    loads_at(token, keys, salt, max_age, SystemTime::now())
}

/// [`loads`] as if `time.time()` were `now`.
///
/// # Errors
/// Signature errors as [`TimestampSigner::unsign_at`]; [`ErrorKind::Malformed`] if the payload
/// is not base64, not a zlib stream (when `.`-prefixed), larger than [`MAX_DECOMPRESSED`] or not
/// JSON.
pub fn loads_at(
    token: &str,
    keys: &Keys,
    salt: &str,
    max_age: Option<Duration>,
    now: SystemTime,
) -> Result<serde_json::Value> {
    let signer = TimestampSigner::with_keys(keys.clone(), salt);
    let payload = signer.unsign_at(token, max_age, now)?;
    let (compressed, payload) = match payload.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, payload),
    };
    let mut data = b64_decode(payload)?;
    if compressed {
        data = inflate(&data)?;
    }
    // JSONSerializer.loads decodes latin-1, so every byte is one code point.
    let text: String = data.iter().map(|&b| char::from(b)).collect();
    serde_json::from_str(&text)
        .map_err(|e| Error::with_source(ErrorKind::Malformed, "payload is not JSON", e))
}

/// `signing.dumps(obj, key, salt, compress)` as if `time.time()` returned `timestamp`.
///
/// The JSON is compact and ASCII-only like Python's `json.dumps(separators=(",", ":"))`, so for
/// ordinary dicts the token is byte-identical to Django's. Compressed payloads are valid zlib but
/// may differ from CPython's zlib bytes.
pub fn dumps_at(
    value: &serde_json::Value,
    keys: &Keys,
    salt: &str,
    compress: bool,
    timestamp: i64,
) -> String {
    let data = python_json(value).into_bytes();
    let mut payload = None;
    if compress {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let compressed = enc.write_all(&data).and_then(|()| enc.finish()).ok();
        if let Some(c) = compressed
            && c.len() < data.len().saturating_sub(1)
        {
            payload = Some(format!(".{}", b64_encode(&c)));
        }
    }
    let payload = payload.unwrap_or_else(|| b64_encode(&data));
    TimestampSigner::with_keys(keys.clone(), salt).sign_at(&payload, timestamp)
}

/// Python's `json.dumps(v, separators=(",", ":"))` (ASCII-escaped).
fn python_json(value: &serde_json::Value) -> String {
    let compact = value.to_string();
    let mut out = String::with_capacity(compact.len());
    for c in compact.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

thread_local! {
    /// One zlib inflater per thread, reset for each payload: session re-validation decodes
    /// thousands of sessions per round, and a fresh inflater (plus `ZlibDecoder`'s 32 KiB
    /// read buffer) per session was most of its cost.
    static INFLATER: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(true));
}

/// A zlib stream (`zlib.compress`), inflated; at most [`MAX_DECOMPRESSED`] bytes.
fn inflate(data: &[u8]) -> Result<Vec<u8>> {
    let malformed = || Error::new(ErrorKind::Malformed, "payload is not zlib");
    INFLATER.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(true);
        let mut out = Vec::with_capacity((data.len() * 4).clamp(256, MAX_DECOMPRESSED + 1));
        let mut rest = data;
        loop {
            let (in_before, out_before) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(rest, &mut out, flate2::FlushDecompress::None)
                .map_err(|e| Error::with_source(ErrorKind::Malformed, "payload is not zlib", e))?;
            rest = &rest[(d.total_in() - in_before) as usize..];
            if out.len() > MAX_DECOMPRESSED {
                return Err(Error::new(ErrorKind::Malformed, "payload too large"));
            }
            match status {
                flate2::Status::StreamEnd => return Ok(out),
                _ if out.len() == out.capacity() => {
                    out.reserve(out.len().min(MAX_DECOMPRESSED + 1 - out.len()).max(256));
                }
                // Neither input taken nor output made with room to spare: the stream is cut.
                _ if d.total_in() == in_before && out.len() == out_before => {
                    return Err(malformed());
                }
                _ => {}
            }
        }
    })
}

fn seconds_since_epoch(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn unix_now() -> f64 {
    seconds_since_epoch(SystemTime::now())
}

#[cfg(test)]
mod tests {
    //! Golden vectors: Django 5.2.19 output, from `scripts/gen_vectors.py` (time frozen at
    //! T = 1795634701 = b62 `1xWIc1`, SECRET_KEY `django-insecure-test-secret-key`,
    //! SECRET_KEY_FALLBACKS `["old-secret-key-before-rotation"]`). Each literal quotes the
    //! script line that printed it.
    use super::*;

    const K: &str = "django-insecure-test-secret-key";
    const OLD: &str = "old-secret-key-before-rotation";
    const UNICODE_KEY: &str = "ключ-секрет-🔑";
    const T: i64 = 1_795_634_701;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    #[test]
    fn b62_matches_django() {
        // out("b62", {str(n): signing.b62_encode(n) for n in (0, 1, 61, 62, -1, -62, T)})
        let cases = [
            (0, "0"),
            (1, "1"),
            (61, "z"),
            (62, "10"),
            (-1, "-1"),
            (-62, "-10"),
            (T, "1xWIc1"),
        ];
        for (n, s) in cases {
            assert_eq!(b62_encode(n), s);
            assert_eq!(b62_decode(s).unwrap(), n);
        }
    }

    #[test]
    fn b62_rejects_garbage() {
        for bad in ["", "a!", "zzzzzzzzzzzzzzzzzzzzzz"] {
            assert_eq!(
                b62_decode(bad).unwrap_err().kind(),
                ErrorKind::Malformed,
                "{bad:?}"
            );
        }
        // Python's b62_decode("-") is 0 (an empty digit loop); so is ours.
        assert_eq!(b62_decode("-").unwrap(), 0);
    }

    #[test]
    fn salted_hmac_matches_django() {
        // salted_hmac("herald.salt", "value", secret=K, algorithm="sha256").hexdigest()
        assert_eq!(
            hex(&salted_hmac("herald.salt", b"value", K)),
            "8b47fe0fe8502198e61a3938447dd6134a380961a9ce45841195245230b7ce1f"
        );
        // salted_hmac("herald.salt", "välue", secret=UNICODE_KEY, algorithm="sha256").hexdigest()
        assert_eq!(
            hex(&salted_hmac("herald.salt", "välue".as_bytes(), UNICODE_KEY)),
            "38bd785119c4e333cbe8978ae60938069768f2003e170127a538467931d30a25"
        );
    }

    #[test]
    fn signer_matches_django() {
        // signing.Signer().sign("abc")
        assert_eq!(
            Signer::new(K).sign("abc"),
            "abc:rAsVX7MPjo9cNyK70x4TPbdSva833P2k9yrcJxrD8u0"
        );
        // signing.Signer(key=UNICODE_KEY).sign("abc")
        assert_eq!(
            Signer::new(UNICODE_KEY).sign("abc"),
            "abc:xErKVs3zjHeTYYQi_uiIu3OwQP5cG98B4PahQp0RH3k"
        );
        // signing.Signer(salt="herald.test").sign("a:b:c")
        let salted = Signer::with_keys(Keys::new(K), "herald.test");
        let token = "a:b:c:JFYEHNaUv3WiD02ZZHzKe-fpp9xZaw4fZRuWkPbaFaE";
        assert_eq!(salted.sign("a:b:c"), token);
        assert_eq!(salted.unsign(token).unwrap(), "a:b:c");
    }

    #[test]
    fn signer_rejects_wrong_salt_key_or_tampering() {
        let token = "abc:rAsVX7MPjo9cNyK70x4TPbdSva833P2k9yrcJxrD8u0";
        assert!(
            Signer::with_keys(Keys::new(K), "other")
                .unsign(token)
                .is_err()
        );
        assert!(Signer::new("another-key").unsign(token).is_err());
        assert!(
            Signer::new(K)
                .unsign("abd:rAsVX7MPjo9cNyK70x4TPbdSva833P2k9yrcJxrD8u0")
                .is_err()
        );
        assert!(
            Signer::new(K)
                .unsign("abc:rAsVX7MPjo9cNyK70x4TPbdSva833P2k9yrcJxrD8u")
                .is_err()
        );
        let err = Signer::new(K).unsign("no separator").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadSignature);
    }

    #[test]
    fn signer_accepts_fallback_keys_in_order() {
        let token = Signer::new(OLD).sign("abc");
        let rotated = Signer::with_keys(
            Keys::new(K).with_fallbacks(["unrelated", OLD]),
            DEFAULT_SIGNER_SALT,
        );
        assert_eq!(rotated.unsign(&token).unwrap(), "abc");
        let without = Signer::new(K);
        assert!(without.unsign(&token).unwrap_err().is_bad_signature());
    }

    #[test]
    fn timestamp_signer_matches_django_and_checks_age() {
        // signing.TimestampSigner().sign("hello")
        let token = "hello:1xWIc1:r09CU-f0CB4NQSFvU5my1EGvZG-HXQ-8UEkt_ssq1h8";
        let signer = TimestampSigner::new(K);
        assert_eq!(signer.sign_at("hello", T), token);
        let max = Some(Duration::from_secs(10));
        assert_eq!(signer.unsign_at(token, max, at(T + 10)).unwrap(), "hello");
        let late = at(T + 10) + Duration::from_millis(1);
        let err = signer.unsign_at(token, max, late).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SignatureExpired);
        // No max_age: any age is fine.
        assert_eq!(
            signer.unsign_at(token, None, at(T + 1_000_000)).unwrap(),
            "hello"
        );
    }

    #[test]
    fn timestamp_signer_needs_a_timestamp() {
        let plain = Signer::with_keys(Keys::new(K), DEFAULT_TIMESTAMP_SIGNER_SALT).sign("x");
        let err = TimestampSigner::new(K).unsign(&plain, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Malformed);
    }

    #[test]
    fn loads_plain_unicode_and_compressed_django_tokens() {
        let keys = Keys::new(K);
        // signing.dumps({"u": 1})
        let v = loads_at(
            "eyJ1IjoxfQ:1xWIc1:l8z-5_Vaf_QpmKrTszJn-phq1KIvsqXcTVQxzQG5qPY",
            &keys,
            DEFAULT_SALT,
            None,
            at(T),
        )
        .unwrap();
        assert_eq!(v, serde_json::json!({"u": 1}));
        // signing.dumps({"é": "ünïcode", "n": [1, 2.5, None, True, False]}, salt="x")
        let unicode = "eyJcdTAwZTkiOiJcdTAwZmNuXHUwMGVmY29kZSIsIm4iOlsxLDIuNSxudWxsLHRydWUsZmFsc2VdfQ:1xWIc1:GMUnx1BuPLKu0sI0ItD3MZRzBl0lEwn0pVuRTw513yU";
        let v = loads_at(unicode, &keys, "x", None, at(T)).unwrap();
        let expected = serde_json::json!({"é": "ünïcode", "n": [1, 2.5, null, true, false]});
        assert_eq!(v, expected);
        assert_eq!(dumps_at(&expected, &keys, "x", false, T), unicode);
        // signing.dumps({"k": "a" * 200}, compress=True)
        let compressed =
            ".eJyrVspWslJKHCZAqRYAlOZN7g:1xWIc1:t1g7RjB2AVwpmIKVR0JcF_AjOzDF6qgh6bLPkInpkiU";
        let v = loads_at(compressed, &keys, DEFAULT_SALT, None, at(T)).unwrap();
        assert_eq!(v, serde_json::json!({"k": "a".repeat(200)}));
    }

    #[test]
    fn dumps_skips_compression_that_does_not_pay_like_django() {
        // signing.dumps({"a": 1}, compress=True)
        let token = "eyJhIjoxfQ:1xWIc1:DUDND6Qpl_CL1a2wfTvQGhusb73t_gpe9cVad-thJEQ";
        let keys = Keys::new(K);
        assert_eq!(
            dumps_at(&serde_json::json!({"a": 1}), &keys, DEFAULT_SALT, true, T),
            token
        );
    }

    #[test]
    fn inflate_reuses_its_inflater_and_refuses_cut_or_garbage_streams() {
        use std::io::Write as _;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let json = br#"{"_auth_user_id":"1","_auth_user_backend":"django.contrib.auth.backends.ModelBackend"}"#.repeat(40);
        enc.write_all(&json).unwrap();
        let z = enc.finish().unwrap();
        // Twice on the same thread: the reset inflater gives the same answer.
        assert_eq!(inflate(&z).unwrap(), json);
        assert_eq!(inflate(&z).unwrap(), json);
        for cut in [1, z.len() / 2, z.len() - 1] {
            assert_eq!(
                inflate(&z[..cut]).unwrap_err().kind(),
                ErrorKind::Malformed,
                "{cut}"
            );
        }
        assert_eq!(
            inflate(b"not zlib at all").unwrap_err().kind(),
            ErrorKind::Malformed
        );
        // And a good stream after the failures.
        assert_eq!(inflate(&z).unwrap(), json);
    }

    #[test]
    fn dumps_compressed_round_trips() {
        let keys = Keys::new(K);
        let value = serde_json::json!({"k": "a".repeat(200)});
        let token = dumps_at(&value, &keys, DEFAULT_SALT, true, T);
        assert!(token.starts_with('.'));
        // Not byte-equal to CPython's zlib output (Django's is `.eJyrVspWslJKHCZAqRYAlOZN7g…`
        // for this value): flate2's encoder picks other matches. Both inflate to the same JSON.
        assert_eq!(
            loads_at(&token, &keys, DEFAULT_SALT, None, at(T)).unwrap(),
            value
        );
    }

    #[test]
    fn loads_accepts_a_token_signed_with_a_fallback_key() {
        // signing.dumps({"rotated": True}, key=OLD)
        let token = "eyJyb3RhdGVkIjp0cnVlfQ:1xWIc1:CauXcrmeHrnAkEmLymJoms1C4a94pirwWVwGDmBpxFw";
        let rotated = Keys::new(K).with_fallbacks([OLD]);
        let v = loads_at(token, &rotated, DEFAULT_SALT, None, at(T)).unwrap();
        assert_eq!(v, serde_json::json!({"rotated": true}));
        let err = loads_at(token, &Keys::new(K), DEFAULT_SALT, None, at(T)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadSignature);
    }

    #[test]
    fn loads_enforces_max_age() {
        let token = "eyJ1IjoxfQ:1xWIc1:l8z-5_Vaf_QpmKrTszJn-phq1KIvsqXcTVQxzQG5qPY";
        let keys = Keys::new(K);
        let max = Some(Duration::from_secs(60));
        assert!(loads_at(token, &keys, DEFAULT_SALT, max, at(T + 60)).is_ok());
        let err = loads_at(token, &keys, DEFAULT_SALT, max, at(T + 61)).unwrap_err();
        assert!(err.is_signature_expired());
    }

    #[test]
    fn loads_rejects_signed_garbage_as_malformed() {
        let keys = Keys::new(K);
        let signer = TimestampSigner::with_keys(keys.clone(), DEFAULT_SALT);
        for payload in ["not*base64", ".bm90IHpsaWI", "bm90IGpzb24"] {
            let token = signer.sign_at(payload, T);
            let err = loads_at(&token, &keys, DEFAULT_SALT, None, at(T)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Malformed, "{payload}");
        }
    }

    #[test]
    fn keys_debug_never_shows_secrets() {
        let dbg = format!("{:?}", Keys::new(K).with_fallbacks([OLD]));
        assert!(!dbg.contains(K) && !dbg.contains(OLD), "{dbg}");
    }

    #[test]
    fn constant_time_eq_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
