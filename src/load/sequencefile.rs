//! Loading SequenceFiles: every record goes to the Sparkey log of its
//! partition under sequins' partition function, then each partition's keys
//! are sorted and its hash index built.
//!
//! Uncompressed SequenceFiles are served in place instead, when every file
//! of the version is uncompressed, the version is built whole (not a
//! cluster node's share) and local storage is uncompressed: each file is
//! copied into the version as it is read (one pass: the bytes read from the
//! source are written to the copy and parsed from the same buffer), and
//! the key index records for every key the file, the offset of its value
//! in the file and its length. No value is rewritten and no hash index is
//! built. Each file's keys are one run, sorted by the file's worker as soon
//! as the file is read, which costs nothing when the file is already in key
//! order (a Hadoop reducer writes its file that way); the runs of all files
//! are then merged into the key index. A load costs a copy of the files,
//! parsing them and that merge. Later records of a key override earlier
//! ones in file order, then record order, which is one of the orders the
//! Sparkey path may apply (a key in two files makes the merge regroup the
//! runs by key first; see `keyindex::write_merged_later_wins`).
//!
//! The number of partitions N is the number of files. A node of a cluster
//! reads every file and keeps only the records of its partitions (the
//! other partitions' logs stay empty and are not served). Files are read in
//! parallel, one worker per file. Workers batch records per partition and
//! append a batch under that partition's lock, so different partitions are
//! written concurrently and a lock is taken once per batch, not per record.
//! Once every record is in place, each partition's keys are sorted and its
//! hash index built by separate CPU jobs; the sorts are queued first,
//! because the key index merge waits for all of them and then runs while
//! the remaining hash indexes are built.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::catalog::LoadCounters;
use crate::format::{sequencefile, sparkey};
use crate::partition;
use crate::source::SourceFile;
use crate::store::keyindex::SortedRun;

use super::jobs::{LoadContext, blocking, join_all};
use super::{Built, LoadErrorKind, block_name, sparkey_compression};
use crate::config::StorageCompression;
use crate::format::sequencefile::Compression;
use crate::store::manifest::{BlockInfo, BlockKind};

/// Records are handed to a partition's sink in batches of about this many
/// bytes (divided among partitions, see below): large enough that the lock
/// is taken rarely, small enough that a worker's buffers stay small.
const BATCH_BYTES_PER_WORKER: usize = 4 << 20;

/// Records between progress updates and cancellation checks: often enough
/// that progress is live and shutdown is prompt, rarely enough to cost
/// nothing.
const PROGRESS_EVERY: u64 = 4096;

/// One partition being written: its log and the keys seen so far.
struct PartitionSink {
    /// The partition, which is also its table's position in the version.
    partition: u32,
    writer: sparkey::LogWriter,
    run: SortedRun,
}

