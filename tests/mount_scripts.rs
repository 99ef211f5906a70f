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
