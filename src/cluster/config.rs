//! Cluster configuration: sequins' `[sharding]` and `[zk]` sections, as
//! written in the file ([`ShardingSection`], [`ZkSection`]) and resolved with
//! sequins' defaults and validation into one [`ClusterConfig`].
//!
//! The sections keep every field optional so that resolution can tell "not
//! given" from "given as the default": that decides whether cluster mode is
//! on (see [`resolve`]) and lets the keys sequins put under `[sharding]`
//! (`cluster_name`, `time_to_converge`) also be written under `[zk]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::{ConfigError, parse_duration};

/// `[sharding]` as written. sequins' keys plus `rereplicate_after`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardingSection {
    pub enabled: Option<bool>,
    pub replication: Option<usize>,
    pub min_replication: Option<usize>,
    pub max_replication: Option<usize>,
    #[serde(deserialize_with = "opt_duration")]
    pub time_to_converge: Option<Duration>,
    #[serde(deserialize_with = "opt_duration")]
    pub proxy_timeout: Option<Duration>,
    #[serde(deserialize_with = "opt_duration")]
    pub proxy_stage_timeout: Option<Duration>,
    pub cluster_name: Option<String>,
    pub advertised_hostname: Option<String>,
    pub shard_id: Option<String>,
    /// A duration, or `"0"`/`"off"` to disable. Not a sequins key.
    #[serde(deserialize_with = "opt_duration_or_off")]
    pub rereplicate_after: Option<Option<Duration>>,
}

/// `[zk]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZkSection {
    pub servers: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(alias = "timeout", deserialize_with = "opt_duration")]
    pub session_timeout: Option<Duration>,
    /// Also accepted here (sequins has it under `[sharding]`).
    pub cluster_name: Option<String>,
    /// Also accepted here (sequins has it under `[sharding]`).
    #[serde(deserialize_with = "opt_duration")]
    pub time_to_converge: Option<Duration>,
}

/// Everything the cluster layer needs, defaults applied and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// ZooKeeper servers, each `host:port`.
    pub servers: Vec<String>,
    /// First component(s) of the ZooKeeper root `/<cluster_name>/v1`.
    pub cluster_name: String,
    /// The ZooKeeper session timeout: how long after a node dies (or loses
    /// ZooKeeper) its ephemerals vanish for everyone else. The server clamps
    /// it to [2, 20] × its tickTime.
    pub session_timeout: Duration,
    /// How long a connection may stay silent before the client gives up on it
    /// and tries the next server.
    pub connect_timeout: Duration,
    /// Quiet period of the peer list before a starting node trusts it.
    pub time_to_converge: Duration,
    pub replication: usize,
    pub min_replication: usize,
    /// `max_replication` as configured (0 = off); see
    /// [`ClusterConfig::effective_max_replication`].
    pub max_replication: usize,
    pub proxy_timeout: Duration,
    /// Backup-request interval, already resolved from 0.
    pub proxy_stage_timeout: Duration,
    /// A configured shard ID; `None` means self-assigned.
    pub shard_id: Option<String>,
    /// `None` means the OS hostname.
    pub advertised_hostname: Option<String>,
    /// After how long a partition with too few replicas is fetched by a
    /// node that does not hold it; `None` is off.
    pub rereplicate_after: Option<Duration>,
}

impl ClusterConfig {
    /// `max_replication` when it is honoured: sequins ignores values below
    /// `replication` (including 0, the default), and so do we, so that
    /// existing configs keep their meaning.
    pub fn effective_max_replication(&self) -> Option<usize> {
        (self.max_replication > 0 && self.max_replication >= self.replication)
            .then_some(self.max_replication)
    }

    /// The ZooKeeper connect string: servers joined by commas.
    pub fn connect_string(&self) -> String {
        self.servers.join(",")
    }

    /// The ZooKeeper root of this cluster, `/<cluster_name>/v1`. An empty
    /// cluster name gives `/v1`, as Go's `path.Join` does in sequins.
    pub fn root(&self) -> String {
        let mut root = String::new();
        for part in self.cluster_name.split('/').filter(|p| !p.is_empty()) {
            root.push('/');
            root.push_str(part);
        }
        root.push_str("/v1");
        root
    }

    /// A configuration for tests and embedders: defaults everywhere, these
    /// servers, cluster mode on.
    pub fn with_servers(servers: Vec<String>) -> ClusterConfig {
        resolve(
            &ShardingSection::default(),
            &ZkSection {
                servers: Some(servers),
                ..ZkSection::default()
            },
        )
        .expect("default cluster configuration is valid")
        .expect("servers given: cluster mode is on")
    }
}

