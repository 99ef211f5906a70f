//! The error every filesystem operation returns: the errno the kernel gets
//! and a message for the log.

use crate::catalog::LookupError;
use crate::fs::inode::InodeOverflow;

/// An errno with a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub errno: i32,
    pub message: String,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }
    pub(crate) fn not_found() -> Self {
        FsError::new(libc::ENOENT, "no such entry")
    }
    /// Every write-like request.
    pub fn read_only() -> Self {
        FsError::new(libc::EROFS, "sequinsfs is read-only")
    }
    pub(crate) fn stale(ino: u64) -> Self {
        FsError::new(libc::ESTALE, format!("inode {ino:#x} is no longer served"))
    }
}

impl From<LookupError> for FsError {
    fn from(e: LookupError) -> Self {
        FsError::new(libc::EIO, e.to_string())
    }
}

impl From<InodeOverflow> for FsError {
    fn from(_: InodeOverflow) -> Self {
        FsError::new(
            libc::EOVERFLOW,
            "version or key index too large for an inode number",
        )
    }
}
