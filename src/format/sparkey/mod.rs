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
//!   value that spills). [`Reader::locate`] finds where a value is without
//!   reading it, and [`Reader::read_value`] reads any range of it, decoding
//!   only the blocks that cover the range.
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
//! | `stream.rs` | positions in the decoded entry stream across blocks |
//! | `lookup.rs` | the entry at an index address, and key matching |
//! | `value.rs` | [`ValueLocation`]; reading a value's range by address |
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
mod lookup;
mod snappy;
mod storage;
mod stream;
mod value;
mod vlq;

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use entry::{EntryKind, LogEntry};
pub use hash::{HashSize, murmur3_32, murmur3_x64_128_h1};
pub use hash_writer::{write_index, write_index_seeded, write_index_with};
pub use header::{CompressionType, LOG_HEADER_SIZE, LOG_MAGIC, LogHeader, MAX_BLOCK_SIZE};
pub use index::{INDEX_HEADER_SIZE, INDEX_MAGIC, IndexHeader};
pub use log_writer::{Compression, EntryPosition, LogWriter};
pub use value::ValueLocation;

use self::cursor::LogCursor;
use self::index::IndexFile;
use self::log_file::LogFile;
use self::lookup::{Located, Scratch};
use self::storage::Backing;
use crate::format::FormatResult;

/// A live key and its value, as [`Reader::iter_live`] yields them.
pub type KeyValue<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// An opened Sparkey table. `Send + Sync`: share it (for example in an
/// `Arc`) and look up from any number of threads without a lock.
pub struct Reader {
    log: LogFile,
    index: IndexFile,
    /// Distinguishes this reader in the per-thread block cache.
    id: u64,
    /// Where reads of large values left off (see `value.rs`).
    checkpoints: value::Checkpoints,
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
            checkpoints: value::Checkpoints::default(),
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
            let found = self.block_lookup(key, |scratch, _, located| match located {
                Located::InBlock { start, end } => {
                    let block = scratch.block.prefix(&self.log, end)?;
                    Ok(block.get(start..end).unwrap_or_default().to_vec())
                }
                Located::Spilled { .. } => self.read_spilled(scratch, located),
            })?;
            Ok(found.map(Cow::Owned))
        }
    }

    /// Looks `key` up and, if it is live, calls `f` with its value and
    /// returns `f`'s result. Unlike [`Reader::get`] this does not allocate
    /// for compressed logs unless the value spills out of its block (the
    /// value is lent from the thread's block buffer).
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> FormatResult<Option<R>> {
        if self.log.header.compression == CompressionType::None {
            let hash = self.index.hash(key);
            let found = self
                .index
                .probe(hash, |address| self.plain_value_at(address, key))?;
            Ok(found.map(f))
        } else {
            self.block_lookup(key, |scratch, _, located| match located {
                Located::InBlock { start, end } => {
                    let block = scratch.block.prefix(&self.log, end)?;
                    Ok(f(block.get(start..end).unwrap_or_default()))
                }
                Located::Spilled { .. } => Ok(f(&self.read_spilled(scratch, located)?)),
            })
        }
    }

    /// The whole of a value that spills out of its block.
    fn read_spilled(&self, scratch: &mut Scratch, located: Located) -> FormatResult<Vec<u8>> {
        let mut value = Vec::new();
        if let Located::Spilled { len, at } = located {
            // The buffer grows only as blocks decode, whatever `len` says.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            self.log
                .read_stream(at, len, &mut value, &mut scratch.stream)?;
        }
        Ok(value)
    }

    /// Live entries in libsparkey's order: log order, each live key once, at
    /// its latest put. Entries after the index's `data_end` are not seen.
    pub fn iter_live(&self) -> impl Iterator<Item = FormatResult<KeyValue<'_>>> + '_ {
        self.iter_live_entries()
            .map(|entry| entry.map(|entry| (entry.key, entry.value)))
    }

    /// As [`Reader::iter_live`], yielding whole entries, each with the
    /// address the index holds for it (the one [`Reader::locate`] returns
    /// and [`Reader::read_value`] takes).
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
}

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
