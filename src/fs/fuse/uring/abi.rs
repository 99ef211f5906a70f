//! The bytes of the FUSE protocol the io_uring transport reads and writes:
//! the request header, the per-opcode argument structs it decodes, the reply
//! structs it encodes, and the layout of a ring entry's header buffer
//! (`include/uapi/linux/fuse.h`, protocol 7.42+).
//!
//! Every field is read through a bounds-checked little helper, so a short
//! or corrupt request is an error naming the opcode and byte offset, never a
//! panic or a read past the buffer.

use std::time::{Duration, SystemTime};

use crate::fs::attr::{Attr, FileKind};

/// `fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// `fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;

/// A ring entry's header buffer (`fuse_uring_req_header`): the in/out
/// header, then the opcode's fixed argument struct, then
/// `fuse_uring_ent_in_out`.
pub const RING_HEADER_LEN: usize = 288;
pub const RING_OP_IN_OFFSET: usize = 128;
pub const RING_OP_IN_LEN: usize = 128;
pub const RING_ENT_IN_OUT_OFFSET: usize = 256;

/// `enum fuse_uring_cmd`.
pub const URING_CMD_REGISTER: u32 = 1;
pub const URING_CMD_COMMIT_AND_FETCH: u32 = 2;

/// `FUSE_MIN_READ_BUFFER`: the kernel never makes a ring payload smaller.
pub const MIN_READ_BUFFER: usize = 8192;

/// Opcodes the transport answers (`enum fuse_opcode`).
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const TMPFILE: u32 = 51;
    pub const COPY_FILE_RANGE_64: u32 = 53;
}

/// `FATTR_*` bits of `fuse_setattr_in.valid`.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;

/// A request that does not hold what its opcode needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed FUSE request (opcode {opcode}): {what} at byte {offset}")]
pub struct Malformed {
    pub opcode: u32,
    pub what: &'static str,
    pub offset: usize,
}

/// Reads little fields out of a byte slice, failing with the offset.
pub struct Fields<'a> {
    bytes: &'a [u8],
    opcode: u32,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8], opcode: u32) -> Self {
        Fields { bytes, opcode }
    }

    fn take<const N: usize>(
        &self,
        offset: usize,
        what: &'static str,
    ) -> Result<[u8; N], Malformed> {
        offset
            .checked_add(N)
            .and_then(|end| self.bytes.get(offset..end))
            .and_then(|b| b.try_into().ok())
            .ok_or(Malformed {
                opcode: self.opcode,
                what,
                offset,
            })
    }

    pub fn u32(&self, offset: usize, what: &'static str) -> Result<u32, Malformed> {
        self.take::<4>(offset, what).map(u32::from_ne_bytes)
    }

    pub fn u64(&self, offset: usize, what: &'static str) -> Result<u64, Malformed> {
        self.take::<8>(offset, what).map(u64::from_ne_bytes)
    }

    /// A NUL-terminated name starting at `offset`.
    pub fn name(&self, offset: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        let rest = self.bytes.get(offset..).ok_or(Malformed {
            opcode: self.opcode,
            what,
            offset,
        })?;
        let end = rest.iter().position(|&b| b == 0).ok_or(Malformed {
            opcode: self.opcode,
            what,
            offset: offset + rest.len(),
        })?;
        Ok(&rest[..end])
    }
}

/// `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    pub fn parse(bytes: &[u8]) -> Result<InHeader, Malformed> {
        let opcode = Fields::new(bytes, 0).u32(4, "opcode")?;
        let f = Fields::new(bytes, opcode);
        Ok(InHeader {
            len: f.u32(0, "header length")?,
            opcode,
            unique: f.u64(8, "unique")?,
            nodeid: f.u64(16, "node id")?,
            uid: f.u32(24, "uid")?,
            gid: f.u32(28, "gid")?,
            pid: f.u32(32, "pid")?,
        })
    }
}

