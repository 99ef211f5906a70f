//! Real FUSE mounts: the layout, names, listings, attributes, control files
//! and the kernel caching contract (a warm read sends no request).

mod common;

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{TestMount, can_mount, cat, publish_version, read, version, walk_keys};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::MountOptions;
use sequinsfs::naming;

fn baby_names() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    for year in 1880..1884 {
        pairs.push((format!("{year}/boy").into_bytes(), b"John".to_vec()));
        pairs.push((format!("{year}/girl").into_bytes(), b"Mary".to_vec()));
    }
    pairs
}

/// A catalog serving `baby_names()` as version `1` of `baby-names`.
fn baby_names_catalog() -> Arc<Catalog> {
    let catalog = Catalog::new();
    publish_version(
        &catalog,
        version("baby-names", "1", baby_names()),
        Duration::from_secs(60),
    );
    catalog
}

#[test]
fn layout_symlink_versions_control_files_and_keys() {
    if !can_mount() {
        return;
    }
    let catalog = baby_names_catalog();
    let m = TestMount::new(catalog);
    let root = m.path();

    let link = std::fs::read_link(root.join("baby-names")).unwrap();
    assert_eq!(link, Path::new(".versions/baby-names/1"));
    let mut top: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, [".refresh", ".status", ".versions", "baby-names"]);
    let held: Vec<_> = std::fs::read_dir(root.join(".versions/baby-names"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(held, ["1"]);

    let db = root.join("baby-names");
    assert_eq!(read(&db.join(".version")), b"1\n");
    assert_eq!(read(&db.join("1881/boy")), b"John");
    assert_eq!(read(&db.join("1881%2Fboy")), b"John");
    assert_eq!(read(&db.join("1883/girl")), b"Mary");
    let mut years: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    years.sort();
    assert_eq!(years, [".version", "1880", "1881", "1882", "1883"]);
    assert!(!db.join("1881/nobody").exists());
    assert!(!db.join("1999").exists());

    let meta = std::fs::metadata(db.join("1881/boy")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.len(), meta.nlink()),
        (0o444, 4, 1)
    );
    assert_eq!(meta.mtime(), 1_700_000_000);
    let dir = std::fs::metadata(db.join("1881")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.mode() & 0o7777, 0o555);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });

    let status: serde_json::Value = serde_json::from_slice(&read(&root.join(".status"))).unwrap();
    assert_eq!(status["databases"][0]["name"], "baby-names");
    assert_eq!(status["databases"][0]["current"], "1");
    assert_eq!(status["databases"][0]["versions"][0]["state"], "ACTIVE");
    m.unmount();
}

#[test]
fn binary_keys_are_listed_once_and_reachable_by_encoded_name() {
    if !can_mount() {
        return;
    }
    let keys: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 0x2a],
        vec![0xff, 0xfe],
        b"a/b".to_vec(),
        b"a".to_vec(),
        b"a/c/d".to_vec(),
        b"line\nbreak".to_vec(),
        b"100%".to_vec(),
        b".hidden".to_vec(),
        b".version".to_vec(),
        b"/leading".to_vec(),
        b"trailing/".to_vec(),
        b"double//slash".to_vec(),
        b"dir/./dot".to_vec(),
        b"dir/file".to_vec(),
        "caf\u{e9}/cr\u{e8}me".as_bytes().to_vec(),
        b"".to_vec(),
        vec![b'x'; 300],
    ];
    let pairs: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), format!("value {i}").into_bytes()))
        .collect();
    let catalog = Catalog::new();
    publish_version(
        &catalog,
        version("bin", "7", pairs.clone()),
        Duration::from_secs(60),
    );
    let m = TestMount::new(catalog);
    let version_dir = m.path().join("bin");

    let listed = walk_keys(&version_dir);
    let listed_keys: Vec<&Vec<u8>> = listed.iter().map(|(k, _)| k).collect();
    let unique: BTreeSet<&Vec<u8>> = listed_keys.iter().copied().collect();
    assert_eq!(unique.len(), listed_keys.len(), "a key was listed twice");
    let reachable: BTreeSet<&Vec<u8>> = keys.iter().filter(|k| naming::is_reachable(k)).collect();
    assert_eq!(unique, reachable);
    for (key, path) in &listed {
        let i = keys.iter().position(|k| k == key).unwrap();
        assert_eq!(
            read(path),
            format!("value {i}").as_bytes(),
            "{}",
            path.display()
        );
        // Every name component is printable UTF-8 not starting with `.`.
        let name = path.file_name().unwrap().to_str().expect("UTF-8 name");
        assert!(!name.starts_with('.') && !name.chars().any(|c| c.is_ascii_control()));
    }
    for (i, key) in keys.iter().enumerate() {
        if naming::is_reachable(key) {
            let flat = version_dir.join(naming::flat_name(key));
            assert_eq!(read(&flat), format!("value {i}").as_bytes(), "{key:?}");
        }
    }
    // `.version` is the control file; the key `.version` is `%2Eversion`.
    assert_eq!(read(&version_dir.join(".version")), b"7\n");
    assert_eq!(read(&version_dir.join("%2Eversion")), b"value 8");
    // The exact key wins over the directory of the same name.
    assert!(version_dir.join("a").is_file());
    assert_eq!(read(&version_dir.join("a%2Fc%2Fd")), b"value 4");
    m.unmount();
}

