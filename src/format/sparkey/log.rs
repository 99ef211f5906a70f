//! The Sparkey log (`.spl`): its 84-byte header, the VLQ varints and entry
//! encoding, compressed blocks, and a cursor that walks entries in file order.
//!
//! Everything here reads from a byte slice that ends at the header's
//! `data_end`, and checks every varint, length and block offset against it:
//! a corrupt log gives a [`FormatError`] naming the byte, never a panic.

use std::borrow::Cow;
use std::ops::Range;

use super::snappy::PrefixDecoder;
use super::storage::Backing;
use crate::format::{FormatError, FormatErrorKind, FormatResult, HexBytes};

/// `0x49b39c95`, stored little-endian (`95 9c b3 49`).
pub const LOG_MAGIC: u32 = 0x49b3_9c95;
/// Size of the log header; entry data starts right after it.
pub const LOG_HEADER_SIZE: u64 = 84;
/// Largest `compression_block_size` accepted: the maximum of libsparkey's
/// command line tool (2^30). A bound is needed because a block is
/// decompressed into a buffer of up to this size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;
/// A raw snappy buffer never expands by more than this factor (its densest
/// element is a 3-byte copy of 64 bytes), so a claimed length beyond
/// `compressed * 22` is corrupt and is rejected before allocating.
const SNAPPY_MAX_EXPANSION: u64 = 22;

/// How a log's entry data is stored (header field `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// 0: entries back to back.
    None,
    /// 1: blocks of raw snappy.
    Snappy,
    /// 2: blocks of one zstd frame each.
    Zstd,
}

impl CompressionType {
    fn code(self) -> u32 {
        match self {
            CompressionType::None => 0,
            CompressionType::Snappy => 1,
            CompressionType::Zstd => 2,
        }
    }

    /// Lower-case name, as used in docs and tool output.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::None => "none",
            CompressionType::Snappy => "snappy",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// The log header, field by field (see `docs/FORMATS.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    pub major_version: u32,
    pub minor_version: u32,
    pub file_identifier: u32,
    pub num_puts: u64,
    pub num_deletes: u64,
    /// File offset just past the last entry byte; later bytes are ignored.
    pub data_end: u64,
    pub max_key_len: u64,
    pub max_value_len: u64,
    pub delete_size: u64,
    pub compression: CompressionType,
    /// Maximum uncompressed bytes per block; 0 for uncompressed logs.
    pub compression_block_size: u32,
    pub put_size: u64,
    /// Most entries whose header starts in one block; 0 for uncompressed.
    pub max_entries_per_block: u32,
}

