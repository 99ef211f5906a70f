//! The fuser 0.18 adapter: translates kernel requests into `FsCore` calls,
//! and owns what only a real mount has (session threads, INIT capabilities,
//! mount options, kernel cache invalidation).
//!
//! Kernel caching is what makes warm reads nearly as fast as tmpfs (see the
//! FUSE performance notes in the docs): inside a version everything is
//! cached for a hundred years, missing keys get negative entries, and `open`
//! and `opendir` answer ENOSYS, which the kernel turns into "never send
//! OPEN/RELEASE again and keep the page cache". A warm `cat` of a key then
//! sends no request at all. Only the per-database symlink changes; on a
//! switch the catalog listener tells the kernel to forget it
//! (`notify_inval_entry` on the root) from the publishing thread, and a
//! sweep thread later drops retired versions' entries: never from a request
//! thread and holding no locks, because the kernel takes the directory lock.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, SessionACL, TimeOrNow,
    WriteFlags,
};

use crate::catalog::{Catalog, CatalogEvent};
use crate::fs::core::{Attr, CoreOptions, Entry, FileKind, FsCore, FsError, attr_ttl};
use crate::fs::counters::{Op, RequestCounters};
use crate::fs::inode::{self, Inode};
use crate::naming::NAME_MAX;
use crate::refresh::RefreshHandle;
use crate::wakeup::Activity;

/// How the mount is presented and run.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Owner of every file; the daemon's user if `None`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Let other users read the mount (`allow_other`; needs
    /// `user_allow_other` in /etc/fuse.conf when not root).
    pub allow_other: bool,
    /// Session threads. Four keeps a slow page fault on a cold mapping from
    /// stalling other requests, with a thread free for FORGET bursts;
    /// mountpoint-s3 found no gain beyond a few on small machines.
    pub threads: usize,
    /// How often the invalidation thread asks the kernel to drop cached
    /// entries of versions that are no longer current, so that their pins
    /// are released and the catalog can delete them once their grace period
    /// ends. Ten seconds is short next to the default one-minute grace.
    pub retired_sweep_interval: Duration,
    /// Mount read-only in the kernel (`ro`). The kernel then stops marking a
    /// file's access time stale after each first read, so a warm `cat`
    /// (which `fstat`s) sends no request at all instead of one GETATTR; but
    /// it also refuses `touch .refresh` itself, before the daemon sees it.
    /// Off by default because `.refresh` is part of the interface.
    pub kernel_read_only: bool,
    /// Told of every request, for `--idle-poll` (see [`crate::wakeup`]).
    pub activity: Option<Activity>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            uid: None,
            gid: None,
            allow_other: false,
            threads: 4,
            retired_sweep_interval: Duration::from_secs(10),
            kernel_read_only: false,
            activity: None,
        }
    }
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {0} does not exist")]
    MissingMountPoint(PathBuf),
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is already mounted (unmount it first: fusermount3 -u {0})")]
    AlreadyMounted(PathBuf),
    #[error("cannot mount at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A live mount. Unmounts on drop.
pub struct MountHandle {
    mountpoint: PathBuf,
    core: Arc<FsCore>,
    session: Option<BackgroundSession>,
    /// What the catalog listener notifies through; emptied on unmount so
    /// the listener (which the catalog keeps) lets go of the connection.
    notifier: Arc<Mutex<Option<Notifier>>>,
    events: mpsc::Sender<Stop>,
    invalidator: Option<JoinHandle<()>>,
}

/// Tells the sweep thread to end.
struct Stop;

