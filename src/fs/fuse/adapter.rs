//! The `fuser::Filesystem` over `FsCore`: translates each kernel request
//! into a core call and its answer into a reply, counts requests, and logs
//! every failed request once, at the level its error carries, with the
//! opcode and inode (the core never logs the errors it returns).
//!
//! Kernel caching is what makes warm reads nearly as fast as tmpfs (see the
//! FUSE performance notes in the docs): inside a version everything is
//! cached for a hundred years, missing keys get negative entries, and `open`
//! and `opendir` answer ENOSYS, which the kernel turns into "never send
//! OPEN/RELEASE again and keep the page cache". A warm `cat` of a key then
//! sends no request at all.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::Level;

use crate::fs::attr::{ATTR_TTL, Attr, FileKind};
use crate::fs::core::{Entry, FsCore};
use crate::fs::counters::Op;
use crate::fs::error::FsError;
use crate::fs::fuse::uring::UringOffer;
use crate::naming::NAME_MAX;
use crate::wakeup::Activity;

/// Emits a tracing event at a level known only at run time (tracing's
/// macros take a constant level).
macro_rules! event_at {
    ($level:expr, $($arg:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($arg)+),
            Level::WARN => tracing::warn!($($arg)+),
            Level::INFO => tracing::info!($($arg)+),
            Level::DEBUG => tracing::debug!($($arg)+),
            _ => tracing::trace!($($arg)+),
        }
    };
}

/// A write-like request: counted, logged and refused with EROFS. Each
/// names the opcode, the method and the types of its parameters after the
/// inode every one of them starts with.
macro_rules! read_only {
    ($op:ident, fn $method:ident($($arg:ty),*) -> $reply:ty) => {
        fn $method(&self, _: &Request, ino: INodeNo, $(_: $arg,)* reply: $reply) {
            self.count(Op::$op);
            reply.error(self.failed(Op::$op, ino, &FsError::read_only()));
        }
    };
}

/// The `fuser::Filesystem` over `FsCore`.
pub(super) struct FuseAdapter {
    core: Arc<FsCore>,
    activity: Option<Activity>,
    /// Set when the io_uring transport is ready to take over: INIT then
    /// asks for FUSE_OVER_IO_URING if the kernel offers it.
    uring: Option<Arc<UringOffer>>,
}

impl FuseAdapter {
    pub(super) fn new(
        core: Arc<FsCore>,
        activity: Option<Activity>,
        uring: Option<Arc<UringOffer>>,
    ) -> Self {
        FuseAdapter {
            core,
            activity,
            uring,
        }
    }

    /// Called first by every request handler.
    fn count(&self, op: Op) {
        count_request(&self.core, self.activity.as_ref(), op);
    }

    /// Logs a failed request (once, at its error's level) and returns the
    /// errno to reply with.
    fn failed(&self, op: Op, ino: INodeNo, err: &FsError) -> Errno {
        failed(op, ino, err)
    }
}

/// Counts a request of either transport and tells the idle poller a
/// request arrived.
pub(crate) fn count_request(core: &FsCore, activity: Option<&Activity>, op: Op) {
    core.counters().count(op);
    if let Some(activity) = activity {
        activity.touch();
    }
}

