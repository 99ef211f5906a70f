//! The unsigned LEB128 varints (VLQs) of the log: entry heads and block
//! length prefixes.

use crate::format::{FormatError, FormatErrorKind};

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VlqError {
    /// The input ends inside the varint.
    Truncated,
    /// More than 64 bits.
    Overflow,
}

impl VlqError {
    pub(crate) fn into_format(self, name: &str, offset: u64, what: &'static str) -> FormatError {
        let kind = match self {
            VlqError::Truncated => FormatErrorKind::Truncated {
                what,
                needed: 1,
                available: 0,
            },
            VlqError::Overflow => {
                FormatErrorKind::Corrupt(format!("{what}: varint overflows 64 bits"))
            }
        };
        FormatError::new(name, offset, kind)
    }
}

/// Reads an unsigned LEB128 varint at `pos`; returns it and the position
/// just after it.
#[inline]
pub(crate) fn read_vlq(data: &[u8], pos: usize) -> Result<(u64, usize), VlqError> {
    let first = *data.get(pos).ok_or(VlqError::Truncated)?;
    if first < 0x80 {
        return Ok((u64::from(first), pos + 1));
    }
    let mut value = u64::from(first & 0x7f);
    let mut shift = 7;
    let mut at = pos + 1;
    loop {
        let byte = *data.get(at).ok_or(VlqError::Truncated)?;
        at += 1;
        // The tenth byte may only carry the 64th bit.
        if shift == 63 && byte > 1 {
            return Err(VlqError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok((value, at));
        }
        shift += 7;
        if shift > 63 {
            return Err(VlqError::Overflow);
        }
    }
}

/// Appends `value` as a VLQ to `out`.
#[inline]
pub(crate) fn write_vlq(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encoded length of `value` as a VLQ.
#[cfg(test)]
pub(crate) fn vlq_len(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlq_round_trips_and_matches_reference_examples() {
        let encode = |v: u64| {
            let mut out = Vec::new();
            write_vlq(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let bytes = encode(v);
            assert_eq!(vlq_len(v), bytes.len() as u64);
            assert_eq!(read_vlq(&bytes, 0), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn vlq_rejects_truncation_and_overflow() {
        assert_eq!(read_vlq(&[], 0), Err(VlqError::Truncated));
        assert_eq!(read_vlq(&[0x80, 0x80], 0), Err(VlqError::Truncated));
        // Ten bytes whose last carries more than the 64th bit.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(read_vlq(&too_big, 0), Err(VlqError::Overflow));
        // Eleven bytes.
        let mut too_long = vec![0x80; 10];
        too_long.push(0x00);
        assert_eq!(read_vlq(&too_long, 0), Err(VlqError::Overflow));
    }
}
