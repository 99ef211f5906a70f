//! Writing a Sparkey log: [`LogWriter`] appends puts and deletes,
//! uncompressed or in snappy or zstd blocks, following libsparkey's block
//! rules and header fields exactly, so libsparkey and sparkey-java read what
//! we write. The log is written under a temporary name in the target
//! directory and renamed into place when complete; the caller decides about
//! `fsync`.
//!
//! While writing, the log writer hands each entry's hash and location to a
//! [`PendingIndex`] (see `hash_writer.rs`), so that
//! [`LogWriter::finish_with_index`] builds the index without reading the log
//! back.

use std::fs::{self, File};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::hash::HashSize;
use super::hash_writer::{
    DELETE_BIT, PendingIndex, auto_hash_size, build_and_write_index, write_index_with,
};
use super::header::{CompressionType, LOG_HEADER_SIZE, LogHeader, MAX_BLOCK_SIZE};
use super::index::IndexHeader;
use super::log_file::LogFile;
use super::storage::Backing;
use super::vlq::write_vlq;
use crate::format::{FormatError, FormatErrorKind, FormatResult};

/// Compression of a log being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    /// libsparkey and sparkey-java use level 3.
    Zstd {
        level: i32,
    },
}

/// Smallest block size accepted for compressed logs, as libsparkey's tool
/// (an entry's two header varints must fit in a block).
pub const MIN_BLOCK_SIZE: u32 = 16;
/// Where the writer put an entry: the file offset of its block
/// (uncompressed logs: of the entry) and its ordinal within that block (0
/// for uncompressed logs).
///
/// The writer cannot give the index address itself: in a compressed log it
/// is `block_offset << entry_block_bits | ordinal`, and `entry_block_bits`
/// (the bit length of the most entries any block holds) is known only when
/// the log is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPosition {
    pub block_offset: u64,
    pub ordinal: u32,
}

impl EntryPosition {
    /// The index address once the log's `entry_block_bits` is known
    /// ([`LogHeader::entry_block_bits`] of the finished log); `None` if it
    /// does not fit in 64 bits, or if the ordinal does not fit in
    /// `entry_block_bits` bits (the value is not this log's).
    pub fn address(self, entry_block_bits: u32) -> Option<u64> {
        let ordinal = u64::from(self.ordinal);
        if ordinal.checked_shr(entry_block_bits).unwrap_or(0) != 0 {
            return None;
        }
        if entry_block_bits >= u64::BITS {
            return (self.block_offset == 0).then_some(ordinal);
        }
        let high = self.block_offset << entry_block_bits;
        (high >> entry_block_bits == self.block_offset).then_some(high | ordinal)
    }
}

/// Writes a Sparkey log. Entries are appended with [`put`](Self::put) and
/// [`delete`](Self::delete); nothing is visible under the final name before
/// [`finish`](Self::finish) (or [`finish_with_index`](Self::finish_with_index)).
pub struct LogWriter {
    path: PathBuf,
    temp_path: PathBuf,
    name: String,
    file: BufWriter<File>,
    header: LogHeader,
    /// File offset of the next byte handed to `file`.
    pos: u64,
    blocks: Option<BlockWriter>,
    /// What the index needs of every entry so far.
    pub(super) pending: PendingIndex,
    /// Scratch for an entry's two header varints.
    head: Vec<u8>,
    finished: bool,
    /// See [`LogWriter::leave_file_on_drop`].
    leave_file_on_drop: bool,
}

struct BlockWriter {
    /// Uncompressed bytes of the block being filled.
    buf: Vec<u8>,
    size: usize,
    /// Entries whose header is in `buf`.
    entries: u32,
    codec: BlockCodec,
    /// Compressed output, reused.
    out: Vec<u8>,
    /// Length prefix of a block, reused.
    prefix: Vec<u8>,
}

