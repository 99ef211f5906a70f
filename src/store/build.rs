//! Building a version: turning the data files of one source version into a
//! published local version (Sparkey blocks per partition, the sorted key
//! index, the manifest).
//!
//! Two kinds of input, never mixed in one version (as in sequins):
//!
//! - **SequenceFiles.** The number of partitions N is the number of files.
//!   Files are read in parallel (one worker per file, at most
//!   `max_parallel_loads` at a time over the whole daemon); every record goes
//!   to the Sparkey log of its partition under sequins' partition function.
//!   Workers batch records per partition and append a batch under that
//!   partition's lock, so different partitions are written concurrently and
//!   a lock is taken once per batch, not per record.
//! - **Sparkey tables** (`X.spl` + `X.spi.sz`). The partition of a table is
//!   the first run of digits in its name; N is the number of distinct
//!   partitions, which must be exactly `0..N`. Logs are downloaded verbatim,
//!   indexes unframed. What sequins never checked is checked here: every key
//!   of a table belongs to the table's partition, and no key appears in two
//!   tables of one partition.
//!
//! Once every record is in place, the rest of a SequenceFile load keeps all
//! cores busy until the end:
//!
//! ```text
//! read + route (one worker per file) ──► all partition logs complete
//!   ├─ sort each partition's keys   (one job per core, queued first)
//!   │     └─► merge keys.idx        (split by key range, one thread per core)
//!   └─ hash index per partition     (one job per core, alongside the merge)
//! each finished file: writeback started at once ──► fsync all in parallel
//!   ──► rename into data/
//! ```
//!
//! Every thread of a build that computes holds one of the daemon's worker permits,
//! so `max_parallel_loads` bounds them all; CPU-bound jobs are further held
//! to one per core, since more would finish no sooner and hold more memory.
//!
//! Everything is written into a staging directory and published by the
//! store only when complete; any error discards the staging directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::catalog::Progress;
use crate::config::StorageCompression;
use crate::format::{sequencefile, sparkey};
use crate::partition;
use crate::source::{Source, SourceFile};

use super::LocalStore;
use super::keyindex::{self, SortedRun};
use super::manifest::{BlockInfo, InputKind, MANIFEST_FORMAT, Manifest, SourceFileInfo};

/// A build that failed, with what it was building.
#[derive(Debug, thiserror::Error)]
#[error("{db} version {version}: {message}")]
pub struct BuildError {
    pub db: String,
    pub version: String,
    pub message: String,
}

/// How locally built Sparkey logs are written.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub compression: StorageCompression,
    pub block_size: u32,
    /// Pause before every SequenceFile record (sequins' `throttle_loads`).
    pub throttle: Duration,
}

/// Live counters of one build, read by the status reporters.
#[derive(Debug, Default)]
pub struct BuildProgress {
    files_total: AtomicU64,
    files_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    records_done: AtomicU64,
}

impl BuildProgress {
    pub fn snapshot(&self) -> Progress {
        Progress {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            records_done: self.records_done.load(Ordering::Relaxed),
        }
    }
}

/// Everything a build needs from the daemon.
#[derive(Clone)]
pub struct Builder {
    pub store: Arc<LocalStore>,
    pub source: Arc<Source>,
    /// File-level workers shared by all builds (`max_parallel_loads`).
    pub workers: Arc<Semaphore>,
    pub options: BuildOptions,
    /// Set at shutdown: loads stop at their next batch.
    pub cancelled: Arc<AtomicBool>,
}

/// What a version's files are, after sequins' classification rules.
enum Plan {
    Empty,
    SequenceFiles(Vec<SourceFile>),
    /// (partition, log, framed index), sorted by partition then name.
    Sparkey(Vec<(u32, SourceFile, SourceFile)>, u32),
}

