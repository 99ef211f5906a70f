//! Local stores written by older releases are migrated in place, never
//! downloaded again, and a kill -9 at any step of a migration leaves a
//! store that the next start serves and finishes migrating.
//!
//! The stores are fixtures written by earlier releases
//! (`tests/fixtures/store-v1`: the first release, key index format 1;
//! `tests/fixtures/store-v1-final`: the last release of store format 1).
//! Crashes are injected with `strace`: the daemon is killed with SIGKILL at
//! the K-th call of one of the system calls that change the store (renames,
//! links, unlinks, fsyncs, directory creations), for K drawn at random, so
//! the kills land on the migration's state changes rather than wherever a
//! timer happens to fire.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::data::copy_dir;
use sequinsfs::catalog::Origin;
use sequinsfs::config::Config;
use sequinsfs::engine::Engine;
use sequinsfs::store::format::STORE_FORMAT;
use sequinsfs::store::manifest::MANIFEST_FORMAT;
use sequinsfs::store::{LocalStore, LocalVersion, Manifest};

/// The system calls that change a store's state; a kill may land on any.
const STATE_CHANGES: &str =
    "rename,renameat,renameat2,link,linkat,unlink,unlinkat,fsync,fdatasync,mkdir,mkdirat";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A writable copy of a fixture's source root and store under `dir`.
fn copy_fixture(name: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let (source, store) = (dir.join("source"), dir.join("store"));
    let _ = std::fs::remove_dir_all(&source);
    let _ = std::fs::remove_dir_all(&store);
    copy_dir(&fixture(name).join("source"), &source);
    copy_dir(&fixture(name).join("store"), &store);
    (source, store)
}

fn config(source: &Path, store: &Path) -> Config {
    Config {
        source: source.display().to_string(),
        local_store: store.to_path_buf(),
        ..Config::default()
    }
}

/// `sequinsfs sync`, which migrates the store and finishes its background
/// conversions before it exits.
fn sync_command(source: &Path, store: &Path) -> Vec<String> {
    vec![
        env!("CARGO_BIN_EXE_sequinsfs").to_string(),
        "sync".into(),
        source.display().to_string(),
        "--local-store".into(),
        store.display().to_string(),
    ]
}

/// Runs `command` under strace, killed with SIGKILL at the `k`-th call of
/// any one state-changing system call by any one thread (strace counts per
/// system call and per thread; `None`: never, only counting). Returns
/// whether it was killed, and the most calls of one system call one thread
/// made.
fn run_traced(command: &[String], k: Option<u64>, log: &Path) -> (bool, u64) {
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-o"]).arg(log);
    strace.arg(format!("--trace={STATE_CHANGES}"));
    if let Some(k) = k {
        strace.arg(format!("--inject={STATE_CHANGES}:signal=KILL:when={k}"));
    }
    let status = strace
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("strace runs");
    let killed = status.signal() == Some(libc::SIGKILL) || status.code() == Some(128 + 9);
    assert!(
        killed || status.success(),
        "sync failed without a kill: {status}"
    );
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.contains("resumed>")) {
        let mut words = line.splitn(2, ' ');
        let (Some(pid), Some(call)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some((name, _)) = call.trim_start().split_once('(') {
            *counts.entry((pid, name)).or_default() += 1;
        }
    }
    (killed, counts.values().copied().max().unwrap_or(0))
}

/// Inode numbers of the data files (logs and hash indexes) of the store's
/// published versions: a version downloaded again would have new ones.
fn data_inodes(store: &Path) -> BTreeMap<PathBuf, u64> {
    let mut found = BTreeMap::new();
    for db in std::fs::read_dir(store.join("data")).unwrap() {
        for version in std::fs::read_dir(db.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(version.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if ext == "spl" || ext == "spi" {
                    let rel = path.strip_prefix(store).unwrap().to_path_buf();
                    found.insert(rel, std::fs::metadata(&path).unwrap().ino());
                }
            }
        }
    }
    found
}

