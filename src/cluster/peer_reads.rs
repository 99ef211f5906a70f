//! The mount's READs of keys that peers hold (see `fs::remote`): each is a
//! ranged request to the peers of the key's partition, through the same
//! proxy as HTTP (backup requests, peer health, `proxy_timeout`), run on
//! the engine's runtime so that no FUSE session thread waits for it.
//!
//! Only the bytes a READ asks for are fetched: the kernel caches what it
//! read (an immutable version's pages are kept), so a warm remote key costs
//! what a warm local one does, and a value larger than a READ is fetched
//! READ by READ rather than whole each time.

use std::sync::Arc;

use tracing::Level;

use super::ClusterNode;
use crate::fs::{FsError, ReadDone, RemoteRead, RemoteReads};

/// [`RemoteReads`] over this node's peers.
pub struct PeerReads {
    node: Arc<ClusterNode>,
    runtime: tokio::runtime::Handle,
}

impl PeerReads {
    /// Reads through `node`'s peers, on `runtime`.
    pub fn new(node: Arc<ClusterNode>, runtime: tokio::runtime::Handle) -> Self {
        PeerReads { node, runtime }
    }
}

impl RemoteReads for PeerReads {
    fn read(&self, read: RemoteRead, done: ReadDone) {
        let node = Arc::clone(&self.node);
        self.runtime.spawn(async move {
            let (db, version) = (read.version.db(), read.version.name());
            let fetched = node
                .fetch_range(db, version, &read.key, read.at, read.range.clone())
                .await;
            done(fetched.map_err(|message| {
                // EIO, logged once by the adapter with the inode: the
                // message names the database, version, key and partition.
                FsError::new(
                    libc::EIO,
                    Level::WARN,
                    format!(
                        "{db}/{version}: key {:?} (partition {}): {message}",
                        String::from_utf8_lossy(&read.key),
                        read.at.partition
                    ),
                )
            }));
        });
    }

    fn node_status(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.node.describe()).ok()
    }
}
