//! `sequinsfs mount SOURCE MOUNTPOINT`: start the engine, mount it, and run
//! until SIGTERM/SIGINT or an external unmount.
//!
//! By default the command daemonizes once the mount is ready: it forks
//! *before* any thread or runtime exists (forking a multi-threaded process
//! is unsafe), the child does all the work, and the parent waits on a pipe
//! for "mounted" or the error, printing it and exiting 0 or 1 accordingly,
//! so `sequinsfs mount ... && cat ...` works in scripts and fstab. With
//! `-f` everything runs in the foreground (systemd, containers).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::config::Config;
use crate::engine::Engine;
use crate::fs::{MountHandle, MountOptions};

use super::engine_args::{EngineArgs, ServingArgs};
use super::logging::LogTarget;

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The source root: a local path, file:///path or s3://bucket/prefix.
    /// May be left out when the config file sets `source`; then the one
    /// path given is the mount point.
    #[arg(value_name = "SOURCE")]
    first: String,
    /// An existing empty directory to mount on.
    #[arg(value_name = "MOUNTPOINT")]
    second: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Let other users read the mount (root may always; non-root daemons need
    /// `user_allow_other` in /etc/fuse.conf) [default: off].
    #[arg(long)]
    pub allow_other: bool,
    /// Owner of the files [default: the user running the daemon].
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Group of the files [default: the group of the daemon].
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Mount read-only in the kernel: a warm `cat` then sends no request at
    /// all (without it, the kernel refreshes a file's atime once after each
    /// first read), but the kernel refuses `touch .refresh`; refresh with
    /// SIGHUP or --refresh-period instead [default: off].
    #[arg(long)]
    pub ro: bool,
    /// How FUSE requests reach the daemon: `dev` (reads and writes of
    /// /dev/fuse), `uring` (FUSE over io_uring, per-CPU queues; fails if the
    /// kernel does not offer it) or `auto` (io_uring when the kernel offers
    /// it, else dev). See docs/OPERATIONS.md [default: auto; dev in cluster
    /// mode].
    #[arg(long, value_name = "auto|uring|dev")]
    pub fuse_transport: Option<crate::fs::FuseTransport>,
    /// Leave the fuse module's `enable_uring` parameter as it is [default:
    /// a mount that may use io_uring (`auto` or `uring`) turns it on if it
    /// is off and the daemon may write it (root), and logs that it did].
    #[arg(long)]
    pub leave_kernel_uring: bool,
    /// Mount even if the mount point is not empty, hiding its files while
    /// mounted (as other FUSE file systems' `nonempty`) [default: refuse].
    #[arg(long)]
    pub nonempty: bool,
    /// Before switching to a new version, warm the keys readers hold in the
    /// kernel's caches (entries, attributes and values) in the new version
    /// for at most this long, then switch anyway; warming goes on after the
    /// switch. `0s` switches at once and warms after it [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub prewarm_limit: Option<Duration>,
    /// Do not pre-warm switches (nor track which keys the kernel holds)
    /// [default: pre-warm].
    #[arg(long, conflicts_with = "prewarm_limit")]
    pub no_prewarm: bool,
    /// Stay in the foreground instead of daemonizing once mounted [default:
    /// daemonize].
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Also serve sequins' HTTP API on this address, e.g. 127.0.0.1:9599
    /// [default: off].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    #[command(flatten)]
    pub serving: ServingArgs,
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    /// such as `sequinsfs=debug`.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Append logs to this file [default: with -f, stderr; as a daemon,
    /// `sequinsfs.log` in the local store, since a daemon has no terminal].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl MountArgs {
    /// The source root given on the command line, if any.
    pub fn source(&self) -> Option<&str> {
        self.second.is_some().then_some(self.first.as_str())
    }

    /// The mount point: the last path given.
    pub fn mountpoint(&self) -> PathBuf {
        self.second
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.first))
    }
}

