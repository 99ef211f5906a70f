//! Loading a version: turning the data files of one source version into a
//! published local version (Sparkey blocks per partition, the sorted key
//! index, the manifest).
//!
//! | file | owns |
//! |---|---|
//! | [`plan`] | what the files are (SequenceFiles, Sparkey tables, nothing) |
//! | [`sequencefile`] | reading records and routing them to partition logs |
//! | [`sparkey`] | downloading and validating Sparkey tables |
//! | [`jobs`] | threads, permits and cancellation |
//! | [`error`] | [`LoadError`] |
//!
//! The path of a SequenceFile load, which keeps all cores busy to the end:
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
//! Uncompressed SequenceFiles served in place skip the partition logs:
//!
//! ```text
//! copy + parse + sort the file's keys (one worker per file; no sort when
//!   the file is in key order) ──► merge keys.idx (one thread per core)
//! ```
//!
//! Everything is written into a staging directory and published by the
//! store only when complete; an error discards the staging directory, and a
//! cancellation (the daemon stopping) leaves it for the next start to
//! remove, so a version in `data/` is always whole.

mod error;
mod jobs;
mod plan;
mod sequencefile;
mod sparkey;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use self::error::{LoadError, LoadErrorKind};

use self::jobs::{LoadContext, blocking};
use self::plan::Plan;
use crate::catalog::LoadCounters;
use crate::config::StorageCompression;
use crate::format::sparkey as sparkey_format;
use crate::source::{Source, SourceFile};
use crate::store::LocalStore;
use crate::store::keyindex::{self, MergeError, SortedRun};

/// Maps what a run recorded for a put (table, position, ordinal) to the
/// value's location (table, index address); see [`keyindex::Locate`].
pub(crate) type Locate = dyn Fn(u32, u64, u32) -> (u32, u64) + Send + Sync;
use crate::store::manifest::{BlockInfo, InputKind, MANIFEST_FORMAT, Manifest, SourceFileInfo};

/// How locally built Sparkey logs are written.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub compression: StorageCompression,
    pub block_size: u32,
    /// Serve uncompressed SequenceFiles in place (`[storage] in_place`).
    pub in_place: bool,
    /// Pause before every SequenceFile record (sequins' `throttle_loads`).
    pub throttle: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let storage = crate::config::StorageConfig::default();
        LoadOptions {
            compression: storage.compression,
            block_size: storage.block_size,
            in_place: storage.in_place,
            throttle: Duration::ZERO,
        }
    }
}

/// Everything a load needs from the daemon.
#[derive(Clone)]
pub struct Loader {
    pub store: Arc<LocalStore>,
    pub source: Arc<Source>,
    /// File-level workers shared by all loads (`max_parallel_loads`).
    pub workers: Arc<Semaphore>,
    pub options: LoadOptions,
}

/// What the stages of a load produced.
pub(crate) struct Built {
    pub num_partitions: u32,
    pub blocks: Vec<BlockInfo>,
    pub num_keys: u64,
    /// Records read from the input (including overwritten duplicates).
    pub num_records: u64,
}

impl Loader {
    pub fn new(
        store: Arc<LocalStore>,
        source: Arc<Source>,
        workers: Arc<Semaphore>,
        options: LoadOptions,
    ) -> Loader {
        Loader {
            store,
            source,
            workers,
            options,
        }
    }

    /// The number of partitions of a version made of `files`, as sequins
    /// counts them: what a cluster assigns before loading.
    pub fn partition_count(files: &[SourceFile]) -> Result<u32, LoadErrorKind> {
        let plan = plan::classify(files)?;
        Ok(match plan {
            Plan::Empty => 0,
            Plan::SequenceFiles(inputs) => inputs.len() as u32,
            Plan::Sparkey(_, n) => n,
        })
    }

