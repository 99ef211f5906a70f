//! The sorted key index of a version (`keys.idx`): every key in ascending
//! byte order with the length of its value.
//!
//! Sparkey's hash index answers "what is the value of K" but cannot list keys
//! in order or say whether any key starts with a prefix. The mount needs both
//! (directory listings with stable offsets, prefix directories), so every
//! version gets this second, ordered index at load time. Lookups by position
//! and binary search run straight on the memory map.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0   magic "SQFSKEYS"
//! 8   format version (u32) = 1, reserved (u32) = 0
//! 16  key count N (u64)
//! 24  key bytes total B (u64)
//! 32  key offsets: N+1 x u64, offsets[i]..offsets[i+1] is key i within the key bytes
//! ..  value lengths: N x u64
//! ..  key bytes: B bytes
//! ```
//!
//! The file size must equal `32 + 8(N+1) + 8N + B` exactly; every offset is
//! checked when used, so a damaged file yields an error, never a bad read.
//!
//! Building: each partition produces a sorted run ([`SortedRun`]) in memory,
//! and [`write_merged`] merges the runs of all partitions into the file in one
//! streaming pass. A key present in two runs is reported as an error
//! (a key belongs to exactly one partition).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use memmap2::Mmap;

const MAGIC: &[u8; 8] = b"SQFSKEYS";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 32;

/// An error in a key index file, naming the file and offset.
#[derive(Debug, thiserror::Error)]
#[error("{file}: byte {offset}: {message}")]
pub struct KeyIndexError {
    pub file: String,
    pub offset: u64,
    pub message: String,
}

/// The keys of one partition: collected in write order (puts and deletes,
/// duplicates allowed), then [`SortedRun::finish`]ed into sorted unique keys.
/// Each key remembers its origin (a block number) so that a key stored in two
/// blocks can be reported by name.
#[derive(Default)]
pub struct SortedRun {
    bytes: Vec<u8>,
    entries: Vec<RunEntry>,
}

#[derive(Clone, Copy)]
struct RunEntry {
    start: u64,
    len: u32,
    origin: u32,
    /// `DELETED` for a delete.
    value_len: u64,
}

const DELETED: u64 = u64::MAX;

/// A key found in two different blocks of one partition.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyInTwoBlocks {
    pub key: Vec<u8>,
    pub first_origin: u32,
    pub second_origin: u32,
}

impl SortedRun {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a put, in write order.
    pub fn put(&mut self, key: &[u8], value_len: u64, origin: u32) {
        self.push(key, value_len.min(DELETED - 1), origin);
    }

    /// Records a delete, in write order.
    pub fn delete(&mut self, key: &[u8], origin: u32) {
        self.push(key, DELETED, origin);
    }

    fn push(&mut self, key: &[u8], value_len: u64, origin: u32) {
        let start = self.bytes.len() as u64;
        self.bytes.extend_from_slice(key);
        self.entries.push(RunEntry {
            start,
            len: key.len() as u32,
            origin,
            value_len,
        });
    }

    /// Moves all of `other`'s entries into this run, marked as `origin`.
    pub fn absorb(&mut self, other: SortedRun, origin: u32) {
        let base = self.bytes.len() as u64;
        self.bytes.extend_from_slice(&other.bytes);
        self.entries
            .extend(other.entries.into_iter().map(|e| RunEntry {
                start: e.start + base,
                origin,
                ..e
            }));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, i: usize) -> &[u8] {
        let e = &self.entries[i];
        &self.bytes[e.start as usize..e.start as usize + e.len as usize]
    }

    /// Sorts the keys and keeps, per key, its last write (dropping keys whose
    /// last write is a delete): the same "later write wins" rule as Sparkey.
    /// A key written by two different origins is an error.
    pub fn finish(&mut self) -> Result<(), KeyInTwoBlocks> {
        let bytes = &self.bytes;
        let key = |e: &RunEntry| &bytes[e.start as usize..e.start as usize + e.len as usize];
        // Stable, so equal keys stay in write order and the last one wins.
        self.entries.sort_by(|a, b| key(a).cmp(key(b)));
        let mut kept: Vec<RunEntry> = Vec::with_capacity(self.entries.len());
        let mut i = 0;
        while i < self.entries.len() {
            let mut j = i + 1;
            while j < self.entries.len() && key(&self.entries[j]) == key(&self.entries[i]) {
                if self.entries[j].origin != self.entries[i].origin {
                    return Err(KeyInTwoBlocks {
                        key: key(&self.entries[i]).to_vec(),
                        first_origin: self.entries[i].origin,
                        second_origin: self.entries[j].origin,
                    });
                }
                j += 1;
            }
            let last = self.entries[j - 1];
            if last.value_len != DELETED {
                kept.push(last);
            }
            i = j;
        }
        self.entries = kept;
        Ok(())
    }

    fn key_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.len as u64).sum()
    }
}

/// A key found in more than one run while merging.
#[derive(Debug)]
pub struct DuplicateKey {
    pub key: Vec<u8>,
}

