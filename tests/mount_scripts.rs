//! The fstab helper maps mount options to `sequinsfs mount` flags.

use std::process::Command;

#[test]
fn fstab_options_become_flags_and_mount_options_are_dropped() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-scripts/mount.sequinsfs");
    let out = Command::new("sh")
        .args([
            script,
            "s3://bucket/root",
            "/mnt/sequins",
            "-f",
            "-o",
            "_netdev,nofail,auto,users,x-systemd.requires=network-online.target,\
             allow_other,refresh_period=10m,local_store=/var/sequins,uid=1000,rw,nosuid",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "sequinsfs mount s3://bucket/root /mnt/sequins --allow-other \
         --refresh-period=10m --local-store=/var/sequins --uid=1000"
    );
    let out = Command::new("sh")
        .args([script, "/src", "/mnt", "-o", "foreground"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `scripts/install` puts the binary under the prefix, and the fstab helper
/// and the systemd unit it installs call that binary.
#[test]
fn install_puts_the_binary_and_helpers_where_they_call_it() {
    let dest = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install");
    let out = Command::new(script)
        .args(["--binary", env!("CARGO_BIN_EXE_sequinsfs")])
        .args(["--prefix", "/opt/sequinsfs"])
        .arg("--destdir")
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = dest.path().join("opt/sequinsfs/bin/sequinsfs");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("sequinsfs "));
    let helper = std::fs::read_to_string(dest.path().join("sbin/mount.sequinsfs")).unwrap();
    assert!(
        helper.contains("SEQUINSFS=${SEQUINSFS:-/opt/sequinsfs/bin/sequinsfs}"),
        "{helper}"
    );
    let unit =
        std::fs::read_to_string(dest.path().join("etc/systemd/system/sequinsfs@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/sequinsfs/bin/sequinsfs mount --foreground"),
        "{unit}"
    );
    // The helper, as installed, calls the installed binary.
    let out = Command::new("sh")
        .arg(dest.path().join("sbin/mount.sequinsfs"))
        .args(["/src", "/mnt", "-f", "-o", "allow_other"])
        .env_remove("SEQUINSFS")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/opt/sequinsfs/bin/sequinsfs mount /src /mnt --allow-other"
    );
}
