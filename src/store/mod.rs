//! The local store: the directory where versions are mirrored and indexed,
//! and the rules that keep it consistent across crashes.
//!
//! ```text
//! <local_store>/sequinsfs.lock            held (flock) by the one daemon using the store
//! <local_store>/store.json                the store's format (see format, migrate)
//! <local_store>/data/<db>/<version>/      a published version, never modified
//!     manifest.json                       what the version holds (see manifest)
//!     keys.idx                            sorted key index (see keyindex)
//!     part-<partition>-<block>.spl/.spi   Sparkey log and hash index per block
//!     file-<n>.seq                        or: the n-th data file, an uncompressed
//!                                         SequenceFile served in place (see inplace)
//! <local_store>/tmp/                      builds in progress and deletions
//! ```
//!
//! A version is built in a directory under `tmp/`, every file fsynced, then
//! published by one `rename` into `data/` (and the parent directory fsynced).
//! Builds start each file's writeback as soon as the file is complete, and
//! the fsyncs run in parallel, so publishing mostly waits for what is
//! already on its way to the disk.
//! A version directory under `data/` is therefore always complete; whatever
//! a crash, a failed build or a stop leaves under `tmp/` is removed at the
//! next start. Deleting a version is the same in reverse: rename it into
//! `tmp/`, then remove it.
//!
//! Removing gigabytes of freshly written data takes seconds (the kernel
//! drops their cached pages as it goes), so leftovers and failed builds are
//! removed on a background thread: neither a start, nor a stop, nor the
//! next load waits for it.

pub mod format;
pub mod inplace;
pub mod keyindex;
pub mod manifest;
pub mod migrate;
pub mod version;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub use manifest::Manifest;
pub use version::LocalVersion;

const LOCK_FILE: &str = "sequinsfs.lock";
const DATA_DIR: &str = "data";
const TMP_DIR: &str = "tmp";
/// Prefix under `tmp/` of what an earlier process left, renamed at start so
/// that no new staging directory (`build.<db>.<version>.<pid>.<n>`, where
/// an old pid may come back after a reboot) can take an old one's name
/// while it is being removed.
const LEFTOVER_PREFIX: &str = "leftover.";

/// An error of the local store, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store {path} is in use by another sequinsfs process{pid}")]
    Locked { path: String, pid: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// Written by a newer release: refused rather than rebuilt, because
    /// its files may mean something this binary does not know.
    #[error(
        "local store {path} has format {found}, newer than this sequinsfs reads (up to {known}): \
         run the release that wrote it, or point local_store at another directory"
    )]
    NewerFormat {
        path: String,
        found: u32,
        known: u32,
    },
}

/// See [`LocalStore::mark_agreed`].
const AGREED_FILE: &str = "agreed";
/// Marks the version a database is pinned to (see [`LocalStore::set_pinned`]).
const PINNED_FILE: &str = "pinned";

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An open, locked local store.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    /// Holds the flock for as long as the store is open. The kernel drops the
    /// lock when the process dies, however it dies, so a crash never leaves
    /// a stale lock behind.
    _lock: File,
    next_staging: AtomicU64,
    /// Directories being removed in the background.
    removals: Arc<Removals>,
    /// The store's format when it was opened, before any migration.
    opened_format: u32,
}

/// A count of background removals in progress, to wait for.
#[derive(Debug, Default)]
struct Removals {
    running: Mutex<usize>,
    ended: Condvar,
}

