//! Per-opcode request counters: how many requests of each kind the daemon
//! received. Tests assert on them ("a second `cat` of a key sends nothing")
//! and metrics export them; a regression such as OPEN coming back on the warm
//! path shows up as a number, not as a vague slowdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The FUSE requests the mount distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Open,
    Read,
    Release,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Statfs,
    Getxattr,
    Listxattr,
    Access,
    Ioctl,
    Write,
    Create,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Setxattr,
    Removexattr,
    Fallocate,
    CopyFileRange,
    Flush,
    Fsync,
    Lseek,
    Other,
}

impl Op {
    pub const ALL: [Op; 34] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Open,
        Op::Read,
        Op::Release,
        Op::Opendir,
        Op::Readdir,
        Op::Readdirplus,
        Op::Releasedir,
        Op::Statfs,
        Op::Getxattr,
        Op::Listxattr,
        Op::Access,
        Op::Ioctl,
        Op::Write,
        Op::Create,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Setxattr,
        Op::Removexattr,
        Op::Fallocate,
        Op::CopyFileRange,
        Op::Flush,
        Op::Fsync,
        Op::Lseek,
        Op::Other,
    ];

    /// Lower-case opcode name, as in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Read => "read",
            Op::Release => "release",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Statfs => "statfs",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Access => "access",
            Op::Ioctl => "ioctl",
            Op::Write => "write",
            Op::Create => "create",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Setxattr => "setxattr",
            Op::Removexattr => "removexattr",
            Op::Fallocate => "fallocate",
            Op::CopyFileRange => "copy_file_range",
            Op::Flush => "flush",
            Op::Fsync => "fsync",
            Op::Lseek => "lseek",
            Op::Other => "other",
        }
    }
}

/// One atomic counter per [`Op`].
#[derive(Debug)]
pub struct RequestCounters {
    counts: [AtomicU64; Op::ALL.len()],
}

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RequestCounters {
    pub fn count(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    /// All requests of all kinds.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The non-zero counters by opcode name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        Op::ALL
            .iter()
            .map(|&op| (op.name(), self.get(op)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_op() {
        let c = RequestCounters::default();
        c.count(Op::Lookup);
        c.count(Op::Lookup);
        c.count(Op::Other);
        assert_eq!(c.get(Op::Lookup), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.snapshot().get("lookup"), Some(&2));
        assert_eq!(c.snapshot().get("read"), None);
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
    }
}
