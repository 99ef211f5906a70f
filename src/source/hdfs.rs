//! HDFS sources (`hdfs://namenode:port/path`), behind the `hdfs` cargo
//! feature, through `hdfs-native-object-store` (a pure-Rust HDFS client; no
//! JVM or libhdfs). Connects as the OS user; Kerberos is used when the
//! Hadoop configuration (`HADOOP_CONF_DIR`) asks for it.
//!
//! Status: compiled in CI, but only tested against a real cluster when one
//! is configured (`SEQUINSFS_HDFS_URI`); no HDFS server could be run where
//! this was written.

use std::sync::Arc;

use object_store::ObjectStore;

use super::SourceError;

/// Builds the store for `scheme://authority`.
#[cfg(feature = "hdfs")]
pub(crate) fn store(
    uri: &str,
    scheme: &str,
    authority: &str,
) -> Result<Arc<dyn ObjectStore>, SourceError> {
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(format!("{scheme}://{authority}"))
        .with_config([
            // hdfs-native retries a failed namenode RPC 15 times with
            // backoff up to 15 s: a wrong URL would hang startup for three
            // minutes. Fail within seconds instead; the next refresh retries.
            ("dfs.client.failover.max.attempts", "3"),
            ("dfs.client.failover.sleep.max.millis", "2000"),
        ])
        .build()
        .map_err(|source| SourceError::Open {
            uri: uri.to_string(),
            source,
        })?;
    Ok(Arc::new(store))
}

/// Without the feature, a clear error instead of a confusing "unsupported
/// scheme".
#[cfg(not(feature = "hdfs"))]
pub(crate) fn store(
    uri: &str,
    _scheme: &str,
    _authority: &str,
) -> Result<Arc<dyn ObjectStore>, SourceError> {
    Err(SourceError::InvalidUri {
        uri: uri.to_string(),
        reason: "HDFS support is not compiled in (rebuild with `--features hdfs`)".to_string(),
    })
}
