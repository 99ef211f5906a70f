//! The local store's format version (`store.json` at its root): which
//! layout the files under `data/` follow, so that a binary knows whether it
//! can serve a store, must migrate it first, or must refuse it.
//!
//! Formats:
//!
//! - **1**: every store written before the format was recorded (no
//!   `store.json`). Manifests of format 1; key indexes of format 1 (the
//!   first releases: no value locations) or 2; cluster nodes' partial
//!   versions with `agreed` markers and `directory.idx`; `pinned` markers.
//! - **2**: `store.json` present. Manifests of format 2, which may describe
//!   blocks of kinds a format-1 binary does not know. Key indexes of
//!   format 1 are still allowed while they wait for their background
//!   conversion (see [`super::migrate`]).
//!
//! Any change of the layout bumps [`STORE_FORMAT`] and adds a step to
//! [`super::migrate`]; a store of a newer format than [`STORE_FORMAT`] is
//! refused, never rebuilt or cleaned up, because its files may mean
//! something this binary does not know.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{StoreError, io_err, sync_dir};

/// The format this binary writes, and the newest it reads.
pub const STORE_FORMAT: u32 = 2;
/// The format of a store without a format file.
pub const UNRECORDED_FORMAT: u32 = 1;

pub(crate) const FORMAT_FILE: &str = "store.json";
const FORMAT_FILE_TMP: &str = "store.json.tmp";

#[derive(Debug, Serialize, Deserialize)]
struct FormatFile {
    format: u32,
    /// The release that last wrote the file (for people reading it).
    #[serde(default)]
    written_by: String,
}

/// The format of the store at `root`: what its format file says, or
/// [`UNRECORDED_FORMAT`] without one. A damaged file is an error naming it,
/// never taken for an old store.
pub fn read(root: &Path) -> Result<u32, StoreError> {
    let path = root.join(FORMAT_FILE);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UNRECORDED_FORMAT),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let file: FormatFile = serde_json::from_slice(&text).map_err(|e| {
        StoreError::Invalid(format!(
            "{}: not a store format file ({e}); fix or remove it by hand",
            path.display()
        ))
    })?;
    Ok(file.format)
}

/// Refuses a store of a newer format than this binary knows.
pub fn check_known(root: &Path, format: u32) -> Result<(), StoreError> {
    if format > STORE_FORMAT {
        return Err(StoreError::NewerFormat {
            path: root.display().to_string(),
            found: format,
            known: STORE_FORMAT,
        });
    }
    Ok(())
}

/// Records `format` durably: a temporary file, fsynced, renamed over the
/// format file, and the root fsynced. A crash leaves either format.
pub fn write(root: &Path, format: u32) -> Result<(), StoreError> {
    let tmp = root.join(FORMAT_FILE_TMP);
    let text = serde_json::to_vec_pretty(&FormatFile {
        format,
        written_by: concat!("sequinsfs ", env!("CARGO_PKG_VERSION")).to_string(),
    })
    .map_err(|e| StoreError::Invalid(format!("{}: {e}", tmp.display())))?;
    let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&text)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    let path = root.join(FORMAT_FILE);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_format_one_and_written_formats_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), UNRECORDED_FORMAT);
        write(dir.path(), STORE_FORMAT).unwrap();
        assert_eq!(read(dir.path()).unwrap(), STORE_FORMAT);
        assert!(!dir.path().join(FORMAT_FILE_TMP).exists());
    }

    #[test]
    fn newer_formats_and_damaged_files_are_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), STORE_FORMAT + 1).unwrap();
        let format = read(dir.path()).unwrap();
        let msg = check_known(dir.path(), format).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("format {}", STORE_FORMAT + 1)),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");

        fs::write(dir.path().join(FORMAT_FILE), b"{\"format\": ").unwrap();
        let msg = read(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("store.json"), "{msg}");
    }
}
