//! [`SourceError`]: everything that can go wrong talking to a source root,
//! always saying which source, database, version or file it was about.

use std::error::Error as _;

/// An error from the source root. Every variant names what it was about
/// (the source URI, or the display path of the database, version or file).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A database's state object is damaged.
    #[error(transparent)]
    State(#[from] crate::lifecycle::state::StateError),

    /// The source URI cannot be used.
    #[error("invalid source {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },

    /// A local source root that is missing or not a directory.
    #[error("source {path} {problem}")]
    LocalRoot { path: String, problem: &'static str },

    /// The object store client for the source could not be built.
    #[error("cannot open source {uri}: {source}")]
    Open {
        uri: String,
        #[source]
        source: object_store::Error,
    },

    /// A database or version name given to the API breaks the name rules.
    #[error("invalid {what} name {name:?} (names must match [A-Za-z0-9_-]+)")]
    InvalidName { what: &'static str, name: String },

    /// Listing a directory of the source failed.
    #[error("cannot list {location}: {source}")]
    List {
        location: String,
        #[source]
        source: object_store::Error,
    },

    /// A version's `_SYMLINK` does not name a usable version: not a valid
    /// name, too long, or itself a redirect (one level only).
    #[error("{location}: {reason}")]
    BadSymlink { location: String, reason: String },

    /// A file listed earlier is gone.
    #[error("{file}: not found in the source")]
    NotFound {
        file: String,
        #[source]
        source: Option<object_store::Error>,
    },

    /// A file changed after it was listed (replaced, truncated or grown).
    /// Reading on would mix two versions of it, so the read stops.
    #[error("{file}: changed in the source since it was listed ({reason})")]
    Changed { file: String, reason: String },

    /// Reading a file from the object store failed at `offset`.
    #[error("{file}: read failed at byte {offset}: {source}")]
    Read {
        file: String,
        offset: u64,
        #[source]
        source: object_store::Error,
    },

    /// A local I/O error (reading a local source file or writing a
    /// download).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// The source error inside an `io::Error` from a reader that
    /// [`Source::open_read`](super::Source::open_read) returned (a `Read`
    /// can only fail with `io::Error`, so it carries the `SourceError`
    /// inside).
    pub fn in_io(error: &std::io::Error) -> Option<&SourceError> {
        error.get_ref()?.downcast_ref::<SourceError>()
    }

    /// Whether trying again later may succeed: network trouble, server
    /// errors, timeouts. Missing files, changed files, bad names, bad URIs
    /// and refused credentials are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::InvalidUri { .. }
            | SourceError::LocalRoot { .. }
            | SourceError::InvalidName { .. }
            | SourceError::BadSymlink { .. }
            | SourceError::NotFound { .. }
            | SourceError::State(_)
            | SourceError::Changed { .. } => false,
            SourceError::Open { source, .. }
            | SourceError::List { source, .. }
            | SourceError::Read { source, .. } => is_transient_store_error(source),
            SourceError::Io { source, .. } => is_transient_io_error(source),
        }
    }
}

/// Classifies an `object_store` error. object_store has already retried
/// what it considers retryable (5xx, 429, timeouts, dropped connections) by
/// the time an error reaches us, so this decides whether a *later* attempt
/// (a resumed read, the next refresh) is worth making.
pub(crate) fn is_transient_store_error(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    match error {
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => false,
        // `Generic` wraps transport errors, server errors after retries and
        // local I/O errors; the underlying cause decides when we can see it.
        _ => {
            let mut cause = error.source();
            while let Some(err) = cause {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    return is_transient_io_error(io);
                }
                if err
                    .downcast_ref::<object_store::client::HttpError>()
                    .is_some()
                {
                    return true;
                }
                cause = err.source();
            }
            true
        }
    }
}

pub(crate) fn is_transient_io_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        error.kind(),
        K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NetworkDown
            | K::NetworkUnreachable
            | K::HostUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: Box::new(source),
        }
    }

    #[test]
    fn classification() {
        let not_found = SourceError::NotFound {
            file: "s3://b/db/1/part-00000".into(),
            source: None,
        };
        assert!(!not_found.is_transient());
        assert!(not_found.to_string().contains("s3://b/db/1/part-00000"));

        let reset = SourceError::Read {
            file: "f".into(),
            offset: 7,
            source: generic(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(reset.is_transient());
        assert!(reset.to_string().contains("byte 7"), "{reset}");

        let denied = SourceError::List {
            location: "/src".into(),
            source: generic(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert!(!denied.is_transient());

        let changed = SourceError::Changed {
            file: "f".into(),
            reason: "ETag".into(),
        };
        assert!(!changed.is_transient());
    }
}