impl Builder {
    /// Builds and publishes `db`/`version` from its data files. Returns the
    /// published directory.
    pub async fn build(
        &self,
        db: &str,
        version: &str,
        files: Vec<SourceFile>,
        progress: Arc<BuildProgress>,
    ) -> Result<PathBuf, BuildError> {
        let fail = |message: String| BuildError {
            db: db.to_string(),
            version: version.to_string(),
            message,
        };
        let started = Instant::now();
        let plan = classify(&files).map_err(fail)?;
        progress
            .files_total
            .store(files.len() as u64, Ordering::Relaxed);
        progress
            .bytes_total
            .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);

        let staging = self
            .store
            .staging_dir(db, version)
            .map_err(|e| fail(e.to_string()))?;
        let result = match plan {
            Plan::Empty => self
                .write_key_index(&staging, Vec::new())
                .await
                .map(|keys| (InputKind::Empty, 0, Vec::new(), keys, 0)),
            Plan::SequenceFiles(inputs) => self
                .load_sequencefiles(&staging, inputs, &progress)
                .await
                .map(|(n, blocks, keys, records)| {
                    (InputKind::SequenceFile, n, blocks, keys, records)
                }),
            Plan::Sparkey(tables, n) => self
                .load_sparkey(&staging, tables, n, &progress)
                .await
                .map(|(blocks, keys, records)| (InputKind::Sparkey, n, blocks, keys, records)),
        };
        let published = match result {
            Ok((input, num_partitions, blocks, num_keys, num_records)) => {
                self.finish(
                    &staging,
                    db,
                    version,
                    &files,
                    input,
                    num_partitions,
                    blocks,
                    num_keys,
                    num_records,
                    &progress,
                    started,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match published {
            Ok(dir) => Ok(dir),
            Err(message) => {
                self.store.discard(&staging);
                Err(fail(message))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        staging: &Path,
        db: &str,
        version: &str,
        files: &[SourceFile],
        input: InputKind,
        num_partitions: u32,
        blocks: Vec<BlockInfo>,
        num_keys: u64,
        num_records: u64,
        progress: &BuildProgress,
        started: Instant,
    ) -> Result<PathBuf, String> {
        let now = unix_now();
        let created_at = files
            .iter()
            .filter_map(|f| f.last_modified)
            .filter_map(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .max()
            .unwrap_or(now);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            db: db.to_string(),
            version: version.to_string(),
            source_path: self.source.display_path(db, Some(version)),
            input,
            num_partitions,
            blocks,
            num_keys,
            num_records,
            source_bytes: progress.bytes_done.load(Ordering::Relaxed),
            source_files: files
                .iter()
                .map(|f| SourceFileInfo {
                    name: f.name.clone(),
                    size: f.size,
                    etag: f.etag.clone(),
                    last_modified: f
                        .last_modified
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64),
                })
                .collect(),
            created_at,
            loaded_at: now,
            load_seconds: started.elapsed().as_secs_f64(),
        };
        manifest.write(staging).map_err(|e| e.to_string())?;
        let publishing = Instant::now();
        let published = self
            .store
            .publish(staging, db, version)
            .map_err(|e| e.to_string());
        tracing::debug!(
            seconds = publishing.elapsed().as_secs_f64(),
            "fsynced and published"
        );
        published
    }

    /// Runs the CPU-bound job `f` on a blocking thread once it holds one of
    /// the daemon's worker permits (`max_parallel_loads`) and one of
    /// `cores`, the build's own limit of one job per core: more jobs than
    /// cores would finish no sooner and hold more memory at once.
    fn cpu_job<T: Send + 'static>(
        &self,
        cores: &Arc<Semaphore>,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> + Send + 'static {
        let workers = Arc::clone(&self.workers);
        let cores = Arc::clone(cores);
        async move {
            let core = cores
                .acquire_owned()
                .await
                .map_err(|_| "shutting down".to_string())?;
            let permit = workers
                .acquire_owned()
                .await
                .map_err(|_| "shutting down".to_string())?;
            blocking(move || {
                let _permits = (core, permit);
                f()
            })
            .await
        }
    }

    /// Merges the partitions' sorted runs into the version's `keys.idx`,
    /// with one thread per core that a worker permit is free for (at least
    /// one: it waits for that).
    async fn write_key_index(&self, staging: &Path, runs: Vec<SortedRun>) -> Result<u64, String> {
        let merging = Instant::now();
        let first = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .map_err(|_| "shutting down".to_string())?;
        let mut permits = vec![first];
        let cores = cores();
        while permits.len() < cores {
            match Arc::clone(&self.workers).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let keys_path = staging.join("keys.idx");
        let num_keys = blocking(move || {
            let parts = permits.len();
            let merged = keyindex::write_merged(&keys_path, &runs, parts);
            drop(permits);
            super::start_writeback(&keys_path);
            merged
                .map_err(|e| format!("{}: {e}", keys_path.display()))?
                .map_err(|dup| {
                    format!(
                        "key {:?} is stored in two partitions",
                        String::from_utf8_lossy(&dup.key)
                    )
                })
        })
        .await?;
        tracing::debug!(
            seconds = merging.elapsed().as_secs_f64(),
            "wrote the sorted key index"
        );
        Ok(num_keys)
    }

    /// Loads SequenceFiles into one Sparkey block per partition.
    async fn load_sequencefiles(
        &self,
        staging: &Path,
        inputs: Vec<SourceFile>,
        progress: &Arc<BuildProgress>,
    ) -> Result<(u32, Vec<BlockInfo>, u64, u64), String> {
        let n = inputs.len() as u32;
        let mut sinks = Vec::with_capacity(n as usize);
        for p in 0..n {
            let path = staging.join(format!("{}.spl", block_name(p, 0)));
            let writer = sparkey::LogWriter::create(
                &path,
                sparkey_compression(self.options.compression),
                self.options.block_size,
            )
            .map_err(|e| e.to_string())?;
            sinks.push(Mutex::new(PartitionSink {
                writer,
                run: SortedRun::new(),
            }));
        }
        let sinks = Arc::new(sinks);

        let mut tasks = tokio::task::JoinSet::new();
        for file in inputs {
            let permit = Arc::clone(&self.workers)
                .acquire_owned()
                .await
                .map_err(|_| "shutting down".to_string())?;
            let source = Arc::clone(&self.source);
            let sinks = Arc::clone(&sinks);
            let progress = Arc::clone(progress);
            let throttle = self.options.throttle;
            let cancelled = Arc::clone(&self.cancelled);
            tasks.spawn_blocking(move || {
                let _permit = permit;
                load_one_sequencefile(&source, &file, n, &sinks, &progress, throttle, &cancelled)
            });
        }
        let reading = Instant::now();
        let mut records = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(count)) => records += count,
                Ok(Err(message)) => {
                    // Stop the siblings: their output is discarded anyway.
                    tasks.abort_all();
                    return Err(message);
                }
                Err(e) => return Err(format!("load task failed: {e}")),
            }
        }

        tracing::debug!(
            seconds = reading.elapsed().as_secs_f64(),
            records,
            "read and routed every record"
        );
        // Every partition is complete. Its keys are sorted and its hash
        // index built by separate jobs; the sorts are queued first because
        // the key index merge waits for all of them, and then runs while the
        // remaining hash indexes are built.
        let indexing = Instant::now();
        let sinks = Arc::try_unwrap(sinks).map_err(|_| "load tasks still running".to_string())?;
        let cores = core_limit();
        let mut sorts = tokio::task::JoinSet::new();
        let mut indexes = tokio::task::JoinSet::new();
        let mut writers = Vec::with_capacity(sinks.len());
        for (p, sink) in sinks.into_iter().enumerate() {
            let PartitionSink { writer, mut run } =
                sink.into_inner().unwrap_or_else(|e| e.into_inner());
            sorts.spawn(self.cpu_job(&cores, move || {
                run.finish()
                    .map_err(|d| format!("internal: duplicate origin for {:?}", d.key))?;
                Ok((p as u32, run))
            }));
            writers.push((p, writer));
        }
        for (p, writer) in writers {
            let index = staging.join(format!("{}.spi", block_name(p as u32, 0)));
            let log = staging.join(format!("{}.spl", block_name(p as u32, 0)));
            indexes.spawn(self.cpu_job(&cores, move || {
                writer
                    .finish_with_index(&index)
                    .map_err(|e| e.to_string())?;
                super::start_writeback(&log);
                super::start_writeback(&index);
                Ok(())
            }));
        }
        let mut runs: Vec<(u32, SortedRun)> = Vec::new();
        while let Some(joined) = sorts.join_next().await {
            runs.push(joined.map_err(|e| format!("sort task failed: {e}"))??);
        }
        runs.sort_by_key(|(p, _)| *p);
        tracing::debug!(
            seconds = indexing.elapsed().as_secs_f64(),
            "sorted every partition's keys"
        );
        let blocks = runs
            .iter()
            .map(|(p, run)| BlockInfo {
                partition: *p,
                name: block_name(*p, 0),
                entries: run.len() as u64,
                source_file: None,
            })
            .collect();
        let num_keys = self
            .write_key_index(staging, runs.into_iter().map(|(_, r)| r).collect())
            .await?;
        while let Some(joined) = indexes.join_next().await {
            joined.map_err(|e| format!("index task failed: {e}"))??;
        }
        tracing::debug!(
            seconds = indexing.elapsed().as_secs_f64(),
            "wrote hash indexes and the key index"
        );
        Ok((n, blocks, num_keys, records))
    }

