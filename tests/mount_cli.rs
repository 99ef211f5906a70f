//! The `mount` command's errors are one clear line and exit code 1.

mod common;

use common::cli::run as sequinsfs;

#[test]
fn a_missing_mount_point_is_a_one_line_error() {
    let (code, _, err) = sequinsfs(&["mount", "/tmp", "/nonexistent/sequinsfs-mnt"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "sequinsfs: mount point /nonexistent/sequinsfs-mnt does not exist"
    );
}

#[test]
fn a_file_as_the_mount_point_is_not_a_directory() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let (code, _, err) = sequinsfs(&["mount", "/tmp", path]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("sequinsfs: mount point {path} is not a directory\n")
    );
}

#[test]
fn a_mount_point_already_mounted_is_refused() {
    let (code, _, err) = sequinsfs(&["mount", "/tmp", "/proc"]);
    assert_eq!(code, 1);
    assert!(err.contains("/proc is already mounted"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let (code, out, _) = sequinsfs(&["mount", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--local-store",
        "--config",
        "--refresh-period",
        "--require-success-file",
        "--max-parallel-loads",
        "--allow-other",
        "--uid",
        "--gid",
        "--nonempty",
        "--foreground",
        "--http",
        "--http-threads",
        "--idle-poll",
        "--fuse-transport",
        "--log-level",
        "--log-file",
    ] {
        // The flag's entry: its line and the help lines up to the next flag.
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                let l = l.trim_start();
                l.starts_with(flag) || (l.starts_with('-') && l.contains(&format!(", {flag}")))
            })
            .unwrap_or_else(|| panic!("{flag} missing from\n{out}"));
        let entry: String = lines[at..]
            .iter()
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
            .map(|(_, l)| *l)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            entry.contains("[default:"),
            "{flag}: no default in {entry:?}"
        );
    }
}

#[test]
fn an_unknown_fuse_transport_is_refused() {
    let (code, _, err) = sequinsfs(&["mount", "--fuse-transport", "tcp", "/tmp", "/tmp"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown FUSE transport \"tcp\""), "{err}");
}
