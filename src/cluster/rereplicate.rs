//! Re-replication: which partitions of a served version this node should
//! pick up because a node holding them is gone, and which picked-up copies
//! it should let go once that node is back. sequins never does this (its
//! assignment is fixed when a version is built), so a lost node leaves its
//! partitions short of copies until the next version.
//!
//! Every node decides on its own from the same view (the nodes listed, the
//! advertisements listed), so no leader is needed: for a partition short
//! of copies for longer than `rereplicate_after`, the nodes that do not
//! hold it are ranked by a hash of (database, version, partition, shard
//! ID), and the first ones, as many as copies are missing, build it.
//! Views differ for a moment at most, which costs an extra copy, never a
//! missing one. A copy is let go only while the partition has at least
//! `replication` other copies, so never below `min_replication`.
//!
//! The picked-up partitions are remembered in memory only: after a restart
//! the node keeps serving and advertising them until the next version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::coordinator::{PartitionHolders, Peer};

/// One served version as this node sees it.
#[derive(Debug)]
pub struct View<'a> {
    pub db: &'a str,
    pub version: &'a str,
    pub num_partitions: u32,
    /// This node's shard ID and the partitions it holds.
    pub me: &'a str,
    pub held: &'a BTreeSet<u32>,
    /// Other nodes' advertisements (addresses by partition).
    pub holders: &'a PartitionHolders,
    /// The other nodes listed now.
    pub peers: &'a [Peer],
    pub replication: usize,
}

/// What to do about one version.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions to build and advertise.
    pub take: Vec<u32>,
    /// Picked-up partitions to stop advertising.
    pub release: Vec<u32>,
    /// Partitions with fewer copies than they should have, now.
    pub under_replicated: usize,
}

/// Since when each partition has been short of copies, and which
/// partitions this node picked up.
#[derive(Debug, Default)]
pub struct Tracker {
    short_since: HashMap<(String, String, u32), Instant>,
    picked: HashMap<(String, String), BTreeSet<u32>>,
}

impl Tracker {
    /// Decides about `view` at `now`; partitions short of copies for at
    /// least `after` are picked up.
    pub fn plan(&mut self, view: &View<'_>, now: Instant, after: Duration) -> Plan {
        let mut plan = Plan::default();
        // No more copies than nodes.
        let wanted = view.replication.min(view.peers.len() + 1);
        let key = |p: u32| (view.db.to_string(), view.version.to_string(), p);
        for p in 0..view.num_partitions {
            let others = view.holders.get(&p).map_or(&[][..], Vec::as_slice);
            let copies = others.len() + usize::from(view.held.contains(&p));
            if copies >= wanted {
                self.short_since.remove(&key(p));
                continue;
            }
            plan.under_replicated += 1;
            let since = *self.short_since.entry(key(p)).or_insert(now);
            if view.held.contains(&p) || now.duration_since(since) < after {
                continue;
            }
            let candidates = std::iter::once(view.me).chain(
                view.peers
                    .iter()
                    .filter(|peer| !others.contains(&peer.address))
                    .map(|peer| peer.shard_id.as_str()),
            );
            let mut ranked: Vec<(u64, &str)> = candidates
                .map(|id| (rank(view.db, view.version, p, id), id))
                .collect();
            ranked.sort_unstable();
            if ranked
                .iter()
                .take(wanted - copies)
                .any(|&(_, id)| id == view.me)
            {
                plan.take.push(p);
            }
        }
        if let Some(picked) = self
            .picked
            .get_mut(&(view.db.to_string(), view.version.to_string()))
        {
            for &p in picked.iter() {
                let others = view.holders.get(&p).map_or(0, Vec::len);
                if others >= view.replication {
                    plan.release.push(p);
                }
            }
            for p in &plan.release {
                picked.remove(p);
            }
        }
        plan
    }

    /// Records that this node now holds `partitions` it picked up.
    pub fn picked_up(&mut self, db: &str, version: &str, partitions: &[u32]) {
        self.picked
            .entry((db.to_string(), version.to_string()))
            .or_default()
            .extend(partitions);
    }

    /// Forgets everything about versions not in `served` (db -> version).
    pub fn retain_served(&mut self, served: &BTreeMap<String, String>) {
        let is_served = |db: &String, version: &String| served.get(db) == Some(version);
        self.short_since.retain(|(db, v, _), _| is_served(db, v));
        self.picked.retain(|(db, v), _| is_served(db, v));
    }
}