    /// Downloads and validates Sparkey tables.
    async fn load_sparkey(
        &self,
        staging: &Path,
        tables: Vec<(u32, SourceFile, SourceFile)>,
        n: u32,
        progress: &Arc<BuildProgress>,
    ) -> Result<(Vec<BlockInfo>, u64, u64), String> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_block = vec![0u32; n as usize];
        for (partition, log, index) in tables {
            let block = next_block[partition as usize];
            next_block[partition as usize] += 1;
            let name = block_name(partition, block);
            let permit = Arc::clone(&self.workers)
                .acquire_owned()
                .await
                .map_err(|_| "shutting down".to_string())?;
            let source = Arc::clone(&self.source);
            let staging = staging.to_path_buf();
            let progress = Arc::clone(progress);
            tasks.spawn(async move {
                let _permit = permit;
                load_one_sparkey(
                    &source, &staging, &name, partition, n, log, index, &progress,
                )
                .await
            });
        }
        let mut loaded: Vec<(BlockInfo, SortedRun, u64)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(block)) => loaded.push(block),
                Ok(Err(message)) => {
                    tasks.abort_all();
                    return Err(message);
                }
                Err(e) => return Err(format!("load task failed: {e}")),
            }
        }
        loaded.sort_by(|a, b| a.0.name.cmp(&b.0.name));

        // One run per partition over all its tables: a key in two tables of
        // one partition is ambiguous (which value wins?) and refused.
        let mut runs: Vec<SortedRun> = (0..n).map(|_| SortedRun::new()).collect();
        let mut blocks = Vec::with_capacity(loaded.len());
        let mut records = 0;
        let mut origins: Vec<String> = Vec::new();
        for (block, run, count) in loaded {
            records += count;
            let origin = origins.len() as u32;
            origins.push(block.source_file.clone().unwrap_or_default());
            runs[block.partition as usize].absorb(run, origin);
            blocks.push(block);
        }
        let origins = Arc::new(origins);
        let cores = core_limit();
        let mut sorts = tokio::task::JoinSet::new();
        for (p, mut run) in runs.into_iter().enumerate() {
            let origins = Arc::clone(&origins);
            sorts.spawn(self.cpu_job(&cores, move || {
                run.finish().map_err(|d| {
                    format!(
                        "key {:?} is in both {} and {} (files of one partition must not overlap)",
                        String::from_utf8_lossy(&d.key),
                        origins[d.first_origin as usize],
                        origins[d.second_origin as usize]
                    )
                })?;
                Ok((p, run))
            }));
        }
        let mut runs: Vec<(usize, SortedRun)> = Vec::with_capacity(n as usize);
        while let Some(joined) = sorts.join_next().await {
            runs.push(joined.map_err(|e| format!("sort task failed: {e}"))??);
        }
        runs.sort_by_key(|(p, _)| *p);
        let num_keys = self
            .write_key_index(staging, runs.into_iter().map(|(_, r)| r).collect())
            .await?;
        Ok((blocks, num_keys, records))
    }
}

