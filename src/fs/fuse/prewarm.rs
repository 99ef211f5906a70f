//! Pre-warming a switch: before a new version of a database is switched
//! in, the keys the kernel holds of the serving version (`fs::prewarm`)
//! are made warm in the new one, so readers of a working set do not fall
//! off a cliff at every refresh.
//!
//! The kernel only caches what it asked for: there is no notification that
//! adds a directory entry, so entries and attributes are put in its caches
//! the way a reader would, by a path walk through the daemon's own mount
//! (`stat` of `.versions/<db>/<new>/<key path>`, from worker threads that
//! never serve requests; the LOOKUPs they cause are answered by the
//! session threads as any other). The values then go straight into the
//! page cache of the inodes the walk created (`FUSE_NOTIFY_STORE`, the
//! first [`STORE_MAX`] bytes of each value), with no READ round trip. This
//! works because nobody else can reach the new version's inodes yet: its
//! version directory is only listed under `.versions/` (the catalog holds
//! it, state AVAILABLE) and `<db>` still points at the old one, so no
//! reader's READ races the push.
//!
//! The entries readers actually use are under `<db>/`, a symlink to
//! `.versions/<db>/<version>`: after the switch a path walk looks the
//! symlink up again (one LOOKUP and one READLINK for the whole mount, not
//! per key) and then finds every warmed entry below it in the cache.
//!
//! The switch waits for the run at most `--prewarm-limit`, then goes ahead
//! and the run goes on in the background (a push that races a reader's
//! READ then only repeats the same bytes: versions never change). A newer
//! switch of the same database stops a run still going.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{INodeNo, Notifier};

use crate::catalog::{SwitchWarmer, Version};
use crate::fs::core::FsCore;
use crate::fs::listing;
use crate::fs::prewarm::{self, Run};

/// At most this much of each value is pushed into the page cache: the
/// kernel's default readahead window, what a first read fetches anyway.
/// A reader of a larger value reads the rest through READs as before, and
/// a working set of large values cannot fill memory with pushes.
pub const STORE_MAX: u64 = 128 * 1024;

/// The mount's warmer; see the module docs.
pub(super) struct Prewarmer {
    core: Arc<FsCore>,
    notifier: Notifier,
    mountpoint: PathBuf,
    limit: Duration,
    threads: usize,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    stopped: bool,
    running: Vec<Job>,
}

struct Job {
    shared: Arc<JobShared>,
    workers: Vec<JoinHandle<()>>,
}

/// One run, shared by its workers.
struct JobShared {
    db: String,
    /// (current, next) while the run goes on; dropped when it ends, so a
    /// finished run does not keep a retired version from being deleted.
    versions: Mutex<Option<(Arc<Version>, Arc<Version>)>>,
    /// `.versions/<db>/<next>` in the mount.
    root: PathBuf,
    /// The keys of `current` to warm, one bit per ordinal.
    words: Vec<u64>,
    /// The next word a worker takes.
    next_word: AtomicUsize,
    cancel: AtomicBool,
    run: Arc<Run>,
    /// Workers still running, signalled by `finished`.
    left: Mutex<usize>,
    finished: Condvar,
}

enum Outcome {
    Warmed(u64),
    Missing,
    Failed,
}

impl Prewarmer {
    /// `threads` workers per run: as many as session threads, since more
    /// LOOKUPs in flight than threads to answer them gain nothing.
    pub(super) fn new(
        core: Arc<FsCore>,
        notifier: Notifier,
        mountpoint: &Path,
        limit: Duration,
        threads: usize,
    ) -> Self {
        Prewarmer {
            core,
            notifier,
            mountpoint: mountpoint.to_path_buf(),
            limit,
            threads: threads.max(1),
            jobs: Mutex::new(Jobs::default()),
        }
    }

