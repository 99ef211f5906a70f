//! A published version opened for serving: its Sparkey tables and its key
//! index, all memory-mapped. This is what every lookup of the mount and the
//! HTTP sidecar ends in.
//!
//! A lookup by key hashes it with sequins' partition function, probes that
//! partition's tables, then the alternate partition's where sequins would
//! (keys near the hash wrap-around written by Cascading). A lookup by
//! ordinal (the mount's inodes are ordinals) reads the value's table and
//! address from the key index where it records them (format 2), and only
//! falls back to the key for indexes written before (format 1). Values are
//! then read by range: uncompressed ones as slices of the mapping, without
//! a copy; compressed ones block by block.
//!
//! A version of SequenceFiles served in place (see [`super::inplace`]) has
//! no hash indexes: a lookup by key binary-searches the key index, which
//! records every value's table, offset and length.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::catalog::{LookupError, ValueRef, VersionData};
use crate::format::sparkey;
use crate::partition;

use super::StoreError;
use super::inplace::InPlaceFile;
use super::keyindex::KeyIndex;
use super::manifest::{BlockKind, Manifest};

/// One table of a version. (A version has a few tables, each opened once:
/// the size of the Sparkey reader does not matter, an indirection per
/// lookup would.)
#[allow(clippy::large_enum_variant)]
enum Table {
    Sparkey(sparkey::Reader),
    InPlace(InPlaceFile),
}

pub struct LocalVersion {
    dir: PathBuf,
    /// Inode of `dir` when opened; see `VersionData::local_dir`.
    dir_inode: u64,
    manifest: Manifest,
    /// One reader per table, in the manifest's block order (a value's
    /// `table` is a position here).
    tables: Vec<Table>,
    /// Positions in `tables` of each partition's Sparkey tables, by
    /// partition.
    partitions: Vec<Vec<u32>>,
    keys: KeyIndex,
    /// Whether lookups by key search the key index (a version with tables
    /// in place, which have no hash index) rather than probe hash indexes.
    by_key_index: bool,
}

impl LocalVersion {
    /// Opens a published version directory, validating every file's header.
    pub fn open(dir: &Path) -> Result<LocalVersion, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let dir_inode = std::fs::metadata(dir).map_err(super::io_err(dir))?.ino();
        let manifest = Manifest::read(dir)?;
        let mut partitions: Vec<Vec<u32>> =
            (0..manifest.num_partitions).map(|_| Vec::new()).collect();
        let mut tables = Vec::with_capacity(manifest.blocks.len());
        for (position, block) in manifest.blocks.iter().enumerate() {
            let slot = partitions
                .get_mut(block.partition as usize)
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "{}: block {} has partition {} of {}",
                        dir.display(),
                        block.name,
                        block.partition,
                        manifest.num_partitions
                    ))
                })?;
            match block.kind {
                BlockKind::Sparkey => {
                    let log = dir.join(format!("{}.spl", block.name));
                    let index = dir.join(format!("{}.spi", block.name));
                    let reader = sparkey::Reader::open(&log, &index)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    slot.push(position as u32);
                    tables.push(Table::Sparkey(reader));
                }
                BlockKind::SequenceFile => {
                    let file = InPlaceFile::open(&dir.join(format!("{}.seq", block.name)))
                        .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    tables.push(Table::InPlace(file));
                }
            }
        }
        let keys = KeyIndex::open(&dir.join("keys.idx"))
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let by_key_index = tables.iter().any(|t| matches!(t, Table::InPlace(_)));
        if by_key_index && !keys.has_locations() {
            return Err(StoreError::Invalid(format!(
                "{}: the key index records no value locations, which SequenceFiles in place need",
                dir.join("keys.idx").display()
            )));
        }
        if keys.len() != manifest.num_keys {
            return Err(StoreError::Invalid(format!(
                "{}: key index has {} keys, manifest says {}",
                dir.display(),
                keys.len(),
                manifest.num_keys
            )));
        }
        Ok(LocalVersion {
            dir: dir.to_path_buf(),
            dir_inode,
            manifest,
            tables,
            partitions,
            keys,
            by_key_index,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The version's key index.
    pub fn key_index(&self) -> &KeyIndex {
        &self.keys
    }

    /// When the version was created on the source.
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.manifest.created_at.max(0) as u64)
    }

    fn probe(&self, partition: u32, key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
        let Some(tables) = self.partitions.get(partition as usize) else {
            return Ok(None);
        };
        for &table in tables {
            let Table::Sparkey(reader) = self.table(table)? else {
                continue;
            };
            if let Some(found) = reader.locate(key).map_err(LookupError::new)? {
                return Ok(Some(ValueRef {
                    table,
                    address: found.address,
                    len: found.len,
                }));
            }
        }
        Ok(None)
    }

    fn table(&self, table: u32) -> Result<&Table, LookupError> {
        self.tables.get(table as usize).ok_or_else(|| {
            LookupError::new(format!(
                "{}: table {table} of {}",
                self.dir.display(),
                self.tables.len()
            ))
        })
    }
}

impl VersionData for LocalVersion {
    fn locate(&self, key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
        if self.by_key_index {
            return match self.keys.find(key).map_err(LookupError::new)? {
                Some(ordinal) => self.locate_ordinal(ordinal).map(Some),
                None => Ok(None),
            };
        }
        let n = self.manifest.num_partitions;
        if n == 0 {
            return Ok(None);
        }
        let (normal, alternate) = partition::partitions(key, n);
        if let Some(v) = self.probe(normal, key)? {
            return Ok(Some(v));
        }
        if alternate != normal {
            return self.probe(alternate, key);
        }
        Ok(None)
    }

    fn locate_ordinal(&self, ordinal: u64) -> Result<ValueRef, LookupError> {
        let len = self.value_len_at(ordinal)?;
        match self.keys.location(ordinal).map_err(LookupError::new)? {
            Some((table, address)) => Ok(ValueRef {
                table,
                address,
                len,
            }),
            // A key index of format 1: find the value by its key.
            None => {
                let key = self.key_at(ordinal)?;
                self.locate(key)?.ok_or_else(|| {
                    LookupError::new(format!(
                        "{}: the key at ordinal {ordinal} has no value",
                        self.dir.display()
                    ))
                })
            }
        }
    }

    fn read_value<'a>(
        &'a self,
        value: &ValueRef,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, LookupError> {
        match self.table(value.table)? {
            Table::Sparkey(reader) => reader
                .read_value_into(value.address, offset, len, scratch)
                .map_err(LookupError::new),
            Table::InPlace(file) => file
                .read_value(value.address, value.len, offset, len)
                .map(Some)
                .map_err(LookupError::new),
        }
    }

    fn key_count(&self) -> u64 {
        self.keys.len()
    }

    fn key_at(&self, ordinal: u64) -> Result<&[u8], LookupError> {
        self.keys.key(ordinal).map_err(LookupError::new)
    }

    fn value_len_at(&self, ordinal: u64) -> Result<u64, LookupError> {
        self.keys.value_len(ordinal).map_err(LookupError::new)
    }

    fn lower_bound(&self, key: &[u8]) -> Result<u64, LookupError> {
        self.keys.lower_bound(key).map_err(LookupError::new)
    }

    fn local_dir(&self) -> Option<(PathBuf, u64)> {
        Some((self.dir.clone(), self.dir_inode))
    }
}