    /// Loads and publishes `db`/`version` from its data files, reporting
    /// into `progress`; returns the published directory. Builds only the
    /// partitions in `only` when given (a node of a cluster), else all.
    /// Stops with [`LoadErrorKind::Cancelled`] soon after `cancel` fires.
    pub async fn load(
        &self,
        db: &str,
        version: &str,
        files: Vec<SourceFile>,
        only: Option<BTreeSet<u32>>,
        progress: &Arc<LoadCounters>,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, LoadError> {
        let fail = |kind: LoadErrorKind| LoadError::new(db, version, kind);
        let started = Instant::now();
        let plan = plan::classify(&files).map_err(fail)?;
        progress
            .files_total
            .store(files.len() as u64, Ordering::Relaxed);
        progress
            .bytes_total
            .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);

        let staging = {
            let (store, db, version) =
                (Arc::clone(&self.store), db.to_string(), version.to_string());
            blocking(move || Ok(store.staging_dir(&db, &version)?))
                .await
                .map_err(fail)?
        };
        let held_partitions = only.as_ref().map(|only| only.iter().copied().collect());
        let mut ctx = LoadContext::new(
            Arc::clone(&self.source),
            self.options.clone(),
            staging.clone(),
            Arc::clone(progress),
            cancel.clone(),
            Arc::clone(&self.workers),
        );
        ctx.only = only.map(Arc::new);
        let result = match plan {
            Plan::Empty => write_key_index(&ctx, Vec::new(), None, Duplicates::Error)
                .await
                .map(|num_keys| {
                    (
                        InputKind::Empty,
                        Built {
                            num_partitions: 0,
                            blocks: Vec::new(),
                            num_keys,
                            num_records: 0,
                        },
                    )
                }),
            Plan::SequenceFiles(inputs) => sequencefile::load(&ctx, inputs)
                .await
                .map(|built| (InputKind::SequenceFile, built)),
            Plan::Sparkey(tables, n) => sparkey::load(&ctx, tables, n)
                .await
                .map(|built| (InputKind::Sparkey, built)),
        };
        let published = match result {
            Ok((input, built)) => {
                let mut manifest =
                    self.manifest(db, version, &files, input, built, progress, started);
                manifest.held_partitions = held_partitions;
                self.publish(&staging, manifest).await
            }
            Err(e) => Err(e),
        };
        match published {
            Ok(dir) => Ok(dir),
            // Loads are cancelled only when the daemon stops. Its staging
            // directory stays for the next start to remove: the files are
            // still open in threads that are finishing a write, and the last
            // close of an unlinked file drops its cached pages there and
            // then, which for gigabytes takes seconds of the exit.
            Err(LoadErrorKind::Cancelled) => Err(fail(LoadErrorKind::Cancelled)),
            Err(kind) => {
                self.store.discard(staging);
                Err(fail(kind))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn manifest(
        &self,
        db: &str,
        version: &str,
        files: &[SourceFile],
        input: InputKind,
        built: Built,
        progress: &LoadCounters,
        started: Instant,
    ) -> Manifest {
        let now = unix_now();
        let created_at = files
            .iter()
            .filter_map(|f| f.last_modified)
            .filter_map(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .max()
            .unwrap_or(now);
        Manifest {
            format: MANIFEST_FORMAT,
            db: db.to_string(),
            version: version.to_string(),
            source_path: self.source.display_path(db, Some(version)),
            input,
            num_partitions: built.num_partitions,
            blocks: built.blocks,
            num_keys: built.num_keys,
            num_records: built.num_records,
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
            held_partitions: None,
        }
    }

    /// Writes the manifest and publishes the staging directory: fsyncs and
    /// renames, on a blocking thread.
    async fn publish(
        &self,
        staging: &std::path::Path,
        manifest: Manifest,
    ) -> Result<PathBuf, LoadErrorKind> {
        let store = Arc::clone(&self.store);
        let staging = staging.to_path_buf();
        blocking(move || {
            manifest.write(&staging)?;
            let publishing = Instant::now();
            let dir = store.publish(&staging, &manifest.db, &manifest.version)?;
            tracing::debug!(
                seconds = publishing.elapsed().as_secs_f64(),
                "fsynced and published"
            );
            Ok(dir)
        })
        .await
    }
}

/// What a key found in two runs means to [`write_key_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duplicates {
    /// An error: each run is a partition, and a key has one partition.
    Error,
    /// The later run's entry wins: each run is a file, in file order.
    LaterRunWins,
}

/// Merges finished sorted runs into the version's `keys.idx`, with one
/// thread per core that a worker permit is free for (at least one: it
/// waits for that). With `locate`, the index records where each value is.
pub(crate) async fn write_key_index(
    ctx: &LoadContext,
    runs: Vec<SortedRun>,
    locate: Option<Arc<Locate>>,
    duplicates: Duplicates,
) -> Result<u64, LoadErrorKind> {
    let merging = Instant::now();
    let permits = ctx.workers_for_cores().await?;
    let keys_path = ctx.staging.join("keys.idx");
    let cancel = ctx.cancel.clone();
    let num_keys = blocking(move || {
        let parts = permits.len();
        let locate = locate
            .as_deref()
            .map(|l| l as &(dyn Fn(u32, u64, u32) -> (u32, u64) + Sync));
        let cancelled = || cancel.is_cancelled();
        let merged = match duplicates {
            Duplicates::Error => {
                keyindex::write_merged(&keys_path, &runs, parts, locate, &cancelled)
            }
            Duplicates::LaterRunWins => {
                keyindex::write_merged_later_wins(&keys_path, runs, parts, locate, &cancelled)
            }
        };
        drop(permits);
        crate::store::start_writeback(&keys_path);
        merged.map_err(|e| match e {
            MergeError::Io(source) => LoadErrorKind::Io {
                path: keys_path.clone(),
                source,
            },
            MergeError::Duplicate(dup) => LoadErrorKind::KeyInTwoPartitions {
                key: error::key_text(&dup.key),
            },
            MergeError::Cancelled => LoadErrorKind::Cancelled,
        })
    })
    .await?;
    tracing::debug!(
        seconds = merging.elapsed().as_secs_f64(),
        "wrote the sorted key index"
    );
    Ok(num_keys)
}

/// For runs whose entries recorded the writer's positions (a block offset
/// and an ordinal in it) in table `p` = run `p`: the locations the key index
/// records, given each table's entry block bits. `None` (a key index without
/// locations, whose reads find values by key) if some address would not fit
/// in 64 bits, which only logs of many terabytes could reach.
pub(crate) fn positions_to_addresses<'a>(
    runs: impl Iterator<Item = &'a SortedRun>,
    bits: &[u32],
) -> Option<Arc<Locate>> {
    for (run, &bits) in runs.zip(bits) {
        let (block_offset, ordinal) = run.largest_position();
        let largest = sparkey_format::EntryPosition {
            block_offset,
            ordinal,
        };
        largest.address(bits)?;
    }
    let bits = bits.to_vec();
    Some(Arc::new(
        move |table: u32, block_offset: u64, ordinal: u32| {
            let at = sparkey_format::EntryPosition {
                block_offset,
                ordinal,
            };
            let bits = bits.get(table as usize).copied().unwrap_or(0);
            // Checked above for every table.
            (table, at.address(bits).unwrap_or(u64::MAX))
        },
    ))
}

fn block_name(partition: u32, block: u32) -> String {
    format!("part-{partition:05}-{block:03}")
}

fn sparkey_compression(c: StorageCompression) -> sparkey_format::Compression {
    match c {
        StorageCompression::None => sparkey_format::Compression::None,
        StorageCompression::Snappy => sparkey_format::Compression::Snappy,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