impl LocalStore {
    /// Opens (creating if needed) and locks the store at `root`, and starts
    /// removing leftovers of builds and deletions that an earlier process
    /// did not finish (see [`LocalStore::wait_for_removals`]).
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock_path = root.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StoreError::Locked {
                    path: root.display().to_string(),
                    pid: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            return Err(io_err(&lock_path)(err));
        }
        // Record our pid for the error message another process would print.
        lock.set_len(0).map_err(io_err(&lock_path))?;
        lock.rewind().map_err(io_err(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;

        // Before anything under data/ is touched: a store of a newer
        // format is refused as it is. A new store (no data directory yet)
        // starts at the current format: there is nothing to migrate.
        let new_store = !root.join(DATA_DIR).exists() && !root.join(format::FORMAT_FILE).exists();
        if new_store {
            format::write(root, format::STORE_FORMAT)?;
        }
        let opened_format = format::read(root)?;
        format::check_known(root, opened_format)?;
        for dir in [DATA_DIR, TMP_DIR] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let store = LocalStore {
            root: root.to_path_buf(),
            _lock: lock,
            next_staging: AtomicU64::new(0),
            removals: Arc::default(),
            opened_format,
        };
        store.clear_tmp()?;
        migrate::upgrade_at_open(&store.root, opened_format)?;
        Ok(store)
    }

    /// The store's format when it was opened (before the start-up steps of
    /// [`migrate`] brought it to [`format::STORE_FORMAT`]).
    pub fn opened_format(&self) -> u32 {
        self.opened_format
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a published version lives.
    pub fn version_dir(&self, db: &str, version: &str) -> PathBuf {
        self.root.join(DATA_DIR).join(db).join(version)
    }

    /// Records that the cluster agreed on `db`/`version` (it became current
    /// on this node), durably: a file `agreed` in its directory. A partial
    /// version found without it at start-up was still waiting for the
    /// cluster and is not served before it agrees.
    pub fn mark_agreed(&self, db: &str, version: &str) -> Result<(), StoreError> {
        let dir = self.version_dir(db, version);
        let marker = dir.join(AGREED_FILE);
        fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&marker))?;
        sync_dir(&dir)
    }

