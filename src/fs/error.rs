//! The error every filesystem operation returns: the errno the kernel gets,
//! a message, the error that caused it (with its whole chain) and the level
//! at which the adapter logs it.
//!
//! Most failed requests are ordinary (a shell probing for a missing file, a
//! tool trying to write): logging them loudly would drown the few that
//! matter, a version's stored data that cannot be read. So each error says
//! how much it matters, and the adapter logs every failed request exactly
//! once, at that level, with the opcode and inode (the core never logs the
//! errors it returns).

use tracing::Level;

use crate::catalog::LookupError;
use crate::error_chain::ErrorChain;
use crate::fs::inode::InodeOverflow;

/// Why an operation failed; see the module docs.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    errno: i32,
    message: String,
    level: Level,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// An error the kernel sees as `errno`, logged at `level`.
    pub fn new(errno: i32, level: Level, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
            level,
            source: None,
        }
    }

    /// Adds the error that caused this one.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// ENOENT: asked for a name that does not exist. The most common
    /// failure of all (shells and tools probe for files), so only traced.
    pub fn not_found() -> Self {
        FsError::new(libc::ENOENT, Level::TRACE, "no such entry")
    }

    /// EROFS: every write-like request. A user's mistake, not the daemon's.
    pub fn read_only() -> Self {
        FsError::new(libc::EROFS, Level::DEBUG, "sequinsfs is read-only")
    }

    /// ESTALE: the kernel asked about an inode that is no longer served (a
    /// version deleted since, an evicted `.status` snapshot). Expected
    /// after switches, so only at debug level.
    pub fn stale(ino: u64) -> Self {
        FsError::new(
            libc::ESTALE,
            Level::DEBUG,
            format!("inode {ino:#x} is no longer served"),
        )
    }

    /// A request that does not apply to this kind of inode (ENOTDIR,
    /// EISDIR, EINVAL): the caller's mistake.
    pub fn wrong_kind(errno: i32, message: &'static str) -> Self {
        FsError::new(errno, Level::DEBUG, message)
    }

    /// EIO: a version's stored data could not be read (damaged after it
    /// was validated, or a bug). Always worth an operator's attention.
    pub fn damaged(message: impl Into<String>) -> Self {
        FsError::new(libc::EIO, Level::ERROR, message)
    }

    /// The errno the kernel gets.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The level at which a request failing with this error is logged.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The message followed by every error in the source chain, for the
    /// log line: `cannot read stored data: db version 1: stored data is
    /// unreadable: part-00000-000.spl: byte 84: ...`.
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }
}

/// A version's data could not be read: EIO, logged as an error with the
/// lookup error (db, version, what failed) as its source.
impl From<LookupError> for FsError {
    fn from(e: LookupError) -> Self {
        FsError::damaged("cannot read stored data").with_source(e)
    }
}

/// A version or key index too large for an inode number: the kernel gets
/// EOVERFLOW; logged as a warning since it is a limit of the mount that a
/// data set hit, not a fault.
impl From<InodeOverflow> for FsError {
    fn from(e: InodeOverflow) -> Self {
        FsError::new(
            libc::EOVERFLOW,
            Level::WARN,
            "version or key index too large for an inode number",
        )
        .with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_are_eio_with_their_chain() {
        let lookup = LookupError {
            db: "db".into(),
            version: "1".into(),
            cause: std::sync::Arc::new(std::io::Error::other("bad offset")),
        };
        let err = FsError::from(lookup);
        assert_eq!((err.errno(), err.level()), (libc::EIO, Level::ERROR));
        assert_eq!(
            err.chain().to_string(),
            "cannot read stored data: db version 1: stored data is unreadable: bad offset"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn ordinary_failures_are_quiet() {
        assert_eq!(FsError::not_found().level(), Level::TRACE);
        assert_eq!(FsError::stale(7).level(), Level::DEBUG);
        assert_eq!(FsError::read_only().errno(), libc::EROFS);
        assert_eq!(FsError::not_found().chain().to_string(), "no such entry");
    }
}
