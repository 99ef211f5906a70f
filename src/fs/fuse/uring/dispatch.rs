//! One request of the io_uring transport: decode the opcode's arguments,
//! call the same `FsCore` function the fuser adapter calls, encode the
//! answer into the ring entry's payload buffer.
//!
//! This is the io_uring twin of `fs::fuse::adapter` and answers exactly
//! what it answers (same core calls, same errnos, same cache lifetimes,
//! the same `fuse_attr` conventions, the same opcode counters and failure
//! logging), so both transports pass the same mount tests. Only what
//! reaches the ring comes here: INIT stays on /dev/fuse, and the kernel
//! keeps sending FORGET and INTERRUPT there too (fuser answers them through
//! the adapter).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use fuser::INodeNo;
use tracing::Level;

use super::abi::{self, Fields, InHeader, Writer, opcode};
use crate::fs::attr::{ATTR_TTL, Attr, FileKind};
use crate::fs::core::{Entry, FsCore};
use crate::fs::counters::Op;
use crate::fs::error::FsError;
use crate::fs::fuse::adapter::{count_request, failed};
use crate::naming::NAME_MAX;
use crate::wakeup::Activity;

/// Answers ring requests over `FsCore`.
pub(crate) struct Dispatcher {
    core: Arc<FsCore>,
    activity: Option<Activity>,
    /// Without `allow_other`: the only uid (besides the kernel's own
    /// uid-less requests) that may use the mount, as fuser enforces on
    /// /dev/fuse.
    owner_only: Option<u32>,
}

/// What to send back: `Ok(n)` bytes of payload, or an errno.
pub(crate) type Answer = Result<usize, i32>;

impl Dispatcher {
    pub(crate) fn new(
        core: Arc<FsCore>,
        activity: Option<Activity>,
        owner_only: Option<u32>,
    ) -> Self {
        Dispatcher {
            core,
            activity,
            owner_only,
        }
    }

    fn count(&self, op: Op) {
        count_request(&self.core, self.activity.as_ref(), op);
    }

    fn fail(&self, op: Op, ino: u64, err: &FsError) -> i32 {
        failed(op, INodeNo(ino), err).code()
    }

    /// Answers one request. `op_in` is the opcode's fixed argument struct,
    /// `args` what follows it (names), `out` the payload buffer the reply
    /// goes to.
    pub(crate) fn handle(
        &self,
        header: &InHeader,
        op_in: &[u8],
        args: &[u8],
        out: &mut [u8],
    ) -> Answer {
        if let Some(owner) = self.owner_only
            && header.uid != owner
            && !matches!(
                header.opcode,
                opcode::READ
                    | opcode::READDIR
                    | opcode::READDIRPLUS
                    | opcode::FORGET
                    | opcode::BATCH_FORGET
                    | opcode::WRITE
                    | opcode::FSYNC
                    | opcode::FSYNCDIR
                    | opcode::RELEASE
                    | opcode::RELEASEDIR
                    | opcode::DESTROY
            )
        {
            return Err(libc::EACCES);
        }
        match self.dispatch(header, op_in, args, out) {
            Ok(answer) => answer,
            Err(malformed) => {
                tracing::warn!("{malformed}");
                Err(libc::EIO)
            }
        }
    }