    /// Stops every run and waits for its workers (unmounting).
    pub(super) fn stop(&self) {
        let running = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.stopped = true;
            std::mem::take(&mut jobs.running)
        };
        for job in running {
            job.shared.cancel.store(true, Ordering::Relaxed);
            for worker in job.workers {
                let _ = worker.join();
            }
        }
    }

    /// Waits until the last run of `db` has ended, or `timeout` passes
    /// (returns whether it ended; true if there is none).
    pub(super) fn wait(&self, db: &str, timeout: Duration) -> bool {
        let job = {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.running
                .iter()
                .rev()
                .find(|job| job.shared.db == db)
                .map(|job| Arc::clone(&job.shared))
        };
        let Some(job) = job else {
            return true;
        };
        let left = job.left.lock().unwrap_or_else(|e| e.into_inner());
        let (left, _) = job
            .finished
            .wait_timeout_while(left, timeout, |left| *left > 0)
            .unwrap_or_else(|e| e.into_inner());
        *left == 0
    }

    /// Starts a run warming `next` with what the kernel holds of
    /// `current`; `None` if there is nothing to warm.
    fn start(&self, current: &Arc<Version>, next: &Arc<Version>) -> Option<Arc<JobShared>> {
        let words = self.core.looked_up(current)?;
        let keys = prewarm::count(&words);
        if keys == 0 {
            return None;
        }
        let run = Arc::new(Run::new(next.db(), current.name(), next.name(), keys));
        let shared = Arc::new(JobShared {
            db: next.db().to_string(),
            versions: Mutex::new(Some((Arc::clone(current), Arc::clone(next)))),
            root: self
                .mountpoint
                .join(".versions")
                .join(next.db())
                .join(next.name()),
            words,
            next_word: AtomicUsize::new(0),
            cancel: AtomicBool::new(false),
            run: Arc::clone(&run),
            left: Mutex::new(self.threads),
            finished: Condvar::new(),
        });
        let finished = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if jobs.stopped {
                return None;
            }
            for job in &jobs.running {
                // A newer switch of the database supersedes the run.
                if job.shared.db == next.db() {
                    job.shared.cancel.store(true, Ordering::Relaxed);
                }
            }
            let (finished, running) = std::mem::take(&mut jobs.running)
                .into_iter()
                .partition(|job: &Job| job.shared.run.is_done());
            jobs.running = running;
            self.core.prewarm_stats().started(&run);
            let mut workers = Vec::with_capacity(self.threads);
            for _ in 0..self.threads {
                let warmer = Worker {
                    core: Arc::clone(&self.core),
                    notifier: self.notifier.clone(),
                };
                let job = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("sequinsfs-warm".into())
                    .spawn(move || warmer.work(&job));
                match spawned {
                    Ok(worker) => workers.push(worker),
                    Err(err) => {
                        tracing::warn!("cannot start a pre-warming thread: {err}");
                        worker_done(&self.core, &shared);
                    }
                }
            }
            jobs.running.push(Job {
                shared: Arc::clone(&shared),
                workers,
            });
            finished
        };
        for job in finished {
            for worker in job.workers {
                let _ = worker.join();
            }
        }
        Some(shared)
    }
}

/// What a worker thread needs of the mount.
struct Worker {
    core: Arc<FsCore>,
    notifier: Notifier,
}

impl Worker {
    /// A worker: takes 64 ordinals at a time until none are left.
    fn work(&self, job: &JobShared) {
        let versions = job
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((current, next)) = versions {
            self.warm_keys(job, &current, &next);
        }
        worker_done(&self.core, job);
    }

