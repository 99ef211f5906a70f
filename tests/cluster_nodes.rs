//! Cluster mode end to end: real `sequinsfs serve` processes on loopback
//! addresses, coordinated by a private ZooKeeper. Each node builds only its
//! partitions (sequins' assignment), a version is served once every
//! partition has `min_replication` replicas, and every node answers every
//! key over HTTP, proxying what it does not hold.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cluster::{
    Node, assert_serves, start_cluster, stop_all, wait_switched, words, write_words,
};
use common::data::write_seqfile_version;
use common::http::Conn;
use common::zk::ZkServer;

/// 6 SequenceFiles (so 6 partitions) of 100 keys each.
fn dataset() -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..600)
        .map(|i| {
            (
                format!("key-{i:04}").into_bytes(),
                format!("value of {i} ").repeat(i % 7 + 1).into_bytes(),
            )
        })
        .collect()
}

fn write_source(root: &Path, pairs: &BTreeMap<Vec<u8>, Vec<u8>>) {
    write_version(root, "1", pairs);
}

fn write_version(root: &Path, version: &str, pairs: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 6];
    for (i, (k, v)) in pairs.iter().enumerate() {
        files[i % 6].push((k.clone(), v.clone()));
    }
    write_seqfile_version(root, "words", version, &files);
}

/// `pairs` with every value tagged by `version`.
fn tagged(pairs: &BTreeMap<Vec<u8>, Vec<u8>>, version: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), [version.as_bytes(), b":", v].concat()))
        .collect()
}

/// Reads every key from `node` and checks value and version.
fn check_every_key(node: &Node, pairs: &BTreeMap<Vec<u8>, Vec<u8>>, version: &str) {
    let mut conn = Conn::connect(node.addr);
    for (key, value) in pairs {
        let key = std::str::from_utf8(key).unwrap();
        let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
        assert_eq!(reply.status, 200, "{key} from {}", node.addr);
        assert_eq!(&reply.body, value, "{key} from {}", node.addr);
        assert_eq!(reply.header("x-sequins-version"), Some(version), "{key}");
    }
}

type Pairs = BTreeMap<Vec<u8>, Vec<u8>>;

/// A private ZooKeeper, a temporary directory, and a source root in it
/// holding version 1 of [`dataset`]; `None` when ZooKeeper is missing.
fn setup() -> Option<(ZkServer, tempfile::TempDir, PathBuf, Pairs)> {
    let zk = ZkServer::started()?;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let pairs = dataset();
    write_source(&source, &pairs);
    Some((zk, dir, source, pairs))
}