/// A warm `cat` sends nothing to the daemon. The one exception is kernel
/// behaviour: after it reads a file's pages it marks the atime stale (on any
/// mount without `ro`, which `.refresh` rules out), so the next `fstat` (which
/// `cat` does) sends one GETATTR. From then on: zero requests.
#[test]
fn a_second_cat_of_a_key_sends_no_request() {
    if !can_mount() {
        return;
    }
    let catalog = baby_names_catalog();
    let m = TestMount::new(catalog);
    // The stable path: every component is cached for as long as the kernel
    // likes. (Through the symlink the same holds within the symlink's
    // one-second TTL.)
    let boy = m.path().join(".versions/baby-names/1/1881/boy");
    let missing = m.path().join(".versions/baby-names/1/1881/nobody");
    assert_eq!(
        cat(&m.path().join("baby-names/1881/boy")),
        (true, b"John".to_vec())
    );
    assert_eq!(cat(&boy), (true, b"John".to_vec()));
    assert!(!cat(&missing).0);
    let counters = m.handle().counters();
    let after_first = counters.snapshot();
    assert_eq!(cat(&boy), (true, b"John".to_vec()));
    assert!(!cat(&missing).0, "negative entry is cached");
    let after_second = counters.snapshot();
    let mut sent: Vec<_> = after_second
        .iter()
        .filter(|&(op, n)| after_first.get(op) != Some(n))
        .collect();
    sent.retain(|&(op, _)| *op != "getattr");
    assert!(sent.is_empty(), "second cat sent {sent:?}");
    assert!(
        after_second.get("getattr").unwrap_or(&0) - after_first.get("getattr").unwrap_or(&0) <= 1
    );
    let total = m.requests();
    for _ in 0..3 {
        assert_eq!(cat(&boy), (true, b"John".to_vec()));
        assert!(!cat(&missing).0);
    }
    assert_eq!(
        m.requests(),
        total,
        "warm cats sent requests: before {after_second:?}, after {:?}",
        counters.snapshot()
    );
    m.unmount();
}

#[test]
fn readdir_of_a_large_directory_resumes_across_replies() {
    if !can_mount() {
        return;
    }
    let pairs: Vec<_> = (0..5000)
        .map(|i| (format!("dir/key-{i:05}").into_bytes(), vec![b'v'; i % 7]))
        .collect();
    let catalog = Catalog::new();
    publish_version(
        &catalog,
        version("big", "1", pairs),
        Duration::from_secs(60),
    );
    let m = TestMount::new(catalog);
    let listed = walk_keys(&m.path().join("big"));
    assert_eq!(listed.len(), 5000);
    let meta = std::fs::metadata(m.path().join("big/dir/key-00013")).unwrap();
    assert_eq!(meta.len(), 6);
    let names: Vec<_> = std::fs::read_dir(m.path().join("big/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(names.len(), 5000);
    m.unmount();
}

/// Mounted read-only in the kernel (`--ro`), even the second `cat` of a key
/// sends nothing: the kernel no longer marks atime stale after a read. The
/// price: the kernel itself refuses `touch .refresh`.
#[test]
fn with_kernel_read_only_a_second_cat_sends_nothing() {
    if !can_mount() {
        return;
    }
    let catalog = baby_names_catalog();
    let m = TestMount::with_options(
        catalog,
        MountOptions {
            kernel_read_only: true,
            ..MountOptions::default()
        },
    );
    let boy = m.path().join(".versions/baby-names/1/1881/boy");
    assert_eq!(cat(&boy), (true, b"John".to_vec()));
    let before = m.requests();
    assert_eq!(cat(&boy), (true, b"John".to_vec()));
    assert_eq!(
        m.requests(),
        before,
        "{:?}",
        m.handle().counters().snapshot()
    );
    let touch = std::process::Command::new("touch")
        .arg(m.path().join(".refresh"))
        .output()
        .unwrap();
    assert!(!touch.status.success());
    assert!(String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"));
    m.unmount();
}
