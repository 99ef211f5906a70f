//! The sorted key index of a version (`keys.idx`): every key in ascending
//! byte order with the length of its value and where the value is.
//!
//! Sparkey's hash index answers "what is the value of K" but cannot list keys
//! in order or say whether any key starts with a prefix. The mount needs both
//! (directory listings with stable offsets, prefix directories), so every
//! version gets this second, ordered index at load time. Lookups by position
//! and binary search run straight on the memory map. Since format 2 it also
//! records, per key, which table of the version holds the value and the
//! value's address in that table's log, so a read of the file at a key's
//! position goes straight to the value without looking the key up again.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0   magic "SQFSKEYS"
//! 8   format version (u32) = 2, flags (u32): bit 0 = locations present
//! 16  key count N (u64)
//! 24  key bytes total B (u64)
//! 32  key offsets: N+1 x u64, offsets[i]..offsets[i+1] is key i within the key bytes
//! ..  value lengths: N x u64
//! ..  if locations: value addresses N x u64 (Sparkey index addresses, or
//!     for a SequenceFile in place the byte offset of the value in the file),
//!     then tables N x u32 (positions in the manifest's block list)
//! ..  key bytes: B bytes
//! ```
//!
//! Format 1 (written by the first releases) is the same without flags and
//! locations, and is still read: lookups by position then find the value
//! through the hash index. The file size must equal the layout's size
//! exactly; every offset is checked when used, so a damaged file yields an
//! error, never a bad read.
//!
//! Building: each partition produces a sorted run ([`SortedRun`]) in memory,
//! and [`write_merged`] merges the runs of all partitions into the file: the
//! key range is split so that several threads merge and write disjoint parts
//! of the file at once, each in one streaming pass. A key present in two
//! runs is reported as an error (a key belongs to exactly one partition).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::Mmap;

const MAGIC: &[u8; 8] = b"SQFSKEYS";
/// The format this code writes; it reads this one and format 1.
pub const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: u64 = 32;
/// Header flag: the file has the location sections.
const FLAG_LOCATIONS: u32 = 1;

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
///
/// A run whose keys arrive in strictly ascending order, as a Hadoop reducer
/// writes each of its files, is noticed as it is filled (one comparison
/// with the previous key per put), and finishing it costs nothing.
#[derive(Default)]
pub struct SortedRun {
    bytes: Vec<u8>,
    entries: Vec<RunEntry>,
    /// Some entry is a delete, or not strictly after the entry before it:
    /// [`SortedRun::finish`] has to sort.
    unordered: bool,
}

#[derive(Clone, Copy)]
struct RunEntry {
    start: u64,
    /// `DELETED` for a delete.
    value_len: u64,
    /// Where the writer put the entry (see [`Locate`]).
    position: u64,
    len: u32,
    origin: u32,
    ordinal: u32,
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

    /// Records a put, in write order: `origin` is the table it was written
    /// to, and `position` and `ordinal` where in that table (see [`Locate`]).
    pub fn put(&mut self, key: &[u8], value_len: u64, origin: u32, position: u64, ordinal: u32) {
        self.push(key, value_len.min(DELETED - 1), origin, position, ordinal);
    }

    /// Records a delete, in write order.
    pub fn delete(&mut self, key: &[u8], origin: u32) {
        self.unordered = true;
        self.push(key, DELETED, origin, 0, 0);
    }

    fn push(&mut self, key: &[u8], value_len: u64, origin: u32, position: u64, ordinal: u32) {
        if !self.unordered
            && let Some(last) = self.entries.last()
        {
            self.unordered = key <= self.key_of(last);
        }
        let start = self.bytes.len() as u64;
        self.bytes.extend_from_slice(key);
        self.entries.push(RunEntry {
            start,
            value_len,
            position,
            len: key.len() as u32,
            origin,
            ordinal,
        });
    }