#[test]
fn three_nodes_split_partitions_and_answer_every_key() {
    let Some((zk, dir, source, pairs)) = setup() else {
        return;
    };

    // Started together: each waits one quiet second for the others to
    // appear, so all three assign over the same membership.
    let mut nodes = start_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2", "3"],
        "min_replication = 2\n",
    );

    // sequins' assignment of 6 partitions, R=2, over shard IDs 1, 2, 3.
    assert_eq!(nodes[0].held("words", "1"), [0, 1, 3, 4]);
    assert_eq!(nodes[1].held("words", "1"), [0, 2, 3, 5]);
    assert_eq!(nodes[2].held("words", "1"), [1, 2, 4, 5]);

    // /healthz and the status document name the node and its partitions.
    let mut conn = Conn::connect(nodes[0].addr);
    let health = conn.request("GET", "/healthz", &[]).unwrap();
    assert_eq!(health.header("x-sequins-shard-id"), Some("1"));
    let health = health.json();
    let me = nodes[0].addr.to_string();
    assert_eq!(health["words"]["1"]["shard_id"], "1");
    assert_eq!(health["words"]["1"]["name"], me.as_str());
    assert_eq!(
        health["words"]["1"]["partitions"],
        serde_json::json!([0, 1, 3, 4])
    );
    let status = conn
        .request("GET", "/", &[("accept", "application/json")])
        .unwrap()
        .json();
    assert_eq!(status["shard_id"], "1");
    assert_eq!(status["cluster"]["session"], "connected");
    let peers: Vec<&str> = status["cluster"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["shard_id"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["2", "3"]);

    for node in &nodes {
        let mut conn = Conn::connect(node.addr);
        let mut proxied = 0;
        for (key, value) in &pairs {
            let key = std::str::from_utf8(key).unwrap();
            let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
            assert_eq!(reply.status, 200, "{key} from {}", node.addr);
            assert_eq!(&reply.body, value, "{key} from {}", node.addr);
            assert_eq!(reply.header("x-sequins-version"), Some("1"));
            if reply.header("x-sequins-proxied-to").is_some() {
                proxied += 1;
            }
        }
        // About a third of the keys live on partitions this node lacks.
        assert!(proxied > 0 && proxied < pairs.len(), "{proxied} proxied");
        // A missing key is a 404 with the version, local or proxied.
        for key in ["no-such-key", "missing-0", "missing-1", "missing-2"] {
            let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
            assert_eq!(reply.status, 404, "{key}");
            assert_eq!(reply.header("x-sequins-version"), Some("1"));
        }
    }

    // /metrics counts the proxied requests and shows the session.
    let samples = common::http::scrape(&mut Conn::connect(nodes[0].addr));
    let answered = common::http::sample(
        &samples,
        "sequinsfs_proxied_requests_total",
        &[("outcome", "answered")],
    );
    assert!(answered.unwrap_or(0.0) > 0.0, "{answered:?}");
    assert_eq!(
        common::http::sample(
            &samples,
            "sequinsfs_cluster_session",
            &[("state", "connected")]
        ),
        Some(1.0)
    );
    assert_eq!(
        common::http::sample(&samples, "sequinsfs_cluster_peers", &[]),
        Some(2.0)
    );

    // One node stops (R=2): the others still answer every key.
    nodes[2].stop();
    for node in &nodes[..2] {
        let mut conn = Conn::connect(node.addr);
        for (key, value) in &pairs {
            let key = std::str::from_utf8(key).unwrap();
            let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
            assert_eq!(reply.status, 200, "{key} from {} after a stop", node.addr);
            assert_eq!(&reply.body, value);
        }
    }
    stop_all(&mut nodes);
}

/// A peer that asks for a partition this node does not hold gets 500, as
/// in sequins (a proxied request is never proxied again).
#[test]
fn a_proxied_request_is_not_proxied_again() {
    let Some((zk, dir, source, pairs)) = setup() else {
        return;
    };
    let mut nodes = start_cluster(dir.path(), &zk, &source, &["1", "2", "3"], "");
    let mut conn = Conn::connect(nodes[0].addr);
    let (mut local, mut refused) = (0, 0);
    for key in pairs.keys() {
        let key = std::str::from_utf8(key).unwrap();
        let reply = conn
            .request("GET", &format!("/words/{key}?proxy=1"), &[])
            .unwrap();
        match reply.status {
            200 => local += 1,
            500 => refused += 1,
            other => panic!("{key}: {other}"),
        }
        assert!(reply.header("x-sequins-proxied-to").is_none());
    }
    assert!(local > 0 && refused > 0, "{local} local, {refused} refused");
    stop_all(&mut nodes);
}

/// sequins' TestClusterUpgrading and TestClusterLateJoin: a new version
/// reaches every node on a refresh, and a node that joins later builds its
/// share of the current version (assigned over the four nodes it sees) and
/// serves it at once.
#[test]
fn versions_roll_forward_and_a_late_node_joins() {
    let Some((zk, dir, source, v1)) = setup() else {
        return;
    };
    let mut nodes = start_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2", "3"],
        "min_replication = 2\n",
    );

    let v2 = tagged(&v1, "2");
    write_version(&source, "2", &v2);
    for node in &nodes {
        node.refresh();
    }
    for node in &nodes {
        wait_switched(node, "2");
    }
    for node in &nodes {
        check_every_key(node, &v2, "2");
    }

    let mut late = Node::start(dir.path(), &zk, &source, "4", "min_replication = 2\n");
    late.wait_serving();
    // 6 partitions, R=2 over shard IDs 1..4: the fourth ID gets 1, 3, 5.
    assert_eq!(late.held("words", "2"), [1, 3, 5]);
    check_every_key(&late, &v2, "2");
    late.stop();
    stop_all(&mut nodes);
}

