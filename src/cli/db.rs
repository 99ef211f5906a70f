//! `sequinsfs db list|status|offline|online|pin|unpin|delete`: the command
//! line of [`lifecycle::commands`](crate::lifecycle::commands), which holds
//! the logic. State changes print the new state in one line.

use clap::{Args, Subcommand};

use crate::lifecycle::commands::{self, Change, Confirmation, open_source, split_target};

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Every database of a source root with its versions and state.
    List {
        /// The source root: a local path or s3://bucket/prefix.
        source: String,
    },
    /// A database's versions, the newest, and its state document.
    Status {
        /// SOURCE/<db>
        target: String,
    },
    /// Stop serving the database (daemons keep its local data).
    Offline {
        /// SOURCE/<db>
        target: String,
    },
    /// Serve the database again.
    Online {
        /// SOURCE/<db>
        target: String,
    },
    /// Serve VERSION even if newer versions exist (a rollback).
    Pin {
        /// A version of the database present in the source.
        version: String,
        /// SOURCE/<db>
        target: String,
    },
    /// Serve the newest version again.
    Unpin {
        /// SOURCE/<db>
        target: String,
    },
    /// Delete every object of the database from the source, its state last.
    Delete {
        /// Do not ask for confirmation (required when stdin is not a
        /// terminal).
        #[arg(long)]
        force: bool,
        /// SOURCE/<db>
        target: String,
    },
}

pub fn run(args: DbArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let change = |target: &str, change: Change| {
            let target = target.to_string();
            async move {
                let (root, names) = split_target(&target, 1, &["db"])?;
                let source = open_source(&root)?;
                let updated = commands::change_state(&source, &names[0], change).await?;
                println!(
                    "{}: {}",
                    source.display_path(&names[0], None),
                    updated.state.summary()
                );
                anyhow::Ok(())
            }
        };
        match args.command {
            DbCommand::List { source } => {
                let source = open_source(&source)?;
                for line in commands::list(&source).await? {
                    println!("{line}");
                }
                Ok(())
            }
            DbCommand::Status { target } => {
                let (root, names) = split_target(&target, 1, &["db"])?;
                let source = open_source(&root)?;
                print!("{}", commands::status(&source, &names[0]).await?);
                Ok(())
            }
            DbCommand::Offline { target } => change(&target, Change::Offline).await,
            DbCommand::Online { target } => change(&target, Change::Online).await,
            DbCommand::Pin { version, target } => change(&target, Change::Pin(version)).await,
            DbCommand::Unpin { target } => change(&target, Change::Unpin).await,
            DbCommand::Delete { force, target } => {
                let (root, names) = split_target(&target, 1, &["db"])?;
                let source = open_source(&root)?;
                let confirmation = if force {
                    Confirmation::Forced
                } else {
                    Confirmation::Ask
                };
                let deleted = commands::delete(&source, &names[0], confirmation).await?;
                println!(
                    "{}: deleted ({deleted} object(s))",
                    source.display_path(&names[0], None)
                );
                Ok(())
            }
        }
    })
}
