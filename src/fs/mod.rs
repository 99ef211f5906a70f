//! The FUSE mount: `/mnt/sequins/<db>/<key>` as files.
//!
//! Split by concept so the kernel-facing part stays thin:
//! - [`inode`]: stateless inode numbers (version generation + key ordinal);
//! - [`generations`]: which 20-bit generation numbers which version;
//! - [`listing`]: the placement rules of `docs/NAMING.md` over a version's sorted keys;
//! - [`core`]: every operation as a plain function over the catalog, which
//!   tests drive without a kernel, with [`attr`] (attributes and cache
//!   lifetimes), [`pins`] (the kernel's references to versions), [`control`]
//!   (`.status`, `.refresh`, `.version`) and [`error`] (errno, message,
//!   source and log level of every failure);
//! - [`remote`]: READs of keys that peers hold (cluster mode), answered
//!   off the session threads;
//! - [`counters`]: requests received per opcode;
//! - [`prewarm`]: which keys the kernel holds, so a switch can warm the
//!   same keys of the new version first (the kernel side is in `fuse`);
//! - [`fuse`]: the fuser adapter, session, kernel caching and invalidation.

pub mod attr;
pub mod control;
pub mod core;
pub mod counters;
pub mod error;
pub mod fuse;
pub mod generations;
pub mod inode;
pub mod listing;
pub mod pins;
pub mod prewarm;
pub mod remote;

#[cfg(test)]
mod model_tests;

pub use self::attr::{Attr, CoreOptions, FileKind};
pub use self::control::RefreshTrigger;
pub use self::core::{DirEntry, Entry, FsCore};
pub use self::counters::{Op, RequestCounters};
pub use self::error::{FsError, FsResult};
pub use self::fuse::{
    DEFAULT_PREWARM_LIMIT, FuseTransport, MountError, MountHandle, MountOptions, mount,
};
pub use self::remote::{ReadDone, RemoteRead, RemoteReads, RemoteReadsHandle};