    /// Records that `db` is pinned to `version` (`Some`) or not pinned
    /// (`None`), durably: a file `pinned` in the pinned version's directory
    /// and in no other of the database. At start-up the pinned version is
    /// served rather than a newer one still in the store.
    pub fn set_pinned(&self, db: &str, version: Option<&str>) -> Result<(), StoreError> {
        let db_dir = self.root.join(DATA_DIR).join(db);
        for other in sorted_dir_names(&db_dir).unwrap_or_default() {
            if Some(other.as_str()) == version {
                continue;
            }
            let marker = db_dir.join(&other).join(PINNED_FILE);
            match fs::remove_file(&marker) {
                Ok(()) => sync_dir(&db_dir.join(&other))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&marker)(e)),
            }
        }
        if let Some(version) = version {
            let dir = self.version_dir(db, version);
            let marker = dir.join(PINNED_FILE);
            fs::File::create(&marker)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&marker))?;
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Whether `db`/`version` is the version its database is pinned to
    /// (see [`LocalStore::set_pinned`]).
    pub fn is_pinned(&self, db: &str, version: &str) -> bool {
        self.version_dir(db, version).join(PINNED_FILE).exists()
    }

    /// Whether [`LocalStore::mark_agreed`] was called for `db`/`version`.
    pub fn is_agreed(&self, db: &str, version: &str) -> bool {
        self.version_dir(db, version).join(AGREED_FILE).exists()
    }

    /// Published versions, as (db, version) in name order. Only directories
    /// with a manifest count; a version directory without one cannot be the
    /// result of a publish and is removed.
    pub fn published(&self) -> Result<Vec<(String, String)>, StoreError> {
        let data = self.root.join(DATA_DIR);
        let mut found = Vec::new();
        for db in sorted_dir_names(&data)? {
            let db_dir = data.join(&db);
            if !db_dir.is_dir() {
                continue;
            }
            for version in sorted_dir_names(&db_dir)? {
                let dir = db_dir.join(&version);
                if dir.join(manifest::MANIFEST_FILE).is_file() {
                    found.push((db.clone(), version));
                } else if dir.is_dir() {
                    tracing::warn!(dir = %dir.display(), "removing version directory without a manifest");
                    self.remove_dir(&dir)?;
                }
            }
        }
        Ok(found)
    }

    /// A fresh, empty directory to build `db`/`version` in.
    pub fn staging_dir(&self, db: &str, version: &str) -> Result<PathBuf, StoreError> {
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join(TMP_DIR)
            .join(format!("build.{db}.{version}.{}.{n}", std::process::id()));
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// Publishes a complete staging directory as `db`/`version`: fsyncs every
    /// file and the directory, then renames it into place in one step.
    /// An existing directory of the same version (a rebuild) is replaced.
    pub fn publish(&self, staging: &Path, db: &str, version: &str) -> Result<PathBuf, StoreError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(staging).map_err(io_err(staging))? {
            files.push(entry.map_err(io_err(staging))?.path());
        }
        sync_files(&files)?;
        sync_dir(staging)?;
        let db_dir = self.root.join(DATA_DIR).join(db);
        let target = db_dir.join(version);
        if target.exists() {
            self.delete_version(db, version)?;
        }
        // After the deletion, which drops the db directory with its last
        // version.
        fs::create_dir_all(&db_dir).map_err(io_err(&db_dir))?;
        fs::rename(staging, &target).map_err(io_err(&target))?;
        sync_dir(&db_dir)?;
        sync_dir(&self.root.join(DATA_DIR))?;
        Ok(target)
    }

    /// Swaps a complete staging directory with the published `db`/`version`
    /// in one step (`renameat2` with `RENAME_EXCHANGE`), for a migration
    /// that rewrote a version in the background. The published name always
    /// holds a complete version, the old one or the new one; a crash leaves
    /// the other under `tmp/`, where the next start removes it. After the
    /// swap the old directory is removed in the background (mappings of its
    /// files stay valid until their readers drop them).
    pub fn exchange(&self, staging: &Path, db: &str, version: &str) -> Result<(), StoreError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(staging).map_err(io_err(staging))? {
            files.push(entry.map_err(io_err(staging))?.path());
        }
        sync_files(&files)?;
        sync_dir(staging)?;
        let target = self.version_dir(db, version);
        let (from, to) = (c_path(staging)?, c_path(&target)?);
        // SAFETY: two NUL-terminated paths that outlive the call; AT_FDCWD
        // makes them relative to the working directory like any path.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc != 0 {
            return Err(io_err(&target)(std::io::Error::last_os_error()));
        }
        sync_dir(&self.root.join(DATA_DIR).join(db))?;
        sync_dir(&self.root.join(TMP_DIR))?;
        self.remove_in_background(staging.to_path_buf());
        Ok(())
    }

    /// Deletes a published version: renamed out of `data/` first, so it is
    /// never seen half-deleted, then removed.
    pub fn delete_version(&self, db: &str, version: &str) -> Result<(), StoreError> {
        let dir = self.version_dir(db, version);
        if !dir.exists() {
            return Ok(());
        }
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        let trash = self
            .root
            .join(TMP_DIR)
            .join(format!("delete.{db}.{version}.{}.{n}", std::process::id()));
        fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        let db_dir = self.root.join(DATA_DIR).join(db);
        sync_dir(&db_dir)?;
        self.remove_dir(&trash)?;
        // Drop the db directory once its last version is gone.
        if fs::read_dir(&db_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
        {
            let _ = fs::remove_dir(&db_dir);
        }
        Ok(())
    }

    /// Deletes `db`/`version` only if its directory is still the one with
    /// inode `inode` (the copy a retired reader had open), not a rebuild
    /// published under the same name since.
    pub fn delete_version_if(
        &self,
        db: &str,
        version: &str,
        dir: &Path,
        inode: u64,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        match fs::metadata(dir) {
            Ok(m) if m.ino() == inode => self.delete_version(db, version),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(dir)(e)),
        }
    }

    /// Removes a staging directory of a failed build on a thread of its
    /// own, without waiting (see the module comment). If the process exits
    /// first, the next start removes what is left.
    pub fn discard(&self, staging: PathBuf) {
        self.remove_in_background(staging);
    }

    /// Waits until every background removal has ended.
    pub fn wait_for_removals(&self) {
        let mut running = self.removals.running.lock().unwrap();
        while *running > 0 {
            running = self.removals.ended.wait(running).unwrap();
        }
    }

    fn remove_in_background(&self, dir: PathBuf) {
        /// Counts one removal for as long as it lives: dropped at the end of
        /// the thread, or at once if the thread could not be started.
        struct Running(Arc<Removals>);
        impl Drop for Running {
            fn drop(&mut self) {
                *self.0.running.lock().unwrap() -= 1;
                self.0.ended.notify_all();
            }
        }
        *self.removals.running.lock().unwrap() += 1;
        let running = Running(Arc::clone(&self.removals));
        let spawned = std::thread::Builder::new()
            .name("sequinsfs-remove".into())
            .spawn(move || {
                let _running = running;
                let started = std::time::Instant::now();
                match fs::remove_dir_all(&dir) {
                    Ok(()) => tracing::debug!(
                        seconds = started.elapsed().as_secs_f64(),
                        path = %dir.display(),
                        "removed"
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start removing under {}: {e}", self.root.display());
        }
    }

    /// Bytes used by published versions (for metrics).
    pub fn disk_usage(&self) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(path) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.root.join(DATA_DIR))
    }

    /// Renames what earlier processes left under `tmp/` out of the way of
    /// new builds, and removes it in the background.
    fn clear_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.root.join(TMP_DIR);
        for name in sorted_dir_names(&tmp)? {
            let path = tmp.join(&name);
            let leftover = if name.starts_with(LEFTOVER_PREFIX) {
                path
            } else {
                let renamed = tmp.join(format!("{LEFTOVER_PREFIX}{name}"));
                fs::rename(&path, &renamed).map_err(io_err(&path))?;
                renamed
            };
            tracing::info!(path = %leftover.display(), "removing leftover of an interrupted build");
            self.remove_in_background(leftover);
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> Result<(), StoreError> {
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(dir)(e)),
        }
    }
}

