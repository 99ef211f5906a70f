//! Real FUSE mounts: everything is read-only (EROFS) except that the
//! mount's owner (or root) may `touch .refresh` to start a refresh.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestMount, can_mount, publish_version, version};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::MountOptions;
use sequinsfs::refresh::RefreshHandle;

const NOBODY: u32 = 65534;

fn assert_erofs<T: std::fmt::Debug>(result: std::io::Result<T>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{what}: {err}");
}

fn mounted() -> TestMount {
    let catalog = Catalog::new();
    let pairs = vec![
        (b"dir/key".to_vec(), b"value".to_vec()),
        (b"key".to_vec(), b"value".to_vec()),
    ];
    publish_version(&catalog, version("db", "1", pairs), Duration::from_secs(60));
    TestMount::new(catalog)
}

#[test]
fn every_kind_of_write_fails_with_erofs() {
    if !can_mount() {
        return;
    }
    let m = mounted();
    let v = m.path().join(".versions/db/1");
    let key = v.join("key");
    assert_eq!(std::fs::read(&key).unwrap(), b"value");

    // write: root may open for writing (permissions pass, and the open is
    // not sent to the daemon), but the write itself is refused.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&key)
        .and_then(|mut f| f.write_all(b"x").and_then(|()| f.flush()));
    assert_erofs(written, "write");
    assert_erofs(std::fs::File::create(v.join("new")), "create in a version");
    assert_erofs(
        std::fs::File::create(m.path().join("new")),
        "create in the root",
    );
    assert_erofs(std::fs::create_dir(v.join("newdir")), "mkdir");
    assert_erofs(std::fs::rename(&key, v.join("moved")), "rename");
    assert_erofs(std::fs::remove_file(&key), "unlink");
    assert_erofs(std::fs::remove_dir(v.join("dir")), "rmdir");
    assert_erofs(std::os::unix::fs::symlink("key", v.join("link")), "symlink");
    assert_erofs(std::fs::hard_link(&key, v.join("hard")), "link");
    assert_erofs(truncate(&key), "truncate");
    assert_erofs(
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)),
        "chmod",
    );
    assert_erofs(setxattr(&key), "setxattr");
    assert_erofs(
        std::fs::remove_file(m.path().join("db")),
        "unlink the symlink",
    );
    assert_erofs(
        std::fs::write(m.path().join(".status"), b"x"),
        "write .status",
    );
    assert_erofs(
        std::fs::write(m.path().join(".refresh"), b"x"),
        "write .refresh",
    );
    // Nothing changed.
    assert_eq!(std::fs::read(&key).unwrap(), b"value");
    assert!(!v.join("new").exists());
    m.unmount();
}

fn truncate(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn setxattr(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let value = b"v";
    // SAFETY: c and the name are NUL-terminated, value is valid for its length.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.test".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits (up to a generous timeout) for the refresh handle to be triggered.
fn refresh_wanted(refresh: &RefreshHandle, timeout: Duration) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(timeout, refresh.wanted())
            .await
            .is_ok()
    })
}

fn touch_as(path: &Path, uid: Option<u32>) -> std::process::Output {
    let mut command = Command::new("touch");
    command.arg(path);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.output().unwrap()
}

#[test]
fn touching_refresh_as_the_owner_starts_a_refresh() {
    if !can_mount() {
        return;
    }
    let m = mounted();
    let out = touch_as(&m.path().join(".refresh"), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(refresh_wanted(&m.refresh, Duration::from_secs(10)));
    assert_eq!(m.handle().core().refreshes_triggered(), 1);
    m.unmount();
}

#[test]
fn touching_refresh_as_another_user_fails_unless_they_own_the_mount() {
    if !can_mount() {
        return;
    }
    let catalog = Catalog::new();
    publish_version(
        &catalog,
        version("db", "1", vec![(b"k".to_vec(), b"v".to_vec())]),
        Duration::from_secs(60),
    );
    let options = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let m = TestMount::with_options(catalog.clone(), options);
    // Another user can read...
    let mut cat = Command::new("cat");
    cat.arg(m.path().join("db/k")).uid(NOBODY).gid(NOBODY);
    let out = cat.output().unwrap();
    assert_eq!(out.stdout, b"v", "{}", String::from_utf8_lossy(&out.stderr));
    // ...but not refresh.
    let out = touch_as(&m.path().join(".refresh"), Some(NOBODY));
    assert!(!out.status.success());
    assert_eq!(m.handle().core().refreshes_triggered(), 0);
    assert!(!refresh_wanted(&m.refresh, Duration::from_millis(50)));
    m.unmount();

    // A mount owned by that user (--uid) lets it refresh.
    let options = MountOptions {
        allow_other: true,
        uid: Some(NOBODY),
        gid: Some(NOBODY),
        ..MountOptions::default()
    };
    let m = TestMount::with_options(catalog, options);
    let out = touch_as(&m.path().join(".refresh"), Some(NOBODY));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(refresh_wanted(&m.refresh, Duration::from_secs(10)));
    m.unmount();
}
