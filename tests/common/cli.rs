//! Running the `sequinsfs` binary as a user would.

use std::process::Command;

/// The binary, ready for arguments.
pub fn sequinsfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
}

/// Runs `sequinsfs args...` to its end: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = sequinsfs().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