impl LogHeader {
    /// Parses and validates the header of a log `file_len` bytes long.
    pub fn parse(bytes: &[u8], name: &str, file_len: u64) -> FormatResult<LogHeader> {
        let err = |offset: u64, kind| FormatError::new(name, offset, kind);
        let Some(raw) = bytes.get(..LOG_HEADER_SIZE as usize) else {
            return Err(err(
                0,
                FormatErrorKind::Truncated {
                    what: "sparkey log header",
                    needed: LOG_HEADER_SIZE,
                    available: bytes.len() as u64,
                },
            ));
        };
        let u32_at = |off: usize| le_u32(raw, off);
        let u64_at = |off: usize| le_u64(raw, off);
        if u32_at(0) != LOG_MAGIC {
            return Err(err(
                0,
                FormatErrorKind::BadMagic {
                    format: "sparkey log",
                    found: HexBytes::of(raw.get(..4).unwrap_or_default()),
                },
            ));
        }
        let header = LogHeader {
            major_version: u32_at(4),
            minor_version: u32_at(8),
            file_identifier: u32_at(12),
            num_puts: u64_at(16),
            num_deletes: u64_at(24),
            data_end: u64_at(32),
            max_key_len: u64_at(40),
            max_value_len: u64_at(48),
            delete_size: u64_at(56),
            compression: CompressionType::None,
            compression_block_size: u32_at(68),
            put_size: u64_at(72),
            max_entries_per_block: u32_at(80),
        };
        let corrupt = |offset: u64, message: String| err(offset, FormatErrorKind::Corrupt(message));
        if header.major_version != 1 {
            return Err(err(
                4,
                FormatErrorKind::UnsupportedVersion {
                    format: "sparkey log (major)",
                    version: header.major_version,
                },
            ));
        }
        if header.minor_version != 0 {
            return Err(err(
                8,
                FormatErrorKind::UnsupportedVersion {
                    format: "sparkey log (minor)",
                    version: header.minor_version,
                },
            ));
        }
        if header.data_end < LOG_HEADER_SIZE {
            return Err(corrupt(
                32,
                format!("data_end {} is inside the header", header.data_end),
            ));
        }
        if header.data_end > file_len {
            return Err(err(
                32,
                FormatErrorKind::Truncated {
                    what: "sparkey log data (data_end)",
                    needed: header.data_end,
                    available: file_len,
                },
            ));
        }
        // Every entry takes at least two bytes, so counts beyond the data
        // size are corrupt (libsparkey checks the looser `<= data_end`).
        let data_len = header.data_end - LOG_HEADER_SIZE;
        if header.num_puts > header.data_end || header.num_deletes > header.data_end {
            return Err(corrupt(
                16,
                format!(
                    "{} puts and {} deletes cannot fit in {data_len} bytes of data",
                    header.num_puts, header.num_deletes
                ),
            ));
        }
        let compression = match u32_at(64) {
            0 => CompressionType::None,
            1 => CompressionType::Snappy,
            2 => CompressionType::Zstd,
            other => return Err(corrupt(64, format!("unknown compression type {other}"))),
        };
        let header = LogHeader {
            compression,
            ..header
        };
        if compression != CompressionType::None
            && !(1..=MAX_BLOCK_SIZE).contains(&header.compression_block_size)
        {
            return Err(corrupt(
                68,
                format!(
                    "compression block size {} is outside 1..={MAX_BLOCK_SIZE}",
                    header.compression_block_size
                ),
            ));
        }
        Ok(header)
    }

    /// The 84 header bytes, as written to the file.
    pub fn to_bytes(&self) -> [u8; LOG_HEADER_SIZE as usize] {
        let mut out = [0u8; LOG_HEADER_SIZE as usize];
        let mut put = |off: usize, bytes: &[u8]| {
            out[off..off + bytes.len()].copy_from_slice(bytes);
        };
        put(0, &LOG_MAGIC.to_le_bytes());
        put(4, &self.major_version.to_le_bytes());
        put(8, &self.minor_version.to_le_bytes());
        put(12, &self.file_identifier.to_le_bytes());
        put(16, &self.num_puts.to_le_bytes());
        put(24, &self.num_deletes.to_le_bytes());
        put(32, &self.data_end.to_le_bytes());
        put(40, &self.max_key_len.to_le_bytes());
        put(48, &self.max_value_len.to_le_bytes());
        put(56, &self.delete_size.to_le_bytes());
        put(64, &self.compression.code().to_le_bytes());
        put(68, &self.compression_block_size.to_le_bytes());
        put(72, &self.put_size.to_le_bytes());
        put(80, &self.max_entries_per_block.to_le_bytes());
        out
    }

    /// Bits of an index address that number an entry within its block: the
    /// bit length of `max_entries_per_block` (0 for uncompressed logs).
    pub fn entry_block_bits(&self) -> u32 {
        if self.compression == CompressionType::None {
            0
        } else {
            u32::BITS - self.max_entries_per_block.leading_zeros()
        }
    }
}

