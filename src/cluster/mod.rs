//! Cluster mode: several sequinsfs nodes share the partitions of every
//! version and find each other through ZooKeeper, in sequins' layout so the
//! same ZooKeeper tree reads the same to both.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | `[sharding]` / `[zk]`: defaults, validation, when cluster mode is on |
//! | [`assignment`] | pure functions: partition assignment, shard ID choice |

pub mod assignment;
pub mod config;

pub use config::ClusterConfig;
