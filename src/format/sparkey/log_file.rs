//! A log opened for reading: its bytes (mapped or owned), parsed header and
//! name, and the helpers that turn a problem into an error naming the file
//! and byte offset. Block decoding is in `block.rs`, walking entries in
//! `cursor.rs`.

use super::header::LogHeader;
use super::storage::Backing;
use crate::format::{FormatError, FormatErrorKind, FormatResult};

/// A log opened for reading: its bytes (mapped), parsed header and name.
pub(crate) struct LogFile {
    pub name: String,
    bytes: Backing,
    pub header: LogHeader,
}

impl LogFile {
    pub(crate) fn new(name: String, bytes: Backing) -> FormatResult<LogFile> {
        let header = LogHeader::parse(&bytes, &name, bytes.len() as u64)?;
        Ok(LogFile {
            name,
            bytes,
            header,
        })
    }

    /// The valid part of the file: header and entry data up to `data_end`.
    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        let end = usize::try_from(self.header.data_end).unwrap_or(usize::MAX);
        self.bytes.get(..end).unwrap_or_default()
    }

    pub(crate) fn err(&self, offset: u64, kind: FormatErrorKind) -> FormatError {
        FormatError::new(self.name.as_str(), offset, kind)
    }

    pub(crate) fn corrupt(&self, offset: u64, message: impl Into<String>) -> FormatError {
        self.err(offset, FormatErrorKind::Corrupt(message.into()))
    }
}
