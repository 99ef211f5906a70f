//! A published version opened for serving: its Sparkey blocks and its key
//! index, all memory-mapped. This is what every lookup of the mount and the
//! HTTP sidecar ends in.
//!
//! A lookup hashes the key with sequins' partition function, probes that
//! partition's block(s), then the alternate partition's where sequins would
//! (keys near the hash wrap-around written by Cascading). Uncompressed values
//! are returned as slices of the mapping, without a copy.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::catalog::{LookupError, VersionData};
use crate::format::sparkey;
use crate::partition;

use super::StoreError;
use super::keyindex::KeyIndex;
use super::manifest::{MANIFEST_FORMAT, Manifest};

pub struct LocalVersion {
    dir: PathBuf,
    /// Inode of `dir` when opened; see `VersionData::local_dir`.
    dir_inode: u64,
    manifest: Manifest,
    /// Blocks of each partition, indexed by partition number.
    partitions: Vec<Vec<sparkey::Reader>>,
    keys: KeyIndex,
}

impl LocalVersion {
    /// Opens a published version directory, validating every file's header.
    pub fn open(dir: &Path) -> Result<LocalVersion, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let dir_inode = std::fs::metadata(dir).map_err(super::io_err(dir))?.ino();
        let manifest = Manifest::read(dir)?;
        debug_assert_eq!(manifest.format, MANIFEST_FORMAT);
        let mut partitions: Vec<Vec<sparkey::Reader>> =
            (0..manifest.num_partitions).map(|_| Vec::new()).collect();
        for block in &manifest.blocks {
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
            let log = dir.join(format!("{}.spl", block.name));
            let index = dir.join(format!("{}.spi", block.name));
            let reader = sparkey::Reader::open(&log, &index)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            slot.push(reader);
        }
        let keys = KeyIndex::open(&dir.join("keys.idx"))
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
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
            partitions,
            keys,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// When the version was created on the source.
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.manifest.created_at.max(0) as u64)
    }

    fn probe(&self, partition: u32, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, LookupError> {
        let Some(blocks) = self.partitions.get(partition as usize) else {
            return Ok(None);
        };
        for block in blocks {
            if let Some(value) = block.get(key).map_err(LookupError::new)? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }
}

impl VersionData for LocalVersion {
    fn get(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, LookupError> {
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
