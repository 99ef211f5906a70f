//! The producer's whole path, as users run it: `sequinsfs pack` of a
//! million-record TSV, `sequinsfs publish` to a local root and to an S3
//! bucket (the moto test server), then a daemon serving it: loaded as
//! Sparkey input (no rebuild), every key bit-exact, and a sample read
//! through a real mount. The same for every interop fixture SequenceFile,
//! each packed and published as a database of its own, with every key
//! read through a mount.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::roots::Root;
use common::s3::MotoServer;
use common::{TestMount, can_mount};
use sequinsfs::config::Config;
use sequinsfs::engine::Engine;
use sequinsfs::fs::MountOptions;
use sequinsfs::store::manifest::{InputKind, Manifest};

const RECORDS: u32 = 1_000_000;

fn key(i: u32) -> String {
    format!("user-{i:07}")
}

fn value(i: u32) -> String {
    format!("{i}:{}", "v".repeat((i % 40) as usize))
}

fn write_tsv(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    // Not in key order: pack sorts.
    for n in 0..RECORDS {
        let i = ((u64::from(n) * 7_919) % u64::from(RECORDS)) as u32;
        writeln!(out, "{}\t{}", key(i), value(i)).unwrap();
    }
    out.flush().unwrap();
}

/// Publishes `packed` to `root` as `words/1`, serves the root, and checks
/// every `stride`-th key (and that the version has them all).
async fn publish_and_serve(root: &Root, packed: &Path, config: Config, stride: usize) {
    let target = format!("{}/words/1", root.uri);
    let (code, out, err) = root.run(&["publish", packed.to_str().unwrap(), &target]);
    assert_eq!(code, 0, "publish to {target}: {out}{err}");
    let store = config.local_store.clone();
    let engine = Engine::start(config).await.unwrap();
    engine.refresh_now().await;
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(store.join("data/words/1/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest.input, InputKind::Sparkey, "served as packed");
    assert_eq!(manifest.num_keys, u64::from(RECORDS));
    let version = engine.catalog().current("words").expect("served");
    // Both cores: a lookup in a debug build costs tens of microseconds.
    std::thread::scope(|scope| {
        for half in 0..2u32 {
            let version = &version;
            scope.spawn(move || {
                for i in (half..RECORDS).step_by(2 * stride) {
                    let got = version.get(key(i).as_bytes()).unwrap();
                    assert_eq!(got.as_deref(), Some(value(i).as_bytes()), "{}", key(i));
                }
            });
        }
    });
    if can_mount() {
        let catalog = Arc::clone(engine.catalog());
        tokio::task::spawn_blocking(move || {
            let mount = TestMount::with_refresh(
                Arc::clone(&catalog),
                sequinsfs::refresh::RefreshHandle::new(),
                MountOptions::default(),
            );
            for i in (0..RECORDS).step_by(997) {
                let read = std::fs::read(mount.path().join("words").join(key(i))).unwrap();
                assert_eq!(read, value(i).as_bytes(), "{} through the mount", key(i));
            }
        })
        .await
        .unwrap();
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_publish_and_serve_a_million_records() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("users.tsv");
    write_tsv(&tsv);
    let packed = dir.path().join("packed");
    let (code, out, err) = common::cli::run(&[
        "pack",
        tsv.to_str().unwrap(),
        "--out",
        packed.to_str().unwrap(),
        "--partitions",
        "4",
    ]);
    assert_eq!(code, 0, "pack: {out}{err}");

    let local = Root::local();
    let config = Config {
        source: local.uri.clone(),
        local_store: dir.path().join("store-local"),
        ..Config::default()
    };
    // Every key from the local root.
    publish_and_serve(&local, &packed, config, 1).await;

    let Some(server) = MotoServer::start() else {
        return;
    };
    let s3 = Root::s3(&server, "pipeline");
    let config = Config {
        source: s3.uri.clone(),
        local_store: dir.path().join("store-s3"),
        s3: server.s3_config(),
        ..Config::default()
    };
    // The same bytes through S3: a sample of keys is enough.
    publish_and_serve(&s3, &packed, config, 101).await;
}

/// Packs every fixture SequenceFile (all codecs and layouts Hadoop writes)
/// into a database of its own, publishes them to `root`, and checks through
/// a real mount that every key of every database reads back bit-exact, as
/// Hadoop's reader yields it (the last record of a duplicated key wins,
/// as when the SequenceFile itself is served), but for the keys no file
/// name can stand for (the empty key).
async fn publish_fixtures_and_mount(root: &Root, packed: &[(String, PathBuf)], config: Config) {
    for (db, dir) in packed {
        let target = format!("{}/{db}/1", root.uri);
        let (code, out, err) = root.run(&["publish", dir.to_str().unwrap(), &target]);
        assert_eq!(code, 0, "publish to {target}: {out}{err}");
    }
    let engine = Engine::start(config).await.unwrap();
    engine.refresh_now().await;
    let catalog = Arc::clone(engine.catalog());
    let fixtures = common::fixtures_dir().unwrap();
    let packed = packed.to_vec();
    tokio::task::spawn_blocking(move || {
        let mount = TestMount::with_refresh(
            catalog,
            sequinsfs::refresh::RefreshHandle::new(),
            MountOptions::default(),
        );
        for (db, _) in &packed {
            let want: BTreeMap<Vec<u8>, Vec<u8>> = common::data::read_seqfile_pairs(
                &fixtures.join("seqfile").join(format!("{db}.seq")),
            )
            .into_iter()
            // The empty key has no file name (docs/NAMING.md).
            .filter(|(key, _)| sequinsfs::naming::is_reachable(key))
            .collect();
            let got: BTreeMap<Vec<u8>, Vec<u8>> = common::walk_keys(&mount.path().join(db))
                .into_iter()
                .map(|(key, path)| (key, common::read(&path)))
                .collect();
            let differ: Vec<_> = want
                .keys()
                .chain(got.keys())
                .filter(|k| want.get(*k) != got.get(*k))
                .take(5)
                .map(|k| {
                    (
                        common::hex(k),
                        want.get(k).map(|v| v.len()),
                        got.get(k).map(|v| v.len()),
                    )
                })
                .collect();
            assert!(
                differ.is_empty(),
                "{db} through the mount: (key, expected length, read length): {differ:?}"
            );
        }
    })
    .await
    .unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_publish_and_mount_every_fixture_sequencefile() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = common::data::fixture_seqfiles(&fixtures);
    let mut packed = Vec::new();
    for file in &files {
        let db = file.file_stem().unwrap().to_str().unwrap().to_string();
        let out = dir.path().join("packed").join(&db);
        let (code, stdout, stderr) = common::cli::run(&[
            "pack",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--partitions",
            "3",
            "--last-wins",
        ]);
        assert_eq!(code, 0, "pack {db}: {stdout}{stderr}");
        packed.push((db, out));
    }
    let local = Root::local();
    let config = Config {
        source: local.uri.clone(),
        local_store: dir.path().join("store-local"),
        ..Config::default()
    };
    publish_fixtures_and_mount(&local, &packed, config).await;
    let Some(server) = MotoServer::start() else {
        return;
    };
    let s3 = Root::s3(&server, "fixtures");
    let config = Config {
        source: s3.uri.clone(),
        local_store: dir.path().join("store-s3"),
        s3: server.s3_config(),
        ..Config::default()
    };
    publish_fixtures_and_mount(&s3, &packed, config).await;
}
