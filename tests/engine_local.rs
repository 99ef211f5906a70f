//! The engine over a local source root: loading, switching, retention,
//! restart from the local store, corrupt inputs and the sequins fixtures.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::data::{copy_dir, read_seqfile_pairs, write_seqfile_version};
use sequinsfs::catalog::{CatalogEvent, Origin, Progress, VersionState};
use sequinsfs::config::Config;
use sequinsfs::engine::Engine;

struct Setup {
    _dir: tempfile::TempDir,
    source: PathBuf,
    store: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&source).unwrap();
    Setup {
        _dir: dir,
        source,
        store,
    }
}

fn config(source: &Path, store: &Path) -> Config {
    Config {
        source: source.display().to_string(),
        local_store: store.to_path_buf(),
        // Tests drive expiry explicitly with collect_garbage.
        version_grace_period: Duration::ZERO,
        ..Config::default()
    }
}

async fn start(s: &Setup) -> Engine {
    let engine = Engine::start(config(&s.source, &s.store)).await.unwrap();
    engine.refresh_now().await;
    engine
}

fn get(engine: &Engine, db: &str, key: &[u8]) -> Option<Vec<u8>> {
    let v = engine.catalog().current(db)?;
    v.get(key).unwrap().map(|c| c.into_owned())
}

fn current_name(engine: &Engine, db: &str) -> Option<String> {
    engine.catalog().current(db).map(|v| v.name().to_string())
}

fn state_of(engine: &Engine, db: &str, version: &str) -> Option<(VersionState, Option<String>)> {
    let status = engine.catalog().database_status(db)?;
    status
        .versions
        .into_iter()
        .find(|v| v.version == version)
        .map(|v| (v.state, v.error_text()))
}

/// `n` keys spread over `files` files; values name the version.
fn dataset(version: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("key-{i:06}").into_bytes(),
                format!("{version}:value-{i}").into_bytes(),
            )
        })
        .collect()
}

#[tokio::test]
async fn healthy_fixture_serves_all_64_keys_at_version_1() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let s = setup();
    copy_dir(&fixtures.join("sequins/healthy"), &s.source);
    let engine = start(&s).await;

    let mut expected = BTreeMap::new();
    for part in std::fs::read_dir(s.source.join("baby-names/1")).unwrap() {
        for (k, v) in read_seqfile_pairs(&part.unwrap().path()) {
            expected.insert(k, v);
        }
    }
    assert_eq!(expected.len(), 64);
    assert_eq!(current_name(&engine, "baby-names").as_deref(), Some("1"));
    assert_eq!(
        get(&engine, "baby-names", b"1881/boy").as_deref(),
        Some(&b"John"[..])
    );
    for (k, v) in &expected {
        assert_eq!(get(&engine, "baby-names", k).as_ref(), Some(v), "{k:?}");
    }
    assert_eq!(get(&engine, "baby-names", b"1881/none"), None);

    // The sorted key index lists exactly the 64 keys, in order.
    let v = engine.catalog().current("baby-names").unwrap();
    let keys = v.keys();
    assert_eq!(keys.key_count(), 64);
    let listed: Vec<Vec<u8>> = (0..64).map(|i| keys.key_at(i).unwrap().to_vec()).collect();
    assert_eq!(listed, expected.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        keys.lower_bound(b"1881/").unwrap(),
        listed.iter().position(|k| k.starts_with(b"1881/")).unwrap() as u64
    );

    // The stray root file is no database.
    assert_eq!(
        engine.catalog().database_names(),
        vec!["baby-names".to_string()]
    );
    let status = engine.catalog().database_status("baby-names").unwrap();
    assert_eq!(status.versions.len(), 1);
    assert_eq!(status.versions[0].state, VersionState::Active);
    assert_eq!(status.versions[0].num_partitions, 5);
    assert_eq!(status.versions[0].num_keys, Some(64));
    engine.shutdown().await;
}

