//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The interoperability fixtures directory from `SEQUINSFS_FIXTURES`, or
/// `None` (after saying so on stderr) when it is not set, so that a test
/// without fixtures is visibly skipped rather than silently passing.
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

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