/// Loads SequenceFiles into one Sparkey block per partition.
pub(crate) async fn load(
    ctx: &LoadContext,
    inputs: Vec<SourceFile>,
) -> Result<Built, LoadErrorKind> {
    if ctx.only.is_none()
        && ctx.options.in_place
        && ctx.options.compression == StorageCompression::None
        && all_uncompressed(ctx, &inputs).await?
    {
        return load_in_place(ctx, inputs).await;
    }
    let n = inputs.len() as u32;
    let sinks = {
        let (staging, options) = (ctx.staging.clone(), ctx.options.clone());
        blocking(move || {
            (0..n)
                .map(|p| {
                    let path = staging.join(format!("{}.spl", block_name(p, 0)));
                    let mut writer = sparkey::LogWriter::create(
                        &path,
                        sparkey_compression(options.compression),
                        options.block_size,
                    )?;
                    // A failed load discards the whole staging directory.
                    writer.leave_file_on_drop();
                    Ok(Mutex::new(PartitionSink {
                        partition: p,
                        writer,
                        run: SortedRun::new(),
                    }))
                })
                .collect::<Result<Vec<_>, LoadErrorKind>>()
        })
        .await?
    };
    let sinks = Arc::new(sinks);

    let reading = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for file in inputs {
        let permit = ctx.worker().await?;
        let ctx = ctx.clone();
        let sinks = Arc::clone(&sinks);
        tasks.spawn_blocking(move || {
            let _permit = permit;
            load_file(&ctx, &file, n, &sinks)
        });
    }
    let records: u64 = join_all(tasks).await?.into_iter().sum();
    tracing::debug!(
        seconds = reading.elapsed().as_secs_f64(),
        records,
        "read and routed every record"
    );

    let indexing = Instant::now();
    let sinks = Arc::try_unwrap(sinks)
        .map_err(|_| LoadErrorKind::Internal("load tasks still running".into()))?;
    let mut sorts = tokio::task::JoinSet::new();
    let mut indexes = tokio::task::JoinSet::new();
    let mut writers = Vec::with_capacity(sinks.len());
    // Every entry is written: each log's entry block bits are final, and
    // with them the index address of every value the runs recorded.
    let mut bits = Vec::with_capacity(sinks.len());
    for (p, sink) in sinks.into_iter().enumerate() {
        let PartitionSink {
            writer, mut run, ..
        } = sink.into_inner().unwrap_or_else(|e| e.into_inner());
        bits.push(writer.entry_block_bits());
        sorts.spawn(ctx.cpu_job(move || {
            run.finish().map_err(|d| {
                LoadErrorKind::Internal(format!("duplicate origin for {:?}", d.key))
            })?;
            Ok((p as u32, run))
        }));
        writers.push((p as u32, writer));
    }
    for (p, writer) in writers {
        let index = ctx.staging.join(format!("{}.spi", block_name(p, 0)));
        let log = ctx.staging.join(format!("{}.spl", block_name(p, 0)));
        indexes.spawn(ctx.cpu_job(move || {
            writer.finish_with_index(&index)?;
            crate::store::start_writeback(&log);
            crate::store::start_writeback(&index);
            Ok(())
        }));
    }
    let mut runs: Vec<(u32, SortedRun)> = join_all(sorts).await?;
    runs.sort_by_key(|(p, _)| *p);
    tracing::debug!(
        seconds = indexing.elapsed().as_secs_f64(),
        "sorted every partition's keys"
    );
    let blocks = runs
        .iter()
        .map(|(p, run)| BlockInfo {
            kind: BlockKind::Sparkey,
            partition: *p,
            name: block_name(*p, 0),
            entries: run.len() as u64,
            source_file: None,
        })
        .collect();
    let locate = super::positions_to_addresses(runs.iter().map(|(_, r)| r), &bits);
    let num_keys = super::write_key_index(
        ctx,
        runs.into_iter().map(|(_, r)| r).collect(),
        locate,
        super::Duplicates::Error,
    )
    .await?;
    join_all(indexes).await?;
    tracing::debug!(
        seconds = indexing.elapsed().as_secs_f64(),
        "wrote hash indexes and the key index"
    );
    Ok(Built {
        num_partitions: n,
        blocks,
        num_keys,
        num_records: records,
    })
}

/// Whether every file's header says its records are uncompressed (the
/// headers are read in parallel; a file that is not a SequenceFile fails
/// the load as it would when read).
async fn all_uncompressed(ctx: &LoadContext, inputs: &[SourceFile]) -> Result<bool, LoadErrorKind> {
    let mut tasks = tokio::task::JoinSet::new();
    for file in inputs.iter().cloned() {
        let source = Arc::clone(&ctx.source);
        tasks.spawn_blocking(move || -> Result<bool, LoadErrorKind> {
            let input = source.open_read(&file)?;
            let reader = sequencefile::Reader::new(input, &file.name)?;
            Ok(reader.header().compression == Compression::None)
        });
    }
    Ok(join_all(tasks)
        .await?
        .into_iter()
        .all(|uncompressed| uncompressed))
}

/// The name (stem) of the in-place copy of the version's `index`th file.
fn in_place_name(index: u32) -> String {
    format!("file-{index:05}")
}

/// What reading one file in place produced: its keys, finished.
struct InPlaceFile {
    run: SortedRun,
    records: u64,
}

/// Loads uncompressed SequenceFiles in place (see the module comment).
async fn load_in_place(ctx: &LoadContext, inputs: Vec<SourceFile>) -> Result<Built, LoadErrorKind> {
    let n = inputs.len() as u32;
    let reading = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut blocks = Vec::with_capacity(inputs.len());
    for (index, file) in inputs.into_iter().enumerate() {
        let index = index as u32;
        blocks.push(BlockInfo {
            kind: BlockKind::SequenceFile,
            partition: index,
            name: in_place_name(index),
            entries: 0,
            source_file: Some(file.name.clone()),
        });
        let permit = ctx.worker().await?;
        let ctx = ctx.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            copy_file(&ctx, &file, index).map(|read| (index, read))
        });
    }
    let mut runs: Vec<Option<SortedRun>> = (0..n).map(|_| None).collect();
    let mut records = 0;
    for (index, read) in join_all(tasks).await? {
        records += read.records;
        blocks[index as usize].entries = read.records;
        runs[index as usize] = Some(read.run);
    }
    tracing::debug!(
        seconds = reading.elapsed().as_secs_f64(),
        records,
        "copied and indexed every file in place"
    );
    // Runs recorded (file index, value offset, file index); the key index
    // records (table = the file's block, address = the value offset). The
    // last record of a key, in file order then record order, wins.
    let locate: Arc<super::Locate> = Arc::new(|_file: u32, offset: u64, file: u32| (file, offset));
    let num_keys = super::write_key_index(
        ctx,
        runs.into_iter().flatten().collect(),
        Some(locate),
        super::Duplicates::LaterRunWins,
    )
    .await?;
    Ok(Built {
        num_partitions: n,
        blocks,
        num_keys,
        num_records: records,
    })
}