// sequins' defaults, in one place.
const DEFAULT_SERVER: &str = "localhost:2181";
const DEFAULT_CLUSTER_NAME: &str = "sequins";
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
// sequins stores it and never uses it (its connection is asynchronous). We
// use it as the client's idle-connection timeout; the client ignores values
// above 3/5 of the session timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_TIME_TO_CONVERGE: Duration = Duration::from_secs(10);
const DEFAULT_REPLICATION: usize = 2;
const DEFAULT_MIN_REPLICATION: usize = 1;
const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_millis(100);
// Long enough that a node restart or a short ZooKeeper hiccup does not start
// a copy of a whole partition, short enough that one lost node does not
// leave partitions on a single replica for hours (sequins never re-replicates).
const DEFAULT_REREPLICATE_AFTER: Duration = Duration::from_secs(300);

/// Resolves the two sections. `Ok(None)` is single-node mode.
///
/// Cluster mode is on when `[sharding] enabled = true`, or when `[zk]
/// servers` is given and `enabled` is not explicitly `false`. Saying where
/// ZooKeeper is means wanting to use it, but sequins' example config
/// (`enabled = false` next to `servers = ["localhost:2181"]`) must keep
/// meaning single-node. Without either, nothing changes from single-node
/// behaviour.
pub fn resolve(
    sharding: &ShardingSection,
    zk: &ZkSection,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let enabled = sharding.enabled.unwrap_or(zk.servers.is_some());
    let cluster_name = one_of(
        "cluster_name",
        sharding.cluster_name.clone(),
        zk.cluster_name.clone(),
    )?
    .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_string());
    let time_to_converge = one_of(
        "time_to_converge",
        sharding.time_to_converge,
        zk.time_to_converge,
    )?
    .unwrap_or(DEFAULT_TIME_TO_CONVERGE);
    if !enabled {
        return Ok(None);
    }
    let invalid = |m: String| Err(ConfigError::Invalid(m));

    let servers = match &zk.servers {
        None => vec![DEFAULT_SERVER.to_string()],
        Some(list) if list.is_empty() => return invalid("[zk] servers is empty".into()),
        Some(list) => list
            .iter()
            .map(|s| with_default_port(s))
            .collect::<Result<_, _>>()?,
    };
    validate_cluster_name(&cluster_name)?;
    let session_timeout = zk.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT);
    if session_timeout.is_zero() {
        return invalid("[zk] session_timeout must be > 0".into());
    }
    let replication = sharding.replication.unwrap_or(DEFAULT_REPLICATION);
    let min_replication = sharding.min_replication.unwrap_or(DEFAULT_MIN_REPLICATION);
    if replication == 0 {
        return invalid("[sharding] replication must be > 0".into());
    }
    if min_replication == 0 || min_replication > replication {
        return invalid(format!(
            "[sharding] min_replication must be > 0 and <= replication ({replication}), not {min_replication}"
        ));
    }
    let proxy_timeout = sharding.proxy_timeout.unwrap_or(DEFAULT_PROXY_TIMEOUT);
    let proxy_stage_timeout = match sharding.proxy_stage_timeout {
        Some(t) if !t.is_zero() => t,
        // sequins: 0 means one stage per replica within the total budget.
        _ => proxy_timeout / replication as u32,
    };
    let shard_id = match sharding.shard_id.as_deref() {
        None | Some("") => None,
        Some(id) => {
            if let Err(reason) = check_shard_id(id) {
                return invalid(format!("[sharding] shard_id {id:?}: {reason}"));
            }
            Some(id.to_string())
        }
    };
    Ok(Some(ClusterConfig {
        servers,
        cluster_name,
        session_timeout,
        connect_timeout: zk.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        time_to_converge,
        replication,
        min_replication,
        max_replication: sharding.max_replication.unwrap_or(0),
        proxy_timeout,
        proxy_stage_timeout,
        shard_id,
        advertised_hostname: sharding
            .advertised_hostname
            .clone()
            .filter(|h| !h.is_empty()),
        rereplicate_after: sharding
            .rereplicate_after
            .unwrap_or(Some(DEFAULT_REREPLICATE_AFTER)),
    }))
}

/// Why `id` cannot be a shard ID: it becomes the part of a znode name
/// before the `@`.
pub fn check_shard_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("empty")
    } else if id.contains('/') || id.contains('@') {
        Err("must not contain '/' or '@'")
    } else if id.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(())
    }
}

