//! Configuration: the TOML file (sequins' keys, so an existing
//! `sequins.conf` works unchanged) and the defaults every front end shares.
//!
//! Command-line flags override the file; both end up in one [`Config`].
//! Unknown keys are rejected with a message naming them, because a typo in a
//! config file should stop the daemon at startup, not be silently ignored.
//! sequins keys for features sequinsfs does not have yet (statsd, the debug
//! server) are accepted and reported at startup by
//! [`Config::unsupported_keys`]. The cluster sections (`[sharding]`, `[zk]`)
//! are typed in [`crate::cluster::config`] and resolved by [`Config::cluster`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::cluster::config::{ClusterConfig, ShardingSection, ZkSection};

/// Everything the daemon needs to know, after the file and flags are merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The source root: a local path, `file://`, `s3://bucket/prefix` or
    /// `hdfs://namenode:port/path`. Required.
    pub source: String,
    /// HTTP sidecar address (sequins' `bind`). sequins listens on all
    /// interfaces; we default to loopback so a sidecar is never exposed by
    /// accident.
    pub bind: String,
    /// Where versions are mirrored and indexed. Same default as sequins.
    pub local_store: PathBuf,
    /// Workers loading individual files, shared by all databases and
    /// versions. sequins maps 0 to 10; so do we.
    pub max_parallel_loads: usize,
    /// Pause before every SequenceFile record (sequins' knob to keep loads
    /// from starving lookups); zero is off.
    #[serde(deserialize_with = "go_duration")]
    pub throttle_loads: Duration,
    /// Cap on download bandwidth over all downloads, in MiB/s; 0 is off.
    pub max_download_bandwidth_mb_per_second: u64,
    /// Accepted for compatibility; sequinsfs writes through the page cache.
    pub write_buffer_size: u64,
    /// Period of automatic refreshes; zero is off (refresh on SIGHUP or
    /// `.refresh` only), as in sequins.
    #[serde(deserialize_with = "go_duration")]
    pub refresh_period: Duration,
    /// Only versions with a `_SUCCESS` file count.
    pub require_success_file: bool,
    /// `Content-Type` of values served over HTTP (sequins parses this key and
    /// ignores it; we honour it).
    pub content_type: String,
    /// Per-database `Content-Type` of values over HTTP (`[content_types]`,
    /// database name -> type), overriding `content_type`. Not a sequins key.
    pub content_types: BTreeMap<String, String>,
    /// How long a superseded version stays readable (under `.versions/` and
    /// for readers holding it) before its local data is deleted. One minute
    /// lets scripts that resolved the old path finish; readers holding it
    /// keep it longer regardless.
    #[serde(deserialize_with = "go_duration")]
    pub version_grace_period: Duration,
    pub storage: StorageConfig,
    pub s3: S3Config,
    pub debug: DebugConfig,
    /// Cluster mode (sequins' distributed mode); see [`Config::cluster`].
    pub sharding: ShardingSection,
    pub zk: ZkSection,
    pub datadog: Option<toml::Table>,
    pub test: Option<toml::Table>,
    pub goforit_flag_json_path: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: String::new(),
            bind: "127.0.0.1:9599".to_string(),
            local_store: PathBuf::from("/var/sequins/"),
            max_parallel_loads: 0,
            throttle_loads: Duration::ZERO,
            max_download_bandwidth_mb_per_second: 0,
            write_buffer_size: 32768,
            refresh_period: Duration::ZERO,
            require_success_file: false,
            content_type: String::new(),
            content_types: BTreeMap::new(),
            version_grace_period: Duration::from_secs(60),
            storage: StorageConfig::default(),
            s3: S3Config::default(),
            debug: DebugConfig::default(),
            sharding: ShardingSection::default(),
            zk: ZkSection::default(),
            datadog: None,
            test: None,
            goforit_flag_json_path: None,
        }
    }
}

