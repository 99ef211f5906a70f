//! Attributes: what `stat` shows for each kind of inode (`docs/NAMING.md`,
//! "Attributes"), and how long the kernel may cache entries and attributes.
//!
//! Kept apart from the dispatch in `fs::core` because the lifetimes here are
//! what makes warm reads free, and each has a reason worth reading on its
//! own.

use std::time::{Duration, SystemTime};

use crate::catalog::Version;
use crate::fs::control;
use crate::fs::error::FsResult;
use crate::fs::inode::Inode;

/// How long the kernel may cache what never changes: entries, attributes
/// and negative entries inside a version directory, and the attributes of a
/// `.status` snapshot. A hundred years, as mountpoint-s3 uses for
/// "indefinite": effectively forever, yet small enough that
/// `Instant::now() + ttl` cannot overflow (`Duration::MAX` can).
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// TTL of the names that change: the per-database symlinks, `.versions/`
/// entries. Switches are also pushed to the kernel by invalidation, so this
/// only bounds how stale a name can be if an invalidation is lost; one
/// second keeps path walks through the symlink cheap.
pub const CHANGING_TTL: Duration = Duration::from_secs(1);

/// How long the kernel may cache any inode's attributes.
///
/// Everything is either fixed, or part of an immutable version, or (a
/// `.status` snapshot) frozen when it was made. The root, `.versions/` and
/// `.versions/<db>/` do change (their listings, and their mtime with them),
/// but every change is pushed to the kernel by invalidation, and a short
/// TTL here would cost a GETATTR per path walk (the kernel checks search
/// permission on every directory).
pub const ATTR_TTL: Duration = FOREVER;

/// Entry TTL of `.status`: zero, so every path walk looks it up again and
/// gets a snapshot of the catalog as it is now (see `fs::control`).
pub const STATUS_ENTRY_TTL: Duration = Duration::ZERO;

/// What kind of file an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
}

/// The attributes the mount reports (`docs/NAMING.md`, "Attributes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// Who owns the mount and how it is presented.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// Owner of every file (`--uid`); defaults to the daemon's user.
    pub uid: u32,
    pub gid: u32,
}

impl Default for CoreOptions {
    fn default() -> Self {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        CoreOptions { uid, gid }
    }
}

impl CoreOptions {
    /// A read-only directory owned as configured.
    pub(super) fn dir(&self, inode: Inode, mtime: SystemTime) -> FsResult<Attr> {
        Ok(Attr {
            ino: inode.number()?,
            kind: FileKind::Directory,
            size: 0,
            perm: 0o555,
            uid: self.uid,
            gid: self.gid,
            mtime,
        })
    }

    /// A regular file of `size` bytes with permission bits `perm`.
    pub(super) fn file(
        &self,
        inode: Inode,
        size: u64,
        perm: u16,
        mtime: SystemTime,
    ) -> FsResult<Attr> {
        Ok(Attr {
            kind: FileKind::File,
            size,
            perm,
            ..self.dir(inode, mtime)?
        })
    }

    /// The attributes of an inode of `version` (`inode` must be one).
    /// Everything in a version carries the time the version was created.
    pub(super) fn version_attr(&self, version: &Version, inode: Inode) -> FsResult<Attr> {
        let mtime = version.created_at();
        match inode {
            Inode::Symlink { .. } => Ok(Attr {
                kind: FileKind::Symlink,
                perm: 0o777,
                size: symlink_target(version).len() as u64,
                ..self.dir(inode, mtime)?
            }),
            Inode::VersionFile { .. } => {
                let size = control::version_file(version).len() as u64;
                self.file(inode, size, 0o444, mtime)
            }
            Inode::Key { ordinal, .. } => {
                let size = version
                    .keys()
                    .value_len_at(ordinal)
                    .map_err(|e| version.context(e))?;
                self.file(inode, size, 0o444, mtime)
            }
            _ => self.dir(inode, mtime),
        }
    }
}

/// Where `<db>` points: relative, so it works wherever the mount is.
pub fn symlink_target(version: &Version) -> String {
    format!(".versions/{}/{}", version.db(), version.name())
}
