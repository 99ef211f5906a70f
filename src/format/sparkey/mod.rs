//! Sparkey tables: a log (`.spl`) of puts and deletes plus a hash index
//! (`.spi`) pointing into it, both memory-mapped; and the snappy framing
//! format of the `.spi.sz` indexes sequins producers ship.
//!
//! This is both an input format and the format sequinsfs serves from, so
//! every lookup of the mount and the HTTP sidecar ends in [`Reader::get`].
//! The byte layouts are described in `docs/FORMATS.md`.
//!
//! - [`Reader`] (this file) opens a pair, validates both headers against
//!   each other and the file sizes, and answers lookups and iterations
//!   without locks. Uncompressed values are borrowed from the mapping; for
//!   compressed logs each thread keeps its last decompressed block, so one
//!   lookup decompresses at most one block (plus continuation blocks for a
//!   value that spills).
//! - [`LogWriter`] writes a log and, in the same pass, remembers what the
//!   index needs, so [`LogWriter::finish_with_index`] builds the index
//!   without reading the log back. [`write_index`] indexes an existing log.
//! - [`framed`] decodes and encodes `.spi.sz`.
//!
//! One file per concept, as libsparkey has one C file per concept:
//!
//! | file | what it owns |
//! | --- | --- |
//! | `header.rs` | the 84-byte log header, [`CompressionType`], layout constants |
//! | `vlq.rs` | the varints of entry heads and block length prefixes |
//! | `entry.rs` | entries: [`EntryKind`], [`LogEntry`], the two-varint entry head |
//! | `log_file.rs` | a log opened for reading, and its errors |
//! | `block.rs` | compressed blocks: locating, decoding whole or lazily |
//! | `cursor.rs` | walking entries in file order; the entry at an address |
//! | `index.rs` | the index header, slot table and Robin Hood probe |
//! | `hash.rs` | the murmur3 hashes of the index |
//! | `log_writer.rs` | [`LogWriter`]: appending entries, filling blocks |
//! | `hash_writer.rs` | building and writing the index ([`write_index`]) |
//! | `snappy.rs` | raw snappy decoding that can stop part-way |
//! | `framed.rs` | the snappy framing format of `.spi.sz` |
//! | `storage.rs` | the mapped or owned bytes behind a file |

mod block;
mod cursor;
mod entry;
pub mod framed;
mod hash;
mod hash_writer;
mod header;
mod index;
mod log_file;
mod log_writer;
mod snappy;
mod storage;
mod vlq;

use std::borrow::Cow;
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use entry::{EntryKind, LogEntry};
pub use hash::{HashSize, murmur3_32, murmur3_x64_128_h1};
pub use hash_writer::{write_index, write_index_seeded, write_index_with};
pub use header::{CompressionType, LOG_HEADER_SIZE, LOG_MAGIC, LogHeader, MAX_BLOCK_SIZE};
pub use index::{INDEX_HEADER_SIZE, INDEX_MAGIC, IndexHeader};
pub use log_writer::{Compression, EntryPosition, LogWriter};

use self::block::LookupBlock;
use self::cursor::LogCursor;
use self::entry::EntryHead;
use self::index::IndexFile;
use self::log_file::LogFile;
use self::storage::Backing;
use crate::format::{FormatErrorKind, FormatResult};

/// A live key and its value, as [`Reader::iter_live`] yields them.
pub type KeyValue<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// An opened Sparkey table. `Send + Sync`: share it (for example in an
/// `Arc`) and look up from any number of threads without a lock.
pub struct Reader {
    log: LogFile,
    index: IndexFile,
    /// Distinguishes this reader in the per-thread block cache.
    id: u64,
}

/// Source of [`Reader::id`].
static NEXT_READER_ID: AtomicU64 = AtomicU64::new(1);

impl Reader {
    /// Maps a log and its index and validates both headers (magic, versions,
    /// matching file identifiers, sizes against the file lengths) before
    /// any other access.
    pub fn open(log: &Path, index: &Path) -> FormatResult<Reader> {
        let log_bytes = Backing::map(log)?;
        let index_bytes = Backing::map(index)?;
        Self::from_backing(
            log.display().to_string(),
            log_bytes,
            index.display().to_string(),
            index_bytes,
        )
    }

    /// Opens a log file with an index held in memory (for example one just
    /// decoded from `.spi.sz`); `index_name` names it in errors.
    pub fn open_with_index_bytes(
        log: &Path,
        index_name: &str,
        index: Vec<u8>,
    ) -> FormatResult<Reader> {
        let log_bytes = Backing::map(log)?;
        Self::from_backing(
            log.display().to_string(),
            log_bytes,
            index_name.to_string(),
            Backing::Owned(index),
        )
    }

