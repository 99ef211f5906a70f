//! The source root on a real S3 server (moto, started by the test; see
//! `common/s3.rs`). One server serves all scenarios, each in its own bucket,
//! so the server is started once and always stopped.

mod common;

use std::io::Read;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sequinsfs::source::{Source, SourceError, SourceFile, SourceOptions};

use common::s3::MotoServer;

fn options(server: &MotoServer) -> SourceOptions {
    SourceOptions {
        s3: server.s3_config(),
        ..SourceOptions::default()
    }
}

async fn put(store: &dyn ObjectStore, key: &str, data: impl Into<Vec<u8>>) {
    let data: Vec<u8> = data.into();
    store
        .put(&ObjectPath::parse(key).unwrap(), data.into())
        .await
        .unwrap();
}

async fn put_many(store: &Arc<dyn ObjectStore>, keys: Vec<String>) {
    futures::stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            async move { put(store.as_ref(), &key, b"x".to_vec()).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

fn big_data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// A source-root layout with every naming case, under `prefix`.
async fn upload_layout(store: &dyn ObjectStore, prefix: &str) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}/{k}")
        }
    };
    put(store, &key("stray-object"), "not a db").await;
    put(store, &key("db1/1/part-00000"), "zero").await;
    put(store, &key("db1/1/part-00001"), "one").await;
    put(store, &key("db1/1/_SUCCESS"), "").await;
    put(store, &key("db1/1/.hidden"), "x").await;
    put(store, &key("db1/1/nested/part-9"), "not data").await;
    put(store, &key("db1/10/part-10"), "ten").await;
    put(store, &key("db1/11/part-11"), "eleven").await;
    put(store, &key("db1/bad.version/part-0"), "x").await;
    put(store, &key("db1/stray-in-db"), "x").await;
    put(store, &key("bad.db/1/part-0"), "x").await;
    put(store, &key("db2/7/part-0"), "seven").await;
}

async fn check_layout(source: &Source) {
    assert_eq!(source.list_databases().await.unwrap(), ["db1", "db2"]);
    assert_eq!(
        source.list_versions("db1").await.unwrap(),
        ["1", "10", "11"]
    );
    let files = source.list_files("db1", "1").await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["part-00000", "part-00001"],
        "version 1 only, data only"
    );
    assert_eq!(files[0].size, 4);
    assert!(files[0].etag.is_some(), "moto lists ETags");
    let ten = source.list_files("db1", "10").await.unwrap();
    assert_eq!(ten.len(), 1);
    assert_eq!(ten[0].name, "part-10");
}

async fn read_all(source: &Source, file: &SourceFile) -> std::io::Result<Vec<u8>> {
    let (source, file) = (source.clone(), file.clone());
    tokio::task::spawn_blocking(move || {
        let mut reader = source.open_read(&file).map_err(std::io::Error::other)?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(data)
    })
    .await
    .unwrap()
}

fn source_error(error: &std::io::Error) -> &SourceError {
    SourceError::in_io(error).unwrap_or_else(|| panic!("not a SourceError: {error}"))
}

async fn prefix_and_bucket_root(server: &MotoServer) {
    server.create_bucket("layout");
    let store = server.store("layout");
    upload_layout(store.as_ref(), "some/prefix").await;
    let source = Source::open("s3://layout/some/prefix", options(server)).unwrap();
    check_layout(&source).await;
    assert_eq!(
        source.display_path("db1", Some("1")),
        "s3://layout/some/prefix/db1/1"
    );
    let strict = Source::open(
        "s3://layout/some/prefix/",
        SourceOptions {
            require_success_file: true,
            ..options(server)
        },
    )
    .unwrap();
    assert_eq!(strict.list_versions("db1").await.unwrap(), ["1"]);

    server.create_bucket("rooted");
    upload_layout(server.store("rooted").as_ref(), "").await;
    // A zero-byte "folder" object as some S3 tools create them.
    assert_eq!(server.http("PUT", "/rooted/db1/1/", b"").unwrap(), 200);
    for uri in ["s3://rooted", "s3://rooted/"] {
        let source = Source::open(uri, options(server)).unwrap();
        check_layout(&source).await;
        assert_eq!(source.display_path("db2", None), "s3://rooted/db2");
    }
}

async fn sequins_fixture(server: &MotoServer) {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    server.create_bucket("fixture");
    let store = server.store("fixture");
    common::s3::upload_dir(store.as_ref(), &fixtures.join("sequins/healthy"), "test").await;
    let source = Source::open("s3://fixture/test", options(server)).unwrap();
    assert_eq!(source.list_databases().await.unwrap(), ["baby-names"]);
    assert_eq!(source.list_versions("baby-names").await.unwrap(), ["1"]);
    let files = source.list_files("baby-names", "1").await.unwrap();
    assert_eq!(files.len(), 5);
    let local = std::fs::read(fixtures.join("sequins/healthy/baby-names/1/part-00003")).unwrap();
    assert_eq!(read_all(&source, &files[3]).await.unwrap(), local);
    assert_eq!(
        source.display_path("baby-names", Some("1")),
        "s3://fixture/test/baby-names/1"
    );
}