/// Every value of every database, as an engine serves them.
async fn everything(engine: &Engine) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    let mut all = BTreeMap::new();
    for db in engine.catalog().database_names() {
        let Some(v) = engine.catalog().current(&db) else {
            continue;
        };
        for ordinal in 0..v.keys().key_count() {
            let key = v.keys().key_at(ordinal).unwrap().to_vec();
            let value = v.get(&key).unwrap().expect("listed key has a value");
            all.insert((db.clone(), key), value.into_owned());
        }
    }
    all
}

/// What a fresh load of `source` serves: the oracle.
fn reference(source: &Path, dir: &Path) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    let store = dir.join("reference-store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = Engine::start(config(source, &store)).await.unwrap();
        engine.ready().await;
        let all = everything(&engine).await;
        engine.shutdown().await;
        all
    })
}

/// Starts an engine on `store` and checks that it serves every value of
/// `expected` from the store as it is, finishes the migration, and leaves
/// the store at the current format with nothing under `tmp/`.
fn check_served_and_migrated(
    source: &Path,
    store: &Path,
    expected: &BTreeMap<(String, Vec<u8>), Vec<u8>>,
    context: &str,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = Engine::start(config(source, store)).await.unwrap();
        // Served at once, from the store, whatever the migration's state.
        let served = everything(&engine).await;
        assert_eq!(
            &served, expected,
            "{context}: values served before migrating"
        );
        for db in engine.catalog().status() {
            for v in &db.versions {
                assert_eq!(
                    v.origin,
                    Origin::Reused,
                    "{context}: {} loaded again",
                    db.name
                );
            }
        }
        engine.migrated().await;
        let served = everything(&engine).await;
        assert_eq!(
            &served, expected,
            "{context}: values served after migrating"
        );
        engine.shutdown().await;
    });
    let opened = LocalStore::open(store).unwrap();
    assert_eq!(opened.opened_format(), STORE_FORMAT, "{context}");
    opened.wait_for_removals();
    for (db, version) in opened.published().unwrap() {
        let dir = opened.version_dir(&db, &version);
        assert_eq!(
            Manifest::read(&dir).unwrap().format,
            MANIFEST_FORMAT,
            "{context}"
        );
        let local = LocalVersion::open(&dir).unwrap();
        assert!(
            local.key_index().has_locations() || local.key_index().is_empty(),
            "{context}: {db}/{version} key index not converted"
        );
    }
    let left: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{context}: left under tmp/: {left:?}");
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A generator for the kill points, seeded from the clock and printed, so
/// that a failing round can be replayed with `MIGRATION_SEED`.
struct Draw(u64);

impl Draw {
    fn new() -> Draw {
        let seed = std::env::var("MIGRATION_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill points: MIGRATION_SEED={seed}");
        Draw(seed)
    }

    /// Uniform in 1..=n.
    fn up_to(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (self.0 >> 33) % n.max(1)
    }
}

