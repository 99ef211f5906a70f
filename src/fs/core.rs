//! The filesystem core: every FUSE operation the mount answers, as plain
//! functions over the catalog, with no kernel involved (tests call them
//! directly; `fs::fuse` only translates). This file is the dispatch: which
//! inode a request is about and what answers it.
//!
//! Layout (see the docs): the root holds `.refresh`, `.status`, `.versions/`
//! and one symlink per served database, `<db> -> .versions/<db>/<version>`.
//! `.versions/<db>/` lists the versions still held; a version directory holds
//! `.version` and the keys (see `fs::listing`).
//!
//! The state behind it, one concept per module: inode numbers are
//! stateless (`fs::inode`); the kernel's references pin versions
//! (`fs::pins`); the control files are `fs::control`; attributes and cache
//! lifetimes `fs::attr`; errors `fs::error`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tracing::Level;

use crate::catalog::{Catalog, Version};
use crate::fs::attr::{Attr, CHANGING_TTL, CoreOptions, FOREVER, attr_ttl, symlink_target};
use crate::fs::control::{self, RefreshTrigger};
use crate::fs::counters::RequestCounters;
use crate::fs::error::{FsError, FsResult};
use crate::fs::inode::{self, Inode};
use crate::fs::listing::{self, Child, Cursor};
use crate::fs::pins::Pins;
use crate::naming;

/// A LOOKUP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The name exists; the kernel now holds one more reference to it.
    Found { attr: Attr, ttl: Duration },
    /// It does not, and the kernel may remember that for `ttl` (a negative
    /// entry: node id 0).
    Negative { ttl: Duration },
}

/// One directory entry of a listing; `next` is the offset to resume after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
    pub ttl: Duration,
    pub next: u64,
}

/// The filesystem core; see the module docs.
pub struct FsCore {
    catalog: Arc<Catalog>,
    refresh: Box<dyn RefreshTrigger>,
    options: CoreOptions,
    started: SystemTime,
    counters: RequestCounters,
    pins: Pins,
    /// Database names by id, for `.versions/<db>` inodes. Grows with the
    /// number of databases ever seen, not with keys.
    db_ids: RwLock<Vec<String>>,
    /// Serialises id assignment so a name gets one id.
    db_ids_assign: Mutex<()>,
    refreshes: AtomicU64,
    /// When the set of databases or versions last changed: the mtime of the
    /// root, `.versions/` and `.versions/<db>/`, so the kernel's cached
    /// listings of those directories are refreshed after a change.
    changed_at: Mutex<SystemTime>,
}

/// Offsets of the fixed entries of every directory listing.
const DOT_ENTRIES: u64 = 2;