/// Runs the command; see the module docs.
pub fn run(args: MountArgs) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    let config_source = config.source.clone();
    let given_mountpoint = args.mountpoint();
    let mountpoint = match given_mountpoint.canonicalize() {
        Ok(path) => path,
        // A stale FUSE mount point cannot be canonicalized; `fs::mount`
        // recovers it (and logs that it did).
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            std::path::absolute(&given_mountpoint)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {} does not exist", given_mountpoint.display())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("mount point {}", given_mountpoint.display()));
        }
    };
    if crate::fs::fuse::is_mount_point(&mountpoint) {
        bail!(
            "{} is already mounted (unmount it first: fusermount3 -u {})",
            mountpoint.display(),
            mountpoint.display()
        );
    }
    if !args.nonempty && !is_empty_dir(&mountpoint) {
        bail!(
            "mount point {} is not empty (its files would be hidden; --nonempty mounts over them)",
            mountpoint.display()
        );
    }
    if args.foreground {
        init_logging(&args, args.log_file.as_deref())?;
        return serve(&args, config, &mountpoint, |_| {});
    }
    let (parent_end, child_end) = pipe()?;
    // SAFETY: no other thread exists yet (nothing above starts one: clap,
    // config parsing and path checks are single-threaded), so the child
    // is a faithful copy that may keep running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            drop(parent_end);
            // A new session: the daemon outlives the shell that started it.
            // SAFETY: setsid has no preconditions.
            unsafe { libc::setsid() };
            // Written once, then closed: the parent reads to end of file.
            let mut report = Some(std::fs::File::from(child_end));
            let log_file = daemon_log_file(&args, &config);
            let result = init_logging(&args, Some(&log_file)).and_then(|()| {
                serve(&args, config, &mountpoint, |outcome| {
                    if let Some(mut pipe) = report.take() {
                        let _ = pipe.write_all(outcome.as_bytes());
                        let _ = pipe.flush();
                    }
                    if outcome.starts_with("ok") {
                        detach_stdio();
                    }
                })
            });
            if let Err(err) = &result {
                match report.take() {
                    Some(mut pipe) => {
                        let _ = pipe.write_all(format!("error: {err:#}").as_bytes());
                    }
                    // After daemonizing: only the log can tell.
                    None => tracing::error!("{err:#}"),
                }
            }
            // The parent prints the outcome; the daemon only logs it.
            std::process::exit(if result.is_ok() { 0 } else { 1 });
        }
        _child => {
            drop(child_end);
            let mut outcome = String::new();
            std::fs::File::from(parent_end)
                .read_to_string(&mut outcome)
                .context("waiting for the daemon")?;
            match outcome.strip_prefix("ok") {
                Some(_) => {
                    println!(
                        "sequinsfs: {} mounted at {}",
                        config_source,
                        mountpoint.display()
                    );
                    Ok(())
                }
                None => match outcome.strip_prefix("error: ") {
                    Some(err) => bail!("{err}"),
                    None => bail!("the daemon exited before mounting"),
                },
            }
        }
    }
}

/// The config file (if any) with the flags applied on top.
fn build_config(args: &MountArgs) -> anyhow::Result<Config> {
    let mut config = args.engine.config(args.source())?;
    if let Some(addr) = args.http {
        config.bind = addr.to_string();
    }
    args.serving.cluster.apply(&mut config);
    config.validate()?;
    if config.cluster()?.is_some() && args.http.is_none() {
        anyhow::bail!(
            "cluster mode ([sharding]/[zk]) needs --http ADDR: peers ask this node \
             for its partitions through the HTTP sidecar"
        );
    }
    Ok(config)
}