/// `fuse_out_header`: `error` is zero or a negated errno.
pub fn out_header(len: u32, error: i32, unique: u64) -> [u8; OUT_HEADER_LEN] {
    let mut out = [0u8; OUT_HEADER_LEN];
    let mut w = Writer::new(&mut out);
    w.u32(len);
    w.u32(error as u32);
    w.u64(unique);
    out
}

/// Appends native-endian fields to a buffer that is known to be big
/// enough; callers check room first ([`Writer::room`]).
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes(&value.to_ne_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_ne_bytes());
    }

    pub fn zeros(&mut self, n: usize) {
        self.buf[self.len..self.len + n].fill(0);
        self.len += n;
    }
}

/// `fuse_attr`.
pub const ATTR_LEN: usize = 88;
/// `fuse_entry_out`.
pub const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;
/// `fuse_attr_out`.
pub const ATTR_OUT_LEN: usize = 16 + ATTR_LEN;
/// `fuse_kstatfs`.
pub const STATFS_OUT_LEN: usize = 80;
/// `fuse_dirent` without its name.
pub const DIRENT_LEN: usize = 24;

/// The `st_mode` type bits of a kind.
pub fn mode_type(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Directory => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
    }
}

fn since_epoch(time: SystemTime) -> (u64, u32) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    (since.as_secs(), since.subsec_nanos())
}

/// `fuse_attr` of `attr`, with the conventions the /dev/fuse adapter uses
/// (the same `FileAttr` fuser encodes): 512-byte blocks, nlink 2 for
/// directories, 4 KiB blksize, mtime for every time.
pub fn put_attr(w: &mut Writer, attr: &Attr) {
    let (secs, nanos) = since_epoch(attr.mtime);
    w.u64(attr.ino);
    w.u64(attr.size);
    w.u64(attr.size.div_ceil(512));
    w.u64(secs);
    w.u64(secs);
    w.u64(secs);
    w.u32(nanos);
    w.u32(nanos);
    w.u32(nanos);
    w.u32(mode_type(attr.kind) | u32::from(attr.perm));
    w.u32(if attr.kind == FileKind::Directory {
        2
    } else {
        1
    });
    w.u32(attr.uid);
    w.u32(attr.gid);
    w.u32(0);
    w.u32(4096);
    w.u32(0);
}

/// `fuse_entry_out`: node id `attr.ino` (0 for a negative entry).
pub fn put_entry(w: &mut Writer, attr: &Attr, entry_ttl: Duration, attr_ttl: Duration) {
    w.u64(attr.ino);
    w.u64(0);
    w.u64(entry_ttl.as_secs());
    w.u64(attr_ttl.as_secs());
    w.u32(entry_ttl.subsec_nanos());
    w.u32(attr_ttl.subsec_nanos());
    put_attr(w, attr);
}

/// `fuse_attr_out` ([`ATTR_OUT_LEN`] bytes).
pub fn put_attr_out(w: &mut Writer, attr: &Attr, ttl: Duration) {
    let start = w.len();
    w.u64(ttl.as_secs());
    w.u32(ttl.subsec_nanos());
    w.u32(0);
    put_attr(w, attr);
    debug_assert_eq!(w.len() - start, ATTR_OUT_LEN);
}

/// `fuse_dirent` (or the dirent half of `fuse_direntplus`) with its name,
/// padded to 8 bytes. Returns false, writing nothing, when it does not fit.
pub fn put_dirent(w: &mut Writer, ino: u64, next: u64, kind: FileKind, name: &[u8]) -> bool {
    let size = (DIRENT_LEN + name.len()).next_multiple_of(8);
    if size > w.room() {
        return false;
    }
    w.u64(ino);
    w.u64(next);
    w.u32(name.len() as u32);
    w.u32(mode_type(kind) >> 12);
    w.bytes(name);
    w.zeros(size - DIRENT_LEN - name.len());
    true
}

/// The size of a `fuse_direntplus` naming `name`.
pub fn direntplus_len(name: &[u8]) -> usize {
    ENTRY_OUT_LEN + (DIRENT_LEN + name.len()).next_multiple_of(8)
}
