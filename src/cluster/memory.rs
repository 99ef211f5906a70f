//! An in-process [`Coordinator`]: one [`MemoryCluster`] stands for the
//! ZooKeeper ensemble and hands out a [`MemoryCoordinator`] per simulated
//! node, so cluster logic can be tested with many nodes, no server and
//! paused time.
//!
//! It keeps the ZooKeeper implementation's semantics: entries are owned by
//! a session and vanish with it, views exclude the node's own address and
//! freeze while it is disconnected, changes made while disconnected are
//! applied on reconnection, and an expired session is replaced by a new one
//! that re-creates every entry. [`MemoryCoordinator::disconnect`],
//! [`MemoryCoordinator::expire_session`] and [`MemoryCoordinator::reconnect`]
//! simulate the failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::cluster::coordinator::{
    CoordinatorStatus, ID_ASSIGNMENT_QUIET_MAX, check_component, check_shard_id, choose_shard_id,
    holders_from_children, log_peer_changes, node_name, partition_name, peers_from_children,
    wait_quiet,
};
use crate::cluster::{Coordinator, CoordinatorError, PartitionHolders, Peer, SessionState};

type VersionKey = (String, String);

/// The shared "ensemble". Cheap to clone.
#[derive(Clone)]
pub struct MemoryCluster {
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    state: Mutex<ClusterState>,
    /// The ID-assignment lock.
    id_lock: tokio::sync::Mutex<()>,
    time_to_converge: Duration,
}

#[derive(Default)]
struct ClusterState {
    next_session: u64,
    /// `nodes/` entry name -> owning session.
    nodes: BTreeMap<String, u64>,
    /// `partitions/<db>/<version>/` entry names -> owning session.
    partitions: BTreeMap<VersionKey, BTreeMap<String, u64>>,
    members: Vec<Member>,
}

struct Member {
    address: String,
    /// The live session, if any.
    session: Option<u64>,
    connected: bool,
    closed: bool,
    sessions: u64,
    node: Option<String>,
    advertised: BTreeSet<(String, String, u32)>,
    watches: BTreeMap<VersionKey, watch::Sender<PartitionHolders>>,
    peers: watch::Sender<Vec<Peer>>,
    status: watch::Sender<CoordinatorStatus>,
}

impl MemoryCluster {
    /// An empty cluster whose nodes use `time_to_converge`.
    pub fn new(time_to_converge: Duration) -> MemoryCluster {
        MemoryCluster {
            shared: Arc::new(ClusterShared {
                state: Mutex::new(ClusterState::default()),
                id_lock: tokio::sync::Mutex::new(()),
                time_to_converge,
            }),
        }
    }

    /// A node at `address` with a live session.
    pub fn start_node(&self, address: &str) -> MemoryCoordinator {
        let node = self.start_node_offline(address);
        node.reconnect();
        node
    }

    /// A node at `address` that has not reached the ensemble yet (as when
    /// ZooKeeper is down at start); [`MemoryCoordinator::reconnect`] brings
    /// it online.
    pub fn start_node_offline(&self, address: &str) -> MemoryCoordinator {
        let mut state = self.shared.lock();
        state.members.push(Member {
            address: address.to_string(),
            session: None,
            connected: false,
            closed: false,
            sessions: 0,
            node: None,
            advertised: BTreeSet::new(),
            watches: BTreeMap::new(),
            peers: watch::channel(Vec::new()).0,
            status: watch::channel(CoordinatorStatus::START).0,
        });
        MemoryCoordinator {
            cluster: self.clone(),
            index: state.members.len() - 1,
            address: address.to_string(),
        }
    }

    /// Every `nodes/` entry name, as a ZooKeeper listing would show it.
    pub fn node_entries(&self) -> Vec<String> {
        self.shared.lock().nodes.keys().cloned().collect()
    }
}

impl ClusterShared {
    fn lock(&self) -> MutexGuard<'_, ClusterState> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClusterState {
    /// Makes member `i`'s entries match its wishes, if it has a session
    /// and is connected; then refreshes every connected member's views.
    fn apply(&mut self, i: usize) {
        let member = &self.members[i];
        if let (Some(session), true) = (member.session, member.connected) {
            let address = member.address.clone();
            let node = member.node.clone();
            let advertised = member.advertised.clone();
            self.nodes
                .retain(|name, owner| *owner != session || Some(name) == node.as_ref());
            if let Some(name) = node {
                self.nodes.insert(name, session);
            }
            for (key, entries) in self.partitions.iter_mut() {
                entries.retain(|name, owner| {
                    *owner != session
                        || crate::cluster::coordinator::parse_partition_name(name).is_some_and(
                            |(p, _)| advertised.contains(&(key.0.clone(), key.1.clone(), p)),
                        )
                });
            }
            for (db, version, partition) in advertised {
                self.partitions
                    .entry((db, version))
                    .or_default()
                    .insert(partition_name(partition, &address), session);
            }
        }
        self.refresh_views();
    }

