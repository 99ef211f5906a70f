//! Mount test helpers: real FUSE mounts of in-memory catalogs that unmount
//! on drop (also when a test panics), and helpers that list, decode and
//! read a whole mounted version.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sequinsfs::catalog::{Catalog, InMemoryVersionData, Version};
use sequinsfs::fs::{FuseTransport, MountHandle, MountOptions, mount};
use sequinsfs::naming;
use sequinsfs::refresh::RefreshHandle;

/// Whether this machine can mount FUSE filesystems (root and /dev/fuse).
/// Mount tests print why they are skipped otherwise.
pub fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipped: FUSE mount tests need root and /dev/fuse");
    }
    ok
}

/// A version of `db` named `name` holding `pairs`.
pub fn version(db: &str, name: &str, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Arc<Version> {
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    InMemoryVersionData::version(db, name, created, pairs)
}

/// A mounted catalog in a temporary directory; unmounts on drop.
/// One mount at a time per test binary: tests assert on kernel behaviour
/// (which references the kernel drops, how many requests it sends), and a
/// concurrent test's child processes briefly inherit every open descriptor
/// between fork and exec, which keeps dentries alive at random moments.
/// The `mount_uring` test binary compiles other test files into itself,
/// each with its own copy of this module (and of any static in it), so the
/// lock is a file lock: `flock` excludes other open descriptions of the
/// file, in this process as in others.
pub struct MountLock {
    _file: std::fs::File,
}

pub fn one_mount_at_a_time() -> MountLock {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("sequinsfs-mount-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    loop {
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "flock {}: {err}",
            path.display()
        );
    }
    // Released when the file is closed (the lock is dropped).
    MountLock { _file: file }
}

/// Mounts made by tests compiled into the `mount_uring` binary go over
/// io_uring; everywhere else they keep the default transport.
fn test_transport() -> FuseTransport {
    if module_path!().starts_with("mount_uring::") {
        FuseTransport::Uring
    } else {
        FuseTransport::Dev
    }
}

/// Sets the fuse module's `enable_uring` to Y for as long as it lives and
/// puts back what was there. A connection keeps io_uring once INIT agreed on
/// it, so only the mount itself needs the parameter.
pub struct EnableUring {
    /// What to put back when dropped.
    previous: Option<String>,
}

impl EnableUring {
    /// Y until dropped, then N again if it was N (if it was Y, another
    /// test's guard may have set it: that one puts it back).
    pub fn new() -> EnableUring {
        let param = sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM;
        let previous = std::fs::read_to_string(param)
            .ok()
            .filter(|previous| previous.trim() != "Y");
        if previous.is_some() {
            std::fs::write(param, "Y").unwrap_or_else(|e| panic!("enable {param}: {e}"));
        }
        EnableUring { previous }
    }

    /// `value` (Y or N) until dropped, then whatever was there before, even
    /// if a daemon changed it meanwhile. For tests that hold the parameter
    /// alone.
    pub fn set(value: &str) -> EnableUring {
        let param = sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM;
        let previous = std::fs::read_to_string(param).ok();
        std::fs::write(param, value).unwrap_or_else(|e| panic!("set {param}: {e}"));
        EnableUring { previous }
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            let _ = std::fs::write(
                sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM,
                previous.trim(),
            );
        }
    }
}

pub struct TestMount {
    pub catalog: Arc<Catalog>,
    pub refresh: RefreshHandle,
    // Declared before `dir` so it is dropped (unmounted) first.
    handle: Option<MountHandle>,
    dir: tempfile::TempDir,
    _exclusive: MountLock,
}

impl TestMount {
    pub fn new(catalog: Arc<Catalog>) -> TestMount {
        Self::with_options(catalog, MountOptions::default())
    }

    pub fn with_options(catalog: Arc<Catalog>, options: MountOptions) -> TestMount {
        Self::with_refresh(catalog, RefreshHandle::new(), options)
    }

    /// A mount whose `.refresh` triggers `refresh` (for example an
    /// engine's).
    pub fn with_refresh(
        catalog: Arc<Catalog>,
        refresh: RefreshHandle,
        options: MountOptions,
    ) -> TestMount {
        let exclusive = one_mount_at_a_time();
        let mut options = options;
        if options.transport == FuseTransport::Dev {
            options.transport = test_transport();
        }
        let uring = options.transport == FuseTransport::Uring;
        let param = uring.then(EnableUring::new);
        let dir = tempfile::Builder::new()
            .prefix("sequinsfs-mount-")
            .tempdir()
            .expect("temp dir");
        // Other users (tests run commands as `nobody`) must reach the mount.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let trigger = refresh.clone();
        let handle = mount(
            Arc::clone(&catalog),
            move || trigger.trigger(),
            dir.path(),
            options,
        )
        .expect("mount");
        drop(param);
        if uring {
            assert_eq!(
                handle.transport(),
                FuseTransport::Uring,
                "io_uring negotiated"
            );
        }
        TestMount {
            catalog,
            refresh,
            handle: Some(handle),
            dir,
            _exclusive: exclusive,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn handle(&self) -> &MountHandle {
        self.handle.as_ref().expect("mounted")
    }

    /// Total FUSE requests received so far.
    pub fn requests(&self) -> u64 {
        self.handle().counters().total()
    }

    pub fn unmount(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.unmount().expect("unmount");
        }
    }
}

/// Publishes `version` as the current version of its database.
pub fn publish_version(catalog: &Catalog, version: Arc<Version>, grace: Duration) {
    catalog.publish(version, "mem".into(), grace);
}

/// Every file under `dir`, walking the listing, as (key, path): the key is
/// the concatenation of the decoded names (joined with `/` for directories).
/// Control files (`.version`) are skipped.
pub fn walk_keys(dir: &Path) -> Vec<(Vec<u8>, PathBuf)> {
    fn go(dir: &Path, prefix: &[u8], out: &mut Vec<(Vec<u8>, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            if prefix.is_empty() && name == naming::VERSION_FILE {
                continue;
            }
            let decoded = naming::decode(name.as_bytes());
            let key = [prefix, &decoded[..]].concat();
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                go(&path, &[&key[..], b"/"].concat(), out);
            } else {
                out.push((key, path));
            }
        }
    }
    let mut out = Vec::new();
    go(dir, b"", &mut out);
    out
}

/// Reads a whole file, panicking with the path on error.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs `cat` on `path`: whether it succeeded, and what it printed.
pub fn cat(path: &Path) -> (bool, Vec<u8>) {
    let out = std::process::Command::new("cat")
        .arg(path)
        .output()
        .expect("run cat");
    (out.status.success(), out.stdout)
}
