//! A cluster through a ZooKeeper outage longer than its sessions: every
//! node keeps answering every key over HTTP and through its mount (its own
//! partitions and, by proxy, the others', from the peers it knew), no
//! process exits, and once ZooKeeper is back the nodes agree on a new
//! version as before.

mod common;

use std::time::Duration;

use common::cluster::{
    ReadTarget, Readers, start_mounted_cluster, stop_all, upgrade_all, words, write_words,
};
use common::zk::ZkServer;

/// How long ZooKeeper stays down: six times the nodes' session timeout.
const OUTAGE: Duration = Duration::from_secs(60);

#[test]
fn a_zookeeper_outage_fails_no_read_and_the_cluster_agrees_after_it() {
    if !common::mount::can_mount() {
        return;
    }
    let Some(mut zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write_words(&source, "1");
    let mut nodes = start_mounted_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2", "3"],
        "min_replication = 2\n",
    );

    // Readers on every node, over HTTP and through the mount (every read
    // of a peer's key asks the peer), all through the outage.
    let readers = Readers::start_on(&ReadTarget::all(&nodes), "words", &words("1"));

    zk.stop();
    // The outage itself: nothing to wait for but time.
    std::thread::sleep(OUTAGE);
    for node in &mut nodes {
        assert!(node.is_running(), "a node exited during the outage");
    }
    zk.start();
    let (reads, failures) = readers.finish();
    eprintln!("{reads} reads during the outage, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "failed reads: {:?}",
        &failures[..failures.len().min(10)]
    );

    // After the outage: sessions re-created, a new version agreed on.
    for node in &nodes {
        node.wait_log("ZooKeeper session established");
    }
    upgrade_all(&nodes, &source, "2");
    stop_all(&mut nodes);
}
