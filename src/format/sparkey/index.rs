//! The Sparkey hash index (`.spi`): its 112-byte header, the slot table and
//! the Robin Hood probe shared by lookups and live iteration.
//!
//! The header is checked against its log (file identifier, sizes) and the
//! table against the file length before any slot is read, so a probe only
//! ever touches slots `0..hash_capacity` of a table known to be that long.

use super::hash::HashSize;
use super::header::{LogHeader, le_u32, le_u64};
use super::storage::Backing;
use crate::format::{FormatError, FormatErrorKind, FormatResult, HexBytes};

/// `0x9a11318f`, stored little-endian (`8f 31 11 9a`).
pub const INDEX_MAGIC: u32 = 0x9a11_318f;
/// Size of the index header; the slot table follows it.
pub const INDEX_HEADER_SIZE: u64 = 112;

/// The index header, field by field (see `docs/FORMATS.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHeader {
    pub major_version: u32,
    pub minor_version: u32,
    pub file_identifier: u32,
    pub hash_seed: u32,
    /// The log's `data_end` when the index was built.
    pub data_end: u64,
    pub max_key_len: u64,
    pub max_value_len: u64,
    pub num_puts: u64,
    pub garbage_size: u64,
    /// Live keys in the table.
    pub num_entries: u64,
    /// 4 or 8.
    pub address_size: u32,
    pub hash_size: HashSize,
    /// Number of slots.
    pub hash_capacity: u64,
    pub max_displacement: u64,
    pub entry_block_bits: u32,
    pub hash_collisions: u64,
    pub total_displacement: u64,
}

impl IndexHeader {
    /// Parses the header and checks it against the file length and the log
    /// it indexes.
    pub fn parse(
        bytes: &[u8],
        name: &str,
        file_len: u64,
        log: &LogHeader,
    ) -> FormatResult<IndexHeader> {
        let err = |offset: u64, kind| FormatError::new(name, offset, kind);
        let corrupt = |offset: u64, message: String| err(offset, FormatErrorKind::Corrupt(message));
        let Some(raw) = bytes.get(..INDEX_HEADER_SIZE as usize) else {
            return Err(err(
                0,
                FormatErrorKind::Truncated {
                    what: "sparkey index header",
                    needed: INDEX_HEADER_SIZE,
                    available: bytes.len() as u64,
                },
            ));
        };
        let u32_at = |off: usize| le_u32(raw, off);
        let u64_at = |off: usize| le_u64(raw, off);
        if u32_at(0) != INDEX_MAGIC {
            return Err(err(
                0,
                FormatErrorKind::BadMagic {
                    format: "sparkey index",
                    found: HexBytes::of(raw.get(..4).unwrap_or_default()),
                },
            ));
        }
        let (major_version, minor_version) = (u32_at(4), u32_at(8));
        if major_version != 1 {
            return Err(err(
                4,
                FormatErrorKind::UnsupportedVersion {
                    format: "sparkey index (major)",
                    version: major_version,
                },
            ));
        }
        // Minor 0 and 1 share the layout; writers emit 1.
        if minor_version > 1 {
            return Err(err(
                8,
                FormatErrorKind::UnsupportedVersion {
                    format: "sparkey index (minor)",
                    version: minor_version,
                },
            ));
        }
        let hash_size = match u32_at(72) {
            4 => HashSize::Bits32,
            8 => HashSize::Bits64,
            other => return Err(corrupt(72, format!("hash size {other} is not 4 or 8"))),
        };
        let header = IndexHeader {
            major_version,
            minor_version,
            file_identifier: u32_at(12),
            hash_seed: u32_at(16),
            data_end: u64_at(20),
            max_key_len: u64_at(28),
            max_value_len: u64_at(36),
            num_puts: u64_at(44),
            garbage_size: u64_at(52),
            num_entries: u64_at(60),
            address_size: u32_at(68),
            hash_size,
            hash_capacity: u64_at(76),
            max_displacement: u64_at(84),
            entry_block_bits: u32_at(92),
            hash_collisions: u64_at(96),
            total_displacement: u64_at(104),
        };
        if header.file_identifier != log.file_identifier {
            return Err(corrupt(
                12,
                format!(
                    "file identifier {:#010x} does not match the log's {:#010x} \
                     (index and log are not a pair)",
                    header.file_identifier, log.file_identifier
                ),
            ));
        }
        let bigger_than_log = |offset: u64, what: &str, index_value: u64, log_value: u64| {
            (index_value > log_value).then(|| {
                corrupt(
                    offset,
                    format!("{what} {index_value} is larger than the log's {log_value}"),
                )
            })
        };
        if let Some(e) = bigger_than_log(20, "data_end", header.data_end, log.data_end)
            .or_else(|| bigger_than_log(28, "max_key_len", header.max_key_len, log.max_key_len))
            .or_else(|| {
                bigger_than_log(36, "max_value_len", header.max_value_len, log.max_value_len)
            })
        {
            return Err(e);
        }
        if header.num_entries > header.num_puts {
            return Err(corrupt(
                60,
                format!(
                    "{} live entries but only {} puts",
                    header.num_entries, header.num_puts
                ),
            ));
        }
        if header.address_size != 4 && header.address_size != 8 {
            return Err(corrupt(
                68,
                format!("address size {} is not 4 or 8", header.address_size),
            ));
        }
        if header.hash_capacity == 0 || header.num_entries > header.hash_capacity {
            return Err(corrupt(
                76,
                format!(
                    "hash capacity {} cannot hold {} entries",
                    header.hash_capacity, header.num_entries
                ),
            ));
        }
        if header.max_displacement > header.num_entries {
            return Err(corrupt(
                84,
                format!(
                    "max displacement {} exceeds the {} entries",
                    header.max_displacement, header.num_entries
                ),
            ));
        }
        // The index's own value decodes its addresses (a log appended to
        // after the index was built may have grown max_entries_per_block).
        // An ordinal needs at most 32 bits, since the header field is a u32.
        if header.entry_block_bits > 32 {
            return Err(corrupt(
                92,
                format!("entry_block_bits {} exceeds 32", header.entry_block_bits),
            ));
        }
        let table_len = header
            .hash_capacity
            .checked_mul(u64::from(header.slot_size()))
            .and_then(|len| len.checked_add(INDEX_HEADER_SIZE));
        match table_len {
            Some(needed) if needed <= file_len => {}
            _ => {
                return Err(err(
                    76,
                    FormatErrorKind::Truncated {
                        what: "sparkey index slot table",
                        needed: table_len.unwrap_or(u64::MAX),
                        available: file_len,
                    },
                ));
            }
        }
        Ok(header)
    }

