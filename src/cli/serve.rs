//! `sequinsfs serve SOURCE`: the daemon without a mount, answering sequins'
//! HTTP API (for machines without FUSE, or to replace a sequins server).
//!
//! Settings come from the config file (sequins' keys; `--config`, else
//! `sequins.conf` in the working directory, else `/etc/sequins.conf`, else
//! built-in defaults, as sequins looks them up) and are overridden by flags.
//! SIGHUP asks for a refresh; SIGTERM and SIGINT stop accepting connections,
//! let requests in flight finish, stop the engine and exit 0.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::engine::Engine;
use crate::http::{self, HttpOptions, RequestLogTarget};
use crate::metrics::Metrics;

use super::engine_args::{EngineArgs, ServingArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The source root: a local path, file:///path or s3://bucket/prefix.
    /// [default: `source` from the config file]
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    /// Address the HTTP API listens on. [default: 127.0.0.1:9599, or `bind`
    /// from the config file]
    #[arg(long, short = 'b', value_name = "ADDR")]
    pub bind: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Content-Type of values. [default: application/octet-stream, or
    /// `content_type` from the config file; per database: `[content_types]`]
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Log every key request in sequins' one-line format, to FILE or, with no
    /// value, to stdout. [default: off, or `[debug] request_log_enable` /
    /// `request_log_file` from the config file]
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true,
          default_missing_value = "stdout")]
    pub request_log: Option<String>,
    /// Log verbosity: error, warn, info, debug, trace, or a tracing filter
    /// such as `sequinsfs=debug`.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub serving: ServingArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level)?;
    let config = config_from(&args)?;
    for key in config.unsupported_keys() {
        tracing::warn!("config: {key} is accepted for compatibility but not used");
    }
    let mut options = HttpOptions::from(&config);
    match args.request_log.as_deref() {
        None => {}
        Some("stdout") => options.request_log = Some(RequestLogTarget::Stdout),
        Some(file) => options.request_log = Some(RequestLogTarget::File(file.into())),
    }
    if let Some(threads) = args.serving.http_threads {
        options.threads = threads.into();
    }
    // Held until the server ends.
    let idle_poll = args.serving.idle_poll()?;
    options.activity = idle_poll.as_ref().map(|poll| poll.activity());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let metrics = Metrics::new();
    if let Some(poll) = &idle_poll {
        metrics.add_source(poll.metrics_source());
    }
    let outcome = runtime.block_on(serve(config, options, metrics));
    super::engine_args::stop_runtime(runtime);
    outcome
}

async fn serve(
    config: Config,
    mut options: HttpOptions,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    // Signals first, so a SIGTERM during a slow startup is not lost.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    tokio::pin!(shutdown);

    let bind = config.bind.clone();
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    // Choosing a shard ID waits for ZooKeeper: a stop signal ends it.
    let cluster = tokio::select! {
        joined = super::engine_args::join_cluster(&config, listener.local_addr()?, &metrics) => joined?,
        () = &mut shutdown => return Ok(()),
    };
    options.cluster = cluster.clone();
    let engine = Engine::launch_in(config, Arc::clone(&metrics), cluster).await?;
    // A stop signal during the first loads stops them at once.
    tokio::select! {
        () = engine.ready() => {}
        () = &mut shutdown => {
            engine.shutdown().await;
            return Ok(());
        }
    }
    tracing::info!("serving HTTP on {}", listener.local_addr()?);

    let refresh = engine.refresh_handle();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: refreshing");
            refresh.trigger();
        }
    });
    // The sidecar runs on a runtime of its own (see `HttpOptions::threads`);
    // this one waits for the signals and runs the engine.
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let sidecar = http::spawn_dedicated(
        listener.into_std()?,
        Arc::clone(engine.catalog()),
        options,
        metrics,
        async {
            let _ = http_stopped.await;
        },
    )
    .context("starting the HTTP server")?;
    let mut finished = tokio::task::spawn_blocking(move || sidecar.join());
    let joined = tokio::select! {
        () = shutdown => {
            let _ = stop_http.send(());
            finished.await
        }
        // The server ended by itself (it cannot accept any more).
        joined = &mut finished => joined,
    };
    let served = joined
        .context("HTTP server thread")?
        .map_err(|_| anyhow::anyhow!("the HTTP server thread panicked"))?;
    engine.shutdown().await;
    served.context("HTTP server")
}

/// The config file (if any) with the flags applied on top.
pub fn config_from(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = args.engine.config(args.source.as_deref())?;
    if let Some(bind) = &args.bind {
        config.bind = bind.clone();
    }
    if let Some(ct) = &args.content_type {
        config.content_type = ct.clone();
    }
    args.serving.cluster.apply(&mut config);
    config.validate()?;
    Ok(config)
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    // Logs go to stderr; stdout is the request log's when enabled.
    super::logging::init(level, super::logging::LogTarget::Stderr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        Wrapper::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sequins.conf");
        std::fs::write(
            &conf,
            "source = \"/from/file\"\nbind = \"0.0.0.0:1\"\nrefresh_period = \"10m\"\ncontent_type = \"text/plain\"\n",
        )
        .unwrap();
        let conf = conf.to_str().unwrap();
        let args = parse(&[
            "--config",
            conf,
            "--bind",
            "127.0.0.1:7",
            "--refresh-period",
            "1m",
        ]);
        let config = config_from(&args).unwrap();
        assert_eq!(config.source, "/from/file");
        assert_eq!(config.bind, "127.0.0.1:7");
        assert_eq!(config.refresh_period, std::time::Duration::from_secs(60));
        assert_eq!(config.content_type, "text/plain");

        let args = parse(&[
            "/elsewhere",
            "--config",
            conf,
            "--content-type",
            "image/png",
            "--max-parallel-loads",
            "3",
            "--require-success-file",
        ]);
        let config = config_from(&args).unwrap();
        assert_eq!(config.source, "/elsewhere");
        assert_eq!(config.content_type, "image/png");
        assert_eq!(config.parallel_loads(), 3);
        assert!(config.require_success_file);
    }

    #[test]
    fn relative_source_becomes_absolute_and_defaults_apply() {
        let args = parse(&["data/root", "--config", "/dev/null"]);
        let config = config_from(&args).unwrap();
        assert!(std::path::Path::new(&config.source).is_absolute());
        assert!(config.source.ends_with("data/root"));
        assert_eq!(config.bind, "127.0.0.1:9599");
        assert!(
            parse(&["s3://b/p", "--config", "/dev/null"])
                .source
                .is_some()
        );
        assert_eq!(
            config_from(&parse(&["s3://b/p", "--config", "/dev/null"]))
                .unwrap()
                .source,
            "s3://b/p"
        );
    }

    #[test]
    fn request_log_flag_with_and_without_a_file() {
        assert_eq!(parse(&["/s"]).request_log, None);
        assert_eq!(
            parse(&["/s", "--request-log"]).request_log.as_deref(),
            Some("stdout")
        );
        assert_eq!(
            parse(&["/s", "--request-log=/tmp/r.log"])
                .request_log
                .as_deref(),
            Some("/tmp/r.log")
        );
    }

    #[test]
    fn missing_source_is_an_error() {
        let err = config_from(&parse(&["--config", "/dev/null"])).unwrap_err();
        assert!(err.to_string().contains("source"), "{err}");
        assert!(Wrapper::try_parse_from(["serve", "/s", "--refresh-period", "soon"]).is_err());
    }
}