fn c_path(path: &Path) -> Result<std::ffi::CString, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StoreError::Invalid(format!("{}: path contains NUL", path.display())))
}

fn sorted_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// fsyncs a directory so that renames and creations in it are durable.
/// Threads fsyncing one version's files at once. Waiting for the disk costs
/// no CPU, and a device with several queues finishes parallel flushes
/// sooner than one after another.
const SYNC_THREADS: usize = 8;

/// fsyncs every file of `files`, several at a time; returns once all are
/// durable, or the first error.
fn sync_files(files: &[PathBuf]) -> Result<(), StoreError> {
    let per_thread = files.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    for path in chunk {
                        File::open(path)
                            .and_then(|f| f.sync_all())
                            .map_err(io_err(path))?;
                    }
                    Ok::<(), StoreError>(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| {
                StoreError::Invalid("a thread fsyncing a version panicked".into())
            })??;
        }
        Ok(())
    })
}

/// Asks the kernel to start writing a just-completed file to disk, without
/// waiting: the fsync before publishing then finds little left to do. Only
/// a hint; errors are ignored (publishing fsyncs every file regardless).
pub(crate) fn start_writeback(path: &Path) {
    let Ok(file) = File::open(path) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor we own and keep open for
    // its duration; offset 0 and length 0 mean the whole file, and
    // SYNC_FILE_RANGE_WRITE only starts writeback of dirty pages.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalStore::open(dir.path()).unwrap();
        let err = LocalStore::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("in use by another sequinsfs process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        LocalStore::open(dir.path()).unwrap();
    }

    #[test]
    fn a_new_build_never_takes_the_name_of_a_leftover_being_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        // What this process will name its first build was left by an
        // earlier process of the same pid (pids come back after a reboot).
        let name = store.staging_dir("db", "2").unwrap();
        fs::write(name.join("part-00000-000.spl"), b"old").unwrap();
        drop(store);
        let store = LocalStore::open(dir.path()).unwrap();
        let staging = store.staging_dir("db", "2").unwrap();
        assert_eq!(staging, name);
        fs::write(staging.join("manifest.json"), b"{}").unwrap();
        store.wait_for_removals();
        let left: Vec<_> = fs::read_dir(&staging)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["manifest.json"]);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 1);
    }

    /// A rebuild of a database's only version (a cluster node picking up
    /// partitions) replaces it, although deleting the old copy drops the
    /// database's directory.
    #[test]
    fn a_rebuild_of_the_only_version_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        for content in [&b"first"[..], b"rebuilt"] {
            let staging = store.staging_dir("db", "1").unwrap();
            fs::write(staging.join(manifest::MANIFEST_FILE), content).unwrap();
            store.publish(&staging, "db", "1").unwrap();
        }
        assert_eq!(store.published().unwrap(), vec![("db".into(), "1".into())]);
        let manifest = store.version_dir("db", "1").join(manifest::MANIFEST_FILE);
        assert_eq!(fs::read(manifest).unwrap(), b"rebuilt");
    }

    #[test]
    fn publish_delete_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let staging = store.staging_dir("db", "1").unwrap();
        fs::write(staging.join(manifest::MANIFEST_FILE), b"{}").unwrap();
        store.publish(&staging, "db", "1").unwrap();
        assert_eq!(store.published().unwrap(), vec![("db".into(), "1".into())]);

        // A build interrupted by a crash, and a version dir with no manifest.
        let half = store.staging_dir("db", "2").unwrap();
        fs::write(half.join("part-00000-000.spl"), b"partial").unwrap();
        fs::create_dir_all(store.version_dir("db", "3")).unwrap();
        drop(store);
        let store = LocalStore::open(dir.path()).unwrap();
        store.wait_for_removals();
        assert!(!half.exists());
        assert_eq!(store.published().unwrap(), vec![("db".into(), "1".into())]);
        assert!(!store.version_dir("db", "3").exists());

        store.delete_version("db", "1").unwrap();
        assert!(store.published().unwrap().is_empty());
        assert!(!dir.path().join("data/db").exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
