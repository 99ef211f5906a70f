//! The fixture corpus through a cluster: every fixture file is a database
//! (one partition each for SequenceFiles, as many as its tables for
//! Sparkey), served by three nodes with replication 2, so one node holds
//! no partition at all and answers every key by proxy. The corpus check
//! reads every key over HTTP from every node.

mod common;

use std::process::Command;

use common::cluster::{start_cluster, stop_all};
use common::zk::ZkServer;

#[test]
fn every_node_answers_every_fixture_key() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let tool = fixtures.join("../tools/corpus-check");
    assert!(
        tool.is_file(),
        "{} missing beside the fixtures",
        tool.display()
    );
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c");
    let built = Command::new("python3")
        .arg(&tool)
        .args(["build", "all"])
        .arg(&corpus)
        .env("SEQUINSFS_FIXTURES", &fixtures)
        .status()
        .unwrap();
    assert!(built.success(), "corpus-check build failed");

    let source = corpus.join("root");
    let mut nodes = start_cluster(dir.path(), &zk, &source, &["1", "2", "3"], "");
    for (i, node) in nodes.iter().enumerate() {
        let out = Command::new("python3")
            .arg(&tool)
            .arg("http")
            .arg(format!("http://{}", node.addr))
            .arg(&corpus)
            .env("SEQUINSFS_FIXTURES", &fixtures)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("node {}: {}", i + 1, text.lines().last().unwrap_or(""));
        assert!(
            out.status.success(),
            "node {}: corpus check failed:\n{text}{}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop_all(&mut nodes);
}
