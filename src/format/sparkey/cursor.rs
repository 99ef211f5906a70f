//! Walking the entries of a log in file order ([`LogCursor`]), and reading
//! the one entry at an index address ([`LogFile::entry_at`]).
//!
//! Entries of uncompressed logs borrow from the mapping; entries of
//! compressed logs are copied out of their blocks, following an entry that
//! spills into later blocks. Memory grows only with bytes actually present.

use std::borrow::Cow;

use super::block::BlockDecoder;
use super::entry::{EntryHead, LogEntry};
use super::header::{CompressionType, LOG_HEADER_SIZE};
use super::log_file::LogFile;
use crate::format::{FormatErrorKind, FormatResult};

impl LogFile {
    /// A cursor over the entries that start before `end` (the log's or an
    /// index's `data_end`), from the first entry.
    /// `entry_block_bits` decodes addresses: the log's own value for raw
    /// iteration, the index's when matching index addresses.
    pub(crate) fn cursor(&self, end: u64, entry_block_bits: u32) -> LogCursor<'_> {
        let end = end.min(self.header.data_end);
        let state = if self.header.compression == CompressionType::None {
            CursorState::Plain {
                pos: LOG_HEADER_SIZE,
            }
        } else {
            CursorState::Blocks(Box::new(BlockState {
                buf: Vec::new(),
                pos: 0,
                block_offset: 0,
                next_block: LOG_HEADER_SIZE,
                ordinal: 0,
                decoder: BlockDecoder::default(),
            }))
        };
        LogCursor {
            log: self,
            end,
            entry_block_bits,
            state,
        }
    }

    /// The entry at an index `address` (see [`LogEntry::address`]).
    pub(crate) fn entry_at(&self, address: u64, bits: u32) -> FormatResult<LogEntry<'_>> {
        let mut cursor = self.cursor(self.header.data_end, bits);
        match &mut cursor.state {
            CursorState::Plain { pos } => *pos = address,
            CursorState::Blocks(state) => {
                let block_offset = address.checked_shr(bits).unwrap_or(0);
                let ordinal = address & (1u64.checked_shl(bits).unwrap_or(0).wrapping_sub(1));
                state.next_block = block_offset;
                cursor.load_next_block()?;
                for _ in 0..ordinal {
                    cursor.next_entry(false)?;
                }
                if let CursorState::Blocks(state) = &cursor.state
                    && (state.block_offset != block_offset || state.pos >= state.buf.len())
                {
                    return Err(self.corrupt(
                        block_offset,
                        format!("address {address:#x}: the block has no entry {ordinal}"),
                    ));
                }
            }
        }
        match cursor.next_entry(true)? {
            Some(entry) => Ok(entry),
            None => Err(self.corrupt(address, "address is past the end of the log data")),
        }
    }
}

/// Walks log entries in file order. Entries of uncompressed logs borrow from
/// the mapping; entries of compressed logs are copied out of their blocks.
pub(crate) struct LogCursor<'a> {
    log: &'a LogFile,
    /// No entry starting at or after this offset (or in a block starting at
    /// or after it) is returned.
    end: u64,
    entry_block_bits: u32,
    state: CursorState,
}

enum CursorState {
    Plain { pos: u64 },
    Blocks(Box<BlockState>),
}

struct BlockState {
    /// The current decompressed block.
    buf: Vec<u8>,
    /// Read position in `buf`.
    pos: usize,
    /// File offset of the current block's length prefix.
    block_offset: u64,
    /// File offset of the following block.
    next_block: u64,
    /// Entries whose head was read from the current block so far.
    ordinal: u64,
    decoder: BlockDecoder,
}