/// sequins' TestClusterRollingRestart: while a node is down the others
/// answer every key (each partition has another copy), and a restarted
/// node serves its local store at once, without building anything.
#[test]
fn a_rolling_restart_loses_no_key() {
    let Some((zk, dir, source, pairs)) = setup() else {
        return;
    };
    let mut nodes = start_cluster(dir.path(), &zk, &source, &["1", "2", "3"], "");
    for i in 0..nodes.len() {
        let held = nodes[i].held("words", "1");
        nodes[i].stop();
        for (j, other) in nodes.iter().enumerate() {
            if j != i {
                check_every_key(other, &pairs, "1");
            }
        }
        nodes[i].restart();
        nodes[i].wait_log("serving version from the local store");
        nodes[i].wait_serving();
        assert_eq!(nodes[i].held("words", "1"), held);
        check_every_key(&nodes[i], &pairs, "1");
    }
    stop_all(&mut nodes);
}

/// sequins' pre-sharding detection: a node reads a file that holds only
/// another node's partition no further than needed to be sure of it, and
/// still serves every key.
#[test]
fn pre_sharded_files_of_other_partitions_are_mostly_skipped() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    // File k holds exactly the keys of partition k, 20,000 of them.
    let mut files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 6];
    let mut pairs = BTreeMap::new();
    let mut i = 0u64;
    while files.iter().any(|f| f.len() < 20_000) {
        let key = format!("sharded-{i:08}").into_bytes();
        // 250-byte values: files of 5 MB, several times the reader's buffer.
        let value = format!("value {i:<244}").into_bytes();
        let p = sequinsfs::partition::partition(&key, 6) as usize;
        if files[p].len() < 20_000 {
            files[p].push((key.clone(), value.clone()));
            pairs.insert(key, value);
        }
        i += 1;
    }
    for file in &mut files {
        file.sort();
    }
    write_seqfile_version(&source, "words", "1", &files);
    let total: u64 = std::fs::read_dir(source.join("words/1"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    let mut nodes = start_cluster(dir.path(), &zk, &source, &["1", "2", "3"], "");
    for node in &nodes {
        // Two of the six files hold partitions this node lacks: it stops
        // reading each after about a quarter of it (plus a read buffer).
        let read = node.source_bytes("words", "1");
        assert!(
            read < total * 9 / 10,
            "{}: read {read} of {total} bytes",
            node.addr
        );
    }
    // Every 50th key, from every node: the skipped reads lost nothing.
    let sample: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().step_by(50).collect();
    for node in &nodes {
        check_every_key(node, &sample, "1");
    }
    stop_all(&mut nodes);
}

/// sequins' TestClusterMin and its discarding of older prepared versions:
/// with a node missing, a new version cannot reach `min_replication` and is
/// not served; a newer version replaces it (it is dropped, locally and from
/// ZooKeeper); when the node returns, the newest version is agreed on.
#[test]
fn a_version_short_of_replicas_waits_and_a_newer_one_replaces_it() {
    let Some((zk, dir, source, v1)) = setup() else {
        return;
    };
    let mut nodes = start_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2"],
        "min_replication = 2\n",
    );
    nodes[1].stop();

    write_version(&source, "2", &tagged(&v1, "2"));
    nodes[0].refresh();
    let waiting = nodes[0].wait_log("waiting for every partition to have enough replicas");
    assert!(waiting.contains("version=\"2\""), "{waiting}");
    check_every_key(&nodes[0], &v1, "1");

    let v3 = tagged(&v1, "3");
    write_version(&source, "3", &v3);
    nodes[0].refresh();
    nodes[0].wait_log("superseded by version 3");
    let waiting = nodes[0].wait_log("waiting for every partition to have enough replicas");
    assert!(waiting.contains("version=\"3\""), "{waiting}");
    assert!(
        !nodes[0].has_version("words", "2"),
        "the superseded version is deleted"
    );
    check_every_key(&nodes[0], &v1, "1");

    nodes[1].restart();
    wait_switched(&nodes[0], "3");
    wait_switched(&nodes[1], "3");
    for node in &nodes {
        check_every_key(node, &v3, "3");
    }
    stop_all(&mut nodes);
}