    /// Moves all of `other`'s entries into this run, marked as `origin`.
    pub fn absorb(&mut self, other: SortedRun, origin: u32) {
        let follows = match (self.entries.last(), other.entries.first()) {
            (Some(last), Some(first)) => other.key_of(first) > self.key_of(last),
            _ => true,
        };
        self.unordered |= other.unordered || !follows;
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

    /// The largest position and the largest ordinal any entry recorded (a
    /// bound for checking that every location fits).
    pub fn largest_position(&self) -> (u64, u32) {
        self.entries
            .iter()
            .fold((0, 0), |(p, o), e| (p.max(e.position), o.max(e.ordinal)))
    }

    fn key(&self, i: usize) -> &[u8] {
        self.key_of(&self.entries[i])
    }

    fn key_of(&self, e: &RunEntry) -> &[u8] {
        &self.bytes[e.start as usize..e.start as usize + e.len as usize]
    }

    /// Sorts the keys and keeps, per key, its last write (dropping keys whose
    /// last write is a delete): the same "later write wins" rule as Sparkey.
    /// A key written by two different origins is an error.
    ///
    /// Keys of one dataset often share a long prefix (`user:000…`), which
    /// makes every byte comparison walk that prefix first. So the sort key is
    /// the 8 bytes *after* the prefix common to all keys of the run, as one
    /// integer; whole keys are compared only when those 8 bytes tie.
    pub fn finish(&mut self) -> Result<(), KeyInTwoBlocks> {
        if !self.unordered {
            return Ok(());
        }
        let bytes = &self.bytes;
        let key = |e: &RunEntry| &bytes[e.start as usize..e.start as usize + e.len as usize];
        let skip = common_prefix_len(self.entries.iter().map(key));
        // (prefix after `skip`, write position): the position makes every
        // sort key distinct, so an unstable sort keeps equal keys in write
        // order and the last one wins below.
        let mut order: Vec<(u64, usize)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (prefix_after(key(e), skip), i))
            .collect();
        let entries = &self.entries;
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| key(&entries[a.1]).cmp(key(&entries[b.1])))
                .then(a.1.cmp(&b.1))
        });
        let mut kept: Vec<RunEntry> = Vec::with_capacity(order.len());
        let mut i = 0;
        while i < order.len() {
            let first = &entries[order[i].1];
            let mut j = i + 1;
            while j < order.len()
                && order[j].0 == order[i].0
                && key(&entries[order[j].1]) == key(first)
            {
                let other = &entries[order[j].1];
                if other.origin != first.origin {
                    return Err(KeyInTwoBlocks {
                        key: key(first).to_vec(),
                        first_origin: first.origin,
                        second_origin: other.origin,
                    });
                }
                j += 1;
            }
            let last = entries[order[j - 1].1];
            if last.value_len != DELETED {
                kept.push(last);
            }
            i = j;
        }
        self.entries = kept;
        self.unordered = false;
        Ok(())
    }

    fn key_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.len as u64).sum()
    }

    /// Key bytes of the entries in `range`.
    fn key_bytes_in(&self, range: std::ops::Range<usize>) -> u64 {
        self.entries
            .get(range)
            .unwrap_or_default()
            .iter()
            .map(|e| e.len as u64)
            .sum()
    }
}

/// Length of the prefix shared by every key (0 for no keys).
fn common_prefix_len<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(first) = keys.next() else {
        return 0;
    };
    let mut len = first.len();
    for key in keys {
        len = shared_len(&first[..len], key);
        if len == 0 {
            break;
        }
    }
    len
}

