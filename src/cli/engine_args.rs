//! The flags every command that runs the engine shares (`mount`, `serve`,
//! `sync`), and how they combine with the config file: the file is read
//! first (`--config`, else sequins' search path), flags override it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, parse_duration};

/// Where sequins looks for a config file when `--config` is not given.
const CONFIG_SEARCH_PATH: [&str; 2] = ["sequins.conf", "/etc/sequins.conf"];

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Directory where versions are mirrored and indexed. [default:
    /// /var/sequins/, or `local_store` from the config file]
    #[arg(long, short = 'l', value_name = "PATH")]
    pub local_store: Option<PathBuf>,
    /// TOML config file with sequins' keys; flags override it. [default:
    /// sequins.conf in the working directory, else /etc/sequins.conf, else
    /// built-in defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Look for new versions this often (Go duration: 30s, 10m, 1h); 0 turns
    /// periodic refreshes off (SIGHUP still refreshes). [default: 0, or
    /// `refresh_period` from the config file]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub refresh_period: Option<Duration>,
    /// Only load versions that contain a _SUCCESS file. [default: off, or
    /// `require_success_file` from the config file]
    #[arg(long)]
    pub require_success_file: bool,
    /// Files loaded in parallel, over all databases; 0 means 10. [default:
    /// 10, or `max_parallel_loads` from the config file]
    #[arg(long, value_name = "N")]
    pub max_parallel_loads: Option<usize>,
}

/// The flags of the commands that answer requests (`mount`, `serve`).
#[derive(Debug, Args)]
pub struct ServingArgs {
    /// Threads answering HTTP requests, on a runtime of their own. One
    /// serves about 120,000 requests/s; raise it for more [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub http_threads: Option<u16>,
    /// While requests arrive (and for 0.1 s after), keep idle CPUs polling
    /// instead of sleeping, through the kernel's CPU latency request
    /// (/dev/cpu_dma_latency, needs root). On VMs whose idle vCPUs halt it
    /// more than doubles cold reads through the mount and requests/s on one
    /// HTTP connection; the cost is CPU time on every idle core while busy,
    /// and less throughput when the cores are saturated [default: off].
    #[arg(long)]
    pub idle_poll: bool,
    #[command(flatten)]
    pub cluster: super::cluster_args::ClusterArgs,
}

impl ServingArgs {
    /// The idle-poll manager, if asked for; fails if the kernel's latency
    /// request cannot be taken.
    pub fn idle_poll(&self) -> anyhow::Result<Option<crate::wakeup::IdlePoll>> {
        if !self.idle_poll {
            return Ok(None);
        }
        Ok(Some(
            crate::wakeup::IdlePoll::start().context("--idle-poll")?,
        ))
    }
}

impl EngineArgs {
    /// The config file (if any) with `source` and these flags applied on
    /// top. Not validated: callers apply their own flags first.
    pub fn config(&self, source: Option<&str>) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => Some(path.clone()),
            None => CONFIG_SEARCH_PATH
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        let mut config = match &file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(source) = source {
            config.source = source.to_string();
        }
        // sequins makes a relative source and local store absolute against
        // the working directory.
        if !config.source.is_empty() && !config.source.contains("://") {
            config.source = absolute(Path::new(&config.source))?
                .to_string_lossy()
                .into_owned();
        }
        if let Some(store) = &self.local_store {
            config.local_store = absolute(store)?;
        }
        if let Some(period) = self.refresh_period {
            config.refresh_period = period;
        }
        if self.require_success_file {
            config.require_success_file = true;
        }
        if let Some(n) = self.max_parallel_loads {
            config.max_parallel_loads = n;
        }
        Ok(config)
    }
}

/// Joins the cluster when the configuration asks for cluster mode (else
/// `None`): starts the ZooKeeper session advertising the address peers
/// reach `bound` at, chooses the shard ID and waits for membership to
/// settle (see [`ClusterNode::join`]), and reports the node's metrics.
pub async fn join_cluster(
    config: &crate::config::Config,
    bound: std::net::SocketAddr,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<Option<std::sync::Arc<crate::cluster::ClusterNode>>> {
    use std::sync::Arc;
    let Some(cluster_config) = config.cluster()? else {
        return Ok(None);
    };
    let address = advertised_address(cluster_config.advertised_hostname.as_deref(), bound)?;
    let coordinator = Arc::new(crate::cluster::ZkCoordinator::start(
        cluster_config.clone(),
        &address,
    ));
    let node = crate::cluster::ClusterNode::join(coordinator, cluster_config, &config.local_store)
        .await
        .context("joining the cluster")?;
    metrics.add_source(Arc::clone(&node) as Arc<dyn crate::metrics::MetricsSource>);
    Ok(Some(node))
}

/// The `host:port` a node of a cluster advertises to its peers: the
/// configured `advertised_hostname` (else the bound address when it is a
/// specific IP, else this machine's host name) with the bound port.
pub fn advertised_address(
    hostname: Option<&str>,
    bound: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let host = match hostname {
        Some(host) => host.to_string(),
        None if !bound.ip().is_unspecified() => bound.ip().to_string(),
        None => {
            let mut name = [0u8; 256];
            // SAFETY: gethostname writes at most `name.len()` bytes into the
            // buffer we own and pass with its length.
            let rc = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("cannot read the host name to advertise; set advertised_hostname");
            }
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        }
    };
    Ok(match bound.ip() {
        std::net::IpAddr::V6(_) if hostname.is_none() && !bound.ip().is_unspecified() => {
            format!("[{host}]:{}", bound.port())
        }
        _ => format!("{host}:{}", bound.port()),
    })
}

/// Stops a command's runtime once the engine has shut down. The engine's
/// shutdown ends every load's tasks at once, but a thread of a cancelled
/// load may still be inside one system call (a write the kernel throttles
/// while it flushes gigabytes): the process does not wait for it. What it
/// was writing is in a staging directory, which the next start removes.
pub fn stop_runtime(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(STRAGGLER_WAIT);
}

/// How long a stopping daemon waits for threads of cancelled loads to
/// notice: long enough for one more batch, short enough that SIGTERM is
/// prompt.
const STRAGGLER_WAIT: Duration = Duration::from_millis(200);

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}", path.display()))
}
