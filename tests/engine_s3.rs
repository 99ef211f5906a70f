//! The engine over a real S3-compatible server (moto): the sequins fixture
//! roots, a bucket-root source, listings past 1000 objects, version `1`
//! beside version `10`, and a `_SYMLINK` redirect.

mod common;

use std::path::Path;
use std::time::Duration;

use common::data::{copy_dir, write_seqfile_version};
use common::s3::{MotoServer, upload_dir};
use sequinsfs::catalog::VersionState;
use sequinsfs::config::Config;
use sequinsfs::engine::Engine;

fn config(server: &MotoServer, source: &str, store: &Path) -> Config {
    Config {
        source: source.to_string(),
        local_store: store.to_path_buf(),
        s3: server.s3_config(),
        version_grace_period: Duration::ZERO,
        ..Config::default()
    }
}

async fn upload(server: &MotoServer, bucket: &str, prefix: &str, dir: &Path) {
    let store = server.store(bucket);
    upload_dir(store.as_ref(), dir, prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequins_fixture_roots_over_s3() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let Some(server) = MotoServer::start() else {
        return;
    };
    server.create_bucket("roots");
    for root in ["healthy", "partially_healthy", "unhealthy"] {
        upload(&server, "roots", root, &fixtures.join("sequins").join(root)).await;
    }
    upload(
        &server,
        "roots",
        "sparkey/names/1",
        &fixtures.join("sequins/sparkey"),
    )
    .await;
    let store_dir = tempfile::tempdir().unwrap();

    // healthy: all 64 keys at version 1.
    let engine = Engine::start(config(
        &server,
        "s3://roots/healthy",
        &store_dir.path().join("healthy"),
    ))
    .await
    .unwrap();
    engine.refresh_now().await;
    let v = engine
        .catalog()
        .current("baby-names")
        .expect("baby-names served");
    assert_eq!(v.name(), "1");
    assert_eq!(v.keys().key_count(), 64);
    assert_eq!(v.get(b"1881/boy").unwrap().as_deref(), Some(&b"John"[..]));
    assert_eq!(v.source_path(), "s3://roots/healthy/baby-names/1");
    let local = tempfile::tempdir().unwrap();
    copy_dir(&fixtures.join("sequins/healthy"), local.path());
    for part in std::fs::read_dir(local.path().join("baby-names/1")).unwrap() {
        for (k, value) in common::data::read_seqfile_pairs(&part.unwrap().path()) {
            assert_eq!(v.get(&k).unwrap().as_deref(), Some(value.as_slice()));
        }
    }
    drop(v);
    engine.shutdown().await;

    // partially_healthy: the bad version is ERROR, the good one serves.
    let engine = Engine::start(config(
        &server,
        "s3://roots/partially_healthy",
        &store_dir.path().join("partial"),
    ))
    .await
    .unwrap();
    engine.refresh_now().await;
    assert!(engine.catalog().current("baby-names").is_some());
    assert!(engine.catalog().current("baby-names-bad").is_none());
    let bad = engine.catalog().database_status("baby-names-bad").unwrap();
    assert_eq!(bad.versions[0].state, VersionState::Error);
    engine.shutdown().await;

    // unhealthy: starts, serves nothing.
    let engine = Engine::start(config(
        &server,
        "s3://roots/unhealthy",
        &store_dir.path().join("unhealthy"),
    ))
    .await
    .unwrap();
    engine.refresh_now().await;
    assert!(engine.catalog().served().is_empty());
    engine.shutdown().await;

    // The Sparkey fixture as a database.
    let engine = Engine::start(config(
        &server,
        "s3://roots/sparkey",
        &store_dir.path().join("sparkey"),
    ))
    .await
    .unwrap();
    engine.refresh_now().await;
    let v = engine.catalog().current("names").expect("names served");
    assert_eq!(v.get(b"Alice").unwrap().as_deref(), Some(&b"Practice"[..]));
    assert_eq!(v.get(b"Dylan").unwrap().as_deref(), Some(&b"Thomas"[..]));
    assert_eq!(v.get(b"Bob").unwrap(), None);
    drop(v);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_root_listings_past_1000_and_version_1_beside_10() {
    let Some(server) = MotoServer::start() else {
        return;
    };
    server.create_bucket("whole");
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();

    // 1003 files in one version (1003 partitions, one key each): the file
    // listing pages past 1000 objects.
    let files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..1003)
        .map(|i| vec![(format!("k{i}").into_bytes(), format!("v{i}").into_bytes())])
        .collect();
    write_seqfile_version(root, "wide", "1", &files);
    // 1002 versions of one database: the version listing pages past 1000
    // common prefixes, and the greatest name is the target.
    for i in 0..1002 {
        let dir = root.join(format!("many/v{i:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    }
    write_seqfile_version(
        root,
        "many",
        "v1001",
        &[vec![(b"k".to_vec(), b"last".to_vec())]],
    );
    std::fs::write(root.join("many/v1001/_SUCCESS"), b"").unwrap();
    // Version 1 (complete) beside version 10 (no _SUCCESS yet): listing
    // version 1 must not pick up version 10's files.
    write_seqfile_version(root, "ten", "1", &[vec![(b"a".to_vec(), b"one".to_vec())]]);
    std::fs::write(root.join("ten/1/_SUCCESS"), b"").unwrap();
    write_seqfile_version(
        root,
        "ten",
        "10",
        &[
            vec![(b"a".to_vec(), b"ten".to_vec())],
            vec![(b"b".to_vec(), b"ten".to_vec())],
        ],
    );
    std::fs::write(root.join("wide/1/_SUCCESS"), b"").unwrap();
    // sequins' `_SYMLINK`: version 2 (no `_SUCCESS` of its own) redirects
    // to the complete version 1.
    write_seqfile_version(
        root,
        "linked",
        "1",
        &[vec![(b"k".to_vec(), b"one".to_vec())]],
    );
    std::fs::write(root.join("linked/1/_SUCCESS"), b"").unwrap();
    std::fs::create_dir_all(root.join("linked/2")).unwrap();
    std::fs::write(root.join("linked/2/_SYMLINK"), b"1\n").unwrap();
    upload(&server, "whole", "", root).await;

    let store_dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, "s3://whole", store_dir.path());
    cfg.require_success_file = true;
    let engine = Engine::start(cfg).await.unwrap();
    engine.refresh_now().await;

    let wide = engine.catalog().current("wide").expect("wide served");
    assert_eq!(wide.num_partitions(), 1003);
    assert_eq!(wide.keys().key_count(), 1003);
    for i in [0, 500, 999, 1000, 1002] {
        let key = format!("k{i}");
        assert_eq!(
            wide.get(key.as_bytes()).unwrap().as_deref(),
            Some(format!("v{i}").as_bytes())
        );
    }
    let many = engine.catalog().current("many").expect("many served");
    assert_eq!(many.name(), "v1001");
    assert_eq!(many.get(b"k").unwrap().as_deref(), Some(&b"last"[..]));
    let ten = engine.catalog().current("ten").expect("ten served");
    assert_eq!(ten.name(), "1");
    assert_eq!(ten.num_partitions(), 1, "version 10's files leaked into 1");
    assert_eq!(ten.get(b"a").unwrap().as_deref(), Some(&b"one"[..]));
    let linked = engine.catalog().current("linked").expect("linked served");
    assert_eq!(linked.name(), "2");
    assert_eq!(linked.get(b"k").unwrap().as_deref(), Some(&b"one"[..]));
    drop((wide, many, ten, linked));

    // Version 10 completes: the switch happens over S3 too.
    let store = server.store("whole");
    object_store::ObjectStoreExt::put(
        store.as_ref(),
        &object_store::path::Path::from("ten/10/_SUCCESS"),
        Vec::new().into(),
    )
    .await
    .unwrap();
    engine.refresh_now().await;
    let ten = engine.catalog().current("ten").unwrap();
    assert_eq!(ten.name(), "10");
    assert_eq!(ten.get(b"b").unwrap().as_deref(), Some(&b"ten"[..]));
    drop(ten);
    engine.shutdown().await;
}