#[tokio::test]
async fn partially_healthy_fixture_reports_the_bad_version_as_error() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let s = setup();
    copy_dir(&fixtures.join("sequins/partially_healthy"), &s.source);
    let engine = start(&s).await;
    assert_eq!(current_name(&engine, "baby-names").as_deref(), Some("1"));
    assert_eq!(
        get(&engine, "baby-names", b"1881/boy").as_deref(),
        Some(&b"John"[..])
    );
    assert!(engine.catalog().current("baby-names-bad").is_none());
    let (state, error) = state_of(&engine, "baby-names-bad", "1").unwrap();
    assert_eq!(state, VersionState::Error);
    let error = error.unwrap();
    assert!(
        error.contains("part-00000"),
        "error names the file: {error}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn unhealthy_fixture_starts_and_serves_nothing() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let s = setup();
    copy_dir(&fixtures.join("sequins/unhealthy"), &s.source);
    let engine = start(&s).await;
    assert!(engine.catalog().served().is_empty());
    let (state, _) = state_of(&engine, "baby-names-bad", "1").unwrap();
    assert_eq!(state, VersionState::Error);
    engine.shutdown().await;
}

#[tokio::test]
async fn sparkey_fixture_serves_its_four_names() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let s = setup();
    copy_dir(&fixtures.join("sequins/sparkey"), &s.source.join("names/1"));
    let engine = start(&s).await;
    assert_eq!(
        current_name(&engine, "names").as_deref(),
        Some("1"),
        "{:?}",
        engine.catalog().status()
    );
    for (k, v) in [
        ("Alice", "Practice"),
        ("Betty", "White"),
        ("Charlie", "Chaplin"),
        ("Dylan", "Thomas"),
    ] {
        assert_eq!(
            get(&engine, "names", k.as_bytes()).as_deref(),
            Some(v.as_bytes())
        );
    }
    assert_eq!(get(&engine, "names", b"Bob"), None);
    let v = engine.catalog().current("names").unwrap();
    assert_eq!(v.num_partitions(), 2);
    assert_eq!(v.keys().key_count(), 4);
    engine.shutdown().await;
}

#[tokio::test]
async fn layout_rules_for_names_empty_dirs_and_stray_files() {
    let s = setup();
    write_seqfile_version(&s.source, "good", "1", &[dataset("1", 10)]);
    // An empty version: served, with no keys.
    std::fs::create_dir_all(s.source.join("empty-version/1")).unwrap();
    std::fs::write(s.source.join("empty-version/1/_SUCCESS"), b"").unwrap();
    // A db with no versions: known to nobody, no error.
    std::fs::create_dir_all(s.source.join("no-versions")).unwrap();
    // Invalid names are skipped.
    write_seqfile_version(&s.source, "bad.name", "1", &[dataset("1", 1)]);
    write_seqfile_version(&s.source, "good", "{ invalid_version }", &[dataset("x", 1)]);
    // Stray files at the root, the db level, hidden and underscore files and
    // subdirectories inside a version are not data.
    std::fs::write(s.source.join("stray.sequencefile"), b"not a db").unwrap();
    std::fs::write(s.source.join("good/stray"), b"not a version").unwrap();
    std::fs::write(s.source.join("good/1/_SUCCESS"), b"").unwrap();
    std::fs::write(s.source.join("good/1/.hidden"), b"junk").unwrap();
    std::fs::create_dir_all(s.source.join("good/1/subdir")).unwrap();
    std::fs::write(s.source.join("good/1/subdir/part-9"), b"junk").unwrap();

    let engine = start(&s).await;
    assert_eq!(current_name(&engine, "good").as_deref(), Some("1"));
    assert_eq!(
        get(&engine, "good", b"key-000003").as_deref(),
        Some(&b"1:value-3"[..])
    );
    assert_eq!(
        engine.catalog().current("good").unwrap().num_partitions(),
        1
    );
    let empty = engine.catalog().current("empty-version").unwrap();
    assert_eq!(empty.keys().key_count(), 0);
    assert_eq!(empty.get(b"anything").unwrap(), None);
    assert!(engine.catalog().current("no-versions").is_none());
    assert!(engine.catalog().current("bad.name").is_none());
    let names = engine.catalog().database_names();
    assert!(
        !names
            .iter()
            .any(|n| n == "bad.name" || n == "stray.sequencefile"),
        "{names:?}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn newer_versions_switch_atomically_and_old_ones_are_deleted() {
    let s = setup();
    write_seqfile_version(&s.source, "db", "1", &[dataset("1", 100), dataset("1b", 0)]);
    let engine = start(&s).await;
    let v1 = engine.catalog().current("db").unwrap();
    let v1_dir = s.store.join("data/db/1");
    assert!(v1_dir.is_dir());

    write_seqfile_version(
        &s.source,
        "db",
        "2",
        &[dataset("2", 50), dataset("2", 0), dataset("2", 0)],
    );
    engine.refresh_now().await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("2"));
    assert_eq!(
        get(&engine, "db", b"key-000007").as_deref(),
        Some(&b"2:value-7"[..])
    );
    assert_eq!(get(&engine, "db", b"key-000070"), None);

    // A reader holding version 1 keeps reading it, and it is not deleted
    // under the reader even though its grace period (zero) is over.
    assert_eq!(
        v1.get(b"key-000070").unwrap().as_deref(),
        Some(&b"1:value-70"[..])
    );
    engine.collect_garbage().await;
    assert!(v1_dir.is_dir());
    assert_eq!(
        v1.get(b"key-000070").unwrap().as_deref(),
        Some(&b"1:value-70"[..])
    );
    drop(v1);
    engine.collect_garbage().await;
    assert!(!v1_dir.exists());
    assert_eq!(state_of(&engine, "db", "1"), None);

    // Never roll back: removing the newest from the source, or adding a
    // smaller name, changes nothing.
    std::fs::remove_dir_all(s.source.join("db/2")).unwrap();
    write_seqfile_version(&s.source, "db", "10", &[dataset("10", 5)]);
    engine.refresh_now().await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("2"));
    engine.shutdown().await;
}

