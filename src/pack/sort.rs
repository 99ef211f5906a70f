//! The external sort of `pack`: records are buffered per partition up to a
//! memory limit; a full buffer is sorted (partitions in parallel) and
//! spilled to a run file; at the end each partition's records come out of a
//! k-way merge of the runs and what is still in memory, in key byte order
//! and, for equal keys, in input order.
//!
//! A run file holds every partition's sorted records one after another;
//! where each partition starts is kept in memory. A record in a run is
//! `key_len u32 LE, value_len u32 LE, seq u64 LE, key, value`, and every
//! length read back is checked against the bytes its partition's segment
//! has left, so a damaged spill file is a clear error, never a panic or a
//! huge allocation.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Take, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use anyhow::{Context, bail};

/// A buffered record: where its bytes are in the arena, the first eight
/// bytes of its key (big-endian, zero-padded) so that most comparisons
/// never touch the arena, and its ordinal in the input.
#[derive(Debug, Clone, Copy)]
struct Entry {
    prefix: u64,
    offset: u64,
    key_len: u32,
    value_len: u32,
    seq: u64,
}

/// What one buffered record costs beyond its bytes.
const ENTRY_COST: usize = std::mem::size_of::<Entry>();
/// Header of a record in a run file.
const RUN_HEADER: usize = 16;
/// Read buffer per run during the merge: large enough for sequential
/// reads, small enough that hundreds of runs stay far below the limit.
const RUN_READ_BUFFER: usize = 256 << 10;

fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Records buffered in memory.
struct Buffer {
    arena: Vec<u8>,
    buckets: Vec<Vec<Entry>>,
    entries: usize,
}

impl Buffer {
    fn key(&self, e: &Entry) -> &[u8] {
        &self.arena[e.offset as usize..e.offset as usize + e.key_len as usize]
    }

    fn value(&self, e: &Entry) -> &[u8] {
        let start = e.offset as usize + e.key_len as usize;
        &self.arena[start..start + e.value_len as usize]
    }

    /// Sorts every partition, `threads` at a time.
    fn sort(&mut self, threads: usize) {
        let arena = &self.arena;
        let next = AtomicUsize::new(0);
        let buckets: Vec<std::sync::Mutex<&mut Vec<Entry>>> =
            self.buckets.iter_mut().map(std::sync::Mutex::new).collect();
        let cmp = |a: &Entry, b: &Entry| {
            let key = |e: &Entry| &arena[e.offset as usize..e.offset as usize + e.key_len as usize];
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| key(a).cmp(key(b)))
                .then(a.seq.cmp(&b.seq))
        };
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                        let Some(bucket) = buckets.get(i) else { break };
                        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
                        bucket.sort_unstable_by(cmp);
                    }
                });
            }
        });
    }
}

/// A spilled run: its file and where each partition's segment starts
/// (`offsets[p]..offsets[p + 1]`).
struct Run {
    path: PathBuf,
    offsets: Vec<u64>,
}

/// Collects records, spilling sorted runs when the memory limit is reached.
pub struct Sorter {
    partitions: u32,
    limit: usize,
    threads: usize,
    buffer: Buffer,
    used: usize,
    spill_dir: PathBuf,
    runs: Vec<Run>,
}

impl Sorter {
    /// `limit`: bytes of records (plus their bookkeeping) held before a
    /// spill; `spill_dir`: an existing directory the runs go to.
    pub fn new(partitions: u32, limit: usize, threads: usize, spill_dir: &Path) -> Sorter {
        Sorter {
            partitions,
            limit,
            threads,
            buffer: Buffer {
                arena: Vec::new(),
                buckets: (0..partitions).map(|_| Vec::new()).collect(),
                entries: 0,
            },
            used: 0,
            spill_dir: spill_dir.to_path_buf(),
            runs: Vec::new(),
        }
    }

    /// Runs spilled so far.
    pub fn spills(&self) -> usize {
        self.runs.len()
    }

