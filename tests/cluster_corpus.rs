//! The fixture corpus through a cluster: every fixture file is a database
//! (one partition each for SequenceFiles, as many as its tables for
//! Sparkey), served by three nodes with replication 2, so one node holds
//! no partition at all and answers every key by proxy. The corpus check
//! reads every key through every node's mount and over its HTTP sidecar.

mod common;

use std::process::Command;

use common::cluster::{start_mounted_cluster, stop_all};
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
    if !common::mount::can_mount() {
        return;
    }
    let mut nodes = start_mounted_cluster(dir.path(), &zk, &source, &["1", "2", "3"], "");
    for (i, node) in nodes.iter().enumerate() {
        let mountpoint = node.mountpoint.clone().expect("mounted");
        let through = [
            ("mount", mountpoint.display().to_string()),
            ("http", format!("http://{}", node.addr)),
        ];
        for (how, target) in through {
            let out = Command::new("python3")
                .arg(&tool)
                .arg(how)
                .arg(&target)
                .arg(&corpus)
                .env("SEQUINSFS_FIXTURES", &fixtures)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            eprintln!(
                "node {} ({how}): {}",
                i + 1,
                text.lines().last().unwrap_or("")
            );
            assert!(
                out.status.success(),
                "node {} ({how}): corpus check failed:\n{text}{}",
                i + 1,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    stop_all(&mut nodes);
}