#[tokio::test]
async fn removed_databases_stop_serving_but_an_empty_listing_removes_nothing() {
    let s = setup();
    write_seqfile_version(&s.source, "keep", "1", &[dataset("1", 3)]);
    write_seqfile_version(&s.source, "drop", "1", &[dataset("1", 3)]);
    let engine = start(&s).await;
    assert!(engine.catalog().current("drop").is_some());

    std::fs::remove_dir_all(s.source.join("drop")).unwrap();
    engine.refresh_now().await;
    assert!(engine.catalog().current("drop").is_none());
    engine.collect_garbage().await;
    assert!(!s.store.join("data/drop").exists());

    // The source now lists nothing at all: keep serving.
    std::fs::remove_dir_all(s.source.join("keep")).unwrap();
    let report = engine.refresh_now().await;
    assert!(report.removed.is_empty());
    assert_eq!(current_name(&engine, "keep").as_deref(), Some("1"));
    engine.shutdown().await;
}

#[tokio::test]
async fn restart_serves_the_local_store_without_reloading() {
    let s = setup();
    write_seqfile_version(&s.source, "db", "1", &[dataset("1", 20), dataset("1", 20)]);
    let engine = start(&s).await;
    let manifest = std::fs::read(s.store.join("data/db/1/manifest.json")).unwrap();
    engine.shutdown().await;

    // The source data is gone (the directories stay, so the db and version
    // still list): a restart must not need it.
    for f in std::fs::read_dir(s.source.join("db/1")).unwrap() {
        std::fs::write(f.unwrap().path(), b"garbage").unwrap();
    }
    let engine = Engine::start(config(&s.source, &s.store)).await.unwrap();
    // Served at once, before any refresh ran.
    assert_eq!(
        get(&engine, "db", b"key-000001").as_deref(),
        Some(&b"1:value-1"[..])
    );
    engine.refresh_now().await;
    assert_eq!(
        get(&engine, "db", b"key-000001").as_deref(),
        Some(&b"1:value-1"[..])
    );
    assert_eq!(
        state_of(&engine, "db", "1").unwrap().0,
        VersionState::Active
    );
    // Not rebuilt: the manifest is the same file.
    assert_eq!(
        std::fs::read(s.store.join("data/db/1/manifest.json")).unwrap(),
        manifest
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_second_engine_cannot_share_the_local_store() {
    let s = setup();
    write_seqfile_version(&s.source, "db", "1", &[dataset("1", 1)]);
    let first = start(&s).await;
    let err = Engine::start(config(&s.source, &s.store))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("in use by another sequinsfs process"), "{err}");
    first.shutdown().await;
}

#[tokio::test]
async fn require_success_file_hides_unfinished_versions() {
    let s = setup();
    write_seqfile_version(&s.source, "db", "1", &[dataset("1", 2)]);
    std::fs::write(s.source.join("db/1/_SUCCESS"), b"").unwrap();
    write_seqfile_version(&s.source, "db", "2", &[dataset("2", 2)]);
    let mut cfg = config(&s.source, &s.store);
    cfg.require_success_file = true;
    let engine = Engine::start(cfg).await.unwrap();
    engine.refresh_now().await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("1"));
    std::fs::write(s.source.join("db/2/_SUCCESS"), b"").unwrap();
    engine.refresh_now().await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("2"));
    engine.shutdown().await;
}

