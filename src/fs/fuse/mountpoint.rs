//! The mount point itself: checking it before mounting (missing, not a
//! directory, already mounted, or stale after a crash), reading
//! `/proc/self/mountinfo`, and lazy unmounts.
//!
//! Kept apart from the session because none of it touches FUSE: it is what
//! turns a bad mount point into a clear one-line error instead of a failed
//! mount syscall.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {0} does not exist")]
    MissingMountPoint(PathBuf),
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is already mounted (unmount it first: fusermount3 -u {0})")]
    AlreadyMounted(PathBuf),
    #[error("cannot mount at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl MountError {
    pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> MountError + '_ {
        move |source| MountError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks the mount point, recovering a stale one.
pub(super) fn check_mount_point(mountpoint: &Path) -> Result<(), MountError> {
    match std::fs::metadata(mountpoint) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(MountError::NotADirectory(mountpoint.to_path_buf())),
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(
                mountpoint = %mountpoint.display(),
                "stale mount point (its daemon died); detaching it"
            );
            lazy_unmount(mountpoint).map_err(MountError::io(mountpoint))?;
            return check_mount_point(mountpoint);
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::MissingMountPoint(mountpoint.to_path_buf()));
        }
        Err(source) => return Err(MountError::io(mountpoint)(source)),
    }
    if is_mount_point(mountpoint) {
        return Err(MountError::AlreadyMounted(mountpoint.to_path_buf()));
    }
    Ok(())
}

/// Whether `path` is the mount point of some mount in our namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == canonical.as_os_str().as_bytes())
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && let Ok(text) = std::str::from_utf8(octal)
            && let Ok(value) = u8::from_str_radix(text, 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `umount -l`: detach now, clean up when no longer busy.
pub fn lazy_unmount(path: &Path) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        // Not root: fusermount3 is setuid and may unmount our own mounts.
        let status = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "-q"])
            .arg(path)
            .status()?;
        if status.success() {
            return Ok(());
        }
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\\"), br"/x\\");
        assert_eq!(unescape_mountinfo(r"/x\134"), br"/x\");
    }

    #[test]
    fn missing_mount_point_is_a_clear_error() {
        let err = check_mount_point(Path::new("/nonexistent/sequinsfs-test")).unwrap_err();
        assert!(matches!(err, MountError::MissingMountPoint(_)), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = check_mount_point(file.path()).unwrap_err();
        assert!(matches!(err, MountError::NotADirectory(_)), "{err}");
        assert!(matches!(
            check_mount_point(Path::new("/proc")),
            Err(MountError::AlreadyMounted(_))
        ));
    }
}