    fn warm_keys(&self, job: &JobShared, current: &Version, next: &Version) {
        while !job.cancel.load(Ordering::Relaxed) {
            let at = job.next_word.fetch_add(1, Ordering::Relaxed);
            let Some(&word) = job.words.get(at) else {
                break;
            };
            let mut bits = word;
            while bits != 0 && !job.cancel.load(Ordering::Relaxed) {
                let ordinal = at as u64 * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let stats = self.core.prewarm_stats();
                match self.warm_key(job, current, next, ordinal) {
                    Outcome::Warmed(bytes) => {
                        job.run.warmed.fetch_add(1, Ordering::Relaxed);
                        job.run.bytes.fetch_add(bytes, Ordering::Relaxed);
                        stats.keys_warmed.fetch_add(1, Ordering::Relaxed);
                        stats.bytes_stored.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Outcome::Missing => {
                        job.run.missing.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Failed => {
                        job.run.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Puts the entry of the old version's key at `ordinal`, in the new
    /// version, into the kernel's caches, and the start of its value into
    /// the page cache.
    fn warm_key(
        &self,
        job: &JobShared,
        current: &Version,
        next: &Version,
        ordinal: u64,
    ) -> Outcome {
        let key = match current.keys().key_at(ordinal) {
            Ok(key) => key,
            Err(err) => return failed(job, "cannot read the key", &err),
        };
        let path = match listing::path_of(next.keys(), key) {
            Ok(Some(path)) => job.root.join(path),
            Ok(None) => return Outcome::Missing,
            Err(err) => return failed(job, "cannot find the key", &err),
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) => return failed(job, "cannot look the key up", &err),
        };
        let ino = meta.ino();
        match self.core.remote_read(ino, 0, 0) {
            Ok(None) => {}
            // A key held by peers: its entry is warm, its value is theirs.
            Ok(Some(_)) => return Outcome::Warmed(0),
            Err(err) => return failed(job, "cannot read the value", &err.chain()),
        }
        let len = meta.len().min(STORE_MAX);
        if len == 0 {
            return Outcome::Warmed(0);
        }
        // `len` is at most STORE_MAX: it fits.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let pushed = self.core.read(ino, 0, len, |bytes| {
            let pushed = self.notifier.store(INodeNo(ino), 0, bytes);
            pushed.map(|()| bytes.len() as u64)
        });
        match pushed {
            Ok(Ok(bytes)) => Outcome::Warmed(bytes),
            Ok(Err(err)) => failed(job, "cannot push the value", &err),
            Err(err) => failed(job, "cannot read the value", &err.chain()),
        }
    }
}

/// Counts a worker out; the last one ends the run.
fn worker_done(core: &FsCore, job: &JobShared) {
    let mut left = job.left.lock().unwrap_or_else(|e| e.into_inner());
    *left = left.saturating_sub(1);
    if *left > 0 {
        return;
    }
    let took = job.run.finish();
    *job.versions.lock().unwrap_or_else(|e| e.into_inner()) = None;
    drop(left);
    job.finished.notify_all();
    let stats = core.prewarm_stats();
    stats.nanos_spent.fetch_add(
        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    if job.run.warmed_before_switch().is_some() {
        let run = &job.run;
        tracing::info!(
            db = %run.db,
            version = %run.to,
            keys = run.keys,
            warmed = run.warmed.load(Ordering::Relaxed),
            missing = run.missing.load(Ordering::Relaxed),
            failed = run.failed.load(Ordering::Relaxed),
            stopped = job.cancel.load(Ordering::Relaxed),
            seconds = took.as_secs_f64(),
            "pre-warming finished after the switch"
        );
    }
}

fn failed(job: &JobShared, what: &str, err: &dyn std::fmt::Display) -> Outcome {
    tracing::debug!(
        db = %job.run.db,
        version = %job.run.to,
        "pre-warming: {what}: {err}"
    );
    Outcome::Failed
}

impl SwitchWarmer for Prewarmer {
    fn warm(&self, current: &Arc<Version>, next: &Arc<Version>) {
        let Some(job) = self.start(current, next) else {
            tracing::debug!(
                db = next.db(),
                version = next.name(),
                "pre-warming: the kernel holds no key of the served version"
            );
            return;
        };
        let left = job.left.lock().unwrap_or_else(|e| e.into_inner());
        let (left, _) = job
            .finished
            .wait_timeout_while(left, self.limit, |left| *left > 0)
            .unwrap_or_else(|e| e.into_inner());
        let done = *left == 0;
        drop(left);
        let run = &job.run;
        let waited = run.switch_goes_ahead();
        self.core.prewarm_stats().switches_delayed_nanos.fetch_add(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let warmed = run.warmed.load(Ordering::Relaxed);
        if done {
            tracing::info!(
                db = %run.db,
                from = %run.from,
                version = %run.to,
                keys = run.keys,
                warmed,
                missing = run.missing.load(Ordering::Relaxed),
                failed = run.failed.load(Ordering::Relaxed),
                bytes = run.bytes.load(Ordering::Relaxed),
                seconds = waited.as_secs_f64(),
                "switch pre-warmed"
            );
        } else {
            tracing::info!(
                db = %run.db,
                from = %run.from,
                version = %run.to,
                keys = run.keys,
                warmed,
                limit = ?self.limit,
                "pre-warming limit reached: switching now, warming goes on"
            );
        }
    }
}