/// Mounts `catalog` at `mountpoint` and returns once the kernel has finished
/// INIT (the mount is usable). A stale mount point left by a crashed daemon
/// ("Transport endpoint is not connected") is detached first.
pub fn mount(
    catalog: Arc<Catalog>,
    refresh: RefreshHandle,
    mountpoint: &Path,
    options: MountOptions,
) -> Result<MountHandle, MountError> {
    check_mount_point(mountpoint)?;
    let defaults = CoreOptions::default();
    let core = Arc::new(FsCore::new(
        Arc::clone(&catalog),
        refresh,
        CoreOptions {
            uid: options.uid.unwrap_or(defaults.uid),
            gid: options.gid.unwrap_or(defaults.gid),
        },
    ));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sequins".into()),
        MountOption::Subtype("sequins".into()),
        // Permission checks in the kernel: no ACCESS requests.
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        // Not `ro` unless asked for: with it the kernel refuses `touch
        // .refresh` before the daemon sees it. Every write-like request is
        // answered EROFS here either way.
    ];
    if options.kernel_read_only {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    let adapter = FuseAdapter {
        core: Arc::clone(&core),
        activity: options.activity.clone(),
    };
    let io_error = |source| MountError::Io {
        path: mountpoint.to_path_buf(),
        source,
    };
    // Session::new mounts and completes the INIT handshake.
    let session = Session::new(adapter, mountpoint, &config).map_err(io_error)?;
    let notifier = session.notifier();
    let session = session.spawn().map_err(io_error)?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");

    // Catalog changes are pushed to the kernel by the listener itself: the
    // catalog calls it on the publishing (refresh) thread after releasing
    // its locks, which is never a FUSE request thread, so the kernel may
    // take the root's lock for the invalidation without deadlocking, and a
    // switch is visible to every path walk by the time `publish` returns.
    let shared_notifier = Arc::new(Mutex::new(Some(notifier.clone())));
    {
        let core = Arc::clone(&core);
        let shared = Arc::clone(&shared_notifier);
        catalog.on_change(move |event| {
            let notifier = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(notifier) = notifier {
                push_change(&core, &notifier, event);
            }
        });
    }
    let (events, received) = mpsc::channel();
    let invalidator = {
        let core = Arc::clone(&core);
        let sweep = options.retired_sweep_interval;
        std::thread::Builder::new()
            .name("sequinsfs-inval".into())
            .spawn(move || sweep_loop(&core, &notifier, &received, sweep))
            .map_err(io_error)?
    };
    Ok(MountHandle {
        mountpoint: mountpoint.to_path_buf(),
        core,
        notifier: shared_notifier,
        session: Some(session),
        events,
        invalidator: Some(invalidator),
    })
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session is still running (false once the file system
    /// was unmounted from outside, e.g. with `fusermount3 -u`).
    pub fn is_mounted(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| !session.guard.is_finished())
    }

    /// Requests received per opcode.
    pub fn counters(&self) -> &RequestCounters {
        self.core.counters()
    }

    /// The filesystem core behind the mount.
    pub fn core(&self) -> &Arc<FsCore> {
        &self.core
    }

    /// Unmounts. If the mount is busy (a process has a file open or its
    /// working directory inside), detaches it lazily instead: it disappears
    /// from the namespace now and goes away when the last user is done.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), MountError> {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = self.events.send(Stop);
        if let Some(thread) = self.invalidator.take() {
            let _ = thread.join();
        }
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.guard.is_finished() {
            // Unmounted from outside (`umount`, `fusermount3 -u`).
            if let Err(err) = session.join() {
                tracing::debug!("session ended with: {err}");
            }
            self.core.unpin_all();
            tracing::info!(mountpoint = %self.mountpoint.display(), "was unmounted from outside");
            return Ok(());
        }
        let result = match session.umount_and_join() {
            Ok(()) => {
                tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
                Ok(())
            }
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(
                    mountpoint = %self.mountpoint.display(),
                    "mount point busy; detaching lazily (it goes away when the last user is done)"
                );
                lazy_unmount(&self.mountpoint).map_err(|source| MountError::Io {
                    path: self.mountpoint.clone(),
                    source,
                })
            }
            // Not mounted any more: someone unmounted it meanwhile.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            Err(source) => Err(MountError::Io {
                path: self.mountpoint.clone(),
                source,
            }),
        };
        self.core.unpin_all();
        result
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_inner() {
            tracing::warn!("unmount of {} failed: {err}", self.mountpoint.display());
        }
    }
}

/// Checks the mount point, recovering a stale one.
fn check_mount_point(mountpoint: &Path) -> Result<(), MountError> {
    match std::fs::metadata(mountpoint) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(MountError::NotADirectory(mountpoint.to_path_buf())),
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(
                mountpoint = %mountpoint.display(),
                "stale mount point (its daemon died); detaching it"
            );
            lazy_unmount(mountpoint).map_err(|source| MountError::Io {
                path: mountpoint.to_path_buf(),
                source,
            })?;
            return check_mount_point(mountpoint);
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::MissingMountPoint(mountpoint.to_path_buf()));
        }
        Err(source) => {
            return Err(MountError::Io {
                path: mountpoint.to_path_buf(),
                source,
            });
        }
    }
    if is_mount_point(mountpoint) {
        return Err(MountError::AlreadyMounted(mountpoint.to_path_buf()));
    }
    Ok(())
}

