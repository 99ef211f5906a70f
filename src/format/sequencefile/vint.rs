//! Hadoop's "zero-compressed" variable-length integers
//! (`WritableUtils.writeVLong` / `writeVInt`).
//!
//! One marker byte, then 0..8 big-endian payload bytes: values in
//! -112..=127 are the marker itself; otherwise the marker says how many
//! bytes follow and whether the value was stored bitwise-negated. SequenceFile
//! uses them for class-name and metadata lengths, BLOCK record counts, section
//! lengths and per-record key/value lengths, and `Text` uses one as its length
//! prefix. Decoding works on byte slices (no per-byte `Read` calls) and never
//! reads past the slice it is given.

/// Why a vint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VintError {
    /// The slice ends inside the vint; `needed` is its full size in bytes.
    Truncated { needed: usize },
    /// The value does not fit the integer type asked for (an `i32` for vints).
    Overflow { value: i64 },
}

impl std::fmt::Display for VintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VintError::Truncated { needed } => {
                write!(f, "vint truncated ({needed} bytes needed)")
            }
            VintError::Overflow { value } => write!(f, "vint value {value} does not fit 32 bits"),
        }
    }
}

/// Total encoded size (marker included) announced by a vint's first byte.
#[inline]
pub fn encoded_len(first: u8) -> usize {
    let marker = first as i8;
    if marker >= -112 {
        1
    } else if marker >= -120 {
        (-111 - marker as i32) as usize
    } else {
        (-119 - marker as i32) as usize
    }
}

/// Decodes a vlong at the start of `bytes`: returns the value and the number
/// of bytes it used.
#[inline]
pub fn decode_vlong(bytes: &[u8]) -> Result<(i64, usize), VintError> {
    let Some(&first) = bytes.first() else {
        return Err(VintError::Truncated { needed: 1 });
    };
    let marker = first as i8;
    if marker >= -112 {
        return Ok((marker as i64, 1));
    }
    let size = encoded_len(first);
    let Some(payload) = bytes.get(1..size) else {
        return Err(VintError::Truncated { needed: size });
    };
    let mut value: u64 = 0;
    for &b in payload {
        value = (value << 8) | b as u64;
    }
    let value = value as i64;
    let negative = marker < -120;
    Ok((if negative { !value } else { value }, size))
}

/// Decodes a vint (a vlong that must fit an `i32`).
#[inline]
pub fn decode_vint(bytes: &[u8]) -> Result<(i32, usize), VintError> {
    let (value, size) = decode_vlong(bytes)?;
    match i32::try_from(value) {
        Ok(v) => Ok((v, size)),
        Err(_) => Err(VintError::Overflow { value }),
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode_vlong(value: i64, out: &mut Vec<u8>) {
    if (-112..=127).contains(&value) {
        out.push(value as u8);
        return;
    }
    let (base, magnitude) = if value < 0 {
        (-120i32, !value as u64)
    } else {
        (-112i32, value as u64)
    };
    let payload_len = 8 - (magnitude.leading_zeros() as usize / 8);
    out.push((base - payload_len as i32) as u8);
    out.extend_from_slice(&magnitude.to_be_bytes()[8 - payload_len..]);
}

/// The number of bytes [`encode_vlong`] writes for `value`.
pub fn vlong_size(value: i64) -> usize {
    if (-112..=127).contains(&value) {
        return 1;
    }
    let magnitude = if value < 0 {
        !value as u64
    } else {
        value as u64
    };
    1 + 8 - (magnitude.leading_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of formats.md 3.6, cross-checked with Hadoop-written files.
    const TABLE: &[(i64, &[u8])] = &[
        (0, &[0x00]),
        (127, &[0x7f]),
        (-1, &[0xff]),
        (-112, &[0x90]),
        (128, &[0x8f, 0x80]),
        (255, &[0x8f, 0xff]),
        (256, &[0x8e, 0x01, 0x00]),
        (65536, &[0x8d, 0x01, 0x00, 0x00]),
        (-113, &[0x87, 0x70]),
        (-128, &[0x87, 0x7f]),
        (-129, &[0x87, 0x80]),
        (i32::MAX as i64, &[0x8c, 0x7f, 0xff, 0xff, 0xff]),
        (i32::MIN as i64, &[0x84, 0x7f, 0xff, 0xff, 0xff]),
        (1 << 40, &[0x8a, 0x01, 0, 0, 0, 0, 0]),
        (
            i64::MAX,
            &[0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            i64::MIN,
            &[0x80, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    ];

    #[test]
    fn matches_hadoop_table_both_ways() {
        for &(value, bytes) in TABLE {
            let mut out = Vec::new();
            encode_vlong(value, &mut out);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(vlong_size(value), bytes.len());
            assert_eq!(
                decode_vlong(bytes),
                Ok((value, bytes.len())),
                "decoding {value}"
            );
        }
    }

    #[test]
    fn truncated_vint_says_how_much_it_needs() {
        assert_eq!(decode_vlong(&[]), Err(VintError::Truncated { needed: 1 }));
        assert_eq!(
            decode_vlong(&[0x8c, 0x7f]),
            Err(VintError::Truncated { needed: 5 })
        );
    }

    #[test]
    fn vint_rejects_values_beyond_i32() {
        assert_eq!(
            decode_vint(&[0x8b, 0x01, 0, 0, 0, 0]),
            Err(VintError::Overflow { value: 1 << 32 })
        );
        assert_eq!(
            decode_vint(&[0x8c, 0x7f, 0xff, 0xff, 0xff]),
            Ok((i32::MAX, 5))
        );
    }

    proptest::proptest! {
        #[test]
        fn every_i64_round_trips(value: i64) {
            let mut out = Vec::new();
            encode_vlong(value, &mut out);
            proptest::prop_assert_eq!(decode_vlong(&out), Ok((value, out.len())));
            proptest::prop_assert_eq!(encoded_len(out[0]), out.len());
        }
    }
}
