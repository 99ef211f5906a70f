//! The ZooKeeper coordinator against real ZooKeeper servers (one private
//! server per test, so tests run in parallel and outages stay local):
//! membership, advertisements, shard-ID assignment, and ZooKeeper outages
//! short and long, at start and later.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use common::zk::ZkServer;
use sequinsfs::cluster::{
    ClusterConfig, Coordinator, CoordinatorStatus, PartitionHolders, Peer, SessionState,
    ZkCoordinator,
};
use tokio::sync::watch;
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode};

/// Bound of every test.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound of every single wait for an event inside a test.
const WAIT: Duration = Duration::from_secs(30);

fn config(zk: &ZkServer, cluster: &str, session_timeout: Duration) -> ClusterConfig {
    let mut config = ClusterConfig::with_servers(vec![zk.address()]);
    config.cluster_name = cluster.to_string();
    config.session_timeout = session_timeout;
    // Short, so that shard-ID assignment (quiet for this long) is quick.
    config.time_to_converge = Duration::from_millis(300);
    config
}

fn peer(id: &str, address: &str) -> Peer {
    Peer {
        shard_id: id.into(),
        address: address.into(),
    }
}

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// Waits until `rx` satisfies `f`, failing the test after [`WAIT`].
async fn wait_until<T: std::fmt::Debug>(
    what: &str,
    rx: &mut watch::Receiver<T>,
    f: impl FnMut(&T) -> bool,
) {
    let outcome = tokio::time::timeout(WAIT, rx.wait_for(f))
        .await
        .map(|r| r.is_ok());
    match outcome {
        Ok(true) => {}
        Ok(false) => panic!("{what}: channel closed"),
        Err(_) => panic!(
            "{what}: not reached within {WAIT:?}; last {:?}",
            *rx.borrow()
        ),
    }
}

async fn wait_state(what: &str, c: &ZkCoordinator, state: SessionState) -> CoordinatorStatus {
    let mut status = c.status();
    wait_until(what, &mut status, |s| s.state == state).await;
    *status.borrow()
}

fn holders(entries: &[(u32, &[&str])]) -> PartitionHolders {
    entries
        .iter()
        .map(|(p, addresses)| (*p, addresses.iter().map(|a| a.to_string()).collect()))
        .collect()
}

/// A plain client, to look at the tree as a third party.
async fn observer(zk: &ZkServer) -> Client {
    Client::connect(&zk.address()).await.unwrap()
}

/// The session owning the ephemeral `path`, once it exists.
async fn owner(client: &Client, path: &str) -> i64 {
    loop {
        let (stat, watcher) = client.check_and_watch_stat(path).await.unwrap();
        if let Some(stat) = stat {
            return stat.ephemeral_owner;
        }
        tokio::time::timeout(WAIT, watcher.changed())
            .await
            .unwrap_or_else(|_| panic!("{path} never appeared"));
    }
}