impl FsCore {
    pub fn new(catalog: Arc<Catalog>, refresh: impl RefreshTrigger, options: CoreOptions) -> Self {
        FsCore {
            catalog,
            refresh: Box::new(refresh),
            options,
            started: SystemTime::now(),
            counters: RequestCounters::default(),
            pins: Pins::default(),
            db_ids: RwLock::new(Vec::new()),
            db_ids_assign: Mutex::new(()),
            refreshes: AtomicU64::new(0),
            changed_at: Mutex::new(SystemTime::now()),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Requests received, per opcode (the adapter counts).
    pub fn counters(&self) -> &RequestCounters {
        &self.counters
    }

    /// How many refreshes `.refresh` has triggered.
    pub fn refreshes_triggered(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Records that the catalog changed (see `changed_at`).
    pub fn note_catalog_change(&self) {
        *self.changed_at.lock().unwrap_or_else(|e| e.into_inner()) = SystemTime::now();
    }

    /// Generations of the versions the kernel still references.
    pub fn pinned_generations(&self) -> Vec<u64> {
        self.pins.generations()
    }

    /// (generation, kernel references) of every pinned version.
    pub fn pin_counts(&self) -> Vec<(u64, i64)> {
        self.pins.counts()
    }

    /// Waits until `done` holds for the pinned generations, or `timeout`
    /// passes (returns whether it held). For tests and shutdown: the kernel
    /// releases references asynchronously (FORGET).
    pub fn wait_for_pins(&self, done: impl Fn(&[u64]) -> bool, timeout: Duration) -> bool {
        self.pins.wait(done, timeout)
    }

    /// Number of versions the kernel still references.
    pub fn pinned_versions(&self) -> usize {
        self.pins.generations().len()
    }

    /// Drops every pin: the kernel connection is gone.
    pub fn unpin_all(&self) {
        self.pins.clear();
    }

    // ----- lookup -------------------------------------------------------

    /// LOOKUP `name` in directory `parent`. A `Found` answer counts as one
    /// kernel reference (balanced by [`FsCore::forget`]).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Entry> {
        let (entry, version) = self.lookup_uncounted(parent, name)?;
        if let Entry::Found { attr, .. } = entry {
            match version {
                Some(version) => self.pin_version(&version),
                None => self.remember(attr.ino),
            }
        }
        Ok(entry)
    }

    /// The answer, and the version it belongs to if it is a version inode.
    fn lookup_uncounted(
        &self,
        parent: u64,
        name: &[u8],
    ) -> FsResult<(Entry, Option<Arc<Version>>)> {
        let changing = |attr| Entry::Found {
            attr,
            ttl: CHANGING_TTL,
        };
        // Entries that always name the same inode.
        let fixed = |attr| Ok((Entry::Found { attr, ttl: FOREVER }, None));
        match decode(parent)? {
            Inode::Root => {
                // No negative entries in the root: a database may appear.
                match name {
                    b".versions" => fixed(self.attr(Inode::VersionsDir)?),
                    b".refresh" => fixed(self.attr(Inode::RefreshFile)?),
                    b".status" => fixed(self.attr(Inode::StatusFile)?),
                    db => {
                        let db = std::str::from_utf8(db).map_err(|_| FsError::not_found())?;
                        let version = self.catalog.current(db).ok_or_else(FsError::not_found)?;
                        let attr = self.version_attr(
                            &version,
                            Inode::Symlink {
                                generation: version.generation(),
                            },
                        )?;
                        Ok((changing(attr), Some(version)))
                    }
                }
            }
            Inode::VersionsDir => {
                let db = std::str::from_utf8(name).map_err(|_| FsError::not_found())?;
                if self.catalog.held_versions(db).is_empty() {
                    return Err(FsError::not_found());
                }
                let id = self.db_id(db);
                fixed(self.attr(Inode::DbDir(id))?)
            }
            Inode::DbDir(id) => {
                let db = self.db_name(id)?;
                let name = std::str::from_utf8(name).map_err(|_| FsError::not_found())?;
                let version = self
                    .catalog
                    .held_version(&db, name)
                    .ok_or_else(FsError::not_found)?;
                let generation = version.generation();
                let attr = self.version_attr(&version, Inode::VersionRoot { generation })?;
                // Immutable; dropped by invalidation once retired.
                Ok((Entry::Found { attr, ttl: FOREVER }, Some(version)))
            }
            Inode::VersionRoot { generation } => {
                let version = self.version(generation, parent)?;
                if name == naming::VERSION_FILE.as_bytes() {
                    let attr = self.version_attr(&version, Inode::VersionFile { generation })?;
                    return Ok((Entry::Found { attr, ttl: FOREVER }, Some(version)));
                }
                let entry = self.lookup_in_version(&version, b"", name)?;
                Ok((entry, Some(version)))
            }
            Inode::PrefixDir {
                generation,
                first,
                depth,
            } => {
                let version = self.version(generation, parent)?;
                let prefix = listing::dir_prefix(version.keys(), first, depth)
                    .map_err(|e| version.context(e))?;
                let entry = self.lookup_in_version(&version, &prefix, name)?;
                Ok((entry, Some(version)))
            }
            _ => Err(FsError::wrong_kind(libc::ENOTDIR, "not a directory")),
        }
    }

    fn lookup_in_version(&self, version: &Version, prefix: &[u8], name: &[u8]) -> FsResult<Entry> {
        let decoded = naming::decode(name);
        let child =
            listing::lookup(version.keys(), prefix, &decoded).map_err(|e| version.context(e))?;
        match child {
            // The directory never changes: the kernel may remember that the
            // name is missing for as long as it likes.
            None => Ok(Entry::Negative { ttl: FOREVER }),
            Some(child) => Ok(Entry::Found {
                attr: self.child_attr(version, child)?,
                ttl: FOREVER,
            }),
        }
    }

    /// FORGET: the kernel dropped `count` references to `ino`.
    pub fn forget(&self, ino: u64, count: u64) {
        if let Some(generation) = Inode::from_number(ino).and_then(Inode::generation) {
            self.pins.release(generation, count);
        }
    }

    /// Counts one kernel reference to `ino` (a LOOKUP or READDIRPLUS entry
    /// the kernel accepted).
    pub fn remember(&self, ino: u64) {
        let Some(generation) = Inode::from_number(ino).and_then(Inode::generation) else {
            return;
        };
        let version = self
            .pins
            .version(generation)
            .or_else(|| self.find_version(generation));
        self.pins.adjust(generation, version.as_ref(), 1);
    }

    fn pin_version(&self, version: &Arc<Version>) {
        self.pins.add(version.generation(), version, 1);
    }

    // ----- attributes ---------------------------------------------------

    /// GETATTR, with the attribute TTL.
    pub fn getattr(&self, ino: u64) -> FsResult<(Attr, Duration)> {
        let inode = decode(ino)?;
        let ttl = attr_ttl(inode);
        let attr = match inode.generation() {
            Some(generation) => {
                let version = self.version(generation, ino)?;
                self.version_attr(&version, inode)?
            }
            None => self.attr(inode)?,
        };
        Ok((attr, ttl))
    }

    fn attr(&self, inode: Inode) -> FsResult<Attr> {
        match inode {
            Inode::Root | Inode::VersionsDir | Inode::DbDir(_) => {
                let changed = *self.changed_at.lock().unwrap_or_else(|e| e.into_inner());
                self.options.dir(inode, changed)
            }
            // Writable by the owner only: `touch` by anyone else is refused
            // by the kernel (and again by `setattr`).
            Inode::RefreshFile => self.options.file(inode, 0, 0o644, self.started),
            Inode::StatusFile => {
                let size = self.status_json().len() as u64;
                self.options.file(inode, size, 0o444, SystemTime::now())
            }
            other => {
                let generation = other.generation().unwrap_or_default();
                let version = self.version(generation, inode.number()?)?;
                self.version_attr(&version, other)
            }
        }
    }

    fn version_attr(&self, version: &Version, inode: Inode) -> FsResult<Attr> {
        self.options.version_attr(version, inode)
    }

    fn child_attr(&self, version: &Version, child: Child) -> FsResult<Attr> {
        let generation = version.generation();
        let inode = match child {
            Child::File { ordinal } => Inode::Key {
                generation,
                ordinal,
            },
            Child::Dir { first, depth } => Inode::PrefixDir {
                generation,
                first,
                depth,
            },
        };
        self.version_attr(version, inode)
    }

    // ----- contents -----------------------------------------------------

    /// READLINK of a per-database symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match decode(ino)? {
            Inode::Symlink { generation } => {
                let version = self.version(generation, ino)?;
                Ok(symlink_target(&version).into_bytes())
            }
            _ => Err(FsError::wrong_kind(libc::EINVAL, "not a symlink")),
        }
    }

