//! The mount over the real engine: sequins' fixture roots mounted, values
//! agreeing with the HTTP sidecar, and versions switched under load by
//! writing to the source root and touching `.refresh`.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::data::{copy_dir, read_seqfile_pairs, write_seqfile_version};
use common::engine::TestEngine;
use common::{TestMount, TestServer, can_mount, walk_keys};
use sequinsfs::catalog::CatalogEvent;
use sequinsfs::engine::Engine;
use sequinsfs::fs::MountOptions;
use sequinsfs::http::HttpOptions;

/// An engine loaded from a source root, mounted (declared first so it is
/// unmounted before the engine stops).
struct Mounted {
    mount: TestMount,
    loaded: TestEngine,
}

impl Mounted {
    fn path(&self) -> &Path {
        self.mount.path()
    }
    fn engine(&self) -> &Engine {
        self.loaded.engine()
    }
}

fn mount_source(fill: impl FnOnce(&Path), grace: Duration) -> Mounted {
    let loaded = TestEngine::start(fill, grace);
    let mount = TestMount::with_refresh(
        Arc::clone(loaded.engine().catalog()),
        loaded.engine().refresh_handle(),
        MountOptions::default(),
    );
    Mounted { mount, loaded }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn healthy_root_mounted_and_agreeing_with_http() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    if !can_mount() {
        return;
    }
    let healthy = fixtures.join("sequins/healthy");
    let m = mount_source(|src| copy_dir(&healthy, src), Duration::from_secs(60));
    let root = m.path();
    let db = root.join("baby-names");

    assert_eq!(
        std::fs::read_link(&db).unwrap(),
        Path::new(".versions/baby-names/1")
    );
    assert_eq!(std::fs::read(db.join(".version")).unwrap(), b"1\n");
    let years: Vec<String> = names(&db).into_iter().filter(|n| n != ".version").collect();
    assert!(years.contains(&"1881".to_string()), "{years:?}");
    assert!(
        years
            .iter()
            .all(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
    );

    let mut count = 0;
    for part in std::fs::read_dir(healthy.join("baby-names/1")).unwrap() {
        for (key, value) in read_seqfile_pairs(&part.unwrap().path()) {
            let by_path = db.join(std::ffi::OsStr::from_bytes(&key));
            assert_eq!(std::fs::read(&by_path).unwrap(), value, "{by_path:?}");
            let flat = sequinsfs::naming::flat_name(&key);
            let by_name = db.join(&flat);
            assert_eq!(std::fs::read(&by_name).unwrap(), value, "{by_name:?}");
            count += 1;
        }
    }
    assert_eq!(count, 64);

    // Every key listed by the mount reads the same over HTTP.
    let server = TestServer::with_options(Arc::clone(m.engine().catalog()), HttpOptions::default());
    let listed = walk_keys(&db);
    assert_eq!(listed.len(), 64);
    for (key, path) in listed {
        let escaped: String = key.iter().map(|b| format!("%{b:02X}")).collect();
        let reply = server.get(&format!("/baby-names/{escaped}"));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, std::fs::read(&path).unwrap(), "{key:?}");
    }
}

#[test]
fn partially_healthy_and_unhealthy_roots() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    if !can_mount() {
        return;
    }
    let partial = fixtures.join("sequins/partially_healthy");
    let m = mount_source(|src| copy_dir(&partial, src), Duration::from_secs(60));
    let root = names(m.path());
    assert!(root.contains(&"baby-names".to_string()), "{root:?}");
    assert!(!root.contains(&"baby-names-bad".to_string()), "{root:?}");
    assert!(!m.path().join("baby-names-bad").exists());
    assert_eq!(
        std::fs::read(m.path().join("baby-names/1881/boy")).unwrap(),
        b"John"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path().join(".status")).unwrap()).unwrap();
    let text = status.to_string();
    assert!(
        text.contains("baby-names-bad") && text.contains("ERROR"),
        "{text}"
    );
    drop(m);

    let unhealthy = fixtures.join("sequins/unhealthy");
    let m = mount_source(|src| copy_dir(&unhealthy, src), Duration::from_secs(60));
    let root = names(m.path());
    assert!(root.iter().all(|n| n.starts_with('.')), "{root:?}");
    let status = std::fs::read_to_string(m.path().join(".status")).unwrap();
    assert!(status.contains("ERROR"), "{status}");
}

