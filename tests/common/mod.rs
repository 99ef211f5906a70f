//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod data;
pub mod engine;
pub mod http;
pub mod mount;
pub mod mutate;
pub mod netns;
pub mod relay;
pub mod roots;
pub mod s3;
pub mod zk;

#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use mount::*;

use std::path::PathBuf;

/// The interoperability fixtures directory from `SEQUINSFS_FIXTURES`, or
/// `None` (after saying so on stderr) when it is not set, so that a test
/// without fixtures is visibly skipped rather than silently passing.
pub fn fixtures_dir() -> Option<PathBuf> {
    match std::env::var_os("SEQUINSFS_FIXTURES") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "SEQUINSFS_FIXTURES={} is not a directory",
                dir.display()
            );
            Some(dir)
        }
        _ => {
            eprintln!(
                "skipped: SEQUINSFS_FIXTURES not set ({})",
                std::thread::current().name().unwrap_or("test")
            );
            None
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lower- or upper-case hex.
pub fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}
