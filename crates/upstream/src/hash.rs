//! The hashes Envoy uses around Redis: the per-key hash the redis_proxy hands to the load
//! balancer, Redis Cluster's CRC16 slots and the `{hashtag}` rule, plus the xxHash64 Envoy uses
//! to place hosts on a ring or in a Maglev table.

/// `MurmurHash::STD_HASH_SEED` (the seed libstdc++'s `std::hash<std::string>` uses).
pub const MURMUR_SEED: u64 = 0xc70f6907;

/// Number of Redis Cluster hash slots; a slot is the CRC16 modulo this (a power of two).
pub const SLOT_COUNT: u16 = 16384;

const MURMUR_MUL: u64 = 0xc6a4a7935bd1e995;

#[inline]
fn shift_mix(v: u64) -> u64 {
    v ^ (v >> 47)
}

/// Envoy's `MurmurHash::murmurHash2` (64-bit MurmurHash2 as in libstdc++ `_Hash_bytes`).
///
/// Every 8-byte block and the tail are read little-endian, as Envoy does on x86-64/aarch64;
/// the redis_proxy's key→host placement depends on it bit for bit.
pub fn murmur2_64(data: &[u8], seed: u64) -> u64 {
    let mut hash = seed ^ (data.len() as u64).wrapping_mul(MURMUR_MUL);
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        let k =
            shift_mix(u64::from_le_bytes(word).wrapping_mul(MURMUR_MUL)).wrapping_mul(MURMUR_MUL);
        hash ^= k;
        hash = hash.wrapping_mul(MURMUR_MUL);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let t = tail
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        hash ^= t;
        hash = hash.wrapping_mul(MURMUR_MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MURMUR_MUL);
    shift_mix(hash)
}

/// Envoy's `HashUtil::xxHash64` (XXH64), used for ring entries and Maglev permutations.
#[inline]
pub fn xx_hash64(data: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(data, seed)
}

/// The part of a key that is hashed: the bytes between the first `{` and the first `}` after
/// it, when that is non-empty; otherwise the whole key (spec §5.7).
pub fn hashtag(key: &[u8]) -> &[u8] {
    let Some(start) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let inner = &key[start + 1..];
    match inner.iter().position(|&b| b == b'}') {
        Some(end) if end > 0 => &inner[..end],
        _ => key,
    }
}

/// CRC16-CCITT as Redis Cluster uses it (XMODEM: poly 0x1021, init 0, no reflection).
pub fn crc16(data: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(data)
}

/// The Redis Cluster hash slot of a key (hashtags always honoured, as Redis does).
pub fn slot(key: &[u8]) -> u16 {
    crc16(hashtag(key)) & (SLOT_COUNT - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from Envoy's test/common/common/hash_test.cc.
    #[test]
    fn murmur2_matches_envoy() {
        assert_eq!(murmur2_64(b"foo", MURMUR_SEED), 9631199822919835226);
        assert_eq!(murmur2_64(b"bar", MURMUR_SEED), 11474628671133349555);
        assert_eq!(murmur2_64(b"foo\nbar", MURMUR_SEED), 16306510975912980159);
        assert_eq!(murmur2_64(b"lyft", MURMUR_SEED), 12847078931730529320);
        assert_eq!(murmur2_64(b"", MURMUR_SEED), 6142509188972423790);
    }

    // Longer inputs (full 8-byte blocks plus tails), checked against libstdc++'s
    // `std::hash<std::string>`, which is the same function with the same seed.
    #[test]
    fn murmur2_matches_libstdcxx() {
        let cases: [(&[u8], u64); 6] = [
            (b"0123456789abcdef", 10613591747391057286),
            (b"0123456789abcdefg", 2203838674469644272),
            (b"key:0", 10615998729552017639),
            (b"key:123", 11013827776942937316),
            (b"hello world, this is a longer key!", 12298541298350979967),
            (b"{user1000}.following", 11464415821435168329),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2_64(input, MURMUR_SEED), want, "{input:?}");
        }
    }

    #[test]
    fn xx_hash_matches_envoy() {
        assert_eq!(xx_hash64(b"foo", 0), 3728699739546630719);
        assert_eq!(xx_hash64(b"bar", 0), 5234164152756840025);
        assert_eq!(xx_hash64(b"foo\nbar", 0), 8917841378505826757);
        assert_eq!(xx_hash64(b"lyft", 0), 4400747396090729504);
        assert_eq!(xx_hash64(b"", 0), 17241709254077376921);
    }

    #[test]
    fn hashtag_rules() {
        assert_eq!(hashtag(b"foo"), b"foo");
        assert_eq!(hashtag(b"{}foo"), b"{}foo");
        assert_eq!(hashtag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hashtag(b"foo{{bar}}"), b"{bar");
        assert_eq!(hashtag(b"foo{bar"), b"foo{bar");
        assert_eq!(hashtag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hashtag(b"{user1000}.following"), b"user1000");
        assert_eq!(hashtag(b""), b"");
    }

    // Values from Envoy's crc16_test.cc and redis_cluster_lb_test.cc.
    #[test]
    fn crc16_and_slots() {
        assert_eq!(crc16(b"foo"), 44950);
        assert_eq!(crc16(b"bar"), 37829);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"foobar"), 12325);
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"{foo}bar"), slot(b"foo"));
    }
}
