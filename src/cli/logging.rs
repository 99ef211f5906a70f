//! Log output of the commands that run the engine: a level filter, and
//! colour only where a person reads it.
//!
//! Escape codes are written only to a terminal, and never when `NO_COLOR`
//! is set (<https://no-color.org>): a log file, a pipe into another program
//! or a journal gets plain text.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;

/// Where log lines go.
pub enum LogTarget<'a> {
    Stderr,
    /// Appended to this file (its directory is created).
    File(&'a Path),
}

/// Installs the global logger with `level` (error, warn, info, debug,
/// trace, or tracing directives such as `sequinsfs=debug`).
pub fn init(level: &str, target: LogTarget<'_>) -> anyhow::Result<()> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    if !level.contains("fuser") {
        // fuser warns "Unmount failed: Invalid argument" when the mount was
        // already taken down by `fusermount3 -u` or `umount`, the documented
        // ways to stop: a normal shutdown, not a warning.
        filter = filter.add_directive("fuser::mnt=error".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match target {
        LogTarget::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("log directory {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        LogTarget::Stderr => builder
            .with_ansi(colour_wanted(std::io::stderr().is_terminal()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A logger already installed (a second command in one process, as in
    // tests) keeps logging where it did.
    let _ = installed;
    Ok(())
}

/// Whether to colour output going to a terminal (`is_terminal`), given
/// `NO_COLOR`.
fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
