//! Cluster mode: several sequinsfs nodes share the partitions of every
//! version and find each other through ZooKeeper, in sequins' layout so the
//! same ZooKeeper tree reads the same to both.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | `[sharding]` / `[zk]`: defaults, validation, when cluster mode is on |
//! | [`assignment`] | pure functions: partition assignment, shard ID choice |
//! | [`coordinator`] | the [`Coordinator`] trait the engine uses, and its value types |
//! | [`zk`] | [`ZkCoordinator`]: the trait over a ZooKeeper session that survives outages |
//! | [`memory`] | [`MemoryCluster`]: the trait in one process, for tests of cluster logic |
//! | [`proxy`] | asking the peers that hold a partition, with backup requests |
//! | [`pipeline`] | the HTTP/1.1 client under it: kept-alive, pipelined connections to peers |
//! | [`node`] | [`ClusterNode`]: this node's shard ID, assignment, readiness, proxying |
//! | [`directory`] | every key of a partial version, listed by peers, for the mount |
//! | [`peer_reads`] | the mount's READs of keys that peers hold |

pub mod assignment;
pub mod config;
pub mod coordinator;
pub mod directory;
pub mod memory;
pub mod node;
pub mod peer_reads;
pub mod pipeline;
pub mod proxy;
pub mod rereplicate;
pub mod zk;

pub use config::ClusterConfig;
pub use coordinator::{
    Coordinator, CoordinatorError, CoordinatorStatus, PartitionHolders, Peer, SessionState,
};
pub use memory::{MemoryCluster, MemoryCoordinator};
pub use node::ClusterNode;
pub use zk::ZkCoordinator;