    /// A table entirely in memory (tests, fuzzing, tools).
    pub fn from_bytes(
        log_name: &str,
        log: Vec<u8>,
        index_name: &str,
        index: Vec<u8>,
    ) -> FormatResult<Reader> {
        Self::from_backing(
            log_name.to_string(),
            Backing::Owned(log),
            index_name.to_string(),
            Backing::Owned(index),
        )
    }

    fn from_backing(
        log_name: String,
        log: Backing,
        index_name: String,
        index: Backing,
    ) -> FormatResult<Reader> {
        let log = LogFile::new(log_name, log)?;
        let index = IndexFile::new(index_name, index, &log.header)?;
        Ok(Reader {
            log,
            index,
            id: NEXT_READER_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Live keys, as the index header counts them.
    pub fn num_entries(&self) -> u64 {
        self.index.header.num_entries
    }

    pub fn log_header(&self) -> &LogHeader {
        &self.log.header
    }

    pub fn index_header(&self) -> &IndexHeader {
        &self.index.header
    }

    /// The value of `key`, if it is live. Borrowed from the mapping for
    /// uncompressed logs, a copy for compressed ones.
    pub fn get(&self, key: &[u8]) -> FormatResult<Option<Cow<'_, [u8]>>> {
        if self.log.header.compression == CompressionType::None {
            let hash = self.index.hash(key);
            let found = self
                .index
                .probe(hash, |address| self.plain_value_at(address, key))?;
            Ok(found.map(Cow::Borrowed))
        } else {
            Ok(self
                .block_lookup(key, |value| value.to_vec())?
                .map(Cow::Owned))
        }
    }

    /// Looks `key` up and, if it is live, calls `f` with its value and
    /// returns `f`'s result. Unlike [`Reader::get`] this never allocates for
    /// compressed logs (the value is lent from the thread's block buffer).
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> FormatResult<Option<R>> {
        if self.log.header.compression == CompressionType::None {
            let hash = self.index.hash(key);
            let found = self
                .index
                .probe(hash, |address| self.plain_value_at(address, key))?;
            Ok(found.map(f))
        } else {
            self.block_lookup(key, f)
        }
    }

    /// Live entries in libsparkey's order: log order, each live key once, at
    /// its latest put. Entries after the index's `data_end` are not seen.
    pub fn iter_live(&self) -> impl Iterator<Item = FormatResult<KeyValue<'_>>> + '_ {
        self.iter_live_entries()
            .map(|entry| entry.map(|entry| (entry.key, entry.value)))
    }

    /// As [`Reader::iter_live`], yielding whole entries, each with the
    /// address the index holds for it (the one a lookup of its key finds).
    pub fn iter_live_entries(&self) -> impl Iterator<Item = FormatResult<LogEntry<'_>>> + '_ {
        let mut cursor = self.log.cursor(
            self.index.header.data_end,
            self.index.header.entry_block_bits,
        );
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            loop {
                let entry = match cursor.next_entry(true) {
                    Ok(Some(entry)) => entry,
                    Ok(None) => return None,
                    Err(e) => {
                        failed = true;
                        return Some(Err(e));
                    }
                };
                if entry.kind != EntryKind::Put {
                    continue;
                }
                let hash = self.index.hash(&entry.key);
                let wanted = entry.address;
                match self
                    .index
                    .probe(hash, |address| Ok((address == wanted).then_some(())))
                {
                    Ok(Some(())) => return Some(Ok(entry)),
                    Ok(None) => continue,
                    Err(e) => {
                        failed = true;
                        return Some(Err(e));
                    }
                }
            }
        })
    }

    /// Every entry of the log in file order, deletes and superseded puts
    /// included, up to the log's `data_end`.
    pub fn iter_log(&self) -> impl Iterator<Item = FormatResult<LogEntry<'_>>> + '_ {
        iterate_log(
            self.log
                .cursor(self.log.header.data_end, self.log.header.entry_block_bits()),
        )
    }