enum BlockCodec {
    Snappy(Box<snap::raw::Encoder>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl LogWriter {
    /// Starts a log at `path` (written to a temporary name next to it until
    /// finished). `block_size` is the uncompressed size of compressed blocks
    /// (16..=2^30; libsparkey's default is 4096); it is ignored, and stored as
    /// 0, for [`Compression::None`].
    pub fn create(
        path: &Path,
        compression: Compression,
        block_size: u32,
    ) -> FormatResult<LogWriter> {
        let name = path.display().to_string();
        let temp_path = temp_name(path);
        let io_err = |e| FormatError::new(name.as_str(), 0, FormatErrorKind::Io(e));
        let compression_type = match compression {
            Compression::None => CompressionType::None,
            Compression::Snappy => CompressionType::Snappy,
            Compression::Zstd { .. } => CompressionType::Zstd,
        };
        let blocks = match compression {
            Compression::None => None,
            Compression::Snappy | Compression::Zstd { .. } => {
                if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
                    return Err(FormatError::new(
                        name.as_str(),
                        0,
                        FormatErrorKind::Corrupt(format!(
                            "block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
                        )),
                    ));
                }
                let codec = match compression {
                    Compression::Zstd { level } => BlockCodec::Zstd(Box::new(
                        zstd::bulk::Compressor::new(level).map_err(io_err)?,
                    )),
                    _ => BlockCodec::Snappy(Box::new(snap::raw::Encoder::new())),
                };
                Some(BlockWriter {
                    buf: Vec::with_capacity(block_size as usize),
                    size: block_size as usize,
                    entries: 0,
                    codec,
                    out: Vec::new(),
                    prefix: Vec::with_capacity(10),
                })
            }
        };
        let header = LogHeader {
            major_version: 1,
            minor_version: 0,
            file_identifier: random_u32(),
            num_puts: 0,
            num_deletes: 0,
            data_end: LOG_HEADER_SIZE,
            max_key_len: 0,
            max_value_len: 0,
            delete_size: 0,
            compression: compression_type,
            compression_block_size: if blocks.is_some() { block_size } else { 0 },
            put_size: 0,
            max_entries_per_block: 0,
        };
        let file = File::create(&temp_path).map_err(io_err)?;
        // Large writes: the log is written sequentially, often 10^8+ bytes.
        let mut file = BufWriter::with_capacity(1 << 20, file);
        // The real header is written by `finish`.
        file.write_all(&[0u8; LOG_HEADER_SIZE as usize])
            .map_err(io_err)?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            temp_path,
            name,
            file,
            header,
            pos: LOG_HEADER_SIZE,
            blocks,
            pending: PendingIndex::new(random_u32(), true),
            head: Vec::with_capacity(20),
            finished: false,
            leave_file_on_drop: false,
        })
    }

    /// Replaces the random log file identifier and index hash seed with the
    /// given ones, so that the same entries always give the same bytes
    /// (producers that want reproducible output). Only before the first
    /// entry: the seed is already in every hash remembered for the index.
    pub fn set_identifiers(&mut self, file_identifier: u32, hash_seed: u32) -> FormatResult<()> {
        if self.header.num_puts + self.header.num_deletes != 0 {
            return Err(FormatError::new(
                self.name.as_str(),
                0,
                FormatErrorKind::Corrupt("identifiers set after the first entry".into()),
            ));
        }
        self.header.file_identifier = file_identifier;
        self.pending = PendingIndex::new(hash_seed, true);
        Ok(())
    }

    /// Appends a put; a later put of the same key wins. Returns where the
    /// entry went.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> FormatResult<EntryPosition> {
        self.head.clear();
        write_vlq(&mut self.head, key.len() as u64 + 1);
        write_vlq(&mut self.head, value.len() as u64);
        let position = self.append(key, value)?;
        let location = position.block_offset;
        let h = &mut self.header;
        h.num_puts += 1;
        h.put_size += (self.head.len() + key.len() + value.len()) as u64;
        h.max_key_len = h.max_key_len.max(key.len() as u64);
        h.max_value_len = h.max_value_len.max(value.len() as u64);
        self.pending.record(key, location, h.num_puts);
        Ok(position)
    }

    /// Appends a delete (of a key that may or may not exist). Returns where
    /// the entry went.
    pub fn delete(&mut self, key: &[u8]) -> FormatResult<EntryPosition> {
        self.head.clear();
        write_vlq(&mut self.head, 0);
        write_vlq(&mut self.head, key.len() as u64);
        let position = self.append(key, &[])?;
        let location = position.block_offset;
        let h = &mut self.header;
        h.num_deletes += 1;
        h.delete_size += (self.head.len() + key.len()) as u64;
        self.pending.record(key, location | DELETE_BIT, h.num_puts);
        Ok(position)
    }

    /// Writes `self.head`, key and value; returns the entry's position: its
    /// file offset, or for compressed logs the offset its block will have
    /// and its ordinal there.
    fn append(&mut self, key: &[u8], value: &[u8]) -> FormatResult<EntryPosition> {
        let Some(blocks) = &mut self.blocks else {
            let position = EntryPosition {
                block_offset: self.pos,
                ordinal: 0,
            };
            let io_err = |e| FormatError::new(self.name.as_str(), self.pos, FormatErrorKind::Io(e));
            self.file.write_all(&self.head).map_err(io_err)?;
            self.file.write_all(key).map_err(io_err)?;
            self.file.write_all(value).map_err(io_err)?;
            self.pos += (self.head.len() + key.len() + value.len()) as u64;
            return Ok(position);
        };
        // libsparkey's block rules: the header varints never straddle a
        // block; an entry that fits in an empty block never straddles one
        // either; a larger entry starts here and spills, and the block
        // holding its tail is then closed so the next entry starts fresh.
        let total = self.head.len() + key.len() + value.len();
        let room = blocks.size - blocks.buf.len();
        if self.head.len() > room || (total > room && total <= blocks.size) {
            flush_block(blocks, &mut self.file, &mut self.pos, &self.name)?;
        }
        if self.head.len() > blocks.size - blocks.buf.len() {
            return Err(FormatError::new(
                self.name.as_str(),
                self.pos,
                FormatErrorKind::TooLarge {
                    what: "entry header in a block",
                    length: self.head.len() as u64,
                    limit: blocks.size as u64,
                },
            ));
        }
        // The block being filled is written at `pos` when flushed.
        let position = EntryPosition {
            block_offset: self.pos,
            ordinal: blocks.entries,
        };
        blocks.buf.extend_from_slice(&self.head);
        blocks.entries += 1;
        self.header.max_entries_per_block = self.header.max_entries_per_block.max(blocks.entries);
        let mut spilled = false;
        for mut part in [key, value] {
            loop {
                let room = blocks.size - blocks.buf.len();
                if part.len() <= room {
                    blocks.buf.extend_from_slice(part);
                    break;
                }
                let (now, later) = part.split_at(room);
                blocks.buf.extend_from_slice(now);
                flush_block(blocks, &mut self.file, &mut self.pos, &self.name)?;
                spilled = true;
                part = later;
            }
        }
        if spilled {
            flush_block(blocks, &mut self.file, &mut self.pos, &self.name)?;
        }
        Ok(position)
    }

    /// Dropping this writer unfinished will leave its partial file for the
    /// owner to remove (a loader discarding its whole staging directory),
    /// instead of removing it there and then: deleting gigabytes of freshly
    /// written data takes seconds, which a shutdown should not wait for.
    pub fn leave_file_on_drop(&mut self) {
        self.leave_file_on_drop = true;
    }

    /// The `entry_block_bits` the finished log will have, as of the entries
    /// put so far: final once no more entries are put, so positions
    /// ([`EntryPosition::address`]) can be resolved before the log is
    /// finished.
    pub fn entry_block_bits(&self) -> u32 {
        self.header.entry_block_bits()
    }

    /// Completes the log: flushes the last block, writes the header and
    /// renames the file into place.
    pub fn finish(mut self) -> FormatResult<LogHeader> {
        self.finish_log()
    }

    /// Completes the log and writes its index at `index` from what was
    /// remembered while writing (hash size chosen as libsparkey does).
    pub fn finish_with_index(self, index: &Path) -> FormatResult<(LogHeader, IndexHeader)> {
        self.finish_with_index_using(index, None)
    }

    /// As [`finish_with_index`](Self::finish_with_index), with the hash size
    /// forced (`None`: automatic).
    pub fn finish_with_index_using(
        mut self,
        index: &Path,
        hash_size: Option<HashSize>,
    ) -> FormatResult<(LogHeader, IndexHeader)> {
        let header = self.finish_log()?;
        let mut pending = std::mem::replace(&mut self.pending, PendingIndex::new(0, false));
        let hash_size = hash_size.unwrap_or_else(|| auto_hash_size(header.num_puts));
        if !pending.has(hash_size) {
            // Forced 32-bit after the writer stopped keeping 32-bit hashes:
            // index from the log instead.
            let index_header = write_index_with(&self.path, index, Some(hash_size))?;
            return Ok((header, index_header));
        }
        let log = LogFile::new(self.name.clone(), Backing::map(&self.path)?)?;
        let bits = header.entry_block_bits();
        if header.compression != CompressionType::None {
            pending.resolve_block_ordinals(bits);
        }
        let index_header = build_and_write_index(&log, pending, hash_size, index)?;
        Ok((header, index_header))
    }

    pub(super) fn finish_log(&mut self) -> FormatResult<LogHeader> {
        if let Some(blocks) = &mut self.blocks {
            flush_block(blocks, &mut self.file, &mut self.pos, &self.name)?;
        }
        self.header.data_end = self.pos;
        let io_err = |e| FormatError::new(self.name.as_str(), 0, FormatErrorKind::Io(e));
        self.file.flush().map_err(io_err)?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        file.write_all(&self.header.to_bytes()).map_err(io_err)?;
        fs::rename(&self.temp_path, &self.path).map_err(io_err)?;
        self.finished = true;
        Ok(self.header.clone())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.finished && !self.leave_file_on_drop {
            // An abandoned or failed log must not leave a partial file.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Compresses and writes the block being filled, if it holds anything.
fn flush_block(
    blocks: &mut BlockWriter,
    file: &mut BufWriter<File>,
    pos: &mut u64,
    name: &str,
) -> FormatResult<()> {
    if blocks.buf.is_empty() {
        return Ok(());
    }
    let err = |kind| FormatError::new(name, *pos, kind);
    match &mut blocks.codec {
        BlockCodec::Snappy(encoder) => {
            blocks
                .out
                .resize(snap::raw::max_compress_len(blocks.buf.len()), 0);
            let len = encoder
                .compress(&blocks.buf, &mut blocks.out)
                .map_err(|e| {
                    err(FormatErrorKind::Decompress {
                        codec: "snappy",
                        message: e.to_string(),
                    })
                })?;
            blocks.out.truncate(len);
        }
        BlockCodec::Zstd(compressor) => {
            blocks.out.clear();
            blocks
                .out
                .reserve(zstd::zstd_safe::compress_bound(blocks.buf.len()));
            compressor
                .compress_to_buffer(&blocks.buf, &mut blocks.out)
                .map_err(|e| err(FormatErrorKind::Io(e)))?;
        }
    }
    blocks.prefix.clear();
    write_vlq(&mut blocks.prefix, blocks.out.len() as u64);
    file.write_all(&blocks.prefix)
        .and_then(|()| file.write_all(&blocks.out))
        .map_err(|e| err(FormatErrorKind::Io(e)))?;
    *pos += (blocks.prefix.len() + blocks.out.len()) as u64;
    blocks.buf.clear();
    blocks.entries = 0;
    Ok(())
}
/// `NAME.tmp-PID-N` next to `path`: unique per process and call, and never
/// mistaken for a table by its extension.
pub(super) fn temp_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// A random u32 for file identifiers and hash seeds (std's per-process
/// random hasher keys, mixed with the clock; no cryptographic need).
pub(super) fn random_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = RandomState::new().hash_one(nanos);
    (mixed ^ (mixed >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_positions_give_addresses_that_fit() {
        let at = |block_offset, ordinal| EntryPosition {
            block_offset,
            ordinal,
        };
        assert_eq!(at(84, 0).address(0), Some(84));
        assert_eq!(at(84, 5).address(3), Some(84 << 3 | 5));
        assert_eq!(at(84, 8).address(3), None, "ordinal needs 4 bits");
        assert_eq!(at(1 << 40, 1).address(24), None, "past 64 bits");
        assert_eq!(at(1 << 40, 1).address(23), Some(1 << 63 | 1));
        assert_eq!(at(84, u32::MAX).address(32), Some(84 << 32 | 0xffff_ffff));
        assert_eq!(at(84, 0).address(64), None);
        assert_eq!(at(0, 7).address(200), Some(7));
    }

    #[test]
    fn block_size_outside_the_accepted_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.spl");
        assert!(LogWriter::create(&path, Compression::Snappy, 8).is_err());
        assert!(LogWriter::create(&path, Compression::Snappy, MAX_BLOCK_SIZE + 1).is_err());
        assert!(!path.exists());
    }
}