/// Waits until `path` is owned by a session other than `old`.
async fn wait_owner_change(client: &Client, path: &str, old: i64) {
    loop {
        let (stat, watcher) = client.check_and_watch_stat(path).await.unwrap();
        if stat.is_some_and(|s| s.ephemeral_owner != old) {
            return;
        }
        tokio::time::timeout(WAIT, watcher.changed())
            .await
            .unwrap_or_else(|_| panic!("{path} still owned by the old session"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_appear_and_disappear() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    bounded(async {
        let session = Duration::from_secs(4);
        let a = ZkCoordinator::start(config(&zk, "members", session), "a:1");
        let b = ZkCoordinator::start(config(&zk, "members", session), "b:1");
        assert_eq!(a.join(Some("1")).await.unwrap(), "1");
        assert_eq!(b.join(Some("2")).await.unwrap(), "2");
        let mut a_peers = a.peers();
        wait_until("a sees b", &mut a_peers, |p| *p == [peer("2", "b:1")]).await;
        let mut b_peers = b.peers();
        wait_until("b sees a", &mut b_peers, |p| *p == [peer("1", "a:1")]).await;
        assert_eq!(a.converge().await, [peer("2", "b:1")]);

        // The exact layout, seen by a third party.
        let raw = observer(&zk).await;
        let mut nodes = raw.list_children("/members/v1/nodes").await.unwrap();
        nodes.sort();
        assert_eq!(nodes, ["1@a:1", "2@b:1"]);
        let a_owner = owner(&raw, "/members/v1/nodes/1@a:1").await;
        assert_ne!(a_owner, 0);
        // An entry deleted by someone else is created again.
        raw.delete("/members/v1/nodes/1@a:1", None).await.unwrap();
        assert_eq!(owner(&raw, "/members/v1/nodes/1@a:1").await, a_owner);

        // A closed node vanishes at once, not after its session timeout.
        let start = Instant::now();
        b.close().await;
        assert_eq!(b.status().borrow().state, SessionState::Closed);
        wait_until("b gone", &mut a_peers, Vec::is_empty).await;
        assert!(start.elapsed() < session, "took {:?}", start.elapsed());
        assert!(b.advertise("db", "v", 0).is_err(), "closed refuses changes");

        // A node that dies without closing vanishes after its session
        // timeout: its runtime is dropped, so nothing says goodbye.
        let crashed = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let short = Duration::from_millis(1200);
        let c_config = config(&zk, "members", short);
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        crashed.spawn(async move {
            let c = ZkCoordinator::start(c_config, "c:1");
            c.join(Some("3")).await.unwrap();
            let _ = joined_tx.send(());
            std::future::pending::<()>().await;
            drop(c);
        });
        joined_rx.await.unwrap();
        wait_until("a sees c", &mut a_peers, |p| *p == [peer("3", "c:1")]).await;
        crashed.shutdown_background();
        let start = Instant::now();
        wait_until("c gone", &mut a_peers, Vec::is_empty).await;
        // Not before the server could have noticed (half the timeout is a
        // safe lower bound given its tick).
        assert!(
            start.elapsed() >= short / 2,
            "vanished after {:?}",
            start.elapsed()
        );
        a.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_advertised_withdrawn_and_watched() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    bounded(async {
        let session = Duration::from_secs(4);
        let a = ZkCoordinator::start(config(&zk, "parts", session), "a:1");
        let b = ZkCoordinator::start(config(&zk, "parts", session), "b:1");
        a.join(Some("1")).await.unwrap();
        b.join(Some("2")).await.unwrap();
        let mut seen_by_b = b.watch_partitions("db", "v1").unwrap();
        let mut seen_by_a = a.watch_partitions("db", "v1").unwrap();
        a.advertise("db", "v1", 0).unwrap();
        a.advertise("db", "v1", 3).unwrap();
        let want = holders(&[(0, &["a:1"]), (3, &["a:1"])]);
        wait_until("b sees a's partitions", &mut seen_by_b, |h| *h == want).await;

        // Layout: /<cluster>/v1/partitions/<db>/<version>/<%05d>@<address>.
        let raw = observer(&zk).await;
        assert_ne!(owner(&raw, "/parts/v1/partitions/db/v1/00003@a:1").await, 0);

        // Hostile entries are skipped; this node is left out of its view.
        for junk in ["garbage", "00001@", "x1@c:1", "99999999999@c:1"] {
            raw.create(
                &format!("/parts/v1/partitions/db/v1/{junk}"),
                b"",
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap();
        }
        b.advertise("db", "v1", 3).unwrap();
        wait_until("b's own entry visible to a", &mut seen_by_a, |h| {
            *h == holders(&[(3, &["b:1"])])
        })
        .await;
        assert_eq!(
            *seen_by_b.borrow_and_update(),
            holders(&[(0, &["a:1"]), (3, &["a:1"])]),
            "b leaves itself out"
        );

        a.withdraw("db", "v1", 0).unwrap();
        wait_until("withdrawn", &mut seen_by_b, |h| {
            *h == holders(&[(3, &["a:1"])])
        })
        .await;
        a.advertise("db", "v2", 1).unwrap();
        a.withdraw_version("db", "v1").unwrap();
        wait_until(
            "version withdrawn",
            &mut seen_by_b,
            PartitionHolders::is_empty,
        )
        .await;
        let mut v2 = b.watch_partitions("db", "v2").unwrap();
        wait_until("other version kept", &mut v2, |h| {
            *h == holders(&[(1, &["a:1"])])
        })
        .await;

        // Unwatching closes the channel; watching again works.
        b.unwatch_partitions("db", "v1");
        tokio::time::timeout(WAIT, async { while seen_by_b.changed().await.is_ok() {} })
            .await
            .expect("channel closed after unwatch");
        let mut again = b.watch_partitions("db", "v1").unwrap();
        a.advertise("db", "v1", 2).unwrap();
        wait_until("watch again", &mut again, |h| {
            *h == holders(&[(2, &["a:1"])])
        })
        .await;

        // Names that cannot be znode names are refused.
        assert!(a.advertise("db/x", "v1", 0).is_err());
        assert!(a.advertise("db", "..", 0).is_err());
        assert!(a.join(Some("1@x")).await.is_err());
        a.close().await;
        b.close().await;
        let mut left = raw
            .list_children("/parts/v1/partitions/db/v1")
            .await
            .unwrap();
        left.sort();
        assert_eq!(left, ["00001@", "99999999999@c:1", "garbage", "x1@c:1"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_ids_are_assigned_automatically() {
    let Some(zk) = ZkServer::started() else {
        return;
    };
    bounded(async {
        let session = Duration::from_secs(4);
        let node = |cluster: &str, address: &str| {
            ZkCoordinator::start(config(&zk, cluster, session), address)
        };
        // Single, then sequential.
        let n1 = node("seq", "n1:1");
        assert_eq!(n1.join(None).await.unwrap(), "1");
        let n2 = node("seq", "n2:1");
        assert_eq!(n2.join(None).await.unwrap(), "2");
        let n3 = node("seq", "n3:1");
        assert_eq!(n3.join(None).await.unwrap(), "3");
        // A freed ID is reused.
        n2.close().await;
        let n4 = node("seq", "n4:1");
        assert_eq!(n4.join(None).await.unwrap(), "2");
        // A preset (configured or persisted) ID is used as is, even when
        // taken: equal IDs are sequins' hot spares.
        let spare = node("seq", "spare:1");
        assert_eq!(spare.join(Some("3")).await.unwrap(), "3");
        let mut peers = n1.peers();
        wait_until("spare visible", &mut peers, |p| p.len() == 3).await;
        assert_eq!(
            *peers.borrow(),
            [peer("2", "n4:1"), peer("3", "n3:1"), peer("3", "spare:1")]
        );

        // Parallel: three nodes at once get three distinct IDs.
        let parallel: Vec<_> = (0..3).map(|i| node("par", &format!("p{i}:1"))).collect();
        let ids = futures::future::join_all(parallel.iter().map(|n| n.join(None))).await;
        let ids: BTreeSet<String> = ids.into_iter().map(Result::unwrap).collect();
        assert_eq!(ids, BTreeSet::from(["1".into(), "2".into(), "3".into()]));

        // A named node stops automatic assignment, naming the culprit.
        let named = node("named", "web:1");
        named.join(Some("web")).await.unwrap();
        let late = node("named", "late:1");
        let err = late.join(None).await.unwrap_err().to_string();
        assert!(err.contains("web@web:1"), "{err}");

        for c in [&n1, &n3, &n4, &spare, &named, &late]
            .into_iter()
            .chain(&parallel)
        {
            c.close().await;
        }
    })
    .await;
}

/// Nodes `a` (shard 1) and `b` (shard 2) of `cluster`, `a` advertising
/// partition 0 of db/v1; returns them with `b`'s watch of that version,
/// once it has seen the advertisement.
async fn a_advertises_to_b(
    zk: &ZkServer,
    cluster: &str,
    session: Duration,
) -> (
    ZkCoordinator,
    ZkCoordinator,
    watch::Receiver<PartitionHolders>,
) {
    let a = ZkCoordinator::start(config(zk, cluster, session), "a:1");
    let b = ZkCoordinator::start(config(zk, cluster, session), "b:1");
    a.join(Some("1")).await.unwrap();
    b.join(Some("2")).await.unwrap();
    a.advertise("db", "v1", 0).unwrap();
    let mut seen_by_b = b.watch_partitions("db", "v1").unwrap();
    wait_until("advertised", &mut seen_by_b, |h| {
        *h == holders(&[(0, &["a:1"])])
    })
    .await;
    (a, b, seen_by_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_outage_keeps_the_session() {
    let Some(mut zk) = ZkServer::started() else {
        return;
    };
    bounded(async {
        // Long enough to survive a JVM restart on a busy machine.
        let session = Duration::from_secs(20);
        let (a, b, mut seen_by_b) = a_advertises_to_b(&zk, "outage", session).await;
        let mut a_peers = a.peers();
        wait_until("a sees b", &mut a_peers, |p| p.len() == 1).await;

        zk.stop();
        wait_state("a disconnected", &a, SessionState::Disconnected).await;
        // Changes while disconnected are remembered.
        a.advertise("db", "v1", 5).unwrap();
        a.withdraw("db", "v1", 0).unwrap();
        assert!(!zk.is_running());
        zk.start();

        let status = wait_state("a reconnected", &a, SessionState::Connected).await;
        assert_eq!(status.sessions, 1, "same session");
        wait_until("change applied", &mut seen_by_b, |h| {
            *h == holders(&[(5, &["a:1"])])
        })
        .await;
        assert_eq!(*a_peers.borrow(), [peer("2", "b:1")]);

        // Every watch still fires.
        let c = ZkCoordinator::start(config(&zk, "outage", session), "c:1");
        c.join(Some("3")).await.unwrap();
        c.advertise("db", "v1", 7).unwrap();
        wait_until("a sees c", &mut a_peers, |p| p.len() == 2).await;
        let mut b_peers = b.peers();
        wait_until("b sees c", &mut b_peers, |p| p.len() == 2).await;
        wait_until("b sees c's partition", &mut seen_by_b, |h| {
            *h == holders(&[(5, &["a:1"]), (7, &["c:1"])])
        })
        .await;
        for x in [&a, &b, &c] {
            assert_eq!(x.status().borrow().sessions, 1);
            x.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_is_recreated() {
    let Some(mut zk) = ZkServer::started() else {
        return;
    };
    bounded(async {
        let session = Duration::from_millis(1200);
        let (a, b, mut seen_by_b) = a_advertises_to_b(&zk, "expiry", session).await;
        let raw = observer(&zk).await;
        let node_path = "/expiry/v1/nodes/1@a:1";
        let partition_path = "/expiry/v1/partitions/db/v1/00000@a:1";
        let old_node = owner(&raw, node_path).await;
        let old_partition = owner(&raw, partition_path).await;
        drop(raw);

        // Down for longer than the session timeout: the client gives the
        // session up and starts recovering.
        zk.stop();
        wait_state("a recovering", &a, SessionState::Recovering).await;
        wait_state("b recovering", &b, SessionState::Recovering).await;
        a.advertise("db", "v1", 9).unwrap();
        zk.start();

        let status = wait_state("a back", &a, SessionState::Connected).await;
        assert_eq!(status.sessions, 2, "a new session");
        // The restarted server still holds the old sessions' entries for a
        // while; the new session replaces them with its own.
        let raw = observer(&zk).await;
        wait_owner_change(&raw, node_path, old_node).await;
        wait_owner_change(&raw, partition_path, old_partition).await;
        let mut b_peers = b.peers();
        wait_until("b sees a", &mut b_peers, |p| *p == [peer("1", "a:1")]).await;
        wait_until("b sees a's partitions", &mut seen_by_b, |h| {
            *h == holders(&[(0, &["a:1"]), (9, &["a:1"])])
        })
        .await;

        // The watches were re-created by the new sessions.
        let c = ZkCoordinator::start(config(&zk, "expiry", session), "c:1");
        c.join(Some("3")).await.unwrap();
        c.advertise("db", "v1", 4).unwrap();
        let mut a_peers = a.peers();
        wait_until("a sees b and c", &mut a_peers, |p| p.len() == 2).await;
        wait_until("b sees c's partition", &mut seen_by_b, |h| {
            h.contains_key(&4)
        })
        .await;
        for x in [&a, &b, &c] {
            x.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_zookeeper_is_down() {
    let Some(mut zk) = ZkServer::stopped() else {
        return;
    };
    bounded(async {
        let session = Duration::from_secs(4);
        let a = ZkCoordinator::start(config(&zk, "late", session), "a:1");
        assert_eq!(a.status().borrow().state, SessionState::NeverConnected);
        // Nothing waits for ZooKeeper except choosing an ID automatically.
        assert_eq!(a.join(Some("7")).await.unwrap(), "7");
        a.advertise("db", "v1", 2).unwrap();
        let b = ZkCoordinator::start(config(&zk, "late", session), "b:1");
        let b_join = tokio::spawn(async move {
            let id = b.join(None).await;
            (id, b)
        });
        let converging = tokio::spawn({
            let c = ZkCoordinator::start(config(&zk, "late", session), "c:1");
            async move {
                let peers = c.converge().await;
                (peers, c)
            }
        });
        zk.start();

        wait_state("a connected", &a, SessionState::Connected).await;
        let (id, b) = b_join.await.unwrap();
        assert_eq!(id.unwrap(), "1");
        let mut seen_by_b = b.watch_partitions("db", "v1").unwrap();
        wait_until("a's partition", &mut seen_by_b, |h| {
            *h == holders(&[(2, &["a:1"])])
        })
        .await;
        // Convergence waited for ZooKeeper (a listing), then for quiet.
        let (_, c) = converging.await.unwrap();
        assert_eq!(c.status().borrow().state, SessionState::Connected);
        let mut c_peers = c.peers();
        wait_until("c sees a and b", &mut c_peers, |p| {
            *p == [peer("1", "b:1"), peer("7", "a:1")]
        })
        .await;

        // Closing while ZooKeeper is down again is bounded.
        zk.stop();
        let start = Instant::now();
        for x in [&a, &b, &c] {
            x.close().await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(a.status().borrow().state, SessionState::Closed);
    })
    .await;
}
