//! sequinsfs: mirror a source root of read-only key/value datasets (Hadoop
//! SequenceFiles, Sparkey tables) into memory-mapped local indexes and serve
//! them as files through FUSE and over a sequins-compatible HTTP API.
//!
//! Map of the crate, from the bytes on disk up to the front ends
//! (`docs/ARCHITECTURE.md` follows a lookup and a load through it). The
//! core knows nothing of the front ends; the front ends read the catalog and
//! ask for refreshes, and know nothing of sources or loading.
//!
//! The core:
//!
//! | module | owns |
//! |---|---|
//! | [`format`] | byte formats: Hadoop SequenceFile, Sparkey log/index, framed snappy |
//! | [`partition`] | sequins' key -> partition function |
//! | [`source`] | the source root over `object_store`: listing, name rules, downloads |
//! | [`load`] | loading a source version into the local store |
//! | [`store`] | the local store: its layout, publishing and opening versions |
//! | [`catalog`] | databases, versions, states; the atomic switch; retention |
//! | [`refresh`] | refresh triggers, planning and load scheduling |
//! | [`engine`] | the running core: store + catalog + refresh loop |
//! | [`cluster`] | cluster mode: ZooKeeper coordination, partition assignment, proxying |
//! | [`pack`] | the producer: inputs -> sorted, partitioned Sparkey tables |
//! | [`lifecycle`] | databases' state in the source root (online, pinned); publishing |
//! | [`config`] | the TOML config file (sequins' keys) and defaults |
//! | [`metrics`] | Prometheus metrics the engine feeds and the sidecar exports |
//! | [`error_chain`] | one line for an error and its causes |
//!
//! The serving front ends:
//!
//! | module | owns |
//! |---|---|
//! | [`naming`] | key bytes <-> file names |
//! | [`fs`] | the FUSE mount: a filesystem core and a thin fuser adapter |
//! | [`http`] | the sequins-compatible HTTP sidecar |
//! | [`status_json`] | JSON pieces shared by `.status` and the HTTP status page |
//! | [`wakeup`] | `--idle-poll`: idle CPUs poll instead of halting while requests arrive |
//! | [`cli`] | the `sequinsfs` command line, which assembles core and front ends |

pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error_chain;
pub mod format;
pub mod fs;
pub mod http;
pub mod lifecycle;
pub mod load;
pub mod metrics;
pub mod naming;
pub mod pack;
pub mod partition;
pub mod refresh;
pub mod source;
pub mod status_json;
pub mod store;
pub mod wakeup;

#[cfg(test)]
mod test_support;