/// Reads a little-endian u32 at `off`; 0 if out of range (callers pass
/// offsets inside an already length-checked header).
pub(crate) fn le_u32(bytes: &[u8], off: usize) -> u32 {
    bytes
        .get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Reads a little-endian u64 at `off`; 0 if out of range (see [`le_u32`]).
pub(crate) fn le_u64(bytes: &[u8], off: usize) -> u64 {
    bytes
        .get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

// ---------------------------------------------------------------------------
// VLQ varints

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VlqError {
    /// The input ends inside the varint.
    Truncated,
    /// More than 64 bits.
    Overflow,
}

impl VlqError {
    pub(crate) fn into_format(self, name: &str, offset: u64, what: &'static str) -> FormatError {
        let kind = match self {
            VlqError::Truncated => FormatErrorKind::Truncated {
                what,
                needed: 1,
                available: 0,
            },
            VlqError::Overflow => {
                FormatErrorKind::Corrupt(format!("{what}: varint overflows 64 bits"))
            }
        };
        FormatError::new(name, offset, kind)
    }
}

/// Reads an unsigned LEB128 varint at `pos`; returns it and the position
/// just after it.
#[inline]
pub(crate) fn read_vlq(data: &[u8], pos: usize) -> Result<(u64, usize), VlqError> {
    let first = *data.get(pos).ok_or(VlqError::Truncated)?;
    if first < 0x80 {
        return Ok((u64::from(first), pos + 1));
    }
    let mut value = u64::from(first & 0x7f);
    let mut shift = 7;
    let mut at = pos + 1;
    loop {
        let byte = *data.get(at).ok_or(VlqError::Truncated)?;
        at += 1;
        // The tenth byte may only carry the 64th bit.
        if shift == 63 && byte > 1 {
            return Err(VlqError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok((value, at));
        }
        shift += 7;
        if shift > 63 {
            return Err(VlqError::Overflow);
        }
    }
}

/// Appends `value` as a VLQ to `out`.
#[inline]
pub(crate) fn write_vlq(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encoded length of `value` as a VLQ.
#[cfg(test)]
pub(crate) fn vlq_len(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

// ---------------------------------------------------------------------------
// Entries

/// A log entry is either a put (key and value) or a delete (key only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Put,
    Delete,
}

/// One entry of the log, as the raw log iteration yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    pub kind: EntryKind,
    pub key: Cow<'a, [u8]>,
    /// Empty for deletes.
    pub value: Cow<'a, [u8]>,
    /// The entry's address as an index stores it: its file offset in an
    /// uncompressed log, `(block_offset << entry_block_bits) | ordinal` in a
    /// compressed one.
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

// ---------------------------------------------------------------------------
// The opened log

/// Decompression state reused across blocks (a zstd context is costly to
/// create, so each thread or cursor keeps one).
#[derive(Default)]
pub(crate) struct BlockDecoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

/// A snappy block decoded only as far as lookups have needed so far.
struct LazyBlock {
    decoder: PrefixDecoder,
    /// The compressed bytes, in [`LogFile::data`].
    payload: Range<usize>,
    /// File offset of the block's length prefix, for errors.
    offset: u64,
}

/// The block a lookup reads entries from: snappy blocks are decoded only up
/// to the entry looked for (on average half the block) and resumed if a
/// later lookup needs more; zstd blocks are decoded whole.
#[derive(Default)]
pub(crate) struct LookupBlock {
    buf: Vec<u8>,
    /// Valid bytes at the start of `buf`.
    decoded: usize,
    /// Length of the whole decoded block.
    len: usize,
    lazy: Option<LazyBlock>,
    decoder: BlockDecoder,
}

impl LookupBlock {
    /// Makes the block at `offset` of `log` the current one. On error the
    /// block is empty.
    pub(crate) fn load(&mut self, log: &LogFile, offset: u64) -> FormatResult<()> {
        self.lazy = None;
        self.decoded = 0;
        self.len = 0;
        if log.header.compression == CompressionType::Snappy {
            let lazy = log.start_snappy_block(offset, &mut self.buf)?;
            self.len = lazy.decoder.claimed();
            self.lazy = Some(lazy);
        } else {
            log.read_block(offset, &mut self.buf, &mut self.decoder)?;
            self.len = self.buf.len();
            self.decoded = self.len;
        }
        Ok(())
    }

    /// Length of the whole decoded block.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The block's first `want` bytes, or all of it if it is shorter (and
    /// possibly more, as decoding goes element by element).
    #[inline]
    pub(crate) fn prefix(&mut self, log: &LogFile, want: usize) -> FormatResult<&[u8]> {
        if want > self.decoded
            && let Some(lazy) = &mut self.lazy
        {
            let src = log.data().get(lazy.payload.clone()).unwrap_or_default();
            let result = lazy.decoder.decode_to(src, &mut self.buf, want);
            match result {
                Ok(decoded) => self.decoded = decoded,
                Err(e) => {
                    let offset = lazy.offset;
                    self.lazy = None;
                    self.decoded = 0;
                    self.len = 0;
                    return Err(log.decompress_err(offset, "snappy", e.to_string()));
                }
            }
        }
        Ok(self.buf.get(..self.decoded).unwrap_or_default())
    }
}

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

    /// Locates the compressed bytes of the block whose length prefix is at
    /// `offset`: returns their range in [`LogFile::data`].
    fn block_payload(&self, offset: u64) -> FormatResult<Range<usize>> {
        let data = self.data();
        if offset < LOG_HEADER_SIZE || offset >= data.len() as u64 {
            return Err(self.corrupt(
                offset,
                format!(
                    "block offset {offset} is outside the log data (84..{})",
                    data.len()
                ),
            ));
        }
        let start = offset as usize;
        let (compressed_len, payload_start) =
            read_vlq(data, start).map_err(|e| e.into_format(&self.name, offset, "block length"))?;
        let available = (data.len() - payload_start) as u64;
        if compressed_len > available {
            return Err(self.err(
                offset,
                FormatErrorKind::Truncated {
                    what: "compressed block",
                    needed: compressed_len,
                    available,
                },
            ));
        }
        Ok(payload_start..payload_start + compressed_len as usize)
    }

    fn decompress_err(&self, offset: u64, codec: &'static str, message: String) -> FormatError {
        self.err(offset, FormatErrorKind::Decompress { codec, message })
    }

    /// Starts decoding the snappy block at `offset` lazily into `out`,
    /// for lookups that need only a prefix of it.
    fn start_snappy_block(&self, offset: u64, out: &mut Vec<u8>) -> FormatResult<LazyBlock> {
        let payload = self.block_payload(offset)?;
        let src = self.data().get(payload.clone()).unwrap_or_default();
        // A snappy element expands at most `SNAPPY_MAX_EXPANSION` times;
        // refuse larger claims before allocating for them.
        let limit = (u64::from(self.header.compression_block_size))
            .min((src.len() as u64).saturating_mul(SNAPPY_MAX_EXPANSION));
        let decoder = PrefixDecoder::start(src, usize::try_from(limit).unwrap_or(0), out)
            .map_err(|e| self.decompress_err(offset, "snappy", e.to_string()))?;
        Ok(LazyBlock {
            decoder,
            payload,
            offset,
        })
    }

    /// Decompresses the block whose length prefix is at `offset` into `out`
    /// (replacing its content) and returns the offset of the next block.
    pub(crate) fn read_block(
        &self,
        offset: u64,
        out: &mut Vec<u8>,
        decoder: &mut BlockDecoder,
    ) -> FormatResult<u64> {
        let payload_range = self.block_payload(offset)?;
        let payload_end = payload_range.end;
        let compressed_len = payload_range.len() as u64;
        let payload = self.data().get(payload_range).unwrap_or_default();
        let block_size = u64::from(self.header.compression_block_size);
        let decompress_err =
            |codec: &'static str, message: String| self.decompress_err(offset, codec, message);
        let too_large = |length: u64| {
            self.err(
                offset,
                FormatErrorKind::TooLarge {
                    what: "decompressed block",
                    length,
                    limit: block_size,
                },
            )
        };
        match self.header.compression {
            CompressionType::None => {
                return Err(self.corrupt(offset, "an uncompressed log has no blocks"));
            }
            CompressionType::Snappy => {
                let claimed = snap::raw::decompress_len(payload)
                    .map_err(|e| decompress_err("snappy", e.to_string()))?
                    as u64;
                if claimed > block_size {
                    return Err(too_large(claimed));
                }
                if claimed > compressed_len.saturating_mul(SNAPPY_MAX_EXPANSION) {
                    return Err(decompress_err(
                        "snappy",
                        format!("claims {claimed} bytes from {compressed_len}"),
                    ));
                }
                out.clear();
                out.resize(claimed as usize, 0);
                let written = snap::raw::Decoder::new()
                    .decompress(payload, out)
                    .map_err(|e| decompress_err("snappy", e.to_string()))?;
                if written as u64 != claimed {
                    return Err(decompress_err(
                        "snappy",
                        format!("decoded {written} bytes, header said {claimed}"),
                    ));
                }
            }
            CompressionType::Zstd => {
                let content_size = zstd::zstd_safe::get_frame_content_size(payload)
                    .map_err(|_| decompress_err("zstd", "bad frame header".into()))?;
                let capacity = match content_size {
                    Some(size) if size > block_size => return Err(too_large(size)),
                    Some(size) => size,
                    // No size in the frame: at most a whole block.
                    None => block_size,
                };
                let zstd = match &mut decoder.zstd {
                    Some(zstd) => zstd,
                    slot @ None => slot.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| decompress_err("zstd", e.to_string()))?,
                    ),
                };
                out.clear();
                out.reserve(capacity as usize);
                zstd.decompress_to_buffer(payload, out)
                    .map_err(|e| decompress_err("zstd", e.to_string()))?;
                if content_size.is_some_and(|size| size != out.len() as u64) {
                    return Err(decompress_err(
                        "zstd",
                        format!("decoded {} bytes, frame said {capacity}", out.len()),
                    ));
                }
            }
        }
        Ok(payload_end as u64)
    }

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

// ---------------------------------------------------------------------------
// Walking entries in file order

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlq_round_trips_and_matches_reference_examples() {
        let encode = |v: u64| {
            let mut out = Vec::new();
            write_vlq(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let bytes = encode(v);
            assert_eq!(vlq_len(v), bytes.len() as u64);
            assert_eq!(read_vlq(&bytes, 0), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn vlq_rejects_truncation_and_overflow() {
        assert_eq!(read_vlq(&[], 0), Err(VlqError::Truncated));
        assert_eq!(read_vlq(&[0x80, 0x80], 0), Err(VlqError::Truncated));
        // Ten bytes whose last carries more than the 64th bit.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(read_vlq(&too_big, 0), Err(VlqError::Overflow));
        // Eleven bytes.
        let mut too_long = vec![0x80; 10];
        too_long.push(0x00);
        assert_eq!(read_vlq(&too_long, 0), Err(VlqError::Overflow));
    }

    fn sample_header() -> LogHeader {
        LogHeader {
            major_version: 1,
            minor_version: 0,
            file_identifier: 0x1234_5678,
            num_puts: 3,
            num_deletes: 1,
            data_end: 120,
            max_key_len: 5,
            max_value_len: 7,
            delete_size: 4,
            compression: CompressionType::Snappy,
            compression_block_size: 4096,
            put_size: 30,
            max_entries_per_block: 58,
        }
    }

    #[test]
    fn header_round_trips_and_computes_entry_block_bits() {
        let header = sample_header();
        let bytes = header.to_bytes();
        assert_eq!(&bytes[..4], &[0x95, 0x9c, 0xb3, 0x49]);
        assert_eq!(LogHeader::parse(&bytes, "t.spl", 200).unwrap(), header);
        assert_eq!(header.entry_block_bits(), 6);
        for (entries, bits) in [(0, 0), (1, 1), (2, 2), (382, 9), (40000, 16)] {
            let h = LogHeader {
                max_entries_per_block: entries,
                ..sample_header()
            };
            assert_eq!(h.entry_block_bits(), bits, "{entries}");
        }
    }

    #[test]
    fn header_rejects_bad_fields_with_offsets() {
        let check = |header: LogHeader, file_len: u64, offset: u64| {
            let err = LogHeader::parse(&header.to_bytes(), "t.spl", file_len).unwrap_err();
            assert_eq!(err.offset, offset, "{err}");
            assert_eq!(err.file, "t.spl");
        };
        check(sample_header(), 100, 32); // data_end past the file
        check(
            LogHeader {
                data_end: 10,
                ..sample_header()
            },
            200,
            32,
        );
        check(
            LogHeader {
                major_version: 2,
                ..sample_header()
            },
            200,
            4,
        );
        check(
            LogHeader {
                minor_version: 1,
                ..sample_header()
            },
            200,
            8,
        );
        check(
            LogHeader {
                num_puts: 1000,
                ..sample_header()
            },
            200,
            16,
        );
        check(
            LogHeader {
                compression_block_size: 0,
                ..sample_header()
            },
            200,
            68,
        );
        let mut bad_codec = sample_header().to_bytes();
        bad_codec[64] = 3;
        assert_eq!(
            LogHeader::parse(&bad_codec, "t", 200).unwrap_err().offset,
            64
        );
        let mut bad_magic = sample_header().to_bytes();
        bad_magic[0] ^= 1;
        assert!(matches!(
            LogHeader::parse(&bad_magic, "t", 200).unwrap_err().kind,
            FormatErrorKind::BadMagic { .. }
        ));
        assert!(matches!(
            LogHeader::parse(&bad_magic[..50], "t", 50)
                .unwrap_err()
                .kind,
            FormatErrorKind::Truncated { .. }
        ));
    }
}