/// Merges sorted runs into a key index file at `path` (which is created).
/// Returns the number of keys, or the first key that appears in two runs.
pub fn write_merged(path: &Path, runs: &[SortedRun]) -> std::io::Result<Result<u64, DuplicateKey>> {
    let count: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let total_bytes: u64 = runs.iter().map(|r| r.key_bytes()).sum();

    // Merge order first (a heap of one cursor per run), then write the three
    // sections from it. The order costs 8 bytes per key.
    struct Cursor<'a> {
        run: &'a SortedRun,
        run_index: u32,
        pos: usize,
    }
    impl PartialEq for Cursor<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other) == Ordering::Equal
        }
    }
    impl Eq for Cursor<'_> {}
    impl PartialOrd for Cursor<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Cursor<'_> {
        fn cmp(&self, other: &Self) -> Ordering {
            // Reversed: BinaryHeap is a max-heap and we want the smallest key.
            other.run.key(other.pos).cmp(self.run.key(self.pos))
        }
    }
    let mut heap: BinaryHeap<Cursor<'_>> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, run)| Cursor {
            run,
            run_index: i as u32,
            pos: 0,
        })
        .collect();
    let mut order: Vec<(u32, u32)> = Vec::with_capacity(count as usize);
    let mut previous: Option<(u32, u32)> = None;
    while let Some(mut cursor) = heap.pop() {
        let here = (cursor.run_index, cursor.pos as u32);
        if let Some((pr, pp)) = previous {
            let prev_key = runs[pr as usize].key(pp as usize);
            if prev_key == cursor.run.key(cursor.pos) {
                return Ok(Err(DuplicateKey {
                    key: prev_key.to_vec(),
                }));
            }
        }
        order.push(here);
        previous = Some(here);
        cursor.pos += 1;
        if cursor.pos < cursor.run.len() {
            heap.push(cursor);
        }
    }

    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&count.to_le_bytes())?;
    out.write_all(&total_bytes.to_le_bytes())?;
    let mut offset = 0u64;
    out.write_all(&offset.to_le_bytes())?;
    for &(r, p) in &order {
        offset += runs[r as usize].entries[p as usize].len as u64;
        out.write_all(&offset.to_le_bytes())?;
    }
    for &(r, p) in &order {
        out.write_all(&runs[r as usize].entries[p as usize].value_len.to_le_bytes())?;
    }
    for &(r, p) in &order {
        out.write_all(runs[r as usize].key(p as usize))?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(Ok(count))
}

/// A memory-mapped key index.
#[derive(Debug)]
pub struct KeyIndex {
    map: Mmap,
    name: String,
    count: u64,
    offsets_at: usize,
    lens_at: usize,
    keys_at: usize,
    keys_len: u64,
}

