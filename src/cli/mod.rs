//! The `sequinsfs` command line: argument parsing and dispatch to the
//! subcommands. Errors are printed as one line on stderr with a non-zero exit.

pub mod cluster_args;
pub mod db;
pub mod demo;
pub mod engine_args;
pub mod inspect;
pub mod logging;
pub mod mount;
pub mod pack;
pub mod publish;
pub mod serve;
pub mod sync;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sequinsfs",
    version,
    about = "Serve read-only key/value datasets as files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount a source root: every database as a directory of files, one
    /// per key (`cat MOUNTPOINT/<db>/<key>`). Daemonizes once mounted
    /// unless -f is given; SIGTERM/SIGINT unmount; SIGHUP and `touch
    /// MOUNTPOINT/.refresh` refresh.
    Mount(mount::MountArgs),
    /// Serve the source root over sequins' HTTP API, without a mount.
    Serve(serve::ServeArgs),
    /// Mirror the source root into the local store once, then exit.
    Sync(sync::SyncArgs),
    /// Print the header, record count and (optionally) the first records of
    /// SequenceFiles and Sparkey tables.
    Inspect(inspect::InspectArgs),
    /// Write a version directory of Sparkey tables (one per partition,
    /// keys sorted) from SequenceFiles, TSV or JSON lines, ready to publish.
    Pack(pack::PackArgs),
    /// Write a small demo source root (used by the quick start).
    DemoData(demo::DemoArgs),
    /// Upload a version directory to SOURCE/<db>/<version>: every file with
    /// a conditional create (a second publisher fails, nothing is
    /// overwritten), `_SUCCESS` last.
    Publish(publish::PublishArgs),
    /// A database's lifecycle in the source root: list, status, offline,
    /// online, pin VERSION, unpin, delete.
    Db(db::DbArgs),
}

/// Parses the command line, runs the subcommand and maps its outcome to an
/// exit code: 0 on success, 1 on an error (printed as one line), 2 on usage
/// errors (printed by clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Sync(args) => sync::run(args),
        Command::DemoData(args) => demo::run(args),
        Command::Pack(args) => pack::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Mount(args) => mount::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Db(args) => db::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "sequinsfs: {}",
                crate::error_chain::ErrorChain(err.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}