    fn dispatch(
        &self,
        header: &InHeader,
        op_in: &[u8],
        args: &[u8],
        out: &mut [u8],
    ) -> Result<Answer, abi::Malformed> {
        let ino = header.nodeid;
        let fixed = Fields::new(op_in, header.opcode);
        let mut w = Writer::new(out);
        Ok(match header.opcode {
            opcode::LOOKUP => {
                self.count(Op::Lookup);
                let name = Fields::new(args, header.opcode).name(0, "name")?;
                self.lookup(ino, name, &mut w)
            }
            opcode::GETATTR => {
                self.count(Op::Getattr);
                match self.core.getattr(ino) {
                    Ok((attr, ttl)) => {
                        abi::put_attr_out(&mut w, &attr, ttl);
                        Ok(w.len())
                    }
                    Err(err) => Err(self.fail(Op::Getattr, ino, &err)),
                }
            }
            opcode::SETATTR => {
                self.count(Op::Setattr);
                let valid = fixed.u32(0, "setattr valid")?;
                let others = abi::FATTR_MODE | abi::FATTR_UID | abi::FATTR_GID | abi::FATTR_SIZE;
                let times = abi::FATTR_ATIME | abi::FATTR_MTIME;
                let times_only = valid & others == 0 && valid & times != 0;
                match self.core.setattr(ino, header.uid, times_only) {
                    Ok(attr) => {
                        abi::put_attr_out(&mut w, &attr, Duration::ZERO);
                        Ok(w.len())
                    }
                    Err(err) => Err(self.fail(Op::Setattr, ino, &err)),
                }
            }
            opcode::READLINK => {
                self.count(Op::Readlink);
                match self.core.readlink(ino) {
                    Ok(target) => put_data(&mut w, &target),
                    Err(err) => Err(self.fail(Op::Readlink, ino, &err)),
                }
            }
            opcode::OPEN => {
                self.count(Op::Open);
                // Zero-message open, as on /dev/fuse (see the adapter).
                Err(libc::ENOSYS)
            }
            opcode::OPENDIR => {
                self.count(Op::Opendir);
                Err(libc::ENOSYS)
            }
            opcode::READ => {
                self.count(Op::Read);
                let offset = fixed.u64(8, "read offset")?;
                let size = fixed.u32(16, "read size")?;
                self.read(ino, offset, size, &mut w)
            }
            opcode::READDIR | opcode::READDIRPLUS => {
                let plus = header.opcode == opcode::READDIRPLUS;
                let op = if plus { Op::Readdirplus } else { Op::Readdir };
                self.count(op);
                let offset = fixed.u64(8, "readdir offset")?;
                let size = fixed.u32(16, "readdir size")? as usize;
                self.readdir(ino, offset, size, plus, &mut w)
            }
            opcode::STATFS => {
                self.count(Op::Statfs);
                for _ in 0..5 {
                    w.u64(0);
                }
                w.u32(4096);
                w.u32(NAME_MAX as u32);
                w.u32(4096);
                w.zeros(abi::STATFS_OUT_LEN - 52);
                Ok(w.len())
            }
            opcode::GETXATTR => {
                self.count(Op::Getxattr);
                Err(libc::ENOSYS)
            }
            opcode::LISTXATTR => {
                self.count(Op::Listxattr);
                Err(libc::ENOSYS)
            }
            opcode::IOCTL => {
                self.count(Op::Ioctl);
                Err(libc::ENOTTY)
            }
            opcode::FLUSH => {
                self.count(Op::Flush);
                Err(libc::ENOSYS)
            }
            opcode::FSYNC => {
                self.count(Op::Fsync);
                Ok(0)
            }
            // fuser's defaults, which the adapter keeps.
            opcode::RELEASE | opcode::RELEASEDIR | opcode::DESTROY => Ok(0),
            opcode::WRITE => self.read_only(Op::Write, ino),
            opcode::CREATE | opcode::TMPFILE => self.read_only(Op::Create, ino),
            opcode::MKNOD => self.read_only(Op::Mknod, ino),
            opcode::MKDIR => self.read_only(Op::Mkdir, ino),
            opcode::UNLINK => self.read_only(Op::Unlink, ino),
            opcode::RMDIR => self.read_only(Op::Rmdir, ino),
            opcode::SYMLINK => self.read_only(Op::Symlink, ino),
            opcode::RENAME | opcode::RENAME2 => self.read_only(Op::Rename, ino),
            opcode::LINK => self.read_only(Op::Link, ino),
            opcode::SETXATTR => self.read_only(Op::Setxattr, ino),
            opcode::REMOVEXATTR => self.read_only(Op::Removexattr, ino),
            opcode::FALLOCATE => self.read_only(Op::Fallocate, ino),
            opcode::COPY_FILE_RANGE | opcode::COPY_FILE_RANGE_64 => {
                self.read_only(Op::CopyFileRange, ino)
            }
            // What fuser answers for a method the adapter does not
            // implement (also locks, BMAP, POLL, STATX...).
            opcode::ACCESS | opcode::LSEEK | opcode::FSYNCDIR => Err(libc::ENOSYS),
            _ => Err(libc::ENOSYS),
        })
    }

