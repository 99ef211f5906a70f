//! A cluster through a ZooKeeper outage longer than its sessions: every
//! node keeps answering every key (its own partitions and, by proxy, the
//! others', from the peers it knew), no process exits, and once ZooKeeper
//! is back the nodes agree on a new version as before.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::cluster::{start_cluster, stop_all};
use common::data::write_seqfile_version;
use common::http::Conn;
use common::zk::ZkServer;

/// How long ZooKeeper stays down: six times the nodes' session timeout.
const OUTAGE: Duration = Duration::from_secs(60);

fn pairs(version: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..300)
        .map(|i| {
            (
                format!("key-{i:04}").into_bytes(),
                format!("{version}:value {i}").into_bytes(),
            )
        })
        .collect()
}

fn write(root: &std::path::Path, version: &str) {
    let mut files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 6];
    for (i, pair) in pairs(version).into_iter().enumerate() {
        files[i % 6].push(pair);
    }
    write_seqfile_version(root, "words", version, &files);
}

#[test]
fn a_zookeeper_outage_fails_no_read_and_the_cluster_agrees_after_it() {
    let Some(mut zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write(&source, "1");
    let mut nodes = start_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2", "3"],
        "min_replication = 2\n",
    );

    // Readers on every node, all through the outage.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (addr, stop, reads) = (node.addr, Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                let expected = pairs("1");
                let mut conn = Conn::connect(addr);
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for (key, value) in &expected {
                        let key = std::str::from_utf8(key).unwrap();
                        match conn.request("GET", &format!("/words/{key}"), &[]) {
                            Ok(reply) if reply.status == 200 && &reply.body == value => {}
                            Ok(reply) => failures.push(format!("{addr} {key}: {}", reply.status)),
                            Err(e) => {
                                failures.push(format!("{addr} {key}: {e}"));
                                conn = Conn::connect(addr);
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                failures
            })
        })
        .collect();

    zk.stop();
    // The outage itself: nothing to wait for but time.
    std::thread::sleep(OUTAGE);
    for node in &mut nodes {
        assert!(node.is_running(), "a node exited during the outage");
    }
    zk.start();
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    eprintln!(
        "{} reads during the outage, {} failed",
        reads.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed reads: {:?}",
        &failures[..failures.len().min(10)]
    );

    // After the outage: sessions re-created, a new version agreed on.
    for node in &nodes {
        node.wait_log("ZooKeeper session established");
    }
    write(&source, "2");
    for node in &nodes {
        node.refresh();
    }
    let v2 = pairs("2");
    for node in &nodes {
        loop {
            let line = node.wait_log("switched to new version");
            if line.contains("version=\"2\"") {
                break;
            }
        }
        let mut conn = Conn::connect(node.addr);
        for (key, value) in &v2 {
            let key = std::str::from_utf8(key).unwrap();
            let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
            assert_eq!(reply.status, 200, "{key}");
            assert_eq!(&reply.body, value, "{key}");
        }
    }
    stop_all(&mut nodes);
}