    fn drop_session_entries(&mut self, session: u64) {
        self.nodes.retain(|_, owner| *owner != session);
        for entries in self.partitions.values_mut() {
            entries.retain(|_, owner| *owner != session);
        }
    }

    fn refresh_views(&self) {
        for member in self.members.iter().filter(|m| m.connected) {
            let (peers, _) =
                peers_from_children(self.nodes.keys().map(String::as_str), &member.address);
            member.peers.send_if_modified(|current| {
                if *current == peers {
                    return false;
                }
                log_peer_changes(current, &peers);
                *current = peers;
                true
            });
            for (key, sender) in &member.watches {
                let (holders, _) = holders_from_children(
                    self.partitions
                        .get(key)
                        .into_iter()
                        .flat_map(|entries| entries.keys().map(String::as_str)),
                    &member.address,
                );
                sender.send_if_modified(|current| {
                    let changed = *current != holders;
                    *current = holders;
                    changed
                });
            }
        }
    }
}

/// One simulated node. Dropping it leaves its entries until
/// [`Coordinator::close`] or [`MemoryCoordinator::expire_session`], like a
/// ZooKeeper session that has not timed out yet.
pub struct MemoryCoordinator {
    cluster: MemoryCluster,
    index: usize,
    address: String,
}

impl MemoryCoordinator {
    fn with_member<T>(
        &self,
        f: impl FnOnce(&mut Member) -> Result<T, CoordinatorError>,
    ) -> Result<T, CoordinatorError> {
        let mut state = self.cluster.shared.lock();
        let member = &mut state.members[self.index];
        if member.closed {
            return Err(CoordinatorError::Closed);
        }
        let result = f(member)?;
        state.apply(self.index);
        Ok(result)
    }

    fn set_status(member: &Member, state: SessionState) {
        member.status.send_replace(CoordinatorStatus {
            state,
            sessions: member.sessions,
        });
    }

    /// Loses the connection but keeps the session: entries stay, views
    /// freeze, changes wait for [`MemoryCoordinator::reconnect`].
    pub fn disconnect(&self) {
        let mut state = self.cluster.shared.lock();
        let member = &mut state.members[self.index];
        if member.closed || !member.connected {
            return;
        }
        member.connected = false;
        Self::set_status(member, SessionState::Disconnected);
    }

    /// The session expires: this node's entries vanish for everyone; it
    /// recovers with a new session on [`MemoryCoordinator::reconnect`].
    pub fn expire_session(&self) {
        let mut state = self.cluster.shared.lock();
        let member = &mut state.members[self.index];
        if member.closed {
            return;
        }
        member.connected = false;
        let old = member.session.take();
        Self::set_status(member, SessionState::Recovering);
        if let Some(session) = old {
            state.drop_session_entries(session);
        }
        state.refresh_views();
    }

    /// Reaches the ensemble again (a new session if the old one expired or
    /// there was none) and applies every pending change.
    pub fn reconnect(&self) {
        let mut state = self.cluster.shared.lock();
        state.next_session += 1;
        let next = state.next_session;
        let member = &mut state.members[self.index];
        if member.closed || member.connected {
            return;
        }
        if member.session.is_none() {
            member.session = Some(next);
            member.sessions += 1;
        }
        member.connected = true;
        Self::set_status(member, SessionState::Connected);
        state.apply(self.index);
    }

    async fn wait_connected(&self) -> Result<(), CoordinatorError> {
        let mut status = self.status();
        let result = status
            .wait_for(|s| matches!(s.state, SessionState::Connected | SessionState::Closed))
            .await
            .map(|s| s.state);
        match result {
            Ok(SessionState::Connected) => Ok(()),
            _ => Err(CoordinatorError::Closed),
        }
    }
}

#[async_trait]
impl Coordinator for MemoryCoordinator {
    fn address(&self) -> &str {
        &self.address
    }

    fn status(&self) -> watch::Receiver<CoordinatorStatus> {
        self.cluster.shared.lock().members[self.index]
            .status
            .subscribe()
    }

    fn peers(&self) -> watch::Receiver<Vec<Peer>> {
        self.cluster.shared.lock().members[self.index]
            .peers
            .subscribe()
    }

