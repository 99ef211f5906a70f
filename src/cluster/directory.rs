//! The key directory of a partial version: every key of the version with
//! the length of its value, and no values.
//!
//! A node of a cluster holds only its partitions, which is enough for HTTP:
//! a request names its key, and the key's partition says which peers to
//! ask. A mount must also *list* every key in the order of `docs/NAMING.md`
//! and answer LOOKUP and `stat` for keys it does not hold. So once the
//! cluster agrees on a version, a node that runs a mount asks peers for the
//! keys of each partition it lacks (a sorted listing per partition, the
//! listing request below), merges them with its own keys, and writes
//! `directory.idx` beside the version's key index, in the key index format
//! without value locations. The version is switched in only once its
//! directory is complete, so a listing through the mount is never a subset
//! of the version; LOOKUP, `stat` and `ls` never touch the network, and only
//! a READ of a key held by peers does (see `cluster::peer_reads`).
//!
//! The listing request is an extension of sequins' proxy protocol:
//! `GET /<db>/?proxy=<version>&sequinsfs-listing=<partition>`, answered with
//! `Content-Type: application/x-sequinsfs-listing` (a sequins peer answers
//! the database's status page instead, which the content type tells apart).
//! The body is, per key in ascending order: the key's length (`u32`), its
//! value's length (`u64`), both little-endian, then the key. A listing is
//! hostile input: every length is checked against the bytes that arrived.
//!
//! The price: every node that runs a mount stores every key of a version
//! once (keys and value lengths, not values), and holds the keys of the
//! partitions it lacks in memory while it writes the directory.

use std::path::{Path, PathBuf};

use crate::catalog::{LookupError, ValueRef, Version, VersionData};
use crate::store::keyindex::{self, KeyIndex, MergeError, SortedRun};

/// The directory's file in a version's directory of the local store.
pub const FILE: &str = "directory.idx";
/// The query parameter of a listing request.
pub const LISTING_PARAM: &str = "sequinsfs-listing";
/// The content type of a listing.
pub const LISTING_CONTENT_TYPE: &str = "application/x-sequinsfs-listing";
/// Bytes before each key of a listing: key length and value length.
const ENTRY_HEAD: usize = 12;

/// A listing or directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A listing from a peer is malformed.
    #[error("listing of partition {partition} from {peer}: byte {offset}: {message}")]
    Listing {
        peer: String,
        partition: u32,
        offset: u64,
        message: String,
    },
    /// No peer could send the listing of a partition.
    #[error("listing of partition {partition}: {reason}")]
    Unavailable { partition: u32, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key {key:?} is listed twice")]
    Duplicate { key: String },
    #[error(transparent)]
    Index(#[from] keyindex::KeyIndexError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// The keys of `partition` that `version` holds, as a listing body (peer
/// side). A key belongs to a partition if the partition is its normal or
/// its alternate one (sequins routes some keys two ways); the merging side
/// keeps each key once.
pub fn encode_listing(version: &Version, partition: u32) -> Result<Vec<u8>, LookupError> {
    let keys = version.local_keys();
    let n = version.num_partitions();
    let mut body = Vec::new();
    for ordinal in 0..keys.key_count() {
        let key = keys.key_at(ordinal)?;
        let (normal, alternate) = crate::partition::partitions(key, n);
        if normal != partition && alternate != partition {
            continue;
        }
        let len = u32::try_from(key.len())
            .map_err(|_| LookupError::new(format!("key at ordinal {ordinal} is over 4 GiB")))?;
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&keys.value_len_at(ordinal)?.to_le_bytes());
        body.extend_from_slice(key);
    }
    Ok(body)
}

/// Parses a listing as its body arrives, chunk by chunk, into a sorted run.
pub struct ListingParser {
    peer: String,
    partition: u32,
    run: SortedRun,
    /// Bytes of an entry cut by a chunk boundary.
    carry: Vec<u8>,
    /// Bytes of the body before `carry`.
    consumed: u64,
}

impl ListingParser {
    pub fn new(peer: &str, partition: u32) -> Self {
        ListingParser {
            peer: peer.to_string(),
            partition,
            run: SortedRun::new(),
            carry: Vec::new(),
            consumed: 0,
        }
    }

    /// Takes the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), DirectoryError> {
        self.carry.extend_from_slice(chunk);
        let mut at = 0;
        while let Some(head) = self.carry.get(at..at + ENTRY_HEAD) {
            let key_len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
            let value_len = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
            let Some(key) = self
                .carry
                .get(at + ENTRY_HEAD..)
                .and_then(|rest| rest.get(..key_len))
            else {
                break;
            };
            self.run.put(key, value_len, 0, 0, 0);
            at += ENTRY_HEAD + key_len;
        }
        self.carry.drain(..at);
        self.consumed += at as u64;
        Ok(())
    }

    /// The keys of the listing, once the body ended: an entry cut short is
    /// an error naming where it starts.
    pub fn finish(self) -> Result<SortedRun, DirectoryError> {
        if !self.carry.is_empty() {
            let message = if self.carry.len() < ENTRY_HEAD {
                format!(
                    "the body ends inside an entry header ({} bytes)",
                    self.carry.len()
                )
            } else {
                let key_len = u32::from_le_bytes(self.carry[0..4].try_into().expect("4 bytes"));
                format!(
                    "an entry announces a {key_len}-byte key but only {} bytes follow",
                    self.carry.len() - ENTRY_HEAD
                )
            };
            return Err(DirectoryError::Listing {
                peer: self.peer,
                partition: self.partition,
                offset: self.consumed,
                message,
            });
        }
        Ok(self.run)
    }
}

