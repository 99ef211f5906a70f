//! The source root on local disk: a real directory tree and the sequins
//! fixture roots.

mod common;

use std::io::Read;
use std::path::Path;

use sequinsfs::source::{Source, SourceError, SourceOptions};

fn write(root: &Path, relative: &str, data: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn read_blocking(
    source: &Source,
    file: &sequinsfs::source::SourceFile,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    source
        .open_read(file)
        .map_err(std::io::Error::other)?
        .read_to_end(&mut data)?;
    Ok(data)
}

#[tokio::test]
async fn directory_tree_follows_the_layout_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "stray.sequencefile", b"ignored");
    write(root, "db/1/part-00000", b"first");
    write(root, "db/1/part-00001", b"second");
    write(root, "db/1/_SUCCESS", b"");
    write(root, "db/1/.part-00000.crc", b"");
    write(root, "db/1/sub/part-9", b"not data");
    write(root, "db/10/part-00000", b"ten");
    write(root, "db/{ invalid_version }/part-00000", b"x");
    write(root, "db/2/part 100%.spl", b"odd name");
    write(root, "bad.db/1/part-00000", b"x");
    std::fs::create_dir_all(root.join("empty-db")).unwrap();
    std::fs::create_dir_all(root.join("db/3")).unwrap();

    let source = Source::open(root.to_str().unwrap(), SourceOptions::default()).unwrap();
    assert!(source.is_local());
    assert_eq!(source.list_databases().await.unwrap(), ["db", "empty-db"]);
    assert_eq!(
        source.list_versions("db").await.unwrap(),
        ["1", "10", "2", "3"]
    );
    assert!(source.list_versions("empty-db").await.unwrap().is_empty());

    let files = source.list_files("db", "1").await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["part-00000", "part-00001"]);
    assert_eq!(read_blocking(&source, &files[1]).unwrap(), b"second");
    assert_eq!(
        source.display_file(&files[0]),
        format!("{}/db/1/part-00000", root.display())
    );

    // Names with characters object_store encodes come back as on disk.
    let odd = source.list_files("db", "2").await.unwrap();
    assert_eq!(odd[0].name, "part 100%.spl");
    assert_eq!(read_blocking(&source, &odd[0]).unwrap(), b"odd name");

    assert!(source.list_files("db", "3").await.unwrap().is_empty());

    let with_success = Source::open(
        &format!("file://{}", root.display()),
        SourceOptions {
            require_success_file: true,
            ..SourceOptions::default()
        },
    )
    .unwrap();
    assert_eq!(with_success.list_versions("db").await.unwrap(), ["1"]);
}

#[tokio::test]
async fn download_copies_and_pins_the_listed_file() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    write(dir.path(), "src/db/1/part-00000", &data);
    let source = Source::open(
        dir.path().join("src").to_str().unwrap(),
        SourceOptions::default(),
    )
    .unwrap();
    let files = source.list_files("db", "1").await.unwrap();
    let dest = dir.path().join("copy");
    let total = std::sync::atomic::AtomicU64::new(0);
    let n = source
        .download(&files[0], &dest, &|delta| {
            total.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(total.into_inner(), data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // Replace the file (new inode, same size): reading the old listing fails.
    let replacement = dir.path().join("replacement");
    std::fs::write(&replacement, vec![0u8; data.len()]).unwrap();
    std::fs::rename(&replacement, dir.path().join("src/db/1/part-00000")).unwrap();
    let second = dir.path().join("second");
    let err = source
        .download(&files[0], &second, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Changed { .. }), "{err}");
    assert!(err.to_string().contains("db/1/part-00000"), "{err}");
    assert!(!second.exists());

    std::fs::remove_file(dir.path().join("src/db/1/part-00000")).unwrap();
    let err = read_blocking(&source, &files[0]).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn missing_local_root_is_a_clear_error() {
    let err = Source::open("/nonexistent/sequinsfs/root", SourceOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/sequinsfs/root"),
        "{err}"
    );
}

#[tokio::test]
async fn sequins_fixture_roots() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let healthy = Source::open(
        fixtures.join("sequins/healthy").to_str().unwrap(),
        SourceOptions::default(),
    )
    .unwrap();
    assert_eq!(healthy.list_databases().await.unwrap(), ["baby-names"]);
    assert_eq!(healthy.list_versions("baby-names").await.unwrap(), ["1"]);
    let files = healthy.list_files("baby-names", "1").await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "part-00000",
            "part-00001",
            "part-00002",
            "part-00003",
            "part-00004"
        ]
    );
    for file in &files {
        let data = read_blocking(&healthy, file).unwrap();
        assert_eq!(data.len() as u64, file.size);
        assert!(data.starts_with(b"SEQ"), "{} is a SequenceFile", file.name);
    }
    // sequins' backend test: no `_SUCCESS` in the fixture, so none qualify.
    let strict = Source::open(
        fixtures.join("sequins/healthy").to_str().unwrap(),
        SourceOptions {
            require_success_file: true,
            ..SourceOptions::default()
        },
    )
    .unwrap();
    assert!(strict.list_versions("baby-names").await.unwrap().is_empty());

    let partial = Source::open(
        fixtures.join("sequins/partially_healthy").to_str().unwrap(),
        SourceOptions::default(),
    )
    .unwrap();
    assert_eq!(
        partial.list_databases().await.unwrap(),
        ["baby-names", "baby-names-bad"]
    );
    let unhealthy = Source::open(
        fixtures.join("sequins/unhealthy").to_str().unwrap(),
        SourceOptions::default(),
    )
    .unwrap();
    assert_eq!(
        unhealthy.list_databases().await.unwrap(),
        ["baby-names-bad"]
    );
    assert_eq!(
        unhealthy
            .list_files("baby-names-bad", "1")
            .await
            .unwrap()
            .len(),
        1
    );
}