    /// Adds a record of `partition` (`seq`: its ordinal in the input).
    pub fn push(
        &mut self,
        partition: u32,
        key: &[u8],
        value: &[u8],
        seq: u64,
    ) -> anyhow::Result<()> {
        let (Ok(key_len), Ok(value_len)) = (u32::try_from(key.len()), u32::try_from(value.len()))
        else {
            bail!(
                "a record of {} + {} bytes is larger than 4 GiB",
                key.len(),
                value.len()
            );
        };
        let cost = key.len() + value.len() + ENTRY_COST;
        if self.used + cost > self.limit && self.buffer.entries > 0 {
            self.spill()?;
        }
        let arena = &mut self.buffer.arena;
        let needed = arena.len() + key.len() + value.len();
        if needed > arena.capacity() {
            // Grow by doubling, but not past the limit: a doubling at the
            // end would otherwise claim up to twice the memory allowed.
            let target = (arena.capacity() * 2).clamp(needed, self.limit.max(needed));
            arena.reserve_exact(target - arena.len());
        }
        let offset = arena.len() as u64;
        arena.extend_from_slice(key);
        arena.extend_from_slice(value);
        self.buffer.buckets[partition as usize].push(Entry {
            prefix: key_prefix(key),
            offset,
            key_len,
            value_len,
            seq,
        });
        self.buffer.entries += 1;
        self.used += cost;
        Ok(())
    }

    fn spill(&mut self) -> anyhow::Result<()> {
        self.buffer.sort(self.threads);
        let path = self.spill_dir.join(format!("run-{:06}", self.runs.len()));
        let name = path.display().to_string();
        let file = File::create(&path).with_context(|| name.clone())?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut offsets = Vec::with_capacity(self.partitions as usize + 1);
        let mut pos = 0u64;
        for bucket in &self.buffer.buckets {
            offsets.push(pos);
            for e in bucket {
                let mut head = [0u8; RUN_HEADER];
                head[..4].copy_from_slice(&e.key_len.to_le_bytes());
                head[4..8].copy_from_slice(&e.value_len.to_le_bytes());
                head[8..].copy_from_slice(&e.seq.to_le_bytes());
                out.write_all(&head).with_context(|| name.clone())?;
                out.write_all(self.buffer.key(e))
                    .with_context(|| name.clone())?;
                out.write_all(self.buffer.value(e))
                    .with_context(|| name.clone())?;
                pos += (RUN_HEADER + e.key_len as usize + e.value_len as usize) as u64;
            }
        }
        offsets.push(pos);
        out.into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| name.clone())?;
        self.runs.push(Run { path, offsets });
        self.buffer.arena.clear();
        for bucket in &mut self.buffer.buckets {
            bucket.clear();
        }
        self.buffer.entries = 0;
        self.used = 0;
        Ok(())
    }

    /// Sorts what is still in memory; the result hands out merged
    /// partitions.
    pub fn finish(mut self) -> Sorted {
        self.buffer.sort(self.threads);
        Sorted {
            buffer: self.buffer,
            runs: self.runs,
        }
    }
}

/// Every record, sorted: memory plus runs.
pub struct Sorted {
    buffer: Buffer,
    runs: Vec<Run>,
}

/// A record coming out of the merge; its buffers are reused.
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub seq: u64,
}

enum Source<'a> {
    Memory(std::slice::Iter<'a, Entry>),
    Run {
        reader: Take<BufReader<File>>,
        name: String,
        /// File offset of the next record, for errors.
        pos: u64,
    },
}

/// A source's current record, ordered for a min-heap on (key, seq).
struct Head {
    record: Record,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (&other.record.key, other.record.seq).cmp(&(&self.record.key, self.record.seq))
    }
}

/// One partition's records in (key, seq) order.
pub struct Merge<'a> {
    buffer: &'a Buffer,
    sources: Vec<Source<'a>>,
    heap: BinaryHeap<Head>,
}

impl Sorted {
    /// The merge of partition `p` over memory and every run.
    pub fn partition(&self, p: u32) -> anyhow::Result<Merge<'_>> {
        let p = p as usize;
        let mut sources = vec![Source::Memory(self.buffer.buckets[p].iter())];
        for run in &self.runs {
            let name = run.path.display().to_string();
            let (start, end) = (run.offsets[p], run.offsets[p + 1]);
            if start == end {
                continue;
            }
            let mut file = File::open(&run.path).with_context(|| name.clone())?;
            file.seek(SeekFrom::Start(start))
                .with_context(|| name.clone())?;
            let reader = BufReader::with_capacity(RUN_READ_BUFFER, file).take(end - start);
            sources.push(Source::Run {
                reader,
                name,
                pos: start,
            });
        }
        let mut merge = Merge {
            buffer: &self.buffer,
            sources,
            heap: BinaryHeap::new(),
        };
        for i in 0..merge.sources.len() {
            let mut record = Record::default();
            if merge.fill(i, &mut record)? {
                merge.heap.push(Head { record, source: i });
            }
        }
        Ok(merge)
    }
}

