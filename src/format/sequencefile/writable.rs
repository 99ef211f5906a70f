//! Hadoop Writables as sequins serves them.
//!
//! A SequenceFile stores each key and value as its class's serialized form.
//! sequins strips the length prefix of the two byte-string classes and keeps
//! every other class as its exact serialized bytes (so an `IntWritable` 42 is
//! the key `00 00 00 2A`). Unlike sequins we check both prefixes, and keys of
//! any length (empty, one byte) are fine.

use super::vint;
use crate::format::FormatErrorKind;

/// Hadoop's `Text` class name.
pub const TEXT_CLASS: &str = "org.apache.hadoop.io.Text";
/// Hadoop's `BytesWritable` class name.
pub const BYTES_WRITABLE_CLASS: &str = "org.apache.hadoop.io.BytesWritable";

/// How a class's serialized bytes are unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritableKind {
    /// `Text`: vint length + bytes; the bytes are served.
    Text,
    /// `BytesWritable`: big-endian `i32` length + bytes; the bytes are served.
    Bytes,
    /// Any other class: served as serialized.
    Verbatim,
}

impl WritableKind {
    /// The unwrapping rule for a Java class name.
    pub fn of(class: &str) -> WritableKind {
        match class {
            TEXT_CLASS => WritableKind::Text,
            BYTES_WRITABLE_CLASS => WritableKind::Bytes,
            _ => WritableKind::Verbatim,
        }
    }

    /// The payload of one serialized value, after checking that its length
    /// prefix matches the bytes that follow.
    #[inline]
    pub fn unwrap(self, bytes: &[u8]) -> Result<&[u8], FormatErrorKind> {
        match self {
            WritableKind::Verbatim => Ok(bytes),
            WritableKind::Bytes => {
                let (prefix, payload) = bytes.split_first_chunk::<4>().ok_or_else(|| {
                    FormatErrorKind::Corrupt(format!(
                        "BytesWritable of {} bytes has no 4-byte length",
                        bytes.len()
                    ))
                })?;
                let declared = i32::from_be_bytes(*prefix);
                if usize::try_from(declared).ok() != Some(payload.len()) {
                    return Err(FormatErrorKind::Corrupt(format!(
                        "BytesWritable declares {declared} bytes but holds {}",
                        payload.len()
                    )));
                }
                Ok(payload)
            }
            WritableKind::Text => {
                let (declared, used) = vint::decode_vint(bytes)
                    .map_err(|e| FormatErrorKind::BadVint(format!("Text length: {e}")))?;
                let payload = bytes.get(used..).unwrap_or_default();
                if usize::try_from(declared).ok() != Some(payload.len()) {
                    return Err(FormatErrorKind::Corrupt(format!(
                        "Text declares {declared} bytes but holds {}",
                        payload.len()
                    )));
                }
                Ok(payload)
            }
        }
    }
}

/// Unwraps one serialized Writable of class `class` as sequins does:
/// `BytesWritable` and `Text` lose their (checked) length prefix, every other
/// class is returned as is.
pub fn unwrap_writable<'a>(class: &str, bytes: &'a [u8]) -> Result<&'a [u8], FormatErrorKind> {
    WritableKind::of(class).unwrap(bytes)
}

/// Appends the `BytesWritable` serialization of `payload` to `out`.
///
/// Panics if `payload` is longer than `i32::MAX` bytes, which no Writable
/// can hold (a caller-side bug, not a data error).
pub fn write_bytes_writable(payload: &[u8], out: &mut Vec<u8>) {
    let len = i32::try_from(payload.len()).expect("BytesWritable payload over 2 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends the `Text` serialization of `payload` (any bytes) to `out`.
///
/// Panics if `payload` is longer than `i32::MAX` bytes (a caller-side bug).
pub fn write_text(payload: &[u8], out: &mut Vec<u8>) {
    let len = i32::try_from(payload.len()).expect("Text payload over 2 GiB");
    vint::encode_vlong(len.into(), out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes_lose_their_checked_prefix_others_stay() {
        assert_eq!(unwrap_writable(TEXT_CLASS, b"\x03abc").unwrap(), b"abc");
        assert_eq!(unwrap_writable(TEXT_CLASS, b"\x00").unwrap(), b"");
        assert_eq!(
            unwrap_writable(BYTES_WRITABLE_CLASS, b"\0\0\0\x01k").unwrap(),
            b"k"
        );
        let int42 = [0, 0, 0, 0x2a];
        assert_eq!(
            unwrap_writable("org.apache.hadoop.io.IntWritable", &int42).unwrap(),
            int42
        );
        assert_eq!(
            unwrap_writable("org.apache.hadoop.io.NullWritable", b"").unwrap(),
            b""
        );
    }

    #[test]
    fn length_mismatches_are_errors() {
        assert!(unwrap_writable(TEXT_CLASS, b"\x04abc").is_err());
        assert!(unwrap_writable(TEXT_CLASS, b"").is_err());
        assert!(unwrap_writable(BYTES_WRITABLE_CLASS, b"\0\0\0\x02k").is_err());
        assert!(unwrap_writable(BYTES_WRITABLE_CLASS, b"\0\0").is_err());
        assert!(unwrap_writable(BYTES_WRITABLE_CLASS, b"\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn writers_produce_what_unwrap_reads() {
        let long = vec![b'x'; 300];
        for payload in [&b""[..], b"a", &long] {
            let mut text = Vec::new();
            write_text(payload, &mut text);
            assert_eq!(unwrap_writable(TEXT_CLASS, &text).unwrap(), payload);
            let mut bytes = Vec::new();
            write_bytes_writable(payload, &mut bytes);
            assert_eq!(bytes.len(), payload.len() + 4);
            assert_eq!(
                unwrap_writable(BYTES_WRITABLE_CLASS, &bytes).unwrap(),
                payload
            );
        }
    }
}