/// Starts the engine and the mount, reports the outcome through `report`
/// ("ok" or "error: ..."), then runs until a signal or an external unmount.
fn serve(
    args: &MountArgs,
    config: Config,
    mountpoint: &Path,
    mut report: impl FnMut(&str),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sequinsfs-engine")
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(async {
        for key in config.unsupported_keys() {
            tracing::warn!("config key {key} is accepted but not supported yet");
        }
        let mut http_options = crate::http::HttpOptions::from(&config);
        if let Some(threads) = args.serving.http_threads {
            http_options.threads = threads.into();
        }
        // Started here, after the fork: its thread must live in the daemon.
        let idle_poll = match args.serving.idle_poll() {
            Ok(poll) => poll,
            Err(err) => {
                report(&format!("error: {err:#}"));
                return Err(err);
            }
        };
        let activity = idle_poll.as_ref().map(|poll| poll.activity());
        http_options.activity = activity.clone();
        let metrics = crate::metrics::Metrics::new();
        if let Some(poll) = &idle_poll {
            metrics.add_source(poll.metrics_source());
        }
        // Bind the sidecar before anything else so a busy port is reported
        // as a startup error, not discovered later.
        let listener = match args.http {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(err) => {
                    let err = anyhow::anyhow!("cannot listen on {addr}: {err}");
                    report(&format!("error: {err:#}"));
                    return Err(err);
                }
            },
            None => None,
        };
        // Signals first, so a SIGTERM during a long first load stops it.
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(err) => {
                report(&format!("error: {err:#}"));
                return Err(err);
            }
        };
        // A node of a cluster joins before it loads; a stop signal ends the
        // wait for ZooKeeper.
        let bound = listener.as_ref().and_then(|l| l.local_addr().ok());
        let cluster = match bound {
            None => None,
            Some(bound) => tokio::select! {
                joined = super::engine_args::join_cluster(&config, bound, &metrics) => match joined {
                    Ok(node) => node,
                    Err(err) => {
                        report(&format!("error: {err:#}"));
                        return Err(err);
                    }
                },
                signal = signals.stop() => {
                    report(&format!("error: stopped by {signal} while joining the cluster"));
                    return Ok(());
                }
            },
        };
        if let Some(node) = &cluster {
            // The mount lists every key: versions get a key directory.
            node.build_directories();
        }
        http_options.cluster = cluster.clone();
        let started =
            Engine::launch_in(config, std::sync::Arc::clone(&metrics), cluster.clone()).await;
        let engine = match started {
            Ok(engine) => engine,
            Err(err) => {
                report(&format!("error: {}", crate::error_chain::ErrorChain(&err)));
                return Err(err.into());
            }
        };
        // The HTTP sidecar reads the same catalog as the mount, never the
        // mount itself; it stops after the unmount. A node of a cluster
        // starts it before its first loads end: peers list its partitions
        // for their key directories while they load the same versions.
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_stopped = async {
            let _ = http_stopped.await;
        };
        let mut sidecar = None;
        let mut pending_sidecar = Some((listener, http_options, http_stopped));
        if cluster.is_some()
            && let Some((listener, http_options, stopped)) = pending_sidecar.take()
        {
            match start_sidecar(listener, &engine, http_options, &metrics, stopped) {
                Ok(thread) => sidecar = thread,
                Err(err) => {
                    report(&format!("error: {err:#}"));
                    engine.shutdown().await;
                    return Err(err);
                }
            }
        }
        tokio::select! {
            () = engine.ready() => {}
            signal = signals.stop() => {
                report(&format!("error: stopped by {signal} while loading"));
                let _ = stop_http.send(());
                engine.shutdown().await;
                return Ok(());
            }
        }
        // io_uring where the kernel allows it: it beats /dev/fuse on cold
        // reads (docs/PERFORMANCE.md). Not for a node of a cluster by
        // default: a READ of a peer's key would hold up the ring thread of
        // the reader's CPU for the whole network fetch.
        let transport = args.fuse_transport.unwrap_or(if cluster.is_some() {
            crate::fs::FuseTransport::Dev
        } else {
            crate::fs::FuseTransport::Auto
        });
        let options = MountOptions {
            uid: args.uid,
            gid: args.gid,
            allow_other: args.allow_other,
            kernel_read_only: args.ro,
            transport,
            turn_on_kernel_uring: !args.leave_kernel_uring,
            prewarm_limit: (!args.no_prewarm)
                .then(|| args.prewarm_limit.unwrap_or(crate::fs::DEFAULT_PREWARM_LIMIT)),
            activity,
            remote_reads: cluster.as_ref().map(|node| {
                crate::fs::RemoteReadsHandle(std::sync::Arc::new(
                    crate::cluster::peer_reads::PeerReads::new(
                        std::sync::Arc::clone(node),
                        tokio::runtime::Handle::current(),
                    ),
                ))
            }),
            ..MountOptions::default()
        };
        let refresh = engine.refresh_handle();
        let mounted = crate::fs::mount(
            std::sync::Arc::clone(engine.catalog()),
            move || refresh.trigger(),
            mountpoint,
            options,
        );
        let handle = match mounted {
            Ok(handle) => handle,
            Err(err) => {
                report(&format!("error: {err}"));
                let _ = stop_http.send(());
                engine.shutdown().await;
                return Err(err.into());
            }
        };
        if let Some((listener, http_options, stopped)) = pending_sidecar.take() {
            match start_sidecar(listener, &engine, http_options, &metrics, stopped) {
                Ok(thread) => sidecar = thread,
                Err(err) => {
                    report(&format!("error: {err:#}"));
                    let _ = handle.unmount();
                    engine.shutdown().await;
                    return Err(err);
                }
            }
        }
        report("ok");
        let outcome = run_until_stopped(&engine, &handle, &mut signals).await;
        if let Err(err) = handle.unmount() {
            tracing::error!("{err}");
        }
        let _ = stop_http.send(());
        if let Some(sidecar) = sidecar {
            match tokio::task::spawn_blocking(move || sidecar.join()).await {
                Ok(Ok(Err(err))) => tracing::error!("HTTP sidecar: {err}"),
                Ok(Err(_)) => tracing::error!("HTTP sidecar thread panicked"),
                Err(err) => tracing::error!("HTTP sidecar task: {err}"),
                Ok(Ok(Ok(()))) => {}
            }
        }
        engine.shutdown().await;
        outcome
    });
    super::engine_args::stop_runtime(runtime);
    outcome
}