    /// For an uncompressed log: the value at `address` if its key is `key`.
    #[inline]
    fn plain_value_at(&self, address: u64, key: &[u8]) -> FormatResult<Option<&[u8]>> {
        let data = self.log.data();
        if address < LOG_HEADER_SIZE || address >= data.len() as u64 {
            return Err(self.index_points_outside(address));
        }
        let (head, key_start) = EntryHead::read(data, address as usize, &self.log.name, 0)?;
        if head.kind != EntryKind::Put {
            return Err(self
                .log
                .corrupt(address, "the index points at a delete entry"));
        }
        if head.key_len != key.len() as u64 {
            return Ok(None);
        }
        let key_end = key_start + key.len();
        let value_end = usize::try_from(head.value_len)
            .ok()
            .and_then(|len| key_end.checked_add(len));
        let Some(entry) = value_end.and_then(|end| data.get(key_start..end)) else {
            return Err(self.log.err(
                address,
                FormatErrorKind::Truncated {
                    what: "entry key and value",
                    needed: head.payload_len().unwrap_or(u64::MAX),
                    available: (data.len() - key_start) as u64,
                },
            ));
        };
        let (stored_key, value) = entry.split_at(key.len());
        Ok((stored_key == key).then_some(value))
    }

    fn index_points_outside(&self, address: u64) -> crate::format::FormatError {
        self.log.corrupt(
            address,
            format!(
                "{}: a slot points at {address:#x}, outside the log data (84..{})",
                self.index.name, self.log.header.data_end
            ),
        )
    }

    /// Lookup in a compressed log through this thread's block cache.
    fn block_lookup<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> FormatResult<Option<R>> {
        // The scratch is taken out of the thread-local for the duration of
        // the lookup, so a nested lookup (from `f`) just gets a fresh one.
        let mut scratch = SCRATCH.take().unwrap_or_default();
        let mut f = Some(f);
        let hash = self.index.hash(key);
        let result = self.index.probe(hash, |address| {
            let found = self.block_entry_matches(&mut scratch, address, key)?;
            Ok(match found {
                Some(Located::InBlock { start, end }) => {
                    let value = scratch.block.prefix(&self.log, end)?;
                    let value = value.get(start..end).unwrap_or_default();
                    f.take().map(|f| f(value))
                }
                Some(Located::Spilled(value)) => f.take().map(|f| f(&value)),
                None => None,
            })
        });
        SCRATCH.set(Some(scratch));
        result
    }

    /// Decodes the entry at a compressed-log address and, if its key is
    /// `key`, says where its value is.
    fn block_entry_matches(
        &self,
        scratch: &mut Scratch,
        address: u64,
        key: &[u8],
    ) -> FormatResult<Option<Located>> {
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
            return Err(self
                .log
                .corrupt(block_offset, "the index points at a delete entry"));
        }
        if head.key_len != key.len() as u64 {
            return Ok(None);
        }
        let key_end = key_start + key.len();
        let value_end = usize::try_from(head.value_len)
            .ok()
            .and_then(|len| key_end.checked_add(len))
            .filter(|&end| end <= block_len);
        if let Some(value_end) = value_end {
            let buf = block.prefix(&self.log, value_end)?;
            let matches = buf.get(key_start..key_end) == Some(key);
            return Ok(matches.then_some(Located::InBlock {
                start: key_end,
                end: value_end,
            }));
        }
        // The entry spills into following blocks: the rare slow path.
        let entry = self.log.entry_at(address, bits)?;
        Ok((entry.key.as_ref() == key).then(|| Located::Spilled(entry.value.into_owned())))
    }

    fn no_such_entry(
        &self,
        address: u64,
        block_offset: u64,
        ordinal: u64,
    ) -> crate::format::FormatError {
        self.log.corrupt(
            block_offset,
            format!("index address {address:#x}: the block has no entry {ordinal}"),
        )
    }
}

/// Where a compressed-log lookup found its value.
enum Located {
    /// `scratch.buf[start..end]`.
    InBlock { start: usize, end: usize },
    /// Copied together from several blocks.
    Spilled(Vec<u8>),
}

/// Per-thread state of compressed lookups: the last block, decoded as far
/// as lookups have needed (random lookups rarely reuse it, but lookups of
/// neighbouring keys do), so the hot path does not allocate.
#[derive(Default)]
struct Scratch {
    /// [`Reader::id`] of the reader whose block `block` holds; 0 for none.
    owner: u64,
    block_offset: u64,
    block: LookupBlock,
}

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

/// Longest entry head: two VLQs of at most ten bytes each.
const MAX_HEAD_LEN: usize = 20;

/// Turns a cursor into an iterator that stops after the first error.
fn iterate_log(mut cursor: LogCursor<'_>) -> impl Iterator<Item = FormatResult<LogEntry<'_>>> + '_ {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let next = cursor.next_entry(true).transpose();
        failed = matches!(next, Some(Err(_)));
        next
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Reader>();
    }
}