    fn read_only(&self, op: Op, ino: u64) -> Answer {
        self.count(op);
        Err(self.fail(op, ino, &FsError::read_only()))
    }

    fn lookup(&self, parent: u64, name: &[u8], w: &mut Writer) -> Answer {
        if name.len() > NAME_MAX {
            let err = FsError::new(
                libc::ENAMETOOLONG,
                Level::DEBUG,
                "name longer than 255 bytes",
            );
            return Err(self.fail(Op::Lookup, parent, &err));
        }
        match self.core.lookup(parent, name) {
            Ok(Entry::Found { attr, ttl }) => {
                abi::put_entry(w, &attr, ttl, ATTR_TTL);
                Ok(w.len())
            }
            Ok(Entry::Negative { ttl }) => {
                abi::put_entry(w, &negative_attr(), ttl, ttl);
                Ok(w.len())
            }
            Err(err) => Err(self.fail(Op::Lookup, parent, &err)),
        }
    }

    fn read(&self, ino: u64, offset: u64, size: u32, w: &mut Writer) -> Answer {
        // A key held by peers: the ring thread waits for them (the
        // /dev/fuse adapter answers from their thread instead).
        match self.core.remote_read(ino, offset, size) {
            Ok(None) => {}
            Ok(Some(read)) => {
                let (sent, received) = mpsc::sync_channel(1);
                self.core.read_remote(
                    read,
                    Box::new(move |result| {
                        let _ = sent.send(result);
                    }),
                );
                let result = received.recv().unwrap_or_else(|_| {
                    Err(FsError::new(
                        libc::EIO,
                        Level::ERROR,
                        "remote read dropped its answer",
                    ))
                });
                return match result {
                    Ok(bytes) => put_data(w, &bytes),
                    Err(err) => Err(self.fail(Op::Read, ino, &err)),
                };
            }
            Err(err) => return Err(self.fail(Op::Read, ino, &err)),
        }
        match self
            .core
            .read(ino, offset, size, |bytes| put_data(w, bytes))
        {
            Ok(answer) => answer,
            Err(err) => Err(self.fail(Op::Read, ino, &err)),
        }
    }

    fn readdir(&self, ino: u64, offset: u64, size: usize, plus: bool, w: &mut Writer) -> Answer {
        let limit = size.min(w.room());
        let mut used = 0usize;
        let emit = |entry: crate::fs::core::DirEntry| -> bool {
            let name = entry.name.as_bytes();
            let needed = if plus {
                abi::direntplus_len(name)
            } else {
                (abi::DIRENT_LEN + name.len()).next_multiple_of(8)
            };
            if used + needed > limit {
                return false;
            }
            used += needed;
            if plus {
                abi::put_entry(w, &entry.attr, entry.ttl, entry.ttl);
            }
            abi::put_dirent(w, entry.attr.ino, entry.next, entry.attr.kind, name)
        };
        let result = if plus {
            self.core.readdirplus(ino, offset, emit)
        } else {
            self.core.readdir(ino, offset, emit)
        };
        let op = if plus { Op::Readdirplus } else { Op::Readdir };
        match result {
            Ok(()) => Ok(w.len()),
            Err(err) => Err(self.fail(op, ino, &err)),
        }
    }
}

/// Copies a READ or READLINK answer into the payload, which the kernel
/// sized for the largest request it sends.
fn put_data(w: &mut Writer, bytes: &[u8]) -> Answer {
    if bytes.len() > w.room() {
        tracing::error!(
            len = bytes.len(),
            room = w.room(),
            "reply larger than the ring payload"
        );
        return Err(libc::EIO);
    }
    w.bytes(bytes);
    Ok(w.len())
}

/// A negative entry: node id 0 (as the adapter's).
fn negative_attr() -> Attr {
    Attr {
        ino: 0,
        kind: FileKind::File,
        size: 0,
        perm: 0,
        uid: 0,
        gid: 0,
        mtime: std::time::SystemTime::UNIX_EPOCH,
    }
}
