//! A database's state (`sequinsfs db offline|online|pin|unpin`) honoured
//! by every node of a cluster, with real mounted `sequinsfs` processes and
//! a real ZooKeeper: offline hides the database from every node's mount and
//! HTTP, online brings it back without loading anything, pin rolls every
//! node back to the pinned version together, and unpin rolls them forward.

mod common;

use common::cluster::{
    Node, WordsCluster, assert_serves, stop_all, switch_all, upgrade_all, words,
};
use common::http::Conn;

fn db_command(args: &[&str]) {
    let (code, out, err) = common::cli::run(args);
    assert_eq!(code, 0, "sequinsfs {args:?}: {out}{err}");
}

/// Whether `node` serves `words` at all, over HTTP and through its mount.
fn serves_words(node: &Node) -> (bool, bool) {
    let reply = Conn::connect(node.addr)
        .request("GET", "/words/key-0000", &[])
        .unwrap();
    let mount = node.mountpoint.as_ref().unwrap().join("words");
    (reply.status == 200, mount.exists())
}

/// Refreshes every node, waits until each logs that it applied the state,
/// and checks that it serves `words` (or not) over HTTP and its mount.
fn refresh_until(nodes: &[Node], serving: bool) {
    for node in nodes {
        node.refresh();
    }
    let line = if serving {
        "back online"
    } else {
        "taken offline"
    };
    for node in nodes {
        node.wait_log(line);
        assert_eq!(serves_words(node), (serving, serving), "{}", node.addr);
    }
}

#[test]
fn offline_online_pin_and_unpin_reach_every_node() {
    let Some(cluster) = WordsCluster::new() else {
        return;
    };
    let source = &cluster.source;
    let db = format!("{}/words", source.display());
    let mut nodes = cluster.mounted(&["1", "2", "3"], "");
    for node in &nodes {
        assert_serves(node, &words("1"));
    }

    db_command(&["db", "offline", &db]);
    refresh_until(&nodes, false);
    let reply = Conn::connect(nodes[0].addr)
        .request("GET", "/words/key-0001", &[])
        .unwrap();
    assert_eq!(reply.status, 404);

    db_command(&["db", "online", &db]);
    refresh_until(&nodes, true);
    for node in &nodes {
        assert_serves(node, &words("1"));
    }

    // Version 2 everywhere, then pinned back to 1 and unpinned again.
    upgrade_all(&nodes, source, "2");
    db_command(&["db", "pin", "1", &db]);
    switch_all(&nodes, "1");
    db_command(&["db", "unpin", &db]);
    switch_all(&nodes, "2");
    stop_all(&mut nodes);
}
