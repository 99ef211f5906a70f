//! FUSE over io_uring: the mount behaviour checks of the other mount test
//! files run again here with every mount served over io_uring (the test
//! helpers switch the transport for mounts made in this binary, setting the
//! fuse module's `enable_uring` for the mount and restoring it), plus checks
//! of the transport itself: requests really travel over the rings, and
//! `auto` falls back to /dev/fuse when the kernel does not allow io_uring.
// Deliberate: the other test files are compiled in again, each with its
// own copy of the helpers.
#![allow(clippy::duplicate_mod)]

mod common;

// The behaviour checks of these files, each mount over io_uring.
#[path = "mount_fixture_keys.rs"]
mod fixture_keys;
#[path = "mount_layout.rs"]
mod layout;
#[path = "mount_status.rs"]
mod status;
#[path = "mount_switch.rs"]
mod switch;
#[path = "mount_writes.rs"]
mod writes;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{EnableUring, TestMount, can_mount, publish_version, read, version};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::fuse::is_mount_point;
use sequinsfs::fs::{FuseTransport, MountOptions, Op, mount};

fn catalog() -> Arc<Catalog> {
    let catalog = Catalog::new();
    let pairs = (0..100)
        .map(|i| {
            (
                format!("key{i:03}").into_bytes(),
                format!("value {i}").into_bytes(),
            )
        })
        .collect();
    publish_version(&catalog, version("db", "1", pairs), Duration::from_secs(60));
    catalog
}

#[test]
fn requests_travel_over_the_rings() {
    if !can_mount() {
        return;
    }
    let m = TestMount::new(catalog());
    assert_eq!(m.handle().transport(), FuseTransport::Uring);
    let before = m.handle().uring_requests();
    let meta = std::fs::metadata(m.path()).unwrap();
    assert!(meta.is_dir());
    assert_eq!(read(&m.path().join("db/key042")), b"value 42");
    let counters = m.handle().counters();
    assert!(counters.get(Op::Lookup) >= 2, "{:?}", counters.snapshot());
    assert!(counters.get(Op::Read) >= 1, "{:?}", counters.snapshot());
    let served = m.handle().uring_requests() - before;
    assert!(served >= 3, "only {served} requests over io_uring");
    m.unmount();
}

fn uring() -> MountOptions {
    MountOptions {
        transport: FuseTransport::Uring,
        ..MountOptions::default()
    }
}

/// Mounts [`catalog`] at `dir` over io_uring (the kernel parameter on for
/// the mount only); the caller holds the one-mount lock.
fn mount_over_uring(dir: &std::path::Path) -> sequinsfs::fs::MountHandle {
    let param = EnableUring::new();
    let handle = mount(catalog(), || {}, dir, uring()).unwrap();
    drop(param);
    assert_eq!(handle.transport(), FuseTransport::Uring);
    handle
}

#[test]
fn unmount_while_busy_detaches_lazily_and_the_rings_keep_serving() {
    if !can_mount() {
        return;
    }
    let _lock = common::one_mount_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let handle = mount_over_uring(dir.path());
    let mut open = std::fs::File::open(dir.path().join("db/key007")).unwrap();
    handle.unmount().unwrap();
    assert!(!is_mount_point(dir.path()));
    // The first READ of the open file comes after the detach.
    let mut value = String::new();
    open.read_to_string(&mut value).unwrap();
    assert_eq!(value, "value 7");
}

#[test]
fn an_unmount_from_outside_ends_the_rings() {
    if !can_mount() {
        return;
    }
    let _lock = common::one_mount_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let handle = mount_over_uring(dir.path());
    assert_eq!(
        std::fs::read(dir.path().join("db/key001")).unwrap(),
        b"value 1"
    );
    let status = std::process::Command::new("umount")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.is_mounted() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(!handle.is_mounted());
    // Joins the queue threads, which the kernel ended with the connection.
    handle.unmount().unwrap();
}

#[test]
fn auto_falls_back_to_dev_fuse_when_the_kernel_disallows_io_uring() {
    if !can_mount() {
        return;
    }
    let _lock = common::one_mount_at_a_time();
    let param = sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM;
    let Ok(previous) = std::fs::read_to_string(param) else {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return;
    };
    if previous.trim() == "Y" {
        eprintln!("skipped: {param} is Y on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = MountOptions {
        transport: FuseTransport::Auto,
        ..MountOptions::default()
    };
    let handle = mount(catalog(), || {}, dir.path(), options).unwrap();
    assert_eq!(handle.transport(), FuseTransport::Dev);
    assert_eq!(
        std::fs::read(dir.path().join("db/key002")).unwrap(),
        b"value 2"
    );
    assert_eq!(handle.uring_requests(), 0);
    handle.unmount().unwrap();

    // `uring` refuses instead, naming the parameter.
    let err = mount(catalog(), || {}, dir.path(), uring())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("enable_uring"), "{err}");
    assert!(!is_mount_point(dir.path()));
}

#[test]
fn auto_uses_io_uring_when_the_kernel_allows_it() {
    if !can_mount() {
        return;
    }
    let _lock = common::one_mount_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let param = EnableUring::new();
    let options = MountOptions {
        transport: FuseTransport::Auto,
        ..MountOptions::default()
    };
    let handle = mount(catalog(), || {}, dir.path(), options).unwrap();
    drop(param);
    assert_eq!(handle.transport(), FuseTransport::Uring);
    assert_eq!(
        std::fs::read(dir.path().join("db/key003")).unwrap(),
        b"value 3"
    );
    assert!(handle.uring_requests() > 0);
    handle.unmount().unwrap();
}
