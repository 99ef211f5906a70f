//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod s3;

use std::path::PathBuf;

/// The interop fixture directory from `SEQUINSFS_FIXTURES`, or `None` after
/// printing that the calling test is skipped.
pub fn fixtures_dir() -> Option<PathBuf> {
    match std::env::var_os("SEQUINSFS_FIXTURES") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "SEQUINSFS_FIXTURES={} is not a directory",
                dir.display()
            );
            Some(dir)
        }
        None => {
            eprintln!("skipped: SEQUINSFS_FIXTURES not set");
            None
        }
    }
}