    /// Bytes per slot: stored hash then address.
    pub fn slot_size(&self) -> u32 {
        self.hash_size.bytes() + self.address_size
    }

    /// The 112 header bytes, as written to the file.
    pub fn to_bytes(&self) -> [u8; INDEX_HEADER_SIZE as usize] {
        let mut out = [0u8; INDEX_HEADER_SIZE as usize];
        let mut put = |off: usize, bytes: &[u8]| {
            out[off..off + bytes.len()].copy_from_slice(bytes);
        };
        put(0, &INDEX_MAGIC.to_le_bytes());
        put(4, &self.major_version.to_le_bytes());
        put(8, &self.minor_version.to_le_bytes());
        put(12, &self.file_identifier.to_le_bytes());
        put(16, &self.hash_seed.to_le_bytes());
        put(20, &self.data_end.to_le_bytes());
        put(28, &self.max_key_len.to_le_bytes());
        put(36, &self.max_value_len.to_le_bytes());
        put(44, &self.num_puts.to_le_bytes());
        put(52, &self.garbage_size.to_le_bytes());
        put(60, &self.num_entries.to_le_bytes());
        put(68, &self.address_size.to_le_bytes());
        put(72, &self.hash_size.bytes().to_le_bytes());
        put(76, &self.hash_capacity.to_le_bytes());
        put(84, &self.max_displacement.to_le_bytes());
        put(92, &self.entry_block_bits.to_le_bytes());
        put(96, &self.hash_collisions.to_le_bytes());
        put(104, &self.total_displacement.to_le_bytes());
        out
    }
}

/// An index opened for reading.
pub(crate) struct IndexFile {
    pub name: String,
    bytes: Backing,
    pub header: IndexHeader,
    hash_bytes: usize,
    address_bytes: usize,
    slot_size: usize,
}

impl IndexFile {
    pub(crate) fn new(name: String, bytes: Backing, log: &LogHeader) -> FormatResult<IndexFile> {
        let header = IndexHeader::parse(&bytes, &name, bytes.len() as u64, log)?;
        Ok(IndexFile {
            name,
            hash_bytes: header.hash_size.bytes() as usize,
            address_bytes: header.address_size as usize,
            slot_size: header.slot_size() as usize,
            bytes,
            header,
        })
    }

    /// The stored hash and address of slot `slot` (< capacity).
    #[inline]
    fn slot(&self, slot: u64) -> FormatResult<(u64, u64)> {
        let start = INDEX_HEADER_SIZE as usize + slot as usize * self.slot_size;
        let hash_end = start + self.hash_bytes;
        let bytes = self.bytes.get(start..hash_end + self.address_bytes);
        let Some(bytes) = bytes else {
            return Err(FormatError::new(
                self.name.as_str(),
                start as u64,
                FormatErrorKind::Corrupt(format!("slot {slot} is outside the table")),
            ));
        };
        let read = |b: &[u8]| {
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        };
        let (hash, address) = bytes.split_at(self.hash_bytes);
        Ok((read(hash), read(address)))
    }

    /// The hash of `key` as this index stores it.
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.header.hash_size.hash(key, self.header.hash_seed)
    }

    /// Probes for `hash` with Robin Hood's early exit. `check` is called with
    /// the address of every slot storing `hash`; the first `Some` it returns
    /// ends the probe. The probe never goes further than the header's
    /// `max_displacement` (a valid bound, and the guard against a corrupt
    /// table sending it round forever).
    #[inline]
    pub(crate) fn probe<T>(
        &self,
        hash: u64,
        mut check: impl FnMut(u64) -> FormatResult<Option<T>>,
    ) -> FormatResult<Option<T>> {
        let capacity = self.header.hash_capacity;
        let mut slot = hash % capacity;
        let max_displacement = self.header.max_displacement.min(capacity - 1);
        let mut displacement = 0;
        while displacement <= max_displacement {
            let (stored_hash, address) = self.slot(slot)?;
            if address == 0 {
                return Ok(None);
            }
            if stored_hash == hash
                && let Some(found) = check(address)?
            {
                return Ok(Some(found));
            }
            let home = stored_hash % capacity;
            let resident_displacement = (slot + capacity - home) % capacity;
            if displacement > resident_displacement {
                return Ok(None);
            }
            displacement += 1;
            slot += 1;
            if slot == capacity {
                slot = 0;
            }
        }
        Ok(None)
    }
}
