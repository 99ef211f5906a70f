//! Kernel cache invalidation: what a catalog change or a retired version
//! makes stale in the kernel's caches, pushed from threads that never serve
//! FUSE requests.
//!
//! Inside a version everything is cached for a hundred years, so only two
//! things ever need telling: on a switch (or a database's removal) the
//! catalog listener drops the database's symlink and the cached listings of
//! the root and `.versions/` (`notify_inval_entry`/`notify_inval_inode`),
//! from the publishing thread; and a sweep thread periodically drops the
//! unused entries of retired versions, so their pins are released and the
//! catalog can delete them. Never from a request thread and holding no
//! locks, because the kernel takes the directory's lock to invalidate an
//! entry of it, and a request thread may be holding it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};

use crate::catalog::{Catalog, CatalogEvent};
use crate::fs::core::FsCore;
use crate::fs::inode::{self, Inode};

/// Sweeps between two invalidations of the same `.versions/<db>` (see
/// `drop_retired_entries`): 30 s at the default 10 s interval.
const DEEP_EVERY: u64 = 3;

/// What the sweeps remember.
#[derive(Default)]
struct Sweeps {
    /// Sweeps so far.
    sweep: u64,
    /// Per retired generation, the sweeps that found it pinned.
    pinned: HashMap<u64, u32>,
    /// Per database, the sweep that last invalidated `.versions/<db>`.
    last_deep: HashMap<String, u64>,
}

/// Tells the sweep thread to end.
pub(super) struct Stop;

/// Tells the kernel to forget what a catalog change made stale: the
/// database's symlink in the root, and the cached listings of the root,
/// `.versions/` and `.versions/<db>/`.
pub(super) fn push_change(core: &FsCore, notifier: &Notifier, event: &CatalogEvent) {
    let db = match event {
        CatalogEvent::Switched { db, .. }
        | CatalogEvent::Removed { db }
        | CatalogEvent::Deleted { db, .. } => db,
        // Nothing the kernel caches changes until a version is served.
        CatalogEvent::Building { .. } => return,
    };
    core.note_catalog_change();
    let started = Instant::now();
    let root = INodeNo(inode::ROOT);
    let versions = INodeNo(inode::VERSIONS_DIR);
    let db_dir = INodeNo(Inode::DbDir(core.db_id(db)).number().unwrap_or(0));
    let results = [
        notifier.inval_entry(root, OsStr::new(db)),
        notifier.inval_inode(root, 0, 0),
        notifier.inval_inode(versions, 0, 0),
        notifier.inval_inode(db_dir, 0, 0),
    ];
    for result in results {
        log_invalidation(result);
    }
    tracing::info!(?event, elapsed = ?started.elapsed(), "catalog change pushed to the kernel");
}

/// The sweep thread: every `sweep`, asks the kernel to drop unused entries
/// of versions that are no longer current (see `drop_retired_entries`).
pub(super) fn sweep_loop(
    core: &FsCore,
    notifier: &Notifier,
    stop: &mpsc::Receiver<Stop>,
    sweep: Duration,
) {
    let mut seen = Sweeps::default();
    loop {
        match stop.recv_timeout(sweep) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop_retired_entries(core, notifier, &mut seen);
            }
            Ok(Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Invalidates `.versions/<db>/<version>` for every pinned version that is
/// not its database's current one (nor the one about to be): the kernel drops the unused dentries
/// under it and sends FORGETs, which release the pin. Files still open and
/// working directories keep their inodes (and the version) alive.
///
/// A retired version still pinned after that (a reader had a file open,
/// which kept its directory; the kernel unhashed it, so only its parent can
/// reach it) is dropped through `.versions/<db>` itself. That prunes the
/// unused entries of every version of the database, the served one too (a
/// cold cliff for its readers), so it is done only from the 2nd
/// sweep that finds a retired version still pinned, and at most every
/// [`DEEP_EVERY`] sweeps per database: never in the sweep right after a
/// switch, whose per-version invalidation nearly always releases the old
/// version on its own, and not every sweep while a reader keeps an old
/// file open for long.
fn drop_retired_entries(core: &FsCore, notifier: &Notifier, seen: &mut Sweeps) {
    let pinned = core.pinned_generations();
    seen.sweep += 1;
    seen.pinned
        .retain(|generation, _| pinned.contains(generation));
    if pinned.is_empty() {
        return;
    }
    let catalog: &Catalog = core.catalog();
    for db in catalog.database_names() {
        let current = catalog.current(&db).map(|v| v.id());
        // A version being warmed up before its switch is kept warm.
        let prepared = catalog.prepared(&db).map(|v| v.id());
        let db_dir = INodeNo(Inode::DbDir(core.db_id(&db)).number().unwrap_or(0));
        let mut retired_pinned = false;
        let mut deep = false;
        // An offline database has no current version: all of its pinned
        // versions are dropped.
        for version in catalog.held_versions_even_offline(&db) {
            let pinned_here = core
                .generation_of(&version)
                .is_some_and(|generation| pinned.contains(&generation));
            if Some(version.id()) != current
                && Some(version.id()) != prepared
                && let Some(generation) = core.generation_of(&version)
                && pinned_here
            {
                retired_pinned = true;
                let sweeps = seen.pinned.entry(generation).or_insert(0);
                *sweeps = sweeps.saturating_add(1);
                deep |= *sweeps >= 2;
                log_invalidation(notifier.inval_entry(db_dir, OsStr::new(version.name())));
            }
        }
        if retired_pinned {
            // A lookup of `<db>` that raced with a switch may have left the
            // old symlink cached; drop it too (the next walk looks it up).
            log_invalidation(notifier.inval_entry(INodeNo(inode::ROOT), OsStr::new(&db)));
        }
        let last = seen.last_deep.get(&db).copied();
        if deep && last.is_none_or(|last| seen.sweep >= last + DEEP_EVERY) {
            seen.last_deep.insert(db.clone(), seen.sweep);
            // And `.versions/<db>` itself: a version directory the kernel
            // already unhashed is only reachable (and prunable) from there.
            log_invalidation(notifier.inval_entry(INodeNo(inode::VERSIONS_DIR), OsStr::new(&db)));
        }
    }
}

fn log_invalidation(result: io::Result<()>) {
    if let Err(err) = result {
        tracing::debug!("kernel invalidation failed: {err}");
    }
}
