//! How fast a cluster recovers from its faults, with real `sequinsfs serve`
//! processes (release build) and a private ZooKeeper on loopback:
//!
//! - **Re-replication of a 100 MB database.** Four nodes, replication 2,
//!   `rereplicate_after = 1s`, session timeout 2 s; node 4 is killed
//!   (SIGKILL). Reported: the time until the survivors notice (its
//!   session expires), and until every partition has two copies again
//!   (the survivors' manifests), beside `cp` of the same 100 MB source in
//!   the same run.
//! - **Convergence after a ZooKeeper outage.** Three nodes; ZooKeeper is
//!   stopped for 15 s (longer than the sessions) and started again.
//!   Reported: the time from ZooKeeper answering again until every node
//!   reports a live session on `/healthz`.
//!
//! Run: `cargo bench --bench cluster_recovery` (needs Debian's
//! `zookeeper`).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Node, stop_all, wait_peer_event};
use common::http::Conn;
use common::zk::ZkServer;

/// 6 files of 200,000 records with 500-byte values: about 100 MB.
const RECORDS: usize = 200_000;
const VALUE: usize = 500;

fn main() {
    let Some(mut zk) = ZkServer::started() else {
        return;
    };
    rereplication(&zk);
    convergence(&mut zk);
}

fn write_source(root: &Path) -> u64 {
    let mut files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 6];
    for i in 0..RECORDS {
        let value = format!("{i:0>width$}", width = VALUE).into_bytes();
        files[i % 6].push((format!("key-{i:08}").into_bytes(), value));
    }
    common::data::write_seqfile_version(root, "big", "1", &files);
    dir_bytes(&root.join("big/1"))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn start(dir: &Path, zk: &ZkServer, source: &Path, ids: &[&str], extra: &str) -> Vec<Node> {
    let nodes: Vec<Node> = ids
        .iter()
        .map(|id| {
            Node::start_through(
                dir,
                &zk.address(),
                source,
                id,
                &format!("shard_id = \"{id}\"\n{extra}"),
                &["--zk-timeout", "2s", "--log-level", "warn,sequinsfs=info"],
            )
        })
        .collect();
    for node in &nodes {
        node.wait_serving();
    }
    nodes
}

fn rereplication(zk: &ZkServer) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let bytes = write_source(&source);
    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(source.join("big/1"))
        .arg(dir.path().join("copy"))
        .status()
        .unwrap();
    assert!(status.success());
    let cp = started.elapsed();

    let mut nodes = start(
        dir.path(),
        zk,
        &source,
        &["1", "2", "3", "4"],
        "rereplicate_after = \"1s\"\n",
    );
    let killed = Instant::now();
    nodes[3].kill();
    for node in &nodes[..3] {
        wait_peer_event(node, "lost peer", "4");
    }
    let detected = killed.elapsed();
    let two_copies_each = || {
        let held: Option<Vec<Vec<u64>>> =
            nodes[..3].iter().map(|n| n.try_held("big", "1")).collect();
        held.is_some_and(|held| (0..6).all(|p| held.iter().filter(|h| h.contains(&p)).count() == 2))
    };
    while !two_copies_each() {
        assert!(
            killed.elapsed() < Duration::from_secs(300),
            "not re-replicated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rebuilt = killed.elapsed();
    println!(
        "re-replication of a {:.0} MB database (4 nodes, R=2, rereplicate_after 1s):",
        bytes as f64 / 1e6
    );
    println!(
        "  node lost noticed after {:.2} s; every partition at 2 copies after {:.2} s; \
         the rebuild itself {:.2} s (after detection and the 1 s wait)",
        detected.as_secs_f64(),
        rebuilt.as_secs_f64(),
        (rebuilt - detected).as_secs_f64() - 1.0,
    );
    println!(
        "  cp -r of the same source: {:.2} s; rebuild / cp = {:.1}x",
        cp.as_secs_f64(),
        ((rebuilt - detected).as_secs_f64() - 1.0) / cp.as_secs_f64()
    );
    nodes.truncate(3);
    stop_all(&mut nodes);
}

fn convergence(zk: &mut ZkServer) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    common::cluster::write_words(&source, "1");
    let mut nodes = start(dir.path(), zk, &source, &["1", "2", "3"], "");
    zk.stop();
    std::thread::sleep(Duration::from_secs(15));
    zk.start();
    let back = Instant::now();
    let session = |node: &Node| {
        let reply = Conn::connect(node.addr)
            .request("GET", "/healthz", &[])
            .unwrap();
        reply.header("x-sequinsfs-cluster-session") == Some("connected")
    };
    while !nodes.iter().all(session) {
        assert!(back.elapsed() < Duration::from_secs(120), "not converged");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "after a 15 s ZooKeeper outage (3 nodes, session timeout 2 s): every node \
         connected {:.2} s after ZooKeeper answers again",
        back.elapsed().as_secs_f64()
    );
    stop_all(&mut nodes);
}
