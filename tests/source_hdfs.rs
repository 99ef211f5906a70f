//! The source root on a real HDFS cluster, when one is configured:
//! `SEQUINSFS_HDFS_URI=hdfs://namenode:port/path` pointing at a source root
//! (`<db>/<version>/<files>`), and a build with `--features hdfs`.

#[tokio::test]
async fn lists_and_reads_a_real_hdfs_root() {
    let Ok(uri) = std::env::var("SEQUINSFS_HDFS_URI") else {
        eprintln!("skipped: SEQUINSFS_HDFS_URI not set");
        return;
    };
    if !cfg!(feature = "hdfs") {
        panic!("SEQUINSFS_HDFS_URI is set but the hdfs feature is not enabled");
    }
    use sequinsfs::source::{Source, SourceOptions};
    let source = Source::open(&uri, SourceOptions::default()).unwrap();
    let dbs = source.list_databases().await.unwrap();
    assert!(!dbs.is_empty(), "{uri} has no databases");
    let versions = source.list_versions(&dbs[0]).await.unwrap();
    let newest = versions.last().expect("the first database has a version");
    let files = source.list_files(&dbs[0], newest).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for file in &files {
        let n = source
            .download(file, &dir.path().join(&file.name), &|_| {})
            .await
            .unwrap();
        assert_eq!(n, file.size);
    }
    eprintln!(
        "{}: {} files of {} downloaded",
        source.display_path(&dbs[0], Some(newest)),
        files.len(),
        dbs[0]
    );
}
