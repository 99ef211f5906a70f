//! What only a real mount has, around the kernel-free `FsCore`:
//! - [`session`]: mount options, mounting, the session threads and
//!   unmounting;
//! - [`adapter`]: the fuser `Filesystem` that translates requests and logs
//!   failed ones;
//! - [`invalidate`]: pushing catalog changes and retired versions out of the
//!   kernel's caches;
//! - [`prewarm`]: warming the keys readers use in a new version before it
//!   is switched in;
//! - [`mountpoint`]: checking and recovering the mount point, lazy unmounts;
//! - [`uring`]: the io_uring transport, beside fuser's /dev/fuse one.

mod adapter;
mod invalidate;
pub mod mountpoint;
mod prewarm;
pub mod session;
pub mod uring;

pub use self::mountpoint::{MountError, is_mount_point, lazy_unmount};
pub use self::session::{DEFAULT_PREWARM_LIMIT, MountHandle, MountOptions, mount};
pub use self::uring::FuseTransport;
