//! A database's state in the source root (`<db>/_state.json`), changed with
//! `sequinsfs db` and honoured by a running daemon at each refresh, through
//! a real mount and the HTTP sidecar: offline hides the database (404 over HTTP) while keeping its
//! data, so online is instant; pin serves an older version; unpin rolls
//! forward again; a database removed from the source goes away. Readers of
//! another database run throughout and no read of theirs fails.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::data::write_seqfile_version;
use common::engine::TestEngine;
use common::{TestMount, TestServer, can_mount};
use sequinsfs::fs::MountOptions;

const KEYS: usize = 50;

fn pairs(version: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..KEYS)
        .map(|k| {
            (
                format!("k{k:02}").into_bytes(),
                format!("{version}:{k}").into_bytes(),
            )
        })
        .collect()
}

/// `sequinsfs db ARGS... SOURCE/<db>`, which must succeed.
fn db_command(source: &Path, db: &str, args: &[&str]) {
    let target = source.join(db);
    let mut all: Vec<&str> = vec!["db"];
    all.extend_from_slice(args);
    let target = target.to_str().unwrap();
    all.push(target);
    let (code, stdout, stderr) = common::cli::run(&all);
    assert_eq!(code, 0, "sequinsfs {all:?}: {stdout}{stderr}");
}

fn write_state(source: &Path, db: &str, json: &str) {
    // Written aside and renamed, as `sequinsfs db` does on a local root.
    let dir = source.join(db);
    std::fs::write(dir.join(".state.tmp"), json).unwrap();
    std::fs::rename(dir.join(".state.tmp"), dir.join("_state.json")).unwrap();
}

fn root_names(mount: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(mount)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn status(mount: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(mount.join(".status")).unwrap()).unwrap()
}

fn database<'a>(status: &'a serde_json::Value, db: &str) -> &'a serde_json::Value {
    status["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == db)
        .unwrap_or_else(|| panic!("{db} in .status"))
}

