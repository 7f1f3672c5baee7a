//! Fernet and MultiFernet, compatible with Python `cryptography.fernet` as channels_redis uses
//! it (`channels_redis/serializers.py` `BaseMessageSerializer`, 4.2.1+).
//!
//! * Key derivation: each configured key (UTF-8 of a `str`, or raw bytes) is hashed with
//!   SHA-256; Python then base64url-encodes the digest into a Fernet key, which Fernet decodes
//!   again, so the 32 digest bytes are the key: the **first 16 sign** (HMAC-SHA256), the **last
//!   16 encrypt** (AES-128-CBC).
//! * Token (Fernet spec v0x80): `0x80 | u64 BE timestamp (s) | 16-byte IV | AES-128-CBC(PKCS7
//!   plaintext) | HMAC-SHA256(signing key, everything before)`, base64url **with** padding.
//! * MultiFernet: encrypt with the first key, decrypt with each key in order.
//! * Decrypt with a TTL (`expiry + 10` in the core layer): reject when `timestamp + ttl < now`
//!   and when `now + 60 < timestamp` (cryptography's `_MAX_CLOCK_SKEW`); without a TTL
//!   (PubSub), no time check at all.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// Fernet token version byte.
const VERSION: u8 = 0x80;
/// cryptography's `_MAX_CLOCK_SKEW`: tokens up to 60 s in the future are accepted.
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 60;
/// version + timestamp + IV.
const HEADER_LEN: usize = 1 + 8 + 16;
const MAC_LEN: usize = 32;

/// Why a token was rejected (Python raises `InvalidToken` for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FernetError {
    /// Not base64url, too short, or not version 0x80.
    Malformed,
    /// No configured key's HMAC matches.
    BadSignature,
    /// Older than the TTL, or more than 60 s in the future.
    Expired,
    /// The HMAC matched but the ciphertext did not decrypt (bad padding).
    BadCiphertext,
}

/// One Fernet key, split into its signing and encryption halves.
#[derive(Clone)]
pub struct FernetKey {
    signing: [u8; 16],
    encryption: [u8; 16],
}

impl std::fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FernetKey(<redacted>)")
    }
}

impl FernetKey {
    /// The key channels_redis derives from one entry of `symmetric_encryption_keys`:
    /// `SHA256(key)` (Python: `Fernet(urlsafe_b64encode(sha256(key).digest()))`).
    pub fn derive(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        Self::from_raw(digest.into())
    }

    /// A key from its 32 raw bytes (what a Fernet key string base64url-decodes to).
    pub fn from_raw(raw: [u8; 32]) -> Self {
        let mut signing = [0u8; 16];
        let mut encryption = [0u8; 16];
        signing.copy_from_slice(&raw[..16]);
        encryption.copy_from_slice(&raw[16..]);
        FernetKey {
            signing,
            encryption,
        }
    }

    /// The key as Python prints it: base64url of the 32 bytes, with padding (44 chars).
    pub fn to_base64(&self) -> String {
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(&self.signing);
        raw[16..].copy_from_slice(&self.encryption);
        URL_SAFE.encode(raw)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; 16 bytes cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.signing).unwrap()
    }

    /// Encrypts `plaintext` at `timestamp` (Unix seconds) with `iv`; returns the token text.
    pub fn encrypt_with(&self, plaintext: &[u8], timestamp: u64, iv: [u8; 16]) -> String {
        let ciphertext = Aes128CbcEnc::new(&self.encryption.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut token = Vec::with_capacity(HEADER_LEN + ciphertext.len() + MAC_LEN);
        token.push(VERSION);
        token.extend_from_slice(&timestamp.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&ciphertext);
        let mut mac = self.mac();
        mac.update(&token);
        token.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE.encode(token)
    }

    /// Checks the HMAC of a decoded token and decrypts it (no time checks).
    fn open(&self, data: &[u8]) -> Result<Vec<u8>, FernetError> {
        let (signed, tag) = data.split_at(data.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| FernetError::BadSignature)?;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&signed[9..HEADER_LEN]);
        Aes128CbcDec::new(&self.encryption.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&signed[HEADER_LEN..])
            .map_err(|_| FernetError::BadCiphertext)
    }
}

