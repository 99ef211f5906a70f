//! Byte formats sequinsfs reads and writes.
//!
//! Every parser here treats its input as hostile: each length, offset and
//! varint read from a file is checked against what the file can hold before
//! it is used, and every failure is a [`FormatError`] naming the file and the
//! byte offset where the problem was found.

pub mod sequencefile;
pub mod sparkey;

use std::fmt;

/// An error found while reading or writing a file of one of our formats.
///
/// Displays as `FILE: byte OFFSET: what went wrong`, so that a log line or a
/// CLI error points straight at the problem.
#[derive(Debug, thiserror::Error)]
#[error("{file}: byte {offset}: {kind}")]
pub struct FormatError {
    /// The file (or object) name, as the user would recognise it.
    pub file: String,
    /// Byte offset in that file where the problem was detected.
    pub offset: u64,
    /// What went wrong.
    pub kind: FormatErrorKind,
}

impl FormatError {
    pub fn new(file: impl Into<String>, offset: u64, kind: FormatErrorKind) -> Self {
        FormatError {
            file: file.into(),
            offset,
            kind,
        }
    }
}

/// The kinds of [`FormatError`]. Callers match on these (for example to tell
/// a truncated upload from corrupt data); the message is for humans.
#[derive(Debug, thiserror::Error)]
pub enum FormatErrorKind {
    /// The file does not start with the expected magic bytes.
    #[error("not a {format} file (magic {found})")]
    BadMagic {
        format: &'static str,
        found: HexBytes,
    },
    /// A format version this code does not read.
    #[error("unsupported {format} version {version}")]
    UnsupportedVersion { format: &'static str, version: u32 },
    /// The file ends before a structure it announced.
    #[error("truncated: {what} needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// A length or count read from the file is larger than the file (or a
    /// configured limit) allows.
    #[error("{what} length {length} exceeds the limit of {limit}")]
    TooLarge {
        what: &'static str,
        length: u64,
        limit: u64,
    },
    /// A compressed payload did not decompress.
    #[error("corrupt {codec} data: {message}")]
    Decompress {
        codec: &'static str,
        message: String,
    },
    /// A compression codec this code does not know.
    #[error("unknown compression codec class {0:?}")]
    UnknownCodec(String),
    /// A checksum did not match.
    #[error("checksum mismatch: expected {expected:#010x}, computed {computed:#010x}")]
    Checksum { expected: u32, computed: u32 },
    /// A SequenceFile sync marker differs from the one in the file header.
    #[error("sync marker mismatch: found {found}, the header has {expected}")]
    SyncMismatch { expected: HexBytes, found: HexBytes },
    /// A variable-length integer is cut short or out of range.
    #[error("invalid vint: {0}")]
    BadVint(String),
    /// Any other structural inconsistency.
    #[error("{0}")]
    Corrupt(String),
    /// The underlying read or write failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes shown as hex in error messages (at most 16 are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl HexBytes {
    pub fn of(bytes: &[u8]) -> Self {
        HexBytes(bytes[..bytes.len().min(16)].to_vec())
    }
}

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<empty>");
        }
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

pub type FormatResult<T> = Result<T, FormatError>;