    async fn join(&self, shard_id: Option<&str>) -> Result<String, CoordinatorError> {
        if let Some(id) = shard_id {
            check_shard_id(id)?;
            let name = node_name(id, &self.address);
            return self.with_member(|m| {
                m.node = Some(name);
                Ok(id.to_string())
            });
        }
        let shared = &self.cluster.shared;
        let _lock = shared.id_lock.lock().await;
        self.wait_connected().await?;
        let quiet = shared.time_to_converge.min(ID_ASSIGNMENT_QUIET_MAX);
        let mut peers = self.peers();
        let peers = wait_quiet(&mut peers, quiet).await;
        let id = choose_shard_id(&peers)?;
        let name = node_name(&id, &self.address);
        self.with_member(|m| {
            m.node = Some(name);
            Ok(id)
        })
    }

    async fn converge(&self) -> Vec<Peer> {
        if self.wait_connected().await.is_err() {
            return self.peers().borrow().clone();
        }
        let mut peers = self.peers();
        wait_quiet(&mut peers, self.cluster.shared.time_to_converge).await
    }

    fn advertise(&self, db: &str, version: &str, partition: u32) -> Result<(), CoordinatorError> {
        check_component("database", db)?;
        check_component("version", version)?;
        self.with_member(|m| {
            m.advertised
                .insert((db.to_string(), version.to_string(), partition));
            Ok(())
        })
    }

    fn withdraw(&self, db: &str, version: &str, partition: u32) -> Result<(), CoordinatorError> {
        self.with_member(|m| {
            m.advertised
                .remove(&(db.to_string(), version.to_string(), partition));
            Ok(())
        })
    }

    fn withdraw_version(&self, db: &str, version: &str) -> Result<(), CoordinatorError> {
        self.with_member(|m| {
            m.advertised.retain(|(d, v, _)| d != db || v != version);
            Ok(())
        })
    }

    fn watch_partitions(
        &self,
        db: &str,
        version: &str,
    ) -> Result<watch::Receiver<PartitionHolders>, CoordinatorError> {
        check_component("database", db)?;
        check_component("version", version)?;
        self.with_member(|m| {
            let key = (db.to_string(), version.to_string());
            if let Some(sender) = m.watches.get(&key) {
                return Ok(sender.subscribe());
            }
            let sender = watch::channel(PartitionHolders::new()).0;
            let receiver = sender.subscribe();
            // The view is filled before this returns (the cluster applies
            // every change at once); mark it listed as ZooKeeper's first
            // listing does.
            sender.send_modify(|_| {});
            m.watches.insert(key, sender);
            Ok(receiver)
        })
    }

    fn unwatch_partitions(&self, db: &str, version: &str) {
        let _ = self.with_member(|m| {
            m.watches.remove(&(db.to_string(), version.to_string()));
            Ok(())
        });
    }