/// Writes the directory of `version` into `dir` (its directory in the
/// local store): its own keys and those of `remote`, the listings of the
/// partitions it lacks. Written under a temporary name, synced, then
/// renamed, so `directory.idx` exists only when complete.
pub fn write(dir: &Path, version: &Version, mut remote: SortedRun) -> Result<u64, DirectoryError> {
    let keys = version.local_keys();
    for ordinal in 0..keys.key_count() {
        remote.put(keys.key_at(ordinal)?, keys.value_len_at(ordinal)?, 0, 0, 0);
    }
    // One origin: a key routed two ways may be listed by two partitions;
    // it is kept once.
    if let Err(dup) = remote.finish() {
        return Err(DirectoryError::Duplicate {
            key: String::from_utf8_lossy(&dup.key).into_owned(),
        });
    }
    let path = dir.join(FILE);
    let temporary = dir.join(format!("{FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DirectoryError::Io { path, source }
    };
    // Both cores: the merge is cut into independent slices.
    let count =
        keyindex::write_merged(&temporary, &[remote], 2, None, &|| false).map_err(|e| match e {
            MergeError::Io(source) => DirectoryError::Io {
                path: temporary.clone(),
                source,
            },
            MergeError::Duplicate(dup) => DirectoryError::Duplicate {
                key: String::from_utf8_lossy(&dup.key).into_owned(),
            },
            MergeError::Cancelled => DirectoryError::Io {
                path: temporary.clone(),
                source: std::io::Error::other("cancelled"),
            },
        })?;
    let file = std::fs::File::open(&temporary).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    let parent = std::fs::File::open(dir).map_err(io(dir))?;
    parent.sync_all().map_err(io(dir))?;
    Ok(count)
}

/// Opens the directory of the version stored in `dir`, if it has one.
pub fn open(dir: &Path) -> Result<Option<Directory>, DirectoryError> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Directory {
        index: KeyIndex::open(&path)?,
    }))
}

/// A directory as a version's key listing (see [`Version::keys`]). It has
/// no values: a value is read from this node's data or from a peer.
#[derive(Debug)]
pub struct Directory {
    index: KeyIndex,
}

impl Directory {
    fn no_values() -> LookupError {
        LookupError::new("the key directory holds no values")
    }
}

