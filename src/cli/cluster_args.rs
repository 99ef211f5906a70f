//! Flags for cluster mode, one per key of sequins' `[zk]` and `[sharding]`
//! sections (see `cluster::config`), shared by `mount` and `serve`. A flag
//! overrides the file's key; giving `--zk-servers` turns cluster mode on,
//! as `[zk] servers` does.

use std::time::Duration;

use clap::Args;

use crate::config::{Config, parse_duration};

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Cluster (sequins' [zk] and [sharding] keys)")]
pub struct ClusterArgs {
    /// ZooKeeper servers, `host[:port]`, comma-separated; turns cluster mode
    /// on [`[zk] servers`].
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub zk_servers: Option<Vec<String>>,
    /// Cluster mode on even without --zk-servers (ZooKeeper at
    /// localhost:2181) [`[sharding] enabled`].
    #[arg(long)]
    pub cluster: bool,
    /// The cluster's ZooKeeper root is `/<NAME>/v1` [`cluster_name`; default
    /// sequins].
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// ZooKeeper session timeout [`[zk] timeout`; default 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub zk_timeout: Option<Duration>,
    /// Quiet period of the peer list before a starting node trusts it
    /// [`time_to_converge`; default 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub time_to_converge: Option<Duration>,
    /// Copies of each partition [`[sharding] replication`; default 2].
    #[arg(long, value_name = "N")]
    pub replication: Option<usize>,
    /// Copies every partition needs before a version is served
    /// [`[sharding] min_replication`; default 1].
    #[arg(long, value_name = "N")]
    pub min_replication: Option<usize>,
    /// Skip partitions that already have this many copies
    /// [`[sharding] max_replication`; default 0, off].
    #[arg(long, value_name = "N")]
    pub max_replication: Option<usize>,
    /// Bound of a proxied request [`[sharding] proxy_timeout`; default 100ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub proxy_timeout: Option<Duration>,
    /// Interval of backup requests to other peers [`[sharding]
    /// proxy_stage_timeout`; default proxy_timeout / replication].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub proxy_stage_timeout: Option<Duration>,
    /// This node's shard ID [`[sharding] shard_id`; default chosen under
    /// the cluster's lock and kept in the local store].
    #[arg(long, value_name = "ID")]
    pub shard_id: Option<String>,
    /// Host name peers use to reach this node [`[sharding]
    /// advertised_hostname`; default the OS host name].
    #[arg(long, value_name = "HOST")]
    pub advertised_hostname: Option<String>,
    /// Re-replicate the partitions of a node gone this long; `off` never
    /// does [`[sharding] rereplicate_after`; default 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_off)]
    pub rereplicate_after: Option<Duration>,
}

impl ClusterArgs {
    /// Writes the given flags over the config file's sections.
    pub fn apply(&self, config: &mut Config) {
        let (sharding, zk) = (&mut config.sharding, &mut config.zk);
        if let Some(servers) = &self.zk_servers {
            zk.servers = Some(servers.clone());
        }
        if self.cluster {
            sharding.enabled = Some(true);
        }
        // These two may sit in either section; the flag replaces both.
        if let Some(name) = &self.cluster_name {
            sharding.cluster_name = None;
            zk.cluster_name = Some(name.clone());
        }
        if let Some(t) = self.time_to_converge {
            sharding.time_to_converge = None;
            zk.time_to_converge = Some(t);
        }
        set(&mut zk.session_timeout, self.zk_timeout);
        set(&mut sharding.replication, self.replication);
        set(&mut sharding.min_replication, self.min_replication);
        set(&mut sharding.max_replication, self.max_replication);
        set(&mut sharding.proxy_timeout, self.proxy_timeout);
        set(&mut sharding.proxy_stage_timeout, self.proxy_stage_timeout);
        set(&mut sharding.shard_id, self.shard_id.clone());
        set(
            &mut sharding.advertised_hostname,
            self.advertised_hostname.clone(),
        );
        // `off` parses as zero, which the section spells `Some(None)`.
        let rereplicate_after = self
            .rereplicate_after
            .map(|after| (!after.is_zero()).then_some(after));
        set(&mut sharding.rereplicate_after, rereplicate_after);
    }
}

fn set<T>(key: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *key = flag;
    }
}

/// A duration, with `off` as zero.
fn parse_duration_or_off(text: &str) -> Result<Duration, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn resolved(file: &str, flags: &[&str]) -> Option<crate::cluster::ClusterConfig> {
        let mut config = Config::from_toml(file).unwrap();
        let cli = Cli::try_parse_from(std::iter::once("x").chain(flags.iter().copied())).unwrap();
        cli.cluster.apply(&mut config);
        config.cluster().unwrap()
    }

    #[test]
    fn flags_override_the_file_and_servers_turn_cluster_mode_on() {
        assert_eq!(resolved("", &[]), None);
        let config = resolved(
            "[sharding]\nreplication = 3\ntime_to_converge = \"20s\"\n",
            &[
                "--zk-servers",
                "a:1,b",
                "--replication",
                "2",
                "--time-to-converge",
                "1s",
                "--zk-timeout",
                "2s",
                "--rereplicate-after",
                "off",
                "--shard-id",
                "7",
            ],
        )
        .unwrap();
        assert_eq!(config.servers, ["a:1", "b:2181"]);
        assert_eq!(config.replication, 2);
        assert_eq!(config.time_to_converge, Duration::from_secs(1));
        assert_eq!(config.session_timeout, Duration::from_secs(2));
        assert_eq!(config.rereplicate_after, None);
        assert_eq!(config.shard_id.as_deref(), Some("7"));
        let on = resolved("", &["--cluster"]).unwrap();
        assert_eq!(on.servers, ["localhost:2181"]);
    }

    #[test]
    fn sequins_example_config_stays_single_node_unless_a_flag_says_otherwise() {
        let file = "[sharding]\nenabled = false\n[zk]\nservers = [\"localhost:2181\"]\n";
        assert_eq!(resolved(file, &[]), None);
        assert!(resolved(file, &["--cluster"]).is_some());
    }
}