/// sequins' TestClusterAutoAssignMultipleIDs and ...UnusedID: nodes
/// without a shard ID take 1, 2, 3 in turn and keep it in their local
/// store; a new node takes the ID a stopped node freed; a restarted node
/// comes back under the ID it kept.
#[test]
fn shard_ids_are_chosen_kept_and_reused() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write_source(&source, &dataset());
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let node = Node::start_named(dir.path(), &zk, &source, name, "");
        node.wait_serving();
        nodes.push(node);
    }
    let ids: Vec<Option<String>> = nodes.iter().map(Node::self_assigned_id).collect();
    assert_eq!(ids, [Some("1".into()), Some("2".into()), Some("3".into())]);
    let health = Conn::connect(nodes[1].addr)
        .request("GET", "/healthz", &[])
        .unwrap()
        .json();
    assert_eq!(health["words"]["1"]["shard_id"], "2");

    nodes[1].stop();
    let mut d = Node::start_named(dir.path(), &zk, &source, "d", "");
    d.wait_serving();
    assert_eq!(d.self_assigned_id().as_deref(), Some("2"), "the freed ID");
    d.stop();

    nodes[1].restart();
    nodes[1].wait_log("joined the cluster shard_id=\"2\"");
    nodes[1].wait_serving();
    stop_all(&mut nodes);
}

/// A crashed node (SIGKILL: its entries stay in ZooKeeper until its
/// session times out) costs no failed read while another copy of each of
/// its partitions lives: the request to it fails or stalls, and the backup
/// request to the other copy answers.
#[test]
fn a_crashed_node_costs_no_failed_read() {
    let Some((zk, dir, source, pairs)) = setup() else {
        return;
    };
    // min_replication 2: a node serves once it sees both copies of every
    // partition, so the survivors know where the other copy of each of the
    // crashed node's partitions is (with 1, a node may switch and serve
    // before the second copy's advertisement reaches it).
    let mut nodes = start_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2", "3"],
        "min_replication = 2\n",
    );
    nodes[2].kill();
    for node in &nodes[..2] {
        check_every_key(node, &pairs, "1");
    }
    nodes.truncate(2);
    stop_all(&mut nodes);
}

/// sequins' TestMaxReplication: nodes started one after another with
/// `max_replication = 2` (replication 2, 5 partitions) skip partitions
/// that already have two copies, so the third node holds none and serves
/// every key by proxy; a fourth node without the limit takes its share.
#[test]
fn max_replication_follows_sequins_vectors() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let pairs = dataset();
    let mut files: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 5];
    for (i, (k, v)) in pairs.iter().enumerate() {
        files[i % 5].push((k.clone(), v.clone()));
    }
    write_seqfile_version(&source, "words", "1", &files);
    let mut nodes = Vec::new();
    for (id, extra) in [
        ("1", "max_replication = 2\n"),
        ("2", "max_replication = 2\n"),
        ("3", "max_replication = 2\n"),
        ("4", "max_replication = 0\n"),
    ] {
        let node = Node::start(dir.path(), &zk, &source, id, extra);
        node.wait_serving();
        nodes.push(node);
    }
    let held: Vec<Vec<u64>> = nodes.iter().map(|n| n.held("words", "1")).collect();
    assert_eq!(
        held,
        [vec![0, 1, 2, 3, 4], vec![0, 1, 2, 3, 4], vec![], vec![1, 3]]
    );
    for node in &nodes {
        check_every_key(node, &pairs, "1");
    }
    stop_all(&mut nodes);
}