/// Starts the HTTP sidecar, if one is configured, on a runtime of its own
/// (see `HttpOptions::threads`), until `stopped` completes.
fn start_sidecar(
    listener: Option<tokio::net::TcpListener>,
    engine: &Engine,
    http_options: crate::http::HttpOptions,
    metrics: &std::sync::Arc<crate::metrics::Metrics>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<std::thread::JoinHandle<std::io::Result<()>>>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    tracing::info!("serving HTTP on {:?}", listener.local_addr().ok());
    let thread = listener
        .into_std()
        .and_then(|listener| {
            crate::http::spawn_dedicated(
                listener,
                std::sync::Arc::clone(engine.catalog()),
                http_options,
                std::sync::Arc::clone(metrics),
                stopped,
            )
        })
        .map_err(|err| anyhow::anyhow!("cannot start the HTTP server: {err}"))?;
    Ok(Some(thread))
}

/// The signals the daemon acts on.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next SIGTERM or SIGINT, by name.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Waits for SIGTERM/SIGINT (clean unmount) or an external unmount, and
/// turns SIGHUP into a refresh.
async fn run_until_stopped(
    engine: &Engine,
    handle: &MountHandle,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    // How often to notice an unmount done from outside (`fusermount3 -u`,
    // `umount`): the session ends and so should the daemon.
    let mut liveness = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM: unmounting"); return Ok(()); }
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT: unmounting"); return Ok(()); }
            _ = signals.hangup.recv() => {
                tracing::info!("SIGHUP: refresh requested");
                engine.refresh_handle().trigger();
            }
            _ = liveness.tick() => {
                if !handle.is_mounted() {
                    // `fusermount3 -u` and `umount` are documented ways
                    // to stop: a normal shutdown.
                    tracing::info!("{} was unmounted from outside; exiting", handle.mountpoint().display());
                    return Ok(());
                }
            }
        }
    }
}

/// Where a daemonized mount logs: `--log-file`, or `sequinsfs.log` in the
/// local store (a daemon's stderr goes nowhere, and the store is the one
/// directory the daemon is sure to own).
fn daemon_log_file(args: &MountArgs, config: &Config) -> PathBuf {
    args.log_file
        .clone()
        .unwrap_or_else(|| config.local_store.join(DAEMON_LOG_NAME))
}

/// File name of a daemon's log in the local store when no `--log-file` is
/// given.
pub const DAEMON_LOG_NAME: &str = "sequinsfs.log";

/// Logs to `file` (appending, creating it and its directory if needed) or,
/// without one, to stderr.
fn init_logging(args: &MountArgs, file: Option<&Path>) -> anyhow::Result<()> {
    let target = match file {
        Some(path) => LogTarget::File(path),
        None => LogTarget::Stderr,
    };
    super::logging::init(&args.log_level, target)
}

/// Whether `dir` has no entries (a directory that cannot be read counts as
/// empty: mounting will report the real problem).
fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Points stdin/stdout/stderr at /dev/null once the daemon is running, so
/// it holds no terminal and the starting shell's pipes close.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays open
            // for the duration of the calls.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MountArgs,
    }

    #[test]
    fn flags_override_the_config() {
        let parsed = Wrapper::try_parse_from([
            "x",
            "s3://bucket/root",
            "/mnt/sequins",
            "--local-store",
            "/data/store",
            "--refresh-period",
            "10m",
            "--require-success-file",
            "--max-parallel-loads",
            "4",
            "--http",
            "127.0.0.1:9599",
        ])
        .unwrap();
        let config = build_config(&parsed.args).unwrap();
        assert_eq!(config.source, "s3://bucket/root");
        assert_eq!(config.local_store, PathBuf::from("/data/store"));
        assert_eq!(config.refresh_period, Duration::from_secs(600));
        assert!(config.require_success_file);
        assert_eq!(config.parallel_loads(), 4);
        assert_eq!(config.bind, "127.0.0.1:9599");
        assert!(!parsed.args.foreground);
    }

    #[test]
    fn a_daemon_logs_to_the_local_store_unless_told_otherwise() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["x", "/src", "/mnt", "--local-store", "/data/store"];
            argv.extend_from_slice(extra);
            let args = Wrapper::try_parse_from(argv).unwrap().args;
            let config = build_config(&args).unwrap();
            daemon_log_file(&args, &config)
        };
        assert_eq!(parse(&[]), PathBuf::from("/data/store/sequinsfs.log"));
        assert_eq!(
            parse(&["--log-file", "/var/log/sequinsfs.log"]),
            PathBuf::from("/var/log/sequinsfs.log")
        );
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        assert!(
            Wrapper::try_parse_from(["x", "/src", "/mnt", "--refresh-period", "soon"]).is_err()
        );
    }
}