fn shared_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The 8 key bytes after `skip` as a big-endian integer, zero-padded, so
/// that integer order agrees with byte order wherever the integers differ.
#[inline]
fn prefix_after(key: &[u8], skip: usize) -> u64 {
    let rest = key.get(skip..).unwrap_or_default();
    let mut word = [0u8; 8];
    let n = rest.len().min(8);
    word[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(word)
}

/// A key found in more than one run while merging.
#[derive(Debug)]
pub struct DuplicateKey {
    pub key: Vec<u8>,
}

/// Why [`write_merged`] did not write a key index.
#[derive(Debug)]
pub enum MergeError {
    Io(std::io::Error),
    /// A key is in two runs.
    Duplicate(DuplicateKey),
    /// The caller's cancellation check said stop.
    Cancelled,
}

impl From<std::io::Error> for MergeError {
    fn from(e: std::io::Error) -> Self {
        MergeError::Io(e)
    }
}

/// Why [`KeyIndex::write_with_locations`] did not write an index.
#[derive(Debug, thiserror::Error)]
pub enum WithLocationsError<E> {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Locate(E),
}

/// Keys merged between two calls of the cancellation check: often enough
/// that a cancelled merge stops within milliseconds.
const KEYS_PER_CANCEL_CHECK: u64 = 1 << 16;

/// Turns what a run recorded for a put (origin, position, ordinal) into
/// the value's location: (table, index address). `None` writes a key index
/// without locations (its reader then finds values by key).
pub type Locate<'a> = Option<&'a (dyn Fn(u32, u64, u32) -> (u32, u64) + Sync)>;

/// Inputs below this many keys are merged by one thread: splitting costs
/// more than it saves.
const MIN_KEYS_PER_PART: u64 = 1 << 16;

/// Merges sorted runs into a key index file at `path` (which is created),
/// using up to `parts` threads. Returns the number of keys, or the first key
/// that appears in two runs. The file is written but not fsynced: the store
/// fsyncs every file of a version before publishing it.
///
/// The key range is cut into `parts` slices at keys taken from the largest
/// run; every run is split at the same keys by binary search, so each slice
/// is an independent merge whose keys, key bytes and therefore file
/// positions are known in advance. Each thread writes its slice of all
/// three sections in place (`pwrite`), in one pass. Equal keys always land
/// in the same slice, so duplicates are still found.
pub fn write_merged(
    path: &Path,
    runs: &[SortedRun],
    parts: usize,
    locate: Locate<'_>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<u64, MergeError> {
    let count: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let parts = parts.clamp(1, (count / MIN_KEYS_PER_PART).max(1) as usize);
    write_merged_in_parts(path, runs, parts, locate, cancelled)
}

/// [`write_merged`] for finished runs that may share keys, where the entry
/// of the later run wins (the files of a version served in place, in file
/// order). Runs that share no key, the usual case (a Hadoop job writes each
/// key to one file), are merged as they are. When the merge meets a key in
/// two runs, the runs are regrouped by the key's partition (sequins' hash;
/// any function of the key would do), so that all entries of a key meet in
/// one group in run order, each group is finished (sorted, the last entry
/// of a key kept) on its own thread, and the groups,
/// which now share no key, are merged.
pub fn write_merged_later_wins(
    path: &Path,
    runs: Vec<SortedRun>,
    parts: usize,
    locate: Locate<'_>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<u64, MergeError> {
    match write_merged(path, &runs, parts, locate, cancelled) {
        Err(MergeError::Duplicate(_)) => {}
        done => return done,
    }
    let groups = parts.max(1) as u32;
    let mut regrouped: Vec<SortedRun> = (0..groups).map(|_| SortedRun::new()).collect();
    for run in &runs {
        if cancelled() {
            return Err(MergeError::Cancelled);
        }
        for e in &run.entries {
            let key = run.key_of(e);
            // One origin for all: a key in two runs is not an error here.
            regrouped[crate::partition::partition(key, groups) as usize].push(
                key,
                e.value_len,
                0,
                e.position,
                e.ordinal,
            );
        }
    }
    drop(runs);
    std::thread::scope(|scope| {
        for run in regrouped.iter_mut() {
            scope.spawn(move || run.finish().expect("one origin cannot conflict"));
        }
    });
    write_merged(path, &regrouped, parts, locate, cancelled)
}

/// [`write_merged`] cut into exactly `parts` slices (at least one), however
/// few keys there are.
fn write_merged_in_parts(
    path: &Path,
    runs: &[SortedRun],
    parts: usize,
    locate: Locate<'_>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<u64, MergeError> {
    let parts = parts.max(1);
    let count: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let total_bytes: u64 = runs.iter().map(|r| r.key_bytes()).sum();
    let layout = Layout::new(count, total_bytes, locate.is_some());
    let skip = merge_prefix_len(runs);

    // Cut points: parts-1 keys of the largest run, and where each run splits.
    let largest = runs
        .iter()
        .filter(|r| !r.is_empty())
        .max_by_key(|r| r.len());
    let splitters: Vec<&[u8]> = match largest {
        Some(run) => (1..parts).map(|i| run.key(run.len() * i / parts)).collect(),
        None => Vec::new(),
    };
    // With no keys at all there is nothing to split: one (empty) slice.
    let parts = splitters.len() + 1;
    let cuts: Vec<Vec<usize>> = runs
        .iter()
        .map(|run| {
            let mut at = vec![0];
            at.extend(
                splitters
                    .iter()
                    .map(|s| run.entries.partition_point(|e| run.key_of(e) < *s)),
            );
            at.push(run.len());
            at
        })
        .collect();
    let mut slices = Vec::with_capacity(parts);
    let (mut first_ordinal, mut first_byte) = (0u64, 0u64);
    for part in 0..parts {
        let ranges: Vec<std::ops::Range<usize>> =
            cuts.iter().map(|c| c[part]..c[part + 1]).collect();
        let keys: u64 = ranges.iter().map(|r| r.len() as u64).sum();
        let bytes: u64 = runs
            .iter()
            .zip(&ranges)
            .map(|(run, r)| run.key_bytes_in(r.clone()))
            .sum();
        slices.push(Slice {
            ranges,
            first_ordinal,
            first_byte,
        });
        first_ordinal += keys;
        first_byte += bytes;
    }

    let file = File::create(path)?;
    file.set_len(layout.file_len)?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize + 8);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if locate.is_some() { FLAG_LOCATIONS } else { 0 };
    header.extend_from_slice(&flags.to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&total_bytes.to_le_bytes());
    // offsets[0]; every slice writes the offsets that end its keys.
    header.extend_from_slice(&0u64.to_le_bytes());
    file.write_all_at(&header, 0)?;

    let results: Vec<Result<(), MergeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = slices
            .iter()
            .skip(1)
            .map(|slice| {
                scope.spawn(|| merge_slice(&file, &layout, runs, slice, skip, locate, cancelled))
            })
            .collect();
        let mut results = vec![match slices.first() {
            Some(slice) => merge_slice(&file, &layout, runs, slice, skip, locate, cancelled),
            None => Ok(()),
        }];
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|_| {
                Err(MergeError::Io(std::io::Error::other(
                    "key index merge thread panicked",
                )))
            }));
        }
        results
    });
    // A duplicate or an I/O error says more than a cancellation another
    // slice saw because of it.
    let mut cancelled_seen = false;
    for result in results {
        match result {
            Ok(()) => {}
            Err(MergeError::Cancelled) => cancelled_seen = true,
            Err(e) => return Err(e),
        }
    }
    if cancelled_seen {
        return Err(MergeError::Cancelled);
    }
    Ok(count)
}

