//! A cluster through the faults sequins does not survive well, with real
//! `sequinsfs mount` processes (each with its HTTP sidecar) and a real
//! ZooKeeper: a node cut off from ZooKeeper (but not from its peers) until
//! its session expires, every node's session expiring at once, a node
//! starting while ZooKeeper is down, and a node killed under read load.
//! Readers run on every node, over HTTP and through the mount, throughout
//! and count failed reads.
//!
//! Nodes reach ZooKeeper through a [`Relay`] each, which the test cuts like
//! a network link: the server stays up and expires the sessions it stops
//! hearing from, which is what a partition does (stopping the server would
//! not: a restarted server gives every session a fresh timeout).

mod common;

use std::path::Path;

use common::cluster::{
    Node, ReadTarget, Readers, WordsCluster, assert_serves, mount_status, stop_all, upgrade_all,
    wait_peer_event, words, write_words,
};
use common::http::Conn;
use common::relay::Relay;
use common::zk::ZkServer;

/// The nodes' session timeout: short, so that a cut expires sessions soon.
const SESSION_TIMEOUT: &str = "2s";

/// Nodes with shard IDs `ids`, each reaching `zk` through a relay of its
/// own, all serving.
fn behind_relays(
    dir: &Path,
    zk: &ZkServer,
    source: &Path,
    ids: &[&str],
    extra: &str,
) -> (Vec<Relay>, Vec<Node>) {
    let relays: Vec<Relay> = ids.iter().map(|_| Relay::start(&zk.address())).collect();
    let nodes: Vec<Node> = ids
        .iter()
        .zip(&relays)
        .map(|(id, relay)| {
            Node::start_mounted_through(
                dir,
                &relay.address(),
                source,
                id,
                &format!("shard_id = \"{id}\"\n{extra}"),
                &["--zk-timeout", SESSION_TIMEOUT],
            )
        })
        .collect();
    for node in &nodes {
        node.wait_serving();
    }
    (relays, nodes)
}

/// Three nodes behind relays with readers on each; see [`readable_cluster`].
struct Readable {
    cluster: WordsCluster,
    relays: Vec<Relay>,
    nodes: Vec<Node>,
    readers: Readers,
}

/// Three nodes (R=2) behind relays, serving version 1 of `words`, with
/// readers on every node. Each partition has exactly two copies, so
/// `min_replication = 2` makes every new version need every node.
fn readable_cluster() -> Option<Readable> {
    let cluster = WordsCluster::new()?;
    let ids = ["1", "2", "3"];
    let (relays, nodes) = behind_relays(
        cluster.dir.path(),
        &cluster.zk,
        &cluster.source,
        &ids,
        "min_replication = 2\n",
    );
    let readers = Readers::start_on(&ReadTarget::all(&nodes), "words", &words("1"));
    Some(Readable {
        cluster,
        relays,
        nodes,
        readers,
    })
}

/// The end of a fault: no read failed, no node exited, and the cluster
/// agrees on a new version (which needs every node).
fn survived(scenario: &str, readers: Readers, nodes: &mut [Node], source: &Path) {
    let (reads, failures) = readers.finish();
    report(scenario, reads, &failures);
    for node in nodes.iter_mut() {
        assert!(node.is_running(), "a node exited");
    }
    upgrade_all(nodes, source, "2");
    stop_all(nodes);
}

fn report(scenario: &str, reads: u64, failures: &[String]) {
    eprintln!("{scenario}: {reads} reads, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{scenario}: failed reads: {:?}",
        &failures[..failures.len().min(10)]
    );
}

/// One node loses ZooKeeper, not its peers, for longer than its session:
/// its entries vanish for the others, who stop asking it; it keeps
/// answering every key (its partitions, and the others' by proxy to the
/// peers it knew); when the link heals it gets a new session, registers
/// its node and partitions again, and the cluster agrees on a new version
/// that needs its copies.
#[test]
fn a_node_cut_off_from_zookeeper_keeps_serving_and_rejoins() {
    let Some(Readable {
        cluster,
        relays,
        mut nodes,
        readers,
    }) = readable_cluster()
    else {
        return;
    };

    cut_off_and_rejoin(&nodes, || relays[2].cut(), || relays[2].heal());
    // Its copies count again: a version needing them is agreed on.
    survived(
        "one node cut off from ZooKeeper",
        readers,
        &mut nodes,
        &cluster.source,
    );
}