/// Whether `path` is the mount point of some mount in our namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == canonical.as_os_str().as_bytes())
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && let Ok(text) = std::str::from_utf8(octal)
            && let Ok(value) = u8::from_str_radix(text, 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `umount -l`: detach now, clean up when no longer busy.
pub fn lazy_unmount(path: &Path) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        // Not root: fusermount3 is setuid and may unmount our own mounts.
        let status = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "-q"])
            .arg(path)
            .status()?;
        if status.success() {
            return Ok(());
        }
    }
    Err(err)
}

/// Tells the kernel to forget what a catalog change made stale: the
/// database's symlink in the root, and the cached listings of the root,
/// `.versions/` and `.versions/<db>/`.
fn push_change(core: &FsCore, notifier: &Notifier, event: &CatalogEvent) {
    let db = match event {
        CatalogEvent::Switched { db, .. }
        | CatalogEvent::Removed { db }
        | CatalogEvent::Deleted { db, .. } => db,
        // Nothing the kernel caches changes until a version is served.
        CatalogEvent::Building { .. } => return,
    };
    core.note_catalog_change();
    let started = std::time::Instant::now();
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
/// Never a FUSE request thread, and it holds no locks while notifying.
fn sweep_loop(core: &FsCore, notifier: &Notifier, stop: &mpsc::Receiver<Stop>, sweep: Duration) {
    loop {
        match stop.recv_timeout(sweep) {
            Err(mpsc::RecvTimeoutError::Timeout) => drop_retired_entries(core, notifier),
            Ok(Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Invalidates `.versions/<db>/<version>` for every pinned version that is
/// not its database's current one: the kernel drops the unused dentries
/// under it and sends FORGETs, which release the pin. Files still open and
/// working directories keep their inodes (and the version) alive.
fn drop_retired_entries(core: &FsCore, notifier: &Notifier) {
    let pinned = core.pinned_generations();
    if pinned.is_empty() {
        return;
    }
    let catalog: &Catalog = core.catalog();
    for db in catalog.database_names() {
        let current = catalog.current(&db).map(|v| v.generation());
        let db_dir = INodeNo(Inode::DbDir(core.db_id(&db)).number().unwrap_or(0));
        let mut retired_pinned = false;
        for version in catalog.held_versions(&db) {
            if Some(version.generation()) != current && pinned.contains(&version.generation()) {
                retired_pinned = true;
                log_invalidation(notifier.inval_entry(db_dir, OsStr::new(version.name())));
            }
        }
        if retired_pinned {
            // A lookup of `<db>` that raced with a switch may have left the
            // old symlink cached; drop it too (the next walk looks it up).
            log_invalidation(notifier.inval_entry(INodeNo(inode::ROOT), OsStr::new(&db)));
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

/// The `fuser::Filesystem` over `FsCore`.
struct FuseAdapter {
    core: Arc<FsCore>,
    activity: Option<Activity>,
}

impl FuseAdapter {
    /// Called first by every request handler.
    fn count(&self, op: Op) {
        self.core.counters().count(op);
        if let Some(activity) = &self.activity {
            activity.touch();
        }
    }
}

fn errno(err: &FsError) -> Errno {
    if err.errno == libc::ENOENT {
        tracing::trace!("{}", err.message);
    } else {
        tracing::debug!(errno = err.errno, "{}", err.message);
    }
    Errno::from_i32(err.errno)
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: match attr.kind {
            FileKind::File => FileType::RegularFile,
            FileKind::Directory => FileType::Directory,
            FileKind::Symlink => FileType::Symlink,
        },
        perm: attr.perm,
        nlink: if attr.kind == FileKind::Directory {
            2
        } else {
            1
        },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// A negative entry: node id 0, cached for `ttl`.
fn negative_attr() -> FileAttr {
    file_attr(&Attr {
        ino: 0,
        kind: FileKind::File,
        size: 0,
        perm: 0,
        uid: 0,
        gid: 0,
        mtime: SystemTime::UNIX_EPOCH,
    })
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            // Files inside versions never get fresh attributes (100-year
            // TTL), so this costs nothing there; it makes the kernel drop
            // the cached pages of `.status` and of the root listings when
            // their mtime changes.
            | InitFlags::FUSE_AUTO_INVAL_DATA;
        if let Err(refused) = config.add_capabilities(wanted) {
            tracing::warn!(?refused, "kernel refused FUSE capabilities");
        }
        // Up to 64 background requests (readahead); more gave nothing in
        // mountpoint-s3's measurements, fewer throttled readahead.
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count(Op::Lookup);
        if name.len() > NAME_MAX {
            return reply.error(Errno::ENAMETOOLONG);
        }
        match self.core.lookup(parent.0, name.as_bytes()) {
            Ok(Entry::Found { attr, ttl }) => {
                let attr_ttl = Inode::from_number(attr.ino).map_or(Duration::ZERO, attr_ttl);
                reply.entry_with_ttls(&attr_ttl, &ttl, &file_attr(&attr), Generation(0))
            }
            Ok(Entry::Negative { ttl }) => reply.entry(&ttl, &negative_attr(), Generation(0)),
            Err(err) => reply.error(errno(&err)),
        }
    }

    // BATCH_FORGET arrives here once per inode (fuser's default).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count(Op::Forget);
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count(Op::Getattr);
        match self.core.getattr(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &file_attr(&attr)),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.count(Op::Setattr);
        let times_only = mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && (atime.is_some() || mtime.is_some());
        match self.core.setattr(ino.0, req.uid(), times_only) {
            Ok(attr) => reply.attr(&Duration::ZERO, &file_attr(&attr)),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.count(Op::Readlink);
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Open);
        // Zero-message open: the kernel stops sending OPEN/FLUSH/RELEASE for
        // this connection and keeps page caches across opens.
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Opendir);
        // Zero-message opendir; listings are cached like FOPEN_CACHE_DIR.
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count(Op::Read);
        let mut reply = Some(reply);
        let result = self.core.read(ino.0, offset, size, |bytes| {
            if let Some(reply) = reply.take() {
                reply.data(bytes);
            }
        });
        if let (Err(err), Some(reply)) = (result, reply) {
            reply.error(errno(&err));
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count(Op::Readdir);
        let result = self.core.readdir(ino.0, offset, |entry| {
            let kind = file_attr(&entry.attr).kind;
            !reply.add(INodeNo(entry.attr.ino), entry.next, kind, &entry.name)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.count(Op::Readdirplus);
        let core = &self.core;
        let result = core.readdir(ino.0, offset, |entry| {
            let full = reply.add(
                INodeNo(entry.attr.ino),
                entry.next,
                &entry.name,
                &entry.ttl,
                &file_attr(&entry.attr),
                Generation(0),
            );
            // The kernel takes a reference to every entry but `.` and `..`.
            if !full && entry.name != "." && entry.name != ".." {
                core.remember(entry.attr.ino);
            }
            !full
        });
        match result {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count(Op::Statfs);
        reply.statfs(0, 0, 0, 0, 0, 4096, NAME_MAX as u32, 4096);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        self.count(Op::Getxattr);
        // ENOSYS: the kernel stops asking for the rest of the connection.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        self.count(Op::Listxattr);
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // The kernel forwards every ioctl (isatty() sends TCGETS); nothing
        // stops that, so answer as fast as possible.
        self.count(Op::Ioctl);
        reply.error(Errno::ENOTTY);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Flush);
        reply.error(Errno::ENOSYS);
    }

    // ----- every write-like request: EROFS ------------------------------

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.count(Op::Create);
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.count(Op::Mknod);
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.count(Op::Mkdir);
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Unlink);
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Rmdir);
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        self.count(Op::Symlink);
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Rename);
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.count(Op::Link);
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Setxattr);
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Removexattr);
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fallocate);
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.count(Op::CopyFileRange);
        reply.error(Errno::EROFS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fsync);
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\\"), br"/x\\");
        assert_eq!(unescape_mountinfo(r"/x\134"), br"/x\");
    }

    #[test]
    fn missing_mount_point_is_a_clear_error() {
        let err = check_mount_point(Path::new("/nonexistent/sequinsfs-test")).unwrap_err();
        assert!(matches!(err, MountError::MissingMountPoint(_)), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = check_mount_point(file.path()).unwrap_err();
        assert!(matches!(err, MountError::NotADirectory(_)), "{err}");
        assert!(matches!(
            check_mount_point(Path::new("/proc")),
            Err(MountError::AlreadyMounted(_))
        ));
    }
}