/// sequins' TestClusterDelayedUpgrade and TestClusterNodeVacation: a node
/// refreshed before the others prepares the new version but keeps serving
/// the old one, without errors, until enough copies exist; a node that was
/// away while versions moved on comes back straight to the newest.
#[test]
fn a_delayed_upgrade_and_a_node_back_from_vacation() {
    let Some((zk, dir, source, v1)) = setup() else {
        return;
    };
    let mut nodes = start_cluster(
        dir.path(),
        &zk,
        &source,
        &["1", "2", "3"],
        "min_replication = 2\n",
    );

    // Only node 1 hears of version 2: it waits, serving version 1.
    let v2 = tagged(&v1, "2");
    write_version(&source, "2", &v2);
    nodes[0].refresh();
    let waiting = nodes[0].wait_log("waiting for every partition to have enough replicas");
    assert!(waiting.contains("version=\"2\""), "{waiting}");
    for node in &nodes {
        check_every_key(node, &v1, "1");
    }
    for node in &nodes[1..] {
        node.refresh();
    }
    for node in &nodes {
        wait_switched(node, "2");
        check_every_key(node, &v2, "2");
    }

    // Node 3 goes away; versions 3 and 4 arrive; it comes back to 4.
    nodes[2].stop();
    for version in ["3", "4"] {
        write_version(&source, version, &tagged(&v1, version));
        for node in &nodes[..2] {
            node.refresh();
        }
        for node in &nodes[..2] {
            wait_switched(node, version);
        }
    }
    nodes[2].restart();
    wait_switched(&nodes[2], "4");
    assert!(!nodes[2].has_version("words", "3"), "never built version 3");
    for node in &nodes {
        check_every_key(node, &tagged(&v1, "4"), "4");
    }
    stop_all(&mut nodes);
}

/// sequins' TestClusterCrashMin: `min_replication` guards against a crash
/// right after an upgrade. Four nodes, R=2; node 4's source never gets
/// version 2, so the partitions it shares with another node have one copy
/// of version 2. With `min_replication = 1` the other nodes switch to 2
/// anyway, and when a node holding a single copy crashes, reads of its
/// partitions fail (5xx) while the rest answer from version 2. With 2 they
/// stay on version 1, which node 4 still holds, and the crash costs no
/// read. After the node restarts and node 4 gets version 2, every node
/// serves version 2 without an error.
fn crash_after_an_upgrade(min_replication: usize) {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (source, lagging_source) = (dir.path().join("source"), dir.path().join("lagging"));
    write_words(&source, "1");
    write_words(&lagging_source, "1");
    let extra = format!("min_replication = {min_replication}\n");
    let mut nodes: Vec<Node> = ["1", "2", "3", "4"]
        .iter()
        .map(|id| {
            let source = if *id == "4" { &lagging_source } else { &source };
            Node::start(dir.path(), &zk, source, id, &extra)
        })
        .collect();
    for node in &nodes {
        node.wait_serving();
    }
    let held: Vec<Vec<u64>> = nodes.iter().map(|n| n.held("words", "1")).collect();
    // A node sharing a partition with node 4: that partition's only copy
    // of version 2 once it is built.
    let crashing = (0..3)
        .find(|&i| held[i].iter().any(|p| held[3].contains(p)))
        .unwrap();
    let lonely: Vec<u64> = held[crashing]
        .iter()
        .filter(|p| held[3].contains(p))
        .copied()
        .collect();

    write_words(&source, "2");
    for node in &nodes[..3] {
        node.refresh();
    }
    for node in &nodes[..3] {
        if min_replication == 1 {
            wait_switched(node, "2");
        } else {
            node.wait_log("waiting for every partition to have enough replicas");
        }
    }
    nodes[crashing].kill();

    let (v1, v2) = (words("1"), words("2"));
    for (i, node) in nodes.iter().enumerate().take(3) {
        if i == crashing {
            continue;
        }
        let mut conn = Conn::connect(node.addr);
        let (mut failed, mut answered) = (0, 0);
        for (key, value) in &v2 {
            let key = std::str::from_utf8(key).unwrap();
            let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
            let partition = u64::from(sequinsfs::partition::partition(key.as_bytes(), 6));
            if min_replication == 1 {
                if reply.status >= 500 {
                    assert!(lonely.contains(&partition), "{key}: {}", reply.status);
                    failed += 1;
                } else {
                    assert_eq!(reply.status, 200, "{key}");
                    assert_eq!(&reply.body, value, "{key}");
                    answered += 1;
                }
            } else {
                assert_eq!(reply.status, 200, "{key}");
                assert_eq!(reply.body, v1[key.as_bytes()], "{key}");
                answered += 1;
            }
        }
        eprintln!(
            "min_replication {min_replication}: node {} {answered} answered, {failed} failed",
            i + 1
        );
        if min_replication == 1 {
            assert!(failed > 0, "the crashed node's single copies are missed");
        }
    }

    // Restarted, the node serves what the cluster had agreed on: version 2
    // with min_replication 1; with 2, version 1, while 2 waits again.
    nodes[crashing].restart();
    nodes[crashing].wait_serving();
    let own_key = v1
        .keys()
        .find(|k| held[crashing].contains(&u64::from(sequinsfs::partition::partition(k, 6))))
        .unwrap();
    let reply = Conn::connect(nodes[crashing].addr)
        .request(
            "GET",
            &format!("/words/{}", String::from_utf8_lossy(own_key)),
            &[],
        )
        .unwrap();
    let agreed = if min_replication == 1 { "2" } else { "1" };
    assert_eq!(reply.header("x-sequins-version"), Some(agreed));
    write_words(&lagging_source, "2");
    nodes[3].refresh();
    for node in &nodes {
        assert_serves_version(node, &v2, "2");
    }
    stop_all(&mut nodes);
}

