//! Read throughput of the source root: the local fast path (plain file),
//! local downloads against `std::fs::copy` (what `cp` does), and the
//! object-store path (chunk stream bridged to a blocking reader) over an
//! in-memory store, which isolates our overhead from the network's.
//!
//! `cargo bench --bench source_read`; size in MiB via `SEQUINSFS_BENCH_MB`
//! (default 256). Figures are best of three runs, page cache warm.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sequinsfs::source::{Source, SourceFile, SourceOptions};

fn best_of_three(mut run: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(what: &str, bytes: u64, elapsed: Duration) {
    let mb_s = bytes as f64 / 1e6 / elapsed.as_secs_f64();
    println!(
        "{what:<44} {:>8.1} ms {mb_s:>9.0} MB/s",
        elapsed.as_secs_f64() * 1e3
    );
}

fn drain(mut reader: Box<dyn Read + Send>) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn main() {
    let mib: u64 = std::env::var("SEQUINSFS_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    println!("source_read: {mib} MiB file");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("db/1")).unwrap();
    std::fs::write(root.join("db/1/part-00000"), &data).unwrap();

    // Local: plain file.
    let local = Source::open(root.to_str().unwrap(), SourceOptions::default()).unwrap();
    let file: SourceFile = runtime
        .block_on(local.list_files("db", "1"))
        .unwrap()
        .remove(0);
    let elapsed = best_of_three(|| assert_eq!(drain(local.open_read(&file).unwrap()), size));
    report("local open_read (plain file)", size, elapsed);

    // Local: download vs std::fs::copy.
    let dest = dir.path().join("copy");
    let elapsed = best_of_three(|| {
        runtime
            .block_on(local.download(&file, &dest, &|_| {}))
            .unwrap();
    });
    report("local download (incl. fsync)", size, elapsed);
    let elapsed = best_of_three(|| {
        std::fs::copy(root.join("db/1/part-00000"), &dest).unwrap();
        std::fs::File::open(&dest).unwrap().sync_all().unwrap();
    });
    report("std::fs::copy + fsync (like cp)", size, elapsed);

    // Object store path, in memory.
    let store = Arc::new(InMemory::new());
    runtime
        .block_on(store.put(&ObjectPath::from("db/1/part-00000"), data.clone().into()))
        .unwrap();
    let store: Arc<dyn ObjectStore> = store;
    let remote = Source::with_store(store, "", "mem://", SourceOptions::default()).unwrap();
    let file = runtime
        .block_on(remote.list_files("db", "1"))
        .unwrap()
        .remove(0);
    let elapsed = best_of_three(|| {
        let (remote, file) = (remote.clone(), file.clone());
        let n = runtime
            .block_on(async move {
                tokio::task::spawn_blocking(move || drain(remote.open_read(&file).unwrap())).await
            })
            .unwrap();
        assert_eq!(n, size);
    });
    report("object store open_read (in memory, bridged)", size, elapsed);
    let elapsed = best_of_three(|| {
        runtime
            .block_on(remote.download(&file, &dest, &|_| {}))
            .unwrap();
    });
    report("object store download (in memory, fsync)", size, elapsed);
}
