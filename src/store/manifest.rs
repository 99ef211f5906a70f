//! The manifest of a published version (`manifest.json`): what the version
//! holds and where it came from. Written last, just before the publishing
//! rename, and read when the daemon restarts so that a published version is
//! served again without downloading anything.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{StoreError, io_err};

pub const MANIFEST_FILE: &str = "manifest.json";

/// The format of the manifests this code writes. Format 2 came with store
/// format 2 (see [`super::format`]); format 1 manifests describe the same
/// things and are still read, so that a version found before its manifest
/// was rewritten by the start-up migration is served as it is. A manifest
/// of a newer format is an error, never a reason to rebuild.
pub const MANIFEST_FORMAT: u32 = 2;
const OLDEST_MANIFEST_FORMAT: u32 = 1;
const MANIFEST_TMP: &str = "manifest.json.tmp";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub db: String,
    pub version: String,
    /// How the version appears in the source (for status pages).
    pub source_path: String,
    pub input: InputKind,
    pub num_partitions: u32,
    pub blocks: Vec<BlockInfo>,
    /// Distinct keys served.
    pub num_keys: u64,
    /// Records read from the input (including overwritten duplicates).
    pub num_records: u64,
    /// Bytes read from the source.
    pub source_bytes: u64,
    pub source_files: Vec<SourceFileInfo>,
    /// When the version was created on the source (newest file time), or
    /// loaded if the source gives no times; unix seconds.
    pub created_at: i64,
    /// When the load finished; unix seconds.
    pub loaded_at: i64,
    pub load_seconds: f64,
    /// The partitions built, when not all of them: a node of a cluster
    /// builds its own and asks peers for the others. Absent means every
    /// partition is here (older manifests never have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_partitions: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    SequenceFile,
    Sparkey,
    /// A version directory with no data files: served, with no keys.
    Empty,
}

/// One table of the version: a Sparkey log and hash index, or an
/// uncompressed SequenceFile served in place (see [`BlockKind`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockInfo {
    /// The partition whose records the table holds. For a SequenceFile in
    /// place, which holds records of any partition, the position of its
    /// file among the version's data files (which is a partition number,
    /// there being one partition per file).
    pub partition: u32,
    /// File stem: the log is `<name>.spl`, the index `<name>.spi`; a
    /// SequenceFile in place is `<name>.seq`.
    pub name: String,
    /// Live entries; for a SequenceFile in place, its records (including
    /// any a later duplicate overrides).
    pub entries: u64,
    /// The source file it was made from (Sparkey input, SequenceFile in
    /// place), if one.
    pub source_file: Option<String>,
    /// What the table's files are. Absent in manifests written before
    /// SequenceFiles were served in place, which only had Sparkey tables.
    #[serde(default)]
    pub kind: BlockKind,
}

/// The kinds of table of a version.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// `<name>.spl` and `<name>.spi`: values are found by key through the
    /// hash index, and by the address the key index records.
    #[default]
    Sparkey,
    /// `<name>.seq`: an uncompressed SequenceFile kept as downloaded, whose
    /// values are served as byte ranges of the file. It has no hash index:
    /// the key index records, for every key, the table's position, the byte
    /// offset of the value in the file and the value's length, and lookups
    /// by key search the key index.
    SequenceFile,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceFileInfo {
    pub name: String,
    pub size: u64,
    pub etag: Option<String>,
    /// Unix seconds.
    pub last_modified: Option<i64>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, StoreError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display())))?;
        if !(OLDEST_MANIFEST_FORMAT..=MANIFEST_FORMAT).contains(&manifest.format) {
            return Err(StoreError::NewerFormat {
                path: path.display().to_string(),
                found: manifest.format,
                known: MANIFEST_FORMAT,
            });
        }
        Ok(manifest)
    }

    /// Replaces the manifest of a published version durably and atomically
    /// (a temporary file, fsynced, renamed over it, the directory fsynced),
    /// for migrations that rewrite manifests in place. A crash leaves the
    /// old manifest or the new one, and at most the temporary file, which
    /// [`Manifest::remove_leftover`] removes.
    pub fn replace(&self, dir: &Path) -> Result<(), StoreError> {
        use std::io::Write;
        let tmp = dir.join(MANIFEST_TMP);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", tmp.display())))?;
        let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&tmp))?;
        let path = dir.join(MANIFEST_FILE);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        super::sync_dir(dir)
    }

    /// Removes what an interrupted [`Manifest::replace`] left in `dir`.
    pub fn remove_leftover(dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(MANIFEST_TMP);
        match std::fs::remove_file(&tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&tmp)(e)),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display())))?;
        std::fs::write(&path, text).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests written before blocks had a kind read as Sparkey tables;
    /// a block in place keeps its kind through a write and a read.
    #[test]
    fn blocks_without_a_kind_are_sparkey_tables() {
        let old =
            r#"{"partition": 3, "name": "part-00003-000", "entries": 7, "source_file": null}"#;
        let block: BlockInfo = serde_json::from_str(old).unwrap();
        assert_eq!(block.kind, BlockKind::Sparkey);
        assert_eq!(block.name, "part-00003-000");

        let in_place = BlockInfo {
            kind: BlockKind::SequenceFile,
            ..block
        };
        let text = serde_json::to_string(&in_place).unwrap();
        assert!(text.contains(r#""kind":"sequencefile""#), "{text}");
        assert_eq!(serde_json::from_str::<BlockInfo>(&text).unwrap(), in_place);
    }
}
