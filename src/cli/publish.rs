//! `sequinsfs publish DIR SOURCE/<db>/<version>`: the command line of
//! [`lifecycle::publish`](crate::lifecycle::publish), which holds the logic.

use std::path::PathBuf;

use clap::Args;

use crate::lifecycle::commands::{open_source, split_target};
use crate::lifecycle::publish::{DEFAULT_MULTIPART_THRESHOLD, PublishOptions, publish};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The version directory to upload: its files (not subdirectories;
    /// `_SUCCESS` and hidden files are skipped, `_SUCCESS` is written last).
    pub dir: PathBuf,
    /// Where: SOURCE/<db>/<version>, SOURCE a local path or s3://bucket/prefix.
    pub target: String,
    /// Continue an interrupted publish of this version: files already
    /// uploaded are verified (size and CRC32C) and skipped.
    #[arg(long)]
    pub resume: bool,
    /// Publish even if the version name does not sort after the newest
    /// version of the database.
    #[arg(long)]
    pub force: bool,
    /// Files larger than this many bytes go to object stores as multipart
    /// uploads (not atomic creates; see docs/OPERATIONS.md).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MULTIPART_THRESHOLD)]
    pub multipart_threshold: u64,
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let (root, names) = split_target(&args.target, 2, &["db", "version"])?;
    let source = open_source(&root)?;
    let options = PublishOptions {
        resume: args.resume,
        force: args.force,
        multipart_threshold: args.multipart_threshold,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        publish(&args.dir, &source, &names[0], &names[1], &options).await?;
        Ok(())
    })
}
