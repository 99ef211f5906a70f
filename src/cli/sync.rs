//! `sequinsfs sync SOURCE --local-store DIR`: mirror the source root into a
//! local store once and exit. Useful to prepare a node's store before the
//! first mount (the daemon then serves it at once), and in scripts that want
//! to know whether every database loads.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::engine::Engine;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The source root: a local path, file://, s3://bucket/prefix or hdfs://.
    pub source: Option<String>,
    /// The local store to fill [default: /var/sequins/, or the config's].
    #[arg(long, value_name = "DIR")]
    pub local_store: Option<PathBuf>,
    /// A sequins-style TOML config file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only versions with a _SUCCESS file count [default: false].
    #[arg(long)]
    pub require_success_file: bool,
    /// Files loaded in parallel over all databases [default: 10].
    #[arg(long, value_name = "N")]
    pub max_parallel_loads: Option<usize>,
}

pub fn run(args: SyncArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(source) = args.source {
        config.source = source;
    }
    if let Some(store) = args.local_store {
        config.local_store = std::path::absolute(store)?;
    }
    if args.require_success_file {
        config.require_success_file = true;
    }
    if let Some(n) = args.max_parallel_loads {
        config.max_parallel_loads = n;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let engine = Engine::start(config).await?;
        engine.refresh_now().await;
        let mut failed = 0;
        for db in engine.catalog().status() {
            for v in &db.versions {
                match &v.error {
                    Some(e) => {
                        failed += 1;
                        println!("{} {}: ERROR {e}", db.name, v.version);
                    }
                    None => println!(
                        "{} {}: {}, {} keys",
                        db.name,
                        v.version,
                        v.state,
                        v.num_keys.unwrap_or(0)
                    ),
                }
            }
        }
        engine.shutdown().await;
        if failed > 0 {
            anyhow::bail!("{failed} version(s) failed to load");
        }
        Ok(())
    })
}