    async fn close(&self) {
        let mut state = self.cluster.shared.lock();
        let member = &mut state.members[self.index];
        if member.closed {
            return;
        }
        member.closed = true;
        member.connected = false;
        member.watches.clear();
        Self::set_status(member, SessionState::Closed);
        if let Some(session) = member.session.take() {
            state.drop_session_entries(session);
        }
        state.refresh_views();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTC: Duration = Duration::from_secs(10);

    fn peer(id: &str, address: &str) -> Peer {
        Peer {
            shard_id: id.into(),
            address: address.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn peers_see_each_other_and_leave() {
        let cluster = MemoryCluster::new(TTC);
        let a = cluster.start_node("a:1");
        let b = cluster.start_node("b:1");
        assert_eq!(a.join(Some("1")).await.unwrap(), "1");
        b.join(Some("2")).await.unwrap();
        assert_eq!(*a.peers().borrow(), [peer("2", "b:1")]);
        assert_eq!(*b.peers().borrow(), [peer("1", "a:1")]);
        b.close().await;
        assert!(a.peers().borrow().is_empty());
        assert_eq!(b.status().borrow().state, SessionState::Closed);
        assert!(matches!(
            b.advertise("db", "v", 0),
            Err(CoordinatorError::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_are_advertised_and_withdrawn() {
        let cluster = MemoryCluster::new(TTC);
        let a = cluster.start_node("a:1");
        let b = cluster.start_node("b:1");
        let mut holders = b.watch_partitions("db", "v1").unwrap();
        a.advertise("db", "v1", 0).unwrap();
        a.advertise("db", "v1", 3).unwrap();
        b.advertise("db", "v1", 3).unwrap();
        assert!(holders.has_changed().unwrap());
        assert_eq!(
            *holders.borrow_and_update(),
            PartitionHolders::from([(0, vec!["a:1".into()]), (3, vec!["a:1".into()])])
        );
        a.withdraw("db", "v1", 0).unwrap();
        assert_eq!(
            *holders.borrow_and_update(),
            PartitionHolders::from([(3, vec!["a:1".into()])])
        );
        a.withdraw_version("db", "v1").unwrap();
        assert!(holders.borrow_and_update().is_empty());
        b.unwatch_partitions("db", "v1");
        assert!(holders.changed().await.is_err(), "closed after unwatch");
        assert!(a.advertise("db", "a/b", 0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn shard_ids_are_assigned_in_turn_and_reused() {
        let cluster = MemoryCluster::new(TTC);
        let nodes: Vec<_> = (0..3)
            .map(|i| cluster.start_node(&format!("n{i}:1")))
            .collect();
        let ids = futures::future::join_all(nodes.iter().map(|n| n.join(None))).await;
        let mut ids: Vec<String> = ids.into_iter().map(Result::unwrap).collect();
        ids.sort();
        assert_eq!(ids, ["1", "2", "3"]);
        // The holder of "2" leaves; a newcomer takes its ID.
        let two = nodes
            .iter()
            .find(|n| {
                cluster
                    .node_entries()
                    .contains(&format!("2@{}", n.address()))
            })
            .unwrap();
        two.close().await;
        let newcomer = cluster.start_node("new:1");
        assert_eq!(newcomer.join(None).await.unwrap(), "2");
        // A named node stops automatic assignment, naming the culprit.
        let named = cluster.start_node("named:1");
        named.join(Some("web")).await.unwrap();
        let late = cluster.start_node("late:1");
        let err = late.join(None).await.unwrap_err().to_string();
        assert!(err.contains("web@named:1"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn outage_and_expiry() {
        let cluster = MemoryCluster::new(TTC);
        let a = cluster.start_node("a:1");
        let b = cluster.start_node("b:1");
        a.join(Some("1")).await.unwrap();
        b.join(Some("2")).await.unwrap();
        let mut holders = b.watch_partitions("db", "v").unwrap();

        // Disconnected: the session lives, a's entries stay, a's changes
        // wait and a's views freeze.
        a.disconnect();
        assert_eq!(a.status().borrow().state, SessionState::Disconnected);
        a.advertise("db", "v", 1).unwrap();
        assert!(holders.borrow_and_update().is_empty());
        assert_eq!(*b.peers().borrow(), [peer("1", "a:1")]);
        let c = cluster.start_node("c:1");
        c.join(Some("3")).await.unwrap();
        assert_eq!(*a.peers().borrow(), [peer("2", "b:1")]);
        a.reconnect();
        assert_eq!(
            *holders.borrow_and_update(),
            PartitionHolders::from([(1, vec!["a:1".into()])])
        );
        assert_eq!(*a.peers().borrow(), [peer("2", "b:1"), peer("3", "c:1")]);
        assert_eq!(a.status().borrow().sessions, 1);

        // Expired: entries vanish, then come back with a new session.
        a.expire_session();
        assert_eq!(a.status().borrow().state, SessionState::Recovering);
        assert!(holders.borrow_and_update().is_empty());
        assert_eq!(*b.peers().borrow(), [peer("3", "c:1")]);
        a.reconnect();
        assert_eq!(
            *a.status().borrow(),
            CoordinatorStatus {
                state: SessionState::Connected,
                sessions: 2
            }
        );
        assert_eq!(
            *holders.borrow_and_update(),
            PartitionHolders::from([(1, vec!["a:1".into()])])
        );
        assert_eq!(*b.peers().borrow(), [peer("1", "a:1"), peer("3", "c:1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn offline_start_and_convergence() {
        let cluster = MemoryCluster::new(TTC);
        let a = cluster.start_node_offline("a:1");
        assert_eq!(a.status().borrow().state, SessionState::NeverConnected);
        a.join(Some("1")).await.unwrap();
        assert!(cluster.node_entries().is_empty());
        let start = tokio::time::Instant::now();
        let converged = tokio::spawn({
            let cluster = cluster.clone();
            async move {
                let b = cluster.start_node("b:1");
                b.join(Some("2")).await.unwrap();
                let peers = b.converge().await;
                (peers, b)
            }
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        a.reconnect();
        assert_eq!(cluster.node_entries(), ["1@a:1", "2@b:1"]);
        let (peers, _b) = converged.await.unwrap();
        assert_eq!(peers, [peer("1", "a:1")]);
        // Quiet for ten seconds after the change at four.
        assert_eq!(start.elapsed(), Duration::from_secs(14));
    }
}