struct PartitionSink {
    writer: sparkey::LogWriter,
    run: SortedRun,
}

/// Records are handed to a partition's sink in batches of about this many
/// bytes (divided among partitions, see below): large enough that the lock
/// is taken rarely, small enough that a worker's buffers stay small.
const BATCH_BYTES_PER_WORKER: usize = 4 << 20;

/// Records between progress updates and cancellation checks: often enough
/// that shutdown is prompt, rarely enough to cost nothing.
const PROGRESS_EVERY: u64 = 4096;

fn load_one_sequencefile(
    source: &Source,
    file: &SourceFile,
    n: u32,
    sinks: &[Mutex<PartitionSink>],
    progress: &BuildProgress,
    throttle: Duration,
    cancelled: &AtomicBool,
) -> Result<u64, String> {
    let input = source.open_read(file).map_err(|e| e.to_string())?;
    let counted = CountingReader {
        inner: input,
        progress,
    };
    let mut reader = sequencefile::Reader::new(counted, &file.name).map_err(|e| e.to_string())?;
    // Per-partition batches: entries of (key len u64, value len u64, key, value).
    let batch_limit = (BATCH_BYTES_PER_WORKER / n.max(1) as usize).clamp(4 << 10, 256 << 10);
    let mut batches: Vec<Vec<u8>> = (0..n).map(|_| Vec::new()).collect();
    let mut records = 0u64;
    loop {
        if !throttle.is_zero() {
            std::thread::sleep(throttle);
        }
        let Some((key, value)) = reader.next_unwrapped().map_err(|e| e.to_string())? else {
            break;
        };
        let (p, _) = partition::partitions(key, n);
        let batch = &mut batches[p as usize];
        batch.extend_from_slice(&(key.len() as u64).to_le_bytes());
        batch.extend_from_slice(&(value.len() as u64).to_le_bytes());
        batch.extend_from_slice(key);
        batch.extend_from_slice(value);
        records += 1;
        if batch.len() >= batch_limit {
            flush_batch(&sinks[p as usize], batch)?;
        }
        if records % PROGRESS_EVERY == 0 {
            progress
                .records_done
                .fetch_add(PROGRESS_EVERY, Ordering::Relaxed);
            if cancelled.load(Ordering::Relaxed) {
                return Err("load cancelled: shutting down".into());
            }
        }
    }
    progress
        .records_done
        .fetch_add(records % PROGRESS_EVERY, Ordering::Relaxed);
    for (p, batch) in batches.iter_mut().enumerate() {
        flush_batch(&sinks[p], batch)?;
    }
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    Ok(records)
}