/// Each fixture store, killed at random state changes of its migration (at
/// least ten kills each), then started: it serves every value from the
/// store, finishes migrating, and nothing is downloaded again or left
/// behind.
#[test]
fn kill_9_at_random_steps_of_a_migration_loses_nothing() {
    if !strace_works() {
        panic!("strace is needed to inject the kills (apt-get install strace)");
    }
    let mut draw = Draw::new();
    for name in ["store-v1", "store-v1-final"] {
        let dir = tempfile::tempdir().unwrap();
        let (source, store) = copy_fixture(name, dir.path());
        let expected = reference(&source, dir.path());
        assert!(!expected.is_empty());

        // One uninterrupted run counts the state changes to draw from.
        let log = dir.path().join("strace.log");
        let (killed, most) = run_traced(&sync_command(&source, &store), None, &log);
        assert!(!killed);
        assert!(most > 0);
        check_served_and_migrated(&source, &store, &expected, &format!("{name}, whole"));

        let mut kills = 0;
        let mut rounds = 0;
        while kills < 10 {
            rounds += 1;
            assert!(
                rounds <= 40,
                "{name}: only {kills} of {rounds} runs were killed"
            );
            let (source, store) = copy_fixture(name, dir.path());
            let before = data_inodes(&store);
            let k = draw.up_to(most);
            let (killed, _) = run_traced(&sync_command(&source, &store), Some(k), &log);
            kills += killed as u32;
            let context = format!("{name}, killed at state change {k}: {killed}");
            eprintln!("{context}");
            // Whatever the moment, every published version opens.
            let opened = LocalStore::open(&store).unwrap();
            for (db, version) in opened.published().unwrap() {
                LocalVersion::open(&opened.version_dir(&db, &version))
                    .unwrap_or_else(|e| panic!("{context}: {db}/{version}: {e}"));
            }
            drop(opened);
            check_served_and_migrated(&source, &store, &expected, &context);
            // Logs and hash indexes are the ones the fixture's release wrote.
            assert_eq!(
                data_inodes(&store),
                before,
                "{context}: data files replaced"
            );
        }
    }
}

/// A store of a newer format than this binary is refused with one line
/// naming it, and left exactly as it was.
#[test]
fn a_store_of_a_newer_format_is_refused_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (source, store) = copy_fixture("store-v1-final", dir.path());
    sequinsfs::store::format::write(&store, STORE_FORMAT + 1).unwrap();
    let before = data_inodes(&store);
    let output = Command::new(env!("CARGO_BIN_EXE_sequinsfs"))
        .arg("sync")
        .arg(&source)
        .arg("--local-store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("format {}", STORE_FORMAT + 1))
            && lines[0].contains(&store.display().to_string()),
        "{stderr}"
    );
    assert_eq!(data_inodes(&store), before);
    assert_eq!(
        sequinsfs::store::format::read(&store).unwrap(),
        STORE_FORMAT + 1
    );
}

/// Through a real mount: a store of the first release is served at once in
/// its old layout, its key indexes are converted in the background with
/// the progress in `.status`, and the converted versions are switched in
/// with every value unchanged.
#[test]
fn a_migrating_store_keeps_serving_through_the_mount() {
    if !common::mount::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (source, store) = copy_fixture("store-v1", dir.path());
    let expected = reference(&source, dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = runtime
        .block_on(Engine::start(config(&source, &store)))
        .unwrap();
    let mount = common::mount::TestMount::with_refresh(
        std::sync::Arc::clone(engine.catalog()),
        engine.refresh_handle(),
        sequinsfs::fs::MountOptions::default(),
    );
    let read_all = |when: &str| {
        let mut served = BTreeMap::new();
        for db in ["baby-names", "colors", "big-values"] {
            for (key, path) in common::mount::walk_keys(&mount.path().join(db)) {
                served.insert((db.to_string(), key), common::mount::read(&path));
            }
        }
        assert_eq!(
            served, expected,
            "values through the mount {when} the conversion"
        );
    };
    read_all("during or before");
    runtime.block_on(engine.migrated());
    read_all("after");
    let status: serde_json::Value =
        serde_json::from_slice(&common::mount::read(&mount.path().join(".status"))).unwrap();
    assert_eq!(status["store"]["format"], STORE_FORMAT);
    assert_eq!(status["store"]["migrated_from"], 1);
    assert!(status["store"].get("migration").is_none(), "{status}");
    for db in status["databases"].as_array().unwrap() {
        assert_eq!(db["versions"][0]["origin"], "reused", "{db}");
    }
    mount.unmount();
    runtime.block_on(engine.shutdown());
    let store = LocalStore::open(&store).unwrap();
    let local = LocalVersion::open(&store.version_dir("baby-names", "1")).unwrap();
    assert!(local.key_index().has_locations());
}