/// Cuts node 3 (of three) from ZooKeeper with `cut` until its session
/// expired and the others saw it go, then heals the link with `heal` and
/// waits until it registered again and the others saw it back.
fn cut_off_and_rejoin(nodes: &[Node], cut: impl FnOnce(), heal: impl FnOnce()) {
    cut();
    nodes[2].wait_log("lost the connection to ZooKeeper");
    // Its session expires: the others see it go.
    wait_peer_event(&nodes[0], "lost peer", "3");
    wait_peer_event(&nodes[1], "lost peer", "3");
    heal();
    nodes[2].wait_log("ZooKeeper session expired; re-creating");
    nodes[2].wait_log("registered in ZooKeeper");
    wait_peer_event(&nodes[0], "new peer", "3");
    wait_peer_event(&nodes[1], "new peer", "3");
}

/// The same partition made with nftables in a network namespace of the
/// test's own: ZooKeeper and three nodes share its loopback interface;
/// node 3 reaches ZooKeeper at 127.0.0.3, and dropping every packet to and
/// from that address and port cuts it from ZooKeeper while it still
/// reaches its peers (and they it) at 127.0.0.1. It keeps serving every
/// key over HTTP and through its mount, its session expires, and it
/// rejoins when the rules are removed.
#[test]
fn a_node_partitioned_by_nftables_keeps_serving_and_rejoins() {
    if !common::mount::can_mount() {
        return;
    }
    common::netns::in_private_network(|| {
        let Some(firewall) = common::netns::Firewall::new() else {
            return;
        };
        let Some(zk) = ZkServer::started_on_every_loopback_address() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        write_words(&source, "1");
        let isolated = "127.0.0.3";
        let mut nodes: Vec<Node> = ["1", "2", "3"]
            .iter()
            .map(|id| {
                let host = if *id == "3" { isolated } else { "127.0.0.1" };
                Node::start_mounted_through(
                    dir.path(),
                    &format!("{host}:{}", zk.port()),
                    &source,
                    id,
                    &format!("shard_id = \"{id}\"\nmin_replication = 2\n"),
                    &["--zk-timeout", SESSION_TIMEOUT],
                )
            })
            .collect();
        for node in &nodes {
            node.wait_serving();
        }
        let readers = Readers::start_on(&ReadTarget::all(&nodes), "words", &words("1"));

        let cut = || firewall.cut(isolated, zk.port());
        cut_off_and_rejoin(&nodes, cut, || firewall.heal());
        survived(
            "one node partitioned from ZooKeeper by nftables",
            readers,
            &mut nodes,
            &source,
        );
    });
}

/// Every node's session expires at once (ZooKeeper up, every link cut):
/// no read fails, no node exits, and afterwards every node has registered
/// again and the cluster agrees on a new version.
#[test]
fn every_session_expiring_fails_no_read() {
    let Some(Readable {
        cluster,
        relays,
        mut nodes,
        readers,
    }) = readable_cluster()
    else {
        return;
    };

    for relay in &relays {
        relay.cut();
    }
    for node in &nodes {
        node.wait_log("lost the connection to ZooKeeper");
    }
    // The server expires the sessions it stops hearing from, and their
    // entries with them.
    cluster.zk.wait_no_ephemerals();
    for relay in &relays {
        relay.heal();
    }
    for node in &nodes {
        node.wait_log("ZooKeeper session expired; re-creating");
        node.wait_log("registered in ZooKeeper");
    }
    survived(
        "every session expired",
        readers,
        &mut nodes,
        &cluster.source,
    );
}

/// A node started while ZooKeeper is down serves its local store at once,
/// degraded (said in its log, on `/healthz` and in the status document),
/// and registers when ZooKeeper comes back.
#[test]
fn a_node_starts_while_zookeeper_is_down() {
    let Some(mut cluster) = WordsCluster::new() else {
        return;
    };
    // Two nodes, R=2: each holds every partition.
    let (dir, source) = (cluster.dir.path(), &cluster.source);
    let (_relays, mut nodes) = behind_relays(dir, &cluster.zk, source, &["1", "2"], "");
    stop_all(&mut nodes);
    cluster.zk.stop();

    let node = &mut nodes[0];
    node.restart();
    node.wait_log("degraded: ZooKeeper is unreachable");
    node.wait_serving();
    assert_serves(node, &words("1"));
    assert_session(node, "never_connected", true);
    cluster.zk.start();
    node.wait_log("registered in ZooKeeper");
    assert_session(node, "connected", false);
    node.stop();
}