fn flush_batch(sink: &Mutex<PartitionSink>, batch: &mut Vec<u8>) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
    let PartitionSink { writer, run } = &mut *sink;
    let mut rest = batch.as_slice();
    // The batch was written above by this process; its framing is trusted.
    while rest.len() >= 16 {
        let klen = u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes")) as usize;
        let vlen = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes")) as usize;
        let key = &rest[16..16 + klen];
        let value = &rest[16 + klen..16 + klen + vlen];
        writer.put(key, value).map_err(|e| e.to_string())?;
        run.put(key, vlen as u64, 0);
        rest = &rest[16 + klen + vlen..];
    }
    batch.clear();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn load_one_sparkey(
    source: &Source,
    staging: &Path,
    name: &str,
    partition: u32,
    n: u32,
    log: SourceFile,
    index: SourceFile,
    progress: &BuildProgress,
) -> Result<(BlockInfo, SortedRun, u64), String> {
    let log_path = staging.join(format!("{name}.spl"));
    let framed_path = staging.join(format!("{name}.spi.sz"));
    let index_path = staging.join(format!("{name}.spi"));
    let count = |bytes: u64| {
        progress.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    };
    source
        .download(&log, &log_path, &count)
        .await
        .map_err(|e| e.to_string())?;
    source
        .download(&index, &framed_path, &count)
        .await
        .map_err(|e| e.to_string())?;
    let log_name = log.name.clone();
    let index_name = index.name.clone();
    let (run, entries) = blocking(move || {
        let framed = std::fs::File::open(&framed_path)
            .map_err(|e| format!("{}: {e}", framed_path.display()))?;
        let out = std::fs::File::create(&index_path)
            .map_err(|e| format!("{}: {e}", index_path.display()))?;
        sparkey::framed::decode(std::io::BufReader::new(framed), out, &index_name)
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&framed_path);
        let reader = sparkey::Reader::open(&log_path, &index_path)
            .map_err(|e| format!("{log_name}: {e}"))?;
        // Every entry, in log order, so the run sees deletes and overwrites
        // exactly as the index resolved them (later writes win).
        let mut run = SortedRun::new();
        for entry in reader.iter_log() {
            let entry = entry.map_err(|e| e.to_string())?;
            let key: &[u8] = &entry.key;
            let (normal, alternate) = partition::partitions(key, n);
            if normal != partition && alternate != partition {
                return Err(format!(
                    "{log_name}: key {:?} belongs to partition {normal} of {n}, not {partition}",
                    String::from_utf8_lossy(key)
                ));
            }
            match entry.kind {
                sparkey::EntryKind::Put => run.put(key, entry.value.len() as u64, 0),
                sparkey::EntryKind::Delete => run.delete(key, 0),
            }
        }
        // Unmap the log before sorting: its pages need not stay mapped.
        drop(reader);
        run.finish()
            .map_err(|d| format!("internal: duplicate origin for {:?}", d.key))?;
        let entries = run.len() as u64;
        Ok((run, entries))
    })
    .await?;
    progress.files_done.fetch_add(2, Ordering::Relaxed);
    progress.records_done.fetch_add(entries, Ordering::Relaxed);
    Ok((
        BlockInfo {
            partition,
            name: name.to_string(),
            entries,
            source_file: Some(log.name.clone()),
        },
        run,
        entries,
    ))
}

