//! Crash safety: `sequinsfs sync` is killed with SIGKILL at random moments
//! of a load, many times. After each kill a restarted engine serves the last
//! published version, never a partial one, and no temporary file survives
//! the restart.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use common::data::{SeqfileOptions, copy_dir, write_seqfile_version_with};
use sequinsfs::config::Config;
use sequinsfs::engine::Engine;
use sequinsfs::store::{LocalStore, LocalVersion};

fn dataset(version: &str, file: usize, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("key-{file}-{i:06}").into_bytes(),
                format!("{version}:{i}").into_bytes(),
            )
        })
        .collect()
}

fn sync(source: &Path, store: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .arg("sync")
        .arg(source)
        .arg("--local-store")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every published version directory is complete: it opens and has all keys.
fn check_published(store: &Path, expected_keys: &[(&str, u64)]) -> Vec<String> {
    let db_dir = store.join("data/db");
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&db_dir).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let v = LocalVersion::open(&dir)
            .unwrap_or_else(|e| panic!("published version {name} is not complete: {e}"));
        let want = expected_keys.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(v.manifest().num_keys, want, "version {name}");
        versions.push(name);
    }
    versions.sort();
    versions
}

#[test]
fn sigkill_during_loads_never_exposes_a_partial_version() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let store = dir.path().join("store");
    let options = SeqfileOptions::snappy_block();
    let files = 4;
    let per_file = 20_000;
    let v1: Vec<_> = (0..files).map(|f| dataset("1", f, 100)).collect();
    write_seqfile_version_with(&source, "db", "1", &v1, &options);

    // Version 1 published completely; keep a copy of that store to start
    // every round from.
    assert!(sync(&source, &store).wait().unwrap().success());
    assert_eq!(check_published(&store, &[("1", 400)]), vec!["1"]);
    let pristine = dir.path().join("pristine-store");
    copy_dir(&store, &pristine);

    // Version 2 is larger; measure how long its load takes.
    let v2: Vec<_> = (0..files).map(|f| dataset("2", f, per_file)).collect();
    write_seqfile_version_with(&source, "db", "2", &v2, &options);
    let scratch = dir.path().join("scratch-store");
    let started = Instant::now();
    assert!(sync(&source, &scratch).wait().unwrap().success());
    let load_time = started.elapsed();

    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test: load takes {load_time:?}, seed {seed}");
    let expected = [("1", 400u64), ("2", (files * per_file) as u64)];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..12 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = load_time.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64);
        let mut child = sync(&source, &store);
        // Fault injection at a random moment of the load, not synchronisation.
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();

        // Whatever the moment, data/ holds only complete versions.
        let published = check_published(&store, &expected);
        assert!(published.contains(&"1".to_string()) || published == vec!["2"]);

        // A restart serves the newest published version at once and removes
        // every leftover of the interrupted build.
        runtime.block_on(async {
            let config = Config {
                source: source.display().to_string(),
                local_store: store.clone(),
                ..Config::default()
            };
            let engine = Engine::start(config).await.unwrap();
            let current = engine.catalog().current("db").unwrap();
            assert_eq!(
                current.name(),
                published.last().unwrap().as_str(),
                "round {round}"
            );
            let value = current.get(b"key-0-000050").unwrap().unwrap();
            assert_eq!(value.as_ref(), format!("{}:50", current.name()).as_bytes());
            drop(current);
            engine.shutdown().await;
        });
        LocalStore::open(&store).unwrap().wait_for_removals();
        assert_eq!(
            std::fs::read_dir(store.join("tmp")).unwrap().count(),
            0,
            "round {round}: temporary files left"
        );
        eprintln!("round {round}: killed after {delay:?}, published {published:?}");
        // Start the next round from version 1 only, so every round kills a
        // load of version 2 (the restart above may also have finished it).
        if store.join("data/db/2").exists() {
            std::fs::remove_dir_all(&store).unwrap();
            copy_dir(&pristine, &store);
        }
    }
    // Finally the load completes.
    assert!(sync(&source, &store).wait().unwrap().success());
    let published = check_published(&store, &expected);
    assert_eq!(published.last().map(String::as_str), Some("2"));
}
