//! Real FUSE mounts: version switches. Readers of an old version keep
//! reading it; readers under a stream of switches never fail and never mix
//! versions; retired versions go away once nobody uses them.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestMount, can_mount, publish_version, read, version};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::MountOptions;

fn pairs(version: usize, keys: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..keys)
        .map(|i| {
            (
                format!("k{i:04}").into_bytes(),
                format!("{version}:k{i:04}").into_bytes(),
            )
        })
        .collect()
}

fn fast_sweep() -> MountOptions {
    MountOptions {
        // Release retired versions promptly so the test can observe it.
        retired_sweep_interval: Duration::from_millis(50),
        ..MountOptions::default()
    }
}

/// Waits until the database shows only `current` (its own `.version`) and
/// every retired version was expired through `take_expired`.
fn wait_until_only_current(m: &TestMount, db: &str, current: u64) -> usize {
    let core = m.handle().core();
    assert!(
        core.wait_for_pins(
            |pinned| pinned.iter().all(|&g| g == current),
            Duration::from_secs(30)
        ),
        "the kernel kept old versions (generation, references): {:?}",
        core.pin_counts()
    );
    let expired = m.catalog.take_expired(Instant::now());
    for v in &expired {
        m.catalog.deleted(v.db(), v.name());
    }
    let held: Vec<_> = m
        .catalog
        .held_versions(db)
        .iter()
        .map(|v| core.generation_of(v))
        .collect();
    assert_eq!(held, [Some(current)]);
    expired.len()
}

#[test]
fn a_reader_of_an_old_version_keeps_reading_it_after_a_switch() {
    if !can_mount() {
        return;
    }
    let catalog = Catalog::new();
    publish_version(&catalog, version("db", "1", pairs(1, 10)), Duration::ZERO);
    let m = TestMount::with_options(catalog, fast_sweep());
    let old_dir: PathBuf = m
        .path()
        .join(std::fs::read_link(m.path().join("db")).unwrap());
    let mut open_file = std::fs::File::open(m.path().join("db/k0003")).unwrap();
    let mut open_dir = std::fs::read_dir(&old_dir).unwrap();

    publish_version(&m.catalog, version("db", "2", pairs(2, 10)), Duration::ZERO);
    assert_eq!(read(&m.path().join("db/.version")), b"2\n");
    assert_eq!(read(&m.path().join("db/k0003")), b"2:k0003");
    // The grace period is over, but a file of version 1 is open.
    assert!(m.catalog.take_expired(Instant::now()).is_empty());
    let mut old = String::new();
    open_file.read_to_string(&mut old).unwrap();
    assert_eq!(old, "1:k0003");
    assert_eq!(read(&old_dir.join(".version")), b"1\n");
    assert_eq!(read(&old_dir.join("k0007")), b"1:k0007");
    let first = open_dir.next().unwrap().unwrap();
    assert_eq!(first.file_name(), ".version");
    // Version 1 is still listed while it is held.
    assert!(m.path().join(".versions/db/1").exists());
    drop(open_file);
    drop(open_dir);
    assert_eq!(read(&m.path().join("db/k0003")), b"2:k0003");
    m.unmount();
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn read_string(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[test]
fn switch_under_load_never_fails_a_read_or_mixes_versions() {
    if !can_mount() {
        return;
    }
    const KEYS: usize = 200;
    const SWITCHES: usize = 30;
    const READERS: u64 = 4;
    let catalog = Catalog::new();
    let grace = Duration::from_millis(200);
    publish_version(&catalog, version("db", "0", pairs(0, KEYS)), grace);
    let m = TestMount::with_options(catalog, fast_sweep());
    let root = m.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..READERS)
        .map(|seed| {
            let (root, stop, reads) = (root.clone(), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || -> Result<u64, String> {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (seed + 1));
                let mut last_seen = 0usize;
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{:04}", rng.next() % KEYS as u64);
                    // Resolve the link once, then read from that directory.
                    let link = std::fs::read_link(root.join("db"))
                        .map_err(|e| format!("readlink: {e}"))?;
                    let dir = root.join(link);
                    let name = read_string(&dir.join(".version"))
                        .map_err(|e| format!("{}/.version: {e}", dir.display()))?;
                    let value = read_string(&dir.join(&key))
                        .map_err(|e| format!("{}/{key}: {e}", dir.display()))?;
                    let expected = format!("{}:{key}", name.trim_end());
                    if value != expected {
                        return Err(format!("{}: {value:?} != {expected:?}", dir.display()));
                    }
                    // Through the symlink: some version, never going back.
                    let value = read_string(&root.join("db").join(&key))
                        .map_err(|e| format!("db/{key}: {e}"))?;
                    let (seen, rest) = value.split_once(':').ok_or("no version in value")?;
                    let seen: usize = seen.parse().map_err(|_| "bad version")?;
                    if rest != key || seen < last_seen {
                        return Err(format!("db/{key} gave {value:?} after version {last_seen}"));
                    }
                    last_seen = seen;
                    done += 1;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                Ok(done)
            })
        })
        .collect();

    let mut current = None;
    for n in 1..=SWITCHES {
        // Let the readers make progress on the current version first.
        let target = reads.load(Ordering::Relaxed) + 8;
        let wait_start = Instant::now();
        while reads.load(Ordering::Relaxed) < target
            && wait_start.elapsed() < Duration::from_secs(30)
        {
            std::thread::yield_now();
        }
        let v = version("db", &n.to_string(), pairs(n, KEYS));
        current = Some(Arc::clone(&v));
        publish_version(&m.catalog, v, grace);
        if n % 10 == 0 {
            let out = std::process::Command::new("touch")
                .arg(root.join(".refresh"))
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        // Retire what can be retired, as the engine does.
        for v in m.catalog.take_expired(Instant::now()) {
            m.catalog.deleted(v.db(), v.name());
        }
    }
    let target = reads.load(Ordering::Relaxed) + 8;
    while reads.load(Ordering::Relaxed) < target {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for r in readers {
        total += r
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("reader failed: {e}"));
    }
    assert!(total >= 8 * SWITCHES as u64);
    assert_eq!(
        read(&root.join("db/.version")),
        format!("{SWITCHES}\n").as_bytes()
    );
    assert_eq!(m.handle().core().refreshes_triggered(), 3);

    // Old versions disappear once their grace period is over and the
    // kernel has let go of them.
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        std::thread::yield_now();
    }
    let current = current.expect("published");
    let generation = m.handle().core().generation_of(&current);
    wait_until_only_current(&m, "db", generation.expect("shown through the mount"));
    let held: Vec<_> = std::fs::read_dir(root.join(".versions/db"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(held, [SWITCHES.to_string().as_str()]);
    m.unmount();
}
