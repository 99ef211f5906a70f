//! Raw snappy decoding that can stop part-way through a block.
//!
//! A lookup in a snappy-compressed log needs the bytes of one entry, which
//! lies on average in the middle of its block. The `snap` crate decodes
//! whole buffers only, so a lookup would pay for the second half of the
//! block too. [`PrefixDecoder`] decodes the same raw snappy format
//! (<https://github.com/google/snappy/blob/main/format_description.txt>)
//! element by element, stops as soon as the bytes asked for exist, and can
//! resume later from where it stopped. Whole-block decoding (iteration,
//! scans) still uses `snap`.
//!
//! Every read of the compressed input and every write of the output is a
//! bounds-checked slice operation; corrupt input gives an error, never a
//! panic. Speed comes from copying in fixed-size chunks into slack space
//! past the decoded length, which the checks below guarantee is there.

use std::fmt;

/// Bytes of writable space kept past the decoded length, so that short
/// literals and copies can be written as whole 16-byte chunks (or a 64-byte
/// copy as four) without a length-specific tail.
const SLACK: usize = 64;

/// Why a snappy buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnappyError {
    /// The varint length prefix is missing, too long or too large.
    Header,
    /// An element runs past the end of the input.
    Truncated { at: usize },
    /// A literal or copy would write past the decoded length.
    Overrun { at: usize },
    /// A copy refers to bytes before the start of the output.
    BadOffset { at: usize, offset: usize },
    /// The input ended before the decoded length was reached.
    Short { decoded: usize, claimed: usize },
}

impl fmt::Display for SnappyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnappyError::Header => write!(f, "bad length header"),
            SnappyError::Truncated { at } => {
                write!(f, "element at input byte {at} runs past the end")
            }
            SnappyError::Overrun { at } => {
                write!(
                    f,
                    "element at input byte {at} writes past the stated length"
                )
            }
            SnappyError::BadOffset { at, offset } => write!(
                f,
                "copy at input byte {at} has offset {offset}, before the start of the output"
            ),
            SnappyError::Short { decoded, claimed } => {
                write!(f, "input ends after {decoded} of {claimed} bytes")
            }
        }
    }
}

/// Where decoding of one snappy buffer stands. The input is passed to every
/// call (it usually borrows from a mapped file), the output lives in the
/// caller's buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrefixDecoder {
    /// Next input byte to read.
    src_pos: usize,
    /// Output bytes decoded so far.
    decoded: usize,
    /// The decoded length the header states.
    claimed: usize,
}