/// `[storage]`: how locally built Sparkey logs are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `none` or `snappy`. sequins defaults to snappy; we default to none:
    /// uncompressed logs are served straight from the page cache without a
    /// copy or a block decompression per lookup (several times faster), and
    /// load faster, at the cost of local disk. Choose snappy when local disk
    /// is scarcer than CPU.
    pub compression: StorageCompression,
    /// Sparkey compression block size; sequins' default.
    pub block_size: u32,
    /// Serve versions of uncompressed SequenceFiles in place (the files
    /// kept as downloaded, values found through the key index) rather than
    /// rewrite them into Sparkey tables. On by default, because the mount
    /// is the product: loads are 1.2-1.5x faster and reads through the
    /// mount (which find keys in the key index either way) cost the same.
    /// Off, HTTP lookups by key are hash probes instead of a binary search
    /// of the key index (about 5 us on 4 M keys; docs/PERFORMANCE.md).
    pub in_place: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            compression: StorageCompression::None,
            block_size: 4096,
            in_place: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageCompression {
    None,
    Snappy,
}

/// `[s3]`: credentials and endpoint. Empty fields fall back to the usual
/// `AWS_*` environment variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// A custom endpoint (MinIO, moto, Ceph...); implies path-style requests.
    pub endpoint: String,
    /// Retries of transient errors per request; 0 uses the default (10).
    pub max_retries: usize,
}

/// `[debug]`: only the request log is implemented.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub bind: String,
    pub expvars: bool,
    pub pprof: bool,
    pub request_log_enable: bool,
    /// A path, or `stdout`.
    pub request_log_file: String,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            bind: String::new(),
            expvars: true,
            pprof: false,
            request_log_enable: false,
            request_log_file: "stdout".to_string(),
        }
    }
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A TOML error as one line: where (line and column, 1-based) and what,
/// without the crate's multi-line caret diagram.
fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl Config {
    /// Reads a TOML config file. Unknown keys are an error naming the key.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text (see [`Config::from_file`]).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".to_string(),
            message: toml_error_line(text, &e),
        })
    }

    /// Effective number of file-loading workers (sequins maps 0 to 10).
    pub fn parallel_loads(&self) -> usize {
        if self.max_parallel_loads == 0 {
            10
        } else {
            self.max_parallel_loads
        }
    }

    /// Checks what cannot be expressed in types: a source is given, the
    /// local store is absolute and not inside a local source root.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.source.is_empty() {
            return Err(ConfigError::Invalid(
                "no source root given (set `source` or pass SOURCE)".into(),
            ));
        }
        if !self.local_store.is_absolute() {
            return Err(ConfigError::Invalid(format!(
                "local_store {} must be an absolute path",
                self.local_store.display()
            )));
        }
        let local_source = self.source.strip_prefix("file://").unwrap_or(&self.source);
        if !self.source.contains("://") || self.source.starts_with("file://") {
            // Compare whole path components (sequins compares strings and
            // wrongly rejects /foo/bar vs /foo/barx).
            if self.local_store.starts_with(Path::new(local_source)) {
                return Err(ConfigError::Invalid(format!(
                    "local_store {} is inside the source root {}",
                    self.local_store.display(),
                    local_source
                )));
            }
        }
        if self.storage.block_size == 0 {
            return Err(ConfigError::Invalid(
                "[storage] block_size must be > 0".into(),
            ));
        }
        self.cluster()?;
        Ok(())
    }

    /// The cluster configuration, or `None` in single-node mode (the
    /// default; see [`crate::cluster::config::resolve`] for what switches
    /// cluster mode on).
    pub fn cluster(&self) -> Result<Option<ClusterConfig>, ConfigError> {
        crate::cluster::config::resolve(&self.sharding, &self.zk)
    }

    /// sequins keys present in the file that sequinsfs accepts but does not
    /// act on yet, for a startup warning.
    pub fn unsupported_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.datadog.is_some() {
            keys.push("[datadog]");
        }
        if self.test.is_some() {
            keys.push("[test]");
        }
        if self.goforit_flag_json_path.is_some() {
            keys.push("goforit_flag_json_path");
        }
        if !self.debug.bind.is_empty() {
            keys.push("[debug] bind");
        }
        keys
    }
}

