//! FUSE over io_uring: the second transport between the kernel and
//! `FsCore`, used when the kernel offers it (`--fuse-transport`).
//!
//! On /dev/fuse every request is a `read` by a session thread and every
//! reply a `write`, and on a VM the wake-up of a thread on another CPU is
//! most of what a cold read costs. With io_uring the kernel queues each
//! request on the ring of the CPU its caller runs on, where a thread pinned
//! to that CPU answers it and fetches the next in one `io_uring_enter`
//! (FUSE_IO_URING_CMD_COMMIT_AND_FETCH). See the kernel's
//! `Documentation/filesystems/fuse-io-uring.rst`.
//!
//! - [`abi`]: the bytes of requests, replies and ring entries;
//! - [`dispatch`]: one request -> the same `FsCore` call as the fuser
//!   adapter -> reply bytes;
//! - [`queue`]: the per-CPU threads and rings.
//!
//! The INIT handshake stays with fuser on /dev/fuse, whose reply advertises
//! FUSE_OVER_IO_URING ([`UringOffer`]); fuser's session threads keep
//! answering what the kernel still sends there (FORGET, INTERRUPT), and
//! invalidations are still written to /dev/fuse.

pub(crate) mod abi;
pub(crate) mod dispatch;
pub(crate) mod queue;

use std::str::FromStr;
use std::sync::Mutex;

/// The module parameter that lets connections use io_uring (root may
/// write Y to it; it is N by default).
pub const ENABLE_URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// How requests travel between the kernel and the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FuseTransport {
    /// io_uring when the kernel allows and offers it, else /dev/fuse.
    Auto,
    /// io_uring or fail the mount.
    Uring,
    /// /dev/fuse reads and writes (fuser's session threads).
    #[default]
    Dev,
}

impl FromStr for FuseTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(FuseTransport::Auto),
            "uring" | "io_uring" => Ok(FuseTransport::Uring),
            "dev" => Ok(FuseTransport::Dev),
            other => Err(format!(
                "unknown FUSE transport {other:?} (expected auto, uring or dev)"
            )),
        }
    }
}

impl std::fmt::Display for FuseTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FuseTransport::Auto => "auto",
            FuseTransport::Uring => "uring",
            FuseTransport::Dev => "dev",
        })
    }
}

/// Turns on the fuse module's `enable_uring` (the caller found it off), so
/// that a mount about to be made can use io_uring; logs what it did and
/// returns whether it is on now. A kernel without
/// the parameter, or a daemon not allowed to write it (not root, a
/// read-only `/sys` in a container), leaves it as it is: the mount then
/// goes on as `auto` and `uring` always did without it.
///
/// The parameter only lets FUSE servers *ask* for io_uring at INIT; mounts
/// that do not ask (every other FUSE file system today) are unaffected,
/// and it stays on after the daemon exits, as other daemons leave the
/// kernel settings they need (Docker's `ip_forward`).
pub fn turn_on_in_kernel() -> bool {
    if !std::path::Path::new(ENABLE_URING_PARAM).exists() {
        return false;
    }
    match std::fs::write(ENABLE_URING_PARAM, "Y") {
        Ok(()) => {
            tracing::info!(
                "turned on FUSE over io_uring in the kernel ({ENABLE_URING_PARAM} = Y): cold \
                 reads are several times faster than over /dev/fuse; --leave-kernel-uring \
                 leaves it alone"
            );
            true
        }
        Err(e) => {
            tracing::info!("cannot turn on {ENABLE_URING_PARAM}: {e}");
            false
        }
    }
}

/// Whether the kernel lets FUSE connections use io_uring: the fuse module's
/// `enable_uring` parameter reads Y (absent on kernels without
/// `CONFIG_FUSE_IO_URING`).
pub fn kernel_enables_uring() -> bool {
    std::fs::read_to_string(ENABLE_URING_PARAM).is_ok_and(|v| v.trim() == "Y")
}

/// What the INIT handshake decided about io_uring: the adapter asks for
/// FUSE_OVER_IO_URING when the kernel offers it and records the payload
/// size the ring entries need.
#[derive(Debug, Default)]
pub(crate) struct UringOffer {
    negotiated: Mutex<Option<usize>>,
}

impl UringOffer {
    /// Called from INIT once the flag is in the reply.
    pub(crate) fn accept(&self, max_write: u32, max_readahead: u32) {
        *self.negotiated.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(payload_size(max_write, max_readahead));
    }

    /// The payload size, if io_uring was negotiated.
    pub(crate) fn negotiated(&self) -> Option<usize> {
        *self.negotiated.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Payload buffer per ring entry: the kernel refuses entries smaller than
/// max(FUSE_MIN_READ_BUFFER, max_write, max_pages * page size), and fuser
/// derives max_pages from max(max_write, max_readahead); rounding up to
/// 64 KiB covers any page size. Untouched pages of the buffer cost no
/// memory.
pub(crate) fn payload_size(max_write: u32, max_readahead: u32) -> usize {
    (max_write.max(max_readahead) as usize)
        .max(abi::MIN_READ_BUFFER)
        .next_multiple_of(64 * 1024)
}

#[cfg(test)]
mod tests;