/// The rank of node `shard_id` for a copy of `db`/`version`/`partition`
/// (rendezvous hashing: FNV-1a, fixed so every node and every build of the
/// program computes the same order).
fn rank(db: &str, version: &str, partition: u32, shard_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let fields: [&[u8]; 4] = [
        db.as_bytes(),
        version.as_bytes(),
        &partition.to_le_bytes(),
        shard_id.as_bytes(),
    ];
    for field in fields {
        for &byte in field.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> Peer {
        Peer {
            shard_id: id.into(),
            address: format!("node-{id}:1"),
        }
    }

    /// Four nodes, R=2, partitions 0..6 on pairs; node 4 is gone (neither
    /// listed nor advertising). Each node plans from its own view.
    fn plans(tracker: &mut [Tracker; 3], now: Instant, after: Duration) -> Vec<Plan> {
        // Partitions held by node 4 lose a copy.
        let layout: [&[&str]; 6] = [
            &["1", "2"],
            &["2", "3"],
            &["3", "4"],
            &["4", "1"],
            &["1", "3"],
            &["2", "4"],
        ];
        let live = ["1", "2", "3"];
        live.iter()
            .zip(tracker.iter_mut())
            .map(|(me, tracker)| {
                let mut holders = PartitionHolders::new();
                let mut held = BTreeSet::new();
                for (p, ids) in layout.iter().enumerate() {
                    for id in ids.iter().filter(|id| live.contains(id)) {
                        if id == me {
                            held.insert(p as u32);
                        } else {
                            holders.entry(p as u32).or_default().push(peer(id).address);
                        }
                    }
                }
                let peers: Vec<Peer> = live
                    .iter()
                    .filter(|id| *id != me)
                    .map(|id| peer(id))
                    .collect();
                tracker.plan(
                    &View {
                        db: "db",
                        version: "1",
                        num_partitions: 6,
                        me,
                        held: &held,
                        holders: &holders,
                        peers: &peers,
                        replication: 2,
                    },
                    now,
                    after,
                )
            })
            .collect()
    }

    #[test]
    fn a_lost_nodes_partitions_are_picked_up_once_each_after_the_delay() {
        let mut trackers: [Tracker; 3] = Default::default();
        let after = Duration::from_secs(60);
        let start = Instant::now();
        let first = plans(&mut trackers, start, after);
        for plan in &first {
            assert_eq!(plan.under_replicated, 3, "partitions 2, 3, 5");
            assert!(plan.take.is_empty(), "not before the delay");
        }
        let later = plans(&mut trackers, start + after, after);
        let mut taken: Vec<u32> = later.iter().flat_map(|p| p.take.clone()).collect();
        taken.sort_unstable();
        // Each short partition exactly once, by a node not holding it.
        assert_eq!(taken, [2, 3, 5]);
        for (plan, held) in later.iter().zip([[0, 3, 4], [0, 1, 5], [1, 2, 4]]) {
            assert!(plan.take.iter().all(|p| !held.contains(p)));
        }
    }

    #[test]
    fn a_picked_up_copy_is_released_only_above_replication() {
        let mut tracker = Tracker::default();
        tracker.picked_up("db", "1", &[2]);
        let held = BTreeSet::from([2]);
        let peers = [peer("3"), peer("4")];
        fn view<'a>(
            holders: &'a PartitionHolders,
            held: &'a BTreeSet<u32>,
            peers: &'a [Peer],
        ) -> View<'a> {
            View {
                db: "db",
                version: "1",
                num_partitions: 3,
                me: "1",
                held,
                holders,
                peers,
                replication: 2,
            }
        }
        let now = Instant::now();
        let one_other = PartitionHolders::from([(2, vec![peer("3").address])]);
        let plan = tracker.plan(&view(&one_other, &held, &peers), now, Duration::ZERO);
        assert!(plan.release.is_empty(), "only two copies with ours");
        let two_others = PartitionHolders::from([(2, vec![peer("3").address, peer("4").address])]);
        let plan = tracker.plan(&view(&two_others, &held, &peers), now, Duration::ZERO);
        assert_eq!(plan.release, [2]);
        // Released once.
        let plan = tracker.plan(&view(&two_others, &held, &peers), now, Duration::ZERO);
        assert!(plan.release.is_empty());
    }

    #[test]
    fn no_more_copies_are_wanted_than_there_are_nodes() {
        let mut tracker = Tracker::default();
        let held = BTreeSet::from([0, 1]);
        let plan = tracker.plan(
            &View {
                db: "db",
                version: "1",
                num_partitions: 2,
                me: "1",
                held: &held,
                holders: &PartitionHolders::new(),
                peers: &[],
                replication: 3,
            },
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(plan, Plan::default());
    }
}