impl VersionData for Directory {
    fn locate(&self, _key: &[u8]) -> Result<Option<ValueRef>, LookupError> {
        Err(Directory::no_values())
    }

    fn locate_ordinal(&self, _ordinal: u64) -> Result<ValueRef, LookupError> {
        Err(Directory::no_values())
    }

    fn read_value<'a>(
        &'a self,
        _value: &ValueRef,
        _offset: u64,
        _len: usize,
        _scratch: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, LookupError> {
        Err(Directory::no_values())
    }

    fn key_count(&self) -> u64 {
        self.index.len()
    }

    fn key_at(&self, ordinal: u64) -> Result<&[u8], LookupError> {
        self.index.key(ordinal).map_err(LookupError::new)
    }

    fn value_len_at(&self, ordinal: u64) -> Result<u64, LookupError> {
        self.index.value_len(ordinal).map_err(LookupError::new)
    }

    fn lower_bound(&self, key: &[u8]) -> Result<u64, LookupError> {
        self.index.lower_bound(key).map_err(LookupError::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::InMemoryVersionData;
    use std::time::SystemTime;

    fn listing(entries: &[(&[u8], u64)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, len) in entries {
            body.extend_from_slice(&(key.len() as u32).to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(key);
        }
        body
    }

    #[test]
    fn a_listing_split_anywhere_parses_the_same() {
        let body = listing(&[(b"apple", 3), (b"", 0), (b"pear", 1 << 40)]);
        for cut in 0..=body.len() {
            let mut parser = ListingParser::new("peer", 1);
            parser.feed(&body[..cut]).unwrap();
            parser.feed(&body[cut..]).unwrap();
            assert_eq!(parser.finish().unwrap().len(), 3, "cut at {cut}");
        }
    }

    #[test]
    fn a_truncated_listing_names_the_entry_offset() {
        let body = listing(&[(b"apple", 3), (b"pear", 4)]);
        let first = ENTRY_HEAD + 5;
        for cut in first + 1..body.len() {
            let mut parser = ListingParser::new("10.0.0.1:9599", 7);
            parser.feed(&body[..cut]).unwrap();
            let Err(err) = parser.finish() else {
                panic!("a listing cut at {cut} parsed");
            };
            let err = err.to_string();
            assert!(
                err.starts_with(&format!(
                    "listing of partition 7 from 10.0.0.1:9599: byte {first}:"
                )),
                "{err}"
            );
        }
        // A hostile key length costs nothing until bytes arrive.
        let mut parser = ListingParser::new("peer", 0);
        parser.feed(&u32::MAX.to_le_bytes()).unwrap();
        parser.feed(&[0; 8]).unwrap();
        assert!(parser.finish().is_err());
    }

    #[test]
    fn the_directory_merges_local_and_listed_keys_once() {
        let tmp = tempfile::tempdir().unwrap();
        let version = InMemoryVersionData::version(
            "db",
            "v1",
            SystemTime::UNIX_EPOCH,
            [
                (b"b".to_vec(), b"22".to_vec()),
                (b"d".to_vec(), b"4444".to_vec()),
            ],
        );
        let mut parser = ListingParser::new("peer", 0);
        // "d" also listed by a peer (a key routed two ways): kept once.
        parser
            .feed(&listing(&[(b"a", 1), (b"c", 3), (b"d", 4)]))
            .unwrap();
        let count = write(tmp.path(), &version, parser.finish().unwrap()).unwrap();
        assert_eq!(count, 4);
        let directory = open(tmp.path()).unwrap().unwrap();
        let keys: Vec<_> = (0..directory.key_count())
            .map(|i| {
                (
                    directory.key_at(i).unwrap().to_vec(),
                    directory.value_len_at(i).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), 1),
                (b"b".to_vec(), 2),
                (b"c".to_vec(), 3),
                (b"d".to_vec(), 4)
            ]
        );
        assert!(!tmp.path().join(format!("{FILE}.tmp")).exists());
        assert!(directory.locate(b"a").is_err());
    }
}