impl PrefixDecoder {
    /// Reads the length header of `src`, refusing lengths above `limit`, and
    /// sizes `out` for the whole decoded block plus slack. `out` keeps its
    /// old bytes (they are overwritten before they are exposed), so reusing
    /// a buffer costs no zeroing.
    pub(crate) fn start(
        src: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<PrefixDecoder, SnappyError> {
        Self::start_at(src, limit, out, 0)
    }

    /// As [`PrefixDecoder::start`], for output that goes to `out[at..]`
    /// (pass that slice to [`PrefixDecoder::decode_to`]); `out[..at]` is
    /// left alone.
    pub(crate) fn start_at(
        src: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
        at: usize,
    ) -> Result<PrefixDecoder, SnappyError> {
        let (claimed, header_len) = read_header(src)?;
        if claimed > limit {
            return Err(SnappyError::Header);
        }
        let needed = at.checked_add(claimed + SLACK).ok_or(SnappyError::Header)?;
        if out.len() < needed {
            // Exactly: callers bound their buffers by what they decode.
            out.reserve_exact(needed - out.len());
            out.resize(needed, 0);
        }
        Ok(PrefixDecoder {
            src_pos: header_len,
            decoded: 0,
            claimed,
        })
    }

    /// The decoded length the header states.
    pub(crate) fn claimed(&self) -> usize {
        self.claimed
    }

    /// Decodes until at least `want` output bytes exist (or the whole block,
    /// if it is shorter) and returns how many do. `src` and `out` must be
    /// the ones given to [`PrefixDecoder::start`].
    pub(crate) fn decode_to(
        &mut self,
        src: &[u8],
        out: &mut [u8],
        want: usize,
    ) -> Result<usize, SnappyError> {
        let want = want.min(self.claimed);
        let claimed = self.claimed;
        // `out` has `SLACK` bytes past `claimed` (see `start`); a caller
        // passing another buffer gets errors, not out-of-bounds writes.
        if out.len() < claimed + SLACK {
            return Err(SnappyError::Overrun { at: self.src_pos });
        }
        let mut s = self.src_pos;
        let mut d = self.decoded;
        while d < want {
            let at = s;
            let Some(&tag) = src.get(s) else {
                return Err(SnappyError::Short {
                    decoded: d,
                    claimed,
                });
            };
            if tag & 3 == 0 {
                // Literal: length - 1 in the tag's upper six bits, or in the
                // 1-4 little-endian bytes that follow when those say 60-63.
                let mut len = usize::from(tag >> 2) + 1;
                s += 1;
                if len > 60 {
                    let n = len - 60;
                    let bytes = src.get(s..s + n).ok_or(SnappyError::Truncated { at })?;
                    len = bytes
                        .iter()
                        .rev()
                        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
                        + 1;
                    s += n;
                }
                if len > claimed - d {
                    return Err(SnappyError::Overrun { at });
                }
                if len <= 16 && src.len() >= s + 16 {
                    // One 16-byte chunk; the bytes past `len` are
                    // overwritten by the next element or never exposed.
                    out[d..d + 16].copy_from_slice(&src[s..s + 16]);
                } else {
                    let literal = src.get(s..s + len).ok_or(SnappyError::Truncated { at })?;
                    out[d..d + len].copy_from_slice(literal);
                }
                s += len;
                d += len;
                continue;
            }
            // Copies: length and offset packed in the tag and 1, 2 or 4
            // following bytes.
            let (len, offset) = match tag & 3 {
                1 => {
                    let low = *src.get(s + 1).ok_or(SnappyError::Truncated { at })?;
                    s += 2;
                    (
                        usize::from((tag >> 2) & 7) + 4,
                        (usize::from(tag >> 5) << 8) | usize::from(low),
                    )
                }
                2 => {
                    let b = src.get(s + 1..s + 3).ok_or(SnappyError::Truncated { at })?;
                    s += 3;
                    (
                        usize::from(tag >> 2) + 1,
                        usize::from(u16::from_le_bytes([b[0], b[1]])),
                    )
                }
                _ => {
                    let b = src.get(s + 1..s + 5).ok_or(SnappyError::Truncated { at })?;
                    s += 5;
                    let offset = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    (
                        usize::from(tag >> 2) + 1,
                        usize::try_from(offset).unwrap_or(usize::MAX),
                    )
                }
            };
            if offset == 0 || offset > d {
                return Err(SnappyError::BadOffset { at, offset });
            }
            if len > claimed - d {
                return Err(SnappyError::Overrun { at });
            }
            copy_back(out, d, offset, len);
            d += len;
        }
        self.src_pos = s;
        self.decoded = d;
        if d == claimed && s != src.len() {
            // Trailing input after the stated length: corrupt, as snap says.
            return Err(SnappyError::Overrun { at: s });
        }
        Ok(d)
    }
}

/// Writes `out[d..d + len]` as a copy of the bytes `offset` back, where
/// `0 < offset <= d`, `len <= 64` and `out` has `SLACK` bytes past
/// `d + len`. Chunks may write up to 15 bytes past `d + len`.
#[inline(always)]
fn copy_back(out: &mut [u8], d: usize, offset: usize, len: usize) {
    let from = d - offset;
    if offset >= 16 {
        // Each 16-byte chunk reads only bytes already final: its source ends
        // at or before the start of its destination.
        let mut i = 0;
        while i < len {
            copy_chunk::<16>(out, from + i, d + i);
            i += 16;
        }
    } else if offset >= 8 {
        let mut i = 0;
        while i < len {
            copy_chunk::<8>(out, from + i, d + i);
            i += 8;
        }
    } else {
        // A repeating pattern shorter than 8 bytes (runs of one byte are
        // common): byte by byte, each byte copied from one already written.
        for i in 0..len {
            out[d + i] = out[from + i];
        }
    }
}

/// `out[to..to + N] = out[from..from + N]` through a register: a fixed-size
/// load and store rather than a `memmove` call.
#[inline(always)]
fn copy_chunk<const N: usize>(out: &mut [u8], from: usize, to: usize) {
    let mut chunk = [0u8; N];
    chunk.copy_from_slice(&out[from..from + N]);
    out[to..to + N].copy_from_slice(&chunk);
}

/// The varint at the start of a raw snappy buffer: the decoded length, at
/// most 2^32 - 1 in at most five bytes. Returns it and the header's length.
fn read_header(src: &[u8]) -> Result<(usize, usize), SnappyError> {
    let mut value: u64 = 0;
    for (i, &byte) in src.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if value > u64::from(u32::MAX) {
                return Err(SnappyError::Header);
            }
            let value = usize::try_from(value).map_err(|_| SnappyError::Header)?;
            return Ok((value, i + 1));
        }
    }
    Err(SnappyError::Header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(src: &[u8]) -> Result<Vec<u8>, SnappyError> {
        let mut out = Vec::new();
        let mut decoder = PrefixDecoder::start(src, usize::MAX, &mut out)?;
        let n = decoder.decode_to(src, &mut out, usize::MAX)?;
        if n != decoder.claimed() {
            return Err(SnappyError::Short {
                decoded: n,
                claimed: decoder.claimed(),
            });
        }
        out.truncate(n);
        Ok(out)
    }

    /// Text-like data with repeats at every distance, so the encoder emits
    /// literals and all three copy forms with short and long offsets.
    fn sample(seed: u64, len: usize) -> Vec<u8> {
        let words: [&[u8]; 6] = [b"a", b"bb", b"best of times ", b"xyzxyzxyz", b"0", b"\n"];
        let mut out = Vec::with_capacity(len);
        let mut x = seed | 1;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 5 {
                0 => out.push((x >> 8) as u8),
                1 if out.len() > 100 => {
                    let from = (x >> 16) as usize % out.len();
                    let take = ((x >> 40) as usize % 80).min(out.len() - from);
                    let copy = out[from..from + take].to_vec();
                    out.extend_from_slice(&copy);
                }
                _ => out.extend_from_slice(words[(x >> 24) as usize % words.len()]),
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn decodes_what_snap_encodes() {
        for (seed, len) in [(1, 0), (2, 1), (3, 17), (4, 4096), (5, 70_000), (6, 300)] {
            let plain = sample(seed, len);
            let packed = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
            assert_eq!(decode_all(&packed).unwrap(), plain, "seed {seed}");
        }
    }

    #[test]
    fn stops_early_and_resumes() {
        let plain = sample(7, 8192);
        let packed = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut out = Vec::new();
        let mut decoder = PrefixDecoder::start(&packed, 1 << 20, &mut out).unwrap();
        let first = decoder.decode_to(&packed, &mut out, 100).unwrap();
        assert!((100..100 + 65 + 4096).contains(&first), "{first}");
        assert!(first < plain.len(), "decoded the whole block for 100 bytes");
        assert_eq!(&out[..first], &plain[..first]);
        let all = decoder.decode_to(&packed, &mut out, usize::MAX).unwrap();
        assert_eq!(all, plain.len());
        assert_eq!(&out[..all], &plain[..]);
    }

    #[test]
    fn rejects_lengths_over_the_limit() {
        let packed = snap::raw::Encoder::new().compress_vec(&[7; 1000]).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            PrefixDecoder::start(&packed, 999, &mut out).unwrap_err(),
            SnappyError::Header
        );
        assert!(out.is_empty(), "allocated for a refused length");
    }

    #[test]
    fn errors_name_the_problem() {
        // Copy with offset 1 before any output.
        assert!(matches!(
            decode_all(&[4, 0b0000_0001, 1]),
            Err(SnappyError::BadOffset { at: 1, offset: 1 })
        ));
        // A 3-byte literal with only 2 bytes left.
        assert!(matches!(
            decode_all(&[3, 0b0000_1000, b'a', b'b']),
            Err(SnappyError::Truncated { at: 1 })
        ));
        // Literal longer than the stated length.
        assert!(matches!(
            decode_all(&[1, 0b0000_0100, b'a', b'b']),
            Err(SnappyError::Overrun { at: 1 })
        ));
        // Stated length never reached.
        assert!(matches!(
            decode_all(&[5, 0b0000_0100, b'a', b'b']),
            Err(SnappyError::Short {
                decoded: 2,
                claimed: 5
            })
        ));
        assert_eq!(decode_all(&[]).unwrap_err(), SnappyError::Header);
        assert_eq!(
            decode_all(&[0x80, 0x80, 0x80, 0x80, 0x80, 1]).unwrap_err(),
            SnappyError::Header
        );
    }

    proptest! {
        #[test]
        fn matches_snap_on_valid_input(seed in any::<u64>(), len in 0usize..20_000, want in any::<usize>()) {
            let plain = sample(seed, len);
            let packed = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
            let mut out = Vec::new();
            let mut decoder = PrefixDecoder::start(&packed, usize::MAX, &mut out).unwrap();
            let want = want % (len + 1);
            let got = decoder.decode_to(&packed, &mut out, want).unwrap();
            prop_assert!(got >= want);
            prop_assert_eq!(&out[..got], &plain[..got]);
        }

        #[test]
        fn agrees_with_snap_on_mutated_input(
            seed in any::<u64>(),
            len in 1usize..3000,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let plain = sample(seed, len);
            let mut packed = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
            for (at, byte) in flips {
                let at = at % packed.len();
                packed[at] = byte;
            }
            packed.truncate(cut % (packed.len() + 1));
            let ours = decode_all(&packed);
            let theirs = snap::raw::Decoder::new().decompress_vec(&packed);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "ours {:?} vs snap {:?}", ours.as_ref().map(Vec::len), theirs.as_ref().map(Vec::len)),
            }
        }
    }
}
