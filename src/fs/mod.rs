//! The FUSE mount: `/mnt/sequins/<db>/<key>` as files.
//!
//! Split by concept so the kernel-facing part stays thin:
//! - [`inode`]: stateless inode numbers (version generation + key ordinal);
//! - [`listing`]: NAMING's placement rules over a version's sorted keys;
//! - [`core`]: every operation as a plain function over the catalog, which
//!   tests drive without a kernel;
//! - [`counters`]: requests received per opcode;
//! - [`fuse`]: the fuser adapter, session, kernel caching and invalidation.

pub mod core;
pub mod counters;
pub mod fuse;
pub mod inode;
pub mod listing;

pub use self::core::{FsCore, FsError};
pub use self::counters::{Op, RequestCounters};
pub use self::fuse::{MountError, MountHandle, MountOptions, mount};
