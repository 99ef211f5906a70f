//! Finding the entry an index address points at, and whether it holds a
//! given key: the work behind [`Reader::get`], [`Reader::get_with`],
//! [`Reader::locate`] and [`Reader::read_value`].
//!
//! Uncompressed logs are read in place. For compressed logs each thread
//! keeps its last block ([`Scratch`]), decoded only as far as lookups have
//! needed, so a lookup decompresses at most one block; a key or value that
//! spills out of it is read through the entry stream (`stream.rs`), block
//! by block.

use std::cell::Cell;

use super::Reader;
use super::block::LookupBlock;
use super::entry::{EntryHead, EntryKind};
use super::header::LOG_HEADER_SIZE;
use super::stream::{StreamPos, StreamScratch};
use crate::format::{FormatError, FormatErrorKind, FormatResult};

/// Where a compressed-log lookup found its value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Located {
    /// Bytes `start..end` of the thread's current block (`Scratch::block`).
    InBlock { start: usize, end: usize },
    /// The value runs past its entry's first block: `len` bytes of the
    /// entry stream from `at`.
    Spilled { len: u64, at: StreamPos },
}

impl Located {
    pub(super) fn len(&self) -> u64 {
        match *self {
            Located::InBlock { start, end } => (end - start) as u64,
            Located::Spilled { len, .. } => len,
        }
    }
}

/// Per-thread state of compressed lookups: the last block, decoded as far
/// as lookups have needed (random lookups rarely reuse it, but lookups of
/// neighbouring keys do), so the hot path does not allocate.
#[derive(Default)]
pub(super) struct Scratch {
    /// [`Reader::id`] of the reader whose block `block` holds; 0 for none.
    owner: u64,
    block_offset: u64,
    pub(super) block: LookupBlock,
    /// For keys and values that spill out of `block`.
    pub(super) stream: StreamScratch,
    /// A spilled key, read to compare it.
    key: Vec<u8>,
}

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's [`Scratch`]. The scratch is taken out of the
/// thread-local for the duration, so a nested call (for example a lookup
/// from a `get_with` callback) just gets a fresh one.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.take().unwrap_or_default();
    let result = f(&mut scratch);
    SCRATCH.set(Some(scratch));
    result
}

/// Longest entry head: two VLQs of at most ten bytes each.
const MAX_HEAD_LEN: usize = 20;