async fn more_than_a_thousand_entries(server: &MotoServer) {
    server.create_bucket("many");
    let store = server.store("many");
    let mut keys: Vec<String> = (0..1100).map(|i| format!("db/1/part-{i:05}")).collect();
    keys.extend((0..1100).map(|i| format!("versions/{i}/part-0")));
    put_many(&store, keys).await;
    let source = Source::open("s3://many", options(server)).unwrap();
    let files = source.list_files("db", "1").await.unwrap();
    assert_eq!(files.len(), 1100);
    assert_eq!(files[1099].name, "part-01099");
    let versions = source.list_versions("versions").await.unwrap();
    assert_eq!(versions.len(), 1100);
    assert_eq!(versions.last().map(String::as_str), Some("999"));
}

async fn reads_and_downloads(server: &MotoServer) {
    server.create_bucket("data");
    let store = server.store("data");
    let data = big_data(6 * 1024 * 1024 + 123, 1);
    put(store.as_ref(), "db/1/big", data.clone()).await;
    put(store.as_ref(), "db/1/empty", "").await;
    let source = Source::open("s3://data", options(server)).unwrap();
    let files = source.list_files("db", "1").await.unwrap();
    let (big, empty) = (&files[0], &files[1]);
    assert_eq!(big.size, data.len() as u64);
    assert!(
        read_all(&source, big).await.unwrap() == data,
        "open_read bytes"
    );
    assert_eq!(read_all(&source, empty).await.unwrap(), b"");

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big");
    let seen = std::sync::atomic::AtomicU64::new(0);
    let n = source
        .download(big, &dest, &|delta| {
            seen.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(seen.into_inner(), n);
    assert!(std::fs::read(&dest).unwrap() == data, "downloaded bytes");

    // Limited to 8 MiB/s the 6 MiB file still arrives intact (the limiter's
    // timing is tested deterministically in its unit tests).
    let limited = Source::open(
        "s3://data",
        SourceOptions {
            max_download_bandwidth_mb_per_second: 8,
            ..options(server)
        },
    )
    .unwrap();
    assert!(read_all(&limited, big).await.unwrap() == data);
}

async fn replaced_and_missing_objects(server: &MotoServer) {
    server.create_bucket("changing");
    let store = server.store("changing");
    let old = big_data(4 * 1024 * 1024, 2);
    let new = big_data(4 * 1024 * 1024, 3);
    put(store.as_ref(), "db/1/part-0", old.clone()).await;
    put(store.as_ref(), "db/1/part-1", "short").await;
    let source = Source::open("s3://changing", options(server)).unwrap();
    let files = source.list_files("db", "1").await.unwrap();

    // Replaced mid-read: either the whole old object arrives (the first
    // response carried it all) or the read fails; never a mix.
    let (reader_source, file) = (source.clone(), files[0].clone());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (replaced_tx, replaced_rx) = std::sync::mpsc::channel::<()>();
    let reader = tokio::task::spawn_blocking(move || {
        let mut reader = reader_source.open_read(&file).unwrap();
        let mut data = vec![0u8; 1024];
        reader.read_exact(&mut data).unwrap();
        started_tx.send(()).unwrap();
        replaced_rx.recv().unwrap();
        reader.read_to_end(&mut data).map(|_| data)
    });
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    put(store.as_ref(), "db/1/part-0", new.clone()).await;
    replaced_tx.send(()).unwrap();
    match reader.await.unwrap() {
        Ok(data) => assert!(data == old, "a completed read returns the old object whole"),
        Err(err) => assert!(
            matches!(source_error(&err), SourceError::Changed { .. }),
            "{err}"
        ),
    }

    // Replaced after listing: the pinned ETag makes the read fail clearly.
    let err = read_all(&source, &files[0]).await.unwrap_err();
    let err = source_error(&err);
    assert!(matches!(err, SourceError::Changed { .. }), "{err}");
    assert!(
        err.to_string().contains("s3://changing/db/1/part-0"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = source
        .download(&files[0], &dir.path().join("x"), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Changed { .. }), "{err}");

    // Deleted after listing: not found, naming the file.
    store
        .delete(&ObjectPath::parse("db/1/part-1").unwrap())
        .await
        .unwrap();
    let err = read_all(&source, &files[1]).await.unwrap_err();
    let err = source_error(&err);
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("s3://changing/db/1/part-1"),
        "{err}"
    );
    assert!(!err.is_transient());
}

/// Credentials and endpoint from the `AWS_*` environment alone: run in a
/// child process (the environment is process-wide) by
/// `credentials_from_environment`.
#[tokio::test]
#[ignore = "run in a child process by s3_source_against_moto"]
async fn child_lists_with_environment_credentials() {
    let Ok(uri) = std::env::var("SEQUINSFS_TEST_CHILD_S3_URI") else {
        eprintln!("skipped: only meaningful when started by s3_source_against_moto");
        return;
    };
    let source = Source::open(&uri, SourceOptions::default()).unwrap();
    check_layout(&source).await;
}

fn credentials_from_environment(server: &MotoServer) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_lists_with_environment_credentials",
            "--nocapture",
        ])
        .env("SEQUINSFS_TEST_CHILD_S3_URI", "s3://layout/some/prefix")
        .env("AWS_ACCESS_KEY_ID", common::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", common::s3::SECRET_KEY)
        .env("AWS_REGION", common::s3::REGION)
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_against_moto() {
    let Some(server) = MotoServer::start() else {
        return;
    };
    prefix_and_bucket_root(&server).await;
    sequins_fixture(&server).await;
    more_than_a_thousand_entries(&server).await;
    reads_and_downloads(&server).await;
    replaced_and_missing_objects(&server).await;
    let server = tokio::task::spawn_blocking(move || {
        credentials_from_environment(&server);
        server
    })
    .await
    .unwrap();
    drop(server);
}
