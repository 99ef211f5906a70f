//! The bytes behind an opened log or index: a read-only memory map of the
//! file, or an owned buffer (an index decoded from `.spi.sz` in memory, or
//! test data).

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

use crate::format::{FormatError, FormatErrorKind, FormatResult};

pub(crate) enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> FormatResult<Backing> {
        let io_err = |e| FormatError::new(path.display().to_string(), 0, FormatErrorKind::Io(e));
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the mapping is read-only and the files are immutable once
        // published (writers create a new file and rename it into place, never
        // modify one in place). If another process truncated the file anyway,
        // access could fault (SIGBUS); that is the accepted cost of mmap.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        Ok(Backing::Mapped(map))
    }
}

impl Deref for Backing {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(map) => map,
            Backing::Owned(bytes) => bytes,
        }
    }
}