/// sequins' `_SYMLINK`: a new version name that redirects to an existing
/// version loads that version's files again under the new name; a broken
/// redirect is an ERROR for its version only.
#[tokio::test]
async fn a_symlinked_version_serves_its_target_s_data() {
    let s = setup();
    write_seqfile_version(&s.source, "db", "1", &[dataset("1", 3)]);
    let engine = start(&s).await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("1"));

    std::fs::create_dir_all(s.source.join("db/2")).unwrap();
    std::fs::write(s.source.join("db/2/_SYMLINK"), b"1\n").unwrap();
    engine.refresh_now().await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("2"));
    assert_eq!(get(&engine, "db", b"key-000002").unwrap(), b"1:value-2");

    std::fs::create_dir_all(s.source.join("db/3")).unwrap();
    std::fs::write(s.source.join("db/3/_SYMLINK"), b"2").unwrap();
    engine.refresh_now().await;
    assert_eq!(current_name(&engine, "db").as_deref(), Some("2"));
    let (state, error) = state_of(&engine, "db", "3").unwrap();
    assert_eq!(state, VersionState::Error);
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("redirects again"),
        "{error:?}"
    );
    engine.shutdown().await;
}

/// Each corruption makes version 2 ERROR while version 1 keeps serving;
/// replacing the files with good ones heals it at the next refresh.
#[tokio::test]
async fn corrupt_inputs_leave_the_previous_version_serving() {
    type Corrupt = fn(&Path);
    let cases: Vec<(&str, Corrupt)> = vec![
        ("truncated", |dir| {
            let f = dir.join("part-00000");
            let data = std::fs::read(&f).unwrap();
            std::fs::write(&f, &data[..data.len() / 2]).unwrap();
        }),
        ("wrong magic", |dir| {
            let f = dir.join("part-00001");
            let mut data = std::fs::read(&f).unwrap();
            data[0] = b'X';
            std::fs::write(&f, data).unwrap();
        }),
        ("bad codec data", |dir| {
            let f = dir.join("part-00000");
            let mut data = std::fs::read(&f).unwrap();
            // Past the header, inside the first compressed block.
            let at = data.len() * 2 / 3;
            for b in &mut data[at..at + 64] {
                *b ^= 0x5a;
            }
            std::fs::write(&f, data).unwrap();
        }),
        ("zero-length file", |dir| {
            std::fs::write(dir.join("part-00001"), b"").unwrap();
        }),
    ];
    for (what, corrupt) in cases {
        let s = setup();
        write_seqfile_version(&s.source, "db", "1", &[dataset("1", 50), dataset("1", 50)]);
        let engine = start(&s).await;
        let good = common::data::SeqfileOptions::snappy_block();
        common::data::write_seqfile_version_with(
            &s.source,
            "db",
            "2",
            &[dataset("2", 3000), dataset("2", 3000)],
            &good,
        );
        corrupt(&s.source.join("db/2"));
        engine.refresh_now().await;
        let (state, error) = state_of(&engine, "db", "2").unwrap();
        assert_eq!(state, VersionState::Error, "{what}");
        let error = error.unwrap();
        assert!(
            error.contains("part-0000"),
            "{what}: error names the file: {error}"
        );
        assert_eq!(current_name(&engine, "db").as_deref(), Some("1"), "{what}");
        assert_eq!(
            get(&engine, "db", b"key-000001").as_deref(),
            Some(&b"1:value-1"[..])
        );
        // Nothing of the failed build is left behind.
        assert_eq!(
            std::fs::read_dir(s.store.join("tmp")).unwrap().count(),
            0,
            "{what}"
        );
        assert!(!s.store.join("data/db/2").exists(), "{what}");

        // Retried at the next refresh; the error clears once it loads.
        common::data::write_seqfile_version_with(
            &s.source,
            "db",
            "2",
            &[dataset("2", 3000), dataset("2", 3000)],
            &good,
        );
        engine.refresh_now().await;
        let (state, error) = state_of(&engine, "db", "2").unwrap();
        assert_eq!((state, error), (VersionState::Active, None), "{what}");
        assert_eq!(current_name(&engine, "db").as_deref(), Some("2"));
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn corrupt_sparkey_inputs_are_errors() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let sparkey = fixtures.join("sequins/sparkey");
    type Corrupt = fn(&Path);
    let cases: Vec<(&str, Corrupt, &str)> = vec![
        (
            "index of another log",
            |dir| {
                std::fs::copy(dir.join("part1.spi.sz"), dir.join("part0-file0.spi.sz")).unwrap();
            },
            "part0-file0",
        ),
        (
            "key in the wrong partition",
            |dir| {
                // part0-file1 holds partition-0 keys; call it partition 1.
                for ext in ["spl", "spi.sz"] {
                    std::fs::rename(
                        dir.join(format!("part0-file1.{ext}")),
                        dir.join(format!("part1-x.{ext}")),
                    )
                    .unwrap();
                }
            },
            "partition",
        ),
        (
            "overlapping files of one partition",
            |dir| {
                for ext in ["spl", "spi.sz"] {
                    std::fs::copy(
                        dir.join(format!("part0-file0.{ext}")),
                        dir.join(format!("part0-file2.{ext}")),
                    )
                    .unwrap();
                }
            },
            "overlap",
        ),
        (
            "truncated log",
            |dir| {
                let f = dir.join("part0-file1.spl");
                let data = std::fs::read(&f).unwrap();
                std::fs::write(&f, &data[..data.len() - 5]).unwrap();
            },
            "part0-file1",
        ),
        (
            "mixed with a SequenceFile",
            |dir| {
                std::fs::write(dir.join("part-00009"), b"SEQ").unwrap();
            },
            "mixed",
        ),
    ];
    for (what, corrupt, expect) in cases {
        let s = setup();
        copy_dir(&sparkey, &s.source.join("names/1"));
        let engine = start(&s).await;
        copy_dir(&sparkey, &s.source.join("names/2"));
        corrupt(&s.source.join("names/2"));
        engine.refresh_now().await;
        let (state, error) = state_of(&engine, "names", "2").unwrap();
        assert_eq!(state, VersionState::Error, "{what}");
        let error = error.unwrap();
        assert!(error.contains(expect), "{what}: {error}");
        assert_eq!(current_name(&engine, "names").as_deref(), Some("1"));
        assert_eq!(
            get(&engine, "names", b"Alice").as_deref(),
            Some(&b"Practice"[..])
        );
        engine.shutdown().await;
    }
}

/// 8 threads look keys up continuously while 50 new versions are published
/// and refreshed: no lookup fails or mixes versions, each thread sees
/// versions only increase, and old versions are deleted afterwards.
#[test]
fn switch_under_load() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s = setup();
    const KEYS: usize = 200;
    let version_name = |i: usize| format!("{i:04}");
    write_seqfile_version(
        &s.source,
        "db",
        &version_name(0),
        &[dataset(&version_name(0), KEYS)],
    );
    let engine = runtime.block_on(start(&s));
    let catalog = Arc::clone(engine.catalog());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|t| {
            let catalog = Arc::clone(&catalog);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut last = String::new();
                let mut lookups = 0u64;
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let v = catalog.current("db").expect("db stays served");
                    assert!(
                        v.name() >= last.as_str(),
                        "went back from {last} to {}",
                        v.name()
                    );
                    last = v.name().to_string();
                    // Several lookups on one handle: all from that version.
                    for _ in 0..4 {
                        i = (i * 7 + 3) % KEYS;
                        let key = format!("key-{i:06}");
                        let value = v
                            .get(key.as_bytes())
                            .expect("lookup works")
                            .expect("key present");
                        let expected = format!("{}:value-{i}", v.name());
                        assert_eq!(value.as_ref(), expected.as_bytes());
                        lookups += 1;
                    }
                }
                lookups
            })
        })
        .collect();
    for i in 1..=50 {
        let name = version_name(i);
        write_seqfile_version(
            &s.source,
            "db",
            &name,
            &[dataset(&name, KEYS), dataset(&name, 0)],
        );
        runtime.block_on(engine.refresh_now());
        assert_eq!(current_name(&engine, "db"), Some(name));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let lookups = r.join().expect("reader thread saw no error");
        assert!(lookups > 0);
    }
    runtime.block_on(engine.collect_garbage());
    let left: Vec<_> = std::fs::read_dir(s.store.join("data/db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec![version_name(50)]);
    runtime.block_on(engine.shutdown());
}

/// A refresh that finds a database's build in flight does not forget it:
/// once that build ends, another refresh runs by itself and picks up the
/// version that appeared meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_a_build_is_not_lost() {
    let s = setup();
    write_seqfile_version(&s.source, "db", "1", &[dataset("1", 2)]);
    let mut cfg = config(&s.source, &s.store);
    // Slow loads down (a pause per record) so version 2 is still building
    // when version 3 appears.
    cfg.throttle_loads = Duration::from_millis(2);
    let engine = Engine::start(cfg).await.unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    engine.catalog().on_change(move |e| {
        let _ = tx.send(e.clone());
    });
    write_seqfile_version(&s.source, "db", "2", &[dataset("2", 500)]);
    engine.refresh_handle().trigger();
    loop {
        if let CatalogEvent::Building { version, .. } = next_event(&mut events).await {
            assert_eq!(version, "2");
            break;
        }
    }
    // Version 3 appears while 2 builds; this refresh skips the busy db.
    write_seqfile_version(&s.source, "db", "3", &[dataset("3", 2)]);
    engine.refresh_handle().trigger();
    let mut switched = Vec::new();
    while switched.last().map(String::as_str) != Some("3") {
        if let CatalogEvent::Switched { version, .. } = next_event(&mut events).await {
            switched.push(version);
        }
    }
    assert_eq!(current_name(&engine, "db").as_deref(), Some("3"));
    engine.shutdown().await;
}