/// A key that may be set in either section: both is fine when they agree.
fn one_of<T: PartialEq + std::fmt::Debug>(
    key: &str,
    sharding: Option<T>,
    zk: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match (sharding, zk) {
        (Some(a), Some(b)) if a != b => Err(ConfigError::Invalid(format!(
            "[sharding] {key} = {a:?} and [zk] {key} = {b:?} disagree"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

fn validate_cluster_name(name: &str) -> Result<(), ConfigError> {
    for part in name.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "[sharding] cluster_name {name:?} is not usable as a ZooKeeper path"
            )));
        }
    }
    Ok(())
}

/// `host` -> `host:2181`; `host:port` and `[v6]:port` are kept; a bare IPv6
/// address is bracketed.
fn with_default_port(server: &str) -> Result<String, ConfigError> {
    let server = server.trim();
    let bad = || ConfigError::Invalid(format!("[zk] servers: {server:?} is not host[:port]"));
    if server.is_empty() || server.contains(',') || server.contains('/') {
        return Err(bad());
    }
    let with_port = if let Some(rest) = server.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, "")) => format!("{server}:2181"),
            Some((_, port)) if port.starts_with(':') => server.to_string(),
            _ => return Err(bad()),
        }
    } else {
        match server.matches(':').count() {
            0 => format!("{server}:2181"),
            1 => server.to_string(),
            _ => format!("[{server}]:2181"),
        }
    };
    match with_port.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(with_port),
        _ => Err(bad()),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Text(String),
    Seconds(u64),
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match RawDuration::deserialize(d)? {
        RawDuration::Text(t) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
        RawDuration::Seconds(s) => Ok(Some(Duration::from_secs(s))),
    }
}

