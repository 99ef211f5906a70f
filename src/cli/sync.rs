//! `sequinsfs sync SOURCE --local-store DIR`: mirror the source root into a
//! local store once and exit. Useful to prepare a node's store before the
//! first mount (the daemon then serves it at once), and in scripts that want
//! to know whether every database loads.

use clap::Args;

use super::engine_args::EngineArgs;
use crate::engine::Engine;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The source root: a local path, file://, s3://bucket/prefix or hdfs://.
    pub source: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Log filter for stderr: error, warn, info, debug, trace, or tracing
    /// directives. The outcome of every version is printed on stdout
    /// either way.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    pub log_level: String,
}

pub fn run(args: SyncArgs) -> anyhow::Result<()> {
    super::logging::init(&args.log_level, super::logging::LogTarget::Stderr)?;
    let config = args.engine.config(args.source.as_deref())?;
    config.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let engine = Engine::start(config).await?;
        engine.refresh_now().await;
        // A store written by an older release is left fully migrated.
        engine.migrated().await;
        let mut failed = 0;
        for db in engine.catalog().status() {
            for v in &db.versions {
                match v.error_text() {
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