async fn next_event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<CatalogEvent>,
) -> CatalogEvent {
    tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("event within a minute")
        .expect("catalog alive")
}

/// The status of `db`/`version` as `.status` and the HTTP status page see it.
fn status_of(engine: &Engine, db: &str, version: &str) -> sequinsfs::catalog::VersionStatus {
    let status = engine.catalog().database_status(db).expect("database");
    status
        .versions
        .into_iter()
        .find(|v| v.version == version)
        .expect("version")
}

#[tokio::test]
async fn progress_is_final_once_served_and_says_where_the_version_came_from() {
    let s = setup();
    let pairs = dataset("1", 20_000);
    let files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = pairs.chunks(7_000).map(|c| c.to_vec()).collect();
    write_seqfile_version(&s.source, "db", "1", &files);
    let source_bytes: u64 = (0..files.len())
        .map(|i| {
            std::fs::metadata(s.source.join(format!("db/1/part-{i:05}")))
                .unwrap()
                .len()
        })
        .sum();
    // Straight after start-up returns, as `mount` returning would show it.
    let engine = Engine::start(config(&s.source, &s.store)).await.unwrap();
    let built = status_of(&engine, "db", "1");
    assert_eq!(built.state, VersionState::Active);
    assert_eq!(built.origin, Origin::Built);
    let expected = Progress {
        files_done: 3,
        files_total: 3,
        bytes_done: source_bytes,
        bytes_total: source_bytes,
        records_done: 20_000,
    };
    assert_eq!(built.progress, expected);
    engine.shutdown().await;

    // Served again from the local store: the figures of the load that
    // built it, and where it came from.
    let engine = Engine::start(config(&s.source, &s.store)).await.unwrap();
    let reused = status_of(&engine, "db", "1");
    assert_eq!(reused.origin, Origin::Reused);
    assert_eq!(reused.progress, expected);
    engine.shutdown().await;
}

