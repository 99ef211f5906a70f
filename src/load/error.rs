//! [`LoadError`]: why a version could not be loaded, as a typed chain from
//! the database and version down to the file and byte offset.
//!
//! A load error is kept typed all the way to where it is shown: the refresh
//! log line and the version's `error` in `.status` and the HTTP status page
//! both render it with [`crate::error_chain`], so the context added at each
//! level (which version, which file, which byte) is never flattened into a
//! string halfway.

use std::path::PathBuf;

use crate::format::FormatError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::store::keyindex::KeyIndexError;

/// A load of one version that failed. Displays as the database and
/// version; [`std::error::Error::source`] leads to what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{db} version {version}")]
pub struct LoadError {
    pub db: String,
    pub version: String,
    #[source]
    pub kind: LoadErrorKind,
}

impl LoadError {
    pub fn new(db: &str, version: &str, kind: impl Into<LoadErrorKind>) -> Self {
        LoadError {
            db: db.to_string(),
            version: version.to_string(),
            kind: kind.into(),
        }
    }

    /// Whether the load stopped because the daemon is shutting down (or the
    /// load was no longer wanted) rather than because something is wrong.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, LoadErrorKind::Cancelled)
    }
}

/// What went wrong in a load.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    /// Listing or reading the source failed (the error names the file).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A data file is damaged or not in the format it claims (the error
    /// names the file and byte offset).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A downloaded Sparkey table is unusable (the source names the local
    /// copy and the byte offset).
    #[error("{file}")]
    Table {
        file: String,
        #[source]
        source: FormatError,
    },
    /// Writing or publishing in the local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the sorted key index failed.
    #[error(transparent)]
    KeyIndex(#[from] KeyIndexError),
    /// A local file of the build could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The version's files are not one of the accepted layouts.
    #[error("{0}")]
    Layout(String),
    /// A Sparkey table holds a key that belongs to another partition.
    #[error("{file}: key {key:?} belongs to partition {normal} of {partitions}, not {partition}")]
    WrongPartition {
        file: String,
        key: String,
        normal: u32,
        partitions: u32,
        partition: u32,
    },
    /// Two tables of one partition hold the same key.
    #[error(
        "key {key:?} is in both {first} and {second} (files of one partition must not overlap)"
    )]
    KeyInTwoFiles {
        key: String,
        first: String,
        second: String,
    },
    /// Two partitions hold the same key.
    #[error("key {key:?} is stored in two partitions")]
    KeyInTwoPartitions { key: String },
    /// The cluster's coordination refused a change (an invalid name).
    #[error(transparent)]
    Cluster(Box<crate::cluster::CoordinatorError>),
    /// The key directory of a partial version (for a mount in cluster
    /// mode) could not be built: a peer's listing failed or was damaged.
    #[error("key directory: {0}")]
    Directory(String),
    /// A version built by a node of a cluster was still waiting for the
    /// cluster to agree on it when a newer version appeared; it is dropped
    /// (sequins discards older prepared versions too).
    #[error("superseded by version {newer} before the cluster agreed on it")]
    Superseded { newer: String },
    /// The load was stopped: the daemon is shutting down.
    #[error("load cancelled: shutting down")]
    Cancelled,
    /// A thread of the load panicked; the version is not served.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::cluster::CoordinatorError> for LoadErrorKind {
    fn from(e: crate::cluster::CoordinatorError) -> Self {
        // Boxed: ZooKeeper's errors are large, and every load result
        // carries this type.
        LoadErrorKind::Cluster(Box::new(e))
    }
}

impl LoadErrorKind {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LoadErrorKind {
        let path = path.into();
        move |source| LoadErrorKind::Io { path, source }
    }
}

/// A key as text for an error message: valid UTF-8 as is, other bytes
/// replaced (the message only has to let a person find the key).
pub(crate) fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