/// Waits until `node` answers every key of `expected` from `version`
/// (polled: the nodes that waited switch when node 4 advertises, a moment
/// after it logs its own switch), then checks each key.
fn assert_serves_version(node: &Node, expected: &Pairs, version: &str) {
    let started = std::time::Instant::now();
    let mut conn = Conn::connect(node.addr);
    for (key, value) in expected {
        let key = std::str::from_utf8(key).unwrap();
        loop {
            let reply = conn.request("GET", &format!("/words/{key}"), &[]).unwrap();
            if reply.header("x-sequins-version") == Some(version) {
                assert_eq!(reply.status, 200, "{key}");
                assert_eq!(&reply.body, value, "{key}");
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "{key}: still {:?}",
                reply.header("x-sequins-version")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn a_crash_after_an_upgrade_with_min_replication_1_fails_reads() {
    crash_after_an_upgrade(1);
}

#[test]
fn a_crash_after_an_upgrade_with_min_replication_2_fails_none() {
    crash_after_an_upgrade(2);
}

/// sequins' TestClusterNodeWithoutData: R=3, `min_replication = 2`, and
/// version 2 only in the sources of nodes 1 and 2. Those two hold every
/// partition of it twice over, so they move to 2 without node 3, which
/// keeps serving 1; version 3, everywhere, is reached by all.
#[test]
fn a_node_whose_source_lacks_a_version_does_not_hold_the_others_back() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (source, lacking) = (dir.path().join("source"), dir.path().join("lacking"));
    write_words(&source, "1");
    write_words(&lacking, "1");
    let mut nodes: Vec<Node> = ["1", "2", "3"]
        .iter()
        .map(|id| {
            let source = if *id == "3" { &lacking } else { &source };
            Node::start_through(
                dir.path(),
                &zk.address(),
                source,
                id,
                &format!("shard_id = \"{id}\"\nmin_replication = 2\n"),
                &["--replication", "3"],
            )
        })
        .collect();
    for node in &nodes {
        node.wait_serving();
    }

    write_words(&source, "2");
    for node in &nodes {
        node.refresh();
    }
    for node in &nodes[..2] {
        wait_switched(node, "2");
        assert_serves(node, &words("2"));
    }
    assert_serves(&nodes[2], &words("1"));

    write_words(&source, "3");
    write_words(&lacking, "3");
    for node in &nodes {
        node.refresh();
    }
    for node in &nodes {
        wait_switched(node, "3");
        assert_serves(node, &words("3"));
    }
    stop_all(&mut nodes);
}

/// sequins' TestLargeClusterEmpty: thirty nodes started together agree on
/// a version and every one answers every key; with 6 partitions and R=2
/// most of them hold nothing and answer everything by proxy.
#[test]
fn thirty_nodes_agree_and_each_answers_every_key() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write_words(&source, "3");
    let ids: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut nodes = start_cluster(dir.path(), &zk, &source, &ids, "");
    let expected = words("3");
    let mut holders = 0;
    for node in &nodes {
        assert_serves(node, &expected);
        holders += usize::from(!node.held("words", "3").is_empty());
    }
    assert!(holders < 30, "most nodes hold nothing: {holders} hold some");
    stop_all(&mut nodes);
}
