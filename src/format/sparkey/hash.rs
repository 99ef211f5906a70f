//! MurmurHash3, the two variants Sparkey indexes use: `x86_32` for 4-byte
//! stored hashes and the first 64-bit half (h1) of `x64_128` for 8-byte ones.
//!
//! Hand-written because it is short and on the lookup hot path; both read
//! their input blocks little-endian on every platform, as libsparkey does.

/// The hash a Sparkey index stores, chosen by its header's `hash_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashSize {
    /// `hash_size == 4`: MurmurHash3_x86_32, widened to u64.
    Bits32,
    /// `hash_size == 8`: h1 of MurmurHash3_x64_128.
    Bits64,
}

impl HashSize {
    /// Bytes of a stored hash in an index slot.
    pub fn bytes(self) -> u32 {
        match self {
            HashSize::Bits32 => 4,
            HashSize::Bits64 => 8,
        }
    }

    /// Hashes `key` with this function and `seed`.
    #[inline]
    pub fn hash(self, key: &[u8], seed: u32) -> u64 {
        match self {
            HashSize::Bits32 => u64::from(murmur3_32(key, seed)),
            HashSize::Bits64 => murmur3_x64_128_h1(key, seed),
        }
    }
}

/// MurmurHash3_x86_32.
pub fn murmur3_32(key: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);

    let mut h = seed;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= mix(k);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
        h ^= mix(k);
    }
    // The length is mixed in modulo 2^32, as the C code's `int len` does.
    h ^= key.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The first 64-bit half (h1) of MurmurHash3_x64_128; the seed initialises
/// both lanes.
pub fn murmur3_x64_128_h1(key: &[u8], seed: u32) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mix1 = |k: u64| k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix2 = |k: u64| k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    let le_u64 = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
    };

    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);
    let mut blocks = key.chunks_exact(16);
    for block in &mut blocks {
        let (k1, k2) = block.split_at(8);
        h1 ^= mix1(le_u64(k1));
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix2(le_u64(k2));
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix2(le_u64(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix1(le_u64(&tail[..tail.len().min(8)]));
    }
    h1 ^= key.len() as u64;
    h2 ^= key.len() as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1.wrapping_add(h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_32_matches_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"a", 0), 0x3c25_69b2);
        assert_eq!(murmur3_32(b"abc", 0), 0xb3dd_93fa);
        // Widely published vectors for other seeds and every tail length.
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c),
            0x2fa8_26cd
        );
    }

    #[test]
    fn murmur3_x64_128_h1_matches_reference_vectors() {
        assert_eq!(murmur3_x64_128_h1(b"", 0), 0);
        assert_eq!(murmur3_x64_128_h1(b"a", 0), 0x8555_5565_f659_7889);
        assert_eq!(murmur3_x64_128_h1(b"abc", 0), 0xb496_3f3f_3fad_7867);
        // "The quick brown fox jumps over the lazy dog", seed 0: the 128-bit
        // digest is commonly printed e34bbc7bbc071b6c7a433ca9c49a9347 (h1, h2).
        assert_eq!(
            murmur3_x64_128_h1(b"The quick brown fox jumps over the lazy dog", 0),
            0xe34b_bc7b_bc07_1b6c
        );
    }
}