/// [`FuseAdapter::failed`], for replies sent from other threads (and by
/// the io_uring transport).
pub(super) fn failed(op: Op, ino: INodeNo, err: &FsError) -> Errno {
    event_at!(
        err.level(),
        op = op.name(),
        ino = format_args!("{:#x}", ino.0),
        errno = err.errno(),
        "request failed: {}",
        err.chain()
    );
    Errno::from_i32(err.errno())
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
            // Files inside versions and `.status` snapshots never get fresh
            // attributes (100-year TTL), so this costs nothing there; it
            // makes the kernel drop the cached listings of the root and
            // `.versions/` when their mtime changes.
            | InitFlags::FUSE_AUTO_INVAL_DATA;
        if let Err(refused) = config.add_capabilities(wanted) {
            tracing::warn!(?refused, "kernel refused FUSE capabilities");
        }
        // Up to 64 background requests (readahead); more gave nothing in
        // mountpoint-s3's measurements, fewer throttled readahead.
        let _ = config.set_max_background(64);
        if let Some(offer) = &self.uring {
            if config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
            {
                // Asking for more than the maximum is how fuser's config
                // tells what it will send (both are left at their defaults
                // here): the ring payload must hold the largest request.
                let max_write = config.set_max_write(u32::MAX).err().unwrap_or(16 << 20);
                let max_readahead = config.set_max_readahead(u32::MAX).err().unwrap_or(0);
                offer.accept(max_write, max_readahead);
            } else {
                tracing::info!("the kernel does not offer FUSE over io_uring");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count(Op::Lookup);
        if name.len() > NAME_MAX {
            let err = FsError::new(
                libc::ENAMETOOLONG,
                Level::DEBUG,
                "name longer than 255 bytes",
            );
            return reply.error(self.failed(Op::Lookup, parent, &err));
        }
        match self.core.lookup(parent.0, name.as_bytes()) {
            Ok(Entry::Found { attr, ttl }) => {
                reply.entry_with_ttls(&ATTR_TTL, &ttl, &file_attr(&attr), Generation(0))
            }
            Ok(Entry::Negative { ttl }) => reply.entry(&ttl, &negative_attr(), Generation(0)),
            Err(err) => reply.error(self.failed(Op::Lookup, parent, &err)),
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
            Err(err) => reply.error(self.failed(Op::Getattr, ino, &err)),
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
            Err(err) => reply.error(self.failed(Op::Setattr, ino, &err)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.count(Op::Readlink);
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(err) => reply.error(self.failed(Op::Readlink, ino, &err)),
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
        // A key held by peers: answered from another thread when they have.
        match self.core.remote_read(ino.0, offset, size) {
            Ok(None) => {}
            Ok(Some(read)) => {
                self.core.read_remote(
                    read,
                    Box::new(move |result| match result {
                        Ok(bytes) => reply.data(&bytes),
                        Err(err) => reply.error(failed(Op::Read, ino, &err)),
                    }),
                );
                return;
            }
            Err(err) => return reply.error(self.failed(Op::Read, ino, &err)),
        }
        let mut reply = Some(reply);
        let result = self.core.read(ino.0, offset, size, |bytes| {
            if let Some(reply) = reply.take() {
                reply.data(bytes);
            }
        });
        if let (Err(err), Some(reply)) = (result, reply) {
            reply.error(self.failed(Op::Read, ino, &err));
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
            Err(err) => reply.error(self.failed(Op::Readdir, ino, &err)),
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
        // The core counts a kernel reference for every entry added.
        let result = self.core.readdirplus(ino.0, offset, |entry| {
            !reply.add(
                INodeNo(entry.attr.ino),
                entry.next,
                &entry.name,
                &entry.ttl,
                &file_attr(&entry.attr),
                Generation(0),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(self.failed(Op::Readdirplus, ino, &err)),
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

    // ----- every write-like request: EROFS ------------------------------

    read_only!(Write, fn write(FileHandle, u64, &[u8], WriteFlags, OpenFlags, Option<LockOwner>) -> ReplyWrite);
    read_only!(Create, fn create(&OsStr, u32, u32, i32) -> ReplyCreate);
    read_only!(Mknod, fn mknod(&OsStr, u32, u32, u32) -> ReplyEntry);
    read_only!(Mkdir, fn mkdir(&OsStr, u32, u32) -> ReplyEntry);
    read_only!(Unlink, fn unlink(&OsStr) -> ReplyEmpty);
    read_only!(Rmdir, fn rmdir(&OsStr) -> ReplyEmpty);
    read_only!(Symlink, fn symlink(&OsStr, &Path) -> ReplyEntry);
    read_only!(Rename, fn rename(&OsStr, INodeNo, &OsStr, RenameFlags) -> ReplyEmpty);
    read_only!(Link, fn link(INodeNo, &OsStr) -> ReplyEntry);
    read_only!(Setxattr, fn setxattr(&OsStr, &[u8], i32, u32) -> ReplyEmpty);
    read_only!(Removexattr, fn removexattr(&OsStr) -> ReplyEmpty);
    read_only!(Fallocate, fn fallocate(FileHandle, u64, u64, i32) -> ReplyEmpty);
    read_only!(CopyFileRange, fn copy_file_range(FileHandle, u64, INodeNo, FileHandle, u64, u64, CopyFileRangeFlags) -> ReplyWrite);
}