/// Where the sections of a key index of `count` keys and `bytes` key bytes
/// start, with or without locations. `None` when the sizes overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    offsets_at: u64,
    lens_at: u64,
    /// Where the addresses and tables start (equal to `keys_at` without
    /// locations).
    addresses_at: u64,
    tables_at: u64,
    keys_at: u64,
    file_len: u64,
}

impl Layout {
    fn new(count: u64, bytes: u64, locations: bool) -> Layout {
        Self::checked(count, bytes, locations).expect("key index sizes fit in 64 bits")
    }

    fn checked(count: u64, bytes: u64, locations: bool) -> Option<Layout> {
        let offsets_at = HEADER_LEN;
        let lens_at = offsets_at.checked_add(count.checked_add(1)?.checked_mul(8)?)?;
        let addresses_at = lens_at.checked_add(count.checked_mul(8)?)?;
        let (tables_at, keys_at) = if locations {
            let tables_at = addresses_at.checked_add(count.checked_mul(8)?)?;
            (tables_at, tables_at.checked_add(count.checked_mul(4)?)?)
        } else {
            (addresses_at, addresses_at)
        };
        Some(Layout {
            offsets_at,
            lens_at,
            addresses_at,
            tables_at,
            keys_at,
            file_len: keys_at.checked_add(bytes)?,
        })
    }
}

/// One independent part of a merge: a range of every run, and where its
/// first key goes.
struct Slice {
    ranges: Vec<std::ops::Range<usize>>,
    first_ordinal: u64,
    first_byte: u64,
}

/// Length of the prefix shared by every key of every (sorted) run: a run's
/// keys all share its first and last key's common prefix.
fn merge_prefix_len(runs: &[SortedRun]) -> usize {
    let mut nonempty = runs.iter().filter(|r| !r.is_empty());
    let Some(reference) = nonempty.next() else {
        return 0;
    };
    let reference_key = reference.key(0);
    runs.iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let first = r.key(0);
            shared_len(reference_key, first).min(shared_len(first, r.key(r.len() - 1)))
        })
        .min()
        .unwrap_or(0)
}

/// The head of one run's range during a merge; ordered so that the
/// max-heap yields the smallest key first.
struct Cursor<'a> {
    prefix: u64,
    key: &'a [u8],
    run: &'a SortedRun,
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn load(&mut self, skip: usize) {
        self.key = self.run.key(self.pos);
        self.prefix = prefix_after(self.key, skip);
    }
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
        other
            .prefix
            .cmp(&self.prefix)
            .then_with(|| other.key.cmp(self.key))
    }
}