/// Readers read random keys through the symlink while 30 versions are
/// written to the source root and picked up by touching `.refresh`: no read
/// fails, every value belongs to the version `.version` reports in the same
/// resolved directory, each reader sees versions only increase, and the old
/// versions disappear once their grace period is over.
#[test]
fn switch_under_load_through_refresh() {
    if !can_mount() {
        return;
    }
    const KEYS: usize = 100;
    let name = |i: usize| format!("{i:03}");
    let data = |v: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..KEYS)
            .map(|k| {
                (
                    format!("k{k}").into_bytes(),
                    format!("{v}:{k}").into_bytes(),
                )
            })
            .collect()
    };
    // A short grace period: the readers below finish with a resolved
    // directory well within it, and the end of the test waits it out.
    let grace = Duration::from_secs(5);
    let m = mount_source(
        |src| write_seqfile_version(src, "db", &name(0), &[data(&name(0))]),
        grace,
    );
    let (events_tx, events) = mpsc::channel();
    let events_tx = std::sync::Mutex::new(events_tx);
    m.engine().catalog().on_change(move |event| {
        let _ = events_tx.lock().unwrap().send(event.clone());
    });

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let root = m.path().to_path_buf();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut last = String::new();
                let mut reads = 0;
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 13 + 7) % KEYS;
                    // Through the symlink, as a script would.
                    let value = std::fs::read(root.join(format!("db/k{i}")))
                        .expect("read through the symlink");
                    let value = String::from_utf8(value).unwrap();
                    let (version, rest) = value.split_once(':').unwrap();
                    assert_eq!(rest, i.to_string());
                    assert!(
                        version >= last.as_str(),
                        "went back from {last} to {version}"
                    );
                    last = version.to_string();
                    // Resolved once: `.version` and the value agree.
                    let target = std::fs::read_link(root.join("db")).unwrap();
                    let dir = root.join(target);
                    let v = std::fs::read_to_string(dir.join(".version")).expect(".version");
                    let value = std::fs::read_to_string(dir.join(format!("k{i}")))
                        .expect("read in resolved dir");
                    assert_eq!(value, format!("{}:{i}", v.trim_end()));
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    for i in 1..=30 {
        let v = name(i);
        // Published as producers should: written aside, then renamed into
        // place, so a refresh never sees a half-written version.
        let staging = format!(".tmp-{v}");
        write_seqfile_version(&m.loaded.source, "db", &staging, &[data(&v)]);
        std::fs::rename(
            m.loaded.source.join("db").join(&staging),
            m.loaded.source.join("db").join(&v),
        )
        .unwrap();
        let touched = Command::new("touch")
            .arg(m.path().join(".refresh"))
            .status()
            .unwrap();
        assert!(touched.success());
        // Wait for the engine to announce the switch.
        loop {
            match events
                .recv_timeout(Duration::from_secs(60))
                .expect("switch within a minute")
            {
                CatalogEvent::Switched { version, .. } if version == v => break,
                _ => {}
            }
        }
        assert_eq!(
            std::fs::read_link(m.path().join("db")).unwrap(),
            Path::new(".versions/db").join(&v)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("no read error") > 0);
    }

    // The 30 superseded versions are deleted once their grace period ends
    // (the janitor runs by itself; the mount releases the kernel's
    // references to retired versions).
    let mut deleted = 0;
    while deleted < 30 {
        if let CatalogEvent::Deleted { .. } = events
            .recv_timeout(Duration::from_secs(60))
            .expect("old versions deleted after the grace period")
        {
            deleted += 1;
        }
    }
    assert_eq!(names(&m.path().join(".versions/db")), vec![name(30)]);
}