fn opt_duration_or_off<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Duration>>, D::Error> {
    let duration = match RawDuration::deserialize(d)? {
        RawDuration::Text(t) if t.trim().eq_ignore_ascii_case("off") => Duration::ZERO,
        RawDuration::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom)?,
        RawDuration::Seconds(s) => Duration::from_secs(s),
    };
    Ok(Some((!duration.is_zero()).then_some(duration)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cluster(toml: &str) -> Result<Option<ClusterConfig>, ConfigError> {
        Config::from_toml(toml)?.cluster()
    }

    #[test]
    fn no_sections_is_single_node() {
        assert_eq!(cluster("").unwrap(), None);
        assert_eq!(cluster("[sharding]\nreplication = 3\n").unwrap(), None);
        assert_eq!(cluster("[zk]\nsession_timeout = \"5s\"\n").unwrap(), None);
    }

    #[test]
    fn enabled_or_servers_switch_cluster_mode_on() {
        let c = cluster("[sharding]\nenabled = true\n").unwrap().unwrap();
        assert_eq!(c.servers, ["localhost:2181"]);
        let c = cluster("[zk]\nservers = [\"zk1\", \"zk2:2182\"]\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.servers, ["zk1:2181", "zk2:2182"]);
        assert_eq!(c.connect_string(), "zk1:2181,zk2:2182");
        // sequins' example config: explicitly off wins over servers.
        let off = cluster("[sharding]\nenabled = false\n[zk]\nservers = [\"localhost:2181\"]\n");
        assert_eq!(off.unwrap(), None);
    }

    #[test]
    fn sequins_defaults() {
        let c = cluster("[sharding]\nenabled = true\n").unwrap().unwrap();
        assert_eq!(c.cluster_name, "sequins");
        assert_eq!(c.root(), "/sequins/v1");
        assert_eq!(c.session_timeout, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.time_to_converge, Duration::from_secs(10));
        assert_eq!(
            (c.replication, c.min_replication, c.max_replication),
            (2, 1, 0)
        );
        assert_eq!(c.effective_max_replication(), None);
        assert_eq!(c.proxy_timeout, Duration::from_millis(100));
        assert_eq!(c.proxy_stage_timeout, Duration::from_millis(50));
        assert_eq!(c.shard_id, None);
        assert_eq!(c.advertised_hostname, None);
        assert_eq!(c.rereplicate_after, Some(Duration::from_secs(300)));
    }

    #[test]
    fn full_sequins_sections_parse() {
        let c = cluster(
            r#"
source = "s3://bucket/prefix"
[sharding]
enabled = true
replication = 3
min_replication = 2
max_replication = 4
time_to_converge = "20s"
proxy_timeout = "300ms"
proxy_stage_timeout = "50ms"
cluster_name = "prod/sequins"
advertised_hostname = "node1.example"
shard_id = "7"
rereplicate_after = "off"

[zk]
servers = ["[::1]", "10.0.0.1:2181", "::1"]
connect_timeout = "2s"
session_timeout = "6s"
"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.servers, ["[::1]:2181", "10.0.0.1:2181", "[::1]:2181"]);
        assert_eq!(c.root(), "/prod/sequins/v1");
        assert_eq!(c.effective_max_replication(), Some(4));
        assert_eq!(c.proxy_stage_timeout, Duration::from_millis(50));
        assert_eq!(c.shard_id.as_deref(), Some("7"));
        assert_eq!(c.advertised_hostname.as_deref(), Some("node1.example"));
        assert_eq!(c.session_timeout, Duration::from_secs(6));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.time_to_converge, Duration::from_secs(20));
        assert_eq!(c.rereplicate_after, None);
    }

    #[test]
    fn keys_accepted_in_either_section() {
        let c = cluster(
            "[zk]\nservers = [\"zk\"]\ncluster_name = \"other\"\ntime_to_converge = \"1s\"\ntimeout = \"4s\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.cluster_name, "other");
        assert_eq!(c.time_to_converge, Duration::from_secs(1));
        assert_eq!(c.session_timeout, Duration::from_secs(4));
        // Both places, agreeing: fine; disagreeing: an error naming both.
        let same = "[sharding]\nenabled = true\ncluster_name = \"a\"\n[zk]\ncluster_name = \"a\"\n";
        assert_eq!(cluster(same).unwrap().unwrap().cluster_name, "a");
        let err = cluster("[sharding]\ncluster_name = \"a\"\n[zk]\ncluster_name = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[sharding] cluster_name") && err.contains("[zk]"),
            "{err}"
        );
        // An empty cluster name roots the tree at /v1, like sequins.
        let c = cluster("[sharding]\nenabled = true\ncluster_name = \"\"\n");
        assert_eq!(c.unwrap().unwrap().root(), "/v1");
    }

    #[test]
    fn proxy_stage_timeout_defaults_to_a_share_of_the_budget() {
        let c = cluster("[sharding]\nenabled = true\nreplication = 3\nproxy_timeout = \"300ms\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.proxy_stage_timeout, Duration::from_millis(100));
    }

    #[test]
    fn validation() {
        let bad = [
            ("replication = 0", "replication must be > 0"),
            ("min_replication = 0", "min_replication"),
            ("replication = 2\nmin_replication = 3", "min_replication"),
            ("shard_id = \"a/b\"", "shard_id"),
            ("shard_id = \"1@x\"", "shard_id"),
            ("cluster_name = \"a/../b\"", "cluster_name"),
        ];
        for (keys, expected) in bad {
            let err = cluster(&format!("[sharding]\nenabled = true\n{keys}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{keys}: {err}");
        }
        for servers in ["[]", "[\"\"]", "[\"a:b\"]", "[\"a,b\"]", "[\"[::1\"]"] {
            let err = cluster(&format!("[zk]\nservers = {servers}\n")).unwrap_err();
            assert!(err.to_string().contains("servers"), "{servers}: {err}");
        }
        let err = cluster("[zk]\nservers = [\"a\"]\nsession_timeout = \"0\"\n").unwrap_err();
        assert!(err.to_string().contains("session_timeout"), "{err}");
        // Validation of cluster settings only applies in cluster mode, as in
        // sequins (a disabled section is not read).
        assert_eq!(cluster("[sharding]\nreplication = 0\n").unwrap(), None);
        // Unknown keys are rejected by name in both sections.
        let err = Config::from_toml("[sharding]\nreplicaton = 2\n").unwrap_err();
        assert!(err.to_string().contains("replicaton"), "{err}");
        let err = Config::from_toml("[zk]\nserver = [\"a\"]\n").unwrap_err();
        assert!(err.to_string().contains("server"), "{err}");
    }

    #[test]
    fn max_replication_is_honoured_only_from_replication_up() {
        let c = |max: usize| {
            cluster(&format!(
                "[sharding]\nenabled = true\nreplication = 3\nmax_replication = {max}\n"
            ))
            .unwrap()
            .unwrap()
            .effective_max_replication()
        };
        assert_eq!(c(0), None);
        assert_eq!(c(2), None);
        assert_eq!(c(3), Some(3));
        assert_eq!(c(5), Some(5));
    }

    #[test]
    fn rereplicate_after_forms() {
        let c = |v: &str| {
            cluster(&format!(
                "[sharding]\nenabled = true\nrereplicate_after = {v}\n"
            ))
            .unwrap()
            .unwrap()
            .rereplicate_after
        };
        assert_eq!(c("\"0\""), None);
        assert_eq!(c("\"off\""), None);
        assert_eq!(c("0"), None);
        assert_eq!(c("\"90s\""), Some(Duration::from_secs(90)));
        assert!(cluster("[sharding]\nrereplicate_after = \"soon\"\n").is_err());
    }
}