/// Merges one slice and writes its part of the three sections.
fn merge_slice(
    file: &File,
    layout: &Layout,
    runs: &[SortedRun],
    slice: &Slice,
    skip: usize,
    locate: Locate<'_>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<(), MergeError> {
    let mut heap: BinaryHeap<Cursor<'_>> = runs
        .iter()
        .zip(&slice.ranges)
        .filter(|(_, r)| !r.is_empty())
        .map(|(run, r)| {
            let mut cursor = Cursor {
                prefix: 0,
                key: &[],
                run,
                pos: r.start,
                end: r.end,
            };
            cursor.load(skip);
            cursor
        })
        .collect();
    // offsets[i + 1] ends key i.
    let mut offsets = SectionWriter::new(file, layout.offsets_at + 8 * (slice.first_ordinal + 1));
    let mut lens = SectionWriter::new(file, layout.lens_at + 8 * slice.first_ordinal);
    let mut keys = SectionWriter::new(file, layout.keys_at + slice.first_byte);
    let mut addresses = SectionWriter::new(file, layout.addresses_at + 8 * slice.first_ordinal);
    let mut tables = SectionWriter::new(file, layout.tables_at + 4 * slice.first_ordinal);
    let mut end_offset = slice.first_byte;
    let mut previous: Option<&[u8]> = None;
    let mut merged = 0u64;
    while let Some(mut top) = heap.peek_mut() {
        merged += 1;
        if merged % KEYS_PER_CANCEL_CHECK == 0 && cancelled() {
            return Err(MergeError::Cancelled);
        }
        let key = top.key;
        if previous == Some(key) {
            return Err(MergeError::Duplicate(DuplicateKey { key: key.to_vec() }));
        }
        previous = Some(key);
        end_offset += key.len() as u64;
        offsets.put(&end_offset.to_le_bytes())?;
        let entry = &top.run.entries[top.pos];
        lens.put(&entry.value_len.to_le_bytes())?;
        if let Some(locate) = locate {
            let (table, address) = locate(entry.origin, entry.position, entry.ordinal);
            addresses.put(&address.to_le_bytes())?;
            tables.put(&table.to_le_bytes())?;
        }
        keys.put(key)?;
        top.pos += 1;
        if top.pos < top.end {
            top.load(skip);
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
    }
    offsets.flush()?;
    lens.flush()?;
    addresses.flush()?;
    tables.flush()?;
    keys.flush()?;
    Ok(())
}

/// Sequential writes to one region of a file, buffered and issued with
/// `pwrite`, so that several threads can fill disjoint regions at once.
struct SectionWriter<'a> {
    file: &'a File,
    at: u64,
    buf: Vec<u8>,
}

/// Large enough that writes cost few system calls.
const SECTION_BUFFER: usize = 1 << 20;

