//! Real FUSE mounts: mount point errors, recovery of a stale mount point,
//! unmount while busy, and an unmount from outside.

mod common;

use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use common::{TestMount, can_mount, publish_version, version};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::fuse::is_mount_point;
use sequinsfs::fs::{MountError, MountOptions, mount};

fn catalog() -> std::sync::Arc<Catalog> {
    let catalog = Catalog::new();
    publish_version(
        &catalog,
        version("db", "1", vec![(b"k".to_vec(), b"v".to_vec())]),
        Duration::from_secs(60),
    );
    catalog
}

#[test]
fn a_mount_point_in_use_is_refused() {
    if !can_mount() {
        return;
    }
    let m = TestMount::new(catalog());
    let err = mount(catalog(), || {}, m.path(), MountOptions::default())
        .err()
        .expect("second mount must fail");
    assert!(matches!(err, MountError::AlreadyMounted(_)), "{err}");
    assert!(err.to_string().contains("already mounted"));
    m.unmount();
}

#[test]
fn a_stale_mount_point_left_by_a_dead_daemon_is_recovered() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A FUSE mount whose daemon is gone: mount with a /dev/fuse descriptor
    // and close it without ever answering.
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
    let data = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        fuse.as_raw_fd()
    ))
    .unwrap();
    // SAFETY: every pointer is a valid NUL-terminated string for the call.
    let rc = unsafe {
        libc::mount(
            c"sequins".as_ptr(),
            target.as_ptr(),
            c"fuse.sequins".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    drop(fuse);
    let stale = std::fs::metadata(dir.path()).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ENOTCONN), "{stale}");

    let handle = mount(catalog(), || {}, dir.path(), MountOptions::default()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("db/k")).unwrap(), b"v");
    handle.unmount().unwrap();
    assert!(!is_mount_point(dir.path()));
}

#[test]
fn unmount_while_busy_detaches_lazily_and_open_files_keep_working() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let handle = mount(catalog(), || {}, dir.path(), MountOptions::default()).unwrap();
    let mut open = std::fs::File::open(dir.path().join("db/k")).unwrap();
    handle.unmount().unwrap();
    assert!(!is_mount_point(dir.path()));
    let mut value = String::new();
    open.read_to_string(&mut value).unwrap();
    assert_eq!(value, "v");
}

#[test]
fn an_unmount_from_outside_ends_the_session() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let handle = mount(catalog(), || {}, dir.path(), MountOptions::default()).unwrap();
    assert!(handle.is_mounted());
    let status = std::process::Command::new("umount")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    // The session threads see the connection close; wait for that event.
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.is_mounted() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(!handle.is_mounted());
    handle.unmount().unwrap();
}
