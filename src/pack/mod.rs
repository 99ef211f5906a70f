//! `pack`: turn key/value inputs (SequenceFiles, TSV, JSON lines) into a
//! version directory of Sparkey tables exactly as sequins loads Sparkey
//! input: one `part-NNNNN.spl` + `part-NNNNN.spi.sz` per partition, keys
//! routed with sequins' partition function and sorted by bytes in each log.
//!
//! | file | owns |
//! |---|---|
//! | [`input`] | which files an input names, format detection, record readers |
//! | [`sort`] | the memory-bounded external sort: buffer, spill runs, k-way merge |
//! | [`write`] | one partition's Sparkey log and framed index; duplicate keys |
//! | this file | orchestration: the output directory, threads, progress |
//!
//! The version is built in a hidden temporary directory next to `--out`
//! (names starting with `.` are not versions to the source) and renamed
//! into place only when every partition is written and synced, so a crash
//! never leaves a half-written version that looks complete. `_SUCCESS` is
//! not written: publishing is a separate step.

pub mod input;
pub mod sort;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use input::Format;

/// Default memory limit: 1 GiB. The buffer is the only large allocation,
/// and 1 GiB keeps `pack` well inside a typical build machine or
/// container while still sorting inputs of a few GiB with a handful of
/// spills; `--memory-limit` raises or lowers it.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// How often progress is printed: often enough to show a long pack is
/// alive, rarely enough not to flood a log.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// What `pack` is asked to do.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub partitions: u32,
    /// `None`: detect each input's format.
    pub format: Option<Format>,
    pub base64: bool,
    pub last_wins: bool,
    pub memory_limit: usize,
    /// Where spill runs go; `None`: next to `out`.
    pub tmp_dir: Option<PathBuf>,
    pub force: bool,
    pub threads: usize,
    /// Print progress and the summary on stderr.
    pub progress: bool,
}

/// What `pack` did.
#[derive(Debug, Clone, Default)]
pub struct PackSummary {
    pub records: u64,
    pub keys: u64,
    pub duplicates: u64,
    pub input_bytes: u64,
    pub spills: usize,
    pub partitions: u32,
    pub seconds: f64,
}

