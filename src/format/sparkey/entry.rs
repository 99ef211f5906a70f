//! Log entries: puts and deletes ([`EntryKind`]), the entry as iteration
//! yields it ([`LogEntry`]), and the two varints that start every entry
//! ([`EntryHead`]).

use std::borrow::Cow;

use super::vlq::read_vlq;
use crate::format::FormatResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Put,
    Delete,
}

/// One entry of the log, as the log iterations yield it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    pub kind: EntryKind,
    pub key: Cow<'a, [u8]>,
    /// Empty for deletes.
    pub value: Cow<'a, [u8]>,
    /// The entry's address as an index stores it: its file offset in an
    /// uncompressed log, `(block_offset << entry_block_bits) | ordinal` in a
    /// compressed one. [`Reader::iter_log`](super::Reader::iter_log) uses
    /// the log header's `entry_block_bits`,
    /// [`Reader::iter_live_entries`](super::Reader::iter_live_entries) the
    /// index's (the same unless the log grew after the index was built); the
    /// latter is what [`Reader::read_value`](super::Reader::read_value)
    /// takes.
    pub address: u64,
    /// Bytes the entry takes in the (uncompressed) entry stream.
    pub encoded_len: u64,
}

/// The two header varints of an entry, decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryHead {
    pub kind: EntryKind,
    pub key_len: u64,
    pub value_len: u64,
}

impl EntryHead {
    pub(crate) fn from_varints(a: u64, b: u64) -> EntryHead {
        if a == 0 {
            EntryHead {
                kind: EntryKind::Delete,
                key_len: b,
                value_len: 0,
            }
        } else {
            EntryHead {
                kind: EntryKind::Put,
                key_len: a - 1,
                value_len: b,
            }
        }
    }

    /// Reads an entry head at `pos` of `data`; returns it and where the key
    /// starts. `base` is the file offset of `data[0]`, for errors.
    #[inline]
    pub(crate) fn read(
        data: &[u8],
        pos: usize,
        name: &str,
        base: u64,
    ) -> FormatResult<(EntryHead, usize)> {
        // Fast path: both varints are one byte (keys under 127 bytes and
        // values under 128, the common case).
        if let Some(&[a, b]) = data.get(pos..pos + 2)
            && a < 0x80
            && b < 0x80
        {
            return Ok((EntryHead::from_varints(a.into(), b.into()), pos + 2));
        }
        let (a, p) = read_vlq(data, pos)
            .map_err(|e| e.into_format(name, base + pos as u64, "entry header"))?;
        let (b, p) =
            read_vlq(data, p).map_err(|e| e.into_format(name, base + p as u64, "entry header"))?;
        Ok((EntryHead::from_varints(a, b), p))
    }

    /// Key plus value bytes following the head.
    pub(crate) fn payload_len(&self) -> Option<u64> {
        self.key_len.checked_add(self.value_len)
    }
}