impl<'a> LogCursor<'a> {
    /// The next entry, or `None` at the end. With `keep == false` the key
    /// and value are skipped (returned empty), which avoids copying them.
    pub(crate) fn next_entry(&mut self, keep: bool) -> FormatResult<Option<LogEntry<'a>>> {
        let log = self.log;
        match &mut self.state {
            CursorState::Plain { pos } => {
                if *pos >= self.end {
                    return Ok(None);
                }
                let data = log.data();
                let start = *pos;
                if start < LOG_HEADER_SIZE {
                    return Err(log.corrupt(start, "entry address inside the log header"));
                }
                let (head, key_start) = EntryHead::read(data, start as usize, &log.name, 0)?;
                let key_start = key_start as u64;
                let available = data.len() as u64 - key_start;
                let payload = head.payload_len().filter(|&len| len <= available);
                let Some(payload) = payload else {
                    return Err(log.err(
                        start,
                        FormatErrorKind::Truncated {
                            what: "entry key and value",
                            needed: head.payload_len().unwrap_or(u64::MAX),
                            available,
                        },
                    ));
                };
                let key_end = key_start + head.key_len;
                let end = key_start + payload;
                *pos = end;
                let slice = |from: u64, to: u64| {
                    if keep {
                        data.get(from as usize..to as usize).unwrap_or_default()
                    } else {
                        &[]
                    }
                };
                Ok(Some(LogEntry {
                    kind: head.kind,
                    key: Cow::Borrowed(slice(key_start, key_end)),
                    value: Cow::Borrowed(slice(key_end, end)),
                    address: start,
                    encoded_len: end - start,
                }))
            }
            CursorState::Blocks(_) => self.next_block_entry(keep),
        }
    }

    fn next_block_entry(&mut self, keep: bool) -> FormatResult<Option<LogEntry<'a>>> {
        loop {
            let CursorState::Blocks(state) = &self.state else {
                return Ok(None);
            };
            if state.pos < state.buf.len() {
                break;
            }
            if state.next_block >= self.end {
                return Ok(None);
            }
            self.load_next_block()?;
        }
        let log = self.log;
        let bits = self.entry_block_bits;
        let CursorState::Blocks(state) = &mut self.state else {
            return Ok(None);
        };
        let head_at = state.pos;
        let (head, key_start) =
            EntryHead::read(&state.buf, head_at, &log.name, 0).map_err(|e| {
                log.corrupt(
                    state.block_offset,
                    format!("in the block, at byte {head_at} of its data: {}", e.kind),
                )
            })?;
        if state.ordinal.checked_shr(bits).unwrap_or(0) != 0 {
            return Err(log.corrupt(
                state.block_offset,
                format!(
                    "block holds more than max_entries_per_block ({}) entries",
                    log.header.max_entries_per_block
                ),
            ));
        }
        let address = state.block_offset.checked_shl(bits).unwrap_or(0) | state.ordinal;
        state.ordinal += 1;
        state.pos = key_start;
        let head_len = (key_start - head_at) as u64;
        let key = self.take(head.key_len, keep)?;
        let value = self.take(head.value_len, keep)?;
        Ok(Some(LogEntry {
            kind: head.kind,
            key: Cow::Owned(key),
            value: Cow::Owned(value),
            address,
            encoded_len: head_len + head.key_len + head.value_len,
        }))
    }

    /// Consumes `len` bytes of entry payload, following into later blocks
    /// when an entry spills; returns them if `keep`. Memory grows only with
    /// bytes actually present, whatever length the file claims.
    fn take(&mut self, len: u64, keep: bool) -> FormatResult<Vec<u8>> {
        let mut out = Vec::new();
        let mut remaining = len;
        loop {
            let CursorState::Blocks(state) = &mut self.state else {
                return Ok(out);
            };
            let here = ((state.buf.len() - state.pos) as u64).min(remaining) as usize;
            if keep {
                out.extend_from_slice(
                    state
                        .buf
                        .get(state.pos..state.pos + here)
                        .unwrap_or_default(),
                );
            }
            state.pos += here;
            remaining -= here as u64;
            if remaining == 0 {
                return Ok(out);
            }
            if state.next_block >= self.log.header.data_end {
                return Err(self.log.err(
                    state.block_offset,
                    FormatErrorKind::Truncated {
                        what: "entry spilling past the last block",
                        needed: remaining,
                        available: 0,
                    },
                ));
            }
            self.load_next_block()?;
        }
    }

    fn load_next_block(&mut self) -> FormatResult<()> {
        let CursorState::Blocks(state) = &mut self.state else {
            return Ok(());
        };
        let offset = state.next_block;
        state.next_block = self
            .log
            .read_block(offset, &mut state.buf, &mut state.decoder)?;
        state.block_offset = offset;
        state.pos = 0;
        state.ordinal = 0;
        Ok(())
    }
}