/// Several keys: the first encrypts, all decrypt (Python `MultiFernet`).
#[derive(Debug, Clone)]
pub(crate) struct MultiFernet {
    keys: Vec<FernetKey>,
}

impl MultiFernet {
    /// Derives one key per configured secret, in order. `None` if `secrets` is empty.
    pub(crate) fn from_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        Some(MultiFernet {
            keys: secrets
                .iter()
                .map(|s| FernetKey::derive(s.as_ref()))
                .collect(),
        })
    }

    /// The keys, first one encrypting.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> &[FernetKey] {
        &self.keys
    }

    /// Encrypts with the first key, the current time and a random IV.
    pub(crate) fn encrypt(&self, plaintext: &[u8]) -> String {
        let iv: [u8; 16] = rand::random();
        self.keys[0].encrypt_with(plaintext, unix_now(), iv)
    }

    /// Decrypts a token with any key, checking its age against `ttl_secs` at time `now`.
    ///
    /// # Errors
    /// A [`FernetError`]; a bad time is reported before a bad signature only when the token
    /// is authentic for some key (as cryptography checks the HMAC per key first).
    pub(crate) fn decrypt_at(
        &self,
        token: &[u8],
        ttl_secs: Option<u64>,
        now: u64,
    ) -> Result<Vec<u8>, FernetError> {
        let data = URL_SAFE.decode(token).map_err(|_| FernetError::Malformed)?;
        if data.len() < HEADER_LEN + MAC_LEN || data[0] != VERSION {
            return Err(FernetError::Malformed);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&data[1..9]);
        let timestamp = u64::from_be_bytes(ts);
        let mut last = FernetError::BadSignature;
        for key in &self.keys {
            match key.open(&data) {
                Ok(plain) => {
                    if let Some(ttl) = ttl_secs
                        && (timestamp.saturating_add(ttl) < now
                            || now.saturating_add(MAX_CLOCK_SKEW_SECS) < timestamp)
                    {
                        return Err(FernetError::Expired);
                    }
                    return Ok(plain);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// [`decrypt_at`](Self::decrypt_at) with the current time.
    pub(crate) fn decrypt(
        &self,
        token: &[u8],
        ttl_secs: Option<u64>,
    ) -> Result<Vec<u8>, FernetError> {
        self.decrypt_at(token, ttl_secs, unix_now())
    }
}

/// Whole seconds since the Unix epoch (Python `int(time.time())`).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_derivation_matches_spec_vector() {
        // Spec 2.4: "a-test-key" -> SHA256 bd01d31b… -> Fernet key vQHTG9CF…qVI=
        let key = FernetKey::derive(b"a-test-key");
        assert_eq!(
            key.to_base64(),
            "vQHTG9CFHUSqb8quMxeiDkUMwWkp8zurx5IirXypqVI="
        );
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = MultiFernet::from_secrets(&["old"]).unwrap();
        let both = MultiFernet::from_secrets(&["new", "old"]).unwrap();
        let token = old.encrypt(b"hello");
        assert_eq!(both.decrypt(token.as_bytes(), Some(70)).unwrap(), b"hello");
        let token = both.encrypt(b"x");
        assert_eq!(
            old.decrypt(token.as_bytes(), None),
            Err(FernetError::BadSignature)
        );
    }

    #[test]
    fn ttl_and_clock_skew() {
        let f = MultiFernet::from_secrets(&["k"]).unwrap();
        let token = f.keys()[0].encrypt_with(b"m", 1000, [7; 16]);
        let t = token.as_bytes();
        assert!(f.decrypt_at(t, Some(70), 1070).is_ok());
        assert_eq!(f.decrypt_at(t, Some(70), 1071), Err(FernetError::Expired));
        assert!(f.decrypt_at(t, Some(70), 940).is_ok());
        assert_eq!(f.decrypt_at(t, Some(70), 939), Err(FernetError::Expired));
        // No TTL (PubSub): no time check.
        assert!(f.decrypt_at(t, None, 1_000_000).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let f = MultiFernet::from_secrets(&["k"]).unwrap();
        assert_eq!(
            f.decrypt(b"not base64!!", None),
            Err(FernetError::Malformed)
        );
        assert_eq!(f.decrypt(b"gAAA", None), Err(FernetError::Malformed));
    }
}