/// Checks the session `node` reports on `/healthz` (200 either way), in
/// its status document and in its mount's `.status`, and whether it calls
/// itself degraded.
fn assert_session(node: &Node, session: &str, degraded: bool) {
    let status = mount_status(node);
    assert_eq!(status["cluster"]["session"], session);
    assert_eq!(status["cluster"]["degraded"], degraded);
    let mut conn = Conn::connect(node.addr);
    let health = conn.request("GET", "/healthz", &[]).unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.header("x-sequinsfs-cluster-session"), Some(session));
    let status = conn
        .request("GET", "/", &[("Accept", "application/json")])
        .unwrap()
        .json();
    assert_eq!(status["cluster"]["session"], session);
    assert_eq!(status["cluster"]["degraded"], degraded);
}

/// Four nodes, R=2; one is killed (SIGKILL) under read load. Reads on the
/// others fail at most until its session expires (the detection window;
/// in practice none fail: a refused connection moves the request to the
/// other copy at once). After `rereplicate_after` the survivors rebuild
/// its partitions from the source, so every partition has two copies
/// again; when it comes back, the extra copies are let go, with no failed
/// read throughout.
#[test]
fn a_lost_node_is_replaced_and_its_return_restores_the_layout() {
    let Some(cluster) = WordsCluster::new() else {
        return;
    };
    let mut nodes: Vec<Node> = ["1", "2", "3", "4"]
        .iter()
        .map(|id| {
            Node::start_mounted_through(
                cluster.dir.path(),
                &cluster.zk.address(),
                &cluster.source,
                id,
                &format!("shard_id = \"{id}\"\nrereplicate_after = \"3s\"\n"),
                &["--zk-timeout", SESSION_TIMEOUT],
            )
        })
        .collect();
    for node in &nodes {
        node.wait_serving();
    }
    let held_before: Vec<Vec<u64>> = nodes.iter().map(|n| n.held("words", "1")).collect();
    let readers = Readers::start_on(&ReadTarget::all(&nodes[..3]), "words", &words("1"));

    let killed = std::time::Instant::now();
    nodes[3].kill();
    for node in &nodes[..3] {
        wait_peer_event(node, "lost peer", "4");
    }
    let detected = std::time::Instant::now();
    eprintln!(
        "node 4 killed; detected after {:.1} s, {} failed reads before",
        detected.duration_since(killed).as_secs_f64(),
        readers.failures_since(killed).len()
    );

    // Every partition back at two copies, as the survivors' manifests say
    // (polled: nothing outside the nodes signals it).
    let two_copies_each = || {
        let held: Option<Vec<Vec<u64>>> = nodes[..3]
            .iter()
            .map(|n| n.try_held("words", "1"))
            .collect();
        held.is_some_and(|held| (0..6).all(|p| held.iter().filter(|h| h.contains(&p)).count() == 2))
    };
    let rebuilt = wait_until(two_copies_each);
    eprintln!(
        "re-replicated {:.1} s after detection",
        rebuilt.duration_since(detected).as_secs_f64()
    );
    // And as they count it.
    wait_until(|| {
        nodes[..3]
            .iter()
            .all(|n| n.metric("sequinsfs_cluster_under_replicated_partitions") == 0.0)
    });
    let held_after: Vec<Vec<u64>> = nodes[..3].iter().map(|n| n.held("words", "1")).collect();
    for p in 0..6 {
        let copies = held_after.iter().filter(|held| held.contains(&p)).count();
        assert_eq!(copies, 2, "partition {p}: {held_after:?}");
    }

    // Node 4 returns: its copies are advertised again and the survivors
    // let their picked-up copies go.
    nodes[3].restart();
    nodes[3].wait_serving();
    for (node, (before, after)) in nodes.iter().zip(held_before.iter().zip(&held_after)) {
        for _ in after.iter().filter(|p| !before.contains(p)) {
            node.wait_log("no longer advertising the copy picked up");
        }
    }
    assert_serves(&nodes[3], &words("1"));
    let after_detection = readers.failures_since(detected);
    let (reads, failures) = readers.finish();
    eprintln!(
        "kill -9 of one of four nodes: {reads} reads, {} failed, {} of them after detection",
        failures.len(),
        after_detection.len()
    );
    assert!(
        after_detection.is_empty(),
        "failed reads after the node was noticed gone: {:?}",
        &after_detection[..after_detection.len().min(10)]
    );
    stop_all(&mut nodes);
}

/// Polls `done` (bounded); returns when it became true.
fn wait_until(mut done: impl FnMut() -> bool) -> std::time::Instant {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::time::Instant::now()
}