impl<'a> SectionWriter<'a> {
    fn new(file: &'a File, at: u64) -> Self {
        SectionWriter {
            file,
            at,
            buf: Vec::new(),
        }
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.buf.len() + bytes.len() > SECTION_BUFFER {
            self.flush()?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(SECTION_BUFFER);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// A memory-mapped key index.
#[derive(Debug)]
pub struct KeyIndex {
    map: Mmap,
    name: String,
    count: u64,
    format: u32,
    /// Where the sections are; `locations` says whether the address and
    /// table sections exist.
    layout: Layout,
    locations: bool,
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
        let format = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(map[12..16].try_into().expect("4 bytes"));
        let locations = match (format, flags) {
            (1, 0) => false,
            (2, 0) => false,
            (2, FLAG_LOCATIONS) => true,
            (1 | 2, _) => return Err(err(12, format!("unknown flags {flags:#x}"))),
            _ => return Err(err(8, format!("unsupported key index format {format}"))),
        };
        let count = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        let keys_len = u64::from_le_bytes(map[24..32].try_into().expect("8 bytes"));
        let layout = Layout::checked(count, keys_len, locations)
            .filter(|l| l.file_len == map.len() as u64)
            .ok_or_else(|| {
                err(
                    16,
                    format!(
                        "size mismatch: {count} keys of {keys_len} bytes do not fit a {}-byte file",
                        map.len()
                    ),
                )
            })?;
        Ok(KeyIndex {
            map,
            name,
            count,
            format,
            layout,
            locations,
            keys_len,
        })
    }

    /// The format the file was written in (1 or 2).
    pub fn format(&self) -> u32 {
        self.format
    }

    /// Whether the file records where each value is.
    pub fn has_locations(&self) -> bool {
        self.locations
    }

    /// Where the value of the key at `ordinal` is: (table, index address),
    /// or `None` if the file has no locations.
    pub fn location(&self, ordinal: u64) -> Result<Option<(u32, u64)>, KeyIndexError> {
        if ordinal >= self.count {
            return Err(self.error(0, format!("ordinal {ordinal} out of range")));
        }
        if !self.locations {
            return Ok(None);
        }
        let address = self.u64_at(self.layout.addresses_at as usize + 8 * ordinal as usize);
        let at = self.layout.tables_at as usize + 4 * ordinal as usize;
        let table = u32::from_le_bytes(self.map[at..at + 4].try_into().expect("4 bytes"));
        Ok(Some((table, address)))
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
        let at = self.layout.offsets_at as usize + 8 * ordinal as usize;
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
        let keys_at = self.layout.keys_at as usize;
        Ok(&self.map[keys_at + start as usize..keys_at + end as usize])
    }

    /// The value length of the key at `ordinal`.
    pub fn value_len(&self, ordinal: u64) -> Result<u64, KeyIndexError> {
        if ordinal >= self.count {
            return Err(self.error(0, format!("ordinal {ordinal} out of range")));
        }
        Ok(self.u64_at(self.layout.lens_at as usize + 8 * ordinal as usize))
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

    /// Writes this index, with value locations, to `out` (created, not
    /// fsynced): the key, offset and length sections are copied as they
    /// are, and `locate` gives each ordinal's (table, index address) in
    /// order. This is how a format-1 index is converted (see
    /// `store::migrate`). Streams: memory is the tables section (4 bytes a
    /// key) plus buffers. `locate` runs on `threads` threads at once, over
    /// consecutive slices of each batch of keys (a lookup is a random read
    /// of a hash index and a log, so both cores help). Stops with
    /// `Ok(false)` when `cancelled` says so.
    pub fn write_with_locations<E: Send>(
        &self,
        out: &Path,
        locate: &(dyn Fn(u64) -> Result<(u32, u64), E> + Sync),
        threads: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<bool, WithLocationsError<E>> {
        use std::io::Write;
        let layout = Layout::new(self.count, self.keys_len, true);
        let file = File::create(out).map_err(WithLocationsError::Io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let io = WithLocationsError::Io;
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
        w.write_all(&FLAG_LOCATIONS.to_le_bytes()).map_err(io)?;
        w.write_all(&self.count.to_le_bytes()).map_err(io)?;
        w.write_all(&self.keys_len.to_le_bytes()).map_err(io)?;
        // Offsets and lengths: the same bytes in both formats.
        let copied = self.layout.offsets_at as usize..self.layout.addresses_at as usize;
        w.write_all(&self.map[copied]).map_err(io)?;
        let mut tables = Vec::with_capacity(self.count as usize);
        let threads = threads.max(1) as u64;
        let mut batch: Vec<Result<(u32, u64), E>> = Vec::new();
        for start in (0..self.count).step_by(KEYS_PER_CANCEL_CHECK as usize) {
            if cancelled() {
                return Ok(false);
            }
            let end = (start + KEYS_PER_CANCEL_CHECK).min(self.count);
            let per_thread = (end - start).div_ceil(threads);
            batch.clear();
            std::thread::scope(|scope| {
                let slices: Vec<_> = (start..end)
                    .step_by(per_thread as usize)
                    .map(|from| {
                        let to = (from + per_thread).min(end);
                        scope.spawn(move || (from..to).map(locate).collect::<Vec<_>>())
                    })
                    .collect();
                for slice in slices {
                    batch.extend(slice.join().expect("a key index lookup thread panicked"));
                }
            });
            for found in batch.drain(..) {
                let (table, address) = found.map_err(WithLocationsError::Locate)?;
                w.write_all(&address.to_le_bytes()).map_err(io)?;
                tables.push(table);
            }
        }
        for table in tables {
            w.write_all(&table.to_le_bytes()).map_err(io)?;
        }
        w.write_all(&self.map[self.layout.keys_at as usize..])
            .map_err(io)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        let written = file.metadata().map_err(io)?.len();
        debug_assert_eq!(written, layout.file_len);
        Ok(true)
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
                run.put(k, k.len() as u64 * 10, p as u32, 0, 0);
            }
            run.finish().expect("no key in two blocks");
            runs.push(run);
        }
        let path = dir.join("keys.idx");
        match write_merged(&path, &runs, 1, None, &|| false) {
            Ok(_) => Ok(KeyIndex::open(&path).unwrap()),
            Err(MergeError::Duplicate(dup)) => Err(dup),
            Err(e) => panic!("merge failed: {e:?}"),
        }
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
        run.put(b"k", 1, 0, 0, 0);
        run.put(b"gone", 1, 0, 0, 0);
        run.put(b"k", 7, 0, 0, 0);
        run.delete(b"gone", 0);
        run.delete(b"never", 0);
        run.put(b"back", 1, 0, 0, 0);
        run.delete(b"back", 0);
        run.put(b"back", 3, 0, 0, 0);
        run.finish().unwrap();
        let got: Vec<(&[u8], u64)> = (0..run.len())
            .map(|i| (run.key(i), run.entries[i].value_len))
            .collect();
        assert_eq!(got, vec![(&b"back"[..], 3), (b"k", 7)]);
    }

    #[test]
    fn key_in_two_blocks_is_reported() {
        let mut run = SortedRun::new();
        run.put(b"k", 1, 4, 0, 0);
        run.put(b"j", 1, 4, 0, 0);
        run.put(b"k", 1, 5, 0, 0);
        assert_eq!(
            run.finish().unwrap_err(),
            KeyInTwoBlocks {
                key: b"k".to_vec(),
                first_origin: 4,
                second_origin: 5
            }
        );
    }

    /// Keys with a long shared prefix, keys that are prefixes of others and
    /// keys shorter than the shared prefix plus 8 bytes sort by bytes.
    #[test]
    fn sorting_after_the_common_prefix_keeps_byte_order() {
        let keys: Vec<&[u8]> = vec![
            b"user:0000000000012",
            b"user:00000000000",
            b"user:000000000001",
            b"user:0000000000011\x00",
            b"user:0000000000011",
            b"user:00000000000119",
            b"user:00000000000\xff",
        ];
        let mut run = SortedRun::new();
        for k in &keys {
            run.put(k, 1, 0, 0, 0);
        }
        run.finish().unwrap();
        let got: Vec<&[u8]> = (0..run.len()).map(|i| run.key(i)).collect();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(got, want);
    }

    /// Runs of random keys over a small alphabet (so that prefixes are
    /// shared), merged in 1 to 5 parts, give the same file as sorting
    /// everything at once; a key in two runs is found in any number of parts.
    #[test]
    fn merging_in_parts_matches_one_sorted_list() {
        use proptest::prelude::*;
        let runs_strategy = proptest::collection::vec(
            proptest::collection::btree_set(proptest::collection::vec(0u8..3, 0..12), 0..200),
            1..6,
        );
        let cases = crate::test_support::proptest_cases(64);
        proptest!(ProptestConfig::with_cases(cases), |(sets in runs_strategy, parts in 1usize..6)| {
            let dir = tempfile::tempdir().unwrap();
            let mut all: Vec<Vec<u8>> = Vec::new();
            let mut runs = Vec::new();
            let mut tables: std::collections::BTreeMap<Vec<u8>, u32> = Default::default();
            for (r, set) in sets.iter().enumerate() {
                let mut run = SortedRun::new();
                for k in set {
                    run.put(k, k.len() as u64 + 1, r as u32, 1000 + k.len() as u64, 0);
                    all.push(k.clone());
                    tables.insert(k.clone(), r as u32);
                }
                run.finish().unwrap();
                runs.push(run);
            }
            all.sort();
            let duplicated = all.windows(2).any(|w| w[0] == w[1]);
            let path = dir.path().join("keys.idx");
            // Locations: the key's length as the address, the run as the table.
            let locate = |table: u32, position: u64, _: u32| (table, position);
            let merged = write_merged_in_parts(&path, &runs, parts, Some(&locate), &|| false);
            if duplicated {
                prop_assert!(matches!(merged, Err(MergeError::Duplicate(_))));
            } else {
                prop_assert_eq!(merged.unwrap(), all.len() as u64);
                let idx = KeyIndex::open(&path).unwrap();
                prop_assert_eq!(idx.len(), all.len() as u64);
                for (i, k) in all.iter().enumerate() {
                    prop_assert_eq!(idx.key(i as u64).unwrap(), k.as_slice());
                    prop_assert_eq!(idx.value_len(i as u64).unwrap(), k.len() as u64 + 1);
                    prop_assert_eq!(
                        idx.location(i as u64).unwrap(),
                        Some((tables[k], 1000 + k.len() as u64))
                    );
                }
            }
        });
    }

    /// Puts and deletes over a small alphabet, in random order or sorted
    /// by key (so that runs in key order, with and without repeated keys,
    /// take the path that skips the sort): finishing keeps what a map
    /// keeps, the last put of every key not deleted after it.
    #[test]
    fn finishing_matches_a_map() {
        use proptest::prelude::*;
        let ops = proptest::collection::vec(
            (
                proptest::collection::vec(0u8..3, 0..6),
                proptest::bool::weighted(0.1),
            ),
            0..200,
        );
        let cases = crate::test_support::proptest_cases(128);
        proptest!(ProptestConfig::with_cases(cases), |(mut ops in ops, in_order: bool)| {
            if in_order {
                ops.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let mut run = SortedRun::new();
            let mut model = std::collections::BTreeMap::new();
            for (n, (key, delete)) in ops.iter().enumerate() {
                if *delete {
                    run.delete(key, 0);
                    model.remove(key);
                } else {
                    run.put(key, n as u64, 0, 0, 0);
                    model.insert(key.clone(), n as u64);
                }
            }
            run.finish().unwrap();
            let got: Vec<(Vec<u8>, u64)> = (0..run.len())
                .map(|i| (run.key(i).to_vec(), run.entries[i].value_len))
                .collect();
            let want: Vec<(Vec<u8>, u64)> = model.into_iter().collect();
            prop_assert_eq!(got, want);
        });
    }

    #[test]
    fn only_runs_out_of_key_order_are_sorted() {
        let mut ascending = SortedRun::new();
        for k in [&b"a"[..], b"ab", b"b"] {
            ascending.put(k, 1, 0, 0, 0);
        }
        assert!(!ascending.unordered);
        let mut repeated = SortedRun::new();
        repeated.put(b"a", 1, 0, 0, 0);
        repeated.put(b"a", 2, 0, 0, 0);
        assert!(
            repeated.unordered,
            "a repeated key needs the sort to drop one"
        );
        let mut deleted = SortedRun::new();
        deleted.delete(b"a", 0);
        assert!(deleted.unordered, "a delete needs the sort to drop it");
        let mut tail = SortedRun::new();
        tail.put(b"c", 1, 0, 0, 0);
        ascending.absorb(tail, 1);
        assert!(
            !ascending.unordered,
            "a run after the last key keeps the order"
        );
        let mut behind = SortedRun::new();
        behind.put(b"b", 1, 0, 0, 0);
        ascending.absorb(behind, 2);
        assert!(ascending.unordered);
        ascending.finish().unwrap_err();
    }

    /// Runs in run order, keys repeated within and across runs, merged in
    /// 1 to 5 parts: the index holds what a map holds after inserting every
    /// run's entries in order, with the winning entry's location.
    #[test]
    fn later_runs_win_like_a_map() {
        use proptest::prelude::*;
        let runs_strategy = proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(0u8..3, 0..8), 0..100),
            1..6,
        );
        let cases = crate::test_support::proptest_cases(64);
        proptest!(ProptestConfig::with_cases(cases), |(runs_keys in runs_strategy, parts in 1usize..6)| {
            let dir = tempfile::tempdir().unwrap();
            let mut model = std::collections::BTreeMap::new();
            let mut runs = Vec::new();
            let mut written = 0u64;
            for (r, keys) in runs_keys.iter().enumerate() {
                let mut run = SortedRun::new();
                for k in keys {
                    written += 1;
                    run.put(k, written, r as u32, 1000 + written, r as u32);
                    model.insert(k.clone(), (written, r as u32));
                }
                run.finish().unwrap();
                runs.push(run);
            }
            let path = dir.path().join("keys.idx");
            let locate = |_: u32, position: u64, run: u32| (run, position);
            let merged = write_merged_later_wins(&path, runs, parts, Some(&locate), &|| false);
            prop_assert_eq!(merged.unwrap(), model.len() as u64);
            let idx = KeyIndex::open(&path).unwrap();
            prop_assert_eq!(idx.len(), model.len() as u64);
            for (i, (k, (written, run))) in model.iter().enumerate() {
                let i = i as u64;
                prop_assert_eq!(idx.key(i).unwrap(), k.as_slice());
                prop_assert_eq!(idx.value_len(i).unwrap(), *written);
                prop_assert_eq!(idx.location(i).unwrap(), Some((*run, 1000 + written)));
            }
        });
    }

    #[test]
    fn a_cancelled_merge_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = SortedRun::new();
        for i in 0..(3 * KEYS_PER_CANCEL_CHECK) {
            run.put(format!("{i:08}").as_bytes(), 1, 0, 0, 0);
        }
        run.finish().unwrap();
        let checks = std::sync::atomic::AtomicU64::new(0);
        let cancelled = || checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 1;
        let merged = write_merged(&dir.path().join("keys.idx"), &[run], 1, None, &cancelled);
        assert!(matches!(merged, Err(MergeError::Cancelled)), "{merged:?}");
        // Stopped at the second check, not at the end.
        assert_eq!(checks.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    /// Key indexes of format 1, as the first releases wrote them, are still
    /// read: the same keys and lengths, and no locations.
    #[test]
    fn reads_format_1() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/store-v1/store/data/baby-names/1/keys.idx");
        let idx = KeyIndex::open(&path).unwrap();
        assert_eq!(idx.format(), 1);
        assert!(!idx.has_locations());
        assert_eq!(idx.len(), 16);
        assert_eq!(idx.key(0).unwrap(), b"1881/boy");
        assert_eq!(idx.value_len(0).unwrap(), 4);
        assert_eq!(idx.location(0).unwrap(), None);
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