#[test]
fn offline_online_pin_unpin_and_removal_through_mount_and_http() {
    if !can_mount() {
        return;
    }
    let loaded = TestEngine::start(
        |src| {
            write_seqfile_version(src, "words", "1", &[pairs("1")]);
            write_seqfile_version(src, "words", "2", &[pairs("2")]);
            write_seqfile_version(src, "other", "1", &[pairs("o1")]);
        },
        Duration::from_secs(60),
    );
    let engine = loaded.engine();
    let catalog = Arc::clone(engine.catalog());
    let mount = TestMount::with_refresh(
        Arc::clone(&catalog),
        engine.refresh_handle(),
        MountOptions::default(),
    );
    let http = TestServer::start(Arc::clone(&catalog));
    let refresh = || loaded.runtime.block_on(engine.refresh_now());
    let mnt = mount.path().to_path_buf();
    assert_eq!(root_names(&mnt), ["other", "words"]);
    assert_eq!(std::fs::read(mnt.join("words/k01")).unwrap(), b"2:1");

    // Readers of `other`, which stays online, through the mount and HTTP.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
            let (mnt, addr) = (mnt.clone(), http.addr);
            std::thread::spawn(move || {
                let mut conn = common::Conn::connect(addr);
                let mut k = t;
                while !stop.load(Ordering::Relaxed) {
                    k = (k * 7 + 3) % KEYS;
                    let want = format!("o1:{k}").into_bytes();
                    let key = format!("k{k:02}");
                    match std::fs::read(mnt.join("other").join(&key)) {
                        Ok(v) if v == want => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("mount {key}: {other:?}")),
                    }
                    match conn.request("GET", &format!("/other/{key}"), &[]) {
                        Ok(r) if r.status == 200 && r.body == want => {}
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("http {key}: {}", r.status)),
                        Err(e) => failures.lock().unwrap().push(format!("http {key}: {e}")),
                    }
                    reads.fetch_add(2, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Offline: gone from the mount and 404 over HTTP; the data stays.
    db_command(&loaded.source, "words", &["offline"]);
    refresh();
    assert_eq!(root_names(&mnt), ["other"]);
    assert!(std::fs::metadata(mnt.join("words/k01")).is_err());
    assert_eq!(http.get("/words/k01").status, 404);
    let doc = status(&mnt);
    let words = database(&doc, "words");
    assert_eq!(words["online"], false);
    assert_eq!(words["current"], serde_json::Value::Null);
    assert_eq!(words["state"]["last_change"], "offline");
    assert!(words["state"]["changed_by"].as_str().unwrap().contains('@'));

    // Online: back at once, without a load.
    db_command(&loaded.source, "words", &["online"]);
    let report = refresh();
    assert!(
        report.builds_started.is_empty(),
        "{:?}",
        report.builds_started
    );
    assert_eq!(root_names(&mnt), ["other", "words"]);
    assert_eq!(std::fs::read(mnt.join("words/k01")).unwrap(), b"2:1");
    assert_eq!(http.get("/words/k01").body, b"2:1");

    // Pinned to the older version: loaded and switched to.
    db_command(&loaded.source, "words", &["pin", "1"]);
    refresh();
    assert_eq!(
        std::fs::read_to_string(mnt.join("words/.version"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(std::fs::read(mnt.join("words/k01")).unwrap(), b"1:1");
    let reply = http.get("/words/k01");
    assert_eq!(reply.body, b"1:1");
    assert_eq!(reply.header("x-sequins-version"), Some("1"));
    assert_eq!(database(&status(&mnt), "words")["state"]["pinned"], "1");
    // A newer version does not move a pinned database.
    write_seqfile_version(&loaded.source, "words", "3", &[pairs("3")]);
    let report = refresh();
    assert!(
        report.builds_started.is_empty(),
        "{:?}",
        report.builds_started
    );
    assert_eq!(std::fs::read(mnt.join("words/k01")).unwrap(), b"1:1");

    // Unpinned: rolls forward to the newest.
    db_command(&loaded.source, "words", &["unpin"]);
    refresh();
    assert_eq!(std::fs::read(mnt.join("words/k01")).unwrap(), b"3:1");

    // Pinned to a version the source lacks: nothing changes.
    write_state(&loaded.source, "words", r#"{"pinned": "9"}"#);
    refresh();
    assert_eq!(std::fs::read(mnt.join("words/k01")).unwrap(), b"3:1");

    // Deleted from the source: gone from the mount and HTTP.
    db_command(&loaded.source, "words", &["delete", "--force"]);
    assert!(!loaded.source.join("words").join("3").exists());
    refresh();
    assert_eq!(root_names(&mnt), ["other"]);
    assert_eq!(http.get("/words/k01").status, 404);

    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "{} reads of the database that stayed online, {} failed",
        reads.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(10)]
    );
}

/// A damaged state object is reported and the last state read stays in
/// force.
#[test]
fn a_damaged_state_keeps_the_last_one() {
    let loaded = TestEngine::start(
        |src| write_seqfile_version(src, "words", "1", &[pairs("1")]),
        Duration::from_secs(60),
    );
    let engine = loaded.engine();
    write_state(&loaded.source, "words", r#"{"online": false}"#);
    loaded.runtime.block_on(engine.refresh_now());
    assert!(engine.catalog().current("words").is_none());
    write_state(&loaded.source, "words", "{ not json");
    loaded.runtime.block_on(engine.refresh_now());
    assert!(engine.catalog().current("words").is_none(), "still offline");
    write_state(&loaded.source, "words", r#"{"online": true}"#);
    loaded.runtime.block_on(engine.refresh_now());
    assert!(engine.catalog().current("words").is_some());
}

/// A restart serves the pinned version from the local store, not a newer
/// one the store still holds, before the source is even read.
#[test]
fn a_restart_serves_the_pinned_version() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write_seqfile_version(&source, "words", "1", &[pairs("1")]);
    write_seqfile_version(&source, "words", "2", &[pairs("2")]);
    let store = dir.path().join("store");
    let at = |source: &Path| {
        let (source, store) = (source.to_path_buf(), store.clone());
        move |config: &mut sequinsfs::config::Config| {
            config.source = source.display().to_string();
            config.local_store = store;
        }
    };
    let first = TestEngine::start_with(|_| {}, Duration::from_secs(60), at(&source));
    assert_eq!(
        first.engine().catalog().current("words").unwrap().name(),
        "2"
    );
    write_state(&source, "words", r#"{"pinned": "1"}"#);
    first.runtime.block_on(first.engine().refresh_now());
    assert_eq!(
        first.engine().catalog().current("words").unwrap().name(),
        "1"
    );
    drop(first);

    // Restarted over a source that lists nothing (so nothing is read from
    // it): what is served comes from the store alone.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let second = TestEngine::start_with(|_| {}, Duration::from_secs(60), at(&empty));
    let current = second.engine().catalog().current("words").unwrap();
    assert_eq!(current.name(), "1");
    assert_eq!(current.get(b"k01").unwrap().unwrap().as_ref(), b"1:1");
}