/// Copies one file into the version as it reads it, and collects its keys
/// with the offset and length of their values, sorted (free when the file
/// is in key order); runs on a blocking thread.
fn copy_file(
    ctx: &LoadContext,
    file: &SourceFile,
    index: u32,
) -> Result<InPlaceFile, LoadErrorKind> {
    let progress = &ctx.progress;
    let path = ctx.staging.join(format!("{}.seq", in_place_name(index)));
    let io = |source| LoadErrorKind::Io {
        path: path.clone(),
        source,
    };
    let copy = std::fs::File::create(&path).map_err(io)?;
    let input = ctx.source.open_read(file)?;
    let mut tee = TeeReader {
        inner: CountingReader {
            inner: input,
            progress,
        },
        copy: &copy,
        written: 0,
        failed: None,
    };
    let mut reader = sequencefile::Reader::new(&mut tee, &file.name)?;
    let mut run = SortedRun::new();
    let throttle = ctx.options.throttle;
    let mut records = 0u64;
    let read = loop {
        if !throttle.is_zero() {
            std::thread::sleep(throttle);
            ctx.check()?;
        }
        let (key, value, at) = match reader.next_unwrapped_at() {
            Ok(Some(record)) => record,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        // Run entries record (origin, position, ordinal): here the file's
        // index, the value's offset and the file's index again.
        run.put(key, value.len() as u64, index, at, index);
        records += 1;
        if records % PROGRESS_EVERY == 0 {
            progress
                .records_done
                .fetch_add(PROGRESS_EVERY, Ordering::Relaxed);
            ctx.check()?;
        }
    };
    drop(reader);
    // A failed write of the copy explains a read error it caused.
    if let Some(e) = tee.failed.take() {
        return Err(io(e));
    }
    read?;
    drop(copy);
    crate::store::start_writeback(&path);
    run.finish()
        .map_err(|d| LoadErrorKind::Internal(format!("duplicate origin for {:?}", d.key)))?;
    progress
        .records_done
        .fetch_add(records % PROGRESS_EVERY, Ordering::Relaxed);
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    Ok(InPlaceFile { run, records })
}

/// Writes everything read through it to `copy`, so that the copy holds
/// exactly the bytes parsed, at the same offsets.
struct TeeReader<'a, R> {
    inner: R,
    copy: &'a std::fs::File,
    written: u64,
    /// Why writing the copy failed (reported as a read error to the parser,
    /// and by the caller as what it is).
    failed: Option<std::io::Error>,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.inner.read(buf)?;
        if let Err(e) = self.copy.write_all_at(&buf[..n], self.written) {
            let kind = e.kind();
            self.failed = Some(e);
            return Err(std::io::Error::new(kind, "cannot write the local copy"));
        }
        self.written += n as u64;
        Ok(n)
    }
}

/// sequins' pre-sharding detection (reference section 4.5), for a node of
/// a cluster: a file whose keys all fall in one partition (as Hadoop jobs
/// that shard by sequins' partition function write them) is assumed to
/// hold only that partition, and once that has held for
/// [`PreSharding::SETTLED_AFTER`] keys, a key this node does not want ends
/// the scan of the file.
#[derive(Debug, Default)]
struct PreSharding {
    /// The first key's partition, while every key so far agrees.
    assumed: Option<u32>,
    matching: u64,
    broken: bool,
}

impl PreSharding {
    const SETTLED_AFTER: u64 = 5000;

    /// The partition that decides whether a key of partition `normal`
    /// (and `alternate`) is wanted: the assumed one when the key may
    /// belong to it by its alternate. (A kept key is still stored in its
    /// normal partition.)
    fn admit(&mut self, normal: u32, alternate: u32) -> u32 {
        if self.broken {
            return normal;
        }
        match self.assumed {
            None => {
                self.assumed = Some(normal);
                normal
            }
            Some(assumed) if assumed == normal => {
                self.matching += 1;
                normal
            }
            Some(assumed) if assumed == alternate => assumed,
            Some(_) => {
                self.broken = true;
                normal
            }
        }
    }

