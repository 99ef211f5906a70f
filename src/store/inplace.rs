//! A SequenceFile served in place (`<name>.seq`, block kind
//! [`BlockKind::SequenceFile`](super::manifest::BlockKind)): an uncompressed
//! SequenceFile kept as it was downloaded, memory-mapped, whose values are
//! read as byte ranges at the offsets the key index records.
//!
//! Only the header is parsed when the file is opened (it must be a
//! SequenceFile without compression); the offsets come from the key index,
//! and every range is checked against the file's size when read, so a
//! damaged or truncated file gives an error naming it and the offset,
//! never a read outside the mapping.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::format::sequencefile::{Compression, Reader};

/// An error reading a SequenceFile in place, naming the file and offset.
#[derive(Debug, thiserror::Error)]
#[error("{file}: byte {offset}: {message}")]
pub struct InPlaceError {
    pub file: String,
    pub offset: u64,
    pub message: String,
}

/// A memory-mapped SequenceFile whose values are served in place.
#[derive(Debug)]
pub struct InPlaceFile {
    map: Mmap,
    name: String,
}

impl InPlaceFile {
    /// Maps `path` and checks that it is an uncompressed SequenceFile.
    pub fn open(path: &Path) -> Result<InPlaceFile, InPlaceError> {
        let name = path.display().to_string();
        let err = |offset: u64, message: String| InPlaceError {
            file: name.clone(),
            offset,
            message,
        };
        let file = File::open(path).map_err(|e| err(0, format!("cannot open: {e}")))?;
        // SAFETY: the file lives in the local store, which only this process
        // writes (it holds the store lock), and published version files are
        // never modified or truncated while mapped: they are deleted only
        // after the last reader has gone. Every access below is
        // bounds-checked against the mapping's length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(0, format!("cannot map: {e}")))?;
        let header = Reader::new(&map[..], &name).map_err(|e| InPlaceError {
            file: name.clone(),
            offset: e.offset,
            message: e.kind.to_string(),
        })?;
        if header.header().compression != Compression::None {
            return Err(err(
                0,
                format!(
                    "{} compressed; only uncompressed SequenceFiles are served in place",
                    header.header().compression
                ),
            ));
        }
        drop(header);
        Ok(InPlaceFile { map, name })
    }

    /// Bytes `offset..offset + len` (clamped to the value) of the value of
    /// `value_len` bytes at `address`.
    pub fn read_value(
        &self,
        address: u64,
        value_len: u64,
        offset: u64,
        len: usize,
    ) -> Result<&[u8], InPlaceError> {
        let size = self.map.len() as u64;
        let value = address
            .checked_add(value_len)
            .filter(|&end| end <= size)
            .and_then(|end| self.map.get(address as usize..end as usize))
            .ok_or_else(|| InPlaceError {
                file: self.name.clone(),
                offset: address,
                message: format!(
                    "value of {value_len} bytes runs past the end of the {size}-byte file"
                ),
            })?;
        let start = usize::try_from(offset).map_or(value.len(), |o| o.min(value.len()));
        let end = start + len.min(value.len() - start);
        Ok(&value[start..end])
    }
}