/// Waits until `db` has a version loading that has read some bytes.
async fn wait_until_loading(engine: &Engine, db: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let loading = engine.catalog().database_status(db).is_some_and(|s| {
            s.versions
                .iter()
                .any(|v| v.state == VersionState::Building && v.progress.bytes_done > 0)
        });
        if loading {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no load of {db} started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_stops_a_sequencefile_load() {
    let s = setup();
    let mut cfg = config(&s.source, &s.store);
    // 5,000 records at 20 ms each: a load of 100 s.
    cfg.throttle_loads = Duration::from_millis(20);
    shutdown_during_background_load(&s, cfg, "slow", |source| {
        write_seqfile_version(source, "slow", "2", &[dataset("2", 5_000)]);
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_a_sparkey_download() {
    let s = setup();
    let mut cfg = config(&s.source, &s.store);
    // 1 MiB/s over a table of 24 MiB: a load of 24 s.
    cfg.max_download_bandwidth_mb_per_second = 1;
    shutdown_during_background_load(&s, cfg, "big", |source| {
        write_sparkey_version(source, "big", "1", 24 << 20);
    })
    .await;
}

/// Starts an engine with a small served database, then adds what `fill`
/// writes and shuts down while it loads.
async fn shutdown_during_background_load(
    s: &Setup,
    cfg: Config,
    db: &str,
    fill: impl FnOnce(&Path),
) {
    write_seqfile_version(&s.source, "small", "1", &[dataset("1", 10)]);
    let engine = Engine::start(cfg.clone()).await.unwrap();
    fill(&s.source);
    engine.refresh_handle().trigger();
    wait_until_loading(&engine, db).await;
    tokio::time::timeout(Duration::from_secs(10), engine.shutdown())
        .await
        .expect("shutdown waited for the load to finish");
    // Cancelled, not finished: nothing was published.
    assert!(!s.store.join("data").join(db).exists());
    // The staging directory is left for the next start to remove.
    sequinsfs::store::LocalStore::open(&s.store)
        .unwrap()
        .wait_for_removals();
    let leftovers = std::fs::read_dir(s.store.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "staging directory left behind");
}

/// One Sparkey table of about `bytes` bytes of values, with its framed
/// index, as `<db>/<version>/part-00000.spl` + `.spi.sz`.
fn write_sparkey_version(root: &Path, db: &str, version: &str, bytes: usize) {
    use sequinsfs::format::sparkey;
    let dir = root.join(db).join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("part-00000.spl");
    let index = dir.join("part-00000.spi");
    let mut writer = sparkey::LogWriter::create(&log, sparkey::Compression::None, 4096).unwrap();
    let value = vec![b'v'; 64 << 10];
    for i in 0..bytes / value.len() {
        writer.put(format!("k{i:06}").as_bytes(), &value).unwrap();
    }
    writer.finish_with_index(&index).unwrap();
    sparkey::framed::encode_file(&index, &dir.join("part-00000.spi.sz")).unwrap();
    std::fs::remove_file(&index).unwrap();
}

/// Every key's value, found by its position in the key index (as the
/// mount's READ does) and by its key (as HTTP does), is the same value, for
/// every kind of input and local compression; and ranges of it read as the
/// same bytes.
#[tokio::test]
async fn values_are_found_by_position_and_by_key_alike() {
    let mut cases: Vec<(&str, Option<&str>)> = vec![("none", None), ("snappy", None)];
    let fixtures = common::fixtures_dir();
    if fixtures.is_some() {
        cases.push(("none", Some("sequins/sparkey")));
    }
    for (compression, sparkey_input) in cases {
        let s = setup();
        match (sparkey_input, &fixtures) {
            (Some(dir), Some(fixtures)) => copy_dir(&fixtures.join(dir), &s.source.join("db/1")),
            _ => {
                let mut pairs = dataset("1", 3_000);
                // Values that span many 4 KiB blocks.
                pairs.push((b"big-a".to_vec(), pattern(3 << 20, 7)));
                pairs.push((b"big-b".to_vec(), pattern(100_000, 13)));
                pairs.push((b"empty".to_vec(), Vec::new()));
                let files: Vec<_> = pairs.chunks(700).map(|c| c.to_vec()).collect();
                write_seqfile_version(&s.source, "db", "1", &files);
            }
        }
        let mut cfg = config(&s.source, &s.store);
        cfg.storage.compression = match compression {
            "snappy" => sequinsfs::config::StorageCompression::Snappy,
            _ => sequinsfs::config::StorageCompression::None,
        };
        let engine = Engine::start(cfg).await.unwrap();
        let v = engine.catalog().current("db").unwrap();
        let keys = v.keys();
        assert!(keys.key_count() > 0);
        for i in 0..keys.key_count() {
            let key = keys.key_at(i).unwrap();
            let by_position = v.locate_ordinal(i).unwrap();
            let by_key = v.locate(key).unwrap().unwrap();
            assert_eq!(by_position, by_key, "{compression}: key {i}");
            let whole = v.get(key).unwrap().unwrap().into_owned();
            assert_eq!(whole.len() as u64, by_key.len);
            // Ranges, including ones crossing block boundaries.
            for (offset, len) in [(0, 1), (4095, 3), (5000, 70_000), (whole.len() as u64, 9)] {
                let mut scratch = Vec::new();
                let got = match v.read_value(&by_key, offset, len, &mut scratch).unwrap() {
                    Some(mapped) => mapped.to_vec(),
                    None => scratch,
                };
                let start = (offset as usize).min(whole.len());
                let end = (start + len).min(whole.len());
                assert_eq!(got, whole[start..end], "{compression}: key {i} at {offset}");
            }
        }
        engine.shutdown().await;
    }
}

/// Bytes that do not compress away, so compressed logs use many blocks.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A local store written by the first release (key index format 1, no
/// value locations) is served as it is: nothing is loaded again, and every
/// value reads back as in the source.
#[tokio::test]
async fn a_store_of_the_first_format_is_served_without_reloading() {
    let s = setup();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    copy_dir(&fixture.join("store"), &s.store);
    copy_dir(&fixture.join("source"), &s.source);
    let engine = Engine::start(config(&s.source, &s.store)).await.unwrap();
    for db in ["baby-names", "colors", "big-values"] {
        let status = status_of(&engine, db, "1");
        assert_eq!(status.origin, Origin::Reused, "{db} was loaded again");
        let v = engine.catalog().current(db).unwrap();
        let source_files: Vec<PathBuf> = std::fs::read_dir(s.source.join(db).join("1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let mut expected = BTreeMap::new();
        for file in source_files {
            for (k, value) in read_seqfile_pairs(&file) {
                expected.insert(k, value);
            }
        }
        assert_eq!(v.keys().key_count(), expected.len() as u64, "{db}");
        for (i, (key, value)) in expected.iter().enumerate() {
            assert_eq!(v.keys().key_at(i as u64).unwrap(), key.as_slice());
            let at = v.locate_ordinal(i as u64).unwrap();
            let mut scratch = Vec::new();
            let got = match v.read_value(&at, 0, usize::MAX, &mut scratch).unwrap() {
                Some(mapped) => mapped.to_vec(),
                None => scratch,
            };
            assert_eq!(&got, value, "{db} {:?}", String::from_utf8_lossy(key));
        }
    }
    engine.shutdown().await;
}