    /// Whether the file has proven to hold a single partition.
    fn settled(&self) -> bool {
        !self.broken && self.matching > Self::SETTLED_AFTER
    }
}

/// Reads one file and routes its records; runs on a blocking thread.
fn load_file(
    ctx: &LoadContext,
    file: &SourceFile,
    n: u32,
    sinks: &[Mutex<PartitionSink>],
) -> Result<u64, LoadErrorKind> {
    let progress = &ctx.progress;
    let input = ctx.source.open_read(file)?;
    let counted = CountingReader {
        inner: input,
        progress,
    };
    let mut reader = sequencefile::Reader::new(counted, &file.name)?;
    // Per-partition batches: entries of (key len u64, value len u64, key, value).
    let batch_limit = (BATCH_BYTES_PER_WORKER / n.max(1) as usize).clamp(4 << 10, 256 << 10);
    let mut batches: Vec<Vec<u8>> = (0..n).map(|_| Vec::new()).collect();
    let throttle = ctx.options.throttle;
    let mut records = 0u64;
    let mut sharding = PreSharding::default();
    loop {
        if !throttle.is_zero() {
            std::thread::sleep(throttle);
            // A throttled load is slow per record: stop at the next one.
            ctx.check()?;
        }
        let Some((key, value)) = reader.next_unwrapped()? else {
            break;
        };
        let (p, alternate) = partition::partitions(key, n);
        records += 1;
        // A node of a cluster reads past other nodes' partitions, and
        // gives up on a file that is sharded to one of them.
        if !ctx.builds(sharding.admit(p, alternate)) {
            if sharding.settled() {
                tracing::debug!(file = %file.name, "file holds no partition of this node; skipping its rest");
                break;
            }
        } else {
            let batch = &mut batches[p as usize];
            batch.extend_from_slice(&(key.len() as u64).to_le_bytes());
            batch.extend_from_slice(&(value.len() as u64).to_le_bytes());
            batch.extend_from_slice(key);
            batch.extend_from_slice(value);
            if batch.len() >= batch_limit {
                flush_batch(&sinks[p as usize], batch)?;
            }
        }
        if records % PROGRESS_EVERY == 0 {
            progress
                .records_done
                .fetch_add(PROGRESS_EVERY, Ordering::Relaxed);
            ctx.check()?;
        }
    }
    for (p, batch) in batches.iter_mut().enumerate() {
        flush_batch(&sinks[p], batch)?;
    }
    progress
        .records_done
        .fetch_add(records % PROGRESS_EVERY, Ordering::Relaxed);
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    Ok(records)
}

fn flush_batch(sink: &Mutex<PartitionSink>, batch: &mut Vec<u8>) -> Result<(), LoadErrorKind> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
    let PartitionSink {
        partition,
        writer,
        run,
    } = &mut *sink;
    let mut rest = batch.as_slice();
    // The batch was written above by this process; its framing is trusted.
    while rest.len() >= 16 {
        let klen = u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes")) as usize;
        let vlen = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes")) as usize;
        let key = &rest[16..16 + klen];
        let value = &rest[16 + klen..16 + klen + vlen];
        let at = writer.put(key, value)?;
        run.put(key, vlen as u64, *partition, at.block_offset, at.ordinal);
        rest = &rest[16 + klen + vlen..];
    }
    batch.clear();
    Ok(())
}

/// Counts bytes read from the source into the load's progress.
struct CountingReader<'a, R> {
    inner: R,
    progress: &'a LoadCounters,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .bytes_done
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::PreSharding;

    #[test]
    fn pre_sharding_follows_sequins() {
        let mut s = PreSharding::default();
        assert_eq!(s.admit(3, 3), 3);
        for _ in 0..PreSharding::SETTLED_AFTER {
            assert_eq!(s.admit(3, 3), 3);
        }
        assert!(!s.settled(), "settles after more than 5000 matching keys");
        assert_eq!(s.admit(3, 3), 3);
        assert!(s.settled());
        // A key of another partition whose alternate is the assumed one
        // counts as the assumed partition.
        assert_eq!(s.admit(1, 3), 3);
        assert!(s.settled());
        // Any other key breaks the assumption for the rest of the file.
        assert_eq!(s.admit(1, 1), 1);
        assert!(!s.settled());
        assert_eq!(s.admit(3, 3), 3);
        assert!(!s.settled());
    }
}
