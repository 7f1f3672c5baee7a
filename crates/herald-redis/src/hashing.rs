//! Consistent hashing of names onto shards, mirroring `channels_redis/utils.py`
//! `_consistent_hash`.
//!
//! `shard = int((crc32(utf8(value)) & 0xFFF) / (4096 / float(ring_size)))`, or 0 when there is
//! one shard. The division is done in `f64` exactly as Python does it: the integer shortcut
//! `bigval * n / 4096` gives different shards for some ring sizes ≥ 186.

/// The shard index of `value` on a ring of `ring_size` shards.
///
/// What is hashed (see [`RedisChannelLayer`](crate::RedisChannelLayer)): the group name for
/// group operations, `non_local_name(channel)` for receivers and `group_send` deliveries.
///
/// ```
/// use herald_redis::internals::consistent_hash;
/// assert_eq!(consistent_hash(b"key_one", 10), 6);
/// assert_eq!(consistent_hash(b"key_two", 10), 4);
/// ```
///
/// # Panics
/// If `ring_size` is 0 (a layer always has at least one host).
pub fn consistent_hash(value: &[u8], ring_size: usize) -> usize {
    assert!(ring_size > 0, "ring_size must be at least 1");
    if ring_size == 1 {
        return 0;
    }
    let bigval = crc32fast::hash(value) & 0xFFF;
    // Python: int(bigval / (4096 / float(ring_size))); both divisions are IEEE doubles and
    // int() truncates toward zero, which `as usize` also does for these positive values.
    let bucket = f64::from(bigval) / (4096.0 / ring_size as f64);
    bucket as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_test_utils_vectors() {
        // channels_redis tests/test_utils.py test_consistent_hash_result.
        assert_eq!(consistent_hash(b"key_one", 1), 0);
        assert_eq!(consistent_hash(b"key_two", 1), 0);
        assert_eq!(consistent_hash(b"key_one", 2), 1);
        assert_eq!(consistent_hash(b"key_two", 2), 0);
        assert_eq!(consistent_hash(b"key_one", 10), 6);
        assert_eq!(consistent_hash(b"key_two", 10), 4);
    }

    #[test]
    fn spec_crc_values() {
        assert_eq!(crc32fast::hash(b"key_one"), 0xae65_9b21);
        assert_eq!(crc32fast::hash(b"test-group"), 0x20f4_4e04);
        assert_eq!(consistent_hash(b"test-group", 2), 1);
        assert_eq!(consistent_hash(b"test-group", 3), 2);
        assert_eq!(consistent_hash(b"test-group", 4), 3);
        assert_eq!(consistent_hash(b"test-group", 10), 8);
        assert_eq!(consistent_hash(b"chat", 10), 1);
    }

    #[test]
    fn ring_vectors_for_1_to_300_hosts_match_python() {
        // crate::golden::RING comes from tests/compat/golden_vectors.py (`_consistent_hash`).
        for (name, expected) in crate::golden::RING {
            for (i, shard) in expected.iter().enumerate() {
                let n = i + 1;
                assert_eq!(
                    consistent_hash(name.as_bytes(), n),
                    usize::from(*shard),
                    "{name} n={n}"
                );
            }
        }
    }

    #[test]
    fn float_division_differs_from_integer_shortcut_like_python() {
        // bigval 2048 on 186 shards: Python gives 92, the integer formula 93.
        let bucket = (2048.0 / (4096.0 / 186.0)) as usize;
        assert_eq!(bucket, 92);
        assert_eq!(2048 * 186 / 4096, 93);
    }
}
