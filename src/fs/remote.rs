//! Reads of keys this node does not hold: the seam between the mount and
//! the cluster.
//!
//! The mount of a cluster node lists every key of a version (its key
//! directory, see `cluster::directory`) but holds the values of its own
//! partitions only. A READ of any other key is handed to a [`RemoteReads`]
//! (the peers, `cluster::peer_reads`), which answers later on threads of its
//! own: a FUSE session thread never waits on the network. The same seam
//! describes the node for `.status`. The core stays free of the cluster,
//! and tests drive it with a fake.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::catalog::{RemoteKey, Version};
use crate::fs::error::FsError;

/// A READ of bytes `range` of the value of `key`, held by peers.
#[derive(Debug, Clone)]
pub struct RemoteRead {
    pub version: Arc<Version>,
    pub key: Vec<u8>,
    /// The key's partition (and alternate), to choose the peers.
    pub at: RemoteKey,
    /// Already clipped to the value's length.
    pub range: Range<u64>,
}

/// Called once with the bytes read or why not.
pub type ReadDone = Box<dyn FnOnce(Result<Bytes, FsError>) + Send>;

/// Where READs of keys held by peers go.
pub trait RemoteReads: Send + Sync + 'static {
    /// Starts `read` and returns at once; `done` is called when it ends.
    fn read(&self, read: RemoteRead, done: ReadDone);

    /// This node in its cluster (shard ID, session, peers), added to
    /// `.status` as its `cluster` object.
    fn node_status(&self) -> Option<serde_json::Value> {
        None
    }
}

/// A [`RemoteReads`] in the mount's options (which are `Debug`).
#[derive(Clone)]
pub struct RemoteReadsHandle(pub Arc<dyn RemoteReads>);

impl std::fmt::Debug for RemoteReadsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteReads")
    }
}
