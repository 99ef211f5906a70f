//! sequins' key -> partition function, bit for bit.
//!
//! sequins routes a key with a 32-bit Java-`String.hashCode`-style hash over
//! the key's bytes taken as unsigned (`h = h * 31 + byte`, wrapping), then
//! `(h & 0x7fffffff) % n`. Producers written with Cascading/Scalding hash a
//! one-element tuple instead (`31 + h`), which agrees up to a constant shift
//! except where `h + 31` wraps past `i32::MAX`; for those keys sequins also
//! tries an *alternate* partition, and so do we.

/// The sequins string hash: `h = h * 31 + b` over unsigned bytes, wrapping
/// in two's complement, starting at 0. (Not Hadoop's `Text.hashCode`.)
///
/// Every record of a load is routed with it, so it takes four bytes per
/// step (`h * 31^4 + b0 * 31^3 + b1 * 31^2 + b2 * 31 + b3`, the same value
/// in wrapping arithmetic) instead of one long chain of multiplications.
pub fn string_hash(key: &[u8]) -> i32 {
    const P1: i32 = 31;
    const P2: i32 = 31 * 31;
    const P3: i32 = 31 * 31 * 31;
    const P4: i32 = 31 * 31 * 31 * 31;
    let mut chunks = key.chunks_exact(4);
    let mut h = 0i32;
    for c in &mut chunks {
        let step = i32::from(c[0])
            .wrapping_mul(P3)
            .wrapping_add(i32::from(c[1]).wrapping_mul(P2))
            .wrapping_add(i32::from(c[2]).wrapping_mul(P1))
            .wrapping_add(i32::from(c[3]));
        h = h.wrapping_mul(P4).wrapping_add(step);
    }
    chunks
        .remainder()
        .iter()
        .fold(h, |h, &b| h.wrapping_mul(31).wrapping_add(i32::from(b)))
}

/// The partition sequins puts `key` in, out of `n` (`n == 0` is treated as
/// a single partition rather than dividing by zero).
pub fn partition(key: &[u8], n: u32) -> u32 {
    partitions(key, n).0
}

/// The alternate partition of a key whose hash is within 32 of `i32::MAX`
/// (the Cascading tuple-hash case), when it differs from
/// [`partition`]; `None` for all other keys.
pub fn alternate_partition(key: &[u8], n: u32) -> Option<u32> {
    let (normal, alternate) = partitions(key, n);
    (alternate != normal).then_some(alternate)
}

/// `(normal, alternate)` exactly as sequins computes them; the alternate
/// equals the normal partition except in the Cascading case.
pub fn partitions(key: &[u8], n: u32) -> (u32, u32) {
    let n = u64::from(n.max(1));
    let hash = string_hash(key);
    let normal = ((hash & i32::MAX) as u64 % n) as u32;
    if hash <= i32::MAX - 32 {
        return (normal, normal);
    }
    let tuple = (hash.wrapping_add(31) & i32::MAX) as u64 % n;
    let alternate = (tuple + (n - 31 % n)) % n;
    (normal, alternate as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four-bytes-a-step hash equals the byte-at-a-time definition.
    #[test]
    fn string_hash_matches_the_definition() {
        use proptest::prelude::*;
        proptest!(|(key in proptest::collection::vec(any::<u8>(), 0..64))| {
            let simple = key
                .iter()
                .fold(0i32, |h, &b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
            prop_assert_eq!(string_hash(&key), simple);
        });
    }

    /// sequins' own test vectors.
    #[test]
    fn string_hash_matches_sequins_vectors() {
        assert_eq!(string_hash(b"foo bar baz"), 1_892_173_108);
        assert_eq!(string_hash(b"foobarbaz"), -1_165_917_330);
        assert_eq!(
            string_hash(b"The quick brown fox jumped over the lazy dog"),
            1_953_395_701
        );
        let pathological = [
            0x70, 0x17, 0xad, 0x78, 0x8c, 0x5e, 0x85, 0xf1, 0x43, 0x27, 0xf8, 0x67,
        ];
        assert_eq!(string_hash(&pathological), 2_147_483_619);
    }

    #[test]
    fn partitions_match_sequins_vectors() {
        assert_eq!(partitions(b"bar", 20), (19, 19));
        assert_eq!(partitions(b"fol", 20), (11, 11));
        let pathological = [
            0x70, 0x17, 0xad, 0x78, 0x8c, 0x5e, 0x85, 0xf1, 0x43, 0x27, 0xf8, 0x67,
        ];
        assert_eq!(partitions(&pathological, 20), (19, 11));
        assert_eq!(partition(&pathological, 20), 19);
        assert_eq!(alternate_partition(&pathological, 20), Some(11));
        assert_eq!(alternate_partition(b"bar", 20), None);
    }

    /// The vectors computed for the fixtures.
    #[test]
    fn partitions_match_fixture_vectors() {
        for key in ["Alice", "Betty", "Charlie", "Dylan", "Alan"] {
            assert_eq!(partition(key.as_bytes(), 2), 0, "{key}");
        }
        for key in ["Bob", "fake"] {
            assert_eq!(partition(key.as_bytes(), 2), 1, "{key}");
        }
        for (key, p) in [
            ("Alice", 3),
            ("Bob", 0),
            ("Charlie", 4),
            ("Dylan", 4),
            ("foo", 4),
        ] {
            assert_eq!(partition(key.as_bytes(), 5), p, "{key}");
        }
    }

    #[test]
    fn bytes_are_unsigned_and_zero_partitions_do_not_panic() {
        assert_eq!(string_hash(&[0xff]), 255);
        assert_eq!(string_hash(&[0xff, 0x01]), 255 * 31 + 1);
        assert_eq!(partition(b"anything", 0), 0);
        assert_eq!(
            partitions(
                &[
                    0x70, 0x17, 0xad, 0x78, 0x8c, 0x5e, 0x85, 0xf1, 0x43, 0x27, 0xf8, 0x67
                ],
                1
            ),
            (0, 0)
        );
    }
}