/// sequins' file classification (reference section 4.1), with its gaps
/// closed: `.spi.sz` files are indexes; a `.spl` with a digit run is a
/// Sparkey log whose partition is the first digit run; mixing Sparkey and
/// other files is an error; Sparkey partitions must be exactly `0..N`.
fn classify(files: &[SourceFile]) -> Result<Plan, String> {
    let data: Vec<&SourceFile> = files
        .iter()
        .filter(|f| !f.name.ends_with(".spi.sz"))
        .collect();
    if data.is_empty() {
        return Ok(Plan::Empty);
    }
    let is_sparkey =
        |f: &SourceFile| f.name.ends_with(".spl") && first_digit_run(&f.name).is_some();
    let sparkey_count = data.iter().filter(|f| is_sparkey(f)).count();
    if sparkey_count == 0 {
        return Ok(Plan::SequenceFiles(data.into_iter().cloned().collect()));
    }
    if sparkey_count != data.len() {
        return Err("mixed Sparkey and SequenceFile files in one version".into());
    }
    let mut tables = Vec::new();
    for log in data {
        let partition = first_digit_run(&log.name).unwrap_or(0);
        let stem = log.name.trim_end_matches(".spl");
        let index_name = format!("{stem}.spi.sz");
        let index = files
            .iter()
            .find(|f| f.name == index_name)
            .ok_or_else(|| format!("{}: no index {index_name} beside it", log.name))?;
        tables.push((partition, log.clone(), index.clone()));
    }
    tables.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let mut distinct: Vec<u32> = tables.iter().map(|t| t.0).collect();
    distinct.dedup();
    let n = distinct.len() as u32;
    if distinct.iter().enumerate().any(|(i, &p)| p != i as u32) {
        return Err(format!(
            "Sparkey partitions {distinct:?} are not 0..{n}: every partition from 0 to N-1 needs a file"
        ));
    }
    Ok(Plan::Sparkey(tables, n))
}

