//! Structural damage for fuzz tests: bit flips, truncations, inserted and
//! overwritten bytes, fields set to huge values, numbers made huge, slices
//! repeated. Positions are taken modulo the input's length when applied,
//! so one mutation fits any input.

use proptest::prelude::*;

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Also how length, count and offset fields are set to huge values:
    /// `bytes` is then one of the caller's patches.
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Replace the `nth` run of ASCII digits with `digits` nines.
    HugeNumber {
        nth: usize,
        digits: usize,
    },
    /// Repeat a slice many times (long headers, long paths).
    Repeat {
        at: usize,
        len: usize,
        times: usize,
    },
}

/// Number of cases for a proptest: `PROPTEST_CASES` if set, else
/// `default` (small, for CI).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Damage to a binary file: `patches` are byte strings that make a length,
/// count or offset field huge in the file's encoding. Low positions are
/// favoured, because headers live there.
pub fn binary(patches: Vec<Vec<u8>>) -> impl Strategy<Value = Mutation> {
    let at = prop_oneof![0usize..128, any::<usize>()];
    prop_oneof![
        4 => (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        2 => (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        3 => (at, prop::sample::select(patches))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

/// Little-endian fields of 1, 2, 4 and 8 bytes set to huge or edge values.
pub fn little_endian_patches() -> Vec<Vec<u8>> {
    let values = [
        u64::MAX,
        u64::MAX / 2,
        1 << 32,
        u32::MAX as u64,
        0x7f,
        0x80,
        0,
    ];
    let mut patches = Vec::new();
    for width in [1usize, 2, 4, 8] {
        for value in values {
            patches.push(value.to_le_bytes()[..width].to_vec());
        }
    }
    patches
}

/// Damage to text (HTTP requests): bytes drawn from `alphabet`, and
/// numbers and slices made huge.
pub fn text(alphabet: Vec<u8>) -> impl Strategy<Value = Mutation> {
    let bytes = prop::collection::vec(
        prop_oneof![any::<u8>(), prop::sample::select(alphabet)],
        1..8,
    );
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), bytes.clone()).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), bytes).prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        (0usize..6, 10usize..40).prop_map(|(nth, digits)| Mutation::HugeNumber { nth, digits }),
        (any::<usize>(), 1usize..16, 2usize..3000).prop_map(|(at, len, times)| Mutation::Repeat {
            at,
            len,
            times
        }),
    ]
}

/// Applies one mutation (nothing to an empty input).
pub fn apply(input: &mut Vec<u8>, m: &Mutation) {
    if input.is_empty() {
        return;
    }
    let pos = |at: usize, len: usize| at % len;
    match m {
        Mutation::FlipBit { at, bit } => {
            let i = pos(*at, input.len());
            input[i] ^= 1 << bit;
        }
        Mutation::Truncate { at } => input.truncate(pos(*at, input.len())),
        Mutation::Insert { at, bytes } => {
            let i = pos(*at, input.len() + 1);
            input.splice(i..i, bytes.iter().copied());
        }
        Mutation::Overwrite { at, bytes } => {
            let i = pos(*at, input.len());
            for (j, b) in bytes.iter().enumerate() {
                if let Some(slot) = input.get_mut(i + j) {
                    *slot = *b;
                }
            }
        }
        Mutation::HugeNumber { nth, digits } => {
            let mut runs = Vec::new();
            let mut i = 0;
            while i < input.len() {
                if input[i].is_ascii_digit() {
                    let start = i;
                    while i < input.len() && input[i].is_ascii_digit() {
                        i += 1;
                    }
                    runs.push((start, i));
                } else {
                    i += 1;
                }
            }
            if let Some(&(start, end)) = runs.get(nth % runs.len().max(1)) {
                input.splice(start..end, std::iter::repeat_n(b'9', *digits));
            }
        }
        Mutation::Repeat { at, len, times } => {
            let i = pos(*at, input.len());
            let end = (i + len).min(input.len());
            let piece = input[i..end].to_vec();
            let repeated: Vec<u8> = piece
                .iter()
                .copied()
                .cycle()
                .take(piece.len() * times)
                .collect();
            input.splice(i..end, repeated);
        }
    }
}

/// Applies every mutation in turn.
pub fn apply_all(input: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        apply(input, m);
    }
}
