//! The 84-byte header of a Sparkey log (`.spl`): [`LogHeader`], its
//! parsing and validation against the file, the [`CompressionType`] it
//! names, and the constants of the layout.

use crate::format::{FormatError, FormatErrorKind, FormatResult, HexBytes};

/// `0x49b39c95`, stored little-endian (`95 9c b3 49`).
pub const LOG_MAGIC: u32 = 0x49b3_9c95;
/// Size of the log header; entry data starts right after it.
pub const LOG_HEADER_SIZE: u64 = 84;
/// Largest `compression_block_size` accepted: the maximum of libsparkey's
/// command line tool (2^30). A bound is needed because a block is
/// decompressed into a buffer of up to this size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;

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

#[cfg(test)]
mod tests {
    use super::*;

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