impl KeyIndex {
    /// Maps and validates a key index file.
    pub fn open(path: &Path) -> Result<KeyIndex, KeyIndexError> {
        let name = path.display().to_string();
        let err = |offset: u64, message: String| KeyIndexError {
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
        if map.len() < HEADER_LEN as usize {
            return Err(err(
                0,
                format!("truncated header: {} of {HEADER_LEN} bytes", map.len()),
            ));
        }
        if &map[0..8] != MAGIC {
            return Err(err(0, "not a key index (bad magic)".into()));
        }
        let version = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(err(8, format!("unsupported key index version {version}")));
        }
        let count = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        let keys_len = u64::from_le_bytes(map[24..32].try_into().expect("8 bytes"));
        let expected = count
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|o| o.checked_add(count.checked_mul(8)?))
            .and_then(|s| s.checked_add(keys_len))
            .and_then(|s| s.checked_add(HEADER_LEN));
        if expected != Some(map.len() as u64) {
            return Err(err(
                16,
                format!(
                    "size mismatch: {count} keys of {keys_len} bytes do not fit a {}-byte file",
                    map.len()
                ),
            ));
        }
        let offsets_at = HEADER_LEN as usize;
        let lens_at = offsets_at + 8 * (count as usize + 1);
        let keys_at = lens_at + 8 * count as usize;
        Ok(KeyIndex {
            map,
            name,
            count,
            offsets_at,
            lens_at,
            keys_at,
            keys_len,
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn u64_at(&self, at: usize) -> u64 {
        // In bounds: callers pass positions inside the sections sized in open().
        u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The key at `ordinal`.
    pub fn key(&self, ordinal: u64) -> Result<&[u8], KeyIndexError> {
        if ordinal >= self.count {
            return Err(self.error(0, format!("ordinal {ordinal} out of range")));
        }
        let at = self.offsets_at + 8 * ordinal as usize;
        let start = self.u64_at(at);
        let end = self.u64_at(at + 8);
        if start > end || end > self.keys_len {
            return Err(self.error(
                at as u64,
                format!(
                    "key {ordinal} spans {start}..{end} outside {} key bytes",
                    self.keys_len
                ),
            ));
        }
        Ok(&self.map[self.keys_at + start as usize..self.keys_at + end as usize])
    }

    /// The value length of the key at `ordinal`.
    pub fn value_len(&self, ordinal: u64) -> Result<u64, KeyIndexError> {
        if ordinal >= self.count {
            return Err(self.error(0, format!("ordinal {ordinal} out of range")));
        }
        Ok(self.u64_at(self.lens_at + 8 * ordinal as usize))
    }

    /// The first ordinal whose key is `>= key`.
    pub fn lower_bound(&self, key: &[u8]) -> Result<u64, KeyIndexError> {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid)? < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The ordinal of exactly `key`, if present.
    pub fn find(&self, key: &[u8]) -> Result<Option<u64>, KeyIndexError> {
        let at = self.lower_bound(key)?;
        Ok((at < self.count && self.key(at)? == key).then_some(at))
    }

    fn error(&self, offset: u64, message: String) -> KeyIndexError {
        KeyIndexError {
            file: self.name.clone(),
            offset,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(dir: &Path, partitions: &[&[&[u8]]]) -> Result<KeyIndex, DuplicateKey> {
        let mut runs = Vec::new();
        for (p, keys) in partitions.iter().enumerate() {
            let mut run = SortedRun::new();
            for k in keys.iter() {
                run.put(k, k.len() as u64 * 10, p as u32);
            }
            run.finish().expect("no key in two blocks");
            runs.push(run);
        }
        let path = dir.join("keys.idx");
        write_merged(&path, &runs).unwrap()?;
        Ok(KeyIndex::open(&path).unwrap())
    }

    #[test]
    fn merges_runs_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let idx = build(
            dir.path(),
            &[&[b"b", b"a/x", b"\xff"], &[], &[b"", b"a", b"a/y"]],
        )
        .unwrap();
        let keys: Vec<&[u8]> = (0..idx.len()).map(|i| idx.key(i).unwrap()).collect();
        assert_eq!(keys, vec![&b""[..], b"a", b"a/x", b"a/y", b"b", b"\xff"]);
        assert_eq!(idx.value_len(2).unwrap(), 30);
        assert_eq!(idx.lower_bound(b"a/").unwrap(), 2);
        assert_eq!(idx.lower_bound(b"c").unwrap(), 5);
        assert_eq!(idx.lower_bound(b"\xff\xff").unwrap(), 6);
        assert_eq!(idx.find(b"a/y").unwrap(), Some(3));
        assert_eq!(idx.find(b"a/z").unwrap(), None);
        assert!(idx.key(6).is_err());
    }

    #[test]
    fn empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let idx = build(dir.path(), &[]).unwrap();
        assert!(idx.is_empty());
        assert_eq!(idx.lower_bound(b"x").unwrap(), 0);
    }

    #[test]
    fn duplicate_across_runs_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dup = build(dir.path(), &[&[b"a", b"k"], &[b"k"]]).err().unwrap();
        assert_eq!(dup.key, b"k");
    }

    #[test]
    fn later_writes_win_within_a_block() {
        let mut run = SortedRun::new();
        run.put(b"k", 1, 0);
        run.put(b"gone", 1, 0);
        run.put(b"k", 7, 0);
        run.delete(b"gone", 0);
        run.delete(b"never", 0);
        run.put(b"back", 1, 0);
        run.delete(b"back", 0);
        run.put(b"back", 3, 0);
        run.finish().unwrap();
        let got: Vec<(&[u8], u64)> = (0..run.len())
            .map(|i| (run.key(i), run.entries[i].value_len))
            .collect();
        assert_eq!(got, vec![(&b"back"[..], 3), (b"k", 7)]);
    }

    #[test]
    fn key_in_two_blocks_is_reported() {
        let mut run = SortedRun::new();
        run.put(b"k", 1, 4);
        run.put(b"j", 1, 4);
        run.put(b"k", 1, 5);
        assert_eq!(
            run.finish().unwrap_err(),
            KeyInTwoBlocks {
                key: b"k".to_vec(),
                first_origin: 4,
                second_origin: 5
            }
        );
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), &[&[b"alpha", b"beta"]]).unwrap();
        let path = dir.path().join("keys.idx");
        let good = std::fs::read(&path).unwrap();

        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(
            KeyIndex::open(&path)
                .unwrap_err()
                .message
                .contains("size mismatch")
        );

        let mut bad = good.clone();
        bad[0] = b'X';
        std::fs::write(&path, &bad).unwrap();
        assert!(KeyIndex::open(&path).unwrap_err().message.contains("magic"));

        // An offset pointing past the key bytes is caught on access.
        let mut bad = good.clone();
        bad[40..48].copy_from_slice(&1000u64.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let idx = KeyIndex::open(&path).unwrap();
        let e = idx.key(0).unwrap_err();
        assert_eq!(e.offset, 32);
        assert!(idx.lower_bound(b"b").is_err());

        std::fs::write(&path, b"short").unwrap();
        assert!(KeyIndex::open(&path).is_err());
    }
}
