//! Real FUSE mounts: `.status` while the catalog changes. Every read of it
//! is one complete JSON document, never the size of one state with the
//! bytes of another.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestMount, can_mount, publish_version, version};
use sequinsfs::catalog::Catalog;
use sequinsfs::fs::control::MAX_STATUS_SNAPSHOTS;

/// Waits (yielding) until `counter` reaches `target` or `reader` ended
/// (it failed), for at most 30 s.
fn wait_for<T>(counter: &AtomicU64, target: u64, reader: &std::thread::JoinHandle<T>) {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < target
        && !reader.is_finished()
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::yield_now();
    }
}

#[test]
fn every_read_of_status_is_complete_json_while_the_catalog_changes() {
    if !can_mount() {
        return;
    }
    const ROUNDS: u64 = 300;
    let catalog = Catalog::new();
    let m = TestMount::new(Arc::clone(&catalog));
    let status = m.path().join(".status");
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));

    let reader = {
        let (stop, reads) = (Arc::clone(&stop), Arc::clone(&reads));
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&status).map_err(|e| format!("read: {e}"))?;
                let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "not one JSON document ({e}), {} bytes, ending {:?}",
                        bytes.len(),
                        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(40)..])
                    )
                })?;
                if !json["databases"].is_array() {
                    return Err(format!("no databases: {json}"));
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    // Every publish adds a version (the retired ones stay listed for their
    // grace period), so the document grows with every round.
    for n in 1..=ROUNDS {
        let target = reads.load(Ordering::Relaxed) + 1;
        let db = format!("db{}", n % 3);
        let pairs = vec![(b"k".to_vec(), n.to_string().into_bytes())];
        publish_version(
            &catalog,
            version(&db, &format!("{n:04}"), pairs),
            Duration::from_secs(600),
        );
        // Change again as soon as the reader finished one more read.
        wait_for(&reads, target, &reader);
        if reader.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap().unwrap_or_else(|e| {
        panic!(
            "reader failed after {} reads: {e}",
            reads.load(Ordering::Relaxed)
        )
    });
    assert!(reads.load(Ordering::Relaxed) >= ROUNDS);
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path().join(".status")).unwrap()).unwrap();
    let versions: usize = last["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|db| db["versions"].as_array().unwrap().len())
        .sum();
    assert_eq!(versions as u64, ROUNDS);
    // A listing of the root (READDIRPLUS hands the kernel a snapshot too)
    // agrees with what a read then gets.
    let listed = std::fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == ".status")
        .expect(".status listed");
    let size = listed.metadata().unwrap().len();
    assert_eq!(
        size,
        std::fs::read(m.path().join(".status")).unwrap().len() as u64
    );
    let kept = m.handle().core().status_snapshots();
    assert!(kept <= MAX_STATUS_SNAPSHOTS, "{kept} snapshots kept");
    m.unmount();
}