    /// READ `size` bytes at `offset`; `reply` gets the bytes (borrowed from
    /// the version's mapping where possible).
    pub fn read<R>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let slice = |bytes: &[u8]| -> R {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            reply(bytes.get(start..end).unwrap_or_default())
        };
        match decode(ino)? {
            Inode::Key {
                generation,
                ordinal,
            } => {
                let version = self.version(generation, ino)?;
                let keys = version.keys();
                let key = keys.key_at(ordinal).map_err(|e| version.context(e))?;
                let value = version.get(key)?.ok_or_else(|| {
                    FsError::damaged(format!(
                        "{} version {}: key at ordinal {ordinal} has no value",
                        version.db(),
                        version.name()
                    ))
                })?;
                Ok(slice(&value))
            }
            Inode::VersionFile { generation } => {
                let version = self.version(generation, ino)?;
                Ok(slice(control::version_file(&version).as_bytes()))
            }
            Inode::StatusFile => Ok(slice(self.status_json().as_bytes())),
            Inode::RefreshFile => Ok(slice(b"")),
            _ => Err(FsError::wrong_kind(libc::EISDIR, "is a directory")),
        }
    }

    /// `.status`: every database with its versions, states, progress and
    /// errors, as pretty JSON with a trailing newline.
    pub fn status_json(&self) -> String {
        control::status_json(&self.catalog)
    }

    // ----- writes -------------------------------------------------------

    /// SETATTR. Only a time update of `.refresh` (what `touch` sends) by the
    /// mount's owner or root is allowed: it starts a refresh and returns at
    /// once. Everything else is EROFS.
    pub fn setattr(&self, ino: u64, caller_uid: u32, times_only: bool) -> FsResult<Attr> {
        if decode(ino)? != Inode::RefreshFile || !times_only {
            return Err(FsError::read_only());
        }
        if caller_uid != 0 && caller_uid != self.options.uid {
            return Err(FsError::new(
                libc::EACCES,
                Level::DEBUG,
                format!("uid {caller_uid} may not refresh this mount"),
            ));
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.refresh.trigger();
        tracing::info!(uid = caller_uid, "refresh requested through .refresh");
        self.attr(Inode::RefreshFile)
    }

    // ----- listing ------------------------------------------------------

    /// READDIR(PLUS) of `ino` from `offset` (0 = start; otherwise a `next`
    /// of an earlier entry). `emit` returns `false` when the reply is full.
    /// Offsets are stable: a listing can resume from any of them.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut emit: impl FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let inode = decode(ino)?;
        let (dir_attr, _) = self.getattr(ino)?;
        let parent_ino = match inode {
            Inode::VersionsDir => inode::ROOT,
            Inode::DbDir(_) => inode::VERSIONS_DIR,
            _ => ino,
        };
        let parent_attr = match self.getattr(parent_ino) {
            Ok((attr, _)) => attr,
            Err(_) => dir_attr,
        };
        let dots = [(".", dir_attr), ("..", parent_attr)];
        for (i, (name, attr)) in dots.into_iter().enumerate() {
            let i = i as u64;
            if offset <= i
                && !emit(DirEntry {
                    name: name.to_string(),
                    attr,
                    ttl: CHANGING_TTL,
                    next: i + 1,
                })
            {
                return Ok(());
            }
        }
        let offset = offset.max(DOT_ENTRIES);
        match inode {
            Inode::Root | Inode::VersionsDir | Inode::DbDir(_) => {
                let entries = self.small_dir(inode)?;
                for (i, (name, attr)) in entries.into_iter().enumerate() {
                    let next = DOT_ENTRIES + i as u64 + 1;
                    // Only the per-database symlinks change their target.
                    let ttl = match Inode::from_number(attr.ino) {
                        Some(Inode::Symlink { .. }) | None => CHANGING_TTL,
                        Some(inode) => attr_ttl(inode),
                    };
                    if next > offset
                        && !emit(DirEntry {
                            name,
                            attr,
                            ttl,
                            next,
                        })
                    {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Inode::VersionRoot { generation } | Inode::PrefixDir { generation, .. } => {
                let version = self.version(generation, ino)?;
                let prefix = match inode {
                    Inode::PrefixDir { first, depth, .. } => {
                        listing::dir_prefix(version.keys(), first, depth)
                            .map_err(|e| version.context(e))?
                    }
                    _ => Vec::new(),
                };
                // The version root lists `.version` first.
                let mut keys_base = DOT_ENTRIES;
                if prefix.is_empty() {
                    keys_base += 1;
                    if offset < keys_base {
                        let attr =
                            self.version_attr(&version, Inode::VersionFile { generation })?;
                        let entry = DirEntry {
                            name: naming::VERSION_FILE.to_string(),
                            attr,
                            ttl: FOREVER,
                            next: keys_base,
                        };
                        if !emit(entry) {
                            return Ok(());
                        }
                    }
                }
                let cursor = Cursor::from_u64(offset.max(keys_base) - keys_base);
                let mut failure = None;
                listing::list(version.keys(), &prefix, cursor, |listed| {
                    match self.child_attr(&version, listed.child) {
                        Ok(attr) => emit(DirEntry {
                            name: listed.name,
                            attr,
                            ttl: FOREVER,
                            next: keys_base + listed.next.to_u64(),
                        }),
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                })
                .map_err(|e| version.context(e))?;
                failure.map_or(Ok(()), Err)
            }
            _ => Err(FsError::wrong_kind(libc::ENOTDIR, "not a directory")),
        }
    }

    /// The entries of the root, `.versions/` and `.versions/<db>/`.
    fn small_dir(&self, inode: Inode) -> FsResult<Vec<(String, Attr)>> {
        let mut out = Vec::new();
        match inode {
            Inode::Root => {
                out.push((".refresh".to_string(), self.attr(Inode::RefreshFile)?));
                out.push((".status".to_string(), self.attr(Inode::StatusFile)?));
                out.push((".versions".to_string(), self.attr(Inode::VersionsDir)?));
                for version in self.catalog.served() {
                    let attr = self.version_attr(
                        &version,
                        Inode::Symlink {
                            generation: version.generation(),
                        },
                    )?;
                    out.push((version.db().to_string(), attr));
                }
            }
            Inode::VersionsDir => {
                for db in self.catalog.database_names() {
                    if !self.catalog.held_versions(&db).is_empty() {
                        let attr = self.attr(Inode::DbDir(self.db_id(&db)))?;
                        out.push((db, attr));
                    }
                }
            }
            Inode::DbDir(id) => {
                let db = self.db_name(id)?;
                for version in self.catalog.held_versions(&db) {
                    let attr = self.version_attr(
                        &version,
                        Inode::VersionRoot {
                            generation: version.generation(),
                        },
                    )?;
                    out.push((version.name().to_string(), attr));
                }
            }
            _ => {}
        }
        Ok(out)
    }

    // ----- helpers ------------------------------------------------------

    /// The version an inode of generation `generation` belongs to: pinned
    /// (the kernel holds one of its inodes), or still in the catalog.
    fn version(&self, generation: u64, ino: u64) -> FsResult<Arc<Version>> {
        self.pins
            .version(generation)
            .or_else(|| self.find_version(generation))
            .ok_or_else(|| FsError::stale(ino))
    }

    fn find_version(&self, generation: u64) -> Option<Arc<Version>> {
        self.catalog
            .database_names()
            .iter()
            .flat_map(|db| self.catalog.held_versions(db))
            .find(|v| v.generation() == generation)
    }

    /// The id of `.versions/<db>`, assigned on first use and never reused.
    pub fn db_id(&self, db: &str) -> u32 {
        if let Some(id) = self.find_db_id(db) {
            return id;
        }
        let _assigning = self.db_ids_assign.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = self.find_db_id(db) {
            return id;
        }
        let mut ids = self.db_ids.write().unwrap_or_else(|e| e.into_inner());
        ids.push(db.to_string());
        u32::try_from(ids.len() - 1).unwrap_or(u32::MAX)
    }

    fn find_db_id(&self, db: &str) -> Option<u32> {
        let ids = self.db_ids.read().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .position(|name| name == db)
            .and_then(|i| u32::try_from(i).ok())
    }

    fn db_name(&self, id: u32) -> FsResult<String> {
        let ids = self.db_ids.read().unwrap_or_else(|e| e.into_inner());
        ids.get(id as usize)
            .cloned()
            .ok_or_else(|| FsError::stale(u64::from(id)))
    }
}

fn decode(ino: u64) -> FsResult<Inode> {
    Inode::from_number(ino).ok_or_else(|| FsError::stale(ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::InMemoryVersionData;
    use crate::fs::attr::FileKind;

    fn version(db: &str, name: &str, pairs: &[(&[u8], &[u8])]) -> Arc<Version> {
        let data = InMemoryVersionData::new(pairs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
        Version::new(db, name, SystemTime::UNIX_EPOCH, "test", 1, Box::new(data))
    }

    fn core_with(versions: &[Arc<Version>]) -> FsCore {
        let catalog = Catalog::new();
        for v in versions {
            catalog.publish(Arc::clone(v), "test".into(), Duration::from_secs(60));
        }
        FsCore::new(
            catalog,
            || {},
            CoreOptions {
                uid: 1000,
                gid: 1000,
            },
        )
    }

    fn found(entry: Entry) -> Attr {
        match entry {
            Entry::Found { attr, .. } => attr,
            Entry::Negative { .. } => panic!("expected an entry"),
        }
    }

    fn read_all(core: &FsCore, ino: u64) -> Vec<u8> {
        core.read(ino, 0, 1 << 20, |b| b.to_vec()).unwrap()
    }

    fn list(core: &FsCore, ino: u64, offset: u64) -> Vec<DirEntry> {
        let mut out = Vec::new();
        core.readdir(ino, offset, |e| {
            out.push(e);
            true
        })
        .unwrap();
        out
    }

    fn names(entries: &[DirEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn layout_symlink_versions_and_control_files() {
        let v = version(
            "baby-names",
            "1",
            &[(b"1881/boy", b"John"), (b"1881/girl", b"Mary")],
        );
        let core = core_with(&[v]);
        let link = found(core.lookup(inode::ROOT, b"baby-names").unwrap());
        assert_eq!(link.kind, FileKind::Symlink);
        assert_eq!(core.readlink(link.ino).unwrap(), b".versions/baby-names/1");
        assert_eq!(
            names(&list(&core, inode::ROOT, 0)),
            [".", "..", ".refresh", ".status", ".versions", "baby-names"]
        );
        let versions = found(core.lookup(inode::ROOT, b".versions").unwrap());
        let db_dir = found(core.lookup(versions.ino, b"baby-names").unwrap());
        assert_eq!(names(&list(&core, db_dir.ino, 0)), [".", "..", "1"]);
        let root = found(core.lookup(db_dir.ino, b"1").unwrap());
        assert_eq!(root.perm, 0o555);
        assert_eq!(
            names(&list(&core, root.ino, 0)),
            [".", "..", ".version", "1881"]
        );
        let dot_version = found(core.lookup(root.ino, b".version").unwrap());
        assert_eq!(read_all(&core, dot_version.ino), b"1\n");
        let dir = found(core.lookup(root.ino, b"1881").unwrap());
        assert_eq!(dir.kind, FileKind::Directory);
        let boy = found(core.lookup(dir.ino, b"boy").unwrap());
        assert_eq!(
            (boy.kind, boy.perm, boy.size, boy.uid),
            (FileKind::File, 0o444, 4, 1000)
        );
        assert_eq!(boy.mtime, SystemTime::UNIX_EPOCH);
        assert_eq!(read_all(&core, boy.ino), b"John");
        assert_eq!(core.read(boy.ino, 1, 2, |b| b.to_vec()).unwrap(), b"oh");
        assert_eq!(core.read(boy.ino, 99, 2, |b| b.to_vec()).unwrap(), b"");
        // The flat name reaches the same inode.
        let flat = found(core.lookup(root.ino, b"1881%2Fboy").unwrap());
        assert_eq!(flat.ino, boy.ino);
        let status = String::from_utf8(read_all(&core, inode::STATUS_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(json["databases"][0]["name"], "baby-names");
        assert_eq!(json["databases"][0]["versions"][0]["state"], "ACTIVE");
    }

    #[test]
    fn missing_names_get_negative_entries_only_inside_versions() {
        let v = version("db", "1", &[(b"k", b"v")]);
        let core = core_with(std::slice::from_ref(&v));
        assert_eq!(
            core.lookup(inode::ROOT, b"nope").unwrap_err().errno(),
            libc::ENOENT
        );
        let root = Inode::VersionRoot {
            generation: v.generation(),
        }
        .number()
        .unwrap();
        assert_eq!(
            core.lookup(root, b"nope").unwrap(),
            Entry::Negative { ttl: FOREVER }
        );
    }

    #[test]
    fn writes_are_read_only_and_refresh_is_owner_only() {
        let triggered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&triggered);
        let trigger = move || {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        let options = CoreOptions {
            uid: 1000,
            gid: 1000,
        };
        let core = FsCore::new(Catalog::new(), trigger, options);
        assert_eq!(
            core.setattr(inode::STATUS_FILE, 0, true)
                .unwrap_err()
                .errno(),
            libc::EROFS
        );
        assert_eq!(
            core.setattr(inode::REFRESH_FILE, 0, false)
                .unwrap_err()
                .errno(),
            libc::EROFS
        );
        assert_eq!(
            core.setattr(inode::REFRESH_FILE, 4242, true)
                .unwrap_err()
                .errno(),
            libc::EACCES
        );
        assert_eq!(core.refreshes_triggered(), 0);
        core.setattr(inode::REFRESH_FILE, 1000, true).unwrap();
        core.setattr(inode::REFRESH_FILE, 0, true).unwrap();
        assert_eq!(core.refreshes_triggered(), 2);
        assert_eq!(triggered.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn readdir_resumes_from_any_offset() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..50)
            .map(|i| (format!("d{}/k{i:02}", i % 3).into_bytes(), vec![b'x'; i]))
            .chain((0..20).map(|i| (format!("f{i:02}").into_bytes(), vec![])))
            .chain([(b"/odd".to_vec(), vec![])])
            .collect();
        let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let v = version("db", "1", &refs);
        let core = core_with(std::slice::from_ref(&v));
        let root = Inode::VersionRoot {
            generation: v.generation(),
        }
        .number()
        .unwrap();
        let all = list(&core, root, 0);
        assert_eq!(all.len(), 2 + 1 + 3 + 20 + 1);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(list(&core, root, e.next), all[i + 1..], "after {}", e.name);
        }
        let d1 = all.iter().find(|e| e.name == "d1").unwrap();
        let inner = list(&core, d1.attr.ino, 0);
        assert_eq!(inner.len(), 2 + 17);
        for (i, e) in inner.iter().enumerate() {
            assert_eq!(list(&core, d1.attr.ino, e.next), inner[i + 1..]);
        }
    }

    #[test]
    fn kernel_references_pin_an_old_version_until_forgotten() {
        let v1 = version("db", "1", &[(b"k", b"old")]);
        let catalog = Catalog::new();
        catalog.publish(Arc::clone(&v1), "p".into(), Duration::ZERO);
        let core = FsCore::new(Arc::clone(&catalog), || {}, CoreOptions::default());
        let link = found(core.lookup(inode::ROOT, b"db").unwrap());
        let root = Inode::VersionRoot {
            generation: v1.generation(),
        }
        .number()
        .unwrap();
        let key = found(core.lookup(root, b"k").unwrap());
        drop(v1);
        catalog.publish(
            version("db", "2", &[(b"k", b"new")]),
            "p".into(),
            Duration::ZERO,
        );
        // Grace over, but the kernel still holds inodes of version 1.
        let now = std::time::Instant::now() + Duration::from_secs(1);
        assert!(catalog.take_expired(now).is_empty());
        assert_eq!(read_all(&core, key.ino), b"old");
        core.forget(key.ino, 1);
        core.forget(link.ino, 1);
        assert_eq!(core.pinned_versions(), 0);
        assert_eq!(catalog.take_expired(now).len(), 1);
        assert_eq!(
            core.read(key.ino, 0, 10, |b| b.to_vec())
                .unwrap_err()
                .errno(),
            libc::ESTALE
        );
    }

    #[test]
    fn damaged_data_is_eio_with_its_cause() {
        let v = version("db", "1", &[(b"k", b"v")]);
        let core = core_with(std::slice::from_ref(&v));
        let generation = v.generation();
        let bad_dir = Inode::PrefixDir {
            generation,
            first: 0,
            depth: 3,
        };
        let err = core.lookup(bad_dir.number().unwrap(), b"x").unwrap_err();
        assert_eq!((err.errno(), err.level()), (libc::EIO, Level::ERROR));
        assert!(
            err.chain()
                .to_string()
                .contains("db version 1: directory inode"),
            "{}",
            err.chain()
        );
        let missing = Inode::Key {
            generation,
            ordinal: 7,
        };
        let err = core.getattr(missing.number().unwrap()).unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        let root = Inode::VersionRoot { generation }.number().unwrap();
        assert_eq!(core.lookup(root, b"k").map(|e| found(e).size).unwrap(), 1);
        let missing = core.lookup(inode::ROOT, b"nope").unwrap_err();
        assert_eq!(
            (missing.errno(), missing.level()),
            (libc::ENOENT, Level::TRACE)
        );
    }
}