/// Parses a Go-style duration ("10m", "1h30m", "800µs", "100ms", "0").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    // humantime reads the same units as Go, written together ("1h30m"); Go
    // also spells microseconds "µs", which humantime spells "us".
    humantime::parse_duration(&text.replace('µ', "u"))
        .map_err(|e| format!("invalid duration {text:?}: {e}"))
}

fn go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sequins_example_config() {
        let cfg = Config::from_toml(
            r#"
source = "s3://my-bucket/sequins"
bind = "0.0.0.0:9599"
local_store = "/var/sequins/"
max_parallel_loads = 4
throttle_loads = "800µs"
refresh_period = "10m"
require_success_file = true
content_type = "application/json"

[storage]
compression = "snappy"
block_size = 8192

[s3]
region = "us-west-2"
access_key_id = "AKIA"
secret_access_key = "secret"

[sharding]
enabled = false

[zk]
servers = ["localhost:2181"]

[debug]
request_log_enable = true
"#,
        )
        .unwrap();
        assert_eq!(cfg.source, "s3://my-bucket/sequins");
        assert_eq!(cfg.parallel_loads(), 4);
        assert_eq!(cfg.throttle_loads, Duration::from_micros(800));
        assert_eq!(cfg.refresh_period, Duration::from_secs(600));
        assert!(cfg.require_success_file);
        assert_eq!(cfg.storage.block_size, 8192);
        assert_eq!(cfg.s3.region, "us-west-2");
        assert!(cfg.debug.request_log_enable);
        // `enabled = false`: the cluster sections are read and leave the
        // daemon single-node, so there is nothing to warn about.
        assert_eq!(cfg.cluster().unwrap(), None);
        assert!(cfg.unsupported_keys().is_empty());
        cfg.validate().unwrap();
        let mut cfg = cfg;
        cfg.sharding.enabled = Some(true);
        assert!(cfg.cluster().unwrap().is_some());
        assert!(cfg.unsupported_keys().is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::from_toml("source = \"/x\"\nrefresh_perod = \"1m\"\n").unwrap_err();
        assert!(err.to_string().contains("refresh_perod"), "{err}");
        let err = Config::from_toml("[storage]\ncompresion = \"none\"\n").unwrap_err();
        assert!(err.to_string().contains("compresion"), "{err}");
        let err = Config::from_toml("[storage]\ncompression = \"lz4\"\n").unwrap_err();
        assert!(err.to_string().contains("lz4"), "{err}");
    }

    #[test]
    fn parse_errors_are_one_line_with_line_and_column() {
        let err =
            Config::from_toml("source = \"/x\"\n[storage]\ncompresion = \"none\"\n").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(!text.contains('^'), "{text}");
        assert!(
            text.contains("line 3, column 1: unknown field `compresion`"),
            "{text}"
        );
        let err = Config::from_toml("refresh_period = \n").unwrap_err();
        assert!(err.to_string().contains("line 1, column 18"), "{err}");
    }

    #[test]
    fn per_database_content_types() {
        let cfg = Config::from_toml(
            "content_type = \"text/plain\"\n[content_types]\n\"baby-names\" = \"text/plain; charset=utf-8\"\nimages = \"image/png\"\n",
        )
        .unwrap();
        assert_eq!(cfg.content_type, "text/plain");
        assert_eq!(cfg.content_types["baby-names"], "text/plain; charset=utf-8");
        assert_eq!(cfg.content_types["images"], "image/png");
        assert!(Config::default().content_types.is_empty());
        assert!(Config::from_toml("[content_types]\nimages = 3\n").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("ten minutes").is_err());
    }

    #[test]
    fn validation() {
        let mut cfg = Config {
            source: "/data/src".into(),
            local_store: "/data/src/store".into(),
            ..Config::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("inside"));
        cfg.local_store = "/data/srcx/store".into();
        cfg.validate().unwrap();
        cfg.local_store = "relative".into();
        assert!(cfg.validate().is_err());
        cfg.source = String::new();
        assert!(cfg.validate().is_err());
    }
}