impl Merge<'_> {
    /// Reads source `i`'s next record into `record`; false at its end.
    fn fill(&mut self, i: usize, record: &mut Record) -> anyhow::Result<bool> {
        match &mut self.sources[i] {
            Source::Memory(iter) => {
                let Some(e) = iter.next() else {
                    return Ok(false);
                };
                record.key.clear();
                record.key.extend_from_slice(self.buffer.key(e));
                record.value.clear();
                record.value.extend_from_slice(self.buffer.value(e));
                record.seq = e.seq;
                Ok(true)
            }
            Source::Run { reader, name, pos } => {
                let left = reader.limit();
                if left == 0 {
                    return Ok(false);
                }
                let mut head = [0u8; RUN_HEADER];
                if left < RUN_HEADER as u64 {
                    bail!("spill file {name}: byte {pos}: truncated record header");
                }
                reader
                    .read_exact(&mut head)
                    .with_context(|| format!("spill file {name}: byte {pos}"))?;
                let key_len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default());
                let value_len = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
                let seq = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
                let body = u64::from(key_len) + u64::from(value_len);
                if body > reader.limit() {
                    bail!(
                        "spill file {name}: byte {pos}: record of {body} bytes runs past its segment ({} left)",
                        reader.limit()
                    );
                }
                record.key.resize(key_len as usize, 0);
                record.value.resize(value_len as usize, 0);
                reader
                    .read_exact(&mut record.key)
                    .and_then(|()| reader.read_exact(&mut record.value))
                    .with_context(|| format!("spill file {name}: byte {pos}"))?;
                record.seq = seq;
                *pos += RUN_HEADER as u64 + body;
                Ok(true)
            }
        }
    }

    /// The next record into `out` (whose buffers are recycled); false when
    /// the partition is done.
    pub fn next_into(&mut self, out: &mut Record) -> anyhow::Result<bool> {
        let Some(mut head) = self.heap.pop() else {
            return Ok(false);
        };
        std::mem::swap(&mut head.record, out);
        if self.fill(head.source, &mut head.record)? {
            self.heap.push(head);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(sorted: &Sorted, p: u32) -> Vec<(Vec<u8>, u64)> {
        let mut m = sorted.partition(p).unwrap();
        let mut r = Record::default();
        let mut out = Vec::new();
        while m.next_into(&mut r).unwrap() {
            out.push((r.key.clone(), r.seq));
        }
        out
    }

    #[test]
    fn spilled_and_unspilled_sorts_agree() {
        let dir = std::env::temp_dir().join(format!("pack-sort-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| format!("k{}", (i * 7919) % 1500).into_bytes())
            .collect();
        let run = |limit| {
            let mut s = Sorter::new(3, limit, 2, &dir);
            for (seq, k) in keys.iter().enumerate() {
                s.push(k.len() as u32 % 3, k, b"v", seq as u64).unwrap();
            }
            let spills = s.spills();
            let sorted = s.finish();
            (
                (0..3).map(|p| collect(&sorted, p)).collect::<Vec<_>>(),
                spills,
            )
        };
        let (big, big_spills) = run(1 << 30);
        let (small, small_spills) = run(500);
        assert_eq!(big_spills, 0);
        assert!(small_spills > 20, "{small_spills}");
        assert_eq!(big, small);
        for part in &big {
            assert!(part.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(big.iter().map(Vec::len).sum::<usize>(), keys.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_run_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("pack-sort-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Sorter::new(1, 64, 1, &dir);
        for i in 0..10u64 {
            s.push(0, format!("key{i}").as_bytes(), b"value", i)
                .unwrap();
        }
        assert!(s.spills() > 0);
        let sorted = s.finish();
        // A huge key length in the first record of the first run.
        let run = &sorted.runs[0].path;
        let mut bytes = std::fs::read(run).unwrap();
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(run, bytes).unwrap();
        let err = match sorted.partition(0) {
            Err(e) => e,
            Ok(mut m) => {
                let mut r = Record::default();
                loop {
                    match m.next_into(&mut r) {
                        Err(e) => break e,
                        Ok(true) => {}
                        Ok(false) => panic!("damage not noticed"),
                    }
                }
            }
        };
        assert!(err.to_string().contains("runs past its segment"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