/// A directory removed when dropped (unless kept).
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn create(path: PathBuf) -> anyhow::Result<TempDir> {
        // A leftover of an earlier crashed run with our pid: ours to clear.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| path.display().to_string())?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Throttled progress lines on stderr.
struct Progress {
    enabled: bool,
    start: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    fn tick(&self, line: impl FnOnce(f64) -> String) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(*last) >= PROGRESS_INTERVAL {
            *last = now;
            eprintln!(
                "pack: {}",
                line(now.duration_since(self.start).as_secs_f64())
            );
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The name of `out` and its parent, for the temporary directories.
fn out_parts(out: &Path) -> anyhow::Result<(PathBuf, String)> {
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a directory name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// Packs `opts.inputs` into `opts.out`.
pub fn pack(opts: &PackOptions) -> anyhow::Result<PackSummary> {
    let start = Instant::now();
    if opts.partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    let sources = input::expand(&opts.inputs)?;
    if sources
        .iter()
        .filter(|s| **s == input::Source::Stdin)
        .count()
        > 1
    {
        bail!("standard input (-) can be named once");
    }
    if let Ok(meta) = std::fs::metadata(&opts.out) {
        if !meta.is_dir() {
            bail!("{}: exists and is not a directory", opts.out.display());
        }
        let non_empty = std::fs::read_dir(&opts.out)
            .with_context(|| opts.out.display().to_string())?
            .next()
            .is_some();
        if non_empty && !opts.force {
            bail!(
                "{}: not empty; pass --force to replace it",
                opts.out.display()
            );
        }
    }
    let (parent, name) = out_parts(&opts.out)?;
    std::fs::create_dir_all(&parent).with_context(|| parent.display().to_string())?;
    let pid = std::process::id();
    let mut staging = TempDir::create(parent.join(format!(".{name}.pack-{pid}")))?;
    let spill_root = opts.tmp_dir.clone().unwrap_or_else(|| parent.clone());
    let spill_dir = TempDir::create(spill_root.join(format!(".{name}.spill-{pid}")))?;

    let progress = Progress {
        enabled: opts.progress,
        start,
        last: Mutex::new(start),
    };
    let threads = opts.threads.max(1);
    let mut sorter =
        sort::Sorter::new(opts.partitions, opts.memory_limit, threads, &spill_dir.path);
    // The first record ordinal of each input, to name a duplicate's file.
    let mut starts: Vec<(u64, String)> = Vec::new();
    let mut seq = 0u64;
    let mut done_bytes = 0u64;
    for source in &sources {
        starts.push((seq, source.name()));
        let mut reader = input::RecordReader::open(source, opts.format, opts.base64)?;
        loop {
            let Some((key, value)) = reader.next_record()? else {
                break;
            };
            let p = crate::partition::partition(key, opts.partitions);
            sorter.push(p, key, value, seq)?;
            seq += 1;
            if seq % 65536 == 0 {
                let bytes = done_bytes + reader.bytes_read();
                let spills = sorter.spills();
                progress.tick(|t| {
                    format!(
                        "read {seq} records, {:.1} MB ({:.1} MB/s), {spills} spills",
                        mb(bytes),
                        mb(bytes) / t.max(1e-9)
                    )
                });
            }
        }
        done_bytes += reader.bytes_read();
    }
    let spills = sorter.spills();
    let sorted = sorter.finish();

    let describe = |seq: u64| -> String {
        let i = starts.partition_point(|(first, _)| *first <= seq);
        let (first, name) = &starts[i.saturating_sub(1)];
        format!("{name} record {}", seq - first + 1)
    };
    let dups = write::Duplicates {
        last_wins: opts.last_wins,
        describe: &describe,
    };
    let next = AtomicU32::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<anyhow::Result<write::Written>>> = Mutex::new(Vec::new());
    let written_parts = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(opts.partitions as usize) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let p = next.fetch_add(1, Ordering::Relaxed);
                    if p >= opts.partitions {
                        break;
                    }
                    let result = sorted
                        .partition(p)
                        .and_then(|merge| write::write_partition(&staging.path, p, merge, &dups));
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(result);
                    let n = written_parts.fetch_add(1, Ordering::Relaxed) + 1;
                    progress
                        .tick(|t| format!("wrote {n}/{} partitions, {:.1} s", opts.partitions, t));
                }
            });
        }
    });
    drop(sorted);
    drop(spill_dir);
    let mut summary = PackSummary {
        records: seq,
        input_bytes: done_bytes,
        spills,
        partitions: opts.partitions,
        ..PackSummary::default()
    };
    for result in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let w = result?;
        summary.keys += w.keys;
        summary.duplicates += w.duplicates;
    }

    // Into place: the staging directory is complete and synced.
    std::fs::File::open(&staging.path)
        .and_then(|d| d.sync_all())
        .with_context(|| staging.path.display().to_string())?;
    if opts.out.exists() {
        // Checked empty or --force above. Moved aside first so the rename
        // of the new version is the only moment it changes.
        let old = parent.join(format!(".{name}.old-{pid}"));
        std::fs::rename(&opts.out, &old).with_context(|| opts.out.display().to_string())?;
        let renamed = std::fs::rename(&staging.path, &opts.out);
        let _ = std::fs::remove_dir_all(&old);
        renamed.with_context(|| opts.out.display().to_string())?;
    } else {
        std::fs::rename(&staging.path, &opts.out)
            .with_context(|| opts.out.display().to_string())?;
    }
    staging.keep = true;
    if let Ok(d) = std::fs::File::open(&parent) {
        let _ = d.sync_all();
    }
    summary.seconds = start.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!(
            "pack: done: {} records ({} keys, {} duplicates dropped), {:.1} MB in {:.1} s ({:.1} MB/s), {} spills, {} partitions -> {}",
            summary.records,
            summary.keys,
            summary.duplicates,
            mb(summary.input_bytes),
            summary.seconds,
            mb(summary.input_bytes) / summary.seconds.max(1e-9),
            summary.spills,
            summary.partitions,
            opts.out.display()
        );
    }
    Ok(summary)
}
