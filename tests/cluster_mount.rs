//! The mount of a cluster node, with real `sequinsfs mount` processes, real
//! FUSE mounts and a real ZooKeeper: every node's mount lists every key of
//! a version in order and reads every value bit-exact, its own partitions'
//! from its store and the others' from peers; versions switch together; a
//! killed peer costs no read (its partitions' other replicas answer); a
//! restarted node serves its mount from its store, key directory included.

mod common;

use common::cluster::{
    WordsCluster, assert_mount_serves, assert_serves, mount_status, stop_all, wait_switched, words,
    write_words,
};

#[test]
fn every_mount_lists_and_reads_every_key_and_versions_switch_together() {
    let Some(cluster) = WordsCluster::new() else {
        return;
    };
    let source = &cluster.source;
    let mut nodes = cluster.mounted(&["1", "2", "3"], "");
    for (i, node) in nodes.iter().enumerate() {
        // Replication 2 over 3 nodes: each holds 4 of the 6 partitions, so
        // a third of the keys are read from peers.
        let held = node.held("words", "1");
        assert_eq!(held.len(), 4);
        // `.status` names the node, its peers and its partitions.
        let status = mount_status(node);
        assert_eq!(status["cluster"]["shard_id"], format!("{}", i + 1));
        assert_eq!(status["cluster"]["session"], "connected");
        assert_eq!(status["cluster"]["peers"].as_array().unwrap().len(), 2);
        let version = &status["databases"][0]["versions"][0];
        assert_eq!(version["held_partitions"], serde_json::json!(held));
        assert_mount_serves(node, &words("1"));
        // Warm now: the same again, from the kernel's caches.
        assert_mount_serves(node, &words("1"));
        assert_serves(node, &words("1"));
    }
    write_words(source, "2");
    for node in &nodes {
        node.refresh();
    }
    for node in &nodes {
        wait_switched(node, "2");
        assert_mount_serves(node, &words("2"));
    }
    stop_all(&mut nodes);
}

#[test]
fn a_mount_reads_through_surviving_replicas_and_restarts_from_its_store() {
    let Some(cluster) = WordsCluster::new() else {
        return;
    };
    let mut nodes = cluster.mounted(&["1", "2", "3"], "");
    // Killed before any key was read: every remote read below is cold,
    // and a third of them name the dead node first or second.
    nodes[2].kill();
    for node in &nodes[..2] {
        assert_mount_serves(node, &words("1"));
    }
    // A restarted node serves its store at once, key directory included:
    // nothing is listed from peers again.
    nodes[0].stop();
    nodes[0].restart();
    let line = nodes[0].wait_log("serving version from the local store");
    assert!(line.contains("db=\"words\""), "{line}");
    nodes[0].wait_serving();
    assert_mount_serves(&nodes[0], &words("1"));
    stop_all(&mut nodes[..2]);
}