/// The first run of ASCII digits in a name, as a partition number.
fn first_digit_run(name: &str) -> Option<u32> {
    let start = name.find(|c: char| c.is_ascii_digit())?;
    let digits: String = name[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One permit per core, for a build's CPU-bound jobs.
fn core_limit() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(cores()))
}

fn block_name(partition: u32, block: u32) -> String {
    format!("part-{partition:05}-{block:03}")
}

fn sparkey_compression(c: StorageCompression) -> sparkey::Compression {
    match c {
        StorageCompression::None => sparkey::Compression::None,
        StorageCompression::Snappy => sparkey::Compression::Snappy,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("worker failed: {e}"))?
}

/// Counts bytes read from the source into the build's progress.
struct CountingReader<'a, R> {
    inner: R,
    progress: &'a BuildProgress,
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
    use super::*;

    fn file(name: &str) -> SourceFile {
        SourceFile::for_tests("db", "1", name, 10)
    }

    #[test]
    fn classification_follows_sequins_with_its_gaps_closed() {
        assert!(matches!(classify(&[]), Ok(Plan::Empty)));
        assert!(matches!(
            classify(&[file("part-00000"), file("part-00001")]),
            Ok(Plan::SequenceFiles(f)) if f.len() == 2
        ));
        // A .spl without digits is a SequenceFile (sequins' rule).
        assert!(matches!(
            classify(&[file("data.spl")]),
            Ok(Plan::SequenceFiles(_))
        ));
        let sparkey = classify(&[
            file("part0-file0.spl"),
            file("part0-file0.spi.sz"),
            file("part0-file1.spl"),
            file("part0-file1.spi.sz"),
            file("part1.spl"),
            file("part1.spi.sz"),
        ])
        .unwrap();
        match sparkey {
            Plan::Sparkey(tables, n) => {
                assert_eq!(n, 2);
                let parts: Vec<u32> = tables.iter().map(|t| t.0).collect();
                assert_eq!(parts, vec![0, 0, 1]);
            }
            _ => panic!("expected Sparkey"),
        }
        let mixed = classify(&[file("part0.spl"), file("part0.spi.sz"), file("part-00001")]);
        assert!(mixed.err().unwrap().contains("mixed"));
        let gap = classify(&[
            file("p0.spl"),
            file("p0.spi.sz"),
            file("p2.spl"),
            file("p2.spi.sz"),
        ]);
        assert!(gap.err().unwrap().contains("not 0..2"));
        let lonely = classify(&[file("p0.spl")]);
        assert!(lonely.err().unwrap().contains("no index"));
    }

    #[test]
    fn digit_runs() {
        assert_eq!(first_digit_run("part-00012-00034.spl"), Some(12));
        assert_eq!(first_digit_run("2017-part3.spl"), Some(2017));
        assert_eq!(first_digit_run("none.spl"), None);
    }
}