impl Reader {
    /// For an uncompressed log: the key and value of the put at `address`.
    /// `by_index` says whether the address came from an index slot (for the
    /// error message). Always inlined: it is most of the hot lookup path
    /// of uncompressed logs, where a call costs a measurable share.
    #[inline(always)]
    pub(super) fn plain_entry(&self, address: u64, by_index: bool) -> FormatResult<(&[u8], &[u8])> {
        let data = self.log.data();
        if address < LOG_HEADER_SIZE || address >= data.len() as u64 {
            return Err(self.points_outside(address, by_index));
        }
        let (head, key_start) = EntryHead::read(data, address as usize, &self.log.name, 0)?;
        if head.kind != EntryKind::Put {
            return Err(self.not_a_put(address, by_index));
        }
        let end = head
            .payload_len()
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| key_start.checked_add(len));
        let Some(entry) = end.and_then(|end| data.get(key_start..end)) else {
            return Err(self.log.err(
                address,
                FormatErrorKind::Truncated {
                    what: "entry key and value",
                    needed: head.payload_len().unwrap_or(u64::MAX),
                    available: (data.len() - key_start) as u64,
                },
            ));
        };
        // `key_len <= payload_len`, the length of `entry`.
        Ok(entry.split_at(head.key_len as usize))
    }

    /// For an uncompressed log: the value at `address` if its key is `key`.
    #[inline]
    pub(super) fn plain_value_at(&self, address: u64, key: &[u8]) -> FormatResult<Option<&[u8]>> {
        let (stored_key, value) = self.plain_entry(address, true)?;
        Ok((stored_key == key).then_some(value))
    }

    fn points_outside(&self, address: u64, by_index: bool) -> FormatError {
        let whose = if by_index {
            format!("{}: a slot points at", self.index.name)
        } else {
            "address".to_string()
        };
        self.log.corrupt(
            address,
            format!(
                "{whose} {address:#x}, outside the log data (84..{})",
                self.log.header.data_end
            ),
        )
    }

    fn not_a_put(&self, offset: u64, by_index: bool) -> FormatError {
        let message = if by_index {
            "the index points at a delete entry"
        } else {
            "the address is that of a delete entry"
        };
        self.log.corrupt(offset, message)
    }

    /// Lookup in a compressed log through this thread's block cache: `f`
    /// gets the scratch, the address and the place of the value of the
    /// first live entry with key `key`.
    #[inline]
    pub(super) fn block_lookup<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut Scratch, u64, Located) -> FormatResult<R>,
    ) -> FormatResult<Option<R>> {
        with_scratch(|scratch| {
            let mut f = Some(f);
            let hash = self.index.hash(key);
            self.index.probe(hash, |address| {
                match self.block_entry_matches(scratch, address, key)? {
                    Some(located) => match f.take() {
                        Some(f) => f(scratch, address, located).map(Some),
                        None => Ok(None),
                    },
                    None => Ok(None),
                }
            })
        })
    }

    /// Decodes the head of the put at a compressed-log address into the
    /// thread's block: returns it, where its key starts in the block, and
    /// the block's offset. Always inlined into the hot key lookup.
    #[inline(always)]
    fn block_entry(
        &self,
        scratch: &mut Scratch,
        address: u64,
        by_index: bool,
    ) -> FormatResult<(EntryHead, usize, u64)> {
        let bits = self.index.header.entry_block_bits;
        let block_offset = address.checked_shr(bits).unwrap_or(0);
        let ordinal = address & 1u64.checked_shl(bits).unwrap_or(0).wrapping_sub(1);
        if scratch.owner != self.id || scratch.block_offset != block_offset {
            // Invalidate first: if decoding fails the buffer is garbage.
            scratch.owner = 0;
            scratch.block.load(&self.log, block_offset)?;
            scratch.owner = self.id;
            scratch.block_offset = block_offset;
        }
        let block = &mut scratch.block;
        let block_len = block.len();
        let name = &self.log.name;
        let mut pos = 0usize;
        for _ in 0..ordinal {
            let buf = block.prefix(&self.log, pos + MAX_HEAD_LEN)?;
            let (head, key_start) = EntryHead::read(buf, pos, name, 0)
                .map_err(|_| self.no_such_entry(address, block_offset, ordinal))?;
            pos = head
                .payload_len()
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| key_start.checked_add(len))
                .filter(|&end| end < block_len)
                .ok_or_else(|| self.no_such_entry(address, block_offset, ordinal))?;
        }
        let buf = block.prefix(&self.log, pos + MAX_HEAD_LEN)?;
        let (head, key_start) = EntryHead::read(buf, pos, name, 0)
            .map_err(|_| self.no_such_entry(address, block_offset, ordinal))?;
        if head.kind != EntryKind::Put {
            return Err(self.not_a_put(block_offset, by_index));
        }
        Ok((head, key_start, block_offset))
    }

    /// Decodes the entry at a compressed-log address and, if its key is
    /// `key`, says where its value is.
    #[inline]
    fn block_entry_matches(
        &self,
        scratch: &mut Scratch,
        address: u64,
        key: &[u8],
    ) -> FormatResult<Option<Located>> {
        let (head, key_start, block_offset) = self.block_entry(scratch, address, true)?;
        if head.key_len != key.len() as u64 {
            return Ok(None);
        }
        let block_len = scratch.block.len();
        let key_end = key_start + key.len();
        let value_end = usize::try_from(head.value_len)
            .ok()
            .and_then(|len| key_end.checked_add(len))
            .filter(|&end| end <= block_len);
        if let Some(value_end) = value_end {
            let buf = scratch.block.prefix(&self.log, value_end)?;
            let matches = buf.get(key_start..key_end) == Some(key);
            return Ok(matches.then_some(Located::InBlock {
                start: key_end,
                end: value_end,
            }));
        }
        // The entry spills into following blocks: the rare slow path.
        let value_at = if key_end <= block_len {
            let buf = scratch.block.prefix(&self.log, key_end)?;
            if buf.get(key_start..key_end) != Some(key) {
                return Ok(None);
            }
            StreamPos {
                block: block_offset,
                pos: key_end,
            }
        } else {
            let key_at = StreamPos {
                block: block_offset,
                pos: key_start,
            };
            let value_at =
                self.log
                    .read_stream(key_at, key.len(), &mut scratch.key, &mut scratch.stream)?;
            if scratch.key != key {
                return Ok(None);
            }
            value_at
        };
        self.check_spilled_len(block_offset, head.value_len)?;
        Ok(Some(Located::Spilled {
            len: head.value_len,
            at: value_at,
        }))
    }

    /// Where the value of the put at a compressed-log address is, whatever
    /// its key.
    pub(super) fn block_value_at(
        &self,
        scratch: &mut Scratch,
        address: u64,
    ) -> FormatResult<Located> {
        let (head, key_start, block_offset) = self.block_entry(scratch, address, false)?;
        let block_len = scratch.block.len() as u64;
        let value_start = key_start as u64 + head.key_len.min(u64::MAX - key_start as u64);
        if let Some(value_end) = value_start
            .checked_add(head.value_len)
            .filter(|&end| end <= block_len)
        {
            // Both ends are within the block, so fit in a usize.
            return Ok(Located::InBlock {
                start: value_start as usize,
                end: value_end as usize,
            });
        }
        self.check_spilled_len(block_offset, head.value_len)?;
        let at = if value_start <= block_len {
            StreamPos {
                block: block_offset,
                pos: value_start as usize,
            }
        } else {
            let key_at = StreamPos {
                block: block_offset,
                pos: key_start,
            };
            self.log
                .advance(key_at, head.key_len, &mut scratch.stream)?
        };
        Ok(Located::Spilled {
            len: head.value_len,
            at,
        })
    }

    /// A value that spills out of its block is read block by block, so its
    /// stated length is not checked against the data up front; it must at
    /// least be within the log header's `max_value_len`, so that a corrupt
    /// length is not handed on (as a file size, say).
    fn check_spilled_len(&self, block_offset: u64, value_len: u64) -> FormatResult<()> {
        let max = self.log.header.max_value_len;
        if value_len > max {
            return Err(self.log.corrupt(
                block_offset,
                format!("value length {value_len} exceeds the log's max_value_len {max}"),
            ));
        }
        Ok(())
    }

    fn no_such_entry(&self, address: u64, block_offset: u64, ordinal: u64) -> FormatError {
        self.log.corrupt(
            block_offset,
            format!("index address {address:#x}: the block has no entry {ordinal}"),
        )
    }
}
